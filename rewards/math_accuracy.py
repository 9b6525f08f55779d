r"""`math_accuracy`: does the completion's final answer equal the gold `answer`, by math-verify?

Scores 1.0 or 0.0, and None (not applicable) for a row whose gold cannot be parsed. The gold column is
`answer` and holds only the final answer ("72", "\frac{1}{2}"), not a worked solution and not wrapped in
\boxed{}: data recipes extract it (open-r1#628 shows what parsing whole solutions does). Which part of a
completion counts as its answer, and how the gold is parsed, is documented in `rewards.math_scoring`.

Timeouts. math-verify bounds its parsing and comparisons with `signal.alarm`, which works only in a
process's main thread: elsewhere it raises, and TRL's own answer there is to switch timeouts off. Here a
batch is scored inline, with math-verify's timeouts, only when called from the main thread and smaller
than `parallel_threshold`. Otherwise (a non-main thread such as TRL's async-reward event loop, or a large
batch) it goes to a pool of spawned worker processes, whose main threads can use the signal timeouts,
and where each item also runs under a wall-clock limit that nothing can outlast: a worker stuck past it is
killed and replaced, and its item scores 0.0. The caller never hangs. In the inline path a signal cannot
interrupt a long C call; set `parallel_threshold=0` to route every batch through the pool.

Workers are started with "spawn" (see `rewards.worker_pool`), which re-imports the launching script's
main module in each worker: a script that scores with this reward needs the usual
`if __name__ == "__main__":` guard, and keeps its heavy imports out of module level if it can.
"""

import threading
from functools import partial

from rewards.completions import completion_text
from rewards.worker_pool import TimedWorkerPool

# One item is at most a gold parse, an answer parse and a few gold x answer comparisons, each under
# math-verify's own timeout. The wall-clock limit only has to catch what a signal cannot interrupt.
WALL_CLOCK_TIMEOUTS_PER_ITEM = 6


class MathAccuracy:
    """The `math_accuracy` reward; its constructor's arguments are the manifest options.

    Args:
        timeout_seconds: math-verify's timeout for each parse and each comparison (whole seconds, as
            `signal.alarm` takes). Timing out on a completion scores 0.0; on a gold, None.
        workers: processes in the scoring pool, started on the first batch that needs them.
        parallel_threshold: batches of at least this many distinct (gold, completion) pairs go to the pool
            even from the main thread. Below it, the pool's messaging costs more than it saves.
    """

    __name__ = "math_accuracy"  # what plain TRL logs it as (rewards/math_accuracy/mean)

    def __init__(self, timeout_seconds: int = 5, workers: int = 2, parallel_threshold: int = 32) -> None:
        if not isinstance(timeout_seconds, int) or timeout_seconds < 1:
            # A float would reach signal.alarm, raise there, be swallowed by math-verify, and score every row 0.0.
            raise ValueError(f"timeout_seconds must be a whole number of seconds >= 1, got {timeout_seconds!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not isinstance(parallel_threshold, int) or parallel_threshold < 0:
            raise ValueError(f"parallel_threshold must be an integer >= 0, got {parallel_threshold!r}")
        self.timeout_seconds = timeout_seconds
        self.workers = workers
        self.parallel_threshold = parallel_threshold
        self._pool: TimedWorkerPool | None = None
        self._pool_lock = threading.Lock()

    def __call__(self, prompts: list, completions: list, answer: list, **kwargs: object) -> list[float | None]:
        pairs = [(_gold_text(gold), completion_text(completion)) for gold, completion in zip(answer, completions, strict=True)]
        # GRPO groups often repeat a completion word for word; score each distinct pair once.
        distinct_pairs = list(dict.fromkeys(pairs))
        score_of = dict(zip(distinct_pairs, self._score(distinct_pairs), strict=True))
        return [score_of[pair] for pair in pairs]

    def close(self) -> None:
        """Stop the worker processes (they also stop when this reward is garbage collected)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _score(self, pairs: list[tuple[str | None, str]]) -> list[float | None]:
        # Imported here, not at the top: math_verify takes ~0.3 s to import, which `gradus plan` should not pay.
        from rewards import math_scoring

        score = partial(math_scoring.score_pair, timeout_seconds=self.timeout_seconds)
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
        return {"timeout_seconds": self.timeout_seconds, "workers": self.workers, "parallel_threshold": self.parallel_threshold}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


def _gold_text(gold: object) -> str | None:
    """Golds arrive as strings, but a dataset may store numbers (AMC's 27.0); None marks a row without one."""
    return None if gold is None else str(gold).strip()
