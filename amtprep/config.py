"""Typed run configuration, built once by the CLI and passed down; library code reads no argv."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("midi", "text", "merge")
ROWS_PER_FINAL_SHARD = 10_000  # rows per final data file: the one default (CLI, config, merge)
MODES = ("process", "continue")


def default_cache_dir() -> Path:
    """Outside the output dir so ``--force_restart`` keeps it; overridable via AMTPREP_CACHE_DIR."""
    env = os.environ.get("AMTPREP_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "amtprep"


@dataclass
class TokenConfig:
    """MIDI tokens through miditok (``amtprep.midi.tokenizer``); all None: no token columns."""

    tokenizer: str | None = None  # remi | tsd | midilike | ... (miditok's default config)
    preset: str | None = None  # text2midi
    config_file: Path | None = None  # a miditok TokenizerConfig JSON or a saved tokenizer
    max_tokens: int | None = None  # None: no cut (text2midi preset: 2048)
    bos_eos: bool | None = None  # wrap in BOS ... EOS; None: on for the text2midi preset only

    @property
    def enabled(self) -> bool:
        return bool(self.tokenizer or self.preset or self.config_file)


@dataclass
class MidiConfig:
    backend: str = "auto"  # auto | mido | symusic
    workers: int = 1
    max_midi_bytes: int = 64 * 1024 * 1024
    file_timeout: float = 60.0  # seconds per file
    use_cache: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
    # Filled by the pipeline from RunConfig (docs/sources.md): where the bytes come from.
    bytes_input: Path | None = None  # the Parquet input, when its bytes_column holds the MIDI
    bytes_column: str | None = None
    archive: Path | None = None  # a .zip/.tar/.tar.gz MIDI root
    work_dir: Path | None = None  # where a tar index / decompressed tar lives (the output dir)
    tokens: TokenConfig = field(default_factory=TokenConfig)


@dataclass
class TextConfig:
    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    pooling: str = "mean"  # mean | cls | none
    normalize: bool | None = None  # None: on for sentence-transformers models
    max_length: int | None = None  # None: the model's own limit
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16
    embedding_dtype: str = "float32"  # float32 | float16 (storage)
    use_gpu: bool = False
    require_gpu: bool = False  # refuse to run the text stage without CUDA
    model_batch_size: int | None = None  # None: 256 on CPU, 2048 on GPU
    max_tokens_per_batch: int | None = None  # None: 2048 (fp32) / 4096 (bf16) on CPU, 65536 on GPU
    max_caption_chars: int = 20_000  # longer captions fail as caption_too_long (not tokenised)
    sort_window: int = 16  # model batches sorted by length together
    threads: int | None = None  # torch threads; None: cores available
    prefetch: bool | None = None  # encode the next batch while one commits; None: on a GPU
    use_cache: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)


@dataclass
class RunConfig:
    input_file: Path
    output_dir: Path
    remote: str | None = None  # an object-storage output URL; output_dir is then its working copy
    executor: str = "local"  # local | ray (amtprep.cluster)
    ray_address: str | None = None  # None: start a local Ray
    ray_text_actors: int = 1
    ray_gpus_per_actor: float = 0.0
    mode: str = "process"
    stages: tuple[str, ...] = STAGES
    batch_size: int = (
        256  # records per shard and per stage call; larger batches sort captions better
    )
    # the text stage's records per batch and shard; None: batch_size, or 4096 on a GPU when
    # batch_size was not given (a GPU needs thousands of records per unit of work, issue 13)
    text_batch_size: int | None = None
    batch_size_given: bool = True
    checkpoint_interval: int = (
        1  # batches between checkpoint saves (shards are committed each batch)
    )
    force_restart: bool = False
    save_partial: bool = False
    save_partial_every: int | None = None  # refresh partial/ every N committed batches
    retry_failed: bool = False
    overlap_stages: bool = False  # MIDI and text stages at once (each its own commits)
    midi_checkpoint: Path | None = None  # None: <output_dir>/midi_checkpoint.json
    text_checkpoint: Path | None = None
    midi_column: str | None = None  # None: auto-detect location / midi_path / midi
    text_column: str | None = None  # None: auto-detect caption / text
    id_column: str | None = None
    midi_root: Path | None = None  # None: the input file's folder
    relocate_midi_root: bool = False  # accept a new midi_root after verifying content hashes
    midi_bytes_column: str | None = None  # Parquet binary column with the MIDI bytes (GigaMIDI)
    keep_midi_bytes: bool = False  # carry that column into the final rows
    rows_per_final_shard: int = ROWS_PER_FINAL_SHARD
    tags: tuple[str, ...] = ()  # tag sets added at merge (amtprep.tags.TAG_SETS), e.g. midicaps
    dedup: str = "mark"  # duplicates at merge (amtprep.dedup): mark (columns) or drop
    log_level: str = "info"
    progress: bool = True
    midi: MidiConfig = field(default_factory=MidiConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def checkpoint_path(self, stage: str) -> Path:
        explicit = {"midi": self.midi_checkpoint, "text": self.text_checkpoint}[stage]
        return Path(explicit) if explicit else self.output_dir / f"{stage}_checkpoint.json"

    def shard_dir(self, stage: str) -> Path:
        return self.output_dir / stage
