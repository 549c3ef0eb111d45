"""Archives as a MIDI root (``--midi_root corpus.zip|.tar|.tar.gz|.tgz``): members read in place.

Public API: ``ARCHIVE_SUFFIXES``, ``archive_kind(path) -> "zip" | "tar" | "tar.gz" | None``,
``is_archive(path)``, ``archive_identity(path)``, ``member_name(midi_path)``,
``ArchiveSpec(kind, path, index)`` (picklable: what a worker needs to open the archive),
``prepare_archive(path, work_dir) -> ArchiveSpec`` and ``ArchiveReader(spec)`` with
``read(member, max_bytes) -> bytes`` and ``close()``.

How each kind is served (docs/sources.md has the measurements):

- ``.zip``: random access is native; each worker opens its own ``zipfile.ZipFile`` once.
- ``.tar``: a member -> (data offset, size) index is built once by one pass over the headers
  and stored in ``<work_dir>/.midi-root/<key>.index.json`` (temp + rename, so a crash leaves
  no half index); workers ``seek`` + ``read`` by offset, in any order.
- ``.tar.gz``: gzip has no random access. It is decompressed once into
  ``<work_dir>/.midi-root/<key>.tar`` (temp + rename), then served like a ``.tar``. This costs
  the uncompressed size on disk (MidiCaps: 1.6 GB -> about 5 GB) but one sequential pass, and
  every later resume reuses it; the alternative (re-decompressing up to each member) is
  quadratic.

``<key>`` is a hash of the archive's path and identity, so a changed archive gets a new index.
The archive's identity (size, mtime, hash of its first and last 64 KiB) joins the input
identity, like the MIDI root's path. Nothing is built until the MIDI stage starts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amtprep.io.fsutil import atomic_write, temp_path_for

ARCHIVE_SUFFIXES = {".zip": "zip", ".tar": "tar", ".tar.gz": "tar.gz", ".tgz": "tar.gz"}
WORK_SUBDIR = ".midi-root"
INDEX_VERSION = 1
_EDGE = 1 << 16


def archive_kind(path: Path | str) -> str | None:
    name = str(path).lower()
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        if name.endswith(suffix):
            return ARCHIVE_SUFFIXES[suffix]
    return None


def is_archive(path: Path | str) -> bool:
    """An archive suffix on an existing regular file (a folder named x.zip stays a folder)."""
    return archive_kind(path) is not None and os.path.isfile(path)


def archive_identity(path: Path | str) -> dict[str, Any]:
    """Cheap identity: size, mtime and the first and last 64 KiB (a zip's central directory and
    a gzip trailer's CRC sit at the end, so most edits change the hash)."""
    stat = os.stat(path)
    edges = hashlib.sha256()
    with open(path, "rb") as f:
        edges.update(f.read(_EDGE))
        if stat.st_size > 2 * _EDGE:
            f.seek(-_EDGE, os.SEEK_END)
            edges.update(f.read(_EDGE))
    return {
        "kind": archive_kind(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "edges_sha256": edges.hexdigest(),
    }


def member_name(midi_path: str) -> str:
    """The member an input path names: ``./a/b.mid`` and ``a//b.mid`` are ``a/b.mid``."""
    name = posixpath.normpath(midi_path.replace(os.sep, "/"))
    return name.lstrip("/") if name not in (".", "/") else ""


@dataclass(frozen=True)
class ArchiveSpec:
    kind: str  # "zip" | "tar" ("tar.gz" is served as the tar it was decompressed into)
    path: str  # the archive read by workers (the decompressed tar for .tar.gz)
    index: str | None = None  # tar only: the member -> (offset, size) index


def _work_key(path: Path) -> str:
    ident = archive_identity(path)
    body = json.dumps({"path": str(path), **ident, "v": INDEX_VERSION}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def prepare_archive(path: Path, work_dir: Path) -> ArchiveSpec:
    """What workers need to read ``path``'s members; builds the tar index (and for .tar.gz the
    decompressed tar) on first use and reuses it after. Raises OSError, tarfile.TarError and
    zipfile.BadZipFile for an archive that cannot be read."""
    path = Path(os.path.abspath(path))
    kind = archive_kind(path)
    if kind == "zip":
        with zipfile.ZipFile(path):  # fail here, once, rather than in every worker
            pass
        return ArchiveSpec("zip", str(path))
    folder = work_dir / WORK_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # a run killed mid-build (the output lock is ours)
        stale.unlink(missing_ok=True)
    key = _work_key(path)
    tar_path = path
    if kind == "tar.gz":
        tar_path = folder / f"{key}.tar"
        if not tar_path.exists():
            temp = temp_path_for(tar_path)
            with gzip.open(path, "rb") as src, open(temp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(temp, tar_path)
    index = folder / f"{key}.index.json"
    if not index.exists():
        atomic_write(index, json.dumps(build_tar_index(tar_path)).encode())
    return ArchiveSpec("tar", str(tar_path), str(index))


def build_tar_index(path: Path) -> dict[str, list[int]]:
    """member name -> [data offset, size] for every regular file, in one pass over headers."""
    members: dict[str, list[int]] = {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if info.isfile():
                members[member_name(info.name)] = [info.offset_data, info.size]
    return members


class MemberMissing(KeyError):
    """The archive has no such member."""


class MemberTooLarge(ValueError):
    """The member is over the size limit."""


class ArchiveReader:
    """Opened once per worker; not shared between processes."""

    def __init__(self, spec: ArchiveSpec) -> None:
        self.spec = spec
        self._zip: zipfile.ZipFile | None = None
        self._tar = None
        self._index: dict[str, list[int]] | None = None
        self._zip_names: dict[str, zipfile.ZipInfo] | None = None

    def read(self, member: str, max_bytes: int) -> bytes:
        """Raises MemberMissing, MemberTooLarge, OSError, zipfile.BadZipFile."""
        if self.spec.kind == "zip":
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.spec.path)
            try:
                info = self._zip.getinfo(member)
            except KeyError:
                info = self._zip_normalised().get(member)
                if info is None:
                    raise MemberMissing(member) from None
            if info.file_size > max_bytes:
                raise MemberTooLarge(f"{info.file_size} bytes exceeds the limit of {max_bytes}")
            return self._zip.read(info)
        if self._index is None:
            self._index = json.loads(Path(self.spec.index).read_text())
            self._tar = open(self.spec.path, "rb")  # noqa: SIM115 - held for the worker's life
        entry = self._index.get(member)
        if entry is None:
            raise MemberMissing(member)
        offset, size = entry
        if size > max_bytes:
            raise MemberTooLarge(f"{size} bytes exceeds the limit of {max_bytes}")
        self._tar.seek(offset)
        data = self._tar.read(size)
        if len(data) != size:
            raise OSError(f"{self.spec.path} ends inside member {member}")
        return data

    def _zip_normalised(self) -> dict[str, zipfile.ZipInfo]:
        """Members by normalised name, for zips written with ``./`` or ``//`` in names."""
        if self._zip_names is None:
            self._zip_names = {
                member_name(i.filename): i for i in self._zip.infolist() if not i.is_dir()
            }
        return self._zip_names

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()
