"""Captions in, pooled vectors (or per-token states) out, in input order.

Public API: ``Encoded``, ``Encoder(model, tokenizer, *, plan, pooling, normalize, max_length,
batch_size, sort_window, max_tokens=None, prefetch_depth=0, packed=True)`` with ``.dim``, ``.tokenize(texts)``,
``.encode(texts)``; pooling helpers ``mean_pool``, ``cls_pool``.

Any encoder whose forward takes ``input_ids`` and ``attention_mask`` and returns
``last_hidden_state`` runs here: BERT-style models and the encoder of a T5 or BART. T5 tokenizers
add no token in front and ``</s>`` at the end; padding is right-side with the tokenizer's pad id
(0 for T5) and masked, so T5's relative positions among real tokens do not depend on it.

Speed on CPU comes from work not done: each caption is tokenised once without padding, batches
pad only to their longest member after a length sort, and the model runs under
``torch.inference_mode``. Pooling and normalisation are done in fp32 whatever the compute dtype.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from amtprep.text.device import ComputePlan
from amtprep.text.light import LightBert
from amtprep.text.packed import PackedBert
from amtprep.text.pipeline import ModelBatch, iter_model_batches, prefetch, to_device

POOLINGS = ("mean", "cls", "none")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    n_tokens: np.ndarray  # int32 [N], special tokens included, after truncation
    truncated: np.ndarray  # bool [N]
    vectors: np.ndarray | None  # float32 [N, D] for mean / cls pooling
    token_vectors: list[np.ndarray] | None  # float16 [n_tokens_i, D] each, for pooling "none"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, in fp32 (the sentence-transformers formula)."""
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)
    return summed / mask.sum(dim=1).clamp(min=1e-9)


def cls_pool(hidden: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0].to(torch.float32)


class Encoder:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        plan: ComputePlan,
        pooling: str,
        normalize: bool,
        max_length: int,
        batch_size: int,
        sort_window: int,
        max_tokens: int | None = None,
        prefetch_depth: int = 0,
        packed: bool = True,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.plan = plan
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.batch_size = batch_size
        self.sort_window = sort_window
        self.max_tokens = max_tokens
        self.prefetch_depth = prefetch_depth
        self.dim = int(model.config.hidden_size)
        self.model_batches = 0
        # Weights are shared with ``model``; build after any device/dtype cast of the model.
        self._packed = None
        light = isinstance(model, LightBert)  # tensors only, no forward of its own
        if packed and PackedBert.supports(model):
            try:
                self._packed = PackedBert(model, matmul_dtype=self._autocast_dtype())
            except (AttributeError, TypeError, KeyError) as exc:
                if light:
                    raise
                # a transformers release that renamed a module PackedBert reads: the plain
                # forward still works, slower; say so rather than fail the run
                log.warning("packed forward unavailable (%s): using the model's own forward", exc)
        elif light:
            raise ValueError("a model loaded without transformers runs packed only")
        self.packed = self._packed is not None  # whether the packed forward runs

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (truncated to ``max_length``, no padding) and a truncated flag each."""
        # Stripped as sentence-transformers does, so both see the same tokens on any tokenizer.
        encoding = self.tokenizer(
            [text.strip() for text in texts],
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        # The fast tokenizer keeps what truncation cut off in .overflowing.
        truncated = [bool(enc.overflowing) for enc in encoding.encodings]
        return encoding["input_ids"], truncated

    def _autocast_dtype(self) -> torch.dtype | None:
        if not self.plan.autocast:
            return None
        return torch.bfloat16 if self.plan.dtype == "bf16" else torch.float16

    def _forward(self, batch: ModelBatch) -> torch.Tensor:
        self.model_batches += 1
        if self._packed is not None:  # casts its own weights; needs no autocast
            return self._packed(batch.input_ids, batch.attention_mask, batch.flat_index)
        dtype = self._autocast_dtype()
        with torch.autocast(self.plan.device, dtype=dtype) if dtype else contextlib.nullcontext():
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return out.last_hidden_state

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Encode ``texts``; row ``i`` of the result belongs to ``texts[i]``."""
        n = len(texts)
        n_tokens = np.zeros(n, dtype=np.int32)
        truncated = np.zeros(n, dtype=bool)
        vectors = np.empty((n, self.dim), dtype=np.float32) if self.pooling != "none" else None
        token_vectors: list[np.ndarray] | None = [] if self.pooling == "none" else None
        if token_vectors is not None:
            token_vectors.extend([np.empty((0, self.dim), np.float16)] * n)
        if n == 0:
            return Encoded(n_tokens, truncated, vectors, token_vectors)
        batches = iter_model_batches(
            texts,
            self.tokenize,
            pad_id=self.tokenizer.pad_token_id or 0,
            batch_size=self.batch_size,
            sort_window=self.sort_window,
            max_tokens=self.max_tokens,
            pin_memory=self.plan.device == "cuda",
        )
        with torch.inference_mode():
            for host_batch in prefetch(batches, self.prefetch_depth):
                batch = to_device(host_batch, self.plan.device)
                hidden = self._forward(batch)
                positions = host_batch.positions
                n_tokens[positions] = host_batch.n_tokens
                truncated[positions] = host_batch.truncated
                if vectors is not None:
                    pooled = (
                        mean_pool(hidden, batch.attention_mask)
                        if self.pooling == "mean"
                        else cls_pool(hidden)
                    )
                    if self.normalize:
                        pooled = F.normalize(pooled, p=2, dim=1)
                    vectors[positions] = pooled.cpu().numpy()
                else:
                    states = hidden.to(torch.float16).cpu().numpy()
                    for row, position in enumerate(positions):
                        token_vectors[position] = states[row, : host_batch.n_tokens[row]].copy()
        return Encoded(n_tokens, truncated, vectors, token_vectors)
