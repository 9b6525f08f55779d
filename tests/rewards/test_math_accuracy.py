import json
import pickle
import random
import threading
import time
from pathlib import Path

import pytest

from data_recipes.math_sets import last_boxed
from rewards import RewardSpecError, build
from rewards.math_accuracy import MathAccuracy


def real_golds(shared_data: Path) -> list[str]:
    """Every gold of GSM8K test (after '####', thousands separators kept as the file writes them),
    MATH-500 (`answer`) and MATH test (the last box of each solution), distinct, in file order."""
    with open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8") as gsm8k:
        golds = [json.loads(line)["answer"].split("####")[-1].strip() for line in gsm8k]
    with open(shared_data / "math500" / "test.jsonl", encoding="utf-8") as math500:
        golds += [json.loads(line)["answer"] for line in math500]
    with open(shared_data / "math" / "test.jsonl", encoding="utf-8") as math:
        golds += [last_boxed(json.loads(line)["solution"]) for line in math]
    return list(dict.fromkeys(golds))


def as_model_answer(gold: str) -> str:
    return f"Adding it all up step by step, so the answer is \\boxed{{{gold}}}."


def test_every_real_gold_is_math_scores_against_itself_and_not_against_others(shared_data: Path) -> None:
    """All inline, in this process: each gold is parsed once, and the checks share the parses."""
    from math_verify import verify

    from rewards.math_scoring import parse_gold

    golds = real_golds(shared_data)
    assert len(golds) > 2000 and any("," in gold for gold in golds)  # "1,080": GSM8K's separators are in
    reward = MathAccuracy(parallel_threshold=len(golds) + 1)
    assert reward(["?"] * len(golds), [as_model_answer(gold) for gold in golds], answer=golds) == [1.0] * len(golds)
    assert reward.unusable_golds == 0
    # The reward credits an answer written exactly as the gold without math-verify; math-verify agrees:
    parsed = [parse_gold(gold, 5, False)[1] for gold in golds]
    assert all(verify(list(gold_parse), list(gold_parse), timeout_seconds=5) for gold_parse in parsed)
    shuffled = random.Random(0).sample(golds, len(golds))
    shuffled_scores = reward(["?"] * len(golds), [as_model_answer(other) for other in shuffled], answer=golds)
    assert sum(score == 1.0 for score in shuffled_scores) / len(golds) < 0.05


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
        # one separator rule for golds and answers
        (r"\boxed{1000}", "1,000", 1.0),
        (r"\boxed{1,000}", "1000", 1.0),
        (r"\boxed{1 000}", "1000", 1.0),
        (r"\boxed{10\,000}", "10 000", 1.0),
        (r"\boxed{1,\!080}", "1,080", 1.0),
        ("The answer is 1,080.", "1080", 1.0),
        (r"\boxed{1.5}", "1,5", 0.0),  # without decimal commas, "1,5" is the list 1, 5
        (r"\boxed{5, 1}", "1,5", 1.0),
        (r"\boxed{100000}", "1e5", 1.0),
        (r"\boxed{\frac{3}{2}}", "1.5", 1.0),  # plain numbers compared exactly, without sympy
        (r"\boxed{0.3333333}", r"\frac{1}{3}", 1.0),  # ... but math-verify's 6-decimal rounding is kept
        (r"\boxed{0.33}", r"\frac{1}{3}", 0.0),
        (r"\boxed{\text{Tuesday}}", r"\text{Tuesday}", 1.0),  # a text answer: one symbol, its own text
        (r"\boxed{\frac{\pi}{4} + 2 - \sqrt{2}}", r"\frac \pi4 + 2 - \sqrt2", 1.0),
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
    """`may_hold_an_answer` skips math-verify for text without a box or the word "answer"; it must only
    ever skip what math-verify would find nothing in (real worked solutions with their boxes removed)."""
    from math_verify import parse

    from rewards.math_scoring import ANCHORED_EXTRACTION, may_hold_an_answer

    with open(shared_data / "math500" / "test.jsonl", encoding="utf-8") as math500:
        solutions = [json.loads(line)["solution"].replace("\\boxed", "") for line in math500]
    skipped = [text for text in solutions if not may_hold_an_answer(text)]
    assert len(skipped) > 400
    assert all(parse(text, extraction_config=ANCHORED_EXTRACTION, extraction_mode="first_match") == [] for text in skipped)


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


@pytest.mark.parametrize(
    ("gold", "why"),
    [
        ("The answer is 5", "prose"),
        ("A first guess for the answer is 10, but the tiles overlap, so it is 8.", "a worked solution: its anchor names a discarded answer"),
        ("5 apples", "prose around a number"),
        ("none", "a word"),
        ("yes", "a product of letters: e*s*y"),
        ("ab", "a product of letters"),
        ("2 3", "spaced digits: a sum to math-verify"),
        ("1,000, 2", "a thousand in a list"),
        (r"x = 5 \implies y = 7", "a derivation, read as its last part"),
        ("1, 2, \\ldots", "read only in part"),
        (r"\frac{1}", "not an expression"),
    ],
)
def test_a_gold_that_is_not_math_scores_none_for_every_completion_and_is_counted(gold: str, why: str) -> None:
    reward = build("math_accuracy", {})
    completions = [f"\\boxed{{{gold}}}", gold, r"\boxed{5}", "The answer is 5.", r"\boxed{sye}"]
    assert reward(["?"] * len(completions), completions, answer=[gold] * len(completions)) == [None] * len(completions), why
    reward(["?"], [r"\boxed{1}"], answer=["1"])
    assert reward.metrics() == {"errors": 0, "unusable_golds": 1, "unusable_gold_examples": [gold]}


# Golds that are math but read as None before (issue 25): each with a right answer and a wrong one.
MATH_GOLDS = [
    (r"1 - \frac{1}{\mathrm{e}}", r"\boxed{1 - e^{-1}}", r"\boxed{1 + \frac{1}{e}}"),  # upright constants
    (r"2 + 3\mathrm{i}", r"\boxed{2 + 3i}", r"\boxed{5}"),  # math-verify alone reads it as 5
    (r"x = \frac{1}{2}, x = \frac{-1 \pm \sqrt{13}}{4}", r"\boxed{x = \frac{1}{2}, x = \frac{-1 \pm \sqrt{13}}{4}}", r"\boxed{x = \frac{1}{2}}"),
    (r"\frac{-1 \pm \sqrt{13}}{4}", r"\boxed{\frac{-1 + \sqrt{13}}{4}, \frac{-1 - \sqrt{13}}{4}}", r"\boxed{\frac{-1 + \sqrt{13}}{4}}"),
    ("S_{MBCN}:S=7:32", r"\boxed{7:32}", r"\boxed{7:33}"),  # a ratio whose subscript is no word
    (r"So the answer is: \[ \boxed{11111111100} \]", r"\boxed{11,\! 111,\! 111,\! 100}", r"\boxed{11111111101}"),
    (r"Thus, the domain of the function is: \[ \boxed{(2, 12) \cup (12, 102)} \]", r"$x \in \boxed{(2,12) \cup (12,102)}$", r"\boxed{(2, 102)}"),
    ("$125$ miles", r"\boxed{125}", r"\boxed{126}"),  # a unit math-verify removes
]


@pytest.mark.parametrize(("gold", "right", "wrong"), MATH_GOLDS)
def test_golds_that_are_math_are_read(gold: str, right: str, wrong: str) -> None:
    reward = MathAccuracy()
    assert reward(["?", "?"], [right, wrong], answer=[gold, gold]) == [1.0, 0.0]
    assert reward.unusable_golds == 0


# Boxes chained by TeX spacing or a few connecting words form one list: credited when each box is one
# item of a multi-answer gold and together they are all of it; never for a single answer, a superset,
# a repeat, or a box holding a list of its own.
MULTI_BOX_CASES = [
    (r"\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}", "(2, 2), (6, 2)", 1.0),
    (r"\boxed{k = 45} \quad \text{and} \quad \boxed{n = 2}", "k = 45, n = 2", 1.0),
    (r"\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}", "(3, 3), (1, 1)", 1.0),
    (r"\[ n = \boxed{-2} \quad \text{and} \quad \boxed{1}. \]", "1,-2", 1.0),  # in any order
    (r"\boxed{x = \frac{1}{2}} \; \boxed{x = \frac{-1 \pm \sqrt{13}}{4}}", r"x = \frac{1}{2}, x = \frac{-1 \pm \sqrt{13}}{4}", 1.0),
    (r"\boxed{3} \quad \boxed{5}", "5", 0.0),  # a single answer hedged
    (r"\boxed{1} \qquad \boxed{2} \qquad \boxed{3}", "1, 2", 0.0),  # more than the gold has
    (r"\boxed{1} \; \boxed{1} \; \boxed{2}", "1, 2", 0.0),  # one repeated
    (r"\boxed{5} \quad \boxed{5}", "5", 0.0),
    (r"\boxed{1, 2} \quad \boxed{3}", "1, 2, 3", 0.0),  # a box is one item
    (r"\boxed{1}. No wait: the answer is \boxed{2}.", "1, 2", 0.0),  # a correction: the last box alone
]


@pytest.mark.parametrize(("completion", "gold", "expected"), MULTI_BOX_CASES)
def test_chained_boxes_are_one_list_with_one_item_per_box(completion: str, gold: str, expected: float) -> None:
    for extraction in ("boxed", "lenient"):
        assert MathAccuracy(extraction=extraction)(["?"], [completion], answer=[gold]) == [expected]


def test_decimal_commas_when_the_data_uses_them() -> None:
    reward = MathAccuracy(decimal_comma=True)
    golds = ["3,5", "1.000,5", "3,5", "1,000"]
    completions = [r"\boxed{3.5}", r"\boxed{1000.5}", r"\boxed{3{,}5}", r"\boxed{1000}"]
    assert reward(["?"] * 4, completions, answer=golds) == [1.0, 1.0, 1.0, None]  # "1,000": one, or a thousand?
    with pytest.raises(RewardSpecError, match="decimal_comma must be true or false"):
        build("math_accuracy", {"decimal_comma": "yes"})


# The same completions under both extractions, gold 56: the box and the anchor are read by both; an
# answer with neither only by "lenient", and a wrong or hedged one by neither.
EXTRACTION_CASES = [
    (r"So \boxed{56}.", 1.0, 1.0),
    ("The answer is: 56", 1.0, 1.0),
    ("The answer is $56$", 1.0, 1.0),
    ("7 * 8 = 56.", 0.0, 1.0),  # the bare equation a small model ends with
    ("Multiplying, we get $56$ in all.", 0.0, 1.0),
    ("7 * 8 = 57.", 0.0, 0.0),  # wrong, unboxed
    ("The answer is 57.", 0.0, 0.0),
    ("The answer is 56 or 57.", 0.0, 0.0),  # a hedge, whichever extraction reads it
    (r"It is 56, so \boxed{57}", 0.0, 0.0),  # with a box, the box is the answer in both
    (r"It is 56, so \boxed{5", 0.0, 0.0),  # a box cut off is no answer in either
    # An answer anchored after the last box is the completion's last word, read first by both.
    (r"First \boxed{7}, then \boxed{8}. The final answer is $56$.", 1.0, 1.0),  # after intermediate boxes
    (r"So \boxed{56}. The final answer is 57.", 0.0, 0.0),  # a wrong anchored answer after a right box
    (r"So \boxed{56}. The final answer is 56 or 57.", 0.0, 0.0),  # a hedge after the box: no fall back to it
    (r"So \boxed{56}. The answer is: $56$ \text{ or } $57$.", 0.0, 0.0),
    (r"So \boxed{57}. The final answer is $56$.", 1.0, 1.0),  # a correction after the box
    (r"So \boxed{56}. We may check our answer: $56 / 8 = 7$, so our answer is correct.", 1.0, 1.0),  # a check, no statement
    (r"So \boxed{56}. A calculator gives the answer $55.9$, which confirms it.", 1.0, 1.0),  # a mention
]


@pytest.mark.parametrize(("completion", "boxed", "lenient"), EXTRACTION_CASES)
def test_extraction_boxed_reads_boxes_and_anchors_and_lenient_also_bare_answers(completion: str, boxed: float, lenient: float) -> None:
    assert build("math_accuracy", {})(["?"], [completion], answer=["56"]) == [boxed]  # "boxed" is the default
    assert build("math_accuracy", {"extraction": "boxed"})(["?"], [completion], answer=["56"]) == [boxed]
    assert MathAccuracy(extraction="lenient")(["?"], [completion], answer=["56"]) == [lenient]


def test_lenient_extraction_reads_what_math_verify_finds_without_an_anchor() -> None:
    reward = MathAccuracy(extraction="lenient")
    completions = [
        r"Therefore $x \geq 5$ is the solution.",
        r"The identity matrix is $\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}$",
        "It costs 1,000.99€",
    ]
    golds = [r"x \ge 5", r"\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}", "1000.99"]
    assert reward(["?"] * 3, completions, answer=golds) == [1.0, 1.0, 1.0]
    assert MathAccuracy()(["?"] * 3, completions, answer=golds) == [0.0, 0.0, 0.0]


def test_extraction_is_checked_and_pickled() -> None:
    with pytest.raises(RewardSpecError, match="extraction must be one of 'boxed', 'lenient', got 'loose'"):
        build("math_accuracy", {"extraction": "loose"})
    with pytest.raises(ValueError, match="'boxed', 'lenient'"):
        MathAccuracy(extraction="Lenient")
    reward = pickle.loads(pickle.dumps(MathAccuracy(extraction="lenient", parallel_threshold=0)))
    assert reward.extraction == "lenient"
    assert reward(["?", "?"], ["7 * 8 = 56.", "7 * 8 = 57."], answer=["56", "56"]) == [1.0, 0.0]  # in the worker pool too
    reward.close()


REASONING_CASES = [
    (r"<think>2+2</think> The final answer is \boxed{4}", 1.0),
    (r"<think>2+2</think> The final answer is \boxed{5}", 0.0),
    (r"<think>it is \boxed{4}</think> but I will not say", 0.0),  # the answer only inside the reasoning
    (r"<think>it is \boxed{4}", 0.0),  # the block never closes
    (r"\boxed{4}", 0.0),  # no reasoning block at all
    (r"prefilled by the template</think> so \boxed{4}", 1.0),  # the chat template wrote <think>
]


@pytest.mark.parametrize(("completion", "expected"), REASONING_CASES)
def test_reasoning_tags_score_the_answer_after_the_block_as_trl_does(completion: str, expected: float) -> None:
    from trl.rewards import reasoning_accuracy_reward

    conversation = [[{"role": "assistant", "content": completion}]]
    assert MathAccuracy(reasoning_tags=True)(["?"], conversation, answer=["4"]) == [expected]
    assert reasoning_accuracy_reward(conversation, solution=["4"]) == [expected]


def test_reasoning_tags_differ_from_trl_on_a_block_left_open_and_take_a_templates_own_tags() -> None:
    from trl.rewards import reasoning_accuracy_reward

    second_block = [[{"role": "assistant", "content": r"<think>a</think> \boxed{4} <think>then more"}]]
    assert MathAccuracy(reasoning_tags=True)(["?"], second_block, answer=["4"]) == [0.0]
    assert reasoning_accuracy_reward(second_block, solution=["4"]) == [1.0]  # TRL reads past the open block
    tags = ["<|begin_of_thought|>", "<|end_of_thought|>"]
    thought = r"<|begin_of_thought|>2+2<|end_of_thought|> \boxed{4}"
    assert MathAccuracy(reasoning_tags=tags)(["?", "?"], [thought, r"<think>2+2</think> \boxed{4}"], answer=["4", "4"]) == [1.0, 0.0]
    schema_split = [{"role": "assistant", "content": r"\boxed{4}", "reasoning_content": "2+2"}]
    assert MathAccuracy(reasoning_tags=True)(["?"], [schema_split], answer=["4"]) == [1.0]
    assert MathAccuracy()(["?"], [r"<think>\boxed{4}"], answer=["4"]) == [1.0]  # off by default


def test_options_survive_pickling_for_worker_processes() -> None:
    reward = pickle.loads(pickle.dumps(MathAccuracy(reasoning_tags=["<r>", "</r>"], decimal_comma=True)))
    assert reward(["?"], [r"<r>x</r> \boxed{3,5}"], answer=["3.5"]) == [1.0]


def test_values_far_apart_skip_verify_only_where_it_says_no(shared_data: Path) -> None:
    """The shortcut past math-verify's costly symbolic check, for two expressions whose values differ,
    must only ever answer what `verify` answers: checked on every MATH-500 gold against another, and on
    equal expressions written differently."""
    from math_verify import verify

    from rewards.math_scoring import far_apart, parse_gold

    with open(shared_data / "math500" / "test.jsonl", encoding="utf-8") as math500:
        golds = list(dict.fromkeys(json.loads(line)["answer"] for line in math500))
    parsed = [parse_gold(gold, 5, False)[1] for gold in golds]
    others = random.Random(0).sample(parsed, len(parsed))
    apart = [(gold, other) for gold, other in zip(parsed, others) if far_apart(gold, other, 5)]
    assert len(apart) > 100
    assert not any(verify(list(gold), list(other), timeout_seconds=5) for gold, other in apart)
    for gold, same in [("0.3333334", r"\frac{1}{3}"), ("1", r"\sin^2 x + \cos^2 x"), ("x^2+2x+1", "(x+1)^2"), (r"\sec^2(y)", r"\tan^2(y)+1")]:
        pair = parse_gold(gold, 5, False)[1], parse_gold(same, 5, False)[1]
        assert not far_apart(*pair, 5) and verify(list(pair[0]), list(pair[1]), timeout_seconds=5)
