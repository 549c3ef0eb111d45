"""Run-level ``statistics.json``: counts per stage and error type, throughput, wall time, and
summaries of the main distributions of the merged data.

Public: ``build_statistics``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from amtprep import __version__
from amtprep.commit.store import StageStore
from amtprep.config import RunConfig

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "duration_s",
    "n_notes",
    "tempo_bpm",
    "n_tracks",
    "pitch_min",
    "pitch_max",
    "velocity_mean",
    "polyphony_mean",
    "n_tokens",
    "estimated_key",
    "time_signature",
    "has_drums",
    "programs",
    "truncated",
]


def _stage_block(store: StageStore) -> dict[str, Any]:
    """One stage's figures, all summed from its live commit-log entries (exactly once)."""
    if store.identity is None:
        return {"processed": 0, "failed": 0, "complete": False}
    by_type: Counter[str] = Counter()
    for e in store.entries():
        if e.failed:
            t = pq.read_table(store.shard_dir / e.name, columns=["status", "error_type"])
            failed = t.filter(pc.equal(t.column("status"), "failed"))
            by_type.update(v or "unknown" for v in failed.column("error_type").to_pylist())
    seconds = store.seconds
    return {
        "total": store.total_files,
        "processed": store.processed,
        "ok": store.processed - store.failed,
        "failed": store.failed,
        "failed_by_type": dict(sorted(by_type.items())),
        "complete": store.complete,
        "processing_seconds": round(seconds, 3),
        "files_per_second": round(store.processed / seconds, 2) if seconds > 0 else None,
        "shards": len(store.live),
        "counters": dict(sorted(store.counters.items())),
        "cache_hit_rate": _hit_rate(store.counters),
        "settings": store.identity.get("settings") or {},
        "identity_changes": [
            {"reason": c.get("reason"), "at": c.get("at")} for c in store.identity_changes
        ],
    }


def _hit_rate(counters: dict) -> float | None:
    """Share of cache look-ups that hit; None when the cache was off (no look-ups)."""
    lookups = counters.get("cache_hits", 0) + counters.get("cache_misses", 0)
    return round(counters.get("cache_hits", 0) / lookups, 4) if lookups else None


def build_statistics(
    cfg: RunConfig,
    stores: dict[str, StageStore],
    merge_result,
    total: int,
    *,
    merge_seconds: float,
    partial: bool,
    run_info: dict[str, dict] | None = None,
) -> dict[str, Any]:
    """``run_info``: per stage, what its stage object saw in this process (``this_run``: the
    text model's device and the bf16 probe); absent for stages this process did not run."""
    stages = {name: _stage_block(store) for name, store in stores.items()}
    for name, info in (run_info or {}).items():
        if name in stages:
            stages[name]["this_run"] = info
    started = min((s.started_at for s in stores.values() if s.started_at), default=time.time())
    stats: dict[str, Any] = {
        "amtprep_version": __version__,
        "partial": partial,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "input_file": str(cfg.input_file),
        "total_records": total,
        "final_rows": merge_result.rows,
        "failed_records": merge_result.failed_records,
        "failure_rows": merge_result.failures,
        "records_in_both_stages": merge_result.covered,
        "final_files": [p.name for p in merge_result.files],
        "duplicates": getattr(merge_result, "duplicates", None),
        "wall_time_seconds": round(time.time() - started, 3),
        "processing_seconds": round(
            sum(s.get("processing_seconds", 0) for s in stages.values()) + merge_seconds, 3
        ),
        "merge_seconds": round(merge_seconds, 3),
        "stages": stages,
    }
    try:
        from amtprep.stats import summarize_columns

        present = set(merge_result.schema.names) if merge_result.schema is not None else set()
        cols = [c for c in SUMMARY_COLUMNS if c in present]
        stats["columns"] = (
            summarize_columns(list(merge_result.files), cols) if cols and merge_result.rows else []
        )
    except ImportError:  # column summaries arrive with amtprep.stats
        stats["columns"] = []
    return stats
