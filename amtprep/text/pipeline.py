"""Feeding the model: tokenise a window, sort, pad, pin, prefetch, copy to the device.

Public API: ``ModelBatch``, ``Tokenize``, ``iter_model_batches(texts, tokenize, ...)``,
``prefetch(iterable, depth)``, ``to_device(batch, device)``.

Everything here is parametrised by device so the GPU path (pinned host memory, non-blocking
copies, tokenising the next window in a background thread while the device runs the current one)
runs unchanged, and is tested, on CPU.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch

from amtprep.text.batching import pad_batch, plan_batches

T = TypeVar("T")

# texts -> (token ids per text, already truncated; truncated flag per text)
Tokenize = Callable[[Sequence[str]], tuple[list[list[int]], list[bool]]]


@dataclass(frozen=True)
class ModelBatch:
    positions: np.ndarray  # index of each row in the texts given to iter_model_batches
    input_ids: torch.Tensor  # [B, T] int64, right-padded to the longest row
    attention_mask: torch.Tensor  # [B, T] int64
    n_tokens: np.ndarray  # int32 [B]: real tokens per row, special tokens included
    truncated: np.ndarray  # bool [B]
    # int64 [sum(n_tokens)]: where the real tokens sit in the row-major [B * T] grid, built on
    # the host so the packed forward needs no ``nonzero()`` (a host sync on a GPU)
    flat_index: torch.Tensor | None = None


def real_token_index(n_tokens: np.ndarray, length: int) -> np.ndarray:
    """Row-major positions of the first ``n_tokens[b]`` tokens of each row of a ``[B, length]``
    grid: what ``attention_mask.reshape(-1).nonzero()`` gives for a right-padded batch."""
    counts = np.asarray(n_tokens, dtype=np.int64)
    rows = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return rows * length + (np.arange(counts.sum(), dtype=np.int64) - starts)


def iter_model_batches(
    texts: Sequence[str],
    tokenize: Tokenize,
    *,
    pad_id: int,
    batch_size: int,
    sort_window: int,
    max_tokens: int | None = None,
    pin_memory: bool = False,
) -> Iterator[ModelBatch]:
    """Yield batches covering every text once; sorted by length within ``sort_window`` batches.

    Each window is tokenised only when the consumer reaches it, so under ``prefetch`` the next
    window's tokenising overlaps the model running on the current one.
    """
    window = batch_size * max(1, sort_window)
    for start in range(0, len(texts), window):
        token_ids, truncated = tokenize(texts[start : start + window])
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int32, count=len(token_ids))
        truncated_flags = np.asarray(truncated, dtype=bool)
        for members in plan_batches(lengths, batch_size, max_tokens):
            input_ids, attention_mask = pad_batch([token_ids[i] for i in members], pad_id)
            ids_t, mask_t = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
            flat_t = torch.from_numpy(real_token_index(lengths[members], input_ids.shape[1]))
            if pin_memory:
                ids_t, mask_t, flat_t = ids_t.pin_memory(), mask_t.pin_memory(), flat_t.pin_memory()
            yield ModelBatch(
                positions=members + start,
                input_ids=ids_t,
                attention_mask=mask_t,
                n_tokens=lengths[members],
                truncated=truncated_flags[members],
                flat_index=flat_t,
            )


def to_device(batch: ModelBatch, device: str | torch.device) -> ModelBatch:
    """Copy the tensors to ``device``; non-blocking when the host memory is pinned."""
    if torch.device(device) == batch.input_ids.device:
        return batch
    non_blocking = batch.input_ids.is_pinned()
    flat = batch.flat_index
    return replace(
        batch,
        input_ids=batch.input_ids.to(device, non_blocking=non_blocking),
        attention_mask=batch.attention_mask.to(device, non_blocking=non_blocking),
        flat_index=None if flat is None else flat.to(device, non_blocking=non_blocking),
    )


_DONE = object()


def prefetch(iterable: Iterable[T], depth: int) -> Iterator[T]:
    """Run ``iterable`` in a daemon thread, keeping up to ``depth`` items ready; order is kept.

    ``depth == 0`` iterates inline. An exception in the producer is re-raised in the consumer.
    Closing the returned generator early stops the producer at its next item.
    """
    if depth <= 0:
        yield from iterable
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterable:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    thread = threading.Thread(target=produce, name="amtprep-text-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
