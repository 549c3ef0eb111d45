"""One writer per output directory.

An ``fcntl.flock`` on ``<output_dir>/.amtprep.lock`` decides who owns the directory: the kernel
drops it when the holder dies (even by SIGKILL or power loss), so a stale lock can always be taken
over. The file's JSON body names the holder (PID, host, start time, command) for the message a
second run prints.

Public: ``OutputLock``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from amtprep.errors import LockHeldError

log = logging.getLogger(__name__)

LOCK_NAME = ".amtprep.lock"


class OutputLock:
    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises LockHeldError naming the live holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise LockHeldError(
                f"{self.path.parent} is in use by another amtprep run ({holder}); "
                "wait for it to finish or stop it, then run again"
            ) from None
        previous = _read_holder(fd)
        if previous:
            log.warning(
                "took over a stale lock left by %s (no longer running)", _describe(previous)
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


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return f"PID {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
