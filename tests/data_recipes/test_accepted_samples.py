"""`accepted_samples` keeps exactly the completions its options accept, from a difficulty stage's dataset
or an eval stage's predictions, and a manifest can only point it at a stage that writes scored samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import data_recipes
from data_recipes.accepted_samples import AcceptedSamplesOptions, accepted
from pipeline.manifest import ManifestError, load_manifest
from pipeline.plan import make_plan
from tests.conftest import tiny_manifest, write_manifest

COMPLETIONS = ["a", "b", "a", "c", "d"]
SCORES = [1.0, 0.0, 1.0, None, 0.7]


def options(**values: object) -> AcceptedSamplesOptions:
    return AcceptedSamplesOptions(stage="sample", **values)


def test_all_keeps_every_accepted_completion_once_in_sample_order():
    assert accepted(COMPLETIONS, SCORES, options()) == [("a", 1.0), ("d", 0.7)]
    assert accepted(COMPLETIONS, SCORES, options(distinct=False)) == [("a", 1.0), ("a", 1.0), ("d", 0.7)]
    assert accepted(COMPLETIONS, SCORES, options(min_score=0.0)) == [("a", 1.0), ("b", 0.0), ("d", 0.7)]  # None is never accepted
    assert accepted(COMPLETIONS, SCORES, options(min_score=0.0, max_per_prompt=2)) == [("a", 1.0), ("b", 0.0)]
    assert accepted(COMPLETIONS, SCORES, options(min_score=2.0)) == []


def test_best_keeps_the_highest_scores_earliest_first_on_a_tie():
    assert accepted(["x", "y", "z"], [0.6, 0.9, 0.9], options()) == [("x", 0.6), ("y", 0.9), ("z", 0.9)]
    assert accepted(["x", "y", "z"], [0.6, 0.9, 0.9], options(mode="best", max_per_prompt=2)) == [("y", 0.9), ("z", 0.9)]
    assert accepted(["x", "y", "z"], [0.6, 0.9, 0.9], options(mode="best")) == [("y", 0.9)]


def write_difficulty_output(stage_dir: Path, rows: list[dict]) -> None:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(stage_dir / "dataset"))


def test_rows_from_a_difficulty_dataset_are_exactly_the_accepted_completions(tmp_path):
    rows = [
        {"prompt": "Q: 1 +1\nA:", "answer": "2", "level": 1, "pass_rate": 0.5, "scores": [1.0, 0.0], "samples": [" 1+1=2", " 1+1=3"]},
        {"prompt": "Q: 2 +2\nA:", "answer": "4", "level": 1, "pass_rate": 0.0, "scores": [0.0, 0.0], "samples": [" x", " y"]},
        {"prompt": "Q: 3 +3\nA:", "answer": "6", "level": 2, "pass_rate": 1.0, "scores": [1.0, 1.0], "samples": [" 3+3=6", " 6"]},
    ]
    write_difficulty_output(tmp_path, rows)
    loaded = data_recipes.load("accepted_samples", {"stage": "sample", "path": str(tmp_path), "min_score": 1.0})
    assert [(row["prompt"], row["completion"], row["level"]) for row in loaded] == [
        ("Q: 1 +1\nA:", " 1+1=2", 1), ("Q: 3 +3\nA:", " 3+3=6", 2), ("Q: 3 +3\nA:", " 6", 2)]
    assert set(loaded.column_names) == set(data_recipes.columns("accepted_samples", {"stage": "sample"}))
    with pytest.raises(data_recipes.RecipeError, match="no completion of stage 'sample' scores at least min_score 2"):
        data_recipes.load("accepted_samples", {"stage": "sample", "path": str(tmp_path), "min_score": 2.0})


def test_eval_predictions_with_chat_prompts_become_assistant_turns(tmp_path):
    prompt = [{"role": "user", "content": "1 + 1?"}]
    item = {"prompt": prompt, "answer": "2", "completions": ["\\boxed{3}", "\\boxed{2}"], "scores": [0.0, 1.0], "level": 1, "source": None}
    (tmp_path / "predictions.jsonl").write_text(json.dumps(item) + "\n")
    loaded = data_recipes.load("accepted_samples", {"stage": "eval", "path": str(tmp_path), "mode": "best"})
    assert loaded.to_list() == [{"prompt": prompt, "completion": [{"role": "assistant", "content": "\\boxed{2}"}],
                                 "score": 1.0, "answer": "2", "level": 1}]


def sampling_manifest(tmp_path: Path, sampler: str) -> dict:
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"] += [
        {"name": "sample", "kind": "difficulty", "model": "sft", "rewards": [{"name": "math_accuracy"}],
         "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 20}},
        {"name": "round1", "kind": "sft", "model": "sft", "data": {"recipe": "accepted_samples", "stage": sampler, "max_per_prompt": 2},
         "args": {"max_steps": 2}},
    ]
    return manifest


def test_a_round_reads_its_samplers_directory_and_changes_with_it(tmp_path):
    plan = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", sampling_manifest(tmp_path, "sample"))))
    round1 = plan.stages[-1]
    assert round1.depends_on == ["sft", "sample"]
    assert round1.resolved.data.options["path"] == str((tmp_path / "run" / "sample").resolve())
    manifest = sampling_manifest(tmp_path, "sample")
    manifest["stages"][2]["args"] = {"num_samples": 4}
    changed = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))
    assert changed.stages[-1].fingerprint != round1.fingerprint


@pytest.mark.parametrize(("sampler", "expected"), [
    ("sft", "field 'data': stage 'sft' is a sft stage and writes no scored samples"),
    ("sampel", "field 'data': no earlier stage named 'sampel' (did you mean 'sample'?); stages with scored samples"),
])
def test_a_round_must_read_an_earlier_sampling_stage(tmp_path, sampler, expected):
    with pytest.raises(ManifestError) as caught:
        load_manifest(write_manifest(tmp_path / "m.yaml", sampling_manifest(tmp_path, sampler)))
    assert str(caught.value).startswith("stage 'round1': ") and expected in str(caught.value)
