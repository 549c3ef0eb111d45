"""The packed forward pass gives the model's own hidden states on real tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModel, AutoTokenizer, RobertaConfig, RobertaModel

from amtprep.text.device import cpu_bf16_supported
from amtprep.text.packed import PackedBert, onednn_linear_available
from amtprep.text.pipeline import real_token_index

from .conftest import CAPTIONS


@pytest.fixture(scope="module")
def model_and_batch(tiny_bert):
    model = AutoModel.from_pretrained(tiny_bert, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    batch = tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    return model, batch


def test_packed_matches_hugging_face_forward_on_real_tokens(model_and_batch):
    model, batch = model_and_batch
    assert PackedBert.supports(model)
    mask = batch["attention_mask"]
    assert (mask == 0).any(), "the batch must contain padding for this test to mean anything"
    with torch.inference_mode():
        expected = model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        got = PackedBert(model)(batch["input_ids"], mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)
    assert got[~real].abs().max() == 0  # padding positions are zeros, never garbage


def test_packed_refuses_other_position_schemes():
    # RoBERTa offsets its positions by the padding index: the packed path must not run it.
    roberta = RobertaModel(
        RobertaConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
        )
    )
    assert not PackedBert.supports(roberta)


needs_bf16 = pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no fast bf16")


@needs_bf16
@pytest.mark.parametrize("linears", ["auto", "torch"])
def test_packed_bf16_is_as_close_to_fp32_as_the_model_cast_to_bf16(model_and_batch, linears):
    """bf16 weights and residual stream: the math of ``model.to(torch.bfloat16)``, so its
    distance to the fp32 forward is that model's, on either linear route."""
    import copy

    model, batch = model_and_batch
    mask = batch["attention_mask"]
    real = mask.bool()
    with torch.inference_mode():
        fp32 = model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state[real]
        cast = copy.deepcopy(model).to(torch.bfloat16)
        bf16_model = cast(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        packed = PackedBert(model, matmul_dtype=torch.bfloat16, linears=linears)
        got = packed(batch["input_ids"], mask)
    assert got.dtype == torch.float32
    assert got[~real].abs().max() == 0
    if linears == "auto":
        assert packed.linears == ("onednn" if onednn_linear_available(torch.bfloat16) else "torch")
    model_error = (bf16_model[real].float() - fp32).abs().max().item()
    error = (got[real] - fp32).abs().max().item()
    assert 0 < error <= 1.5 * model_error, (error, model_error)
    # and far from fp32 would mean a wrong route, not rounding: within bf16's reach of it
    torch.testing.assert_close(got[real], fp32, atol=0.1, rtol=0)


def test_a_model_already_cast_keeps_its_dtype(model_and_batch):
    """GPU models arrive cast to bf16/fp16 with no matmul dtype: nothing is cast back to fp32."""
    import copy

    model, batch = model_and_batch
    cast = copy.deepcopy(model).to(torch.bfloat16)
    packed = PackedBert(cast, linears="torch")
    assert packed.dtype == torch.bfloat16
    assert all(weight.dtype == torch.bfloat16 for weight, _ in packed.layers[0][::3][:2])
    with torch.inference_mode():
        got = packed(batch["input_ids"], batch["attention_mask"])
    assert got.dtype == torch.float32 and torch.isfinite(got).all()


def test_attention_lengths_are_padded_to_the_kernel_friendly_multiple(model_and_batch):
    """Every batch length, aligned or not, gives the model's states (padding keys are masked)."""
    from amtprep.text.packed import ATTENTION_ALIGN

    model, batch = model_and_batch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    packed = PackedBert(model)
    with torch.inference_mode():
        for length in (1, ATTENTION_ALIGN - 1, ATTENTION_ALIGN, ATTENTION_ALIGN + 1):
            length = min(length, ids.shape[1])
            sub_ids, sub_mask = ids[:, :length], mask[:, :length]
            sub_mask = sub_mask.clone()
            sub_mask[:, 0] = 1  # at least one real token per row
            expected = model(input_ids=sub_ids, attention_mask=sub_mask).last_hidden_state
            got = packed(sub_ids, sub_mask)
            real = sub_mask.bool()
            torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


needs_onednn = pytest.mark.skipif(
    not onednn_linear_available(), reason="no oneDNN linear op on this torch/CPU"
)


@needs_onednn
def test_onednn_linears_match_hugging_face_forward(model_and_batch):
    model, batch = model_and_batch
    mask = batch["attention_mask"]
    with torch.inference_mode():
        expected = model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        fast = PackedBert(model)
        got = fast(batch["input_ids"], mask)
        plain = PackedBert(model, linears="torch")(batch["input_ids"], mask)
    assert fast.linears == "onednn" and fast._fuse_gelu
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[real], plain[real], atol=1e-5, rtol=0)


def test_torch_linears_when_onednn_is_unavailable_or_turned_off(model_and_batch, monkeypatch):
    """The fallback is taken, and equal, when the probe fails (simulated) or when asked."""
    import amtprep.text.packed as packed

    model, batch = model_and_batch
    mask = batch["attention_mask"]
    with torch.inference_mode():
        expected = model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    monkeypatch.setattr(packed, "onednn_linear_available", lambda dtype=torch.float32: False)
    fallback = PackedBert(model)
    assert fallback.linears == "torch"
    with pytest.raises(ValueError, match="oneDNN"):
        PackedBert(model, linears="onednn")
    monkeypatch.undo()
    monkeypatch.setenv(packed.LINEAR_ENV, "torch")
    assert PackedBert(model).linears == "torch"
    with torch.inference_mode():
        got = fallback(batch["input_ids"], mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


@needs_bf16
def test_bf16_falls_back_to_torch_linears_when_onednn_bf16_is_unavailable(
    model_and_batch, monkeypatch
):
    import amtprep.text.packed as packed

    model, batch = model_and_batch
    mask = batch["attention_mask"]
    real = mask.bool()
    monkeypatch.setattr(packed, "onednn_linear_available", lambda dtype=torch.float32: False)
    fallback = PackedBert(model, matmul_dtype=torch.bfloat16)
    assert fallback.linears == "torch"
    monkeypatch.undo()
    with torch.inference_mode():
        got = fallback(batch["input_ids"], mask)
        fp32 = model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[real], fp32[real], atol=0.1, rtol=0)


@pytest.fixture(scope="module")
def plain_reference(model_and_batch):
    """Mean-pooled vectors of the plain Hugging Face fp32 forward, one caption at a time."""
    from transformers import AutoTokenizer

    model, _ = model_and_batch
    tokenizer = AutoTokenizer.from_pretrained(model.name_or_path, local_files_only=True)
    rows = []
    with torch.inference_mode():
        for caption in CAPTIONS:
            enc = tokenizer([caption.strip()], return_tensors="pt", truncation=True, max_length=512)
            hidden = model(**{k: enc[k] for k in ("input_ids", "attention_mask")}).last_hidden_state
            rows.append(hidden[0].mean(dim=0))
    return torch.stack(rows).numpy()


@pytest.mark.parametrize(
    ("batch_size", "max_tokens"), [(1, None), (3, None), (32, None), (4, 60), (64, 2048)]
)
def test_stage_vectors_equal_the_plain_forward_for_any_batching_and_order(
    tiny_bert, plain_reference, batch_size, max_tokens
):
    import random

    import numpy as np

    from amtprep.config import TextConfig
    from amtprep.text import TextStage

    from .conftest import embedding_matrix, make_records

    stage = TextStage(
        TextConfig(
            model=str(tiny_bert), model_batch_size=batch_size, max_tokens_per_batch=max_tokens
        )
    )
    packed = stage.encoder._packed
    assert packed is not None
    assert packed.linears == ("onednn" if onednn_linear_available() else "torch")
    order = list(range(len(CAPTIONS)))
    random.Random(batch_size).shuffle(order)
    table = stage.process(make_records([CAPTIONS[i] for i in order]))
    np.testing.assert_allclose(embedding_matrix(table), plain_reference[order], atol=1e-5, rtol=0)


# -- issue 13: no host sync in the packed forward, and a fallback when internals move ---------


class _Ops(TorchDispatchMode):
    """Every aten op that runs inside the block, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


SYNC_OPS = ("aten.nonzero", "aten._local_scalar_dense", "aten.is_nonzero", "aten.item")


@pytest.mark.parametrize("seed", range(5))
def test_host_index_is_what_nonzero_gives(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, rng.integers(1, 12)).astype(np.int32)
    width = int(lengths.max()) + int(rng.integers(0, 5))
    mask = torch.zeros(len(lengths), width, dtype=torch.int64)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    expected = mask.reshape(-1).nonzero().squeeze(1).numpy()
    np.testing.assert_array_equal(real_token_index(lengths, width), expected)


def test_the_packed_forward_makes_no_host_sync_with_the_host_index(model_and_batch):
    model, batch = model_and_batch
    mask = batch["attention_mask"]
    flat = torch.from_numpy(real_token_index(mask.sum(1).numpy(), mask.shape[1]))
    packed = PackedBert(model)
    with torch.inference_mode():
        reference = packed(batch["input_ids"], mask)
        with _Ops() as ops:
            got = packed(batch["input_ids"], mask, flat)
    assert not [n for n in ops.names if n.startswith(SYNC_OPS)], ops.names
    with torch.inference_mode(), _Ops() as ops:
        packed(batch["input_ids"], mask)  # the fallback path does sync: the check can fail
    assert any(n.startswith("aten.nonzero") for n in ops.names)
    torch.testing.assert_close(got, reference, atol=0, rtol=0)


def test_encoder_batches_carry_the_host_index_and_vectors_are_unchanged(tiny_bert):
    from amtprep.config import TextConfig
    from amtprep.text import TextStage

    stage = TextStage(TextConfig(model=str(tiny_bert)))
    calls = []
    real_call = type(stage.encoder._packed).__call__

    def spy(self, input_ids, attention_mask, flat_index=None):
        calls.append(flat_index is not None)
        return real_call(self, input_ids, attention_mask, flat_index)

    type(stage.encoder._packed).__call__ = spy
    try:
        stage.encoder.encode(CAPTIONS)
    finally:
        type(stage.encoder._packed).__call__ = real_call
    assert calls and all(calls)


def test_a_renamed_internal_falls_back_to_the_plain_forward(model_and_batch, monkeypatch, caplog):
    import logging

    from amtprep.text import encoder as encoder_module
    from amtprep.text.device import ComputePlan

    model, _ = model_and_batch

    def renamed(*args, **kwargs):
        raise AttributeError("'BertSelfAttention' object has no attribute 'query'")

    monkeypatch.setattr(encoder_module.PackedBert, "__init__", renamed)
    tokenizer = AutoTokenizer.from_pretrained(model.name_or_path, local_files_only=True)
    with caplog.at_level(logging.WARNING, logger="amtprep.text.encoder"):
        enc = encoder_module.Encoder(
            model, tokenizer, plan=ComputePlan("cpu", "fp32", False), pooling="mean",
            normalize=True, max_length=128, batch_size=8, sort_window=2,
        )  # fmt: skip
    assert not enc.packed and "packed forward unavailable" in caplog.text
    assert enc.encode(CAPTIONS).vectors.shape == (len(CAPTIONS), model.config.hidden_size)
