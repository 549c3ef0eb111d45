"""Streaming input readers: a paired MIDI-path + caption file in, ``Record``s out, in idx order.

Public API:

- ``InputSpec(path, midi_column=None, text_column=None, id_column=None, midi_root=None,
  midi_bytes_column=None)``
- ``InputSource(spec)``: ``format``, ``path``, ``columns``, ``midi_column``, ``text_column``,
  ``id_column``, ``midi_bytes_column``, ``extra_columns``, ``midi_root``, ``count_rows()``,
  ``fingerprint(known=None)``,
  ``iter_records(start=0, wanted=None)``, ``iter_batches(batch_size, wanted=None)``.
  Construction raises ``InputFileError`` (one line: what is wrong and how to fix it).

Decisions (see also ``amtprep.io.input_formats``):

- ``idx`` is the 0-based position among data rows: the header and blank lines take none. Bad rows
  do take one and come out as records with ``row_error`` set, so idx never shifts between runs.
- ``id``: the id column's value (``--id_column``, else a column named ``id``) as a string; when
  there is none, or it is null/empty for a row, the MIDI path as written (unique in MidiCaps-style
  corpora); when that is missing too, ``str(idx)``. ``idx`` is the only guaranteed-unique key.
- ``midi_bytes_column`` (Parquet only, a binary column: GigaMIDI's ``music``): records carry no
  path (``midi_path`` ""), the column is never read here (the MIDI stage reads it by row group,
  ``amtprep.io.midi_bytes``) and is not an extra column; the id defaults to ``md5``, then ``id``.
- ``extra`` always holds exactly ``extra_columns`` (absent values are None), so every batch has
  the same columns. For .json/.jsonl the columns are the keys seen in the first
  ``COLUMN_SAMPLE_ROWS`` rows; keys that first appear later are dropped, with one warning.
- CSV values are strings as written (CSV has no types); an empty CSV caption is the caption "".
- Strings that are not valid UTF-8: in the caption, ``caption=None`` and ``caption_error`` says
  where; in the MIDI path, a ``row_error``; elsewhere the bad bytes become U+FFFD.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amtprep.errors import InputFileError
from amtprep.io.archives import archive_identity, is_archive
from amtprep.io.input_formats import (
    FORMATS,
    RawRow,
    Wanted,
    detect_format,
    has_surrogate,
    json_type,
    open_scanner,
)
from amtprep.io.storage import is_url
from amtprep.records import Record

logger = logging.getLogger(__name__)

MIDI_COLUMN_CANDIDATES = ("location", "midi_path", "midi")
TEXT_COLUMN_CANDIDATES = ("caption", "text")
ID_COLUMN_CANDIDATES = ("id",)
COLUMN_SAMPLE_ROWS = 1000
MISSING_CAPTION = "missing caption"
_HASH_CHUNK = 1 << 20
_EDGE_BYTES = 1 << 16
_ABSENT = object()


@dataclass(frozen=True)
class InputSpec:
    path: Path
    midi_column: str | None = None  # None: "location" (MidiCaps), then "midi_path", then "midi"
    text_column: str | None = None  # None: "caption", then "text"
    id_column: str | None = None  # None: "id" if present (see the module docstring for fallbacks)
    midi_root: Path | str | None = (  # a str: an s3:// folder
        None  # relative MIDI paths resolve against this; None: the file's folder
    )
    midi_bytes_column: str | None = None  # Parquet binary column holding the MIDI bytes


class InputSource:
    """One input file, validated and with its columns resolved; iterate it as often as needed."""

    def __init__(self, spec: InputSpec) -> None:
        """Raises InputFileError when the file cannot be read or lacks a required column."""
        self.spec = spec
        self.path = Path(os.path.abspath(Path(spec.path).expanduser()))
        self.format = _check_file(self.path)
        self._scanner = open_scanner(self.path, self.format)
        self.columns: list[str] = self._scanner.sample_columns(COLUMN_SAMPLE_ROWS)
        if not self.columns and self.format in ("json", "jsonl"):
            raise InputFileError(
                f"input file {self.path} has no JSON objects in its first {COLUMN_SAMPLE_ROWS} "
                "rows to read column names from; check that it holds the dataset rows"
            )
        self.midi_bytes_column = spec.midi_bytes_column
        if self.midi_bytes_column:
            self._check_bytes_input()
            self._scanner.skip_columns({self.midi_bytes_column})
            self.midi_column = self.midi_bytes_column
        else:
            self.midi_column = self._pick(
                "MIDI path", "midi_column", spec.midi_column, MIDI_COLUMN_CANDIDATES
            )
        self.text_column = self._pick(
            "caption", "text_column", spec.text_column, TEXT_COLUMN_CANDIDATES
        )
        self.id_column: str | None = (
            self._pick("id", "id_column", spec.id_column, ())
            if spec.id_column
            else next((c for c in self._id_candidates() if c in self.columns), None)
        )
        used = {self.midi_column, self.text_column, self.id_column}
        self.extra_columns = [c for c in self.columns if c not in used]
        self._root_is_url = spec.midi_root is not None and is_url(spec.midi_root)
        if self._root_is_url:  # a folder in a bucket: workers read each file from there
            self.midi_root = str(spec.midi_root).rstrip("/")
            self._root = self.midi_root
            self._root_sep = self._root + "/"
        else:
            root = Path(spec.midi_root).expanduser() if spec.midi_root else self.path.parent
            self.midi_root = Path(os.path.abspath(root))
            self._root = str(self.midi_root)
            self._root_sep = os.path.join(self._root, "")
        self._known_keys = frozenset(self.columns)
        self._warned_new_keys = False
        self._row_count: int | None = None

    def _check_bytes_input(self) -> None:
        from amtprep.io.midi_bytes import check_bytes_column

        if self.format != "parquet":
            raise InputFileError(
                f"--midi_bytes_column needs a Parquet input; {self.path} is {self.format}"
            )
        check_bytes_column(self._scanner.schema, self.midi_bytes_column, self.path)

    def _id_candidates(self) -> tuple[str, ...]:
        # GigaMIDI has no paths: the MD5 of the bytes is the id users join on.
        return ("md5", *ID_COLUMN_CANDIDATES) if self.midi_bytes_column else ID_COLUMN_CANDIDATES

    def __repr__(self) -> str:
        return (
            f"InputSource({str(self.path)!r}, format={self.format!r}, "
            f"midi_column={self.midi_column!r}, text_column={self.text_column!r})"
        )

    def _pick(self, what: str, flag: str, explicit: str | None, candidates: tuple[str, ...]) -> str:
        if explicit:
            if explicit in self.columns:
                return explicit
            raise InputFileError(
                f"input has no column {explicit!r} (from --{flag}); found columns "
                f"[{', '.join(self.columns)}]; pass --{flag} with one of them"
            )
        for name in candidates:
            if name in self.columns:
                return name
        raise InputFileError(
            f"input has no {what} column (looked for {', '.join(candidates)}); found columns "
            f"[{', '.join(self.columns)}]; pass --{flag} NAME"
        )

    def count_rows(self) -> int:
        """Number of data rows, bad ones included (the ``total_files`` of a run).

        Parquet reads the footer; the others scan the file once (CSV with a real parser, so quoted
        newlines count right; JSON arrays fully, raising InputFileError on a syntax error).
        """
        if self._row_count is None:
            self._row_count = self._scanner.count()
        return self._row_count

    def quick_identity(self) -> dict[str, Any]:
        """What changes whenever the file does, read without reading the file: size, mtime,
        inode, and a hash of its first and last 64 KiB."""
        stat = self.path.stat()
        edges = hashlib.sha256()
        with open(self.path, "rb") as f:
            edges.update(f.read(_EDGE_BYTES))
            if stat.st_size > 2 * _EDGE_BYTES:
                f.seek(-_EDGE_BYTES, os.SEEK_END)
                edges.update(f.read(_EDGE_BYTES))
        return {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "inode": stat.st_ino,
            "device": stat.st_dev,
            "edges_sha256": edges.hexdigest(),
        }

    def fingerprint(self, known: dict[str, Any] | None = None) -> dict[str, Any]:
        """Identity of the input and of the settings that shape its records, with its row count.

        The whole file is hashed once; when ``known`` (an earlier fingerprint of this path) has
        the same quick identity, its ``sha256`` and ``rows`` are trusted, so a start costs
        O(1) in the input's size (a 10 GB Parquet is not re-read at every resume).
        """
        quick = self.quick_identity()
        if (
            known
            and known.get("path") == str(self.path)
            and all(known.get(k) == v for k, v in quick.items())
            and isinstance(known.get("sha256"), str)
            and isinstance(known.get("rows"), int)
        ):
            sha256, rows = known["sha256"], known["rows"]
            self._row_count = rows
        else:
            sha256, rows = file_sha256(self.path), self.count_rows()
        return {
            "path": str(self.path),
            **quick,
            "sha256": sha256,
            "rows": rows,
            "format": self.format,
            "midi_column": self.midi_column,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "midi_root": self._root,
            "midi_bytes_column": self.midi_bytes_column,
            "midi_root_archive": (
                archive_identity(self.midi_root)
                if not self._root_is_url and is_archive(self.midi_root)
                else None
            ),
        }

    def iter_records(self, start: int = 0, wanted: Wanted = None) -> Iterator[Record]:
        """Records in idx order from ``start``; bad rows come out as records with ``row_error``.

        ``wanted(idx)`` leaves rows out without parsing them (see ``iter_batches``).
        """
        return self._records(start, wanted)

    def iter_batches(
        self, batch_size: int, wanted: Callable[[int], bool] | None = None
    ) -> Iterator[list[Record]]:
        """Lists of up to ``batch_size`` records, each covering a contiguous idx range.

        ``wanted(idx)`` (called once per idx, in order) leaves rows out without parsing them where
        the format allows; a batch ends early at such a gap, so a batch is always ``[a, b]``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        batch: list[Record] = []
        for record in self._records(0, wanted):
            if batch and (len(batch) == batch_size or record.idx != batch[-1].idx + 1):
                yield batch
                batch = []
            batch.append(record)
        if batch:
            yield batch

    def _records(self, start: int, wanted: Wanted) -> Iterator[Record]:
        build = self._build
        for raw in self._scanner.rows(start, wanted):
            yield build(raw)

    def _build(self, raw: RawRow) -> Record:
        idx, values = raw.idx, raw.values
        if values is None:
            return Record(
                idx=idx,
                id=str(idx),
                midi_path="",
                resolved_path="",
                caption=None,
                row_error=raw.error,
                extra=dict.fromkeys(self.extra_columns),
            )
        clean = raw.clean
        if len(values) > len(self._known_keys):
            self._warn_new_keys(values)
        if self.midi_bytes_column:  # no path: the MIDI stage reads the bytes by idx
            midi_path, resolved_path, path_error = "", "", None
        else:
            midi_path, resolved_path, path_error = self._midi_path(values, raw, clean)
        caption, caption_error = _caption(values.get(self.text_column, _ABSENT), clean)
        extra = {name: values.get(name) for name in self.extra_columns}
        if not clean:
            extra = {name: _scrub(value) for name, value in extra.items()}
        return Record(
            idx=idx,
            id=self._record_id(values, midi_path, idx, clean),
            midi_path=midi_path,
            resolved_path=resolved_path,
            caption=caption,
            caption_error=caption_error,
            row_error=raw.error or path_error,
            extra=extra,
        )

    def _midi_path(
        self, values: dict[str, Any], raw: RawRow, clean: bool
    ) -> tuple[str, str, str | None]:
        """Returns (as written, resolved, error)."""
        value = values.get(self.midi_column, _ABSENT)
        if isinstance(value, str) and clean and _is_plain_relative(value):
            return value, self._root_sep + value, None  # the common case, at a third of the cost
        where = f"line {raw.line}" if raw.line is not None else f"row {raw.idx}"
        if not isinstance(value, str) or not value.strip():
            if value is _ABSENT:
                why = "is absent"
            elif isinstance(value, str):
                why = "is empty"
            else:
                why = (
                    f"is a JSON {json_type(value)}, not a string"
                    if value is not None
                    else "is null"
                )
            shown = "" if value is None or value is _ABSENT else str(value)
            return shown, "", f"{where}: no MIDI path: column {self.midi_column!r} {why}"
        if not clean and has_surrogate(value):
            detail = _utf8_problem(value, "MIDI path")
            return _scrub(value), "", f"{where}: {detail}"
        if self._root_is_url:
            if is_url(value):
                return value, value, None
            return value, self._root_sep + posixpath.normpath(value).lstrip("/"), None
        if value.startswith("~"):
            return value, os.path.normpath(os.path.expanduser(value)), None
        # join() keeps an absolute path as it is; normpath folds "./" and "../" for stable output.
        return value, os.path.normpath(os.path.join(self._root, value)), None

    def _record_id(self, values: dict[str, Any], midi_path: str, idx: int, clean: bool) -> str:
        if self.id_column is not None:
            value = values.get(self.id_column)
            if value is not None and value != "":
                text = value if isinstance(value, str) else str(_scrub(value))
                return _scrub(text) if not clean else text
        return midi_path or str(idx)

    def _warn_new_keys(self, values: dict[str, Any]) -> None:
        new = values.keys() - self._known_keys
        if new and not self._warned_new_keys:
            self._warned_new_keys = True
            logger.warning(
                "%s: keys %s first appear after row %d and are not carried to the output "
                "(only the keys of the first rows are); this is reported once",
                self.path,
                sorted(new),
                COLUMN_SAMPLE_ROWS,
            )


def file_sha256(path: Path) -> str:
    """The whole file's hash: done once per content, see ``InputSource.fingerprint``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path) -> str:
    """Returns the format name; raises InputFileError saying how to fix an unusable path."""
    if not path.exists():
        raise InputFileError(
            f"input file not found: {path}; check the path and that the file exists"
        )
    if path.is_dir():
        raise InputFileError(
            f"input path is a directory: {path}; pass the .json/.jsonl/.csv/.parquet file inside it"
        )
    fmt = detect_format(path)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputFileError(
            f"unknown input format {path.suffix or '(no extension)'!r} for {path}; "
            f"use one of {known} (rename the file if its content is one of these)"
        )
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise InputFileError(
            f"cannot read input file {path}: {exc.strerror or exc}; check its permissions"
        ) from None
    return fmt


def _is_plain_relative(path: str) -> bool:
    """True when ``root/path`` is already normal, so normpath can be skipped."""
    return (
        path[:1] not in ("/", "~", ".", "")
        and not path[0].isspace()  # rules out blank paths too
        and "/." not in path
        and "//" not in path
        and not path.endswith("/")
        and os.sep == "/"
    )


def _caption(value: Any, clean: bool) -> tuple[str | None, str | None]:
    """Returns (caption, caption_error)."""
    if isinstance(value, str):
        if not clean and has_surrogate(value):
            return None, _utf8_problem(value, "caption")
        return value, None
    if value is None or value is _ABSENT:
        return None, MISSING_CAPTION
    if isinstance(value, (dict, list)):
        return None, f"caption is a JSON {json_type(value)}, not text"
    return str(value), None  # numbers and booleans: a caption that happens to look like one


def _utf8_problem(text: str, what: str) -> str:
    """Describe where ``text`` (decoded with surrogateescape) stops being valid UTF-8."""
    try:
        text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeEncodeError as exc:  # a surrogate from a JSON \\uD800 escape, not from bytes
        return f"invalid Unicode at character {exc.start} of the {what}: lone surrogate U+{ord(text[exc.start]):04X}"
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.end].hex()
        return f"invalid UTF-8 at byte {exc.start} of the {what}: {exc.reason} (0x{bad})"
    return f"invalid UTF-8 in the {what}"


def _scrub(value: Any) -> Any:
    """Replace lone surrogates with U+FFFD so the value can be written as UTF-8."""
    if isinstance(value, str):
        if not has_surrogate(value):
            return value
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value
