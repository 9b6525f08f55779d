"""The difficulty stage's pure parts: pass rates from scores, the keep filter, the pool summary, and
its `args` checked at plan time."""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, load_manifest
from stages.difficulty import kept, pass_rates, summary
from tests.conftest import TINY_MODEL, write_manifest


def test_pass_rate_is_the_share_of_each_prompts_k_scores_at_the_threshold():
    assert pass_rates([1.0, 0.0, 1.0, 1.0, 0.4, 0.6, 0.5, 0.0], 4, 0.5) == [0.75, 0.5]


def test_keep_filter_is_inclusive_and_none_keeps_everything():
    rates = [0.0, 0.125, 0.25, 0.5, 0.75, 0.875, 1.0]
    assert kept(rates, [0.2, 0.8]) == [2, 3, 4] and kept(rates, [0.25, 0.75]) == [2, 3, 4] and kept(rates, None) == list(range(7))


def test_summary_splits_the_pool_at_zero_and_one_and_by_level():
    figures = summary([0.0, 0.0, 1.0, 0.5], [3, 3, 1, 2])
    assert (figures["share_never_solved"], figures["share_always_solved"], figures["share_learnable"]) == (0.5, 0.25, 0.25)
    assert figures["mean_pass_rate_by_level"] == {"1": 1.0, "2": 0.5, "3": 0.0}


@pytest.mark.parametrize("args, message", [
    ({"num_samples": 0}, "invalid num_samples=0"),
    ({"keep_pass_rate": [0.8, 0.2]}, "invalid keep_pass_rate=[0.8, 0.2]"),
    ({"num_sample": 4}, "not a field of DifficultyArgs (did you mean 'num_samples'?)"),
])
def test_bad_args_fail_the_plan_in_one_line(tmp_path, args, message):
    stage = {"name": "estimate", "kind": "difficulty", "data": {"recipe": "synthetic_arithmetic", "num_examples": 10},
             "rewards": [{"name": "math_accuracy"}], "args": args}
    path = write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL, "stages": [stage]})
    with pytest.raises(ManifestError, match="stage 'estimate': field 'args") as error:
        load_manifest(path)
    assert message in str(error.value)


def test_a_difficulty_stage_needs_rewards(tmp_path):
    stage = {"name": "estimate", "kind": "difficulty", "data": {"recipe": "synthetic_arithmetic", "num_examples": 10}}
    path = write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL, "stages": [stage]})
    with pytest.raises(ManifestError, match="stage 'estimate'.*rewards"):
        load_manifest(path)
