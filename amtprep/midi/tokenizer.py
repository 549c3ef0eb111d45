"""The run's miditok tokenizer: built once in the parent from ``TokenConfig``, used in the workers.

Public API: ``TOKENIZERS``, ``PRESETS``, ``TEXT2MIDI``, ``TEXT2MIDI_VOCAB_SHA256``,
``MidiTokenizer.build(cfg)`` with ``encode(score) -> TokenIds``, ``groups``, ``fingerprint()``,
``artifacts()`` (``tokenizer.json`` and ``vocab.json``), ``cache_tag()``; ``vocab_sha256(vocab)``.

Three ways to name a tokenizer (exactly one): ``--tokenizer NAME`` (a miditok class, any case:
remi, tsd, midilike, structured, cpword, octuple, mumidi, mmm, or any other the installed miditok
has) with miditok's default ``TokenizerConfig`` (MMM: on a REMI base); ``--tokenizer_config
FILE``, a miditok ``TokenizerConfig`` JSON (``TokenizerConfig.save_to_json``; ``--tokenizer``
names the class, default REMI) or a saved tokenizer (``tokenizer.save_params``; its class is in
it, trained BPE/Unigram models included); ``--tokenizer_preset text2midi``.

The text2midi preset is REMI with text2midi's config, BOS + ids + EOS, cut at 2,048 tokens.
text2midi pinned miditok 3.0.3, where that config gives 524 tokens. miditok 3.1.0 made
``pitch_range`` inclusive: the same numbers give 526 and shift ids. The preset therefore checks
what the installed miditok does (a ``Pitch_109`` token means inclusive, and then it asks for
21..108) and then compares the whole token -> id map with text2midi's (``TEXT2MIDI_VOCAB_SHA256``,
taken under 3.0.3): any other map is refused with the pip command that fixes it, so a preset run
never stores ids of another vocabulary. Under another miditok with the same map it runs and
warns that only 3.0.3 is text2midi's own encoder.

Tokens count in the run's identity: the tokenizer class, a hash of its params, both files'
hashes, the cut, BOS/EOS and the installed miditok and symusic versions, so a resume under
another miditok is refused naming it. miditok is imported without torch (``startup``).

Where ``fast_remi`` applies (untrained REMI under miditok 3.0.3: the text2midi preset and the
default REMI), ids come from it: miditok's own preprocessing, then the events as arrays; the
same ids, tested file by file against ``tok(score)``, 5-7x faster. ``AMTPREP_TOKEN_ENCODER=
miditok`` sends every file through miditok instead (the ids do not change, so neither does the
run's identity).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from amtprep import versions
from amtprep.config import TokenConfig
from amtprep.errors import ConfigError
from amtprep.midi.fast_remi import FastREMI
from amtprep.midi.tokens import TokenIds, token_group
from amtprep.startup import without_torch

logger = logging.getLogger(__name__)

TOKENIZERS = ("remi", "tsd", "midilike", "structured", "cpword", "octuple", "mumidi", "mmm")
PRESETS = ("text2midi",)
TEXT2MIDI: dict[str, Any] = {
    "pitch_range": (21, 109),
    "beat_res": {(0, 1): 12, (1, 2): 4, (2, 4): 2, (4, 8): 1},
    "num_velocities": 32,
    "special_tokens": ["PAD", "BOS", "EOS", "MASK"],
    "use_chords": False,
    "use_rests": False,
    "use_tempos": True,
    "use_time_signatures": True,
    "use_programs": True,
    "num_tempos": 32,
    "tempo_range": (40, 250),
}
TEXT2MIDI_MAX_TOKENS = 2048
TEXT2MIDI_VOCAB_SIZE = 524
# vocab_sha256 of REMI(TokenizerConfig(**TEXT2MIDI)).vocab under miditok 3.0.3, text2midi's pin
TEXT2MIDI_VOCAB_SHA256 = "2929176ef94bfb555728d7cfcff7029537e9de6db8631f6ff572f3ad99c2ea5a"
_TEXT2MIDI_MIDITOK = "3.0.3"
_INSTALL = "pip install 'amtprep[tokens]'"
ENCODER_ENV = "AMTPREP_TOKEN_ENCODER"  # "miditok": every file through miditok's own encode
_VERSION_KEYS = ("miditok_version", "symusic_version", "hf_tokenizers_version")


def _miditok():
    try:
        with without_torch():
            import miditok
    except ImportError as exc:
        raise ConfigError(f"MIDI tokens need miditok ({exc}); install it: {_INSTALL}") from None
    return miditok


def vocab_sha256(vocab) -> str:
    """A hash of a token -> id map (or a list of them), independent of key order."""
    maps = vocab if isinstance(vocab, list) else [vocab]
    canonical = [sorted(m.items(), key=lambda kv: kv[1]) for m in maps]
    blob = json.dumps(canonical if isinstance(vocab, list) else canonical[0], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _tokenizer_class(miditok, name: str):
    classes = {
        attr.lower(): getattr(miditok, attr)
        for attr in dir(miditok)
        if isinstance(getattr(miditok, attr), type)
        and issubclass(getattr(miditok, attr), miditok.MusicTokenizer)
        and getattr(miditok, attr) is not miditok.MusicTokenizer
    }
    cls = classes.get(name.lower())
    if cls is None:
        raise ConfigError(
            f"unknown tokenizer {name!r}; miditok {versions.miditok_version()} has "
            f"{', '.join(sorted(classes))}"
        )
    return cls


def _from_name(miditok, name: str):
    cls = _tokenizer_class(miditok, name)
    extra = {"base_tokenizer": "REMI"} if cls.__name__ == "MMM" else {}
    return cls(miditok.TokenizerConfig(**extra))


def _from_file(miditok, path: Path, name: str | None):
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read --tokenizer_config {path}: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigError(f"--tokenizer_config {path} is not a JSON object")
    try:
        if "tokenization" in body:  # a saved tokenizer (tokenizer.save_params)
            cls = _tokenizer_class(miditok, body["tokenization"])
            if name and cls is not _tokenizer_class(miditok, name):
                raise ConfigError(
                    f"--tokenizer {name} but {path} is a saved {body['tokenization']} tokenizer"
                )
            return cls(params=Path(path))
        cls = _tokenizer_class(miditok, name or "remi")
        return cls(miditok.TokenizerConfig.load_from_json(Path(path)))
    except ConfigError:
        raise
    except Exception as exc:  # miditok raises whatever the file's content leads to
        raise ConfigError(
            f"miditok cannot build a tokenizer from {path} ({type(exc).__name__}: {exc})"
        ) from None


def _text2midi(miditok):
    params = dict(TEXT2MIDI)
    tok = miditok.REMI(miditok.TokenizerConfig(**params))
    if "Pitch_109" in tok.vocab:  # inclusive pitch_range (miditok >= 3.1.0): ask for 21..108
        params["pitch_range"] = (21, 108)
        tok = miditok.REMI(miditok.TokenizerConfig(**params))
    version = versions.miditok_version()
    if vocab_sha256(tok.vocab) != TEXT2MIDI_VOCAB_SHA256:
        raise ConfigError(
            f"--tokenizer_preset text2midi: miditok {version} gives a vocabulary of {len(tok)} "
            f"tokens that differs from text2midi's ({TEXT2MIDI_VOCAB_SIZE}, miditok "
            f"{_TEXT2MIDI_MIDITOK}); install text2midi's: pip install 'miditok=="
            f"{_TEXT2MIDI_MIDITOK}'"
        )
    if version != _TEXT2MIDI_MIDITOK:
        logger.warning(
            "text2midi preset under miditok %s: same vocabulary as text2midi's miditok %s, but "
            "only %s is text2midi's own encoder",
            version,
            _TEXT2MIDI_MIDITOK,
            _TEXT2MIDI_MIDITOK,
        )
    return tok


def _rows(ids: list, width: int) -> np.ndarray:
    """A sequence's ids as an int32 (tokens, width) array. MuMIDI gives some tokens fewer ids
    than vocabularies (3 of 5): those rows are padded with -1."""
    try:
        return np.asarray(ids, dtype=np.int32).reshape(-1, width)
    except ValueError:  # ragged
        rows = np.full((len(ids), width), -1, np.int32)
        for i, token in enumerate(ids):
            rows[i, : len(token)] = token
        return rows


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=True) + "\n").encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MidiTokenizer:
    """A miditok tokenizer plus how amtprep stores its ids; pickles into the workers."""

    def __init__(self, tok, *, max_tokens: int | None, bos_eos: bool) -> None:
        self.tok = tok
        self.name = type(tok).__name__
        self.max_tokens = max_tokens
        self.bos_eos = bos_eos
        self.multi_stream = not tok.one_token_stream
        self.width = len(tok.vocab) if tok.is_multi_voc else 1
        self.groups = (token_group(self.multi_stream),)
        self.fast = (
            None if os.environ.get(ENCODER_ENV) == "miditok" else FastREMI.for_tokenizer(tok)
        )
        self.bos = self.eos = None
        if bos_eos:
            self.bos, self.eos = self._bos_eos_ids()
        self.params_json = self._params_json()
        self.vocab_json = _json_bytes(tok.vocab_model if tok.is_trained else tok.vocab)
        params = {k: v for k, v in json.loads(self.params_json).items() if k not in _VERSION_KEYS}
        self.params_sha256 = _sha(json.dumps(params, sort_keys=True).encode())
        self.files_sha256 = {name: _sha(data) for name, data in self.artifacts().items()}

    def _bos_eos_ids(self) -> tuple[int, int]:
        tok = self.tok
        if self.multi_stream or tok.is_multi_voc or tok.is_trained:
            kind = (
                "one sequence per track"
                if self.multi_stream
                else "several vocabularies"
                if tok.is_multi_voc
                else "a trained model's ids"
            )
            raise ConfigError(
                f"BOS/EOS wrapping needs an untrained single-stream, single-vocabulary "
                f"tokenizer; {self.name} with this config gives {kind} (pass "
                "--no-tokens_bos_eos, or set use_programs in --tokenizer_config)"
            )
        if "BOS_None" not in tok.vocab or "EOS_None" not in tok.vocab:
            raise ConfigError(f"BOS/EOS asked but {self.name}'s vocabulary has no BOS/EOS")
        return tok.vocab["BOS_None"], tok.vocab["EOS_None"]

    @classmethod
    def build(cls, cfg: TokenConfig) -> MidiTokenizer:
        """Raises ``ConfigError`` for a missing miditok, a bad combination or file."""
        chosen = [x for x in (cfg.preset, cfg.config_file) if x]
        if len(chosen) > 1 or (cfg.preset and cfg.tokenizer):
            raise ConfigError(
                "pass one of --tokenizer (with an optional --tokenizer_config), --tokenizer_preset"
            )
        if cfg.max_tokens is not None and cfg.max_tokens < 1:
            raise ConfigError("--max_midi_tokens must be positive")
        miditok = _miditok()
        if cfg.preset:
            if cfg.preset not in PRESETS:
                raise ConfigError(f"unknown --tokenizer_preset {cfg.preset!r}; choose {PRESETS}")
            tok = _text2midi(miditok)
            max_tokens = cfg.max_tokens if cfg.max_tokens is not None else TEXT2MIDI_MAX_TOKENS
            bos_eos = True if cfg.bos_eos is None else cfg.bos_eos
        else:
            if cfg.config_file:
                tok = _from_file(miditok, Path(cfg.config_file), cfg.tokenizer)
            else:
                tok = _from_name(miditok, str(cfg.tokenizer))
            max_tokens, bos_eos = cfg.max_tokens, bool(cfg.bos_eos)
        return cls(tok, max_tokens=max_tokens, bos_eos=bos_eos)

    def _params_json(self) -> bytes:
        """miditok's own saved form (``save_params``): ``REMI(params=path)`` loads it back."""
        with tempfile.TemporaryDirectory(prefix="amtprep-tokenizer-") as folder:
            path = Path(folder) / "tokenizer.json"
            self.tok.save_params(path)
            return path.read_bytes()

    def encode(self, score) -> TokenIds:
        """``tokenizer(score)``'s ids laid out as ``tokens`` documents; raises what miditok
        raises (the caller makes it a failed row)."""
        if self.fast is not None:
            parts = [ids.reshape(-1, 1) for ids in self.fast.encode(score)]
        else:
            out = self.tok(score)
            seqs = out if isinstance(out, list) else [out]
            parts = [_rows(seq.ids, self.width) for seq in seqs]
        if self.bos is not None:
            parts = [np.array([[self.bos]], np.int32), *parts, np.array([[self.eos]], np.int32)]
        full = np.concatenate(parts) if parts else np.zeros((0, self.width), np.int32)
        n = full.shape[0]
        truncated = self.max_tokens is not None and n > self.max_tokens
        kept = full[: self.max_tokens] if truncated else full
        lengths = None
        if self.multi_stream:
            ends = np.minimum(np.cumsum([p.shape[0] for p in parts]), kept.shape[0])
            lengths = np.diff(ends, prepend=0).astype(np.int32)
        return TokenIds(kept.ravel(), n, bool(truncated), lengths)

    def fingerprint(self) -> dict[str, Any]:
        """What changes the token columns; JSON values, merged into the MIDI stage's."""
        return {
            "tokenizer": self.name,
            "tokenizer_params_sha256": self.params_sha256,
            "artifacts": dict(self.files_sha256),
            "max_midi_tokens": self.max_tokens,
            "tokens_bos_eos": self.bos_eos,
            "miditok": versions.miditok_version(),
            "symusic": versions.symusic_version(),
        }

    def artifacts(self) -> dict[str, bytes]:
        """Files saved beside the final data: the params (miditok's format) and the full
        token -> id map of the ids in ``tokens`` (the trained model's for a trained one)."""
        return {"tokenizer.json": self.params_json, "vocab.json": self.vocab_json}

    def cache_tag(self) -> str:
        """Part of the feature cache key: rows cached with other tokens never match."""
        return _sha(json.dumps(self.fingerprint(), sort_keys=True).encode())[:16]
