r"""`math_accuracy`: does the completion's final answer equal the gold `answer`, by math-verify?

Scores 1.0 or 0.0, and None (not applicable) for every row whose gold is not math: prose, an ambiguous
number, a product of letters (`rewards.math_scoring.parse_gold`). Such golds are counted, distinct, in
`unusable_golds` (and `metrics()`), so that a broken dataset shows in a stage's metrics instead of as a
silent reward. The gold column is `answer` and holds only the final answer ("72", "\frac{1}{2}"), not a
worked solution and not wrapped in \boxed{}: data recipes extract it (open-r1#628 shows what parsing
whole solutions does). Which part of a completion counts as its answer, the one rule for digit
separators, and how gold and answer are compared: `rewards.answer_text` and `rewards.math_scoring`.

Timeouts. math-verify bounds its parsing and comparisons with `signal.alarm`, which works only in a
process's main thread: elsewhere it raises, and TRL's own answer there is to switch timeouts off. Here a
batch is scored inline, with math-verify's timeouts, only when called from the main thread and smaller
than `parallel_threshold`. Otherwise (a non-main thread such as TRL's async-reward event loop, or a large
batch) it goes to a pool of spawned worker processes, whose main threads can use the signal timeouts,
and where each item also runs under a wall-clock limit that nothing can outlast: a worker stuck past it is
killed and replaced, and its item scores 0.0. The caller never hangs. While a pair is scored the garbage
collector waits, since a timeout raised inside some object's finalizer is lost
(`math_scoring.collection_deferred`). In the inline path a signal cannot interrupt a long C call; set
`parallel_threshold=0` to route every batch through the pool.

Workers are started with "spawn" (see `rewards.worker_pool`), which re-imports the launching script's
main module in each worker: a script that scores with this reward needs the usual
`if __name__ == "__main__":` guard, and keeps its heavy imports out of module level if it can.
"""

import threading
from functools import partial

from rewards.answer_text import EXTRACTIONS, ReasoningTags, reasoning_answer
from rewards.worker_pool import TimedWorkerPool

# One item is at most a gold parse, an answer parse and a few gold x answer comparisons, each under
# math-verify's own timeout. The wall-clock limit only has to catch what a signal cannot interrupt.
WALL_CLOCK_TIMEOUTS_PER_ITEM = 6
# Unusable golds listed by `metrics()`: enough to see what is wrong with a dataset.
UNUSABLE_GOLD_EXAMPLES = 10


class MathAccuracy:
    """The `math_accuracy` reward; its constructor's arguments are the manifest options.

    Args:
        timeout_seconds: math-verify's timeout for each parse and each comparison (whole seconds, as
            `signal.alarm` takes). Timing out on a completion scores 0.0; on a gold, None.
        workers: processes in the scoring pool, started on the first batch that needs them.
        parallel_threshold: batches of at least this many distinct (gold, completion) pairs go to the pool
            even from the main thread. Below it, the pool's messaging costs more than it saves.
        reasoning_tags: for reasoning models, score only the answer after a closed reasoning block
            (TRL's `reasoning_accuracy_reward`): true for `<think>`/`</think>`, or a template's own
            [opening, closing] tags. An answer only inside the reasoning, or a block left open, scores
            0.0. Off by default (the embedded tiny model does not reason in tags). Where it differs
            from TRL's: a second block opened after the last closing tag scores 0.0 (TRL reads past
            it); a gold that is not math scores None even when the block never closed (TRL: 0.0);
            a message the tokenizer's response schema split (`reasoning_content`) is scored on its
            `content` (TRL would find no closing tag there and score 0.0).
        decimal_comma: the data writes decimal commas (`3,5` is 3.5); see `rewards.answer_text`.
        extraction: where a completion's answer is read. Both read an answer anchored after the last
            box ("The final answer is 7.", the completion's last word; hedged there, it scores 0.0)
            before that box, then the final box. "boxed" (the default, for training, whose prompts ask
            for a box): else what follows an "answer" anchor. "lenient" (for evaluating a model that
            may not box): else math-verify's own extraction, which also takes the last expression
            (`7 * 8 = 56.`) or a `$...$`. Either way
            one answer is read, and a box is read by the same rules against hacking (the
            adversarial suite scores 0 under both).
    """

    __name__ = "math_accuracy"  # what plain TRL logs it as (rewards/math_accuracy/mean)

    def __init__(
        self,
        timeout_seconds: int = 5,
        workers: int = 2,
        parallel_threshold: int = 32,
        reasoning_tags: bool | list[str] | None = None,
        decimal_comma: bool = False,
        extraction: str = "boxed",
    ) -> None:
        if not isinstance(timeout_seconds, int) or timeout_seconds < 1:
            # A float would reach signal.alarm, raise there, be swallowed by math-verify, and score every row 0.0.
            raise ValueError(f"timeout_seconds must be a whole number of seconds >= 1, got {timeout_seconds!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not isinstance(parallel_threshold, int) or parallel_threshold < 0:
            raise ValueError(f"parallel_threshold must be an integer >= 0, got {parallel_threshold!r}")
        if not isinstance(decimal_comma, bool):
            raise ValueError(f"decimal_comma must be true or false, got {decimal_comma!r}")
        if extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be one of {', '.join(map(repr, EXTRACTIONS))}, got {extraction!r}")
        self.timeout_seconds = timeout_seconds
        self.workers = workers
        self.parallel_threshold = parallel_threshold
        self.reasoning_tags = reasoning_tags
        self.decimal_comma = decimal_comma
        self.extraction = extraction
        self._tags = ReasoningTags.of(reasoning_tags)
        self._unusable_golds: set[str] = set()
        self._pool: TimedWorkerPool | None = None
        self._pool_lock = threading.Lock()

    def __call__(self, prompts: list, completions: list, answer: list, **kwargs: object) -> list[float | None]:
        # Only the answer part travels to the scorer: the reasoning block is cut off here, in the caller.
        pairs = [
            (_gold_text(gold), reasoning_answer(completion, self._tags)) for gold, completion in zip(answer, completions, strict=True)
        ]
        # GRPO groups often repeat a completion word for word; score each distinct pair once.
        distinct_pairs = list(dict.fromkeys(pairs))
        score_of = dict(zip(distinct_pairs, self._score(distinct_pairs), strict=True))
        self._unusable_golds.update(gold or "" for (gold, _), score in score_of.items() if score is None)
        return [score_of[pair] for pair in pairs]

    @property
    def unusable_golds(self) -> int:
        """How many distinct golds scored None so far (not math, or missing): each is a broken dataset row."""
        return len(self._unusable_golds)

    def metrics(self) -> dict[str, int | list[str]]:
        """For a stage's metrics: the count of distinct unusable golds and the first few of them, sorted."""
        return {"unusable_golds": self.unusable_golds, "unusable_gold_examples": sorted(self._unusable_golds)[:UNUSABLE_GOLD_EXAMPLES]}

    def close(self) -> None:
        """Stop the worker processes (they also stop when this reward is garbage collected)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _score(self, pairs: list[tuple[str | None, str | None]]) -> list[float | None]:
        # Imported here, not at the top: math_verify takes ~0.3 s to import, which `gradus plan` should not pay.
        from rewards import math_scoring

        score = partial(
            math_scoring.score_pair, timeout_seconds=self.timeout_seconds, decimal_comma=self.decimal_comma, extraction=self.extraction
        )
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread and len(pairs) < self.parallel_threshold:
            return [score(pair) for pair in pairs]
        with self._pool_lock:
            if self._pool is None:
                self._pool = TimedWorkerPool(
                    task=score,
                    workers=self.workers,
                    item_seconds=WALL_CLOCK_TIMEOUTS_PER_ITEM * self.timeout_seconds + 1,
                    timeout_result=0.0,
                    initializer=math_scoring.prepare_worker,
                    name="math_accuracy",
                )
            return self._pool.map(pairs)

    def __getstate__(self) -> dict:
        """Pickle the options only: TRL may send reward functions to another process, which starts its own pool."""
        return {
            "timeout_seconds": self.timeout_seconds, "workers": self.workers, "parallel_threshold": self.parallel_threshold,
            "reasoning_tags": self.reasoning_tags, "decimal_comma": self.decimal_comma, "extraction": self.extraction,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


def _gold_text(gold: object) -> str | None:
    """Golds arrive as strings, but a dataset may store numbers (AMC's 27.0); None marks a row without one."""
    return None if gold is None else str(gold).strip()
