"""The Standard MIDI File container, read without a MIDI library.

Public API:
- ``MidiHeader`` and ``read_header(data)``: format, declared track count and division, after
  checking the bytes are a MIDI file whose declared chunks are all present.
- ``track_end_ticks(data, header)``: the absolute tick of the last event (end-of-track included)
  of each declared track. symusic drops end-of-track, text and sysex events, yet mido's
  ``MidiFile.length`` runs to the latest of them, so the fast backend needs this to report the
  same duration. It walks events with the same running-status rules as mido.

Raises ``NotMidiError``, ``TruncatedMidiError`` or ``CorruptMidiError``; ``track_end_ticks``
raises ``NeedsMidoError`` for variable-length numbers over the 4-byte SMF limit and for data
bytes > 127 (mido handles both its own way, so the mido backend decides).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from amtprep.midi.errors import (
    CorruptMidiError,
    NeedsMidoError,
    NotMidiError,
    TruncatedMidiError,
)

# Data bytes that follow a channel status byte, indexed by status (0x80-0xEF).
_DATA_LEN = bytes([0] * 0x80 + [2] * 0x40 + [1] * 0x20 + [2] * 0x10 + [0] * 0x10)


@dataclass(frozen=True, slots=True)
class MidiHeader:
    midi_type: int
    n_tracks: int
    division: int  # signed, as mido reads it: negative means SMPTE timing
    track_offsets: tuple[tuple[int, int], ...]  # (start, end) byte range of each declared MTrk

    @property
    def is_smpte(self) -> bool:
        return self.division < 0


def read_header(data: bytes) -> MidiHeader:
    """Check the chunk layout the way mido reads it: MThd, then ``n_tracks`` chunks named MTrk."""
    if data[:4] != b"MThd":
        raise NotMidiError(f"no MThd header (file starts with {data[:8]!r})")
    if len(data) < 14:
        raise TruncatedMidiError(f"MIDI header cut short at {len(data)} bytes")
    header_len = struct.unpack_from(">I", data, 4)[0]
    if header_len < 6:
        raise CorruptMidiError(f"MThd chunk length {header_len} < 6")
    midi_type, n_tracks, division = struct.unpack_from(">hhh", data, 8)
    if midi_type not in (0, 1, 2):  # mido would read on and guess; the format is meaningless
        raise CorruptMidiError(f"unknown MIDI format {midi_type} (expected 0, 1 or 2)")
    pos = 8 + header_len
    offsets = []
    for i in range(max(n_tracks, 0)):
        if pos + 8 > len(data):
            raise TruncatedMidiError(
                f"track {i} of {n_tracks} missing: file ends at byte {len(data)}"
            )
        name = data[pos : pos + 4]
        size = struct.unpack_from(">I", data, pos + 4)[0]
        if name != b"MTrk":
            raise CorruptMidiError(f"chunk {name!r} at byte {pos} where track {i} should start")
        if pos + 8 + size > len(data):
            raise TruncatedMidiError(
                f"track {i} declares {size} bytes but only {len(data) - pos - 8} remain"
            )
        offsets.append((pos + 8, pos + 8 + size))
        pos += 8 + size
    return MidiHeader(midi_type, n_tracks, division, tuple(offsets))


def _track_end_tick(data: bytes, start: int, end: int) -> int:
    pos, tick, status, data_len = start, 0, 0, _DATA_LEN
    while pos < end:
        byte = data[pos]
        pos += 1
        delta = byte & 0x7F
        if byte >= 0x80:
            stop = pos + 3  # the SMF limit is 4 bytes; longer runs go quadratic in Python ints
            while byte >= 0x80:
                if pos >= stop:
                    raise NeedsMidoError(f"delta time longer than 4 bytes at byte {pos}")
                byte = data[pos]
                pos += 1
                delta = (delta << 7) | (byte & 0x7F)
        tick += delta
        byte = data[pos]
        if byte >= 0x80:
            pos += 1
            if byte >= 0xF0:
                kind = byte
                if kind == 0xFF:
                    pos += 1  # meta type; meta events keep the running status
                elif kind in (0xF0, 0xF7):
                    status = kind
                else:
                    raise NeedsMidoError(f"system message {kind:#04x} inside a track at byte {pos}")
                length, stop = 0, pos + 4
                while True:
                    if pos >= stop:
                        raise NeedsMidoError(f"event length longer than 4 bytes at byte {pos}")
                    byte = data[pos]
                    pos += 1
                    length = (length << 7) | (byte & 0x7F)
                    if byte < 0x80:
                        break
                if kind != 0xFF:
                    payload = data[pos : pos + length].removeprefix(b"\xf0").removesuffix(b"\xf7")
                    if payload and max(payload) >= 0x80:  # same rule as data bytes below
                        raise NeedsMidoError(f"sysex data byte > 127 at byte {pos}")
                pos += length
                continue
            status = byte
        elif status == 0:
            raise CorruptMidiError("running status without a previous status byte")
        elif status >= 0xF0:
            raise NeedsMidoError("running status after a sysex event")
        size = data_len[status]
        if (data[pos] | (data[pos + 1] if size == 2 else 0)) & 0x80:
            # mido refuses data bytes > 127 unless clipping; symusic reads them differently.
            raise NeedsMidoError(f"data byte > 127 at byte {pos}")
        pos += size
    if pos != end:
        raise CorruptMidiError(f"last event overruns its track by {pos - end} bytes")
    return tick


def track_end_ticks(data: bytes, header: MidiHeader) -> list[int]:
    """Absolute end tick of each track. Raises ``CorruptMidiError`` on an undecodable event."""
    try:
        return [_track_end_tick(data, start, end) for start, end in header.track_offsets]
    except IndexError as exc:
        raise CorruptMidiError("event runs past the end of the file") from exc
