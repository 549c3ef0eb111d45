"""Shared helpers: MIDI bytes built with mido in code, records pointing at files in tmp_path."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import mido
import pytest

from amtprep.config import MidiConfig
from amtprep.records import Record


def midi_bytes(*tracks: list, tpb: int = 480, midi_type: int = 1) -> bytes:
    """Each track is a list of mido messages with delta times; end_of_track is added by mido."""
    midi = mido.MidiFile(type=midi_type, ticks_per_beat=tpb)
    for messages in tracks:
        midi.tracks.append(mido.MidiTrack(messages))
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def raw_midi(*track_payloads: bytes, midi_type: int = 1, division: int = 480) -> bytes:
    """A file from raw track payloads, for inputs mido would refuse to write."""
    out = b"MThd" + struct.pack(">IhhH", 6, midi_type, len(track_payloads), division & 0xFFFF)
    for payload in track_payloads:
        out += b"MTrk" + struct.pack(">I", len(payload)) + payload
    return out


def slow_midi(run: int = 300_000) -> bytes:
    """A delta time written as a long run of 0xFF continuation bytes: mido's
    ``read_variable_int`` shifts an ever-growing int, quadratic in the run (~10 s here)."""
    return raw_midi(b"\xff" * run + b"\x00" + b"\xff\x2f\x00")


def note(pitch: int, velocity: int = 64, delta: int = 0, channel: int = 0, on: bool = True):
    kind = "note_on" if on else "note_off"
    return mido.Message(kind, note=pitch, velocity=velocity, time=delta, channel=channel)


def meta(kind: str, delta: int = 0, **fields):
    return mido.MetaMessage(kind, time=delta, **fields)


def records_for(tmp_path: Path, files: dict[str, bytes | None]) -> list[Record]:
    """One record per name; a None payload leaves the file missing."""
    records = []
    for idx, (name, payload) in enumerate(files.items()):
        path = tmp_path / name
        if payload is not None:
            path.write_bytes(payload)
        records.append(Record(idx, f"id{idx}", name, str(path), "a caption"))
    return records


@pytest.fixture
def midi_config(tmp_path: Path) -> MidiConfig:
    return MidiConfig(backend="auto", workers=1, file_timeout=20.0, cache_dir=tmp_path / "cache")
