"""How far and how fast ``--dtype bf16`` would be, measured on a run's first captions (CPU).

Public API: ``BF16_PROBE_CAPTIONS``, ``should_probe(cfg_dtype, plan, bf16_supported, packed)``,
``probe_bf16(model, encoder_kwargs, captions, fp32_encoder) -> dict``.

Why: fp32 stays the default (exact to the reference vectors), but on a CPU with native bf16
(AVX512-BF16 / AMX) bf16 is 3-4x faster at a min cosine of ~0.9999 (bench/README.md). A user
cannot know that of their machine and captions without trying; the run tries once, on up to 32
captions of its first batch, after the batch (~0.3 s with the default model), and says what it found in the log and in
``statistics.json``. The vectors written are always the fp32 ones.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from amtprep.text.device import ComputePlan

BF16_PROBE_CAPTIONS = 32


def should_probe(cfg_dtype: str, plan: ComputePlan, bf16_supported: bool, packed: bool) -> bool:
    """Only where the choice was left to amtprep (``--dtype auto``), the run is on CPU at fp32,
    the CPU has native bf16 and the packed forward runs (the bf16 route that would be used)."""
    return (
        cfg_dtype == "auto"
        and plan.device == "cpu"
        and plan.dtype == "fp32"
        and (bf16_supported and packed)
    )


def _timed(encoder, captions: list[str]) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    vectors = encoder.encode(captions).vectors
    return time.perf_counter() - t, vectors


def probe_bf16(model: Any, encoder_kwargs: dict, captions: list[str], fp32_encoder) -> dict:
    """Encode ``captions`` with ``fp32_encoder`` (warm: it has just encoded the batch they come
    from) and a bf16 twin of it (built here, warmed once, dropped after); return the speed
    ratio and the agreement."""
    from amtprep.text.encoder import Encoder

    bf16 = Encoder(model, **{**encoder_kwargs, "plan": ComputePlan("cpu", "bf16", autocast=True)})
    _timed(bf16, captions)  # first call: kernel set-up
    fp32_s, reference = _timed(fp32_encoder, captions)
    bf16_s, vectors = _timed(bf16, captions)
    cosine = (vectors * reference).sum(1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12
    )
    return {
        "captions": len(captions),
        "bf16_speedup": round(fp32_s / bf16_s, 2) if bf16_s > 0 else None,
        "min_cosine_to_fp32": round(float(cosine.min()), 6),
        "max_abs_diff_to_fp32": float(np.abs(vectors - reference).max()),
    }
