import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewards import build
from rewards.math_accuracy import MathAccuracy


@pytest.fixture(scope="module")
def pooled_accuracy() -> Iterator[MathAccuracy]:
    """Every batch goes to the worker pool, started once for this module."""
    reward = MathAccuracy(parallel_threshold=0)
    yield reward
    reward.close()


def real_golds(shared_data: Path) -> list[str]:
    """GSM8K test golds (after '####', thousands separators removed) and MATH-500 `answer`s."""
    with open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8") as gsm8k:
        golds = [json.loads(line)["answer"].split("####")[-1].strip().replace(",", "") for line in gsm8k]
    with open(shared_data / "math500" / "test.jsonl", encoding="utf-8") as math500:
        golds += [json.loads(line)["answer"] for line in math500]
    return golds


def as_model_answer(gold: str) -> str:
    return f"Adding it all up step by step, so the answer is \\boxed{{{gold}}}."


def test_real_golds_verify_against_themselves_and_not_against_others(
    shared_data: Path, pooled_accuracy: MathAccuracy, capsys: pytest.CaptureFixture
) -> None:
    golds = real_golds(shared_data)
    assert len(golds) == 1319 + 500

    scores = pooled_accuracy(["?"] * len(golds), [as_model_answer(gold) for gold in golds], answer=golds)
    unparseable = [gold for gold, score in zip(golds, scores) if score is None]
    wrong = [gold for gold, score in zip(golds, scores) if score == 0.0]
    with capsys.disabled():
        print(f"\nmath_accuracy could not parse {len(unparseable)} of {len(golds)} gold answers: {unparseable[:10]}")
    assert wrong == []
    assert len(unparseable) < 0.01 * len(golds)

    shuffled = random.Random(0).sample(golds, len(golds))
    shuffled_scores = pooled_accuracy(["?"] * len(golds), [as_model_answer(other) for other in shuffled], answer=golds)
    correct_share = sum(score == 1.0 for score in shuffled_scores) / len(golds)
    assert correct_share < 0.05


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("First try \\boxed{1}.\n\nNo wait: the answer is \\boxed{72}.", "72", 1.0),  # the last box wins
        (r"The answer is \boxed{\frac{1}{2}}", "0.5", 1.0),
        (r"so it is \boxed{\frac43}", r"\frac{4}{3}", 1.0),  # shorthand LaTeX, which TRL's config rejects
        ("The answer is 72.", "72", 1.0),  # an "answer" anchor without a box
        ("I computed 72 along the way but never concluded.", "72", 0.0),  # no anchor, no box: no answer
        (r"\boxed{73}", "72", 0.0),
        (r"\boxed{72}", "", None),  # no gold: not applicable, never 1.0
        (r"\boxed{72}", None, None),
    ],
)
def test_scores_inline_in_the_main_thread(completion: str, gold: str | None, expected: float | None) -> None:
    assert MathAccuracy()(["?"], [completion], answer=[gold]) == [expected]


def test_reads_the_last_assistant_message_of_a_conversation() -> None:
    conversation = [
        {"role": "assistant", "content": r"Let me use the calculator: \boxed{1}"},
        {"role": "tool", "content": "72"},
        {"role": "assistant", "content": r"So the answer is \boxed{72}."},
    ]
    assert MathAccuracy()(["?"], [conversation], answer=["72"]) == [1.0]


def test_skipping_completions_without_anchors_changes_no_score(shared_data: Path) -> None:
    """`may_hold_an_answer` skips math-verify for text with neither \\boxed nor "answer"; it must only
    ever skip what math-verify would find nothing in (real worked solutions with their boxes removed)."""
    from math_verify import parse

    from rewards.math_scoring import ANSWER_EXTRACTION, may_hold_an_answer

    with open(shared_data / "math500" / "test.jsonl", encoding="utf-8") as math500:
        solutions = [json.loads(line)["solution"].replace("\\boxed", "") for line in math500]
    skipped = [text for text in solutions if not may_hold_an_answer(text)]
    assert len(skipped) > 400
    assert all(parse(text, extraction_config=ANSWER_EXTRACTION, extraction_mode="first_match") == [] for text in skipped)


def test_parses_each_distinct_gold_once() -> None:
    from rewards import math_scoring

    math_scoring.parse_gold.cache_clear()
    group = [as_model_answer(str(candidate)) for candidate in range(8)]
    MathAccuracy()(["?"] * 8, group, answer=["5"] * 8)
    assert math_scoring.parse_gold.cache_info().misses == 1


def test_scores_from_a_non_main_thread_with_a_working_timeout() -> None:
    """Without a timeout, comparing 9^(9^(9^9)) with 3 would not finish; TRL's accuracy_reward switches
    timeouts off in threads. Here the thread's batch goes to worker processes, whose signal timeouts work."""
    reward = MathAccuracy(timeout_seconds=1)
    outcome: dict[str, object] = {}

    def score_in_thread() -> None:
        started = time.monotonic()
        outcome["scores"] = reward(["?", "?"], [r"\boxed{9^{9^{9^{9}}}}", r"\boxed{3}"], answer=["3", "3"])
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=score_in_thread)
    thread.start()
    thread.join(timeout=60)
    reward.close()
    assert not thread.is_alive(), "scoring hung in a non-main thread"
    assert outcome["scores"] == [0.0, 1.0]
    assert outcome["seconds"] < 30


def test_is_a_factory_with_checked_options() -> None:
    reward = build("math_accuracy", {"timeout_seconds": 2, "workers": 1, "parallel_threshold": 8})
    assert reward.__name__ == "math_accuracy"
    assert reward(["?"], [r"\boxed{2}"], answer=["2"]) == [1.0]
    with pytest.raises(ValueError, match="whole number"):
        MathAccuracy(timeout_seconds=2.5)
