"""``MidiStage``: a batch of records in, one Arrow row of MIDI features per record out.

Public API: ``MidiStage(cfg)`` implementing ``amtprep.stages.Stage``; also a context manager.

Files are parsed in ``cfg.workers`` worker processes (``pool``), even for ``workers=1``, so the
per-file timeout and crash isolation hold at every setting; output is identical for any worker
count and batch size. With ``cfg.use_cache`` the parent reads and hashes each file and serves
hits from ``cache``; only misses go to the workers. ``fingerprint`` covers what changes rows:
feature version, backend and ``max_midi_bytes`` (not workers, cache or ``file_timeout``, so a
resume may raise the timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from amtprep.config import MidiConfig
from amtprep.errors import ConfigError
from amtprep.midi.cache import FeatureCache
from amtprep.midi.errors import MidiFileError
from amtprep.midi.extract import BACKENDS, FileResult, read_midi_bytes
from amtprep.midi.pool import WorkerPool
from amtprep.midi.schema import MIDI_SCHEMA, build_table
from amtprep.midi.version import FEATURE_VERSION
from amtprep.records import Record

logger = logging.getLogger(__name__)


class MidiStage:
    name = "midi"

    def __init__(self, cfg: MidiConfig) -> None:
        """Raises ``ConfigError`` for an unknown backend or a non-positive limit."""
        if cfg.backend not in BACKENDS:
            raise ConfigError(f"unknown MIDI backend {cfg.backend!r}; choose one of {BACKENDS}")
        if cfg.workers < 1 or cfg.max_midi_bytes < 1 or cfg.file_timeout <= 0:
            raise ConfigError("workers, max_midi_bytes and file_timeout must be positive")
        self.cfg = cfg
        self._pool = WorkerPool(cfg.workers, cfg.backend, cfg.max_midi_bytes, cfg.file_timeout)
        self._cache = FeatureCache(cfg.cache_dir / "midi", cfg.backend) if cfg.use_cache else None
        self._counts = dict.fromkeys(
            ("files", "ok", "failed", "cache_hits", "cache_misses", "clipped", "fallbacks"), 0
        )

    def fingerprint(self) -> dict[str, Any]:
        return {
            "feature_version": FEATURE_VERSION,
            "backend": self.cfg.backend,
            "max_midi_bytes": self.cfg.max_midi_bytes,
        }

    def schema(self) -> pa.Schema:
        return MIDI_SCHEMA

    def process(self, records: Sequence[Record]) -> pa.Table:
        results: list[FileResult | None] = [None] * len(records)
        to_parse: list[int] = []
        cache_keys: dict[int, str] = {}
        for i, record in enumerate(records):
            if record.row_error:
                results[i] = FileResult.failed("malformed_row", record.row_error)
            elif self._cache is None:
                to_parse.append(i)
            else:
                results[i] = self._from_cache(record, cache_keys, i)
                if results[i] is None:
                    to_parse.append(i)
        parsed = self._pool.run([records[i].resolved_path for i in to_parse])
        for i, result in zip(to_parse, parsed, strict=True):
            results[i] = result
            if self._cache is not None and result.sha256 is not None:
                self._cache.put(self._cache.key(result.sha256), result)
        self._count(results)
        return build_table(list(zip(records, results, strict=True)))

    def _from_cache(self, record: Record, keys: dict[int, str], i: int) -> FileResult | None:
        try:
            data = read_midi_bytes(record.resolved_path, self.cfg.max_midi_bytes)
        except MidiFileError as exc:
            return FileResult.failed(exc.error_type, str(exc))
        keys[i] = self._cache.key(FeatureCache.content_hash(data))
        hit = self._cache.get(keys[i])
        self._counts["cache_hits" if hit is not None else "cache_misses"] += 1
        return hit

    def _count(self, results: list[FileResult]) -> None:
        c = self._counts
        for result in results:
            c["files"] += 1
            c["ok" if result.features is not None else "failed"] += 1
            if result.parser == "mido_clip":
                c["clipped"] += 1
            if self.cfg.backend != "mido" and result.parser in ("mido", "mido_clip"):
                c["fallbacks"] += 1

    def counters(self) -> dict[str, int]:
        return {**self._counts, **self._pool.counters}

    def worker_pids(self) -> list[int]:
        return self._pool.worker_pids()

    def close(self) -> None:
        """Stop the worker processes and close the cache; idempotent."""
        self._pool.close()
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> MidiStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
