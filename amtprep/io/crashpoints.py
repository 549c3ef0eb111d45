"""Test hooks for the commit protocol: die or fail at a named point.

- ``AMTPREP_CRASH_AT=<point>:<n>`` (e.g. ``midi.shard.renamed:3``): SIGKILL this process the n-th
  time ``point`` is reached (``*`` matches any point).
- ``AMTPREP_FAIL_AT=<point>:<n>:<ERRNO>`` (e.g. ``text.shard.written:2:ENOSPC``): raise that
  OSError there instead, to exercise disk-trouble handling without filling a disk.
- ``AMTPREP_SIGNAL_AT=<point>:<n>:<SIGNAME>`` (e.g. ``final.written:1:SIGTERM``): send this
  process that signal there, to stop a run at an exact step.
- ``AMTPREP_CRASH_LOG=<file>``: append every point reached, so tests can enumerate them.
- ``AMTPREP_TEST_BATCH_DELAY=<seconds>``: sleep after each committed batch.

``arm()`` sets the same at run time (forked test children). Costs one check when unset.
"""

from __future__ import annotations

import errno
import os
import signal
import time

_crash: tuple[str, int] | None = None
_fail: tuple[str, int, int] | None = None
_signal: tuple[str, int, int] | None = None
_log: str | None = None
_counts: dict[str, int] = {}
_batch_delay = 0.0


def arm(
    crash_at: str | None = None,
    fail_at: str | None = None,
    log: str | None = None,
    batch_delay: float = 0.0,
    signal_at: str | None = None,
) -> None:
    global _crash, _fail, _signal, _log, _batch_delay
    _counts.clear()
    _crash = None
    _fail = None
    _signal = None
    if signal_at:
        name, n, sig = signal_at.split(":")
        _signal = (name, int(n), int(getattr(signal, sig)))
    if crash_at:
        name, _, n = crash_at.rpartition(":")
        _crash = (name, int(n))
    if fail_at:
        name, n, code = fail_at.split(":")
        _fail = (name, int(n), getattr(errno, code) if not code.isdigit() else int(code))
    _log = log
    _batch_delay = batch_delay


arm(
    os.environ.get("AMTPREP_CRASH_AT"),
    os.environ.get("AMTPREP_FAIL_AT"),
    os.environ.get("AMTPREP_CRASH_LOG"),
    float(os.environ.get("AMTPREP_TEST_BATCH_DELAY") or 0),
    os.environ.get("AMTPREP_SIGNAL_AT"),
)


def crashpoint(point: str) -> None:
    if _crash is None and _fail is None and _log is None and _signal is None:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _log is not None:
        with open(_log, "a") as fh:
            fh.write(f"{point}:{_counts[point]}\n")
    if _crash is not None and _crash[0] in (point, "*"):
        hits = _counts[point] if _crash[0] != "*" else sum(_counts.values())
        if hits == _crash[1]:
            os.kill(os.getpid(), signal.SIGKILL)
    if _signal is not None and _signal[0] == point and _counts[point] == _signal[1]:
        os.kill(os.getpid(), _signal[2])
    if _fail is not None and _fail[0] == point and _counts[point] == _fail[1]:
        raise OSError(_fail[2], os.strerror(_fail[2]))


def batch_delay() -> None:
    """Sleep after a committed batch so a test can signal a run that is demonstrably mid-way."""
    if _batch_delay:
        time.sleep(_batch_delay)
