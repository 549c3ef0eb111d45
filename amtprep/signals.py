"""Graceful stop on SIGINT/SIGTERM.

The first signal asks the runner to stop taking batches; the batch in flight is finished and
committed (or, on a second Ctrl+C, abandoned — never half written), then the run exits 130/143.

Public: ``StopFlag``.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

log = logging.getLogger(__name__)


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self) -> None:
        """Stop after the batches in flight, as a first SIGTERM would (a stage running beside
        another that failed)."""
        if self.signum is None:
            self.signum = signal.SIGTERM

    def install(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. embedded use): no graceful stop
                pass
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            log.warning("second %s: abandoning the batch in flight", signal.Signals(signum).name)
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s received: finishing the current batch, then saving the checkpoint "
            "(press Ctrl+C again to abandon the batch)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> StopFlag:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()
