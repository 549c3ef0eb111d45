"""The raw values MidiCaps' tags are derived from, computed from the parse both backends share.

Public API (pure functions over ``ParsedMidi``; ``amtprep.tags`` turns them into tag columns):
- ``first_tempo_bpm(meta)``: bpm of the *first* ``set_tempo`` in mido's merged order (earliest
  tick, ties in track order), what MidiCaps reads iterating ``mido.MidiFile``; None when the file
  has none (or its tempo is 0).
- ``start_time_signature(meta, division)``: the time signature music21 reports first: the last
  one, in merged order, whose tick music21's import quantises to offset 0 (at most 1/8 of a
  quarter); None when there is none (music21 then reports 4/4).
- ``pitch_class_quarters(start_tick, end_tick, pitch, program, division)``: notes in the
  documented note order (so both backends add in the same order); 12 sums of note length in
  quarter notes, pitched notes only, each length quantised the way music21's MIDI import
  quantises it (nearest 1/4 or 1/3 of a quarter, never zero; overlapping notes of one program
  and pitch end at the first note-off after them, as music21 pairs them): the distribution
  music21's key analysis correlates. None when there are no pitched notes or the division is
  SMPTE (no quarter notes).
- ``instrument_ranking(notes)``: programs ranked by MidiCaps' "instrument time", channel-10
  notes as 128 (Drums) unless written under program 112-119.

MidiCaps' instrument time (its ``get_final_inst_list``) is not note time: per channel and pitch
it adds the gaps between successive note events, which telescopes to the tick of the pitch's last
note event; a channel's time is the sum over its pitches. Here the group is the note's program
(MidiCaps groups by channel and names a channel by its last program change), and the last event
of a pitch is its latest note end. Ties rank the lower program first.
"""

from __future__ import annotations

import numpy as np

from amtprep.midi.notes import GM_DRUMS, MetaEvents, NoteTable

_PERCUSSIVE = (112, 119)  # programs MidiCaps keeps by name on channel 10


def first_tempo_bpm(meta: MetaEvents) -> float | None:
    if not meta.tempo_tick.size:
        return None
    first = int(np.argsort(meta.tempo_tick, kind="stable")[0])
    tempo = int(meta.tempo_value[first])
    return 60 * 1e6 / tempo if tempo > 0 else None  # mido.tempo2bpm's arithmetic


def start_time_signature(meta: MetaEvents, division: int) -> str | None:
    found = None
    for tick, numerator, denominator in meta.time_signatures:
        at_start = tick * 8 <= division if division > 0 else tick == 0
        if at_start:
            found = f"{numerator}/{denominator}"
        elif tick > 0:
            break  # merged order: later events only have larger ticks
    return found


def _quantised_quarters(quarters: np.ndarray) -> np.ndarray:
    """music21 ``Stream.quantize`` on durations of notes (zero not allowed), divisors (4, 3):
    the nearest multiple of 1/4 or 1/3 (halves go down), errors rounded to 7 places, the
    smaller unit on equal error."""
    best = err_best = None
    for div in (4, 3):
        unit = 1 / div
        low = unit * np.floor(quarters / unit)
        match = np.where(quarters <= low + unit / 2, low, low + unit)
        match = np.where(match == 0, unit, match)
        error = np.round(np.abs(quarters - match), 7)
        if best is None:
            best, err_best = match, error
        else:
            best = np.where(error < err_best, match, best)
    return best


def _music21_ends(start: np.ndarray, end: np.ndarray, group: np.ndarray) -> np.ndarray:
    """music21 pairs a note-on with the *next* note-off of its pitch (notes overlapping on one
    pitch all end at the first note-off), not first-in first-out: the earliest end after the
    start among the notes of the same group (a note-off at the very tick of a note-on closes the
    note before it); a zero-length note keeps its end."""
    span = int(max(int(end.max()), 0)) + 1
    keys = np.sort(group * span + end)
    first = np.searchsorted(keys, group * span + start, side="right")
    later = keys[np.minimum(first, keys.size - 1)] - group * span
    return np.where(end > start, np.minimum(end, later), end)


def pitch_class_quarters(
    start_tick: np.ndarray,
    end_tick: np.ndarray,
    pitch: np.ndarray,
    program: np.ndarray,
    division: int,
) -> np.ndarray | None:
    pitched = program != GM_DRUMS
    if division <= 0 or not pitched.any():
        return None
    start, end = start_tick[pitched], end_tick[pitched]
    classes = pitch[pitched].astype(np.int64)
    group = program[pitched].astype(np.int64) * 128 + classes  # same program and pitch
    if int(end.max()) < 2**40:  # the packed keys fit int64 (group < 2**15)
        end = _music21_ends(start, end, group)
    weights = _quantised_quarters((end - start).astype(np.float64) / division)
    classes = classes % 12
    return np.bincount(classes, weights=weights, minlength=12)


def instrument_ranking(notes: NoteTable) -> np.ndarray:
    if not len(notes):
        return np.zeros(0, np.int16)
    drum = notes.program == GM_DRUMS
    low, high = _PERCUSSIVE
    named = drum & (notes.channel_program >= low) & (notes.channel_program <= high)
    group = np.where(named, notes.channel_program, notes.program).astype(np.int64)
    # latest end per (group, pitch), summed per group
    key = group * 128 + notes.pitch.astype(np.int64) % 128
    order = np.lexsort((notes.end_tick, key))
    last = np.append(key[order][1:] != key[order][:-1], True)
    ends = notes.end_tick[order][last].astype(np.float64)
    per_group = np.bincount(key[order][last] // 128, weights=ends, minlength=GM_DRUMS + 1)
    present = np.flatnonzero(np.bincount(group, minlength=GM_DRUMS + 1))
    return present[np.lexsort((present, -per_group[present]))].astype(np.int16)
