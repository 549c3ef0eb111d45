"""Features of one parsed MIDI file: pure functions over ``ParsedMidi``.

Public API: ``MidiFeatures`` (scalars + numpy arrays, compact to pickle across processes and into
the cache) and ``compute_features(parsed) -> MidiFeatures`` (raises ``CorruptMidiError``).

Definitions (documented here once; ``schema`` only names the columns):
- Times: ticks -> seconds once, vectorised (``tempo``). Type 0/1 use the merged tempo map;
  type 2 tracks each use their own track's tempo events (mido cannot time type 2 at all).
  ``duration_s`` is the time of the latest event of any track, end-of-track included: for type
  0/1 exactly what mido's ``MidiFile.length`` computes; for type 2 the longest track.
- ``notes`` are ordered by (start_s, pitch, end_s, program, velocity); ``start_s``/``end_s`` are
  float64 seconds. Drums carry program 128 and ``is_drum``.
- Pitch figures (min/max/mean, ``pitch_class_histogram``, key estimate) use pitched notes only
  (drum "pitches" name instruments). The histogram is weighted by note duration in seconds and
  sums to 1 (plain counts when every note has zero length); null when there are no pitched notes.
- Velocity mean/std (population) and polyphony use all notes. ``polyphony_max`` is the most notes
  sounding at once (ends before starts at equal times); ``polyphony_mean`` is total note time
  divided by the time at least one note sounds.
- ``top_instruments``: up to 5 programs ranked by total note time, ties by lower program.
- Tempo, time and key signatures: events at the same tick collapse to the last one (mido's merged
  order); the first value is reported ("4/4", "A minor"; null when the file has none, tempo then
  120 bpm) and ``n_*_changes`` counts later events that change the value.
- ``notes_hash``: what counts as "the same music" for duplicate detection (docs/dedup.md): a
  blake2b-128 hex digest of the notes as (start, end, pitch, velocity, program) with start and
  end in seconds rounded to the millisecond, drums as program 128, sorted. Track order, track
  names, channels, meta events and the way the tempo map or the division express the same
  timing do not change it; a tempo change that moves a note does. None without notes.
- ``first_tempo_bpm``, ``start_time_signature``, ``pitch_class_quarters`` and
  ``instrument_ranking``: the raw values of MidiCaps' tags, defined in ``tag_features``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from amtprep.midi import tag_features
from amtprep.midi.key import estimate_key
from amtprep.midi.notes import GM_DRUMS, ParsedMidi
from amtprep.midi.tempo import TempoMap

TOP_INSTRUMENTS = 5


@dataclass
class MidiFeatures:
    ticks_per_beat: int | None  # None for SMPTE timing
    midi_type: int
    n_tracks: int
    duration_s: float
    n_notes: int
    programs: np.ndarray  # int16, sorted distinct
    has_drums: bool
    top_instruments: np.ndarray  # int16
    tempo_bpm: float
    n_tempo_changes: int
    time_signature: str | None
    n_time_signature_changes: int
    key_signature: str | None
    estimated_key: str | None
    key_confidence: float | None
    pitch_min: int | None
    pitch_max: int | None
    pitch_mean: float | None
    pitch_class_histogram: np.ndarray | None  # float32[12]
    velocity_mean: float | None
    velocity_std: float | None
    polyphony_mean: float | None
    polyphony_max: int
    notes_per_second: float | None
    first_tempo_bpm: float | None
    start_time_signature: str | None
    pitch_class_quarters: np.ndarray | None  # float64[12]
    instrument_ranking: np.ndarray  # int16
    notes_hash: str | None
    # The note sequence, one entry per note, in the documented order.
    note_pitch: np.ndarray  # int8
    note_velocity: np.ndarray  # uint8
    note_start_s: np.ndarray  # float64
    note_end_s: np.ndarray  # float64
    note_program: np.ndarray  # int16


def _first_and_changes(events: list[tuple]) -> tuple[object, int]:
    """``events`` = [(tick, value)] in merged order -> (first effective value, changes)."""
    if not events:
        return None, 0
    collapsed: list[tuple] = []
    for tick, value in events:
        if collapsed and collapsed[-1][0] == tick:
            collapsed[-1] = (tick, value)
        else:
            collapsed.append((tick, value))
    values = [v for _, v in collapsed]
    return values[0], sum(1 for a, b in zip(values, values[1:], strict=False) if a != b)


def _note_seconds(parsed: ParsedMidi, tempo_map: TempoMap) -> tuple[np.ndarray, np.ndarray, float]:
    notes, meta = parsed.notes, parsed.meta
    if parsed.midi_type != 2:
        end = int(parsed.end_ticks.max())
        duration = float(tempo_map.seconds(np.array([end]))[0])
        return tempo_map.seconds(notes.start_tick), tempo_map.seconds(notes.end_tick), duration
    start = np.zeros(len(notes))
    end = np.zeros(len(notes))
    duration = 0.0
    for track, end_tick in enumerate(parsed.end_ticks.tolist()):
        own = meta.tempo_track == track
        track_map = TempoMap.build(parsed.division, meta.tempo_tick[own], meta.tempo_value[own])
        mine = notes.track == track
        start[mine] = track_map.seconds(notes.start_tick[mine])
        end[mine] = track_map.seconds(notes.end_tick[mine])
        duration = max(duration, float(track_map.seconds(np.array([end_tick]))[0]))
    return start, end, duration


def _note_order(parsed: ParsedMidi, tempo_map: TempoMap, start, end, duration) -> np.ndarray:
    """Indices that sort notes by (start_s, pitch, end_s, program, velocity), stably.

    Where ticks order like seconds (one clock, see ``TempoMap.orders_like_ticks``) the fields
    pack into integer keys of ticks instead of five sort passes: pitch and velocity are < 128,
    program <= 128, and among notes of equal start, ordering by end is ordering by length. One
    int64 key when start and length fit in 41 bits together (nearly every file), else two.
    """
    notes = parsed.notes
    if (
        not len(notes)
        or parsed.midi_type == 2
        or not tempo_map.orders_like_ticks(duration)
        or int(parsed.end_ticks.max()) >= 2**48
    ):
        return np.lexsort((notes.velocity, notes.program, end, notes.pitch, start))
    head = (notes.start_tick << 7) | notes.pitch
    tail = (notes.program.astype(np.int64) << 7) | notes.velocity
    length = notes.end_tick - notes.start_tick
    length_bits = int(length.max()).bit_length()
    if int(notes.start_tick.max()).bit_length() + length_bits <= 41:
        return np.argsort((((head << length_bits) | length) << 15) | tail, kind="stable")
    return np.lexsort(((notes.end_tick << 15) | tail, head))


def _polyphony(start: np.ndarray, end: np.ndarray) -> tuple[float | None, int]:
    """``start`` ascending. Sounding notes peak right after a start: notes started by then minus
    notes ended by then (ends first at equal times). Sounding time is the union of the notes'
    intervals, merged in start order."""
    if not start.size:
        return None, 0
    started = np.arange(1, start.size + 1)
    poly_max = int((started - np.searchsorted(np.sort(end), start, side="right")).max())
    reach = np.maximum.accumulate(end)  # latest end so far
    first = np.flatnonzero(np.append(True, start[1:] > reach[:-1]))  # first note of each block
    sounding = float(np.sum(reach[np.append(first[1:] - 1, start.size - 1)] - start[first]))
    total = float(np.sum(end - start))
    return (total / sounding if sounding > 0 else None), max(poly_max, 0)


def _top_instruments(time_per_program: np.ndarray, present: np.ndarray) -> np.ndarray:
    ranked = present[np.lexsort((present, -time_per_program[present]))]
    return ranked[:TOP_INSTRUMENTS].astype(np.int16)


NOTES_HASH_PERSON = b"amtprep-notes-1"


def notes_hash(
    start_s: np.ndarray, end_s: np.ndarray, pitch: np.ndarray, velocity, program
) -> str | None:
    """The note content's digest (see the module docstring), independent of input order."""
    if not len(pitch):
        return None
    start_ms = np.rint(np.asarray(start_s, np.float64) * 1000.0).astype(np.int64)
    end_ms = np.rint(np.asarray(end_s, np.float64) * 1000.0).astype(np.int64)
    rows = np.stack(
        [
            start_ms,
            end_ms,
            np.asarray(pitch, np.int64),
            np.asarray(velocity, np.int64),
            np.asarray(program, np.int64),
        ],
        axis=1,
    )
    order = np.lexsort(rows.T[::-1])  # by start, then end, pitch, velocity, program
    data = np.ascontiguousarray(rows[order]).astype("<i8", copy=False).tobytes()
    return hashlib.blake2b(data, digest_size=16, person=NOTES_HASH_PERSON).hexdigest()


def compute_features(parsed: ParsedMidi) -> MidiFeatures:
    meta = parsed.meta
    tempo_map = TempoMap.build(parsed.division, meta.tempo_tick, meta.tempo_value)
    start, end, duration = _note_seconds(parsed, tempo_map)
    notes = parsed.notes
    order = _note_order(parsed, tempo_map, start, end, duration)
    start, end = start[order], end[order]
    pitch, velocity, program = notes.pitch[order], notes.velocity[order], notes.program[order]
    length = end - start
    n = int(pitch.size)
    program_index = program.astype(np.intp)
    present = np.flatnonzero(np.bincount(program_index, minlength=GM_DRUMS + 1))
    time_per_program = np.bincount(program_index, weights=length, minlength=GM_DRUMS + 1)

    pitched = program != GM_DRUMS
    histogram = key = confidence = None
    pitch_min = pitch_max = pitch_mean = None
    if pitched.any():
        classes = pitch[pitched].astype(np.int64) % 12
        weights = np.bincount(classes, weights=length[pitched], minlength=12)
        if weights.sum() <= 0:
            weights = np.bincount(classes, minlength=12).astype(np.float64)
        histogram = (weights / weights.sum()).astype(np.float32)
        key, confidence = estimate_key(weights)
        pitch_min, pitch_max = int(pitch[pitched].min()), int(pitch[pitched].max())
        pitch_mean = float(pitch[pitched].astype(np.float64).mean())

    time_signature, ts_changes = _first_and_changes(
        [(t, f"{num}/{den}") for t, num, den in meta.time_signatures]
    )
    key_signature, _ = _first_and_changes(meta.key_signatures)
    poly_mean, poly_max = _polyphony(start, end)
    vel_mean = vel_std = None
    if n:  # np.mean / np.std arithmetic (pairwise sums), without their wrappers
        vel = velocity.astype(np.float64)
        vel_mean = float(vel.sum() / n)
        deviation = vel - vel_mean
        vel_std = math.sqrt(float((deviation * deviation).sum()) / n)
    return MidiFeatures(
        ticks_per_beat=parsed.division if parsed.division > 0 else None,
        midi_type=parsed.midi_type,
        n_tracks=parsed.n_tracks,
        duration_s=duration,
        n_notes=n,
        programs=present.astype(np.int16),
        has_drums=bool((~pitched).any()),
        top_instruments=_top_instruments(time_per_program, present),
        tempo_bpm=float(tempo_map.initial_bpm),
        n_tempo_changes=tempo_map.n_changes,
        time_signature=time_signature,
        n_time_signature_changes=ts_changes,
        key_signature=key_signature,
        estimated_key=key,
        key_confidence=confidence,
        pitch_min=pitch_min,
        pitch_max=pitch_max,
        pitch_mean=pitch_mean,
        pitch_class_histogram=histogram,
        velocity_mean=vel_mean,
        velocity_std=vel_std,
        polyphony_mean=poly_mean,
        polyphony_max=poly_max,
        notes_per_second=n / duration if duration > 0 else None,
        first_tempo_bpm=tag_features.first_tempo_bpm(meta),
        start_time_signature=tag_features.start_time_signature(meta, parsed.division),
        pitch_class_quarters=tag_features.pitch_class_quarters(
            notes.start_tick[order], notes.end_tick[order], pitch, program, parsed.division
        ),
        instrument_ranking=tag_features.instrument_ranking(notes),
        notes_hash=notes_hash(start, end, pitch, velocity, program),
        note_pitch=pitch,
        note_velocity=velocity,
        note_start_s=start,
        note_end_s=end,
        note_program=program,
    )
