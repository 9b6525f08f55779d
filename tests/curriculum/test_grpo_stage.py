"""Real grpo stages with a curriculum: the tiny model, `gradus run`, one and two processes, kill and resume.

The signal reward is `level_coin` (tests/curriculum/planted_rewards.py): level 1 always passes, level 3
never, level 2 half the time, whatever the (untrained) model writes. So the bandit has something to
find in a handful of steps: the only level whose groups have a spread of scores.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, gradus, sigkill_runner_when, write_manifest
from tests.e2e.test_runner import metrics

pytestmark = pytest.mark.slow

SIGNAL = "tests.curriculum.planted_rewards:level_coin"


def curriculum_manifest(run_dir: Path, **launch: object) -> dict:
    stage = {
        "name": "grpo", "kind": "grpo",
        "data": {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3], "num_examples": 300, "seed": 1},
        "rewards": [{"name": "math_accuracy"}, {"name": SIGNAL, "weight": 0.0}],
        "curriculum": {"strategy": "bandit", "signal_reward": SIGNAL, "min_share": 0.05},
        "args": {
            "max_steps": 8, "learning_rate": 1e-4, "beta": 0.0, "num_generations": 4, "per_device_train_batch_size": 16,
            "max_completion_length": 24, "logging_steps": 1, "save_steps": 4, "gradient_checkpointing": False, "report_to": "none",
        },
    }
    if launch:
        stage["launch"] = launch
    return {"run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL, "stages": [stage]}


def curriculum_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "grpo" / "curriculum.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def logged(run_dir: Path) -> list[dict]:
    checkpoint = run_dir / "grpo" / "checkpoints" / "checkpoint-8" / "trainer_state.json"
    return json.loads(checkpoint.read_text())["log_history"]


@pytest.mark.ci
def test_bandit_curriculum_trains_logs_plots_and_resumes_after_a_kill_as_if_never_stopped(tmp_path):
    reference_dir = tmp_path / "uninterrupted"
    reference = gradus("run", str(write_manifest(tmp_path / "a.yaml", curriculum_manifest(reference_dir))))
    assert reference.returncode == 0, reference.stdout[-3000:]

    summary = metrics(reference_dir, "grpo")["curriculum"]
    assert summary["strategy"] == "bandit" and max(summary["final_share"], key=summary["final_share"].get) == "level=2"
    assert summary["final_pass_rate"]["level=1"] == 1.0 and summary["final_pass_rate"]["level=3"] == 0.0
    rows = curriculum_rows(reference_dir)
    assert [row["step"] for row in rows] == [str(step) for step in range(1, 9) for _ in range(3)]
    assert (reference_dir / "grpo" / "curriculum.png").stat().st_size > 0
    history = logged(reference_dir)
    assert all(f"curriculum/share/level={level}" in history[0] for level in (1, 2, 3))
    assert f"rewards/{SIGNAL}/mean" in history[0]  # the wrapper kept the reward's name
    assert (reference_dir / "grpo" / "checkpoints" / "checkpoint-4" / "curriculum_state.npz").is_file()

    # Kill the run between its checkpoint at step 4 and its end, then run the same command again.
    run_dir = tmp_path / "killed"
    manifest_path = write_manifest(tmp_path / "b.yaml", curriculum_manifest(run_dir))
    checkpoint = run_dir / "grpo" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    sigkill_runner_when(manifest_path, checkpoint, env={"CURRICULUM_TEST_PAUSE_AFTER_STEP": "4"})
    assert not (run_dir / "grpo" / "done.json").exists(), "grpo finished before the kill; the test proves nothing"

    resumed = gradus("run", str(manifest_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming from checkpoint" in resumed.stdout
    assert curriculum_rows(run_dir) == rows  # same shares, pass rates and draws at every step
    assert metrics(run_dir, "grpo")["curriculum"] == summary
    keys = ("reward", f"rewards/{SIGNAL}/mean", "curriculum/share/level=2")
    assert [[entry.get(key) for key in keys] for entry in logged(run_dir)[4:8]] == [[entry.get(key) for key in keys] for entry in history[4:8]]


@pytest.mark.ci
def test_two_processes_train_with_one_curriculum(tmp_path):
    run_dir = tmp_path / "run"
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", curriculum_manifest(run_dir, profile="ddp", num_processes=2))))
    assert result.returncode == 0, result.stdout[-3000:]
    stage_metrics = metrics(run_dir, "grpo")
    assert stage_metrics["num_processes"] == 2 and stage_metrics["global_step"] == 8
    assert max(stage_metrics["curriculum"]["final_share"], key=stage_metrics["curriculum"]["final_share"].get) == "level=2"
    # TRL averages a logged metric over the ranks; rank 0 alone writes the CSV. They agree at every step
    # only if both ranks' samplers hold the same shares, i.e. the same state.
    csv_share = {(int(row["step"]), row["bucket"]): float(row["share"]) for row in curriculum_rows(run_dir)}
    for entry in logged(run_dir)[:8]:
        for level in (1, 2, 3):
            assert entry[f"curriculum/share/level={level}"] == pytest.approx(csv_share[(entry["step"], f"level={level}")], abs=1e-6)
