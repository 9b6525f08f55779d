import pytest

from rewards import RewardSpecError, build
from rewards.shaping import AnswerFormat, OverlongPenalty, RepetitionPenalty


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (r"so the answer is \boxed{72}", 1.0),
        (r"\boxed{\frac{1}{2}}", 1.0),  # nested braces balance
        (r"\boxed{}", 0.0),  # empty
        (r"\boxed{   }", 0.0),  # blank
        (r"\boxed{\frac{1}{2}", 0.0),  # unbalanced
        (r"\boxed{1} and at last \boxed{2", 0.0),  # the final box is cut off
        (r"\boxed 5", 0.0),  # no braces
        ("the answer is 72", 0.0),
        ("", 0.0),
    ],
)
def test_format_default_wants_a_closed_box(completion: str, expected: float) -> None:
    assert AnswerFormat()(["?"], [completion]) == [expected]


def test_format_reads_conversations() -> None:
    conversation = [{"role": "assistant", "content": r"\boxed{3}"}]
    assert build("format", {})(["?"], [conversation]) == [1.0]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (r"<think>add</think> <answer>\boxed{3}</answer>", 1.0),
        (r"<think>add</think> <answer>3</answer>", 0.0),  # tags right, box missing
        (r"<answer>\boxed{3}</answer> <think>add</think>", 0.0),  # wrong order
        (r"<think>a</think><think>b</think><answer>\boxed{3}</answer>", 0.0),  # a tag twice
        (r"<think> </think><answer>\boxed{3}</answer>", 0.0),  # blank block
        (r"<think>add<answer>\boxed{3}</answer></think>", 0.0),  # nested, not in sequence
    ],
)
def test_format_with_tags_in_order(completion: str, expected: float) -> None:
    assert AnswerFormat(tags=["think", "answer"])(["?"], [completion]) == [expected]


def test_format_tags_only_and_single_tag_string() -> None:
    reward = AnswerFormat(boxed=False, tags="answer")
    assert reward(["?", "?"], ["<answer>3</answer>", "3"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="checks nothing"):
        AnswerFormat(boxed=False)
    with pytest.raises(RewardSpecError, match="bare name"):
        build("format", {"tags": ["<answer>"]})


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [(0, 0.0), (6, 0.0), (7, -0.25), (8, -0.5), (9, -0.75), (10, -1.0), (11, -1.0), (10_000, -1.0)],
)
def test_length_is_dapo_soft_overlong_punishment(tokens: int, expected: float) -> None:
    reward = OverlongPenalty(max_tokens=10, cache_tokens=4)
    assert reward(["?"], ["text"], completion_ids=[[7] * tokens]) == [pytest.approx(expected)]


def test_length_estimates_tokens_from_characters_without_completion_ids() -> None:
    reward = OverlongPenalty(max_tokens=10, cache_tokens=4)
    # 24 characters -> 6 tokens (no penalty); 29 characters -> 8 tokens, rounded up; 40 -> 10 tokens.
    assert reward(["?"] * 3, ["x" * 24, "x" * 29, "x" * 40]) == [0.0, -0.5, -1.0]


def test_length_cache_defaults_to_a_fifth_and_zero_is_a_cliff() -> None:
    assert OverlongPenalty(max_tokens=20_480).cache_tokens == 4096
    cliff = OverlongPenalty(max_tokens=10, cache_tokens=0)
    assert cliff(["?", "?"], ["a", "b"], completion_ids=[[1] * 10, [1] * 11]) == [0.0, -1.0]
    with pytest.raises(RewardSpecError, match="cache_tokens <= max_tokens"):
        build("length", {"max_tokens": 10, "cache_tokens": 11})


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("", 0.0),
        ("too short", 0.0),  # fewer words than ngram_size
        ("one two three four five", 0.0),  # no repeats
        ("a b c a b c", -0.25),  # 4 trigrams, 3 distinct
        ("A b C a B c", -0.25),  # case-insensitive, as open-r1
        ("go " * 100, -(1 - 1 / 98)),  # a loop approaches max_penalty
    ],
)
def test_repetition_follows_open_r1(completion: str, expected: float) -> None:
    assert RepetitionPenalty()(["?"], [completion]) == [pytest.approx(expected)]


def test_repetition_options() -> None:
    assert RepetitionPenalty(ngram_size=2, max_penalty=-0.5)(["?"], ["x y x y"]) == [pytest.approx(-0.5 / 3)]
    with pytest.raises(RewardSpecError, match="max_penalty must be <= 0"):
        build("repetition", {"max_penalty": 1.0})


THINK_CASES = [
    "<think>\nThis is my reasoning.\n</think>\nThis is my answer.",  # TRL's docstring examples
    "<think>\nThis is my reasoning.\nThis is my answer.",
    "<think>add</think> 7",
    " <think>add</think> 7",  # something before the tag
    "So: <think>add</think> 7",
    "<think>a<think>b</think> 7",  # a second opening tag
    "add</think> 7",  # the opening tag is missing
    "<think></think> 7",  # empty reasoning
    "<think>  \n </think> 7",  # blank reasoning
    "<think>a</think> 7 </think>",  # a second closing tag
    "",
]


@pytest.mark.parametrize("completion", THINK_CASES)
def test_think_format_behaves_like_trls_think_format_reward(completion: str) -> None:
    """`format` with the think tag, boxes off and empty reasoning allowed, is TRL's reward, but for a second
    closing tag, which TRL accepts and gradus does not (a tag appears exactly once)."""
    from trl.rewards import think_format_reward

    trl_score = think_format_reward([[{"role": "assistant", "content": completion}]])[0]
    ours = AnswerFormat(boxed=False, tags=["think"], empty_reasoning=True)(["?"], [completion])[0]
    assert ours == (0.0 if completion.count("</think>") > 1 else trl_score)


def test_think_format_by_default_wants_reasoning_and_a_box_after_it() -> None:
    reward = AnswerFormat(tags=["think"])
    completions = [
        r"<think>add</think> so \boxed{7}",
        r"<think></think> so \boxed{7}",  # empty reasoning: TRL would pay for it
        r"<think>it is \boxed{7}</think> so I stop",  # the box is inside the reasoning
        r"<think>add</think> so \boxed{7",  # the box is cut off
    ]
    assert reward(["?"] * 4, completions) == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(RewardSpecError, match="reasoning tag 'think' must come first"):
        build("format", {"tags": ["answer", "think"]})
    assert build("format", {"tags": ["reason", "answer"], "reasoning_tag": "reason"})(
        ["?"], [r"<reason>x</reason><answer>\boxed{1}</answer>"]
    ) == [1.0]
