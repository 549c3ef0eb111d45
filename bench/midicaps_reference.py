"""MidiCaps' own tag method, re-implemented from its ``pipeline.py`` with music21 + mido per file.

Public API: ``reference_tags(data: bytes) -> dict`` with MidiCaps' column names (``key``,
``time_signature``, ``tempo``, ``duration``, ``instrument_numbers_sorted``,
``instrument_summary``). The slow reference
``bench/tags_agreement.py`` and ``tests/midi/test_tags.py`` compare amtprep's tags against.

What MidiCaps does (AMAAI-Lab/MidiCaps ``pipeline.py``), reproduced step by step:
- the score is read with ``music21.midi.translate.midiFileToStream`` (default quantisation);
- ``key`` = ``score.analyze('keys')``: ``tonic.name + " " + mode``, ``-`` written ``b``;
- ``time_signature`` = ``score.getTimeSignatures()[0]`` as ``"num/den"``;
- ``tempo`` = the first ``set_tempo`` met iterating ``mido.MidiFile``, ``mido.tempo2bpm``,
  rounded with numpy (half to even); None when there is none (MidiCaps then wrote ``''``);
- ``duration`` = ``round(MidiFile.length)`` (numpy, half to even);
- instruments: the last ``program_change`` per channel over all tracks (channel 10 becomes 128,
  Drums, unless the program is 112-119), channels ranked by MidiCaps' per-channel "note time"
  (per track and (channel, pitch): the tick of the last note event, summed). MidiCaps returns
  nothing when the file has no program change at all, and stops the list at the first channel
  with notes but no program change; both quirks are kept here.
"""

from __future__ import annotations

import io
from collections import defaultdict

import mido
import numpy as np


def _instrument_numbers(midi: mido.MidiFile) -> list[int]:
    channel_time: dict[int, float] = defaultdict(float)
    programs: dict[int, int] = {}
    for track in midi.tracks:
        last_event: dict[tuple[int, int], int] = defaultdict(int)
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "program_change":
                program = msg.program
                if msg.channel == 9 and not 111 < program < 120:
                    program = 128
                programs[msg.channel] = program
            if msg.type in ("note_on", "note_off"):
                key = (msg.channel, msg.note)
                channel_time[msg.channel] += tick - last_event[key]
                last_event[key] = tick
    if not programs:
        return []
    ranked = sorted(channel_time.items(), key=lambda item: item[1], reverse=True)
    # MidiCaps tests ``9 in (channel, time)``: a channel whose time is 9 ticks counts too
    if 9 not in programs and any(9 in item for item in ranked):
        programs[9] = 128
    out = []
    for channel, _ in ranked:
        if channel not in programs:
            break
        out.append(programs[channel])
    return out


def _first_tempo(midi: mido.MidiFile) -> int | None:
    try:
        for msg in midi:
            if msg.type == "set_tempo":
                return int(np.round(mido.tempo2bpm(msg.tempo)))
    except Exception:
        return None
    return None


def reference_tags(data: bytes) -> dict:
    from music21 import midi as m21midi

    from amtprep.tags import INSTRUMENT_NAMES  # MidiCaps' instruments.csv names

    midi = mido.MidiFile(file=io.BytesIO(data))
    tags: dict = {
        "tempo": _first_tempo(midi),
        "duration": int(np.round(midi.length)) if midi.type != 2 else None,
        "instrument_numbers_sorted": _instrument_numbers(midi),
    }
    summary: list[str] = []
    for program in tags["instrument_numbers_sorted"]:
        if INSTRUMENT_NAMES[program] not in summary:
            summary.append(INSTRUMENT_NAMES[program])
    tags["instrument_summary"] = summary[:5]
    mf = m21midi.MidiFile()
    mf.readstr(data)
    score = m21midi.translate.midiFileToStream(mf)
    try:
        found = score.analyze("keys")
        tags["key"] = (found.tonic.name + " " + found.mode).replace("-", "b")
    except Exception:
        tags["key"] = None
    try:
        ts = score.getTimeSignatures()[0]
        tags["time_signature"] = f"{ts.numerator}/{ts.denominator}"
    except Exception:
        tags["time_signature"] = None
    return tags
