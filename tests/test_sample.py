"""The sample corpus generator: deterministic, genuine MIDI, captions that agree with the files."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from pathlib import Path

import mido
import pyarrow.parquet as pq
import pytest

from amtprep.sample import generate, make_midi_bytes

N = 20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    paired = generate(tmp_path_factory.mktemp("corpus"), N, seed=0)
    rows = [json.loads(line) for line in paired.read_text(encoding="utf-8").splitlines()]
    return paired, rows


def _midi(paired: Path, row: dict) -> mido.MidiFile:
    return mido.MidiFile(paired.parent / row["location"])


def _same_pitch_overlaps(midi: mido.MidiFile) -> int:
    """Note-ons that arrive while the same (track, channel, pitch) is still sounding."""
    overlaps = 0
    for track in midi.tracks:
        sounding: dict[tuple[int, int], int] = defaultdict(int)
        for msg in track:
            if msg.type == "note_on" and msg.velocity > 0:
                overlaps += sounding[(msg.channel, msg.note)] > 0
                sounding[(msg.channel, msg.note)] += 1
            elif msg.type in ("note_on", "note_off"):
                sounding[(msg.channel, msg.note)] -= 1
    return overlaps


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    for fmt in ("jsonl", "parquet"):
        a = generate(tmp_path / "a", 6, seed=3, fmt=fmt)
        b = generate(tmp_path / "b", 6, seed=3, fmt=fmt)
        assert a.read_bytes() == b.read_bytes()
    for name in sorted((tmp_path / "a" / "midi").iterdir()):
        assert name.read_bytes() == (tmp_path / "b" / "midi" / name.name).read_bytes()
    other = generate(tmp_path / "c", 6, seed=4)
    assert other.read_bytes() != (tmp_path / "a" / "train.jsonl").read_bytes()


def test_rows_have_midicaps_columns_and_relative_locations(corpus) -> None:
    paired, rows = corpus
    assert paired.name == "train.jsonl"
    assert len(rows) == N
    for i, row in enumerate(rows):
        assert row["location"] == f"midi/{i:04d}.mid"
        assert (paired.parent / row["location"]).is_file()
        assert set(row) == {"location", "caption", "genre", "mood", "key", "time_signature",
                            "tempo", "duration", "test_set"}  # fmt: skip
        assert row["genre"] and row["mood"] and isinstance(row["test_set"], bool)
        assert row["key"].split()[1] in ("major", "minor")
    assert any(row["test_set"] for row in rows) and not all(row["test_set"] for row in rows)


def test_files_parse_and_cover_real_world_quirks(corpus) -> None:
    paired, rows = corpus
    midis = [_midi(paired, row) for row in rows]
    msgs = [[m for t in midi.tracks for m in t] for midi in midis]
    assert {midi.ticks_per_beat for midi in midis} >= {96, 480, 960, 10080}
    assert {midi.type for midi in midis} == {0, 1}
    assert any(any(m.type == "note_on" and m.channel == 9 for m in ms) for ms in msgs)
    assert any(sum(m.type == "set_tempo" for m in ms) > 1 for ms in msgs)
    assert any(sum(m.type == "time_signature" for m in ms) > 1 for ms in msgs)
    assert any(any(m.type == "key_signature" for m in ms) for ms in msgs)
    assert any(any(m.type == "note_on" and m.velocity == 0 for m in ms) for ms in msgs)
    assert any(any(m.type == "note_off" for m in ms) for ms in msgs)
    assert any(_same_pitch_overlaps(midi) > 0 for midi in midis)
    for ms in msgs:  # several programs per file
        assert (
            len({m.program for m in ms if m.type == "program_change"}) >= 2
            or len({m.channel for m in ms if m.type == "program_change"}) >= 3
        )


def test_files_are_small(corpus) -> None:
    paired, rows = corpus
    sizes = [(paired.parent / row["location"]).stat().st_size for row in rows]
    assert max(sizes) < 40_000


def test_captions_agree_with_the_files(corpus) -> None:
    paired, rows = corpus
    for row in rows:
        midi = _midi(paired, row)
        caption = row["caption"]
        assert 20 <= len(caption.split()) <= 60, caption
        assert row["key"] in caption and row["time_signature"] in caption
        assert f"{row['tempo']} b" in caption  # "120 bpm" or "120 beats per minute"
        assert row["genre"][0] in caption
        first_tempo = next(m.tempo for t in midi.tracks for m in t if m.type == "set_tempo")
        assert round(mido.tempo2bpm(first_tempo)) == row["tempo"]
        first_ts = next(m for t in midi.tracks for m in t if m.type == "time_signature")
        assert f"{first_ts.numerator}/{first_ts.denominator}" == row["time_signature"]
        assert row["duration"] == round(midi.length)
        has_drums = any(m.type == "note_on" and m.channel == 9 for t in midi.tracks for m in t)
        assert ("drums" in caption) == has_drums


def test_captions_are_varied(corpus) -> None:
    _, rows = corpus
    captions = [row["caption"] for row in rows]
    assert len(set(captions)) == len(captions)
    assert len({c.split()[0] for c in captions}) >= 2  # more than one opening template
    assert len({row["genre"][0] for row in rows}) >= 4
    assert len({row["key"] for row in rows}) >= 6


def test_other_formats_hold_the_same_rows(tmp_path: Path, corpus) -> None:
    _, rows = corpus
    as_json = json.loads(generate(tmp_path / "j", N, fmt="json").read_text(encoding="utf-8"))
    assert as_json == rows
    assert pq.read_table(generate(tmp_path / "p", N, fmt="parquet")).to_pylist() == rows
    with generate(tmp_path / "c", N, fmt="csv").open(newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    assert first["caption"] == rows[0]["caption"]
    assert json.loads(first["genre"]) == rows[0]["genre"]


def test_make_midi_bytes_accepts_overrides() -> None:
    data = make_midi_bytes(random.Random(1), ticks_per_beat=10080, midi_type=0)
    midi = mido.MidiFile(file=io.BytesIO(data))
    assert (midi.ticks_per_beat, midi.type, len(midi.tracks)) == (10080, 0, 1)
    assert data == make_midi_bytes(random.Random(1), ticks_per_beat=10080, midi_type=0)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        generate(tmp_path, 1, fmt="xml")
