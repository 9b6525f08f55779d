r"""Score one (gold answer, completion text) pair with math-verify, in the main thread of the calling process.

This module holds everything that imports math_verify (sympy + ANTLR, ~0.3 s to import), so that
`gradus plan`, which only checks signatures, never pays for it, and so that worker processes import
only what they run. Its functions rely on math-verify's own `signal.alarm` timeouts, which work only in
a process's main thread: `rewards.math_accuracy` calls them inline from the main thread, or in a worker
process (whose main thread runs them).

How a pair is scored (the text rules are `rewards.answer_text`'s):
  1. The gold is read as math or not at all (`parse_gold`): None for every completion otherwise. A
     gold written as text around a final box is read from that box (`answer_text.gold_answer`).
  2. The completion's answer is the part after a closed reasoning block (with reasoning tags), then
     an answer anchored after its last box ("The final answer is 7.", its last word; a hedge there
     scores 0), else its final box; a completion without a box may still state its answer after the
     word "answer" ("The answer is 72."), which math-verify finds as TRL's and open-r1's accuracy rewards do, never
     a number met in the reasoning. Several answers stated that way ("the answer is 7 or 8") score 0.
     Boxes chained to the final one (`rewards.answer_text`) are one list, each box one item of it:
     boxes that repeat an item, or a box holding a list of its own, score 0.
     With `extraction="lenient"` a completion without a box is read by math-verify's own default
     extraction instead, which also takes the last expression or `$...$` with no anchor.
  3. Gold and answer go through the same digit-separator rule and the same parse (`parse_math`: the
     text inside `\boxed{}`), so a gold always verifies against itself. An ambiguous answer scores 0.
  4. An answer written exactly as the gold scores 1.0, and two plain numbers are compared exactly,
     both without sympy (most GSM8K and half of MATH); two expressions whose values differ score 0.0
     without `verify`, which would say so after a costly symbolic simplification (`far_apart`);
     everything else by math-verify's `verify`, gold first, plus one guard: two exact numbers (no
     decimal in either) that math-verify calls equal only because it rounds their difference to 0 at
     15 digits (`1/2^99` and `1/2^98`, Math-Verify#14) are not.
"""

from __future__ import annotations

import cmath
import gc
import logging
import re
from fractions import Fraction
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from math_verify.utils import timeout
from sympy import Basic, Expr, FiniteSet, Float, MatrixBase, Mul, Symbol, Tuple
from sympy import E as EULER
from sympy import I as IMAGINARY_UNIT

from rewards.answer_text import after_final_box, expand_plus_minus, final_boxes, gold_answer, has_box, list_items, read_numbers, tidy, upright_constants

# How an answer (or a gold), once found, is read: as the content of one \boxed{}, with math-verify's
# default LaTeX normalisation (malformed operators and nits fixed: `\frac43`, `11\sqrt2`), and nothing
# else. math-verify's default parse also tries other patterns when that fails, and finds fragments:
# `\boxed{1, 2, \ldots}` as 2, MATH's gold `\frac{7}{5} + \frac{1}{5} i.` as 1/5.
BOXED_ANSWER = (LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),)
# Where math-verify looks for an answer in a completion that has no \boxed{}: after an "answer" anchor
# ("final answer is ...", "answer: ..."), in LaTeX or as a plain number or expression, never without
# one (try_extract_without_anchor=False, as in TRL's and open-r1's accuracy_reward).
ANCHORED_EXTRACTION = (
    LatexExtractionConfig(boxed_match_priority=-1, try_extract_without_anchor=False),
    ExprExtractionConfig(try_extract_without_anchor=False),
)
# With `extraction="lenient"`, where it looks instead: math-verify's default extraction, which also
# takes an answer without an anchor (the last expression, the last `$...$`), as its own users score.
LENIENT_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())

# GRPO scores every gold num_generations times per step; distinct golds (and distinct boxed answers)
# over a run are in the thousands.
CACHE_SIZE = 65_536

# Relative difference below which two exact numbers that math-verify calls equal are taken as equal.
EXACT_TOLERANCE = 1e-20
# Relative difference (absolute below 1) beyond which two values are apart for every rule of verify.
NUMERIC_TOLERANCE = 1e-6
# Where `far_apart` evaluates expressions with variables: values no answer is likely to single out.
EVALUATION_POINT = (0.5772156649, 1.3247179572, 2.7182818285, 0.4142135624, 1.6180339887)
# Words that math may contain outside \text{}: function names, and the list words math-verify reads.
MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp lim max min gcd lcm mod "
    "deg det and or inf infinity sqrt".split()
)
# Units that math-verify's normalisation removes from the end of an answer (`125 miles` reads as 125),
# with their plurals; a gold that ends in one is a quantity, not prose.
UNITS = frozenset(
    form
    for unit in "mile feet inch yard meter metre degree second minute hour day month year cent pound gallon liter litre acre hectare unit".split()
    for form in (unit, f"{unit}s", f"{unit}es")
)
_FINAL_WORD = re.compile(r"([A-Za-z]+)\s*$")
# A gold that states a derivation is read by math-verify as its last part.
DERIVATION = re.compile(r"\\(?:implies|Rightarrow|Longrightarrow|iff|therefore|because)(?![A-Za-z])")
# Sub- and superscripts name things (`S_{MBCN}`): their letters are no words.
_SCRIPT = re.compile(r"[_^]\s*(?:\{[^{}]*\}|[A-Za-z0-9])")
_TEXT_GROUP = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|mathit|operatorname|begin|end)\s*\{[^{}]*\}")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{3,}")
# What follows an anchored answer that makes it one of several: a list word or mark, then another
# number or expression ("7 or 8", "7, 8", "7 \text{ and } 8"), or just a space and a digit ("2 3").
ANOTHER_ANSWER = r"\s*(?:,|;|\bor\b|\band\b|\\text\{\s*(?:or|and)\s*\})\s*\$?\s*(?:[-+(\[]?\d|\\frac|\\sqrt)|\s+\d"
# After the last box, only a statement of the answer is read, from its last one on ("The final answer
# is 7.", "the answer is: 7"), not a check of it or a mention, which math-verify's anchors also read:
# "We may check our answer: $17\cdot 44 = 748 ...$" as 748, "a calculator gives the answer $33.98$".
# Read anywhere after the box, those scored 5 of MATH's 5,000 worked solutions 0 against their own box.
ANSWER_STATEMENT = re.compile(r"\b(?:final answer|the answer)\s*(?:is\b|:)", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(rf"(?P<sign>[-+]?)(?:(?P<decimal>\d+(?:\.\d+)?)|\\[dt]?frac\{{(?P<numerator>\d+)\}}\{{(?P<denominator>\d+)\}}|(?P<over>\d+)/(?P<under>\d+))")


@lru_cache(maxsize=CACHE_SIZE)
def parse_math(text: str, timeout_seconds: int) -> tuple:
    r"""math-verify's reading of an answer: `text` wrapped in \boxed{}, so that the whole string is the answer.

    Parsed raw, as TRL's accuracy_reward parses golds, 131 of the 500 MATH-500 golds parse differently,
    many wrongly: `3\sqrt{13}` reads as 3, `6 - 5i` as 5, `\left( 3, \frac{\pi}{2} \right)` as 3, and
    `\pi` or `p - q` not at all. A parse that timed out is cached as unparseable, like any that yields
    nothing. Cached per process: a GRPO group repeats its gold, and often its boxed answer too.
    """
    return tuple(parse(f"\\boxed{{{text}}}", extraction_config=BOXED_ANSWER, extraction_mode="first_match", parsing_timeout=timeout_seconds))


@lru_cache(maxsize=CACHE_SIZE)
def parse_gold(gold: str, timeout_seconds: int, decimal_comma: bool) -> tuple[str, tuple] | None:
    """(the gold with its digit separators resolved, its parse), or None if the gold is not math: then
    every completion scores None. A gold written as text around a final box is read from that box
    (`rewards.answer_text.gold_answer`).

    Not math: an ambiguous number or a derivation (`read_answer`); prose, that is a word of three or
    more letters outside \\text{} that is no function name ("5 apples", "none", "The answer is 5", which
    math-verify reads as a product of letters and numbers); an answer math-verify can only read as a
    product of single letters ("yes" is e*s*y, so "sye" would match it); and anything it cannot turn
    into an expression, or reads only in part (`1, 2, \\ldots`).
    A \\text{} answer (`\\text{Tuesday}`, `\\text{(C)}`) is math here: math-verify reads it as one
    symbol named by its text, which only that text matches.

    A worked solution without a box is prose too, even one that says "The final answer is $28 \\%$"
    (row 60 of Math-Verify's tests, which math-verify reads). No rule picks its answer safely: an
    anchor may name an answer the solution then discards ("A first guess for the answer is 10, but
    ... so it is 8" reads as 10), and math-verify's reading without an anchor is the last number met.
    A wrong gold trains toward a wrong answer without a sign; a None gold is counted in `metrics()`,
    and its data recipe can extract the answer (open-r1#628).
    """
    stated = gold_answer(gold)
    text = None if stated is None else read_answer(stated, decimal_comma)
    if text is None or is_prose(text):
        return None
    parsed = parse_math(text, timeout_seconds)
    if not parsed or not isinstance(parsed[0], (Basic, MatrixBase)) or _letter_product(parsed[0]):
        return None
    return text, parsed


def read_answer(text: str, decimal_comma: bool) -> str | None:
    """A gold or an answer as it is parsed (tidied, digit separators resolved, a nested `\\pm` written as
    its two items), or None if it is ambiguous or a derivation, which math-verify reads as its last part
    (`x = 5 \\implies y = 7` as 7)."""
    text = read_numbers(tidy(text), decimal_comma)
    return None if text is None or DERIVATION.search(text) else expand_plus_minus(text)


def is_prose(text: str) -> bool:
    """Whether `text` has a word (3+ letters, outside \\text{}-like groups, commands and sub- or
    superscripts, and other than a final unit) that is no math word."""
    bare = _COMMAND.sub(" ", _TEXT_GROUP.sub(" ", _SCRIPT.sub(" ", text)))
    unit = _FINAL_WORD.search(bare)
    if unit is not None and unit[1].lower() in UNITS:
        bare = bare[: unit.start()]
    return any(word.lower() not in MATH_WORDS for word in _WORD.findall(bare))


def _letter_product(expression: Basic | MatrixBase) -> bool:
    """Whether an expression (or any item of a set or tuple) is a product of single letters, nothing else."""
    if isinstance(expression, Mul):
        return all(_is_letter(factor) for factor in expression.args)
    if isinstance(expression, (FiniteSet, Tuple)):
        return any(_letter_product(item) for item in expression.args)
    return False


def _is_letter(factor: Basic) -> bool:
    # math-verify reads a bare e as Euler's number and i as the imaginary unit.
    return (isinstance(factor, Symbol) and len(factor.name) == 1) or factor in (EULER, IMAGINARY_UNIT)


def collection_deferred(score: Callable[..., Any]) -> Callable[..., Any]:
    """Run `score` with Python's cyclic garbage collector paused, so no finalizer runs inside it.

    math-verify's timeouts raise from a SIGALRM handler. When the alarm fires while the collector runs
    some unrelated object's `__del__` (a `datasets.Dataset` in a training process), the exception is
    raised there and swallowed ("Exception ignored in ... __del__"), the timeout is lost, and the parse
    or comparison it bounded runs on: a power tower then takes minutes (49 s in a CI run). Cycles made
    while scoring one pair are few; they are collected after it.
    """

    @wraps(score)
    def deferred(*args: Any, **kwargs: Any) -> Any:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return score(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return deferred


@collection_deferred
def score_pair(
    pair: tuple[str | None, str | None], timeout_seconds: int, decimal_comma: bool = False, extraction: str = "boxed"
) -> float | None:
    """1.0 if the completion's answer verifies against the gold, 0.0 if not, None if the gold is not math.

    `pair` is (gold, the completion's answer part: `rewards.answer_text.reasoning_answer`, None when a
    reasoning block left it none). None, never 1.0, for a gold that is not math: open-r1 once rewarded
    those 1.0 (open-r1#293). The gold goes first to `verify`, which is asymmetric (open-r1#557 had them
    swapped). Scored with garbage collection deferred (`collection_deferred`), so no timeout is lost.
    `extraction` is `rewards.answer_text.EXTRACTIONS`' name for where an unboxed answer is looked for.
    """
    gold, region = pair
    read_gold = parse_gold(gold, timeout_seconds, decimal_comma) if gold else None
    if read_gold is None:
        return None
    gold_text, gold_parsed = read_gold
    stated = None if region is None else _answer_text(region, timeout_seconds, extraction, decimal_comma)
    answer = None if stated is None else read_answer(stated[0], decimal_comma)
    if answer is None:
        return 0.0
    if answer == gold_text:
        return 1.0
    plain = _plain_numbers_equal(gold_text, answer)
    if plain is not None:
        return 1.0 if plain else 0.0
    answer_parsed = parse_math(answer, timeout_seconds)
    if not answer_parsed:
        return 0.0  # math-verify found nothing in it (or timed out)
    boxes = stated[1]
    if boxes > 1 and not (isinstance(answer_parsed[0], FiniteSet) and len(answer_parsed[0]) == len(list_items(answer))):
        return 0.0  # chained boxes that repeat one item (`\boxed{5} \quad \boxed{5}`), which a set would hide
    if "%" not in gold_text + answer and far_apart(gold_parsed, answer_parsed, timeout_seconds):
        return 0.0  # what verify would say, without its costly symbolic simplification
    if not verify(list(gold_parsed), list(answer_parsed), timeout_seconds=timeout_seconds):
        return 0.0
    return 0.0 if _equal_only_when_rounded(gold_parsed, answer_parsed, timeout_seconds) else 1.0


def _answer_text(region: str, timeout_seconds: int, extraction: str, decimal_comma: bool) -> tuple[str, int] | None:
    """(the answer a completion states, how many boxes it came from), or None if it states none.

    An answer stated after the last box ("The final answer is 7.", `ANSWER_STATEMENT`; a check of it
    is no statement) comes first, under either extraction: it is the completion's last word on its answer (math-verify ranks "final answer is"
    above boxes), and a hedge there ("... is 5 or 7") is no answer, never a fall back to the box. Then
    the final box (or chain of boxes, each one item of the list they form); without a box, what follows
    an "answer" anchor, or with `extraction="lenient"` whatever math-verify's default extraction finds.
    An answer that is one of several ("7 or 8") is none.
    """
    region = upright_constants(region)  # math-verify's extraction would stop at `\mathrm{e}`
    if has_box(region):
        after = after_final_box(region)
        statements = list(ANSWER_STATEMENT.finditer(after))
        statement = after[statements[-1].start() :] if statements else ""
        anchored = _anchored_answer(statement, timeout_seconds)
        if anchored is not None:
            return None if _followed_by_another_answer(statement, anchored) else (anchored, 0)
        boxes = final_boxes(region)
        if boxes is None or (len(boxes) > 1 and not all(_one_item(box, decimal_comma) for box in boxes)):
            return None
        return ", ".join(boxes), len(boxes)
    if extraction == "lenient":
        found = parse(region, extraction_config=LENIENT_EXTRACTION, parsing_timeout=timeout_seconds)
        answer = found[-1] if found and isinstance(found[-1], str) else None
    else:
        answer = _anchored_answer(region, timeout_seconds)
    return None if answer is None or _followed_by_another_answer(region, answer) else (answer, 0)


def _anchored_answer(text: str, timeout_seconds: int) -> str | None:
    """What follows an "answer" anchor in `text` (the caller asks whether it is one of several); None if nothing does."""
    if not may_hold_an_answer(text):
        return None
    found = parse(text, extraction_config=ANCHORED_EXTRACTION, extraction_mode="first_match", parsing_timeout=timeout_seconds)
    return found[-1] if found and isinstance(found[-1], str) else None


def _one_item(box: str, decimal_comma: bool) -> bool:
    """Whether a box of a chain holds one item: `\\boxed{1, 2} and \\boxed{3}` is no one-box-per-answer list."""
    text = read_numbers(tidy(box), decimal_comma)
    return text is not None and len(list_items(text)) == 1


def _followed_by_another_answer(region: str, answer: str) -> bool:
    """Whether the anchored answer is one of several: "the answer is 7 or 8", "answer: 2 3"."""
    tail = region[max(region.lower().rfind("answer"), 0) :]
    another = re.compile(rf"(?<![\d.]){re.escape(answer)}\$?(?:{ANOTHER_ANSWER})")
    return bool(another.search(tail))


def _plain_numbers_equal(gold: str, answer: str) -> bool | None:
    """Exact equality of two plain numbers (integers, decimals, fractions) without sympy, where that is
    what math-verify would decide; None when either is not a plain number, or the decision is its own."""
    gold_value, gold_has_decimal = _plain_number(gold)
    answer_value, answer_has_decimal = _plain_number(answer)
    if gold_value is None or answer_value is None:
        return None
    if gold_value == answer_value:
        return True
    if gold_has_decimal or answer_has_decimal:
        # math-verify rounds both to 6 decimals when either is a decimal: only a close call is its to make.
        return None if abs(gold_value - answer_value) <= Fraction(1, 10**6) else False
    return False


def _plain_number(text: str) -> tuple[Fraction | None, bool]:
    match = _PLAIN_NUMBER.fullmatch(text.strip())
    if match is None:
        return None, False
    sign = -1 if match["sign"] == "-" else 1
    if match["decimal"] is not None:
        return sign * Fraction(match["decimal"]), "." in match["decimal"]
    numerator, denominator = (match["numerator"], match["denominator"]) if match["numerator"] is not None else (match["over"], match["under"])
    if int(denominator) == 0:
        return None, False
    return sign * Fraction(int(numerator), int(denominator)), False


def far_apart(gold_parsed: tuple, answer_parsed: tuple, timeout_seconds: int) -> bool:
    """Whether gold and answer are two expressions (numbers, or with variables) whose values differ by
    more than 1e-6 (relative, and absolute near 0), all variables at the same fixed point: then no rule
    of math-verify's makes them equal (it compares their text, rounds decimals to 6 places, evaluates
    their difference to 15 digits, and simplifies it symbolically, which cannot make two functions that
    differ somewhere equal), and `verify`, whose symbolic simplification is most of the cost of a wrong
    answer, need not run. Left to it: a bare symbol (it compares those by name), relations, sets and
    matrices, anything that does not evaluate to a finite number there, and percentages (the caller's
    check: it reads 9% as 9)."""
    expressions = _expressions(gold_parsed, answer_parsed)
    if expressions is None:
        return False
    gold, answer = expressions
    point = {symbol: EVALUATION_POINT[index % len(EVALUATION_POINT)] for index, symbol in enumerate(sorted(gold.free_symbols | answer.free_symbols, key=str))}
    values = _within_timeout(lambda: (complex(gold.evalf(20, subs=point)), complex(answer.evalf(20, subs=point))), timeout_seconds)
    if values is None or not all(cmath.isfinite(value) for value in values):
        return False
    gold_value, answer_value = values
    return abs(gold_value - answer_value) > NUMERIC_TOLERANCE * max(1.0, abs(gold_value), abs(answer_value))


def _expressions(gold_parsed: tuple, answer_parsed: tuple) -> tuple[Expr, Expr] | None:
    """The two parses' expressions, if both are expressions and neither a bare symbol."""
    gold, answer = gold_parsed[0], answer_parsed[0]
    if isinstance(gold, Expr) and isinstance(answer, Expr) and not isinstance(gold, Symbol) and not isinstance(answer, Symbol):
        return gold, answer
    return None


def _equal_only_when_rounded(gold_parsed: tuple, answer_parsed: tuple, timeout_seconds: int) -> bool:
    """Whether two exact numbers that verify called equal differ in fact (relative difference > 1e-20).

    math-verify evaluates the difference of two non-atomic numbers to 15 digits with chop=True, which
    rounds anything below about 1e-15 to 0: `\\frac{1}{2^{100}}` "equals" 0. Decimals are left to its
    rounding rule (0.333333 is 1/3 on purpose); so are sets, relations and anything with a variable.
    """
    expressions = _expressions(gold_parsed, answer_parsed)
    if expressions is None or not all(expression.is_number for expression in expressions):
        return False
    gold, answer = expressions
    if (gold.is_Atom and answer.is_Atom) or gold == answer or gold.has(Float) or answer.has(Float):
        return False  # atoms are compared exactly by math-verify; decimals are rounded on purpose

    def relative_difference() -> float:
        difference = abs((gold - answer).evalf(50))
        scale = max(abs(gold.evalf(50)), abs(answer.evalf(50)))
        return 0.0 if difference == 0 else float(difference / scale) if scale != 0 else float("inf")

    difference = _within_timeout(relative_difference, timeout_seconds)
    return difference is not None and difference > EXACT_TOLERANCE


def _within_timeout(compute: Callable[[], Any], timeout_seconds: int) -> Any:
    """`compute()` under math-verify's signal timeout, or None if it times out or sympy raises."""
    try:
        return timeout(timeout_seconds=timeout_seconds)(compute)()
    except (TimeoutException, Exception):  # sympy raises many kinds on odd numbers (zoo, nan, huge)
        return None  # math-verify's own verdict stands


def may_hold_an_answer(completion: str) -> bool:
    r"""Whether an anchored answer can be found: every anchor needs the word "answer".

    A shortcut, not a heuristic: without it, math-verify's parse returns nothing, after running every
    pattern over the whole text. That is the common case of a generation cut off by max_tokens.
    """
    return "answer" in completion.lower()


def prepare_worker() -> None:
    """Set up a scoring worker process: math-verify logs each timeout as a warning quoting the whole
    completion, which for a 200 KB completion floods the trainer's log; the pool reports its own."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
