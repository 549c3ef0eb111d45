"""TextStage on tiny random BERTs: row contract, batching invariance, cache, Parquet output."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amtprep.config import TextConfig
from amtprep.stages import BASE_FIELDS
from amtprep.text import TextStage, parquet_write_options

from .conftest import CAPTIONS, embedding_matrix, make_records


@pytest.fixture(scope="module")
def reference(tiny_bert):
    stage = TextStage(TextConfig(model=str(tiny_bert), model_batch_size=1, sort_window=1))
    return embedding_matrix(stage.process(make_records(CAPTIONS)))


@pytest.mark.parametrize(
    ("batch_size", "sort_window", "max_tokens"),
    [(2, 1, None), (3, 4, None), (32, 16, None), (4, 2, 60), (10, 1, 1)],
)
def test_vectors_do_not_depend_on_batching_or_order(
    tiny_bert, reference, batch_size, sort_window, max_tokens
):
    stage = TextStage(
        TextConfig(
            model=str(tiny_bert),
            model_batch_size=batch_size,
            sort_window=sort_window,
            max_tokens_per_batch=max_tokens,
        )
    )
    order = list(range(len(CAPTIONS)))
    random.Random(batch_size).shuffle(order)
    table = stage.process(make_records([CAPTIONS[i] for i in order]))
    np.testing.assert_allclose(embedding_matrix(table), reference[order], atol=1e-5, rtol=0)
    assert table.column("idx").to_pylist() == list(range(len(CAPTIONS)))


def test_schema_columns_and_provenance(tiny_bert):
    stage = TextStage(TextConfig(model=str(tiny_bert)))
    schema = stage.schema()
    assert schema.names[:5] == [f.name for f in BASE_FIELDS]
    assert schema.names[5:] == ["caption", "n_tokens", "truncated", "embedding"]
    assert schema.field("embedding").type == pa.list_(pa.float32(), 32)
    meta = stage.schema_metadata()
    assert meta["amtprep.text.model"] == str(tiny_bert)
    assert meta["amtprep.text.weights_sha256"] == stage.source.weights_sha256
    assert meta["amtprep.text.pooling"] == "mean"
    assert meta["amtprep.text.max_length"] == "128"
    assert meta["amtprep.text.dim"] == "32"
    assert schema.metadata[b"amtprep.text.normalize"] == b"false"
    assert stage.process(make_records(CAPTIONS[:2])).schema.equals(schema, check_metadata=True)


def test_failed_rows_keep_their_place_and_reason(tiny_bert, records):
    stage = TextStage(TextConfig(model=str(tiny_bert), max_length=16))
    recs = [
        *records(["A bright pop tune in D major."]),
        *records([""], start=1),
        *records([" \t\n "], start=2),
        *records([None], start=3, caption_error="invalid UTF-8 at byte 17"),
        *records(["fine caption"], start=4, row_error="line 6: bad JSON"),
        *records(["slow blues " * 40], start=5),
    ]
    table = stage.process(recs)
    rows = table.to_pylist()
    assert [r["idx"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "failed", "failed", "ok"]
    assert [r["error_type"] for r in rows] == [
        None,
        "empty_caption",
        "empty_caption",
        "invalid_caption",
        "malformed_row",
        None,
    ]
    assert rows[3]["error"] == "invalid UTF-8 at byte 17"
    assert rows[4]["error"] == "line 6: bad JSON"
    assert all(r["embedding"] is None for r in rows[1:5])
    assert rows[0]["truncated"] is False and rows[0]["n_tokens"] < 16
    assert rows[5]["truncated"] is True and rows[5]["n_tokens"] == 16
    assert rows[5]["caption"] == "slow blues " * 40  # stored as given, not truncated
    counts = stage.counters()
    assert (counts["records"], counts["ok"], counts["failed"], counts["truncated"]) == (6, 2, 4, 1)


def test_caption_over_max_caption_chars_is_a_failed_row_without_its_text(tiny_bert, records):
    stage = TextStage(TextConfig(model=str(tiny_bert), max_caption_chars=50))
    long_caption = "an endless ambient drone " * 4  # 100 characters
    rows = stage.process(records(["A calm piano piece.", long_caption, "x" * 50])).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]  # 50 is within the limit
    assert rows[1]["error_type"] == "caption_too_long"
    assert rows[1]["error"] == (
        "caption is 100 characters, over the limit of 50 (--max_caption_chars)"
    )
    assert rows[1]["caption"] is None and rows[1]["embedding"] is None  # not stored, not run
    assert stage.counters()["tokens"] == rows[0]["n_tokens"] + rows[2]["n_tokens"]
    assert "max_caption_chars" not in stage.fingerprint()  # a retry may raise it


def test_cache_hits_on_second_run_with_the_same_vectors(tiny_bert, tmp_path):
    cfg = TextConfig(model=str(tiny_bert), use_cache=True, cache_dir=tmp_path)
    first = TextStage(cfg)
    cold = first.process(make_records(CAPTIONS))
    assert first.counters()["cache_misses"] == len(CAPTIONS)
    first.close()
    second = TextStage(cfg)
    warm = second.process(make_records([*CAPTIONS, "A new caption, never seen."]))
    assert second.counters()["cache_hits"] == len(CAPTIONS)
    assert second.counters()["cache_misses"] == 1
    np.testing.assert_array_equal(embedding_matrix(warm)[:-1], embedding_matrix(cold))
    assert warm.column("n_tokens").to_pylist()[:-1] == cold.column("n_tokens").to_pylist()
    second.close()


def test_cache_never_serves_another_modelsembedding_matrix(tiny_bert, other_tiny_bert, tmp_path):
    # Same folder name, different weights: only the weights hash tells them apart.
    folder = tmp_path / "model"
    folder.symlink_to(tiny_bert)
    cfg = TextConfig(model=str(folder), use_cache=True, cache_dir=tmp_path / "cache")
    stage = TextStage(cfg)
    before = embedding_matrix(stage.process(make_records(CAPTIONS)))
    stage.close()
    folder.unlink()
    folder.symlink_to(other_tiny_bert)
    stage = TextStage(cfg)
    after = embedding_matrix(stage.process(make_records(CAPTIONS)))
    assert stage.counters()["cache_hits"] == 0
    assert np.abs(after - before).max() > 1e-3
    stage.close()
    # And the pooling is part of the key too.
    cls_stage = TextStage(
        TextConfig(model=str(folder), pooling="cls", use_cache=True, cache_dir=tmp_path / "cache")
    )
    cls_stage.process(make_records(CAPTIONS))
    assert cls_stage.counters()["cache_hits"] == 0


def test_pooling_none_round_trips_through_parquet(tiny_bert, tmp_path):
    stage = TextStage(TextConfig(model=str(tiny_bert), pooling="none"))
    recs = make_records([CAPTIONS[0], "", CAPTIONS[2]])
    table = stage.process(recs)
    assert table.schema.field("embedding").type == pa.list_(pa.list_(pa.float16(), 32))
    path = tmp_path / "tokens.parquet"
    pq.write_table(table, path, **parquet_write_options(table.schema))
    back = pq.read_table(path)
    assert back.schema.metadata[b"amtprep.text.pooling"] == b"none"
    rows = back.to_pylist()
    assert rows[1]["embedding"] is None
    n_tokens = back.column("n_tokens").to_pylist()
    for row, caption in ((0, CAPTIONS[0]), (2, CAPTIONS[2])):
        states = np.array(rows[row]["embedding"], dtype=np.float16)
        assert states.shape == (n_tokens[row], 32)
        with_model = stage.encoder.encode([caption]).token_vectors[0]
        np.testing.assert_array_equal(states, with_model)
    # The states are the model's: their mean is what mean pooling gives (normalize off).
    mean_stage = TextStage(TextConfig(model=str(tiny_bert), normalize=False))
    mean_vec = embedding_matrix(mean_stage.process(make_records([CAPTIONS[0]])))[0]
    states = np.array(rows[0]["embedding"], dtype=np.float32)
    np.testing.assert_allclose(states.mean(axis=0), mean_vec, atol=2e-3)


def test_float16_storage_and_parquet_options(tiny_bert, tmp_path):
    stage = TextStage(TextConfig(model=str(tiny_bert), embedding_dtype="float16"))
    table = stage.process(make_records(CAPTIONS))
    assert table.schema.field("embedding").type == pa.list_(pa.float16(), 32)
    options = parquet_write_options(table.schema)
    assert "embedding" not in options["use_dictionary"]
    assert "caption" in options["use_dictionary"]
    path = tmp_path / "f16.parquet"
    pq.write_table(table, path, **options)
    column_meta = (
        pq.ParquetFile(path).metadata.row_group(0).column(table.schema.names.index("embedding"))
    )
    assert "PLAIN_DICTIONARY" not in column_meta.encodings
    assert "RLE_DICTIONARY" not in column_meta.encodings
    assert "BYTE_STREAM_SPLIT" in column_meta.encodings
    np.testing.assert_array_equal(embedding_matrix(pq.read_table(path)), embedding_matrix(table))


def test_fingerprint_tracks_settings_that_changeembedding_matrix(tiny_bert, other_tiny_bert):
    base = TextStage(TextConfig(model=str(tiny_bert))).fingerprint()
    assert TextStage(TextConfig(model=str(tiny_bert))).fingerprint() == base
    for cfg in (
        TextConfig(model=str(other_tiny_bert)),
        TextConfig(model=str(tiny_bert), pooling="cls"),
        TextConfig(model=str(tiny_bert), max_length=32),
        TextConfig(model=str(tiny_bert), normalize=True),
        TextConfig(model=str(tiny_bert), embedding_dtype="float16"),
    ):
        assert TextStage(cfg).fingerprint() != base
