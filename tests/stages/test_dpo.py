"""The `dpo` stage: pair selection and prompt slicing as plain functions, then real runs of the tiny model.

The slow tests drive `gradus run` as a user does. The on-policy ones start from one briefly
SFT-trained tiny model (built once per module): about one sample in eight has a well-formed
`\\boxed{}` answer and almost none is right, so its pairs come mostly from the `format` reward. That is
all these tests need: they check the mechanics (pairs, margins, rounds, resume), not that DPO helps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stages.arguments import StageFile
from stages.dpo import end_without_pairs, preference_pairs, round_prompt_indices
from tests.conftest import TINY_MODEL, gradus, sigkill_runner_when, tiny_manifest, write_manifest

DPO_ARGS = {
    "max_steps": 10, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "logging_steps": 2, "save_steps": 5,
    "max_length": 96, "gradient_checkpointing": False, "report_to": "none",
}
ON_POLICY = {"num_completions": 4, "margin": 0.5, "rounds": 2, "prompts_per_round": 16, "temperature": 1.0, "max_new_tokens": 40}
REWARDS = [{"name": "math_accuracy", "weight": 1.0}, {"name": "format", "weight": 0.5}]


# --- plain functions -------------------------------------------------------------------------------


def test_rounds_take_disjoint_slices_of_one_seeded_shuffle_then_wrap():
    rounds = [round_prompt_indices(10, 4, seed=3, round_number=r) for r in (1, 2, 3)]
    assert rounds[0] == round_prompt_indices(10, 4, seed=3, round_number=1)  # deterministic
    assert not set(rounds[0]) & set(rounds[1]) and len(set(rounds[0] + rounds[1])) == 8
    assert set(rounds[2]) >= set(range(10)) - set(rounds[0] + rounds[1])  # the last two, then wraps around
    assert round_prompt_indices(10, 4, seed=4, round_number=1) != rounds[0]
    assert round_prompt_indices(10, None, seed=3, round_number=2) == list(range(10))
    assert round_prompt_indices(3, 5, seed=3, round_number=2) == [0, 1, 2]


def test_pairs_are_best_against_worst_when_the_gap_reaches_the_margin_and_never_ties():
    completions = ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"]
    scores = [0.2, 1.0, 0.0, 0.5, 0.5, 0.5, 0.3, 0.0, 0.5]
    pairs = preference_pairs(["a", "b", "c"], completions, scores, n=3, margin=0.6)
    assert pairs == [{"prompt": "a", "chosen": "a1", "rejected": "a2", "chosen_score": 1.0, "rejected_score": 0.0}]
    assert [pair["prompt"] for pair in preference_pairs(["a", "b", "c"], completions, scores, n=3, margin=0.0)] == ["a", "c"]


class OneProcess:
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


def test_a_round_without_pairs_ends_the_stage_with_the_last_trained_model_or_fails_round_one(tmp_path):
    stage = StageFile(name="dpo", kind="dpo", fingerprint="f", seed=0, stage_dir=tmp_path / "dpo", model_path="unused",
                  data={"recipe": "unused"}, on_policy={"num_completions": 4, "margin": 0.5})
    previous_model = tmp_path / "dpo" / "rounds" / "round_1" / "model"
    previous_model.mkdir(parents=True)
    (previous_model / "model.safetensors").write_text("weights")
    with pytest.raises(RuntimeError, match="round 1: on no prompt .* lower on_policy.margin"):
        end_without_pairs(stage, 1, "unused", OneProcess())
    end_without_pairs(stage, 2, str(previous_model), OneProcess())
    assert (stage.model_dir / "model.safetensors").read_text() == "weights"


# --- end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory) -> Path:
    """The smallest tiny model after 80 SFT steps: mostly well-formed answers, almost never right ones."""
    run_dir = tmp_path_factory.mktemp("sft") / "run"
    manifest = tiny_manifest(run_dir, max_steps=80, per_device_train_batch_size=32, learning_rate=5e-3, save_steps=80)
    manifest["stages"] = manifest["stages"][:1]
    result = gradus("run", str(write_manifest(run_dir.parent / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-3000:]
    return run_dir / "sft" / "model"


def on_policy_manifest(run_dir: Path, base_model: Path, **args) -> dict:
    return {
        "run_dir": str(run_dir), "seed": 0, "base_model": str(base_model),
        "stages": [{
            "name": "dpo", "kind": "dpo",
            "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 200, "seed": 1},
            "rewards": REWARDS, "on_policy": ON_POLICY, "args": {**DPO_ARGS, **args},
        }],
    }


def weighted_reward(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    import rewards

    totals = [0.0] * len(completions)
    for spec in REWARDS:
        values = rewards.build(spec["name"], {})(prompts=prompts, completions=completions, answer=answers)
        totals = [total + spec["weight"] * value for total, value in zip(totals, values)]
    return totals


def mtimes(paths: list[Path]) -> list[int]:
    return [path.stat().st_mtime_ns for path in paths]


@pytest.mark.slow
def test_on_policy_rounds_save_pairs_that_meet_the_margin_and_train_the_model(tmp_path, sft_model):
    import datasets
    from safetensors.torch import load_file

    import data_recipes

    run_dir = tmp_path / "run"
    manifest = on_policy_manifest(run_dir, sft_model)
    manifest["stages"][0]["on_policy"] = {**ON_POLICY, "pairs_per_prompt": 2}
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-3000:]
    stage_dir = run_dir / "dpo"
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert [record["round"] for record in metrics["rounds"]] == [1, 2]

    data = manifest["stages"][0]["data"]
    rows = data_recipes.load(data["recipe"], {key: value for key, value in data.items() if key != "recipe"})
    answer_of = dict(zip(rows["prompt"], rows["answer"]))
    prompts_by_round = []
    for record in metrics["rounds"]:
        pairs = datasets.load_from_disk(str(stage_dir / "pairs" / f"round_{record['round']}"))
        assert set(pairs.column_names) == {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}
        assert len(pairs) == record["sampling"]["pairs_kept"] > 0
        assert record["sampling"]["prompts_tried"] == ON_POLICY["prompts_per_round"]
        assert all(chosen - rejected >= ON_POLICY["margin"] for chosen, rejected in zip(pairs["chosen_score"], pairs["rejected_score"]))
        # The round's log: its pair count and score gap are the saved pairs', its curves TRL's logged DPO loss and margins.
        log = record["log"]
        assert log["pairs"] == len(pairs) <= 2 * ON_POLICY["prompts_per_round"]
        assert log["mean_score_gap"] == pytest.approx(sum(c - r for c, r in zip(pairs["chosen_score"], pairs["rejected_score"])) / len(pairs))
        curves = record["training"]["curves"]
        assert len(curves["rewards/margins"]) == DPO_ARGS["max_steps"] // DPO_ARGS["logging_steps"]
        assert log["rewards/margins"] == [curves["rewards/margins"][0][1], curves["rewards/margins"][-1][1]]
        assert log["loss"] == [record["training"]["first_loss"], record["training"]["final_loss"]]
        # The saved scores are the weighted rewards of the saved completions.
        answers = [answer_of[prompt] for prompt in pairs["prompt"]]
        for side in ("chosen", "rejected"):
            assert pairs[f"{side}_score"] == pytest.approx(weighted_reward(pairs["prompt"], pairs[side], answers))
        prompts_by_round.append(set(pairs["prompt"]))
        assert record["training"]["global_step"] == DPO_ARGS["max_steps"]
    assert not prompts_by_round[0] & prompts_by_round[1]  # each round samples its own prompts

    # Round 1 saved its model for round 2 to start from; the stage's model moved away from the SFT model.
    assert (stage_dir / "rounds" / "round_1" / "model" / "model.safetensors").is_file()
    start, trained = load_file(sft_model / "model.safetensors"), load_file(stage_dir / "model" / "model.safetensors")
    assert any(not (start[key] == trained[key]).all() for key in start)
    assert metrics["final_loss"] == metrics["rounds"][-1]["training"]["final_loss"]
    assert (stage_dir / "training.png").stat().st_size > 0 and (stage_dir / "rounds.png").stat().st_size > 0


@pytest.mark.slow
def test_static_preference_pairs_from_a_jsonl_file_train_with_lora(tmp_path):
    pairs_file = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"Q: {a} +{b}\nA:", "chosen": f" {a}+{b}={a + b}\n\\boxed{{{a + b}}}", "rejected": f" {a}+{b}={a + b + 1}\n\\boxed{{{a + b + 1}}}"}
        for a in range(10, 26) for b in (1, 2)
    ]
    pairs_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run_dir = tmp_path / "run"
    manifest = {
        "run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL,
        "stages": [{
            "name": "dpo", "kind": "dpo", "data": {"recipe": "jsonl", "path": str(pairs_file)},
            "peft": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "args": {**DPO_ARGS, "max_steps": 12, "learning_rate": 5e-3},
        }],
    }
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-3000:]
    metrics = json.loads((run_dir / "dpo" / "metrics.json").read_text())
    assert metrics["global_step"] == 12 and "rounds" not in metrics
    assert metrics["final_loss"] < metrics["first_loss"]
    assert (run_dir / "dpo" / "adapter").is_dir() and (run_dir / "dpo" / "model" / "model.safetensors").is_file()
    assert (run_dir / "dpo" / "training.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.ci
def test_sigkill_in_round_two_then_rerun_keeps_finished_round_and_resumes_training(tmp_path, sft_model):
    run_dir = tmp_path / "run"
    manifest_path = write_manifest(tmp_path / "m.yaml", on_policy_manifest(run_dir, sft_model, max_steps=60, save_steps=10, learning_rate=2e-4))
    stage_dir = run_dir / "dpo"
    first_checkpoint = stage_dir / "rounds" / "round_2" / "checkpoints" / "checkpoint-10" / "trainer_state.json"
    sigkill_runner_when(manifest_path, first_checkpoint)
    assert not (stage_dir / "done.json").exists(), "the stage finished before the kill; the test proves nothing"
    assert not (stage_dir / "rounds" / "round_2" / "round.json").exists()
    time.sleep(2)  # the stage process dies with its runner

    kept = [
        stage_dir / "pairs" / "round_1" / "data-00000-of-00001.arrow", stage_dir / "pairs" / "round_1" / "sampling.json",
        stage_dir / "rounds" / "round_1" / "round.json", stage_dir / "rounds" / "round_1" / "model" / "model.safetensors",
        stage_dir / "pairs" / "round_2" / "data-00000-of-00001.arrow",
    ]
    before = mtimes(kept)
    resumed = gradus("run", str(manifest_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert mtimes(kept) == before  # round 1 neither resampled nor retrained; round 2's pairs reused
    assert "round 1 finished in an earlier run" in resumed.stdout
    assert "resuming from checkpoint" in resumed.stdout and "round_2/checkpoints/checkpoint-" in resumed.stdout
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert [record["training"]["global_step"] for record in metrics["rounds"]] == [60, 60]


@pytest.mark.slow
def test_two_processes_sample_a_slice_each_and_train_on_the_same_pairs(tmp_path, sft_model):
    run_dir = tmp_path / "run"
    manifest = on_policy_manifest(run_dir, sft_model, ddp_find_unused_parameters=False)
    manifest["stages"][0]["on_policy"] = {**ON_POLICY, "rounds": 1}
    manifest["stages"][0]["launch"] = {"profile": "ddp", "num_processes": 2}
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-4000:]
    metrics = json.loads((run_dir / "dpo" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["distributed_type"] == "MULTI_CPU"
    sampling = metrics["rounds"][0]["sampling"]
    # Each prompt sampled once in all, not once per process.
    assert sampling["prompts_tried"] == 16 and sampling["samples"] == 16 * ON_POLICY["num_completions"]
    assert metrics["global_step"] == DPO_ARGS["max_steps"]
