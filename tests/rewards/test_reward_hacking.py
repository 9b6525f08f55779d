"""No reward hacking: every adversarial completion (tests/rewards/adversarial_completions.py) scores 0.0,
with either extraction (the lenient one is for evaluation, where a hedge must not count either)."""

import pytest

from rewards.math_accuracy import MathAccuracy
from tests.rewards.adversarial_completions import ADVERSARIAL


def test_the_set_is_large_and_varied() -> None:
    assert len(ADVERSARIAL) >= 30
    assert len({(completion, gold) for _, completion, gold, _ in ADVERSARIAL}) == len(ADVERSARIAL)


@pytest.mark.parametrize("extraction", ["boxed", "lenient"])
@pytest.mark.parametrize(("attempt", "completion", "gold", "options"), ADVERSARIAL, ids=[case[0] for case in ADVERSARIAL])
def test_adversarial_completion_scores_zero(attempt: str, completion: str, gold: str, options: dict, extraction: str, hang_guard: None) -> None:
    reward = MathAccuracy(timeout_seconds=1, extraction=extraction, **options)
    assert reward(["?"], [completion], answer=[gold]) == [0.0]
    assert reward.unusable_golds == 0  # every gold here is math: a 0.0 is a verdict, not a skipped row


def test_the_same_golds_credit_the_honest_answer() -> None:
    """Each gold of the set is scorable: an honest completion (the gold itself, boxed, after a closed
    reasoning block where tags are on) scores 1.0, so each 0.0 above is about the completion."""
    for _, _, gold, options in ADVERSARIAL:
        honest = f"<think>work</think> \\boxed{{{gold}}}" if options.get("reasoning_tags") else f"\\boxed{{{gold}}}"
        assert MathAccuracy(timeout_seconds=1, **options)(["?"], [honest], answer=[gold]) == [1.0], gold
