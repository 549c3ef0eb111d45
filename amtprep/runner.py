"""Runs one stage over the input: batching, the commit protocol, retries and progress.

The runner owns everything a stage does not: which idx are left (those no committed shard
covers, cut into batches of the *current* batch size), publishing each batch as a shard and
then committing it with one log append (``amtprep.commit``), the checkpoint summary every
``checkpoint_interval`` batches, stopping between batches on a signal, and ``--retry_failed``.
A batch's counters travel in its shard footer and its log entry, never only in memory.

Public: ``StageRunner``, ``StageResult``, ``plan_batches``, ``uncovered``, ``finish_table``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amtprep.commit.store import StageStore, add_counters, batch_metadata, shard_identity_metadata
from amtprep.io.crashpoints import batch_delay
from amtprep.io.shards import read_shard, write_shard
from amtprep.records import Record
from amtprep.signals import StopFlag
from amtprep.stages import Stage

log = logging.getLogger(__name__)

RUN_FIELDS = [
    pa.field("attempts", pa.int32(), nullable=False),
    pa.field("processed_at", pa.timestamp("ms", tz="UTC"), nullable=False),
]


class StageContractError(RuntimeError):
    """A stage returned a table that breaks the contract in ``amtprep.stages``."""


@dataclass
class StageResult:
    stage: str
    processed: int = 0  # rows committed by this run
    failed: int = 0
    retried: int = 0
    recovered_now: int = 0  # retried rows that now succeed
    seconds: float = 0.0
    stopped: bool = False
    complete: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # what the stage object saw (device, bf16 probe)


def plan_batches(
    records: Iterable[Record], covered: Sequence[tuple[int, int]], batch_size: int
) -> Iterator[list[Record]]:
    """Yield contiguous batches of the records no committed range covers."""
    wanted = uncovered(covered)
    batch: list[Record] = []
    for rec in records:
        if not wanted(rec.idx):
            if batch:
                yield batch
                batch = []
            continue
        if batch and rec.idx != batch[-1].idx + 1:
            yield batch
            batch = []
        batch.append(rec)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def uncovered(covered: Sequence[tuple[int, int]]):
    """``wanted(idx)`` for readers: False inside a committed range, so a resume never parses
    rows it will not process. Must be called with increasing idx (readers do)."""
    ranges = sorted(covered)
    pos = 0

    def wanted(idx: int) -> bool:
        nonlocal pos
        while pos < len(ranges) and ranges[pos][1] < idx:
            pos += 1
        return not (pos < len(ranges) and ranges[pos][0] <= idx)

    return wanted


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        store: StageStore,
        *,
        total_files: int,
        input_fp: dict[str, Any],
        batch_size: int,
        checkpoint_interval: int = 1,
        stop: StopFlag | None = None,
        progress: bool = False,
        request: dict[str, Any] | None = None,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        """``after_commit``: called after each committed batch, between batches (e.g.
        ``--save_partial_every``); what it does is outside the commit protocol."""
        self.after_commit = after_commit
        self.stage = stage
        self.store = store
        self.total_files = total_files
        self.input_fp = input_fp
        self.settings = stage.fingerprint()
        self.request = request or {}
        self.batch_size = max(1, batch_size)
        self.checkpoint_interval = max(1, checkpoint_interval)
        self.stop = stop or StopFlag()
        self.progress = progress
        self._schema: pa.Schema | None = None

    # -- public -----------------------------------------------------------------------------
    def _begin(self) -> None:
        self.store.begin(
            {
                "total_files": self.total_files,
                "input": self.input_fp,
                "settings": self.settings,
                "request": self.request,
            }
        )
        self._seen = dict(self.stage.counters())

    def _batch_counters(self) -> dict[str, int]:
        """What the stage counted since the last call: the batch just processed."""
        now = dict(self.stage.counters())
        delta = {k: int(v) - int(self._seen.get(k, 0)) for k, v in now.items()}
        self._seen = now
        return delta  # zeros too: statistics list every counter the stage keeps

    def run(self, records: Iterable[Record]) -> StageResult:
        self._begin()
        store = self.store
        result = StageResult(self.stage.name)
        done_before = store.processed
        remaining = self.total_files - done_before
        self._total_batches = len(store.live) + -(-remaining // self.batch_size)
        bar = self._progress_bar(done_before)
        self._since_save = 0
        t_run = time.perf_counter()
        last_dt = 0.0
        try:
            batches = plan_batches(records, store.covered(), self.batch_size)
            upcoming = next(batches, None)
            while upcoming is not None:
                batch = upcoming
                if self.stop.requested:
                    result.stopped = True
                    break
                t0 = time.perf_counter()
                table = self._process(batch, attempts=np.ones(len(batch), dtype=np.int32))
                counters = self._batch_counters()
                # Read one batch ahead so the stage can work on it while this shard is written;
                # an error reading it is raised once this batch is committed, as before.
                deferred: Exception | None = None
                try:
                    upcoming = next(batches, None)
                except Exception as exc:
                    upcoming, deferred = None, exc
                if upcoming is not None and not self.stop.requested:
                    self._prefetch(upcoming)
                dt = time.perf_counter() - t0
                table = table.replace_schema_metadata(
                    {**(table.schema.metadata or {}), **batch_metadata(counters, dt)}
                )
                entry = write_shard(
                    store.shard_dir,
                    table,
                    batch[0].idx,
                    batch[-1].idx,
                    crash_tag=f"{self.stage.name}.shard",
                )
                last_dt = self._commit(entry, counters, dt, result, t_run, t0, bar)
                if deferred is not None:
                    raise deferred
            else:
                result.stopped = self.stop.requested
        finally:
            if bar is not None:
                bar.close()
            result.seconds = time.perf_counter() - t_run
            result.complete = store.complete
            result.counters = dict(store.counters)
            store.save_summary(self._batch_info(result, t_run, last_dt))
        return result

    def retry_failed(self, records: Iterable[Record]) -> StageResult:
        """Re-run failed records; each shard with failures is republished as a new generation."""
        self._begin()
        store = self.store
        result = StageResult(self.stage.name)
        t_run = time.perf_counter()
        todo = [s for _, s in sorted(store.live.items()) if s.entry.failed]
        self._total_batches = len(store.live)
        it = iter(records)
        pending: Record | None = None
        try:
            for live in todo:
                entry = live.entry
                if self.stop.requested:
                    result.stopped = True
                    break
                t0 = time.perf_counter()
                old = read_shard(store.shard_dir / entry.name)
                failed_mask = pc.equal(old.column("status"), "failed").to_numpy(
                    zero_copy_only=False
                )
                failed_idx = set(old.column("idx").to_numpy()[failed_mask].tolist())
                batch: list[Record] = []
                while True:
                    rec = pending if pending is not None else next(it, None)
                    pending = None
                    if rec is None or rec.idx > entry.last_idx:
                        pending = rec
                        break
                    if rec.idx in failed_idx:
                        batch.append(rec)
                if not batch:
                    continue
                positions = np.array([r.idx - entry.first_idx for r in batch])
                prev_attempts = old.column("attempts").to_numpy()[positions].astype(np.int32)
                new = self._process(batch, attempts=prev_attempts + 1)
                work = self._batch_counters()
                # The new generation stands for the whole range: its counters and time are the
                # old generation's plus this retry's, so totals stay exactly-once.
                counters = add_counters(live.counters, {**work, "retried": len(batch)})
                dt = live.seconds + time.perf_counter() - t0
                merged = _replace_rows(old, new, positions)
                merged = merged.replace_schema_metadata(
                    {**(merged.schema.metadata or {}), **batch_metadata(counters, dt)}
                )
                published = write_shard(
                    store.shard_dir,
                    merged,
                    entry.first_idx,
                    entry.last_idx,
                    generation=entry.generation + 1,
                    crash_tag=f"{self.stage.name}.shard",
                )
                store.commit(published, counters, dt)  # the log names the new generation ...
                store.remove_shard(entry.name)  # ... so the old may go
                result.retried += len(batch)
                result.recovered_now += entry.failed - published.failed
                result.failed += published.failed
        finally:
            result.seconds = time.perf_counter() - t_run
            store.save_summary(self._batch_info(result, t_run, 0.0))
        result.complete = store.complete
        return result

    # -- internals --------------------------------------------------------------------------
    def _commit(
        self,
        entry,
        counters: dict[str, int],
        seconds: float,
        result: StageResult,
        t_run: float,
        t0: float,
        bar=None,
    ) -> float:
        """Commit a published shard (its log entry), save the summary every
        ``checkpoint_interval`` batches, report; returns the batch's wall time."""
        self.store.commit(entry, counters, seconds)
        last_dt = time.perf_counter() - t0
        result.processed += entry.rows
        result.failed += entry.failed
        self._since_save += 1
        if self._since_save >= self.checkpoint_interval:
            self.store.save_summary(self._batch_info(result, t_run, last_dt))
            self._since_save = 0
        self._report(bar, entry.rows, result, t_run, last_dt)
        if self.after_commit is not None:
            self.after_commit()
        batch_delay()
        return last_dt

    def _prefetch(self, batch: list[Record]) -> None:
        """A stage may start on the next batch early (``prefetch``); nothing is committed."""
        prefetch = getattr(self.stage, "prefetch", None)
        if callable(prefetch):
            prefetch(batch)

    def _process(self, batch: list[Record], attempts: np.ndarray) -> pa.Table:
        return finish_table(
            self.stage,
            self.stage.process(batch),
            batch,
            attempts,
            self.total_files,
            self.input_fp,
            self.settings,
        )

    def _batch_info(self, result: StageResult, t_run: float, last: float) -> dict:
        elapsed = time.perf_counter() - t_run
        current = len(self.store.live)
        return {
            "current_batch": current,
            "total_batches": max(self._total_batches, current),
            "batch_size": self.batch_size,
            "processing_time": round(self.store.seconds, 3),
            "last_batch_time": round(last, 4),
            "files_per_second": round(result.processed / elapsed, 2) if elapsed > 0 else 0.0,
        }

    def _progress_bar(self, done: int):
        if not (self.progress and sys.stderr.isatty()):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.total_files,
            initial=done,
            desc=f"{self.stage.name:>4}",
            unit="file",
            dynamic_ncols=True,
        )

    def _report(self, bar, rows: int, result: StageResult, t_run: float, dt: float) -> None:
        if bar is not None:
            bar.update(rows)
            return
        bi = self._batch_info(result, t_run, dt)
        log.info(
            "%s: batch %d/%d committed (%d/%d files, %d failed, %.1f files/s)",
            self.stage.name,
            bi["current_batch"],
            bi["total_batches"],
            self.store.processed,
            self.total_files,
            self.store.failed,
            bi["files_per_second"],
        )


def finish_table(
    stage: Stage,
    table: pa.Table,
    batch: Sequence[Record],
    attempts: np.ndarray,
    total_files: int,
    input_fp: dict[str, Any],
    settings: dict[str, Any],
) -> pa.Table:
    """A stage's table as a shard holds it: contract checked, run columns and the identity
    footer added (the same wherever the batch ran: here or on a cluster worker)."""
    _check_contract(table, batch, stage.name)
    now = pa.array(np.full(len(batch), int(time.time() * 1000), dtype="datetime64[ms]"))
    table = table.append_column(RUN_FIELDS[0], pa.array(attempts, pa.int32()))
    table = table.append_column(RUN_FIELDS[1], now.cast(RUN_FIELDS[1].type))
    meta = dict(table.schema.metadata or {})
    extra = getattr(stage, "schema_metadata", None)
    if callable(extra):
        meta.update({str(k).encode(): str(v).encode() for k, v in extra().items()})
    meta.update(shard_identity_metadata(stage.name, total_files, input_fp, settings))
    return table.replace_schema_metadata(meta)


def _check_contract(table: pa.Table, batch: Sequence[Record], stage: str) -> None:
    if table.num_rows != len(batch):
        raise StageContractError(
            f"{stage} stage returned {table.num_rows} rows for {len(batch)} records"
        )
    idx = table.column("idx").to_numpy()
    if not np.array_equal(
        idx, np.fromiter((r.idx for r in batch), dtype=np.int64, count=len(batch))
    ):
        raise StageContractError(f"{stage} stage returned rows out of order")


def _replace_rows(old: pa.Table, new: pa.Table, positions: np.ndarray) -> pa.Table:
    """``old`` with the rows at ``positions`` replaced by ``new``'s rows (same schema)."""
    take = np.arange(old.num_rows)
    take[positions] = old.num_rows + np.arange(len(positions))
    new = new.select(old.column_names).cast(old.schema)
    return (
        pa.concat_tables([old, new])
        .take(pa.array(take))
        .replace_schema_metadata(new.schema.metadata)
    )
