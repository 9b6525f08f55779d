"""The `difficulty` stage for real: `gradus run` on the smallest tiny model, with a planted reward.

The signal is `level_coin` (tests/curriculum/planted_rewards.py): level 1 always passes, level 3 never,
level 2 by a coin on the completion's hash, whatever the random model writes. So the pass rates are
known without training anything, and what is tested is the mechanics: the dataset, a later stage
reading it, resume after SIGKILL without estimating a finished shard again, two processes splitting
the shards, and the same estimate however it was run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from stages.kinds import BUILTIN_KINDS
from tests.conftest import TINY_MODEL, gradus, sigkill_runner_when, write_manifest

pytestmark = pytest.mark.slow

SIGNAL = "tests.curriculum.planted_rewards:level_coin"
WITNESS = "tests.difficulty.witness:witness"


def difficulty_stage(num_examples: int, **launch: object) -> dict:
    stage = {
        "name": "difficulty", "kind": "difficulty", "model": "base",
        "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2, 3], "num_examples": num_examples, "seed": 3},
        "rewards": [{"name": SIGNAL}, {"name": WITNESS, "weight": 0.0}],
        "args": {"num_samples": 4, "max_new_tokens": 8, "prompts_per_shard": 2, "batch_size": 16},
    }
    return stage | ({"launch": launch} if launch else {})


def manifest(run_dir: Path, *stages: dict) -> dict:
    return {"run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL, "decontamination": {"enabled": False}, "stages": list(stages)}


def read_rows(stage_dir: Path) -> list[dict]:
    import datasets

    return datasets.load_from_disk(str(stage_dir / "dataset")).to_list()


def scored_by(log: Path) -> dict[str, set[int]]:
    """Which processes scored each prompt (from the witness log)."""
    processes: dict[str, set[int]] = defaultdict(set)
    for line in log.read_text().splitlines():
        pid, prompt = line.split("\t")
        processes[json.loads(prompt)].add(int(pid))
    return processes


@pytest.mark.ci
def test_pass_rates_a_grpo_curriculum_starts_from_and_a_killed_two_process_run_that_estimates_no_prompt_twice(tmp_path, monkeypatch):
    log = tmp_path / "scored.log"
    monkeypatch.setenv("DIFFICULTY_TEST_LOG", str(log))
    run_dir = tmp_path / "one"
    grpo = {
        "name": "grpo", "kind": "grpo", "model": "base", "data": {"recipe": "stage_output", "stage": "difficulty"},
        "rewards": [{"name": SIGNAL}], "curriculum": {"strategy": "band", "prior_column": "pass_rate"},
        "args": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 8, "logging_steps": 1,
                 "gradient_checkpointing": False, "report_to": "none"},
    }
    result = gradus("run", str(write_manifest(tmp_path / "one.yaml", manifest(run_dir, difficulty_stage(12), grpo))))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = read_rows(run_dir / "difficulty")
    assert set(BUILTIN_KINDS["difficulty"].output_columns) <= set(rows[0]) and len(rows) == 12
    for row in rows:
        assert len(row["scores"]) == 4 == len(row["samples"]) and row["pass_rate"] == sum(row["scores"]) / 4
        assert row["pass_rate"] == {1: 1.0, 3: 0.0}.get(row["level"], row["pass_rate"])
    metrics = json.loads((run_dir / "difficulty" / "metrics.json").read_text())
    assert metrics["completions"] == 48 and metrics["kept"] == 12 and metrics["shards"] == 6 and metrics["num_processes"] == 1
    levels = [row["level"] for row in rows]
    assert metrics["share_always_solved"] >= levels.count(1) / 12 and metrics["share_never_solved"] >= levels.count(3) / 12
    assert metrics["mean_pass_rate_by_level"]["1"] == 1.0 and metrics["mean_pass_rate_by_level"]["3"] == 0.0
    # The grpo stage read the pool through stage_output; its band curriculum started from the estimate,
    # so the prompts it had already seen solved every time (level 1) were retired before the first draw.
    draws = json.loads((run_dir / "grpo" / "metrics.json").read_text())["curriculum"]["draws"]
    assert draws["level=1"] == 0 and sum(draws.values()) >= 2 * 2  # two steps of two prompts (and the chunk drawn ahead)
    log.unlink()

    # The same estimate on two processes, killed after its first shard and run again.
    run_dir = tmp_path / "two"
    manifest_path = write_manifest(tmp_path / "two.yaml", manifest(run_dir, difficulty_stage(12, profile="ddp", num_processes=2)))
    stage_dir = run_dir / "difficulty"
    sigkill_runner_when(manifest_path, stage_dir / "partial" / "shard-00000.json", env={"DIFFICULTY_TEST_SLEEP": "1.5"})
    assert not (stage_dir / "done.json").exists(), "the stage finished before the kill; the test proves nothing"
    finished = {path.name: path.stat().st_mtime_ns for path in (stage_dir / "partial").glob("shard-*.json")}
    assert 1 <= len(finished) < 6
    before_kill = scored_by(log)
    log.unlink()

    resumed = gradus("run", str(manifest_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["shards_resumed"] == len(finished)
    assert {name: (stage_dir / "partial" / name).stat().st_mtime_ns for name in finished} == finished  # not redone
    after_resume = scored_by(log)
    finished_prompts = {rows[index]["prompt"] for name in finished for index in json.loads((stage_dir / "partial" / name).read_text())["indices"]}
    assert finished_prompts <= set(before_kill) and not finished_prompts & set(after_resume)  # nothing finished was estimated again
    assert all(len(pids) == 1 for pids in after_resume.values())  # each prompt by one process
    assert len({pid for pids in after_resume.values() for pid in pids}) == 2  # and both processes had work
    assert read_rows(stage_dir) == rows  # seeded by shard: the same estimate however it was run
