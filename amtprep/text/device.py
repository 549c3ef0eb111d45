"""Where and in which precision the text model runs: pure decisions, no model in sight.

Public API: ``ComputePlan``, ``choose_device(use_gpu, cuda_available)``,
``choose_compute(dtype, device, *, bf16_supported, fp16_safe=True)``,
``plan_compute(use_gpu, dtype, *, fp16_safe=True)`` (probes torch),
``default_model_batch_size(device)``, ``default_max_tokens(plan)``, ``cpu_bf16_supported()``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from amtprep.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ComputePlan:
    device: str  # "cpu" | "cuda"
    dtype: str  # "fp32" | "bf16" | "fp16": the precision of the matmuls
    # CPU bf16: a BERT's packed forward casts weights and residual stream once (cosine >= 0.9998 to
    # fp32, issue 14); other encoders run under autocast. On a GPU the weights are cast once.
    autocast: bool


def choose_device(use_gpu: bool, cuda_available: bool) -> str:
    """``"cuda"`` when asked for and present; otherwise ``"cpu"`` (with a warning if a GPU was asked for)."""
    if use_gpu and not cuda_available:
        log.warning(
            "use_gpu was set but no CUDA device is available: running the text model on CPU"
        )
    return "cuda" if use_gpu and cuda_available else "cpu"


def choose_compute(
    dtype: str, device: str, *, bf16_supported: bool, fp16_safe: bool = True
) -> ComputePlan:
    """Resolve ``dtype`` (auto|fp32|fp16|bf16) for ``device``; raises ConfigError when it cannot
    run there.

    ``fp16_safe`` False (T5-family encoders, whose activations overflow fp16 into inf/NaN states)
    refuses fp16 and makes ``auto`` on a GPU choose bf16, or fp32 where bf16 is not supported.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"unknown text dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "fp16" and not fp16_safe:
        raise ConfigError(
            "dtype fp16 overflows this model (T5-family activations exceed fp16's range and "
            "turn into inf/NaN); use --dtype bf16 or --dtype fp32"
        )
    if device == "cpu":
        if dtype in ("auto", "fp32"):
            return ComputePlan("cpu", "fp32", autocast=False)
        if dtype == "fp16":
            raise ConfigError(
                "dtype fp16 needs a GPU; on CPU use --dtype bf16 (fast, cosine >= 0.9999) or fp32"
            )
        if not bf16_supported:
            raise ConfigError(
                "dtype bf16 is not supported by this CPU (no AVX512-BF16/AMX); use --dtype fp32"
            )
        return ComputePlan("cpu", "bf16", autocast=True)
    if dtype == "auto":
        dtype = "bf16" if bf16_supported else "fp16" if fp16_safe else "fp32"
    elif dtype == "bf16" and not bf16_supported:
        raise ConfigError("dtype bf16 is not supported by this GPU; use --dtype fp16 or fp32")
    return ComputePlan(device, dtype, autocast=False)


def default_model_batch_size(device: str) -> int:
    """At most this many captions per model batch; on CPU the token budget is what binds."""
    return 128 if device == "cuda" else 256


# Token budgets per CPU model batch, by measurement (bench/README.md, issue 14): bf16 gains up
# to ~4k tokens (larger AMX matmuls), fp32 is flat from 1k to 3k tokens and slower beyond. Both
# are ~3 MiB of [tokens, hidden] activations for a 384-wide model.
CPU_MAX_TOKENS = {"fp32": 2048, "bf16": 4096}


def default_max_tokens(plan: ComputePlan) -> int | None:
    """Padded tokens per model batch when the user sets none: a budget on CPU, none on a GPU."""
    return CPU_MAX_TOKENS.get(plan.dtype) if plan.device == "cpu" else None


def cpu_bf16_supported() -> bool:
    """True when oneDNN has fast bf16 kernels on this CPU (else autocast would crawl or fail)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private probe; absent on some builds
        return False


def plan_compute(use_gpu: bool, dtype: str, *, fp16_safe: bool = True) -> ComputePlan:
    """Probe torch for CUDA / bf16 support and choose the plan; raises ConfigError."""
    import torch

    device = choose_device(use_gpu, torch.cuda.is_available())
    bf16 = bool(torch.cuda.is_bf16_supported()) if device == "cuda" else cpu_bf16_supported()
    return choose_compute(dtype, device, bf16_supported=bf16, fp16_safe=fp16_safe)


def available_cores() -> int:
    """Cores this process may run on (respects taskset / cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
