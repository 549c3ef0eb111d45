"""Per-column summaries of a Parquet dataset, in the Hugging Face dataset-viewer ``/statistics`` shape.

Public API:
    summarize_columns(parquet_files, columns=None, *, batch_size=1024, max_exact_values=1_000_000)
        -> list[dict]
    Moments            count / mean / M2 / min / max partial that merges (Chan et al.)
    ValueSample        every value up to a limit, then a uniform reservoir of that size

Column types: ``int`` and ``float`` (the values); ``bool`` (frequencies); ``string_label`` (few
distinct values: frequencies) or ``string_text`` (character lengths), by the dataset-viewer rule;
``list`` (list lengths); ``fixed_size_list`` (the width, and the distribution of each row's L2 norm:
an embedding column); anything else ``unsupported`` (null counts only). Null values, and NaN in
float columns, count as ``nan_count``. ``std`` is the sample standard deviation (ddof=1), as the
dataset viewer reports it; floats are rounded to 5 decimals like its output.

Memory: files are read batch by batch and only one scalar per row and column is kept (the value, a
length or a norm). Count, mean, std, min and max are exact streaming partials. Median and histogram
need the values themselves: up to ``max_exact_values`` non-null values per column they are exact
(8 bytes a value); beyond that they come from a uniform reservoir of that size (Vitter's algorithm
R), which puts the median within about 0.1 % of rank of the true one, and the histogram counts are
scaled to the true total. A summary computed that way says ``"sampled": true``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DECIMALS = 5
N_BINS = 10
LABEL_ALWAYS_MAX_UNIQUE = 10  # dataset-viewer: <= 10 distinct strings is always a label column
LABEL_MAX_UNIQUE = 1000  # ... or fewer than 1000 distinct making up <= 20 % of the values
LABEL_MAX_PROPORTION = 0.2


@dataclass
class Moments:
    """Mergeable streaming moments of a set of numbers."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    min: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        if values.size == 0:
            return cls()
        as_float = values.astype(np.float64, copy=False)
        mean = float(as_float.mean())
        return cls(
            count=int(values.size),
            mean=mean,
            m2=float(((as_float - mean) ** 2).sum()),
            min=values.min().item(),
            max=values.max().item(),
        )

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            count=count,
            mean=self.mean + delta * other.count / count,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / count,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @property
    def std(self) -> float | None:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else None


class ValueSample:
    """All values while there are at most ``limit``; after that a uniform reservoir of ``limit``."""

    def __init__(self, limit: int, seed: int = 0) -> None:
        self.limit = limit
        self.seen = 0
        self._chunks: list[np.ndarray] = []
        self._reservoir: np.ndarray | None = None
        self._rng = np.random.default_rng(seed)

    @property
    def exact(self) -> bool:
        return self.seen <= self.limit

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        start, self.seen = self.seen, self.seen + values.size
        if self._reservoir is None:
            self._chunks.append(values)
            if self.seen <= self.limit:
                return
            pooled = np.concatenate(self._chunks)
            self._chunks = []
            self._reservoir = pooled[: self.limit].copy()
            values, start = pooled[self.limit :], self.limit
        # Algorithm R, vectorised: item i (0-based) replaces a random slot with probability limit/(i+1).
        slots = self._rng.integers(0, np.arange(start, start + values.size) + 1)
        keep = slots < self.limit
        self._reservoir[slots[keep]] = values[keep]

    def values(self) -> np.ndarray:
        if self._reservoir is not None:
            return self._reservoir
        return np.concatenate(self._chunks) if self._chunks else np.array([])


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), DECIMALS)


def _histogram(values: np.ndarray, kind: str, low: float, high: float, total: int) -> dict:
    """Up to 10 bins; integer bins have integer edges and the last edge is the maximum."""
    if kind == "int":
        low, high = int(low), int(high)
        width = math.ceil((high - low + 1) / N_BINS)
        edges: list[float] = [*range(low, high + 1, width), high]
    elif low == high:
        edges = [low, high]
    else:
        edges = np.linspace(low, high, N_BINS + 1).tolist()
    hist, _ = np.histogram(values, bins=np.asarray(edges, dtype=np.float64))
    if values.size != total:  # a reservoir: scale to the true count, keeping the sum exact
        scaled = hist * (total / values.size)
        hist = np.floor(scaled).astype(np.int64)
        remainder_order = np.argsort(-(scaled - hist), kind="stable")
        hist[remainder_order[: total - int(hist.sum())]] += 1
    if kind != "int":
        edges = [_round(e) for e in edges]
    return {"hist": [int(h) for h in hist], "bin_edges": edges}


class _Numbers:
    """One number per row (a value, a length or a norm): moments plus a value sample."""

    def __init__(self, kind: str, max_exact_values: int) -> None:
        self.kind = kind
        self.nulls = 0
        self.moments = Moments()
        self.sample = ValueSample(max_exact_values)

    def add(self, values: np.ndarray, nulls: int) -> None:
        if values.dtype.kind == "f":
            finite = ~np.isnan(values)
            nulls += int(values.size - finite.sum())
            values = values[finite]
        self.nulls += nulls
        self.moments = self.moments.merge(Moments.of(values))
        self.sample.add(values)

    def statistics(self, n_rows: int) -> dict[str, Any]:
        m = self.moments
        stats: dict[str, Any] = {
            "nan_count": self.nulls,
            "nan_proportion": _round(self.nulls / n_rows) if n_rows else 0.0,
        }
        if m.count == 0:
            return stats | dict.fromkeys(("min", "max", "mean", "median", "std", "histogram"))
        values = self.sample.values()
        as_number = int if self.kind == "int" else _round
        stats |= {
            "min": as_number(m.min),
            "max": as_number(m.max),
            "mean": _round(m.mean),
            "median": _round(np.median(values)),
            "std": _round(m.std),
            "histogram": _histogram(values, self.kind, m.min, m.max, m.count),
        }
        if not self.sample.exact:
            stats["sampled"] = True
        return stats


def _numpy(array: pa.Array) -> np.ndarray:
    return array.drop_null().to_numpy(zero_copy_only=False)


class _ColumnSummary:
    """Accumulates one column over batches; ``column_type`` is fixed by the Arrow type."""

    def __init__(self, name: str, arrow_type: pa.DataType, max_exact_values: int) -> None:
        self.name = name
        self.rows = 0
        self.width: int | None = None
        self.labels: Counter[str] | None = Counter()  # None once there are too many to be labels
        self.bools: Counter[str] = Counter()
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if pa.types.is_integer(arrow_type):
            self.kind = "int"
        elif pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
            self.kind = "float"
        elif pa.types.is_boolean(arrow_type):
            self.kind = "bool"
        elif pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            self.kind = "string"
        elif pa.types.is_fixed_size_list(arrow_type):
            self.kind = "fixed_size_list"
            self.width = arrow_type.list_size
        elif pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
            self.kind = "list"
        else:
            self.kind = "unsupported"
        number_kind = "float" if self.kind in ("float", "fixed_size_list") else "int"
        self.numbers = _Numbers(number_kind, max_exact_values)

    def add(self, array: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        self.rows += len(array)
        nulls = array.null_count
        if self.kind in ("int", "float"):
            values = _numpy(array.cast(pa.float64()) if self.kind == "float" else array)
            self.numbers.add(values, nulls)
        elif self.kind == "bool":
            self.numbers.nulls += nulls
            for value, count in zip(*_value_counts(array), strict=True):
                self.bools[str(value)] += count
        elif self.kind == "string":
            self.numbers.add(_numpy(pc.utf8_length(array)), nulls)
            if self.labels is not None:
                for value, count in zip(*_value_counts(array), strict=True):
                    self.labels[value] += count
                if len(self.labels) >= LABEL_MAX_UNIQUE:
                    self.labels = None
        elif self.kind == "list":
            self.numbers.add(_numpy(pc.list_value_length(array)), nulls)
        elif self.kind == "fixed_size_list":
            valid = array.drop_null()
            flat = valid.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
            self.numbers.add(np.linalg.norm(flat.reshape(len(valid), self.width), axis=1), nulls)
        else:
            self.numbers.nulls += nulls

    def add_nulls(self, n: int) -> None:
        """Rows of a file that lacks this column."""
        self.rows += n
        self.numbers.nulls += n

    def summary(self) -> dict[str, Any]:
        numbers = self.numbers
        nan = {
            "nan_count": numbers.nulls,
            "nan_proportion": _round(numbers.nulls / self.rows) if self.rows else 0.0,
        }
        if self.kind in ("int", "float", "list"):
            column_type, stats = self.kind, numbers.statistics(self.rows)
        elif self.kind == "bool":
            column_type, stats = "bool", nan | {"frequencies": dict(sorted(self.bools.items()))}
        elif self.kind == "string" and self._is_label():
            frequencies = dict(sorted(self.labels.items(), key=lambda kv: (-kv[1], kv[0])))
            column_type = "string_label"
            stats = nan | {"no_label_count": 0, "no_label_proportion": 0.0}
            stats |= {"n_unique": len(frequencies), "frequencies": frequencies}
        elif self.kind == "string":
            column_type, stats = "string_text", numbers.statistics(self.rows)
        elif self.kind == "fixed_size_list":
            column_type = "fixed_size_list"
            stats = {"width": self.width, **numbers.statistics(self.rows)}
        else:
            column_type, stats = "unsupported", nan
        return {"column_name": self.name, "column_type": column_type, "column_statistics": stats}

    def _is_label(self) -> bool:
        if self.labels is None:
            return False
        n_unique, n_values = len(self.labels), self.numbers.moments.count
        if n_unique <= LABEL_ALWAYS_MAX_UNIQUE:
            return True
        return n_values > 0 and n_unique / n_values <= LABEL_MAX_PROPORTION


def _value_counts(array: pa.Array) -> tuple[list, list]:
    counts = pc.value_counts(array.drop_null())
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def summarize_columns(
    parquet_files: Iterable[Path],
    columns: list[str] | None = None,
    *,
    batch_size: int = 1024,
    max_exact_values: int = 1_000_000,
) -> list[dict[str, Any]]:
    """Summaries of ``columns`` (default: all columns of the first file), in that order.

    Raises ``KeyError`` when a requested column is in none of the files, and whatever pyarrow
    raises for a file that is not Parquet.
    """
    files = [Path(f) for f in parquet_files]
    if not files:
        return []
    schemas = [pq.read_schema(f) for f in files]
    if columns is None:
        columns = list(schemas[0].names)
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for name in columns:
            if name in schema.names:
                types.setdefault(name, schema.field(name).type)
    missing = [name for name in columns if name not in types]
    if missing:
        raise KeyError(f"column(s) not found in any Parquet file: {', '.join(missing)}")

    summaries = {name: _ColumnSummary(name, types[name], max_exact_values) for name in columns}
    for path, schema in zip(files, schemas, strict=True):
        present = [name for name in columns if name in schema.names]
        parquet = pq.ParquetFile(path)
        for name in columns:
            if name not in schema.names:
                summaries[name].add_nulls(parquet.metadata.num_rows)
        if not present:
            continue
        for batch in parquet.iter_batches(batch_size=batch_size, columns=present):
            for name in present:
                summaries[name].add(batch.column(name))
    return [summaries[name].summary() for name in columns]
