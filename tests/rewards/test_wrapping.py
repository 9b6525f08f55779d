"""`RewardWrapper`: one script, sync around a sync reward and async around an async one."""

import asyncio
import functools
import inspect
import pickle
from pathlib import Path

import pytest

from rewards import GuardedReward, RewardWrapper, build, is_async, required_columns
from rewards.shaping import AnswerFormat


class Clipped(RewardWrapper):
    """Caps every score at `ceiling` and counts the batches it saw: a hook over the wrapped call's scores."""

    def __init__(self, reward_fn, ceiling: float) -> None:
        super().__init__(reward_fn)
        self.ceiling = ceiling
        self.batches = 0

    def script(self, prompts, completions, **columns):
        scores = yield {"prompts": prompts, "completions": completions, **columns}
        self.batches += 1
        return [min(score, self.ceiling) for score in scores]


def lengths(prompts: list, completions: list, bonus: list[float], **kwargs: object) -> list[float]:
    return [len(text) + extra for text, extra in zip(completions, bonus)]


async def async_lengths(prompts: list, completions: list, bonus: list[float], **kwargs: object) -> list[float]:
    await asyncio.sleep(0)
    return lengths(prompts, completions, bonus)


class AsyncCallable:
    async def __call__(self, prompts: list, completions: list, **kwargs: object) -> list[float]:
        return [1.0] * len(completions)


def test_is_async_covers_the_forms_trl_awaits() -> None:
    assert is_async(async_lengths) and is_async(AsyncCallable()) and is_async(functools.partial(async_lengths, bonus=[0]))
    assert not is_async(lengths) and not is_async(AnswerFormat()) and not is_async(functools.partial(lengths, bonus=[0]))


def test_one_script_is_sync_for_a_sync_reward_and_async_for_an_async_one() -> None:
    sync, asynchronous = Clipped(lengths, ceiling=4), Clipped(async_lengths, ceiling=4)
    assert not is_async(sync) and is_async(asynchronous)
    assert isinstance(asynchronous, Clipped) and type(asynchronous) is not Clipped
    batch = {"prompts": ["?", "?"], "completions": ["ab", "abcdef"], "bonus": [1.0, 0.0]}
    assert sync(**batch) == [3.0, 4.0]
    assert asyncio.run(asynchronous(**batch)) == [3.0, 4.0]
    assert sync.batches == asynchronous.batches == 1
    # TRL logs a reward by __name__, and the registry reads the wrapped reward's columns through __wrapped__.
    assert sync.__name__ == "lengths" and asynchronous.__name__ == "async_lengths"
    assert required_columns(sync) == required_columns(asynchronous) == {"bonus"}


def test_the_wrapped_rewards_exception_is_raised_inside_the_script() -> None:
    class Fallback(RewardWrapper):
        def script(self, prompts, completions, **columns):
            try:
                return (yield {"prompts": prompts, "completions": completions, **columns})
            except ZeroDivisionError:
                return [0.0] * len(completions)

    def broken(prompts: list, completions: list, **kwargs: object) -> list[float]:
        return [1 / 0]

    async def async_broken(prompts: list, completions: list, **kwargs: object) -> list[float]:
        return broken(prompts, completions)

    assert Fallback(broken)(["?"], ["a"]) == [0.0]
    assert asyncio.run(Fallback(async_broken)(["?"], ["a"])) == [0.0]
    with pytest.raises(ZeroDivisionError):
        RewardWrapper(broken)(["?"], ["a"])  # a script that does not catch lets it through


def test_both_kinds_pickle_and_keep_their_kind() -> None:
    asynchronous = pickle.loads(pickle.dumps(Clipped(async_lengths, ceiling=2)))
    assert is_async(asynchronous) and asynchronous.ceiling == 2
    assert asyncio.run(asynchronous(["?"], ["abc"], bonus=[0.0])) == [2.0]
    sync = pickle.loads(pickle.dumps(Clipped(lengths, ceiling=2)))
    assert type(sync) is Clipped and sync(["?"], ["abc"], bonus=[0.0]) == [2.0]


def test_guarded_reward_is_built_on_it(plugins_on_path: Path) -> None:
    guarded = build("reward_plugins:async_fails_on_boom", {})
    assert isinstance(guarded, GuardedReward) and inspect.iscoroutinefunction(type(guarded).__call__)
    assert asyncio.run(guarded(["?", "?"], ["boom", "fine"])) == [None, 1.0]
    assert guarded.metrics() == {"errors": 1}
    restored = pickle.loads(pickle.dumps(guarded))
    assert is_async(restored) and restored.errors == 1 and restored.__name__ == "reward_plugins:async_fails_on_boom"
