"""A BERT forward pass over real tokens only ("packed"), with the model's own weights.

Public API: ``PackedBert.supports(model)``, ``PackedBert(model, matmul_dtype=None,
linears="auto")`` with ``.linears`` (the route taken), called as
``packed(input_ids, attention_mask) -> last_hidden_state``; ``onednn_linear_available()``,
``LINEAR_ENV``.

Why: on CPU ~80% of the time is the dense layers, whose cost is proportional to the tokens they
see. Hugging Face runs them over padding too; a runner batch of 64 captions sorted by length still
pads ~10% (a 300-caption sort pads ~3%). Here every dense layer, LayerNorm and GELU runs on a
``[real_tokens, D]`` matrix and only attention, a small share, sees the padded ``[B, H, T, d]``
layout. The math is the model's: vectors agree with ``model(...)`` to float rounding (tested).
Query, key and value projections are fused into one matmul. For bf16 on CPU the dense weights are
cast once instead of by autocast on every call.

fp32 dense layers on CPU go through oneDNN (``torch.ops.mkldnn._linear_pointwise`` on weights
reordered once, GELU fused into the up-projection): measured 2-2.4x the GFLOP/s of ``F.linear``'s
default fp32 path on this project's CPUs (bench/README.md). The op is private to torch, so it is
used only after a probe at start-up shows it present and equal to ``F.linear``; otherwise, or
with ``AMTPREP_LINEAR=torch``, the plain ``F.linear`` route runs (same math, tested equal).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

LINEAR_ENV = "AMTPREP_LINEAR"  # "torch" forces F.linear; "auto" (default) probes oneDNN


@cache
def onednn_linear_available() -> bool:
    """The private oneDNN linear op exists here and agrees with ``F.linear`` (a probe)."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if not torch.backends.mkldnn.is_available() or mkldnn is None:
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(37, 48, generator=gen)
        w = torch.randn(64, 48, generator=gen)
        b = torch.randn(64, generator=gen)
        packed = mkldnn._reorder_linear_weight(w, None)
        got = mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        gelu = mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none")
    except (AttributeError, RuntimeError, TypeError):
        return False
    ref = F.linear(x, w, b)
    return bool(
        got.shape == ref.shape
        and torch.allclose(got, ref, atol=1e-4, rtol=1e-5)
        and torch.allclose(gelu, F.gelu(ref), atol=1e-4, rtol=1e-5)
    )


class PackedBert:
    @staticmethod
    def supports(model: Any) -> bool:
        """Exactly a Hugging Face ``BertModel`` encoder with absolute positions."""
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
        """``matmul_dtype`` (e.g. bf16 on CPU) casts the dense weights once, doing what autocast
        does (bf16 matmuls, fp32 LayerNorm and residual sums) without re-casting every weight
        on every call. ``linears``: "auto" (oneDNN for fp32 on CPU when the probe passes, else
        torch), "torch" or "onednn"; ``AMTPREP_LINEAR`` overrides "auto"."""
        linears = os.environ.get(LINEAR_ENV, linears) if linears == "auto" else linears
        on_cpu = model.embeddings.word_embeddings.weight.device.type == "cpu"
        eligible = on_cpu and matmul_dtype is None
        if linears == "onednn" and not (eligible and onednn_linear_available()):
            raise ValueError("oneDNN linears need fp32 weights on a CPU where the probe passes")
        use_onednn = linears == "onednn" or (
            linears == "auto" and eligible and onednn_linear_available()
        )
        self.linears = "onednn" if use_onednn else "torch"

        def dense(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
            weight, bias = weight.detach(), bias.detach()
            if use_onednn:  # reordered once into oneDNN's blocked layout
                return (torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None), bias)
            if matmul_dtype is not None:
                weight, bias = weight.to(matmul_dtype), bias.to(matmul_dtype)
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
                    layer.attention.output.LayerNorm,
                    dense(layer.intermediate.dense.weight, layer.intermediate.dense.bias),
                    layer.intermediate.intermediate_act_fn,
                    dense(layer.output.dense.weight, layer.output.dense.bias),
                    layer.output.LayerNorm,
                )
            )
        # exact GELU only: "gelu_new"/"gelu_fast" (tanh forms) keep the separate activation
        self._fuse_gelu = use_onednn and getattr(model.config, "hidden_act", None) == "gelu"

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        real = attention_mask.bool()
        # Row-major positions of the real tokens in the [B * T] grid.
        flat_index = real.reshape(-1).nonzero().squeeze(1)
        positions = flat_index % length
        x = self.word(input_ids.reshape(-1)[flat_index]) + self.position(positions)
        x = self.embed_norm(x + self.token_type_0)
        width = x.shape[1]
        head_dim = width // self.heads
        keys_allowed = real[:, None, None, :]  # [B, 1, 1, T]: padding is never attended to
        linear = _onednn_linear if self.linears == "onednn" else _linear
        for qkv, attn_out, attn_norm, up, act, down, out_norm in self.layers:
            qkv = linear(x, qkv)
            grid = qkv.new_zeros(batch * length, qkv.shape[1])
            grid.index_copy_(0, flat_index, qkv)
            q, k, v = grid.view(batch, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=keys_allowed)
            context = context.transpose(1, 2).reshape(batch * length, width)[flat_index]
            # Residual sums and LayerNorm in the activations' dtype (fp32 under bf16 matmuls).
            x = attn_norm(linear(context, attn_out) + x)
            if self._fuse_gelu:
                x = out_norm(linear(_onednn_linear(x, up, "gelu"), down) + x)
            else:
                x = out_norm(linear(act(linear(x, up)), down) + x)
        hidden = x.new_zeros(batch * length, width)
        hidden.index_copy_(0, flat_index, x)
        return hidden.view(batch, length, width)


def _linear(x: torch.Tensor, weight_bias: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    weight, bias = weight_bias
    return F.linear(x.to(weight.dtype), weight, bias)


def _onednn_linear(
    x: torch.Tensor, weight_bias: tuple[torch.Tensor, torch.Tensor], attr: str = "none"
) -> torch.Tensor:
    weight, bias = weight_bias
    algorithm = "none" if attr == "gelu" else ""  # "none": the exact (erf) GELU, as BERT's
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, attr, [], algorithm)
