"""Shards and checkpoints: atomic publish, validation, and the recovery chain."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from amtprep.io.checkpoint import Checkpoint, CheckpointCorrupt, load_checkpoint, save_checkpoint
from amtprep.io.ledger import StageLedger
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


def _ck(tmp_path: Path, entries) -> Checkpoint:
    return Checkpoint("midi", 30, {"sha256": "abc"}, {"feature_version": 1}, shards=list(entries))


def test_checkpoint_fields_and_watermark(tmp_path: Path):
    e1 = write_shard(tmp_path, _table(0, 9), 0, 9)
    e3 = write_shard(tmp_path, _table(20, 29), 20, 29)  # out of order: beyond a gap
    ck = _ck(tmp_path, [e3, e1])
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
    assert body["last_processed_idx"] == 9  # the gap 10..19 stops the contiguous watermark
    assert body["total_files"] == 30 and isinstance(body["timestamp"], float)
    assert set(body["batch_info"]) >= {
        "current_batch",
        "total_batches",
        "batch_size",
        "processing_time",
        "files_per_second",
    }
    assert [s["name"] for s in body["shards"]] == [e1.name, e3.name]
    assert load_checkpoint(path, "midi").last_processed_idx == 9


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
    save_checkpoint(_ck(tmp_path, []), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointCorrupt):
        load_checkpoint(path, "midi")


def test_ledger_recovers_through_backup_adoption_and_quarantine(tmp_path: Path):
    shards, ck_path = tmp_path / "midi", tmp_path / "midi_checkpoint.json"
    shards.mkdir()
    ledger = StageLedger("midi", shards, ck_path)
    assert ledger.recover().source == "fresh"
    ledger.start(40, {"sha256": "abc"}, {"v": 1})
    for a in (0, 10):
        ledger.add(write_shard(shards, _table(a, a + 9), a, a + 9))
        ledger.save()
    # a crash after shard 3's rename, before its checkpoint; plus a torn temp file and a junk shard
    write_shard(shards, _table(20, 29), 20, 29)
    (shards / ".part-000000030-000000039.parquet.999.tmp").write_bytes(b"half")
    (shards / shard_name(30, 39)).write_bytes(b"PAR1 not really")
    ck_path.write_bytes(b"{ truncated")

    ledger = StageLedger("midi", shards, ck_path)
    rec = ledger.recover()
    assert rec.source == "backup"
    assert rec.adopted == 2 and rec.quarantined == 1  # shard 2 (the .bak predates it) and shard 3
    assert ledger.covered() == [(0, 9), (10, 19), (20, 29)]
    assert (shards / "quarantine" / shard_name(30, 39)).exists()
    assert not list(shards.glob(".*.tmp"))
    assert any("unusable" in m for m in rec.messages) and any("adopted" in m for m in rec.messages)


def test_ledger_rebuilds_from_shards_when_all_checkpoints_are_gone(tmp_path: Path):
    shards, ck_path = tmp_path / "midi", tmp_path / "midi_checkpoint.json"
    shards.mkdir()
    ledger = StageLedger("midi", shards, ck_path)
    ledger.recover()
    ledger.start(20, {"sha256": "abc"}, {"v": 1})
    ledger.add(write_shard(shards, _table(0, 9), 0, 9))
    ledger.save()
    ck_path.unlink()
    ck_path.with_name(ck_path.name + ".bak").unlink(missing_ok=True)
    ledger = StageLedger("midi", shards, ck_path)
    rec = ledger.recover()
    assert rec.source == "rebuilt" and ledger.covered() == [(0, 9)]


def test_newer_generation_supersedes_older(tmp_path: Path):
    shards, ck_path = tmp_path / "midi", tmp_path / "midi_checkpoint.json"
    shards.mkdir()
    write_shard(shards, _table(0, 9, failed=(1,)), 0, 9)
    write_shard(shards, _table(0, 9), 0, 9, generation=1)
    ledger = StageLedger("midi", shards, ck_path)
    ledger.recover()
    assert [e.generation for e in ledger.checkpoint.shards] == [1]
    assert not (shards / shard_name(0, 9)).exists()
