"""The curriculum wired into TRL: the only module that knows how GRPOTrainer and HF Trainer work inside.

Every coupling to a private TRL or transformers method or layout lives here, and
`tests/curriculum/test_trl_contract.py` pins each one to the installed TRL version:

* `GRPOTrainer._get_train_sampler(dataset)` (and `DistillationTrainer`'s) is overridden to return the
  curriculum sampler, and `grpo_layout` (`distillation_layout`) mirrors how it builds its `RepeatSampler`
  from a GRPOConfig (a DistillationConfig);
* `scoring_on_policy` overrides `DistillationTrainer._generate_and_score_completions(inputs)`, which gets
  the dataset rows (identity collator) and returns `completion_ids`/`completion_mask`, to score the
  student's samples with the stage's rewards into `_metrics[mode]`, which its `log` averages;
* `trainer_resume_position` mirrors how HF Trainer counts the batches it skips on resume;
* `checkpoint_file` mirrors where `Trainer._save_checkpoint` writes a checkpoint (the curriculum's and
  relift's callbacks put their state there, from `on_step_end`, which HF calls after the optimizer step and
  before it saves);
* `log_train_metric` appends to `GRPOTrainer._metrics["train"]`, which its `log` averages into the next
  log entry (relift's SFT steps happen outside anything that could call `log_metric`);
* `GatheredScores` (the curriculum's `ScoreFeedback`, relift's `FailedGroups`) relies on TRL passing
  dataset columns and `log_metric` to reward functions;
* `DynamicSampling` (through `GRPOCurriculum.trainer_class`) overrides
  `GRPOTrainer._generate_and_score_completions(inputs)` to hand it refilled rows, and `_generate(prompts)`
  to return what it generated for them: it relies on the first calling the second once with the rows'
  prompts, on `_generate`'s 8-tuple, on `_log_metric`, on the rows being `train_dataset[i]` (the identity
  collator) and on `async_loop` for async rewards;
* `sft_trainer_class` overrides HF `Trainer._get_train_sampler(train_dataset)`, which
  `get_train_dataloader` asks for its sampler, and relies on TRL's SFT tokenisation keeping extra columns.

Why dynamic sampling needs the two overrides, and no more: TRL draws, generates and scores a generation
batch inside `_generate_and_score_completions` and keeps no hook between scoring and the advantage,
so a group cannot be dropped after TRL generated it (the padded tensors it returns would have to be
re-cut, key by key); generating first and replaying the result through `_generate` touches only lists of
per-row results, which is why only plain text generation is supported (no tools, images, rollout_func).

Staleness: a chunk is drawn lazily, when the dataloader asks for its first index. HF Trainer fetches
`gradient_accumulation_steps` batches before an optimizer step and accelerate looks one batch ahead,
so with TRL's defaults (steps_per_generation = gradient_accumulation_steps, num_iterations = 1) the
chunk for generation batch g+1 is drawn before batch g is scored: choices lag the evidence by one
generation batch. With num_iterations >= 2 (or steps_per_generation >= 2 x gradient_accumulation_steps)
there is no lag; dataloader workers add `num_workers x prefetch_factor` batches.
"""

from __future__ import annotations

import asyncio
import csv
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.utils import gather_object
from transformers import TrainerCallback

from rewards.wrapping import RewardWrapper, Script, is_async
from stages.arguments import CURRICULUM_INDEX_COLUMN, CurriculumArgs
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout

STATE_FILE = "curriculum_state.npz"
CSV_FILE = "curriculum.csv"
PLOT_FILE = "curriculum.png"
CSV_COLUMNS = ["step", "bucket", "share", "pass_rate", "mean_abs_advantage", "draws"]


def unmet_requirement(grpo_args: Any, curriculum: CurriculumArgs | None = None) -> str | None:
    """What a curriculum needs of the GRPOConfig and does not get, or None (the preflight asks too)."""
    if grpo_args.remove_unused_columns:
        return "args.remove_unused_columns: a curriculum needs false (it reads a data column in the reward)"
    if grpo_args.ignore_data_skip:
        return "args.ignore_data_skip: a curriculum needs false (it replays its draws through the trainer's skip on resume)"
    if curriculum is not None and curriculum.dynamic_sampling:
        groups, screen = grpo_args.num_generations, curriculum.screen_generations
        local_rows = grpo_args.per_device_train_batch_size * grpo_args.steps_per_generation
        if screen is not None and screen >= groups:
            return f"curriculum.screen_generations: {screen} screens a whole group of num_generations {groups}; leave it unset for DAPO"
        if screen is not None and grpo_args.use_vllm:
            return "curriculum.screen_generations: vLLM generates whole groups; screening needs use_vllm false"
        if local_rows % groups:
            return (f"args.per_device_train_batch_size: dynamic sampling needs every process's generation batch (x steps_per_generation "
                    f"= {local_rows} completions) to hold whole groups of num_generations {groups}")
    return None


def grpo_layout(grpo_args: Any) -> RepeatLayout:
    """The layout `GRPOTrainer._get_train_sampler` gives its `RepeatSampler` for these GRPOConfig args."""
    return RepeatLayout(
        num_generations=grpo_args.num_generations,
        prompts_per_generation=grpo_args.generation_batch_size // grpo_args.num_generations,
        repeat_count=grpo_args.num_iterations * grpo_args.steps_per_generation,
    )


def distillation_layout(distill_args: Any) -> RepeatLayout:
    """The layout `DistillationTrainer._get_train_sampler` gives its `RepeatSampler` for these DistillationConfig
    args: one completion per prompt, the whole generation batch (every process's, over the accumulation steps)
    drawn at once and repeated once per accumulation step."""
    batch = distill_args.per_device_train_batch_size * distill_args.world_size * distill_args.gradient_accumulation_steps
    return RepeatLayout(num_generations=1, prompts_per_generation=batch, repeat_count=distill_args.gradient_accumulation_steps)


def trainer_resume_position(global_step: int, batches_per_epoch: int, gradient_accumulation_steps: int) -> tuple[int, int]:
    """(epoch, batches to skip in it) when HF Trainer resumes at `global_step`.

    Mirrors `Trainer.set_initial_training_values` (updates per epoch) and `Trainer._init_training_state`.
    """
    updates_per_epoch = max(batches_per_epoch // gradient_accumulation_steps + int(batches_per_epoch % gradient_accumulation_steps > 0), 1)
    return global_step // updates_per_epoch, (global_step % updates_per_epoch) * gradient_accumulation_steps


def checkpoint_file(output_dir: str | Path, global_step: int, name: str) -> Path:
    """The file `name` inside the checkpoint HF writes at `global_step` (`Trainer._save_checkpoint`)."""
    return Path(output_dir) / f"checkpoint-{global_step}" / name


def log_train_metric(trainer: Any, name: str, value: float) -> None:
    """Log `value` under `name` with the trainer's next training log entry (averaged over the steps it covers)."""
    trainer._metrics["train"][name].append(value)


class GatheredScores(RewardWrapper):
    """A signal reward that scores exactly as the wrapped one does, then reports the training batch's
    (row index, score) pairs, gathered from every rank, to `record`.

    TRL calls it on every rank with that rank's rows, passing the dataset's columns. Training batches
    carry the `index_column` the stage added to its data (eval batches don't, and are not reported); it
    all-gathers the pairs with `accelerate.utils.gather_object`, so every rank records the same batch in
    the same order and state built from it stays identical across ranks with no other exchange. Built on
    `RewardWrapper`, so it is async exactly when the wrapped reward is, and TRL still logs it by the
    wrapped reward's name (`rewards/<name>/mean`). A reward that scored nothing (None) counts as NaN.
    """

    index_column: str

    def script(self, prompts: list, completions: list, **columns: Any) -> Script:
        prompt_indices = columns.pop(self.index_column, None)
        scores = yield {"prompts": prompts, "completions": completions, **columns}
        if prompt_indices is not None:
            pairs = gather_object([(int(index), math.nan if score is None else float(score)) for index, score in zip(prompt_indices, scores, strict=True)])
            self.record([index for index, _ in pairs], [score for _, score in pairs], columns.get("log_metric"))
        return scores

    def record(self, prompt_indices: list[int], scores: list[float], log_metric: Callable[[str, float], None] | None) -> None:
        """Take one training batch's scores, all ranks' rows in rank order; `log_metric` is TRL's, when given."""
        raise NotImplementedError


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


def scoring_on_policy(base: type, reward_functions: list[Callable], weights: list[float]) -> type:
    """`base` (DistillationTrainer) scoring each generation batch's completions with `reward_functions` as it
    generates them, into its log (`reward`: the weighted sum's mean; `rewards/<name>/mean`), all processes' rows.
    The rewards train nothing here; a curriculum's signal reward (`ScoreFeedback`) hands its scores to the sampler."""
    if not reward_functions:
        return base
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


def sft_trainer_class(base: type) -> type:
    """`base` (SFTTrainer, or any HF Trainer) drawing its rows from the sampler `attach_to_sft` gives it.

    HF `Trainer.get_train_dataloader` asks `_get_train_sampler(train_dataset)` for its sampler, with the
    dataset after `_remove_unused_columns`; the curriculum's sampler is built from `trainer.train_dataset`
    (TRL's tokenised rows, which still carry the difficulty column) once the trainer exists."""

    class CurriculumSFTTrainer(base):  # type: ignore[misc, valid-type]
        curriculum_sampler: CurriculumSampler | None = None

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            if self.curriculum_sampler is None:
                return super()._get_train_sampler(train_dataset)
            if train_dataset is not None and len(train_dataset) != self.curriculum_sampler.num_prompts:
                raise ValueError(f"curriculum sampler over {self.curriculum_sampler.num_prompts} rows, the trainer's dataset has {len(train_dataset)}")
            return self.curriculum_sampler

    CurriculumSFTTrainer.__name__ = f"Curriculum{base.__name__}"
    return CurriculumSFTTrainer


def attach_to_sft(trainer: Any, spec: CurriculumArgs | dict[str, Any], stage_dir: Path) -> CurriculumSampler:
    """Give a `sft_trainer_class` trainer its sampler (one row per index, a chunk per dataloader step
    across all processes, paced by the difficulty column) and the callback that checkpoints it."""
    args, training = CurriculumArgs.model_validate(spec), trainer.args
    if training.ignore_data_skip:
        raise ValueError("a curriculum needs ignore_data_skip=False: it replays its draws through the trainer's skip on resume")
    layout = RepeatLayout(1, training.per_device_train_batch_size * training.world_size, 1)
    chunks = len(trainer.train_dataset) // layout.prompts_per_generation
    planned = training.max_steps * training.gradient_accumulation_steps if training.max_steps > 0 else math.ceil(training.num_train_epochs * chunks)
    workers = training.dataloader_num_workers
    sampler = CurriculumSampler.for_dataset(
        args, trainer.train_dataset, layout, seed=training.seed, planned_generations=planned,
        lookahead_batches=training.gradient_accumulation_steps + 1 + workers * (training.dataloader_prefetch_factor or 2),
    )
    trainer.curriculum_sampler = sampler
    trainer.add_callback(CurriculumCallback(sampler, stage_dir))
    return sampler


@dataclass
class Generated:
    """Per-row results of `GRPOTrainer._generate` (prompt ids, completion ids, completion texts, and the
    sampling logprobs where the backend returns them), for rows that can be regrouped freely."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    completions: list[Any]
    logprobs: list[list[float]] | None

    @classmethod
    def from_trl_output(cls, output: tuple) -> Generated:
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images = output
        if tool_mask is not None or extra_fields or images is not None or tool_images:
            raise ValueError("dynamic_sampling supports plain text generation only (no tools, rollout_func, environments or images)")
        return cls(list(prompt_ids), list(completion_ids), list(completions), None if logprobs is None else list(logprobs))

    def rows(self, indices: list[int]) -> Generated:
        pick = lambda values: [values[index] for index in indices]  # noqa: E731
        return Generated(pick(self.prompt_ids), pick(self.completion_ids), pick(self.completions), None if self.logprobs is None else pick(self.logprobs))

    @staticmethod
    def concatenate(parts: list[Generated]) -> Generated:
        logprobs = None if any(part.logprobs is None for part in parts) else [row for part in parts for row in part.logprobs]
        return Generated([row for part in parts for row in part.prompt_ids], [row for part in parts for row in part.completion_ids],
                         [row for part in parts for row in part.completions], logprobs)

    def as_trl_output(self, expected_rows: int) -> tuple:
        """What `_generate` returns, for the rows `_generate_and_score_completions` asks it for."""
        if expected_rows != len(self.completions):
            raise RuntimeError(f"dynamic_sampling: TRL asked for {expected_rows} completions, {len(self.completions)} were generated")
        return self.prompt_ids, self.completion_ids, None, self.completions, self.logprobs, {}, None, []


@dataclass
class DynamicSampling:
    """DAPO's dynamic sampling (Yu et al. 2025, "over-sample and filter out prompts with accuracy 1 or 0")
    and SPEED-RL's cheaper screening (Zhang et al. 2025), inside TRL's GRPOTrainer, keeping its batch
    contract: `_generate_and_score_completions` receives exactly the rows it would have, in whole groups.

    Before TRL generates a generation batch, `fill` generates it itself through TRL's own `_generate`
    (same backend, same sampling settings): each prompt gets `screen` completions (the whole group for
    DAPO, `screen_generations` for SPEED-RL), scored with the curriculum's signal reward. A prompt whose
    screen ties (zero advantage) is dropped, its scores go to the sampler as evidence, and a replacement
    prompt is drawn by the strategy (`CurriculumSampler.draw_replacements`), for up to
    `max_sampling_rounds` rounds; slots still empty keep dropped prompts (their groups tie, as DAPO trains
    on a short batch rather than none). With screening, each kept prompt then gets the rest of its group.
    The rows go to TRL's `_generate_and_score_completions`, whose call of `_generate` returns what was
    generated (the override in `GRPOCurriculum.trainer_class`), so nothing is generated twice and TRL
    scores, normalises and logs the batch as usual.

    Cost: every completion generated beyond the batch's own (dropped screens, replacements) is counted
    and logged per generation batch as `dynamic_sampling/extra_completions` (all processes together),
    with `dynamic_sampling/dropped_groups`. Across processes every rank screens the same number of
    replacements each round (the largest need of any rank): `_generate` gathers across processes, and
    identical draws keep the samplers identical; what a rank did not need counts as extra.

    Where gradus differs: DAPO over-samples whole generation batches and keeps drawing until the batch is
    full; here only the dropped slots are redrawn, one round at a time, and the cap keeps the batch size
    fixed. SPEED-RL screens with a few samples, keeps prompts whose screening pass rate is strictly
    between 0 and 1 and reuses the screening samples in the group, as here; it also batches the screening
    of the next batch with the rest of this one, which this does not."""

    sampler: CurriculumSampler
    signal_reward: Callable
    num_generations: int
    screen: int
    max_rounds: int

    @classmethod
    def build(cls, args: CurriculumArgs, grpo_args: Any, sampler: CurriculumSampler, signal_reward: Callable) -> DynamicSampling:
        """After `unmet_requirement(grpo_args, args)` found nothing (the preflight's check, repeated by `GRPOCurriculum.build`)."""
        groups = grpo_args.num_generations
        return cls(sampler, signal_reward, groups, args.screen_generations or groups, args.max_sampling_rounds)

    def fill(self, trainer: Any, inputs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Generated]:
        """The rows (whole groups, as many as `inputs` has) and their completions, for this process."""
        groups, screen = self.num_generations, self.screen
        candidates = inputs[::groups]  # one row per prompt: the dataloader repeats each prompt `groups` times in a row
        slots = len(candidates)
        kept: list[Screened] = []
        dropped: list[Screened] = []
        tried = [int(row[CURRICULUM_INDEX_COLUMN]) for row in candidates]
        pending, generated, rounds = candidates, 0, 0
        while True:
            completions = self._generate(trainer, pending, screen)
            generated += len(completions.completions)
            scores = self._score(trainer, pending, completions)
            for position, row in enumerate(pending):
                rows_of_prompt = list(range(position * screen, (position + 1) * screen))
                group = Screened(row, completions.rows(rows_of_prompt), [scores[index] for index in rows_of_prompt])
                (dropped if group.ties else kept).append(group)
            needs = gather_object([max(slots - len(kept), 0)])
            if max(needs) == 0 or rounds == self.max_rounds:
                break
            rounds += 1
            most = max(needs)  # every rank screens as many, so `_generate`'s gathers and the samplers' draws stay in step
            all_tried = [index for rank_tried in gather_object([tried]) for index in rank_tried]
            replacements = self.sampler.draw_replacements(most * len(needs), all_tried)
            rank = trainer.accelerator.process_index
            mine = replacements[rank * most : (rank + 1) * most]
            pending = [trainer.train_dataset[int(index)] for index in mine]
            tried += [int(index) for index in mine]
        fillers = dropped[::-1][: slots - min(len(kept), slots)]  # the latest dropped prompts fill what is still empty
        chosen = kept[:slots] + fillers
        unused = [group for group in dropped if not any(group is filler for filler in fillers)]
        pairs = gather_object([(int(group.row[CURRICULUM_INDEX_COLUMN]), score) for group in unused for score in group.scores])
        if pairs:  # evidence the batch will not carry: TRL scores only the groups it trains on
            self.sampler.record([index for index, _ in pairs], [score for _, score in pairs], completes_batch=False)
        if screen < groups:
            rest = self._generate(trainer, [group.row for group in chosen], groups - screen)
            generated += len(rest.completions)
            step = groups - screen
            parts = [part for slot, group in enumerate(chosen) for part in (group.completions, rest.rows(list(range(slot * step, (slot + 1) * step))))]
        else:
            parts = [group.completions for group in chosen]
        trainer._log_metric("dynamic_sampling/extra_completions", float(sum(gather_object([generated])) - slots * groups * len(needs)))
        trainer._log_metric("dynamic_sampling/dropped_groups", float(sum(gather_object([len(dropped)]))))
        trainer._log_metric("dynamic_sampling/rounds", float(rounds))
        return [dict(group.row) for group in chosen for _ in range(groups)], Generated.concatenate(parts)

    @staticmethod
    def _generate(trainer: Any, rows: list[dict[str, Any]], per_prompt: int) -> Generated:
        """`per_prompt` completions of each row's prompt through TRL's own `_generate` (consecutive per prompt)."""
        return Generated.from_trl_output(trainer._generate([row["prompt"] for row in rows for _ in range(per_prompt)]))

    def _score(self, trainer: Any, rows: list[dict[str, Any]], generated: Generated) -> list[float]:
        """The signal reward of each completion (NaN where it returns None), called as TRL calls rewards:
        prompts, completions, completion_ids, every data column, the trainer state."""
        per_prompt = len(generated.completions) // len(rows)
        repeated = [row for row in rows for _ in range(per_prompt)]
        columns = {key: [row[key] for row in repeated] for key in repeated[0] if key not in ("prompt", "completion", "completion_ids")}
        scores = self.signal_reward(
            prompts=[row["prompt"] for row in repeated], completions=generated.completions, completion_ids=generated.completion_ids,
            trainer_state=trainer.state, log_extra=lambda *_: None, log_metric=lambda *_: None, **columns,
        )
        if is_async(self.signal_reward):
            scores = asyncio.run_coroutine_threadsafe(scores, trainer.async_loop).result()
        return [math.nan if score is None else float(score) for score in scores]


@dataclass
class Screened:
    """One prompt's screening: its row, its screening completions and their signal scores."""

    row: dict[str, Any]
    completions: Generated
    scores: list[float]

    @property
    def ties(self) -> bool:
        """No advantage to learn from: fewer than two scored completions, or all scored alike."""
        values = [score for score in self.scores if not math.isnan(score)]
        return len(values) < 2 or max(values) == min(values)


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


@dataclass
class GRPOCurriculum:
    """What a grpo stage swaps in for a curriculum: the sampler, the data with its `curriculum_index`
    column, the rewards with the signal one wrapped, and the callback."""

    sampler: CurriculumSampler
    train_dataset: Any
    rewards: list[Callable]
    callback: CurriculumCallback
    dynamic: DynamicSampling | None = None

    layout_of: Callable[[Any], RepeatLayout] = grpo_layout
    """The layout the trainer's own sampler would have, from its config (`grpo_layout`, `distillation_layout`)."""

    @classmethod
    def build(cls, spec: CurriculumArgs | dict[str, Any], grpo_args: Any, train_dataset: Any, rewards: list[Callable], stage_dir: Path,
              layout_of: Callable[[Any], RepeatLayout] = grpo_layout) -> GRPOCurriculum:
        """For a grpo stage, or (with `layout_of=distillation_layout`) a distill stage, whose rewards score the
        student's on-policy samples; without rewards only a scoreless strategy can run (the manifest checks)."""
        args = CurriculumArgs.model_validate(spec)
        problem = unmet_requirement(grpo_args, args)
        if problem:
            raise ValueError(problem)
        names = [reward.__name__ for reward in rewards]
        signal = args.signal_reward or (names[0] if names else None)
        if signal is not None and signal not in names:
            raise ValueError(f"curriculum signal_reward {signal!r} is not one of the stage's rewards: {', '.join(names)}")
        layout = layout_of(grpo_args)
        chunks_per_epoch = len(train_dataset) // layout.prompts_per_generation
        if grpo_args.max_steps > 0:
            planned = math.ceil(grpo_args.max_steps * grpo_args.gradient_accumulation_steps / layout.repeat_count)
        else:
            planned = math.ceil(grpo_args.num_train_epochs * chunks_per_epoch)
        workers = grpo_args.dataloader_num_workers
        sampler = CurriculumSampler.for_dataset(
            args, train_dataset, layout, seed=grpo_args.seed, planned_generations=planned,
            lookahead_batches=grpo_args.gradient_accumulation_steps + 1 + workers * (grpo_args.dataloader_prefetch_factor or 2),
        )
        signal_reward = rewards[names.index(signal)] if signal is not None else None
        wrapped = [ScoreFeedback(reward, sampler) if reward is signal_reward else reward for reward in rewards]
        indexed = train_dataset.add_column(CURRICULUM_INDEX_COLUMN, np.arange(len(train_dataset)))
        dynamic = DynamicSampling.build(args, grpo_args, sampler, signal_reward) if args.dynamic_sampling else None
        return cls(sampler, indexed, wrapped, CurriculumCallback(sampler, stage_dir), dynamic, layout_of)

    def trainer_class(self, base: type) -> type:
        """`base` (GRPOTrainer, DistillationTrainer) drawing its training prompts from the curriculum sampler, and
        with dynamic sampling, filling each generation batch with groups that carry signal (`DynamicSampling`)."""
        sampler, dynamic, layout_of = self.sampler, self.dynamic, self.layout_of

        class CurriculumTrainer(base):  # type: ignore[misc, valid-type]
            _pregenerated: Generated | None = None

            def _get_train_sampler(self, dataset: Any = None) -> CurriculumSampler:
                expected = layout_of(self.args)
                if sampler.layout != expected:
                    raise ValueError(f"curriculum sampler layout {sampler.layout} does not match the trainer's {expected}")
                return sampler

            if dynamic is not None:

                def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
                    if not self.model.training:
                        return super()._generate_and_score_completions(inputs)
                    rows, self._pregenerated = dynamic.fill(self, inputs)
                    try:
                        return super()._generate_and_score_completions(rows)
                    finally:
                        self._pregenerated = None

                def _generate(self, prompts: list) -> tuple:
                    if self._pregenerated is None:
                        return super()._generate(prompts)
                    return self._pregenerated.as_trl_output(len(prompts))

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
