"""The device pipeline (tokenise per window, pad, prefetch thread, copy to device), run on CPU."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from amtprep.text.device import ComputePlan
from amtprep.text.encoder import Encoder
from amtprep.text.pipeline import iter_model_batches, prefetch, to_device

from .conftest import CAPTIONS


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)


def _tokenize(tokenizer):
    def tokenize(texts):
        enc = tokenizer(list(texts), truncation=True, max_length=24)
        return enc["input_ids"], [bool(e.overflowing) for e in enc.encodings]

    return tokenize


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_batches_through_prefetch_cover_every_text_with_its_own_tokens(tokenizer, depth):
    texts = CAPTIONS * 3
    tokenize = _tokenize(tokenizer)
    expected_ids, expected_truncated = tokenize(texts)
    batches = iter_model_batches(
        texts, tokenize, pad_id=0, batch_size=4, sort_window=2, max_tokens=None
    )
    seen = []
    for batch in prefetch(batches, depth):
        batch = to_device(batch, "cpu")
        for row, position in enumerate(batch.positions):
            n = batch.n_tokens[row]
            assert batch.input_ids[row, :n].tolist() == expected_ids[position]
            assert batch.attention_mask[row].sum().item() == n
            assert batch.truncated[row] == expected_truncated[position]
            seen.append(int(position))
    assert sorted(seen) == list(range(len(texts)))
    # The longest caption exceeds 24 tokens, so some rows are flagged.
    assert any(expected_truncated)


def test_prefetch_keeps_order_and_reraises_producer_errors():
    def produce():
        yield from range(5)
        raise RuntimeError("tokenizer exploded")

    got = []
    with pytest.raises(RuntimeError, match="tokenizer exploded"):
        for item in prefetch(produce(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    before = threading.active_count()
    stream = prefetch(iter(range(1000)), depth=2)
    assert next(stream) == 0
    stream.close()
    assert threading.active_count() == before


def test_encoder_with_prefetch_thread_matches_inline(tiny_bert, tokenizer):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert, local_files_only=True).eval()
    plan = ComputePlan("cpu", "fp32", autocast=False)

    def encoder(depth):
        return Encoder(
            model,
            tokenizer,
            plan=plan,
            pooling="mean",
            normalize=True,
            max_length=64,
            batch_size=3,
            sort_window=2,
            prefetch_depth=depth,
        )

    texts = CAPTIONS * 2
    inline = encoder(0).encode(texts)
    threaded = encoder(2).encode(texts)
    np.testing.assert_allclose(threaded.vectors, inline.vectors, atol=1e-6)
    assert threaded.n_tokens.tolist() == inline.n_tokens.tolist()
    with torch.inference_mode():
        ids = tokenizer(texts[5], return_tensors="pt")
        alone = model(**ids).last_hidden_state.mean(dim=1)
        alone = torch.nn.functional.normalize(alone, dim=1)[0].numpy()
    np.testing.assert_allclose(threaded.vectors[5], alone, atol=1e-5)
