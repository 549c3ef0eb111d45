"""Batch planning: the work left is the idx no committed shard covers."""

from __future__ import annotations

from amtprep.records import Record
from amtprep.runner import plan_batches


def _recs(n: int) -> list[Record]:
    return [Record(i, str(i), f"{i}.mid", f"/x/{i}.mid", "c") for i in range(n)]


def _ranges(batches):
    return [(b[0].idx, b[-1].idx) for b in batches]


def test_fresh_run_cuts_batches_of_the_current_size():
    assert _ranges(plan_batches(_recs(10), [], 4)) == [(0, 3), (4, 7), (8, 9)]


def test_resume_skips_covered_ranges_and_never_crosses_them():
    covered = [(0, 3), (6, 7)]
    assert _ranges(plan_batches(_recs(12), covered, 4)) == [(4, 5), (8, 11)]


def test_changed_batch_size_fills_gaps_exactly():
    covered = [(0, 63), (128, 191)]
    got = _ranges(plan_batches(_recs(200), covered, 50))
    assert got == [(64, 113), (114, 127), (192, 199)]
    done = {i for a, b in covered for i in range(a, b + 1)} | {
        i for a, b in got for i in range(a, b + 1)
    }
    assert done == set(range(200))
