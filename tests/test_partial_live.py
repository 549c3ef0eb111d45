"""Early analysis while a job runs: --save_partial_every refreshes partial/ between batches, and
`amtprep partial` builds the view elsewhere from a consistent snapshot, the job untouched."""

from __future__ import annotations

import json
import time

from amtprep.cli import main
from tests.crashkit import invariant
from tests.helpers import assert_same_output, run_args, start_cli


def _wait(proc, condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.05)


def test_save_partial_every_refreshes_a_consistent_partial_while_running(
    corpus, tiny_bert, tmp_path
):
    ref = tmp_path / "ref"
    assert main(run_args(corpus, ref, tiny_bert)) == 0
    out = tmp_path / "out"
    proc = start_cli([*run_args(corpus, out, tiny_bert), "--save_partial_every", "2"], delay=0.3)
    stats = out / "partial" / "statistics.json"
    seen: set[int] = set()
    deadline = time.time() + 180
    while proc.poll() is None and time.time() < deadline:
        if stats.exists():
            problem = invariant(out, "partial")  # at any instant: one whole release
            assert problem is None, problem
            try:
                seen.add(json.loads(stats.read_text())["final_rows"])
            except (OSError, ValueError):
                pass  # the link moved between exists() and read: look again
        time.sleep(0.05)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert len(seen) >= 2, seen  # refreshed while running, not only at the end
    assert_same_output(ref, out)


def test_amtprep_partial_reads_a_live_run_without_touching_it(corpus, tiny_bert, tmp_path):
    ref = tmp_path / "ref"
    assert main(run_args(corpus, ref, tiny_bert)) == 0
    out, view = tmp_path / "out", tmp_path / "view"
    proc = start_cli(run_args(corpus, out, tiny_bert), delay=0.4)
    _wait(proc, lambda: len(list((out / "text").glob("part-*.parquet"))) >= 1)
    assert proc.poll() is None, "the run ended before the snapshot: the test would prove nothing"
    assert main(["partial", str(out), "--to", str(view)]) == 0
    assert invariant(view, "partial") is None  # every snapshot record in exactly one place
    stats = json.loads((view / "partial" / "statistics.json").read_text())
    assert stats["partial"] and 0 < stats["records_in_both_stages"] < 30
    assert not (out / "partial").exists()  # nothing written into the job's folder
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert_same_output(ref, out)  # the job finished unchanged


def test_amtprep_partial_on_an_empty_folder_says_so(tmp_path, capsys):
    (tmp_path / "job").mkdir()
    assert main(["partial", str(tmp_path / "job")]) != 0
    assert "nothing is committed" in capsys.readouterr().err
    assert not (tmp_path / "job-partial" / "partial").exists()
