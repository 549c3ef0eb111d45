"""Loading a BERT folder without transformers: same ids, same limits, same vectors, or fall back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amtprep.config import TextConfig
from amtprep.text import TextStage
from amtprep.text.light import LOADER_ENV, LightBert, LightTokenizer, light_config, load_light
from amtprep.text.model import default_model_dir
from tests.helpers import REPO, make_tiny_bert
from tests.text.conftest import CAPTIONS, embedding_matrix, make_records

HARD_CAPTIONS = [
    *CAPTIONS,
    "  leading and trailing spaces  ",
    "Café déjà vu: naïve façade, Ångström, São Paulo",
    "中文歌曲，钢琴和弦乐 with a Japanese 日本語 title",
    "emoji 🎹🎸🥁 and symbols ♯ ♭ ♮ ° ± — “quotes”",
    "tabs\tand\nnewlines\r\nmixed",
    "x" * 3000,
    " ".join(["word"] * 700),  # past 512 tokens: truncated
    "ALL CAPS SHOUTING ABOUT 808 DRUMS",
]


def _stage(model, monkeypatch, loader: str | None, **kw) -> TextStage:
    if loader:
        monkeypatch.setenv(LOADER_ENV, loader)
    else:
        monkeypatch.delenv(LOADER_ENV, raising=False)
    return TextStage(TextConfig(model=None if model is None else str(model), **kw))


def test_default_model_loads_light_with_transformers_ids_and_limits():
    from transformers import AutoTokenizer

    path = default_model_dir()
    config = light_config(path)
    assert config is not None and config.hidden_size == 384
    model, tokenizer = load_light(path, config)
    assert isinstance(model, LightBert) and isinstance(tokenizer, LightTokenizer)
    reference = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert tokenizer.model_max_length == reference.model_max_length
    assert tokenizer.pad_token_id == reference.pad_token_id
    assert tokenizer.cls_token_id == reference.cls_token_id
    for max_length in (256, 16):
        got = tokenizer(HARD_CAPTIONS, truncation=True, max_length=max_length)
        want = reference(HARD_CAPTIONS, truncation=True, max_length=max_length)
        assert got["input_ids"] == want["input_ids"]
        assert [bool(e.overflowing) for e in got.encodings] == [
            bool(e.overflowing) for e in want.encodings
        ]
    assert tokenizer("a")["input_ids"] == reference("a")["input_ids"]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_default_model_vectors_equal_the_transformers_route(monkeypatch, dtype):
    records = make_records(HARD_CAPTIONS)
    light = _stage(None, monkeypatch, None, dtype=dtype)
    assert isinstance(light.encoder.model, LightBert)
    heavy = _stage(None, monkeypatch, "transformers", dtype=dtype)
    assert not isinstance(heavy.encoder.model, LightBert)
    assert light.fingerprint() == heavy.fingerprint()  # architecture BertModel in both
    assert light.max_length == heavy.max_length
    a = light.process(records)
    b = heavy.process(records)
    assert a.column("n_tokens").to_pylist() == b.column("n_tokens").to_pylist()
    assert a.column("truncated").to_pylist() == b.column("truncated").to_pylist()
    np.testing.assert_array_equal(embedding_matrix(a), embedding_matrix(b))


def test_a_light_run_never_imports_transformers(tiny_bert, tmp_path):
    script = f"""
import sys
from amtprep.config import TextConfig
from amtprep.records import Record
from amtprep.text import TextStage
stage = TextStage(TextConfig(model={str(tiny_bert)!r}))
table = stage.process([Record(0, "0", "", "", "a calm piano piece")])
assert table.num_rows == 1
print(sorted(m for m in sys.modules if m.split(".")[0] == "transformers"))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def safe_open_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return list(fh.keys())


def _copy(folder: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _edit_json(path: Path, **changes) -> None:
    body = json.loads(path.read_text())
    body.update(changes)
    path.write_text(json.dumps(body))


@pytest.mark.parametrize(
    "change",
    [
        {"hidden_act": "gelu_new"},
        {"position_embedding_type": "relative_key"},
        {"model_type": "roberta"},
        {"is_decoder": True},
    ],
)
def test_configs_it_does_not_cover_go_through_transformers(tiny_bert, tmp_path, change):
    folder = _copy(tiny_bert, tmp_path, "changed")
    _edit_json(folder / "config.json", **change)
    assert light_config(folder) is None


def test_a_tokenizer_setting_that_disagrees_with_tokenizer_json_falls_back(
    tiny_bert, tmp_path, monkeypatch
):
    folder = _copy(tiny_bert, tmp_path, "cased")
    _edit_json(folder / "tokenizer_config.json", do_lower_case=False)
    config = light_config(folder)
    assert config is not None and load_light(folder, config) is None
    stage = _stage(folder, monkeypatch, None)  # transformers loads it and applies the setting
    assert not isinstance(stage.encoder.model, LightBert)
    assert stage.architecture == "BertModel"


def test_sharded_or_missing_safetensors_fall_back(tiny_bert, tmp_path):
    folder = _copy(tiny_bert, tmp_path, "sharded")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    config = light_config(folder)
    assert load_light(folder, config) is None


def test_the_env_switch_forces_transformers(tiny_bert, monkeypatch):
    monkeypatch.setenv(LOADER_ENV, "transformers")
    assert light_config(tiny_bert) is None


def test_a_head_models_checkpoint_loads_light_with_equal_vectors(tmp_path, monkeypatch):
    """``bert.``-prefixed tensors (BertForMaskedLM, as bert-base-uncased ships)."""
    folder = make_tiny_bert(tmp_path / "mlm", seed=3, model_class="BertForMaskedLM")
    assert any(k.startswith("bert.") for k in safe_open_keys(folder / "model.safetensors"))
    light = _stage(folder, monkeypatch, None)
    assert isinstance(light.encoder.model, LightBert)
    heavy = _stage(folder, monkeypatch, "transformers")
    records = make_records(CAPTIONS)
    assert light.fingerprint() == heavy.fingerprint()
    np.testing.assert_array_equal(
        embedding_matrix(light.process(records)), embedding_matrix(heavy.process(records))
    )
