"""Find a reward by the name a manifest gives it, check it against the data at plan time, build it guarded.

The public functions are re-exported by `rewards` (see its docstring for the contract).
"""

import importlib
import inspect
import logging
import numbers
from collections.abc import Callable, Collection, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from data_recipes import suggest
from rewards.math_accuracy import MathAccuracy
from rewards.prm import ProcessReward
from rewards.shaping import AnswerFormat, OverlongPenalty, RepetitionPenalty
from rewards.wrapping import RewardWrapper, Script

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gradus.rewards"

BUILTIN_REWARDS: Mapping[str, Callable[..., Callable]] = {
    "math_accuracy": MathAccuracy,
    "format": AnswerFormat,
    "length": OverlongPenalty,
    "overlong": OverlongPenalty,
    "repetition": RepetitionPenalty,
    "prm": ProcessReward,
}

# Arguments TRL passes to every reward function: not dataset columns.
TRL_ARGUMENTS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)

PREVIEW_CHARS = 200


class RewardSpecError(ValueError):
    """A manifest names a reward, an option or a column that does not fit. The message is one line."""


class RewardError(RuntimeError):
    """A reward failed on every row of a batch. The stage stops rather than train on made-up rewards."""


def resolve(name: str) -> Callable:
    """The reward function or factory `name` stands for.

    Looked up, in order: a built-in name; an entry point of an installed distribution in group
    `gradus.rewards`; a `package.module:function` path, imported (and so run) as it is.
    """
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    plugin = _entry_point(name)
    if plugin is not None:
        return _load(name, plugin.load, f"entry point {plugin.value!r}")
    if ":" in name:
        return _import_path(name)
    raise RewardSpecError(_unknown_name_message(name))


def required_columns(reward_fn: Callable) -> set[str]:
    """The dataset columns a reward function needs: its parameters other than TRL's own arguments.

    A parameter with a default is optional (TRL passes a column only if the dataset has it), so it is
    not required; `**kwargs` takes whatever else there is.
    """
    return _columns(_signature(reward_fn))


def check(name: str, options: Mapping[str, Any], columns: Collection[str]) -> None:
    """Plan-time validation of one manifest reward entry; raises RewardSpecError, returns None if it fits.

    It resolves (importing the plugin), checks the options against the factory's signature, and checks
    that the data has the columns the reward function needs. To learn those columns without building
    anything, a factory that is a class is read from its `__call__`; a factory that is a function has to
    be called, so plugin authors should keep function factories cheap, or make them classes. Built-ins
    are built, so that their option values are checked too (their constructors only validate and store).
    """
    target = resolve(name)
    if _is_reward_function(target):
        _reject_options(name, options)
        needed = required_columns(target)
    elif isinstance(target, type) and inspect.isfunction(getattr(target, "__call__", None)) and name not in BUILTIN_REWARDS:
        _check_options(name, target, options)
        needed = _columns(_instance_call_signature(target))
    else:
        needed = required_columns(_make(name, target, options))
    missing = sorted(needed - set(columns))
    if missing:
        raise RewardSpecError(
            f"reward {name!r} needs dataset column {', '.join(map(repr, missing))}, which the data lacks; "
            f"available columns: {', '.join(sorted(columns)) or 'none'}"
        )


def build(name: str, options: Mapping[str, Any]) -> Callable:
    """The reward function for a manifest entry, wrapped by `GuardedReward` and named `name`.

    A resolved callable with a `completions` parameter is the reward function (and takes no options);
    anything else is a factory, called with the options.
    """
    target = resolve(name)
    if _is_reward_function(target):
        _reject_options(name, options)
        reward_fn = target
    else:
        reward_fn = _make(name, target, options)
    return GuardedReward(reward_fn, name)


class GuardedReward(RewardWrapper):
    """A reward function that survives bad rows, so one odd completion cannot stop a training run.

    If the batch call raises (or returns something other than one number or None per completion), the
    batch is scored again row by row; a row that still fails scores None (TRL then ignores it for this
    reward), is counted in `errors`, and is logged with its completion, once per distinct error. A batch
    in which every row fails raises RewardError: then the reward itself is broken.
    `__name__` is the manifest name, which TRL uses in its logs (rewards/<name>/mean). Built on
    `RewardWrapper`, so it is async (awaited by TRL with the other async rewards) exactly when the
    wrapped reward is.
    """

    def __init__(self, reward_fn: Callable, name: str) -> None:
        super().__init__(reward_fn, name)
        self.errors = 0
        self._logged: set[tuple[str, str, str]] = set()

    def metrics(self) -> dict[str, Any]:
        """What a stage puts in its metrics for this reward: `errors`, plus the wrapped reward's own
        `metrics()` if it has one (`math_accuracy`'s count of unusable golds, and the first of them)."""
        own = getattr(self.reward_fn, "metrics", None)
        return {"errors": self.errors, **(own() if callable(own) else {})}

    def script(self, prompts: list, completions: list, **columns: Any) -> Script:
        try:
            return _as_rewards((yield {"prompts": prompts, "completions": completions, **columns}), len(completions))
        except Exception as batch_error:
            self._log_once("batch", batch_error, f"raised on a batch of {len(completions)} ({_describe(batch_error)}); scoring row by row")
        outcomes: list[float | None | Exception] = []
        for row in _rows(prompts, completions, columns):
            try:
                outcomes.append(_as_rewards((yield row), 1)[0])
            except Exception as row_error:
                outcomes.append(row_error)
        return self._settle(outcomes, completions)

    def _settle(self, outcomes: list[float | None | Exception], completions: list) -> list[float | None]:
        """Count and log the failed rows; None in their place, or RewardError if no row succeeded."""
        failures = [(outcome, completion) for outcome, completion in zip(outcomes, completions) if isinstance(outcome, Exception)]
        for error, completion in failures:
            self.errors += 1
            self._log_once("row", error, f"raised {_describe(error)} on completion {_preview(completion)}")
        if failures and len(failures) == len(outcomes):
            first_error = failures[0][0]
            raise RewardError(
                f"reward {self.__name__!r} failed on all {len(outcomes)} rows of a batch: {_describe(first_error)}"
            ) from first_error
        return [None if isinstance(outcome, Exception) else outcome for outcome in outcomes]

    def _log_once(self, where: str, error: Exception, message: str) -> None:
        key = (where, type(error).__name__, str(error)[:PREVIEW_CHARS])
        if key not in self._logged:
            self._logged.add(key)
            logger.warning("reward %r %s [each distinct error is logged once]", self.__name__, message)


def _rows(prompts: list, completions: list, columns: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One-row batches: per-row lists (prompts, columns, completion_ids) are sliced, TRL's extras passed whole."""
    batch = {"prompts": prompts, "completions": completions, **columns}
    batch_size = len(completions)
    for row in range(batch_size):
        yield {
            key: value[row : row + 1] if isinstance(value, list) and len(value) == batch_size else value
            for key, value in batch.items()
        }


def _as_rewards(result: Any, expected: int) -> list[float | None]:
    """Check a reward function's result: one real number or None per completion."""
    if isinstance(result, (str, bytes, Mapping)) or not hasattr(result, "__iter__"):
        raise TypeError(f"a reward function must return a list, got {type(result).__name__}")
    values = list(result)
    if len(values) != expected:
        raise ValueError(f"returned {len(values)} rewards for {expected} completions")
    for value in values:
        if value is not None and not isinstance(value, numbers.Real):
            raise TypeError(f"a reward must be a number or None, got {type(value).__name__}")
    return [None if value is None else float(value) for value in values]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {_truncate(str(error))}"


def _preview(completion: object) -> str:
    return _truncate(repr(completion))  # repr: escapes newlines and lone surrogates, which a log stream may reject


def _truncate(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else f"{text[:PREVIEW_CHARS]}... ({len(text)} chars)"


def _entry_point(name: str) -> EntryPoint | None:
    matches = {plugin.value: plugin for plugin in entry_points(group=ENTRY_POINT_GROUP).select(name=name)}
    if len(matches) > 1:
        raise RewardSpecError(f"reward {name!r} is declared by several entry points: {', '.join(sorted(matches))}")
    return next(iter(matches.values()), None)


def _import_path(path: str) -> Callable:
    module_name, _, attribute_path = path.partition(":")
    if not module_name or not attribute_path:
        raise RewardSpecError(f"reward {path!r}: a plugin path is 'package.module:function'")
    target: Any = _load(path, lambda: importlib.import_module(module_name), f"module {module_name!r}")
    owner = module_name
    for attribute in attribute_path.split("."):
        if not hasattr(target, attribute):
            public = [candidate for candidate in dir(target) if not candidate.startswith("_")]
            raise RewardSpecError(f"reward {path!r}: {owner!r} has no attribute {attribute!r}{suggest(attribute, public)}")
        target, owner = getattr(target, attribute), f"{owner}.{attribute}"
    if not callable(target):
        raise RewardSpecError(f"reward {path!r} is a {type(target).__name__}, not a function or class")
    return target


def _load(name: str, load: Callable[[], Any], what: str) -> Any:
    try:
        return load()
    except Exception as error:  # user code may raise anything while importing
        raise RewardSpecError(f"reward {name!r}: cannot import {what} ({_describe(error)})") from error


def _unknown_name_message(name: str) -> str:
    known = sorted({*BUILTIN_REWARDS, *(plugin.name for plugin in entry_points(group=ENTRY_POINT_GROUP))})
    if "." in name:
        module_name, _, function_name = name.rpartition(".")
        hint = f" (did you mean {module_name + ':' + function_name!r}?)"
    else:
        hint = suggest(name, known)
    return f"unknown reward {name!r}{hint}; known: {', '.join(known)}; a plugin is named 'package.module:function'"


def _signature(target: Callable) -> inspect.Signature:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError) as error:
        raise RewardSpecError(f"cannot read the signature of {target!r} ({_describe(error)})") from error


def _instance_call_signature(cls: type) -> inspect.Signature:
    """The signature of `cls`'s instances when called: `cls.__call__` without `self`."""
    signature = _signature(cls.__call__)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def _columns(signature: inspect.Signature) -> set[str]:
    return {
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and parameter.default is parameter.empty
        and parameter.name not in TRL_ARGUMENTS
    }


def _is_reward_function(target: Callable) -> bool:
    return "completions" in _signature(target).parameters


def _reject_options(name: str, options: Mapping[str, Any]) -> None:
    if options:
        raise RewardSpecError(
            f"reward {name!r} is a reward function, not a factory, and takes no options; got {', '.join(map(repr, options))}"
        )


def _check_options(name: str, factory: Callable, options: Mapping[str, Any]) -> None:
    """Unknown options and missing required ones, named, before anything is built."""
    parameters = _signature(factory).parameters.values()
    named = [parameter.name for parameter in parameters if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]
    takes_any = any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters)
    for option in options:
        if option not in named and not takes_any:
            raise RewardSpecError(f"reward {name!r} has no option {option!r}{suggest(option, named)}; its options: {', '.join(named) or 'none'}")
    for parameter in parameters:
        if parameter.name in named and parameter.default is parameter.empty and parameter.name not in options:
            raise RewardSpecError(f"reward {name!r} needs option {parameter.name!r}; its options: {', '.join(named)}")


def _make(name: str, factory: Callable, options: Mapping[str, Any]) -> Callable:
    """Call a factory with the manifest options; its own validation errors become RewardSpecError."""
    _check_options(name, factory, options)
    try:
        reward_fn = factory(**options)
    except Exception as error:
        raise RewardSpecError(f"reward {name!r}: {_describe(error)}") from error
    if not callable(reward_fn):
        raise RewardSpecError(f"reward {name!r}: its factory returned {reward_fn!r}, which is not callable")
    return reward_fn
