"""The once-a-run bf16 probe on CPU: measured, reported, never what is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from amtprep.cli import main
from amtprep.config import TextConfig
from amtprep.text import TextStage
from amtprep.text import stage as stage_module
from amtprep.text.device import ComputePlan, cpu_bf16_supported
from amtprep.text.probe import should_probe
from tests.helpers import run_args

from .conftest import CAPTIONS, embedding_matrix, make_records

needs_bf16 = pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no native bf16")
CPU32 = ComputePlan("cpu", "fp32", False)


@pytest.mark.parametrize(
    "dtype, plan, bf16, packed, expected",
    [
        ("auto", CPU32, True, True, True),
        ("fp32", CPU32, True, True, False),  # the user chose: no advice
        ("auto", CPU32, False, True, False),  # no native bf16
        ("auto", CPU32, True, False, False),  # not the packed forward
        ("auto", ComputePlan("cpu", "bf16", True), True, True, False),
        ("auto", ComputePlan("cuda", "fp32", False), True, True, False),
    ],
)
def test_when_the_probe_runs(dtype, plan, bf16, packed, expected):
    assert should_probe(dtype, plan, bf16, packed) is expected


@needs_bf16
def test_probe_measures_once_and_the_vectors_stay_fp32(tiny_bert):
    records = make_records(CAPTIONS * 8)  # 80 captions: the probe takes 32
    probed = TextStage(TextConfig(model=str(tiny_bert)))
    table = probed.process(records)
    probe = probed.bf16_probe
    assert probe["captions"] == 32 and probe["bf16_speedup"] > 0
    assert 0.9 < probe["min_cosine_to_fp32"] <= 1.0 and probe["max_abs_diff_to_fp32"] > 0
    assert probed.run_info()["bf16_probe"] == probe
    probed.process(records)  # once a run: a later batch does not measure again
    assert probed.bf16_probe is probe
    plain = TextStage(TextConfig(model=str(tiny_bert), dtype="fp32"))
    assert plain.bf16_probe is None and "bf16_probe" not in plain.run_info()
    np.testing.assert_array_equal(embedding_matrix(table), embedding_matrix(plain.process(records)))
    assert probed.fingerprint() == plain.fingerprint()  # the probe changes nothing stored


@needs_bf16
def test_a_failing_probe_never_fails_the_batch(tiny_bert, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no bf16 today")

    monkeypatch.setattr(stage_module, "probe_bf16", broken)
    stage = TextStage(TextConfig(model=str(tiny_bert)))
    table = stage.process(make_records(CAPTIONS))
    assert table.num_rows == len(CAPTIONS) and stage.bf16_probe is None


def test_statistics_say_what_ran_and_what_bf16_would_do(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    stats = json.loads((out / "statistics.json").read_text())
    this_run = stats["stages"]["text"]["this_run"]
    assert this_run["device"]["device"] == "cpu" and this_run["device"]["packed_forward"]
    assert ("bf16_probe" in this_run) == cpu_bf16_supported()
    assert "this_run" not in stats["stages"]["midi"]  # the MIDI stage reports nothing of it
