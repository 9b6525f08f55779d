"""Score one (gold answer, completion text) pair with math-verify, in the main thread of the calling process.

This module holds everything that imports math_verify (sympy + ANTLR, ~0.3 s to import), so that
`gradus plan`, which only checks signatures, never pays for it, and so that worker processes import
only what they run. Its functions rely on math-verify's own `signal.alarm` timeouts, which work only in
a process's main thread: `rewards.math_accuracy` calls them inline from the main thread, or in a worker
process (whose main thread runs them).
"""

import logging
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

# Where the answer is read from a completion, in math-verify's priority order: a \boxed{} first
# (priority 0; among matches math-verify tries the rightmost first, so the last box wins), then
# "final answer is ..." and "answer: ..." anchors, in LaTeX or as a plain number or expression.
# try_extract_without_anchor=False, as in TRL's and open-r1's accuracy_reward, so that a number met in
# the reasoning never counts as the answer.
# Unlike TRL and open-r1, the LaTeX normalisation is math-verify's default (malformed_operators and
# nits on), the same one the gold gets: with theirs, MATH-500 golds written `\frac43` or `11\sqrt2`
# do not verify against themselves.
ANSWER_EXTRACTION = (
    LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
    ExprExtractionConfig(try_extract_without_anchor=False),
)

# GRPO scores every gold num_generations times per step; distinct golds over a run are in the thousands.
GOLD_CACHE_SIZE = 65_536


@lru_cache(maxsize=GOLD_CACHE_SIZE)
def parse_gold(gold: str, timeout_seconds: int) -> list:
    r"""Parse a gold answer, once per process.

    The gold is wrapped in \boxed{} so that math-verify reads the whole string as the answer. Parsed raw,
    as TRL's accuracy_reward does, 131 of the 500 MATH-500 golds parse differently, many wrongly:
    `3\sqrt{13}` reads as 3, `6 - 5i` as 5, `\left( 3, \frac{\pi}{2} \right)` as 3, and `\pi` or `p - q` not at all.
    A gold whose parse timed out is cached as unparseable, like any other that yields nothing.
    """
    return parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout_seconds)


def score_pair(pair: tuple[str | None, str], timeout_seconds: int) -> float | None:
    """1.0 if the completion's answer verifies against the gold, 0.0 if not, None if the gold is unusable.

    None, never 1.0, for a gold that cannot be parsed: open-r1 once rewarded those 1.0 (open-r1#293).
    The gold goes first to `verify`, which is asymmetric (open-r1#557 had them swapped).
    """
    gold, completion = pair
    if not gold:
        return None
    gold_parsed = parse_gold(gold, timeout_seconds)
    if not gold_parsed:
        return None
    if not may_hold_an_answer(completion):
        return 0.0
    answer_parsed = parse(
        completion,
        extraction_config=ANSWER_EXTRACTION,
        extraction_mode="first_match",
        parsing_timeout=timeout_seconds,
    )
    return 1.0 if verify(gold_parsed, answer_parsed, timeout_seconds=timeout_seconds) else 0.0


def may_hold_an_answer(completion: str) -> bool:
    r"""Whether ANSWER_EXTRACTION can find anything: each of its patterns needs \boxed or the word "answer".

    A shortcut, not a heuristic: without either, math-verify's parse returns nothing, after running every
    pattern over the whole text. That is the common case of a generation cut off by max_tokens.
    """
    return "\\boxed" in completion or "answer" in completion.lower()


def prepare_worker() -> None:
    """Set up a scoring worker process: math-verify logs each timeout as a warning quoting the whole
    completion, which for a 200 KB completion floods the trainer's log; the pool reports its own."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
