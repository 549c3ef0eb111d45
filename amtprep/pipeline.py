"""One run: lock the output dir, run the selected stages, merge, write statistics.

This is the library entry point the CLI calls (``run(cfg)``); it owns the order of things and
the operator messages, the stages and the runner own the work.

Public: ``run``, ``RunSummary``, ``reset_outputs``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amtprep import __version__
from amtprep.config import RunConfig
from amtprep.errors import CheckpointError, FingerprintMismatchError, Interrupted, OutputDirError
from amtprep.io.ledger import StageLedger
from amtprep.io.lock import LOCK_NAME, OutputLock
from amtprep.runner import StageResult, StageRunner
from amtprep.signals import StopFlag

log = logging.getLogger(__name__)

WORK_STAGES = ("midi", "text")


@dataclass
class RunSummary:
    results: dict[str, StageResult] = field(default_factory=dict)
    merged: bool = False
    final_dir: Path | None = None
    statistics: dict[str, Any] | None = None
    wall_time: float = 0.0


def _open_source(cfg: RunConfig):
    from amtprep.io.readers import InputSource, InputSpec

    return InputSource(
        InputSpec(
            path=Path(cfg.input_file),
            midi_column=cfg.midi_column,
            text_column=cfg.text_column,
            id_column=cfg.id_column,
            midi_root=Path(cfg.midi_root) if cfg.midi_root else None,
        )
    )


def _build_stage(name: str, cfg: RunConfig):
    if name == "midi":
        from amtprep.midi import MidiStage

        return MidiStage(cfg.midi)
    from amtprep.text import TextStage

    return TextStage(cfg.text)


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
    """Remove checkpoints (+ backups) and shards of ``stages`` and everything merged from them.

    The cache is kept: it is keyed by content, so it stays valid.
    """
    removed = []
    targets: list[Path] = []
    for st in stages:
        ck = cfg.checkpoint_path(st)
        targets += [ck, ck.with_name(ck.name + ".bak"), cfg.shard_dir(st)]
    targets += [
        cfg.output_dir / n
        for n in (
            "final",
            "final.incomplete",
            "partial",
            "partial.incomplete",
            "statistics.json",
            "report.html",
            "failures.parquet",
            "partial_failures.parquet",
        )
    ]
    for p in targets:
        if p.is_dir():
            shutil.rmtree(p)
            removed.append(p)
        elif p.exists():
            p.unlink()
            removed.append(p)
    return removed


def _check_identity(ledger: StageLedger, input_fp: dict, settings: dict, stage: str) -> None:
    stored = ledger.stored_identity
    if not stored:
        return
    changes = []
    old_in = stored.get("input") or {}
    for key in ("sha256", "midi_column", "text_column", "format"):
        if key in old_in and old_in.get(key) != input_fp.get(key):
            what = "input file content" if key == "sha256" else key
            changes.append(f"{what}: {old_in.get(key)!r} -> {input_fp.get(key)!r}")
    old_set = stored.get("settings") or {}
    for key in sorted(set(old_set) | set(settings)):
        if old_set.get(key) != settings.get(key):
            changes.append(f"{key}: {old_set.get(key)!r} -> {settings.get(key)!r}")
    if changes:
        raise FingerprintMismatchError(
            f"the {stage} stage in this output dir was made with different input or settings "
            f"({'; '.join(changes)}); restore them to resume, or pass --force_restart to start over"
        )


def run(cfg: RunConfig) -> RunSummary:
    """Run the configured stages; raises AmtprepError subclasses for operator-facing problems."""
    t0 = time.perf_counter()
    summary = RunSummary()
    _prepare_output_dir(cfg)
    source = _open_source(cfg)
    ran_here_before = (cfg.output_dir / LOCK_NAME).exists()  # every run leaves its lock note
    with OutputLock(cfg.output_dir), StopFlag() as stop:
        if cfg.force_restart:
            for p in reset_outputs(cfg):
                log.info("--force_restart: removed %s", p)
        total = source.count_rows()
        input_fp = source.fingerprint()
        work = [s for s in WORK_STAGES if s in cfg.stages]
        ledgers = {s: StageLedger(s, cfg.shard_dir(s), cfg.checkpoint_path(s)) for s in WORK_STAGES}
        found_any = False
        for name, ledger in ledgers.items():
            rec = ledger.recover()
            found_any |= rec.source != "fresh"
            for msg in rec.messages:
                log.warning("%s stage: %s", name, msg)
            if rec.source != "fresh" and name in work:
                log.info(
                    "%s stage: resuming from %s (%d of %d records committed)",
                    name,
                    {
                        "checkpoint": "the checkpoint",
                        "backup": "the backup checkpoint",
                        "rebuilt": "the shard files",
                    }[rec.source],
                    ledger.checkpoint.processed if ledger.checkpoint else 0,
                    total,
                )
        if cfg.mode == "continue" and not found_any and not ran_here_before:
            raise CheckpointError(
                f"--mode continue: no checkpoint or committed shards in {cfg.output_dir}; "
                "start a new run with --mode process"
            )
        if cfg.mode == "continue" and not found_any:
            log.warning(
                "the previous run here committed no batch before it stopped; starting from the first record"
            )
        try:
            for name in work:
                if stop.requested:
                    break
                stage = _build_stage(name, cfg)
                try:
                    ledger = ledgers[name]
                    _check_identity(ledger, input_fp, stage.fingerprint(), name)
                    runner = StageRunner(
                        stage,
                        ledger,
                        total_files=total,
                        input_fp=input_fp,
                        batch_size=cfg.batch_size,
                        checkpoint_interval=cfg.checkpoint_interval,
                        stop=stop,
                        progress=cfg.progress,
                    )
                    res = runner.run(source.iter_records())
                    if cfg.retry_failed and not stop.requested:
                        retry = runner.retry_failed(source.iter_records())
                        res.retried, res.recovered_now = retry.retried, retry.recovered_now
                        log.info(
                            "%s stage: retried %d failed records, %d now succeed",
                            name,
                            retry.retried,
                            retry.recovered_now,
                        )
                    summary.results[name] = res
                finally:
                    stage.close()
            complete = all(
                ledgers[s].checkpoint is not None and ledgers[s].checkpoint.complete
                for s in WORK_STAGES
            )
            if "merge" in cfg.stages and not stop.requested:
                if complete:
                    summary.final_dir = _merge(cfg, source, ledgers, total, "final", summary)
                    summary.merged = True
                else:
                    missing = [
                        f"{s} ({ledgers[s].checkpoint.processed if ledgers[s].checkpoint else 0}/{total})"
                        for s in WORK_STAGES
                        if not (ledgers[s].checkpoint and ledgers[s].checkpoint.complete)
                    ]
                    log.warning(
                        "merge skipped: stages not complete: %s; run them with --stages",
                        ", ".join(missing),
                    )
        finally:
            if cfg.save_partial:
                _merge(cfg, source, ledgers, total, "partial", summary)
        summary.wall_time = time.perf_counter() - t0
        if stop.requested:
            raise Interrupted(stop.signum or 2, _resume_hint(cfg))
    return summary


def _resume_hint(cfg: RunConfig) -> str:
    return (
        "stopped after committing the last finished batch; resume with: "
        f"python process.py --mode continue --input_file {cfg.input_file} --output_dir {cfg.output_dir}"
    )


def _merge(
    cfg: RunConfig,
    source,
    ledgers: dict[str, StageLedger],
    total: int,
    kind: str,
    summary: RunSummary,
) -> Path:
    from amtprep.merge import merge_stages
    from amtprep.run_stats import build_statistics

    dest = cfg.output_dir / kind
    stages = {
        s: (
            ledgers[s].shard_dir,
            list(ledgers[s].checkpoint.shards) if ledgers[s].checkpoint else [],
        )
        for s in WORK_STAGES
    }
    meta = _provenance(ledgers)
    t = time.perf_counter()
    res = merge_stages(
        source.iter_records(),
        source.iter_records(),
        list(source.extra_columns),
        total,
        stages,
        dest,
        rows_per_shard=cfg.rows_per_final_shard,
        metadata=meta,
        failures_path=cfg.output_dir
        / ("failures.parquet" if kind == "final" else "partial_failures.parquet"),
    )
    stats = build_statistics(
        cfg, ledgers, res, total, merge_seconds=time.perf_counter() - t, partial=kind == "partial"
    )
    stats_path = (
        (cfg.output_dir / "statistics.json") if kind == "final" else dest / "statistics.json"
    )
    stats_path.write_text(json.dumps(stats, indent=2, default=str) + "\n")
    summary.statistics = stats
    _write_card_and_report(cfg, dest, res, stats, ledgers, kind)
    log.info(
        "%s: %d rows in %d file(s), %d failure rows -> %s",
        kind,
        res.rows,
        len(res.files),
        res.failures,
        dest,
    )
    return dest


def _write_card_and_report(
    cfg: RunConfig, dest: Path, res, stats: dict, ledgers, kind: str
) -> None:
    from amtprep.card import write_dataset_card
    from amtprep.report import write_report

    settings = {
        s: ledgers[s].checkpoint.settings for s in WORK_STAGES if ledgers[s].checkpoint is not None
    }
    counts = {
        "rows": res.rows,
        "failed_records": res.failed_records,
        "failures_by_stage": {s: stats["stages"][s].get("failed", 0) for s in WORK_STAGES},
    }
    if res.schema is not None:
        write_dataset_card(dest, res.schema, counts, settings)
    report_dir = cfg.output_dir if kind == "final" else dest
    write_report(report_dir, stats, list(res.files), res.failures_file)


def _provenance(ledgers: dict[str, StageLedger]) -> dict[bytes, bytes]:
    meta: dict[bytes, bytes] = {}
    text = ledgers.get("text")
    if text is not None and text.checkpoint is not None and text.checkpoint.shards:
        import pyarrow.parquet as pq

        shard_meta = pq.read_schema(text.shard_dir / text.checkpoint.shards[0].name).metadata or {}
        meta.update({k: v for k, v in shard_meta.items() if k.startswith(b"amtprep.text.")})
    body = {"amtprep_version": __version__}
    for s, ledger in ledgers.items():
        if ledger.checkpoint is not None:
            body[f"{s}_settings"] = ledger.checkpoint.settings
            if s == "midi":
                body["input"] = ledger.checkpoint.input
    meta[b"amtprep"] = json.dumps(body, sort_keys=True, default=str).encode()
    return meta
