"""On-policy DPO's pair construction (`pairs_per_prompt`) on planted scores, and the per-round log
built from a round's sampling and TRL's logged curves. The end-to-end check that the log matches the
saved pairs rides on test_dpo.py's on-policy run, which already trains the rounds."""

from __future__ import annotations

import pytest

from stages.dpo import preference_pairs, round_log


def chosen_rejected(pairs: list[dict]) -> list[tuple[str, str]]:
    return [(pair["chosen"], pair["rejected"]) for pair in pairs]


def test_a_larger_cap_adds_correct_x_incorrect_pairs_nearest_best_vs_worst_first():
    completions = ["r0", "w1", "r2", "w3"]  # right, wrong, right, wrong
    scores = [1.0, 0.0, 1.0, 0.0]
    expected = [("r0", "w1"), ("r0", "w3"), ("r2", "w1"), ("r2", "w3")]
    for cap in (1, 2, 3, 4):
        assert chosen_rejected(preference_pairs(["p"], completions, scores, n=4, margin=0.5, per_prompt=cap)) == expected[:cap]
    assert chosen_rejected(preference_pairs(["p"], completions, scores, n=4, margin=0.5, per_prompt=16)) == expected  # every pair, once


def test_graded_scores_pair_only_across_the_margin_and_never_ties():
    completions = ["a", "b", "c", "d"]
    scores = [0.0, 0.5, 1.0, 0.5]
    pairs = preference_pairs(["p", ], completions, scores, n=4, margin=0.4, per_prompt=10)
    assert chosen_rejected(pairs) == [("c", "a"), ("c", "b"), ("b", "a"), ("c", "d"), ("d", "a")]
    assert all(pair["chosen_score"] - pair["rejected_score"] >= 0.4 for pair in pairs)
    assert chosen_rejected(preference_pairs(["p"], completions, scores, n=4, margin=0.6, per_prompt=10)) == [("c", "a")]
    assert preference_pairs(["p"], ["x", "y"], [1.0, 1.0], n=2, margin=0.0, per_prompt=4) == []


def test_the_round_log_holds_pairs_score_gap_and_first_and_last_of_each_curve():
    sampling = {"pairs_kept": 7, "mean_score_gap": 0.75}
    training = {"global_step": 6, "curves": {
        "loss": [[2, 0.69], [4, 0.6], [6, 0.5]], "rewards/margins": [[2, 0.01], [6, 0.4]], "rewards/accuracies": [],
    }}
    assert round_log(sampling, training) == {
        "pairs": 7, "mean_score_gap": 0.75, "steps": 6, "loss": [0.69, 0.5], "rewards/margins": [0.01, 0.4], "rewards/accuracies": None,
    }
    assert round_log(sampling, training)["loss"][0] == pytest.approx(0.69)
