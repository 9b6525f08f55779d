r"""What a math reward reads as an answer, decided on the text alone (no math-verify, no sympy).

Three rules live here, shared by the gold and the completion so both are read the same way (and
`tidy`, which drops outer `$` and a final period and braces TeX's unbraced arguments before either is
parsed):

**Reasoning blocks** (`reasoning_answer`). With reasoning tags (`<think>`, `</think>` or a template's
own), only the text after the last closing tag is the answer, as in TRL's `reasoning_accuracy_reward`.
No closing tag (the block never closed, or there was none), or an opening tag after the last closing
one (a second block left open), means there is no answer. The opening tag itself is not required: many
chat templates write it into the prompt. A chat message that the tokenizer's response schema already
split (`reasoning_content` or `thinking` beside `content`) had a closed block; its `content` is the answer.

**The final box** (`final_boxes`). The answer of a completion that has a `\boxed{` is its last one, read
with nested braces whole. A last box that never closes (cut off by max_tokens), is blank, or holds
another box is no answer: an earlier box must not stand in for it (a permissive reader that falls back
to the previous box rewards the cut-off completion, marin#9163), and a box inside a box is read by
math-verify as the inner one. Boxes chained to the last are one answer, a list, exactly as math-verify
reads `\boxed{5}, \boxed{7}`; so writing several candidates never earns more than the list they form.
Chained means: between two boxes there is only TeX spacing (`\quad`, `\;`, `~`), math delimiters,
marks (`,` `;` `.`), a variable's label (`y_2 =`), and at most a few short words, one of them a list
or hedging word (`and`, `or`, `maybe`; plain or in `\text{}`): `\boxed{3} \quad \text{and} \quad
\boxed{5}`, `\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}`. Words without one
(`\boxed{1}. No wait: the answer is \boxed{72}`) end the chain: a correction's last box wins.
A gold written as text around boxes (a sentence, a worked solution) is read the same way
(`gold_answer`): its final box, provided every earlier box repeats it.

**Digit separators** (`read_numbers`), one rule for golds and answers alike:
  * A comma, `{,}` or `,\!` between digit groups is a thousands separator when the number is written in
    full groups (1-3 digits, not starting with 0, then groups of exactly 3): `1,000`, `12,345,678.5`,
    `10{,}000`, `1,\!000` read as 1000, 12345678.5, 10000, 1000. So are a space, `\,`, `\ `, `~`, a
    no-break or thin space: `1 000`, `10 000`, `1\,000`.
  * Inside brackets (a tuple, an interval, a set) a plain comma separates items: `(1,000)` is a pair.
    A comma followed by a space separates items everywhere: `1, 000` is a list.
  * Otherwise a plain comma between digits separates items (`1,5` and `27,93` are lists, as
    math-verify reads them), unless the reward is told the data writes decimal commas
    (`decimal_comma=True`): then `3,5` and `3{,}5` are 3.5, a period groups thousands when the grouping
    is unmistakable (`1.000.000`, `1.000,5`), and a period that is not a grouping is a decimal point.
  * Anything that fits two readings is ambiguous and reads as nothing (None), never as a guess:
    spaced digits that are not full groups (`2 3`, which math-verify adds up to 5), a top-level
    thousands-style number next to a list comma (`1,000, 2`), mixed separators (`1,000 000`), `{,}`
    or a later group with a leading zero that is no grouping (`1{,}5` or `1,05` without decimal
    commas), several periods without decimal commas (`1.000.000`, `3.14.15`), and with decimal commas
    `1,000` or `1.000` alone (English thousands, or a decimal?).
  * Scientific notation as programs write it is a power of ten: `1e5` and `2.5E-3` read as `1\cdot10^{5}`
    and `2.5\cdot10^{-3}` (math-verify would read `1e5` as 1 times Euler's number times 5).
  One known limit: a top-level list of two numbers of which the second has three digits, `70,110`
  (MATH's answer to a problem asking for both solutions), reads as the integer 70110. It cannot be told
  apart from `15,600`; write such lists with a space after the comma, as most of MATH does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rewards.completions import completion_text

BOXED = "\\boxed{"
# How a completion's answer is found (`math_accuracy`'s `extraction` option). Both read an "answer" anchor
# after the last box first, then the final box. "boxed": else what follows an "answer" anchor; the strict
# reading a training reward uses, since the prompt asks for a box. "lenient": else math-verify's own
# extraction (the last expression, `$...$`); for evaluating a model that does not box its answer.
EXTRACTIONS = ("boxed", "lenient")
# Chat-message fields in which a tokenizer's response schema puts the reasoning it split off.
REASONING_FIELDS = ("reasoning_content", "thinking")

# Between two digit groups: a comma-like separator, a space-like one, or a period.
_COMMA = r",\s*\\!\s*|\{,\}|,(?!\s)"
_SPACE = r"\\,|\\ |~|\\;|\\:|[ \u00a0\u2009\u202f\u2007]"
_NUMBER_RUN = re.compile(rf"\d+(?:(?:{_COMMA}|{_SPACE}|\.)\d+)+")
_SEPARATOR = re.compile(rf"({_COMMA}|{_SPACE}|\.)")
_SCIENTIFIC = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
_OPENING_BRACKETS = ("(", "[", "\\{", "\\left(", "\\left[", "\\left\\{")
# Between two chained boxes (see the module docstring): what is no word, a variable's label, and the
# words allowed, of which one must be a list or hedging word when there are any.
_GAP_FILLER = re.compile(
    r"\\(?:qquad|quad|text|textbf|textit|textrm|textnormal|mbox|mathrm)(?![A-Za-z])|\\[,;:! ()\[\]\\]|[\s$~{},;.:]"
)
_GAP_LABEL = re.compile(r"(?<![A-Za-z\\])[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=")
_GAP_WORD = re.compile(r"[A-Za-z]+|\([A-Za-z0-9]{1,3}\)")
CHAIN_WORDS = frozenset({"and", "or", "maybe", "perhaps", "possibly", "alternatively", "either"})
# At most this many words between two chained boxes: "for part (a) and" is 4.
MAX_CHAIN_WORDS = 4
# One `\pm` or `\mp` in a list item: the item stands for two (`\frac{-1 \pm \sqrt{13}}{4}`).
_PLUS_MINUS = re.compile(r"\\(pm|mp)(?![A-Za-z])")
# Constants written upright, `\mathrm{e}` and `\mathrm{i}`, which math-verify reads as text or cuts off.
_UPRIGHT_CONSTANT = re.compile(r"\\mathrm\s*\{\s*([ei])\s*\}")
# \frac, \dfrac, \tfrac and \sqrt with TeX's one-token arguments (a digit or a command), unbraced.
_FRACTION_SHORTHAND = re.compile(r"(\\[dt]?frac)\s*(\\[A-Za-z]+|\d)\s*(\\[A-Za-z]+|\d)")
_ROOT_SHORTHAND = re.compile(r"(\\sqrt)\s*(\\[A-Za-z]+|\d)")


@dataclass(frozen=True)
class ReasoningTags:
    """The strings that open and close a reasoning block."""

    opening: str
    closing: str

    @classmethod
    def of(cls, option: bool | list[str] | tuple[str, ...] | None) -> ReasoningTags | None:
        """The `reasoning_tags` option: off (None/False), `<think>`/`</think>` (True), or [opening, closing]."""
        if option is None or option is False:
            return None
        if option is True:
            return cls("<think>", "</think>")
        if isinstance(option, (list, tuple)) and len(option) == 2 and all(isinstance(tag, str) and tag.strip() for tag in option):
            return cls(option[0], option[1])
        raise ValueError(f"reasoning_tags must be true, false or [opening, closing] tags, got {option!r}")


def reasoning_answer(completion: object, tags: ReasoningTags | None) -> str | None:
    """The part of a completion that holds its answer: all of it without tags; with them, what follows a
    closed reasoning block, or None when the block is unclosed or missing (see the module docstring)."""
    text = completion_text(completion)
    if tags is None:
        return text
    if _schema_split_reasoning(completion):
        return None if tags.opening in text else text
    end = text.rfind(tags.closing)
    if end < 0:
        return None
    answer = text[end + len(tags.closing) :]
    return None if tags.opening in answer else answer


def _schema_split_reasoning(completion: object) -> bool:
    if not isinstance(completion, list) or not completion or not isinstance(completion[-1], dict):
        return False
    return any(completion[-1].get(field) for field in REASONING_FIELDS)


def final_box(text: str) -> str | None:
    """The final `\\boxed{}` answer as one string, a chain of boxes joined into a list (`final_boxes`)."""
    boxes = final_boxes(text)
    return None if boxes is None else ", ".join(boxes)


def final_boxes(text: str) -> list[str] | None:
    """The contents of the final chain of boxes, one per box, in order; None when the text has no box,
    or its last box is cut off, blank or holds another box."""
    chain = _final_chain(text)
    return None if chain is None else [text[content_start:end] for _, content_start, end in chain[1]]


def after_final_box(text: str) -> str:
    """The text after the last box closes ("" when it never closes, or there is no box)."""
    boxes = _top_level_boxes(text)
    end = boxes[-1][2] if boxes else None
    return "" if end is None else text[end + 1 :]


def gold_answer(gold: str) -> str | None:
    """What a gold states: the gold itself without a box; with boxes (a sentence or a worked solution
    around them), its final box or chain of boxes, provided every box before that chain repeats one of
    its boxes; None otherwise, since a gold whose boxes disagree does not say which one is its answer."""
    if not has_box(gold):
        return gold
    chain = _final_chain(gold)
    if chain is None:
        return None
    boxes, final = chain
    contents = [gold[content_start:end].strip() for _, content_start, end in final]
    if any(end is None or gold[content_start:end].strip() not in contents for _, content_start, end in boxes[: -len(final)]):
        return None
    return ", ".join(contents)


def _final_chain(text: str) -> tuple[list[tuple[int, int, int | None]], list[tuple[int, int, int]]] | None:
    """(every top-level box, the final chain of them), or None when the text's last box is no answer."""
    boxes = _top_level_boxes(text)
    if not boxes:
        return None
    start, content_start, end = boxes[-1]
    if end is None:
        return None
    content = text[content_start:end]
    if not content.strip() or BOXED in content:
        return None
    chain = [(start, content_start, end)]
    for previous in reversed(boxes[:-1]):
        if previous[2] is None or not _chains(text[previous[2] + 1 : chain[0][0]]):
            break
        chain.insert(0, previous)
    return boxes, chain


def _chains(gap: str) -> bool:
    """Whether the text between two boxes joins them into one answer (see the module docstring)."""
    words = _GAP_FILLER.sub(" ", _GAP_LABEL.sub(" ", gap)).split()
    if not words:
        return True
    return (
        len(words) <= MAX_CHAIN_WORDS
        and all(_GAP_WORD.fullmatch(word) for word in words)
        and any(word.lower() in CHAIN_WORDS for word in words)
    )


def has_box(text: str) -> bool:
    """Whether the text has a `\\boxed{`: then its answer is the final box, or there is none."""
    return BOXED in text


def _top_level_boxes(text: str) -> list[tuple[int, int, int | None]]:
    """(start, content start, content end or None if unclosed) of each box not inside another; one scan."""
    boxes: list[tuple[int, int, int | None]] = []
    position = text.find(BOXED)
    while position >= 0:
        content_start = position + len(BOXED)
        depth, index = 1, content_start
        while index < len(text) and depth:
            character = text[index]
            depth += character == "{"
            depth -= character == "}"
            index += 1
        if depth:
            boxes.append((position, content_start, None))
            return boxes
        boxes.append((position, content_start, index - 1))
        position = text.find(BOXED, index)
    return boxes


def tidy(text: str) -> str:
    r"""An answer as LaTeX that math-verify reads whole: outer spaces, `$` and a final period dropped,
    TeX's unbraced one-token arguments braced (`\frac \pi4` is `\frac{\pi}{4}`, which math-verify
    would otherwise mangle into a fragment: 2 for MATH's gold `\frac \pi4 + 2 - \sqrt2`), and the
    upright constants `\mathrm{e}` and `\mathrm{i}` written as e and i (math-verify reads
    `1 - \frac{1}{\mathrm{e}}` as its fragment `1 - \frac{1}{`, and `2+3\mathrm{i}` as 5)."""
    text = text.strip()
    while len(text) > 1 and text[0] == "$" and text[-1] == "$" and text[-2] != "\\":
        text = text[1:-1].strip()
    text = _ROOT_SHORTHAND.sub(r"\1{\2}", _FRACTION_SHORTHAND.sub(r"\1{\2}{\3}", text))
    text = upright_constants(text)
    return text[:-1].rstrip() if text.endswith(".") else text


def upright_constants(text: str) -> str:
    r"""`text` with `\mathrm{e}` and `\mathrm{i}` written e and i, the constants math-verify knows by those names."""
    return _UPRIGHT_CONSTANT.sub(r"\1", text)


def list_items(text: str) -> list[str]:
    """The items of a list answer: `text` split at its commas outside any brackets or braces."""
    items, depth, start = [], 0, 0
    for index, character in enumerate(text):
        depth += character in "([{"
        depth -= character in ")]}"
        if character == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    return [*items, text[start:]]


def expand_plus_minus(text: str) -> str:
    r"""`text` with each list item that holds one `\pm` (or `\mp`) written as the two items it stands
    for: `x = \frac{-1 \pm \sqrt{13}}{4}` is `x = \frac{-1 + \sqrt{13}}{4}, x = \frac{-1 - \sqrt{13}}{4}`,
    which math-verify reads, where it reads a nested `\pm` as nothing. An item with several is left as
    it is (are their signs tied?). Text without one comes back unchanged."""
    if not _PLUS_MINUS.search(text):
        return text
    items = []
    for item in list_items(text):
        signs = _PLUS_MINUS.findall(item)
        if len(signs) == 1:
            first, second = ("+", "-") if signs[0] == "pm" else ("-", "+")
            items += [_PLUS_MINUS.sub(first, item), _PLUS_MINUS.sub(second, item)]
        else:
            items.append(item)
    return ", ".join(item.strip() for item in items)  # ", ": no digits of two items read as one number


def read_numbers(text: str, decimal_comma: bool = False) -> str | None:
    """`text` with every number's digit separators resolved by the rule in the module docstring, or None
    if a number in it is ambiguous. Text without separated digits comes back unchanged."""
    pieces: list[str] = []
    position = 0
    for run in _NUMBER_RUN.finditer(text):
        number = _read_run(run.group(), decimal_comma, _in_list(text, run.start(), run.end()))
        if number is None:
            return None
        pieces += [text[position : run.start()], number]
        position = run.end()
    text = "".join(pieces) + text[position:] if pieces else text
    return _SCIENTIFIC.sub(r"\1\\cdot10^{\2}", text)


def _in_list(text: str, start: int, end: int) -> tuple[bool, bool]:
    """(inside brackets, next to a list comma) for the number at text[start:end]."""
    before, after = text[:start].rstrip(), text[end:].lstrip()
    bracketed = before.endswith(_OPENING_BRACKETS) and after[:1] in (")", "]", "\\")
    listed = before.endswith(",") or after.startswith(",")
    return bracketed, listed


def _read_run(run: str, decimal_comma: bool, context: tuple[bool, bool]) -> str | None:
    """One run of digit groups and separators as plain digits (and one decimal point), or None if ambiguous."""
    parts = _SEPARATOR.split(run)
    groups, separators = parts[0::2], [_kind(separator) for separator in parts[1::2]]
    decimal_marks = {",", "{,}"} if decimal_comma else {"."}
    marks = [index for index, separator in enumerate(separators) if separator in decimal_marks]
    decimal = ""
    if marks:
        if len(marks) > 1 or marks[0] != len(separators) - 1:
            return None  # "1.000.000" or "1.000,5" with decimal points; "1,000,000" with decimal commas
        if decimal_comma and separators == [","] and _grouped(groups):
            return None  # "1,000" with decimal commas: one, or English for a thousand?
        decimal, groups, separators = groups[-1], groups[:-1], separators[:-1]
        if not separators:
            return f"{groups[0]}.{decimal}"
    kinds = set(separators)
    if len(kinds) > 1:
        return None  # mixed separators: "1,000 000"
    kind = separators[0]
    bracketed, listed = context
    if kind == ",":  # a plain comma, decimal commas off
        if bracketed:
            return run  # inside brackets it separates items: "(1,000)" is a pair
        if not _grouped(groups):
            if decimal or any(len(group) > 1 and group.startswith("0") for group in groups[1:]):
                return None  # "1,05" or "1,2.5": a decimal comma, or a list?
            return run  # a list of numbers: "1,5", "27,93"
        if listed:
            return None  # "1,000, 2": a list of thousands, or of small numbers?
    elif kind == "." and not _grouped(groups):
        return run if len(groups) == 2 and not decimal else None  # with decimal commas, "1.5" is still 1.5
    elif kind == "." and len(groups) == 2 and not decimal:
        return None  # "1.000" with decimal commas: a thousand, or one?
    elif not _grouped(groups):
        return None  # "2 3", "1{,}5": not a grouping, and not a number either
    integer = "".join(groups)
    return f"{integer}.{decimal}" if decimal else integer


def _kind(separator: str) -> str:
    if separator == ".":
        return "."
    if separator == ",":
        return ","
    if separator.startswith(","):
        return ",\\!"
    if separator == "{,}":
        return "{,}"
    return "space"


def _grouped(groups: list[str]) -> bool:
    """Whether digit groups are a thousands grouping: 1-3 digits (no leading zero), then groups of 3."""
    first, rest = groups[0], groups[1:]
    return 1 <= len(first) <= 3 and not first.startswith("0") and bool(rest) and all(len(group) == 3 for group in rest)
