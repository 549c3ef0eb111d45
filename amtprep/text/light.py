"""A BERT folder loaded without importing transformers: config, weights and tokenizer, on CPU.

Public API: ``LOADER_ENV``, ``light_config(path)`` (a config namespace, or ``None``),
``load_light(path, config) -> (model, tokenizer) | None``.

Why: importing transformers and building a ``BertModel`` costs ~2 s of every start here (its
import structure, torch.distributed and dynamo modules pulled in by ``modeling_bert``), more
than embedding a thousand captions takes with the packed bf16 forward. The forward amtprep runs
on CPU is ``PackedBert``, which needs only the tensors. So for a plain BERT folder (``model_type``
"bert", absolute positions, exact GELU, one ``model.safetensors``, a ``tokenizer.json`` whose
BERT normaliser agrees with ``tokenizer_config.json``) this module reads the tensors with
``safetensors``, the tokenizer with ``tokenizers`` (the library transformers' fast tokenizer
wraps), and gives ``PackedBert`` the same tensors in a module tree with Hugging Face's attribute
names. Anything else returns ``None`` and loads through transformers, as does every GPU run;
``AMTPREP_MODEL_LOADER=transformers`` forces that. Tests check token ids, max length and vectors
against the transformers route.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

LOADER_ENV = "AMTPREP_MODEL_LOADER"  # "transformers": never use this module

_BERT_DEFAULTS = {  # BertConfig's defaults, for keys a config.json may leave out
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "is_encoder_decoder": False,
    "add_cross_attention": False,
    "hidden_act": "gelu",
}
_REQUIRED = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")
_NO_LIMIT = int(1e30)  # transformers' VERY_LARGE_INTEGER: a tokenizer saved without a limit


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def light_config(path: Path) -> SimpleNamespace | None:
    """``config.json`` of a plain BERT encoder as attributes, or ``None`` (use AutoConfig)."""
    if os.environ.get(LOADER_ENV) == "transformers":
        return None
    raw = _read_json(Path(path) / "config.json")
    if raw is None or raw.get("model_type") != "bert" or any(k not in raw for k in _REQUIRED):
        return None
    values = {**_BERT_DEFAULTS, **raw}
    if (
        values["position_embedding_type"] != "absolute"
        or values["is_decoder"]
        or values["is_encoder_decoder"]
        or values["add_cross_attention"]
        or values["hidden_act"] != "gelu"
    ):
        return None
    return SimpleNamespace(**values)


class LightTokenizer:
    """The calls ``Encoder`` and ``family`` make on a Hugging Face fast tokenizer."""

    is_fast = True

    def __init__(self, tokenizer: Any, settings: dict) -> None:
        self._tok = tokenizer
        self._tok.no_padding()
        self._max_length: int | None = None
        self._tok.no_truncation()
        self.model_max_length = int(settings.get("model_max_length") or _NO_LIMIT)
        self.pad_token_id = self._id(settings.get("pad_token", "[PAD]"))
        self.cls_token_id = self._id(settings.get("cls_token", "[CLS]"))

    def _id(self, token: Any) -> int | None:
        if isinstance(token, dict):  # an AddedToken saved as a dict
            token = token.get("content")
        return self._tok.token_to_id(token) if isinstance(token, str) else None

    def __call__(
        self,
        texts,
        truncation: bool = False,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        **_ignored: Any,
    ) -> _Batch:
        single = isinstance(texts, str)
        limit = max_length if truncation else None
        if limit != self._max_length:
            if limit is None:
                self._tok.no_truncation()
            else:
                self._tok.enable_truncation(limit, stride=0, strategy="longest_first")
            self._max_length = limit
        encodings = self._tok.encode_batch(
            [texts] if single else list(texts), add_special_tokens=add_special_tokens
        )
        ids = [e.ids for e in encodings]
        return _Batch(encodings, ids[0] if single else ids)


class _Batch(dict):
    """What a fast tokenizer returns: ``["input_ids"]`` and ``.encodings``."""

    def __init__(self, encodings: list, input_ids: list) -> None:
        super().__init__(input_ids=input_ids)
        self.encodings = encodings


def _tokenizer(path: Path) -> LightTokenizer | None:
    settings = _read_json(path / "tokenizer_config.json") or {}
    raw = _read_json(path / "tokenizer.json")
    if raw is None or settings.get("tokenizer_class") not in (
        None,
        "BertTokenizer",
        "BertTokenizerFast",
    ):
        return None
    normalizer = raw.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return None
    # transformers rewrites the normaliser from these settings when they differ: do not guess
    for setting, key in (
        ("do_lower_case", "lowercase"),
        ("strip_accents", "strip_accents"),
        ("tokenize_chinese_chars", "handle_chinese_chars"),
    ):
        if setting in settings and settings[setting] != normalizer.get(key):
            return None
    from tokenizers import Tokenizer

    try:
        return LightTokenizer(Tokenizer.from_file(str(path / "tokenizer.json")), settings)
    except Exception:  # a file the tokenizers library cannot read: transformers says why
        return None


def _weights(path: Path, config: SimpleNamespace) -> dict | None:
    files = sorted(path.glob("*.safetensors"))
    if [f.name for f in files] != ["model.safetensors"]:
        return None
    from safetensors.torch import load_file

    tensors = load_file(str(files[0]))
    if "bert.embeddings.word_embeddings.weight" in tensors:  # a *For* head model's checkpoint
        tensors = {k[5:]: v for k, v in tensors.items() if k.startswith("bert.")}
    needed = ["embeddings.word_embeddings.weight", "embeddings.LayerNorm.weight"]
    needed += [f"encoder.layer.{i}.output.dense.weight" for i in range(config.num_hidden_layers)]
    if any(k not in tensors for k in needed):
        return None
    return tensors


def _norm(tensors: dict, prefix: str, eps: float):
    import torch

    weight = tensors[prefix + ".weight"]
    # HF checkpoints of old may name LayerNorm parameters gamma/beta: transformers renames them
    norm = torch.nn.LayerNorm(weight.shape[0], eps=eps)
    norm.weight.data = weight.float()
    norm.bias.data = tensors[prefix + ".bias"].float()
    return norm


def _linear(tensors: dict, prefix: str):
    return SimpleNamespace(
        weight=tensors[prefix + ".weight"].float(), bias=tensors[prefix + ".bias"].float()
    )


def _model(tensors: dict, config: SimpleNamespace):
    """The tensors under Hugging Face's attribute names, as ``PackedBert`` reads them."""
    import torch
    import torch.nn.functional as F

    def embedding(name: str):
        return torch.nn.Embedding.from_pretrained(tensors[name].float(), freeze=True)

    eps = float(config.layer_norm_eps)
    embeddings = SimpleNamespace(
        word_embeddings=embedding("embeddings.word_embeddings.weight"),
        position_embeddings=embedding("embeddings.position_embeddings.weight"),
        token_type_embeddings=embedding("embeddings.token_type_embeddings.weight"),
        LayerNorm=_norm(tensors, "embeddings.LayerNorm", eps),
    )
    layers = []
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        layers.append(
            SimpleNamespace(
                attention=SimpleNamespace(
                    self=SimpleNamespace(
                        query=_linear(tensors, p + "attention.self.query"),
                        key=_linear(tensors, p + "attention.self.key"),
                        value=_linear(tensors, p + "attention.self.value"),
                    ),
                    output=SimpleNamespace(
                        dense=_linear(tensors, p + "attention.output.dense"),
                        LayerNorm=_norm(tensors, p + "attention.output.LayerNorm", eps),
                    ),
                ),
                intermediate=SimpleNamespace(
                    dense=_linear(tensors, p + "intermediate.dense"), intermediate_act_fn=F.gelu
                ),
                output=SimpleNamespace(
                    dense=_linear(tensors, p + "output.dense"),
                    LayerNorm=_norm(tensors, p + "output.LayerNorm", eps),
                ),
            )
        )
    return LightBert(config, embeddings, SimpleNamespace(layer=layers))


class LightBert:
    """A BERT's tensors for ``PackedBert`` only: it has no forward of its own."""

    architecture = "BertModel"  # what transformers would have built: the vectors are the same

    def __init__(self, config: SimpleNamespace, embeddings, encoder) -> None:
        self.config = config
        self.embeddings = embeddings
        self.encoder = encoder


def load_light(path: Path, config: SimpleNamespace) -> tuple[LightBert, LightTokenizer] | None:
    """``(model, tokenizer)`` for ``PackedBert`` on CPU, or ``None`` where this module does not
    apply (the caller loads through transformers, which explains any error)."""
    path = Path(path)
    tokenizer = _tokenizer(path)
    if tokenizer is None:
        return None
    tensors = _weights(path, config)
    if tensors is None:
        return None
    try:
        return _model(tensors, config), tokenizer
    except KeyError:  # a tensor name this module does not know: transformers knows more
        return None
