"""Shared fixtures: a tiny manifest that trains for real in seconds, and the shared data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GRADUS_SHARED_DATA", REPO.parent / "shared" / "data"))

# Small enough for CI (a stage is ~10 s, most of it imports), big enough to learn something.
TINY_MODEL = {"tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}}


def tiny_manifest(run_dir: Path, **sft_args: Any) -> dict[str, Any]:
    """SFT then eval on the synthetic task with the smallest tiny model."""
    args = {
        "max_steps": 30, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "logging_steps": 5,
        "save_steps": 10, "max_length": 96, "gradient_checkpointing": False, "report_to": "none",
        **sft_args,
    }
    return {
        "run_dir": str(run_dir),
        "seed": 0,
        "base_model": TINY_MODEL,
        "stages": [
            {"name": "sft", "kind": "sft",
             "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 2000}, "args": args},
            {"name": "eval", "kind": "eval", "model": "sft",
             "data": {"recipe": "synthetic_arithmetic", "split": "test", "levels": [1, 2], "per_level": 20},
             "args": {"max_new_tokens": 40, "batch_size": 40}},
        ],
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def rl_stage_manifest(tmp_path: Path, kind: str = "grpo", **blocks: Any) -> Path:
    """A one-stage manifest on 30 synthetic prompts with `math_accuracy`, plus the given blocks
    (`curriculum=...`, `relift=...`): what the schema tests of those blocks vary."""
    stage = {
        "name": "rl", "kind": kind,
        "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2, 3], "num_examples": 30},
        "rewards": [{"name": "math_accuracy"}],
        **blocks,
    }
    return write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL, "stages": [stage]})


def gradus(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the gradus CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def sigkill_runner_when(manifest_path: Path, marker: Path, env: dict[str, str] | None = None, timeout: float = 300) -> None:
    """Start `gradus run MANIFEST` and SIGKILL the runner the moment `marker` exists (e.g. a checkpoint)."""
    runner = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(manifest_path)],
                              env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not marker.exists() and time.time() < deadline and runner.poll() is None:
        time.sleep(0.05)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    assert marker.exists(), f"the run never wrote {marker}"
    time.sleep(3)  # the launched stage gets SIGTERM from its dying parent; give it time to go


@pytest.fixture(autouse=True, scope="session")
def own_preflight_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test process and the gradus processes it starts share one fresh preflight cache, never the user's."""
    os.environ["GRADUS_CACHE_DIR"] = str(tmp_path_factory.mktemp("gradus-cache"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set GRADUS_SHARED_DATA)")
    return SHARED_DATA


REAL_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct, the real model the README's install line installs, converted from its GGUF file
    into a model directory once per test session, exactly as the runner converts a GGUF base model."""
    from pipeline.base_models import known_model_path
    from pipeline.plan import base_identity
    from pipeline.manifest import GGUFModelSpec
    from stages.models import make_base_model

    target = tmp_path_factory.mktemp("smollm2") / "model"
    make_base_model(base_identity(GGUFModelSpec(gguf=known_model_path(REAL_MODEL)), seed=0), target)
    return target
