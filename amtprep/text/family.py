"""What kind of encoder a model folder holds and what follows: pure decisions on its config.

Public API: ``EncoderFamily``, ``encoder_family(config)``, ``resolve_max_length(requested, family,
*, st_max_seq_length, tokenizer_max_length)``, ``check_pooling(pooling, family, tokenizer)``,
``TOKENIZER_SENTINEL``.

Families differ in three ways that change what amtprep must do (docs/encoders.md):

- **which module runs**: BERT-style configs load whole; encoder-decoder configs (T5, mT5, flan-t5,
  BART) load only their encoder, whose ``last_hidden_state`` is what a decoder cross-attends to;
- **how long an input may be**: learned absolute positions cap it at ``max_position_embeddings``
  (less the padding offset RoBERTa-style models reserve); T5's relative position buckets have no
  cap, so the tokenizer's ``model_max_length`` (512 for t5 / flan-t5) decides;
- **which precisions are safe**: T5-family activations overflow fp16 (inf, then NaN states), so
  fp16 is refused and ``auto`` on a GPU never picks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amtprep.errors import ConfigError, ModelLoadError

# Tokenizers saved without a limit report int(1e30) (transformers' VERY_LARGE_INTEGER).
TOKENIZER_SENTINEL = 1_000_000
# Used when neither the model nor the tokenizer states a limit: T5's training length.
RELATIVE_DEFAULT_MAX_LENGTH = 512
# T5-family encoder classes: loading them skips the decoder's weights entirely.
T5_ENCODER_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
    "longt5": "LongT5EncoderModel",
}
# Position ids start after the padding index: max_position_embeddings - (pad_token_id + 1) usable.
_PADDING_OFFSET_TYPES = {
    "roberta",
    "xlm-roberta",
    "camembert",
    "longformer",
    "mpnet",
    "data2vec-text",
}


@dataclass(frozen=True)
class EncoderFamily:
    model_type: str  # config.model_type, e.g. "bert", "t5"
    encoder_class: str | None  # transformers class to load; None: AutoModel
    encoder_of_seq2seq: bool  # take the encoder of an encoder-decoder model
    position_limit: int | None  # longest input the positions allow; None: no fixed limit
    fp16_safe: bool


def encoder_family(config: Any) -> EncoderFamily:
    """The family of a Hugging Face ``config``; raises ModelLoadError for a decoder-only model."""
    model_type = str(getattr(config, "model_type", "") or "")
    if model_type in T5_ENCODER_CLASSES:
        return EncoderFamily(model_type, T5_ENCODER_CLASSES[model_type], True, None, False)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    if not seq2seq and getattr(config, "is_decoder", False):
        raise ModelLoadError(
            f"text model type {model_type!r} is a decoder, not an encoder; "
            "fix: pass an encoder (BERT-style or T5-family) to --text_model"
        )
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None:
        limit = int(limit)
        if model_type in _PADDING_OFFSET_TYPES:
            limit -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return EncoderFamily(model_type, None, seq2seq, limit, True)


def resolve_max_length(
    requested: int | None,
    family: EncoderFamily,
    *,
    st_max_seq_length: int | None,
    tokenizer_max_length: int | None,
) -> int:
    """Tokens per caption, special tokens included; raises ConfigError for an impossible request.

    Order: the request (checked against the position limit), a sentence-transformers folder's
    ``max_seq_length``, the tokenizer's ``model_max_length`` (ignored when it is the no-limit
    sentinel), each capped by the position limit; with none of them, the position limit or 512.
    """
    limit = family.position_limit
    if requested is not None:
        if requested < 2 or (limit is not None and requested > limit):
            upper = f"between 2 and {limit}" if limit is not None else "at least 2"
            raise ConfigError(
                f"text max_length must be {upper} for this {family.model_type or 'model'} "
                f"model, got {requested} (--max_length)"
            )
        return requested
    tokenizer_limit = tokenizer_max_length
    if tokenizer_limit is not None and not 0 < tokenizer_limit < TOKENIZER_SENTINEL:
        tokenizer_limit = None
    for candidate in (st_max_seq_length, tokenizer_limit):
        if candidate:
            return min(int(candidate), limit) if limit is not None else int(candidate)
    return limit if limit is not None else RELATIVE_DEFAULT_MAX_LENGTH


def check_pooling(pooling: str, family: EncoderFamily, tokenizer: Any) -> None:
    """Refuse ``cls`` pooling where the first token is not a trained [CLS]-style summary.

    T5 tokenizers add no token in front (only ``</s>`` at the end): the first state is just the
    first word's, so "cls" would silently mean "first word". Raises ConfigError.
    """
    if pooling != "cls":
        return
    cls_id = getattr(tokenizer, "cls_token_id", None)
    first = tokenizer("a", add_special_tokens=True)["input_ids"][:1]
    if cls_id is None or first != [cls_id]:
        raise ConfigError(
            f"pooling cls needs a model whose tokenizer puts a [CLS] token first; this "
            f"{family.model_type or 'model'} tokenizer does not (T5-family encoders have none); "
            "fix: use --pooling mean or --pooling none"
        )
