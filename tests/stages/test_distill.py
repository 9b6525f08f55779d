"""The `distill` stage for real: a student smaller than its teacher moves toward it, a SIGKILLed stage (with a
curriculum over the student's pass rate) resumes to the uninterrupted run's weights and curriculum state, and
what can be known before launch is refused at plan time.

The teacher is a tiny model SFT'd in the same run; the student a smaller tiny model (`model: {tiny: ...}`, an
outside model the runner makes under run_dir/models) SFT'd a few steps, so both share the character
vocabulary and the student has something left to learn from the teacher.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import data_recipes

from pipeline.errors import ManifestError
from pipeline.manifest import load_manifest
from tests.conftest import TINY_MODEL, gradus, sigkill_runner_when, write_manifest

STUDENT = {"tiny": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}}
TRAIN = {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 2000}
HELD_OUT = {"recipe": "synthetic_arithmetic", "split": "test", "levels": [1, 2], "per_level": 16}
COMMON = {"gradient_checkpointing": False, "report_to": "none", "logging_steps": 2}
DISTILL_STEPS = 24


def sft(name: str, model: Any, steps: int) -> dict[str, Any]:
    return {"name": name, "kind": "sft", "model": model, "data": TRAIN,
            "args": {**COMMON, "max_steps": steps, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "max_length": 64, "save_steps": steps}}


def distill(teacher: Any = "teacher", **args: Any) -> dict[str, Any]:
    return {"name": "distill", "kind": "distill", "model": "student", "teacher": teacher,
            "data": {**TRAIN, "num_examples": 400, "seed": 3}, "rewards": [{"name": "math_accuracy"}],
            # the student's on-policy pass rate per level drives the prompts; its state must survive the kill
            "curriculum": {"strategy": "lp", "difficulty_column": "level"},
            "args": {**COMMON, "max_steps": DISTILL_STEPS, "per_device_train_batch_size": 16, "learning_rate": 3e-3,
                     "lr_scheduler_type": "constant", "max_completion_length": 32, "save_steps": 8, **args}}


def manifest(tmp_path: Path) -> Path:
    stages = [sft("teacher", "base", 80), sft("student", STUDENT, 10), distill()]
    return write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL,
                                                 "decontamination": {"enabled": False}, "stages": stages})


def token_kl(student_dir: Path, teacher_dir: Path, texts: list[str]) -> float:
    """Mean per-token KL(teacher || student) of the next-token distributions over `texts`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = [AutoModelForCausalLM.from_pretrained(str(path)).eval()(**batch).logits.log_softmax(-1) for path in (teacher_dir, student_dir)]
    per_token = (logits[0].exp() * (logits[0] - logits[1])).sum(-1)
    return float((per_token * batch["attention_mask"]).sum() / batch["attention_mask"].sum())


@pytest.mark.slow
@pytest.mark.ci
def test_a_distilled_student_moves_toward_its_teacher_and_a_killed_stage_resumes_to_the_same_weights_and_curriculum(tmp_path):
    from safetensors.numpy import load_file

    path = manifest(tmp_path)
    planned = gradus("plan", str(path))
    assert planned.returncode == 0, planned.stdout[-2000:] + planned.stderr[-2000:]
    assert "-m stages.distill" in planned.stdout

    run_dir = tmp_path / "run"
    stage_dir = run_dir / "distill"
    sigkill_runner_when(path, stage_dir / "checkpoints" / "checkpoint-16" / "trainer_state.json")
    assert not (stage_dir / "done.json").exists(), "the stage finished before the kill; the test proves nothing"
    resumed = gradus("run", str(path))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"resuming from checkpoint {stage_dir / 'checkpoints' / 'checkpoint-16'}" in resumed.stdout

    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["global_step"] == DISTILL_STEPS
    assert metrics["final_reward"] is not None and metrics["final_completions/mean_length"] is not None  # on-policy, logged per step
    assert metrics["final_loss"] < metrics["first_loss"]

    # The student is closer to its teacher, measured on held-out worked solutions.
    held_out = data_recipes.load("synthetic_arithmetic", {key: value for key, value in HELD_OUT.items() if key != "recipe"})
    texts = [row["prompt"] + row["completion"] for row in held_out][:16]
    teacher_dir, student_start = run_dir / "teacher" / "model", run_dir / "student" / "model"
    assert token_kl(stage_dir / "model", teacher_dir, texts) < 0.8 * token_kl(student_start, teacher_dir, texts)

    # An uninterrupted run of the same chain ends with the same weights, tensor for tensor, and the same curriculum state.
    again = tmp_path / "again"
    again.mkdir()
    uninterrupted = gradus("run", str(manifest(again)))
    assert uninterrupted.returncode == 0, uninterrupted.stdout[-3000:]
    resumed_weights = load_file(stage_dir / "model" / "model.safetensors")
    straight_weights = load_file(again / "run" / "distill" / "model" / "model.safetensors")
    assert resumed_weights.keys() == straight_weights.keys()
    for name, tensor in straight_weights.items():
        np.testing.assert_allclose(resumed_weights[name], tensor, rtol=1e-5, atol=1e-6, err_msg=name)
    final_state = Path("checkpoints") / f"checkpoint-{DISTILL_STEPS}" / "curriculum_state.npz"
    resumed_state, straight_state = np.load(stage_dir / final_state), np.load(again / "run" / "distill" / final_state)
    assert sorted(resumed_state.files) == sorted(straight_state.files)
    for name in straight_state.files:
        np.testing.assert_array_equal(resumed_state[name], straight_state[name], err_msg=name)
    assert metrics["curriculum"]["draws"] == json.loads((again / "run" / "distill" / "metrics.json").read_text())["curriculum"]["draws"]


def test_a_teacher_with_another_vocabulary_is_refused_at_plan_time_pointing_to_sequence_level_distillation(tmp_path):
    path = manifest(tmp_path)
    text = path.read_text().replace("teacher: teacher", "teacher: {tiny: {arch: qwen2, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2}}")
    path.write_text(text)
    with pytest.raises(ManifestError) as refused:
        load_manifest(path)
    message = str(refused.value)
    assert message.startswith("stage 'distill': field 'teacher': its vocabulary has 261 tokens and the student's 102")
    assert "accepted_samples" in message and "\n" not in message


def test_the_teacher_field_is_needed_by_distill_and_refused_elsewhere(tmp_path):
    path = manifest(tmp_path)
    path.write_text(path.read_text().replace("  teacher: teacher\n", ""))
    with pytest.raises(ManifestError, match="stage 'distill': field 'teacher': a distill stage learns from a teacher"):
        load_manifest(path)
    path = manifest(tmp_path)
    path.write_text(path.read_text().replace("- name: student\n  kind: sft\n", "- name: student\n  kind: sft\n  teacher: teacher\n"))
    with pytest.raises(ManifestError, match="stage 'student': field 'teacher': only distill stages learn from a teacher"):
        load_manifest(path)


def test_a_teacher_named_like_no_stage_and_no_model_gets_the_stage_list(tmp_path):
    path = manifest(tmp_path)
    path.write_text(path.read_text().replace("teacher: teacher", "teacher: teachr"))
    with pytest.raises(ManifestError, match=r"stage 'distill': field 'teacher': no stage named 'teachr' \(did you mean 'teacher'\?\)"):
        load_manifest(path)


COMMITTED = Path(__file__).resolve().parents[2] / "bench" / "distill_results"


@pytest.mark.slow
@pytest.mark.ci
def test_on_policy_distillation_from_the_bench_teacher_raises_the_students_held_out_accuracy(tmp_path):
    """bench/distill.py's committed student start (0.27 M parameters, 0.26 held-out) and teacher (the quickstart's
    1.06 M GRPO model, 0.86): a dozen steps of reverse KL move the student's greedy held-out accuracy up."""
    held_out = {"recipe": "synthetic_arithmetic", "split": "test", "levels": [1, 2, 3], "per_level": 30}
    evaluate = {"kind": "eval", "data": held_out, "args": {"max_new_tokens": 64, "batch_size": 90}}
    stages = [
        {"name": "before", "model": "base", **evaluate},
        {"name": "distill", "kind": "distill", "model": "base", "teacher": str(COMMITTED / "teacher"),
         "data": {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3], "num_examples": 1000, "seed": 1},
         "args": {**COMMON, "max_steps": 12, "per_device_train_batch_size": 32, "learning_rate": 1e-4, "lr_scheduler_type": "constant",
                  "max_completion_length": 64, "save_steps": 12}},
        {"name": "after", "model": "distill", **evaluate},
    ]
    path = write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": str(COMMITTED / "student_start"),
                                                 "decontamination": {"enabled": False}, "stages": stages})
    result = gradus("run", str(path))
    assert result.returncode == 0, result.stdout[-3000:]
    before, after = (json.loads((tmp_path / "run" / name / "metrics.json").read_text())["accuracy"] for name in ("before", "after"))
    assert after >= before + 0.1, (before, after)


@pytest.mark.parametrize("change, expected", [
    ({"peft": {"r": 4, "target_modules": ["q_proj", "lm_head"]}}, "field 'peft.target_modules': DistillationTrainer cannot train a LoRA adapter on lm_head"),
    ({"args": {"teacher_model_name_or_path": "some/teacher"}}, "field 'args.teacher_model_name_or_path': set by gradus from the stage's teacher: field"),
    ({"args": {"ignore_data_skip": True}}, "field 'args.ignore_data_skip': curriculum: a curriculum needs false"),
    ({"args": {"betta": 0.5}}, "field 'args.betta': not a field of DistillationConfig (did you mean 'beta'?)"),
    ({"curriculum": None, "args": {"remove_unused_columns": True}}, "field 'args.remove_unused_columns': the stage's rewards read data columns"),
])
def test_what_distillation_trainer_or_its_curriculum_would_refuse_is_a_preflight_problem(tmp_path, change, expected):
    from pipeline.plan import make_plan
    from stages.preflight import check

    path = manifest(tmp_path)
    raw = yaml.safe_load(path.read_text())
    stage = raw["stages"][2]
    for key, value in change.items():
        stage[key] = {**stage.get(key, {}), **value} if value is not None else None
    planned = next(stage for stage in make_plan(load_manifest(write_manifest(path, raw))).stages if stage.kind == "distill")
    problem = check(planned.resolved)
    assert problem is not None and expected in f"field '{problem.field}': {problem.message}"


class LoopBoundReward:
    """An async reward like a client with a connection pool, whose state is bound to the event loop that first ran
    it: it records the loop of every call, and what each call received."""

    __name__ = "loop_bound"

    def __init__(self) -> None:
        self.loops: list[Any] = []
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float]:
        import asyncio

        self.loops.append(asyncio.get_running_loop())
        self.calls.append(columns)
        return [float(len(ids)) for ids in columns["completion_ids"]]


def test_the_student_is_scored_as_trl_scores_and_an_async_reward_keeps_one_event_loop(tmp_path):
    """In process, on two tiny models: every generation batch is scored with the token ids, the data columns (the
    row's own `completion` left out, as TRL leaves it) and the trainer state, on the one loop of the whole run."""
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    from pipeline.manifest import TinyModelSpec
    from stages.common import load_tokenizer
    from stages.models import build_tiny_model
    from stages.trl_hooks import scoring_on_policy

    for name, hidden in (("student", 16), ("teacher", 32)):
        build_tiny_model(TinyModelSpec(hidden_size=hidden, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).model_dump(), 0, tmp_path / name)
    rows = data_recipes.load("synthetic_arithmetic", {"levels": [1], "num_examples": 8})
    reward = LoopBoundReward()
    trainer = scoring_on_policy(DistillationTrainer, [reward], [1.0])(
        model=str(tmp_path / "student"), teacher_model=str(tmp_path / "teacher"),
        args=DistillationConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, max_completion_length=8,
                                logging_steps=1, report_to="none", use_cpu=True, bf16=False, save_strategy="no"),
        train_dataset=Dataset.from_list(rows.to_list()), processing_class=load_tokenizer(str(tmp_path / "student")),
    )
    trainer.train()
    assert len(reward.calls) == 2 and reward.loops[0] is reward.loops[1]  # a generation batch a step, both on the run's one loop
    first = reward.calls[0]
    assert {"answer", "level", "trainer_state"} <= first.keys() and "completion" not in first
    logged = [entry for entry in trainer.state.log_history if "rewards/loop_bound/mean" in entry]
    assert len(logged) == 2 and all(entry["reward"] == entry["rewards/loop_bound/mean"] > 0 for entry in logged)


def test_a_teacher_that_is_no_causal_lm_or_the_stage_itself_is_refused_naming_the_field(tmp_path):
    raw = yaml.safe_load(manifest(tmp_path).read_text())
    raw["stages"][2:2] = [
        {"name": "labels", "kind": "prm_label", "model": "teacher", "data": {**TRAIN, "num_examples": 8}},
        {"name": "prm", "kind": "prm", "model": "teacher", "data": {"recipe": "stage_output", "stage": "labels"}},
    ]
    raw["stages"][-1]["teacher"] = "prm"
    with pytest.raises(ManifestError, match=r"^stage 'distill': field 'teacher': stage 'prm' makes a token classifier, not a causal LM a distill stage can learn from$"):
        load_manifest(write_manifest(tmp_path / "prm.yaml", raw))
    raw["stages"][-1]["teacher"] = "distill"
    with pytest.raises(ManifestError, match=r"^stage 'distill': field 'teacher': names the stage itself"):
        load_manifest(write_manifest(tmp_path / "itself.yaml", raw))


def test_what_a_distill_curriculum_cannot_do_is_refused_at_plan_time(tmp_path):
    """Its row says it draws prompts of on-policy samples: no GRPO groups to refill, and a scored strategy needs a reward."""
    raw = yaml.safe_load(manifest(tmp_path).read_text())
    raw["stages"][2]["curriculum"]["dynamic_sampling"] = True
    with pytest.raises(ManifestError, match=r"^stage 'distill': field 'curriculum': dynamic_sampling replaces GRPO groups; distill stages have none$"):
        load_manifest(write_manifest(tmp_path / "dynamic.yaml", raw))
    raw["stages"][2]["curriculum"].pop("dynamic_sampling")
    raw["stages"][2]["rewards"] = []
    with pytest.raises(ManifestError, match=r"^stage 'distill': field 'rewards': strategy 'lp' reads the model's pass rate"):
        load_manifest(write_manifest(tmp_path / "unscored.yaml", raw))
    raw["stages"][2]["curriculum"] = {"strategy": "uniform"}
    load_manifest(write_manifest(tmp_path / "uniform.yaml", raw))  # a scoreless strategy needs no reward
