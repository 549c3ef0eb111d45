"""Cutting tokenised captions into model batches: pure functions over token lengths.

Public API: ``plan_batches(lengths, batch_size, max_tokens=None)``, ``pad_batch(token_ids, pad_id)``.

Sorting by length before batching means each batch pads to a length close to its members' own,
which is the largest single CPU saving after not padding to max_length at all (issue figures:
34/s padded to 256, 114/s padded to longest, 120/s sorted).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plan_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> list[np.ndarray]:
    """Group positions ``0..len(lengths)-1`` into batches, longest first.

    Each batch has at most ``batch_size`` members and, when ``max_tokens`` is set, at most
    ``max_tokens`` padded tokens (members x longest member); a single over-long member still gets
    a batch of its own. Every position appears in exactly one batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # Longest first: the biggest activation allocation happens at once rather than creeping up.
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        size = min(batch_size, n - start)
        if max_tokens is not None:
            size = max(1, min(size, max_tokens // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest member: ``(input_ids, attention_mask)``, both int64 ``[B, T]``."""
    longest = max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(token_ids), longest), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask
