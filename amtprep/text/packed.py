"""A BERT forward pass over real tokens only ("packed"), with the model's own weights.

Public API: ``PackedBert.supports(model)``, ``PackedBert(model, matmul_dtype=None,
linears="auto")`` with ``.linears`` (the route taken), called as
``packed(input_ids, attention_mask) -> last_hidden_state``; ``onednn_linear_available(dtype)``,
``LINEAR_ENV``, ``ATTENTION_ALIGN``.

Why: on CPU most of the time is the dense layers, whose cost is proportional to the tokens they
see. Hugging Face runs them over padding too. Here every dense layer, LayerNorm and GELU runs on
a ``[real_tokens, D]`` matrix and only attention sees a padded ``[B, H, T, d]`` layout, with T
rounded up to a multiple of ``ATTENTION_ALIGN``: torch's CPU attention kernel runs 1.3-1.8x
faster on such lengths than on the odd lengths in between (bench/README.md), and padded keys are
masked, so the math is unchanged. Query, key and value projections are fused into one matmul.

Dense layers on CPU go through oneDNN (``torch.ops.mkldnn._linear_pointwise`` on weights
reordered once, GELU fused into the up-projection), at fp32 and at bf16 (where the reordered
layout feeds AMX tiles directly: 1.0-1.6x ``F.linear``'s bf16 GFLOP/s here). The op is private
to torch, so it is used only after a probe at start-up shows it present and equal to
``F.linear``; otherwise, or with ``AMTPREP_LINEAR=torch``, the plain ``F.linear`` route runs
(same math, tested equal).

bf16 on CPU: the whole residual stream is bf16 (LayerNorm computes in fp32 inside and rounds its
output), like ``model.to(torch.bfloat16)``; pooling and normalisation stay fp32 in the encoder.
Measured min cosine to fp32 0.9999 on the default model, for ~1.07x the speed of keeping fp32
residuals (bench/README.md).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

from amtprep.text.light import LightBert

LINEAR_ENV = "AMTPREP_LINEAR"  # "torch" forces F.linear; "auto" (default) probes oneDNN
ATTENTION_ALIGN = 16  # attention sequence lengths are padded up to a multiple of this


@cache
def onednn_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """The private oneDNN linear op exists here and agrees with ``F.linear`` at ``dtype``."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if not torch.backends.mkldnn.is_available() or mkldnn is None:
        return False
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(37, 48, generator=gen).to(dtype)
        w = torch.randn(64, 48, generator=gen).to(dtype)
        b = torch.randn(64, generator=gen).to(dtype)
        packed = mkldnn._reorder_linear_weight(w, None)
        got = mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        gelu = mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none")
    except (AttributeError, RuntimeError, TypeError):
        return False
    ref = F.linear(x.float(), w.float(), b.float())
    return bool(
        got.shape == ref.shape
        and got.dtype == dtype
        and torch.allclose(got.float(), ref, atol=tolerance, rtol=tolerance)
        and torch.allclose(gelu.float(), F.gelu(ref), atol=tolerance, rtol=tolerance)
    )


class _Norm:
    """A LayerNorm's parameters in the residual stream's dtype."""

    def __init__(self, norm: torch.nn.LayerNorm, dtype: torch.dtype) -> None:
        self.weight = norm.weight.detach().to(dtype)
        self.bias = norm.bias.detach().to(dtype)
        self.eps = norm.eps
        self.shape = tuple(norm.normalized_shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class PackedBert:
    @staticmethod
    def supports(model: Any) -> bool:
        """Exactly a Hugging Face ``BertModel`` encoder with absolute positions, or the same
        tensors loaded without transformers (``light.LightBert``)."""
        if isinstance(model, LightBert):
            return True
        from transformers import BertModel

        config = model.config
        return (
            type(model) is BertModel
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False)
        )

    def __init__(
        self, model: Any, matmul_dtype: torch.dtype | None = None, linears: str = "auto"
    ) -> None:
        """``matmul_dtype`` (e.g. bf16 on CPU) casts the weights once (and the residual stream,
        see the module docstring) instead of autocast re-casting every weight on every call.
        ``linears``: "auto" (oneDNN on CPU when the probe passes, else torch), "torch" or
        "onednn"; ``AMTPREP_LINEAR`` overrides "auto"."""
        linears = os.environ.get(LINEAR_ENV, linears) if linears == "auto" else linears
        weights = model.embeddings.word_embeddings.weight
        dtype = matmul_dtype or weights.dtype  # a GPU model is already cast to bf16/fp16
        on_cpu = weights.device.type == "cpu"
        eligible = on_cpu and dtype in (torch.float32, torch.bfloat16)
        if linears == "onednn" and not (eligible and onednn_linear_available(dtype)):
            raise ValueError(
                "oneDNN linears need fp32 or bf16 weights on a CPU where the probe passes"
            )
        use_onednn = linears == "onednn" or (
            linears == "auto" and eligible and onednn_linear_available(dtype)
        )
        self.linears = "onednn" if use_onednn else "torch"
        self.dtype = dtype

        def dense(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
            weight, bias = weight.detach().to(dtype), bias.detach().to(dtype)
            if use_onednn:  # reordered once into oneDNN's blocked layout
                return (torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None), bias)
            return weight, bias

        embeddings = model.embeddings
        self.word = embeddings.word_embeddings
        self.position = embeddings.position_embeddings
        # Captions are single segments: token type 0 everywhere, as the model's default.
        self.token_type_0 = embeddings.token_type_embeddings.weight[0]
        self.embed_norm = embeddings.LayerNorm
        self.heads = model.config.num_attention_heads
        self.layers = []
        for layer in model.encoder.layer:
            attn = layer.attention.self
            self.layers.append(
                (
                    dense(
                        torch.cat([attn.query.weight, attn.key.weight, attn.value.weight]),
                        torch.cat([attn.query.bias, attn.key.bias, attn.value.bias]),
                    ),
                    dense(layer.attention.output.dense.weight, layer.attention.output.dense.bias),
                    _Norm(layer.attention.output.LayerNorm, dtype),
                    dense(layer.intermediate.dense.weight, layer.intermediate.dense.bias),
                    layer.intermediate.intermediate_act_fn,
                    dense(layer.output.dense.weight, layer.output.dense.bias),
                    _Norm(layer.output.LayerNorm, dtype),
                )
            )
        # exact GELU only: "gelu_new"/"gelu_fast" (tanh forms) keep the separate activation
        self._fuse_gelu = use_onednn and getattr(model.config, "hidden_act", None) == "gelu"

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        flat_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``flat_index`` (``pipeline.real_token_index``, built on the host): the real tokens'
        row-major positions; without it they are found with ``nonzero()``, a host sync on GPU."""
        batch, length = input_ids.shape
        real = attention_mask.bool()
        # Row-major positions of the real tokens in the [B * T] grid, and in attention's grid of
        # [B * T'] (T' = T rounded up to ATTENTION_ALIGN).
        if flat_index is None:
            flat_index = real.reshape(-1).nonzero().squeeze(1)
        positions = flat_index % length
        span = -(-length // ATTENTION_ALIGN) * ATTENTION_ALIGN
        attended = F.pad(real, (0, span - length))
        grid_index = flat_index + (flat_index // length) * (span - length)
        x = self.word(input_ids.reshape(-1)[flat_index]) + self.position(positions)
        x = self.embed_norm(x + self.token_type_0).to(self.dtype)
        width = x.shape[1]
        head_dim = width // self.heads
        keys_allowed = attended[:, None, None, :]  # [B, 1, 1, T']: padding is never attended to
        linear = _onednn_linear if self.linears == "onednn" else _linear
        # One grid for all layers: each overwrites the real rows; padding rows stay zero.
        grid = x.new_zeros(batch * span, 3 * width)
        for qkv, attn_out, attn_norm, up, act, down, out_norm in self.layers:
            qkv = linear(x, qkv)
            grid.index_copy_(0, grid_index, qkv)
            q, k, v = grid.view(batch, span, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=keys_allowed)
            context = context.transpose(1, 2).reshape(batch * span, width)[grid_index]
            x = attn_norm(linear(context, attn_out) + x)
            if self._fuse_gelu:
                x = out_norm(linear(_onednn_linear(x, up, "gelu"), down) + x)
            else:
                x = out_norm(linear(act(linear(x, up)), down) + x)
        hidden = x.new_zeros(batch * length, width, dtype=torch.float32)
        hidden.index_copy_(0, flat_index, x.float())
        return hidden.view(batch, length, width)


def _linear(x: torch.Tensor, weight_bias: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    weight, bias = weight_bias
    return F.linear(x, weight, bias)


def _onednn_linear(
    x: torch.Tensor, weight_bias: tuple[torch.Tensor, torch.Tensor], attr: str = "none"
) -> torch.Tensor:
    weight, bias = weight_bias
    algorithm = "none" if attr == "gelu" else ""  # "none": the exact (erf) GELU, as BERT's
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, attr, [], algorithm)
