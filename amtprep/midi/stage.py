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
from amtprep.midi.schema import MIDI_SCHEMA, build_table, in_order, result_table
from amtprep.midi.version import FEATURE_VERSION
from amtprep.records import STATUS_OK, Record

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
        done: list[tuple[int, FileResult]] = []  # failed before parsing
        hits: list[tuple[int, pa.Table]] = []
        to_parse: list[int] = []
        for i, record in enumerate(records):
            if record.row_error:
                done.append((i, FileResult.failed("malformed_row", record.row_error)))
            elif self._cache is None:
                to_parse.append(i)
            else:
                found = self._from_cache(record)
                if isinstance(found, FileResult):
                    done.append((i, found))
                elif found is not None:
                    hits.append((i, found))
                else:
                    to_parse.append(i)
        parsed = self._pool.run([records[i].resolved_path for i in to_parse])
        if self._cache is not None:
            self._fill_cache(parsed)
        results = in_order(
            [
                ([i for i, _ in done], result_table([r for _, r in done])),
                *(([i], row) for i, row in hits),
                (to_parse, parsed),
            ],
            len(records),
        )
        self._count(results)
        return build_table(records, results)

    def prefetch(self, records: Sequence[Record]) -> None:
        """Start parsing the batch ``process`` will get next, so the workers parse while the
        runner writes the current shard. With the cache on it does nothing: look-ups happen in
        ``process``, and a hit must not be parsed."""
        if self._cache is None:
            self._pool.start([r.resolved_path for r in records if not r.row_error])

    def _from_cache(self, record: Record) -> pa.Table | FileResult | None:
        """The cached row, a failure reading the file, or None (a miss)."""
        try:
            data = read_midi_bytes(record.resolved_path, self.cfg.max_midi_bytes)
        except MidiFileError as exc:
            return FileResult.failed(exc.error_type, str(exc))
        hit = self._cache.get(self._cache.key(FeatureCache.content_hash(data)))
        self._counts["cache_hits" if hit is not None else "cache_misses"] += 1
        return hit

    def _fill_cache(self, parsed: pa.Table) -> None:
        statuses = parsed.column("status").to_pylist()
        for j, (sha256, status) in enumerate(
            zip(parsed.column("content_sha256").to_pylist(), statuses, strict=True)
        ):
            if status == STATUS_OK:  # failures are not cached: a fixed file is retried
                self._cache.put(self._cache.key(sha256), parsed.slice(j, 1))

    def _count(self, results: pa.Table) -> None:
        c = self._counts
        statuses = results.column("status").to_pylist()
        c["files"] += len(statuses)
        c["ok"] += statuses.count(STATUS_OK)
        c["failed"] += len(statuses) - statuses.count(STATUS_OK)
        parsers = results.column("parser").to_pylist()
        c["clipped"] += parsers.count("mido_clip")
        if self.cfg.backend != "mido":
            c["fallbacks"] += parsers.count("mido") + parsers.count("mido_clip")

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
