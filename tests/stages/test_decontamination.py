"""Decontamination of training stages against the manifest's eval sets, from manifest to loaded data.

Each test plans a real manifest (load_manifest + make_plan) and loads the training stage's data as the
stage process does (`stages.common.load_training_data` on the resolved stage file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import data_recipes
from pipeline.manifest import ManifestError, load_manifest
from pipeline.plan import make_plan
from stages.common import load_training_data
from tests.conftest import tiny_manifest, write_manifest

SYSTEM_PROMPT = (
    "You are a careful mathematics tutor. Read the problem below, think it through step by step, "
    "check every calculation twice, and give the final answer in a box at the very end."
)
MATH_TEMPLATE_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
# Invented problems in the MATH schema (problem, solution, answer, level), long enough for 13-grams.
EVAL_PROBLEMS = [
    "A train leaves a station at noon and travels at sixty miles per hour toward a city three hundred miles away. At what time does it arrive?",
    "The sum of three consecutive even integers is one hundred and two. What is the largest of the three integers?",
    "A rectangle has a perimeter of forty centimetres and a length that is three times its width. What is its area in square centimetres?",
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def math_eval_file(tmp_path: Path) -> Path:
    rows = [{"problem": problem, "solution": "Worked out. \\boxed{1}", "answer": "1", "level": 1} for problem in EVAL_PROBLEMS]
    return write_jsonl(tmp_path / "eval_math.jsonl", rows)


def synthetic_train_prompts(count: int) -> list[str]:
    """Training problems that share nothing with the synthetic test split (disjoint by construction)."""
    return data_recipes.load("synthetic_arithmetic", {"split": "train", "levels": [1, 2], "num_examples": count})["prompt"]


def synthetic_test_prompts(manifest: dict[str, Any]) -> list[str]:
    return data_recipes.load("synthetic_arithmetic", {key: value for key, value in manifest["stages"][1]["data"].items() if key != "recipe"})["prompt"]


def planned(tmp_path: Path, manifest: dict[str, Any], stage: str = "sft"):
    plan = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))
    return next(planned_stage for planned_stage in plan.stages if planned_stage.name == stage)


def report(stage) -> dict[str, Any]:
    return json.loads((stage.stage_dir / "decontamination.json").read_text())


def test_messages_only_sft_data_is_decontaminated_by_its_user_messages(tmp_path):
    manifest = tiny_manifest(tmp_path / "run")
    copied = synthetic_test_prompts(manifest)[0]
    problems = [*synthetic_train_prompts(40), copied]
    rows = [{"messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": "\\boxed{1}"}]} for problem in problems]
    manifest["stages"][0]["data"] = {"recipe": "jsonl", "path": str(write_jsonl(tmp_path / "chat.jsonl", rows))}
    stage = planned(tmp_path, manifest)
    dataset = load_training_data(stage.resolved)
    assert [row["messages"][0]["content"] for row in dataset] == problems[:-1]
    assert report(stage)["overlapping_rows"] == 1 and report(stage)["compared"]["train"] == "messages"


def test_a_shared_system_prompt_flags_nothing_and_a_copied_problem_is_still_found(tmp_path):
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"][1]["data"] = {"recipe": "math500", "path": str(math_eval_file(tmp_path)), "chat": True, "system_prompt": SYSTEM_PROMPT}
    problems = [*synthetic_train_prompts(30), EVAL_PROBLEMS[1]]
    rows = [{"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": problem}],
             "completion": [{"role": "assistant", "content": "\\boxed{1}"}]} for problem in problems]
    manifest["stages"][0]["data"] = {"recipe": "jsonl", "path": str(write_jsonl(tmp_path / "train.jsonl", rows))}
    stage = planned(tmp_path, manifest)
    dataset = load_training_data(stage.resolved)
    assert [row["prompt"][1]["content"] for row in dataset] == problems[:-1]


def test_a_template_both_sides_share_flags_nothing_and_a_copied_problem_is_still_found(tmp_path):
    """Templated prompts without a problem column on both sides: MATH's default template is 12 words, so
    any two problems ending in the same word used to share a 13-gram."""
    train_problems = [f"Compute {a} plus {b}." for a in range(5) for b in range(6)]
    eval_problems = [f"Compute {a} times {b}." for a in range(5, 9) for b in range(6)]
    templated = [{"prompt": problem + MATH_TEMPLATE_SUFFIX, "completion": " \\boxed{1}", "answer": "1"}
                 for problem in [*train_problems, eval_problems[7]]]
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"][0]["data"] = {"recipe": "jsonl", "path": str(write_jsonl(tmp_path / "train.jsonl", templated))}
    eval_rows = [{"prompt": problem + MATH_TEMPLATE_SUFFIX, "answer": "1"} for problem in eval_problems]
    manifest["stages"][1]["data"] = {"recipe": "jsonl", "path": str(write_jsonl(tmp_path / "eval.jsonl", eval_rows))}
    stage = planned(tmp_path, manifest)
    dataset = load_training_data(stage.resolved)
    assert dataset["prompt"] == [row["prompt"] for row in templated[:-1]]


def test_a_removal_above_the_stated_share_is_refused_unless_the_manifest_allows_it(tmp_path):
    manifest = tiny_manifest(tmp_path / "run")
    copies = synthetic_test_prompts(manifest)[:3]
    rows = [{"prompt": problem, "completion": " \\boxed{1}"} for problem in [*synthetic_train_prompts(7), *copies]]
    manifest["stages"][0]["data"] = {"recipe": "jsonl", "path": str(write_jsonl(tmp_path / "train.jsonl", rows))}
    with pytest.raises(RuntimeError, match=r"would remove 3 of 10 training rows \(30\.0%\).*max_removed_fraction 0\.05"):
        load_training_data(planned(tmp_path, manifest).resolved)
    manifest["decontamination"] = {"max_removed_fraction": 0.5}
    assert len(load_training_data(planned(tmp_path, manifest).resolved)) == 7
    manifest["decontamination"] = {"remove": False}
    assert len(load_training_data(planned(tmp_path, manifest).resolved)) == 10


def test_editing_how_an_eval_set_is_shown_reruns_no_training_stage(tmp_path):
    """The check reads an eval set's problems, not its template, system prompt or chat rendering."""
    manifest = tiny_manifest(tmp_path / "run")
    eval_data = {"recipe": "math500", "path": str(math_eval_file(tmp_path))}
    manifest["stages"][1]["data"] = eval_data
    before = planned(tmp_path, manifest).fingerprint
    manifest["stages"][1]["data"] = {**eval_data, "template": "Problem: {problem}\nAnswer:", "system_prompt": SYSTEM_PROMPT, "chat": True}
    assert planned(tmp_path, manifest).fingerprint == before
    manifest["stages"][1]["data"] = {**eval_data, "limit": 2}
    assert planned(tmp_path, manifest).fingerprint != before


def labelled_eval_manifest(tmp_path: Path, sft_first: bool) -> dict[str, Any]:
    """A prm_label stage whose dataset an eval stage reads, and an SFT stage before or after it."""
    manifest = tiny_manifest(tmp_path / "run")
    sft = manifest["stages"][0]
    labels = {"name": "labels", "kind": "prm_label", "model": "sft" if sft_first else "base",
              "data": {"recipe": "synthetic_arithmetic", "split": "test", "levels": [1], "per_level": 4}, "args": {"max_problems": 4}}
    evaluation = {**manifest["stages"][1], "name": "eval_labels", "model": "sft", "data": {"recipe": "stage_output", "stage": "labels"}}
    manifest["stages"] = [sft, labels, evaluation] if sft_first else [labels, sft, evaluation]
    return manifest


def test_a_training_stage_before_the_producer_of_an_eval_set_is_refused_at_plan_time(tmp_path):
    manifest = labelled_eval_manifest(tmp_path, sft_first=True)
    with pytest.raises(ManifestError, match=r"^stage 'sft': decontamination: eval stage 'eval_labels' reads the dataset of stage 'labels', which runs after it"):
        load_manifest(write_manifest(tmp_path / "m.yaml", manifest))
    manifest["decontamination"] = {"enabled": False}
    load_manifest(write_manifest(tmp_path / "m.yaml", manifest))


def test_an_eval_set_from_a_stage_output_is_in_the_fingerprint_of_the_training_stages_it_decontaminates(tmp_path):
    manifest = labelled_eval_manifest(tmp_path, sft_first=False)
    sft = planned(tmp_path, manifest)
    assert [block.recipe for block in sft.resolved.decontaminate.against] == ["stage_output"]
    manifest["stages"][0]["args"]["max_problems"] = 3
    assert planned(tmp_path, manifest).fingerprint != sft.fingerprint
