"""A stage kind from outside gradus, registered through the `gradus.kinds` entry-point group, is planned,
preflighted, run, skipped when done and resumed after a SIGKILL exactly as a built-in kind is.

The plugin is tests/stages/answer_sft.py; an installed distribution is simulated by a `.dist-info`
directory with an `entry_points.txt` on the PYTHONPATH of every gradus process the test starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_MODEL, gradus, sigkill_runner_when, write_manifest

STEPS = 20


def installed_plugin(tmp_path: Path) -> dict[str, str]:
    """The environment of a Python that has a distribution declaring `answer_sft` in `gradus.kinds`."""
    dist_info = tmp_path / "site" / "gradus_answer_sft-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: gradus-answer-sft\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[gradus.kinds]\nanswer_sft = tests.stages.answer_sft:KIND\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO), os.environ.get("PYTHONPATH", "")])}


def plugin_manifest(tmp_path: Path, kind: str) -> Path:
    stage = {"name": "warmup", "kind": kind, "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 256},
             "args": {"max_steps": STEPS, "per_device_train_batch_size": 8, "learning_rate": 3e-3, "logging_steps": 5,
                      "save_steps": 10, "max_length": 64, "gradient_checkpointing": False, "report_to": "none"}}
    then = {"name": "eval", "kind": "eval", "model": "warmup",
            "data": {"recipe": "synthetic_arithmetic", "split": "test", "levels": [1], "per_level": 8},
            "args": {"max_new_tokens": 8, "batch_size": 8}}
    return write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL, "stages": [stage, then]})


@pytest.mark.slow
@pytest.mark.ci
def test_a_kind_registered_by_entry_point_plans_runs_is_skipped_and_resumes_after_sigkill(tmp_path):
    env = installed_plugin(tmp_path)
    manifest = plugin_manifest(tmp_path, "answer_sft")
    planned = gradus("plan", str(manifest), env=env)
    assert planned.returncode == 0, planned.stdout[-2000:] + planned.stderr[-2000:]
    assert "-m tests.stages.answer_sft" in planned.stdout  # its own module, found through its row
    assert gradus("plan", str(manifest)).returncode == 2  # without the distribution the kind is unknown

    stage_dir = tmp_path / "run" / "warmup"
    sigkill_runner_when(manifest, stage_dir / "checkpoints" / "checkpoint-10" / "trainer_state.json", env=env)
    assert not (stage_dir / "done.json").exists(), "the stage finished before the kill; the test proves nothing"

    resumed = gradus("run", str(manifest), env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "warmup: resuming" in resumed.stdout
    assert f"resuming from checkpoint {stage_dir / 'checkpoints' / 'checkpoint-10'}" in resumed.stdout
    assert json.loads((stage_dir / "metrics.json").read_text())["global_step"] == STEPS
    assert (tmp_path / "run" / "eval" / "done.json").exists()  # a later stage starts from the plugin's model

    again = gradus("run", str(manifest), env=env)
    assert again.returncode == 0 and "warmup: done" in again.stdout and "skipped" in again.stdout


def test_a_kind_named_by_module_path_needs_no_registration(tmp_path):
    """`kind: package.module:KIND` works as an entry point does; the plan refuses a path to no kind."""
    planned = gradus("plan", str(plugin_manifest(tmp_path, "tests.stages.answer_sft:KIND")), env={"PYTHONPATH": str(REPO)})
    assert planned.returncode == 0, planned.stdout[-2000:] + planned.stderr[-2000:]
    refused = gradus("plan", str(plugin_manifest(tmp_path, "tests.stages.answer_sft:trainer_args")))
    assert refused.returncode == 2 and "is a function, not a stages.kinds.StageKind" in refused.stdout
