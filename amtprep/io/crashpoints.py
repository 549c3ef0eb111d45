"""Test hooks: kill this process with SIGKILL at a named point of the commit protocol.

Set ``AMTPREP_CRASH_AT=<point>:<n>`` (e.g. ``shard.renamed:3``) to die the n-th time that point is
reached; ``*:<n>`` matches any point. With ``AMTPREP_CRASH_LOG=<file>`` every point reached is
appended to the file, which lets the crash tests enumerate the points of a reference run. Costs one
dict lookup when unset.
"""

from __future__ import annotations

import os
import signal
import time

_target: tuple[str, int] | None = None
_counts: dict[str, int] = {}
_log = os.environ.get("AMTPREP_CRASH_LOG")
_spec = os.environ.get("AMTPREP_CRASH_AT")
if _spec:
    name, _, n = _spec.rpartition(":")
    _target = (name, int(n))


def crashpoint(point: str) -> None:
    if _target is None and _log is None:
        return
    if _log is not None:
        with open(_log, "a") as fh:
            fh.write(point + "\n")
    if _target is not None:
        key = point if _target[0] != "*" else "*"
        if _target[0] in (point, "*"):
            _counts[key] = _counts.get(key, 0) + 1
            if _counts[key] == _target[1]:
                os.kill(os.getpid(), signal.SIGKILL)


_batch_delay = float(os.environ.get("AMTPREP_TEST_BATCH_DELAY") or 0)


def batch_delay() -> None:
    """Test hook: sleep after each committed batch (``AMTPREP_TEST_BATCH_DELAY`` seconds) so a
    test can signal a run while it is demonstrably mid-way."""
    if _batch_delay:
        time.sleep(_batch_delay)
