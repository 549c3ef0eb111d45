"""The same job local vs ``--executor ray``, and with its output on a local disk vs in a bucket.

    python bench/cluster.py                  # 400 generated records, batches of 32, 2 rounds
    python bench/cluster.py --n 1000 --batch_size 64 --rounds 3

Prints one JSON object: per layout the best round's wall time of the whole CLI run (MIDI
stage, text stage with a tiny random BERT, merge, publish), its ratio to the local run, and the
overhead per committed shard of the other layouts, ``(t - t_local) / shards``. Layouts:
``local`` (input, MIDI files and output on disk, ``--workers 2``), ``s3_output``
(``--output_dir s3://``), ``s3_all`` (input and MIDI files read from the bucket too), ``ray``
(``--executor ray`` on a local Ray of ``--workers`` CPUs started once by this script, as a job
joins a running cluster) and ``ray_s3`` (both). Rounds go round-robin so a noisy neighbour
slows every layout alike.

What it does not measure: the S3 server is on loopback (a PUT costs ~1 ms here; on AWS a
PUT is ~10-30 ms, so multiply the per-shard figure by that ratio, or raise --batch_size),
nor a cluster of several machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import make_tiny_bert  # noqa: E402
from tests.s3server import s3_server  # noqa: E402


def _run(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(REPO / "process.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return dt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    import fsspec
    import ray

    from amtprep.sample import generate

    with tempfile.TemporaryDirectory() as tmp, s3_server():
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
        work = Path(tmp)
        corpus = generate(work / "corpus", n=args.n, seed=7)
        model = make_tiny_bert(work / "bert", seed=0, max_position_embeddings=512)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(bucket)
        fs.put(str(corpus.parent) + "/", f"{bucket}/corpus/", recursive=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "AMTPREP_CACHE_DIR": str(work / "cache")}
        common = ["--text_model", str(model), "--batch_size", str(args.batch_size)]
        common += ["--workers", str(args.workers), "--no_progress", "--log_level", "warning"]
        layouts = {
            "local": lambda r: ["--input_file", str(corpus), "--output_dir", str(work / f"l{r}")],
            "s3_output": lambda r: [
                "--input_file", str(corpus), "--output_dir", f"s3://{bucket}/o{r}",
                "--work_dir", str(work / f"o{r}"),
            ],
            "s3_all": lambda r: [
                "--input_file", f"s3://{bucket}/corpus/{corpus.name}",
                "--output_dir", f"s3://{bucket}/a{r}", "--work_dir", str(work / f"a{r}"),
            ],
            "ray": lambda r: [
                "--input_file", str(corpus), "--output_dir", str(work / f"r{r}"),
                "--executor", "ray", "--ray_address", address,
            ],
            "ray_s3": lambda r: [
                "--input_file", str(corpus), "--output_dir", f"s3://{bucket}/rs{r}",
                "--work_dir", str(work / f"rs{r}"), "--executor", "ray", "--ray_address", address,
            ],
        }  # fmt: skip
        best: dict[str, float] = {}
        for r in range(args.rounds):
            for name, where in layouts.items():
                best[name] = min(best.get(name, float("inf")), _run([*where(r), *common], env))
        shards = 2 * -(-args.n // args.batch_size)
        ray.shutdown()
    local = best["local"]
    print(
        json.dumps(
            {
                "records": args.n,
                "batch_size": args.batch_size,
                "shards": shards,
                "rounds": args.rounds,
                "wall_s": {k: round(v, 2) for k, v in best.items()},
                "speed_vs_local": {k: round(local / v, 3) for k, v in best.items()},
                "overhead_ms_per_shard": {
                    k: round(1000 * (v - local) / shards, 1)
                    for k, v in best.items()
                    if k != "local"
                },
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
