"""Every example manifest plans, TRL's preflight included: an example is the first manifest a user runs,
and one that fails at a later stage's launch costs them the stages before it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.preflight import checked_plan

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_every_example_plans_with_every_stage(example, request, tmp_path):
    text = example.read_text()
    if "../shared/data" in text:  # the real-data examples name it as seen from the repository root
        text = text.replace("../shared/data", str(request.getfixturevalue("shared_data")))
    manifest = yaml.safe_load(text)
    manifest["run_dir"] = str(tmp_path / "run")
    path = tmp_path / example.name
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    plan = checked_plan(path)
    assert [stage.name for stage in plan.stages] == [stage["name"] for stage in manifest["stages"]]
