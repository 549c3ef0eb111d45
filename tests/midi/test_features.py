"""Feature values on hand-built files: timing, pairing, signatures, keys, both backends."""

from __future__ import annotations

import dataclasses
import io

import mido
import numpy as np
import pytest

from amtprep.midi import extract_bytes
from amtprep.midi.errors import CorruptMidiError
from amtprep.midi.features import _note_order, _note_seconds
from amtprep.midi.key import estimate_key, key_name, mido_key_name
from amtprep.midi.notes import MetaEvents, NoteTable, ParsedMidi
from amtprep.midi.parse_mido import parse_mido
from amtprep.midi.tempo import TempoMap
from tests.midi.conftest import meta, midi_bytes, note, raw_midi
from tests.midi.midigen import generate_midi

BACKENDS = ("mido", "symusic")


def features(data: bytes, backend: str = "mido"):
    return extract_bytes(data, backend)[1]


def assert_same_features(a, b) -> None:
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert np.array_equal(x, y), field.name
        else:
            assert x == y, field.name


@pytest.mark.parametrize("backend", BACKENDS)
def test_tempo_changes_time_notes_and_duration_like_mido(backend):
    conductor = [
        meta("set_tempo", tempo=500_000),  # 120 bpm: 480 ticks = 0.5 s
        meta("set_tempo", delta=960, tempo=250_000),  # 240 bpm from 1.0 s
        meta("set_tempo", delta=480, tempo=1_000_000),  # 60 bpm from 1.25 s
    ]
    voice = [note(60), note(60, 0, 1440), note(62), note(62, 0, 480)]
    data = midi_bytes(conductor, voice + [meta("end_of_track", delta=480)])
    f = features(data, backend)
    assert f.note_start_s.tolist() == [0.0, 1.25]
    assert f.note_end_s.tolist() == [1.25, 2.25]
    assert f.duration_s == pytest.approx(3.25, rel=1e-12)
    assert f.duration_s == pytest.approx(mido.MidiFile(file=io.BytesIO(data)).length, rel=1e-9)
    assert (f.tempo_bpm, f.n_tempo_changes) == (120.0, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_signature_three_four_then_six_eight(backend):
    conductor = [
        meta("time_signature", numerator=3, denominator=4),
        meta("time_signature", delta=1440, numerator=6, denominator=8),
        meta("key_signature", key="Bb"),
    ]
    f = features(midi_bytes(conductor, [note(60), note(60, 0, 100)]), backend)
    assert (f.time_signature, f.n_time_signature_changes) == ("3/4", 1)
    assert f.key_signature == "Bb major"


@pytest.mark.parametrize("backend", BACKENDS)
def test_drums_on_channel_ten_are_program_128(backend):
    voice = [
        mido.Message("program_change", program=33, channel=1),
        note(40, channel=1),
        note(36, channel=9),
        note(36, 0, 240, channel=9),
        note(40, 0, 240, channel=1),
    ]
    f = features(midi_bytes(voice), backend)
    assert f.programs.tolist() == [33, 128]
    assert f.has_drums
    assert f.note_program.tolist() == [128, 33]  # ordered by start then pitch: 36 before 40
    assert f.top_instruments.tolist() == [33, 128]  # bass sounds longer than the kick
    assert (f.pitch_min, f.pitch_max) == (40, 40)  # drum "pitches" are not pitches


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapping_same_pitch_pairs_first_in_first_out(backend):
    # on@0, on@100, off@200, off(vel-0 note_on)@300 -> (0, 200) and (100, 300)
    voice = [note(60, 100), note(60, 90, 100), note(60, 0, 100, on=False), note(60, 0, 100)]
    f = features(midi_bytes(voice), backend)
    ticks = np.round(np.c_[f.note_start_s, f.note_end_s] / (0.5 / 480)).astype(int)
    assert ticks.tolist() == [[0, 200], [100, 300]]
    assert f.note_velocity.tolist() == [100, 90]
    assert f.polyphony_max == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_notes_under_a_zero_tempo_order_by_seconds_not_ticks(backend):
    # Tempo 0 (0 µs per quarter) stops the clock: 70 at tick 0 and 60 at tick 10 both start at
    # 0 s, so the documented order (start_s, pitch, ...) puts 60 first; sorting by ticks would not.
    conductor = [meta("set_tempo", tempo=0), meta("set_tempo", delta=20, tempo=500_000)]
    voice = [note(70), note(60, delta=10), note(70, 0, 10), note(60, 0, 480)]
    f = features(midi_bytes(conductor, voice), backend)
    assert f.note_pitch.tolist() == [60, 70]
    assert f.note_start_s.tolist() == [0.0, 0.0]
    assert f.note_end_s.tolist() == [0.5, 0.0]  # 480 ticks at 120 bpm after the clock restarts
    assert f.polyphony_max == 1  # 70 ends at 0 s, as 60 starts (ends count first)


@pytest.mark.parametrize("backend", BACKENDS)
def test_note_order_is_start_pitch_end_program_velocity(backend):
    # Same start: pitch decides; same start and pitch: end, then program, then velocity.
    piano = [note(64, 90), note(60, 80), note(60, 70)]
    piano += [note(60, 0, 240), note(60, 0, 0), note(64, 0, 240)]
    organ = [mido.Message("program_change", program=19, channel=1), note(60, 50, channel=1)]
    organ += [note(60, 0, 480, channel=1)]
    f = features(midi_bytes(piano, organ), backend)
    assert f.note_pitch.tolist() == [60, 60, 60, 64]
    assert f.note_end_s.tolist() == [0.25, 0.25, 0.5, 0.5]
    assert f.note_velocity.tolist() == [70, 80, 50, 90]
    assert f.note_program.tolist() == [0, 0, 19, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_unclosed_note_is_dropped_and_velocity_zero_closes(backend):
    voice = [note(60), note(64, delta=10), note(60, 0, 10), note(67)]  # 64 and 67 never end
    f = features(midi_bytes(voice), backend)
    assert f.n_notes == 1 and f.note_pitch.tolist() == [60]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tracks_sharing_a_channel_pair_within_their_own_track(backend):
    # music21 style: two voices on channel 0 with the same pitch. A merged-stream loop would end
    # voice A's note at voice B's note-off (tick 100); per-track pairing keeps A until 960.
    voice_a = [note(60), note(60, 0, 960)]
    voice_b = [note(60, delta=50), note(60, 0, 50)]
    f = features(midi_bytes(voice_a, voice_b), backend)
    assert np.round(f.note_end_s * 960).astype(int).tolist() == [960, 100]


@pytest.mark.parametrize("tpb", [1, 10080, 32767])
def test_unusual_ticks_per_beat_match_mido_length(tpb):
    data = midi_bytes([note(60), note(60, 0, 3 * tpb), meta("end_of_track", delta=tpb)], tpb=tpb)
    length = mido.MidiFile(file=io.BytesIO(data)).length
    for backend in BACKENDS:
        f = features(data, backend)
        assert f.ticks_per_beat == tpb
        assert f.duration_s == pytest.approx(length, rel=1e-9) == 2.0
        assert f.note_end_s.tolist() == [1.5]


def test_smpte_division_uses_real_time_and_falls_back_from_symusic():
    # Division 0xE728: -25 fps, 40 ticks per frame -> 1000 ticks per second.
    data = raw_midi(b"\x00\x90\x3c\x40\x87\x68\x80\x3c\x00\x00\xff\x2f\x00", division=0xE728)
    for backend in ("mido", "symusic", "auto"):
        parser, f = extract_bytes(data, backend)
        assert parser == "mido"
        assert f.ticks_per_beat is None
        assert f.note_end_s.tolist() == [1.0]  # 1000 ticks (0x87 0x68)
        assert f.duration_s == 1.0


def test_zero_ticks_per_beat_is_corrupt():
    with pytest.raises(CorruptMidiError, match="ticks_per_beat is 0"):
        extract_bytes(
            raw_midi(b"\x00\x90\x3c\x40\x10\x80\x3c\x00\x00\xff\x2f\x00", division=0), "mido"
        )


def test_type2_tracks_keep_their_own_tempo():
    fast = [meta("set_tempo", tempo=250_000), note(60), note(60, 0, 480)]
    slow = [meta("set_tempo", tempo=1_000_000), note(62), note(62, 0, 480)]
    parser, f = extract_bytes(midi_bytes(fast, slow, midi_type=2), "auto")
    assert parser == "mido"
    assert f.note_end_s.tolist() == [0.25, 1.0]
    assert f.duration_s == 1.0


def test_key_signature_names_agree_with_mido_for_all_30_keys():
    for (sharps, minor), mido_name in mido.midifiles.meta._key_signature_decode.items():
        assert key_name(sharps, minor) == mido_key_name(mido_name)


def test_estimate_key_finds_c_major_and_a_minor():
    c_major = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], float)
    c_major[[0, 4, 7]] += 2  # C E G stressed
    assert estimate_key(c_major)[0] == "C major"
    a_minor = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], float)
    a_minor[[9, 0, 4]] += 2  # A C E stressed
    assert estimate_key(a_minor)[0] == "A minor"
    assert estimate_key(np.zeros(12)) == (None, None)


def _independent_notes(data: bytes) -> list[tuple[float, float, int]]:
    """(start_s, end_s, pitch) from a separately written walk: FIFO lists per track and
    (channel, pitch); seconds read off mido's own merged playback (``MidiFile.__iter__``)."""
    midi = mido.MidiFile(file=io.BytesIO(data))
    seconds_at, tick, now = {}, 0, 0.0
    for merged, played in zip(midi.merged_track, midi, strict=True):
        tick, now = tick + merged.time, now + played.time
        seconds_at[tick] = now
    out = []
    for track in midi.tracks:
        tick, open_notes = 0, {}
        for msg in track:
            tick += msg.time
            if msg.type in ("note_on", "note_off"):
                key = (msg.channel, msg.note)
                if msg.type == "note_on" and msg.velocity > 0:
                    open_notes.setdefault(key, []).append(tick)
                elif open_notes.get(key):
                    start = open_notes[key].pop(0)
                    out.append((seconds_at[start], seconds_at[tick], msg.note))
    return sorted(out)


@pytest.mark.parametrize("seed", range(24))
def test_generated_files_match_mido_and_both_backends_agree(seed):
    kwargs = {"tpb": (1, 10080, 32767)[seed % 3]} if seed % 4 == 0 else {}
    data = generate_midi(seed, midi_type=0 if seed % 5 == 0 else 1, **kwargs)
    f_mido, f_sym = features(data, "mido"), features(data, "symusic")
    assert_same_features(f_mido, f_sym)
    assert f_mido.duration_s == pytest.approx(mido.MidiFile(file=io.BytesIO(data)).length, rel=1e-9)
    expected = np.array(_independent_notes(data))
    ours = np.array(
        sorted(zip(f_mido.note_start_s, f_mido.note_end_s, f_mido.note_pitch, strict=True))
    )
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


def _float_order(parsed, start, end):
    notes = parsed.notes
    return np.lexsort((notes.velocity, notes.program, end, notes.pitch, start))


@pytest.mark.parametrize("seed", range(12))
def test_packed_tick_order_is_the_five_key_order(seed):
    tpb = (96, 480, 10080, 32767)[seed % 4]
    data = generate_midi(seed, tpb=tpb, n_tracks=3, notes_per_track=200)
    parsed = parse_mido(data)
    tempo_map = TempoMap.build(parsed.division, parsed.meta.tempo_tick, parsed.meta.tempo_value)
    start, end, duration = _note_seconds(parsed, tempo_map)
    assert tempo_map.orders_like_ticks(duration)
    assert np.array_equal(
        _note_order(parsed, tempo_map, start, end, duration), _float_order(parsed, start, end)
    )


@pytest.mark.parametrize("wide", [False, True])
def test_packed_tick_order_on_dense_ties(wide):
    # Many notes tie on start and pitch, and on length too, so program and velocity decide.
    # Starts near 2**40 ticks leave no room for the length in one int64 key: two keys are used.
    rng = np.random.default_rng(5)
    n = 2000
    grid, step = (2**40 // 64, 2**20) if wide else (480, 240)
    start = rng.integers(0, 64, n) * grid
    end = start + rng.integers(0, 3, n) * step
    pitch = rng.integers(60, 63, n)
    velocity, program = rng.integers(1, 4, n), rng.choice([0, 5, 128], n)
    notes = NoteTable.from_columns(start, end, pitch, velocity, program, np.zeros(n))
    meta = MetaEvents(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32), [], [])
    parsed = ParsedMidi(1, 1, 480, np.array([end.max()]), notes, meta)
    tempo_map = TempoMap.build(480, meta.tempo_tick, meta.tempo_value)
    start_s, end_s, duration = _note_seconds(parsed, tempo_map)
    bits = int(start.max()).bit_length() + int((end - start).max()).bit_length()
    assert (bits > 41) == wide
    assert tempo_map.orders_like_ticks(duration)
    assert np.array_equal(
        _note_order(parsed, tempo_map, start_s, end_s, duration),
        _float_order(parsed, start_s, end_s),
    )
