"""A `prm_label` stage in a manifest: its `args` are PRMLabelArgs fields, checked before anything launches."""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, load_manifest
from tests.conftest import TINY_MODEL, write_manifest


def manifest_with(tmp_path, **args) -> dict:
    return {
        "run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL,
        "stages": [
            {"name": "labels", "kind": "prm_label", "data": {"recipe": "synthetic_arithmetic", "num_examples": 4}, "args": args},
            {"name": "prm", "kind": "prm", "model": "base", "data": {"recipe": "stage_output", "stage": "labels"}},
        ],
    }


def test_a_good_stage_plans_and_its_dataset_feeds_a_prm_stage(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", manifest_with(
        tmp_path, method="binary_search", rollouts_per_step=4, step_separator="\n\n", balance=True, max_problems=2)))
    assert manifest.stage("labels").args["method"] == "binary_search"


@pytest.mark.parametrize("args, message", [
    ({"rollouts_per_stepp": 4}, "not a field of PRMLabelArgs (did you mean 'rollouts_per_step'?)"),
    ({"method": "beam"}, "field 'args.method': Input should be 'mc' or 'binary_search' (got 'beam')"),
    ({"num_solutions": "four"}, "field 'args.num_solutions': Input should be a valid integer"),
    ({"rollouts_per_step": 0}, "field 'args': invalid rollouts_per_step=0"),
])
def test_bad_args_fail_the_plan(tmp_path, args, message):
    with pytest.raises(ManifestError, match="stage 'labels': field 'args") as error:
        load_manifest(write_manifest(tmp_path / "m.yaml", manifest_with(tmp_path, **args)))
    assert message in str(error.value)
