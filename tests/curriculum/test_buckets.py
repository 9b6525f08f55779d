"""Quantile buckets of a numeric difficulty column with many ties (a pass rate: mostly 0s and 1s)."""

from __future__ import annotations

import numpy as np

from stages.curriculum.strategies import Buckets


def test_tied_values_share_a_bucket_and_no_bucket_is_empty_or_swallows_the_tail():
    pass_rate = [0.0] * 60 + [1.0] * 35 + np.linspace(0.1, 0.9, 25).tolist()
    buckets = Buckets.from_column(pass_rate, "pass_rate", 4, len(pass_rate))
    assert (buckets.sizes > 0).all()  # so min_share's "k buckets" are buckets with prompts in them
    assert buckets.names == ["pass_rate=0", "pass_rate=0.1..0.9", "pass_rate=1"]  # the 1s are not merged with 0.1..0.9
    assert buckets.sizes.tolist() == [60, 25, 35]
    for value in (0.0, 1.0):
        assert len(set(buckets.of_prompt[np.array(pass_rate) == value])) == 1


def test_distinct_values_still_cut_into_equal_quantiles():
    buckets = Buckets.from_column(list(range(100)), "step", 4, 100)
    assert buckets.sizes.tolist() == [25, 25, 25, 25] and buckets.names[0] == "step=0..24"
