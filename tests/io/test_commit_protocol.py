"""Shards and the checkpoint summary: atomic publish and validation (the commit log and recovery
are in tests/commit/)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from amtprep.io.checkpoint import Checkpoint, CheckpointCorrupt, load_checkpoint, save_checkpoint
from amtprep.io.shards import ShardInvalid, inspect_shard, parse_shard_name, shard_name, write_shard


def _table(first: int, last: int, failed: tuple[int, ...] = ()) -> pa.Table:
    idx = list(range(first, last + 1))
    return pa.table(
        {
            "idx": pa.array(idx, pa.int64()),
            "id": [str(i) for i in idx],
            "status": ["failed" if i in failed else "ok" for i in idx],
            "error_type": [("boom" if i in failed else None) for i in idx],
            "error": [("it broke" if i in failed else None) for i in idx],
            "value": [float(i) for i in idx],
        }
    )


def test_shard_names_round_trip():
    assert shard_name(0, 63) == "part-000000000-000000063.parquet"
    assert parse_shard_name(shard_name(64, 127, 2)) == (64, 127, 2)
    assert parse_shard_name("part-1-2.parquet") is None
    assert parse_shard_name(".part-000000000-000000063.parquet.123.tmp") is None


def test_write_shard_publishes_whole_file_and_counts_failures(tmp_path: Path):
    entry = write_shard(tmp_path, _table(0, 9, failed=(3, 4)), 0, 9)
    assert (entry.rows, entry.failed, entry.first_idx, entry.last_idx) == (10, 2, 0, 9)
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # no temp file left behind
    assert inspect_shard(tmp_path / entry.name, expect=entry, full=True) == entry


def test_truncated_or_misnamed_shard_is_invalid(tmp_path: Path):
    entry = write_shard(tmp_path, _table(0, 9), 0, 9)
    path = tmp_path / entry.name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardInvalid, match="bytes on disk"):
        inspect_shard(path, expect=entry)
    with pytest.raises(ShardInvalid, match="unreadable"):
        inspect_shard(path)
    wrong = tmp_path / shard_name(0, 10)
    wrong.write_bytes(data)
    with pytest.raises(ShardInvalid, match="rows"):
        inspect_shard(wrong)


def _ck(tmp_path: Path) -> Checkpoint:
    return Checkpoint("midi", 30, {"sha256": "abc"}, {"feature_version": 1})


def test_checkpoint_fields_round_trip(tmp_path: Path):
    ck = _ck(tmp_path)
    ck.last_processed_idx, ck.processed, ck.shards = 9, 20, 2
    ck.batch_info = {
        "current_batch": 2,
        "total_batches": 3,
        "batch_size": 10,
        "processing_time": 1.5,
        "files_per_second": 13.3,
    }
    path = tmp_path / "midi_checkpoint.json"
    save_checkpoint(ck, path)
    body = json.loads(path.read_text())
    assert body["last_processed_idx"] == 9
    assert body["total_files"] == 30 and isinstance(body["timestamp"], float)
    assert set(body["batch_info"]) >= {
        "current_batch",
        "total_batches",
        "batch_size",
        "processing_time",
        "files_per_second",
    }
    assert load_checkpoint(path, "midi").processed == 20


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"",
        lambda b: b[: len(b) // 2],
        lambda b: b.replace(b'"total_files": 30', b'"total_files": 31'),
        lambda b: b"\x00\xff garbage",
        lambda b: json.dumps({"stage": "midi"}).encode(),
    ],
    ids=["empty", "truncated", "tampered", "garbage", "wrong-content"],
)
def test_damaged_checkpoint_is_refused(tmp_path: Path, damage):
    path = tmp_path / "midi_checkpoint.json"
    save_checkpoint(_ck(tmp_path), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointCorrupt):
        load_checkpoint(path, "midi")
