"""--overlap_stages: the MIDI and text stages at once give the sequential run's output, resume
to it after a kill while both run, share the cores, and stop together on an error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from amtprep import pipeline
from amtprep.cli import main
from amtprep.config import MidiConfig, RunConfig
from tests.crashkit import invariant
from tests.helpers import REPO, assert_same_output, run_args, start_cli, wait_for


@pytest.fixture(scope="module")
def module_corpus(tmp_path_factory) -> Path:
    from amtprep.sample import generate

    return generate(tmp_path_factory.mktemp("corpus") / "c", n=30, seed=4)


@pytest.mark.parametrize("batch_size", ["3", "16"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_overlapped_stages_give_the_sequential_output(
    module_corpus, tiny_bert, tmp_path, batch_size, workers
):
    extra = ("--batch_size", batch_size, "--workers", workers)
    ref, out = tmp_path / "sequential", tmp_path / "overlapped"
    assert main([*run_args(module_corpus, ref, tiny_bert), *extra]) == 0
    assert main([*run_args(module_corpus, out, tiny_bert), *extra, "--overlap_stages"]) == 0
    assert_same_output(ref, out, atol=0.0)  # bit for bit, embeddings included
    assert invariant(out) is None


def test_a_kill_while_both_stages_run_resumes_to_the_same_output(corpus, tiny_bert, tmp_path):
    ref = tmp_path / "ref"
    assert main(run_args(corpus, ref, tiny_bert)) == 0
    out = tmp_path / "out"
    proc = start_cli([*run_args(corpus, out, tiny_bert), "--overlap_stages"], delay=0.3)
    wait_for(out / "midi", "part-*.parquet")
    wait_for(out / "text", "part-*.parquet")  # both stages have committed, neither finished
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final").exists()
    midi_done = len(list((out / "midi").glob("part-*.parquet")))
    assert midi_done < 30 / 8  # the MIDI stage was still running when the text stage committed
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cont = subprocess.run(
        [sys.executable, str(REPO / "process.py"), "--mode", "continue",
         *run_args(corpus, out, tiny_bert), "--overlap_stages"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cont.returncode == 0, cont.stderr
    assert_same_output(ref, out)
    assert invariant(out) is None


@pytest.mark.parametrize("cores, workers, threads", [(2, 1, 1), (2, 2, 1), (2, 4, 1), (16, 4, 12)])
def test_text_threads_are_the_cores_the_workers_leave(monkeypatch, cores, workers, threads):
    from amtprep.text import device

    monkeypatch.setattr(device, "available_cores", lambda: cores)
    cfg = RunConfig(Path("in.jsonl"), Path("out"), midi=MidiConfig(workers=workers))
    assert pipeline._text_threads(cfg) == threads


def test_the_text_stage_gets_the_cores_left_by_default(
    module_corpus, tiny_bert, tmp_path, monkeypatch
):
    seen = []
    real = pipeline._build_stage

    def spy(name, cfg):
        if name == "text":
            seen.append(cfg.text.threads)
        return real(name, cfg)

    monkeypatch.setattr(pipeline, "_build_stage", spy)
    args = [*run_args(module_corpus, tmp_path / "out", tiny_bert), "--overlap_stages"]
    assert main([*args, "--workers", "1"]) == 0
    assert seen == [pipeline._text_threads(RunConfig(Path("x"), Path("y")))]


def test_an_error_in_one_stage_stops_the_other_and_is_reported(module_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--input_file", str(module_corpus), "--output_dir", str(out), "--text_model",
            str(tmp_path / "no-such-model"), "--overlap_stages", "--no_progress"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0 and "no-such-model" in err and "Traceback" not in err
    assert not (out / "final").exists()


def test_a_text_batch_size_of_its_own_gives_the_same_output(module_corpus, tiny_bert, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main([*run_args(module_corpus, ref, tiny_bert), "--batch_size", "4"]) == 0
    assert main([*run_args(module_corpus, out, tiny_bert), "--batch_size", "4",
                 "--text_batch_size", "11"]) == 0  # fmt: skip
    assert_same_output(ref, out, atol=0.0)
    assert len(list((out / "text").glob("part-*.parquet"))) == 3  # 30 records in 11s
    assert len(list((out / "midi").glob("part-*.parquet"))) == 8


def test_the_text_stage_takes_thousands_of_records_per_batch_on_a_gpu():
    from types import SimpleNamespace

    from amtprep.text.device import ComputePlan

    gpu = SimpleNamespace(name="text", plan=ComputePlan("cuda", "bf16", False))
    cpu = SimpleNamespace(name="text", plan=ComputePlan("cpu", "fp32", False))
    midi = SimpleNamespace(name="midi")
    default = RunConfig(Path("i"), Path("o"), batch_size_given=False)
    assert pipeline._batch_size(default, gpu) == pipeline.GPU_TEXT_BATCH
    assert pipeline._batch_size(default, cpu) == 256 == pipeline._batch_size(default, midi)
    given = RunConfig(Path("i"), Path("o"), batch_size=64, batch_size_given=True)
    assert pipeline._batch_size(given, gpu) == 64  # an explicit --batch_size is kept
    own = RunConfig(Path("i"), Path("o"), text_batch_size=512)
    assert pipeline._batch_size(own, gpu) == 512 == pipeline._batch_size(own, cpu)
