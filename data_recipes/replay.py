"""Replay: a share of an earlier stage's training data mixed into a later stage's, against forgetting.

The draw is the data's business, not the stage's: which rows and how many follow from the two sets'
sizes, the share and the seed alone, so a rerun (or a resume) trains on exactly the same mixture.
The stage process (`stages.common.with_replay`) loads both sets and records the draw.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets


def replay_rows(own_rows: int, source_rows: int, fraction: float, seed: int) -> list[int]:
    """Which rows of the replayed data to mix in: enough that they are `fraction` of the mixture, drawn
    without replacement by a generator seeded with `seed` alone, so the same seed draws the same rows."""
    wanted = round(own_rows * fraction / (1 - fraction))
    if wanted > source_rows:
        raise RuntimeError(f"replay: a fraction of {fraction} of {own_rows} rows needs {wanted} replayed rows; the replayed stage's data has {source_rows}")
    return random.Random(seed).sample(range(source_rows), wanted)


def mixed_in(dataset: "datasets.Dataset", source: "datasets.Dataset", fraction: float, seed: int) -> tuple["datasets.Dataset", dict[str, int]]:
    """`dataset` with a seeded `fraction` of `source`'s rows appended (the columns both share; the trainer
    shuffles), and the counts of the draw (`own_rows`, `replayed_rows`, `source_rows`) for the stage's report."""
    import datasets

    rows = replay_rows(len(dataset), len(source), fraction, seed)
    shared = [column for column in dataset.column_names if column in source.column_names]
    own = dataset.select_columns(shared)
    drawn = source.select(rows).select_columns(shared).cast(own.features)
    counts = {"own_rows": len(own), "replayed_rows": len(rows), "source_rows": len(source)}
    return datasets.concatenate_datasets([own, drawn]), counts
