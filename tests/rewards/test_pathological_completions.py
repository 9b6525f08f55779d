"""Hang detectors: a hostile completion must be scored, not crash or stall the caller.

The time bounds are generous on purpose: they catch hangs, they do not measure speed.
"""

import gc
import sys
import time
from pathlib import Path

import pytest

from rewards import build
from rewards.worker_pool import TimedWorkerPool

PATHOLOGICAL = {
    "200 KB": "x" * 200_000 + r" so the answer is \boxed{3}",
    "power tower": r"so the answer is \boxed{9^{9^{9^{9}}}}",
    "10,000 nested braces": "\\boxed{" + "{" * 10_000 + "3" + "}" * 10_000 + "}",
    "10,000 unclosed boxes": "\\boxed{" * 10_000,
    "lone surrogate": "\ud800 \\boxed{\ud800}",
    "empty": "",
}
BUILTINS = {
    "math_accuracy inline": ("math_accuracy", {"timeout_seconds": 1}),
    "math_accuracy pool": ("math_accuracy", {"timeout_seconds": 1, "parallel_threshold": 0}),
    "format": ("format", {"tags": ["answer"]}),
    "length": ("length", {"max_tokens": 100}),
    "repetition": ("repetition", {}),
}


@pytest.mark.parametrize("builtin", BUILTINS)
def test_every_builtin_scores_pathological_completions(builtin: str, hang_guard: None) -> None:
    name, options = BUILTINS[builtin]
    reward = build(name, options)
    started = time.monotonic()
    scores = reward(["?"] * len(PATHOLOGICAL), list(PATHOLOGICAL.values()), answer=["3"] * len(PATHOLOGICAL))
    elapsed = time.monotonic() - started
    getattr(reward.reward_fn, "close", lambda: None)()
    assert elapsed < 30
    assert reward.errors == 0
    assert all(isinstance(score, float) for score in scores), scores
    if name == "math_accuracy":
        assert scores == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_a_hung_worker_is_replaced_and_its_item_gets_the_timeout_result(plugins_on_path: Path, hang_guard: None) -> None:
    from reward_plugins import double_or_hang

    pool = TimedWorkerPool(task=double_or_hang, workers=2, item_seconds=2, timeout_result=-1)
    try:
        started = time.monotonic()
        assert pool.map([1, 2, -1, 3, 4, 5]) == [2, 4, -1, 6, 8, 10]
        assert time.monotonic() - started < 30
        assert pool.replaced_workers == 1
        assert pool.map([7]) == [14]  # the replacement works
    finally:
        pool.close()


def test_a_raising_task_fails_the_map_after_the_rest_is_done() -> None:
    pool = TimedWorkerPool(task=int, workers=1, item_seconds=10, timeout_result=None)
    try:
        with pytest.raises(RuntimeError, match=r"1 of 3 items raised; first: ValueError"):
            pool.map(["1", "x", "3"])
        assert pool.map(["4"]) == [4]
    finally:
        pool.close()


def test_no_finalizer_runs_while_a_pair_is_scored(hang_guard: None) -> None:
    """math-verify's timeouts raise from SIGALRM; one raised inside an unrelated object's `__del__` is
    swallowed there and the timeout is lost (a power tower then took 49 s in a CI run). With a
    collection due at every allocation and garbage that leaves a successor, finalizers run all the
    time, and never inside a pair's scoring."""
    reward = build("math_accuracy", {"timeout_seconds": 1})
    reward(["?"], [r"\boxed{3}"], answer=["3"])  # math-verify imported before the garbage starts
    inside_scoring, chain = [], {"alive": True}

    class Garbage:
        def __init__(self) -> None:
            self.cycle = self  # only the cyclic collector frees it

        def __del__(self) -> None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_name != "score_pair":
                frame = frame.f_back
            inside_scoring.append(frame is not None)
            if chain["alive"]:
                Garbage()

    thresholds = gc.get_threshold()
    gc.set_threshold(1)
    try:
        Garbage()
        scores = reward(["?"], [PATHOLOGICAL["power tower"]], answer=["3"])
    finally:
        chain["alive"] = False
        gc.set_threshold(*thresholds)
        gc.collect()
    assert scores == [0.0] and reward.errors == 0
    assert len(inside_scoring) > 1  # the chain ran before and after the scoring
    assert not any(inside_scoring)
