"""``--executor ray``: the same batches, run on a Ray cluster, committed by the driver alone.

The driver plans exactly the batches a local run plans (``plan_batches`` over the uncovered
idx, from ``--batch_size``, never from the cluster's size) and keeps a bounded window of them in
flight. MIDI batches run as Ray tasks (``num_cpus=1``; each Ray worker process builds its
``MidiStage`` once and keeps it); text batches go to a pool of actors that hold the model
(``num_gpus`` per actor, fractional to pack several on one GPU). A task or actor call gets only
its batch's records, writes the shard itself with a create-only write under its final name
(``Storage.write_new``: into the shard folder, or the bucket's stage prefix) and returns only the
shard's entry, counters and seconds; nothing else crosses the object store. Only the driver
appends to the commit log, in the order batches finish (the watermark handles gaps), so the
commit point and the crash story are the local ones.

Duplicates are harmless by construction: Ray re-runs a task whose worker died (``max_retries``)
and may re-run a finished task whose result was lost; the second attempt finds the name taken,
reads the first writer's shard and returns *its* entry and footer counters, so exactly one shard
per range exists and its counters count once. An actor that dies (its node removed) has its
batches resubmitted to a new actor; a driver killed at any moment resumes like a local run
(shards a task wrote but the driver never committed are adopted as orphans).

Public: ``RayStageRunner``, ``RemoteTextStage``, ``BatchSpec``, ``run_batch``, ``ray_session``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from amtprep.commit.store import BATCH_META_KEY, batch_metadata
from amtprep.errors import ConfigError, ObjectExistsError
from amtprep.io.crashpoints import crashpoint
from amtprep.io.shards import (
    ShardEntry,
    ShardInvalid,
    describe_shard,
    shard_name,
    table_to_parquet_bytes,
)
from amtprep.io.storage import open_storage
from amtprep.records import Record
from amtprep.runner import StageResult, StageRunner, finish_table, plan_batches

log = logging.getLogger(__name__)

KILL_ONCE_ENV = "AMTPREP_RAY_KILL_ONCE"  # test hook: a task kills its worker after its write
ACTOR_NOTE_ENV = "AMTPREP_RAY_ACTOR_NOTE"  # test hook: a folder where actors note their node
ACTOR_DELAY_ENV = "AMTPREP_RAY_ACTOR_DELAY"  # test hook: seconds an actor waits before each batch
TEST_HOOKS = (
    "AMTPREP_CRASH",
    "AMTPREP_FAIL_AT",
    "AMTPREP_SIGNAL_AT",
    "AMTPREP_TEST_",
    "AMTPREP_RAY_",
)


@dataclass(frozen=True)
class BatchSpec:
    """What a worker needs to turn records into a published shard (pickled to the cluster)."""

    stage: str  # "midi" | "text"
    config: Any  # MidiConfig | TextConfig
    total_files: int
    input_fp: dict[str, Any]
    settings: dict[str, Any]
    shard_root: str  # a local folder or a URL: where workers publish shards

    def key(self) -> bytes:
        return pickle.dumps((self.stage, self.config))


_STAGES: dict[bytes, Any] = {}  # per worker process: built once, reused by every task


def _stage_for(spec: BatchSpec):
    key = spec.key()
    if key not in _STAGES:
        if spec.stage == "midi":
            from amtprep.midi import MidiStage

            _STAGES[key] = MidiStage(spec.config)
        else:
            from amtprep.text import TextStage

            _STAGES[key] = TextStage(spec.config)
    return _STAGES[key]


def run_batch(stage, spec: BatchSpec, records: list[Record], attempts: np.ndarray) -> dict:
    """Process ``records``, publish their shard create-only, return its entry (the first
    writer's, when another attempt published the range first)."""
    t0 = time.perf_counter()
    before = dict(stage.counters())
    table = finish_table(
        stage,
        stage.process(records),
        records,
        attempts,
        spec.total_files,
        spec.input_fp,
        spec.settings,
    )
    after = dict(stage.counters())
    counters = {k: int(v) - int(before.get(k, 0)) for k, v in after.items()}
    seconds = time.perf_counter() - t0
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), **batch_metadata(counters, seconds)}
    )
    data = table_to_parquet_bytes(table)
    name = shard_name(records[0].idx, records[-1].idx)
    storage = open_storage(spec.shard_root)
    adopted = False
    try:
        storage.write_new(name, data)
        entry = describe_shard(name, data, table)
    except ObjectExistsError:  # a retry or a re-run: the first writer's shard stands
        data = storage.read(name)
        entry = describe_shard(name, data)
        footer = pq.read_schema(io.BytesIO(data)).metadata or {}
        batch = json.loads(footer.get(BATCH_META_KEY, b"{}"))
        counters, seconds = dict(batch.get("counters") or {}), float(batch.get("seconds") or 0)
        adopted = True
    _kill_once(spec.stage)
    crashpoint(f"{spec.stage}.ray.published")
    return {"entry": entry.to_dict(), "counters": counters, "seconds": seconds, "adopted": adopted}


def _kill_once(stage: str) -> None:
    """Test hook: the first task to get here (per marker file) SIGKILLs its own worker
    process after publishing its shard, as a node failure would."""
    marker = os.environ.get(KILL_ONCE_ENV, "")
    if not marker.startswith(f"{stage}:"):
        return
    path = marker.split(":", 1)[1]
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), 9)


def _midi_task(spec: BatchSpec, records: list[Record], attempts: np.ndarray) -> dict:
    return run_batch(_stage_for(spec), spec, records, attempts)


class _TextActor:
    """Holds the text model; runs one batch at a time (Ray queues the rest of its window)."""

    def __init__(self, config: Any) -> None:
        from amtprep.text import TextStage

        self.stage = TextStage(config)
        note = os.environ.get(ACTOR_NOTE_ENV)
        if note:
            import ray

            node = ray.get_runtime_context().get_node_id()
            path = os.path.join(note, f"{os.getpid()}.node")
            with open(path + ".tmp", "w") as fh:
                fh.write(node)
            os.replace(path + ".tmp", path)

    def describe(self) -> dict[str, Any]:
        fp = self.stage.fingerprint()
        return {"fingerprint": fp, "counters": dict(self.stage.counters())}

    def run(self, spec: BatchSpec, records: list[Record], attempts: np.ndarray) -> dict:
        delay = float(os.environ.get(ACTOR_DELAY_ENV) or 0)
        if delay:  # keeps batches in flight for a test that removes a node mid-run
            time.sleep(delay)
        return run_batch(self.stage, spec, records, attempts)

    def process(self, records: list[Record]):
        return self.stage.process(records)


class RemoteTextStage:
    """The text stage as the driver sees it under Ray: a pool of actors holding the model.

    The driver never loads the model (nor imports torch): the fingerprint the identity check
    needs comes from the first actor. ``process`` (used by ``--retry_failed`` only) runs a
    batch on an actor and brings its table back.
    """

    name = "text"

    def __init__(self, config: Any, actors: int = 1, gpus_per_actor: float = 0.0) -> None:
        import ray

        self.ray = ray
        self.config = config
        # No CPU reserved: the actors are made as the run starts, so their model loads while
        # the MIDI tasks hold the CPUs; the two stages' batches never run at the same time.
        # On GPUs, num_gpus places them.
        self._cls = ray.remote(num_cpus=0, num_gpus=gpus_per_actor, max_restarts=0)(_TextActor)
        self.actors = [self.new_actor() for _ in range(max(1, actors))]
        self._pending = self.actors[0].describe.remote()
        self._described: dict[str, Any] | None = None

    def new_actor(self):
        return self._cls.remote(self.config)

    def _describe(self) -> dict[str, Any]:
        if self._described is None:
            self._described = self.ray.get(self._pending)
        return self._described

    def fingerprint(self) -> dict[str, Any]:
        return self._describe()["fingerprint"]

    def counters(self) -> dict[str, int]:
        return {k: 0 for k in self._describe()["counters"]}

    def process(self, records: Sequence[Record]):
        return self.ray.get(self.actors[0].process.remote(list(records)))

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self.actors = []


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to ``address`` (a running cluster) or start a local Ray; shut down only what
    this run started."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--executor ray needs Ray: pip install 'amtprep[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        # the test hooks (crash points, kill markers) reach the workers as they reach us
        # (only those: a job-specific environment makes Ray start fresh worker processes)
        hooks = {k: v for k, v in os.environ.items() if k.startswith(TEST_HOOKS)}
        if hooks:
            kwargs["runtime_env"] = {"env_vars": hooks}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        # ray.init installs its own SIGTERM handler (sys.exit): the run's graceful stop
        # (finish the batches in flight, commit, exit 143) must stay in charge
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        ray.init(**kwargs)
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


class RayStageRunner(StageRunner):
    """``StageRunner`` whose batches run on Ray; commits, summaries and progress stay here."""

    def __init__(
        self,
        *args: Any,
        spec: BatchSpec,
        fetch: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        import ray

        self.ray = ray
        self.spec = spec
        self.fetch = fetch  # bucket output: bring the shard a worker published into the copy
        self._next_actor = 0
        self.resubmitted = 0
        if spec.stage == "midi":
            self._task = ray.remote(num_cpus=1, max_retries=3)(_midi_task)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.window = max(2, 2 * cpus)
        else:
            self.window = 2 * len(self.stage.actors)

    def _submit(self, batch: list[Record]) -> tuple[Any, Any]:
        attempts = np.ones(len(batch), dtype=np.int32)
        if self.spec.stage == "midi":
            return self._task.remote(self.spec, batch, attempts), None
        actors = self.stage.actors
        actor = actors[self._next_actor % len(actors)]
        self._next_actor += 1
        return actor.run.remote(self.spec, batch, attempts), actor

    def _check_published(self, entry: ShardEntry) -> None:
        """A worker's entry is committed only for the shard it names, as it names it."""
        path = self.store.shard_dir / entry.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ShardInvalid(f"{entry.name}: a worker reported it published, but {exc}") from exc
        if len(data) != entry.bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ShardInvalid(f"{entry.name}: differs from the entry its worker returned")

    def _replace(self, dead: Any) -> None:
        stage = self.stage
        stage.actors = [a for a in stage.actors if a is not dead] + [stage.new_actor()]

    def run(self, records: Iterable[Record]) -> StageResult:
        ray = self.ray
        self._begin()
        store = self.store
        result = StageResult(self.stage.name)
        remaining = self.total_files - store.processed
        self._total_batches = len(store.live) + -(-remaining // self.batch_size)
        self._since_save, t_run, last_dt = 0, time.perf_counter(), 0.0
        inflight: dict[Any, tuple[list[Record], Any, float]] = {}
        batches = plan_batches(records, store.covered(), self.batch_size)
        exhausted = False
        try:
            while True:
                while not self.stop.requested and not exhausted and len(inflight) < self.window:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                        break
                    ref, actor = self._submit(batch)
                    inflight[ref] = (batch, actor, time.perf_counter())
                if not inflight:
                    break
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                batch, actor, t0 = inflight.pop(ref)
                try:
                    out = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    if actor is not None:
                        self._replace(actor)
                    log.warning(
                        "%s: batch %d-%d lost with its worker (%s); resubmitted",
                        self.stage.name, batch[0].idx, batch[-1].idx, type(exc).__name__,
                    )  # fmt: skip
                    self.resubmitted += 1
                    ref, actor = self._submit(batch)
                    inflight[ref] = (batch, actor, t0)
                    continue
                entry = ShardEntry.from_dict(out["entry"])
                if self.fetch is not None:
                    self.fetch(entry.name)
                self._check_published(entry)
                last_dt = self._commit(entry, out["counters"], out["seconds"], result, t_run, t0)
            result.stopped = self.stop.requested and not (exhausted and not inflight)
        finally:
            for ref in inflight:  # a stop or an error: what is in flight is dropped, uncommitted
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            result.seconds = time.perf_counter() - t_run
            result.complete = store.complete
            result.counters = dict(store.counters)
            store.save_summary(self._batch_info(result, t_run, last_dt))
        return result
