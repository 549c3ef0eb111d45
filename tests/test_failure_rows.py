"""Whole runs over input that must cost a failure row, never the run, and retries that fix them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from amtprep.cli import main
from tests.helpers import read_final, run_args


def add_rows(corpus: Path, *rows: dict) -> list[int]:
    """Append rows to the corpus .jsonl; returns their idx."""
    first = sum(1 for _ in corpus.open())
    with corpus.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return list(range(first, first + len(rows)))


def failure_types(out: Path) -> dict[tuple[int, str], str]:
    _, failures = read_final(out)
    return {(r["idx"], r["stage"]): r["error_type"] for r in failures.to_pylist()}


@pytest.mark.parametrize("cache", [["--use_cache"], []], ids=["cache", "no-cache"])
def test_nul_byte_in_a_midi_path_is_a_failed_row(corpus, tmp_path, tiny_bert, cache):
    (nul,) = add_rows(corpus, {"location": "midi/a\u0000b.mid", "caption": "a NUL in the path"})
    out = tmp_path / "out"
    args = run_args(corpus, out, tiny_bert, *cache, "--cache_dir", str(tmp_path / "cache"))
    assert main(args) == 0
    assert main([*args, "--mode", "continue"]) == 0  # a resume does not trip on it either
    final, failures = read_final(out)
    (row,) = [r for r in failures.to_pylist() if r["idx"] == nul]
    assert (row["stage"], row["error_type"]) == ("midi", "invalid_path")
    assert "NUL" in row["error"] or "null byte" in row["error"]
    assert final.num_rows == 30


def test_a_fifo_as_midi_path_times_out_with_the_cache_on(corpus, tmp_path, tiny_bert):
    # open() on a FIFO nobody writes blocks for ever, like a file on a hung NFS mount: the
    # cache look-up must run under the per-file deadline, not in the parent.
    os.mkfifo(corpus.parent / "midi" / "fifo.mid")
    (fifo,) = add_rows(corpus, {"location": "midi/fifo.mid", "caption": "a pipe, not a file"})
    out, cache = tmp_path / "out", tmp_path / "cache"
    extra = ("--use_cache", "--cache_dir", str(cache), "--file_timeout", "2")
    assert main(run_args(corpus, out, tiny_bert, *extra)) == 0
    assert failure_types(out) == {(fifo, "midi"): "timeout"}
    # Warm: every other file is a hit, and the rows are those of a run without the cache.
    assert main(run_args(corpus, out, tiny_bert, *extra, "--force_restart")) == 0
    ck = json.loads((out / "midi_checkpoint.json").read_text())
    assert ck["counters"]["cache_hits"] == 30
    reference = tmp_path / "reference"
    assert main(run_args(corpus, reference, tiny_bert, "--file_timeout", "2")) == 0
    warm, _ = read_final(out)
    cold, _ = read_final(reference)
    assert warm.drop_columns(["embedding"]).equals(cold.drop_columns(["embedding"]))


def test_retry_failed_with_a_raised_max_midi_bytes_makes_too_large_files_ok(
    corpus, tmp_path, tiny_bert
):
    sizes = sorted(p.stat().st_size for p in (corpus.parent / "midi").glob("*.mid"))
    limit = sizes[len(sizes) // 2]  # about half the files are larger
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert, "--max_midi_bytes", str(limit))) == 0
    too_large = failure_types(out)
    assert too_large and set(too_large.values()) == {"too_large"}
    raised = ("--retry_failed", "--max_midi_bytes", str(sizes[-1]))
    assert main(run_args(corpus, out, tiny_bert, *raised)) == 0  # not refused as changed settings
    final, failures = read_final(out)
    assert failures.num_rows == 0 and final.num_rows == 30
    assert {idx for idx, _ in too_large} <= set(final.column("idx").to_pylist())


def test_an_overlong_caption_fails_and_a_raised_limit_retries_it(corpus, tmp_path, tiny_bert):
    caption = "a very long caption about a slow string quartet " * 2100  # ~100k characters
    caption = caption[:100_000]
    (long_idx,) = add_rows(corpus, {"location": "midi/0000.mid", "caption": caption})
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    _, failures = read_final(out)
    (row,) = failures.to_pylist()
    assert (row["idx"], row["stage"], row["error_type"]) == (long_idx, "text", "caption_too_long")
    assert "100000 characters" in row["error"] and "limit of 20000" in row["error"]
    assert "string quartet" not in row["error"]
    retry = ("--retry_failed", "--max-caption-chars", "200000")  # either spelling
    assert main(run_args(corpus, out, tiny_bert, *retry)) == 0
    final, failures = read_final(out)
    assert failures.num_rows == 0
    (retried,) = [r for r in final.to_pylist() if r["idx"] == long_idx]
    assert retried["caption"] == caption and retried["truncated"] is True
