"""pass@k, maj@k and the per-level / per-source report of the eval stage."""

from __future__ import annotations

import itertools

import pytest

from stages.eval import accuracy_report, majority_correct, markdown_table, pass_at_k


@pytest.mark.parametrize("samples, correct, k", [(8, 0, 1), (8, 3, 1), (8, 3, 2), (8, 3, 4), (5, 5, 3), (16, 1, 8)])
def test_pass_at_k_equals_brute_force(samples, correct, k):
    outcomes = [1] * correct + [0] * (samples - correct)
    subsets = list(itertools.combinations(outcomes, k))
    assert pass_at_k(samples, correct, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_majority_vote_uses_the_largest_answer_class_first_seen_wins_ties():
    assert majority_correct([0, 1, 1, 2], [1.0, 0.0, 0.0, 0.0]) == 0.0
    assert majority_correct([0, 1, 0, 1], [1.0, 0.0, 1.0, 0.0]) == 1.0


def test_report_groups_by_level_and_source_and_skips_unscorable():
    items = [
        {"scores": [1.0, 0.0, 1.0, 1.0], "classes": [0, 1, 0, 0], "level": 1, "source": "a"},
        {"scores": [0.0, 0.0, 0.0, 1.0], "classes": [0, 0, 1, 2], "level": 2, "source": "b"},
        {"scores": [None, None, None, None], "classes": [0] * 4, "level": 2, "source": "b", "answer": "yes"},
    ]
    report = accuracy_report(items, ks=[1, 4, 8])
    assert report["unscorable"] == 1 and report["n"] == 3
    assert report["by_level"]["1"]["pass@1"] == 0.75 and report["by_level"]["1"]["maj@4"] == 1.0
    assert report["by_level"]["2"]["pass@4"] == 1.0 and report["by_level"]["2"]["maj@4"] == 0.0
    assert "pass@8" not in report["overall"]  # k above the number of samples is skipped
    assert report["accuracy"] == pytest.approx((0.75 + 0.25) / 2)
    assert set(report["by_source"]) == {"a", "b"}
    table = markdown_table("eval", report)
    assert "| level 1 | 1 |" in table and "| b | 1 |" in table and "1 item(s) skipped: gold answer not math (`yes`)" in table


def test_verifier_best_of_n_and_weighted_majority():
    items = [{"scores": [0.0, 0.0, 1.0, 0.0], "classes": [0, 0, 1, 2], "level": 1, "source": None,
              "verdicts": {"prm": [0.2, 0.1, 0.9, 0.3]}}]
    overall = accuracy_report(items, ks=[4])["overall"]
    assert overall["maj@4"] == 0.0  # "5" is the most frequent answer, and wrong
    assert overall["best_of_4/prm"] == 1.0  # the verifier rates the right sample highest
    assert overall["weighted_maj@4/prm"] == 1.0  # 0.9 for "6" beats 0.2 + 0.1 for "5"
