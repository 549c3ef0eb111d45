"""TextStage.prefetch: the next batch encoded while the current one commits, same tables and
counts as without it, nothing counted for work that is dropped."""

from __future__ import annotations

from amtprep.config import TextConfig
from amtprep.text import TextStage

from .conftest import CAPTIONS, make_records


def _batches():
    records = make_records([*CAPTIONS, "", *CAPTIONS[:4]])  # an empty caption fails its row
    return [records[i : i + 5] for i in range(0, len(records), 5)]


def test_prefetched_batches_equal_the_plain_run(tiny_bert):
    batches = _batches()
    plain = TextStage(TextConfig(model=str(tiny_bert), dtype="fp32", prefetch=False))
    expected = [plain.process(b) for b in batches]
    ahead = TextStage(TextConfig(model=str(tiny_bert), dtype="fp32", prefetch=True))
    got = []
    for i, batch in enumerate(batches):
        got.append(ahead.process(batch))
        if i + 1 < len(batches):
            ahead.prefetch(batches[i + 1])  # what the runner does after each batch
    assert all(a.equals(b) for a, b in zip(got, expected, strict=True))
    assert ahead.counters() == plain.counters()
    ahead.close()
    plain.close()


def test_work_that_is_not_taken_is_not_counted(tiny_bert):
    batches = _batches()
    stage = TextStage(TextConfig(model=str(tiny_bert), dtype="fp32", prefetch=True))
    stage.process(batches[0])
    after_one = stage.counters()
    stage.prefetch(batches[1])
    table = stage.process(batches[2])  # not the batch prefetched (a stop, a retry): recomputed
    assert table.column("idx").to_pylist() == [r.idx for r in batches[2]]
    counted = {k: stage.counters()[k] - after_one[k] for k in after_one}
    assert counted["records"] == len(batches[2])  # batch 1's work was dropped, not counted
    stage.prefetch(batches[1])
    stage.close()  # a pending batch at close is finished and dropped
    assert stage.counters()["records"] == after_one["records"] + len(batches[2])


def test_prefetch_is_on_for_gpus_only_by_default(tiny_bert):
    stage = TextStage(TextConfig(model=str(tiny_bert)))
    assert stage._prefetch_on is False  # a CPU run: the next batch would fight for the cores
    stage.prefetch(_batches()[0])
    assert stage._pending is None


def test_a_whole_run_with_prefetch_matches_one_without(corpus, tiny_bert, tmp_path):
    from dataclasses import replace

    from amtprep.cli import build_parser, config_from_args
    from amtprep.pipeline import run
    from tests.helpers import assert_same_output, run_args

    outs = {}
    for prefetch in (False, True):
        out = tmp_path / f"out-{prefetch}"
        args = build_parser("amtprep").parse_args(run_args(corpus, out, tiny_bert))
        cfg = config_from_args(args)
        run(replace(cfg, text=replace(cfg.text, prefetch=prefetch)))
        outs[prefetch] = out
    assert_same_output(outs[False], outs[True], atol=0.0)
