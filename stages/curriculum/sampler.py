"""The curriculum's index stream: a `torch` sampler that keeps TRL's repetition contract, draws each
generation batch from a strategy (`stages/curriculum/strategies.py`), and resumes exactly.

TRL's contract (`RepeatSampler`): the stream is made of chunks of `prompts_per_generation` distinct
prompts; each chunk is emitted `repeat_count` (= steps_per_generation x num_iterations) times, each
prompt `num_generations` times in a row. One emitted copy of a chunk is one dataloader batch across all
ranks (accelerate shards it), so a chunk is one generation batch. Nothing here imports TRL or
transformers; `stages/trl_hooks.py` derives the layout from a trainer's config.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from launch.atomic import replacing
from stages.arguments import CurriculumArgs
from stages.curriculum.strategies import STRATEGIES, Buckets, Evidence, Uniform

NEVER_DRAWN = -(2**30)
FLOOR_TOTAL = 0.1  # default min_share: this much of every batch, spread evenly over the buckets


@dataclass(frozen=True)
class RepeatLayout:
    """TRL's repetition contract (`RepeatSampler(mini_repeat_count, batch_size, repeat_count)`)."""

    num_generations: int = 1  # each prompt this many times in a row (one GRPO group)
    prompts_per_generation: int = 1  # distinct prompts per chunk (one generation batch)
    repeat_count: int = 1  # each chunk this many times (steps_per_generation x num_iterations)


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
        prior: Sequence[float | None] | None = None,
    ) -> None:
        self.args, self.layout, self.seed, self.num_prompts = args, layout, seed, num_prompts
        self.chunks_per_epoch = num_prompts // layout.prompts_per_generation
        if self.chunks_per_epoch == 0:
            raise ValueError(f"{num_prompts} prompts cannot fill one generation batch of {layout.prompts_per_generation} distinct prompts")
        self.buckets = Buckets.from_column(difficulty_values, args.difficulty_column, args.num_buckets, num_prompts)
        num_buckets = len(self.buckets.names)
        if args.strategy == "uniform":
            self.min_share = 0.0  # uniform has no safeguards; its replacement draws (dynamic sampling) are proportional too
        else:
            self.min_share = args.min_share if args.min_share is not None else FLOOR_TOTAL / num_buckets
        if self.min_share * num_buckets > 1:
            raise ValueError(f"min_share {args.min_share} x {num_buckets} buckets exceeds 1; lower min_share")
        self.strategy = STRATEGIES[args.strategy](args, self.buckets)
        self.evidence = Evidence(args, self.buckets, planned_generations)
        if prior is not None:
            self.evidence.warm_start(prior)
        self.rng = np.random.default_rng(seed)
        self.last_drawn = np.full(num_prompts, NEVER_DRAWN, np.int32)  # generation batch each prompt was last drawn in
        self.bucket_share = self.buckets.sizes / num_prompts  # the shares the latest chunk was drawn with
        self._permutation_epoch: int | None = None  # uniform: the epoch whose TRL permutation is cached
        self._permutation = np.empty(0, np.int64)

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
        self.strategy.rebuild(self.evidence)

    @classmethod
    def for_dataset(cls, args: CurriculumArgs, dataset: Any, layout: RepeatLayout, **options: Any) -> CurriculumSampler:
        """The sampler over a `datasets.Dataset`'s rows: buckets from its `difficulty_column`, the prior
        from its `prior_column` (both as `args` name them); `options` as the constructor's."""
        column = (lambda name: list(dataset[name]) if name else None)
        return cls(args, column(args.difficulty_column), len(dataset), layout, prior=column(args.prior_column), **options)

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

    def draw_chunk(self, number: int) -> np.ndarray:
        """The `number`-th chunk of the stream (counting from 0 over epochs), for a caller that takes the
        stream chunk by chunk instead of iterating it (on-policy DPO's rounds); after a `load`, the first
        chunk the saved state had not drawn comes next, as for a resumed trainer."""
        return self._chunk(*divmod(number, self.chunks_per_epoch))

    def save_after_chunks(self, path: Path, chunks: int) -> None:
        """`save` for a caller that has drawn and recorded `chunks` chunks (see `draw_chunk`)."""
        epoch, position = divmod(chunks, self.chunks_per_epoch)
        self.save(path, epoch, position * self.layout.repeat_count)

    def _chunk(self, epoch: int, position: int) -> np.ndarray:
        """The prompts of one generation batch, drawn now (lazily) unless a resume replays or skips it."""
        resuming = epoch == self._resume_epoch
        if resuming and position in self._replay:
            chunk = self._replay.pop(position)  # drawn before the checkpoint, not yet trained on
        elif resuming and position < self._resume_skipped_chunks:
            return np.zeros(self.layout.prompts_per_generation, np.int64)  # skipped by the trainer, never trained on
        else:
            chunk = self._draw(epoch, position)
            self.evidence.generations_drawn += 1
        self._recent_chunks.append((epoch, position, chunk))
        self._drawing_epoch, self._drawing_position = epoch, position + 1
        return chunk

    def _draw(self, epoch: int, position: int) -> np.ndarray:
        if isinstance(self.strategy, Uniform):
            chunk = self._uniform_chunk(epoch, position)
            self.bucket_share = self.buckets.sizes / self.num_prompts
        else:
            chunk, share = self._draw_by_bucket(self.layout.prompts_per_generation)
            self.bucket_share = share if share is not None else self.bucket_share
        self.last_drawn[chunk] = self.evidence.generations_drawn
        self.evidence.drew(chunk)
        return chunk

    def _uniform_chunk(self, epoch: int, position: int) -> np.ndarray:
        """TRL's shuffle, index for index: epoch e is the (e+1)-th `torch.randperm` of a generator seeded
        with `seed`, cut into chunks, exactly as `RepeatSampler(shuffle=True, seed=seed)` does. (TRL
        re-creates its generator when a run resumes, so its later epochs change on resume; here they don't.)"""
        if self._permutation_epoch != epoch:
            generator = torch.Generator().manual_seed(self.seed)
            for _ in range(epoch + 1):
                permutation = torch.randperm(self.num_prompts, generator=generator)
            self._permutation, self._permutation_epoch = permutation.numpy(), epoch
        size = self.layout.prompts_per_generation
        return self._permutation[position * size : (position + 1) * size]

    def draw_replacements(self, count: int, tried: Sequence[int] | np.ndarray) -> np.ndarray:
        """`count` distinct prompts to replace groups dynamic sampling dropped from the current generation
        batch, drawn by the strategy's current weights (for `uniform`, in proportion to bucket sizes),
        none of them `tried` (the batch's prompts so far, which count as drawn now). Every rank calls it
        with the same arguments in the same order, so every rank's state stays the same."""
        self.last_drawn[np.asarray(tried, np.int64)] = self.evidence.generations_drawn
        if count <= 0:
            return np.empty(0, np.int64)
        replacements, _ = self._draw_by_bucket(count)
        self.evidence.drew(replacements)
        return replacements

    def _draw_by_bucket(self, wanted: int) -> tuple[np.ndarray, np.ndarray | None]:
        """`wanted` prompts: bucket counts from the floored shares, then prompts from each bucket's queue;
        a bucket that runs dry hands its shortfall to the others; if all do (a tiny dataset, or everything
        retired), the least recently drawn prompts fill the chunk, whatever their repeat window or
        retirement. Returns the prompts and the shares they were drawn with (None if no bucket could serve)."""
        weights = self.strategy.bucket_weights(self.evidence)
        available = self.strategy.drawable(self.evidence, weights)
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
        return self.rng.permutation(np.concatenate(chunk)), first_share

    def _floored_share(self, weights: np.ndarray, available: np.ndarray) -> np.ndarray:
        """p <- min_share + (1 - k min_share) p over the k available buckets (uniform if no weight)."""
        weights = np.where(available, weights, 0.0)
        total = weights.sum()
        share = weights / total if total > 0 else available / available.sum()
        floor = self.min_share
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
            keep = self.evidence.generations_drawn - self.last_drawn[window] >= self.args.repeat_window
            acceptance = self.strategy.acceptance(self.evidence, window)
            if acceptance is not None:
                keep &= self.rng.random(len(window)) < acceptance
            hits = np.flatnonzero(keep)[:needed]
            advance = hits[-1] + 1 if len(hits) == needed else len(window)
            picked = window[hits]
            self.last_drawn[picked] = self.evidence.generations_drawn  # also keeps a reshuffle from repeating it in this chunk
            taken.append(picked)
            needed -= len(hits)
            self.queue_cursor[bucket] += advance
            looked_at += advance
        return np.concatenate(taken).astype(np.int64) if taken else np.empty(0, np.int64)

    def _reshuffle(self, bucket: int) -> None:
        start, end = self.queue_start[bucket], self.queue_end[bucket]
        members = self.queue[start:end]
        retired = self.strategy.retired(self.evidence, members)
        if retired is not None and retired.any():
            members = members[~retired]
            end = start + len(members)
            self.queue_end[bucket] = end
        self.queue[start:end] = self.rng.permutation(members)
        self.queue_cursor[bucket] = start

    def _least_recently_drawn(self, count: int) -> np.ndarray:
        candidates = np.flatnonzero(self.last_drawn < self.evidence.generations_drawn)
        oldest = candidates[np.argsort(self.last_drawn[candidates], kind="stable")[:count]]
        self.last_drawn[oldest] = self.evidence.generations_drawn
        return oldest.astype(np.int64)

    # -- the evidence ----------------------------------------------------------------------------

    def record(self, prompt_indices: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, *, completes_batch: bool = True) -> None:
        """Update from one generation batch: the signal reward of every completion, gathered from all
        ranks (`nan` for an unscored one), next to the index of the prompt it answers. Groups dynamic
        sampling dropped are recorded too, with `completes_batch=False` (their batch goes on)."""
        prompts, old_pass_rate = self.evidence.record(prompt_indices, scores, completes_batch=completes_batch)
        self.strategy.observe(self.evidence, prompts, old_pass_rate)

    # -- what the trainer logs and the checkpoint keeps ------------------------------------------

    def log_values(self) -> dict[str, float]:
        """`curriculum/share/<bucket>` and `curriculum/pass_rate/<bucket>` (observed buckets only)."""
        values = {f"curriculum/share/{name}": float(share) for name, share in zip(self.buckets.names, self.bucket_share)}
        for name, rate in zip(self.buckets.names, self.evidence.bucket_pass_rate):
            if not np.isnan(rate):
                values[f"curriculum/pass_rate/{name}"] = float(rate)
        return values

    def bucket_rows(self) -> list[dict[str, Any]]:
        """One row per bucket: its share, pass rate, mean |advantage| and prompts drawn so far."""
        return [
            {"bucket": name, "share": float(share), "pass_rate": float(rate), "mean_abs_advantage": float(value), "draws": int(draws)}
            for name, share, rate, value, draws in zip(
                self.buckets.names, self.bucket_share, self.evidence.bucket_pass_rate, self.evidence.bucket_value, self.evidence.bucket_draws
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
            "counters": np.array([resume_epoch, skipped_chunks]),
            "last_drawn": self.last_drawn, "bucket_share": self.bucket_share,
            "queue": self.queue, "queue_end": self.queue_end, "queue_cursor": self.queue_cursor,
            "replay_positions": np.array([position for position, _ in replay], np.int64),
            "replay_chunks": np.array([chunk for _, chunk in replay], np.int64).reshape(len(replay), self.layout.prompts_per_generation),
        }
        return state | self.evidence.state_dict() | {f"strategy.{key}": value for key, value in self.strategy.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        saved_identity = json.loads(str(state["identity"]))
        if saved_identity != self._identity():
            raise ValueError(f"curriculum state is for a different sampler: saved {saved_identity}, this one {self._identity()}")
        self.rng.bit_generator.state = json.loads(str(state["rng"]))
        self._resume_epoch, self._resume_skipped_chunks = (int(value) for value in state["counters"])
        for name in ("last_drawn", "bucket_share", "queue", "queue_end", "queue_cursor"):
            setattr(self, name, np.array(state[name], dtype=getattr(self, name).dtype))
        self.evidence.load_state_dict(state)
        self._replay = {int(position): chunk for position, chunk in zip(state["replay_positions"], state["replay_chunks"])}
        self._next_epoch = self._resume_epoch
        self._recent_chunks.clear()
        self.strategy.load_state_dict({key.removeprefix("strategy."): value for key, value in state.items() if key.startswith("strategy.")})
        self.strategy.rebuild(self.evidence)

    def _identity(self) -> dict[str, Any]:
        return {"strategy": self.args.strategy, "num_prompts": self.num_prompts, "buckets": self.buckets.names,
                "layout": [self.layout.num_generations, self.layout.prompts_per_generation, self.layout.repeat_count]}

    def save(self, path: Path, resume_epoch: int, resume_skipped_batches: int) -> None:
        with replacing(path, suffix=".npz") as temporary:
            np.savez(temporary, **self.state_dict(resume_epoch, resume_skipped_batches))

    def load(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as state:
            self.load_state_dict(dict(state))
