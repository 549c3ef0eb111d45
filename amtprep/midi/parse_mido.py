"""The reference backend: mido, walked per track (see ``notes`` for the pairing rule).

Public API: ``parse_mido(data, clip=False) -> ParsedMidi``. Raises ``MidiFileError`` subclasses:
everything mido raises on malformed input (OSError, EOFError, IndexError, KeyError, ValueError,
ZeroDivisionError, OverflowError, KeySignatureError) is translated here.
"""

from __future__ import annotations

import io

import mido
import numpy as np
from mido.midifiles.meta import KeySignatureError

from amtprep.midi.errors import CorruptMidiError, DataByteRangeError, TruncatedMidiError
from amtprep.midi.key import mido_key_name
from amtprep.midi.notes import MetaEvents, ParsedMidi, TrackNotePairer, concat_tracks

_MIDO_ERRORS = (
    OSError,
    IndexError,
    KeyError,
    ValueError,
    ZeroDivisionError,
    OverflowError,
    TypeError,
    KeySignatureError,
)


def _load(data: bytes, clip: bool) -> mido.MidiFile:
    try:
        return mido.MidiFile(file=io.BytesIO(data), clip=clip)
    except EOFError as exc:
        raise TruncatedMidiError(f"mido: unexpected end of data ({exc or 'EOF'})") from exc
    except _MIDO_ERRORS as exc:
        message = f"mido: {type(exc).__name__}: {exc}"
        if "data byte must be in range" in str(exc):
            raise DataByteRangeError(message) from exc
        raise CorruptMidiError(message) from exc


def parse_mido(data: bytes, clip: bool = False) -> ParsedMidi:
    midi = _load(data, clip)
    pairers, end_ticks = [], []
    tempo_tick, tempo_value, tempo_track = [], [], []
    time_sigs: list[tuple[int, int, int, int]] = []
    key_sigs: list[tuple[int, int, str]] = []
    for index, track in enumerate(midi.tracks):
        pairer = TrackNotePairer(index)
        tick = 0
        for msg in track:
            tick += msg.time
            kind = msg.type
            if kind == "note_on":
                if msg.velocity:
                    pairer.note_on(tick, msg.channel, msg.note, msg.velocity)
                else:
                    pairer.note_off(tick, msg.channel, msg.note)
            elif kind == "note_off":
                pairer.note_off(tick, msg.channel, msg.note)
            elif kind == "program_change":
                pairer.program_change(msg.channel, msg.program)
            elif kind == "set_tempo":
                tempo_tick.append(tick)
                tempo_value.append(msg.tempo)
                tempo_track.append(index)
            elif kind == "time_signature":
                time_sigs.append((tick, index, msg.numerator, msg.denominator))
            elif kind == "key_signature":
                key_sigs.append((tick, index, mido_key_name(msg.key)))
        pairers.append(pairer)
        end_ticks.append(tick)
    # Merged order = by tick, ties in track order (mido's stable sort); tuples sort that way.
    time_sigs.sort(key=lambda e: (e[0], e[1]))
    key_sigs.sort(key=lambda e: (e[0], e[1]))
    meta = MetaEvents(
        np.asarray(tempo_tick, dtype=np.int64),
        np.asarray(tempo_value, dtype=np.int64),
        np.asarray(tempo_track, dtype=np.int32),
        [(t, n, d) for t, _, n, d in time_sigs],
        [(t, k) for t, _, k in key_sigs],
    )
    return ParsedMidi(
        midi_type=midi.type,
        n_tracks=len(midi.tracks),
        division=midi.ticks_per_beat,
        end_ticks=np.asarray(
            end_ticks if midi.type == 2 else [max(end_ticks, default=0)], dtype=np.int64
        ),
        notes=concat_tracks(pairers),
        meta=meta,
    )
