"""The curriculum wired into TRL: the only module that knows how GRPOTrainer and HF Trainer work inside.

Every coupling to a private TRL or transformers method or layout lives here, and
`tests/curriculum/test_trl_contract.py` pins each one to the installed TRL version:

* `GRPOTrainer._get_train_sampler(dataset)` is overridden to return the curriculum sampler, and
  `grpo_layout` mirrors how it builds its `RepeatSampler` from a GRPOConfig;
* `trainer_resume_position` mirrors how HF Trainer counts the batches it skips on resume;
* `CurriculumCallback._state_path` mirrors where `Trainer._save_checkpoint` writes a checkpoint;
* `ScoreFeedback` relies on TRL passing dataset columns and `log_metric` to reward functions.

Staleness: a chunk is drawn lazily, when the dataloader asks for its first index. HF Trainer fetches
`gradient_accumulation_steps` batches before an optimizer step and accelerate looks one batch ahead,
so with TRL's defaults (steps_per_generation = gradient_accumulation_steps, num_iterations = 1) the
chunk for generation batch g+1 is drawn before batch g is scored: choices lag the evidence by one
generation batch. With num_iterations >= 2 (or steps_per_generation >= 2 x gradient_accumulation_steps)
there is no lag; dataloader workers add `num_workers x prefetch_factor` batches.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.utils import gather_object
from transformers import TrainerCallback

from rewards.wrapping import RewardWrapper, Script
from stages.arguments import CURRICULUM_INDEX_COLUMN, CurriculumArgs
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout

STATE_FILE = "curriculum_state.npz"
CSV_FILE = "curriculum.csv"
PLOT_FILE = "curriculum.png"
CSV_COLUMNS = ["step", "bucket", "share", "pass_rate", "mean_abs_advantage", "draws"]


def grpo_layout(grpo_args: Any) -> RepeatLayout:
    """The layout `GRPOTrainer._get_train_sampler` gives its `RepeatSampler` for these GRPOConfig args."""
    return RepeatLayout(
        num_generations=grpo_args.num_generations,
        prompts_per_generation=grpo_args.generation_batch_size // grpo_args.num_generations,
        repeat_count=grpo_args.num_iterations * grpo_args.steps_per_generation,
    )


def trainer_resume_position(global_step: int, batches_per_epoch: int, gradient_accumulation_steps: int) -> tuple[int, int]:
    """(epoch, batches to skip in it) when HF Trainer resumes at `global_step`.

    Mirrors `Trainer.set_initial_training_values` (updates per epoch) and `Trainer._init_training_state`.
    """
    updates_per_epoch = max(batches_per_epoch // gradient_accumulation_steps + int(batches_per_epoch % gradient_accumulation_steps > 0), 1)
    return global_step // updates_per_epoch, (global_step % updates_per_epoch) * gradient_accumulation_steps


class ScoreFeedback(RewardWrapper):
    """The curriculum's signal reward: scores exactly as the wrapped reward does, then reports them.

    TRL calls it on every rank with that rank's rows. On training batches (those carry the
    `curriculum_index` column; eval batches don't) it all-gathers (prompt index, score) from every rank
    with `accelerate.utils.gather_object`, so every rank's sampler records the same batch in the same
    order, and hands the sampler's shares and pass rates to TRL's `log_metric` (logged per step as
    `curriculum/share/<bucket>`, `curriculum/pass_rate/<bucket>`). Built on `RewardWrapper`, so it is
    async exactly when the wrapped reward is, and TRL still logs it by the wrapped reward's name
    (`rewards/<name>/mean`).
    """

    def __init__(self, reward_fn: Callable[..., list[float | None]], sampler: CurriculumSampler) -> None:
        super().__init__(reward_fn)
        self.sampler = sampler

    def script(self, prompts: list, completions: list, **columns: Any) -> Script:
        prompt_indices = columns.pop(CURRICULUM_INDEX_COLUMN, None)
        scores = yield {"prompts": prompts, "completions": completions, **columns}
        self.report(prompt_indices, scores, columns.get("log_metric"))
        return scores

    def report(self, prompt_indices: list[int] | None, scores: list[float | None], log_metric: Callable[[str, float], None] | None) -> None:
        if prompt_indices is None:
            return
        pairs = gather_object([(int(index), math.nan if score is None else float(score)) for index, score in zip(prompt_indices, scores, strict=True)])
        self.sampler.record([index for index, _ in pairs], [score for _, score in pairs])
        if log_metric is not None:
            for name, value in self.sampler.log_values().items():
                log_metric(name, value)


class CurriculumCallback(TrainerCallback):
    """Persists the sampler with every checkpoint, restores it on resume, and writes the CSV and PNG.

    The state is written in `on_step_end` (or `on_epoch_end`) when HF has decided to save
    (`control.should_save`, set by its DefaultFlowCallback, which runs first), that is before HF writes
    the checkpoint's `trainer_state.json`: a checkpoint that counts as complete always has it. A save
    decided later (`save_strategy: best`) gets it in `on_save`, just after `trainer_state.json`.
    """

    def __init__(self, sampler: CurriculumSampler, stage_dir: Path) -> None:
        self.sampler = sampler
        self.csv_path = stage_dir / CSV_FILE
        self.plot_path = stage_dir / PLOT_FILE

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step > 0:
            checkpoint = self._state_path(args, state)
            if not checkpoint.is_file():
                raise FileNotFoundError(f"resuming at step {state.global_step}, but {checkpoint} is missing: the checkpoint has no curriculum state")
            self.sampler.load(checkpoint)
        if state.is_world_process_zero:
            kept = [row for row in self._read_csv() if int(row["step"]) <= state.global_step]
            with self.csv_path.open("w", newline="") as file:
                writer = csv.DictWriter(file, CSV_COLUMNS)
                writer.writeheader()
                writer.writerows(kept)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            with self.csv_path.open("a", newline="") as file:
                csv.DictWriter(file, CSV_COLUMNS).writerows({"step": state.global_step, **row} for row in self.sampler.bucket_rows())
        self._save_if_checkpointing(args, state, control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._save_if_checkpointing(args, state, control)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and not self._state_path(args, state).is_file():
            self._save(args, state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            plot(self._read_csv(), self.plot_path)

    def _save_if_checkpointing(self, args: Any, state: Any, control: Any) -> None:
        if control.should_save and state.is_world_process_zero:
            self._save(args, state)

    def _save(self, args: Any, state: Any) -> None:
        path = self._state_path(args, state)
        path.parent.mkdir(parents=True, exist_ok=True)
        epoch, skipped = trainer_resume_position(state.global_step, self.sampler.batches_per_epoch, args.gradient_accumulation_steps)
        self.sampler.save(path, epoch, skipped)

    @staticmethod
    def _state_path(args: Any, state: Any) -> Path:
        """Where HF puts the checkpoint of this step (`Trainer._save_checkpoint`), and the state in it."""
        return Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE

    def _read_csv(self) -> list[dict[str, str]]:
        if not self.csv_path.is_file():
            return []
        with self.csv_path.open(newline="") as file:
            return list(csv.DictReader(file))


def plot(rows: list[dict[str, str]], path: Path) -> None:
    """Each bucket's sampling share over training (stacked area) next to its pass rate."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = list(dict.fromkeys(row["bucket"] for row in rows))
    steps = sorted({int(row["step"]) for row in rows})
    column = {step: index for index, step in enumerate(steps)}
    share, pass_rate = np.zeros((len(buckets), len(steps))), np.full((len(buckets), len(steps)), np.nan)
    for row in rows:
        bucket, step = buckets.index(row["bucket"]), column[int(row["step"])]
        share[bucket, step], pass_rate[bucket, step] = float(row["share"]), float(row["pass_rate"])
    figure, (share_axis, rate_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(buckets)))
    share_axis.stackplot(steps, share, labels=buckets, colors=colors, alpha=0.85)
    share_axis.set(xlabel="step", ylabel="sampling share", title="share of each bucket", ylim=(0, 1), xlim=(steps[0], max(steps[-1], steps[0] + 1)))
    for bucket, color in enumerate(colors):
        rate_axis.plot(steps, pass_rate[bucket], color=color, label=buckets[bucket])
    rate_axis.set(xlabel="step", ylabel="pass rate (moving average)", title="pass rate of each bucket", ylim=(-0.02, 1.02))
    rate_axis.grid(alpha=0.3)
    rate_axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@dataclass
class GRPOCurriculum:
    """What a grpo stage swaps in for a curriculum: the sampler, the data with its `curriculum_index`
    column, the rewards with the signal one wrapped, and the callback."""

    sampler: CurriculumSampler
    train_dataset: Any
    rewards: list[Callable]
    callback: CurriculumCallback

    @classmethod
    def build(cls, spec: dict[str, Any], grpo_args: Any, train_dataset: Any, rewards: list[Callable], stage_dir: Path) -> GRPOCurriculum:
        args = CurriculumArgs.model_validate(spec)
        if grpo_args.remove_unused_columns:
            raise ValueError("a curriculum needs remove_unused_columns=False: it reads a data column in the reward")
        if grpo_args.ignore_data_skip:
            raise ValueError("a curriculum needs ignore_data_skip=False: it replays its draws through the trainer's skip on resume")
        names = [reward.__name__ for reward in rewards]
        signal = args.signal_reward or names[0]
        if signal not in names:
            raise ValueError(f"curriculum signal_reward {signal!r} is not one of the stage's rewards: {', '.join(names)}")
        layout = grpo_layout(grpo_args)
        chunks_per_epoch = len(train_dataset) // layout.prompts_per_generation
        if grpo_args.max_steps > 0:
            planned = math.ceil(grpo_args.max_steps * grpo_args.gradient_accumulation_steps / layout.repeat_count)
        else:
            planned = math.ceil(grpo_args.num_train_epochs * chunks_per_epoch)
        workers = grpo_args.dataloader_num_workers
        sampler = CurriculumSampler(
            args,
            list(train_dataset[args.difficulty_column]) if args.difficulty_column else None,
            len(train_dataset),
            layout,
            seed=grpo_args.seed,
            planned_generations=planned,
            lookahead_batches=grpo_args.gradient_accumulation_steps + 1 + workers * (grpo_args.dataloader_prefetch_factor or 2),
        )
        wrapped = [ScoreFeedback(reward, sampler) if reward.__name__ == signal else reward for reward in rewards]
        indexed = train_dataset.add_column(CURRICULUM_INDEX_COLUMN, np.arange(len(train_dataset)))
        return cls(sampler, indexed, wrapped, CurriculumCallback(sampler, stage_dir))

    def trainer_class(self, base: type) -> type:
        """`base` (GRPOTrainer) drawing its training prompts from the curriculum sampler."""
        sampler = self.sampler

        class CurriculumTrainer(base):  # type: ignore[misc, valid-type]
            def _get_train_sampler(self, dataset: Any = None) -> CurriculumSampler:
                expected = grpo_layout(self.args)
                if sampler.layout != expected:
                    raise ValueError(f"curriculum sampler layout {sampler.layout} does not match the trainer's {expected}")
                return sampler

        CurriculumTrainer.__name__ = f"Curriculum{base.__name__}"
        return CurriculumTrainer

    def summary(self) -> dict[str, Any]:
        """For the stage metrics (`gradus status`): the final share and pass rate of each bucket."""
        rows = self.sampler.bucket_rows()
        return {
            "strategy": self.sampler.args.strategy,
            "final_share": {row["bucket"]: round(row["share"], 4) for row in rows},
            "final_pass_rate": {row["bucket"]: None if math.isnan(row["pass_rate"]) else round(row["pass_rate"], 4) for row in rows},
            "draws": {row["bucket"]: row["draws"] for row in rows},
        }
