"""The whole process-supervision chain in one `gradus run`, as examples/prm.yaml runs it, at toy size:
SFT -> prm_label -> prm -> GRPO rewarded by math_accuracy and the PRM -> eval with the PRM as verifier.

What it checks is the hand-off between stages, not how good the tiny model gets: the labels cover every
sampled step, the PRM trained on them scores completions inside GRPO without a single reward error, and
eval reports best-of-n by PRM and PRM-weighted majority vote next to plain majority vote.
"""

from __future__ import annotations

import json

import datasets
import pytest

from tests.conftest import TINY_MODEL, gradus, write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.ci]

LEVELS = [1, 2]


def chain(run_dir) -> dict:
    problems = {"recipe": "synthetic_arithmetic", "levels": LEVELS}
    quiet = {"gradient_checkpointing": False, "report_to": "none", "logging_steps": 5}
    return {
        "run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL,
        "stages": [
            {"name": "sft", "kind": "sft", "data": {**problems, "num_examples": 2000},
             "args": {"max_steps": 60, "per_device_train_batch_size": 32, "learning_rate": 3e-3, "max_length": 64,
                      "save_strategy": "no", **quiet}},
            {"name": "labels", "kind": "prm_label", "model": "sft", "data": {**problems, "num_examples": 12, "seed": 3},
             "args": {"method": "binary_search", "num_solutions": 2, "rollouts_per_step": 2, "max_new_tokens": 40,
                      "problems_per_shard": 6}},
            {"name": "prm", "kind": "prm", "model": "sft", "data": {"recipe": "stage_output", "stage": "labels"},
             "args": {"max_steps": 10, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "eval_fraction": 0.25,
                      "save_strategy": "no", **quiet}},
            {"name": "grpo", "kind": "grpo", "model": "sft", "data": {**problems, "num_examples": 64, "seed": 1},
             "rewards": [{"name": "math_accuracy"}, {"name": "prm", "model": "prm", "aggregate": "min", "weight": 0.5}],
             "args": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 40,
                      "save_strategy": "no", **quiet}},
            {"name": "eval", "kind": "eval", "model": "grpo",
             "data": {**problems, "split": "test", "per_level": 8},
             "rewards": [{"name": "prm", "model": "prm"}],
             "args": {"max_new_tokens": 40, "num_samples": 4, "temperature": 1.0, "k": [1, 4]}},
        ],
    }


def test_sft_labels_prm_grpo_eval_chain_runs_and_hands_over(tmp_path):
    run_dir = tmp_path / "run"
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", chain(run_dir))), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    ledger = json.loads((run_dir / "ledger.json").read_text())["stages"]
    assert {name: entry["state"] for name, entry in ledger.items()} == dict.fromkeys(["sft", "labels", "prm", "grpo", "eval"], "done")

    labels = datasets.load_from_disk(str(run_dir / "labels" / "dataset"))
    assert len(labels) > 0 and all(len(row["labels"]) == len(row["steps"]) > 0 for row in labels)
    assert json.loads((run_dir / "labels" / "metrics.json").read_text())["rollouts"] > 0

    prm = json.loads((run_dir / "prm" / "metrics.json").read_text())
    assert prm["eval_rows"] > 0 and prm["steps"] > 0  # held-out step metrics were computed

    grpo = json.loads((run_dir / "grpo" / "metrics.json").read_text())
    assert grpo["reward_errors"] == {"math_accuracy": 0, "prm": 0}
    assert 0.0 <= grpo["rewards/prm/mean"] <= 1.0  # the PRM's min step probability, on every completion

    overall = json.loads((run_dir / "eval" / "metrics.json").read_text())["overall"]
    for key in ("pass@1", "pass@4", "maj@4", "best_of_4/prm", "weighted_maj@4/prm"):
        assert 0.0 <= overall[key] <= 1.0, key
    assert overall["best_of_4/prm"] <= overall["pass@4"] + 1e-9  # a verifier can only pick among the samples
    assert "best_of_4/prm" in (run_dir / "report.md").read_text()
