"""Per-file feature cache on disk (diskcache), keyed by content, never by path.

Public API: ``FeatureCache(directory, backend)`` with ``content_hash(data)``, ``key(sha256)``,
``get(key)``, ``put(key, row)``, ``close()``.

Key = sha256(file bytes) + ``FEATURE_VERSION`` + backend, so an edited file or a new feature
version misses and a renamed or copied file hits. Hashing reads the file once (~1 GB/s), far
cheaper than parsing. Values are the file's result row (``schema.RESULT_SCHEMA``) as Arrow IPC
bytes: exactly what the workers produce, so a hit needs no conversion. The stage stores only
files that parsed; failures are not cached so a fixed file or a raised limit is retried.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import diskcache
import pyarrow as pa

from amtprep.midi.schema import from_ipc, to_ipc
from amtprep.midi.version import FEATURE_VERSION

logger = logging.getLogger(__name__)


class FeatureCache:
    def __init__(self, directory: Path, backend: str) -> None:
        self._cache = diskcache.Cache(str(directory))
        self._suffix = f":{FEATURE_VERSION}:{backend}"

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
            return from_ipc(data)
        except (pa.ArrowException, TypeError) as exc:
            logger.warning("MIDI cache entry %s unreadable (%s); parsing the file again", key, exc)
            self._cache.delete(key)
            return None

    def put(self, key: str, row: pa.Table) -> None:
        self._cache.set(key, to_ipc(row).to_pybytes())

    def close(self) -> None:
        self._cache.close()
