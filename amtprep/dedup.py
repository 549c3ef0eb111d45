"""Duplicate groups over the committed MIDI rows, and the groups that leak across a split.

Public API: ``DEDUP_MODES``, ``SPLIT_COLUMN``, ``KINDS``, ``find_duplicates(shard_dir, entries,
data, total) -> Duplicates``, ``LeakageCollector``, ``DUPLICATES_SCHEMA``, ``LEAKAGE_SCHEMA``.

A group is the rows of the final data (records that succeeded in both stages) with the same
``notes_hash`` (the same music, ``amtprep.midi.features``), or, for rows without notes, the same
``content_sha256`` (the same bytes). Bytes that are equal give equal notes, so a group holds every
exact duplicate of its members too. Within a group, in idx order:
- the first row is the group's representative: ``duplicate_of`` null (as MidiCaps-style users
  expect: keeping the rows where it is null keeps one of each piece);
- every later row has ``duplicate_of`` = the first idx and ``duplicate_kind`` = ``exact`` when its
  bytes equal those of some earlier row of the data (what an MD5 dedup would drop), else
  ``musical``.

``find_duplicates`` is one streaming pass over the MIDI shards reading only the idx, status,
content_sha256 and notes_hash columns; it keeps fixed-width digests of the data rows (48 bytes per
row, ~220 at the peak of the sorts) and 9 bytes per input row (the group's first idx, -1 for rows
in no group, and the kind code).

Leakage: a group whose members carry more than one value of the input's ``test_set`` column
(MidiCaps' ``train.json``) crosses the split. The merge feeds each chunk's group members and their
split values to a ``LeakageCollector`` (memory: the rows in groups only) and writes its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from amtprep.io.shards import ShardEntry

DEDUP_MODES = ("mark", "drop")
SPLIT_COLUMN = "test_set"
KINDS = (None, "exact", "musical")  # duplicate_kind by code 0, 1, 2
EXACT, MUSICAL = 1, 2
_COLUMNS = ["idx", "status", "content_sha256", "notes_hash"]

DUPLICATES_SCHEMA = pa.schema(
    [
        ("idx", pa.int64()),
        ("id", pa.string()),
        ("midi_path", pa.string()),
        ("duplicate_of", pa.int64()),
        ("duplicate_kind", pa.string()),
        ("content_sha256", pa.string()),
        ("notes_hash", pa.string()),
    ]
)
LEAKAGE_SCHEMA = pa.schema(
    [
        ("group", pa.int64()),  # the group's first idx
        ("idx", pa.int64()),
        ("id", pa.string()),
        ("midi_path", pa.string()),
        (SPLIT_COLUMN, pa.string()),  # the input's value, as text (bool -> "true"/"false")
        ("duplicate_kind", pa.string()),
    ]
)


@dataclass
class Duplicates:
    """Per input row: ``group`` = first idx of its group (-1: in no group), ``kind`` code."""

    group: np.ndarray  # int64[total]
    kind: np.ndarray  # int8[total]
    groups: int
    exact: int
    musical: int

    def duplicate_of(self, idx: np.ndarray) -> pa.Array:
        g = self.group[idx]
        return pa.array(g, pa.int64(), mask=(g < 0) | (g == idx))

    def kinds(self, idx: np.ndarray) -> pa.Array:
        return pa.array([KINDS[k] for k in self.kind[idx].tolist()], pa.string())

    def is_duplicate(self) -> np.ndarray:
        return self.kind > 0

    def counts(self) -> dict[str, int]:
        return {
            "groups": self.groups,
            "exact_duplicates": self.exact,
            "musical_duplicates": self.musical,
            "rows_in_groups": int((self.group >= 0).sum()),
        }


def _digests(column: pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Hex strings -> (bytes [n, width] uint8, present mask)."""
    values = column.to_pylist()
    present = np.array([v is not None for v in values], bool)
    raw = bytes.fromhex("".join(v for v in values if v is not None))
    out = np.zeros((len(values), width), np.uint8)
    out[present] = np.frombuffer(raw, np.uint8).reshape(-1, width)
    return out, present


def _read(shard_dir: Path, entries: Sequence[ShardEntry], data: np.ndarray):
    idx_parts, sha_parts, notes_parts, has_notes = [], [], [], []
    for e in sorted(entries, key=lambda e: e.first_idx):
        schema = pq.read_schema(shard_dir / e.name)
        cols = [c for c in _COLUMNS if c in schema.names]
        t = pq.read_table(shard_dir / e.name, columns=cols)
        idx = t.column("idx").to_numpy()
        keep = data[idx] & pc.equal(t.column("status"), "ok").to_numpy(zero_copy_only=False)
        if not keep.any():
            continue
        t = t.filter(pa.array(keep))
        idx_parts.append(idx[keep])
        sha, sha_ok = _digests(t.column("content_sha256"), 32)
        if not sha_ok.all():  # no bytes hash (never for an ok row): unique by its idx
            sha[~sha_ok, :8] = np.frombuffer(idx[keep][~sha_ok].astype("<i8").tobytes(), np.uint8)
            sha[~sha_ok, 8] = 0xFF
        sha_parts.append(sha)
        if "notes_hash" in t.column_names:
            notes, present = _digests(t.column("notes_hash"), 16)
        else:
            notes, present = np.zeros((t.num_rows, 16), np.uint8), np.zeros(t.num_rows, bool)
        notes_parts.append(notes)
        has_notes.append(present)
    if not idx_parts:
        empty = np.zeros((0, 1), np.uint8)
        return np.zeros(0, np.int64), empty, empty, np.zeros(0, bool)
    return (
        np.concatenate(idx_parts),
        np.concatenate(sha_parts),
        np.concatenate(notes_parts),
        np.concatenate(has_notes),
    )


def _first_of(keys: np.ndarray) -> np.ndarray:
    """Per row (rows in idx order): the position of the first row with the same key."""
    if not len(keys):
        return np.zeros(0, np.int64)
    view = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
    _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def find_duplicates(
    shard_dir: Path, entries: Sequence[ShardEntry], data: np.ndarray, total: int
) -> Duplicates:
    """Groups among the rows ``data`` (bool[total]) marks, from the MIDI stage's shards."""
    idx, sha, notes, has_notes = _read(shard_dir, entries, data)
    # one key per row: 0x01 + notes digest, or 0x00 + bytes digest for rows without notes
    keys = np.zeros((len(idx), 33), np.uint8)
    keys[has_notes, 0] = 1
    keys[has_notes, 1:17] = notes[has_notes]
    keys[~has_notes, 1:] = sha[~has_notes]
    pos = np.arange(len(idx))
    first = _first_of(keys)
    first_bytes = _first_of(sha)
    in_group = np.bincount(first, minlength=len(idx))[first] > 1 if len(idx) else pos < 0
    later = first != pos
    group = np.full(total, -1, np.int64)
    group[idx[in_group]] = idx[first[in_group]]
    kind = np.zeros(total, np.int8)
    kind[idx[later]] = np.where(first_bytes[later] != pos[later], EXACT, MUSICAL)
    return Duplicates(
        group=group,
        kind=kind,
        groups=int((in_group & ~later).sum()),
        exact=int((kind == EXACT).sum()),
        musical=int((kind == MUSICAL).sum()),
    )


def _split_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class LeakageCollector:
    """Group members seen by the merge, chunk by chunk; ``table()`` = the leaking groups' rows."""

    def __init__(self, dups: Duplicates) -> None:
        self.dups = dups
        self.parts: list[pa.Table] = []

    def add(self, idx: np.ndarray, ids: pa.Array, paths: pa.Array, splits: list) -> None:
        """``idx``: data rows of one chunk, in order; ``splits``: their split values."""
        sel = self.dups.group[idx] >= 0
        if not sel.any():
            return
        mask = pa.array(sel)
        self.parts.append(
            pa.table(
                {
                    "group": pa.array(self.dups.group[idx][sel], pa.int64()),
                    "idx": pa.array(idx[sel], pa.int64()),
                    "id": pc.filter(ids, mask),
                    "midi_path": pc.filter(paths, mask),
                    SPLIT_COLUMN: pa.array(
                        [_split_text(s) for s, k in zip(splits, sel, strict=True) if k],
                        pa.string(),
                    ),
                    "duplicate_kind": self.dups.kinds(idx[sel]),
                },
                schema=LEAKAGE_SCHEMA,
            )
        )

    def table(self) -> pa.Table:
        if not self.parts:
            return LEAKAGE_SCHEMA.empty_table()
        t = pa.concat_tables(self.parts)
        per_group = t.group_by("group").aggregate([(SPLIT_COLUMN, "count_distinct")])
        leaking = per_group.filter(
            pc.greater(per_group.column(f"{SPLIT_COLUMN}_count_distinct"), 1)
        )
        t = t.filter(pc.is_in(t.column("group"), leaking.column("group")))
        return t.sort_by([("group", "ascending"), ("idx", "ascending")])
