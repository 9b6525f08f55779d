"""Reward wrappers written once, sync for a sync reward and async for an async one.

TRL awaits an `async def` reward (concurrently with the other async ones, on its event loop) and calls
a plain one directly; it tells them apart by whether `__call__` is a coroutine function. A wrapper
around a reward (guarding it, feeding its scores to a curriculum, counting something) must therefore
be async exactly when the reward it wraps is, or TRL would either never await the inner coroutine or
await a list. Writing each wrapper twice, once with `await`, is how the copies drift apart.

`RewardWrapper` holds that logic once. A subclass writes its behaviour as the generator `script`: it
yields the keyword arguments of each call it wants made of the wrapped reward, receives that call's
result at the `yield` (or has the reward's exception raised there), and returns the scores.
Constructing a subclass with an async reward gives an instance of its async twin, made once per class,
whose `__call__` awaits each call; with a sync reward, an instance of the class itself. So:

    class Clipped(RewardWrapper):
        def script(self, prompts, completions, **columns):
            scores = yield {"prompts": prompts, "completions": completions, **columns}
            return [None if score is None else min(score, 1.0) for score in scores]

    Clipped(sync_reward)(prompts, completions)            # a list
    await Clipped(async_reward)(prompts, completions)     # a list too, awaited as TRL does

The wrapped reward is always the first constructor argument (that is how the twin is chosen). Both
kinds pickle (an async twin is rebuilt from its class and state). `__name__` is the wrapped reward's
unless given, since TRL logs a reward by it, and `__wrapped__` lets `inspect.signature` (and so the
registry's column checks) see the wrapped reward's parameters.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator
from typing import Any

RewardCall = dict[str, Any]  # keyword arguments of one call of the wrapped reward
Script = Generator[RewardCall, Any, Any]


def is_async(reward_fn: Callable) -> bool:
    """Whether calling `reward_fn` returns a coroutine: an `async def` function, a `functools.partial`
    of one, or an object whose `__call__` is `async def`. The forms TRL's `is_async_callable` accepts,
    without importing TRL (the planner imports `rewards`)."""
    while isinstance(reward_fn, functools.partial):
        reward_fn = reward_fn.func
    return inspect.iscoroutinefunction(reward_fn) or inspect.iscoroutinefunction(getattr(reward_fn, "__call__", None))


class RewardWrapper:
    """Base of a reward that wraps another; override `script`. See the module docstring."""

    def __new__(cls, *args: Any, **kwargs: Any) -> RewardWrapper:
        # The wrapped reward is the first argument; unpickling calls __new__ with none, and gets `cls`.
        reward_fn = args[0] if args else kwargs.get("reward_fn")
        return super().__new__(_async_twin(cls) if reward_fn is not None and is_async(reward_fn) else cls)

    def __init__(self, reward_fn: Callable, name: str | None = None) -> None:
        self.reward_fn = reward_fn
        self.__wrapped__ = reward_fn
        self.__name__ = name if name is not None else getattr(reward_fn, "__name__", type(reward_fn).__name__)

    def script(self, prompts: list, completions: list, **columns: Any) -> Script:
        """The wrapper's behaviour: `result = yield call_kwargs` calls the wrapped reward; return the scores.

        The default passes the batch through unchanged.
        """
        return (yield {"prompts": prompts, "completions": completions, **columns})

    def __call__(self, prompts: list, completions: list, **columns: Any) -> Any:
        script = self.script(prompts, completions, **columns)
        try:
            call = next(script)
            while True:
                try:
                    result = self.reward_fn(**call)
                except Exception as error:  # the script decides what a failing call means
                    call = script.throw(error)
                else:
                    call = script.send(result)
        except StopIteration as finished:
            return finished.value


@functools.cache
def _async_twin(cls: type[RewardWrapper]) -> type[RewardWrapper]:
    """`cls` with an async `__call__` that awaits each call its script asks for."""
    if getattr(cls, "_is_async_twin", False):
        return cls

    async def __call__(self: RewardWrapper, prompts: list, completions: list, **columns: Any) -> Any:
        script = self.script(prompts, completions, **columns)
        try:
            call = next(script)
            while True:
                try:
                    result = await self.reward_fn(**call)
                except Exception as error:
                    call = script.throw(error)
                else:
                    call = script.send(result)
        except StopIteration as finished:
            return finished.value

    def __reduce__(self: RewardWrapper) -> tuple[Callable, tuple]:
        return _rebuild_async, (cls, self.__getstate__())

    return type(cls.__name__, (cls,), {
        "__call__": __call__,
        "__reduce__": __reduce__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": f"{cls.__name__} around an `async def` reward: each call of it is awaited.",
        "_is_async_twin": True,
    })


def _rebuild_async(cls: type[RewardWrapper], state: Any) -> RewardWrapper:
    """Unpickle an async twin's instance: its class is made at run time, so it is found again from `cls`."""
    instance = object.__new__(_async_twin(cls))
    if hasattr(instance, "__setstate__"):
        instance.__setstate__(state)
    else:
        instance.__dict__.update(state)
    return instance
