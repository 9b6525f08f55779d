"""`distill` stage: on-policy distillation from a teacher, on TRL's DistillationTrainer.

The student (the stage's `model`) samples a completion for each prompt and is trained to match the
teacher's next-token distribution on it, token by token, under the generalised Jensen-Shannon divergence
`beta` sets (TRL's default 1 is reverse KL, the on-policy distillation of Agarwal et al. and Qwen3; 0 is
forward KL). The manifest's `args` are `DistillationConfig` fields, passed through unchanged. The
`teacher:` is any model reference (an earlier stage, `base`, a path, a hub id, a GGUF file, a tiny spec);
the plan resolves it to `teacher_path`, and refuses one whose vocabulary differs from the student's
(pipeline/manifest.py), since the two distributions are compared over one vocabulary.

Rewards are optional. A distillation loss says how close the student is to the teacher, not whether it is
right, so where the stage lists rewards each on-policy sample is scored as it is generated and TRL's log
carries `reward` and `rewards/<name>/mean`: the student's own pass rate, step by step, without an eval.
They train nothing, unless a `curriculum:` block makes the signal reward's scores its evidence (TAPIR's
idea, with the student's pass rate as the signal): the curriculum sampler then draws the prompts, as in a
grpo stage (the add-on in stages/curriculum/training.py), with one completion per prompt, and its state is kept in
every checkpoint.
"""

from __future__ import annotations

from typing import Any

from stages import common
from stages.addons import TrainerAddon, handed_on, train_with_addons
from stages.arguments import StageFile
from stages.preflight import Unmet, addons_unmet, lora_targets, missing_eval_data, rewards_keep_their_columns

CURVES = ["loss", "reward", "completions/mean_length", "completions/clipped_ratio"]


def trainer_args(stage: StageFile, planned_world_size: int | None = None) -> Any:
    """The DistillationConfig this stage trains with (also what `gradus plan`'s preflight constructs)."""
    from trl import DistillationConfig

    return common.training_args(DistillationConfig, stage, planned_world_size)


def addon_classes() -> tuple[type[TrainerAddon], ...]:
    """The add-ons a distill stage offers (imported here: they need TRL): the curriculum, drawing the prompts."""
    from stages.curriculum.training import GRPOCurriculum

    return (GRPOCurriculum,)


def preflight(stage: StageFile, config: Any) -> Unmet | None:
    """What DistillationTrainer or the stage's add-ons would refuse, or do other than the manifest says, of a config
    that builds; the preflight asks before launch (stages/kinds.py), so the refusal comes at plan time."""
    if config.teacher_model_name_or_path is not None:
        return "args.teacher_model_name_or_path", "set by gradus from the stage's teacher: field; name the teacher there"
    if "lm_head" in lora_targets(stage):
        return "peft.target_modules", "DistillationTrainer cannot train a LoRA adapter on lm_head (its loss reads lm_head.weight directly)"
    return addons_unmet(stage, config, addon_classes()) or rewards_keep_their_columns(stage, config) or missing_eval_data(stage, config)


def run(stage: StageFile) -> None:
    from trl import DistillationTrainer

    import rewards
    from stages.trl_hooks import distillation_layout, scoring_on_policy

    (GRPOCurriculum,) = addon_classes()  # noqa: N806 (the class, imported late)
    reward_functions = [rewards.build(reward.name, reward.options) for reward in stage.rewards]
    args = trainer_args(stage)
    train_dataset = common.load_training_data(stage)
    addons: list[TrainerAddon] = []
    if stage.curriculum is not None:
        layout = distillation_layout(args, args.world_size)
        addons.append(GRPOCurriculum.build(stage.curriculum, args, train_dataset, reward_functions, stage.stage_dir, layout=layout))
    train_dataset, scorers = handed_on(addons, train_dataset, reward_functions)
    scored = scoring_on_policy(DistillationTrainer, scorers, [reward.weight for reward in stage.rewards])
    trainer, metrics = train_with_addons(scored, addons, stage, args, train_dataset, CURVES, teacher_model=stage.teacher_path)
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    metrics["first_loss"] = losses[0] if losses else None
    for key in ("reward", "completions/mean_length"):
        logged = [entry[key] for entry in history if entry.get(key) is not None]
        metrics[f"first_{key}"], metrics[f"final_{key}"] = (logged[0], logged[-1]) if logged else (None, None)
    metrics.update(common.sampling_metrics(history, reward_functions))
    common.finish(stage, metrics)


if __name__ == "__main__":
    run(common.start())
