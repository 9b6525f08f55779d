"""The `curriculum:` block as `gradus plan` sees it: validated before anything launches."""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, load_manifest
from stages.arguments import CurriculumArgs, OnPolicyArgs
from tests.conftest import rl_stage_manifest


def manifest_with(tmp_path, curriculum: dict, kind: str = "grpo") -> object:
    return rl_stage_manifest(tmp_path, kind, curriculum=curriculum)


def test_defaults_are_a_bandit_over_level_without_prior_or_dynamic_sampling():
    defaults = CurriculumArgs()
    assert (defaults.strategy, defaults.difficulty_column, defaults.min_share, defaults.boltzmann_temperature) == ("bandit", "level", None, 0.1)
    assert (defaults.prior_column, defaults.dynamic_sampling) == (None, False)


def test_a_valid_block_passes_the_plan(tmp_path):
    manifest = load_manifest(manifest_with(tmp_path, {"strategy": "band", "band": [0.1, 0.9], "retire_above": 0.9}))
    assert manifest.stages[0].curriculum == {"strategy": "band", "band": [0.1, 0.9], "retire_above": 0.9}


@pytest.mark.parametrize(
    "curriculum, message",
    [
        ({"strategy": "bandits"}, "field 'curriculum.strategy': Input should be 'uniform', 'ordered'"),
        ({"temprature": 0.2}, "extra inputs are not permitted (did you mean 'boltzmann_temperature'?)"),
        ({"strategy": "band", "boltzmann_temperature": 0.2}, "field 'curriculum.boltzmann_temperature': an option of bandit, ucb, not of strategy 'band'"),
        ({"strategy": "uniform", "min_share": 0.1}, "field 'curriculum.min_share': an option of ordered, adaptive, band, bandit, ucb, lp, not of strategy 'uniform'"),
        ({"strategy": "band", "band": [0.8, 0.2]}, "field 'curriculum.band': two pass rates with 0 <= low <= high <= 1"),
        ({"strategy": "ucb", "difficulty_column": None}, "strategy 'ucb' needs a difficulty column"),
        ({"difficulty_column": "topic"}, "difficulty_column 'topic' is not a column of the data"),
        ({"signal_reward": "math_acuracy"}, "field 'curriculum.signal_reward': 'math_acuracy' is not one of the stage's rewards (did you mean"),
        ({"strategy": "lp", "boltzmann_temperature": 0.2}, "field 'curriculum.boltzmann_temperature': an option of bandit, ucb, not of strategy 'lp'"),
        ({"strategy": "band", "lp_window": 3}, "field 'curriculum.lp_window': an option of lp, not of strategy 'band'"),
        ({"prior_column": "pass_rate"}, "prior_column 'pass_rate' is not a column of the data"),
        ({"screen_generations": 4}, "field 'curriculum.screen_generations': an option of dynamic_sampling, which is off"),
        ({"dynamic_sampling": True, "screen_generations": 1}, "field 'curriculum.screen_generations': input should be greater than or equal to 2"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_field(tmp_path, curriculum, message):
    with pytest.raises(ManifestError) as error:
        load_manifest(manifest_with(tmp_path, curriculum))
    assert message.lower() in str(error.value).lower() and "stage 'rl'" in str(error.value)


def test_sft_takes_only_scoreless_strategies_and_dpo_only_with_on_policy(tmp_path):
    with pytest.raises(ManifestError, match="sft stages score nothing, so they take strategy uniform or ordered, not 'bandit'"):
        load_manifest(manifest_with(tmp_path, {}, kind="sft"))
    assert CurriculumArgs(strategy="band").check("dpo", "rounds", {"prompt", "chosen", "rejected", "level"}) == (
        "dpo stages draw prompts only with on_policy (fixed pairs have no prompts to choose); add on_policy"
    )
    with pytest.raises(ManifestError, match="eval stages take no curriculum"):
        load_manifest(manifest_with(tmp_path, {}, kind="eval"))


def test_dpo_rounds_need_a_round_size_and_dynamic_sampling_is_for_grpo_only():
    assert CurriculumArgs(strategy="band").check("dpo", "rounds", {"prompt", "level"}, on_policy=OnPolicyArgs()).startswith(
        "a curriculum chooses each round's prompts; set on_policy.prompts_per_round"
    )
    assert CurriculumArgs(strategy="band", dynamic_sampling=True).check("dpo", "rounds", {"prompt", "level"}, on_policy=OnPolicyArgs(prompts_per_round=4)) == (
        "dynamic_sampling replaces GRPO groups; dpo stages have none"
    )


@pytest.mark.parametrize("old, new", [("learning_rate", "step_size"), ("temperature", "boltzmann_temperature")])
def test_an_old_name_works_with_a_warning_naming_the_new_one_and_plans_the_same_stage(tmp_path, old, new):
    from pipeline.plan import make_plan

    with pytest.warns(FutureWarning, match=f"^curriculum.{old} is deprecated; it is now curriculum.{new} \\(the same option\\)$"):
        by_old_name = make_plan(load_manifest(manifest_with(mkdir(tmp_path / "old"), {"strategy": "ucb", old: 0.5})))
    by_new_name = make_plan(load_manifest(manifest_with(mkdir(tmp_path / "new"), {"strategy": "ucb", new: 0.5})))
    assert getattr(by_old_name.stages[0].resolved.curriculum, new) == 0.5
    assert by_old_name.stages[0].fingerprint == by_new_name.stages[0].fingerprint
    # ...and the fingerprint hashes the option under the name runs were made with, so the rename reruns nothing.
    from pipeline.plan import _fingerprinted_spec

    payload = _fingerprinted_spec(load_manifest(manifest_with(mkdir(tmp_path / "payload"), {"strategy": "ucb", new: 0.5})).stages[0])
    assert payload["curriculum"][old] == 0.5 and new not in payload["curriculum"]


def mkdir(path):
    path.mkdir()
    return path


def test_an_old_name_next_to_its_new_one_is_refused(tmp_path):
    with pytest.raises(ManifestError, match=r"^stage 'rl': field 'curriculum': temperature and boltzmann_temperature both given; "
                                            r"temperature is the old name of boltzmann_temperature: keep boltzmann_temperature alone$"):
        load_manifest(manifest_with(tmp_path, {"temperature": 0.2, "boltzmann_temperature": 0.3}))
