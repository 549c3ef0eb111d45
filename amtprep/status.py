"""Read-only progress summary of an output directory (``amtprep status DIR``,
``process.py --show_progress``).

It takes no lock and moves no file, so it is safe to run while a run is going; it reads each
stage's checkpoint summary (falling back to ``.bak``, then to reading the commit log, then to
counting shard names on disk), and says when the input or settings given differ from the
committed ones.

Public: ``stage_status``, ``format_status``, ``StageStatus``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from amtprep.commit.log import LOG_NAME, CommitLog
from amtprep.io.checkpoint import CheckpointCorrupt, load_checkpoint
from amtprep.io.lock import LOCK_NAME
from amtprep.io.shards import ShardEntry, parse_shard_name


@dataclass
class StageStatus:
    stage: str
    source: str  # "checkpoint" | "backup" | "shards" | "none"
    started: float | None = None
    last_update: float | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    current_batch: int = 0
    total_batches: int = 0
    files_per_second: float | None = None
    complete: bool = False
    input: dict | None = None  # the committed identity's input fingerprint

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.completed)

    @property
    def percent(self) -> float:
        return 100.0 * self.completed / self.total if self.total else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.complete:
            return 0.0
        return self.remaining / self.files_per_second if self.files_per_second else None


def stage_status(stage: str, checkpoint_path: Path, shard_dir: Path) -> StageStatus:
    for path, label in (
        (checkpoint_path, "checkpoint"),
        (checkpoint_path.with_name(checkpoint_path.name + ".bak"), "backup"),
    ):
        try:
            ck = load_checkpoint(path, stage)
        except (FileNotFoundError, CheckpointCorrupt, OSError):
            continue
        bi = ck.batch_info
        secs = float(bi.get("processing_time") or 0)
        return StageStatus(
            stage=stage,
            source=label,
            started=ck.started_at,
            last_update=ck.timestamp,
            total=ck.total_files,
            completed=ck.processed,
            failed=ck.failed,
            current_batch=int(bi.get("current_batch", ck.shards)),
            total_batches=int(bi.get("total_batches", 0)),
            files_per_second=(ck.processed / secs) if secs > 0 else None,
            complete=ck.complete,
            input=ck.input,
        )
    from_log = _from_log(stage, shard_dir)
    if from_log is not None:
        return from_log
    ranges = (
        [parse_shard_name(p.name) for p in shard_dir.glob("part-*.parquet")]
        if shard_dir.is_dir()
        else []
    )
    ranges = [r for r in ranges if r]
    if ranges:
        return StageStatus(
            stage,
            "shards",
            completed=sum(b - a + 1 for a, b, _ in ranges),
            current_batch=len(ranges),
        )
    return StageStatus(stage, "none")


def _from_log(stage: str, shard_dir: Path) -> StageStatus | None:
    """Totals replayed from the commit log (read only: a torn tail is just not counted)."""
    read = CommitLog(shard_dir / LOG_NAME).read()
    if not read.entries:
        return None
    live: dict[int, ShardEntry] = {}
    total, started, input_fp = 0, None, None
    for body in read.entries:
        if body.get("kind") == "begin":
            total, started = int(body.get("total_files") or 0), body.get("at")
            input_fp = body.get("input")
        elif body.get("kind") == "identity":
            input_fp = body.get("input")
        elif body.get("kind") == "shard":
            e = ShardEntry.from_dict(body["shard"])
            live[e.first_idx] = e
    done = sum(e.rows for e in live.values())
    return StageStatus(
        stage,
        "log",
        started=started,
        total=total,
        completed=done,
        failed=sum(e.failed for e in live.values()),
        current_batch=len(live),
        complete=bool(total) and done >= total,
        input=input_fp,
    )


def live_holder(output_dir: Path) -> dict | None:
    """The running process that holds the output dir, read from the lock note (no lock taken)."""
    try:
        note = json.loads((output_dir / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return None
    if not note or note.get("host") != socket.gethostname():
        return note or None
    try:
        os.kill(int(note["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    except PermissionError:
        pass
    return note


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f"{stamp} ({_duration(time.time() - ts)} ago)"


def _duration(s: float | None) -> str:
    if s is None:
        return "unknown"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def format_status(
    output_dir: Path | str, statuses: list[StageStatus], holder: dict | None = None
) -> str:
    """``holder``: who runs there, when known otherwise (a bucket's lease); else the lock note."""
    holder = holder if holder is not None else live_holder(Path(output_dir))
    lines = [f"amtprep status of {output_dir}"]
    if holder:
        lines.append(
            f"  running: PID {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
        )
    else:
        lines.append("  running: no")
    for st in statuses:
        lines.append(
            f"  [{st.stage}]"
            + ("" if st.source in ("checkpoint", "none") else f" (from {st.source})")
        )
        if st.source == "none":
            lines.append("    not started")
            continue
        rate = f"{st.files_per_second:.1f} files/s" if st.files_per_second else "-"
        lines += [
            f"    started:        {_ago(st.started)}",
            f"    last update:    {_ago(st.last_update)}",
            f"    total:          {st.total}",
            f"    completed:      {st.completed} ({st.percent:.1f}%)"
            + ("  [complete]" if st.complete else ""),
            f"    failed:         {st.failed}",
            f"    remaining:      {st.remaining}",
            f"    throughput:     {rate}",
            f"    ETA:            {_duration(st.eta_seconds)}",
            f"    current batch:  {st.current_batch}/{st.total_batches}",
        ]
        if st.input:
            lines.append(
                f"    made from:      {st.input.get('path')} (sha256 "
                f"{str(st.input.get('sha256'))[:12]}, MIDI root {st.input.get('midi_root')})"
            )
    final = Path(output_dir) / "final"
    if not isinstance(output_dir, str) and final.is_dir():
        lines.append(
            f"  final dataset:  {final} ({len(list(final.glob('data-*.parquet')))} file(s))"
        )
    return "\n".join(lines)
