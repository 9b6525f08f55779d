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
idea, with the student's pass rate as the signal): the curriculum sampler then draws the prompts, the same
add-on as in a grpo stage (stages/addons.py).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from stages import common
from stages.arguments import StageFile
from stages.preflight import Unmet, missing_eval_data

CURVES = ["loss", "reward", "completions/mean_length", "completions/clipped_ratio"]


def scoring_on_policy(base: type, reward_functions: list[Callable], weights: list[float]) -> type:
    """`base` (DistillationTrainer) scoring each generation batch's completions with `reward_functions` as it
    generates them, into its log (`reward`: the weighted sum's mean; `rewards/<name>/mean`), all processes' rows.

    Private coupling: overrides `DistillationTrainer._generate_and_score_completions(inputs)`, which gets the
    dataset rows (identity collator) and returns `completion_ids`/`completion_mask`, and appends to its
    `_metrics[mode]`, which its `log` averages (pinned in tests/curriculum/test_trl_contract.py)."""
    if not reward_functions:
        return base
    from accelerate.utils import gather_object
    from trl.data_utils import is_conversational

    class OnPolicyScored(base):  # type: ignore[misc, valid-type]
        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            metrics = self._metrics["train" if self.model.training else "eval"]
            masks = output["completion_mask"].bool()
            texts = self.processing_class.batch_decode([ids[mask] for ids, mask in zip(output["completion_ids"], masks)], skip_special_tokens=True)
            completions = [[{"role": "assistant", "content": text}] for text in texts] if is_conversational(inputs[0]) else texts
            columns = {key: [row[key] for row in inputs] for key in inputs[0] if key != "prompt"}
            total = np.zeros(len(inputs))
            for reward_fn, weight in zip(reward_functions, weights, strict=True):
                scored = reward_fn(prompts=[row["prompt"] for row in inputs], completions=completions,
                                   log_metric=lambda name, value: metrics[name].append(value), **columns)
                scored = asyncio.run(scored) if inspect.isawaitable(scored) else scored  # an async reward
                scores = np.array([np.nan if score is None else score for score in scored], dtype=float)
                total += weight * np.nan_to_num(scores)
                metrics[f"rewards/{reward_fn.__name__}/mean"].append(float(np.nanmean(gather_object(list(scores)))))
            metrics["reward"].append(float(np.mean(gather_object(list(total)))))
            return output

    OnPolicyScored.__name__ = f"OnPolicyScored{base.__name__}"
    return OnPolicyScored


def trainer_args(stage: StageFile, planned_world_size: int | None = None) -> Any:
    """The DistillationConfig this stage trains with (also what `gradus plan`'s preflight constructs)."""
    from trl import DistillationConfig

    return common.training_args(DistillationConfig, stage, planned_world_size)


def preflight(stage: StageFile, config: Any) -> Unmet | None:
    """What DistillationTrainer would refuse, or would do other than the manifest says, of a config that builds."""
    if config.teacher_model_name_or_path is not None:
        return "args.teacher_model_name_or_path", "set by gradus from the stage's teacher: field; name the teacher there"
    return missing_eval_data(stage, config)


def run(stage: StageFile) -> None:
    from trl import DistillationTrainer

    import rewards

    reward_functions = [rewards.build(reward.name, reward.options) for reward in stage.rewards]
    args = trainer_args(stage)
    trainer_class = scoring_on_policy(DistillationTrainer, reward_functions, [reward.weight for reward in stage.rewards])
    trainer = trainer_class(
        model=stage.model_path,
        teacher_model=stage.teacher_path,
        args=args,
        train_dataset=common.load_training_data(stage),
        eval_dataset=common.load_data(stage.eval_data) if stage.eval_data else None,
        processing_class=common.load_tokenizer(stage.model_path),
        peft_config=common.peft_config(stage),
    )
    metrics = common.train_and_save(trainer, stage, CURVES)
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    metrics["first_loss"] = losses[0] if losses else None
    for key in ("reward", "completions/mean_length", "completions/clipped_ratio"):
        logged = [entry[key] for entry in history if entry.get(key) is not None]
        metrics[f"first_{key}"], metrics[f"final_{key}"] = (logged[0], logged[-1]) if logged else (None, None)
    if reward_functions:
        metrics["reward_errors"] = {fn.__name__: fn.errors for fn in reward_functions}
        metrics["rewards"] = {fn.__name__: fn.metrics() for fn in reward_functions}
    common.finish(stage, metrics)


if __name__ == "__main__":
    run(common.start())
