"""One writer per output directory."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amtprep.errors import LockHeldError, LockUnsupportedError
from amtprep.io import lock
from amtprep.io.lock import OutputLock


def test_second_holder_is_refused_with_pid_and_host(tmp_path: Path):
    with OutputLock(tmp_path):
        with pytest.raises(LockHeldError, match=rf"PID {os.getpid()} on host"):
            OutputLock(tmp_path).acquire()
    OutputLock(tmp_path).acquire()  # released: free again


def test_stale_lock_of_killed_process_is_taken_over(tmp_path: Path, caplog):
    code = textwrap.dedent(
        f"""
        import os, signal
        from amtprep.io.lock import OutputLock
        OutputLock({str(tmp_path)!r}).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    assert proc.returncode == -9
    assert b"pid" in (tmp_path / ".amtprep.lock").read_bytes()  # the dead holder's note remains
    with caplog.at_level("WARNING"):
        OutputLock(tmp_path).acquire()
    assert "stale lock" in caplog.text


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_file_system_without_locks_is_an_operator_error(tmp_path: Path, monkeypatch, code):
    def no_locks(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(lock.fcntl, "flock", no_locks)  # NFS without lockd, FUSE
    with pytest.raises(LockUnsupportedError, match="does not support file locks") as info:
        OutputLock(tmp_path).acquire()
    assert "local disk" in str(info.value) and isinstance(info.value, OSError)
