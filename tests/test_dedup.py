"""Duplicates and leakage: notes_hash on hand-built files (both backends), groups at merge,
--dedup mark vs drop, counts in statistics / report / card, leakage across test_set, and the
same result across batch sizes, a resume and a publish killed half-way."""

from __future__ import annotations

import hashlib
import io
import json
import signal
from pathlib import Path

import mido
import pyarrow.parquet as pq
import pytest

from amtprep.cli import main
from amtprep.midi import extract_bytes
from tests.crashkit import invariant
from tests.helpers import assert_same_output, read_final, run_args, run_cli
from tests.midi.midigen import generate_midi

BACKENDS = ("mido", "symusic")
# (start in eighths, length in eighths, pitch, velocity) per part
PARTS = {
    "piano": (0, [(0, 2, 60, 80), (2, 2, 64, 70), (4, 4, 67, 90), (4, 4, 72, 60)]),
    "bass": (33, [(0, 4, 36, 100), (4, 4, 43, 100)]),
    "drums": (None, [(0, 1, 36, 120), (2, 1, 38, 110), (4, 1, 36, 120), (6, 1, 38, 110)]),
}


def song(
    *,
    tpb: int = 480,
    order=("piano", "bass", "drums"),
    channels=None,
    names: bool = True,
    extra_meta: bool = False,
    bump_pitch: bool = False,
) -> bytes:
    """The same three parts, written in different ways (``bump_pitch``: one note differs)."""
    channels = channels or {"piano": 0, "bass": 1}
    eighth = tpb // 2
    conductor = [mido.MetaMessage("set_tempo", tempo=500_000, time=0)]
    conductor.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    if extra_meta:  # meta events that change no note: a repeated tempo, texts, a key
        conductor.append(mido.MetaMessage("key_signature", key="C", time=0))
        conductor.append(mido.MetaMessage("marker", text="verse", time=eighth))
        conductor.append(mido.MetaMessage("set_tempo", tempo=500_000, time=eighth))
    midi = mido.MidiFile(type=1, ticks_per_beat=tpb)
    midi.tracks.append(mido.MidiTrack(conductor))
    for part in order:
        program, notes = PARTS[part]
        channel = 9 if program is None else channels[part]
        events = []
        if names:
            events.append((0, 0, mido.MetaMessage("track_name", name=f"{part} track")))
        if extra_meta:
            events.append((0, 0, mido.MetaMessage("text", text="made by hand")))
            events.append(
                (0, 1, mido.Message("control_change", control=7, value=100, channel=channel))
            )
        if program is not None:
            events.append((0, 2, mido.Message("program_change", program=program, channel=channel)))
        for i, (start, length, pitch, velocity) in enumerate(notes):
            if bump_pitch and part == "piano" and i == 1:
                pitch += 1
            on = mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)
            off = mido.Message("note_off", note=pitch, velocity=0, channel=channel)
            events.append((start * eighth, 4, on))
            events.append(((start + length) * eighth, 3, off))
        events.sort(key=lambda e: (e[0], e[1]))
        track, now = mido.MidiTrack(), 0
        for tick, _, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


MUSICAL_TWIN = dict(
    tpb=960, order=("drums", "bass", "piano"), channels={"piano": 5, "bass": 2}, names=False,
    extra_meta=True,
)  # fmt: skip


def no_notes() -> bytes:
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=400_000)]))
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def notes_hash(data: bytes, backend: str) -> str | None:
    return extract_bytes(data, backend)[1].notes_hash


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_notes_written_differently_hash_alike(backend):
    a, b = song(), song(**MUSICAL_TWIN)
    assert a != b
    assert notes_hash(a, backend) is not None
    assert notes_hash(a, backend) == notes_hash(b, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_near_but_different_file_hashes_differently(backend):
    assert notes_hash(song(), backend) != notes_hash(song(bump_pitch=True), backend)
    faster = song().replace(b"\x07\xa1\x20", b"\x07\xb1\x20")  # tempo 500000 -> 503840 us
    assert faster != song()
    assert notes_hash(faster, backend) != notes_hash(song(), backend)


def test_files_without_notes_have_no_notes_hash():
    for backend in BACKENDS:
        assert notes_hash(no_notes(), backend) is None


@pytest.mark.parametrize("seed", range(6))
def test_notes_hash_is_the_same_for_both_backends(seed):
    data = generate_midi(seed)
    assert notes_hash(data, "mido") == notes_hash(data, "symusic") is not None


# -- the merge ---------------------------------------------------------------------------------

# name, payload, test_set
FILES = [
    ("a.mid", song(), False),  # 0: first of group 0
    ("a_copy.mid", song(), False),  # 1: exact duplicate of 0
    ("b.mid", song(**MUSICAL_TWIN), True),  # 2: musical duplicate of 0, across the split
    ("c.mid", generate_midi(7, n_tracks=2, notes_per_track=30), False),  # 3: first of group 3
    ("d.mid", song(bump_pitch=True), False),  # 4: near 0, unique
    ("c_copy.mid", generate_midi(7, n_tracks=2, notes_per_track=30), False),  # 5: exact of 3
    ("missing.mid", None, False),  # 6: a MIDI failure
    ("e.mid", no_notes(), True),  # 7: no notes: grouped by bytes
    ("e_copy.mid", no_notes(), True),  # 8: exact duplicate of 7
]
EXPECTED_OF = {1: 0, 2: 0, 5: 3, 8: 7}
EXPECTED_KIND = {1: "exact", 2: "musical", 5: "exact", 8: "exact"}


@pytest.fixture
def dup_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "dup_corpus"
    (root / "midi").mkdir(parents=True)
    with (root / "train.jsonl").open("w") as fh:
        for name, payload, test_set in FILES:
            if payload is not None:
                (root / "midi" / name).write_bytes(payload)
            row = {
                "location": f"midi/{name}",
                "caption": f"caption of {name}",
                "test_set": test_set,
            }
            fh.write(json.dumps(row) + "\n")
    return root / "train.jsonl"


def _published(out: Path):
    final, failures = read_final(out)
    stats = json.loads((out / "statistics.json").read_text())
    return final, failures, stats


def test_mark_keeps_every_row_and_names_its_group(dup_corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    assert main(run_args(dup_corpus, out, tiny_bert)) == 0
    final, failures, stats = _published(out)
    assert failures.column("idx").to_pylist() == [6]
    rows = {r["idx"]: r for r in final.to_pylist()}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5, 7, 8]
    for i, r in rows.items():
        assert r["duplicate_of"] == EXPECTED_OF.get(i), i
        assert r["duplicate_kind"] == EXPECTED_KIND.get(i), i
    assert rows[0]["content_sha256"] == hashlib.sha256(song()).hexdigest()
    assert rows[0]["notes_hash"] == rows[2]["notes_hash"] != rows[4]["notes_hash"]
    assert rows[7]["notes_hash"] is None
    assert stats["duplicates"] == {
        "mode": "mark",
        "groups": 3,
        "exact_duplicates": 3,
        "musical_duplicates": 1,
        "rows_in_groups": 7,
        "dropped": 0,
        "split_column": "test_set",
        "leakage_groups": 1,
        "leakage_rows": 3,
    }
    leak = pq.read_table(out / "leakage.parquet").to_pylist()
    assert [(r["group"], r["idx"], r["test_set"], r["duplicate_kind"]) for r in leak] == [
        (0, 0, "false", None),
        (0, 1, "false", "exact"),
        (0, 2, "true", "musical"),
    ]
    assert not (out / "duplicates.parquet").exists()  # mark mode: the link dangles
    card = (out / "final" / "README.md").read_text()
    assert "`duplicate_of`" in card and "exact_duplicates" in card and "leakage_groups" in card
    report = (out / "report.html").read_text()  # written by the default install
    assert "duplicates.exact_duplicates" in report and "duplicates.leakage_groups" in report
    assert "Duplicates and leakage" in report and "midi/b.mid" in report
    assert invariant(out) is None


def test_drop_moves_later_rows_to_duplicates_and_republishes(dup_corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    assert main(run_args(dup_corpus, out, tiny_bert)) == 0
    marked, _, _ = _published(out)
    assert main(run_args(dup_corpus, out, tiny_bert, "--dedup", "drop")) == 0
    final, failures, stats = _published(out)
    assert final.column("idx").to_pylist() == [0, 3, 4, 7]
    assert final.column("duplicate_of").null_count == 4
    dups = pq.read_table(out / "duplicates.parquet").to_pylist()
    assert {r["idx"]: (r["duplicate_of"], r["duplicate_kind"]) for r in dups} == {
        i: (EXPECTED_OF[i], EXPECTED_KIND[i]) for i in EXPECTED_OF
    }
    assert dups[0]["midi_path"] == "midi/a_copy.mid"
    assert stats["duplicates"]["dropped"] == 4 and stats["final_rows"] == 4
    assert stats["duplicates"]["leakage_groups"] == 1  # leakage is listed in drop mode too
    assert pq.read_table(out / "leakage.parquet").num_rows == 3
    assert invariant(out) is None  # every record in exactly one of data/failures/duplicates
    kept = marked.filter(marked.column("duplicate_of").is_null())
    assert (
        kept.drop_columns(["embedding"]).to_pylist()
        == final.drop_columns(["embedding"]).to_pylist()
    )
    # unchanged settings: nothing to do; back to mark: republished
    assert main(run_args(dup_corpus, out, tiny_bert, "--dedup", "drop")) == 0
    assert main(run_args(dup_corpus, out, tiny_bert)) == 0
    assert read_final(out)[0].num_rows == 8 and invariant(out) is None


def test_same_groups_across_batch_sizes_and_a_resume(dup_corpus, tmp_path, tiny_bert):
    ref, other = tmp_path / "ref", tmp_path / "other"
    assert main(run_args(dup_corpus, ref, tiny_bert, "--dedup", "drop")) == 0
    small = ["--dedup", "drop", "--batch_size", "2"]
    assert main(run_args(dup_corpus, other, tiny_bert, *small, "--stages", "midi")) == 0
    assert main(run_args(dup_corpus, other, tiny_bert, *small)[:-2] + ["--batch_size", "3"]) == 0
    assert_same_output(ref, other)
    for name in ("duplicates.parquet", "leakage.parquet"):
        assert pq.read_table(ref / name).equals(pq.read_table(other / name)), name
    a, b = (json.loads((d / "statistics.json").read_text())["duplicates"] for d in (ref, other))
    assert a == b


@pytest.mark.parametrize("point", ["final.written:1", "final.linked:1"])
def test_a_drop_publish_killed_half_way_shows_one_whole_release(
    point, dup_corpus, tmp_path, tiny_bert
):
    out = tmp_path / "out"
    assert main(run_args(dup_corpus, out, tiny_bert)) == 0  # a mark release is published
    args = run_args(dup_corpus, out, tiny_bert, "--dedup", "drop")
    killed = run_cli(*args, env={"AMTPREP_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert invariant(out) is None  # the old release, whole
    assert json.loads((out / "statistics.json").read_text())["duplicates"]["mode"] == "mark"
    assert run_cli(*args, "--mode", "continue").returncode == 0
    assert invariant(out) is None
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["duplicates"]["mode"] == "drop" and stats["final_rows"] == 4
