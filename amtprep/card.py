"""The dataset card: ``README.md`` beside the final Parquet files.

Public API:
    write_dataset_card(final_dir, schema, counts, settings) -> Path
    COLUMN_DESCRIPTIONS     one line per column amtprep writes; other columns came from the input

The YAML front matter carries a ``configs`` block, so ``datasets.load_dataset(final_dir)`` and the
Hugging Face Hub find the ``data-*.parquet`` files as the train split. The body lists the schema
(every column with its Arrow type and meaning), the model and settings used, and the counts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

import amtprep

CARRIED = "carried from the input file"
PROVENANCE_PREFIX = "amtprep."  # schema metadata keys the stages write

COLUMN_DESCRIPTIONS = {
    "idx": "0-based position of the record in the input file; the key across stages",
    "id": "record id (the input's id column when it has one)",
    "midi_path": "MIDI path as written in the input file",
    "caption": "caption text as read from the input file",
    "status": "ok or failed",
    "error_type": "short name of the failure (null when ok)",
    "error": "failure detail (null when ok)",
    "content_sha256": "SHA-256 of the MIDI file's bytes",
    "content_md5": "MD5 of the MIDI file's bytes (the file MD5 Lakh and GigaMIDI join on)",
    "notes_hash": "blake2b-128 of the notes (ms times, pitch, velocity, program), sorted: "
    "equal for the same music whatever the tracks, channels and meta events (docs/dedup.md)",
    "duplicate_of": "idx of the first row with the same notes (or bytes); null for that first "
    "row and for rows without duplicates",
    "duplicate_kind": "exact (same bytes as an earlier row) or musical (same notes); null when "
    "duplicate_of is null",
    "parser": "MIDI backend that parsed the file (mido or symusic)",
    "ticks_per_beat": "MIDI time division in ticks per quarter note (null for SMPTE timing)",
    "midi_type": "Standard MIDI File type (0, 1 or 2)",
    "n_tracks": "number of tracks in the file",
    "duration_s": "time of the last event in seconds, tempo changes applied",
    "n_notes": "number of notes (paired note-on/note-off), drums included",
    "has_drums": "whether any note is on the drum channel (MIDI channel 10)",
    "tempo_bpm": "initial tempo in beats per minute (120 when the file sets none)",
    "n_tempo_changes": "number of later tempo events that change the tempo",
    "time_signature": 'initial time signature, e.g. "4/4" (null when the file has none)',
    "n_time_signature_changes": "number of later time-signature events that change it",
    "key_signature": 'initial key-signature meta event, e.g. "A minor" (null when none)',
    "estimated_key": "key estimated from the pitch-class histogram",
    "key_confidence": "correlation of the best key profile with the pitch-class histogram",
    "pitch_min": "lowest pitched (non-drum) MIDI note number",
    "pitch_max": "highest pitched (non-drum) MIDI note number",
    "pitch_mean": "mean pitched MIDI note number",
    "velocity_mean": "mean note-on velocity (1-127)",
    "velocity_std": "population standard deviation of note-on velocity",
    "polyphony_mean": "total note time divided by the time at least one note sounds",
    "polyphony_max": "most notes sounding at once",
    "notes_per_second": "n_notes divided by duration_s",
    "programs": "distinct General MIDI programs used, sorted; 128 means drums",
    "top_instruments": "up to 5 programs ranked by total note time (128 means drums)",
    "pitch_class_histogram": "duration-weighted pitch-class distribution C..B, sums to 1",
    "first_tempo_bpm": "bpm of the first tempo event in merged order (null when none)",
    "start_time_signature": "time signature music21 reads at offset 0 (null when none)",
    "instrument_ranking": "programs ranked by MidiCaps' instrument time (128 means drums)",
    "pitch_class_quarters": "pitch-class sums of music21-quantised note lengths in quarters",
    "key": 'MidiCaps tag: Aarden-Essen key as music21 names it, e.g. "Bb major"',
    "tempo": "MidiCaps tag: first tempo in bpm, rounded (120 when the file sets none)",
    "tempo_word": "MidiCaps tag: Italian tempo marking from the tempo",
    "duration": "MidiCaps tag: duration_s rounded to whole seconds",
    "duration_word": "MidiCaps tag: Short fragment / Short song / Song / Long piece",
    "instrument_summary": "MidiCaps tag: up to 5 distinct instrument names, most used first",
    "instrument_numbers_sorted": "MidiCaps tag: programs ranked by instrument time",
    "notes": "note sequence ordered by start: pitch, velocity, start_s, end_s, program, is_drum",
    "n_tokens": "caption length in model tokens, special tokens included, after truncation "
    "(at most max_length)",
    "truncated": "whether the caption was longer than max_length and truncated",
    "embedding": "caption embedding from the text model (see Model and settings)",
}


def _yaml_front_matter(rows: int | None) -> str:
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        '    path: "data-*.parquet"',
        "tags:",
        "- midi",
        "- music",
        "- captions",
        "- embeddings",
    ]
    if rows is not None:
        lines += ["size_categories:", f"- {_size_category(rows)}"]
    return "\n".join([*lines, "---"]) + "\n"


def _size_category(rows: int) -> str:
    """The Hub's size_categories vocabulary."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):  # fmt: skip
        if rows < bound:
            return name
    return "n>10M"


def _type_name(arrow_type: pa.DataType) -> str:
    """``list<item: int16>`` -> ``list<int16>``: the child field's name is noise to a reader."""
    return re.sub(r"\b(item|element): ", "", str(arrow_type))


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _format_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _rows(counts: dict[str, Any]) -> int | None:
    for key in ("rows", "final_rows", "n_rows"):
        if isinstance(counts.get(key), int):
            return counts[key]
    return None


def _provenance(schema: pa.Schema) -> list[tuple[str, str]]:
    """What the stages recorded in the Parquet schema metadata (model id, revision, pooling...)."""
    entries = []
    for key, value in (schema.metadata or {}).items():
        name = key.decode("utf-8", "replace")
        if name.startswith(PROVENANCE_PREFIX):
            entries.append((f"`{name}`", f"`{value.decode('utf-8', 'replace')}`"))
    return entries


INTRO = (
    "Paired MIDI files and captions, preprocessed by amtprep {version}: features and the note "
    "sequence of each MIDI file, and an embedding of each caption. One row per input record that "
    "succeeded in both stages, ordered by `idx`; records that failed are counted below.\n"
)
LOADING = """```python
from datasets import load_dataset

ds = load_dataset("path/to/this/folder", split="train")
# or: polars.read_parquet("path/to/this/folder/data-*.parquet")
```
"""


def render_card(schema: pa.Schema, counts: dict[str, Any], settings: dict[str, Any]) -> str:
    """The card's text (``write_dataset_card`` writes it)."""
    columns = [
        (f"`{f.name}`", f"`{_type_name(f.type)}`", COLUMN_DESCRIPTIONS.get(f.name, CARRIED))
        for f in schema
    ]
    settings_rows = [(f"`{k}`", "" if v is None else f"`{v}`") for k, v in _flatten(settings)]
    count_rows = [(k, _format_count(v)) for k, v in _flatten(counts)]
    parts = [
        _yaml_front_matter(_rows(counts)),
        "# MIDI + caption dataset (amtprep)\n",
        INTRO.format(version=amtprep.__version__),
        "## Loading\n",
        LOADING,
        "## Schema\n",
        _table(("column", "Arrow type", "description"), columns) + "\n",
        "## Model and settings\n",
        (_table(("setting", "value"), settings_rows) if settings_rows else "Not recorded.") + "\n",
    ]
    provenance = _provenance(schema)
    if provenance:
        parts += [
            "Recorded in the Parquet schema metadata:\n",
            _table(("key", "value"), provenance) + "\n",
        ]
    parts += [
        "## Counts\n",
        (_table(("count", "value"), count_rows) if count_rows else "Not recorded.") + "\n",
    ]
    return "\n".join(parts)


def write_dataset_card(
    final_dir: Path, schema: pa.Schema, counts: dict[str, Any], settings: dict[str, Any]
) -> Path:
    """Write ``<final_dir>/README.md`` and return its path. Raises ``OSError`` if it cannot."""
    path = Path(final_dir) / "README.md"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(render_card(schema, counts or {}, settings or {}), encoding="utf-8")
    os.replace(temporary, path)
    return path
