"""The `curriculum:` block as `gradus plan` sees it: validated before anything launches."""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, load_manifest
from stages.arguments import CurriculumArgs
from tests.conftest import TINY_MODEL, write_manifest


def manifest_with(tmp_path, curriculum: dict, kind: str = "grpo") -> object:
    stage = {
        "name": "rl", "kind": kind,
        "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2, 3], "num_examples": 30},
        "rewards": [{"name": "math_accuracy"}],
        "curriculum": curriculum,
    }
    return write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL, "stages": [stage]})


def test_defaults_are_a_bandit_over_level():
    defaults = CurriculumArgs()
    assert (defaults.strategy, defaults.difficulty_column, defaults.min_share, defaults.temperature) == ("bandit", "level", 0.05, 0.1)


def test_a_valid_block_passes_the_plan(tmp_path):
    manifest = load_manifest(manifest_with(tmp_path, {"strategy": "band", "band": [0.1, 0.9], "retire_above": 0.9}))
    assert manifest.stages[0].curriculum == {"strategy": "band", "band": [0.1, 0.9], "retire_above": 0.9}


@pytest.mark.parametrize(
    "curriculum, message",
    [
        ({"strategy": "bandits"}, "field 'curriculum.strategy': Input should be 'uniform', 'ordered'"),
        ({"temprature": 0.2}, "extra inputs are not permitted (did you mean 'temperature'?)"),
        ({"strategy": "band", "temperature": 0.2}, "field 'curriculum.temperature': an option of bandit, ucb, not of strategy 'band'"),
        ({"strategy": "uniform", "min_share": 0.1}, "field 'curriculum.min_share': an option of ordered, adaptive, band, bandit, ucb, not of strategy 'uniform'"),
        ({"strategy": "band", "band": [0.8, 0.2]}, "field 'curriculum.band': two pass rates with 0 <= low <= high <= 1"),
        ({"strategy": "ucb", "difficulty_column": None}, "strategy 'ucb' needs a difficulty column"),
        ({"difficulty_column": "topic"}, "difficulty_column 'topic' is not a column of the data"),
        ({"signal_reward": "math_acuracy"}, "field 'curriculum.signal_reward': 'math_acuracy' is not one of the stage's rewards (did you mean"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_field(tmp_path, curriculum, message):
    with pytest.raises(ManifestError) as error:
        load_manifest(manifest_with(tmp_path, curriculum))
    assert message.lower() in str(error.value).lower() and "stage 'rl'" in str(error.value)


def test_only_grpo_stages_take_a_curriculum(tmp_path):
    with pytest.raises(ManifestError, match="sft stages take no curriculum"):
        load_manifest(manifest_with(tmp_path, {}, kind="sft"))
