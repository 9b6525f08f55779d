"""The rewards of a stage that samples outside a trainer (dpo's on-policy rounds, the difficulty stage),
called as TRL's trainers call them, so a reward behaves the same there as in GRPO."""

from __future__ import annotations

from collections.abc import Callable
from statistics import fmean
from typing import Any


def weighted_scores(
    reward_fns: list[tuple[str, float, Callable]], rows: Any, completions: list[Any], completion_ids: list[list[int]], n: int,
) -> tuple[list[float], dict[str, float | None]]:
    """Each completion's weighted sum of rewards (a None counts 0), and each reward's mean over the rows it applies to.

    The rewards get what TRL's trainers pass them: prompts, completions, `completion_ids` (here the
    completion text tokenised again) and every other dataset column, repeated for the n completions
    of each prompt.
    """
    columns = {column: [value for value in rows[column] for _ in range(n)] for column in rows.column_names}
    prompts = columns.pop("prompt")
    totals = [0.0] * len(completions)
    reward_means = {}
    for name, weight, reward_fn in reward_fns:
        values = reward_fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
        totals = [total + weight * (0.0 if value is None else value) for total, value in zip(totals, values)]
        applicable = [value for value in values if value is not None]
        reward_means[f"rewards/{name}/mean"] = fmean(applicable) if applicable else None
    return totals, reward_means
