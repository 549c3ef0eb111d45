"""The regex track grammar: it accepts exactly what the Python event scan accepts (less a few
rarities it leaves to the scan), and its end markers give the scan's end ticks."""

from __future__ import annotations

import random

import pytest
import symusic

from amtprep.midi import extract_bytes, grammar
from amtprep.midi.container import read_header, track_end_ticks
from amtprep.midi.errors import MidiFileError
from tests.midi.conftest import raw_midi
from tests.midi.midigen import generate_midi
from tests.midi.test_fuzz import mutate

EOT = bytes.fromhex("00 ff 2f 00")


def plain(*tracks: bytes) -> bool:
    data = raw_midi(*tracks)
    return grammar.plain_tracks(data, read_header(data))


def scan(*tracks: bytes) -> list[int]:
    data = raw_midi(*tracks)
    return track_end_ticks(data, read_header(data))


@pytest.mark.parametrize(
    "track",
    [
        # note on C4, running-status note on velocity 0 after 0x60 ticks, end of track
        bytes.fromhex("00 90 3c 40  60 3c 00") + EOT,
        # a 4-byte delta (the SMF maximum) before the note
        bytes.fromhex("ff ff ff 7f 90 3c 40") + EOT,
        # a text meta between running-status events keeps the running status
        bytes.fromhex("00 90 3c 40  00 ff 01 02 68 69  10 3c 00") + EOT,
        # program change then running status with one data byte
        bytes.fromhex("00 c0 05  10 06") + EOT,
        # GM reset sysex, then a note with its own status
        bytes.fromhex("00 f0 05 7e 7f 09 01 f7  00 90 3c 40") + EOT,
        # an empty track
        EOT,
    ],
)
def test_plain_tracks_are_accepted_and_end_markers_give_the_scan_end_tick(track):
    assert plain(track)
    data = raw_midi(track, EOT)
    header = read_header(data)
    score = symusic.Score.from_midi(grammar.with_end_markers(data, header), ttype="tick")
    assert max(marker.time for marker in score.markers) == max(track_end_ticks(data, header))


@pytest.mark.parametrize(
    ("track", "scan_accepts"),
    [
        # running status with no status byte before it (the scan: corrupt)
        (bytes.fromhex("00 3c 40") + EOT, False),
        # a data byte > 127 (mido refuses it unless clipping)
        (bytes.fromhex("00 90 3c 80") + EOT, False),
        # a 5-byte delta, past the SMF limit
        (bytes.fromhex("81 80 80 80 00 90 3c 40") + EOT, False),
        # a system common message inside a track
        (bytes.fromhex("00 f1 00") + EOT, False),
        # sysex with a data byte > 127
        (bytes.fromhex("00 f0 03 7e 80 f7") + EOT, False),
        # running status right after a sysex
        (bytes.fromhex("00 f0 01 f7  00 3c 40") + EOT, False),
        # the last event runs past the end of the track
        (bytes.fromhex("00 90 3c"), False),
        # no end-of-track at all: legal for the scan, left to it
        (bytes.fromhex("00 90 3c 40  10 80 3c 00"), True),
        # end-of-track that is not the last event: left to the scan
        (EOT + bytes.fromhex("00 90 3c 40"), True),
        # a meta event over 127 bytes (two-byte length): left to the scan
        (bytes.fromhex("00 ff 01 81 00") + b"x" * 128 + EOT, True),
    ],
)
def test_everything_else_goes_to_the_scan(track, scan_accepts):
    assert not plain(track)
    if scan_accepts:
        scan(track)
    else:
        with pytest.raises(MidiFileError):
            scan(track)


def test_ticks_past_int32_are_left_to_the_scan_and_mido():
    # Nine maximal deltas (0x0FFFFFFF each) sum past 2**31: symusic would wrap its int32 ticks.
    track = bytes.fromhex("ff ff ff 7f 90 3c 40") * 9 + EOT
    assert not plain(track)
    assert grammar._tick_bound(raw_midi(track)) > 2**31 - 1
    parser, features = extract_bytes(raw_midi(track), "auto")
    assert parser == "mido"
    assert features.n_notes == 0  # nine note-ons, never closed


def test_on_mutated_files_plain_implies_the_scan_agrees():
    """Thousands of damaged files: wherever the grammar says plain, the scan accepts the file
    and the end markers give its end tick; and most undamaged files are plain."""
    rng = random.Random(99)
    bases = [generate_midi(seed) for seed in range(40)]
    assert all(grammar.plain_tracks(d, read_header(d)) for d in bases)
    checked = 0
    for _ in range(3000):
        data = mutate(rng.choice(bases), rng)
        try:
            header = read_header(data)
        except MidiFileError:
            continue
        if header.midi_type == 2 or header.is_smpte or not grammar.plain_tracks(data, header):
            continue
        end_ticks = track_end_ticks(data, header)  # must not raise
        marked = grammar.with_end_markers(data, header)
        try:
            score = symusic.Score.from_midi(marked, ttype="tick")
        except Exception:  # symusic may still refuse (e.g. a bad key signature): mido decides
            continue
        assert max((m.time for m in score.markers), default=0) == max(end_ticks, default=0)
        checked += 1
    assert checked > 500
