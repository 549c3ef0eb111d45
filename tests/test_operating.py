"""Operating a run: status while it runs and after, housekeeping, loading the output anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from amtprep.cli import main
from tests.helpers import REPO, read_final, run_args, run_cli, start_cli, wait_for


@pytest.mark.slow
def test_status_during_a_live_run_and_after(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    proc = start_cli(run_args(corpus, out, tiny_bert), delay=0.4, stderr=subprocess.DEVNULL)
    try:
        wait_for(out, "midi_checkpoint.json")
        live = run_cli("--show_progress", "--output_dir", str(out))
        assert live.returncode == 0
        assert f"running: PID {proc.pid}" in live.stdout
        for word in (
            "started:",
            "last update:",
            "completed:",
            "failed:",
            "remaining:",
            "throughput:",
            "ETA:",
            "current batch:",
        ):
            assert word in live.stdout, word
        assert "total:          30" in live.stdout
        assert proc.wait(timeout=120) == 0  # reading status never disturbed the run
    finally:
        proc.kill()
    after = run_cli("--show-progress", "--output-dir", str(out))
    assert "running: no" in after.stdout and "30 (100.0%)  [complete]" in after.stdout
    via_console = subprocess.run(
        [sys.executable, "-c", "import sys; from amtprep.cli import main; sys.exit(main(['status', sys.argv[1]]))", str(out)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert via_console.returncode == 0 and "[text]" in via_console.stdout


def test_list_and_reset_checkpoints(corpus, tmp_path, tiny_bert, capsys):
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    capsys.readouterr()
    assert main(["--list_checkpoints", "--output_dir", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "midi_checkpoint.json " in listing and "text_checkpoint.json.bak" in listing
    assert "last_processed_idx=29 processed=30/30" in listing

    assert main(["--reset_progress", "text", "--output_dir", str(out)]) == 0
    removed = capsys.readouterr().out
    assert "text_checkpoint.json" in removed and "midi_checkpoint.json" not in removed
    assert (out / "midi_checkpoint.json").exists() and not (out / "text").exists()
    assert not (out / "final").exists()  # merged output built from the text stage goes too
    assert main(run_args(corpus, out, tiny_bert)) == 0  # only the text stage runs again
    ck = json.loads((out / "midi_checkpoint.json").read_text())
    assert ck["complete"] and read_final(out)[0].num_rows == 30
    assert main(["--reset_progress", "--output_dir", str(out)]) == 0
    assert not (out / "midi_checkpoint.json").exists()


def test_final_folder_loads_in_datasets_polars_and_duckdb(corpus, tmp_path, tiny_bert):
    import datasets
    import duckdb
    import polars as pl

    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert, "--rows_per_shard", "12")) == 0
    final = out / "final"
    assert sorted(p.name for p in final.glob("*.parquet")) == [
        "data-00000-of-00003.parquet",
        "data-00001-of-00003.parquet",
        "data-00002-of-00003.parquet",
    ]
    ref, _ = read_final(out)
    ref_idx = ref.column("idx").to_pylist()
    width = ref.schema.field("embedding").type.list_size
    assert width == 32

    hf_cache = str(tmp_path / "hf-cache")
    ds = datasets.load_dataset("parquet", data_dir=str(final), split="train", cache_dir=hf_cache)
    assert ds["idx"] == ref_idx and ds.features["embedding"].length == width
    card = datasets.load_dataset(
        str(final), split="train", cache_dir=hf_cache
    )  # through the dataset card's configs
    assert card.num_rows == len(ref_idx)

    df = pl.scan_parquet(str(final / "data-*.parquet")).collect()
    assert df["idx"].to_list() == ref_idx and df.schema["embedding"] == pl.Array(pl.Float32, width)

    rows = duckdb.sql(
        f"select idx, len(embedding) from '{final}/data-*.parquet' order by idx"
    ).fetchall()
    assert [r[0] for r in rows] == ref_idx and {r[1] for r in rows} == {width}
    emb = np.array(df["embedding"].to_list(), dtype=np.float32)
    np.testing.assert_array_equal(emb, np.array(ds["embedding"], dtype=np.float32))


def test_report_and_card_are_written(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    html = (out / "report.html").read_text()
    assert html.count("data:image/svg+xml;base64,") >= 6
    card = (out / "final" / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "`embedding`" in card and str(tiny_bert) in card


def test_final_metadata_carries_text_provenance(corpus, tmp_path, tiny_bert):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    meta = pq.read_schema(next((out / "final").glob("data-*.parquet"))).metadata
    for key in ("model", "weights_sha256", "pooling", "max_length", "dtype", "normalize"):
        assert f"amtprep.text.{key}".encode() in meta, key
