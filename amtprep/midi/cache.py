"""Per-file feature cache on disk (diskcache), keyed by content, never by path.

Public API: ``FeatureCache(directory, backend, tokenizer=None)`` with ``content_hash(data)``,
``key(sha256)``, ``get(key)``, ``put(key, row)``, ``extract(path, max_bytes)``,
``lookup(data, sha256, where)``, ``rows(outcomes)``,
``take_counts() -> (hits, misses, dropped)`` and ``close()``.

Key = sha256(file bytes) + ``FEATURE_VERSION`` + backend (+ the tokenizer's ``cache_tag``: its
params, vocabulary, cut, BOS/EOS and the miditok/symusic versions), so an edited file, a new
feature version or other tokens miss and a renamed or copied file hits. Values are the file's
result row (the run's result schema, token columns included) as Arrow IPC bytes: exactly what
the workers produce, so a hit needs no conversion. Only files that parsed are stored; failures are not, so a fixed file or a raised
limit is retried.

The pool's workers use it (diskcache is safe across processes): ``extract`` reads a file once,
hashes it and returns the cached row or parses the bytes it read, all inside the worker's
per-file deadline, so a file that hangs on read (a FIFO, a stuck network mount) costs a
``timeout`` row, not the run. ``rows`` turns a chunk's outcomes into result rows and stores the
fresh ones that parsed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import diskcache
import pyarrow as pa

from amtprep.midi.errors import MidiFileError
from amtprep.midi.extract import FileResult, extract_data, read_midi_bytes
from amtprep.midi.schema import from_ipc, in_order, result_schema, result_table, to_ipc
from amtprep.midi.version import FEATURE_VERSION
from amtprep.records import STATUS_OK

logger = logging.getLogger(__name__)


class FeatureCache:
    def __init__(self, directory: Path, backend: str, tokenizer=None) -> None:
        self._cache = diskcache.Cache(str(directory))
        self._backend = backend
        self._tokenizer = tokenizer
        self._groups = tokenizer.groups if tokenizer is not None else ()
        self._schema = result_schema(self._groups)
        self._suffix = f":{FEATURE_VERSION}:{backend}"
        if tokenizer is not None:
            self._suffix += f":tokens-{tokenizer.cache_tag()}"
        self._hits = self._misses = self._dropped = 0

    @staticmethod
    def content_hash(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def key(self, sha256: str) -> str:
        return sha256 + self._suffix

    def get(self, key: str) -> pa.Table | None:
        """The cached row, or None; an entry that does not decode is a miss (and is dropped)."""
        data = self._cache.get(key)
        if data is None:
            return None
        try:
            row = from_ipc(data)
            if row.schema != self._schema:
                raise TypeError("its columns are not this run's")
            return row
        except (pa.ArrowException, TypeError) as exc:
            logger.warning("MIDI cache entry %s unreadable (%s); parsing the file again", key, exc)
            self._cache.delete(key)
            self._dropped += 1
            return None

    def put(self, key: str, row: pa.Table) -> None:
        self._cache.set(key, to_ipc(row).to_pybytes())

    def extract(self, path: str, max_bytes: int) -> pa.Table | FileResult:
        """The file's cached row (a hit), else its ``FileResult``: parsed from the bytes read for
        the hash (a miss), or why it could not be read. Never raises for a per-file problem."""
        try:
            data = read_midi_bytes(path, max_bytes)
        except MidiFileError as exc:
            return FileResult.failed(exc.error_type, str(exc))
        return self.lookup(data, self.content_hash(data), path)

    def lookup(self, data: bytes, sha256: str, where: str) -> pa.Table | FileResult:
        """The cached row of bytes already read (a hit), else their parsed ``FileResult``."""
        hit = self.get(self.key(sha256))
        if hit is not None:
            self._hits += 1
            return hit
        self._misses += 1
        return extract_data(data, sha256, self._backend, where, self._tokenizer)

    def rows(self, outcomes: Sequence[pa.Table | FileResult]) -> pa.Table:
        """Result rows of ``extract``'s outcomes, in order; stores the fresh rows that parsed."""
        fresh_at = [i for i, o in enumerate(outcomes) if isinstance(o, FileResult)]
        fresh = result_table([outcomes[i] for i in fresh_at], self._groups)
        statuses = fresh.column("status").to_pylist()
        for j, sha256 in enumerate(fresh.column("content_sha256").to_pylist()):
            if statuses[j] == STATUS_OK:
                self.put(self.key(sha256), fresh.slice(j, 1))
        hits = [([i], o) for i, o in enumerate(outcomes) if not isinstance(o, FileResult)]
        return in_order([(fresh_at, fresh), *hits], len(outcomes), self._schema)

    def take_counts(self) -> tuple[int, int, int]:
        """Hits, misses and unreadable entries dropped since the last call."""
        counts = self._hits, self._misses, self._dropped
        self._hits = self._misses = self._dropped = 0
        return counts

    def close(self) -> None:
        self._cache.close()
