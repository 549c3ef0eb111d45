"""One writer per output directory.

An ``fcntl.flock`` on ``<output_dir>/.amtprep.lock`` decides who owns the directory: the kernel
drops it when the holder dies (even by SIGKILL or power loss), so a stale lock can always be taken
over. The file's JSON body names the holder (PID, host, start time, command) for the message a
second run prints. A file system that cannot lock (``flock`` fails with ENOLCK or EOPNOTSUPP:
NFS without lockd, some FUSE mounts) is refused: without the lock two runs could both write.

Public: ``OutputLock``, ``describe_holder(holder)``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from amtprep.errors import LockHeldError, LockUnsupportedError

log = logging.getLogger(__name__)

LOCK_NAME = ".amtprep.lock"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


class OutputLock:
    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises LockHeldError naming the live holder, LockUnsupportedError when the file
        system cannot lock."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(_read_holder(fd))
            os.close(fd)
            raise LockHeldError(
                f"{self.path.parent} is in use by another amtprep run ({holder}); "
                "wait for it to finish or stop it, then run again"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_LOCKS:
                raise
            raise LockUnsupportedError(
                f"the file system of {self.path.parent} does not support file locks "
                f"({os.strerror(exc.errno)}), so amtprep cannot make sure it is the only run "
                "writing there; use an --output_dir on a local disk (or enable locking, e.g. "
                "lockd for NFS) and copy the result over when it is done"
            ) from None
        previous = _read_holder(fd)
        if previous:
            log.warning(
                "took over a stale lock left by %s (no longer running)", describe_holder(previous)
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 65536, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return f"PID {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
