"""Random but realistic Standard MIDI Files built with mido, for tests and the benchmark.

``generate_midi(seed, ...) -> bytes``: a type 1 (sometimes type 0) file with a conductor track
(tempo, time and key signature changes), instrument tracks with program changes, drums on
channel 10, overlapping same-pitch notes, velocity-0 note-offs, unclosed notes, controllers,
pitch bends, text and sysex events, and end-of-track delays. ``shared_channel`` puts every voice
on channel 1 the way music21 writes files.
"""

from __future__ import annotations

import io
import random

import mido

TPB_CHOICES = (96, 120, 384, 480, 960, 10080, 1, 32767)


def _track(events: list[tuple[int, int, mido.Message]], tail: int) -> mido.MidiTrack:
    events.sort(key=lambda e: (e[0], e[1]))
    track, now = mido.MidiTrack(), 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=tail))
    return track


def generate_midi(
    seed: int,
    n_tracks: int | None = None,
    notes_per_track: int | None = None,
    tpb: int | None = None,
    shared_channel: bool | None = None,
    midi_type: int | None = None,
) -> bytes:
    rng = random.Random(seed)
    tpb = tpb or rng.choice(TPB_CHOICES[:6])
    n_tracks = n_tracks if n_tracks is not None else rng.randint(1, 8)
    notes_per_track = notes_per_track if notes_per_track is not None else rng.randint(20, 400)
    shared_channel = rng.random() < 0.3 if shared_channel is None else shared_channel
    span = max(1, notes_per_track) * tpb // 2
    conductor = [(0, 0, mido.MetaMessage("set_tempo", tempo=rng.randint(300_000, 900_000)))]
    conductor.append(
        (
            0,
            1,
            mido.MetaMessage(
                "time_signature", numerator=rng.choice([2, 3, 4, 6]), denominator=rng.choice([4, 8])
            ),
        )
    )
    conductor.append(
        (
            0,
            2,
            mido.MetaMessage("key_signature", key=rng.choice(["C", "G", "Bb", "F#m", "Am", "Eb"])),
        )
    )
    for _ in range(rng.randint(0, 5)):
        conductor.append(
            (
                rng.randrange(span),
                3,
                mido.MetaMessage("set_tempo", tempo=rng.randint(250_000, 1_200_000)),
            )
        )
    if rng.random() < 0.3:
        conductor.append(
            (rng.randrange(span), 3, mido.MetaMessage("time_signature", numerator=6, denominator=8))
        )
    conductor.append((span, 4, mido.MetaMessage("marker", text="end")))
    tracks = [_track(conductor, rng.choice([0, 0, tpb]))]
    for t in range(n_tracks):
        drums = rng.random() < 0.15
        channel = 9 if drums else (0 if shared_channel else t % 9)
        events: list[tuple[int, int, mido.Message]] = [
            (0, 0, mido.MetaMessage("track_name", name=f"voice {t}")),
            (0, 1, mido.Message("program_change", channel=channel, program=rng.randrange(128))),
            (0, 1, mido.Message("control_change", channel=channel, control=7, value=100)),
        ]
        if rng.random() < 0.3:
            events.append(
                (
                    rng.randrange(span),
                    1,
                    mido.Message("program_change", channel=channel, program=rng.randrange(128)),
                )
            )
        if rng.random() < 0.2:
            events.append(
                (rng.randrange(span), 1, mido.Message("sysex", data=[0x7E, 0x7F, 0x09, 0x01]))
            )
        for _ in range(rng.randint(0, 10)):
            events.append(
                (
                    rng.randrange(span),
                    1,
                    mido.Message("pitchwheel", channel=channel, pitch=rng.randint(-8192, 8191)),
                )
            )
        low = 35 if drums else rng.randint(30, 70)
        for _ in range(notes_per_track):
            start = rng.randrange(span)
            length = rng.choice(
                [0, 1, tpb // 4 or 1, tpb // 2 or 1, tpb, 2 * tpb, rng.randint(1, 4 * tpb)]
            )
            pitch = rng.randint(low, min(127, low + 24))
            velocity = rng.randint(1, 127)
            events.append(
                (start, 2, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity))
            )
            if rng.random() < 0.01:
                continue  # unclosed note-on: dropped by the pairing rule
            off = (
                mido.Message("note_on", channel=channel, note=pitch, velocity=0)
                if rng.random() < 0.5
                else mido.Message("note_off", channel=channel, note=pitch, velocity=64)
            )
            events.append((start + length, 1, off))
        if rng.random() < 0.2:
            events.append(
                (span + rng.randrange(4 * tpb), 3, mido.MetaMessage("text", text="late text"))
            )
        tracks.append(_track(events, rng.choice([0, 0, 1, tpb])))
    if midi_type is None:
        midi_type = 1
    if midi_type == 0:
        merged = mido.merge_tracks(tracks)
        tracks = [merged]
    midi = mido.MidiFile(type=midi_type, ticks_per_beat=tpb)
    midi.tracks.extend(tracks)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()
