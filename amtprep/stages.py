"""The stage contract: a batch of records in, an Arrow table out.

A stage knows nothing about batching, shards, checkpoints or signals (the runner owns those).
Contract every stage keeps:

- ``process(records)`` returns exactly one row per record, in the same order, with the columns of
  ``schema()``; the first five are ``idx`` (int64), ``id`` (string), ``status`` ("ok"/"failed"),
  ``error_type`` and ``error`` (strings, null when ok).
- A per-record problem (missing file, corrupt MIDI, empty caption, ``record.row_error``) is a
  failed row, never an exception. An exception out of ``process`` means the stage itself is broken
  (e.g. model cannot run) and stops the run.
- ``fingerprint()`` lists every setting that changes the stage's output; a resume refuses when it
  differs from the checkpoint's.
- Optional ``prefetch(records)``: the runner passes the next batch before writing the current
  shard, so the stage can start on it; the next ``process`` gets those records (a stage must
  still give the right rows if it does not). Nothing prefetched is ever committed by itself.
- Optional ``warm_up()``: start slow resources (worker processes) without waiting, so they get
  ready while the pipeline recovers committed state; a stage must work without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pyarrow as pa

from amtprep.records import Record

BASE_FIELDS = [
    pa.field("idx", pa.int64(), nullable=False),
    pa.field("id", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error_type", pa.string()),
    pa.field("error", pa.string()),
]


class Stage(Protocol):
    name: str  # "midi" or "text"

    def fingerprint(self) -> dict[str, Any]: ...

    def schema(self) -> pa.Schema: ...

    def process(self, records: Sequence[Record]) -> pa.Table: ...

    def counters(self) -> dict[str, int]:
        """Run counters for statistics, e.g. {"cache_hits": 3, "cache_misses": 61}."""
        ...

    def close(self) -> None: ...
