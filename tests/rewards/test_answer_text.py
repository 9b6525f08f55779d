"""The text rules of `rewards.answer_text`: digit separators, the final box, reasoning blocks."""

import pytest

from rewards.answer_text import ReasoningTags, expand_plus_minus, final_box, gold_answer, list_items, read_numbers, reasoning_answer, tidy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,000", "1000"),
        ("1 000", "1000"),
        ("10 000", "10000"),
        ("1\\,000", "1000"),
        ("1\u202f000", "1000"),  # narrow no-break space
        ("1,\\!000", "1000"),  # MATH's LaTeX idiom
        ("111, \\! 111, \\! 111", "111111111"),
        ("10{,}000", "10000"),
        ("12,345,678.5", "12345678.5"),
        ("\\$1,000", "\\$1000"),
        ("x = 1,000", "x = 1000"),
        ("1,5", "1,5"),  # a list, as math-verify reads it
        ("-4, -3, -1", "-4, -3, -1"),
        ("(1,000)", "(1,000)"),  # in brackets a plain comma separates items
        ("[0,100]", "[0,100]"),
        ("(46,2004)", "(46,2004)"),
        ("3.14", "3.14"),
        ("1e5", "1\\cdot10^{5}"),
        ("2.5E-3", "2.5\\cdot10^{-3}"),
        ("5e", "5e"),
        ("\\frac{1}{2}", "\\frac{1}{2}"),
        ("70,110", "70110"),  # the documented limit: a two-item list that looks like a thousand
    ],
)
def test_separators_without_decimal_commas(text: str, expected: str) -> None:
    assert read_numbers(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2 3", "12 34", "1 2 3", "1,000 000", "1{,}5", "1,05", "1,0000", "1.000.000", "3.14.15", "1.000,5", "1,000, 2"],
)
def test_ambiguous_numbers_read_as_nothing(text: str) -> None:
    assert read_numbers(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3,5", "3.5"), ("3{,}5", "3.5"), ("12,50", "12.50"), ("1.000.000", "1000000"), ("1.000,5", "1000.5"),
     ("1 000,5", "1000.5"), ("1,\\!000", "1000"), ("1.5", "1.5"), ("(1,5)", "(1.5)"),
     ("1,000", None), ("1.000", None), ("1,000,000", None), ("2 3", None)],
)
def test_separators_with_decimal_commas(text: str, expected: str | None) -> None:
    assert read_numbers(text, decimal_comma=True) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{72}.", "72"),
        (r"First \boxed{1}. No wait: the answer is \boxed{72}.", "72"),  # a correction: the last box wins
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{5} or \boxed{7}", "5, 7"),  # chained candidates are one answer, a list
        (r"$\boxed{5}$ and $\boxed{7}$", "5, 7"),
        (r"\boxed{5} or maybe \boxed{7}", "5, 7"),
        (r"\boxed{7}\boxed{8}", "7, 8"),
        # TeX spacing, delimiters, labels and a few words with "and" or "or" chain boxes too
        (r"\boxed{3} \quad \text{and} \quad \boxed{5}", "3, 5"),
        (r"\boxed{3} \qquad \boxed{5}", "3, 5"),
        (r"\boxed{3} \; \boxed{5}", "3, 5"),
        (r"\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}", "(3, 3), (1, 1)"),
        (r"\( y_1 = \boxed{x + 1} \) and \( y_2 = \boxed{x - 1} \)", "x + 1, x - 1"),
        (r"\boxed{1}. So \boxed{72}", "72"),  # words without a list word end the chain
        (r"\boxed{3} is wrong and now it is \boxed{5}", "5"),  # too many words between them
        (r"\boxed{3} \text{ is 3 and } \boxed{5}", "5"),  # a number between them is no connecting text
        (r"\boxed{7} and finally \boxed{8", None),  # cut off: no falling back to the earlier box
        (r"\boxed{7} and \boxed{ }", None),
        (r"\boxed{\boxed{7}, 8}", None),
        ("no box here", None),
    ],
)
def test_final_box(text: str, expected: str | None) -> None:
    assert final_box(text) == expected


@pytest.mark.parametrize(
    ("gold", "expected"),
    [
        ("72", "72"),  # no box: the gold as it is
        (r"So the answer is: \[ \boxed{11111111100} \]", "11111111100"),
        (r"Thus, the domain of the function is: \[ \boxed{(2, 12) \cup (12, 102)} \]", r"(2, 12) \cup (12, 102)"),
        (r"First $\boxed{840}$, and after checking: **Final Answer** \boxed{840}", "840"),  # a box repeated
        (r"\boxed{1} papers and \boxed{2} bins", "1, 2"),  # a chain of boxes
        (r"\boxed{5} or \boxed{6}? I am not sure, \boxed{6}", None),  # boxes that disagree
        (r"The answer is \boxed{6", None),  # a box cut off
    ],
)
def test_gold_answer_reads_a_gold_written_around_boxes_from_its_final_box(gold: str, expected: str | None) -> None:
    assert gold_answer(gold) == expected


def test_list_items_split_at_top_level_commas_only() -> None:
    assert list_items(r"(1, 2), \{3, 4\}, [5, 6), \frac{7}{8}") == ["(1, 2)", r" \{3, 4\}", " [5, 6)", r" \frac{7}{8}"]
    assert list_items("7") == ["7"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"x = \frac{-1 \pm \sqrt{13}}{4}", r"x = \frac{-1 + \sqrt{13}}{4}, x = \frac{-1 - \sqrt{13}}{4}"),
        (r"\frac{1}{2}, 2 \mp 3", r"\frac{1}{2}, 2 - 3, 2 + 3"),
        (r"1 \pm 2 \pm 3", r"1 \pm 2 \pm 3"),  # several in one item: their signs may or may not be tied
        (r"\pmb{7}", r"\pmb{7}"),  # another command
        ("5, 7", "5, 7"),
    ],
)
def test_expand_plus_minus(text: str, expected: str) -> None:
    assert expand_plus_minus(text) == expected


def test_tidy_braces_tex_shorthand_and_drops_dollars_and_a_final_period() -> None:
    assert tidy(r" $\frac \pi4 + 2 - \sqrt2$ ") == r"\frac{\pi}{4} + 2 - \sqrt{2}"
    assert tidy(r"\frac{7}{5} + \frac{1}{5} i.") == r"\frac{7}{5} + \frac{1}{5} i"
    assert tidy(r"\dfrac12") == r"\dfrac{1}{2}"
    assert tidy(r"\sqrt[3]{2}") == r"\sqrt[3]{2}"
    assert tidy(r"$1 - \frac{1}{\mathrm{e}}$") == r"1 - \frac{1}{e}"
    assert tidy(r"2+3\mathrm{ i }") == "2+3i"
    assert tidy(r"\mathrm{d}x") == r"\mathrm{d}x"  # only the constants e and i


THINK = ReasoningTags.of(True)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>work</think> The answer is 7.", " The answer is 7."),
        ("work, the template opened the block</think>7", "7"),  # the opening tag is not required
        ("<think>a</think>b<think>c</think>d", "d"),  # after the last closing tag
        ("<think>unfinished", None),
        ("no reasoning at all", None),
        ("<think>a</think> 7 <think>a second block, left open", None),
        ([{"role": "assistant", "content": "7", "reasoning_content": "work"}], "7"),  # the schema split it
        ([{"role": "assistant", "content": "<think>7", "reasoning_content": "work"}], None),
        ([{"role": "assistant", "content": "7"}], None),
    ],
)
def test_reasoning_answer(completion: object, expected: str | None) -> None:
    assert reasoning_answer(completion, THINK) == expected
    assert reasoning_answer("<think>x</think>", None) == "<think>x</think>"  # tags off: the whole text


def test_reasoning_tags_option() -> None:
    assert ReasoningTags.of(None) is None and ReasoningTags.of(False) is None
    assert ReasoningTags.of(["<|begin_of_thought|>", "<|end_of_thought|>"]).closing == "<|end_of_thought|>"
    for bad in (["</think>"], "think", ["<think>", ""], 1):
        with pytest.raises(ValueError, match="reasoning_tags must be"):
            ReasoningTags.of(bad)
