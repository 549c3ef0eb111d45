"""Where a worker gets a file's bytes: a path, an archive member, or bytes sent with the job.

Public API: ``member_item(name)``, ``bytes_item(data, expected_md5, label)``, ``item_label(item)``
and ``Loader(archive, max_bytes)`` with ``load(item) -> bytes`` (raises ``MidiFileError``
subclasses), ``check(item, data) -> FileResult | None`` and ``close()``.

A job item is what the pool sends a worker for one file: a ``str`` is a path on disk (the common
case, kept a bare string so the message stays small); ``("member", name)`` names a member of
the run's archive (``amtprep.io.archives``), which each worker opens once; ``("bytes", data,
md5, label)`` carries the MIDI bytes themselves, read by the parent from the input's bytes
column (``amtprep.io.midi_bytes``). Sending bytes is simpler than having every worker open the
Parquet file and decode row groups (each worker would read whole row groups to use a chunk of
them); a batch's bytes cross the pipe once, at memcpy speed, next to the parse they feed.
"""

from __future__ import annotations

import hashlib
import zipfile

from amtprep.io.archives import ArchiveReader, ArchiveSpec, MemberMissing, MemberTooLarge
from amtprep.midi.errors import (
    EmptyFileError,
    MissingFileError,
    TooLargeError,
    UnreadableFileError,
)
from amtprep.midi.extract import FileResult, read_midi_bytes

Item = str | tuple


def member_item(name: str) -> tuple:
    return ("member", name)


def bytes_item(data: bytes | None, expected_md5: str | None, label: str) -> tuple:
    return ("bytes", data, expected_md5, label)


def item_label(item: Item) -> str:
    if isinstance(item, str):
        return item
    return item[1] if item[0] == "member" else item[3]


class Loader:
    """One per worker: the archive (if any) stays open between files."""

    def __init__(self, archive: ArchiveSpec | None, max_bytes: int) -> None:
        self._archive = ArchiveReader(archive) if archive is not None else None
        self.max_bytes = max_bytes

    def load(self, item: Item) -> bytes:
        """The file's bytes; raises ``MidiFileError`` subclasses."""
        if isinstance(item, str):
            return read_midi_bytes(item, self.max_bytes)
        if item[0] == "bytes":
            data = item[1]
            if data is None:
                raise EmptyFileError("no MIDI bytes (the bytes column is null)")
            if len(data) > self.max_bytes:
                raise TooLargeError(
                    f"{len(data)} bytes exceeds the limit of {self.max_bytes} (max_midi_bytes)"
                )
            if not data:
                raise EmptyFileError("MIDI bytes are empty (0 bytes)")
            return data
        name = item[1]
        if self._archive is None:
            raise UnreadableFileError(f"{name}: no archive open (internal error)")
        try:
            data = self._archive.read(name, self.max_bytes)
        except MemberMissing:
            raise MissingFileError(f"no member {name!r} in {self._archive.spec.path}") from None
        except MemberTooLarge as exc:
            raise TooLargeError(f"{name}: {exc} (max_midi_bytes)") from None
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
            raise UnreadableFileError(f"cannot read member {name!r}: {exc}") from None
        if not data:
            raise EmptyFileError("file is empty (0 bytes)")
        return data

    @staticmethod
    def check(item: Item, data: bytes, sha256: str) -> FileResult | None:
        """A failure when the input's md5 column disagrees with the bytes, else None."""
        if isinstance(item, str) or item[0] != "bytes" or item[2] is None:
            return None
        md5 = hashlib.md5(data).hexdigest()
        if md5 == item[2]:
            return None
        return FileResult.failed(
            "md5_mismatch",
            f"the input's md5 column says {item[2]} but the bytes hash to {md5}",
            sha256,
            md5,
        )

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
