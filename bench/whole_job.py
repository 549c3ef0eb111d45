"""The whole job, sequential stages against --overlap_stages, and the time to the first committed
batch; prints one JSON object (issue 13).

    python bench/whole_job.py [--records 680] [--workers 1] [--rounds 3] [--batch_size 64]

On the same generated corpus (``amtprep.sample``: real MIDI files and captions), in fresh output
dirs, ``python process.py`` with the packaged MiniLM, the default settings plus ``--workers`` and
``--batch_size``, once as is and once with ``--overlap_stages``; round-robin, best round of each.
For each: wall seconds of the whole process (imports, model load, both stages, merge), and from
the commit logs the seconds from spawning the process to the MIDI stage's and the text stage's
first committed batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_commit(out: Path, stage: str) -> float | None:
    log = out / stage / "_commits.jsonl"
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "shard":
            return float(entry["at"])
    return None


def one_run(corpus: Path, out: Path, extra: list[str]) -> dict:
    args = [sys.executable, str(REPO / "process.py"), "--input_file", str(corpus),
            "--output_dir", str(out), "--no_progress", "--log_level", "warning", *extra]  # fmt: skip
    started = time.time()
    t = time.perf_counter()
    subprocess.run(args, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t
    firsts = {s: first_commit(out, s) for s in ("midi", "text")}
    return {
        "seconds": wall,
        "first_midi_batch_s": round(firsts["midi"] - started, 3) if firsts["midi"] else None,
        "first_text_batch_s": round(firsts["text"] - started, 3) if firsts["text"] else None,
    }


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=680)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    from amtprep.sample import generate

    methods = {"sequential": [], "overlapped": ["--overlap_stages"]}
    common = ["--workers", str(args.workers), "--batch_size", str(args.batch_size)]
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="amtprep-bench-job-") as tmp:
        work = Path(tmp)
        corpus = generate(work / "corpus", args.records, seed=7)
        names = list(methods)
        for r in range(args.rounds):
            for name in names[r % 2 :] + names[: r % 2]:
                out = work / f"out-{name}-{r}"
                results[name].append(one_run(corpus, out, [*common, *methods[name]]))
    report = {
        "records": args.records,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "cores": len(os.sched_getaffinity(0)),
        "rounds": args.rounds,
    }
    for name, runs in results.items():
        best = min(runs, key=lambda r: r["seconds"])
        report[name] = {
            "seconds_best": round(best["seconds"], 2),
            "seconds_all": [round(r["seconds"], 2) for r in runs],
            "first_midi_batch_s": min(r["first_midi_batch_s"] or 1e9 for r in runs),
            "first_text_batch_s": min(r["first_text_batch_s"] or 1e9 for r in runs),
        }
    report["overlapped_vs_sequential"] = round(
        report["sequential"]["seconds_best"] / report["overlapped"]["seconds_best"], 3
    )
    return report


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
