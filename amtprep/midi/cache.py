"""Per-file feature cache on disk (diskcache), keyed by content, never by path.

Public API: ``FeatureCache(directory, backend)`` with ``key(data)``, ``get(key)``,
``put(key, result)``, ``close()``.

Key = sha256(file bytes) + ``FEATURE_VERSION`` + backend, so an edited file or a new feature
version misses and a renamed or copied file hits. Hashing reads the file once (~1 GB/s), far
cheaper than parsing. Values are the pickled ``FileResult`` (numpy arrays, no Arrow), only for
files that parsed; failures are not cached so a fixed file or a raised limit is retried.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import diskcache

from amtprep.midi.extract import FileResult
from amtprep.midi.version import FEATURE_VERSION


class FeatureCache:
    def __init__(self, directory: Path, backend: str) -> None:
        self._cache = diskcache.Cache(str(directory))
        self._suffix = f":{FEATURE_VERSION}:{backend}"

    @staticmethod
    def content_hash(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def key(self, sha256: str) -> str:
        return sha256 + self._suffix

    def get(self, key: str) -> FileResult | None:
        return self._cache.get(key)

    def put(self, key: str, result: FileResult) -> None:
        if result.features is not None:
            self._cache.set(key, result)

    def close(self) -> None:
        self._cache.close()
