"""Shared fixtures: a tiny manifest that trains for real in seconds, and the shared data directory."""

from __future__ import annotations

import os
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


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set GRADUS_SHARED_DATA)")
    return SHARED_DATA
