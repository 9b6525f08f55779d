"""Launch profiles: `accelerate launch` config files, one per way of running a stage.

A profile is a plain accelerate config (`accelerate launch --config_file launch/<name>.yaml`), so
anything accelerate documents works in it. The stage code calls nothing CUDA-specific, so the same
profiles run on GPU nodes and, for tests, on a CPU-only machine (gloo, DeepSpeed's CPU accelerator).

It also holds what both sides of a launch need about processes: the runner starting a stage and the
stage process itself (`terminate_with_parent`), and whether this machine launches on CPU.
"""

import ctypes
import glob
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parent


def profile_names() -> list[str]:
    return sorted(path.stem for path in PROFILE_DIR.glob("*.yaml"))


def profile_path(name: str) -> Path:
    return PROFILE_DIR / f"{name}.yaml"


def profile_settings(name: str) -> dict[str, Any]:
    """A profile's accelerate config as a mapping, read without importing accelerate (plan time)."""
    return yaml.safe_load(profile_path(name).read_text()) or {}


def terminate_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, even by SIGKILL.

    The runner sets it on the launcher it starts, and each stage process sets it on itself, so a
    killed runner leaves no orphan still writing checkpoints while the rerun starts.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def has_gpu() -> bool:
    """Whether an NVIDIA GPU is visible, without importing torch (the CLI must stay light)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def cpu_threads_per_process(processes_per_machine: int) -> int:
    """Cores per stage process on a CPU-only machine: `accelerate launch` would otherwise give a
    single process `OMP_NUM_THREADS=1` and leave the other cores idle."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes_per_machine))
