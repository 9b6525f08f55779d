"""Small reward plugins that the tests name by `module:function` path or entry point.

Importable as `reward_plugins` once this directory is on sys.path (the `plugins_on_path` fixture).
"""

import time


def shout_reward(prompts: list, completions: list, **kwargs: object) -> list[float]:
    """1.0 for a completion in capitals: a plugin that needs no column."""
    return [1.0 if completion.isupper() else 0.0 for completion in completions]


def keyword_reward(prompts: list, completions: list, keyword: list[str], **kwargs: object) -> list[float]:
    """1.0 when the completion contains the row's `keyword` column."""
    return [1.0 if word in completion else 0.0 for word, completion in zip(keyword, completions, strict=True)]


class Threshold:
    """A factory that is a class: its options are the constructor's, its columns its `__call__`'s."""

    def __init__(self, minimum_chars: int) -> None:
        self.minimum_chars = minimum_chars

    def __call__(self, prompts: list, completions: list, weight: list[float], **kwargs: object) -> list[float]:
        return [w if len(c) >= self.minimum_chars else 0.0 for c, w in zip(completions, weight, strict=True)]


def fails_on_boom(prompts: list, completions: list, **kwargs: object) -> list[float]:
    """Raises for the whole batch if any completion says "boom", as a careless plugin would."""
    if any("boom" in completion for completion in completions):
        raise ValueError("cannot score 'boom'")
    return [1.0] * len(completions)


def always_fails(prompts: list, completions: list, **kwargs: object) -> list[float]:
    return [1.0 / 0 for _ in completions]


async def async_fails_on_boom(prompts: list, completions: list, **kwargs: object) -> list[float]:
    return fails_on_boom(prompts, completions)


def double_or_hang(number: int) -> int:
    """A pool task that never returns for a negative number, like a worker stuck in a C call."""
    if number < 0:
        time.sleep(3600)
    return 2 * number
