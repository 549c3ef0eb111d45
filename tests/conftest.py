"""Shared fixtures: a generated MIDI + caption corpus and a tiny random BERT for fast text runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import make_tiny_bert

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer randomly initialised BERT with the real MiniLM tokenizer (fast, deterministic)."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), seed=0, max_position_embeddings=512)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """30 generated MIDI + caption pairs (MidiCaps layout, relative paths); returns the .jsonl."""
    from amtprep.sample import generate

    return generate(tmp_path / "corpus", n=30, seed=1)
