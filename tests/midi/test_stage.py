"""MidiStage end to end: rows, failure kinds, determinism, hostile files, cache, no torch."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest

from amtprep.midi import FEATURE_VERSION, MidiStage
from amtprep.records import Record
from amtprep.stages import BASE_FIELDS
from tests.midi.conftest import midi_bytes, note, raw_midi, records_for, slow_midi
from tests.midi.midigen import generate_midi

GOOD = midi_bytes([note(60), note(60, 0, 480)])


def by_id(table: pa.Table) -> dict[str, dict]:
    return {row["id"]: row for row in table.to_pylist()}


def test_schema_starts_with_base_fields_and_rows_follow_records(tmp_path, midi_config):
    files = {f"{i}.mid": generate_midi(i, n_tracks=2, notes_per_track=30) for i in range(5)}
    records = records_for(tmp_path, files)
    with MidiStage(midi_config) as stage:
        assert stage.schema().names[:5] == [f.name for f in BASE_FIELDS]
        table = stage.process(records)
        assert stage.fingerprint()["feature_version"] == FEATURE_VERSION
    assert table.schema == stage.schema()
    assert table.column("idx").to_pylist() == [r.idx for r in records]
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert table.column("parser").to_pylist() == ["symusic"] * 5
    assert all(row["n_notes"] == len(row["notes"]) > 0 for row in table.to_pylist())


def test_each_failure_kind_is_a_failed_row_with_a_reason(tmp_path, midi_config):
    truncated = GOOD[: len(GOOD) - 5]
    # Track says note-on with a data byte 0x90 > 127 where a pitch belongs: not MIDI data.
    bad_status = raw_midi(b"\x00\xf4\x00\xff\x2f\x00")
    files = {
        "ok.mid": GOOD,
        "missing.mid": None,
        "empty.mid": b"",
        "text.mid": b"hello, this is not a MIDI file",
        "truncated.mid": truncated,
        "big.mid": GOOD + b"\x00" * 200,
        "corrupt.mid": bad_status,
    }
    records = records_for(tmp_path, files)
    records.append(Record(len(records), "row", "", "", None, row_error="line 9: invalid JSON"))
    midi_config.max_midi_bytes = len(GOOD) + 100
    for backend in ("mido", "auto"):
        midi_config.backend = backend
        with MidiStage(midi_config) as stage:
            rows = by_id(stage.process(records))
        kinds = {row["midi_path"] or "row": row["error_type"] for row in rows.values()}
        assert kinds == {
            "ok.mid": None,
            "missing.mid": "missing_file",
            "empty.mid": "empty_file",
            "text.mid": "not_midi",
            "truncated.mid": "truncated",
            "big.mid": "too_large",
            "corrupt.mid": "corrupt_midi",
            "row": "malformed_row",
        }
        for row in rows.values():
            if row["status"] == "failed":
                assert row["error"] and row["n_notes"] is None and row["notes"] is None


def test_output_identical_for_workers_batch_sizes_and_backends(tmp_path, midi_config):
    files = {f"{i}.mid": generate_midi(i, notes_per_track=60) for i in range(24)}
    files["missing.mid"] = None
    records = records_for(tmp_path, files)
    tables = []
    for backend, workers, batch in [
        ("mido", 1, 25),
        ("mido", 2, 7),
        ("auto", 2, 5),
        ("symusic", 1, 25),
    ]:
        config = dataclasses.replace(midi_config, backend=backend, workers=workers)
        with MidiStage(config) as stage:
            parts = [stage.process(records[i : i + batch]) for i in range(0, len(records), batch)]
        tables.append(pa.concat_tables(parts).drop_columns(["parser"]))
    assert all(t.equals(tables[0]) for t in tables[1:])


@pytest.mark.slow
def test_pathological_file_times_out_and_the_pool_carries_on(tmp_path, midi_config):
    records = records_for(tmp_path, {"slow.mid": slow_midi(), "a.mid": GOOD, "b.mid": GOOD})
    midi_config.file_timeout = 1.0
    with MidiStage(midi_config) as stage:
        started = time.monotonic()
        rows = by_id(stage.process(records))
        elapsed = time.monotonic() - started
        assert stage.counters()["timeouts"] == 1
    assert rows["id0"]["error_type"] == "timeout"
    assert [rows["id1"]["status"], rows["id2"]["status"]] == ["ok", "ok"]
    assert elapsed < 8  # the 10 s parse was cut short


@pytest.mark.slow
def test_worker_killed_mid_file_fails_only_that_file(tmp_path, midi_config):
    records = records_for(tmp_path, {"slow.mid": slow_midi(), "a.mid": GOOD, "b.mid": GOOD})
    with MidiStage(midi_config) as stage:
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(table=stage.process(records)))
        runner.start()
        deadline = time.monotonic() + 30
        while not stage.worker_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)  # past worker start-up, inside the ~10 s parse of slow.mid
        os.kill(stage.worker_pids()[0], signal.SIGKILL)
        runner.join(timeout=60)
        assert not runner.is_alive()
        counters = stage.counters()
    rows = by_id(result["table"])
    assert rows["id0"]["error_type"] == "worker_crashed"
    assert "exit code -9" in rows["id0"]["error"]
    assert [rows["id1"]["status"], rows["id2"]["status"]] == ["ok", "ok"]
    assert counters["worker_deaths"] == 1


def test_close_leaves_no_worker_processes(tmp_path, midi_config):
    midi_config.workers = 2
    stage = MidiStage(midi_config)
    stage.process(records_for(tmp_path, {f"{i}.mid": GOOD for i in range(4)}))
    pids = stage.worker_pids()
    assert len(pids) == 2
    stage.close()
    stage.close()  # idempotent
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_cache_hits_on_second_run_and_misses_after_content_change(tmp_path, midi_config):
    files = {f"{i}.mid": generate_midi(i, notes_per_track=40) for i in range(4)}
    records = records_for(tmp_path, files)
    midi_config.use_cache = True
    with MidiStage(midi_config) as stage:
        cold = stage.process(records)
        assert stage.counters()["cache_misses"] == 4
    with MidiStage(midi_config) as stage:
        warm = stage.process(records)
        assert (stage.counters()["cache_hits"], stage.counters()["cache_misses"]) == (4, 0)
    assert warm.equals(cold)  # and not parsed: see test_a_cache_hit_is_served_not_parsed
    (tmp_path / "0.mid").write_bytes(generate_midi(99, notes_per_track=40))
    with MidiStage(midi_config) as stage:
        changed = stage.process(records)
        assert (stage.counters()["cache_hits"], stage.counters()["cache_misses"]) == (3, 1)
    assert changed.column("content_sha256")[0] != cold.column("content_sha256")[0]
    assert changed.slice(1).equals(cold.slice(1))


def test_importing_the_midi_stage_never_imports_torch():
    code = "import sys, amtprep.midi; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())


@pytest.mark.slow
def test_timeout_in_the_middle_of_a_chunk_keeps_every_other_file(tmp_path, midi_config):
    # 40 files on one worker go out in chunks of several files: the slow file is third of the
    # first chunk, so two finished rows die with the killed worker and the rest never started.
    files = {f"{i}.mid": generate_midi(i, notes_per_track=30) for i in range(40)}
    files["2.mid"] = slow_midi()
    records = records_for(tmp_path, files)
    midi_config.file_timeout = 1.0
    with MidiStage(midi_config) as stage:
        table = stage.process(records)
        assert stage.counters()["timeouts"] == 1
    with MidiStage(dataclasses.replace(midi_config, backend="mido", workers=2)) as stage:
        reference = stage.process([r for r in records if r.id != "id2"])
    rows = by_id(table)
    assert rows["id2"]["error_type"] == "timeout"
    assert table.column("idx").to_pylist() == list(range(40))
    kept = table.filter(pa.compute.not_equal(table.column("id"), "id2"))
    assert kept.drop_columns(["parser"]).equals(reference.drop_columns(["parser"]))


def test_unreadable_cache_entry_is_a_miss_not_a_crash(tmp_path, midi_config, caplog):
    import diskcache

    records = records_for(tmp_path, {"a.mid": GOOD})
    midi_config.use_cache = True
    with MidiStage(midi_config) as stage:
        cold = stage.process(records)
    with diskcache.Cache(str(midi_config.cache_dir / "midi")) as cache:
        (key,) = list(cache)
        cache.set(key, b"not an arrow stream")
    with MidiStage(midi_config) as stage:
        again = stage.process(records)
        assert (stage.counters()["cache_hits"], stage.counters()["cache_misses"]) == (0, 1)
    assert again.equals(cold)
    assert "unreadable" in caplog.text
    with MidiStage(midi_config) as stage:  # the parse refilled the entry
        assert stage.process(records).equals(cold)
        assert stage.counters()["cache_hits"] == 1


def test_prefetched_batch_is_collected_and_a_mismatch_is_discarded(tmp_path, midi_config):
    files = {f"{i}.mid": generate_midi(i, notes_per_track=30) for i in range(12)}
    records = records_for(tmp_path, files)
    first, second = records[:6], records[6:]
    midi_config.workers = 2
    with MidiStage(midi_config) as stage:
        reference = [stage.process(first), stage.process(second)]
    with MidiStage(midi_config) as stage:
        stage.process(first)
        started = stage.counters()["workers_started"]
        stage.prefetch(second)  # parsed while the caller writes the first batch's shard
        assert stage.process(second).equals(reference[1])
        assert stage.counters()["workers_started"] == started  # collected, not redone
        stage.prefetch(second)
        assert stage.process(first).equals(reference[0])  # not what was started: dropped
        assert stage.process(second).equals(reference[1])


def _doctor_cache(cache_dir, duration_s: float) -> None:
    """Rewrite every cached row with a duration no parse could give, to tell hits from parses."""
    import diskcache

    from amtprep.midi.schema import from_ipc, to_ipc

    with diskcache.Cache(str(cache_dir / "midi")) as cache:
        for key in list(cache):
            row = from_ipc(cache[key])
            column = row.schema.get_field_index("duration_s")
            doctored = pa.array([duration_s], row.schema.field(column).type)
            cache[key] = to_ipc(row.set_column(column, "duration_s", doctored)).to_pybytes()


def test_a_cache_hit_is_served_not_parsed(tmp_path, midi_config):
    records = records_for(tmp_path, {"a.mid": GOOD, "b.mid": generate_midi(3)})
    midi_config.use_cache = True
    with MidiStage(midi_config) as stage:
        stage.process(records)
    _doctor_cache(midi_config.cache_dir, 1234.5)
    with MidiStage(midi_config) as stage:
        warm = stage.process(records)
        assert (stage.counters()["cache_hits"], stage.counters()["cache_misses"]) == (2, 0)
    assert warm.column("duration_s").to_pylist() == [1234.5, 1234.5]


def test_prefetch_works_with_the_cache_on_and_serves_hits(tmp_path, midi_config):
    files = {f"{i}.mid": generate_midi(i, notes_per_track=30) for i in range(12)}
    records = records_for(tmp_path, files)
    first, second = records[:6], records[6:]
    midi_config.use_cache = True
    midi_config.workers = 2
    with MidiStage(midi_config) as stage:
        stage.process(first)  # the second half stays a miss
    _doctor_cache(midi_config.cache_dir, 1234.5)
    with MidiStage(midi_config) as stage:
        stage.prefetch(first)  # looked up while the caller writes the previous shard
        started = stage.counters()["workers_started"]
        hits = stage.process(first)
        stage.prefetch(second)
        misses = stage.process(second)
        counters = stage.counters()
    assert counters["workers_started"] == started  # prefetched work was collected, not redone
    assert (counters["cache_hits"], counters["cache_misses"]) == (6, 6)
    assert hits.column("duration_s").to_pylist() == [1234.5] * 6  # served, not parsed
    assert 1234.5 not in misses.column("duration_s").to_pylist()


def test_cache_on_gives_the_rows_of_a_cache_off_run(tmp_path, midi_config):
    files = {f"{i}.mid": generate_midi(i, notes_per_track=40) for i in range(10)}
    files.update({"missing.mid": None, "text.mid": b"not MIDI", "big.mid": GOOD + b"\0" * 500})
    records = records_for(tmp_path, files)
    records.append(Record(len(records), "nul", "a\0b.mid", str(tmp_path / "a\0b.mid"), "c"))
    midi_config.max_midi_bytes = len(GOOD) + 100

    def run(use_cache: bool) -> pa.Table:
        config = dataclasses.replace(midi_config, use_cache=use_cache, workers=2)
        with MidiStage(config) as stage:
            batches = [records[i : i + 4] for i in range(0, len(records), 4)]
            parts = []
            for i, batch in enumerate(batches):  # as the runner does: process, prefetch the next
                parts.append(stage.process(batch))
                if i + 1 < len(batches):
                    stage.prefetch(batches[i + 1])
        return pa.concat_tables(parts)

    reference = run(use_cache=False)
    assert run(use_cache=True).equals(reference)  # cold: every file a miss
    assert run(use_cache=True).equals(reference)  # warm: the good files are hits
    assert by_id(reference)["nul"]["error_type"] == "invalid_path"


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_file_that_blocks_on_read_times_out(tmp_path, midi_config, use_cache):
    # A FIFO nobody writes to: open() blocks for ever, as a file on a hung NFS mount does.
    records = records_for(tmp_path, {"a.mid": GOOD, "b.mid": generate_midi(4)})
    os.mkfifo(tmp_path / "fifo.mid")
    records.insert(1, Record(2, "fifo", "fifo.mid", str(tmp_path / "fifo.mid"), "a caption"))
    midi_config.use_cache = use_cache
    midi_config.file_timeout = 1.0
    started = time.monotonic()
    with MidiStage(midi_config) as stage:
        rows = by_id(stage.process(records))
        assert stage.counters()["timeouts"] == 1
    assert time.monotonic() - started < 30
    assert rows["fifo"]["error_type"] == "timeout" and "file_timeout" in rows["fifo"]["error"]
    assert rows["id0"]["status"] == rows["id1"]["status"] == "ok"


def test_warm_up_starts_the_workers_before_the_first_batch(tmp_path):
    from amtprep.config import MidiConfig
    from amtprep.midi import MidiStage

    with MidiStage(MidiConfig(workers=2, cache_dir=tmp_path)) as stage:
        stage.warm_up()
        pids = stage._pool.worker_pids()
        assert len(pids) == 2
        stage.warm_up()  # idempotent
        assert stage._pool.worker_pids() == pids
        assert stage.process([]).num_rows == 0
