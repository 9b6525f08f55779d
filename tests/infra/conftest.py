"""Real infrastructure for the tests in this directory: a SLURM cluster on this machine, and the SFT
run every equality here is measured against.

The cluster is Debian's SLURM started by `launch/local_slurm.sh` (two nodes on this one host, so a
two-machine stage's `srun --nodes=2` really places a task on each). Where SLURM is not installed
the tests that need it skip, saying so; with GRADUS_REQUIRE_SLURM=1 (CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import REPO, gradus, tiny_manifest, write_manifest

LOCAL_SLURM = REPO / "launch" / "local_slurm.sh"
SBATCH_SCRIPT = REPO / "launch" / "slurm.sbatch"
SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")
ACTIVE_JOB_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "SIGNALING", "SUSPENDED"}

# The SFT stage these tests train: 40 steps, a checkpoint every 10, a global batch of 16 however it
# is split over processes (so one process, two, or two machines train on the same batches).
SFT_STEPS, SAVE_STEPS, GLOBAL_BATCH = 40, 10, 16


def sft_manifest(run_dir: Path, processes: int = 1, steps: int = SFT_STEPS, save_steps: int = SAVE_STEPS, **launch: Any) -> dict[str, Any]:
    """The one-stage SFT manifest, split over `processes` processes in all (saving changes no loss)."""
    manifest = tiny_manifest(run_dir, max_steps=steps, save_steps=save_steps, logging_steps=10,
                             per_device_train_batch_size=GLOBAL_BATCH // processes)
    manifest["stages"] = manifest["stages"][:1]
    if launch:
        manifest["stages"][0]["launch"] = {"num_processes": processes, **launch}
    return manifest


def metrics(run_dir: Path, stage: str = "sft") -> dict[str, Any]:
    return json.loads((run_dir / stage / "metrics.json").read_text())


def ledger(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "ledger.json").read_text())["stages"]


@pytest.fixture(scope="session")
def sft_reference(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Final loss of the SFT stage run uninterrupted on one machine with two processes (DDP)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = gradus("run", str(write_manifest(run_dir.parent / "m.yaml", sft_manifest(run_dir, processes=2, profile="ddp"))))
    assert result.returncode == 0, result.stdout[-3000:]
    assert metrics(run_dir)["num_processes"] == 2 and metrics(run_dir)["global_step"] == SFT_STEPS
    return metrics(run_dir)["final_loss"]


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _free_port_block(size: int) -> int:
    """A port p with p .. p+size-1 all free now (slurmctld takes p, each slurmd one more)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size < 65536 and all(_port_free(port) for port in range(base, base + size)):
            return base
    raise RuntimeError("no block of free ports")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    return _free_port_block(1)


class Slurm:
    """The test cluster: its client environment and the few commands the tests need."""

    def __init__(self, env: dict[str, str], state_dir: Path):
        self.env, self.state_dir = env, state_dir

    def run(self, *command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, cwd=cwd, capture_output=True, text=True, timeout=60)

    def sbatch(self, *args: str, cwd: Path) -> str:
        submitted = self.run("sbatch", "--parsable", *args, cwd=cwd)
        assert submitted.returncode == 0, submitted.stderr
        return submitted.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict ({} once the job has left the controller)."""
        shown = self.run("scontrol", "--oneliner", "show", "job", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", shown.stdout)) if shown.returncode == 0 else {}

    def wait_for_end(self, job_id: str, timeout: float = 300) -> str:
        """Wait until the job has finished; its final state (COMPLETED, FAILED, CANCELLED, ...)."""

        def final_state() -> str | None:
            state = self.job(job_id).get("JobState", "left the controller")
            return None if state in ACTIVE_JOB_STATES else state

        return wait_until(final_state, timeout, f"job {job_id} to end", every=0.5)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    missing = [program for program in SLURM_PROGRAMS if shutil.which(program) is None]
    reason = None
    if missing:
        reason = f"SLURM is not installed ({', '.join(missing)} not found; apt-get install slurmctld slurmd slurm-client munge)"
    elif os.geteuid() != 0:
        reason = "the local SLURM cluster needs root (slurmd starts jobs as their users)"
    if reason:
        if os.environ.get("GRADUS_REQUIRE_SLURM") == "1":
            pytest.fail(f"{reason}, and GRADUS_REQUIRE_SLURM=1 says these tests must run")
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("slurm")
    daemons_env = {**os.environ, "GRADUS_SLURM_NODES": "2", "GRADUS_SLURM_PORT": str(_free_port_block(3))}
    started = subprocess.run([str(LOCAL_SLURM), "start", str(state_dir)], env=daemons_env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    # Jobs inherit this environment (sbatch exports it): gradus and accelerate from this venv.
    client_env = {**os.environ, "SLURM_CONF": str(state_dir / "slurm.conf"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        yield Slurm(client_env, state_dir)
    finally:
        subprocess.run([str(LOCAL_SLURM), "stop", str(state_dir)], env={**daemons_env, **client_env}, timeout=120)
