"""``MidiStage``: a batch of records in, one Arrow row of MIDI features per record out.

Public API: ``MidiStage(cfg)`` implementing ``amtprep.stages.Stage``; also a context manager.

Files are parsed in ``cfg.workers`` worker processes (``pool``), even for ``workers=1``, so the
per-file timeout and crash isolation hold at every setting; output is identical for any worker
count and batch size. With ``cfg.use_cache`` the workers look each file up in ``cache`` before
parsing it (the parent opens no MIDI file, so a file that hangs on read times out like one that
hangs in the parser), and ``prefetch`` works the same with the cache on or off.
``fingerprint`` covers what changes a parsed row: feature version and backend, and with tokens
(``cfg.tokens``, see ``tokenizer``) the tokenizer's identity and the miditok version. Not
workers, the cache, or the limits ``max_midi_bytes`` and ``file_timeout``: they only decide which
files fail (``too_large``, ``timeout``), so ``--retry_failed`` with a raised limit retries those.

With tokens the rows gain the token columns (``tokens``) and the stage has ``artifacts()``: the
tokenizer's params and vocabulary, which the pipeline saves in the stage's folder and every
release (``tokenizer.json``, ``vocab.json``).

Where the bytes come from (docs/sources.md): files under the MIDI root, members of a
``.zip``/``.tar``/``.tar.gz`` root (indexed once here, when the stage is built, so a text-only
run builds nothing), or the input's own bytes column (``cfg.bytes_column``), read by row group
in the parent and sent to the workers with the job. Which of these is in use is part of the
input identity (``midi_root``, ``midi_root_archive``, ``midi_bytes_column``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from amtprep.config import MidiConfig
from amtprep.errors import ConfigError, InputFileError
from amtprep.io.archives import ArchiveSpec, member_name, prepare_archive
from amtprep.io.midi_bytes import MidiBytesReader
from amtprep.midi.cache import FeatureCache
from amtprep.midi.extract import BACKENDS, FileResult
from amtprep.midi.pool import WorkerPool
from amtprep.midi.schema import build_table, in_order, midi_schema, result_schema, result_table
from amtprep.midi.sources import bytes_item, member_item
from amtprep.midi.version import FEATURE_VERSION
from amtprep.records import STATUS_OK, Record

logger = logging.getLogger(__name__)


class MidiStage:
    name = "midi"

    def __init__(self, cfg: MidiConfig) -> None:
        """Raises ``ConfigError`` for an unknown backend, a non-positive limit or a cache dir
        that cannot be written."""
        if cfg.backend not in BACKENDS:
            raise ConfigError(f"unknown MIDI backend {cfg.backend!r}; choose one of {BACKENDS}")
        if cfg.workers < 1 or cfg.max_midi_bytes < 1 or cfg.file_timeout <= 0:
            raise ConfigError("workers, max_midi_bytes and file_timeout must be positive")
        self.cfg = cfg
        self.tokenizer = None
        if cfg.tokens.enabled:
            from amtprep.midi.tokenizer import MidiTokenizer  # imports miditok

            self.tokenizer = MidiTokenizer.build(cfg.tokens)
        self._groups = self.tokenizer.groups if self.tokenizer is not None else ()
        self._schema = midi_schema(self._groups)
        self._result_schema = result_schema(self._groups)
        cache_dir = cfg.cache_dir / "midi" if cfg.use_cache else None
        if cache_dir is not None:
            _open_cache(cache_dir, cfg.backend)
        self._bytes = (
            MidiBytesReader(cfg.bytes_input, cfg.bytes_column)
            if cfg.bytes_column and cfg.bytes_input is not None
            else None
        )
        archive = _prepare(cfg.archive, cfg.work_dir) if cfg.archive is not None else None
        self._archive_prefix = os.path.join(str(cfg.archive), "") if archive else None
        self._pool = WorkerPool(
            cfg.workers,
            cfg.backend,
            cfg.max_midi_bytes,
            cfg.file_timeout,
            cache_dir,
            self.tokenizer,
            archive,
        )
        names = ("files", "ok", "failed", "clipped", "fallbacks")
        if self.tokenizer is not None:
            names += ("tokens_truncated",)
        self._counts = dict.fromkeys(names, 0)

    def fingerprint(self) -> dict[str, Any]:
        fp = {"feature_version": FEATURE_VERSION, "backend": self.cfg.backend}
        if self.tokenizer is not None:
            fp.update(self.tokenizer.fingerprint())
        return fp

    def artifacts(self) -> dict[str, bytes]:
        """Files that describe the rows, saved beside the data (optional stage hook)."""
        return self.tokenizer.artifacts() if self.tokenizer is not None else {}

    def schema(self) -> pa.Schema:
        return self._schema

    def process(self, records: Sequence[Record]) -> pa.Table:
        malformed = [i for i, record in enumerate(records) if record.row_error]
        to_parse = [i for i, record in enumerate(records) if not record.row_error]
        parsed = self._pool.run(self._items([records[i] for i in to_parse]))
        failed = [FileResult.failed("malformed_row", records[i].row_error) for i in malformed]
        results = in_order(
            [(malformed, result_table(failed, self._groups)), (to_parse, parsed)],
            len(records),
            self._result_schema,
        )
        self._count(results)
        return build_table(records, results, self._schema)

    def warm_up(self) -> None:
        """Start the worker processes early (optional stage hook; see ``amtprep.stages``)."""
        self._pool.warm_up()

    def prefetch(self, records: Sequence[Record]) -> None:
        """Start on the batch ``process`` will get next, so the workers read, look up and parse
        while the runner writes the current shard."""
        self._pool.start(self._items([r for r in records if not r.row_error]))

    def _items(self, records: Sequence[Record]) -> list:
        """The pool's job items (``sources``): bytes from the input, archive members, paths."""
        if self._bytes is not None:
            read = self._bytes.read([r.idx for r in records])
            return [
                bytes_item(data, md5, f"row {r.idx} ({r.id})")
                for r, (data, md5) in zip(records, read, strict=True)
            ]
        prefix = self._archive_prefix
        if prefix is None:
            return [r.resolved_path for r in records]
        return [
            member_item(member_name(r.resolved_path[len(prefix) :]))
            if r.resolved_path.startswith(prefix)
            else r.resolved_path  # an absolute path outside the archive: a file on disk
            for r in records
        ]

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
        if self.tokenizer is not None:
            c["tokens_truncated"] += results.column("tokens_truncated").to_pylist().count(True)

    def counters(self) -> dict[str, int]:
        return {**self._counts, **self._pool.counters}

    def worker_pids(self) -> list[int]:
        return self._pool.worker_pids()

    def close(self) -> None:
        """Stop the worker processes; idempotent."""
        self._pool.close()
        if self._bytes is not None:
            self._bytes.close()
            self._bytes = None

    def __enter__(self) -> MidiStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_cache(directory: Path, backend: str) -> None:
    """Create the cache here, before the workers open it, so a cache dir that cannot be written
    is one clear error. Raises ``ConfigError``."""
    try:
        FeatureCache(directory, backend).close()
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"cannot open the MIDI feature cache in {directory} ({exc}); pass --cache_dir with a "
            "writable folder, or drop --use_cache"
        ) from None


def _prepare(archive: Path, work_dir: Path | None) -> ArchiveSpec:
    """Index the archive (once; see ``amtprep.io.archives``). Raises ``InputFileError``."""
    try:
        return prepare_archive(archive, work_dir or archive.parent)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFileError(
            f"cannot read the MIDI root archive {archive} ({exc}); check that it is a complete "
            ".zip, .tar or .tar.gz, or pass --midi_root with the extracted folder"
        ) from None
