"""The whole path a user walks: paired file in, merged Parquet out, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from amtprep.cli import main
from tests.helpers import (
    REPO,
    assert_same_output,
    read_final,
    run_args,
    run_cli,
    start_cli,
    wait_for,
)


@pytest.fixture
def broken_corpus(corpus: Path) -> Path:
    """The generated corpus plus one record of each failure kind."""
    midi_dir = corpus.parent / "midi"
    good = next(iter(sorted(midi_dir.glob("*.mid")))).read_bytes()
    (midi_dir / "empty.mid").write_bytes(b"")
    (midi_dir / "text.mid").write_bytes(b"this is not a MIDI file at all\n" * 4)
    (midi_dir / "truncated.mid").write_bytes(good[: len(good) // 2])
    rows = [
        {"location": "midi/missing.mid", "caption": "a file that does not exist"},
        {"location": "midi/empty.mid", "caption": "an empty file"},
        {"location": "midi/text.mid", "caption": "a text file posing as MIDI"},
        {"location": "midi/truncated.mid", "caption": "half a MIDI file"},
        {"location": "midi/0000.mid", "caption": "   "},
    ]
    with corpus.open("a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return corpus


def test_failures_become_rows_and_every_record_lands_once(
    broken_corpus: Path, tmp_path: Path, tiny_bert: Path
):
    out = tmp_path / "out"
    assert main(run_args(broken_corpus, out, tiny_bert)) == 0
    final, failures = read_final(out)
    n_input = sum(1 for _ in broken_corpus.open())
    assert final.column("idx").to_pylist() == sorted(final.column("idx").to_pylist())
    failed_idx = set(failures.column("idx").to_pylist())
    assert failed_idx.isdisjoint(final.column("idx").to_pylist())
    assert len(failed_idx) + final.num_rows == n_input
    by_idx = {(r["idx"], r["stage"]): r["error_type"] for r in failures.to_pylist()}
    base = n_input - 5
    assert by_idx[(base, "midi")] == "missing_file"
    assert by_idx[(base + 1, "midi")] == "empty_file"
    assert by_idx[(base + 2, "midi")] == "not_midi"
    assert by_idx[(base + 3, "midi")] in {"truncated", "corrupt_midi"}
    assert by_idx[(base + 4, "text")] == "empty_caption"
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["final_rows"] == final.num_rows
    assert stats["stages"]["midi"]["failed_by_type"]["missing_file"] == 1
    assert stats["stages"]["text"]["failed_by_type"]["empty_caption"] == 1
    # carried input columns and both stages' features are in the final rows
    for col in (
        "genre",
        "test_set",
        "midi_path",
        "caption",
        "duration_s",
        "notes",
        "embedding",
        "n_tokens",
    ):
        assert col in final.column_names, col


def test_checkpoints_hold_the_documented_fields(corpus: Path, tmp_path: Path, tiny_bert: Path):
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    for stage in ("midi", "text"):
        ck = json.loads((out / f"{stage}_checkpoint.json").read_text())
        assert ck["last_processed_idx"] == 29 and ck["total_files"] == 30 and ck["complete"]
        assert isinstance(ck["timestamp"], float)
        assert ck["batch_info"]["total_batches"] == 4 and ck["batch_info"]["batch_size"] == 8
        assert {"current_batch", "processing_time", "files_per_second"} <= set(ck["batch_info"])
        assert ck["shards"] == 4 and ck["processed"] == 30  # a bounded summary: no shard list
        log = [
            json.loads(line) for line in (out / stage / "_commits.jsonl").read_text().splitlines()
        ]
        assert [
            (e["shard"]["first_idx"], e["shard"]["last_idx"]) for e in log if e["kind"] == "shard"
        ] == [
            (0, 7),
            (8, 15),
            (16, 23),
            (24, 29),
        ]
        assert log[0]["kind"] == "begin" and log[0]["total_files"] == 30
        assert "rows" not in json.dumps(ck["batch_info"])  # no processed data inside the checkpoint
        assert ck["input"]["sha256"] and ck["settings"]


def test_custom_checkpoint_paths(corpus: Path, tmp_path: Path, tiny_bert: Path):
    out, mc, tc = tmp_path / "out", tmp_path / "ck" / "m.json", tmp_path / "ck" / "t.json"
    mc.parent.mkdir()
    assert (
        main(
            run_args(
                corpus, out, tiny_bert, "--midi-checkpoint", str(mc), "--text-checkpoint", str(tc)
            )
        )
        == 0
    )
    assert mc.exists() and tc.exists() and not (out / "midi_checkpoint.json").exists()


def test_each_input_format_gives_the_same_final_rows(corpus: Path, tmp_path: Path, tiny_bert: Path):
    import pandas as pd

    rows = [json.loads(line) for line in corpus.open()]
    df = pd.DataFrame(rows)
    variants = {
        "jsonl": corpus,
        "json": corpus.with_suffix(".json"),
        "csv": corpus.with_suffix(".csv"),
        "parquet": corpus.with_suffix(".parquet"),
    }
    variants["json"].write_text(json.dumps(rows))
    df.drop(columns=["genre", "mood"]).to_csv(variants["csv"], index=False)
    df.to_parquet(variants["parquet"])
    outs = {}
    for fmt, path in variants.items():
        outs[fmt] = tmp_path / f"out-{fmt}"
        assert main(run_args(path, outs[fmt], tiny_bert)) == 0, fmt
    ref, _ = read_final(outs["jsonl"])
    for fmt in ("json", "parquet", "csv"):
        got, _ = read_final(outs[fmt])
        keep = [
            c
            for c in ref.column_names
            if c not in ("genre", "mood", "test_set", "tempo", "duration")
        ]
        assert got.select(keep).to_pylist() == ref.select(keep).to_pylist(), fmt


def test_force_restart_discards_shards_but_keeps_cache(
    corpus: Path, tmp_path: Path, tiny_bert: Path
):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(run_args(corpus, out, tiny_bert, "--use_cache", "--cache_dir", str(cache))) == 0
    (out / "midi" / "stray-note.txt").write_text("x")
    first = {p.name: p.stat().st_mtime_ns for p in (out / "midi").glob("part-*.parquet")}
    assert (
        main(
            run_args(
                corpus, out, tiny_bert, "--force_restart", "--use_cache", "--cache_dir", str(cache)
            )
        )
        == 0
    )
    assert not (out / "midi" / "stray-note.txt").exists()
    second = {p.name: p.stat().st_mtime_ns for p in (out / "midi").glob("part-*.parquet")}
    assert first.keys() == second.keys() and all(first[k] != second[k] for k in first)
    ck = json.loads((out / "midi_checkpoint.json").read_text())
    assert ck["counters"].get("cache_hits", 0) == 30  # the cache survived the restart
    assert cache.exists()
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["stages"]["midi"]["cache_hit_rate"] == 1.0  # 30 good files, all served


def test_mode_continue_without_checkpoint_says_so(corpus: Path, tmp_path: Path, tiny_bert: Path):
    proc = run_cli(*run_args(corpus, tmp_path / "fresh", tiny_bert, "--mode", "continue"))
    assert proc.returncode != 0
    assert "no checkpoint" in proc.stderr and "--mode process" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_save_partial_writes_the_merged_view_so_far(corpus: Path, tmp_path: Path, tiny_bert: Path):
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert, "--stages", "midi,text", "--save_partial")) == 0
    assert not (out / "final").exists()
    part = pq.ParquetDataset(sorted((out / "partial").glob("data-*.parquet"))).read()
    assert part.num_rows == 30
    assert json.loads((out / "partial" / "statistics.json").read_text())["partial"] is True
    # only the MIDI stage done: the partial view holds nothing yet, and says so in its stats
    out2 = tmp_path / "out2"
    assert main(run_args(corpus, out2, tiny_bert, "--stages", "midi", "--save_partial")) == 0
    stats = json.loads((out2 / "partial" / "statistics.json").read_text())
    assert stats["final_rows"] == 0 and stats["stages"]["midi"]["processed"] == 30


def test_operator_errors_are_one_line(tmp_path: Path, corpus: Path, tiny_bert: Path):
    cases = [
        (["--input_file", str(tmp_path / "nope.jsonl")], "nope.jsonl"),
        (run_args(corpus, tmp_path / "o", tmp_path / "no-such-model"), "no-such-model"),
    ]
    bad_cols = tmp_path / "cols.jsonl"
    bad_cols.write_text('{"path": "a.mid", "words": "x"}\n')
    cases.append(
        (["--input_file", str(bad_cols), "--output_dir", str(tmp_path / "o2")], "--midi_column")
    )
    ro = tmp_path / "ro"
    ro.write_text("a file, not a directory")
    cases.append((["--input_file", str(corpus), "--output_dir", str(ro / "sub")], "--output_dir"))
    for args, needle in cases:
        proc = run_cli(*args)
        assert proc.returncode != 0, args
        assert needle in proc.stderr, (needle, proc.stderr)
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sigkill_after_first_shard_then_continue_matches_uninterrupted(
    corpus: Path, tmp_path: Path, tiny_bert: Path
):
    ref = tmp_path / "ref"
    assert main(run_args(corpus, ref, tiny_bert)) == 0

    out = tmp_path / "out"
    proc = start_cli(run_args(corpus, out, tiny_bert), delay=0.3)
    wait_for(out / "midi", "part-*.parquet")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final").exists()

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cont = subprocess.run(
        [sys.executable, str(REPO / "continue_from_checkpoint.py"), *run_args(corpus, out, tiny_bert)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cont.returncode == 0, cont.stderr
    assert "resuming" in cont.stderr
    assert_same_output(ref, out)
