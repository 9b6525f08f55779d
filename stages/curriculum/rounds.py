"""The curriculum for a stage that works in rounds (on-policy DPO): each round's prompts are one chunk
drawn by the sampler, and the round's scores are its evidence.

The layout is `RepeatLayout(1, prompts_per_round, 1)`: a round is one generation batch of distinct
prompts. After a round is sampled and scored, the main process records the signal reward of every
completion and writes the sampler's state into the round's directory (before that directory is renamed
into place, so a round's pairs and the state after it appear together). Before drawing round r, every
process loads the state round r - 1 left, so all processes draw the same prompts, and a rerun after a
kill draws exactly what the killed run drew (or would have).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.arguments import CurriculumArgs
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout

STATE_FILE = "curriculum_state.npz"


class RoundCurriculum:
    """Which prompts each round samples, chosen by a curriculum strategy from the earlier rounds' scores."""

    def __init__(self, args: CurriculumArgs, prompts: Any, prompts_per_round: int, rounds: int, seed: int) -> None:
        self.args = args
        self.sampler = CurriculumSampler.for_dataset(args, prompts, RepeatLayout(1, prompts_per_round, 1), seed=seed, planned_generations=rounds)

    def prompts_for(self, round_number: int, previous_round_dir: Path | None) -> list[int]:
        """The rows round `round_number` (from 1) samples, after the state the previous round saved."""
        if previous_round_dir is not None:
            self.sampler.load(previous_round_dir / STATE_FILE)
        return self.sampler.draw_chunk(round_number - 1).tolist()

    def record(self, round_number: int, prompt_indices: list[int], scores: list[float | None], samples_per_prompt: int,
               round_dir: Path) -> dict[str, Any]:
        """Record the round's scores (its completions in prompt order, `samples_per_prompt` each), save
        the state into `round_dir`, and return the bucket figures for the round's record."""
        scores = [np.nan if score is None else score for score in scores]
        self.sampler.record(np.repeat(prompt_indices, samples_per_prompt), scores)
        self.sampler.save_after_chunks(round_dir / STATE_FILE, round_number)
        buckets = [{key: None if isinstance(value, float) and np.isnan(value) else value for key, value in row.items()}
                   for row in self.sampler.bucket_rows()]
        return {"strategy": self.args.strategy, "buckets": buckets}
