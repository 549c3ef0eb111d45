"""MIDI bytes stored in the input itself (GigaMIDI's ``music`` column), read by row group.

Public API: ``MidiBytesReader(path, column)`` with ``md5_column`` (``"md5"`` when the file has
one, else None), ``read(idxs) -> list[(bytes | None, expected_md5 | None)]`` and ``close()``;
``check_bytes_column(schema, column, path)``.

Why a reader of its own instead of a column of ``Record``: the records of a run are read by the
text stage and the merge too, which never need the bytes; the reader holds at most the row
groups one batch touches (``pf.read_row_group(g, columns=[bytes, md5])``), never the whole
column. Row groups are cached one at a time: batches come in idx order, so the next batch
usually starts in the group the last one ended in.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from amtprep.errors import InputFileError

MD5_COLUMN = "md5"


def check_bytes_column(schema: pa.Schema, column: str, path: Path) -> None:
    """Raises InputFileError unless ``column`` exists and holds binary values."""
    if column not in schema.names:
        raise InputFileError(
            f"input has no column {column!r} (from --midi_bytes_column); found columns "
            f"[{', '.join(schema.names)}]; pass --midi_bytes_column with one of them"
        )
    kind = schema.field(column).type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise InputFileError(
            f"column {column!r} of {path} holds {kind}, not binary MIDI bytes; "
            "--midi_bytes_column needs a binary column (GigaMIDI: music)"
        )


class MidiBytesReader:
    def __init__(self, path: Path, column: str) -> None:
        """Raises InputFileError for a file that is not Parquet or lacks the bytes column."""
        self.path = Path(path)
        self.column = column
        try:
            self._pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputFileError(
                f"--midi_bytes_column needs a Parquet input; {self.path} is not one ({exc})"
            ) from None
        schema = self._pf.schema_arrow
        check_bytes_column(schema, column, self.path)
        self.md5_column = MD5_COLUMN if MD5_COLUMN in schema.names else None
        self._starts = [0]
        for g in range(self._pf.num_row_groups):
            self._starts.append(self._starts[-1] + self._pf.metadata.row_group(g).num_rows)
        self._group: int | None = None
        self._data: list | None = None
        self._md5: list | None = None

    def _load(self, group: int) -> None:
        if group == self._group:
            return
        columns = [self.column] + ([self.md5_column] if self.md5_column else [])
        table = self._pf.read_row_group(group, columns=columns)
        self._data = table.column(self.column).to_pylist()
        md5 = table.column(self.md5_column).to_pylist() if self.md5_column else None
        self._md5 = [None if v is None else str(v).lower() for v in md5] if md5 else None
        self._group = group

    def read(self, idxs: Sequence[int]) -> list[tuple[bytes | None, str | None]]:
        """Bytes and expected MD5 (None without an md5 column) of each idx, in order."""
        out = []
        for idx in idxs:
            group = bisect.bisect_right(self._starts, idx) - 1
            if not 0 <= group < len(self._starts) - 1:
                raise IndexError(f"row {idx} is outside {self.path}")
            self._load(group)
            at = idx - self._starts[group]
            out.append((self._data[at], self._md5[at] if self._md5 else None))
        return out

    def close(self) -> None:
        self._data = self._md5 = None
        self._group = None
        self._pf.close()
