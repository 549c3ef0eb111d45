"""The MIDI shard schema and the Arrow table built from per-file results.

Public API: ``MIDI_SCHEMA`` (``BASE_FIELDS`` first) and ``build_table(rows) -> pa.Table`` where
``rows`` are (Record, FileResult) pairs. Feature columns are null on failed rows. List columns
are built from flat numpy arrays plus offsets (no Python lists of dicts): one concatenation per
batch, whatever its size. Column meanings are defined in ``features``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from amtprep.midi.extract import FileResult
from amtprep.midi.notes import GM_DRUMS
from amtprep.records import STATUS_FAILED, STATUS_OK, Record
from amtprep.stages import BASE_FIELDS

NOTE_TYPE = pa.struct(
    [
        pa.field("pitch", pa.int8(), nullable=False),
        pa.field("velocity", pa.uint8(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("program", pa.int16(), nullable=False),
        pa.field("is_drum", pa.bool_(), nullable=False),
    ]
)

# (column, arrow type) for the scalar features, read by name from MidiFeatures.
SCALAR_FEATURES = [
    ("ticks_per_beat", pa.int32()),
    ("midi_type", pa.int8()),
    ("n_tracks", pa.int32()),
    ("duration_s", pa.float64()),
    ("n_notes", pa.int32()),
    ("has_drums", pa.bool_()),
    ("tempo_bpm", pa.float64()),
    ("n_tempo_changes", pa.int32()),
    ("time_signature", pa.string()),
    ("n_time_signature_changes", pa.int32()),
    ("key_signature", pa.string()),
    ("estimated_key", pa.string()),
    ("key_confidence", pa.float64()),
    ("pitch_min", pa.int8()),
    ("pitch_max", pa.int8()),
    ("pitch_mean", pa.float64()),
    ("velocity_mean", pa.float64()),
    ("velocity_std", pa.float64()),
    ("polyphony_mean", pa.float64()),
    ("polyphony_max", pa.int32()),
    ("notes_per_second", pa.float64()),
]
LIST_FEATURES = [("programs", pa.int16()), ("top_instruments", pa.int16())]

MIDI_SCHEMA = pa.schema(
    [
        *BASE_FIELDS,
        pa.field("midi_path", pa.string()),
        pa.field("content_sha256", pa.string()),
        pa.field("parser", pa.string()),
        *(pa.field(name, kind) for name, kind in SCALAR_FEATURES),
        *(pa.field(name, pa.list_(kind)) for name, kind in LIST_FEATURES),
        pa.field("pitch_class_histogram", pa.list_(pa.float32(), 12)),
        pa.field("notes", pa.list_(NOTE_TYPE)),
    ]
)


def _offsets(lengths: list[int]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))


def _list_column(arrays: list[np.ndarray | None], kind: pa.DataType, mask: np.ndarray) -> pa.Array:
    parts = [a for a in arrays if a is not None]
    flat = np.concatenate(parts) if parts else np.zeros(0)
    lengths = [0 if a is None else a.size for a in arrays]
    values = pa.array(flat.astype(kind.to_pandas_dtype(), copy=False), type=kind)
    return pa.ListArray.from_arrays(_offsets(lengths), values, mask=pa.array(mask))


def _notes_column(features: list, mask: np.ndarray) -> pa.Array:
    present = [f for f in features if f is not None]

    def flat(attr: str, dtype) -> np.ndarray:
        if not present:
            return np.zeros(0, dtype)
        return np.concatenate([getattr(f, attr) for f in present]).astype(dtype, copy=False)

    program = flat("note_program", np.int16)
    structs = pa.StructArray.from_arrays(
        [
            pa.array(flat("note_pitch", np.int8)),
            pa.array(flat("note_velocity", np.uint8)),
            pa.array(flat("note_start_s", np.float64)),
            pa.array(flat("note_end_s", np.float64)),
            pa.array(program),
            pa.array(program == GM_DRUMS),
        ],
        fields=list(NOTE_TYPE),
    )
    lengths = [0 if f is None else f.n_notes for f in features]
    return pa.ListArray.from_arrays(_offsets(lengths), structs, mask=pa.array(mask))


def _histogram_column(features: list) -> pa.Array:
    values = np.zeros((len(features), 12), np.float32)
    mask = np.ones(len(features), bool)
    for i, f in enumerate(features):
        if f is not None and f.pitch_class_histogram is not None:
            values[i] = f.pitch_class_histogram
            mask[i] = False
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 12, mask=pa.array(mask))


def build_table(rows: Sequence[tuple[Record, FileResult]]) -> pa.Table:
    features = [r.features for _, r in rows]
    failed = np.array([f is None for f in features], dtype=bool)
    columns: dict[str, pa.Array] = {
        "idx": pa.array([rec.idx for rec, _ in rows], pa.int64()),
        "id": pa.array([rec.id for rec, _ in rows], pa.string()),
        "status": pa.array([STATUS_FAILED if f else STATUS_OK for f in failed], pa.string()),
        "error_type": pa.array([r.error_type for _, r in rows], pa.string()),
        "error": pa.array([r.error for _, r in rows], pa.string()),
        "midi_path": pa.array([rec.midi_path for rec, _ in rows], pa.string()),
        "content_sha256": pa.array([r.sha256 for _, r in rows], pa.string()),
        "parser": pa.array([r.parser for _, r in rows], pa.string()),
    }
    for name, kind in SCALAR_FEATURES:
        columns[name] = pa.array([None if f is None else getattr(f, name) for f in features], kind)
    for name, kind in LIST_FEATURES:
        columns[name] = _list_column(
            [None if f is None else getattr(f, name) for f in features], kind, failed
        )
    columns["pitch_class_histogram"] = _histogram_column(features)
    columns["notes"] = _notes_column(features, failed)
    return pa.Table.from_arrays(list(columns.values()), schema=MIDI_SCHEMA)
