"""Where and in which precision the text model runs: pure decisions, no model in sight.

Public API: ``ComputePlan``, ``choose_device(use_gpu, cuda_available, *, require=False,
reason="")``, ``choose_compute(dtype, device, *, bf16_supported, fp16_safe=True)``,
``cuda_bf16_native(capability)``, ``plan_compute(use_gpu, dtype, *, fp16_safe=True,
require_gpu=False)`` (probes torch), ``require_cuda()``, ``cuda_unavailable_reason()``, ``device_info(plan)``,
``numerics_key(plan)``, ``default_model_batch_size(device)``, ``default_max_tokens(plan)``,
``cpu_bf16_supported()``.
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


def choose_device(
    use_gpu: bool, cuda_available: bool, *, require: bool = False, reason: str = ""
) -> str:
    """``"cuda"`` when asked for and present; otherwise ``"cpu"``, saying plainly why when a GPU
    was asked for. ``require`` (``--require_gpu``) makes a missing GPU a ``ConfigError``."""
    why = f" ({reason})" if reason else ""
    if require and not cuda_available:
        raise ConfigError(
            f"--require_gpu: no CUDA device is available to torch{why}; fix: install a CUDA "
            "build of torch and check CUDA_VISIBLE_DEVICES, or drop --require_gpu to run on CPU"
        )
    if use_gpu and not cuda_available:
        log.warning(
            "--use_gpu: no CUDA device is available to torch%s: the text model runs on CPU "
            "(pass --require_gpu to refuse instead)",
            why,
        )
    return "cuda" if (use_gpu or require) and cuda_available else "cpu"


def cuda_bf16_native(capability: tuple[int, int]) -> bool:
    """bf16 tensor cores: compute capability 8.0 (Ampere) and later. ``torch.cuda.
    is_bf16_supported()`` also counts emulation, which on a T4 or V100 runs bf16 without them."""
    return tuple(capability) >= (8, 0)


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
    """At most this many captions per model batch; the token budget is what binds."""
    return 2048 if device == "cuda" else 256


# Token budgets per CPU model batch, by measurement (bench/README.md, issue 14): bf16 gains up
# to ~4k tokens (larger AMX matmuls), fp32 is flat from 1k to 3k tokens and slower beyond. Both
# are ~3 MiB of [tokens, hidden] activations for a 384-wide model.
CPU_MAX_TOKENS = {"fp32": 2048, "bf16": 4096}
# On a GPU one forward should be large enough to fill the device (issue 13: 128 captions of ~65
# tokens were ~0.25 ms of H200 time, less than the launch overheads around them). 65,536 tokens
# is ~1,000 captions: ~200 MiB of [tokens, 768] bf16 activations for a BERT-base, ~0.4 GiB at the
# 3,072-wide feed-forward. Chosen from that arithmetic, not measured (no GPU lent yet:
# bench/gpu_check.py sweeps it).
CUDA_MAX_TOKENS = 65_536


def default_max_tokens(plan: ComputePlan) -> int | None:
    """Padded tokens per model batch when the user sets none."""
    if plan.device == "cpu":
        return CPU_MAX_TOKENS.get(plan.dtype)
    return CUDA_MAX_TOKENS


def cpu_bf16_supported() -> bool:
    """True when oneDNN has fast bf16 kernels on this CPU (else autocast would crawl or fail)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private probe; absent on some builds
        return False


def cuda_unavailable_reason() -> str:
    """Why torch sees no GPU, in words an operator can act on ("" when it sees one)."""
    import torch

    if torch.cuda.is_available():
        return ""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no device or driver"


def require_cuda() -> None:
    """``--require_gpu``'s check at start-up; raises ConfigError naming why there is no GPU."""
    import torch

    available = bool(torch.cuda.is_available())
    reason = "" if available else cuda_unavailable_reason()
    choose_device(False, available, require=True, reason=reason)


def plan_compute(
    use_gpu: bool, dtype: str, *, fp16_safe: bool = True, require_gpu: bool = False
) -> ComputePlan:
    """Probe torch for CUDA / bf16 support and choose the plan; raises ConfigError."""
    import torch

    wanted = use_gpu or require_gpu
    available = bool(torch.cuda.is_available()) if wanted else False
    reason = cuda_unavailable_reason() if wanted and not available else ""
    device = choose_device(use_gpu, available, require=require_gpu, reason=reason)
    if device == "cuda":
        bf16 = cuda_bf16_native(torch.cuda.get_device_capability())
    else:
        bf16 = cpu_bf16_supported()
    return choose_compute(dtype, device, bf16_supported=bf16, fp16_safe=fp16_safe)


def device_info(plan: ComputePlan) -> dict[str, str]:
    """What ran the text model, for the log and the run's statistics."""
    import torch

    info = {"device": plan.device, "dtype": plan.dtype, "torch": torch.__version__}
    if plan.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = str(torch.version.cuda)
    return info


def numerics_key(plan: ComputePlan) -> str | None:
    """A name for numerics that differ beyond fp32 noise from the CPU's, for the fingerprint:
    a GPU run at bf16/fp16 casts the whole model, the CPU's bf16 keeps LayerNorm in fp32 (and
    its vectors differ), so they never share a cache key or a resume. None where CPU and GPU
    agree to fp32 rounding (fp32 anywhere), which keeps every CPU run's fingerprint as before."""
    if plan.device == "cpu" or plan.dtype == "fp32":
        return None
    return f"{plan.device}-{plan.dtype}-weights-cast"


def available_cores() -> int:
    """Cores this process may run on (respects taskset / cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
