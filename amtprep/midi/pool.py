"""A small process pool with per-file deadlines that survives its workers dying.

Public API: ``WorkerPool(n_workers, backend, max_bytes, file_timeout)`` with
``run(paths) -> list[FileResult]`` (same order), ``worker_pids()``, ``counters`` and ``close()``.

Why not ``concurrent.futures``: a dead worker breaks a ``ProcessPoolExecutor`` for good, and it
cannot stop one task that runs too long. Here each worker owns a pipe; the parent sends it a chunk
of paths and gets one ``FileResult`` back per file, so it always knows which file is in flight and
since when. A file past ``file_timeout`` seconds gets its worker killed (SIGKILL) and a
``timeout`` row; a worker that dies (segfault, ``os._exit``, OOM kill) costs only its in-flight
file a ``worker_crashed`` row. Unstarted files of either chunk go back to the queue and a fresh
worker replaces the lost one, so results do not depend on worker count or chunking.

Processes start with the ``spawn`` context (never fork a parent that may hold torch threads). A
worker ignores SIGINT (the parent decides what Ctrl+C means) and exits on its own when the parent
goes away: EOF on its pipe while idle, or a watchdog thread noticing a new parent pid while busy.
Any exception in ``run`` (KeyboardInterrupt included) kills all workers before propagating.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from amtprep.midi.extract import FileResult, extract_file

logger = logging.getLogger(__name__)

_READY = "ready"
_STARTUP_TIMEOUT = 120.0  # seconds for a spawned worker to import numpy/mido/symusic
_MAX_CHUNK = 32
_MAX_STARTUP_FAILURES = 3


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


def _worker_main(conn: Connection, parent_pid: int, backend: str, max_bytes: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    conn.send(_READY)
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        for task_id, path in chunk:
            conn.send((task_id, extract_file(path, backend, max_bytes)))


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    ready: bool = False
    spawned_at: float = field(default_factory=time.monotonic)
    inflight: deque = field(default_factory=deque)  # (task_id, path), head is running
    head_since: float = 0.0


class WorkerPool:
    def __init__(self, n_workers: int, backend: str, max_bytes: int, file_timeout: float) -> None:
        self.n_workers = max(1, n_workers)
        self.backend = backend
        self.max_bytes = max_bytes
        self.file_timeout = file_timeout
        self.counters = {"timeouts": 0, "worker_deaths": 0, "workers_started": 0}
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._startup_failures = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, os.getpid(), self.backend, self.max_bytes),
            name="amtprep-midi-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        self.counters["workers_started"] += 1
        return _Worker(process, parent_conn)

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def close(self) -> None:
        """Kill every worker; idempotent. A later ``run`` starts new ones."""
        workers, self._workers = self._workers, []
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.close()  # an idle worker exits on EOF
            worker.process.kill()
        for worker in workers:
            worker.process.join(timeout=5)

    # -- scheduling ------------------------------------------------------------------------------
    def run(self, paths: Sequence[str]) -> list[FileResult]:
        results: list[FileResult | None] = [None] * len(paths)
        if not paths:
            return []
        try:
            self._run(list(enumerate(paths)), results)
        except BaseException:
            self.close()
            raise
        return results  # type: ignore[return-value]

    def _run(self, tasks: list[tuple[int, str]], results: list) -> None:
        pending = deque(tasks)
        while len(self._workers) < min(self.n_workers, len(tasks)):
            self._workers.append(self._spawn())
        remaining = len(tasks)
        while remaining:
            now = time.monotonic()
            for worker in self._workers:
                self._feed(worker, pending, now)
            waitables = [w.conn for w in self._workers] + [
                w.process.sentinel for w in self._workers
            ]
            wait(waitables, timeout=self._next_deadline(now))
            for index, worker in enumerate(list(self._workers)):
                done, alive = self._drain(worker, results)
                remaining -= done
                if not alive:
                    remaining -= self._replace(index, worker, pending, results, "worker_crashed")
                elif self._overdue(worker, time.monotonic()):
                    remaining -= self._replace(index, worker, pending, results, "timeout")

    def _feed(self, worker: _Worker, pending: deque, now: float) -> None:
        """Keep a second chunk queued behind the running one, so a worker never waits for the
        parent between chunks. Chunks shrink as the queue drains (an eighth of what is left
        per worker), so workers finish a batch together instead of one idling at the end."""
        if not worker.ready or not pending:
            return
        chunk = max(1, min(_MAX_CHUNK, len(pending) // (self.n_workers * 8)))
        if len(worker.inflight) > chunk:
            return
        batch = [pending.popleft() for _ in range(min(chunk, len(pending)))]
        worker.conn.send(batch)
        if not worker.inflight:
            worker.head_since = now
        worker.inflight.extend(batch)

    def _next_deadline(self, now: float) -> float:
        deadlines = [
            (w.head_since + self.file_timeout) if w.ready else (w.spawned_at + _STARTUP_TIMEOUT)
            for w in self._workers
            if w.inflight or not w.ready
        ]
        return max(0.0, min(deadlines) - now) + 0.01 if deadlines else 1.0

    def _overdue(self, worker: _Worker, now: float) -> bool:
        if not worker.ready:
            return now - worker.spawned_at > _STARTUP_TIMEOUT
        return bool(worker.inflight) and now - worker.head_since > self.file_timeout

    def _drain(self, worker: _Worker, results: list) -> tuple[int, bool]:
        """Read every message waiting on the worker's pipe -> (files finished, still alive)."""
        done = 0
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message == _READY:
                    worker.ready = True
                    continue
                task_id, result = message
                head_id, _ = worker.inflight.popleft()
                assert head_id == task_id, "worker answered out of order"
                results[task_id] = result
                worker.head_since = time.monotonic()
                done += 1
        except (EOFError, OSError):
            return done, False
        return done, worker.process.is_alive()

    def _replace(self, index, worker, pending, results, error_type) -> int:
        """Kill ``worker``, fail its in-flight file, requeue the rest; -> files failed (0 or 1)."""
        self._kill(worker)
        if error_type == "worker_crashed":
            self.counters["worker_deaths"] += 1
        failed = 0
        if worker.inflight:
            task_id, path = worker.inflight.popleft()
            if error_type == "timeout":
                self.counters["timeouts"] += 1
                message = f"parsing took longer than {self.file_timeout:g} s (file_timeout); worker killed"
            else:
                code = worker.process.exitcode
                message = f"worker process died (exit code {code}) while parsing this file"
            logger.warning("%s: %s", path, message)
            results[task_id] = FileResult.failed(error_type, message)
            failed = 1
            pending.extendleft(reversed(worker.inflight))
        if worker.ready:
            self._startup_failures = 0
        else:
            self._startup_failures += 1
            logger.warning(
                "MIDI worker died while starting (exit code %s)", worker.process.exitcode
            )
            if self._startup_failures >= _MAX_STARTUP_FAILURES:
                raise RuntimeError(
                    f"MIDI workers failed to start {self._startup_failures} times in a row "
                    f"(last exit code {worker.process.exitcode}); see the log"
                )
        self._workers[index] = self._spawn()
        return failed
