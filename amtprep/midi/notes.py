"""The parsed form both backends produce, and the note pairing rule.

Public API: ``ParsedMidi`` (what a backend returns), ``NoteTable`` (one row per note, numpy
columns, ticks), ``TrackNotePairer`` (the mido backend's pairing) and ``GM_DRUMS``.

Pairing rule (symusic applies the same one, which is why both backends agree):
- Notes are paired inside one track, then per (channel, pitch), first-in first-out: a note-off
  closes the *oldest* open note of that channel and pitch. A loop over mido's merged stream is
  wrong: music21 writes every voice on one channel, so a note-off from one track would close
  another track's note (measured: wrong note ends in 218 of 300 such files).
- ``note_on`` with velocity 0 is a note-off. A note-off with no open note is ignored.
- A note-on still open when its track ends is **dropped** (it has no defined end; symusic drops it
  too). A note-on and note-off at the same tick give a zero-length note, which is kept.
- A note's program is its channel's last ``program_change`` in the same track before the note-on
  (0 if none); channel 10 (index 9) is drums and gets program ``GM_DRUMS`` (128).
  ``channel_program`` keeps that program as written (0-127, drums included): MidiCaps' tags name
  channel-10 notes under programs 112-119 by their program, not as Drums.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GM_DRUMS = 128
DRUM_CHANNEL = 9


@dataclass(frozen=True)
class NoteTable:
    start_tick: np.ndarray  # int64
    end_tick: np.ndarray  # int64
    pitch: np.ndarray  # int8
    velocity: np.ndarray  # uint8
    program: np.ndarray  # int16, GM_DRUMS for drums
    track: np.ndarray  # int32, index of the MIDI track (used for type 2 timing)
    channel_program: np.ndarray  # int16, the channel's program as written (drums too)

    def __len__(self) -> int:
        return int(self.start_tick.size)

    @classmethod
    def from_columns(
        cls, start, end, pitch, velocity, program, track, channel_program=None
    ) -> NoteTable:
        """``channel_program`` defaults to ``program`` (0 for drums)."""
        program = np.asarray(program, dtype=np.int16)
        if channel_program is None:
            channel_program = np.where(program == GM_DRUMS, 0, program)
        return cls(
            np.asarray(start, dtype=np.int64),
            np.asarray(end, dtype=np.int64),
            np.asarray(pitch, dtype=np.int8),
            np.asarray(velocity, dtype=np.uint8),
            program,
            np.asarray(track, dtype=np.int32),
            np.asarray(channel_program, dtype=np.int16),
        )


@dataclass(frozen=True)
class MetaEvents:
    """Meta events in merged order (tick, then track), each as parallel arrays/lists."""

    tempo_tick: np.ndarray  # int64
    tempo_value: np.ndarray  # int64 µs per quarter
    tempo_track: np.ndarray  # int32
    time_signatures: list[tuple[int, int, int]]  # (tick, numerator, denominator)
    key_signatures: list[tuple[int, str]]  # (tick, "C major" / "A minor")


@dataclass(frozen=True)
class ParsedMidi:
    midi_type: int
    n_tracks: int
    division: int  # ticks per beat; negative = SMPTE (as mido reads it)
    # int64, tick of the latest event (end-of-track included) on each clock: one per track for
    # type 2 (each track keeps its own time), one for type 0/1 (all tracks share the merged clock)
    end_ticks: np.ndarray
    notes: NoteTable
    meta: MetaEvents
    info: dict = field(default_factory=dict)
    # The symusic.Score the symusic backend parsed (None after mido), kept for the tokenizer so
    # it needs no second parse; ``score_end_markers``: loaded with ``grammar.with_end_markers``.
    score: Any = None
    score_end_markers: bool = False


class TrackNotePairer:
    """Collects one track's notes following the module's pairing rule."""

    def __init__(self, track_index: int) -> None:
        self.track_index = track_index
        self._open: dict[tuple[int, int], deque] = {}
        self._program = [0] * 16
        self.start: list[int] = []
        self.end: list[int] = []
        self.pitch: list[int] = []
        self.velocity: list[int] = []
        self.program: list[int] = []
        self.channel_program: list[int] = []

    def program_change(self, channel: int, program: int) -> None:
        self._program[channel] = program

    def note_on(self, tick: int, channel: int, pitch: int, velocity: int) -> None:
        written = self._program[channel]
        program = GM_DRUMS if channel == DRUM_CHANNEL else written
        key = (channel, pitch)
        queue = self._open.get(key)
        if queue is None:
            queue = self._open[key] = deque()
        queue.append((tick, velocity, program, written))

    def note_off(self, tick: int, channel: int, pitch: int) -> None:
        queue = self._open.get((channel, pitch))
        if not queue:
            return
        start, velocity, program, written = queue.popleft()
        self.start.append(start)
        self.end.append(tick)
        self.pitch.append(pitch)
        self.velocity.append(velocity)
        self.program.append(program)
        self.channel_program.append(written)


def concat_tracks(pairers: list[TrackNotePairer]) -> NoteTable:
    columns = [[], [], [], [], [], [], []]
    for p in pairers:
        columns[0].extend(p.start)
        columns[1].extend(p.end)
        columns[2].extend(p.pitch)
        columns[3].extend(p.velocity)
        columns[4].extend(p.program)
        columns[5].extend([p.track_index] * len(p.start))
        columns[6].extend(p.channel_program)
    return NoteTable.from_columns(*columns)
