"""SFT with `curriculum: {strategy: ordered}`, for real (`gradus run`, tiny model): easy rows first.

What the trainer drew is read from curriculum.csv (each bucket's cumulative draws at every step), which
the same callback as GRPO's writes; the rows reach the trainer through TRL's tokenisation with their
difficulty column and leave it before the collator.
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import TINY_MODEL, gradus, write_manifest

pytestmark = pytest.mark.slow


def test_ordered_sft_starts_on_the_easiest_level_and_admits_the_rest_as_it_goes(tmp_path):
    run_dir = tmp_path / "run"
    stage = {
        "name": "sft", "kind": "sft", "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2, 3], "num_examples": 300, "seed": 2},
        "curriculum": {"strategy": "ordered", "start_competence": 0.1, "ramp_fraction": 1.0, "min_share": 0.0},
        "args": {"max_steps": 16, "per_device_train_batch_size": 8, "learning_rate": 3e-3, "logging_steps": 4, "save_steps": 8,
                 "max_length": 64, "gradient_checkpointing": False, "report_to": "none"},
    }
    manifest = {"run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL, "decontamination": {"enabled": False}, "stages": [stage]}
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    with (run_dir / "sft" / "curriculum.csv").open(newline="") as file:
        draws = {(int(row["step"]), row["bucket"]): int(row["draws"]) for row in csv.DictReader(file)}
    # c(t) = sqrt(t (1 - 0.1^2) / 16 + 0.1^2): the first two batches (the one trained at step 1 and the
    # one fetched ahead) come from the easiest 27 % of the rows, level 1 only (no floor for the others);
    # level 3, the hardest third, is admitted once c passes 2/3, after step 8.
    assert draws[(1, "level=1")] == 16 and draws[(1, "level=2")] == draws[(1, "level=3")] == 0
    assert draws[(16, "level=3")] - draws[(8, "level=3")] > 0 and draws[(16, "level=2")] > 0
    assert (run_dir / "sft" / "checkpoints" / "checkpoint-8" / "curriculum_state.npz").is_file()
    assert json.loads((run_dir / "sft" / "metrics.json").read_text())["global_step"] == 16
