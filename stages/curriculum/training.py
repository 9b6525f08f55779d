"""The curriculum attached to a trainer: the add-on a grpo stage (or any trainer drawing prompts through
TRL's `RepeatSampler`, such as on-policy distillation) builds from its `curriculum:` block, and the
ordered sampler an sft stage attaches to SFTTrainer.

The add-on swaps the trainer's prompt sampler for the curriculum's, feeds it the signal reward's scores
of every training batch (`ScoreFeedback`), and checkpoints it (stages/curriculum/callback.py). It takes
the sampler's `RepeatLayout` from the stage (`trl_hooks.grpo_layout`, `trl_hooks.distillation_layout`),
so it assumes no GRPOConfig. Its TRL couplings are in stages/trl_hooks.py.

Staleness: a chunk is drawn lazily, when the dataloader asks for its first index. HF Trainer fetches
`gradient_accumulation_steps` batches before an optimizer step and accelerate looks one batch ahead,
so with TRL's defaults (steps_per_generation = gradient_accumulation_steps, num_iterations = 1) the
chunk for generation batch g+1 is drawn before batch g is scored: choices lag the evidence by one
generation batch. With num_iterations >= 2 (or steps_per_generation >= 2 x gradient_accumulation_steps)
there is no lag; dataloader workers add `num_workers x prefetch_factor` batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from stages.addons import signal_reward, with_index_column, wrap_signal_reward
from stages.arguments import CURRICULUM_INDEX_COLUMN, CurriculumArgs
from stages.curriculum.callback import CurriculumCallback
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout
from stages.trl_hooks import GatheredScores, grpo_layout, sampling_trainer_class


class ScoreFeedback(GatheredScores):
    """The curriculum's signal reward: feeds every training batch's scores to the sampler and hands its
    shares and pass rates to TRL's `log_metric` (logged per step as `curriculum/share/<bucket>`,
    `curriculum/pass_rate/<bucket>`)."""

    index_column = CURRICULUM_INDEX_COLUMN

    def __init__(self, reward_fn: Callable[..., list[float | None]], sampler: CurriculumSampler) -> None:
        super().__init__(reward_fn)
        self.sampler = sampler

    def record(self, prompt_indices: list[int], scores: list[float], log_metric: Callable[[str, float], None] | None) -> None:
        self.sampler.record(prompt_indices, scores)
        if log_metric is not None:
            for name, value in self.sampler.log_values().items():
                log_metric(name, value)


def lookahead_batches(training_args: Any) -> int:
    """How many batches the dataloader has drawn ahead of the one being trained on (module docstring:
    staleness): the accumulation window, accelerate's one, and the workers' prefetch."""
    workers = training_args.dataloader_num_workers
    return training_args.gradient_accumulation_steps + 1 + workers * (training_args.dataloader_prefetch_factor or 2)


@dataclass
class GRPOCurriculum:
    """The curriculum add-on (stages/addons.py): the sampler, the data with its `curriculum_index`
    column, the rewards with the signal one wrapped in `ScoreFeedback`, and the callback."""

    block: ClassVar[str] = "curriculum"
    args: CurriculumArgs
    sampler: CurriculumSampler
    signal_reward: Callable | None
    """The signal reward as the stage built it, unwrapped (dynamic sampling scores its screens with it); None
    for a stage without rewards."""
    train_dataset: Any
    rewards: list[Callable]
    callback: CurriculumCallback

    @property
    def callbacks(self) -> list[Any]:
        """Its one callback: the callback that checkpoints the sampler and writes its CSV and plot."""
        return [self.callback]

    @classmethod
    def unmet_requirement(cls, args: CurriculumArgs, config: Any) -> str | None:
        """What a curriculum needs of the trainer config and does not get, or None (the preflight asks too)."""
        if config.remove_unused_columns:
            return "args.remove_unused_columns: a curriculum needs false (it reads a data column in the reward)"
        if config.ignore_data_skip:
            return "args.ignore_data_skip: a curriculum needs false (it replays its draws through the trainer's skip on resume)"
        return None

    @classmethod
    def build(cls, spec: CurriculumArgs | dict[str, Any], config: Any, train_dataset: Any, rewards: list[Callable], stage_dir: Path,
              layout: RepeatLayout | None = None) -> GRPOCurriculum:
        """The curriculum for a trainer with this config, whose sampler has `layout` (by default
        `grpo_layout(config)`; a trainer without `num_generations` passes its own)."""
        args = CurriculumArgs.model_validate(spec)
        problem = cls.unmet_requirement(args, config)
        if problem:
            raise ValueError(problem)
        # A distill stage may have no rewards: its curriculum then draws by a scoreless strategy (the manifest checks).
        signal = signal_reward(rewards, args.signal_reward, cls.block) if rewards else None
        if layout is None:
            layout = grpo_layout(config)
        chunks_per_epoch = len(train_dataset) // layout.prompts_per_generation
        if config.max_steps > 0:
            planned = math.ceil(config.max_steps * config.gradient_accumulation_steps / layout.repeat_count)
        else:
            planned = math.ceil(config.num_train_epochs * chunks_per_epoch)
        sampler = CurriculumSampler.for_dataset(args, train_dataset, layout, seed=config.seed, planned_generations=planned,
                                                lookahead_batches=lookahead_batches(config))
        wrapped = wrap_signal_reward(rewards, signal, lambda reward: ScoreFeedback(reward, sampler))
        indexed = with_index_column(train_dataset, CURRICULUM_INDEX_COLUMN)
        return cls(args, sampler, signal, indexed, wrapped, CurriculumCallback(sampler, stage_dir))

    def trainer_class(self, base: type) -> type:
        """`base` drawing its training prompts from the curriculum sampler."""
        return sampling_trainer_class(base, self.sampler, f"Curriculum{base.__name__}")

    def attach(self, trainer: Any) -> None:
        """Nothing to do: the trainer asks for the sampler itself."""

    def summary(self) -> dict[str, Any]:
        """For the stage metrics (`gradus status`): the final share and pass rate of each bucket."""
        rows = self.sampler.bucket_rows()
        return {
            "strategy": self.sampler.args.strategy,
            "final_share": {row["bucket"]: round(row["share"], 4) for row in rows},
            "final_pass_rate": {row["bucket"]: None if math.isnan(row["pass_rate"]) else round(row["pass_rate"], 4) for row in rows},
            "draws": {row["bucket"]: row["draws"] for row in rows},
        }


def attach_to_sft(trainer: Any, spec: CurriculumArgs | dict[str, Any], stage_dir: Path) -> CurriculumSampler:
    """Give a `trl_hooks.sft_trainer_class` trainer its sampler (one row per index, a chunk per dataloader
    step across all processes, paced by the difficulty column) and the callback that checkpoints it."""
    args, training = CurriculumArgs.model_validate(spec), trainer.args
    if training.ignore_data_skip:
        raise ValueError("a curriculum needs ignore_data_skip=False: it replays its draws through the trainer's skip on resume")
    layout = RepeatLayout(1, training.per_device_train_batch_size * training.world_size, 1)
    chunks = len(trainer.train_dataset) // layout.prompts_per_generation
    planned = training.max_steps * training.gradient_accumulation_steps if training.max_steps > 0 else math.ceil(training.num_train_epochs * chunks)
    sampler = CurriculumSampler.for_dataset(args, trainer.train_dataset, layout, seed=training.seed, planned_generations=planned,
                                            lookahead_batches=lookahead_batches(training))
    trainer.curriculum_sampler = sampler
    trainer.add_callback(CurriculumCallback(sampler, stage_dir))
    return sampler
