"""One storage seam for local folders and object-store URLs: create-only writes, no rename.

Public API: ``is_url(path)``, ``open_storage(root) -> Storage`` and ``Storage`` with
``write_new(name, data)``, ``write(name, data)`` (plain overwrite, for summaries),
``write_if(name, data, etag)`` (replace only the version read), ``etag(name)``,
``read(name)``, ``exists(name)``, ``list(prefix="")``, ``sizes(prefix="")``,
``download(name, dest)``, ``delete(name)``, ``url(name)``; ``SUPPORTED_PROTOCOLS``.

Why create-only: object stores have no rename, so write-temp-then-rename cannot publish there.
What works on both is writing each object once, under its final unique name, with a write that
fails if the name exists; the first writer wins and a second attempt (a retried task, a re-run
of a lost result) gets ``ObjectExistsError`` and adopts the winner's object. Nothing half
written is ever visible under the final name:
- local: the bytes go to a temp file (fsync'd), then ``os.link(temp, final)``, which fails with
  EEXIST when ``final`` exists and is atomic; then the temp name is removed and the directory
  fsync'd. A crash leaves at most a ``.tmp`` file, never a partial ``final``.
- ``s3://``: s3fs maps ``open(path, "xb")`` to ``PutObject`` (or the multipart completion) with
  ``If-None-Match: *``; an object becomes visible only when that request completes.
Only protocols whose create-only write was checked are accepted (``SUPPORTED_PROTOCOLS``): a
filesystem that silently ignored ``x`` would let two writers overwrite each other.
Credentials and endpoints come from each library's own environment and config files
(``AWS_*`` variables, ``~/.aws``); amtprep stores none.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from amtprep.errors import ConfigError, DiskWriteError, ObjectExistsError
from amtprep.io.crashpoints import crashpoint
from amtprep.io.fsutil import TEMP_SUFFIX, atomic_write, disk_error, fsync_dir

SUPPORTED_PROTOCOLS = ("s3",)  # besides local paths and file://
INSTALL_HINT = {"s3": "pip install 'amtprep[s3]'"}


def is_url(path: str | os.PathLike) -> bool:
    """True for ``proto://...`` other than ``file://`` (which is a local path)."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def open_storage(root: str | os.PathLike) -> Storage:
    """The storage under ``root`` (a folder or a URL). Raises ``ConfigError`` for a protocol
    without a checked create-only write, or when its fsspec backend is not installed."""
    text = os.fspath(root)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if not is_url(text):
        return LocalStorage(Path(text))
    protocol = text.split("://", 1)[0]
    if protocol not in SUPPORTED_PROTOCOLS:
        raise ConfigError(
            f"{protocol}:// is not supported: amtprep writes only where a create-only write was "
            f"checked ({', '.join(p + '://' for p in SUPPORTED_PROTOCOLS)}, local folders)"
        )
    try:
        import fsspec

        fs = fsspec.filesystem(protocol)
    except ImportError as exc:
        raise ConfigError(
            f"{protocol}:// needs its fsspec backend: {INSTALL_HINT[protocol]}"
        ) from exc
    return FsspecStorage(fs, text.split("://", 1)[1].rstrip("/"), protocol)


class Storage:
    """Objects under one root, addressed by ``/``-separated names relative to it."""

    def write_new(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def write(self, name: str, data: bytes) -> None:
        """Replace ``name`` whole (a reader sees the old or the new object)."""
        raise NotImplementedError

    def etag(self, name: str) -> str | None:
        """A tag of the current version of ``name``, None when absent."""
        raise NotImplementedError

    def write_if(self, name: str, data: bytes, etag: str | None) -> None:
        """Replace ``name`` only if it is still the version ``etag`` names (None: only if it
        does not exist); raises ``ObjectExistsError`` when another writer moved first."""
        if etag is None:
            self.write_new(name, data)
            return
        self._replace_if(name, data, etag)

    def _replace_if(self, name: str, data: bytes, etag: str) -> None:
        raise NotImplementedError

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Name -> size in bytes of the objects under ``prefix``."""
        raise NotImplementedError

    def download(self, name: str, dest: Path) -> None:
        """Copy ``name`` to the local file ``dest`` (written whole, then renamed)."""
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.dl{TEMP_SUFFIX}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._fetch(name, tmp)
        os.replace(tmp, dest)

    def _fetch(self, name: str, local: Path) -> None:
        local.write_bytes(self.read(name))

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def url(self, name: str) -> str:
        raise NotImplementedError


@dataclass
class LocalStorage(Storage):
    root: Path

    def write_new(self, name: str, data: bytes) -> None:
        """Publish ``data`` at ``name`` unless it exists (``ObjectExistsError``); durable on
        return. Raises ``DiskWriteError`` for any other failure."""
        final = self.root / name
        # unique per attempt: two writers in one process (threads) must not share a temp file
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            crashpoint("storage.fsynced")
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise ObjectExistsError(f"{final} exists: another writer published it") from None
            crashpoint("storage.linked")
            os.unlink(tmp)
            fsync_dir(final.parent)
        except ObjectExistsError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise disk_error(exc, final) from exc

    def write(self, name: str, data: bytes) -> None:
        final = self.root / name
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(final, data, crash_tag="storage.write")

    def etag(self, name: str) -> str | None:
        try:
            return hashlib.sha256((self.root / name).read_bytes()).hexdigest()
        except FileNotFoundError:
            return None

    def _replace_if(self, name: str, data: bytes, etag: str) -> None:
        # compare-then-rename: atomic against readers; against other writers it relies on
        # the output dir's flock, which every local writer holds
        if self.etag(name) != etag:
            raise ObjectExistsError(f"{self.root / name} changed since it was read")
        self.write(name, data)

    def sizes(self, prefix: str = "") -> dict[str, int]:
        return {n: (self.root / n).stat().st_size for n in self.list(prefix)}

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def list(self, prefix: str = "") -> list[str]:
        """Names under ``prefix`` (a folder), sorted; temp files left by a crash excluded."""
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        names = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(n for n in names if not Path(n).name.startswith("."))

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def url(self, name: str) -> str:
        return str(self.root / name)


@dataclass
class FsspecStorage(Storage):
    fs: object  # an fsspec AbstractFileSystem
    root: str  # bucket/prefix, no protocol
    protocol: str

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def write_new(self, name: str, data: bytes) -> None:
        """One create-only PUT (multipart for large objects, completed create-only too)."""
        path = self._path(name)
        try:
            with self.fs.open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            raise ObjectExistsError(
                f"{self.url(name)} exists: another writer published it"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise ObjectExistsError(f"{self.url(name)} exists") from None
            raise DiskWriteError(f"cannot write {self.url(name)}: {exc}") from exc
        finally:
            self.fs.invalidate_cache(path)

    def write(self, name: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._path(name), data)
        except OSError as exc:
            raise DiskWriteError(f"cannot write {self.url(name)}: {exc}") from exc
        finally:
            self.fs.invalidate_cache(self._path(name))

    def etag(self, name: str) -> str | None:
        self.fs.invalidate_cache(self._path(name))
        try:
            return str(self.fs.info(self._path(name))["ETag"])
        except FileNotFoundError:
            return None

    def _replace_if(self, name: str, data: bytes, etag: str) -> None:
        """One PUT with ``If-Match: <etag>`` (S3 refuses it with 412 when the object changed)."""
        try:
            self.fs.pipe_file(self._path(name), data, IfMatch=etag)
        except OSError as exc:
            if "pre-condition" in str(exc) or "PreconditionFailed" in str(exc):
                raise ObjectExistsError(f"{self.url(name)} changed since it was read") from None
            raise DiskWriteError(f"cannot write {self.url(name)}: {exc}") from exc
        finally:
            self.fs.invalidate_cache(self._path(name))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        base = self._path(prefix)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        start = len(self.root) + 1
        return {
            p[start:]: int(info.get("size") or 0)
            for p, info in sorted(found.items())
            if p.startswith(self.root + "/")
        }

    def _fetch(self, name: str, local: Path) -> None:
        self.fs.get_file(self._path(name), str(local))

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self._path(name))

    def exists(self, name: str) -> bool:
        self.fs.invalidate_cache(self._path(name))
        return bool(self.fs.exists(self._path(name)))

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        start = len(self.root) + 1
        return sorted(p[start:] for p in found if p.startswith(self.root + "/"))

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))
        self.fs.invalidate_cache(self._path(name))

    def url(self, name: str) -> str:
        return f"{self.protocol}://{self._path(name)}"
