"""A disk cache of caption embeddings that can never serve vectors from another model or setting.

Public API: ``CachedEmbedding``, ``EmbeddingCache(directory, settings)`` with ``get_many(captions)``,
``set_many(captions, entries)``, ``close()``; ``cache_namespace(settings)``.

The key is sha256 over the settings that change a vector (model id, weights hash, revision,
pooling, max length, compute dtype, normalisation) and the caption itself, so swapping weights
behind an unchanged model name still misses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CachedEmbedding:
    n_tokens: int
    truncated: bool
    vector: np.ndarray  # float32 [D], or float16 [n_tokens, D] for pooling "none"


def cache_namespace(settings: Mapping[str, Any]) -> bytes:
    """Digest of the settings; every key made under them starts from it."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).digest()


class EmbeddingCache:
    def __init__(self, directory: Path, settings: Mapping[str, Any]) -> None:
        import diskcache

        directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(directory))
        self._namespace = cache_namespace(settings)

    def key(self, caption: str) -> str:
        return hashlib.sha256(self._namespace + caption.encode("utf-8")).hexdigest()

    def get_many(self, captions: Sequence[str]) -> list[CachedEmbedding | None]:
        # One transaction: one SQLite lock for the whole batch instead of one per caption.
        with self._cache.transact():
            found = [self._cache.get(self.key(caption)) for caption in captions]
        return [CachedEmbedding(*entry) if entry is not None else None for entry in found]

    def set_many(self, captions: Sequence[str], entries: Sequence[CachedEmbedding]) -> None:
        with self._cache.transact():
            for caption, entry in zip(captions, entries, strict=True):
                self._cache.set(self.key(caption), (entry.n_tokens, entry.truncated, entry.vector))

    def close(self) -> None:
        self._cache.close()
