"""End to end: real `gradus run` processes training the tiny model through `accelerate launch`.

These are the slow tests (each stage is a separate process with ~5 s of imports). CI runs them:
they are the proof that the chain, skip, invalidate and resume work for real.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import gradus, sigkill_runner_when, tiny_manifest, write_manifest

pytestmark = pytest.mark.slow


def ledger(run_dir: Path) -> dict:
    return json.loads((run_dir / "ledger.json").read_text())["stages"]


def metrics(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "metrics.json").read_text())


@pytest.mark.ci
def test_chain_trains_then_skips_then_reruns_only_what_changed(tmp_path):
    run_dir = tmp_path / "run"
    manifest_path = write_manifest(tmp_path / "m.yaml", tiny_manifest(run_dir))

    first = gradus("run", str(manifest_path))
    assert first.returncode == 0, first.stdout[-3000:]
    entries = ledger(run_dir)
    assert [entries[name]["state"] for name in ("sft", "eval")] == ["done", "done"]

    # SFT trained: the loss fell and the weights moved away from the base model's.
    sft_metrics = metrics(run_dir, "sft")
    assert sft_metrics["final_loss"] < 0.85 * sft_metrics["first_loss"]
    from safetensors.torch import load_file

    base = load_file(run_dir / "base_model" / "model.safetensors")
    trained = load_file(run_dir / "sft" / "model" / "model.safetensors")
    assert any(not (base[key] == trained[key]).all() for key in base)

    eval_metrics = metrics(run_dir, "eval")
    assert set(eval_metrics["accuracy_by_level"]) == {"1", "2"} and eval_metrics["n"] == 40
    assert (run_dir / "eval" / "accuracy_by_level.png").stat().st_size > 0
    assert "accuracy by level" in first.stdout
    report = (run_dir / "report.md").read_text()
    assert "pass@1 by model and eval set" in report
    assert f"| sft | {eval_metrics['accuracy']:.3f} |" in report  # the row of the model eval evaluated

    # The same command again skips everything and launches nothing.
    started = time.time()
    again = gradus("run", str(manifest_path))
    assert again.returncode == 0
    assert again.stdout.count("skipped") == 2 and "starting" not in again.stdout
    assert time.time() - started < 30
    assert ledger(run_dir)["sft"]["started_at"] == entries["sft"]["started_at"]

    # Editing the eval stage's args reruns eval only; the SFT output is untouched.
    edited = tiny_manifest(run_dir)
    edited["stages"][1]["args"]["max_new_tokens"] = 32
    rerun = gradus("run", str(write_manifest(manifest_path, edited)))
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "sft: done" in rerun.stdout and "skipped" in rerun.stdout and "eval: starting" in rerun.stdout
    assert ledger(run_dir)["sft"]["started_at"] == entries["sft"]["started_at"]
    assert ledger(run_dir)["eval"]["started_at"] != entries["eval"]["started_at"]

    # --only reruns one stage from scratch, whatever its state, and leaves the others alone.
    only = gradus("run", str(manifest_path), "--only", "eval")
    assert only.returncode == 0 and "eval: starting" in only.stdout and "sft:" not in only.stdout
    assert ledger(run_dir)["sft"]["started_at"] == entries["sft"]["started_at"]

    status = gradus("status", str(run_dir))
    assert status.returncode == 0 and "sft" in status.stdout and "done" in status.stdout


@pytest.mark.ci
def test_sigkill_mid_sft_then_rerun_resumes_and_matches_uninterrupted(tmp_path):
    sft_args = {"max_steps": 120, "save_steps": 20, "logging_steps": 10}

    reference_dir = tmp_path / "uninterrupted"
    reference = gradus("run", str(write_manifest(tmp_path / "a.yaml", tiny_manifest(reference_dir, **sft_args))))
    assert reference.returncode == 0, reference.stdout[-3000:]

    run_dir = tmp_path / "killed"
    manifest_path = write_manifest(tmp_path / "b.yaml", tiny_manifest(run_dir, **sft_args))
    first_checkpoint = run_dir / "sft" / "checkpoints" / "checkpoint-20" / "trainer_state.json"
    sigkill_runner_when(manifest_path, first_checkpoint)
    assert ledger(run_dir)["sft"]["state"] == "running"
    assert not (run_dir / "sft" / "done.json").exists(), "SFT finished before the kill; the test proves nothing"

    # The launched stage died with its runner (no orphan keeps writing checkpoints).
    survivors = subprocess.run(["pgrep", "-f", str(run_dir / "sft" / "stage.yaml")], capture_output=True, text=True)
    assert survivors.stdout.strip() == ""

    resumed = gradus("run", str(manifest_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "sft: resuming" in resumed.stdout and "resuming from checkpoint" in resumed.stdout
    assert metrics(run_dir, "sft")["global_step"] == 120
    assert metrics(run_dir, "sft")["final_loss"] == pytest.approx(metrics(reference_dir, "sft")["final_loss"], rel=1e-4)
    assert metrics(run_dir, "eval")["accuracy_by_level"] == metrics(reference_dir, "eval")["accuracy_by_level"]


def test_sigterm_stops_the_stage_and_records_it_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    manifest = tiny_manifest(run_dir, max_steps=2000, save_steps=20)
    runner = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(write_manifest(tmp_path / "m.yaml", manifest))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_checkpoint = run_dir / "sft" / "checkpoints" / "checkpoint-20"
    deadline = time.time() + 300
    while not first_checkpoint.exists() and time.time() < deadline:
        time.sleep(0.1)
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode == 130
    entry = ledger(run_dir)["sft"]
    assert entry["state"] == "interrupted" and "SIGTERM" in entry["message"]
    assert "stopped by SIGTERM" in output
    survivors = subprocess.run(["pgrep", "-f", str(run_dir / "sft" / "stage.yaml")], capture_output=True, text=True)
    assert survivors.stdout.strip() == ""


def test_failed_stage_is_recorded_and_earlier_work_kept(tmp_path):
    run_dir = tmp_path / "run"
    manifest = tiny_manifest(run_dir, max_steps=5, save_steps=5)
    # What only training itself finds: a valid optimizer name whose package is not installed passes
    # the plan and its preflight (SFTConfig accepts it) and fails when the trainer builds the optimizer.
    broken = {**manifest["stages"][0], "name": "sft2", "model": "sft"}
    broken["args"] = {**broken["args"], "optim": "adamw_bnb_8bit"}
    manifest["stages"].insert(1, broken)
    manifest["stages"][2]["model"] = "sft2"
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 1
    entries = ledger(run_dir)
    assert entries["sft"]["state"] == "done" and (run_dir / "sft" / "model").is_dir()
    assert entries["sft2"]["state"] == "failed" and "exit code" in entries["sft2"]["message"]
    assert "bitsandbytes" in entries["sft2"]["message"] and "FAILED" in result.stdout
    assert "eval" not in entries  # the run stopped at the failure


@pytest.mark.parametrize("profile, distributed_type", [("ddp", "MULTI_CPU"), pytest.param("zero2", "DEEPSPEED", marks=pytest.mark.ci)])
def test_two_process_profiles_run_sft_to_completion(tmp_path, profile, distributed_type):
    run_dir = tmp_path / "run"
    manifest = tiny_manifest(run_dir, max_steps=8, save_steps=4, per_device_train_batch_size=8)
    manifest["stages"] = manifest["stages"][:1]
    manifest["stages"][0]["launch"] = {"profile": profile, "num_processes": 2}
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-4000:]
    sft_metrics = metrics(run_dir, "sft")
    assert sft_metrics["num_processes"] == 2 and sft_metrics["distributed_type"] == distributed_type
    assert sft_metrics["global_step"] == 8 and (run_dir / "sft" / "model").is_dir()
