"""Every stage kind on a real pretrained LLM, SmolLM2-135M-Instruct, from its GGUF file, in one `gradus run`: a
few steps each, LoRA and full fine-tuning, chat data in each of TRL's formats. What it checks is that a real
tokenizer and chat template go through every stage and hand over, not how good 135 M parameters get:

base eval -> SFT (LoRA, chat prompt + completion) -> SFT (full, `messages`) -> GRPO (LoRA, lp curriculum, relift)
-> eval; on-policy DPO (full); prm_label -> PRM (the 135 M model as backbone); difficulty.

And the GGUF file is converted once: a rerun that reruns the first stage does not convert it again.
"""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from tests.conftest import REAL_MODEL, gradus, write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.ci]

QUIET = {"gradient_checkpointing": False, "report_to": "none", "logging_steps": 1, "save_strategy": "no"}
LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}


def problems(**options) -> dict:
    return {"recipe": "synthetic_arithmetic", "levels": [1, 2], "wording": "question", **options}


def chain(run_dir) -> dict:
    chat = problems(format="conversational")
    return {
        "run_dir": str(run_dir), "seed": 0, "base_model": REAL_MODEL,
        "stages": [
            {"name": "eval_base", "kind": "eval", "data": {**chat, "split": "test", "per_level": 2}, "args": {"max_new_tokens": 24, "batch_size": 4}},
            {"name": "sft_lora", "kind": "sft", "peft": LORA,
             "data": problems(format="conversational_prompt_completion", num_examples=64),
             "args": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-4, "max_length": 128, **QUIET}},
            {"name": "sft_full", "kind": "sft", "model": "sft_lora", "data": {**chat, "num_examples": 64},
             "args": {"max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-5, "max_length": 128, **QUIET}},
            {"name": "grpo", "kind": "grpo", "model": "sft_full", "peft": LORA,
             "data": problems(format="conversational_prompt_completion", num_examples=32, seed=1),
             "rewards": [{"name": "math_accuracy"}, {"name": "format", "weight": 0.2}],
             "curriculum": {"strategy": "lp", "difficulty_column": "level", "signal_reward": "math_accuracy"},
             "relift": {"sft_batch_size": 2, "signal_reward": "math_accuracy"},
             "args": {"max_steps": 2, "num_generations": 2, "per_device_train_batch_size": 4, "max_completion_length": 24,
                      "learning_rate": 1e-5, "beta": 0.0, **QUIET}},
            {"name": "eval", "kind": "eval", "model": "grpo", "data": {**chat, "split": "test", "per_level": 2},
             "args": {"max_new_tokens": 24, "batch_size": 4, "extraction": "lenient"}},
            {"name": "dpo", "kind": "dpo", "model": "sft_full", "data": {**chat, "num_examples": 4, "seed": 2},
             # The length penalty ranks samples of a model that gets no sum right yet, so there are pairs to train on.
             "rewards": [{"name": "math_accuracy"}, {"name": "length", "max_tokens": 24, "cache_tokens": 20}],
             "on_policy": {"num_completions": 4, "margin": 0.1, "rounds": 1, "pairs_per_prompt": 1, "max_new_tokens": 24},
             "args": {"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-6, "max_length": 128, **QUIET}},
            {"name": "labels", "kind": "prm_label", "model": "sft_full", "data": {**chat, "num_examples": 2, "seed": 3},
             "args": {"method": "binary_search", "num_solutions": 2, "rollouts_per_step": 2, "max_new_tokens": 24}},
            {"name": "prm", "kind": "prm", "model": "sft_full", "data": {"recipe": "stage_output", "stage": "labels"},
             "args": {"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-5, **QUIET}},
            {"name": "difficulty", "kind": "difficulty", "model": "sft_full", "data": {**chat, "num_examples": 2, "seed": 4},
             "rewards": [{"name": "math_accuracy"}], "args": {"num_samples": 2, "max_new_tokens": 24}},
        ],
    }


def test_every_stage_kind_runs_on_the_real_model_and_the_gguf_is_converted_once(tmp_path):
    run_dir = tmp_path / "run"
    manifest = write_manifest(tmp_path / "m.yaml", chain(run_dir))
    first = gradus("run", str(manifest), timeout=1500)
    assert first.returncode == 0, first.stdout[-4000:]
    ledger = json.loads((run_dir / "ledger.json").read_text())["stages"]
    assert {name: entry["state"] for name, entry in ledger.items()} == {stage["name"]: "done" for stage in chain(run_dir)["stages"]}
    assert first.stdout.count("converting") == 1

    # The base model is an ordinary model directory with the GGUF's real vocabulary, and every model saved is one too.
    base = run_dir / "base_model"
    with safe_open(str(base / "model.safetensors"), "pt") as weights:
        assert weights.get_slice("model.embed_tokens.weight").get_shape()[0] == 49152
    for stage in ("sft_lora", "sft_full", "grpo", "dpo", "prm"):
        assert (run_dir / stage / "model" / "config.json").is_file(), stage

    for stage in ("sft_lora", "sft_full"):
        metrics = json.loads((run_dir / stage / "metrics.json").read_text())
        assert metrics["final_loss"] > 0, stage
    grpo = json.loads((run_dir / "grpo" / "metrics.json").read_text())
    assert grpo["reward_errors"] == {"math_accuracy": 0, "format": 0}
    assert grpo["clipped_fraction"] is not None and 0.0 <= grpo["clipped_fraction"] <= 1.0
    evaluation = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert evaluation["extraction"] == "lenient" and set(evaluation["by_extraction"]) == {"boxed", "lenient"}
    assert evaluation["clipped"] == round(evaluation["clipped_fraction"] * evaluation["n"])
    report = (run_dir / "report.md").read_text()
    assert "| clipped |" in report

    # A changed first stage reruns; the converted base model stays as it was.
    written = (base / "model.safetensors").stat().st_mtime_ns
    again = gradus("run", str(manifest), "stages.eval_base.args.max_new_tokens=16", "--only", "eval_base", timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "converting" not in again.stdout and (base / "model.safetensors").stat().st_mtime_ns == written
