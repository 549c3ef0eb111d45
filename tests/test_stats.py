"""Column summaries agree with numpy/pyarrow computed directly, across files and batches."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amtprep.stats import Moments, ValueSample, summarize_columns

EMBED_DIM = 8


def _tables(seed: int = 0) -> list[pa.Table]:
    rng = np.random.default_rng(seed)
    tables = []
    for part, n in enumerate((300, 1, 250)):
        n_notes = rng.integers(0, 5000, n)
        duration = rng.gamma(2.0, 30.0, n)
        duration[::37] = np.nan
        embedding = rng.normal(size=(n, EMBED_DIM)).astype(np.float32)
        tables.append(
            pa.table({
                "idx": pa.array(np.arange(n) + 1000 * part, pa.int64()),
                "n_notes": pa.array(n_notes, pa.int32()),
                "duration_s": pa.array(duration, pa.float64()),
                "drums": pa.array([bool(x) if x < 2 else None for x in rng.integers(0, 3, n)]),
                "estimated_key": pa.array(rng.choice(["C major", "A minor", "G major"], n)),
                "caption": pa.array([f"caption {i} " + "word " * int(k) for i, k in enumerate(rng.integers(1, 40, n))]),
                "programs": pa.array(
                    [list(rng.integers(0, 129, k)) if k else None for k in rng.integers(0, 6, n)],
                    pa.list_(pa.int16()),
                ),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(embedding.ravel()), EMBED_DIM
                ),
            })
        )  # fmt: skip
    return tables


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[list[Path], pa.Table]:
    files = []
    for i, table in enumerate(_tables()):
        files.append(tmp_path / f"data-{i:05d}.parquet")
        pq.write_table(table, files[-1], row_group_size=64)
    return files, pa.concat_tables(_tables())


def _by_name(summaries: list[dict]) -> dict[str, dict]:
    return {s["column_name"]: s for s in summaries}


def _assert_numeric(stats: dict, values: np.ndarray, n_rows: int) -> None:
    finite = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    assert stats["nan_count"] == n_rows - finite.size
    assert stats["min"] == pytest.approx(finite.min(), abs=1e-5)
    assert stats["max"] == pytest.approx(finite.max(), abs=1e-5)
    assert stats["mean"] == pytest.approx(finite.mean(), abs=1e-5)
    assert stats["median"] == pytest.approx(np.median(finite), abs=1e-5)
    assert stats["std"] == pytest.approx(finite.std(ddof=1), abs=1e-5)
    hist = stats["histogram"]
    assert sum(hist["hist"]) == finite.size
    assert len(hist["bin_edges"]) == len(hist["hist"]) + 1 <= 12
    assert hist["bin_edges"][0] == stats["min"] and hist["bin_edges"][-1] == stats["max"]
    if values.dtype.kind == "f":  # edges are rounded for display; bin with the exact ones
        expected, _ = np.histogram(finite, bins=10, range=(finite.min(), finite.max()))
    else:
        expected, _ = np.histogram(finite, bins=np.asarray(hist["bin_edges"], dtype=np.float64))
    assert hist["hist"] == expected.tolist()


def test_numeric_columns_match_numpy(dataset) -> None:
    files, table = dataset
    stats = _by_name(summarize_columns(files))
    assert stats["n_notes"]["column_type"] == "int"
    assert stats["duration_s"]["column_type"] == "float"
    _assert_numeric(stats["n_notes"]["column_statistics"], table["n_notes"].to_numpy(), 551)
    duration = table["duration_s"].to_numpy()
    _assert_numeric(stats["duration_s"]["column_statistics"], duration, 551)
    assert stats["duration_s"]["column_statistics"]["nan_count"] == np.isnan(duration).sum() > 0


def test_int_histogram_uses_integer_bins_like_the_dataset_viewer(tmp_path: Path) -> None:
    # The dataset viewer's own example: idx 0..8550 -> ten bins of 856, last edge the maximum.
    pq.write_table(pa.table({"idx": pa.array(range(8551))}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"flag": pa.array([0, 1, 1])}), tmp_path / "b.parquet")
    [idx] = summarize_columns([tmp_path / "a.parquet"])
    assert idx["column_statistics"]["histogram"] == {
        "hist": [856] * 9 + [847],
        "bin_edges": [0, 856, 1712, 2568, 3424, 4280, 5136, 5992, 6848, 7704, 8550],
    }
    [flag] = summarize_columns([tmp_path / "b.parquet"])
    assert flag["column_statistics"]["histogram"] == {"hist": [1, 2], "bin_edges": [0, 1, 1]}


def test_bool_labels_text_and_lists(dataset) -> None:
    files, table = dataset
    stats = _by_name(summarize_columns(files))

    drums = stats["drums"]["column_statistics"]
    values = table["drums"].to_pylist()
    assert stats["drums"]["column_type"] == "bool"
    assert drums["nan_count"] == values.count(None)
    assert drums["frequencies"] == {"False": values.count(False), "True": values.count(True)}

    key = stats["estimated_key"]
    assert key["column_type"] == "string_label"
    keys = table["estimated_key"].to_pylist()
    assert key["column_statistics"]["n_unique"] == 3
    assert key["column_statistics"]["frequencies"] == {k: keys.count(k) for k in set(keys)}

    caption = stats["caption"]
    assert caption["column_type"] == "string_text"
    lengths = np.array([len(c) for c in table["caption"].to_pylist()])
    _assert_numeric(caption["column_statistics"], lengths, 551)

    programs = stats["programs"]
    assert programs["column_type"] == "list"
    lists = table["programs"].to_pylist()
    list_lengths = np.array([len(p) for p in lists if p is not None])
    _assert_numeric(programs["column_statistics"], list_lengths, 551)
    assert programs["column_statistics"]["nan_count"] == lists.count(None) > 0


def test_embedding_reports_width_and_norms(dataset) -> None:
    files, table = dataset
    [embedding] = summarize_columns(files, ["embedding"])
    assert embedding["column_type"] == "fixed_size_list"
    stats = embedding["column_statistics"]
    assert stats["width"] == EMBED_DIM
    vectors = table["embedding"].combine_chunks().flatten().to_numpy().reshape(-1, EMBED_DIM)
    _assert_numeric(stats, np.linalg.norm(vectors.astype(np.float64), axis=1), 551)


def test_columns_argument_selects_and_orders(dataset) -> None:
    files, _ = dataset
    summaries = summarize_columns(files, ["n_notes", "idx"])
    assert [s["column_name"] for s in summaries] == ["n_notes", "idx"]
    with pytest.raises(KeyError, match="no_such_column"):
        summarize_columns(files, ["idx", "no_such_column"])


def test_file_without_a_column_counts_its_rows_as_null(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2], "b": [1.0, 2.0]}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"a": [3]}), tmp_path / "2.parquet")
    stats = _by_name(summarize_columns([tmp_path / "1.parquet", tmp_path / "2.parquet"]))
    assert stats["b"]["column_statistics"]["nan_count"] == 1
    assert stats["b"]["column_statistics"]["nan_proportion"] == pytest.approx(1 / 3, abs=1e-5)
    assert stats["a"]["column_statistics"]["max"] == 3


def test_all_null_column_has_no_moments(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": pa.array([None, None], pa.float32())}), tmp_path / "n.parquet")
    [x] = summarize_columns([tmp_path / "n.parquet"])
    assert x["column_statistics"]["nan_count"] == 2
    assert x["column_statistics"]["mean"] is None and x["column_statistics"]["histogram"] is None


def test_beyond_the_exact_limit_median_and_histogram_come_from_a_reservoir(tmp_path: Path) -> None:
    values = np.random.default_rng(1).exponential(10.0, 20_000)
    pq.write_table(pa.table({"v": values}), tmp_path / "v.parquet")
    [v] = summarize_columns([tmp_path / "v.parquet"], max_exact_values=2_000)
    stats = v["column_statistics"]
    assert stats["sampled"] is True
    assert stats["mean"] == pytest.approx(values.mean(), abs=1e-5)  # moments stay exact
    assert stats["max"] == pytest.approx(values.max(), abs=1e-5)
    assert sum(stats["histogram"]["hist"]) == values.size
    rank = (values < stats["median"]).mean()
    assert abs(rank - 0.5) < 0.05  # the sampled median sits near the middle


def test_moments_merge_equals_moments_of_the_concatenation() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(5, 2, 1000), rng.normal(-3, 7, 17)
    merged = Moments.of(a).merge(Moments.of(b)).merge(Moments())
    whole = np.concatenate([a, b])
    assert merged.count == whole.size
    assert merged.mean == pytest.approx(whole.mean())
    assert merged.std == pytest.approx(whole.std(ddof=1))
    assert (merged.min, merged.max) == (whole.min(), whole.max())


def test_value_sample_is_uniform_over_the_stream() -> None:
    sample = ValueSample(limit=1000, seed=3)
    for start in range(0, 100_000, 777):
        sample.add(np.arange(start, min(start + 777, 100_000)))
    kept = sample.values()
    assert kept.size == 1000 and not sample.exact
    assert len(np.unique(kept)) == 1000
    # A uniform sample of 0..99999 has mean ~50000 (sd of the mean ~ 913).
    assert math.isclose(kept.mean(), 50_000, abs_tol=4 * 913)
    assert (kept >= 90_000).sum() > 50  # late items still get in
