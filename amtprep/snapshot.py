"""``amtprep partial OUT [--to DIR]``: the partial view of a job, running or stopped, from a
consistent snapshot of what it has committed, without its lock and without slowing it.

Public API: ``snapshot_stores(output_dir)``, ``build_partial(output_dir, to, **merge)``,
``partial_main(argv)``.

Why it is consistent: a batch is committed when its commit-log line is written, after its shard
file was published (DESIGN.md), and neither is changed afterwards. Reading each stage's log once,
read only (a torn last line, one being written, is simply not counted), gives a set of
committed shards that all exist; the view is merged from exactly those. The writer may remove a
shard a later commit superseded (a retry generation): then the snapshot is read again. Nothing
in OUT is written: the view, its releases and its input-hash cache go to DIR (default: a
sibling folder ``<OUT>-partial``), under DIR's own lock.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from amtprep.commit.store import StageStore
from amtprep.config import RunConfig
from amtprep.errors import AmtprepError, CheckpointError

STAGES = ("midi", "text")
ATTEMPTS = 5


def _read_only_store(stage: str, output_dir: Path) -> StageStore:
    store = StageStore(stage, output_dir / stage, output_dir / f"{stage}_checkpoint.json")
    store.replay_read_only()
    return store


def snapshot_stores(output_dir: Path) -> dict[str, StageStore]:
    """Each stage's committed state as its log says now; every shard in it exists."""
    for _ in range(ATTEMPTS):
        stores = {s: _read_only_store(s, output_dir) for s in STAGES}
        gone = [
            e.name
            for st in stores.values()
            for e in st.entries()
            if not (st.shard_dir / e.name).is_file()
        ]
        if not gone:
            return stores
        time.sleep(0.2)  # a superseded shard removed between reading the log and the check
    raise CheckpointError(
        f"{output_dir}: committed shards kept disappearing while reading ({gone[:3]}); try again"
    )


def build_partial(output_dir: Path, to: Path, **merge_settings) -> Path:
    """Merge the snapshot into ``to`` (``to/partial``, ``to/releases``); returns the view."""
    from amtprep import pipeline
    from amtprep.commit.identity import check_identity
    from amtprep.io.lock import OutputLock

    output_dir = Path(output_dir)
    stores = snapshot_stores(output_dir)
    identity = next((s.identity for s in stores.values() if s.identity), None)
    if identity is None:
        raise CheckpointError(f"{output_dir}: nothing is committed there yet (no commit log)")
    spec = identity.get("input") or {}
    cfg = RunConfig(
        input_file=Path(spec["path"]),
        output_dir=Path(to),
        midi_column=spec.get("midi_column"),
        text_column=spec.get("text_column"),
        id_column=spec.get("id_column"),
        midi_root=spec.get("midi_root"),
        midi_bytes_column=spec.get("midi_bytes_column"),
        **merge_settings,
    )
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(cfg.output_dir):
        source = pipeline._open_source(cfg)
        input_fp = pipeline._input_identity(source, cfg.output_dir)
        for store in stores.values():
            if store.identity is not None:  # the input changed since: say so, build nothing
                check_identity(store, input_fp, None)
        total = int(input_fp["rows"])
        pipeline._merge(cfg, source, stores, total, "partial", pipeline.RunSummary())
    return cfg.output_dir / "partial"


def partial_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="amtprep partial",
        description="Build the partial view of a job (running or stopped) in another folder, "
        "from a consistent snapshot of what it has committed; the job is not touched.",
    )
    p.add_argument("output_dir", type=Path, help="the job's --output_dir")
    p.add_argument("--to", type=Path, help="where the view goes (default: <output_dir>-partial)")
    p.add_argument("--rows_per_shard", type=int, default=None, help="as the job's, if it set one")
    p.add_argument("--tags", default="", help="as the job's --tags (e.g. midicaps)")
    p.add_argument("--dedup", choices=["mark", "drop"], default="mark", help="as the job's")
    args = p.parse_args(argv)
    to = args.to or args.output_dir.with_name(args.output_dir.name + "-partial")
    settings = {"tags": tuple(t for t in args.tags.split(",") if t), "dedup": args.dedup}
    if args.rows_per_shard:
        settings["rows_per_final_shard"] = args.rows_per_shard
    try:
        view = build_partial(args.output_dir, to, **settings)
    except AmtprepError as exc:
        print(f"amtprep partial: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(view)
    return 0
