"""Curriculum strategies and the evidence they read: numpy only, no torch, no TRL.

`Buckets` groups prompts by a difficulty column; `Evidence` is what GRPO groups have shown so far (each
prompt's latest pass rate, per-bucket moving averages of pass rate and mean |advantage|); a `Strategy`
turns the evidence into bucket weights for the next generation batch (and, for `band`, per-prompt
acceptance). The sampler that applies them, keeps TRL's index contract and resumes exactly is
`stages/curriculum/sampler.py`; the trainers' wiring is `stages/curriculum/training.py`. The strategies and
their sources are tabulated in `stages/curriculum/__init__.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.arguments import CurriculumArgs


@dataclass(frozen=True)
class Buckets:
    """Which bucket each prompt is in. For a numeric column the buckets run from easiest to hardest."""

    names: list[str]
    of_prompt: np.ndarray  # int32, one bucket id per prompt
    sizes: np.ndarray  # int64, prompts per bucket
    numeric: bool

    @classmethod
    def from_column(cls, values: Sequence[Any] | None, column: str | None, num_buckets: int, num_prompts: int) -> Buckets:
        """One bucket per value; at most `num_buckets` quantile bins, none empty, when a numeric column has more values."""
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
                # Quantiles by rank, with every tied value in one bucket: a value goes to the bucket its
                # share of the data is centred in, and buckets no value landed in are dropped. (Quantile
                # edges instead collapse on ties, so a column with many 0s and 1s, a pass rate, would give
                # empty buckets and a last bucket swallowing the whole tail.)
                counts = np.bincount(np.searchsorted(distinct, array), minlength=len(distinct))
                centre = (np.cumsum(counts) - counts / 2) / len(array)
                bucket_of_value = np.unique(np.minimum((centre * num_buckets).astype(np.int64), num_buckets - 1), return_inverse=True)[1]
                of_prompt = bucket_of_value[np.searchsorted(distinct, array)]
                names = [
                    f"{column}={low:g}..{high:g}" if low != high else f"{column}={low:g}"
                    for low, high in ((distinct[bucket_of_value == bucket].min(), distinct[bucket_of_value == bucket].max())
                                      for bucket in range(bucket_of_value.max() + 1))
                ]
        of_prompt = of_prompt.astype(np.int32)
        return cls(names, of_prompt, np.bincount(of_prompt, minlength=len(names)), numeric)


class Evidence:
    """What the prompts have shown so far. Strategies read it; only `record` (and the sampler's draw
    counters) change it, so every rank that records the same gathered scores holds the same evidence.

    Per prompt: the pass rate of its latest group (NaN = unseen). Per bucket: moving averages (step size
    `step_size`) of pass rate and of mean |advantage| (SEC's Q), completions scored, prompts drawn.
    """

    ARRAYS = ("prompt_pass_rate", "bucket_pass_rate", "bucket_value", "bucket_completions", "bucket_draws")

    def __init__(self, args: CurriculumArgs, buckets: Buckets, planned_generations: int) -> None:
        self.args, self.buckets = args, buckets
        self.num_prompts = len(buckets.of_prompt)
        self.planned_generations = max(planned_generations, 1)
        num_buckets = len(buckets.names)
        self.prompt_pass_rate = np.full(self.num_prompts, np.nan, np.float32)
        self.bucket_pass_rate = np.full(num_buckets, np.nan)
        self.bucket_value = np.zeros(num_buckets)
        self.bucket_completions = np.zeros(num_buckets)
        self.bucket_draws = np.zeros(num_buckets, np.int64)
        self.generations_drawn = 0  # generation batches drawn so far (the strategies' clock)
        self.generations_recorded = 0

    def warm_start(self, prior_pass_rate: Sequence[float | None]) -> None:
        """Start from pass rates measured before training (a `difficulty` stage's `pass_rate`; None or
        NaN = not measured): each prompt's pass rate is its prior, each bucket's pass rate the mean of its
        prompts' priors, and each bucket's value (mean |advantage|) what a 0/1 reward gives a group at
        pass rate p on average, 2 p (1 - p), averaged over the bucket. Counters stay at zero: the prior
        is evidence about the prompts, not generation batches the strategies' clocks should count."""
        prior = np.array([np.nan if value is None else value for value in prior_pass_rate], np.float64)
        if prior.shape != (self.num_prompts,):
            raise ValueError(f"prior: {prior.shape[0]} pass rates for {self.num_prompts} prompts")
        measured = ~np.isnan(prior)
        if ((prior[measured] < 0) | (prior[measured] > 1)).any():
            raise ValueError("prior: pass rates must lie in [0, 1]")
        self.prompt_pass_rate = prior.astype(np.float32)
        num_buckets = len(self.buckets.names)
        of_prompt = self.buckets.of_prompt[measured]
        counts = np.bincount(of_prompt, minlength=num_buckets)
        known = counts > 0
        rate_sum = np.bincount(of_prompt, prior[measured], minlength=num_buckets)
        value_sum = np.bincount(of_prompt, 2 * prior[measured] * (1 - prior[measured]), minlength=num_buckets)
        self.bucket_pass_rate[known] = rate_sum[known] / counts[known]
        self.bucket_value[known] = value_sum[known] / counts[known]

    def drew(self, chunk: np.ndarray) -> None:
        self.bucket_draws += np.bincount(self.buckets.of_prompt[chunk], minlength=len(self.buckets.names))

    def record(
        self, prompt_indices: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, *, completes_batch: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Update from one generation batch (or, `completes_batch=False`, the groups dynamic sampling
        dropped from it): the signal reward of every completion (`nan` for an unscored one) next to the
        index of its prompt. Returns the prompts seen and their pass rates before."""
        prompt_indices = np.asarray(prompt_indices, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        scored = ~np.isnan(scores)
        prompt_indices, scores = prompt_indices[scored], scores[scored]
        self.generations_recorded += int(completes_batch)
        if len(scores) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        prompts, group, group_size = np.unique(prompt_indices, return_inverse=True, return_counts=True)
        group_mean = np.bincount(group, scores) / group_size
        group_abs_advantage = np.bincount(group, np.abs(scores - group_mean[group])) / group_size
        group_pass_rate = np.bincount(group, (scores >= self.args.pass_threshold).astype(np.float64)) / group_size

        old_pass_rate = self.prompt_pass_rate[prompts].copy()
        self.prompt_pass_rate[prompts] = group_pass_rate

        buckets, num_buckets = self.buckets.of_prompt[prompts], len(self.buckets.names)
        groups = np.bincount(buckets, minlength=num_buckets)
        completions = np.bincount(buckets, group_size, minlength=num_buckets)
        seen = groups > 0
        batch_value = np.bincount(buckets, group_abs_advantage, minlength=num_buckets)[seen] / groups[seen]
        batch_pass_rate = np.bincount(buckets, group_pass_rate * group_size, minlength=num_buckets)[seen] / completions[seen]
        step = self.args.step_size
        self.bucket_value[seen] += step * (batch_value - self.bucket_value[seen])
        previous = self.bucket_pass_rate[seen]
        self.bucket_pass_rate[seen] = np.where(np.isnan(previous), batch_pass_rate, previous + step * (batch_pass_rate - previous))
        self.bucket_completions += completions
        return prompts, old_pass_rate

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.ARRAYS} | {
            "evidence_counters": np.array([self.generations_drawn, self.generations_recorded])
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self.ARRAYS:
            setattr(self, name, np.array(state[name], dtype=getattr(self, name).dtype))
        self.generations_drawn, self.generations_recorded = (int(value) for value in state["evidence_counters"])


class Strategy:
    """Bucket weights for the next chunk; the sampler normalises them and applies the safeguards."""

    def __init__(self, args: CurriculumArgs, buckets: Buckets) -> None:
        self.args = args

    def bucket_weights(self, evidence: Evidence) -> np.ndarray:
        """Unnormalised weight of each bucket; called once at the start of every draw."""
        raise NotImplementedError

    def acceptance(self, evidence: Evidence, prompts: np.ndarray) -> np.ndarray | None:
        """Probability of keeping each candidate prompt its bucket's queue offers (None: keep all)."""
        return None

    def drawable(self, evidence: Evidence, weights: np.ndarray) -> np.ndarray:
        """Buckets that still have prompts this strategy would draw."""
        return evidence.buckets.sizes > 0

    def retired(self, evidence: Evidence, prompts: np.ndarray) -> np.ndarray | None:
        """Prompts to drop from their queue for good (None: none)."""
        return None

    def observe(self, evidence: Evidence, prompts: np.ndarray, old_pass_rate: np.ndarray) -> None:
        """Called by `record` after these prompts' pass rates changed."""

    def rebuild(self, evidence: Evidence) -> None:
        """Recompute what derives from the sampler's statistics (after construction and after a load)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """What the strategy itself must carry across a resume (beyond the sampler's statistics)."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state_dict` saved."""


class Uniform(Strategy):
    """The control: every prompt equally likely. Its index stream is TRL's own shuffle, index for index
    (`CurriculumSampler` draws it with torch, as `RepeatSampler(shuffle=True)` does), so this class only
    reports the shares that stream has."""

    def bucket_weights(self, evidence: Evidence) -> np.ndarray:
        return evidence.buckets.sizes.astype(np.float64)


class Ordered(Strategy):
    """Competence-based pacing (Platanios et al. 2019, "root" competence): at progress t of T
    generation batches (T = `ramp_fraction` of the stage), sample uniformly among the easiest
    c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2)) of the prompts, by the difficulty column."""

    def __init__(self, args: CurriculumArgs, buckets: Buckets) -> None:
        super().__init__(args, buckets)
        if not buckets.numeric:
            raise ValueError(f"strategy {args.strategy!r} needs a numeric difficulty column (ascending = harder); {args.difficulty_column!r} is not")
        self.easiest_first = np.arange(len(buckets.names))

    def competence(self, evidence: Evidence) -> float:
        ramp = max(1.0, self.args.ramp_fraction * evidence.planned_generations)
        start = self.args.start_competence
        return min(1.0, math.sqrt(evidence.generations_drawn * (1 - start**2) / ramp + start**2))

    def bucket_weights(self, evidence: Evidence) -> np.ndarray:
        fractions = evidence.buckets.sizes[self.easiest_first] / evidence.num_prompts
        before = np.cumsum(fractions) - fractions
        admitted = np.clip(self.competence(evidence) - before, 0, fractions)
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

    def bucket_weights(self, evidence: Evidence) -> np.ndarray:
        if evidence.generations_drawn - self.last_estimate >= self.args.reestimate_every:
            pass_rate = evidence.bucket_pass_rate
            unobserved_last = np.where(np.isnan(pass_rate), np.inf, -pass_rate)
            self.easiest_first = np.lexsort((np.arange(len(pass_rate)), unobserved_last))
            self.last_estimate = evidence.generations_drawn
        return super().bucket_weights(evidence)

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

    def unseen_weight(self, evidence: Evidence) -> np.ndarray:
        """An unseen prompt is as learnable as its bucket: 1 if the bucket's pass rate is in the band
        (or unknown), `revisit_probability` otherwise. Never 0: only an observed prompt retires."""
        low, high = self.args.band
        rate = evidence.bucket_pass_rate
        in_band = np.isnan(rate) | ((rate >= low) & (rate <= high))
        return np.where(in_band, 1.0, self.args.revisit_probability)

    def class_weights(self, evidence: Evidence) -> np.ndarray:
        """(buckets, 4) weight of a prompt of each class in each bucket."""
        weights = np.empty(self.class_counts.shape)
        weights[:, self.UNSEEN] = self.unseen_weight(evidence)
        weights[:, self.IN_BAND] = 1.0
        weights[:, self.OUTSIDE] = self.args.revisit_probability
        weights[:, self.RETIRED] = 0.0
        return weights

    def bucket_weights(self, evidence: Evidence) -> np.ndarray:
        weights = self.class_weights(evidence)
        largest_present = np.where(self.class_counts > 0, weights, 0.0).max(axis=1, keepdims=True)
        self.class_acceptance = weights / np.maximum(largest_present, 1e-12)
        return (self.class_counts * weights).sum(axis=1)

    def drawable(self, evidence: Evidence, weights: np.ndarray) -> np.ndarray:
        return (self.class_counts[:, : self.RETIRED].sum(axis=1) > 0) & (weights > 0)

    def acceptance(self, evidence: Evidence, prompts: np.ndarray) -> np.ndarray:
        return self.class_acceptance[evidence.buckets.of_prompt[prompts], self.classify(evidence.prompt_pass_rate[prompts])]

    def retired(self, evidence: Evidence, prompts: np.ndarray) -> np.ndarray:
        return evidence.prompt_pass_rate[prompts] >= self.args.retire_above

    def observe(self, evidence: Evidence, prompts: np.ndarray, old_pass_rate: np.ndarray) -> None:
        buckets = evidence.buckets.of_prompt[prompts]
        np.add.at(self.class_counts, (buckets, self.classify(old_pass_rate)), -1)
        np.add.at(self.class_counts, (buckets, self.classify(evidence.prompt_pass_rate[prompts])), 1)

    def rebuild(self, evidence: Evidence) -> None:
        self.class_counts[:] = 0
        np.add.at(self.class_counts, (evidence.buckets.of_prompt, self.classify(evidence.prompt_pass_rate)), 1)


def boltzmann(values: np.ndarray, temperature: float) -> np.ndarray:
    scaled = (values - values.max()) / temperature
    return np.exp(scaled)


class Bandit(Strategy):
    """SEC: buckets are the arms of a non-stationary bandit whose reward is the mean absolute advantage
    of the bucket's groups in a generation batch; Q_b <- Q_b + alpha (r_b - Q_b) (TD(0), `step_size`)
    for the buckets drawn; buckets sampled with P(b) ~ exp(Q_b / tau) (`boltzmann_temperature`). Q starts at 0."""

    def bucket_weights(self, evidence: Evidence) -> np.ndarray:
        return boltzmann(evidence.bucket_value, self.args.boltzmann_temperature)


class UCB(Strategy):
    """DUMP: UCB_b = mean|A|_b + c sqrt(2 ln(N + 1) / (n_b + 1)), N completions scored in all, n_b in
    bucket b; sampling probabilities are softmax(UCB / tau). DUMP keeps mean|A| over a window of the
    last 300 advantages; gradus uses the moving average the bandit keeps (window about 2/alpha batches)."""

    def bucket_weights(self, evidence: Evidence) -> np.ndarray:
        completions = evidence.bucket_completions
        bonus = self.args.exploration * np.sqrt(2 * np.log(completions.sum() + 1) / (completions + 1))
        return boltzmann(evidence.bucket_value + bonus, self.args.boltzmann_temperature)


class LearningProgress(Strategy):
    """Absolute learning progress (ALP-GMM, Portelas et al. 2019; the window form of TeachMyAgent, 2021):
    a bucket's value is how fast its pass rate is changing, |mean of its latest `lp_window` observations
    - mean of the `lp_window` before those|, where an observation is the mean pass rate of the bucket's
    groups in one generation batch (weighted by groups). Buckets are drawn in proportion to that value,
    as ALP-GMM samples its Gaussians in proportion to their ALP; `min_share` plays the part of its
    random-exploration fraction. A bucket with fewer than 2 x `lp_window` observations is valued at 1,
    the largest change a pass rate can make, so every bucket is measured before it is judged.

    Where gradus differs: ALP-GMM fits a Gaussian mixture over a continuous task space and compares each
    new task with its nearest previous one; here the task space is the difficulty buckets, so the
    progress is a per-bucket difference of windowed means. A pass rate that sits at 0 or 1 shows no
    change (and no sampling noise either), so dead buckets fall to the `min_share` floor."""

    UNMEASURED_VALUE = 1.0

    def __init__(self, args: CurriculumArgs, buckets: Buckets) -> None:
        super().__init__(args, buckets)
        slots = 2 * args.lp_window
        self.observation_sum = np.zeros((len(buckets.names), slots))  # a ring of the latest 2W observations per bucket
        self.observation_groups = np.zeros((len(buckets.names), slots))
        self.observations = np.zeros(len(buckets.names), np.int64)

    def progress(self) -> np.ndarray:
        """|recent window - older window| of each bucket's pass rate; UNMEASURED_VALUE until both are full."""
        window = self.args.lp_window
        order = (self.observations[:, None] - 1 - np.arange(2 * window)[None, :]) % (2 * window)  # newest first
        sums = np.take_along_axis(self.observation_sum, order, axis=1)
        groups = np.take_along_axis(self.observation_groups, order, axis=1)
        recent = sums[:, :window].sum(1) / np.maximum(groups[:, :window].sum(1), 1)
        older = sums[:, window:].sum(1) / np.maximum(groups[:, window:].sum(1), 1)
        return np.where(self.observations >= 2 * window, np.abs(recent - older), self.UNMEASURED_VALUE)

    def bucket_weights(self, evidence: Evidence) -> np.ndarray:
        return self.progress()

    def observe(self, evidence: Evidence, prompts: np.ndarray, old_pass_rate: np.ndarray) -> None:
        num_buckets = len(evidence.buckets.names)
        buckets = evidence.buckets.of_prompt[prompts]
        groups = np.bincount(buckets, minlength=num_buckets)
        seen = np.flatnonzero(groups)
        slot = self.observations[seen] % (2 * self.args.lp_window)
        self.observation_sum[seen, slot] = np.bincount(buckets, evidence.prompt_pass_rate[prompts], minlength=num_buckets)[seen]
        self.observation_groups[seen, slot] = groups[seen]
        self.observations[seen] += 1

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"observation_sum": self.observation_sum, "observation_groups": self.observation_groups, "observations": self.observations}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name, value in self.state_dict().items():
            setattr(self, name, np.array(state[name], dtype=value.dtype))


STRATEGIES: dict[str, type[Strategy]] = {
    "uniform": Uniform, "ordered": Ordered, "adaptive": Adaptive, "band": Band, "bandit": Bandit, "ucb": UCB,
    "lp": LearningProgress,
}
