"""The packed forward pass gives the model's own hidden states on real tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, RobertaConfig, RobertaModel

from amtprep.text.device import cpu_bf16_supported
from amtprep.text.packed import PackedBert

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


@pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no fast bf16")
def test_packed_bf16_matches_autocast(model_and_batch):
    model, batch = model_and_batch
    mask = batch["attention_mask"]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    with torch.inference_mode():
        got = PackedBert(model, matmul_dtype=torch.bfloat16)(batch["input_ids"], mask)
    real = mask.bool()
    assert got.dtype == torch.float32
    # Same bf16 matmuls as autocast; only summation order may differ.
    torch.testing.assert_close(got[real], expected[real].float(), atol=2e-2, rtol=0)
