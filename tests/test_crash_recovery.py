"""Exactly-once under any crash: crash-point sweep, random kills, damaged state.

Each test drives ``tests/crashkit.py`` in a subprocess that forks amtprep runs and kills them;
the outputs after resuming must equal an uninterrupted run's (embeddings to 1e-5, everything
else exactly). The JSON reports are printed (``pytest -s``) for the figures in release notes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import drive_crashkit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    from amtprep.sample import generate

    return generate(tmp_path_factory.mktemp("crash_corpus"), n=16, seed=3)


_drive = drive_crashkit


def _params(corpus: Path, model: Path, work: Path, **kw) -> dict:
    return {"corpus": str(corpus), "model": str(model), "work": str(work), "batch_size": 4, **kw}


def _assert_clean(report: dict) -> None:
    assert report["bad_exits"] == []
    assert report["invariant_failures"] == []  # at the crash point, after a second crash, resumed
    assert report["invariant_checks"] >= 2 * report["crash_points"]
    assert report["mismatches"] == []  # rows, failures, counts and counters as uninterrupted


@pytest.mark.timeout(1200)
def test_kill_after_every_step_of_the_commit_protocol(small_corpus, tiny_bert, tmp_path):
    report = _drive("sweep", _params(small_corpus, tiny_bert, tmp_path, batches=2))
    # 16 records / batch 4 = 4 batches per stage; the first 2 of each, 8 or 9 points per commit
    # (shard: write, fsync, rename, dir fsync; log: write, fsync; checkpoint summary: write,
    # [backup,] rename), plus every step of the publish
    assert report["crash_points"] >= 2 * 2 * 8
    publish = {"final.written", "final.release_renamed", "final.switched", "final.linked"}
    assert publish <= set(report["points"])
    assert report["double_crashes"] > 0
    _assert_clean(report)


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("lane", ["interval", "partial", "retry"])
def test_kill_at_every_step_of_interval_partial_and_retry_runs(
    lane, small_corpus, tiny_bert, tmp_path
):
    """--checkpoint_interval 3 (counters must still be exactly-once), --save_partial (two
    publishes) and a --retry_failed re-publish over a finished job."""
    report = _drive("sweep", _params(small_corpus, tiny_bert, tmp_path, lane=lane))
    assert report["crash_points"] >= {"interval": 16, "partial": 8, "retry": 15}[lane]
    if lane == "partial":
        assert {"partial.switched", "final.switched"} <= set(report["points"])
    if lane == "retry":
        assert {"midi.log.fsynced", "final.switched"} <= set(report["points"])
    _assert_clean(report)


def test_random_sigkill_and_sigterm_then_continue(small_corpus, tiny_bert, tmp_path):
    report = _drive("random_kills", _params(small_corpus, tiny_bert, tmp_path, kills=20))
    assert sum(report["kills"].values()) >= 20
    assert report["kills"]["SIGTERM"] > 0 and report["kills"]["SIGKILL"] > 0
    assert report["graceful_sigterm_exits"] > 0  # SIGTERM mid-run exits 143 after a clean stop
    assert report["mismatches"] == []


def test_damaged_checkpoints_and_shards_recover_and_say_so(small_corpus, tiny_bert, tmp_path):
    report = _drive("corruption", _params(small_corpus, tiny_bert, tmp_path))
    assert report["cases"] == 13
    assert report["failures"] == []
