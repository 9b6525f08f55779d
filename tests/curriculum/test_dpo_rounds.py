"""On-policy DPO rounds that draw their prompts from a curriculum, for real (`gradus run`, tiny model).

The reward is `level_coin` (tests/curriculum/planted_rewards.py): level 1 always passes, level 3 never,
level 2 by a coin on each completion, so only level-2 prompts ever give a preference pair. A `band`
curriculum sees that in round 1's scores and draws level 2 from then on; TRL is not involved in the
choice, and every later round's prompts follow from the state the previous round saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import data_recipes
from stages.arguments import CurriculumArgs
from stages.curriculum.rounds import RoundCurriculum
from tests.conftest import TINY_MODEL, gradus, write_manifest

pytestmark = pytest.mark.slow

SIGNAL = "tests.curriculum.planted_rewards:level_coin"
DATA = {"recipe": "synthetic_arithmetic", "levels": [1, 2, 3], "num_examples": 90, "seed": 3}


@pytest.mark.ci
def test_rounds_move_to_the_prompts_that_give_pairs_and_follow_the_saved_state(tmp_path):
    run_dir = tmp_path / "run"
    stage = {
        "name": "dpo", "kind": "dpo", "model": "base", "data": DATA, "rewards": [{"name": SIGNAL}],
        "on_policy": {"num_completions": 4, "margin": 0.5, "rounds": 3, "prompts_per_round": 12, "max_new_tokens": 8, "generation_batch_size": 16},
        "curriculum": {"strategy": "band"},
        "args": {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 48, "learning_rate": 1e-4, "logging_steps": 1,
                 "gradient_checkpointing": False, "report_to": "none"},
    }
    manifest = {"run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL, "decontamination": {"enabled": False}, "stages": [stage]}
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    levels = data_recipes.load("synthetic_arithmetic", {key: value for key, value in DATA.items() if key != "recipe"})["level"]
    pairs = run_dir / "dpo" / "pairs"
    sampling = [json.loads((pairs / f"round_{number}" / "sampling.json").read_text()) for number in (1, 2, 3)]
    drawn = [round_sampling["prompt_indices"] for round_sampling in sampling]
    assert all(len(set(indices)) == 12 for indices in drawn) and not set(drawn[0]) & set(drawn[1])  # distinct; the repeat window holds
    share_of_level_2 = [sum(levels[index] == 2 for index in indices) / len(indices) for indices in drawn]
    assert min(share_of_level_2[1:]) >= 0.6 and min(share_of_level_2[1:]) > share_of_level_2[0]  # round 1 knew nothing yet
    assert [row["bucket"] for row in sampling[0]["curriculum"]["buckets"]] == ["level=1", "level=2", "level=3"]

    # Resuming before round 3 means loading the state round 2 saved: the same prompts come out.
    prompts = data_recipes.load("synthetic_arithmetic", {key: value for key, value in DATA.items() if key != "recipe"})
    resumed = RoundCurriculum(CurriculumArgs(strategy="band"), prompts, prompts_per_round=12, rounds=3, seed=0)
    assert resumed.prompts_for(3, pairs / "round_2") == drawn[2]
