"""Finding and checking models offline: clear errors, fast, and a refused tampered default."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from amtprep.config import TextConfig
from amtprep.errors import ModelLoadError
from amtprep.text import TextStage
from amtprep.text.model import (
    DEFAULT_WEIGHTS_SHA256,
    default_model_dir,
    resolve_model,
    weights_sha256,
)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no-such-org/no-such-model-xyz", "not in the local Hugging Face cache"),
        ("/nonexistent/model/folder", "does not exist"),
        ("./relative/missing", "does not exist"),
        ("bad id with spaces", "neither an existing folder nor a valid Hugging Face id"),
    ],
)
def test_unknown_model_fails_fast_with_a_fix(model, message):
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=message) as info:
        TextStage(TextConfig(model=model))
    assert time.monotonic() - started < 5, "must not wait on the network"
    text = str(info.value)
    assert "fix:" in text and "\n" not in text


def test_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no model weights"):
        TextStage(TextConfig(model=str(tmp_path)))


def test_folder_that_is_not_a_model_is_refused(tmp_path, tiny_bert):
    shutil.copy(tiny_bert / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="cannot load text model"):
        TextStage(TextConfig(model=str(tmp_path)))


def test_weights_hash_changes_with_weights_and_is_memoised(tiny_bert, other_tiny_bert):
    memo: dict = {}
    first = weights_sha256(tiny_bert, memo)
    assert len(memo) == 1
    assert weights_sha256(tiny_bert, memo) == first
    assert weights_sha256(other_tiny_bert, memo) != first


def test_sentence_transformers_folder_sets_defaults(tmp_path, tiny_bert):
    folder = tmp_path / "st"
    shutil.copytree(tiny_bert, folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 40}')
    stage = TextStage(TextConfig(model=str(folder)))
    assert stage.normalize is True and stage.max_length == 40
    plain = TextStage(TextConfig(model=str(tiny_bert)))
    # A plain folder: no normalisation, and the position-embedding limit caps the tokenizer's 512.
    assert plain.normalize is False and plain.max_length == 128


@pytest.mark.real_model
def test_default_model_is_checked_and_identified():
    source = resolve_model(None)
    assert source.weights_sha256 == DEFAULT_WEIGHTS_SHA256
    assert source.sentence_transformers and source.st_normalize
    assert source.st_max_seq_length == 256


@pytest.mark.real_model
def test_tampered_default_model_is_refused(tmp_path):
    tampered = tmp_path / "model"
    shutil.copytree(default_model_dir(), tampered)
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="tampered or re-packaged"):
        resolve_model(None, default_dir=tampered)
