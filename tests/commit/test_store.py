"""The commit log and store: O(1) commits, exactly-once totals, and recovery from every damage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from amtprep.commit.log import LOG_NAME, CommitLog
from amtprep.commit.store import StageStore, batch_metadata, shard_identity_metadata
from amtprep.io.shards import shard_name, write_shard

IDENTITY = {"total_files": 40, "input": {"sha256": "abc"}, "settings": {"v": 1}, "request": {}}


def _table(
    first: int, last: int, failed: tuple[int, ...] = (), files: int | None = None
) -> pa.Table:
    idx = list(range(first, last + 1))
    t = pa.table(
        {
            "idx": pa.array(idx, pa.int64()),
            "id": [str(i) for i in idx],
            "status": ["failed" if i in failed else "ok" for i in idx],
            "error_type": [("boom" if i in failed else None) for i in idx],
            "error": [("it broke" if i in failed else None) for i in idx],
        }
    )
    meta = shard_identity_metadata("midi", 40, IDENTITY["input"], IDENTITY["settings"])
    meta.update(batch_metadata({"files": files if files is not None else len(idx)}, 0.5))
    return t.replace_schema_metadata(meta)


def _store(tmp_path: Path) -> StageStore:
    return StageStore("midi", tmp_path / "midi", tmp_path / "midi_checkpoint.json")


def _commit(store: StageStore, first: int, last: int, **kw):
    entry = write_shard(store.shard_dir, _table(first, last, **kw), first, last)
    store.commit(entry, {"files": last - first + 1}, 0.5)
    return entry


def _started(tmp_path: Path, ranges=((0, 9), (10, 19))) -> StageStore:
    store = _store(tmp_path)
    assert store.recover().source == "fresh"
    store.begin(IDENTITY)
    for a, b in ranges:
        _commit(store, a, b)
    store.save_summary()
    store.close()
    return store


def test_commits_replay_from_the_log_with_exact_totals(tmp_path: Path):
    _started(tmp_path)
    store = _store(tmp_path)
    rec = store.recover()
    assert rec.source == "log" and rec.messages == []
    assert store.covered() == [(0, 9), (10, 19)]
    assert (store.processed, store.counters, store.last_processed_idx) == (20, {"files": 20}, 19)
    assert store.identity["input"] == {"sha256": "abc"}


def test_a_commit_appends_one_line_and_the_summary_stays_bounded(tmp_path: Path):
    store = _store(tmp_path)
    store.recover()
    store.begin(IDENTITY | {"total_files": 100_000})
    sizes = {}
    for n in range(1, 601):
        before = (store.shard_dir / LOG_NAME).stat().st_size
        _commit(store, (n - 1) * 2, (n - 1) * 2 + 1)
        line = (store.shard_dir / LOG_NAME).read_bytes()[before:]
        assert line.count(b"\n") == 1 and line.endswith(b"\n")  # only the new entry is written
        if n in (10, 600):
            store.save_summary()
            sizes[n] = store.checkpoint_path.stat().st_size
    # the summary never lists shards: its size does not grow with their number (digits aside)
    assert abs(sizes[600] - sizes[10]) < 40


def test_torn_last_line_is_cut_and_an_unlogged_shard_is_adopted_with_its_counters(tmp_path: Path):
    _started(tmp_path)
    shards = tmp_path / "midi"
    # a crash after shard 3 was published but while its log line was being written
    write_shard(shards, _table(20, 29, files=10), 20, 29)
    with open(shards / LOG_NAME, "ab") as fh:
        fh.write(b'{"kind": "shard", "shard": {"name": "part-0000000')
    store = _store(tmp_path)
    rec = store.recover()
    assert any("cut off by a crash" in m for m in rec.messages)
    assert any("adopted 1 committed shard" in m for m in rec.messages)
    assert store.covered() == [(0, 9), (10, 19), (20, 29)]
    assert store.counters == {"files": 30}  # counted once, from the shard's own footer
    reread = CommitLog(shards / LOG_NAME).read()
    assert reread.torn_tail == 0 and reread.damaged_lines == []


def test_damaged_middle_line_is_left_out_and_its_shard_checked_on_its_own(tmp_path: Path):
    _started(tmp_path)
    log = tmp_path / "midi" / LOG_NAME
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"rows": 10', b'"rows": 11')  # a flipped digit
    log.write_bytes(b"".join(lines))
    store = _store(tmp_path)
    rec = store.recover()
    assert any("damaged" in m for m in rec.messages) and rec.adopted == 1
    assert store.covered() == [(0, 9), (10, 19)] and store.processed == 20


def test_log_deleted_is_rebuilt_from_the_shard_footers(tmp_path: Path):
    _started(tmp_path)
    (tmp_path / "midi" / LOG_NAME).unlink()
    store = _store(tmp_path)
    rec = store.recover()
    assert rec.source == "rebuilt" and any(
        "rebuilt the commit log from 2" in m for m in rec.messages
    )
    assert store.identity["input"] == {"sha256": "abc"} and store.identity["settings"] == {"v": 1}
    assert store.counters == {"files": 20}
    assert _store(tmp_path).recover().source == "log"  # and it is a log again


def test_missing_shard_is_redone_and_counted_once(tmp_path: Path):
    _started(tmp_path)
    (tmp_path / "midi" / shard_name(10, 19)).unlink()
    store = _store(tmp_path)
    rec = store.recover()
    assert rec.dropped == 1 and any("listed but missing" in m for m in rec.messages)
    assert store.covered() == [(0, 9)] and store.counters == {"files": 10}
    _commit(store, 10, 14)  # redone in smaller batches
    _commit(store, 15, 19)
    store.close()
    store = _store(tmp_path)
    store.recover()
    assert store.covered() == [(0, 9), (10, 14), (15, 19)]
    assert (store.processed, store.counters) == (20, {"files": 20})


def test_shard_of_the_wrong_size_is_quarantined(tmp_path: Path):
    _started(tmp_path)
    path = tmp_path / "midi" / shard_name(10, 19)
    path.write_bytes(path.read_bytes()[:-5])
    store = _store(tmp_path)
    rec = store.recover()
    assert rec.quarantined == 1 and (tmp_path / "midi" / "quarantine" / path.name).exists()
    assert store.covered() == [(0, 9)]


def test_retry_generation_supersedes_and_leftovers_are_cleaned(tmp_path: Path):
    store = _started(tmp_path, ranges=())
    store = _store(tmp_path)
    store.recover()
    _commit(store, 0, 9, failed=(3,))
    assert store.failed == 1
    # a retry published generation 1 and was killed before logging it: the orphan is adopted
    write_shard(store.shard_dir, _table(0, 9), 0, 9, generation=1)
    store.close()
    store = _store(tmp_path)
    rec = store.recover()
    assert rec.adopted == 1 and store.failed == 0
    assert [e.generation for e in store.entries()] == [1]
    assert not (store.shard_dir / shard_name(0, 9)).exists()  # the superseded one is gone
    # generation 0 left behind after a logged retry (killed before the unlink): removed
    write_shard(store.shard_dir, _table(0, 9, failed=(3,)), 0, 9)
    store.close()
    store = _store(tmp_path)
    store.recover()
    assert [e.generation for e in store.entries()] == [1] and store.failed == 0
    assert not (store.shard_dir / shard_name(0, 9)).exists()


def test_orphan_made_with_another_identity_is_quarantined(tmp_path: Path):
    _started(tmp_path)
    t = _table(20, 29)
    meta = dict(t.schema.metadata)
    meta.update(shard_identity_metadata("midi", 40, {"sha256": "other"}, {"v": 1}))
    write_shard(tmp_path / "midi", t.replace_schema_metadata(meta), 20, 29)
    store = _store(tmp_path)
    rec = store.recover()
    assert rec.quarantined == 1 and store.covered() == [(0, 9), (10, 19)]


def test_startup_removes_only_its_own_temp_files_beside_a_custom_checkpoint(tmp_path: Path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    user_file = folder / ".notes.tmp"
    user_file.write_text("mine")
    ours = folder / ".midi_checkpoint.json.4242.tmp"
    ours.write_text("half")
    store = StageStore("midi", tmp_path / "midi", folder / "midi_checkpoint.json")
    store.recover()
    assert user_file.read_text() == "mine" and not ours.exists()


def test_damaged_summary_is_reported_and_rewritten(tmp_path: Path):
    _started(tmp_path)
    ck = tmp_path / "midi_checkpoint.json"
    ck.write_bytes(b"{ not json")
    store = _store(tmp_path)
    rec = store.recover()
    assert any("unusable" in m and "rewritten from the commit log" in m for m in rec.messages)
    store.save_summary()
    assert json.loads(ck.read_text())["processed"] == 20


def test_a_clean_start_opens_no_shard_footer(tmp_path: Path, monkeypatch):
    _started(tmp_path, ranges=[(a, a + 1) for a in range(0, 40, 2)])
    from amtprep.commit import store as store_module
    from amtprep.io import shards

    opened = []
    monkeypatch.setattr(store_module.pq, "read_schema", lambda *a, **k: opened.append(a))
    monkeypatch.setattr(shards.pq, "read_metadata", lambda *a, **k: opened.append(a))
    store = _store(tmp_path)
    assert store.recover().messages == [] and len(store.live) == 20
    assert opened == []  # the log vouches for them; a stat checks each size
