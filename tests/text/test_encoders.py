"""Encoders beyond BERT: tiny random T5 (and BART) folders through the stage, against their own
forward pass; max length and precision per family; a resume with another encoder refused."""

from __future__ import annotations

import re
import string
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from amtprep.cli import build_parser, main
from amtprep.commit.identity import identity_changes
from amtprep.config import TextConfig
from amtprep.errors import ConfigError
from amtprep.text import TextStage
from amtprep.text.device import ComputePlan, choose_compute, cpu_bf16_supported
from amtprep.text.family import encoder_family, resolve_max_length
from tests.helpers import read_final, run_args

from .conftest import CAPTIONS, embedding_matrix, make_records

LONG_CAPTION = " ".join(CAPTIONS[2].split() * 3)


def make_tiny_tokenizer(folder: Path, *, model_max_length: int | None = 512):
    """A T5-style fast tokenizer built in code and saved to ``folder``: T5's pipeline (Unigram
    over Metaspace pieces, ``</s>`` appended; ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2; none in front).

    Whole caption words are pieces, single characters the fallback, so every caption tokenises.
    ``model_max_length`` None saves it without a limit (transformers' int(1e30) sentinel).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for caption in CAPTIONS for w in caption.split()})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in words]
    vocab += [(c, -8.0) for c in string.ascii_letters + string.digits + string.punctuation]
    core = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    metaspace = {"replacement": "▁", "prepend_scheme": "always", "split": True}
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(**metaspace)]
    )
    core.decoder = decoders.Metaspace(**metaspace)
    core.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", **kwargs
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_tiny_t5(
    folder: Path, seed: int = 0, *, model_max_length: int | None = 512, kind: str = "T5"
) -> Path:
    """A whole random encoder-decoder ``T5Model`` (as flan-t5-base ships; ``kind`` "MT5" or
    "UMT5" for those) with a tiny tokenizer."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer(folder, model_max_length=model_max_length)
    torch.manual_seed(seed)
    config = getattr(transformers, f"{kind}Config")(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_decoder_layers=1,
        num_heads=4,
        feed_forward_proj="gated-gelu",  # as t5 v1.1 / flan-t5
        decoder_start_token_id=0,
    )
    getattr(transformers, f"{kind}Model")(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="module")
def reference_t5(tiny_t5):
    """The folder's own ``T5EncoderModel`` and tokenizer, loaded the plain transformers way."""
    from transformers import AutoTokenizer, T5EncoderModel

    model = T5EncoderModel.from_pretrained(tiny_t5, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_t5)


def direct_states(model, tokenizer, caption: str, max_length: int = 512) -> np.ndarray:
    """``last_hidden_state`` of one caption on its own (no padding), ``[n_tokens, D]`` fp32."""
    ids = tokenizer(caption.strip(), truncation=True, max_length=max_length)["input_ids"]
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)))
    return out.last_hidden_state[0].numpy()


def t5_stage(folder: Path, **kw) -> TextStage:
    return TextStage(TextConfig(model=str(folder), model_batch_size=3, sort_window=2, **kw))


def test_t5_mean_pooling_matches_its_encoder_over_padded_sorted_batches(tiny_t5, reference_t5):
    stage = t5_stage(tiny_t5)
    captions = [*CAPTIONS, LONG_CAPTION]
    table = stage.process(make_records(captions))
    model, tokenizer = reference_t5
    expected = np.stack([direct_states(model, tokenizer, c).mean(axis=0) for c in captions])
    np.testing.assert_allclose(embedding_matrix(table), expected, atol=1e-5, rtol=0)
    assert stage.architecture == "T5EncoderModel" and stage.max_length == 512
    assert stage.normalize is False
    assert stage.fingerprint()["architecture"] == "T5EncoderModel"
    n_tokens = [len(tokenizer(c.strip())["input_ids"]) for c in captions]
    assert table.column("n_tokens").to_pylist() == n_tokens
    assert table.column("truncated").to_pylist() == [False] * len(captions)


def test_t5_loads_only_the_encoder_of_a_whole_checkpoint(tiny_t5):
    stage = t5_stage(tiny_t5)
    names = [name for name, _ in stage.encoder.model.named_parameters()]
    assert names and not any(name.startswith("decoder") for name in names)
    assert stage.encoder._packed is None  # the packed fast path is BERT's only


@pytest.mark.parametrize("kind", ["MT5", "UMT5"])
def test_mt5_and_umt5_run_their_encoder_class(tmp_path, kind):
    import transformers

    folder = make_tiny_t5(tmp_path / kind, kind=kind)
    stage = t5_stage(folder)
    assert stage.architecture == f"{kind}EncoderModel" and stage.max_length == 512
    model = getattr(transformers, f"{kind}EncoderModel").from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    expected = np.stack([direct_states(model, tokenizer, c).mean(axis=0) for c in CAPTIONS])
    got = embedding_matrix(stage.process(make_records(CAPTIONS)))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no fast bf16")
def test_t5_bf16_on_cpu_stays_close_to_fp32(tiny_t5):
    exact = embedding_matrix(t5_stage(tiny_t5).process(make_records(CAPTIONS)))
    fast_stage = t5_stage(tiny_t5, dtype="bf16")
    assert fast_stage.plan == ComputePlan("cpu", "bf16", autocast=True)
    fast = embedding_matrix(fast_stage.process(make_records(CAPTIONS)))
    cosine = (fast * exact).sum(axis=1) / (
        np.linalg.norm(fast, axis=1) * np.linalg.norm(exact, axis=1)
    )
    assert np.isfinite(fast).all() and cosine.min() >= 0.99


def test_t5_pooling_none_keeps_every_state_with_eos_as_float16(tiny_t5, reference_t5):
    stage = t5_stage(tiny_t5, pooling="none")
    table = stage.process(make_records(CAPTIONS))
    assert stage.schema().field("embedding").type == pa.list_(pa.list_(pa.float16(), 32))
    model, tokenizer = reference_t5
    for row, caption in zip(table.to_pylist(), CAPTIONS, strict=True):
        expected = direct_states(model, tokenizer, caption)
        ids = tokenizer(caption.strip())["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id == 1  # the </s> state is kept, as a decoder sees
        states = np.asarray(row["embedding"], dtype=np.float32)
        assert states.shape == expected.shape == (row["n_tokens"], 32)
        np.testing.assert_allclose(states, expected.astype(np.float16), atol=2e-3, rtol=0)


def test_t5_cls_pooling_is_refused_with_a_fix(tiny_t5):
    with pytest.raises(ConfigError, match="pooling cls") as info:
        t5_stage(tiny_t5, pooling="cls")
    assert "--pooling mean" in str(info.value)


def test_t5_truncation_keeps_eos_and_flags_it(tiny_t5, reference_t5):
    stage = t5_stage(tiny_t5, max_length=8)
    table = stage.process(make_records([LONG_CAPTION, "Rock"]))
    model, tokenizer = reference_t5
    assert table.column("truncated").to_pylist() == [True, False]
    assert table.column("n_tokens").to_pylist() == [8, len(tokenizer("Rock")["input_ids"])]
    assert tokenizer(LONG_CAPTION, truncation=True, max_length=8)["input_ids"][-1] == 1
    expected = direct_states(model, tokenizer, LONG_CAPTION, max_length=8).mean(axis=0)
    np.testing.assert_allclose(embedding_matrix(table)[0], expected, atol=1e-5, rtol=0)


def test_t5_max_length_is_the_tokenizers_not_a_sentinel(tmp_path):
    sentinel = make_tiny_t5(tmp_path / "no_limit", model_max_length=None)
    stage = t5_stage(sentinel)
    assert stage.encoder.tokenizer.model_max_length > 10**20  # saved without a limit
    assert stage.max_length == 512
    # Relative positions have no fixed limit: a longer request is the user's to make.
    assert t5_stage(sentinel, max_length=1024).max_length == 1024


def test_max_length_per_family():
    from transformers import BertConfig, LongT5Config, RobertaConfig, T5Config

    assert encoder_family(LongT5Config()).encoder_class == "LongT5EncoderModel"
    bert = encoder_family(BertConfig(max_position_embeddings=128))
    t5 = encoder_family(T5Config())
    roberta = encoder_family(RobertaConfig(max_position_embeddings=514, pad_token_id=1))
    assert (bert.position_limit, t5.position_limit, roberta.position_limit) == (128, None, 512)

    def resolve(family, requested=None, st=None, tok=None):
        return resolve_max_length(requested, family, st_max_seq_length=st, tokenizer_max_length=tok)

    assert resolve(bert, tok=512) == 128  # the positions cap the tokenizer
    assert resolve(bert, tok=int(1e30)) == 128
    assert resolve(bert, st=40, tok=512) == 40
    assert resolve(t5, tok=512) == 512
    assert resolve(t5, tok=int(1e30)) == 512
    assert resolve(t5, tok=2048) == 2048
    assert resolve(roberta, tok=int(1e30)) == 512  # not 514: positions start after padding
    assert resolve(t5, requested=4096) == 4096
    with pytest.raises(ConfigError, match="between 2 and 128"):
        resolve(bert, requested=129)
    with pytest.raises(ConfigError, match="at least 2"):
        resolve(t5, requested=1)


def test_fp16_is_refused_for_t5_and_auto_avoids_it_on_gpu():
    from transformers import BertConfig, T5Config

    assert encoder_family(T5Config()).fp16_safe is False
    assert encoder_family(BertConfig()).fp16_safe is True
    with pytest.raises(ConfigError, match="overflows") as info:
        choose_compute("fp16", "cuda", bf16_supported=True, fp16_safe=False)
    named = set(re.findall(r"--[\w-]+", str(info.value)))
    assert named and named <= set(build_parser()._option_string_actions)

    def plan(dtype, device, bf16):
        return choose_compute(dtype, device, bf16_supported=bf16, fp16_safe=False)

    assert plan("auto", "cuda", True) == ComputePlan("cuda", "bf16", autocast=False)
    assert plan("auto", "cuda", False) == ComputePlan("cuda", "fp32", autocast=False)
    assert plan("bf16", "cuda", True) == ComputePlan("cuda", "bf16", autocast=False)
    assert plan("auto", "cpu", True) == ComputePlan("cpu", "fp32", autocast=False)
    assert plan("bf16", "cpu", True) == ComputePlan("cpu", "bf16", autocast=True)
    # BERT keeps fp16 where bf16 is missing.
    assert choose_compute("auto", "cuda", bf16_supported=False) == ComputePlan(
        "cuda", "fp16", autocast=False
    )


def test_t5_fp16_request_is_refused_by_the_stage(tiny_t5):
    with pytest.raises(ConfigError, match="overflows"):
        t5_stage(tiny_t5, dtype="fp16", use_gpu=True)


def test_tiny_bert_still_works_with_every_pooling(tiny_bert):
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(tiny_bert, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    states = [direct_states(model, tokenizer, c) for c in CAPTIONS]
    for pooling, expected in (
        ("mean", np.stack([s.mean(axis=0) for s in states])),
        ("cls", np.stack([s[0] for s in states])),
    ):
        stage = t5_stage(tiny_bert, pooling=pooling)
        assert stage.architecture == "BertModel" and stage.encoder._packed is not None
        got = embedding_matrix(stage.process(make_records(CAPTIONS)))
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    rows = t5_stage(tiny_bert, pooling="none").process(make_records(CAPTIONS)).to_pylist()
    for row, expected in zip(rows, states, strict=True):
        got = np.asarray(row["embedding"], dtype=np.float32)
        np.testing.assert_allclose(got, expected.astype(np.float16), atol=2e-3, rtol=0)


def test_bart_runs_its_encoder_only(tmp_path):
    from transformers import BartConfig, BartModel

    folder = tmp_path / "bart"
    tokenizer = make_tiny_tokenizer(folder)
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        decoder_start_token_id=1,
    )
    BartModel(config).save_pretrained(folder)
    stage = t5_stage(folder)
    assert stage.architecture == "BartEncoder" and stage.max_length == 64
    encoder = BartModel.from_pretrained(folder, dtype=torch.float32).get_encoder().eval()
    expected = np.stack([direct_states(encoder, tokenizer, c, 64).mean(axis=0) for c in CAPTIONS])
    got = embedding_matrix(stage.process(make_records(CAPTIONS)))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_cli_runs_t5_per_token_and_refuses_a_resume_with_another_encoder(
    corpus, tmp_path, tiny_t5, tiny_bert, capsys
):
    out = tmp_path / "out"
    args = run_args(corpus, out, tiny_t5, "--pooling", "none")
    args[args.index("--text_model")] = "--model"  # the short spelling of the docs
    assert main(args) == 0
    final, _ = read_final(out)
    assert final.schema.field("embedding").type == pa.list_(pa.list_(pa.float16(), 32))
    first = final.slice(0, 1).to_pylist()[0]
    assert len(first["embedding"]) == first["n_tokens"]
    capsys.readouterr()
    assert main(run_args(corpus, out, tiny_bert, "--pooling", "none")) == 4
    err = capsys.readouterr().err
    assert "architecture: 'T5EncoderModel' -> 'BertModel'" in err and "weights_sha256" in err


def test_identity_from_before_architecture_was_recorded_still_resumes():
    settings = {"model": "m", "weights_sha256": "w", "architecture": "BertModel"}
    stored = {"input": {"sha256": "a"}, "settings": {"model": "m", "weights_sha256": "w"}}
    assert identity_changes("text", stored, {"sha256": "a"}, settings) == []
    stored["settings"]["architecture"] = "T5EncoderModel"
    assert identity_changes("text", stored, {"sha256": "a"}, settings) == [
        "architecture: 'T5EncoderModel' -> 'BertModel'"
    ]


def test_sentence_transformers_folder_with_a_dense_projection_is_refused(tmp_path, tiny_t5):
    import json
    import shutil

    from amtprep.errors import ModelLoadError

    folder = tmp_path / "sentence_t5"
    shutil.copytree(tiny_t5, folder)
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(
            [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Dense", "Dense")]
        )
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="Dense projection"):
        t5_stage(folder)
