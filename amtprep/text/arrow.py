"""The text shard's Arrow schema, columns built from flat numpy arrays, and Parquet write options.

Public API: ``text_schema(dim, pooling, embedding_dtype, metadata=None)``,
``embedding_array(vectors, valid, embedding_dtype)``, ``token_embedding_array(token_vectors, valid, dim)``,
``parquet_write_options(schema)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from amtprep.stages import BASE_FIELDS

EMBEDDING_DTYPES = ("float32", "float16")


def _value_type(embedding_dtype: str) -> pa.DataType:
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise ValueError(
            f"embedding_dtype must be one of {EMBEDDING_DTYPES}, got {embedding_dtype!r}"
        )
    return pa.float16() if embedding_dtype == "float16" else pa.float32()


def text_schema(
    dim: int, pooling: str, embedding_dtype: str, metadata: Mapping[str, str] | None = None
) -> pa.Schema:
    """BASE_FIELDS, caption, n_tokens, truncated, embedding (see DESIGN.md "Text shard")."""
    if pooling == "none":
        # Per-token states are for cross-attention; float16 halves a column that is D x n_tokens.
        embedding_type = pa.list_(pa.list_(pa.float16(), dim))
    else:
        embedding_type = pa.list_(_value_type(embedding_dtype), dim)
    fields = [
        *BASE_FIELDS,
        pa.field("caption", pa.string()),
        pa.field("n_tokens", pa.int32()),
        pa.field("truncated", pa.bool_()),
        pa.field("embedding", embedding_type),
    ]
    return pa.schema(fields, metadata=dict(metadata) if metadata else None)


def embedding_array(vectors: np.ndarray, valid: np.ndarray, embedding_dtype: str) -> pa.Array:
    """``fixed_size_list<float>[D]`` from a ``[N, D]`` array; rows where ``valid`` is False are null."""
    dim = vectors.shape[1]
    values = np.ascontiguousarray(vectors, dtype=np.dtype(embedding_dtype)).reshape(-1)
    mask = None if valid.all() else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(pa.array(values), dim, mask=mask)


def token_embedding_array(
    token_vectors: Sequence[np.ndarray | None], valid: np.ndarray, dim: int
) -> pa.Array:
    """``list<fixed_size_list<float16>[D]>`` from one ``[n_i, D]`` array per row (None: null row)."""
    counts = np.array(
        [len(v) if ok and v is not None else 0 for v, ok in zip(token_vectors, valid, strict=True)],
        dtype=np.int32,
    )
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    parts = [v for v, ok in zip(token_vectors, valid, strict=True) if ok and v is not None]
    flat = (
        np.concatenate(parts).astype(np.float16, copy=False).reshape(-1)
        if parts
        else np.empty(0, np.float16)
    )
    tokens = pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
    mask = None if valid.all() else pa.array(~valid)
    return pa.ListArray.from_arrays(pa.array(offsets), tokens, mask=mask)


def parquet_write_options(schema: pa.Schema) -> dict[str, Any]:
    """Keyword arguments for ``pq.write_table`` / ``pq.ParquetWriter`` on a text table.

    Dictionary encoding stays on for the other columns and is off for float columns, where it
    makes files larger and writes slower (DESIGN.md). Floats are BYTE_STREAM_SPLIT, which lets
    zstd compress the exponent bytes (figures in bench/README.md "Text stage").
    """
    float_leaves = {f.name: _float_leaf_path(f) for f in schema}
    float_leaves = {name: path for name, path in float_leaves.items() if path}
    return {
        "use_dictionary": [f.name for f in schema if f.name not in float_leaves],
        "column_encoding": dict.fromkeys(float_leaves.values(), "BYTE_STREAM_SPLIT"),
        "compression": "zstd",
    }


def _float_leaf_path(field: pa.Field) -> str | None:
    """Parquet leaf path (``embedding.list.element``) of a float column, else None."""
    path, data_type = field.name, field.type
    while pa.types.is_list(data_type) or pa.types.is_fixed_size_list(data_type):
        path, data_type = f"{path}.list.element", data_type.value_type
    return path if pa.types.is_floating(data_type) else None
