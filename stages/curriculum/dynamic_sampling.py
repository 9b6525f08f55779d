"""Dynamic sampling, the curriculum's second add-on: groups with no learning signal are replaced before
GRPO trains on them (DAPO; SPEED-RL's screening with `screen_generations`).

GRPO only: it replaces whole groups of `num_generations` completions, which other trainers do not
make (`unmet_requirement` says so). It draws replacements from the curriculum's sampler, scores with the
curriculum's signal reward, and reaches TRL's generation through stages/trl_hooks.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from accelerate.utils import gather_object

from stages.arguments import CURRICULUM_INDEX_COLUMN, CurriculumArgs
from stages.curriculum.sampler import CurriculumSampler
from stages.curriculum.training import GRPOCurriculum
from stages.trl_hooks import Generated, generate, log_generation_metric, pregenerating_trainer_class, score_as_trl_does, training_rows


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
    generated (`trl_hooks.pregenerating_trainer_class`), so nothing is generated twice and TRL
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


    block: ClassVar[str] = "curriculum"
    sampler: CurriculumSampler
    signal_reward: Callable
    num_generations: int
    screen: int
    max_rounds: int
    train_dataset: Any
    rewards: list[Callable]

    @classmethod
    def unmet_requirement(cls, args: CurriculumArgs, config: Any) -> str | None:
        """What dynamic sampling needs of the GRPOConfig and does not get, or None (also when it is off)."""
        if not args.dynamic_sampling:
            return None
        if not hasattr(config, "num_generations"):
            return f"curriculum.dynamic_sampling: dynamic sampling replaces GRPO groups, and a {type(config).__name__} has no num_generations"
        groups, screen = config.num_generations, args.screen_generations
        local_rows = config.per_device_train_batch_size * config.steps_per_generation
        if screen is not None and screen >= groups:
            return f"curriculum.screen_generations: {screen} screens a whole group of num_generations {groups}; leave it unset for DAPO"
        if screen is not None and config.use_vllm:
            return "curriculum.screen_generations: vLLM generates whole groups; screening needs use_vllm false"
        if local_rows % groups:
            return (f"args.per_device_train_batch_size: dynamic sampling needs every process's generation batch (x steps_per_generation "
                    f"= {local_rows} completions) to hold whole groups of num_generations {groups}")
        return None

    @classmethod
    def build(cls, curriculum: GRPOCurriculum, grpo_args: Any) -> DynamicSampling:
        """Dynamic sampling over `curriculum`'s sampler and signal reward; hands on its data and rewards unchanged."""
        problem = cls.unmet_requirement(curriculum.args, grpo_args)
        if problem:
            raise ValueError(problem)
        groups = grpo_args.num_generations
        return cls(curriculum.sampler, curriculum.signal_reward, groups, curriculum.args.screen_generations or groups,
                   curriculum.args.max_sampling_rounds, curriculum.train_dataset, curriculum.rewards)

    def trainer_class(self, base: type) -> type:
        """`base` (GRPOTrainer) filling each training generation batch with groups that carry signal (`fill`)."""
        return pregenerating_trainer_class(base, self.fill, f"DynamicSampling{base.__name__}")

    @property
    def callbacks(self) -> list[Any]:
        """None: its state is the curriculum's sampler, which the curriculum's callback checkpoints."""
        return []

    def attach(self, trainer: Any) -> None:
        """Nothing to do: `fill` is handed the trainer on every call."""

    def summary(self) -> None:
        """Nothing beyond its per-step logs (`dynamic_sampling/*`)."""
        return None

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
            completions = self._completions(trainer, pending, screen)
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
            pending = training_rows(trainer, mine)
            tried += [int(index) for index in mine]
        fillers = dropped[::-1][: slots - min(len(kept), slots)]  # the latest dropped prompts fill what is still empty
        chosen = kept[:slots] + fillers
        unused = [group for group in dropped if not any(group is filler for filler in fillers)]
        pairs = gather_object([(int(group.row[CURRICULUM_INDEX_COLUMN]), score) for group in unused for score in group.scores])
        if pairs:  # evidence the batch will not carry: TRL scores only the groups it trains on
            self.sampler.record([index for index, _ in pairs], [score for _, score in pairs], completes_batch=False)
        if screen < groups:
            rest = self._completions(trainer, [group.row for group in chosen], groups - screen)
            generated += len(rest.completions)
            step = groups - screen
            parts = [part for slot, group in enumerate(chosen) for part in (group.completions, rest.rows(list(range(slot * step, (slot + 1) * step))))]
        else:
            parts = [group.completions for group in chosen]
        log_generation_metric(trainer, "dynamic_sampling/extra_completions", float(sum(gather_object([generated])) - slots * groups * len(needs)))
        log_generation_metric(trainer, "dynamic_sampling/dropped_groups", float(sum(gather_object([len(dropped)]))))
        log_generation_metric(trainer, "dynamic_sampling/rounds", float(rounds))
        return [dict(group.row) for group in chosen for _ in range(groups)], Generated.concatenate(parts)

    @staticmethod
    def _completions(trainer: Any, rows: list[dict[str, Any]], per_prompt: int) -> Generated:
        """`per_prompt` completions of each row's prompt through TRL's own generation (consecutive per prompt)."""
        return generate(trainer, [row["prompt"] for row in rows for _ in range(per_prompt)])

    def _score(self, trainer: Any, rows: list[dict[str, Any]], generated: Generated) -> list[float]:
        """The signal reward of each completion (NaN where it returns None), called as TRL calls rewards."""
        scores = score_as_trl_does(trainer, self.signal_reward, rows, generated.completions, generated.completion_ids)
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
