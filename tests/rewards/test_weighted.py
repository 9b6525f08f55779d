"""`rewards.weighted`: how the stages that sample outside a trainer score completions."""

from __future__ import annotations

import pytest

from rewards.weighted import weighted_scores


def test_score_is_the_weighted_sum_with_none_counting_zero():
    import datasets

    rows = datasets.Dataset.from_list([{"prompt": "p", "answer": "1"}])

    def correct(prompts, completions, answer, **kwargs):
        return [None if completion == "?" else float(completion == answer[0]) for completion in completions]

    def short(prompts, completions, completion_ids, **kwargs):
        return [1.0 if len(ids) < 2 else 0.0 for ids in completion_ids]

    totals, means = weighted_scores([("correct", 2.0, correct), ("short", 0.5, short)], rows, ["1", "22", "?"], [[1], [2, 2], [3]], n=3)
    assert totals == [2.5, 0.0, 0.5]
    assert means == {"rewards/correct/mean": 0.5, "rewards/short/mean": pytest.approx(2 / 3)}
