"""Tag columns derived at merge time from the MIDI stage's raw values (``--tags midicaps``).

Public API: ``TAG_SETS``, ``MIDICAPS_TAGS`` (column name -> Arrow type), ``tag_names(tags, taken)``
and ``midicaps_columns(midi_rows)`` (Arrow arrays with MidiCaps' names and types), plus
``aarden_essen_keys(distributions)`` for the key.

Tags follow MidiCaps' ``pipeline.py`` (AMAAI-Lab/MidiCaps); ``docs/tags.md`` has the rules and
the agreement measured against MidiCaps' own music21/mido code. In short:
- ``key``: music21's default key analysis (Aarden-Essen weights, Pearson correlation with the
  pitch-class sums of quantised note lengths), ``tonic + " " + mode`` with ``-`` written ``b``.
  Ties go where music21's descending sort puts them: the higher tonic, minor before major.
- ``tempo``: the first tempo event's bpm rounded half to even; 120 (the MIDI default) when the
  file sets none (MidiCaps wrote an empty string there).
- ``tempo_word``: MidiCaps drew one of two scales at random per file; ours is always the Italian
  one (Grave .. Prestissimo) -- deterministic, and the finer of the two.
- ``duration`` / ``duration_word``: ``duration_s`` (mido's ``length``) rounded half to even, and
  MidiCaps' words at 30 / 120 / 300 s.
- ``time_signature``: ``start_time_signature``, 4/4 when none (music21's default).
- ``instrument_numbers_sorted`` / ``instrument_summary``: ``instrument_ranking`` and MidiCaps'
  instrument names for it, duplicates dropped, top 5.

The tags take MidiCaps' names, replacing amtprep's own ``time_signature`` feature in the final
rows. A name the input already carries (MidiCaps' ``train.json`` has ``key``, ``tempo``, ...)
stays the input's; the tag is then written ``amtprep_<name>`` beside it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

TAG_SETS = ("midicaps",)
CLASH_PREFIX = "amtprep_"

MIDICAPS_TAGS: dict[str, pa.DataType] = {
    "key": pa.string(),
    "time_signature": pa.string(),
    "tempo": pa.int64(),
    "tempo_word": pa.string(),
    "duration": pa.int64(),
    "duration_word": pa.string(),
    "instrument_summary": pa.list_(pa.string()),
    "instrument_numbers_sorted": pa.list_(pa.int64()),
}

DEFAULT_BPM = 120.0
TEMPO_MARKS = (40, 60, 70, 90, 110, 140, 160, 210)
TEMPO_WORDS = (
    "Grave", "Largo", "Adagio", "Andante", "Moderato", "Allegro", "Vivace", "Presto", "Prestissimo",
)  # fmt: skip
DURATION_MARKS = (30, 120, 300)
DURATION_WORDS = ("Short fragment", "Short song", "Song", "Long piece")

# MidiCaps' instruments.csv, last column: the name it writes for each program (128 = Drums).
INSTRUMENT_NAMES = (
    "Piano", "Piano", "Electric Piano", "Honky-tonk Piano", "Piano", "Piano", "Harpsichord",
    "Clavinet", "Celesta", "Glockenspiel", "Music box", "Vibraphone", "Marimba", "Xylophone",
    "Tubular Bells", "Dulcimer", "Hammond Organ", "Percussive Organ", "Rock Organ", "Church Organ",
    "Reed Organ", "Accordion", "Harmonica", "Tango Accordion", "Acoustic Guitar",
    "Acoustic Guitar", "Electric Guitar", "Clean Electric Guitar", "Electric Guitar",
    "Overdriven Guitar", "Distortion Guitar", "Guitar Harmonics", "Acoustic Bass", "Electric Bass",
    "Electric Bass", "Fretless Bass", "Slap Bass", "Slap Bass", "Synth Bass", "Synth Bass",
    "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings",
    "Orchestral Harp", "Timpani", "String Ensemble", "String Ensemble", "Synth Strings",
    "Synth Strings", "Choir Aahs", "Voice Oohs", "Synth Voice", "Orchestra Hit", "Trumpet",
    "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass",
    "Synth Brass", "Soprano Saxophone", "Alto Saxophone", "Tenor Saxophone", "Baritone Saxophone",
    "Oboe", "English Horn", "Bassoon", "Clarinet", "Piccolo", "Flute", "Recorder", "Pan Flute",
    "Bottle Blow", "Shakuhachi", "Whistle", "Ocarina", "Synth Lead", "Synth Lead", "Calliope Lead",
    "Chiffer Lead", "Charang Lead", "Synth Voice", "Synth Lead", "Brass Lead", "Synth Pad",
    "Synth Pad", "Synth Pad", "Synth Pad", "Synth Pad", "Synth Pad", "Synth Pad", "Synth Pad",
    "Synth Effects", "Synth Effects", "Synth Effects", "Synth Effects", "Synth Effects",
    "Synth Effects", "Synth Effects", "Synth Effects", "Sitar", "Banjo", "Shamisen", "Koto",
    "Kalimba", "Bagpipe", "Fiddle", "Shana", "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock",
    "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal", "Guitar Fret Noise",
    "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter", "Applause",
    "Gunshot", "Drums",
)  # fmt: skip
SUMMARY_SIZE = 5

# music21 AardenEssen.getWeights, tonic first.
_AE_MAJOR = (17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587,
             0.291248, 22.062, 0.145624, 8.15494, 0.232998, 4.95122)  # fmt: skip
_AE_MINOR = (18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362,
             0.702494, 18.6161, 4.56621, 1.93186, 7.37619, 1.75623)  # fmt: skip
# music21 names a tonic pitch class by Pitch(pc), then respells keys outside its valid lists
# (G# major -> Ab major); "-" is written "b" as MidiCaps does.
_MAJOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
_KEY_NAMES = tuple(
    f"{name} {mode}"
    for pc in range(12)
    for name, mode in ((_MAJOR_NAMES[pc], "major"), (_MINOR_NAMES[pc], "minor"))
)  # index pc * 2 + (1 for minor): increasing in music21's tie order


def _profiles() -> np.ndarray:
    """(24, 12) rotated weights, row pc * 2 + mode: weight of pitch class j for tonic pc."""
    rows = []
    j = np.arange(12)
    for pc in range(12):
        for weights in (_AE_MAJOR, _AE_MINOR):
            rows.append(np.asarray(weights)[(j - pc) % 12])
    return np.array(rows)


_PROFILES = _profiles()


def aarden_essen_keys(distributions: np.ndarray) -> list[str | None]:
    """``distributions``: (n, 12) pitch-class weights, NaN rows for files without pitched notes.

    Pearson correlation of each row with the 24 rotated profiles, as music21's
    ``_getDifference`` computes it (0 where either side has no variance); the best key wins,
    ties to the last in (tonic, minor) order, which is where music21's reversed sort puts them.
    """
    dist = np.asarray(distributions, dtype=np.float64).reshape(-1, 12)
    missing = np.isnan(dist).any(axis=1)
    dist = np.where(missing[:, None], 0.0, dist)
    centred_d = dist - dist.mean(axis=1, keepdims=True)
    centred_p = _PROFILES - _PROFILES.mean(axis=1, keepdims=True)
    top = centred_d @ centred_p.T  # (n, 24)
    spread_d = (centred_d**2).sum(axis=1)[:, None]
    spread_p = (centred_p**2).sum(axis=1)[None, :]
    denominator = np.sqrt(spread_d * spread_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = np.where(denominator > 0, top / denominator, 0.0)
    best = 23 - np.argmax(coef[:, ::-1], axis=1)
    return [None if gone else _KEY_NAMES[b] for gone, b in zip(missing, best.tolist(), strict=True)]


def _word(value: int | None, marks: tuple, words: tuple) -> str | None:
    if value is None:
        return None
    return words[sum(1 for mark in marks if value > mark)]


def _summary(ranking: list[int] | None) -> list[str] | None:
    if ranking is None:
        return None
    names: list[str] = []
    for program in ranking:
        name = INSTRUMENT_NAMES[program]
        if name not in names:
            names.append(name)
    return names[:SUMMARY_SIZE]


def _rounded(value: float | None) -> int | None:
    return None if value is None else int(np.round(value))


def midicaps_columns(midi_rows: pa.Table) -> dict[str, pa.Array]:
    """MidiCaps-named tag columns for MIDI shard rows (null on rows without features)."""
    ok = [status == "ok" for status in midi_rows.column("status").to_pylist()]
    bpm = [
        (DEFAULT_BPM if v is None else v) if good else None
        for v, good in zip(midi_rows.column("first_tempo_bpm").to_pylist(), ok, strict=True)
    ]
    tempo = [_rounded(v) for v in bpm]
    duration = [_rounded(v) for v in midi_rows.column("duration_s").to_pylist()]
    signature = [
        (v or "4/4") if good else None
        for v, good in zip(midi_rows.column("start_time_signature").to_pylist(), ok, strict=True)
    ]
    quarters = midi_rows.column("pitch_class_quarters").to_pylist()
    dist = np.array([[np.nan] * 12 if q is None else q for q in quarters], dtype=np.float64)
    ranking = midi_rows.column("instrument_ranking").to_pylist()
    values = {
        "key": aarden_essen_keys(dist) if len(dist) else [],
        "time_signature": signature,
        "tempo": tempo,
        "tempo_word": [_word(v, TEMPO_MARKS, TEMPO_WORDS) for v in tempo],
        "duration": duration,
        "duration_word": [_word(v, DURATION_MARKS, DURATION_WORDS) for v in duration],
        "instrument_summary": [_summary(r) for r in ranking],
        "instrument_numbers_sorted": ranking,
    }
    return {name: pa.array(values[name], kind) for name, kind in MIDICAPS_TAGS.items()}


def tag_names(tags: tuple[str, ...], taken: set[str]) -> dict[str, str]:
    """Tag column -> name in the final rows: its own, or ``amtprep_<name>`` where the input
    already carries a column of that name."""
    if "midicaps" not in tags:
        return {}
    return {name: CLASH_PREFIX + name if name in taken else name for name in MIDICAPS_TAGS}
