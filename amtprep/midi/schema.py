"""The MIDI shard schema and the Arrow table built from per-file results.

Public API:
- ``MIDI_SCHEMA`` (``BASE_FIELDS`` first) and ``RESULT_SCHEMA``: the same columns less the ones
  a record supplies (``idx``, ``id``, ``midi_path``). Column meanings are defined in ``features``.
- ``ColumnGroup``: optional columns a run adds after the base ones (the token columns of
  ``tokens.token_group``); ``midi_schema(groups)`` / ``result_schema(groups)`` are the schemas of
  a run with them (no groups: ``MIDI_SCHEMA`` / ``RESULT_SCHEMA``). Every function below that
  builds or reads rows takes the run's groups or schema, defaulting to none.
- ``result_table(results, groups)``: one row per ``FileResult``; feature columns null on failed
  rows. Workers build it per chunk, so the parent never touches per-file numpy arrays.
- ``in_order(parts, n, schema)``: rows gathered from several result tables back into record order.
- ``build_table(records, results, schema)``: the shard table, record columns beside the results.
- ``to_ipc(table)`` / ``from_ipc(data)``: an Arrow IPC stream, schema included, how result rows
  sit in the cache (a slice's stream holds only its own rows; pickle would hold all).
- ``to_message(table)`` / ``from_message(data, schema)``: one IPC record batch without its schema,
  how a worker's rows cross the pipe (both ends know the run's result schema; half the cost of a
  stream).
- ``list_column(arrays, kind, mask)``: a list column from per-row numpy arrays (None = null row).

List columns are built from flat numpy arrays plus offsets (no Python lists of dicts): one
concatenation per chunk, whatever its size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from amtprep.midi.notes import GM_DRUMS
from amtprep.records import STATUS_FAILED, STATUS_OK, Record
from amtprep.stages import BASE_FIELDS

if TYPE_CHECKING:  # extract imports tokens, which builds its columns with this module
    from amtprep.midi.extract import FileResult

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
    ("first_tempo_bpm", pa.float64()),
    ("start_time_signature", pa.string()),
    ("notes_hash", pa.string()),
]
LIST_FEATURES = [
    ("programs", pa.int16()),
    ("top_instruments", pa.int16()),
    ("instrument_ranking", pa.int16()),
]

_RECORD_COLUMNS = ("idx", "id", "midi_path")
MIDI_SCHEMA = pa.schema(
    [
        *BASE_FIELDS,
        pa.field("midi_path", pa.string()),
        pa.field("content_sha256", pa.string()),
        pa.field("content_md5", pa.string()),
        pa.field("parser", pa.string()),
        *(pa.field(name, kind) for name, kind in SCALAR_FEATURES),
        *(pa.field(name, pa.list_(kind)) for name, kind in LIST_FEATURES),
        pa.field("pitch_class_histogram", pa.list_(pa.float32(), 12)),
        pa.field("pitch_class_quarters", pa.list_(pa.float64(), 12)),
        pa.field("notes", pa.list_(NOTE_TYPE)),
    ]
)

RESULT_SCHEMA = pa.schema([f for f in MIDI_SCHEMA if f.name not in _RECORD_COLUMNS])


@dataclass(frozen=True)
class ColumnGroup:
    """Columns only some runs have (the tokens of a run with ``--tokenizer``), after the base
    columns in every row, failed rows included (null there). ``build(results)`` gives their
    arrays for a chunk, in ``fields`` order; it must be a module-level function (or a partial of
    one) so the group pickles into spawned workers."""

    name: str
    fields: tuple[pa.Field, ...]
    build: Callable[[Sequence[FileResult]], list[pa.Array]]


def midi_schema(groups: Sequence[ColumnGroup] = ()) -> pa.Schema:
    if not groups:
        return MIDI_SCHEMA
    return pa.schema([*MIDI_SCHEMA, *(f for g in groups for f in g.fields)])


def result_schema(groups: Sequence[ColumnGroup] = ()) -> pa.Schema:
    if not groups:
        return RESULT_SCHEMA
    return pa.schema([*RESULT_SCHEMA, *(f for g in groups for f in g.fields)])


def _offsets(lengths: list[int]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))


def list_column(arrays: list[np.ndarray | None], kind: pa.DataType, mask: np.ndarray) -> pa.Array:
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


def _histogram_column(features: list, attr: str, dtype) -> pa.Array:
    values = np.zeros((len(features), 12), dtype)
    mask = np.ones(len(features), bool)
    for i, f in enumerate(features):
        if f is not None and getattr(f, attr) is not None:
            values[i] = getattr(f, attr)
            mask[i] = False
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 12, mask=pa.array(mask))


def result_table(results: Sequence[FileResult], groups: Sequence[ColumnGroup] = ()) -> pa.Table:
    features = [r.features for r in results]
    failed = np.array([f is None for f in features], dtype=bool)
    columns: dict[str, pa.Array] = {
        "status": pa.array([STATUS_FAILED if f else STATUS_OK for f in failed], pa.string()),
        "error_type": pa.array([r.error_type for r in results], pa.string()),
        "error": pa.array([r.error for r in results], pa.string()),
        "content_sha256": pa.array([r.sha256 for r in results], pa.string()),
        "content_md5": pa.array([r.md5 for r in results], pa.string()),
        "parser": pa.array([r.parser for r in results], pa.string()),
    }
    for name, kind in SCALAR_FEATURES:
        columns[name] = pa.array([None if f is None else getattr(f, name) for f in features], kind)
    for name, kind in LIST_FEATURES:
        columns[name] = list_column(
            [None if f is None else getattr(f, name) for f in features], kind, failed
        )
    columns["pitch_class_histogram"] = _histogram_column(
        features, "pitch_class_histogram", np.float32
    )
    columns["pitch_class_quarters"] = _histogram_column(
        features, "pitch_class_quarters", np.float64
    )
    columns["notes"] = _notes_column(features, failed)
    arrays = [columns[f.name] for f in RESULT_SCHEMA]
    for group in groups:
        arrays += group.build(results)
    return pa.Table.from_arrays(arrays, schema=result_schema(groups))


def in_order(
    parts: Sequence[tuple[Sequence[int], pa.Table]], n: int, schema: pa.Schema = RESULT_SCHEMA
) -> pa.Table:
    """``parts`` = (positions, rows) pairs that together cover positions 0..n-1 once each.

    Parts usually hold runs in order (a worker's chunk, a whole batch): sorted by their first
    position they then concatenate without copying a row; only interleaved parts are taken.
    """
    parts = sorted(((p, rows) for p, rows in parts if len(p)), key=lambda part: part[0][0])
    if not parts:
        return schema.empty_table()
    positions = np.concatenate([np.asarray(p, np.int64) for p, _ in parts])
    if positions.size != n:
        raise ValueError(f"{positions.size} rows for {n} positions")
    table = pa.concat_tables([rows for _, rows in parts])
    if np.array_equal(positions, np.arange(n)):
        return table
    order = np.empty(n, np.int64)
    order[positions] = np.arange(n)
    return table.take(order)


def build_table(
    records: Sequence[Record], results: pa.Table, schema: pa.Schema = MIDI_SCHEMA
) -> pa.Table:
    supplied = {
        "idx": pa.array([rec.idx for rec in records], pa.int64()),
        "id": pa.array([rec.id for rec in records], pa.string()),
        "midi_path": pa.array([rec.midi_path for rec in records], pa.string()),
    }
    columns = [
        pa.chunked_array([supplied[f.name]]) if f.name in supplied else results.column(f.name)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(data) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def to_message(rows: pa.Table) -> pa.Buffer:
    return rows.combine_chunks().to_batches()[0].serialize()


def from_message(data, schema: pa.Schema = RESULT_SCHEMA) -> pa.Table:
    return pa.Table.from_batches([pa.ipc.read_record_batch(pa.py_buffer(data), schema)])
