"""One MIDI file in, one ``FileResult`` out: the unit of work a pool worker runs.

Public API: ``BACKENDS``, ``FileResult``, ``read_midi_bytes(path, max_bytes)``,
``extract_file(path, backend, max_bytes, tokenizer=None)``, ``extract_data(data, sha256,
backend, where, tokenizer=None)`` (the same for bytes already read), ``parse_bytes(data,
backend) -> (parser, ParsedMidi)`` and ``extract_bytes(data, backend) -> (parser, MidiFeatures)``.

With a ``tokenizer.MidiTokenizer`` the file's token ids come from the Score the parser built
(``tokens.score_for_tokens``: no second parse). A file that parses but that miditok (or symusic,
for a file mido parsed) cannot tokenize is a failed row, ``tokenize_failed``: a final row always
has its tokens, and ``--retry_failed`` after a miditok fix retries exactly those files.

Backends: ``"mido"`` is the reference (retried with ``clip=True`` on data bytes > 127, reported
as parser ``"mido_clip"``); ``"symusic"`` parses with symusic and fails files it rejects;
``"auto"`` parses with symusic and retries mido on files symusic rejects. Files symusic cannot
time identically (type 2, over-long variable-length numbers, ticks beyond int32) go to mido under
every backend. ``extract_file`` never raises for a per-file problem.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

from amtprep.midi.container import read_header
from amtprep.midi.errors import (
    BackendRejectedError,
    DataByteRangeError,
    EmptyFileError,
    InvalidPathError,
    MidiFileError,
    MissingFileError,
    NeedsMidoError,
    TooLargeError,
    UnreadableFileError,
)
from amtprep.midi.features import MidiFeatures, compute_features
from amtprep.midi.notes import ParsedMidi
from amtprep.midi.parse_mido import parse_mido
from amtprep.midi.parse_symusic import parse_symusic
from amtprep.midi.tokens import TokenIds, score_for_tokens

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "mido", "symusic")


@dataclass
class FileResult:
    sha256: str | None = None
    md5: str | None = None  # of the bytes: the file MD5 Lakh/GigaMIDI users join on
    parser: str | None = None
    features: MidiFeatures | None = None
    error_type: str | None = None
    error: str | None = None
    tokens: TokenIds | None = None  # with a tokenizer, on every row that succeeded

    @classmethod
    def failed(
        cls, error_type: str, error: str, sha256: str | None = None, md5: str | None = None
    ) -> FileResult:
        return cls(sha256=sha256, md5=md5, error_type=error_type, error=error)


def _parse_with_mido(data: bytes) -> tuple[str, ParsedMidi]:
    try:
        return "mido", parse_mido(data)
    except DataByteRangeError:
        return "mido_clip", parse_mido(data, clip=True)


def extract_bytes(data: bytes, backend: str) -> tuple[str, MidiFeatures]:
    """Raises ``MidiFileError`` subclasses for files that yield no features."""
    parser, parsed = parse_bytes(data, backend)
    return parser, compute_features(parsed)


def parse_bytes(data: bytes, backend: str) -> tuple[str, ParsedMidi]:
    """Raises ``MidiFileError`` subclasses for files that cannot be parsed."""
    if not data:
        raise EmptyFileError("file is empty (0 bytes)")
    header = read_header(data)
    if backend == "mido":
        parser, parsed = _parse_with_mido(data)
    else:
        try:
            parser, parsed = "symusic", parse_symusic(data, header)
        except NeedsMidoError:
            parser, parsed = _parse_with_mido(data)
        except BackendRejectedError:
            if backend == "symusic":
                raise
            parser, parsed = _parse_with_mido(data)
    return parser, parsed


def read_midi_bytes(path: str, max_bytes: int) -> bytes:
    """Raises ``MissingFileError``, ``UnreadableFileError``, ``TooLargeError``, ``EmptyFileError``,
    ``InvalidPathError``."""
    if "://" in path:
        return _read_url(path, max_bytes)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise MissingFileError(f"no such file: {path}") from exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot stat {path}: {exc}") from exc
    except ValueError as exc:  # a NUL byte, or a lone surrogate the file system cannot encode
        raise InvalidPathError(f"MIDI path {path!r} cannot name a file ({exc})") from exc
    if size > max_bytes:
        raise TooLargeError(f"{size} bytes exceeds the limit of {max_bytes} (max_midi_bytes)")
    try:
        with open(path, "rb") as handle:
            # read(n) allocates n bytes up front: ask for what stat saw, and more only if the
            # file grew since (up to the limit, to notice one that grew past it).
            data = handle.read(size + 1)
            if len(data) > size:
                data += handle.read(max_bytes + 1 - len(data))
    except IsADirectoryError as exc:
        raise UnreadableFileError(f"{path} is a directory") from exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {path}: {exc}") from exc
    if len(data) > max_bytes:  # grew since stat
        raise TooLargeError(f"more than {max_bytes} bytes (max_midi_bytes)")
    if not data:
        raise EmptyFileError("file is empty (0 bytes)")
    return data


def _read_url(url: str, max_bytes: int) -> bytes:
    """A MIDI file in a bucket: one ranged GET of at most ``max_bytes + 1`` bytes (no HEAD
    first: half the requests); fsspec keeps one client per process."""
    import fsspec

    try:
        fs, key = fsspec.core.url_to_fs(url)
        data = fs.cat_file(key, start=0, end=max_bytes + 1)
    except FileNotFoundError as exc:
        raise MissingFileError(f"no such object: {url}") from exc
    except OSError as exc:
        if "range is not satisfiable" in str(exc).lower():  # S3 answers 416 for an empty object
            raise EmptyFileError("file is empty (0 bytes)") from None
        raise UnreadableFileError(f"cannot read {url}: {exc}") from exc
    except (ValueError, ImportError) as exc:
        raise UnreadableFileError(f"cannot read {url}: {exc}") from exc
    if len(data) > max_bytes:
        raise TooLargeError(f"more than {max_bytes} bytes exceeds the limit (max_midi_bytes)")
    if not data:
        raise EmptyFileError("file is empty (0 bytes)")
    return data


def extract_file(path: str, backend: str, max_bytes: int, tokenizer=None) -> FileResult:
    try:
        data = read_midi_bytes(path, max_bytes)
    except MidiFileError as exc:
        return FileResult.failed(exc.error_type, str(exc))
    return extract_data(data, hashlib.sha256(data).hexdigest(), backend, path, tokenizer)


def extract_data(data: bytes, sha256: str, backend: str, where: str, tokenizer=None) -> FileResult:
    """``data`` (read from ``where``, hashing to ``sha256``) parsed into features, and tokens
    with a ``tokenizer``; never raises."""
    md5 = hashlib.md5(data).hexdigest()
    try:
        parser, parsed = parse_bytes(data, backend)
        features = compute_features(parsed)
    except MidiFileError as exc:
        return FileResult.failed(exc.error_type, str(exc), sha256, md5)
    except Exception as exc:  # a parser bug on hostile input must not take the batch down
        logger.warning("unexpected %s on %s", type(exc).__name__, where, exc_info=True)
        return FileResult.failed("internal_error", f"{type(exc).__name__}: {exc}", sha256, md5)
    if tokenizer is None:
        return FileResult(sha256=sha256, md5=md5, parser=parser, features=features)
    try:
        tokens = tokenizer.encode(score_for_tokens(data, parsed))
    except Exception as exc:  # miditok and symusic raise plain built-in errors
        message = f"{tokenizer.name} tokenizer: {type(exc).__name__}: {exc}"
        return FileResult.failed("tokenize_failed", message, sha256, md5)
    return FileResult(sha256=sha256, md5=md5, parser=parser, features=features, tokens=tokens)
