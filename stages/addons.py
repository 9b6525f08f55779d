"""Add-ons: what a stage block adds to a TRL trainer, all through one small interface.

A grpo stage's `curriculum:` block brings the curriculum (stages/curriculum/training.py) and, with
`dynamic_sampling: true`, dynamic sampling (stages/curriculum/dynamic_sampling.py); its `relift:` block
brings ReLIFT (stages/relift.py). Each is a `TrainerAddon`, built on the training data and rewards the
add-on before it hands on, so the stage applies them in a loop and never wires one by hand: on the
trainer's side a new add-on costs its module and its build in the stage that offers it (the README's
layout section lists the schema and manifest lines a block needs besides). The couplings they need
inside TRL live in stages/trl_hooks.py, not here.

The two things most add-ons do to the trainer's inputs are written once, here: `with_index_column`
adds the row index as a column (a reward sees the columns, so its scores lead back to their rows), and
`wrap_signal_reward` finds the reward whose scores an add-on learns from (its block's `signal_reward`,
else the stage's first reward) and wraps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np

from stages import common
from stages.arguments import StageFile


class TrainerAddon(Protocol):
    """What an add-on gives the stage, in the order the stage uses it."""

    block: ClassVar[str]
    """The manifest block that configures it: its refusals are prefixed with it, its summary is stored under it."""

    @classmethod
    def unmet_requirement(cls, args: Any, config: Any) -> str | None:
        """What it needs of the trainer config and does not get (`args` is its block), as "FIELD: why", or
        None. The preflight asks at plan time; `build` asks again and raises it."""

    train_dataset: Any
    """The data to hand on: the data it was built on, with its index column if it adds one."""
    rewards: list[Callable]
    """The rewards to hand on: those it was built on, the signal one wrapped if it reads scores."""

    @property
    def callbacks(self) -> list[Any]:
        """TrainerCallbacks to add to the trainer (checkpointed state, logs)."""

    def trainer_class(self, base: type) -> type:
        """`base`, or a subclass overriding what the add-on changes inside the trainer (trl_hooks.py)."""

    def attach(self, trainer: Any) -> None:
        """Called once the trainer exists, for an add-on that acts on it from its callbacks."""

    def summary(self) -> dict[str, Any] | None:
        """For the stage metrics under `block` (`gradus status`), or None when it has nothing to add."""


def with_index_column(dataset: Any, column: str) -> Any:
    """`dataset` with `column` holding each row's index, which TRL hands the rewards with the other columns."""
    return dataset.add_column(column, np.arange(len(dataset)))


def signal_reward(rewards: list[Callable], name: str | None, block: str) -> Callable:
    """The reward named `name` (a block's `signal_reward`), or the first reward when it is None. Reward
    names are unique in a stage (the manifest refuses a second one), and a wrapper keeps its reward's name."""
    names = [reward.__name__ for reward in rewards]
    signal = name or names[0]
    if signal not in names:
        raise ValueError(f"{block} signal_reward {signal!r} is not one of the stage's rewards: {', '.join(names)}")
    return rewards[names.index(signal)]


def wrap_signal_reward(rewards: list[Callable], signal: Callable, wrap: Callable[[Callable], Callable]) -> list[Callable]:
    """`rewards` with `signal` (one of them, from `signal_reward`) replaced by `wrap(signal)`."""
    return [wrap(reward) if reward is signal else reward for reward in rewards]


def handed_on(addons: list[TrainerAddon], train_dataset: Any, rewards: list[Callable]) -> tuple[Any, list[Callable]]:
    """The training data and rewards the last of `addons` hands on (each was built on the one before's),
    or `train_dataset` and `rewards` themselves when there is none."""
    return (addons[-1].train_dataset, addons[-1].rewards) if addons else (train_dataset, rewards)


def trainer_class_with(base: type, addons: list[TrainerAddon]) -> type:
    """`base` with every add-on's overrides, the first add-on's innermost."""
    for addon in addons:
        base = addon.trainer_class(base)
    return base


def train_with_addons(base: type, addons: list[TrainerAddon], stage: StageFile, args: Any, train_dataset: Any, curves: list[str],
                      **inputs: Any) -> tuple[Any, dict[str, Any]]:
    """`base` with every add-on's overrides, built on the stage's model, eval data, tokenizer, LoRA and the add-ons'
    callbacks (plus `inputs`: what only this trainer takes), the add-ons attached, then trained and saved
    (`common.train_and_save`). Returns the trainer, and its metrics with each add-on's summary under its block."""
    trainer = trainer_class_with(base, addons)(
        model=stage.model_path,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=common.load_data(stage.eval_data) if stage.eval_data else None,
        processing_class=common.load_tokenizer(stage.model_path),
        peft_config=common.peft_config(stage),
        callbacks=[callback for addon in addons for callback in addon.callbacks],
        **inputs,
    )
    for addon in addons:
        addon.attach(trainer)
    metrics = common.train_and_save(trainer, stage, curves)
    for addon in addons:
        summary = addon.summary()
        if summary is not None:
            metrics[addon.block] = summary
    return trainer, metrics
