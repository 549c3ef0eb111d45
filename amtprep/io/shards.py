"""Parquet shards: naming, atomic publishing and validation.

A shard holds the rows of one contiguous idx range ``[first, last]`` of one stage and is named
``part-<first>-<last>.parquet`` (9-digit zero padded); a re-run of failed records publishes a new
generation ``part-<first>-<last>.r<gen>.parquet`` that supersedes the older one. Shards are written
whole to a temp name, fsync'd and renamed: a published shard is never appended to or half written.

Public: ``ShardEntry``, ``shard_name``, ``parse_shard_name``, ``write_shard``, ``describe_shard``,
``inspect_shard``,
``read_shard``, ``ShardInvalid``.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from amtprep.io.fsutil import atomic_write

_NAME_RE = re.compile(r"^part-(\d{9})-(\d{9})(?:\.r(\d+))?\.parquet$")


class ShardInvalid(Exception):
    """A shard file is missing, truncated, unreadable or does not hold the range its name says."""


@dataclass(frozen=True)
class ShardEntry:
    name: str
    first_idx: int
    last_idx: int
    rows: int
    bytes: int
    sha256: str
    failed: int = 0
    generation: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ShardEntry:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def shard_name(first: int, last: int, generation: int = 0) -> str:
    suffix = f".r{generation}" if generation else ""
    return f"part-{first:09d}-{last:09d}{suffix}.parquet"


def parse_shard_name(name: str) -> tuple[int, int, int] | None:
    """(first, last, generation) or None when the name is not a shard's."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: strings and bools. On float/list columns (embeddings,
    notes) it makes files larger and slower to write (DESIGN.md)."""
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_boolean(f.type)]


def _write_options(schema: pa.Schema) -> dict:
    return {
        "compression": "zstd",
        "use_dictionary": dictionary_columns(schema),
        "write_statistics": True,
    }


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **_write_options(table.schema))
    return buf.getvalue()


def write_shard(
    directory: Path,
    table: pa.Table,
    first: int,
    last: int,
    *,
    generation: int = 0,
    crash_tag: str = "shard",
) -> ShardEntry:
    """Publish ``table`` (rows of idx ``first..last``) as a shard; raises DiskWriteError."""
    data = table_to_parquet_bytes(table)
    name = shard_name(first, last, generation)
    atomic_write(directory / name, data, crash_tag=crash_tag)
    return describe_shard(name, data, table)


def describe_shard(name: str, data: bytes, table: pa.Table | None = None) -> ShardEntry:
    """The entry of a shard given its bytes (and its table, when at hand: saves a decode)."""
    first, last, generation = parse_shard_name(name) or (0, -1, 0)
    if table is None:
        table = pq.read_table(io.BytesIO(data), columns=["status"])
    failed = 0
    if "status" in table.column_names:
        failed = int(pc.sum(pc.equal(table.column("status"), "failed")).as_py() or 0)
    return ShardEntry(
        name=name,
        first_idx=first,
        last_idx=last,
        rows=table.num_rows,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        failed=failed,
        generation=generation,
    )


def inspect_shard(
    path: Path, *, expect: ShardEntry | None = None, full: bool = False
) -> ShardEntry:
    """Validate a shard on disk and describe it; raises ShardInvalid.

    Checks the name, the size (against ``expect``), the Parquet footer, the row count and, for a
    shard no checkpoint vouches for (``expect`` None) or with ``full``, the idx column itself.
    """
    parsed = parse_shard_name(path.name)
    if parsed is None:
        raise ShardInvalid(f"{path.name}: not a shard name")
    first, last, gen = parsed
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ShardInvalid(f"{path.name}: {exc.strerror}") from exc
    if expect is not None and size != expect.bytes:
        raise ShardInvalid(f"{path.name}: {size} bytes on disk, checkpoint recorded {expect.bytes}")
    try:
        meta = pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a torn footer
        raise ShardInvalid(f"{path.name}: unreadable Parquet ({exc})") from exc
    if meta.num_rows != last - first + 1:
        raise ShardInvalid(f"{path.name}: {meta.num_rows} rows, name says {last - first + 1}")
    digest = expect.sha256 if expect is not None else ""
    failed = expect.failed if expect is not None else 0
    if expect is None or full:
        try:
            data = path.read_bytes()
            table = pq.read_table(io.BytesIO(data), columns=["idx", "status"])
        except Exception as exc:
            raise ShardInvalid(f"{path.name}: unreadable Parquet ({exc})") from exc
        idx = table.column("idx").to_numpy()
        if len(idx) != last - first + 1 or (
            len(idx) and (idx[0] != first or (idx[1:] - idx[:-1] != 1).any())
        ):
            raise ShardInvalid(f"{path.name}: idx column does not cover {first}..{last}")
        digest = hashlib.sha256(data).hexdigest()
        if expect is not None and digest != expect.sha256:
            raise ShardInvalid(f"{path.name}: checksum differs from the checkpoint's")
        failed = int(pc.sum(pc.equal(table.column("status"), "failed")).as_py() or 0)
    return ShardEntry(path.name, first, last, meta.num_rows, size, digest, failed, gen)


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)
