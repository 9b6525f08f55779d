"""ReLIFT inside a real GRPOTrainer (tiny random model, CPU) and real grpo stages: the hard buffer fills
with exactly the prompts whose groups all fail, SFT steps are taken on their demonstrations, and the
buffer survives a SIGKILL and resume exactly and is identical on two ranks.

The signal reward is planted (tests/curriculum/planted_rewards.py): level 1 always passes, level 3 never,
level 2 by a coin on the completion's hash, whatever the untrained model writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from pipeline.manifest import TinyModelSpec
from stages.models import build_tiny_model
from stages.relift import OPTIMIZER_FILE, GRPORelift
from tests.conftest import TINY_MODEL
from tests.curriculum.planted_rewards import level_coin

GROUP, PROMPTS_PER_BATCH, STEPS, SFT_BATCH = 4, 4, 6, 4


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    build_tiny_model(TinyModelSpec(**TINY_MODEL["tiny"]).model_dump(), seed=0, out_dir=path)
    return path


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> tuple[GRPORelift, list[dict], list[int], object]:
    """One short in-process run, shared by the asserts below."""
    from trl import GRPOConfig, GRPOTrainer

    from stages import common

    levels = [1, 2, 3] * 16
    data = datasets.Dataset.from_dict({
        "prompt": [f"Q{index}:" for index in range(len(levels))], "completion": [f" {index % 10}" for index in range(len(levels))], "level": levels,
    })
    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("run") / "checkpoints"), use_cpu=True, bf16=False, max_steps=STEPS, learning_rate=1e-4,
        beta=0.0, num_generations=GROUP, per_device_train_batch_size=GROUP * PROMPTS_PER_BATCH, max_completion_length=8,
        logging_steps=1, save_strategy="no", report_to="none", remove_unused_columns=False, gradient_checkpointing=False, seed=0,
    )
    relift = GRPORelift.build({"sft_batch_size": SFT_BATCH, "learning_rate": 1e-3, "lr_scheduler_type": "linear"}, args, data, [level_coin])
    trainer = GRPOTrainer(
        model=str(tiny_model), reward_funcs=relift.rewards, args=args, train_dataset=relift.train_dataset,
        processing_class=common.load_tokenizer(str(tiny_model)), callbacks=[relift.callback],
    )
    relift.attach(trainer)
    trainer.train()
    return relift, trainer.state.log_history, levels, trainer


def test_only_prompts_whose_whole_group_failed_are_buffered_and_trained_on(trained):
    relift, _, levels, _ = trained
    counters = relift.buffer.counters
    assert counters["groups_seen"] == STEPS * PROMPTS_PER_BATCH
    used = np.flatnonzero(relift.buffer.used).tolist()
    buffered = [levels[index] for index in used + relift.buffer.waiting]
    assert used and 1 not in buffered  # level 1 always passes: never buffered
    # Level 2 fails a whole group only if all four coins come up tails (1 in 16); level 3 always fails.
    assert buffered.count(3) > 4 * buffered.count(2)
    assert counters["groups_failed"] >= len(used) + len(relift.buffer.waiting)
    assert counters["sft_steps"] == counters["demonstrations_trained"] // SFT_BATCH >= 1
    assert relift.buffer.used_share == pytest.approx(len(used) / len(levels))


def test_sft_steps_and_the_buffer_are_logged_with_every_step(trained):
    relift, history, _, _ = trained
    steps = [entry for entry in history if "relift/buffer_size" in entry]
    assert len(steps) == STEPS
    assert steps[-1]["relift/sft_steps"] == relift.buffer.counters["sft_steps"]
    assert steps[-1]["relift/demonstrations_used_share"] == pytest.approx(relift.buffer.used_share)
    assert all(steps[i]["relift/sft_steps"] <= steps[i + 1]["relift/sft_steps"] for i in range(STEPS - 1))
    losses = [entry["relift/sft_loss"] for entry in steps if "relift/sft_loss" in entry]
    assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses)
    # The SFT rate decays linearly from 1e-3 to 0 at the last step, and the last SFT step really took its step's rate.
    rates = [entry["relift/sft_learning_rate"] for entry in steps]
    assert rates == pytest.approx([1e-3 * (1 - step / STEPS) for step in range(1, STEPS + 1)])
    last_sft_step = max(index for index in range(STEPS) if steps[index]["relift/sft_steps"] > (steps[index - 1]["relift/sft_steps"] if index else 0))
    assert relift.callback.optimizer().param_groups[0]["lr"] == pytest.approx(rates[last_sft_step])
    summary = relift.summary()
    assert summary["sft_steps"] == relift.buffer.counters["sft_steps"] and summary["state_digest_per_rank"] == [relift.buffer.digest()]


SIGNAL = "tests.curriculum.planted_rewards:level_coin"


def relift_manifest(run_dir: Path, **launch: object) -> dict:
    stage = {
        "name": "grpo", "kind": "grpo",
        "data": {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3], "num_examples": 300, "seed": 1},
        "rewards": [{"name": SIGNAL}],
        "relift": {"sft_batch_size": 4, "replay_solved": 2, "learning_rate": 1e-3, "lr_scheduler_type": "cosine"},
        "args": {
            "max_steps": 8, "learning_rate": 1e-4, "beta": 0.0, "num_generations": 4, "per_device_train_batch_size": 16,
            "max_completion_length": 16, "logging_steps": 1, "save_steps": 4, "gradient_checkpointing": False, "report_to": "none",
        },
    }
    if launch:
        stage["launch"] = launch
    return {"run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL, "decontamination": {"enabled": False}, "stages": [stage]}


def relift_logs(run_dir: Path) -> list[dict]:
    history = json.loads((run_dir / "grpo" / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    return [{key: value for key, value in entry.items() if key.startswith("relift/")} for entry in history if "relift/buffer_size" in entry]


def saved_state(run_dir: Path, step: int) -> dict[str, np.ndarray]:
    with np.load(run_dir / "grpo" / "checkpoints" / f"checkpoint-{step}" / "relift_state.npz") as state:
        return dict(state)


@pytest.mark.slow
@pytest.mark.ci
def test_the_hard_buffer_survives_a_sigkill_and_resume_exactly(tmp_path):
    from tests.conftest import gradus, sigkill_runner_when, write_manifest
    from tests.e2e.test_runner import metrics

    reference_dir = tmp_path / "uninterrupted"
    reference = gradus("run", str(write_manifest(tmp_path / "a.yaml", relift_manifest(reference_dir))))
    assert reference.returncode == 0, reference.stdout[-3000:]
    logs = relift_logs(reference_dir)
    assert logs[7]["relift/sft_steps"] > logs[3]["relift/sft_steps"] > 0  # SFT steps before and after the checkpoint the resume starts from
    assert logs[7]["relift/solved_replayed"] > logs[3]["relift/solved_replayed"] > 0  # and solved prompts replayed in both

    run_dir = tmp_path / "killed"
    manifest_path = write_manifest(tmp_path / "b.yaml", relift_manifest(run_dir))
    sigkill_runner_when(manifest_path, run_dir / "grpo" / "checkpoints" / "checkpoint-4" / "trainer_state.json",
                        env={"CURRICULUM_TEST_PAUSE_AFTER_STEP": "4"})
    assert not (run_dir / "grpo" / "done.json").exists(), "grpo finished before the kill; the test proves nothing"
    resumed = gradus("run", str(manifest_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming from checkpoint" in resumed.stdout

    for step in (4, 8):
        reference_state, resumed_state = saved_state(reference_dir, step), saved_state(run_dir, step)
        assert reference_state.keys() == resumed_state.keys()
        for key, value in reference_state.items():
            assert np.array_equal(value, resumed_state[key], equal_nan=value.dtype.kind == "f"), (step, key)
    assert relift_logs(run_dir) == logs  # buffer size, SFT steps and losses, share used: at every step
    assert metrics(run_dir, "grpo")["relift"] == metrics(reference_dir, "grpo")["relift"]
    # The SFT steps' own optimizer is restored too: its state and the final weights equal the uninterrupted run's.
    optimizer = [torch.load(directory / "grpo" / "checkpoints" / "checkpoint-8" / OPTIMIZER_FILE, weights_only=True) for directory in (reference_dir, run_dir)]
    assert all(torch.equal(a, b) for a, b in zip(tensors(optimizer[0]["state"]), tensors(optimizer[1]["state"]), strict=True))
    assert (reference_dir / "grpo" / "model" / "model.safetensors").read_bytes() == (run_dir / "grpo" / "model" / "model.safetensors").read_bytes()


def tensors(state: dict) -> list:
    return [value for _, moments in sorted(state.items()) for _, value in sorted(moments.items())]


@pytest.mark.slow
def test_two_ranks_hold_identical_buffers_and_take_the_same_sft_steps(tmp_path):
    from tests.conftest import gradus, write_manifest
    from tests.e2e.test_runner import metrics

    run_dir = tmp_path / "run"
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", relift_manifest(run_dir, profile="ddp", num_processes=2))))
    assert result.returncode == 0, result.stdout[-3000:]
    summary = metrics(run_dir, "grpo")["relift"]
    assert metrics(run_dir, "grpo")["num_processes"] == 2
    rank0, rank1 = summary["state_digest_per_rank"]
    assert rank0 == rank1 and summary["sft_steps"] >= 2  # each rank recorded both ranks' groups, in the same order
    assert summary["solved_replayed"] >= 2  # and drew the same solved prompts to replay
    assert summary["groups_seen"] == 8 * 8  # 8 steps x (2 x 16 completions / 4 per group)
