"""`grpo` stage: reinforcement learning with verifiable rewards, on TRL's GRPOTrainer.

The manifest's `args` are `GRPOConfig` fields, passed through unchanged (so `use_vllm`,
`loss_type`, `num_generations`, `beta` ... mean exactly what TRL documents). The stage's `rewards`
are built from the registry in `rewards/`, each wrapped so a row that raises scores None instead of
killing the run, and their `weight`s become `GRPOConfig.reward_weights` unless `args` sets them.
TRL itself logs each reward's mean (`rewards/<name>/mean`) and the fraction of groups whose rewards
all tie (`frac_reward_zero_std`: no learning signal); both land in the metrics and the PNG.

The blocks below add to the trainer through add-ons (stages/addons.py), which the stage builds in order
and applies in one loop; their preflight refusals and metrics summaries go through the same loop.

A `curriculum:` block swaps TRL's prompt sampler for the curriculum's (stages/curriculum/): the
trainer draws prompts from it, the signal reward reports its scores to it, and a callback keeps its
state in every checkpoint and writes curriculum.csv / curriculum.png; the final bucket shares land
in the metrics under `curriculum`. With `dynamic_sampling: true` a second add-on replaces the groups
that carry no signal before TRL trains on them (stages/curriculum/dynamic_sampling.py).

A `relift:` block (stages/relift.py) adds ReLIFT's interleaved SFT: prompts whose whole group fails the
signal reward wait in a hard buffer, and once it holds a batch the stage takes an SFT step on their
demonstrations between GRPO steps; the buffer is kept in every checkpoint, TRL's logs carry `relift/*`,
and the metrics a summary under `relift`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stages import common
from stages.addons import TrainerAddon, handed_on, train_with_addons
from stages.arguments import StageFile
from stages.preflight import Unmet, addons_unmet, lora_targets, missing_eval_data, rewards_keep_their_columns

# The relift/* panels appear only when a relift block logged them (plot_curves skips absent keys).
CURVES = ["reward", "frac_reward_zero_std", "loss", "completions/mean_length", "relift/buffer_size", "relift/sft_loss", "relift/sft_learning_rate"]


def last_logged(log_history: list[dict[str, Any]], key: str) -> float | None:
    values = [entry[key] for entry in log_history if key in entry]
    return values[-1] if values else None


def trainer_args(stage: StageFile, planned_world_size: int | None = None) -> Any:
    """The GRPOConfig this stage trains with: the rewards' weights become `reward_weights` unless `args` sets them."""
    from trl import GRPOConfig

    return common.training_args(GRPOConfig, stage, planned_world_size, reward_weights=[reward.weight for reward in stage.rewards])


def addon_classes() -> tuple[type[TrainerAddon], ...]:
    """The add-ons a grpo stage offers, in the order they are built (imported here: they need TRL)."""
    from stages.curriculum.dynamic_sampling import DynamicSampling
    from stages.curriculum.training import GRPOCurriculum
    from stages.relift import GRPORelift

    return GRPOCurriculum, DynamicSampling, GRPORelift


def build_addons(stage: StageFile, config: Any, train_dataset: Any, rewards: list[Callable]) -> list[TrainerAddon]:
    """The add-ons this stage's blocks switch on, each built on the data and rewards the one before hands on."""
    GRPOCurriculum, DynamicSampling, GRPORelift = addon_classes()  # noqa: N806 (the classes, imported late)
    addons: list[TrainerAddon] = []
    if stage.curriculum is not None:
        addons.append(GRPOCurriculum.build(stage.curriculum, config, train_dataset, rewards, stage.stage_dir))
        if stage.curriculum.dynamic_sampling:
            addons.append(DynamicSampling.build(addons[-1], config))
    if stage.relift is not None:
        addons.append(GRPORelift.build(stage.relift, config, *handed_on(addons, train_dataset, rewards)))
    return addons


def preflight(stage: StageFile, config: Any) -> Unmet | None:
    """What GRPOTrainer and the stage's add-ons (curriculum, dynamic sampling, relift) would refuse of a config that builds;
    the preflight asks before launch (stages/kinds.py), so the refusal comes at plan time."""
    if "lm_head" in lora_targets(stage):
        return "peft.target_modules", "GRPOTrainer cannot train a LoRA adapter on lm_head (it reads lm_head.weight directly)"
    if config.reward_weights is not None and len(config.reward_weights) != len(stage.rewards):
        return "args.reward_weights", f"{len(config.reward_weights)} weights for {len(stage.rewards)} rewards; set each reward's weight instead"
    return addons_unmet(stage, config, addon_classes()) or rewards_keep_their_columns(stage, config) or missing_eval_data(stage, config)


def run(stage: StageFile) -> None:
    from trl import GRPOTrainer

    import rewards

    reward_functions = [rewards.build(reward.name, reward.options) for reward in stage.rewards]
    args = trainer_args(stage)
    train_dataset = common.load_training_data(stage)
    addons = build_addons(stage, args, train_dataset, reward_functions)
    train_dataset, trainer_rewards = handed_on(addons, train_dataset, reward_functions)
    trainer, metrics = train_with_addons(GRPOTrainer, addons, stage, args, train_dataset, CURVES, reward_funcs=trainer_rewards)
    history = trainer.state.log_history
    metrics["first_reward"] = next((entry["reward"] for entry in history if "reward" in entry), None)
    for key in ["reward", "frac_reward_zero_std", *(f"rewards/{fn.__name__}/mean" for fn in reward_functions)]:
        metrics[key if key != "reward" else "final_reward"] = last_logged(history, key)
    metrics.update(common.sampling_metrics(history, reward_functions))
    common.finish(stage, metrics)


if __name__ == "__main__":
    run(common.start())
