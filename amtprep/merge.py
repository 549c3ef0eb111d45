"""Join the committed shards of both stages on ``idx`` into the final sharded dataset.

Output, written into a release's staging folder (``amtprep.commit.publish`` makes it visible in
one step): ``data-00000-of-0000N.parquet`` with one row per record that succeeded in both
stages, ordered by idx, and ``failures.parquet`` with one row per (record, stage) that failed.
Every idx of the covered range lands in exactly one of the two -- or, with ``dedup="drop"``, of
the three: data, failures and ``duplicates.parquet`` (the later rows of each duplicate group,
``amtprep.dedup``). Every data row carries ``duplicate_of`` / ``duplicate_kind``; the groups that
cross the input's ``test_set`` split go to ``leakage.parquet`` in both modes. Only shards the commit logs
name are read — never a folder glob. Memory is bounded by a chunk of records and one shard per
stage, plus two bytes per input row for the masks.

Public: ``merge_stages``, ``MergeResult``, ``FINAL_PREFIX``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from amtprep.config import ROWS_PER_FINAL_SHARD
from amtprep.dedup import (
    DUPLICATES_SCHEMA,
    SPLIT_COLUMN,
    LeakageCollector,
    find_duplicates,
)
from amtprep.io.shards import ShardEntry, dictionary_columns
from amtprep.records import Record
from amtprep.tags import midicaps_columns
from amtprep.tags import tag_names as tag_columns_named

log = logging.getLogger(__name__)

FINAL_PREFIX = "data"
CHUNK = 4096
_RUN_COLUMNS = {"status", "error_type", "error", "attempts", "processed_at"}
_SHARED = {"idx", "id"}
FAILURE_SCHEMA = pa.schema(
    [
        ("idx", pa.int64()),
        ("id", pa.string()),
        ("midi_path", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("error", pa.string()),
        ("attempts", pa.int32()),
        ("processed_at", pa.timestamp("ms", tz="UTC")),
    ]
)


@dataclass
class MergeResult:
    dest: Path
    files: list[Path]
    failures_file: Path
    rows: int
    failures: int  # failure rows (one per record and stage)
    failed_records: int
    covered: int  # records present in both stages
    schema: pa.Schema | None
    dedup: str = "mark"
    duplicates: dict | None = None  # counts (amtprep.dedup.Duplicates.counts) + leakage
    duplicates_file: Path | None = None  # drop mode: the rows left out of the data
    leakage_file: Path | None = None


class _ShardCursor:
    """Reads rows of an idx range from a stage's committed shards, in order, one shard at a time."""

    def __init__(self, shard_dir: Path, entries: list[ShardEntry]) -> None:
        self.shard_dir = shard_dir
        self.entries = sorted(entries, key=lambda e: e.first_idx)
        self._pos = 0
        self._loaded: tuple[ShardEntry, pa.Table] | None = None

    def take(self, first: int, last: int) -> pa.Table | None:
        parts = []
        while self._pos < len(self.entries) and self.entries[self._pos].last_idx < first:
            self._pos += 1
        i = self._pos
        while i < len(self.entries) and self.entries[i].first_idx <= last:
            e = self.entries[i]
            if self._loaded is None or self._loaded[0] is not e:
                self._loaded = (e, pq.read_table(self.shard_dir / e.name))
            t = self._loaded[1]
            lo, hi = max(first, e.first_idx) - e.first_idx, min(last, e.last_idx) - e.first_idx
            parts.append(t.slice(lo, hi - lo + 1))
            i += 1
        if not parts:
            return None
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def _ok_mask(
    shard_dir: Path, entries: list[ShardEntry], total: int
) -> tuple[np.ndarray, np.ndarray]:
    """(covered, ok) boolean arrays over idx, read from the idx/status columns only."""
    covered = np.zeros(total, dtype=bool)
    ok = np.zeros(total, dtype=bool)
    for e in entries:
        if e.last_idx >= total:
            raise ValueError(f"{e.name} covers idx {e.last_idx}, beyond the input's {total} rows")
        if not e.failed:  # the log says every row is ok: no need to open the shard
            covered[e.first_idx : e.last_idx + 1] = True
            ok[e.first_idx : e.last_idx + 1] = True
            continue
        t = pq.read_table(shard_dir / e.name, columns=["idx", "status"])
        idx = t.column("idx").to_numpy()
        covered[idx] = True
        ok[idx] = pc.equal(t.column("status"), "ok").to_numpy(zero_copy_only=False)
    return covered, ok


def _wanted(mask: np.ndarray):
    """Rows worth parsing: those some output row needs (the others are skipped unparsed)."""
    return lambda idx: bool(idx < len(mask) and mask[idx])


def _chunks(records: Iterator[Record]) -> Iterator[tuple[int, int, list[Record]]]:
    buf: list[Record] = []
    for rec in records:
        buf.append(rec)
        if len(buf) >= CHUNK:
            yield buf[0].idx, buf[-1].idx, buf
            buf = []
    if buf:
        yield buf[0].idx, buf[-1].idx, buf


def infer_extra_schema(records: Iterator[Record], columns: list[str]) -> pa.Schema:
    """Types of the carried input columns, unified over the whole input (one streaming pass)."""
    if not columns:  # nothing carried: no reason to read the input again
        return pa.schema([])
    types: dict[str, set[pa.DataType]] = {c: set() for c in columns}
    buf: list[Record] = []

    def flush() -> None:
        for c in columns:
            try:
                types[c].add(pa.array([r.extra.get(c) for r in buf]).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                types[c].add(pa.string())
        buf.clear()

    for rec in records:
        buf.append(rec)
        if len(buf) >= CHUNK:
            flush()
    if buf:
        flush()
    fields = []
    for c in columns:
        ts = [t for t in types[c] if not pa.types.is_null(t)] or [pa.null()]
        try:
            unified = pa.unify_schemas(
                [pa.schema([(c, t)]) for t in ts], promote_options="permissive"
            )
            fields.append(unified.field(c))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            fields.append(pa.field(c, pa.string()))  # mixed types: stored as JSON text
    return pa.schema(
        [f if not pa.types.is_null(f.type) else pa.field(f.name, pa.string()) for f in fields]
    )


def extra_schema_for(source, input_sha256: str, cache: Path) -> pa.Schema:
    """The carried columns' types over the whole input, inferred once per input content and
    kept in ``cache`` (so later merges, e.g. every ``--save_partial``, read the input once)."""
    columns = list(source.extra_columns)
    if not columns:
        return pa.schema([])
    key = {"sha256": input_sha256, "columns": columns}
    try:
        body = json.loads(cache.read_text())
        if body.get("key") == key:
            return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(body["schema"])))
    except (OSError, ValueError, KeyError, pa.ArrowException):
        pass
    schema = infer_extra_schema(source.iter_records(), columns)
    try:
        cache.write_text(json.dumps({"key": key, "schema": schema.serialize().to_pybytes().hex()}))
    except OSError:
        pass  # only a cache
    return schema


def _extras_table(records: list[Record], schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        values = [r.extra.get(f.name) for r in records]
        try:
            cols.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            cols.append(
                pa.array(
                    [
                        None if v is None else (v if isinstance(v, str) else json.dumps(v))
                        for v in values
                    ],
                    pa.string(),
                )
            )
    return pa.Table.from_arrays(cols, schema=schema)


def _feature_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if c not in _RUN_COLUMNS and c not in _SHARED]


def _failures(table: pa.Table, stage: str, midi_path: pa.Array) -> pa.Table:
    mask = pc.equal(table.column("status"), "failed")
    t = table.filter(mask)
    return pa.table(
        {
            "idx": t.column("idx"),
            "id": t.column("id"),
            "midi_path": midi_path.filter(mask),
            "stage": pa.array([stage] * t.num_rows, pa.string()),
            "error_type": t.column("error_type"),
            "error": t.column("error"),
            "attempts": t.column("attempts"),
            "processed_at": t.column("processed_at"),
        },
        schema=FAILURE_SCHEMA,
    )


def merge_stages(
    source,
    total: int,
    stages: dict[str, tuple[Path, list[ShardEntry]]],
    dest: Path,
    *,
    rows_per_shard: int = ROWS_PER_FINAL_SHARD,
    metadata: dict[bytes, bytes] | None = None,
    failures_path: Path,
    extra_schema: pa.Schema | None = None,
    tags: tuple[str, ...] = (),
    keep_midi_bytes: bool = False,
    dedup: str = "mark",
    duplicates_path: Path | None = None,
    leakage_path: Path | None = None,
) -> MergeResult:
    """Write the data files into the empty folder ``dest`` and the failures to ``failures_path``
    from the committed shards of the "midi" and "text" stages (``source``: the InputSource).

    Records covered by both stages are merged; others (partial view) are left out.
    ``extra_schema``: the carried columns' types (``extra_schema_for``); inferred here when None.
    ``tags``: tag sets derived from the MIDI rows (``amtprep.tags``), e.g. ``("midicaps",)``.
    ``keep_midi_bytes``: carry the input's MIDI bytes column (``--midi_bytes_column``), read by
    row group beside the chunk; otherwise that bulky column is left out.
    ``dedup``: ``mark`` or ``drop`` (``amtprep.dedup``); ``duplicates_path`` (drop mode) and
    ``leakage_path`` default to files beside ``failures_path``.
    Raises OSError.
    """
    extra_columns = list(source.extra_columns)
    (midi_dir, midi_entries), (text_dir, text_entries) = stages["midi"], stages["text"]
    m_cov, m_ok = _ok_mask(midi_dir, midi_entries, total)
    t_cov, t_ok = _ok_mask(text_dir, text_entries, total)
    both = m_cov & t_cov
    good = both & m_ok & t_ok
    dups = find_duplicates(midi_dir, midi_entries, good, total)
    drop = dedup == "drop"
    if dedup not in ("mark", "drop"):
        raise ValueError(f"dedup must be mark or drop, not {dedup!r}")
    data = good & ~dups.is_duplicate() if drop else good
    duplicates_path = duplicates_path or failures_path.with_name("duplicates.parquet")
    leakage_path = leakage_path or failures_path.with_name("leakage.parquet")
    leakage = LeakageCollector(dups)
    dup_writer: pq.ParquetWriter | None = None
    dropped = 0
    n_rows = int(data.sum())
    n_files = max(1, math.ceil(n_rows / rows_per_shard))
    wanted = _wanted(both)
    if extra_schema is None:
        extra_schema = (
            infer_extra_schema(source.iter_records(wanted=wanted), extra_columns)
            if extra_columns
            else pa.schema([])
        )
    tag_names = tag_columns_named(tags, set(extra_schema.names))
    bytes_column = getattr(source, "midi_bytes_column", None) if keep_midi_bytes else None
    bytes_reader = _bytes_reader(source, bytes_column)
    has_split = SPLIT_COLUMN in extra_schema.names
    tmp = dest
    midi_cur, text_cur = _ShardCursor(midi_dir, midi_entries), _ShardCursor(text_dir, text_entries)
    writer: pq.ParquetWriter | None = None
    fail_writer: pq.ParquetWriter | None = None
    files: list[Path] = []
    in_file = written = failures = 0
    schema: pa.Schema | None = None

    def open_next() -> pq.ParquetWriter:
        name = f"{FINAL_PREFIX}-{len(files):05d}-of-{n_files:05d}.parquet"
        files.append(tmp / name)
        return pq.ParquetWriter(
            tmp / name, schema, compression="zstd", use_dictionary=dictionary_columns(schema)
        )

    for first, last, recs in _chunks(source.iter_records(wanted=_wanted(both))):
        sel = both[first : last + 1]
        if not sel.any():
            continue
        m = midi_cur.take(first, last)
        t = text_cur.take(first, last)
        rec_sel = recs  # the reader yields exactly the rows in both stages
        m = m.filter(pa.array(both[m.column("idx").to_numpy()]))
        t = t.filter(pa.array(both[t.column("idx").to_numpy()]))
        midi_path = (
            m.column("midi_path")
            if "midi_path" in m.column_names
            else pa.array([r.midi_path for r in rec_sel])
        )
        chunk_failures = pa.concat_tables(
            [_failures(m, "midi", midi_path), _failures(t, "text", midi_path)]
        )
        if chunk_failures.num_rows:
            chunk_failures = chunk_failures.sort_by([("idx", "ascending"), ("stage", "ascending")])
            if fail_writer is None:
                fail_writer = pq.ParquetWriter(failures_path, FAILURE_SCHEMA)
            fail_writer.write_table(chunk_failures)
            failures += chunk_failures.num_rows
        ok = pc.and_(pc.equal(m.column("status"), "ok"), pc.equal(t.column("status"), "ok"))
        if not pc.any(ok).as_py():
            continue
        extras = _extras_table(rec_sel, extra_schema)
        cols = {"idx": m.column("idx"), "id": m.column("id")}
        for c in _feature_columns(m):
            cols[c] = m.column(c)
        if tag_names:  # tags replace amtprep's own same-named features (time_signature)
            for name, column in midicaps_columns(m).items():
                cols.pop(name, None)
                cols[tag_names[name]] = column
        for c in _feature_columns(t):
            if c not in cols:
                cols[c] = t.column(c)
        for c in extras.column_names:
            if c not in cols:
                cols[c] = extras.column(c)
        if bytes_reader is not None and bytes_column not in cols:
            read = bytes_reader.read(m.column("idx").to_pylist())
            cols[bytes_column] = pa.array([data for data, _ in read], pa.large_binary())
        row_idx = m.column("idx").to_numpy()
        cols["duplicate_of"] = dups.duplicate_of(row_idx)
        cols["duplicate_kind"] = dups.kinds(row_idx)
        out = pa.table(cols).filter(ok)
        out_idx = out.column("idx").to_numpy()
        if has_split:
            ok_np = good[row_idx]
            splits = [r.extra.get(SPLIT_COLUMN) for r, k in zip(rec_sel, ok_np, strict=True) if k]
            leakage.add(out_idx, out.column("id"), out.column("midi_path"), splits)
        if drop:
            later = dups.is_duplicate()[out_idx]
            if later.any():
                gone = out.filter(pa.array(later))
                if dup_writer is None:
                    dup_writer = pq.ParquetWriter(duplicates_path, DUPLICATES_SCHEMA)
                dup_writer.write_table(gone.select(DUPLICATES_SCHEMA.names).cast(DUPLICATES_SCHEMA))
                dropped += gone.num_rows
                out = out.filter(pa.array(~later))
            if not out.num_rows:
                continue
        if schema is None:
            schema = _order(out.schema).with_metadata(metadata or {})
        out = out.select(schema.names).cast(schema)
        start = 0
        while start < out.num_rows:
            if writer is None:
                writer = open_next()
                in_file = 0
            n = min(rows_per_shard - in_file, out.num_rows - start)
            writer.write_table(out.slice(start, n))
            in_file += n
            written += n
            start += n
            if in_file >= rows_per_shard:
                writer.close()
                writer = None
    if writer is not None:
        writer.close()
    if bytes_reader is not None:
        bytes_reader.close()
    if fail_writer is None:
        pq.write_table(FAILURE_SCHEMA.empty_table(), failures_path)
    else:
        fail_writer.close()
    if dup_writer is not None:
        dup_writer.close()
    elif drop:
        pq.write_table(DUPLICATES_SCHEMA.empty_table(), duplicates_path)
    leaks = leakage.table()
    pq.write_table(leaks, leakage_path)
    dup_counts = {
        "mode": dedup,
        **dups.counts(),
        "dropped": dropped,
        "split_column": SPLIT_COLUMN if has_split else None,
        "leakage_groups": len(set(leaks.column("group").to_pylist())),
        "leakage_rows": leaks.num_rows,
    }
    if (
        not files
    ):  # no successful rows: still publish an empty first shard so loaders find the split
        files.append(tmp / f"{FINAL_PREFIX}-00000-of-00001.parquet")
        pq.write_table(pa.table({"idx": pa.array([], pa.int64())}), files[0])
    assert written == n_rows, (written, n_rows)
    failed_records = int((both & ~good).sum())
    return MergeResult(
        dest=dest,
        files=[dest / p.name for p in files],
        failures_file=failures_path,
        rows=written,
        failures=failures,
        failed_records=failed_records,
        covered=int(both.sum()),
        schema=schema,
        dedup=dedup,
        duplicates=dup_counts,
        duplicates_file=duplicates_path if drop else None,
        leakage_file=leakage_path,
    )


def _bytes_reader(source, column: str | None):
    if not column:
        return None
    from amtprep.io.midi_bytes import MidiBytesReader

    return MidiBytesReader(source.path, column)


_FIRST = ["idx", "id", "midi_path", "caption"]
_LAST = [
    "notes",
    "tokens",
    "n_tokens_midi",
    "tokens_truncated",
    "token_track_lengths",
    "n_tokens",
    "truncated",
    "embedding",
]


def _order(schema: pa.Schema) -> pa.Schema:
    names = schema.names
    head = [n for n in _FIRST if n in names]
    tail = [n for n in _LAST if n in names]
    mid = [n for n in names if n not in head and n not in tail]
    return pa.schema([schema.field(n) for n in head + mid + tail])
