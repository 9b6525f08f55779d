"""`args.report_to: [tensorboard]`: event files under the stage directory, read back with TensorBoard's
own reader; a tracker whose package is missing is a plan-time error."""

from __future__ import annotations

import importlib.util
import json

import pytest

from pipeline.cli import main as gradus_main
from pipeline.trackers import TRACKER_MODULES
from tests.conftest import REPO, TINY_MODEL, gradus, tiny_manifest, write_manifest

SIGNAL = "tests.curriculum.planted_rewards:level_coin"  # level 1 always passes, level 3 never


@pytest.mark.slow
def test_a_grpo_stage_writes_losses_reward_means_and_curriculum_shares_to_tensorboard(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # transformers' own default would land under the working directory's runs/
    run_dir = tmp_path / "run"
    stage = {
        "name": "grpo", "kind": "grpo",
        "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2, 3], "num_examples": 120, "seed": 1},
        "rewards": [{"name": "math_accuracy"}, {"name": SIGNAL, "weight": 0.0}],
        "curriculum": {"strategy": "bandit", "signal_reward": SIGNAL},
        "args": {
            "max_steps": 3, "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 16,
            "logging_steps": 1, "save_steps": 3, "gradient_checkpointing": False, "report_to": ["tensorboard"],
        },
    }
    manifest = {"run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL, "stages": [stage]}
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)), env={"PYTHONPATH": str(REPO)})  # the planted reward
    assert result.returncode == 0, result.stdout[-3000:]

    logdir = run_dir / "grpo" / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*"))
    assert not (tmp_path / "runs").exists() and not (run_dir / "grpo" / "checkpoints" / "runs").exists()
    events = EventAccumulator(str(logdir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    history = json.loads((run_dir / "grpo" / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    wanted = ["loss", "reward", "rewards/math_accuracy/mean", f"rewards/{SIGNAL}/mean",
              *(f"curriculum/{what}/level={level}" for what in ("share", "pass_rate") for level in (1, 2, 3))]
    for key in wanted:
        assert f"train/{key}" in tags, sorted(tags)
        logged = {entry["step"]: entry[key] for entry in history if key in entry}
        read_back = {event.step: event.value for event in events.Scalars(f"train/{key}")}
        assert read_back == pytest.approx(logged, rel=1e-6), key  # TensorBoard keeps float32
    assert {event.value for event in events.Scalars("train/curriculum/pass_rate/level=1")} == {1.0}


def test_a_tracker_whose_package_is_missing_is_a_plan_error_naming_it(tmp_path, capsys):
    absent = next(((name, modules[0][0]) for name, modules in TRACKER_MODULES.items()
                   if modules and not any(importlib.util.find_spec(module.split(".")[0]) for module in modules[0])), None)
    if absent is None:
        pytest.skip("every tracker transformers knows is installed here")
    tracker, module = absent
    manifest = tiny_manifest(tmp_path / "run", report_to=["tensorboard", tracker])
    code = gradus_main(["plan", str(write_manifest(tmp_path / "m.yaml", manifest))])
    error = capsys.readouterr().out.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert f"stage 'sft': field 'args.report_to': tracker {tracker!r} needs the package {module.replace('.', '-')!r}" in error
    assert not (tmp_path / "run").exists()

