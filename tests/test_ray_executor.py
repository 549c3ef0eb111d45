"""``--executor ray`` gives a local run's output, exactly once, under worker and driver deaths.

One local Ray (``ray.init(num_cpus=2)``) serves the whole module; each CLI run connects to it
with ``--ray_address``, as a user's job connects to a cluster.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import assert_same_output, run_args, run_cli, start_cli
from tests.s3view import materialize

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bucket():
    """A local S3 server started before Ray, so the Ray workers see its endpoint as a cluster's
    nodes see their own credentials (none are passed through the job)."""
    pytest.importorskip("moto")
    import fsspec

    from tests.s3server import s3_server

    with s3_server():
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("amtprep-ray")
        yield "s3://amtprep-ray"


@pytest.fixture(scope="module")
def ray_address(bucket):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_bert):
    """24 records with one missing MIDI file, and the output of a local run (the reference)."""
    from amtprep.sample import generate

    root = tmp_path_factory.mktemp("rayjob")
    corpus = generate(root / "corpus", n=24, seed=11)
    (corpus.parent / "midi" / "0005.mid").unlink()
    ref = root / "local"
    r = run_cli(*run_args(corpus, ref, tiny_bert))
    assert r.returncode == 0, r.stderr[-2000:]
    return {"corpus": corpus, "ref": ref}


def _ray(job, model, out: Path, address: str, *extra: str) -> list[str]:
    return [
        *run_args(job["corpus"], out, model, "--executor", "ray"),
        "--ray_address",
        address,
        *extra,
    ]


def _shards(out: Path, stage: str) -> list[str]:
    return sorted(p.name for p in (out / stage).glob("part-*.parquet"))


def test_ray_run_equals_a_local_run(job, tiny_bert, ray_address, tmp_path):
    out = tmp_path / "ray"
    r = run_cli(*_ray(job, tiny_bert, out, ray_address, "--ray_text_actors", "2"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_output(job["ref"], out)
    for stage in ("midi", "text"):  # the same batches, planned by the driver alone
        assert _shards(out, stage) == _shards(job["ref"], stage)


@pytest.mark.parametrize("stage", ["midi", "text"])
def test_a_worker_killed_after_publishing_is_retried_exactly_once(
    stage, job, tiny_bert, ray_address, tmp_path
):
    """The task's worker (MIDI) or the actor (text) SIGKILLs itself right after its create-only
    write; Ray retries the task or the driver resubmits to a new actor, the second attempt
    finds the shard and adopts it: one shard per range, counters counted once."""
    import json

    marker = tmp_path / "killed"
    out = tmp_path / "out"
    env = {"AMTPREP_RAY_KILL_ONCE": f"{stage}:{marker}"}
    r = run_cli(*_ray(job, tiny_bert, out, ray_address), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.exists()  # a worker did die
    if stage == "text":
        assert "lost with its worker" in r.stderr and "resubmitted" in r.stderr
    assert_same_output(job["ref"], out)
    assert _shards(out, stage) == _shards(job["ref"], stage)
    a = json.loads((job["ref"] / "statistics.json").read_text())["stages"][stage]
    b = json.loads((out / "statistics.json").read_text())["stages"][stage]
    assert (a["processed"], a["ok"], a["failed"]) == (b["processed"], b["ok"], b["failed"])
    assert a["counters"].get("files") == b["counters"].get("files")


def _kill_and_resume(args: list[str], out_ready, kills: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    codes = []
    for _ in range(kills):
        proc = start_cli(args, delay=0.3, stderr=subprocess.DEVNULL)
        out_ready()
        time.sleep(rng.uniform(0.0, 2.5))
        proc.send_signal(signal.SIGKILL)
        codes.append(proc.wait(timeout=60))
    return codes


def test_driver_killed_at_random_moments_resumes_to_the_same_output(
    job, tiny_bert, ray_address, tmp_path
):
    out = tmp_path / "out"
    args = _ray(job, tiny_bert, out, ray_address)

    def ready():
        deadline = time.time() + 60
        while not (out / ".amtprep.lock").exists() and time.time() < deadline:
            time.sleep(0.1)

    codes = _kill_and_resume(args, ready, kills=4, seed=3)
    assert codes.count(-signal.SIGKILL) >= 3
    r = run_cli(*args, "--mode", "continue")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_output(job["ref"], out)
    for stage in ("midi", "text"):
        assert _shards(out, stage) == _shards(job["ref"], stage)


def test_driver_killed_with_output_in_a_bucket(job, tiny_bert, bucket, ray_address, tmp_path):
    """Workers publish into the bucket; the driver is killed, then resumes on a fresh working
    copy: the same rows as a local run."""
    url = f"{bucket}/run"
    args = [*_ray(job, tiny_bert, Path("-"), ray_address), "--output_dir", url]
    codes = _kill_and_resume(
        [*args, "--work_dir", str(tmp_path / "wd1")], lambda: time.sleep(4), kills=2, seed=5
    )
    assert -signal.SIGKILL in codes
    r = run_cli(*args, "--work_dir", str(tmp_path / "wd2"), "--mode", "continue")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from the commit log" in r.stderr or "downloaded" in r.stderr
    assert_same_output(job["ref"], materialize(url, tmp_path / "view"))


def test_sigterm_stops_after_the_batches_in_flight_then_continue(
    job, tiny_bert, ray_address, tmp_path
):
    """As locally: no new batches after SIGTERM, those in flight are committed, exit 143, and
    --save_partial publishes what is done."""
    from tests.helpers import wait_for

    out = tmp_path / "out"
    # 6 batches of 4, at most 4 in flight (2 per CPU): a stop after the first leaves some
    args = _ray(job, tiny_bert, out, ray_address, "--save_partial", "--batch_size", "4")
    proc = start_cli(args, delay=0.5, stderr=subprocess.DEVNULL)
    wait_for(out / "midi", "part-*.parquet")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert (out / "partial_failures.parquet").exists()
    assert 0 < len(_shards(out, "midi")) < 6
    r = run_cli(*args, "--mode", "continue")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_output(job["ref"], out)
