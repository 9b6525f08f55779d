"""Reward functions for gradus's RL stages, looked up by the names a manifest gives them.

The contract is TRL's: a reward function is `fn(prompts, completions, **columns) -> list[float | None]`.
Completions are strings or lists of chat messages; each dataset column arrives as a keyword list
(`answer=[...]`), next to TRL's extras (`completion_ids`, `trainer_state`, `log_extra`, `log_metric`);
None means "not applicable to this row". Any TRL reward function works here unchanged, and gradus's
built-ins work in plain TRL.

A manifest names a reward and its options. The name is, in lookup order:
  * a built-in: `math_accuracy` (column `answer`), `format`, `length` (alias `overlong`), `repetition`,
    `prm` (a trained process reward model, `rewards.prm`: the one reward that imports torch, on first call);
  * an entry point in group `gradus.rewards` of an installed distribution, e.g. in its pyproject:
        [project.entry-points."gradus.rewards"]
        my_reward = "my_package.rewards:my_reward"
  * a `package.module:function` path to anything importable.
A resolved callable with a `completions` parameter is the reward function; anything else is a factory,
called with the options (built-ins are factories: `length` takes `max_tokens`, `cache_tokens`). Its
other parameters without defaults are the dataset columns it needs.

Trust boundary: a reward plugin is code, and gradus runs it by design. `resolve`, `check` and `build`
import whatever module a manifest names, which executes that module; only run manifests you trust.
gradus never evaluates strings taken from data or manifests: names are imported, options are passed as
keyword arguments, completions and answers are only ever parsed as text.

API:
  resolve(name) -> the reward function or factory a name stands for
  required_columns(reward_fn) -> the dataset columns it needs
  check(name, options, columns) -> None, or RewardSpecError (plan time: cheap, imports no torch)
  build(name, options) -> a GuardedReward: bad rows score None and are counted in `.errors`;
      RewardError when a whole batch fails; `.metrics()` is what a stage reports for it
  RewardWrapper, is_async -> the building block for a wrapper around a reward that must stay sync for
      a sync reward and async for an async one (`rewards.wrapping`)
"""

from rewards.registry import (
    GuardedReward,
    RewardError,
    RewardSpecError,
    build,
    check,
    required_columns,
    resolve,
)
from rewards.wrapping import RewardWrapper, is_async

__all__ = [
    "GuardedReward", "RewardError", "RewardSpecError", "RewardWrapper", "build", "check", "is_async", "required_columns", "resolve",
]
