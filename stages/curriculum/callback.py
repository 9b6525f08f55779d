"""The curriculum's checkpointed state and its record of training: `curriculum_state.npz` in every
checkpoint, `curriculum.csv` (each bucket's share, pass rate, mean |advantage| and draws, per step) and
`curriculum.png`, drawn from the CSV when training ends.

The CSV is cut back to the resumed step when training resumes, so a resumed run's file equals an
uninterrupted one's.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from stages.curriculum.sampler import CurriculumSampler
from stages.trl_hooks import checkpoint_file, trainer_resume_position

STATE_FILE = "curriculum_state.npz"
CSV_FILE = "curriculum.csv"
PLOT_FILE = "curriculum.png"
CSV_COLUMNS = ["step", "bucket", "share", "pass_rate", "mean_abs_advantage", "draws"]


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
        return checkpoint_file(args.output_dir, state.global_step, STATE_FILE)

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
