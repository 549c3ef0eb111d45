"""Fixtures for the text stage: tiny random BERTs with the real MiniLM tokenizer, and records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from amtprep.records import Record
from tests.helpers import make_tiny_bert

CAPTIONS = [
    "A melodic and uplifting pop song in C major with piano, acoustic guitar and soft drums at 110 BPM.",
    "Dark ambient piece.",
    "This energetic electronic track features a pulsing synth bass, bright lead synthesizer and "
    "driving four-on-the-floor drums; it stays in A minor at 128 beats per minute with a 4/4 "
    "time signature, and the chord progression Am, F, C, G repeats throughout.",
    "Slow jazz ballad, Bb major, saxophone and brushed drums.",
    "A short classical piece for solo piano in 3/4 time, gentle and reflective.",
    "Rock",
    "An epic orchestral soundtrack with strings, brass and timpani building to a dramatic climax.",
    "Lo-fi hip hop beat with jazzy electric piano chords, vinyl crackle feel and laid-back swing.",
    "Folk song: fingerpicked guitar, fiddle, and a warm bass line in G major at a moderate tempo.",
    "A fast, aggressive metal track in E minor with distorted guitars and double bass drums.",
]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), seed=0)


@pytest.fixture(scope="session")
def other_tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("other_tiny_bert"), seed=1)


def embedding_matrix(table) -> np.ndarray:
    """The embedding column of a stage table as an ``[N, D]`` array."""
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), -1)


def make_records(captions: Sequence[str | None], start: int = 0, **fields) -> list[Record]:
    return [
        Record(
            idx=start + i,
            id=f"r{start + i}",
            midi_path=f"{start + i}.mid",
            resolved_path=f"/data/{start + i}.mid",
            caption=caption,
            **fields,
        )
        for i, caption in enumerate(captions)
    ]


@pytest.fixture
def records() -> Callable[..., list[Record]]:
    return make_records
