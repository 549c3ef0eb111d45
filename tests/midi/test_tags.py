"""MidiCaps-compatible tags (``--tags midicaps``) on MIDI files built in code.

Each tag is checked against its expected value and, where music21 is installed, against MidiCaps'
own method (``bench/midicaps_reference.py``: music21 + mido per file), for both backends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mido
import pyarrow as pa
import pytest

from amtprep.cli import main
from amtprep.midi.extract import FileResult, extract_bytes
from amtprep.midi.schema import result_table
from amtprep.tags import aarden_essen_keys, midicaps_columns, tag_names
from tests.helpers import REPO, read_final, run_args
from tests.midi.conftest import meta, midi_bytes, note

sys.path.insert(0, str(REPO / "bench"))


def tags_of(data: bytes, backend: str = "auto") -> dict:
    parser, features = extract_bytes(data, backend)
    rows = result_table([FileResult(sha256="", parser=parser, features=features)])
    return {name: column[0].as_py() for name, column in midicaps_columns(rows).items()}


def melody(pitches, beats, program=0, channel=0, tpb=480) -> list:
    events = [mido.Message("program_change", channel=channel, program=program)]
    for pitch, length in zip(pitches, beats, strict=True):
        off = note(pitch, 0, int(length * tpb), channel, on=False)
        events += [note(pitch, 80, 0, channel), off]
    return events


BEATS = [2, 1, 1, 2, 1, 1, 2, 1, 1, 1, 3]
C_MAJOR = [60, 64, 67, 72, 67, 64, 60, 65, 62, 59, 60]
A_MINOR = [57, 60, 64, 69, 64, 60, 57, 62, 59, 56, 57]
BB_MAJOR = [58, 62, 65, 70, 65, 62, 58, 63, 60, 57, 58]


def drums(program: int | None, hits: int = 4) -> list:
    events = [] if program is None else [mido.Message("program_change", channel=9, program=program)]
    for _ in range(hits):
        events += [note(36, 100, 0, 9), note(36, 0, 240, 9, on=False)]
    return events


CASES = {
    "two time signatures at tick 0": midi_bytes(
        [
            meta("time_signature", numerator=3, denominator=4),
            meta("time_signature", numerator=6, denominator=8),
        ],
        melody(C_MAJOR, BEATS),
    ),
    "no tempo event": midi_bytes(melody(A_MINOR, BEATS)),
    "several tempos": midi_bytes(
        [meta("set_tempo", tempo=400_000), meta("set_tempo", tempo=600_000)],
        [meta("set_tempo", tempo=300_000), *melody(BB_MAJOR, BEATS)],
    ),
    "drums under program 115": midi_bytes(melody(C_MAJOR, BEATS, program=33), drums(115)),
    "plain drum track": midi_bytes(melody(C_MAJOR, BEATS, program=33), drums(None, hits=40)),
    "time signature later only": midi_bytes(
        [meta("time_signature", delta=960, numerator=3, denominator=4)], melody(C_MAJOR, BEATS)
    ),
}


def test_two_time_signatures_at_tick_0_give_the_last_one():
    assert tags_of(CASES["two time signatures at tick 0"])["time_signature"] == "6/8"


def test_no_time_signature_at_the_start_reads_4_4_as_music21_does():
    assert tags_of(CASES["time signature later only"])["time_signature"] == "4/4"
    assert tags_of(CASES["no tempo event"])["time_signature"] == "4/4"


def test_no_tempo_event_gives_the_midi_default_and_the_first_tempo_wins():
    assert tags_of(CASES["no tempo event"])["tempo"] == 120
    several = tags_of(CASES["several tempos"])
    assert several["tempo"] == 150  # 400,000 µs, the first in merged order (not the last at 0)
    assert several["tempo_word"] == "Vivace"  # 140 < bpm <= 160


def test_drums_on_channel_10_unless_program_112_to_119():
    assert tags_of(CASES["drums under program 115"])["instrument_summary"] == [
        "Electric Bass",
        "Woodblock",
    ]
    plain = tags_of(CASES["plain drum track"])
    # MidiCaps' instrument time sums the last note end of each pitch: the bass's seven pitches
    # outweigh one drum pitch played ten times as long
    assert plain["instrument_summary"] == ["Electric Bass", "Drums"]
    assert plain["instrument_numbers_sorted"] == [33, 128]


@pytest.mark.parametrize(
    ("pitches", "expected"),
    [(C_MAJOR, "C major"), (A_MINOR, "A minor"), (BB_MAJOR, "Bb major")],
)
def test_key_on_simple_melodies(pitches, expected):
    assert tags_of(midi_bytes(melody(pitches, BEATS)))["key"] == expected


def test_key_names_follow_music21_spelling_and_ties():
    tonic_only = [[0.0] * 12 for _ in range(2)]
    tonic_only[0][10] = 1.0  # a lone B-flat
    tonic_only[1][8] = 1.0  # a lone G#/Ab
    names = aarden_essen_keys(tonic_only)
    assert all(" " in n and "-" not in n for n in names)
    flat = aarden_essen_keys([[1.0] * 12])  # no variance: every key scores 0, music21 picks B minor
    assert flat == ["B minor"]


def test_instrument_summary_ranks_by_time_and_drops_duplicate_names():
    data = midi_bytes(
        melody([60] * 4, [1] * 4, program=0, channel=0),  # Piano, short
        melody([40, 41, 43, 45, 47, 48], [4] * 6, program=33, channel=1),  # Electric Bass, long
        melody([72, 74, 76], [2] * 3, program=1, channel=2),  # also "Piano"
    )
    tags = tags_of(data)
    assert tags["instrument_numbers_sorted"] == [33, 1, 0]
    assert tags["instrument_summary"] == ["Electric Bass", "Piano"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_mido_and_symusic_give_the_same_tags(name):
    assert tags_of(CASES[name], "mido") == tags_of(CASES[name], "symusic")


def test_tags_agree_with_midicaps_own_method_on_a_handful_of_files():
    pytest.importorskip("music21")
    from tags_agreement import compare

    samples = sorted((REPO / "data" / "sample" / "midi").glob("*.mid"))[:6]
    files = [("built", data) for data in CASES.values()]
    files += [("sample", p.read_bytes()) for p in samples]
    result = compare(files)
    for tag in ("tempo", "duration", "time_signature"):
        assert result["tags"][tag]["all"]["agreement_pct"] == 100.0, result["tags"][tag]
    assert result["tags"]["key"]["all"]["agreement_pct"] >= 80.0, result["tags"]["key"]


def test_a_tag_named_like_an_input_column_is_prefixed():
    names = tag_names(("midicaps",), {"key", "tempo", "genre"})
    assert names["key"] == "amtprep_key" and names["tempo"] == "amtprep_tempo"
    assert names["duration"] == "duration"
    assert tag_names((), {"key"}) == {}


def test_end_to_end_tags_in_final_parquet_and_toggling_only_republishes(
    tmp_path: Path, tiny_bert: Path
):
    midi_dir = tmp_path / "in" / "midi"
    midi_dir.mkdir(parents=True)
    rows = []
    for i, (name, data) in enumerate(sorted(CASES.items())):
        (midi_dir / f"{i}.mid").write_bytes(data)
        rows.append({"location": f"midi/{i}.mid", "caption": name, "key": "MidiCaps' own key"})
    corpus = tmp_path / "in" / "train.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    plain, _ = read_final(out)
    assert "tempo_word" not in plain.column_names
    assert plain.column("key").to_pylist() == ["MidiCaps' own key"] * len(rows)

    midi_shards_before = sorted(p.stat().st_mtime_ns for p in (out / "midi").glob("*.parquet"))
    assert main(run_args(corpus, out, tiny_bert, "--tags", "midicaps")) == 0
    final, _ = read_final(out)
    assert sorted(p.stat().st_mtime_ns for p in (out / "midi").glob("*.parquet")) == (
        midi_shards_before
    )  # the MIDI stage did not run again: only the merge
    by_caption = {r["caption"]: r for r in final.to_pylist()}
    assert by_caption["two time signatures at tick 0"]["time_signature"] == "6/8"
    assert by_caption["no tempo event"]["tempo"] == 120
    assert by_caption["no tempo event"]["amtprep_key"] == "A minor"
    assert by_caption["no tempo event"]["key"] == "MidiCaps' own key"  # the input's, kept
    assert by_caption["drums under program 115"]["instrument_summary"] == [
        "Electric Bass",
        "Woodblock",
    ]
    release = (out / "final").resolve()
    assert main(run_args(corpus, out, tiny_bert, "--tags", "midicaps")) == 0
    assert (out / "final").resolve() == release  # same settings: the release is kept
    assert main(run_args(corpus, out, tiny_bert)) == 0
    assert read_final(out)[0].column_names == plain.column_names  # off again: republished
    schema = final.schema
    assert schema.field("tempo").type == pa.int64()
    assert schema.field("duration").type == pa.int64()
    assert schema.field("instrument_summary").type == pa.list_(pa.string())
