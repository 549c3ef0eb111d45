"""One writer, refusal on changed input/settings, --retry_failed, disk trouble, Ctrl+C with workers."""

from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from amtprep.cli import main
from tests.helpers import (
    assert_same_output,
    read_final,
    run_args,
    run_cli,
    start_cli,
    wait_for,
)


@pytest.mark.slow
def test_second_run_on_a_busy_output_dir_is_refused(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    first = start_cli(run_args(corpus, out, tiny_bert), delay=0.3)
    try:
        wait_for(out / "midi", "part-*.parquet")
        second = run_cli(*run_args(corpus, out, tiny_bert))
        assert second.returncode == 3
        assert f"PID {first.pid}" in second.stderr and "host" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


def test_changed_input_or_settings_refuse_to_resume(corpus, tmp_path, tiny_bert):
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert, "--stages", "midi,text")) == 0
    with corpus.open("a") as fh:
        fh.write(json.dumps({"location": "midi/0000.mid", "caption": "one more row"}) + "\n")
    proc = run_cli(*run_args(corpus, out, tiny_bert))
    assert proc.returncode != 0
    assert "input file content" in proc.stderr and "--force_restart" in proc.stderr
    lines = corpus.read_text().splitlines()[:-1]
    corpus.write_text("\n".join(lines) + "\n")  # restored: the same content resumes fine
    proc = run_cli(*run_args(corpus, out, tiny_bert, "--pooling", "cls"))
    assert proc.returncode != 0 and "pooling" in proc.stderr
    # batch size and workers may change between runs
    assert main(run_args(corpus, out, tiny_bert, "--batch_size", "5", "--workers", "2")) == 0
    assert main(run_args(corpus, out, tiny_bert, "--pooling", "cls", "--force_restart")) == 0


def test_retry_failed_reruns_only_failures_and_replaces_their_rows(corpus, tmp_path, tiny_bert):
    midi = corpus.parent / "midi"
    moved = midi / "0003.mid.away"
    (midi / "0003.mid").rename(moved)
    out = tmp_path / "out"
    assert main(run_args(corpus, out, tiny_bert)) == 0
    final, failures = read_final(out)
    assert failures.column("idx").to_pylist() == [3] and final.num_rows == 29
    assert failures.column("attempts").to_pylist() == [1]

    moved.rename(midi / "0003.mid")
    assert main(run_args(corpus, out, tiny_bert)) == 0  # without --retry_failed: not retried
    assert read_final(out)[1].num_rows == 1

    assert main(run_args(corpus, out, tiny_bert, "--retry_failed")) == 0
    final, failures = read_final(out)
    assert failures.num_rows == 0 and final.num_rows == 30 and 3 in final.column("idx").to_pylist()
    ck = json.loads((out / "midi_checkpoint.json").read_text())
    assert ck["failed"] == 0 and ck["counters"]["retried"] == 1
    live = {}
    for line in (out / "midi" / "_commits.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["kind"] == "shard":
            live[e["shard"]["first_idx"]] = e["shard"]
    assert [live[k]["generation"] for k in sorted(live)] == [1, 0, 0, 0]
    assert sorted(p.name for p in (out / "midi").glob("part-*")) == sorted(
        s["name"] for s in live.values()
    )


def test_disk_full_stops_with_one_line_and_continue_recovers(corpus, tmp_path, tiny_bert):
    ref = tmp_path / "ref"
    assert main(run_args(corpus, ref, tiny_bert)) == 0
    out = tmp_path / "out"
    proc = run_cli(
        *run_args(corpus, out, tiny_bert), env={"AMTPREP_FAIL_AT": "text.shard.written:2:ENOSPC"}
    )
    assert proc.returncode != 0
    err = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "disk is full" in err[0] and "--mode continue" in err[0]
    assert "Traceback" not in proc.stderr
    ck = json.loads((out / "text_checkpoint.json").read_text())
    assert ck["last_processed_idx"] == 7  # the last committed checkpoint stays usable
    assert not list((out / "text").glob(".*.tmp"))
    assert main(run_args(corpus, out, tiny_bert, "--mode", "continue")) == 0
    assert_same_output(ref, out)


@pytest.mark.slow
def test_ctrl_c_with_two_workers_stops_cleanly_and_leaves_no_orphans(corpus, tmp_path, tiny_bert):
    ref = tmp_path / "ref"
    assert main(run_args(corpus, ref, tiny_bert)) == 0
    out = tmp_path / "out"
    proc = start_cli(run_args(corpus, out, tiny_bert, "--workers", "2"), delay=0.3)
    wait_for(out / "midi", "part-*.parquet")
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2  # the MIDI workers are up
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "--mode continue" in stderr
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert main(run_args(corpus, out, tiny_bert, "--mode", "continue")) == 0
    assert_same_output(ref, out)
