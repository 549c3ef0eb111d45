"""Device and precision choice, as pure decisions, and the no-CUDA fallback of a real stage."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from amtprep.config import TextConfig
from amtprep.errors import ConfigError
from amtprep.text import TextStage
from amtprep.text.device import ComputePlan, choose_compute, choose_device

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
    assert default_max_tokens(ComputePlan("cuda", "bf16", autocast=False)) is None
    # the caption cap is loose enough that the budget cuts batches of ~65-token captions
    assert default_model_batch_size("cpu") * 65 > max(CPU_MAX_TOKENS.values())


def test_stage_uses_the_token_budget_unless_told_otherwise(tiny_bert):
    from amtprep.config import TextConfig
    from amtprep.text import TextStage

    assert TextStage(TextConfig(model=str(tiny_bert))).encoder.max_tokens == 2048
    told = TextStage(TextConfig(model=str(tiny_bert), max_tokens_per_batch=300))
    assert told.encoder.max_tokens == 300
