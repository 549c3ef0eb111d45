"""bench/gpu_check.py's dry run: every step of the GPU check runs (here on CPU, tiny sizes)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.helpers import REPO


def test_gpu_check_dry_run_runs_every_step(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert report["dry_run"] is True and report["device"] == "cpu"
    for step in ("correctness", "attention", "syncs", "pooling_none_memory", "speed", "cli"):
        assert "error" not in report[step], (step, report[step])
    correctness = report["correctness"]
    assert correctness["fp32_ok"] and correctness["packed_forward"]
    assert correctness["packed_vs_plain_max_abs_diff"] <= 1e-5
    assert any("scaled_dot_product" in k for k in report["attention"]["kernels"])
    assert report["cli"]["exit_code"] == 0 and report["cli"]["captions"] == 200
    assert {"minilm_batch32", "bert_base_batch32"} <= set(report["speed"])
    assert set(report["goals_met"]) == {"minilm_mfu", "bert_base_mfu", "cli_captions_per_s", "fp32"}


def test_prepared_fp16_model_loads_and_agrees(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_check

    from amtprep.config import TextConfig
    from amtprep.text import TextStage

    folder = tmp_path / "model"
    gpu_check.prepare(folder)
    assert (folder / "model.safetensors").stat().st_size < 50 * 2**20  # fits the 64 MiB carry
    texts = gpu_check.captions(20)
    half = TextStage(TextConfig(model=str(folder))).encoder.encode(texts).vectors
    full = TextStage(TextConfig()).encoder.encode(texts).vectors
    cosine = (half * full).sum(1) / (np.linalg.norm(half, axis=1) * np.linalg.norm(full, axis=1))
    assert cosine.min() > 0.9999
