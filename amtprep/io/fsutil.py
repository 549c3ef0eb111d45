"""Durable file primitives: fsync'd atomic writes and directory fsync.

Every publish in amtprep is write-temp -> fsync -> ``os.replace`` -> fsync(dir), so a reader sees
either the old file or the complete new one, even after power loss. Temp files start with ``.`` and
end with ``.tmp`` so a restart can find and remove them (``remove_temp_files``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from amtprep.errors import DiskWriteError
from amtprep.io.crashpoints import crashpoint

TEMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_error(exc: OSError, what: Path) -> DiskWriteError:
    """Map an OSError during a write to one operator-facing line."""
    hint = {
        errno.ENOSPC: "the disk is full; free space and run again with --mode continue",
        errno.EDQUOT: "the disk quota is exceeded; free space and run again with --mode continue",
        errno.EROFS: "the file system is read-only; fix it and run again with --mode continue",
        errno.EACCES: "permission denied; fix permissions and run again with --mode continue",
        errno.EIO: "an I/O error occurred; check the disk and run again with --mode continue",
    }.get(exc.errno or 0, "fix the cause and run again with --mode continue")
    return DiskWriteError(f"cannot write {what}: {exc.strerror or exc}; {hint}")


def atomic_write(
    path: Path, data: bytes, *, crash_tag: str = "file", backup: bool = False, durable: bool = True
) -> None:
    """Publish ``data`` at ``path`` atomically and (unless ``durable`` is False) durably.

    With ``backup`` the previous file is first hard-linked to ``<path>.bak`` so a valid file exists
    at ``path`` at every instant. Without ``durable`` the fsyncs are skipped: for files that are
    rebuilt from others when power loss leaves them stale or empty (the checkpoint summary).
    Raises DiskWriteError on any OSError.
    """
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            crashpoint(f"{crash_tag}.written")
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
                crashpoint(f"{crash_tag}.fsynced")
        if backup and path.exists():
            bak_tmp = temp_path_for(path.with_name(path.name + ".bak"))
            if bak_tmp.exists():
                bak_tmp.unlink()
            os.link(path, bak_tmp)
            os.replace(bak_tmp, path.with_name(path.name + ".bak"))
            crashpoint(f"{crash_tag}.backed_up")
        os.replace(tmp, path)
        crashpoint(f"{crash_tag}.renamed")
        if durable:
            fsync_dir(path.parent)
            crashpoint(f"{crash_tag}.dir_fsynced")
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise disk_error(exc, path) from exc


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete temp files a killed run left behind; returns what was removed."""
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
