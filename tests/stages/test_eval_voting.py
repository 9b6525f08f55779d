"""maj@k and verifier votes of the eval stage: by math-verify equivalence of the final answers, with math_accuracy.

Each test scores real completions as the eval stage does (`score_items`: math_accuracy for the scores,
math-verify for which answers are the same) and reports them with `accuracy_report`.
"""

from __future__ import annotations

import pytest

from stages.arguments import RewardBlock
from stages.eval import accuracy_report, score_items, verifier_ratings

HALF = [r"So it is \boxed{\frac{1}{2}}.", r"\boxed{0.5}", r"That gives \boxed{1/2}"]


def overall(completions: list[str], gold: str, ratings: dict[str, list[float | None]] | None = None) -> dict[str, float]:
    rows = [{"prompt": "Q", "answer": gold, "level": 1}]
    items = score_items(rows, completions, len(completions), ratings or {}, "level")
    return accuracy_report(items, ks=[len(completions)])["overall"]


def test_equivalent_answers_vote_as_one_class():
    """Three correct samples written three ways outvote two identical wrong ones."""
    completions = [*HALF, r"\boxed{3}", r"\boxed{3}"]
    items = score_items([{"prompt": "Q", "answer": "1/2"}], completions, 5, {}, "level")
    assert items[0]["classes"] == [0, 0, 0, 1, 1]
    assert accuracy_report(items, ks=[5])["overall"]["maj@5"] == 1.0


def test_completions_without_an_answer_do_not_vote():
    assert overall(["", "", "I am not sure.", r"\boxed{2}", r"\boxed{2}"], "2")["maj@5"] == 1.0
    nothing = score_items([{"prompt": "Q", "answer": "2"}], ["", "no idea"], 2, {}, "level")[0]
    assert nothing["classes"] == [None, None] and accuracy_report([nothing], ks=[2])["overall"]["maj@2"] == 0.0


@pytest.mark.parametrize("completions, expected", [
    ([r"\boxed{4}", r"\boxed{0.5}", r"\boxed{4.0}", r"\boxed{\frac{1}{2}}"], 0.0),
    ([r"\boxed{0.5}", r"\boxed{4}", r"\boxed{4}", r"\boxed{\frac{1}{2}}"], 1.0),  # as raw text, "4" had the most votes
])
def test_a_tie_goes_to_the_class_whose_first_member_came_first(completions, expected):
    assert overall(completions, "1/2")["maj@4"] == expected


def test_verifier_weighted_majority_sums_ratings_over_equivalent_answers():
    completions = [HALF[0], HALF[1], r"\boxed{3}"]
    assert overall(completions, "1/2", {"prm": [0.4, 0.4, 0.7]})["weighted_maj@3/prm"] == 1.0  # 0.8 for 1/2 beats 0.7 for 3


def unsure_is_unrated(prompts: list, completions: list, **columns: object) -> list[float | None]:
    """A verifier plugin that rates a completion it cannot judge None, and every other one low."""
    return [None if "unsure" in completion else -0.5 for completion in completions]


def test_an_unrated_sample_never_outranks_a_rated_one_in_best_of_n():
    completions = ["unsure: \\boxed{7}", r"\boxed{2}"]
    rows = [{"prompt": "Q", "answer": "2"}] * 2
    ratings = verifier_ratings([RewardBlock(name=f"{__name__}:unsure_is_unrated")], rows, completions)
    assert ratings == {f"{__name__}:unsure_is_unrated": [None, -0.5]}
    metrics = overall(completions, "2", ratings)
    assert metrics["best_of_2/" + next(iter(ratings))] == 1.0
    assert metrics["weighted_maj@2/" + next(iter(ratings))] == 1.0  # the unrated answer gets no weight
