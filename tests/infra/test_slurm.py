"""`sbatch launch/slurm.sbatch` on a real SLURM cluster (Debian's, started on this machine).

What SLURM itself would do is done by SLURM: the warning signal before the time limit is the one
`--signal=B:USR1@300` makes slurmctld send (here sent at once, with `scancel --signal=USR1 --batch`,
instead of after a time limit of at least a minute), the cancel is a real `scancel`, the requeue is
the script's own `scontrol requeue`, and the second machine of a two-machine stage is a second
slurmd on this host.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.manifest import load_manifest
from pipeline.overrides import RESOLVED_MANIFEST
from pipeline.plan import make_plan
from tests.conftest import tiny_manifest, write_manifest
from tests.infra.conftest import (
    SBATCH_SCRIPT, SFT_STEPS, Slurm, free_port, ledger, metrics, sft_manifest, wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.ci]

LONG_SFT = 300  # steps: several seconds here, so a signal sent at the first checkpoint lands mid-stage even on a fast machine


def stage_processes_left(run_dir: Path) -> str:
    found = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True)
    return found.stdout.strip()


def checkpoint_written(run_dir: Path, stage: str, step: int) -> bool:
    return (run_dir / stage / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()


def test_requeue_before_the_time_limit_resumes_the_stage_and_skips_finished_ones(slurm: Slurm, tmp_path):
    """A two-stage chain submitted with sbatch; at the second stage's first checkpoint the batch
    shell gets USR1, exactly what SLURM sends `--signal=B:USR1@300` seconds before the time limit.
    The script stops the runner and requeues the job; the requeued job (SLURM holds it about two
    minutes; the test releases it after two seconds with `scontrol update StartTime=now+2`) skips the finished
    stage, resumes the interrupted one from its checkpoint and runs the chain to done. Ledger,
    report and job log end up where the README says: run_dir/ledger.json, run_dir/report.md and
    gradus-<jobid>.out in the directory sbatch ran in."""
    run_dir = tmp_path / "run"
    manifest = tiny_manifest(run_dir, max_steps=5, save_steps=5)
    warmup = {**manifest["stages"][0], "name": "warmup"}
    main = {**manifest["stages"][0], "name": "sft", "model": "warmup", "args": {**warmup["args"], "save_steps": 10}}
    manifest["stages"] = [warmup, main]
    # The script passes its arguments on to `gradus run`: here an override, which the requeued start gets too.
    job = slurm.sbatch(str(SBATCH_SCRIPT), str(write_manifest(tmp_path / "chain.yaml", manifest)),
                       f"stages.sft.args.max_steps={LONG_SFT}", cwd=tmp_path)

    wait_until(lambda: checkpoint_written(run_dir, "sft", 10), 300, "the sft stage's first checkpoint")
    warmup_started = ledger(run_dir)["warmup"]["started_at"]
    assert slurm.run("scancel", "--signal=USR1", "--batch", job).returncode == 0
    wait_until(lambda: slurm.job(job).get("JobState") == "PENDING" and slurm.job(job).get("Restarts") == "1", 120,
               "the job to requeue itself")
    interrupted = ledger(run_dir)["sft"]
    assert interrupted["state"] == "interrupted" and "SIGTERM" in interrupted["message"], interrupted
    assert not (run_dir / "sft" / "done.json").exists(), "the stage finished before the signal; the test proves nothing"
    assert stage_processes_left(run_dir / "sft") == ""
    # Not `now`: slurmd refuses a job credential issued in the same second as the one the requeue
    # revoked ("Job credential revoked", and the job ends FAILED); SLURM's own hold is two minutes.
    assert slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now+2").returncode == 0

    assert slurm.wait_for_end(job, timeout=400) == "COMPLETED", (tmp_path / f"gradus-{job}.out").read_text()[-4000:]
    entries = ledger(run_dir)
    assert entries["warmup"]["state"] == entries["sft"]["state"] == "done"
    assert entries["warmup"]["started_at"] == warmup_started  # finished before the requeue: not rerun
    assert metrics(run_dir)["global_step"] == LONG_SFT
    stage_log = (run_dir / "sft" / "log.txt").read_text()
    assert "resuming from checkpoint" in stage_log and "checkpoint-" in stage_log.split("resuming from checkpoint")[1][:200]
    job_log = (tmp_path / f"gradus-{job}.out").read_text()
    assert job_log.count(f"[gradus] job {job}") == 2  # both starts append to the one log
    assert "requeueing job" in job_log and "warmup: done" in job_log and "skipped" in job_log and "sft: resuming" in job_log
    assert "run complete" in job_log and (run_dir / "report.md").is_file()
    saved = make_plan(load_manifest(run_dir / RESOLVED_MANIFEST))  # the run, reproducible from its own output
    assert {stage.name: stage.fingerprint for stage in saved.stages} == {name: entry["fingerprint"] for name, entry in entries.items()}


def test_scancel_leaves_the_stage_interrupted_and_a_new_sbatch_resumes_it(slurm: Slurm, tmp_path):
    run_dir = tmp_path / "run"
    manifest_path = write_manifest(tmp_path / "m.yaml", sft_manifest(run_dir, steps=LONG_SFT))
    job = slurm.sbatch(str(SBATCH_SCRIPT), str(manifest_path), cwd=tmp_path)
    wait_until(lambda: checkpoint_written(run_dir, "sft", 10), 300, "the first checkpoint")
    assert slurm.run("scancel", job).returncode == 0
    assert slurm.wait_for_end(job) == "CANCELLED"
    entry = ledger(run_dir)["sft"]  # readable: the runner wrote it before the job ended
    assert entry["state"] == "interrupted" and "SIGTERM" in entry["message"], entry
    assert not (run_dir / "sft" / "done.json").exists(), "the stage finished before the cancel; the test proves nothing"
    assert stage_processes_left(run_dir / "sft") == ""

    again = slurm.sbatch(str(SBATCH_SCRIPT), str(manifest_path), cwd=tmp_path)
    assert slurm.wait_for_end(again) == "COMPLETED", (tmp_path / f"gradus-{again}.out").read_text()[-3000:]
    assert ledger(run_dir)["sft"]["state"] == "done" and metrics(run_dir)["global_step"] == LONG_SFT
    assert "sft: resuming" in (tmp_path / f"gradus-{again}.out").read_text()
    assert "resuming from checkpoint" in (run_dir / "sft" / "log.txt").read_text()


def test_two_machine_stage_trains_like_one_machine_with_two_processes(slurm: Slurm, sft_reference, tmp_path):
    """`launch: {num_machines: 2, num_processes: 2}` under `sbatch --nodes=2`: srun starts one
    `accelerate launch --machine_rank $SLURM_PROCID` per node (two slurmds on this host), the two
    processes rendezvous over localhost and train with gloo on the same global batches as the
    one-machine two-process reference, so the final loss is the same."""
    run_dir = tmp_path / "run"
    manifest = sft_manifest(run_dir, processes=2, profile="ddp", num_machines=2,
                            main_process_ip="127.0.0.1", main_process_port=free_port())
    job = slurm.sbatch("--nodes=2", str(SBATCH_SCRIPT), str(write_manifest(tmp_path / "m.yaml", manifest)), cwd=tmp_path)
    assert slurm.wait_for_end(job) == "COMPLETED", (tmp_path / f"gradus-{job}.out").read_text()[-4000:]
    result = metrics(run_dir)
    assert result["num_processes"] == 2 and result["distributed_type"] == "MULTI_CPU" and result["global_step"] == SFT_STEPS
    assert ledger(run_dir)["sft"]["command"][:3] == ["srun", "--nodes=2", "--ntasks=2"]
    stage_log = (run_dir / "sft" / "log.txt").read_text()
    assert "0: " in stage_log and "1: " in stage_log  # srun --label: output came from both tasks
    assert result["final_loss"] == pytest.approx(sft_reference, rel=1e-4)
