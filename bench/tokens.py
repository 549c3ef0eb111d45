"""Benchmark MIDI tokens: a plain miditok loop, miditok's tokenize_dataset, amtprep; prints JSON.

    python bench/tokens.py                      # 2000 generated files, REMI, workers 1 and 2
    python bench/tokens.py --files 300          # a quick check that it runs
    python bench/tokens.py --dir DIR            # your own *.mid / *.midi files
    python bench/tokens.py --rounds 1           # one pass of each method (default 3)

On the same files, in one run:
- ``plain_loop``: ``tokenizer(symusic.Score.from_file(path))`` for each file (tokens only);
- ``tokenize_dataset``: miditok 3.0.3's own dataset method (``tokenizer.tokenize_dataset``),
  which parses, tokenizes and writes one JSON file per MIDI file;
- ``amtprep_wN``: the real pipeline, ``process.py --stages midi --tokenizer NAME --workers N``,
  in a fresh output dir: reading the input, parsing, every feature, the tokens, Parquet shards
  and commits. Its wall time includes starting the workers (a second or two, paid once a run),
  so small ``--files`` understate its rate; ``files_per_s_in_batches`` divides by the batches'
  own seconds (the commit log's per-batch timing) instead.
Each method runs ``--rounds`` times, round-robin with the order rotated each round, and its
best round is reported (``rounds_s`` lists them all): the 2-core VM this was written on moves
by up to 1.7x between two runs of one command minutes apart, so a single pass of each, one
after the other, compares the machine's moods rather than the methods. Files/s and tokens/s
for each, and ratios to the plain loop. ``same_tokens`` checks that
amtprep stored exactly the plain loop's token count per file. ``goals`` are issue 11's:
amtprep at 1 worker within 15% of the plain loop, >= 1.8x it at 2 workers, faster than
``tokenize_dataset`` at every worker count. ``same_ids`` compares every file's stored ids with
the plain loop's (a digest per file). ``amtprep_miditok_encoder_w1`` (not in the goals; skip it
with ``--no_miditok_encoder``) is the same stage at 1 worker with every file through miditok's
own ``tokenizer(score)`` (``AMTPREP_TOKEN_ENCODER=miditok``) instead of ``fast_remi``: what the
features and the pipeline cost beside miditok's encode. Figures from a shared or busy machine say little.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

os.environ.setdefault("TQDM_DISABLE", "1")  # before miditok imports tqdm: no progress bars
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amtprep.cli import main as amtprep_main  # noqa: E402
from amtprep.midi.tokenizer import ENCODER_ENV  # noqa: E402
from tests.midi.midigen import generate_midi  # noqa: E402


def make_corpus(directory: Path, n: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = directory / f"{i:06d}.mid"
        path.write_bytes(generate_midi(i))
        paths.append(path)
    return paths


def build_tokenizer(name: str):
    """miditok's own tokenizer object for ``name``, as amtprep builds it (default config)."""
    from amtprep.config import TokenConfig
    from amtprep.midi.tokenizer import MidiTokenizer

    return MidiTokenizer.build(TokenConfig(tokenizer=name)).tok


def count(out) -> int:
    seqs = out if isinstance(out, list) else [out]
    return sum(len(s.ids) for s in seqs)


def ids_digest(ids) -> str:
    """A digest of a file's ids laid out as amtprep's ``tokens`` column (single vocabulary)."""
    return hashlib.blake2b(np.asarray(ids, np.int32).tobytes(), digest_size=16).hexdigest()


def plain_loop(tok, paths: list[Path]) -> dict:
    import symusic

    seconds = 0.0  # the tokenizing alone: the digests below are taken outside the clock
    per_file, digests = [], []
    for path in paths:
        t = time.perf_counter()
        try:
            out = tok(symusic.Score.from_file(path))
        except Exception:  # a file the loop cannot tokenize: none expected on generated files
            out = None
        seconds += time.perf_counter() - t
        per_file.append(None if out is None else count(out))
        seqs = [] if out is None else out if isinstance(out, list) else [out]
        flat = [i for s in seqs for i in s.ids]
        digests.append(None if out is None or tok.is_multi_voc else ids_digest(flat))
    return {"seconds": seconds, "per_file": per_file, "digests": digests}


def tokenize_dataset(tok, paths: list[Path], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    tok.tokenize_dataset(paths, out, verbose=False)
    return {"seconds": time.perf_counter() - t}


def amtprep_run(
    paths: list[Path], work: Path, name: str, workers: int, encoder: str | None = None
) -> dict:
    input_file = work / "input.jsonl"
    if not input_file.exists():
        with input_file.open("w") as fh:
            for path in paths:
                fh.write(json.dumps({"location": str(path), "caption": "x"}) + "\n")
    out = work / f"out-w{workers}-{encoder}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh job each round
    if encoder:  # the workers are spawned: they inherit it
        os.environ[ENCODER_ENV] = encoder
    else:
        os.environ.pop(ENCODER_ENV, None)
    args = ["--input_file", str(input_file), "--output_dir", str(out), "--stages", "midi"]
    args += ["--tokenizer", name, "--workers", str(workers), "--no_progress"]
    args += ["--log_level", "warning"]
    t = time.perf_counter()
    try:
        code = amtprep_main(args)
    finally:
        os.environ.pop(ENCODER_ENV, None)
    seconds = time.perf_counter() - t
    if code != 0:
        raise SystemExit(f"amtprep exited {code}")
    shards = sorted((out / "midi").glob("part-*.parquet"))
    tables = [
        pq.read_table(s, columns=["idx", "n_tokens_midi", "status", "tokens"]) for s in shards
    ]
    batch_seconds = sum(
        json.loads(pq.read_schema(s).metadata[b"amtprep.batch"])["seconds"] for s in shards
    )
    by_idx, digest_by_idx = {}, {}
    for table in tables:
        tokens = table.column("tokens").to_pylist()
        for idx, n, status, ids in zip(
            *(table.column(c).to_pylist() for c in ("idx", "n_tokens_midi", "status")),
            tokens,
            strict=True,
        ):
            by_idx[idx] = n if status == "ok" else None
            digest_by_idx[idx] = ids_digest(ids) if status == "ok" else None
    per_file = [by_idx.get(i) for i in range(len(paths))]
    digests = [digest_by_idx.get(i) for i in range(len(paths))]
    return {
        "seconds": seconds,
        "batch_seconds": batch_seconds,
        "per_file": per_file,
        "digests": digests,
    }


def best(results: list[dict]) -> dict:
    """The fastest round, with every round's seconds beside it."""
    out = dict(min(results, key=lambda r: r["seconds"]))
    out["rounds_s"] = [round(r["seconds"], 3) for r in results]
    return out


def summarise(result: dict, n_files: int, n_tokens: int, plain_fps: float | None) -> dict:
    fps = n_files / result["seconds"]
    out = {
        "seconds": round(result["seconds"], 3),
        "files_per_s": round(fps, 1),
        "tokens_per_s": round(n_tokens / result["seconds"]),
    }
    if plain_fps:
        out["vs_plain_loop"] = round(fps / plain_fps, 3)
    if "rounds_s" in result:
        out["rounds_s"] = result["rounds_s"]
    if "batch_seconds" in result:  # the batches alone: no start-up, recovery or merge checks
        out["batch_seconds"] = round(result["batch_seconds"], 3)
        out["files_per_s_in_batches"] = round(n_files / result["batch_seconds"], 1)
    return out


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=2000, help="generated files (default 2000)")
    p.add_argument("--dir", type=Path, help="tokenize these *.mid / *.midi files instead")
    p.add_argument("--tokenizer", default="remi")
    p.add_argument("--workers", default="1,2", help="amtprep worker counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=3, help="round-robin passes (default 3)")
    p.add_argument(
        "--no_miditok_encoder",
        action="store_true",
        help="skip the extra amtprep run at 1 worker with AMTPREP_TOKEN_ENCODER=miditok",
    )
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="amtprep-bench-tokens-") as tmp:
        work = Path(tmp)
        if args.dir:
            paths = sorted(q for q in args.dir.rglob("*") if q.suffix.lower() in (".mid", ".midi"))
        else:
            paths = make_corpus(work / "midi", args.files)
        tok = build_tokenizer(args.tokenizer)
        workers = [int(w) for w in args.workers.split(",")]
        methods = {
            "plain_loop": lambda: plain_loop(tok, paths),
            "tokenize_dataset": lambda: tokenize_dataset(tok, paths, work / "tokenize_dataset"),
        }
        for n in workers:
            methods[f"amtprep_w{n}"] = functools.partial(
                amtprep_run, paths, work, args.tokenizer, n
            )
        if not args.no_miditok_encoder:  # the same stage with miditok's own encode per file
            methods["amtprep_miditok_encoder_w1"] = functools.partial(
                amtprep_run, paths, work, args.tokenizer, 1, "miditok"
            )
        names = list(methods)
        results: dict[str, list[dict]] = {name: [] for name in names}
        for r in range(max(1, args.rounds)):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                results[name].append(methods[name]())
        plain = best(results["plain_loop"])
        n_tokens = sum(n for n in plain["per_file"] if n)
        plain_fps = len(paths) / plain["seconds"]
        report = {
            "files": len(paths),
            "tokenizer": type(tok).__name__,
            "miditok": _version("miditok"),
            "cpus": os.cpu_count(),
            "rounds": max(1, args.rounds),
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "tokens": n_tokens,
            "plain_loop": summarise(plain, len(paths), n_tokens, None),
        }
        dataset = best(results["tokenize_dataset"])
        report["tokenize_dataset"] = summarise(dataset, len(paths), n_tokens, plain_fps)
        same = same_ids = True
        for name in [n for n in names if n.startswith("amtprep_")]:
            runs = results[name]
            report[name] = summarise(best(runs), len(paths), n_tokens, plain_fps)
            same = same and all(res["per_file"] == plain["per_file"] for res in runs)
            same_ids = same_ids and all(res["digests"] == plain["digests"] for res in runs)
        report["same_tokens"] = same
        report["same_ids"] = same_ids
        report["goals"] = goals(report)
    return report


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def goals(report: dict) -> dict:
    plain = report["plain_loop"]["files_per_s"]
    dataset = report["tokenize_dataset"]["files_per_s"]
    runs = {k: v["files_per_s"] for k, v in report.items() if k.startswith("amtprep_w")}
    out = {}
    if "amtprep_w1" in runs:
        out["w1_within_15pct_of_plain_loop"] = runs["amtprep_w1"] >= 0.85 * plain
    if "amtprep_w2" in runs:
        out["w2_at_least_1.8x_plain_loop"] = runs["amtprep_w2"] >= 1.8 * plain
    out["faster_than_tokenize_dataset"] = all(fps > dataset for fps in runs.values())
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
