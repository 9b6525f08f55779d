"""Resuming past checkpoints a kill left incomplete: the newest complete one is used, broken ones set aside.

The interrupted runs are real (`gradus run` SIGKILLed the moment a checkpoint is on disk); the test
then breaks the newest checkpoints the ways a kill during their write would, and the rerun must
finish with the loss of the run that was never interrupted (tests/infra/conftest.py's reference:
the same global batches, so one process, two, or ZeRO-2 over two give the same loss).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from stages.checkpoints import INCOMPLETE_DIR, checkpoint_problem, newest_complete
from tests.conftest import gradus, sigkill_runner_when, write_manifest
from tests.infra.conftest import SFT_STEPS, metrics, sft_manifest


def interrupted_run(tmp: Path, processes: int = 1, save_steps: int = 10, **launch: Any) -> tuple[Path, Path]:
    """A run killed right after its checkpoint-30 was written, and its manifest."""
    run_dir = tmp / "run"
    manifest = write_manifest(tmp / "m.yaml", sft_manifest(run_dir, processes, save_steps=save_steps, **launch))
    sigkill_runner_when(manifest, run_dir / "sft" / "checkpoints" / "checkpoint-30" / "trainer_state.json")
    assert not (run_dir / "sft" / "done.json").exists(), "the stage finished before the kill; the test proves nothing"
    return run_dir, manifest


def rerun_resumes_from(run_dir: Path, manifest: Path, broken: dict[int, str], resumed_step: int) -> None:
    """Rerun; each broken checkpoint (step -> what the warning says of it) must be set aside, named."""
    result = gradus("run", str(manifest))
    assert result.returncode == 0, result.stdout[-3000:]
    checkpoints = run_dir / "sft" / "checkpoints"
    for step, problem in broken.items():
        warning = next((line for line in result.stdout.splitlines() if f"checkpoint {checkpoints / f'checkpoint-{step}'} is incomplete" in line), "")
        assert problem in warning, result.stdout[-3000:]  # one line naming the checkpoint and what is wrong
        assert (checkpoints / INCOMPLETE_DIR / f"checkpoint-{step}").is_dir()
    assert "sft: resuming" in result.stdout
    assert f"resuming from checkpoint {checkpoints / f'checkpoint-{resumed_step}'}" in result.stdout
    assert metrics(run_dir)["global_step"] == SFT_STEPS


@pytest.mark.slow
def test_weights_cut_short_a_file_missing_and_no_trainer_state_are_set_aside(tmp_path, sft_reference):
    """Checkpoints every 5 steps; the three newest broken three ways: the rerun passes over all of
    them with a warning each, resumes from checkpoint-15, and ends where the uninterrupted run did."""
    run_dir, manifest = interrupted_run(tmp_path, save_steps=5)
    checkpoints = run_dir / "sft" / "checkpoints"
    weights = checkpoints / "checkpoint-30" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (checkpoints / "checkpoint-25" / "optimizer.pt").unlink()
    (checkpoints / "checkpoint-20" / "trainer_state.json").unlink()
    rerun_resumes_from(run_dir, manifest, {
        30: "model.safetensors is", 25: "optimizer.pt missing", 20: "trainer_state.json missing",
    }, resumed_step=15)
    assert metrics(run_dir)["final_loss"] == pytest.approx(sft_reference, rel=1e-4)


@pytest.mark.slow
def test_deepspeed_latest_naming_a_missing_step_is_set_aside_and_both_ranks_agree(tmp_path, sft_reference):
    """ZeRO-2 over two processes: rank 0 sets checkpoint-30 aside and tells rank 1, both resume from 20."""
    run_dir, manifest = interrupted_run(tmp_path, processes=2, profile="zero2")
    newest = run_dir / "sft" / "checkpoints" / "checkpoint-30"
    assert (newest / "latest").read_text().strip() == "global_step30"
    shutil.rmtree(newest / "global_step30")
    rerun_resumes_from(run_dir, manifest, {30: "DeepSpeed 'latest' names 'global_step30'"}, resumed_step=20)
    assert metrics(run_dir)["distributed_type"] == "DEEPSPEED"
    assert metrics(run_dir)["final_loss"] == pytest.approx(sft_reference, rel=1e-4)


def test_killed_after_its_last_checkpoint_the_stage_resumes_without_a_step_more(tmp_path):
    """Killed once the last step's checkpoint is written (while the final model is being saved): the
    rerun resumes from that checkpoint and trains nothing (transformers' loop alone takes one step past
    max_steps), so the final model is that checkpoint's weights, as in the run never interrupted."""
    from safetensors.numpy import load_file

    run_dir = tmp_path / "run"
    manifest = write_manifest(tmp_path / "m.yaml", sft_manifest(run_dir))
    last = run_dir / "sft" / "checkpoints" / f"checkpoint-{SFT_STEPS}"
    sigkill_runner_when(manifest, last / "trainer_state.json")
    assert not (run_dir / "sft" / "done.json").exists(), "the stage finished before the kill; the test proves nothing"
    result = gradus("run", str(manifest))
    assert result.returncode == 0, result.stdout[-3000:]
    assert metrics(run_dir)["global_step"] == SFT_STEPS
    final, checkpoint = load_file(run_dir / "sft" / "model" / "model.safetensors"), load_file(last / "model.safetensors")
    assert final.keys() == checkpoint.keys()
    assert all((final[name] == checkpoint[name]).all() for name in final)
    assert f"resuming from checkpoint {last}" in result.stdout and "no step left to train" in result.stdout


# The choice itself, on checkpoint directories built here (no training): what is taken, what set aside.

def fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    from safetensors.numpy import save_file
    import numpy as np

    checkpoint = root / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    save_file({"weight": np.zeros((4, 4), dtype=np.float32)}, str(checkpoint / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt"):
        with zipfile.ZipFile(checkpoint / name, "w") as archive:
            archive.writestr("data.pkl", b"state")
    if complete:
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return checkpoint


def test_newest_complete_checkpoint_is_chosen_and_newer_broken_ones_moved(tmp_path):
    fake_checkpoint(tmp_path, 10)
    chosen = fake_checkpoint(tmp_path, 20)
    fake_checkpoint(tmp_path, 100, complete=False)  # numeric, not lexical, order: 100 is the newest
    assert newest_complete(tmp_path, set_aside=True) == chosen
    assert sorted(path.name for path in (tmp_path / INCOMPLETE_DIR).iterdir()) == ["checkpoint-100"]


def test_without_a_complete_checkpoint_the_stage_starts_over(tmp_path, caplog):
    fake_checkpoint(tmp_path, 10, complete=False)
    fake_checkpoint(tmp_path, 20, complete=False)
    with caplog.at_level("WARNING", logger="gradus"):
        assert newest_complete(tmp_path, set_aside=True) is None
    assert not list(tmp_path.glob("checkpoint-*")) and "starts over" in caplog.text


def test_a_second_broken_checkpoint_of_the_same_step_keeps_the_first(tmp_path):
    fake_checkpoint(tmp_path, 10, complete=False)
    newest_complete(tmp_path, set_aside=True)
    fake_checkpoint(tmp_path, 10, complete=False)
    newest_complete(tmp_path, set_aside=True)
    assert sorted(path.name for path in (tmp_path / INCOMPLETE_DIR).iterdir()) == ["checkpoint-10", "checkpoint-10.2"]


def test_checked_without_setting_aside_nothing_moves(tmp_path):
    broken = fake_checkpoint(tmp_path, 10, complete=False)
    assert newest_complete(tmp_path, set_aside=False) is None and broken.is_dir()


@pytest.mark.parametrize("damage, problem", [
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:-8]), "model.safetensors is"),
    (lambda c: (c / "model.safetensors").write_bytes(b"\x01"), "not even its header"),
    (lambda c: (c / "scheduler.pt").write_bytes((c / "scheduler.pt").read_bytes()[:-30]), "scheduler.pt is cut short"),
    (lambda c: (c / "model.safetensors").unlink(), "no weight file"),
    (lambda c: (c / "trainer_state.json").write_text("{"), "not valid JSON"),
])
def test_each_kind_of_damage_is_named(tmp_path, damage, problem):
    checkpoint = fake_checkpoint(tmp_path, 10)
    assert checkpoint_problem(checkpoint) is None
    damage(checkpoint)
    assert problem in checkpoint_problem(checkpoint)


def test_deepspeed_layout_needs_every_rank_shard(tmp_path):
    checkpoint = fake_checkpoint(tmp_path, 10)
    (checkpoint / "latest").write_text("global_step10")
    step = checkpoint / "global_step10"
    step.mkdir()
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_2_mp_rank_00_optim_states.pt"):
        with zipfile.ZipFile(step / name, "w") as archive:
            archive.writestr("data.pkl", b"state")
    assert "optimizer shard of rank 1" in checkpoint_problem(checkpoint)
