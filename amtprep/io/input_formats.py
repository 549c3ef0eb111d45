"""Row scanners for the four input formats: each yields plain ``{column: value}`` rows, one at a time.

Public API (used by ``amtprep.io.readers``, which turns rows into ``Record``s):

- ``RawRow(idx, line, values, error, clean)``: one data row, or the reason it could not be parsed.
- ``FORMATS``, ``detect_format(path) -> str | None``
- ``open_scanner(path, fmt) -> Scanner``; a scanner has ``sample_columns(limit)``, ``count()`` and
  ``rows(start, wanted)``. Raises ``InputFileError`` when the file cannot be read at all.

Decisions every scanner shares:

- Text is decoded as UTF-8 with ``surrogateescape``: one row's bad bytes survive as lone surrogates
  (U+DC80..U+DCFF) for the record builder to report, instead of failing the whole file.
  ``RawRow.clean`` is True when the row provably holds no lone surrogate, so the builder can skip
  the check on the hot path.
- ``.jsonl`` and ``.csv``: blank (whitespace-only) lines are skipped wherever they are and take no
  idx, as pandas and ``datasets`` count rows; idx stays a pure function of the file's bytes.
- ``.json`` (one array) is streamed by ``amtprep.io.json_array_stream``: memory stays about one
  element plus 1 MiB. A syntax error inside the array makes the rest unreadable, so it raises
  ``InputFileError`` (``count()``, which a run calls first, finds it up front). An element that is
  well-formed but not an object, or that Python cannot decode (nested too deeply, an over-long
  integer), is a malformed row like a bad ``.jsonl`` line, and the array goes on.
- ``.parquet`` is read a batch at a time; row groups before ``start`` are skipped via metadata.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import json.scanner
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from amtprep.errors import InputFileError
from amtprep.io.json_array_stream import (
    BOM,
    SURROGATE,
    JsonArrayStream,
    Unreadable,
    unreadable_reason,
)

FORMATS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}

_PARQUET_BATCH_ROWS = 4096

Wanted = Callable[[int], bool] | None


class RawRow(NamedTuple):
    idx: int
    line: int | None  # 1-based line where the row starts; None for parquet
    values: dict[str, Any] | None  # None when nothing could be recovered
    error: str | None  # why the row is malformed (values may still hold what was recovered)
    clean: bool  # True: no string in values holds a lone surrogate


class Scanner(Protocol):
    def sample_columns(self, limit: int) -> list[str]: ...

    def count(self) -> int: ...

    def rows(self, start: int, wanted: Wanted) -> Iterator[RawRow]: ...


def detect_format(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def open_scanner(path: Path, fmt: str) -> Scanner:
    """Raises InputFileError when the file's header or footer cannot be read."""
    return {"json": JsonArrayScanner, "jsonl": JsonlScanner, "csv": CsvScanner}.get(
        fmt, ParquetScanner
    )(path)


def has_surrogate(text: str) -> bool:
    # isascii() is O(1) in CPython, so the common case costs nothing.
    return not text.isascii() and SURROGATE.search(text) is not None


def json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _union_keys(rows: Iterator[RawRow], limit: int) -> list[str]:
    seen: dict[str, None] = {}
    for n, row in enumerate(rows):
        if n >= limit:
            break
        if row.values is not None:
            seen.update(dict.fromkeys(row.values))
    return list(seen)


class JsonlScanner:
    """One JSON object per line; a line is a row."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        with open(self.path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                if line_no == 1 and line.startswith(BOM):
                    line = line[3:]
                if not line.isspace() and line:
                    yield line_no, line

    def sample_columns(self, limit: int) -> list[str]:
        return _union_keys(self.rows(0, None), limit)

    def count(self) -> int:
        return sum(1 for _ in self._lines())

    def rows(self, start: int, wanted: Wanted) -> Iterator[RawRow]:
        idx = -1
        for line_no, line in self._lines():
            idx += 1
            if idx < start or (wanted is not None and not wanted(idx)):
                continue  # skipped rows are never parsed: resuming a run is cheap
            yield _parse_jsonl_line(idx, line_no, line)


_scan_value = json.scanner.make_scanner(json.JSONDecoder())


def _loads_line(text: str) -> Any:
    # The C scanner directly, skipping json.loads' wrappers: ~1 us of ~5 us per row. Anything
    # unusual (leading whitespace, trailing data, errors) goes to json.loads for its exact verdict.
    try:
        value, end = _scan_value(text, 0)
    except (StopIteration, json.JSONDecodeError):
        return json.loads(text)
    if end == len(text) or text[end:].isspace():
        return value
    return json.loads(text)


def _parse_jsonl_line(idx: int, line_no: int, line: bytes) -> RawRow:
    try:
        text = line.decode("utf-8")
        clean = b"\\u" not in line  # only a \uD800-style escape could smuggle in a surrogate
    except UnicodeDecodeError:
        text = line.decode("utf-8", "surrogateescape")
        clean = False
    try:
        value = _loads_line(text)
    except json.JSONDecodeError as exc:
        return RawRow(
            idx,
            line_no,
            None,
            f"line {line_no}: invalid JSON: {exc.msg} (column {exc.colno})",
            True,
        )
    except (RecursionError, ValueError) as exc:  # valid JSON that Python cannot build
        why = unreadable_reason(exc)
        return RawRow(idx, line_no, None, f"line {line_no}: JSON cannot be read: {why}", True)
    if not isinstance(value, dict):
        return RawRow(
            idx, line_no, None, f"line {line_no}: JSON {json_type(value)} is not an object", True
        )
    return RawRow(idx, line_no, value, None, clean)


class JsonArrayScanner:
    """A single JSON array of objects, streamed element by element."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def sample_columns(self, limit: int) -> list[str]:
        return _union_keys(self.rows(0, None), limit)

    def count(self) -> int:
        return sum(1 for _ in JsonArrayStream(self.path))

    def rows(self, start: int, wanted: Wanted) -> Iterator[RawRow]:
        for idx, (line, value, clean) in enumerate(JsonArrayStream(self.path)):
            if idx < start or (wanted is not None and not wanted(idx)):
                continue
            if isinstance(value, dict):
                yield RawRow(idx, line, value, None, clean)
            elif isinstance(value, Unreadable):
                msg = f"line {line}: array element {idx} cannot be read: {value.reason}"
                yield RawRow(idx, line, None, msg, True)
            else:
                msg = (
                    f"line {line}: array element {idx} is a JSON {json_type(value)}, not an object"
                )
                yield RawRow(idx, line, None, msg, True)


class CsvScanner:
    """Comma-separated with a header row; quoted fields may span lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Captions can be long; the default 128 KiB field limit would turn them into errors.
        # The limit is process-wide, and raising it never breaks another reader.
        if csv.field_size_limit() < 2**31 - 1:
            csv.field_size_limit(2**31 - 1)
        with self._open() as text:
            self.header = self._read_header(csv.reader(text, strict=False))

    def _open(self) -> io.TextIOWrapper:
        return open(self.path, encoding="utf-8-sig", errors="surrogateescape", newline="")

    def _read_header(self, reader: Any) -> list[str]:
        for fields in reader:
            if not _blank(fields):
                header = [name.strip() for name in fields]
                dupes = sorted({name for name in header if header.count(name) > 1})
                if dupes:
                    raise InputFileError(
                        f"input file {self.path} has duplicate column names {dupes} in its header; "
                        "rename them so each column is unique"
                    )
                return header
        raise InputFileError(
            f"input file {self.path} is empty; a .csv input needs a header row naming its columns"
        )

    def sample_columns(self, limit: int) -> list[str]:
        return list(self.header)

    def count(self) -> int:
        return sum(1 for _ in self._fields())

    def _fields(self) -> Iterator[tuple[int, list[str] | None, str | None]]:
        """Yield ``(start_line, fields, error)`` per non-blank data row."""
        with self._open() as text:
            reader = csv.reader(text, strict=False)
            self._read_header(reader)
            while True:
                line = reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # the reader resumes at the next line
                    yield line, None, f"line {line}: unreadable CSV row: {exc}"
                    continue
                if not _blank(fields):
                    yield line, fields, None

    def rows(self, start: int, wanted: Wanted) -> Iterator[RawRow]:
        header = self.header
        width = len(header)
        for idx, (line, fields, error) in enumerate(self._fields()):
            if idx < start or (wanted is not None and not wanted(idx)):
                continue
            if fields is None:
                yield RawRow(idx, line, None, error, True)
                continue
            values = dict(zip(header, fields, strict=False))  # ragged rows: see below
            if len(fields) != width:
                # Keep what lines up with the header: enough to name the row in the error report.
                error = f"line {line}: expected {width} fields like the header, found {len(fields)}"
            yield RawRow(idx, line, values, error, False)


def _blank(fields: list[str]) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip())


class ParquetScanner:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with pq.ParquetFile(path) as pf:
                self.schema = pf.schema_arrow
                self._group_rows = [
                    pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)
                ]
        except (pa.ArrowException, OSError) as exc:
            raise InputFileError(
                f"input file {path} is not a readable Parquet file ({exc}); "
                "check that it was fully written, or re-export it"
            ) from None
        # Columns whose Python values are already JSON-ready skip the per-value conversion.
        self._needs_conversion = [not _is_plain(f.type) for f in self.schema]
        # Only binary data can carry invalid UTF-8 (Arrow strings are valid by contract).
        self._clean = not any(_has_binary(f.type) for f in self.schema)
        self._skip: frozenset[str] = frozenset()

    def skip_columns(self, names: set[str]) -> None:
        """Leave ``names`` unread by ``rows`` (a bulky MIDI bytes column, read on its own by
        ``amtprep.io.midi_bytes``): rows then lack those keys."""
        self._skip = frozenset(names)
        kept = [f for f in self.schema if f.name not in self._skip]
        self._clean = not any(_has_binary(f.type) for f in kept)

    def sample_columns(self, limit: int) -> list[str]:
        return list(self.schema.names)

    def count(self) -> int:
        return sum(self._group_rows)

    def rows(self, start: int, wanted: Wanted) -> Iterator[RawRow]:
        first_group, idx = 0, 0
        while first_group < len(self._group_rows) and idx + self._group_rows[first_group] <= start:
            idx += self._group_rows[first_group]
            first_group += 1
        names = [n for n in self.schema.names if n not in self._skip]
        convert_flags = [
            c for c, f in zip(self._needs_conversion, self.schema, strict=True) if f.name in names
        ]
        with pq.ParquetFile(self.path) as pf:
            groups = range(first_group, pf.num_row_groups)
            for batch in pf.iter_batches(
                batch_size=_PARQUET_BATCH_ROWS, row_groups=groups, columns=names
            ):
                if idx + batch.num_rows <= start:
                    idx += batch.num_rows
                    continue
                columns = [
                    [to_jsonable(v) for v in col.to_pylist()] if convert else col.to_pylist()
                    for col, convert in zip(batch.columns, convert_flags, strict=True)
                ]
                for values in zip(*columns, strict=True):
                    if idx >= start and (wanted is None or wanted(idx)):
                        yield RawRow(
                            idx, None, dict(zip(names, values, strict=True)), None, self._clean
                        )
                    idx += 1


def _has_binary(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return True
    if pa.types.is_dictionary(t):
        return _has_binary(t.value_type)
    return any(_has_binary(t.field(i).type) for i in range(t.num_fields))


def _is_plain(t: pa.DataType) -> bool:
    """True when ``to_pylist`` already gives JSON-ready values (lists of str, structs of int...)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _is_plain(t.value_type)
    if pa.types.is_struct(t):
        return all(_is_plain(t.field(i).type) for i in range(t.num_fields))
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
        or pa.types.is_float32(t)
        or pa.types.is_float64(t)
    )


def to_jsonable(value: Any) -> Any:
    """Turn an Arrow/numpy-derived Python value into str/int/float/bool/None/list/dict."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        # Like text read from JSON or CSV: the record builder reports or scrubs bad bytes.
        return bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)  # float() would silently round
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return to_jsonable(value.tolist())
    return str(value)
