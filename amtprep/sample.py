"""Synthetic MidiCaps-style sample corpus: genuine multi-track MIDI plus a paired captions file.

Public API:
    generate(out_dir, n, seed=0, fmt="jsonl") -> Path   write ``midi/NNNN.mid`` and ``train.<fmt>``
    make_midi_bytes(rng, index=0, **overrides) -> bytes  one Standard MIDI File
    draw_song(rng, index=0) -> Song                      the plan a file and its caption share
    render_midi(song) -> bytes
    caption_row(song, midi_bytes, location) -> dict      the paired row (caption agrees with the file)

CLI: ``python -m amtprep.sample --n 50 --out data/sample [--seed 0] [--format jsonl]``.

The files carry what real corpora carry: several programs, drums on channel 10 (index 9), tempo
and time-signature changes, chord overlaps and same-pitch overlaps on one channel, note_on with
velocity 0 as note-off, key-signature metas, types 0 and 1, and ticks per beat from 96 to 10080.
Structural quirks cycle with the file index at different periods, so any ~10 consecutive files
cover them all; the music itself is drawn from the rng. The same seed gives identical bytes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mido

FORMATS = ("jsonl", "json", "csv", "parquet")
DRUM_CHANNEL = 9
TICKS_PER_BEAT_CYCLE = (480, 96, 960, 10080, 480, 384, 120, 480)

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
MAJOR_QUALITIES = ("", "m", "m", "", "", "m", "dim")
MINOR_QUALITIES = ("m", "dim", "", "m", "m", "", "")
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 0), (1, 4, 0, 0), (0, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4)),
}
SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
# Tonic spellings that exist as mido key-signature names (and read naturally in a caption).
MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
FLAT_SPELLED_KEYS = ("F major", "D minor", "G minor", "C minor", "F minor")

INSTRUMENT_NAMES = {
    0: "piano", 4: "electric piano", 11: "vibraphone", 19: "church organ", 22: "harmonica",
    24: "acoustic guitar", 25: "steel-string guitar", 27: "clean electric guitar",
    29: "overdriven guitar", 30: "distortion guitar", 32: "acoustic bass", 33: "electric bass",
    34: "picked bass", 38: "synth bass", 39: "synth bass", 40: "violin", 42: "cello",
    43: "contrabass", 46: "harp", 48: "string ensemble", 49: "slow strings", 52: "choir",
    56: "trumpet", 60: "french horn", 61: "brass section", 65: "alto saxophone", 66: "tenor saxophone",
    71: "clarinet", 73: "flute", 80: "square lead", 81: "sawtooth lead", 88: "synth pad",
    89: "warm pad", 91: "choir pad", 105: "banjo",
}  # fmt: skip


@dataclass(frozen=True)
class GenreStyle:
    companions: tuple[str, ...]
    chords: tuple[int, ...]
    melody: tuple[int, ...]
    bass: tuple[int, ...]
    drums_probability: float
    bpm_range: tuple[int, int]
    time_signatures: tuple[str, ...]
    moods: tuple[str, ...]


GENRES = {
    "electronic": GenreStyle(("ambient", "dance", "pop"), (88, 89, 4, 0), (80, 81, 0), (38, 39),
                             1.0, (110, 140), ("4/4",), ("energetic", "dark", "melodic", "happy", "meditative")),
    "pop": GenreStyle(("electronic", "rock", "dance"), (0, 4, 24, 48), (0, 73, 65, 80), (33, 34),
                      1.0, (88, 128), ("4/4", "4/4", "3/4"), ("happy", "love", "melodic", "uplifting", "energetic")),
    "rock": GenreStyle(("pop", "metal", "blues"), (29, 30, 27), (30, 29, 0), (33, 34),
                       1.0, (100, 160), ("4/4", "4/4", "2/4"), ("energetic", "dark", "powerful", "motivational")),
    "classical": GenreStyle(("soundtrack", "romantic"), (48, 0, 46, 19), (40, 73, 71, 0), (42, 43, 32),
                            0.0, (60, 132), ("3/4", "4/4", "6/8", "2/4"), ("melodic", "emotional", "romantic", "epic", "sad")),
    "jazz": GenreStyle(("blues", "lounge"), (0, 4, 11), (65, 56, 66), (32,),
                       1.0, (80, 180), ("4/4", "3/4"), ("relaxing", "romantic", "melodic", "upbeat")),
    "ambient": GenreStyle(("electronic", "new age"), (88, 89, 91, 52), (0, 11, 73), (38, 32),
                          0.0, (60, 90), ("4/4", "6/8"), ("relaxing", "meditative", "dark", "calm", "dreamy")),
    "soundtrack": GenreStyle(("classical", "epic", "ambient"), (48, 49, 52, 61), (40, 60, 73, 0), (42, 43),
                             0.5, (70, 130), ("4/4", "3/4", "6/8"), ("film", "epic", "dark", "emotional", "adventurous")),
    "folk": GenreStyle(("country", "acoustic"), (24, 25, 46), (73, 40, 22, 105), (32,),
                       0.5, (80, 130), ("3/4", "4/4", "6/8"), ("happy", "calm", "melodic", "nostalgic")),
}  # fmt: skip
DRUM_GENRES = tuple(name for name, style in GENRES.items() if style.drums_probability == 1.0)

TEMPO_MARKINGS = (  # (upper bound bpm, Italian marking, plain word)
    (66, "Largo", "slow"), (76, "Adagio", "slow"), (108, "Andante", "moderate"),
    (120, "Moderato", "moderate"), (156, "Allegro", "fast"), (176, "Vivace", "lively"),
    (10_000, "Presto", "very fast"),
)  # fmt: skip


@dataclass(frozen=True)
class Part:
    role: str  # chords | melody | bass | drums
    program: int
    channel: int


@dataclass(frozen=True)
class Song:
    genre: tuple[str, ...]
    mood: tuple[str, ...]
    tonic: str  # spelled as in MAJOR_TONICS / MINOR_TONICS
    mode: str  # major | minor
    bpm: int
    tempo_changes: tuple[tuple[int, int], ...]  # (bar, bpm) after the initial tempo
    # (bar, numerator, denominator), the first at bar 0
    time_signatures: tuple[tuple[int, int, int], ...]
    n_bars: int
    progression: tuple[int, ...]  # scale degrees, one chord per bar, repeated
    parts: tuple[Part, ...]
    ticks_per_beat: int = 480
    midi_type: int = 1
    velocity_zero_note_off: bool = False
    key_signature_meta: bool = False
    same_pitch_overlap: bool = False
    test_set: bool = False
    note_seed: int = 0
    caption_seed: int = 0

    @property
    def key(self) -> str:
        return f"{self.tonic} {self.mode}"

    @property
    def tonic_pc(self) -> int:
        name = self.tonic
        return (SHARP_NAMES.index(name) if name in SHARP_NAMES else FLAT_NAMES.index(name)) % 12

    @property
    def scale(self) -> tuple[int, ...]:
        return MAJOR_SCALE if self.mode == "major" else MINOR_SCALE


def draw_song(rng: random.Random, index: int = 0) -> Song:
    """Draw one song plan; quirks are fixed by ``index``, music by ``rng``."""
    genre_name = rng.choice(DRUM_GENRES if index % 4 == 2 else tuple(GENRES))
    style = GENRES[genre_name]
    genre = (genre_name, rng.choice(style.companions)) if rng.random() < 0.6 else (genre_name,)
    mood = tuple(rng.sample(style.moods, rng.choice((2, 2, 3))))
    mode = rng.choice(("major", "minor"))
    tonic = rng.choice(MAJOR_TONICS if mode == "major" else MINOR_TONICS)
    bpm = rng.randint(*style.bpm_range)
    n_bars = rng.randint(8, 16)

    numerator, denominator = (int(x) for x in rng.choice(style.time_signatures).split("/"))
    time_signatures = [(0, numerator, denominator)]
    if index % 5 == 0:
        changed = {(4, 4): (3, 4), (3, 4): (4, 4), (6, 8): (9, 8), (2, 4): (3, 4)}[
            (numerator, denominator)
        ]
        time_signatures.append((n_bars // 2, *changed))

    tempo_changes: list[tuple[int, int]] = []
    if index % 3 == 0:
        tempo_changes.append((n_bars // 2 + 1, round(bpm * rng.choice((0.75, 0.85, 1.15, 1.25)))))
        last = tempo_changes[-1][1]
        tempo_changes.append((n_bars - 1, round(last * 0.8)))  # a ritardando into the last bar

    parts = [
        Part("chords", rng.choice(style.chords), 0),
        Part("melody", rng.choice(style.melody), 1),
        Part("bass", rng.choice(style.bass), 2),
    ]
    if rng.random() < style.drums_probability:
        parts.append(Part("drums", 0, DRUM_CHANNEL))

    return Song(
        genre=genre,
        mood=mood,
        tonic=tonic,
        mode=mode,
        bpm=bpm,
        tempo_changes=tuple(tempo_changes),
        time_signatures=tuple(time_signatures),
        n_bars=n_bars,
        progression=rng.choice(PROGRESSIONS[mode]),
        parts=tuple(parts),
        ticks_per_beat=TICKS_PER_BEAT_CYCLE[index % len(TICKS_PER_BEAT_CYCLE)],
        midi_type=0 if index % 7 == 3 else 1,
        velocity_zero_note_off=index % 3 == 1,
        key_signature_meta=index % 2 == 0,
        same_pitch_overlap=index % 4 == 1,
        test_set=index % 10 == 9,
        note_seed=rng.getrandbits(32),
        caption_seed=rng.getrandbits(32),
    )


# --- rendering ---------------------------------------------------------------------------------

Event = tuple[int, int, mido.Message | mido.MetaMessage]  # (tick, order at the same tick, message)
# Order within a tick: metas, then programs, then note-offs before note-ons so that back-to-back
# notes of one pitch do not overlap.
_META, _PROGRAM, _NOTE_OFF, _NOTE_ON = range(4)


def _bars(song: Song) -> list[tuple[int, int, int, int]]:
    """(start tick, length in ticks, numerator, denominator) for every bar."""
    signatures = {bar: (num, den) for bar, num, den in song.time_signatures}
    bars, tick, current = [], 0, signatures[0]
    for bar in range(song.n_bars):
        current = signatures.get(bar, current)
        length = current[0] * song.ticks_per_beat * 4 // current[1]
        bars.append((tick, length, *current))
        tick += length
    return bars


def _chord_pitches(song: Song, degree: int, octave: int) -> list[int]:
    base = 12 * (octave + 1) + song.tonic_pc
    return [base + song.scale[(degree + s) % 7] + 12 * ((degree + s) // 7) for s in (0, 2, 4)]


def _part_events(song: Song, part: Part, rng: random.Random) -> list[Event]:
    events: list[Event] = []

    def note(pitch: int, start: int, end: int, low: int, high: int) -> None:
        on = mido.Message(
            "note_on", channel=part.channel, note=pitch, velocity=rng.randint(low, high)
        )
        if song.velocity_zero_note_off:
            off = mido.Message("note_on", channel=part.channel, note=pitch, velocity=0)
        else:
            off = mido.Message("note_off", channel=part.channel, note=pitch, velocity=64)
        events.extend([(start, _NOTE_ON, on), (end, _NOTE_OFF, off)])

    if part.role != "drums":
        change = mido.Message("program_change", channel=part.channel, program=part.program)
        events.append((0, _PROGRAM, change))
    sixteenth = song.ticks_per_beat // 4
    melody_pitch = 12 * 6 + song.tonic_pc
    for bar, (start, length, numerator, denominator) in enumerate(_bars(song)):
        degree = song.progression[bar % len(song.progression)]
        beat = song.ticks_per_beat * 4 // denominator
        end_of_bar = start + length
        if part.role == "chords":
            # Same-pitch overlap: held chords spill an eighth into the next bar; shared tones re-strike.
            spill = 2 * sixteenth if song.same_pitch_overlap and bar + 1 < song.n_bars else 0
            for pitch in _chord_pitches(song, degree, 4):
                note(pitch, start, end_of_bar + spill, 55, 80)
        elif part.role == "bass":
            root = _chord_pitches(song, degree, 2)[0]
            step = beat * (2 if numerator % 2 == 0 and denominator == 4 else 1)
            for onset in range(start, end_of_bar, step):
                note(root + rng.choice((0, 0, 12)), onset, onset + step - sixteenth, 70, 100)
        elif part.role == "melody":
            tick = start
            while tick < end_of_bar:
                duration = min(rng.choice((1, 2, 2, 4, 4, 6, 8)) * sixteenth, end_of_bar - tick)
                if rng.random() > 0.15:  # otherwise a rest
                    scale_steps = [melody_pitch - song.tonic_pc + s for s in song.scale]
                    melody_pitch = max(60, min(88, rng.choice(scale_steps) + rng.choice((0, 12))))
                    note(melody_pitch, tick, tick + duration, 60, 110)
                    if song.same_pitch_overlap and duration >= 4 * sixteenth and rng.random() < 0.5:
                        # A re-strike before the held note ends: FIFO pairing must keep both notes.
                        restrike = tick + duration // 2
                        note(melody_pitch, restrike, tick + duration + 2 * sixteenth, 60, 110)
                tick += duration
        else:  # drums: kick on the downbeat, snare on odd beats, hi-hats between
            for n in range(numerator):
                onset = start + n * beat
                note(36 if n == 0 else 38 if n % 2 else 42, onset, onset + sixteenth, 80, 120)
                if denominator == 4:
                    note(42, onset + beat // 2, onset + beat // 2 + sixteenth, 50, 80)
            if bar % 8 == 0:
                note(49, start, start + beat, 100, 120)  # crash
    return events


def _conductor_events(song: Song) -> list[Event]:
    events: list[Event] = [(0, _META, mido.MetaMessage("track_name", name=" ".join(song.genre)))]
    bars = _bars(song)
    for bar, numerator, denominator in song.time_signatures:
        meta = mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator)
        events.append((bars[bar][0], _META, meta))
    if song.key_signature_meta:
        key = song.tonic + ("m" if song.mode == "minor" else "")
        events.append((0, _META, mido.MetaMessage("key_signature", key=key)))
    for bar, bpm in ((0, song.bpm), *song.tempo_changes):
        events.append(
            (bars[bar][0], _META, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
        )
    return events


def _track(events: list[Event], name: str | None = None) -> mido.MidiTrack:
    track = mido.MidiTrack()
    if name:
        track.append(mido.MetaMessage("track_name", name=name))
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):  # stable: keeps draw order
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def render_midi(song: Song) -> bytes:
    """The Standard MIDI File bytes for ``song`` (deterministic)."""
    rng = random.Random(song.note_seed)
    midi = mido.MidiFile(type=song.midi_type, ticks_per_beat=song.ticks_per_beat)
    part_events = [_part_events(song, part, rng) for part in song.parts]
    if song.midi_type == 0:
        merged = _conductor_events(song) + [e for events in part_events for e in events]
        midi.tracks.append(_track(merged))
    else:
        midi.tracks.append(_track(_conductor_events(song)))
        for part, events in zip(song.parts, part_events, strict=True):
            name = "drums" if part.role == "drums" else INSTRUMENT_NAMES[part.program]
            midi.tracks.append(_track(events, name))
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def make_midi_bytes(rng: random.Random, index: int = 0, **overrides: Any) -> bytes:
    """One MIDI file; ``overrides`` replace ``Song`` fields, e.g. ``ticks_per_beat=10080, midi_type=0``."""
    return render_midi(replace(draw_song(rng, index), **overrides))


# --- captions ----------------------------------------------------------------------------------


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return "An" if word[0] in "aeiou" else "A"


def _tempo_marking(bpm: int) -> tuple[str, str]:
    return next((marking, word) for bound, marking, word in TEMPO_MARKINGS if bpm < bound)


def _chord_names(song: Song) -> list[str]:
    flat_key = "b" in song.tonic or song.key in FLAT_SPELLED_KEYS
    names = FLAT_NAMES if flat_key else SHARP_NAMES
    qualities = MAJOR_QUALITIES if song.mode == "major" else MINOR_QUALITIES
    chords = []
    for degree in song.progression:
        name = names[(song.tonic_pc + song.scale[degree]) % 12] + qualities[degree]
        if name not in chords:
            chords.append(name)
    return chords


def caption_text(song: Song, duration_s: int) -> str:
    """A MidiCaps-style caption (20-60 words) that agrees with what ``render_midi`` writes."""
    rng = random.Random(song.caption_seed)
    instruments = list(
        dict.fromkeys(INSTRUMENT_NAMES[p.program] for p in song.parts if p.role != "drums")
    )
    if any(p.role == "drums" for p in song.parts):
        instruments.append("drums")
    genre, mood = song.genre[0], list(song.mood)
    elements = f" with {song.genre[1]} elements" if len(song.genre) > 1 else ""
    piece = rng.choice(
        ("song", "piece", "composition") + (() if genre == "soundtrack" else ("track",))
    )
    opening = rng.choice((
        f"{_article(mood[0])} {mood[0]} {genre} {piece}{elements}, featuring {_join(instruments)}.",
        f"This {genre} {piece}{elements} features {_join(instruments)}.",
        f"{_article(mood[0])} {mood[0]} {piece} in the {genre} style{elements}, played on {_join(instruments)}.",
    ))  # fmt: skip
    numerator, denominator = song.time_signatures[0][1:]
    ts = f"{numerator}/{denominator}"
    marking, word = _tempo_marking(song.bpm)
    music = rng.choice((
        f"Set in {song.key} with a {ts} time signature, it moves at a {word} tempo of {song.bpm} bpm ({marking}).",
        f"The piece is in {song.key} and {ts} time, with a {word} tempo of {song.bpm} bpm.",
        f"It is written in {song.key}, keeps a {ts} meter and runs at {song.bpm} beats per minute ({marking}).",
    ))  # fmt: skip
    feel = rng.choice((
        f"The composition evokes {_article(mood[0]).lower()} {_join(mood)} atmosphere.",
        f"Its mood is {_join(mood)}.",
        f"The overall feel is {_join(mood)}.",
    ))  # fmt: skip
    # Changes go before the mood, extras after it; each only if the caption stays <= 60 words.
    changes, extras = [], []
    if len(song.time_signatures) > 1:
        _, num2, den2 = song.time_signatures[1]
        changes.append(f"The meter later shifts to {num2}/{den2}.")
    if song.tempo_changes:
        new_bpm = song.tempo_changes[0][1]
        changes.append(
            f"The tempo later {'drops' if new_bpm < song.bpm else 'rises'} to about {new_bpm} bpm."
        )
    if rng.random() < 0.7:
        verb = rng.choice(("revolves around", "cycles through", "is built on"))
        extras.append(f"The chord progression {verb} {_join(_chord_names(song))}.")
    if rng.random() < 0.4:
        extras.append(f"It lasts about {duration_s} seconds.")
    sentences = [opening, music, feel]
    for sentence in changes + extras:
        if len(" ".join([*sentences, sentence]).split()) <= 60:
            at = sentences.index(feel) if sentence in changes else len(sentences)
            sentences.insert(at, sentence)
    return " ".join(sentences)


def caption_row(song: Song, midi_bytes: bytes, location: str) -> dict[str, Any]:
    """The paired row for one file, with MidiCaps column names; duration is measured from the bytes."""
    duration_s = round(mido.MidiFile(file=io.BytesIO(midi_bytes)).length)
    numerator, denominator = song.time_signatures[0][1:]
    return {
        "location": location,
        "caption": caption_text(song, duration_s),
        "genre": list(song.genre),
        "mood": list(song.mood),
        "key": song.key,
        "time_signature": f"{numerator}/{denominator}",
        "tempo": song.bpm,
        "duration": duration_s,
        "test_set": song.test_set,
    }


# --- corpus ------------------------------------------------------------------------------------


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_json(rows: list[dict[str, Any]], path: Path) -> None:
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    # CSV has no list type: list columns are JSON-encoded, as exports of MidiCaps do.
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["location", "caption"])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("location", pa.string()), ("caption", pa.string()), ("genre", pa.list_(pa.string())),
        ("mood", pa.list_(pa.string())), ("key", pa.string()), ("time_signature", pa.string()),
        ("tempo", pa.int64()), ("duration", pa.int64()), ("test_set", pa.bool_()),
    ])  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


_WRITERS = {
    "jsonl": _write_jsonl,
    "json": _write_json,
    "csv": _write_csv,
    "parquet": _write_parquet,
}


def generate(out_dir: Path, n: int, seed: int = 0, fmt: str = "jsonl") -> Path:
    """Write ``n`` MIDI files to ``out_dir/midi/NNNN.mid`` and ``out_dir/train.<fmt>``; return the latter.

    Locations in the paired file are relative to its folder. Raises ``ValueError`` for an unknown
    ``fmt`` or a negative ``n``.
    """
    if fmt not in _WRITERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out_dir = Path(out_dir)
    (out_dir / "midi").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        song = draw_song(rng, index)
        midi_bytes = render_midi(song)
        location = f"midi/{index:04d}.mid"
        (out_dir / location).write_bytes(midi_bytes)
        rows.append(caption_row(song, midi_bytes, location))
    paired = out_dir / f"train.{fmt}"
    _WRITERS[fmt](rows, paired)
    return paired


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m amtprep.sample", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--n", type=int, default=50, help="number of MIDI/caption pairs")
    parser.add_argument("--out", type=Path, default=Path("data/sample"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="jsonl")
    args = parser.parse_args(argv)
    print(generate(args.out, args.n, args.seed, args.fmt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
