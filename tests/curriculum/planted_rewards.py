"""Rewards the curriculum's end-to-end tests name by `module:function` path (the stage runs from the repo root)."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

# The planted evidence: level 2 is the only level whose groups have a spread of scores.
PASS_PROBABILITY = {1: 1.0, 2: 0.5, 3: 0.0}


def level_coin(prompts: list, completions: list, level: list[int], trainer_state: Any = None, **kwargs: Any) -> list[float]:
    """1.0 with a probability set by the row's level, decided by a hash of the completion and its
    position, so a rerun that generates the same completions gets the same scores.

    With CURRICULUM_TEST_PAUSE_AFTER_STEP=n in the environment it sleeps a second per call after
    step n, so a test can kill the run between its checkpoint and its end.
    """
    pause_after = os.environ.get("CURRICULUM_TEST_PAUSE_AFTER_STEP")
    if pause_after is not None and trainer_state is not None and trainer_state.global_step >= int(pause_after):
        time.sleep(1.0)
    draws = [int(hashlib.sha256(f"{index}|{completion}".encode()).hexdigest(), 16) % 1000 / 1000 for index, completion in enumerate(completions)]
    return [float(draw < PASS_PROBABILITY[row_level]) for draw, row_level in zip(draws, level, strict=True)]
