"""The text stage: a batch of records in, one Arrow row per record out (see ``amtprep.stages``).

Public API: ``TextStage(cfg)`` with ``name``, ``fingerprint()``, ``schema()``,
``schema_metadata()``, ``process(records)``, ``counters()``, ``close()``;
``caption_failure(record, max_chars=None)``.

Per-record problems become failed rows: ``malformed_row`` (the reader flagged the row),
``invalid_caption`` (missing or undecodable, with the reader's message), ``empty_caption``,
``caption_too_long`` (over ``max_caption_chars`` characters: never tokenised, and its text is not
stored, so one multi-megabyte caption cannot cost seconds and hundreds of MB). Captions within
that limit but over ``max_length`` tokens are truncated and flagged, not failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

import amtprep
from amtprep.config import TextConfig
from amtprep.errors import ConfigError
from amtprep.records import STATUS_FAILED, STATUS_OK, Record, RecordFailure
from amtprep.text.arrow import EMBEDDING_DTYPES, embedding_array, text_schema, token_embedding_array
from amtprep.text.cache import CachedEmbedding, EmbeddingCache
from amtprep.text.device import (
    CPU_MAX_TOKENS,
    available_cores,
    cpu_bf16_supported,
    default_max_tokens,
    default_model_batch_size,
    device_info,
    numerics_key,
    plan_compute,
)
from amtprep.text.encoder import POOLINGS, Encoder
from amtprep.text.family import check_pooling, encoder_family, resolve_max_length
from amtprep.text.light import LightBert, light_config
from amtprep.text.model import load_config, load_model, resolve_model
from amtprep.text.probe import BF16_PROBE_CAPTIONS, probe_bf16, should_probe

log = logging.getLogger(__name__)

# Bump when the same settings would produce different vectors or columns.
TEXT_STAGE_VERSION = 1
METADATA_PREFIX = "amtprep.text."
CAPTION_TOO_LONG = "caption_too_long"


def caption_failure(record: Record, max_chars: int | None = None) -> RecordFailure | None:
    """Why ``record`` cannot be embedded, or None when its caption is usable."""
    if record.row_error:
        return RecordFailure("malformed_row", record.row_error)
    if record.caption is None:
        return RecordFailure("invalid_caption", record.caption_error or "caption is missing")
    if max_chars is not None and len(record.caption) > max_chars:
        return RecordFailure(
            CAPTION_TOO_LONG,
            f"caption is {len(record.caption)} characters, over the limit of {max_chars} "
            "(--max_caption_chars)",
        )
    if not record.caption.strip():
        return RecordFailure("empty_caption", "caption is empty or whitespace only")
    return None


def _metadata_text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _batch_key(records: Sequence[Record]) -> tuple:
    return tuple(r.idx for r in records)


class TextStage:
    name = "text"

    def __init__(self, cfg: TextConfig) -> None:
        """Resolve, check and load the model; raises ModelLoadError / ConfigError."""
        if cfg.pooling not in POOLINGS:
            raise ConfigError(
                f"unknown pooling {cfg.pooling!r}; choose one of {', '.join(POOLINGS)}"
            )
        if cfg.max_caption_chars < 1:
            raise ConfigError(f"max_caption_chars must be at least 1, got {cfg.max_caption_chars}")
        if cfg.embedding_dtype not in EMBEDDING_DTYPES:
            raise ConfigError(
                f"unknown embedding dtype {cfg.embedding_dtype!r}; choose float32 or float16"
            )
        self.cfg = cfg
        hash_memo = None
        self._cache: EmbeddingCache | None = None
        if cfg.use_cache:
            import diskcache

            # Remembers weight digests by (path, size, mtime) so restarts skip re-reading weights.
            hash_memo = diskcache.Cache(str(cfg.cache_dir / "text" / "weights_sha256"))
        try:
            self.source = resolve_model(cfg.model, hash_memo=hash_memo)
        finally:
            if hash_memo is not None:
                hash_memo.close()
        config = light_config(self.source.path) or load_config(self.source)
        self.family = encoder_family(config)
        self.plan = plan_compute(
            cfg.use_gpu, cfg.dtype, fp16_safe=self.family.fp16_safe, require_gpu=cfg.require_gpu
        )
        self._threads = cfg.threads or available_cores()
        self._threads_wanted = self._threads
        torch.set_num_threads(self._threads)
        model, tokenizer = load_model(self.source, self.plan, self.family, config)
        check_pooling(cfg.pooling, self.family, tokenizer)
        light = isinstance(model, LightBert)
        self.architecture = LightBert.architecture if light else type(model).__name__
        self.max_length = resolve_max_length(
            cfg.max_length,
            self.family,
            st_max_seq_length=self.source.st_max_seq_length,
            tokenizer_max_length=getattr(tokenizer, "model_max_length", None),
        )
        if cfg.pooling == "none":
            self.normalize = False  # per-token states are never normalised
        elif cfg.normalize is None:
            self.normalize = self.source.sentence_transformers and self.source.st_normalize
        else:
            self.normalize = cfg.normalize
        encoder_kwargs = {
            "tokenizer": tokenizer,
            "pooling": cfg.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "batch_size": cfg.model_batch_size or default_model_batch_size(self.plan.device),
            "sort_window": cfg.sort_window,
            "prefetch_depth": 2 if self.plan.device == "cuda" else 0,
        }
        self.encoder = Encoder(
            model,
            plan=self.plan,
            max_tokens=cfg.max_tokens_per_batch or default_max_tokens(self.plan),
            **encoder_kwargs,
        )
        # a bf16 twin is measured once, on the first batch, where the choice was left to us
        self._probe: tuple[Any, dict] | None = None
        if cfg.pooling != "none" and should_probe(
            cfg.dtype, self.plan, cpu_bf16_supported(), self.encoder.packed
        ):
            bf16_tokens = cfg.max_tokens_per_batch or CPU_MAX_TOKENS["bf16"]
            self._probe = (model, {**encoder_kwargs, "max_tokens": bf16_tokens})
        self.bf16_probe: dict | None = None
        # the next batch encoded while the current one commits: on a GPU by default
        self._prefetch_on = cfg.prefetch if cfg.prefetch is not None else self.plan.device == "cuda"
        self._pool = None
        self._pending: tuple[tuple, Any] | None = None
        self.dim = self.encoder.dim
        self._schema = text_schema(
            self.dim, cfg.pooling, cfg.embedding_dtype, self.schema_metadata()
        )
        if cfg.use_cache:
            self._cache = EmbeddingCache(cfg.cache_dir / "text", self._vector_settings())
        self._counts = dict.fromkeys(
            ("records", "ok", "failed", "cache_hits", "cache_misses", "truncated", "tokens"), 0
        )
        # what ran, for the log and the statistics: device, GPU, versions, packed forward or not
        self.device_info = {
            **device_info(self.plan),
            "packed_forward": self.encoder.packed,
            "loader": "light" if light else "transformers",
        }
        log.info(
            "text model %s (%s, sha256 %s) on %s, pooling=%s, max_length=%d, normalize=%s",
            self.source.model_id,
            self.architecture,
            self.source.weights_sha256[:12],
            ", ".join(f"{k}={v}" for k, v in self.device_info.items()),
            cfg.pooling,
            self.max_length,
            self.normalize,
        )

    def _vector_settings(self) -> dict[str, Any]:
        """Everything that changes a vector (not its storage dtype)."""
        numerics = numerics_key(self.plan)
        return {
            **({"numerics": numerics} if numerics else {}),
            "model": self.source.model_id,
            "revision": self.source.revision,
            "weights_sha256": self.source.weights_sha256,
            "architecture": self.architecture,
            "pooling": self.cfg.pooling,
            "max_length": self.max_length,
            "dtype": self.plan.dtype,
            "normalize": self.normalize,
        }

    def fingerprint(self) -> dict[str, Any]:
        return {
            **self._vector_settings(),
            "embedding_dtype": self.cfg.embedding_dtype,
            "version": TEXT_STAGE_VERSION,
        }

    def schema_metadata(self) -> dict[str, str]:
        """Provenance for the Parquet schema metadata, keys prefixed ``amtprep.text.``."""
        values = {
            **self.fingerprint(),
            "dim": self.dim,
            "amtprep_version": amtprep.__version__,
        }
        return {METADATA_PREFIX + key: _metadata_text(value) for key, value in values.items()}

    def schema(self) -> pa.Schema:
        return self._schema

    def set_threads(self, threads: int) -> None:
        """Torch threads from the next batch on; safe from another thread (``--overlap_stages``
        gives the text model every core once the MIDI stage is done): the stage's own thread
        applies it between batches, never under a running forward."""
        self._threads_wanted = max(1, int(threads))

    def prefetch(self, records: Sequence[Record]) -> None:
        """Start encoding the batch ``process`` will get next while the runner writes and
        commits the current shard (on a GPU: the device never idles through a commit). Counts
        are applied only when ``process`` takes the result, so work dropped at a stop is never
        counted; nothing is committed here."""
        if not self._prefetch_on:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="amtprep-text-next")
        self._pending = (_batch_key(records), self._pool.submit(self._compute, list(records)))

    def process(self, records: Sequence[Record]) -> pa.Table:
        pending, self._pending = self._pending, None
        computed = None
        if pending is not None:
            key, future = pending
            result = future.result()  # raises what the work raised; no forward runs after this
            if key == _batch_key(records):
                computed = result
        if self._threads_wanted != self._threads:
            self._threads = self._threads_wanted
            torch.set_num_threads(self._threads)
        table, counts = computed if computed is not None else self._compute(records)
        self._count(*counts)
        return table

    def _compute(self, records: Sequence[Record]) -> tuple[pa.Table, tuple]:
        """The batch's table and what ``_count`` adds for it (applied by ``process``)."""
        n = len(records)
        failures = [caption_failure(r, self.cfg.max_caption_chars) for r in records]
        todo = [i for i, failure in enumerate(failures) if failure is None]
        results: list[CachedEmbedding | None] = [None] * n
        captions = [records[i].caption for i in todo]
        hits = self._cache.get_many(captions) if self._cache else [None] * len(todo)
        misses = [k for k, hit in enumerate(hits) if hit is None]
        for k, hit in zip(todo, hits, strict=True):
            results[k] = hit
        if misses:
            fresh = self._encode([captions[k] for k in misses])
            if self._probe is not None:  # after the batch: the fp32 kernels are warm by now
                self._run_probe([captions[k] for k in misses][:BF16_PROBE_CAPTIONS])
            for k, entry in zip(misses, fresh, strict=True):
                results[todo[k]] = entry
            if self._cache:
                self._cache.set_many([captions[k] for k in misses], fresh)
        counts = (failures, results, len(todo) - len(misses), len(misses))
        return self._table(records, failures, results), counts

    def _run_probe(self, captions: list[str]) -> None:
        model, kwargs = self._probe
        self._probe = None  # once a run, whatever happens
        try:
            self.bf16_probe = probe_bf16(model, kwargs, captions, self.encoder)
        except Exception as exc:  # advice only: never a reason to fail the batch
            log.debug("bf16 probe failed: %s", exc)
            return
        p = self.bf16_probe
        log.info(
            "bf16 on this CPU: %.1fx the fp32 speed on %d captions of the first batch, min "
            "cosine %.6f to fp32; the vectors written stay fp32 (pass --dtype bf16 to use it, "
            "--dtype fp32 to skip this check)",
            p["bf16_speedup"] or 0.0,
            p["captions"],
            p["min_cosine_to_fp32"],
        )

    def run_info(self) -> dict[str, Any]:
        """What this run's stage object saw, for statistics.json (not part of the identity)."""
        info: dict[str, Any] = {"device": dict(self.device_info)}
        if self.bf16_probe is not None:
            info["bf16_probe"] = dict(self.bf16_probe)
        return info

    def _encode(self, captions: list[str]) -> list[CachedEmbedding]:
        encoded = self.encoder.encode(captions)
        rows = encoded.vectors if encoded.vectors is not None else encoded.token_vectors
        return [
            CachedEmbedding(int(t), bool(c), v)
            for t, c, v in zip(encoded.n_tokens, encoded.truncated, rows, strict=True)
        ]

    def _count(
        self,
        failures: list[RecordFailure | None],
        results: list[CachedEmbedding | None],
        hits: int,
        misses: int,
    ) -> None:
        done = [r for r in results if r is not None]
        counts = self._counts
        counts["records"] += len(failures)
        counts["ok"] += len(done)
        counts["failed"] += len(failures) - len(done)
        counts["cache_hits"] += hits if self._cache else 0
        counts["cache_misses"] += misses if self._cache else 0
        counts["truncated"] += sum(r.truncated for r in done)
        counts["tokens"] += sum(r.n_tokens for r in done)

    def _table(
        self,
        records: Sequence[Record],
        failures: list[RecordFailure | None],
        results: list[CachedEmbedding | None],
    ) -> pa.Table:
        valid = np.array([r is not None for r in results], dtype=bool)
        if self.cfg.pooling == "none":
            embedding = token_embedding_array(
                [r.vector if r else None for r in results], valid, self.dim
            )
        else:
            vectors = np.zeros((len(records), self.dim), dtype=np.float32)
            for i, r in enumerate(results):
                if r is not None:
                    vectors[i] = r.vector
            embedding = embedding_array(vectors, valid, self.cfg.embedding_dtype)
        columns = {
            "idx": pa.array([r.idx for r in records], pa.int64()),
            "id": pa.array([r.id for r in records], pa.string()),
            "status": pa.array([STATUS_FAILED if f else STATUS_OK for f in failures], pa.string()),
            "error_type": pa.array([f.error_type if f else None for f in failures], pa.string()),
            "error": pa.array([f.error if f else None for f in failures], pa.string()),
            "caption": pa.array(
                [
                    None if f is not None and f.error_type == CAPTION_TOO_LONG else r.caption
                    for r, f in zip(records, failures, strict=True)
                ],
                pa.string(),
            ),
            "n_tokens": pa.array([r.n_tokens if r else None for r in results], pa.int32()),
            "truncated": pa.array([r.truncated if r else None for r in results], pa.bool_()),
            "embedding": embedding,
        }
        return pa.Table.from_arrays(list(columns.values()), schema=self.schema())

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None
