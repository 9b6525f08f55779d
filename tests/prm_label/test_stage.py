"""The `prm_label` stage for real: `gradus run` processes on the smallest tiny model.

These check the mechanics (the dataset's columns and shapes, rollouts counted, resume after a kill, the
same labels from a resumed run as from an uninterrupted one),
not label quality: a model trained this briefly is almost never right. Label quality is what
tests/prm_label/test_labelling.py (scripted policies) and bench/prm_labels.py (a trained policy) measure.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from data_recipes.math_sets import last_boxed
from stages.kinds import BUILTIN_KINDS
from tests.conftest import TINY_MODEL, gradus, sigkill_runner_when, tiny_manifest, write_manifest

pytestmark = pytest.mark.slow

LABEL_DATA = {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 6, "seed": 5}
LABEL_ARGS = {"num_solutions": 2, "rollouts_per_step": 3, "max_new_tokens": 40, "problems_per_shard": 2, "batch_size": 64}


def read_rows(stage_dir: Path) -> list[dict]:
    import datasets

    return datasets.load_from_disk(str(stage_dir / "dataset")).to_list()


def test_sft_then_prm_label_writes_the_declared_dataset(tmp_path):
    run_dir = tmp_path / "run"
    manifest = tiny_manifest(run_dir, max_steps=60, save_steps=60)
    manifest["stages"] = manifest["stages"][:1] + [
        {"name": "labels", "kind": "prm_label", "model": "sft", "data": LABEL_DATA, "args": {**LABEL_ARGS, "method": "mc"}},
    ]
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = read_rows(run_dir / "labels")
    metrics = json.loads((run_dir / "labels" / "metrics.json").read_text())
    assert set(BUILTIN_KINDS["prm_label"].output_columns) <= set(rows[0])
    assert metrics["problems"] == 6 and metrics["solutions"] == len(rows) == 12 and metrics["shards"] == 3
    assert metrics["rollouts"] == metrics["rollouts_this_run"] == sum(row["rollouts"] for row in rows) > 0
    assert metrics["steps"] == sum(len(row["steps"]) for row in rows)
    assert sorted({row["problem_index"] for row in rows}) == list(range(6))
    for row in rows:
        assert len(row["steps"]) == len(row["labels"]) == len(row["hard_labels"]) == len(row["measured"]) >= 1
        assert all(0.0 <= value <= 1.0 for value in row["labels"]) and row["prompt"].startswith("Q: ")
        assert not any("\n" in step or not step.strip() for step in row["steps"])
        assert [value > 0 for value in row["labels"]] == row["hard_labels"]
        terminal = last_boxed(row["steps"][-1]) is not None
        assert row["rollouts"] == 3 * (len(row["steps"]) - terminal)  # every prefix but one holding the final answer

    # What a later `prm` stage reads through `data: {recipe: stage_output, stage: labels}`.
    import data_recipes

    options = {"stage": "labels", "path": run_dir / "labels" / "dataset"}
    assert set(BUILTIN_KINDS["prm_label"].output_columns) <= set(data_recipes.columns("stage_output", options))
    assert data_recipes.load("stage_output", options).to_list() == rows


@pytest.mark.ci
def test_killed_stage_resumes_without_relabelling_finished_problems(tmp_path):
    # The random-init base model: it writes noise, which is all resuming needs, and no SFT stage to wait for.
    run_dir = tmp_path / "run"
    manifest = {
        "run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL,
        "stages": [{
            "name": "labels", "kind": "prm_label", "model": "base",
            "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 16, "seed": 2},
            "args": {"num_solutions": 2, "rollouts_per_step": 2, "max_new_tokens": 16, "problems_per_shard": 1, "method": "binary_search"},
        }],
    }
    manifest_path = write_manifest(tmp_path / "m.yaml", manifest)
    stage_dir = run_dir / "labels"
    first_shard = stage_dir / "partial" / "shard-00000.json"
    sigkill_runner_when(manifest_path, first_shard)
    deadline = time.time() + 30  # the stage process dies with its runner (SIGTERM from the kernel)
    while subprocess.run(["pgrep", "-f", str(stage_dir / "stage.yaml")], capture_output=True).returncode == 0:
        assert time.time() < deadline, "the stage outlived its killed runner"
        time.sleep(0.1)
    assert not (stage_dir / "done.json").exists(), "the stage finished before the kill; the test proves nothing"
    finished = {path.name: path.stat().st_mtime_ns for path in (stage_dir / "partial").glob("shard-*.json")}
    assert 1 <= len(finished) < 16
    finished_rollouts = sum(json.loads((stage_dir / "partial" / name).read_text())["rollouts"] for name in finished)

    resumed = gradus("run", str(manifest_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "labels: resuming" in resumed.stdout
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["shards_resumed"] == len(finished) and metrics["shards"] == 16
    assert {name: (stage_dir / "partial" / name).stat().st_mtime_ns for name in finished} == finished  # not rewritten
    assert metrics["rollouts_this_run"] == metrics["rollouts"] - finished_rollouts
    resumed_rows = read_rows(stage_dir)
    assert sorted({row["problem_index"] for row in resumed_rows}) == list(range(16))

    # An uninterrupted run of the same stage spends the same rollouts on the same labels.
    fresh = gradus("run", str(manifest_path), "--only", "labels")
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    fresh_metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert fresh_metrics["shards_resumed"] == 0 and fresh_metrics["rollouts_this_run"] == fresh_metrics["rollouts"] == metrics["rollouts"]
    assert read_rows(stage_dir) == resumed_rows


def test_two_processes_label_what_one_process_labels(tmp_path):
    # Shards are seeded by their number, so how they are spread over processes changes nothing.
    run_dir = tmp_path / "run"
    stage = {
        "name": "labels", "kind": "prm_label", "model": "base",
        "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 7, "seed": 4},
        "args": {"num_solutions": 2, "rollouts_per_step": 2, "max_new_tokens": 16, "problems_per_shard": 2},
    }
    manifest = {"run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL, "stages": [stage]}
    single = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    one_process_rows = read_rows(run_dir / "labels")
    one_process = json.loads((run_dir / "labels" / "metrics.json").read_text())

    stage["launch"] = {"profile": "ddp", "num_processes": 2}  # launch settings leave the fingerprint alone
    double = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)), "--only", "labels")
    assert double.returncode == 0, double.stdout[-3000:] + double.stderr[-3000:]
    two_processes = json.loads((run_dir / "labels" / "metrics.json").read_text())
    assert one_process["num_processes"] == 1 and two_processes["num_processes"] == 2
    assert two_processes["rollouts_this_run"] == two_processes["rollouts"] == one_process["rollouts"]
    assert read_rows(run_dir / "labels") == one_process_rows
    assert len(one_process_rows) == 14 and two_processes["shards"] == 4
