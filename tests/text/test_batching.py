"""Batch planning: every caption once, within the size and token limits, longest first."""

from __future__ import annotations

import numpy as np
import pytest

from amtprep.text.batching import pad_batch, plan_batches

LENGTHS = [5, 40, 12, 12, 3, 64, 7, 33, 20, 9]


@pytest.mark.parametrize("batch_size", [1, 3, 4, 32])
@pytest.mark.parametrize("max_tokens", [None, 1, 64, 100])
def test_plan_batches_covers_each_position_once_within_limits(batch_size, max_tokens):
    batches = plan_batches(LENGTHS, batch_size, max_tokens)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(LENGTHS)))
    for members in batches:
        assert 1 <= len(members) <= batch_size
        padded = len(members) * max(LENGTHS[i] for i in members)
        if max_tokens is not None and len(members) > 1:
            assert padded <= max_tokens


def test_plan_batches_sorts_longest_first():
    batches = plan_batches(LENGTHS, 4)
    ordered = [LENGTHS[i] for i in np.concatenate(batches)]
    assert ordered == sorted(LENGTHS, reverse=True)
    # Sorting keeps the padding small: the batches pad to 64, 12 and 5 tokens.
    assert [max(LENGTHS[i] for i in b) for b in batches] == [64, 12, 5]


def test_plan_batches_rejects_empty_batches():
    with pytest.raises(ValueError):
        plan_batches(LENGTHS, 0)


def test_pad_batch_pads_right_to_longest():
    ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ids.dtype == np.int64 and mask.dtype == np.int64
