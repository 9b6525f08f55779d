"""Every place gradus relies on how TRL, transformers or accelerate work inside, in one module.

The add-ons (stages/addons.py: the curriculum, its dynamic sampling, relift) and the stages reach the
trainers' private methods and layouts only through the functions here, and
`tests/curriculum/test_trl_contract.py` pins each coupling to the installed TRL version, so an upgrade that
breaks one fails there first, naming it:

* `sampling_trainer_class` overrides `_get_train_sampler(dataset)` of a trainer that draws its prompts
  through TRL's `RepeatSampler` (GRPOTrainer, DistillationTrainer) to return gradus's sampler, after
  checking it against the `RepeatSampler` the trainer would have built (its `mini_repeat_count`,
  `batch_size` and `repeat_count`). `grpo_layout` and `distillation_layout` mirror how each trainer sizes
  that sampler from its config, for building gradus's sampler before the trainer exists;
* `sft_trainer_class` overrides HF `Trainer._get_train_sampler(train_dataset)`, which
  `get_train_dataloader` asks for its sampler (SFT keeps extra columns through TRL's tokenisation);
* `trainer_resume_position` mirrors how HF Trainer counts the batches it skips on resume;
* `checkpoint_file` mirrors where `Trainer._save_checkpoint` writes a checkpoint (the curriculum's and
  relift's callbacks put their state there, from `on_step_end`, which HF calls after the optimizer step and
  before it saves);
* `log_train_metric` appends to `GRPOTrainer._metrics["train"]`, which its `log` averages into the next
  log entry (relift's SFT steps happen outside anything that could call `log_metric`);
* `GatheredScores` (the curriculum's `ScoreFeedback`, relift's `FailedGroups`) relies on TRL passing the
  dataset's columns and `log_metric` to reward functions, and `score_as_trl_does` calls a reward as
  `GRPOTrainer._calculate_rewards` does (the columns, `trainer_state`, awaiting an async one on
  `async_loop`);
* `pregenerating_trainer_class` overrides `GRPOTrainer._generate_and_score_completions(inputs)` to hand it
  other rows, and `_generate(prompts)` to return completions generated beforehand: it relies on the
  first calling the second once with the rows' prompts, and on `_generate`'s 8-tuple (`Generated`);
  `generate` calls `_generate`, `log_generation_metric` calls `_log_metric` (logged with the batch), and
  `training_rows` relies on the rows being `train_dataset[i]` (GRPOTrainer's identity collator);
* `scoring_on_policy` overrides `DistillationTrainer._generate_and_score_completions(inputs)`, which gets the
  dataset rows (its identity collator) and returns `completion_ids`/`completion_mask`, to score the student's
  samples with the stage's rewards into `_metrics[mode]`, which its `log` averages; an async reward runs on
  an event loop from `trl.trainer.utils.start_event_loop_in_daemon`, as GRPOTrainer's do;
* `unwrapped_optimizer` unwraps accelerate's `AcceleratedOptimizer` (its `optimizer` attribute), where
  relift reads GRPO's current learning rate.

Why dynamic sampling needs the two generation overrides, and no more: TRL draws, generates and scores a
generation batch inside `_generate_and_score_completions` and keeps no hook between scoring and the
advantage, so a group cannot be dropped after TRL generated it (the padded tensors it returns would have
to be re-cut, key by key); generating first and replaying the result through `_generate` touches only
lists of per-row results, which is why only plain text generation is supported (no tools, images,
rollout_func).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.utils import gather_object

from rewards.wrapping import RewardWrapper, Script, is_async
from stages.curriculum.sampler import RepeatLayout


def grpo_layout(grpo_args: Any) -> RepeatLayout:
    """The layout `GRPOTrainer._get_train_sampler` gives its `RepeatSampler` for these GRPOConfig args."""
    return RepeatLayout(
        num_generations=grpo_args.num_generations,
        prompts_per_generation=grpo_args.generation_batch_size // grpo_args.num_generations,
        repeat_count=grpo_args.num_iterations * grpo_args.steps_per_generation,
    )


def distillation_layout(distillation_args: Any, num_processes: int) -> RepeatLayout:
    """The layout `DistillationTrainer._get_train_sampler` gives its `RepeatSampler`: one completion per
    prompt, a generation batch of the whole effective batch, reused over the accumulation window."""
    accumulation = distillation_args.gradient_accumulation_steps
    return RepeatLayout(
        num_generations=1,
        prompts_per_generation=distillation_args.per_device_train_batch_size * num_processes * accumulation,
        repeat_count=accumulation,
    )


def sampling_trainer_class(base: type, sampler: Any, name: str) -> type:
    """`base` (a trainer whose `_get_train_sampler` builds a TRL `RepeatSampler`) drawing from `sampler`
    instead, once its layout is checked against the `RepeatSampler` the trainer would have used."""

    class SamplingTrainer(base):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, dataset: Any = None) -> Any:
            own = super()._get_train_sampler(dataset)
            expected = RepeatLayout(own.mini_repeat_count, own.batch_size, own.repeat_count)
            if sampler.layout != expected:
                raise ValueError(f"curriculum sampler layout {sampler.layout} does not match the trainer's {expected}")
            return sampler

    SamplingTrainer.__name__ = name
    return SamplingTrainer


def sft_trainer_class(base: type) -> type:
    """`base` (SFTTrainer, or any HF Trainer) drawing its rows from the sampler set as `curriculum_sampler`.

    HF `Trainer.get_train_dataloader` asks `_get_train_sampler(train_dataset)` for its sampler, with the
    dataset after `_remove_unused_columns`; the curriculum's sampler is built from `trainer.train_dataset`
    (TRL's tokenised rows, which still carry the difficulty column) once the trainer exists."""

    class CurriculumSFTTrainer(base):  # type: ignore[misc, valid-type]
        curriculum_sampler: Any = None

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            if self.curriculum_sampler is None:
                return super()._get_train_sampler(train_dataset)
            if train_dataset is not None and len(train_dataset) != self.curriculum_sampler.num_prompts:
                raise ValueError(f"curriculum sampler over {self.curriculum_sampler.num_prompts} rows, the trainer's dataset has {len(train_dataset)}")
            return self.curriculum_sampler

    CurriculumSFTTrainer.__name__ = f"Curriculum{base.__name__}"
    return CurriculumSFTTrainer


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


def log_generation_metric(trainer: Any, name: str, value: float) -> None:
    """Log `value` under `name` with the generation batch being scored (`GRPOTrainer._log_metric`, what a
    reward's `log_metric` is)."""
    trainer._log_metric(name, value)


def unwrapped_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's `AcceleratedOptimizer` (or `optimizer` itself, unwrapped)."""
    return getattr(optimizer, "optimizer", optimizer)


class GatheredScores(RewardWrapper):
    """A signal reward that scores exactly as the wrapped one does, then reports the training batch's
    (row index, score) pairs, gathered from every rank, to `record`.

    TRL calls it on every rank with that rank's rows, passing the dataset's columns. Training batches
    carry the `index_column` the add-on added to its data (eval batches don't, and are not reported); it
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


def score_as_trl_does(trainer: Any, reward: Callable, rows: list[dict[str, Any]], completions: list, completion_ids: list,
                      log_metric: Callable[[str, float], None] | None = None) -> list[float | None]:
    """`reward`'s scores of `completions` (consecutive per row of `rows`), called as GRPOTrainer calls its
    rewards: prompts, completions, completion_ids, every data column, the trainer state; an async reward
    awaited on the trainer's event loop. Metrics it logs go to `log_metric` (dropped without one), extra
    columns are dropped."""
    per_row = len(completions) // len(rows)
    repeated = [row for row in rows for _ in range(per_row)]
    columns = {key: [row[key] for row in repeated] for key in repeated[0] if key not in ("prompt", "completion", "completion_ids")}
    scores = reward(
        prompts=[row["prompt"] for row in repeated], completions=completions, completion_ids=completion_ids,
        trainer_state=trainer.state, log_extra=lambda *_: None, log_metric=log_metric or (lambda *_: None), **columns,
    )
    if is_async(reward):
        scores = asyncio.run_coroutine_threadsafe(scores, trainer.async_loop).result()
    return list(scores)


def scoring_on_policy(base: type, reward_functions: list[Callable], weights: list[float]) -> type:
    """`base` (DistillationTrainer) scoring each generation batch's completions with `reward_functions` as it
    generates them, into its log (`reward`: the weighted sum's mean; `rewards/<name>/mean`), all processes' rows.
    Each reward is called as GRPOTrainer calls it (`score_as_trl_does`), an async one on an event loop the trainer
    keeps for its whole run, as GRPOTrainer does. The rewards train nothing here; a curriculum's signal reward
    (`ScoreFeedback`) hands its scores to the sampler, and its `log_metric` lines reach the log."""
    if not reward_functions:
        return base
    import atexit

    from trl.data_utils import is_conversational
    from trl.trainer.utils import shutdown_event_loop_in_daemon, start_event_loop_in_daemon

    class OnPolicyScored(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if any(is_async(reward) for reward in reward_functions):
                thread, self.async_loop, ready = start_event_loop_in_daemon(name="OnPolicyScored-AsyncLoop")
                ready.wait()
                atexit.register(shutdown_event_loop_in_daemon, thread, self.async_loop)

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            metrics = self._metrics["train" if self.model.training else "eval"]
            completion_ids = [ids[mask].tolist() for ids, mask in zip(output["completion_ids"], output["completion_mask"].bool())]
            texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
            completions = [[{"role": "assistant", "content": text}] for text in texts] if is_conversational(inputs[0]) else texts
            total = np.zeros(len(inputs))
            for reward_fn, weight in zip(reward_functions, weights, strict=True):
                scored = score_as_trl_does(self, reward_fn, inputs, completions, completion_ids,
                                           log_metric=lambda name, value: metrics[name].append(value))
                scores = np.array([np.nan if score is None else score for score in scored], dtype=float)
                total += weight * np.nan_to_num(scores)
                metrics[f"rewards/{reward_fn.__name__}/mean"].append(float(np.nanmean(gather_object(list(scores)))))
            metrics["reward"].append(float(np.mean(gather_object(list(total)))))
            return output

    OnPolicyScored.__name__ = f"OnPolicyScored{base.__name__}"
    return OnPolicyScored


def training_rows(trainer: Any, indices: list[int]) -> list[dict[str, Any]]:
    """The training rows at `indices` as `_generate_and_score_completions` receives them (GRPOTrainer's
    identity collator hands it `train_dataset[i]` unchanged)."""
    return [trainer.train_dataset[int(index)] for index in indices]


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


def generate(trainer: Any, prompts: list) -> Generated:
    """Completions of `prompts` (one per entry) through the trainer's own `_generate`: the same backend and
    sampling settings as its training batches."""
    return Generated.from_trl_output(trainer._generate(prompts))


Fill = Callable[[Any, list[dict[str, Any]]], tuple[list[dict[str, Any]], Generated]]
"""Given the trainer and a training generation batch's rows: the rows to train on instead, and their completions."""


def pregenerating_trainer_class(base: type, fill: Fill, name: str) -> type:
    """`base` (GRPOTrainer) scoring and training on the rows `fill` chooses for each training generation
    batch, with the completions `fill` generated for them (handed to TRL through its `_generate`); eval
    batches are generated and scored as usual."""

    class PregeneratingTrainer(base):  # type: ignore[misc, valid-type]
        _pregenerated: Generated | None = None

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            if not self.model.training:
                return super()._generate_and_score_completions(inputs)
            rows, self._pregenerated = fill(self, inputs)
            try:
                return super()._generate_and_score_completions(rows)
            finally:
                self._pregenerated = None

        def _generate(self, prompts: list) -> tuple:
            if self._pregenerated is None:
                return super()._generate(prompts)
            return self._pregenerated.as_trl_output(len(prompts))

    PregeneratingTrainer.__name__ = name
    return PregeneratingTrainer
