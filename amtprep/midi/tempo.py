"""Tick -> seconds conversion, vectorised over numpy arrays.

Public API: ``TempoMap.build(division, ticks, tempos)`` and ``TempoMap.seconds(ticks)``.

The map follows mido's merged playback (what ``MidiFile.length`` sums): tempo events from all
tracks, ordered by tick with ties kept in track order, the last event at a tick winning; 500,000
µs per quarter before the first one. Each segment uses mido's own factor
``tempo * 1e-6 / ticks_per_beat`` so seconds agree with mido to rounding (~1e-12 relative).
SMPTE division (negative, mido keeps it signed) means fixed real time: ticks / (fps * ticks per
frame), with 29 meaning 29.97 drop-frame; tempo events do not change time then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amtprep.midi.errors import CorruptMidiError

DEFAULT_TEMPO = 500_000  # µs per quarter note (120 bpm), the MIDI default


@dataclass(frozen=True)
class TempoMap:
    seg_ticks: np.ndarray  # int64, start tick of each constant-tempo segment, seg_ticks[0] == 0
    seg_scale: np.ndarray  # float64, seconds per tick in each segment
    seg_seconds: np.ndarray  # float64, seconds at each segment start
    seg_tempo: np.ndarray  # int64, µs per quarter in each segment (as written)

    @classmethod
    def build(cls, division: int, ticks: np.ndarray, tempos: np.ndarray) -> TempoMap:
        """``ticks``/``tempos`` in merged order (stable by tick). Raises ``CorruptMidiError``."""
        ticks = np.asarray(ticks, dtype=np.int64)
        tempos = np.asarray(tempos, dtype=np.int64)
        if ticks.size > 1:
            # Last event at each tick wins; stable sort keeps mido's track order for ties.
            order = np.argsort(ticks, kind="stable")
            ticks, tempos = ticks[order], tempos[order]
            last = np.append(ticks[1:] != ticks[:-1], True)
            ticks, tempos = ticks[last], tempos[last]
        if not ticks.size or ticks[0] != 0:
            ticks = np.concatenate(([0], ticks))
            tempos = np.concatenate(([DEFAULT_TEMPO], tempos))
        if division < 0:
            fps_code = -(division >> 8)
            fps = 29.97 if fps_code == 29 else float(fps_code)
            per_frame = division & 0xFF
            if fps <= 0 or per_frame == 0:
                raise CorruptMidiError(f"SMPTE division {division:#06x} has zero frame rate")
            scale = np.full(ticks.size, 1.0 / (fps * per_frame))
        elif division == 0:
            raise CorruptMidiError("ticks_per_beat is 0")
        else:
            scale = tempos * 1e-6 / division
        seconds = np.zeros(ticks.size)
        if ticks.size > 1:
            seconds[1:] = np.cumsum(np.diff(ticks) * scale[:-1])
        return cls(ticks, scale, seconds, tempos)

    def seconds(self, ticks: np.ndarray) -> np.ndarray:
        ticks = np.asarray(ticks, dtype=np.int64)
        if self.seg_ticks.size == 1:  # one tempo: the same arithmetic, no segment look-up
            return ticks * self.seg_scale[0]
        seg = np.searchsorted(self.seg_ticks, ticks, side="right") - 1
        return self.seg_seconds[seg] + (ticks - self.seg_ticks[seg]) * self.seg_scale[seg]

    def orders_like_ticks(self, max_seconds: float) -> bool:
        """Whether distinct ticks up to ``max_seconds`` always get distinct seconds, so sorting
        by ticks sorts by seconds, ties included. Seconds never decrease with ticks (cumsum and
        rounding are monotone); they can stall on a zero tempo, or where one tick's worth of
        time falls below the float spacing (2**-52 relative) at ``max_seconds``."""
        return float(self.seg_scale.min()) > max_seconds * 2.0**-50

    @property
    def initial_bpm(self) -> float:
        return 60_000_000 / self.seg_tempo[0] if self.seg_tempo[0] else float("inf")

    @property
    def n_changes(self) -> int:
        """Tempo changes after tick 0 that alter the tempo (repeats of the same value excluded)."""
        return int(np.count_nonzero(self.seg_tempo[1:] != self.seg_tempo[:-1]))
