"""Adaptive-difficulty curriculum: one sampler that decides which prompts a GRPO stage trains on next.

What it is made of, in the order the data flows:

* **Buckets.** Prompts are grouped by a difficulty column (`level` 1..6 on the synthetic task): one
  bucket per value, quantile bins for a numeric column with many values, or one bucket per category.
* **Evidence.** Every GRPO group is `num_generations` completions of one prompt, so each generation
  batch measures, for free, each drawn prompt's pass rate and its group's mean absolute advantage
  |r - mean(r_group)|. `CurriculumSampler.record` keeps each prompt's latest pass rate and, per bucket,
  moving averages (step size `learning_rate`) of pass rate and mean |advantage|.
* **Strategies** turn the evidence into the next generation batch's bucket shares:

  | strategy   | source                                   | what gradus does, and where it deviates |
  |------------|------------------------------------------|------------------------------------------|
  | `uniform`  | TRL `RepeatSampler(shuffle=True)`        | the same index stream as TRL (one torch permutation per epoch from `seed`); the control |
  | `ordered`  | Platanios et al. 2019, "Competence-based Curriculum Learning for NMT": c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2)) | draws uniformly from the easiest c(t) of the data by the column; buckets, not single prompts, are the unit |
  | `adaptive` | ADCL (Learning Like Humans, 2025): re-estimate the difficulty of upcoming data periodically | the same pacing, but every `reestimate_every` batches the buckets are re-ranked by their *online* pass rate instead of re-sampling upcoming prompts with the current model |
  | `band`     | learnability filtering (open-r1 0.2-0.8 band; open-instruct `no_resampling_pass_rate`) | per-prompt weights: 1 inside the band, `revisit_probability` outside it, 0 once retired; unseen prompts take their bucket's pass rate |
  | `bandit`   | SEC (Self-Evolving Curriculum, 2025): arms = buckets, reward = mean absolute advantage, Q <- Q + alpha (r - Q) (TD(0)), Boltzmann P(b) ~ exp(Q_b / tau) | advantages are unnormalised (r - group mean), so for 0/1 rewards E|A| = 2p(1-p), largest at p = 1/2 |
  | `ucb`      | DUMP (2025): UCB_b = mean|A|_b + c sqrt(2 ln N / (n_b + 1)), softmax with temperature | mean|A|_b is SEC's moving average instead of DUMP's window of the last 300 advantages |

* **Safeguards** (all but `uniform`): every bucket with drawable prompts keeps at least `min_share`
  (p <- min_share + (1 - k min_share) p over the k available buckets), and a prompt is drawn at most
  once in any `repeat_window` consecutive generation batches. A bucket that cannot supply its count
  (everything cooling down or retired) hands the shortfall to the others.

TRL's contract (`RepeatSampler`, `GRPOTrainer._get_train_sampler`): the stream is made of chunks of
`prompts_per_generation` distinct prompts; each chunk is emitted `repeat_count` (= steps_per_generation x
num_iterations) times, each prompt `num_generations` times in a row. One emitted copy of a chunk is one
dataloader batch across all ranks (accelerate shards it), so a chunk is one generation batch.

Distribution: every rank builds the same sampler from the same seed and data, and draws from its own
`numpy` generator only; statistics change only through `record`, which the reward wrapper
(`ScoreFeedback`) calls on every rank with the scores gathered from all ranks, in rank order. So all
ranks hold identical state and yield identical indices.

Staleness: a chunk is drawn lazily, when the dataloader asks for its first index. HF Trainer fetches
`gradient_accumulation_steps` batches before an optimizer step and accelerate looks one batch ahead,
so with TRL's defaults (steps_per_generation = gradient_accumulation_steps, num_iterations = 1) the
chunk for generation batch g+1 is drawn before batch g is scored: choices lag the evidence by one
generation batch. With num_iterations >= 2 (or steps_per_generation >= 2 x gradient_accumulation_steps)
there is no lag; dataloader workers add `num_workers x prefetch_factor` batches.

Resumption: the state (numpy RNG, every statistic, the draw position, and the chunks already drawn but
not yet trained on) is written into each checkpoint as `curriculum_state.npz`, before HF writes its
`trainer_state.json`, and restored when training resumes, before the dataloader is iterated. HF then
skips the batches the checkpoint already trained on by iterating the sampler; the restored sampler
knows exactly which (it computes the skip the way the Trainer does) and yields placeholders for them
without touching its state, replays the recorded chunks, then draws on from the restored RNG. So a
resumed run yields the same indices as an uninterrupted one. (When a checkpoint falls inside a
generation batch, possible only with steps_per_generation or num_iterations above the defaults, TRL
itself regenerates that batch on resume, and the curriculum records the regenerated scores.)

Reuse: nothing here is GRPO-specific except `GRPOCurriculum`. DPO's on-policy rounds can draw prompts
from a `CurriculumSampler` with `RepeatLayout(1, prompts_per_round, 1)` and `record` the scores of the
pairs it samples; SFT can take `strategy: ordered` (easy-to-hard pacing, which needs no scores) with the
default layout.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from torch.utils.data import Sampler
from transformers import TrainerCallback

from stages.arguments import CURRICULUM_INDEX_COLUMN, CurriculumArgs


STATE_FILE = "curriculum_state.npz"
CSV_FILE = "curriculum.csv"
PLOT_FILE = "curriculum.png"
CSV_COLUMNS = ["step", "bucket", "share", "pass_rate", "mean_abs_advantage", "draws"]
NEVER_DRAWN = -(2**30)


# ----------------------------------------------------------------------------------------------------
# Buckets and layout
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buckets:
    """Which bucket each prompt is in. For a numeric column the buckets run from easiest to hardest."""

    names: list[str]
    of_prompt: np.ndarray  # int32, one bucket id per prompt
    sizes: np.ndarray  # int64, prompts per bucket
    numeric: bool

    @classmethod
    def from_column(cls, values: Sequence[Any] | None, column: str | None, num_buckets: int, num_prompts: int) -> Buckets:
        """One bucket per value; quantile bins when a numeric column has more than `num_buckets` values."""
        if values is None:
            return cls(["all"], np.zeros(num_prompts, np.int32), np.array([num_prompts]), numeric=False)
        array = np.asarray(values)
        numeric = array.dtype.kind in "iuf"
        if not numeric:
            labels, of_prompt = np.unique(array.astype(str), return_inverse=True)
            names = [f"{column}={label}" for label in labels]
        else:
            array = array.astype(np.float64)
            distinct = np.unique(array)
            if len(distinct) <= num_buckets:
                of_prompt = np.searchsorted(distinct, array)
                names = [f"{column}={value:g}" for value in distinct]
            else:
                edges = np.unique(np.quantile(array, np.linspace(0, 1, num_buckets + 1)))
                of_prompt = np.clip(np.searchsorted(edges, array, side="right") - 1, 0, len(edges) - 2)
                names = [f"{column}={low:g}..{high:g}" for low, high in zip(edges[:-1], edges[1:])]
        of_prompt = of_prompt.astype(np.int32)
        return cls(names, of_prompt, np.bincount(of_prompt, minlength=len(names)), numeric)


@dataclass(frozen=True)
class RepeatLayout:
    """TRL's repetition contract (`RepeatSampler(mini_repeat_count, batch_size, repeat_count)`)."""

    num_generations: int = 1  # each prompt this many times in a row (one GRPO group)
    prompts_per_generation: int = 1  # distinct prompts per chunk (one generation batch)
    repeat_count: int = 1  # each chunk this many times (steps_per_generation x num_iterations)

    @classmethod
    def of_grpo(cls, grpo_args: Any) -> RepeatLayout:
        """The layout `GRPOTrainer._get_train_sampler` would give `RepeatSampler` for these GRPOConfig args."""
        return cls(
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


# ----------------------------------------------------------------------------------------------------
# Strategies: from the sampler's statistics to bucket weights (and, for band, per-prompt acceptance)
# ----------------------------------------------------------------------------------------------------


class Strategy:
    """Bucket weights for the next chunk; the sampler normalises them and applies the safeguards."""

    def __init__(self, args: CurriculumArgs, buckets: Buckets) -> None:
        self.args = args

    def bucket_weights(self, sampler: CurriculumSampler) -> np.ndarray:
        """Unnormalised weight of each bucket; called once at the start of every draw."""
        raise NotImplementedError

    def acceptance(self, sampler: CurriculumSampler, prompts: np.ndarray) -> np.ndarray | None:
        """Probability of keeping each candidate prompt its bucket's queue offers (None: keep all)."""
        return None

    def drawable(self, sampler: CurriculumSampler, weights: np.ndarray) -> np.ndarray:
        """Buckets that still have prompts this strategy would draw."""
        return sampler.buckets.sizes > 0

    def retired(self, sampler: CurriculumSampler, prompts: np.ndarray) -> np.ndarray | None:
        """Prompts to drop from their queue for good (None: none)."""
        return None

    def observe(self, sampler: CurriculumSampler, prompts: np.ndarray, old_pass_rate: np.ndarray) -> None:
        """Called by `record` after these prompts' pass rates changed."""

    def rebuild(self, sampler: CurriculumSampler) -> None:
        """Recompute what derives from the sampler's statistics (after construction and after a load)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """What the strategy itself must carry across a resume (beyond the sampler's statistics)."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state_dict` saved."""


class Uniform(Strategy):
    """TRL's shuffle, index for index: epoch e is the (e+1)-th `torch.randperm` of a generator seeded
    with `seed`, cut into chunks, exactly as `RepeatSampler(shuffle=True, seed=seed)` does. (TRL
    re-creates its generator when a run resumes, so its later epochs change on resume; here they don't.)"""

    def __init__(self, args: CurriculumArgs, buckets: Buckets) -> None:
        super().__init__(args, buckets)
        self._permutation_epoch: int | None = None
        self._permutation = np.empty(0, np.int64)

    def bucket_weights(self, sampler: CurriculumSampler) -> np.ndarray:
        return sampler.buckets.sizes.astype(np.float64)

    def chunk(self, sampler: CurriculumSampler, epoch: int, position: int) -> np.ndarray:
        if self._permutation_epoch != epoch:
            generator = torch.Generator().manual_seed(sampler.seed)
            for _ in range(epoch + 1):
                permutation = torch.randperm(sampler.num_prompts, generator=generator)
            self._permutation, self._permutation_epoch = permutation.numpy(), epoch
        size = sampler.layout.prompts_per_generation
        return self._permutation[position * size : (position + 1) * size]


class Ordered(Strategy):
    """Competence-based pacing (Platanios et al. 2019, "root" competence): at progress t of T
    generation batches (T = `ramp_fraction` of the stage), sample uniformly among the easiest
    c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2)) of the prompts, by the difficulty column."""

    def __init__(self, args: CurriculumArgs, buckets: Buckets) -> None:
        super().__init__(args, buckets)
        if not buckets.numeric:
            raise ValueError(f"strategy {args.strategy!r} needs a numeric difficulty column (ascending = harder); {args.difficulty_column!r} is not")
        self.easiest_first = np.arange(len(buckets.names))

    def competence(self, sampler: CurriculumSampler) -> float:
        ramp = max(1.0, self.args.ramp_fraction * sampler.planned_generations)
        start = self.args.start_competence
        return min(1.0, math.sqrt(sampler.generations_drawn * (1 - start**2) / ramp + start**2))

    def bucket_weights(self, sampler: CurriculumSampler) -> np.ndarray:
        fractions = sampler.buckets.sizes[self.easiest_first] / sampler.num_prompts
        before = np.cumsum(fractions) - fractions
        admitted = np.clip(self.competence(sampler) - before, 0, fractions)
        weights = np.zeros(len(fractions))
        weights[self.easiest_first] = admitted
        return weights


class Adaptive(Ordered):
    """ADCL's re-estimation on top of the pacing: every `reestimate_every` generation batches the
    buckets are re-ranked, easiest first, by their online pass rate; buckets not yet observed rank
    after the observed ones, in column order. ADCL re-samples the upcoming batch with the current model;
    gradus reuses the pass rates GRPO already measured, at the granularity of buckets."""

    def __init__(self, args: CurriculumArgs, buckets: Buckets) -> None:
        super().__init__(args, buckets)
        self.last_estimate = -args.reestimate_every

    def bucket_weights(self, sampler: CurriculumSampler) -> np.ndarray:
        if sampler.generations_drawn - self.last_estimate >= self.args.reestimate_every:
            pass_rate = sampler.bucket_pass_rate
            unobserved_last = np.where(np.isnan(pass_rate), np.inf, -pass_rate)
            self.easiest_first = np.lexsort((np.arange(len(pass_rate)), unobserved_last))
            self.last_estimate = sampler.generations_drawn
        return super().bucket_weights(sampler)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"easiest_first": self.easiest_first, "last_estimate": np.array(self.last_estimate)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.easiest_first, self.last_estimate = state["easiest_first"], int(state["last_estimate"])


class Band(Strategy):
    """Prefer prompts whose current pass rate is learnable (inside `band`), as open-r1's offline 0.2-0.8
    filter does, but online: a prompt's pass rate is that of its latest group, an unseen prompt's is its
    bucket's. Weight 1 inside the band, `revisit_probability` outside it (never-solved prompts come back
    now and then), 0 once a group passed at least `retire_above` of the time (retired for good, like
    open-instruct's `no_resampling_pass_rate`). A bucket's weight is the sum over its prompts, kept
    up to date by counting prompts per class; within a bucket, a queued prompt is kept with probability
    weight / (the bucket's largest weight)."""

    UNSEEN, IN_BAND, OUTSIDE, RETIRED = range(4)

    def __init__(self, args: CurriculumArgs, buckets: Buckets) -> None:
        super().__init__(args, buckets)
        self.class_counts = np.zeros((len(buckets.names), 4), np.int64)
        self.class_acceptance = np.ones((len(buckets.names), 4))  # per draw: weight / the bucket's largest weight

    def classify(self, pass_rate: np.ndarray) -> np.ndarray:
        low, high = self.args.band
        classes = np.full(pass_rate.shape, self.OUTSIDE, np.int64)
        classes[(pass_rate >= low) & (pass_rate <= high)] = self.IN_BAND
        classes[pass_rate >= self.args.retire_above] = self.RETIRED
        classes[np.isnan(pass_rate)] = self.UNSEEN
        return classes

    def unseen_weight(self, sampler: CurriculumSampler) -> np.ndarray:
        """An unseen prompt is as learnable as its bucket: 1 if the bucket's pass rate is in the band
        (or unknown), `revisit_probability` otherwise. Never 0: only an observed prompt retires."""
        low, high = self.args.band
        rate = sampler.bucket_pass_rate
        in_band = np.isnan(rate) | ((rate >= low) & (rate <= high))
        return np.where(in_band, 1.0, self.args.revisit_probability)

    def class_weights(self, sampler: CurriculumSampler) -> np.ndarray:
        """(buckets, 4) weight of a prompt of each class in each bucket."""
        weights = np.empty(self.class_counts.shape)
        weights[:, self.UNSEEN] = self.unseen_weight(sampler)
        weights[:, self.IN_BAND] = 1.0
        weights[:, self.OUTSIDE] = self.args.revisit_probability
        weights[:, self.RETIRED] = 0.0
        return weights

    def bucket_weights(self, sampler: CurriculumSampler) -> np.ndarray:
        weights = self.class_weights(sampler)
        largest_present = np.where(self.class_counts > 0, weights, 0.0).max(axis=1, keepdims=True)
        self.class_acceptance = weights / np.maximum(largest_present, 1e-12)
        return (self.class_counts * weights).sum(axis=1)

    def drawable(self, sampler: CurriculumSampler, weights: np.ndarray) -> np.ndarray:
        return (self.class_counts[:, : self.RETIRED].sum(axis=1) > 0) & (weights > 0)

    def acceptance(self, sampler: CurriculumSampler, prompts: np.ndarray) -> np.ndarray:
        return self.class_acceptance[sampler.buckets.of_prompt[prompts], self.classify(sampler.prompt_pass_rate[prompts])]

    def retired(self, sampler: CurriculumSampler, prompts: np.ndarray) -> np.ndarray:
        return sampler.prompt_pass_rate[prompts] >= self.args.retire_above

    def observe(self, sampler: CurriculumSampler, prompts: np.ndarray, old_pass_rate: np.ndarray) -> None:
        buckets = sampler.buckets.of_prompt[prompts]
        np.add.at(self.class_counts, (buckets, self.classify(old_pass_rate)), -1)
        np.add.at(self.class_counts, (buckets, self.classify(sampler.prompt_pass_rate[prompts])), 1)

    def rebuild(self, sampler: CurriculumSampler) -> None:
        self.class_counts[:] = 0
        np.add.at(self.class_counts, (sampler.buckets.of_prompt, self.classify(sampler.prompt_pass_rate)), 1)


def boltzmann(values: np.ndarray, temperature: float) -> np.ndarray:
    scaled = (values - values.max()) / temperature
    return np.exp(scaled)


class Bandit(Strategy):
    """SEC: buckets are the arms of a non-stationary bandit whose reward is the mean absolute advantage
    of the bucket's groups in a generation batch; Q_b <- Q_b + alpha (r_b - Q_b) (TD(0), `learning_rate`)
    for the buckets drawn; buckets sampled with P(b) ~ exp(Q_b / tau) (`temperature`). Q starts at 0."""

    def bucket_weights(self, sampler: CurriculumSampler) -> np.ndarray:
        return boltzmann(sampler.bucket_value, self.args.temperature)


class UCB(Strategy):
    """DUMP: UCB_b = mean|A|_b + c sqrt(2 ln(N + 1) / (n_b + 1)), N completions scored in all, n_b in
    bucket b; sampling probabilities are softmax(UCB / tau). DUMP keeps mean|A| over a window of the
    last 300 advantages; gradus uses the moving average the bandit keeps (window about 2/alpha batches)."""

    def bucket_weights(self, sampler: CurriculumSampler) -> np.ndarray:
        completions = sampler.bucket_completions
        bonus = self.args.exploration * np.sqrt(2 * np.log(completions.sum() + 1) / (completions + 1))
        return boltzmann(sampler.bucket_value + bonus, self.args.temperature)


STRATEGIES: dict[str, type[Strategy]] = {
    "uniform": Uniform, "ordered": Ordered, "adaptive": Adaptive, "band": Band, "bandit": Bandit, "ucb": UCB,
}


# ----------------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------------


class CurriculumSampler(Sampler[int]):
    """A `torch` sampler that keeps TRL's repetition contract and draws each chunk from the strategy.

    Per-prompt state (pass rate, last generation batch drawn) is one array each, and within a bucket
    prompts are served from a shuffled queue, so a draw costs O(prompts per chunk), not O(dataset).
    """

    def __init__(
        self,
        args: CurriculumArgs,
        difficulty_values: Sequence[Any] | None,
        num_prompts: int,
        layout: RepeatLayout = RepeatLayout(),
        *,
        seed: int = 0,
        planned_generations: int = 1,
        lookahead_batches: int = 1,
    ) -> None:
        self.args, self.layout, self.seed, self.num_prompts = args, layout, seed, num_prompts
        self.planned_generations = max(planned_generations, 1)
        self.chunks_per_epoch = num_prompts // layout.prompts_per_generation
        if self.chunks_per_epoch == 0:
            raise ValueError(f"{num_prompts} prompts cannot fill one generation batch of {layout.prompts_per_generation} distinct prompts")
        self.buckets = Buckets.from_column(difficulty_values, args.difficulty_column, args.num_buckets, num_prompts)
        num_buckets = len(self.buckets.names)
        if args.strategy != "uniform" and args.min_share * num_buckets > 1:
            raise ValueError(f"min_share {args.min_share} x {num_buckets} buckets exceeds 1; lower min_share")
        self.strategy = STRATEGIES[args.strategy](args, self.buckets)
        self.rng = np.random.default_rng(seed)

        # What the prompts have shown so far.
        self.prompt_pass_rate = np.full(num_prompts, np.nan, np.float32)  # of the latest group; NaN = unseen
        self.last_drawn = np.full(num_prompts, NEVER_DRAWN, np.int32)  # generation batch it was last drawn in
        self.bucket_pass_rate = np.full(num_buckets, np.nan)  # moving average; NaN = no completion yet
        self.bucket_value = np.zeros(num_buckets)  # moving average of mean |advantage| (SEC's Q)
        self.bucket_completions = np.zeros(num_buckets)
        self.bucket_draws = np.zeros(num_buckets, np.int64)
        self.bucket_share = self.buckets.sizes / num_prompts  # the shares the latest chunk was drawn with
        self.generations_drawn = 0
        self.generations_recorded = 0

        # Per-bucket shuffled queues in one array: bucket b owns queue[start[b]:end[b]] and serves from
        # cursor[b]; a bucket is (re)shuffled, dropping retired prompts, when its cursor reaches the end.
        self.queue = np.argsort(self.buckets.of_prompt, kind="stable").astype(np.int32)
        self.queue_start = np.concatenate([[0], np.cumsum(self.buckets.sizes)[:-1]]).astype(np.int64)
        self.queue_end = self.queue_start + self.buckets.sizes
        self.queue_cursor = self.queue_start.copy()
        for bucket in range(num_buckets):
            self._reshuffle(bucket)

        # Where the stream is, and the chunks recently drawn (what a checkpoint must replay on resume).
        self._next_epoch = 0
        self._drawing_epoch, self._drawing_position = -1, 0
        self._recent_chunks: deque[tuple[int, int, np.ndarray]] = deque(maxlen=lookahead_batches + 2)
        self._resume_epoch, self._resume_skipped_chunks = -1, 0
        self._replay: dict[int, np.ndarray] = {}
        self.strategy.rebuild(self)

    # -- the index stream ------------------------------------------------------------------------

    def __len__(self) -> int:
        layout = self.layout
        return self.chunks_per_epoch * layout.prompts_per_generation * layout.num_generations * layout.repeat_count

    @property
    def batches_per_epoch(self) -> int:
        """Dataloader batches per epoch: one per emitted copy of a chunk."""
        return self.chunks_per_epoch * self.layout.repeat_count

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate/HF before each epoch; the sampler follows the trainer's epoch count."""
        self._next_epoch = epoch

    def __iter__(self) -> Iterator[int]:
        epoch = self._next_epoch
        self._next_epoch += 1
        for position in range(self.chunks_per_epoch):
            indices = np.repeat(self._chunk(epoch, position), self.layout.num_generations).tolist()
            for _ in range(self.layout.repeat_count):
                yield from indices

    def _chunk(self, epoch: int, position: int) -> np.ndarray:
        """The prompts of one generation batch, drawn now (lazily) unless a resume replays or skips it."""
        resuming = epoch == self._resume_epoch
        if resuming and position in self._replay:
            chunk = self._replay.pop(position)  # drawn before the checkpoint, not yet trained on
        elif resuming and position < self._resume_skipped_chunks:
            return np.zeros(self.layout.prompts_per_generation, np.int64)  # skipped by the trainer, never trained on
        else:
            chunk = self._draw(epoch, position)
            self.generations_drawn += 1
        self._recent_chunks.append((epoch, position, chunk))
        self._drawing_epoch, self._drawing_position = epoch, position + 1
        return chunk

    def _draw(self, epoch: int, position: int) -> np.ndarray:
        if isinstance(self.strategy, Uniform):
            chunk = self.strategy.chunk(self, epoch, position)
            self.bucket_share = self.buckets.sizes / self.num_prompts
        else:
            chunk = self._draw_by_bucket()
        self.last_drawn[chunk] = self.generations_drawn
        self.bucket_draws += np.bincount(self.buckets.of_prompt[chunk], minlength=len(self.buckets.names))
        return chunk

    def _draw_by_bucket(self) -> np.ndarray:
        """Bucket counts from the floored shares, then prompts from each bucket's queue; a bucket that
        runs dry hands its shortfall to the others; if all do (a tiny dataset, or everything retired), the
        least recently drawn prompts fill the chunk, whatever their repeat window or retirement."""
        wanted = self.layout.prompts_per_generation
        weights = self.strategy.bucket_weights(self)
        available = self.strategy.drawable(self, weights)
        chunk: list[np.ndarray] = []
        first_share = None
        while wanted > 0 and available.any():
            share = self._floored_share(weights, available)
            first_share = share if first_share is None else first_share
            for bucket, count in enumerate(self.rng.multinomial(wanted, share)):
                if count:
                    taken = self._take(bucket, count)
                    chunk.append(taken)
                    wanted -= len(taken)
                    if len(taken) < count:
                        available[bucket] = False
        if wanted > 0:
            chunk.append(self._least_recently_drawn(wanted))
        self.bucket_share = first_share if first_share is not None else self.bucket_share
        return self.rng.permutation(np.concatenate(chunk))

    def _floored_share(self, weights: np.ndarray, available: np.ndarray) -> np.ndarray:
        """p <- min_share + (1 - k min_share) p over the k available buckets (uniform if no weight)."""
        weights = np.where(available, weights, 0.0)
        total = weights.sum()
        share = weights / total if total > 0 else available / available.sum()
        floor = self.args.min_share
        return np.where(available, floor + (1 - floor * available.sum()) * share, 0.0)

    def _take(self, bucket: int, count: int) -> np.ndarray:
        """Up to `count` prompts from the bucket's queue that are out of their repeat window and that
        the strategy accepts; each queued prompt is looked at most once per call."""
        taken: list[np.ndarray] = []
        needed, looked_at = count, 0
        while needed > 0 and looked_at < self.queue_end[bucket] - self.queue_start[bucket]:
            if self.queue_cursor[bucket] >= self.queue_end[bucket]:
                self._reshuffle(bucket)
                if self.queue_end[bucket] == self.queue_start[bucket]:
                    break
            cursor = self.queue_cursor[bucket]
            window = self.queue[cursor : min(self.queue_end[bucket], cursor + 4 * needed + 16)]
            keep = self.generations_drawn - self.last_drawn[window] >= self.args.repeat_window
            acceptance = self.strategy.acceptance(self, window)
            if acceptance is not None:
                keep &= self.rng.random(len(window)) < acceptance
            hits = np.flatnonzero(keep)[:needed]
            advance = hits[-1] + 1 if len(hits) == needed else len(window)
            picked = window[hits]
            self.last_drawn[picked] = self.generations_drawn  # also keeps a reshuffle from repeating it in this chunk
            taken.append(picked)
            needed -= len(hits)
            self.queue_cursor[bucket] += advance
            looked_at += advance
        return np.concatenate(taken).astype(np.int64) if taken else np.empty(0, np.int64)

    def _reshuffle(self, bucket: int) -> None:
        start, end = self.queue_start[bucket], self.queue_end[bucket]
        members = self.queue[start:end]
        retired = self.strategy.retired(self, members)
        if retired is not None and retired.any():
            members = members[~retired]
            end = start + len(members)
            self.queue_end[bucket] = end
        self.queue[start:end] = self.rng.permutation(members)
        self.queue_cursor[bucket] = start

    def _least_recently_drawn(self, count: int) -> np.ndarray:
        candidates = np.flatnonzero(self.last_drawn < self.generations_drawn)
        oldest = candidates[np.argsort(self.last_drawn[candidates], kind="stable")[:count]]
        self.last_drawn[oldest] = self.generations_drawn
        return oldest.astype(np.int64)

    # -- the evidence ----------------------------------------------------------------------------

    def record(self, prompt_indices: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> None:
        """Update from one generation batch: the signal reward of every completion, gathered from all
        ranks (`nan` for an unscored one), next to the index of the prompt it answers."""
        prompt_indices = np.asarray(prompt_indices, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        scored = ~np.isnan(scores)
        prompt_indices, scores = prompt_indices[scored], scores[scored]
        self.generations_recorded += 1
        if len(scores) == 0:
            return
        prompts, group, group_size = np.unique(prompt_indices, return_inverse=True, return_counts=True)
        group_mean = np.bincount(group, scores) / group_size
        group_abs_advantage = np.bincount(group, np.abs(scores - group_mean[group])) / group_size
        group_pass_rate = np.bincount(group, (scores >= self.args.pass_threshold).astype(np.float64)) / group_size

        old_pass_rate = self.prompt_pass_rate[prompts].copy()
        self.prompt_pass_rate[prompts] = group_pass_rate
        self.strategy.observe(self, prompts, old_pass_rate)

        buckets, num_buckets = self.buckets.of_prompt[prompts], len(self.buckets.names)
        groups = np.bincount(buckets, minlength=num_buckets)
        completions = np.bincount(buckets, group_size, minlength=num_buckets)
        seen = groups > 0
        batch_value = np.bincount(buckets, group_abs_advantage, minlength=num_buckets)[seen] / groups[seen]
        batch_pass_rate = np.bincount(buckets, group_pass_rate * group_size, minlength=num_buckets)[seen] / completions[seen]
        step = self.args.learning_rate
        self.bucket_value[seen] += step * (batch_value - self.bucket_value[seen])
        previous = self.bucket_pass_rate[seen]
        self.bucket_pass_rate[seen] = np.where(np.isnan(previous), batch_pass_rate, previous + step * (batch_pass_rate - previous))
        self.bucket_completions += completions

    # -- what the trainer logs and the checkpoint keeps ------------------------------------------

    def log_values(self) -> dict[str, float]:
        """`curriculum/share/<bucket>` and `curriculum/pass_rate/<bucket>` (observed buckets only)."""
        values = {f"curriculum/share/{name}": float(share) for name, share in zip(self.buckets.names, self.bucket_share)}
        for name, rate in zip(self.buckets.names, self.bucket_pass_rate):
            if not np.isnan(rate):
                values[f"curriculum/pass_rate/{name}"] = float(rate)
        return values

    def bucket_rows(self) -> list[dict[str, Any]]:
        """One row per bucket: its share, pass rate, mean |advantage| and prompts drawn so far."""
        return [
            {"bucket": name, "share": float(share), "pass_rate": float(rate), "mean_abs_advantage": float(value), "draws": int(draws)}
            for name, share, rate, value, draws in zip(
                self.buckets.names, self.bucket_share, self.bucket_pass_rate, self.bucket_value, self.bucket_draws
            )
        ]

    def state_dict(self, resume_epoch: int, resume_skipped_batches: int) -> dict[str, np.ndarray]:
        """Everything needed to continue the stream exactly, for a trainer that will resume at
        `resume_epoch` after skipping `resume_skipped_batches` batches of it (`trainer_resume_position`)."""
        skipped_chunks = resume_skipped_batches // self.layout.repeat_count
        replay = [(position, chunk) for epoch, position, chunk in self._recent_chunks if epoch == resume_epoch and position >= skipped_chunks]
        if self._drawing_epoch > resume_epoch:
            raise RuntimeError(f"curriculum: the sampler is in epoch {self._drawing_epoch}, ahead of the trainer's {resume_epoch}")
        drawn_to = self._drawing_position if self._drawing_epoch == resume_epoch else 0
        if sorted(position for position, _ in replay) != list(range(skipped_chunks, max(drawn_to, skipped_chunks))):
            raise RuntimeError(
                f"curriculum: cannot checkpoint epoch {resume_epoch} after {skipped_chunks} chunks: the sampler drew "
                f"{drawn_to} chunks and keeps only {len(self._recent_chunks)} recent ones (more dataloader lookahead than expected)"
            )
        state = {
            "identity": np.array(json.dumps(self._identity())),
            "rng": np.array(json.dumps(self.rng.bit_generator.state)),
            "counters": np.array([self.generations_drawn, self.generations_recorded, resume_epoch, skipped_chunks]),
            "prompt_pass_rate": self.prompt_pass_rate, "last_drawn": self.last_drawn,
            "bucket_pass_rate": self.bucket_pass_rate, "bucket_value": self.bucket_value,
            "bucket_completions": self.bucket_completions, "bucket_draws": self.bucket_draws, "bucket_share": self.bucket_share,
            "queue": self.queue, "queue_end": self.queue_end, "queue_cursor": self.queue_cursor,
            "replay_positions": np.array([position for position, _ in replay], np.int64),
            "replay_chunks": np.array([chunk for _, chunk in replay], np.int64).reshape(len(replay), self.layout.prompts_per_generation),
        }
        return state | {f"strategy.{key}": value for key, value in self.strategy.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        saved_identity = json.loads(str(state["identity"]))
        if saved_identity != self._identity():
            raise ValueError(f"curriculum state is for a different sampler: saved {saved_identity}, this one {self._identity()}")
        self.rng.bit_generator.state = json.loads(str(state["rng"]))
        self.generations_drawn, self.generations_recorded, self._resume_epoch, self._resume_skipped_chunks = (int(v) for v in state["counters"])
        for name in ("prompt_pass_rate", "last_drawn", "bucket_pass_rate", "bucket_value", "bucket_completions",
                     "bucket_draws", "bucket_share", "queue", "queue_end", "queue_cursor"):
            setattr(self, name, np.array(state[name], dtype=getattr(self, name).dtype))
        self._replay = {int(position): chunk for position, chunk in zip(state["replay_positions"], state["replay_chunks"])}
        self._next_epoch = self._resume_epoch
        self._recent_chunks.clear()
        self.strategy.load_state_dict({key.removeprefix("strategy."): value for key, value in state.items() if key.startswith("strategy.")})
        self.strategy.rebuild(self)

    def _identity(self) -> dict[str, Any]:
        return {"strategy": self.args.strategy, "num_prompts": self.num_prompts, "buckets": self.buckets.names,
                "layout": [self.layout.num_generations, self.layout.prompts_per_generation, self.layout.repeat_count]}

    def save(self, path: Path, resume_epoch: int, resume_skipped_batches: int) -> None:
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(temporary, **self.state_dict(resume_epoch, resume_skipped_batches))
        os.replace(temporary, path)

    def load(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as state:
            self.load_state_dict(dict(state))


# ----------------------------------------------------------------------------------------------------
# Wiring into TRL: the feedback path, the checkpoint/log callback, and the GRPO assembly
# ----------------------------------------------------------------------------------------------------


class ScoreFeedback:
    """The curriculum's signal reward: scores exactly as the wrapped reward does, then reports them.

    TRL calls it on every rank with that rank's rows. On training batches (those carry the
    `curriculum_index` column; eval batches don't) it all-gathers (prompt index, score) from every rank
    with `accelerate.utils.gather_object`, so every rank's sampler records the same batch in the same
    order, and hands the sampler's shares and pass rates to TRL's `log_metric` (logged per step as
    `curriculum/share/<bucket>`, `curriculum/pass_rate/<bucket>`). `__name__` is the wrapped reward's,
    so TRL still logs it as `rewards/<name>/mean`.
    """

    def __init__(self, reward_fn: Callable[..., list[float | None]], sampler: CurriculumSampler) -> None:
        self.__name__ = reward_fn.__name__
        self.__wrapped__ = reward_fn
        self.reward_fn = reward_fn
        self.sampler = sampler

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float | None]:
        prompt_indices = columns.pop(CURRICULUM_INDEX_COLUMN, None)
        scores = self.reward_fn(prompts=prompts, completions=completions, **columns)
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


class AsyncScoreFeedback(ScoreFeedback):
    """`ScoreFeedback` for an `async def` reward: TRL awaits those on its event loop."""

    async def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float | None]:
        prompt_indices = columns.pop(CURRICULUM_INDEX_COLUMN, None)
        scores = await self.reward_fn(prompts=prompts, completions=completions, **columns)
        self.report(prompt_indices, scores, columns.get("log_metric"))
        return scores


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
        layout = RepeatLayout.of_grpo(grpo_args)
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
        wrap = AsyncScoreFeedback if _is_async(rewards[names.index(signal)]) else ScoreFeedback
        wrapped = [wrap(reward, sampler) if reward.__name__ == signal else reward for reward in rewards]
        indexed = train_dataset.add_column(CURRICULUM_INDEX_COLUMN, np.arange(len(train_dataset)))
        return cls(sampler, indexed, wrapped, CurriculumCallback(sampler, stage_dir))

    def trainer_class(self, base: type) -> type:
        """`base` (GRPOTrainer) drawing its training prompts from the curriculum sampler."""
        sampler = self.sampler

        class CurriculumTrainer(base):  # type: ignore[misc, valid-type]
            def _get_train_sampler(self, dataset: Any = None) -> CurriculumSampler:
                expected = RepeatLayout.of_grpo(self.args)
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


def _is_async(reward_fn: Callable) -> bool:
    return inspect.iscoroutinefunction(reward_fn) or inspect.iscoroutinefunction(getattr(reward_fn, "__call__", None))
