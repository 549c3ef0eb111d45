"""A whole job on object storage (a local moto S3 server): input, MIDI files and output in a
bucket give the rows a local run gives; a crash, a resume on a fresh working copy, a second run
and a stale lease behave as on a local disk. The crash sweep and random kills are below too
(marked slow).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import assert_same_output, drive_crashkit, run_args, run_cli, start_cli
from tests.s3server import s3_server
from tests.s3view import materialize

pytest.importorskip("s3fs")
pytest.importorskip("moto")


@pytest.fixture(scope="module")
def bucket():
    import fsspec

    with s3_server():
        name = f"amtprep-{uuid.uuid4().hex[:8]}"
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
        yield f"s3://{name}"
        fsspec.filesystem("s3").clear_instance_cache()


@pytest.fixture(scope="module")
def job(tmp_path_factory, bucket):
    """A 20-record corpus with one missing MIDI file, locally and in the bucket, and the
    output of a local run of it (the reference)."""
    import fsspec

    from amtprep.sample import generate

    root = tmp_path_factory.mktemp("s3job")
    corpus = generate(root / "corpus", n=20, seed=5)
    (corpus.parent / "midi" / "0004.mid").unlink()  # a failure row, on both sides
    fs = fsspec.filesystem("s3")
    fs.put(str(corpus.parent) + "/", f"{bucket[5:]}/corpus/", recursive=True)
    return {"corpus": corpus, "url": f"{bucket}/corpus/{corpus.name}", "root": root}


def _s3_run(job, model, url: str, work_dir: Path, *extra: str, **kw):
    args = run_args(job["corpus"], Path("-"), model, *extra)
    args[args.index("--input_file") + 1] = job["url"]
    args[args.index("--output_dir") + 1] = url
    return run_cli(*args, "--work_dir", str(work_dir), **kw)


@pytest.fixture(scope="module")
def local_ref(job, tiny_bert):
    out = job["root"] / "local"
    r = run_cli(*run_args(job["corpus"], out, tiny_bert))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_whole_job_in_a_bucket_equals_a_local_run(job, tiny_bert, bucket, local_ref, tmp_path):
    import fsspec
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    url = f"{bucket}/whole"
    r = _s3_run(job, tiny_bert, url, tmp_path / "wd")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"done: 19 rows in {url}/releases/final-" in r.stderr
    view = materialize(url, tmp_path / "view")
    assert_same_output(local_ref, view, failure_columns_ignored=("error",))
    fails = pq.read_table(view / "failures.parquet").to_pylist()
    assert [f["error_type"] for f in fails] == ["missing_file"]
    assert fails[0]["error"] == f"no such object: {bucket}/corpus/midi/0004.mid"
    # the MIDI files were read from the bucket, under the paths the input names
    final = pq.read_table(view / "final" / "data-00000-of-00001.parquet", columns=["midi_path"])
    assert final.column("midi_path").to_pylist()[0].startswith("midi/")
    # loadable where it lies: the pointer names the data folder, pyarrow/polars read it there
    fs = fsspec.filesystem("s3")
    pointer = json.loads(fs.cat_file(f"{url[5:]}/releases/final.json"))
    files = fs.glob(f"{pointer['data'][5:]}/data-*.parquet")
    table = ds.dataset(files, filesystem=fs, format="parquet").to_table()
    assert table.num_rows == 19
    r = run_cli("--show_progress", "--output_dir", url)
    assert r.stderr.count("completed:      20 (100.0%)  [complete]") == 2, r.stderr
    assert f"final dataset:  {pointer['data']}" in r.stderr
    # a re-run does nothing and keeps the release
    r = _s3_run(job, tiny_bert, url, tmp_path / "wd")
    assert r.returncode == 0 and "up to date" in r.stderr
    assert (
        json.loads(fs.cat_file(f"{url[5:]}/releases/final.json"))["release"] == pointer["release"]
    )


def test_killed_run_resumes_on_a_fresh_working_copy(job, tiny_bert, bucket, local_ref, tmp_path):
    """SIGKILL right after a text commit entry landed, then resume on another 'machine': the
    bucket alone carries the state (shards are downloaded, the log rebuilt from entries)."""
    url = f"{bucket}/fresh"
    r = _s3_run(
        job, tiny_bert, url, tmp_path / "wd1", env={"AMTPREP_CRASH_AT": "text.remote.entry:2"}
    )
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    r = _s3_run(job, tiny_bert, url, tmp_path / "wd2", "--mode", "continue")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from the commit log" in r.stderr
    assert_same_output(
        local_ref, materialize(url, tmp_path / "view"), failure_columns_ignored=("error",)
    )


def test_uncommitted_local_work_is_dropped_and_redone(job, tiny_bert, bucket, local_ref, tmp_path):
    """A shard written locally whose upload never happened is not committed: the resume
    removes it and redoes its batch, once."""
    url = f"{bucket}/local-only"
    wd = tmp_path / "wd"
    r = _s3_run(job, tiny_bert, url, wd, env={"AMTPREP_CRASH_AT": "midi.shard.renamed:2"})
    assert r.returncode == -signal.SIGKILL
    assert len(list((wd / "midi").glob("part-*.parquet"))) == 2  # the second only locally
    r = _s3_run(job, tiny_bert, url, wd, "--mode", "continue")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "removed 1 local shard(s) the bucket never received" in r.stderr
    assert_same_output(
        local_ref, materialize(url, tmp_path / "view"), failure_columns_ignored=("error",)
    )


def test_second_run_on_the_same_bucket_is_refused_by_the_lease(job, tiny_bert, bucket, tmp_path):
    url = f"{bucket}/busy"
    args = run_args(job["corpus"], Path("-"), tiny_bert)
    args[args.index("--input_file") + 1] = job["url"]
    args[args.index("--output_dir") + 1] = url
    first = start_cli(
        [*args, "--work_dir", str(tmp_path / "wd1")], delay=0.5, stderr=subprocess.DEVNULL
    )
    try:
        import fsspec

        fs = fsspec.filesystem("s3")
        deadline = time.time() + 60
        while not fs.exists(f"{url[5:]}/midi/_log") and time.time() < deadline:
            time.sleep(0.2)
            fs.invalidate_cache()
        r = run_cli(*args, "--work_dir", str(tmp_path / "wd2"))
        assert r.returncode != 0
        assert "in use by another amtprep run" in r.stderr
        assert f"PID {first.pid} on host" in r.stderr
        # progress as the bucket holds it, from anywhere, with the lease holder named
        r = run_cli("--show_progress", "--output_dir", url)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"amtprep status of {url}" in r.stderr
        assert f"running: PID {first.pid}" in r.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)


def test_a_stale_lease_is_taken_over(job, tiny_bert, bucket, local_ref, tmp_path):
    """A lease from another host that expired (its holder vanished) does not block the run."""
    from amtprep.io.storage import open_storage

    url = f"{bucket}/stale"
    stale = {
        "id": "x", "pid": 1, "host": "gone-host", "started": "2026-01-01T00:00:00+0000",
        "command": "amtprep ...", "generation": 1, "released": False, "expires": time.time() - 5,
    }  # fmt: skip
    open_storage(url).write_new("_lease/000000000001.json", json.dumps(stale).encode())
    r = _s3_run(job, tiny_bert, url, tmp_path / "wd")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "took over an expired lease" in r.stderr and "gone-host" in r.stderr
    assert_same_output(
        local_ref, materialize(url, tmp_path / "view"), failure_columns_ignored=("error",)
    )


# -- crash sweep and random kills on S3 (slow) -------------------------------------------------


@pytest.fixture(scope="module")
def crash_corpus(tmp_path_factory):
    from amtprep.sample import generate

    return generate(tmp_path_factory.mktemp("s3crash"), n=16, seed=3)


def _params(corpus: Path, model: Path, work: Path, bucket: str, **kw) -> dict:
    s3 = f"{bucket}/{work.name}"
    return {
        "corpus": str(corpus),
        "model": str(model),
        "work": str(work),
        "batch_size": 4,
        "s3": s3,
        **kw,
    }


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_kill_at_every_step_of_an_s3_run(crash_corpus, tiny_bert, bucket, tmp_path):
    report = drive_crashkit(
        "s3_sweep", _params(crash_corpus, tiny_bert, tmp_path, bucket, batches=2)
    )
    # every remote write of the first 2 commits of each stage, the local steps around them,
    # and every step of the publish, local and remote
    remote = {"midi.remote.shard", "midi.remote.entry", "text.remote.shard", "text.remote.entry"}
    publish = {"final.remote.uploaded", "final.remote.switched", "final.switched"}
    assert remote | publish <= set(report["points"])
    assert report["crash_points"] >= 20
    assert report["fresh_work_dir_resumes"] > 0
    assert report["bad_exits"] == []
    assert report["invariant_failures"] == []
    assert report["invariant_checks"] >= 2 * report["crash_points"]
    assert report["mismatches"] == []


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_random_kills_of_s3_runs_then_continue(crash_corpus, tiny_bert, bucket, tmp_path):
    report = drive_crashkit(
        "s3_random_kills", _params(crash_corpus, tiny_bert, tmp_path, bucket, kills=10)
    )
    assert sum(report["kills"].values()) >= 10
    assert report["mismatch"] is None
