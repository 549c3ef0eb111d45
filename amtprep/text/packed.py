"""A BERT forward pass over real tokens only ("packed"), with the model's own weights.

Public API: ``PackedBert.supports(model)``, ``PackedBert(model, matmul_dtype=None)``, called as
``packed(input_ids, attention_mask) -> last_hidden_state``.

Why: on CPU ~80% of the time is the dense layers, whose cost is proportional to the tokens they
see. Hugging Face runs them over padding too; a runner batch of 64 captions sorted by length still
pads ~10% (a 300-caption sort pads ~3%). Here every dense layer, LayerNorm and GELU runs on a
``[real_tokens, D]`` matrix and only attention, a small share, sees the padded ``[B, H, T, d]``
layout. The math is the model's: vectors agree with ``model(...)`` to float rounding (tested).
Query, key and value projections are fused into one matmul. For bf16 on CPU the dense weights are
cast once instead of by autocast on every call.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


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

    def __init__(self, model: Any, matmul_dtype: torch.dtype | None = None) -> None:
        """``matmul_dtype`` (e.g. bf16 on CPU) casts the dense weights once, doing what autocast
        does (bf16 matmuls, fp32 LayerNorm and residual sums) without re-casting every weight
        on every call."""

        def dense(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            weight, bias = weight.detach(), bias.detach()
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
        for qkv, attn_out, attn_norm, up, act, down, out_norm in self.layers:
            qkv = _linear(x, qkv)
            grid = qkv.new_zeros(batch * length, qkv.shape[1])
            grid.index_copy_(0, flat_index, qkv)
            q, k, v = grid.view(batch, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=keys_allowed)
            context = context.transpose(1, 2).reshape(batch * length, width)[flat_index]
            # Residual sums and LayerNorm in the activations' dtype (fp32 under bf16 matmuls).
            x = attn_norm(_linear(context, attn_out) + x)
            x = out_norm(_linear(act(_linear(x, up)), down) + x)
        hidden = x.new_zeros(batch * length, width)
        hidden.index_copy_(0, flat_index, x)
        return hidden.view(batch, length, width)


def _linear(x: torch.Tensor, weight_bias: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    weight, bias = weight_bias
    return F.linear(x.to(weight.dtype), weight, bias)
