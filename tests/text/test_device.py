"""Device and precision choice, as pure decisions, and the no-CUDA fallback of a real stage."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from amtprep.config import TextConfig
from amtprep.errors import ConfigError
from amtprep.text import TextStage
from amtprep.text.device import (
    ComputePlan,
    choose_compute,
    choose_device,
    cuda_bf16_native,
    cuda_unavailable_reason,
    device_info,
    numerics_key,
    plan_compute,
)

from .conftest import make_records


def test_choose_device():
    assert choose_device(use_gpu=True, cuda_available=True) == "cuda"
    assert choose_device(use_gpu=False, cuda_available=True) == "cpu"
    assert choose_device(use_gpu=False, cuda_available=False) == "cpu"


def test_choose_device_warns_when_gpu_missing(caplog):
    with caplog.at_level(logging.WARNING, logger="amtprep.text.device"):
        assert choose_device(use_gpu=True, cuda_available=False) == "cpu"
    assert "no CUDA device" in caplog.text


@pytest.mark.parametrize(
    ("dtype", "device", "bf16", "expected"),
    [
        ("auto", "cpu", True, ComputePlan("cpu", "fp32", autocast=False)),
        ("fp32", "cpu", False, ComputePlan("cpu", "fp32", autocast=False)),
        ("bf16", "cpu", True, ComputePlan("cpu", "bf16", autocast=True)),
        ("auto", "cuda", True, ComputePlan("cuda", "bf16", autocast=False)),
        ("auto", "cuda", False, ComputePlan("cuda", "fp16", autocast=False)),
        ("fp16", "cuda", True, ComputePlan("cuda", "fp16", autocast=False)),
        ("fp32", "cuda", True, ComputePlan("cuda", "fp32", autocast=False)),
    ],
)
def test_choose_compute(dtype, device, bf16, expected):
    assert choose_compute(dtype, device, bf16_supported=bf16) == expected


@pytest.mark.parametrize(
    ("dtype", "device", "bf16", "message"),
    [
        ("fp16", "cpu", True, "fp16 needs a GPU"),
        ("bf16", "cpu", False, "not supported by this CPU"),
        ("bf16", "cuda", False, "not supported by this GPU"),
        ("int8", "cpu", True, "unknown text dtype"),
    ],
)
def test_choose_compute_refuses_what_cannot_run(dtype, device, bf16, message):
    with pytest.raises(ConfigError, match=message):
        choose_compute(dtype, device, bf16_supported=bf16)


@pytest.mark.parametrize(
    ("dtype", "device", "bf16"),
    [("fp16", "cpu", True), ("bf16", "cpu", False), ("bf16", "cuda", False)],
)
def test_refusal_names_a_flag_the_command_line_knows(dtype, device, bf16):
    from amtprep.cli import build_parser

    known = set(build_parser()._option_string_actions)
    with pytest.raises(ConfigError) as info:
        choose_compute(dtype, device, bf16_supported=bf16)
    named = re.findall(r"--[\w-]+", str(info.value))
    assert named, str(info.value)  # it tells the user which flag to change
    assert set(named) <= known, str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback when CUDA is absent")
def test_use_gpu_without_cuda_warns_and_runs_on_cpu(tiny_bert, caplog):
    with caplog.at_level(logging.WARNING):
        stage = TextStage(TextConfig(model=str(tiny_bert), use_gpu=True))
    assert "no CUDA device" in caplog.text
    assert stage.plan.device == "cpu"
    table = stage.process(make_records(["A calm piano piece."]))
    assert table.column("status").to_pylist() == ["ok"]


def test_cpu_batches_are_bounded_by_tokens_by_default():
    from amtprep.text.device import (
        CPU_MAX_TOKENS,
        ComputePlan,
        default_max_tokens,
        default_model_batch_size,
    )

    assert default_max_tokens(ComputePlan("cpu", "fp32", autocast=False)) == 2048
    assert default_max_tokens(ComputePlan("cpu", "bf16", autocast=True)) == 4096
    assert default_max_tokens(ComputePlan("cuda", "bf16", autocast=False)) == 65_536
    assert default_model_batch_size("cuda") * 32 >= 65_536  # the budget binds on GPUs too
    # the caption cap is loose enough that the budget cuts batches of ~65-token captions
    assert default_model_batch_size("cpu") * 65 > max(CPU_MAX_TOKENS.values())


def test_stage_uses_the_token_budget_unless_told_otherwise(tiny_bert):
    from amtprep.config import TextConfig
    from amtprep.text import TextStage

    assert TextStage(TextConfig(model=str(tiny_bert))).encoder.max_tokens == 2048
    told = TextStage(TextConfig(model=str(tiny_bert), max_tokens_per_batch=300))
    assert told.encoder.max_tokens == 300


# -- issue 13: the CUDA decisions, with torch's device calls faked at the seam ---------------


def test_require_gpu_refuses_without_cuda_and_says_why():
    with pytest.raises(ConfigError, match=r"--require_gpu.*CPU-only build.*fix:"):
        choose_device(False, False, require=True, reason="torch 2.x is a CPU-only build")
    assert choose_device(False, True, require=True) == "cuda"


def test_use_gpu_without_cuda_says_why_and_names_require_gpu(caplog):
    with caplog.at_level(logging.WARNING, logger="amtprep.text.device"):
        assert choose_device(True, False, reason="CUDA_VISIBLE_DEVICES='' hides every GPU") == "cpu"
    assert "hides every GPU" in caplog.text and "--require_gpu" in caplog.text


@pytest.mark.parametrize(
    "capability, native",
    [((6, 1), False), ((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)],
)
def test_bf16_counts_only_from_compute_capability_8(capability, native):
    assert cuda_bf16_native(capability) is native


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((9, 0), "bf16")])
def test_auto_on_a_faked_gpu_picks_by_capability_not_emulation(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    plan = plan_compute(True, "auto")
    assert (plan.device, plan.dtype) == ("cuda", expected)
    if expected == "fp16":
        with pytest.raises(ConfigError, match="bf16 is not supported by this GPU"):
            plan_compute(True, "bf16")


def test_cuda_unavailable_reason_names_the_cause(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in cuda_unavailable_reason()
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "hides every GPU" in cuda_unavailable_reason()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "finds no device or driver" in cuda_unavailable_reason()


def test_numerics_that_differ_from_the_cpus_get_their_own_key():
    assert numerics_key(ComputePlan("cpu", "fp32", False)) is None
    assert numerics_key(ComputePlan("cpu", "bf16", True)) is None  # CPU fingerprints as before
    assert numerics_key(ComputePlan("cuda", "fp32", False)) is None
    assert numerics_key(ComputePlan("cuda", "bf16", False)) == "cuda-bf16-weights-cast"
    assert numerics_key(ComputePlan("cuda", "fp16", False)) == "cuda-fp16-weights-cast"


def test_device_info_on_a_faked_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    info = device_info(ComputePlan("cuda", "bf16", False))
    assert info == {
        "device": "cuda",
        "dtype": "bf16",
        "torch": torch.__version__,
        "gpu": "NVIDIA H200",
        "cuda": "12.4",
    }


def test_stage_records_what_ran(tiny_bert, caplog):
    with caplog.at_level(logging.INFO, logger="amtprep.text.stage"):
        stage = TextStage(TextConfig(model=str(tiny_bert), dtype="fp32"))
    assert stage.device_info["device"] == "cpu" and stage.device_info["packed_forward"] is True
    assert stage.device_info["loader"] == "light"
    assert "packed_forward=True" in caplog.text
    assert "numerics" not in stage.fingerprint()


def test_require_gpu_on_this_cpu_machine_is_one_clear_line(tiny_bert, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from amtprep.cli import main
    from amtprep.sample import generate

    sample = generate(tmp_path / "sample", 3)
    code = main(
        ["--input_file", str(sample), "--output_dir", str(tmp_path / "out"), "--text_model",
         str(tiny_bert), "--require_gpu", "--no_progress"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "--require_gpu" in err and "Traceback" not in err
    assert not list((tmp_path / "out").rglob("*.parquet"))  # refused before any stage ran
