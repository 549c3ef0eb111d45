"""The fast backend: symusic's C++ parser in tick mode, then the same timing math as mido.

Public API: ``parse_symusic(data, header) -> ParsedMidi`` (its ``score`` is the symusic Score,
kept for the tokenizer). Raises ``BackendRejectedError`` when
symusic rejects the file, and its subclass ``NeedsMidoError`` when symusic cannot give
mido-identical output for it:
- type 2 files (symusic keeps no track index on tempo events, needed for per-track timing);
- SMPTE division (symusic refuses it);
- tick values beyond int32 (symusic stores ticks as int32).
symusic pairs notes like ``notes`` documents and splits tracks by program, so notes carry the
program in effect at their note-on. It skips end-of-track, text and sysex events, yet mido's
``length`` runs to the latest of them. For a file ``grammar.plain_tracks`` accepts (nearly all),
end-of-track events become markers and the latest marker tick is the end; any other file is
walked by ``container.track_end_ticks``, which also sends files symusic would read differently
to mido.
"""

from __future__ import annotations

import numpy as np
import symusic

from amtprep.midi import grammar
from amtprep.midi.container import MidiHeader, track_end_ticks
from amtprep.midi.errors import BackendRejectedError, CorruptMidiError, NeedsMidoError
from amtprep.midi.key import key_name
from amtprep.midi.notes import GM_DRUMS, MetaEvents, NoteTable, ParsedMidi


def parse_symusic(data: bytes, header: MidiHeader) -> ParsedMidi:
    if header.midi_type == 2:
        raise NeedsMidoError("type 2 file: per-track timing needs the mido backend")
    if header.is_smpte:
        raise NeedsMidoError("SMPTE division: symusic reads ticks per quarter only")
    end_markers = grammar.plain_tracks(data, header)
    if end_markers:
        score = _load(grammar.with_end_markers(data, header))
        end_tick = max((marker.time for marker in score.markers), default=0)
    else:
        end_tick = _scan_end_tick(data, header)
        score = _load(data)

    starts, durations, pitches, velocities, programs, written = [], [], [], [], [], []
    for track in score.tracks:
        arrays = track.notes.numpy()
        n = arrays["time"].size
        if not n:
            continue
        starts.append(arrays["time"])
        durations.append(arrays["duration"])
        pitches.append(arrays["pitch"])
        velocities.append(arrays["velocity"])
        programs.append(np.full(n, GM_DRUMS if track.is_drum else track.program, np.int16))
        written.append(np.full(n, track.program, np.int16))
    if starts:
        start = np.concatenate(starts).astype(np.int64)
        end = start + np.concatenate(durations)
        notes = NoteTable.from_columns(
            start,
            end,
            np.concatenate(pitches),
            np.concatenate(velocities).view(np.uint8),
            np.concatenate(programs),
            np.zeros(start.size, np.int32),
            np.concatenate(written),
        )
    else:
        notes = NoteTable.from_columns(*([[]] * 7))

    tempos = score.tempos.numpy()
    times = score.time_signatures.numpy()
    keys = score.key_signatures.numpy()
    key_sigs = []
    for tick, sf, minor in zip(
        keys["time"].tolist(), keys["key"].tolist(), keys["tonality"].tolist(), strict=True
    ):
        name = key_name(sf, minor)
        if name is None:  # mido refuses the whole file on such a key signature; so do we
            raise CorruptMidiError(f"invalid key signature (sharps/flats {sf}, mode {minor})")
        key_sigs.append((tick, name))
    meta = MetaEvents(
        tempos["time"].astype(np.int64),
        tempos["mspq"].astype(np.int64),
        np.zeros(tempos["time"].size, np.int32),
        list(
            zip(
                times["time"].tolist(),
                times["numerator"].tolist(),
                times["denominator"].tolist(),
                strict=True,
            )
        ),
        key_sigs,
    )
    return ParsedMidi(
        midi_type=header.midi_type,
        n_tracks=header.n_tracks,
        division=header.division,
        end_ticks=np.array([end_tick], dtype=np.int64),
        notes=notes,
        meta=meta,
        score=score,
        score_end_markers=end_markers,
    )


def _scan_end_tick(data: bytes, header: MidiHeader) -> int:
    try:
        end_ticks = track_end_ticks(data, header)
    except NeedsMidoError:
        raise
    except CorruptMidiError as exc:  # let mido name the problem (often "truncated")
        raise BackendRejectedError(f"event scan: {exc}") from exc
    end_tick = max(end_ticks, default=0)
    if end_tick > grammar.INT32_MAX:
        raise NeedsMidoError("ticks beyond int32")
    return end_tick


def _load(data: bytes) -> symusic.Score:
    try:
        return symusic.Score.from_midi(data, ttype="tick")
    except Exception as exc:  # symusic raises plain RuntimeError/ValueError subclasses
        raise BackendRejectedError(f"symusic: {type(exc).__name__}: {exc}") from exc
