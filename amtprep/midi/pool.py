"""A small process pool with per-file deadlines that survives its workers dying.

Public API: ``WorkerPool(n_workers, backend, max_bytes, file_timeout, cache_dir=None,
tokenizer=None, archive=None)`` with ``run(items) -> pa.Table`` (result rows, same order:
``RESULT_SCHEMA``, plus the token columns with a ``tokenizer.MidiTokenizer``), ``start(items)``
(begin the next ``run`` early, without waiting), ``worker_pids()``, ``counters`` and ``close()``.

Why not ``concurrent.futures``: a dead worker breaks a ``ProcessPoolExecutor`` for good, and it
cannot stop one task that runs too long. Here each worker owns a pipe; the parent sends it chunks
of paths and gets back one Arrow record batch per chunk holding the chunk's result rows, so the
parent's work per file is near zero (it shares the cores with the workers). Which file a worker
is on, and since when, it writes to a small shared array before each file: the parent reads it
without any message. A file past ``file_timeout`` seconds gets its worker killed (SIGKILL) and a
``timeout`` row; a worker that dies (segfault, ``os._exit``, OOM kill) costs only the file it was
on a ``worker_crashed`` row. An item is a path, an archive member or the bytes themselves
(``amtprep.midi.sources``); with an ``archive`` each worker opens it once. Every other file it held, finished or not (finished rows die with
it), goes back to the queue and a fresh worker replaces the lost one, so results do not depend
on worker count or chunking. With a ``cache_dir`` each worker looks its files up in the feature
cache (``cache.FeatureCache.extract``) and stores what it parsed: reading, hashing and the
look-up fall under the same deadline as parsing, and the parent never opens a MIDI file. Each
answer starts with the chunk's cache counts (hits, misses, unreadable entries dropped). The
tokenizer travels pickled and is unpickled in the worker after torch is blocked (``startup``),
so miditok loads without its PyTorch helpers.

Processes start with the ``spawn`` context (never fork a parent that may hold torch threads). A
worker ignores SIGINT (the parent decides what Ctrl+C means) and exits on its own when the parent
goes away: EOF on its pipe while idle, or a watchdog thread noticing a new parent pid while busy.
Any exception in ``run`` (KeyboardInterrupt included) kills all workers before propagating.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing as mp
import os
import pickle
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

import pyarrow as pa

from amtprep.io.archives import ArchiveSpec
from amtprep.midi.cache import FeatureCache
from amtprep.midi.errors import MidiFileError
from amtprep.midi.extract import FileResult, extract_data
from amtprep.midi.schema import (
    from_message,
    in_order,
    result_schema,
    result_table,
    to_message,
)
from amtprep.midi.sources import Item, Loader, item_label
from amtprep.startup import block_pandas, without_torch

logger = logging.getLogger(__name__)

_READY = b"ready"
_STARTUP_TIMEOUT = 120.0  # seconds for a spawned worker to import numpy/mido/symusic
# Chunks of up to half of what is left per worker, at most 64 files: fewer messages cut the
# parent's work per file (measured 87 -> 31 us on small files against an eighth and 32).
_MAX_CHUNK = 64
_SHRINK = 2
_MAX_STARTUP_FAILURES = 3
_COUNTS = struct.Struct("<III")  # cache hits, misses, entries dropped: heads each chunk's answer


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


def _worker_main(
    conn: Connection,
    progress,
    parent_pid: int,
    backend: str,
    max_bytes: int,
    cache_dir: Path | None,
    tokenizer_pickle: bytes | None = None,
    archive: ArchiveSpec | None = None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    block_pandas()  # pyarrow would import it on the first pa.array: 0.4-0.8 s per worker start
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    tokenizer = None
    if tokenizer_pickle is not None:
        with without_torch():
            tokenizer = pickle.loads(tokenizer_pickle)
    groups = tokenizer.groups if tokenizer is not None else ()
    cache = FeatureCache(cache_dir, backend, tokenizer) if cache_dir is not None else None
    loader = Loader(archive, max_bytes)
    conn.send_bytes(_READY)
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            if cache is not None:
                cache.close()
            loader.close()
            return
        outcomes = []
        for task_id, item in chunk:
            progress[1] = time.monotonic()
            progress[0] = task_id
            outcomes.append(_extract(item, loader, backend, cache, tokenizer))
        if cache is None:
            counts, rows = _COUNTS.pack(0, 0, 0), result_table(outcomes, groups)
        else:
            rows = cache.rows(outcomes)  # stores fresh rows: a stuck cache blames the last file
            counts = _COUNTS.pack(*cache.take_counts())
        progress[0] = -1.0  # task ids restart each run: never leave one that may recur
        conn.send_bytes(counts + to_message(rows))


def _extract(item: Item, loader: Loader, backend: str, cache: FeatureCache | None, tokenizer):
    """One job item -> its ``FileResult`` (or, with a cache, its cached row); never raises for
    a per-file problem."""
    try:
        data = loader.load(item)
    except MidiFileError as exc:
        return FileResult.failed(exc.error_type, str(exc))
    sha256 = hashlib.sha256(data).hexdigest()
    mismatch = loader.check(item, data, sha256)
    if mismatch is not None:
        return mismatch
    if cache is None:
        return extract_data(data, sha256, backend, item_label(item), tokenizer)
    return cache.lookup(data, sha256, item_label(item))


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    progress: object  # shared double[2]: task id of the file being parsed, its start (monotonic)
    ready: bool = False
    spawned_at: float = field(default_factory=time.monotonic)
    inflight: deque = field(default_factory=deque)  # chunks of (task_id, path), head is running
    head_since: float = 0.0  # when the head chunk became the head

    def n_inflight(self) -> int:
        return sum(len(chunk) for chunk in self.inflight)

    def file_started(self) -> float:
        # The shared start time is stale until the worker begins the head chunk.
        return max(self.progress[1], self.head_since)


@dataclass
class _Job:
    """One ``run``'s files: task ids are positions in ``paths`` (job items, ``sources``)."""

    paths: list  # str paths or ``sources`` items
    pending: deque = field(init=False)
    parts: list = field(default_factory=list)  # (task ids, result rows)
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.pending = deque(enumerate(self.paths))
        self.remaining = len(self.paths)


class WorkerPool:
    def __init__(
        self,
        n_workers: int,
        backend: str,
        max_bytes: int,
        file_timeout: float,
        cache_dir: Path | None = None,
        tokenizer=None,
        archive: ArchiveSpec | None = None,
    ) -> None:
        self.n_workers = max(1, n_workers)
        self.archive = archive
        self.backend = backend
        self.max_bytes = max_bytes
        self.file_timeout = file_timeout
        self.cache_dir = cache_dir
        self._tokenizer_pickle = pickle.dumps(tokenizer) if tokenizer is not None else None
        self.groups = tokenizer.groups if tokenizer is not None else ()
        self.schema = result_schema(self.groups)
        self.counters = dict.fromkeys(
            ("timeouts", "worker_deaths", "workers_started", "cache_hits", "cache_misses"), 0
        )
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._startup_failures = 0
        self._started: _Job | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        progress = self._ctx.RawArray("d", [-1.0, 0.0])
        process = self._ctx.Process(
            target=_worker_main,
            args=(
                child_conn,
                progress,
                os.getpid(),
                self.backend,
                self.max_bytes,
                self.cache_dir,
                self._tokenizer_pickle,
                self.archive,
            ),
            name="amtprep-midi-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        self.counters["workers_started"] += 1
        return _Worker(process, parent_conn, progress)

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def close(self) -> None:
        """Kill every worker; idempotent. A later ``run`` starts new ones."""
        self._started = None
        workers, self._workers = self._workers, []
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.close()  # an idle worker exits on EOF
            worker.process.kill()
        for worker in workers:
            worker.process.join(timeout=5)

    def warm_up(self) -> None:
        """Start the workers now, without waiting: their imports (~0.5 s each) then overlap
        with the caller's start-up instead of delaying the first batch."""
        while len(self._workers) < self.n_workers:
            self._workers.append(self._spawn())

    # -- scheduling ------------------------------------------------------------------------------
    def start(self, paths: Sequence[str]) -> None:
        """Hand out the first chunks of ``paths`` and return at once: workers parse while the
        caller does other work (the runner writes the previous shard). ``run`` with the same
        paths collects them; any other ``run`` discards them."""
        self._discard_started()
        if paths:
            self._started = _Job(list(paths))
            try:
                self._begin(self._started)
            except BaseException:
                self.close()
                raise

    def run(self, paths: Sequence[str]) -> pa.Table:
        if not paths:
            return in_order([], 0, self.schema)
        job, self._started = self._started, None
        if job is not None and job.paths != list(paths):
            self.close()  # see _discard_started: new workers drop the started job's results
            job = None
        try:
            if job is None:
                job = _Job(list(paths))
                self._begin(job)
            self._finish(job)
        except BaseException:
            self.close()
            raise
        return in_order(job.parts, len(paths), self.schema)

    def _discard_started(self) -> None:
        """Results of a started job nobody collects would arrive mid-``run`` of another: the
        simplest sure way to drop them is new workers (rare: the runner collects what it
        starts, unless it stops)."""
        if self._started is not None:
            self._started = None
            self.close()

    def _begin(self, job: _Job) -> None:
        while len(self._workers) < min(self.n_workers, len(job.paths)):
            self._workers.append(self._spawn())
        now = time.monotonic()
        for worker in self._workers:  # deep queues: the caller will not feed them for a while
            self._feed(worker, job.pending, now, depth=4)

    def _finish(self, job: _Job) -> None:
        pending, parts = job.pending, job.parts
        while job.remaining:
            now = time.monotonic()
            for worker in self._workers:
                self._feed(worker, pending, now)
            waitables = [w.conn for w in self._workers] + [
                w.process.sentinel for w in self._workers
            ]
            wait(waitables, timeout=self._next_deadline(now))
            for index, worker in enumerate(list(self._workers)):
                done, alive = self._drain(worker, parts)
                job.remaining -= done
                if not alive:
                    job.remaining -= self._replace(index, worker, pending, parts, "worker_crashed")
                elif self._overdue(worker, time.monotonic()):
                    job.remaining -= self._replace(index, worker, pending, parts, "timeout")

    def _feed(self, worker: _Worker, pending: deque, now: float, depth: int = 1) -> None:
        """Keep chunks queued behind the running one (one more by default, ``depth`` more when
        the caller is about to look away), so a worker never waits for the parent between
        chunks. Chunks shrink as the queue drains (``_SHRINK``), so workers finish a batch
        together instead of one idling at the end."""
        while worker.ready and pending:
            chunk = max(1, min(_MAX_CHUNK, len(pending) // (self.n_workers * _SHRINK)))
            if worker.n_inflight() > depth * chunk:
                return
            batch = [pending.popleft() for _ in range(min(chunk, len(pending)))]
            worker.conn.send(batch)
            if not worker.inflight:
                worker.head_since = now
            worker.inflight.append(batch)

    def _next_deadline(self, now: float) -> float:
        deadlines = [
            (w.file_started() + self.file_timeout) if w.ready else (w.spawned_at + _STARTUP_TIMEOUT)
            for w in self._workers
            if w.inflight or not w.ready
        ]
        return max(0.0, min(deadlines) - now) + 0.01 if deadlines else 1.0

    def _overdue(self, worker: _Worker, now: float) -> bool:
        if not worker.ready:
            return now - worker.spawned_at > _STARTUP_TIMEOUT
        return bool(worker.inflight) and now - worker.file_started() > self.file_timeout

    def _drain(self, worker: _Worker, parts: list) -> tuple[int, bool]:
        """Read every message waiting on the worker's pipe -> (files finished, still alive)."""
        done = 0
        try:
            while worker.conn.poll():
                message = worker.conn.recv_bytes()
                if message == _READY:
                    worker.ready = True
                    continue
                chunk = worker.inflight.popleft()
                hits, misses, dropped = _COUNTS.unpack_from(message)
                rows = from_message(memoryview(message)[_COUNTS.size :], self.schema)
                if rows.num_rows != len(chunk):
                    raise RuntimeError(f"worker answered {rows.num_rows} rows for {len(chunk)}")
                parts.append(([task_id for task_id, _ in chunk], rows))
                self.counters["cache_hits"] += hits
                self.counters["cache_misses"] += misses
                if dropped:  # the worker's own warning goes to its stderr, not the run's log
                    logger.warning(
                        "%d MIDI cache entries were unreadable and dropped; their files were "
                        "parsed again",
                        dropped,
                    )
                worker.head_since = time.monotonic()
                done += len(chunk)
        except (EOFError, OSError):
            return done, False
        return done, worker.process.is_alive()

    def _replace(self, index, worker, pending, parts, error_type) -> int:
        """Kill ``worker``, fail the file it was on, requeue the rest; -> files failed (0/1)."""
        self._kill(worker)
        if error_type == "worker_crashed":
            self.counters["worker_deaths"] += 1
        failed = 0
        held = [task for chunk in worker.inflight for task in chunk]
        if held:
            current = int(worker.progress[0])
            # Not yet begun on the head chunk (its record is an older file's): blame its first.
            culprit = next((t for t in held if t[0] == current), held[0])
            task_id, item = culprit
            path = item_label(item)
            if error_type == "timeout":
                self.counters["timeouts"] += 1
                message = f"parsing took longer than {self.file_timeout:g} s (file_timeout); worker killed"
            else:
                code = worker.process.exitcode
                message = f"worker process died (exit code {code}) while parsing this file"
            logger.warning("%s: %s", path, message)
            failed_row = result_table([FileResult.failed(error_type, message)], self.groups)
            parts.append(([task_id], failed_row))
            failed = 1
            pending.extendleft(reversed([t for t in held if t is not culprit]))
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
