"""The PRM data recipes on the real sample rows in shared/data (schemas in shared/data/README.md).

Each check counts or reads the raw JSON independently of the loader, so a loader that drifts fails.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest

import data_recipes
from data_recipes.prm_formats import COMMON_COLUMNS, math_shepherd_row, prm800k_rows, prmbench_rows


def raw_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_step_rows(rows, recipe: str) -> None:
    """What every step-format row must satisfy."""
    for row in rows:
        assert isinstance(row["prompt"], str) and row["prompt"]
        assert len(row["steps"]) == len(row["labels"]) == len(row["hard_labels"]) >= 1
        assert all(isinstance(step, str) for step in row["steps"])
        assert all(0.0 <= label <= 1.0 for label in row["labels"])
        assert row["hard_labels"] == [label >= 0.5 for label in row["labels"]]
        assert row["first_error"] == next((i for i, right in enumerate(row["hard_labels"]) if not right), -1)
        assert row["source"] == recipe


# --- PRM800K -------------------------------------------------------------------------------------


def test_prm800k_trajectories_alternatives_and_ratings(shared_data):
    path = shared_data / "prm800k_samples" / "samples_prm800k.jsonl"
    raws = raw_rows(path)
    dataset = data_recipes.load("prm800k", {"path": str(path)})
    assert set(dataset.column_names) == set(data_recipes.columns("prm800k", {"path": str(path)}))
    rows = list(dataset)
    check_step_rows(rows, "prm800k")

    # One trajectory per raw row; one alternative row per rated, non-chosen completion up to where it ends.
    expected_alternatives = 0
    for raw in raws:
        for step in raw["label"]["steps"]:
            completions = step["completions"] or []
            expected_alternatives += sum(1 for i, c in enumerate(completions) if i != step["chosen_completion"] and c["rating"] is not None)
            if step["chosen_completion"] is None and step["human_completion"] is None:
                break
    assert sum(not row["alternative"] for row in rows) == len(raws) == 6
    assert sum(row["alternative"] for row in rows) == expected_alternatives == 31

    # Ratings: +1 -> 1.0, -1 -> 0.0, neutral 0 -> 1.0 by default (not an error); human-written steps 1.0.
    assert {label for row in rows for label in row["labels"]} == {0.0, 1.0}
    pencils = [row for row in rows if row["problem"].startswith("Three pencils")]
    trajectory = next(row for row in pencils if not row["alternative"])
    assert trajectory["steps"][1] == "We have $3p+e=1.24$ and $5p+e=1.82$."  # the labeller's own step
    assert trajectory["labels"] == [1.0] * 6 and trajectory["answer"] == "29" and trajectory["phase"] == 1
    wrong_second_steps = [row for row in pencils if row["alternative"] and len(row["steps"]) == 2]
    assert len(wrong_second_steps) == 5 and all(row["labels"] == [1.0, 0.0] and row["first_error"] == 1 for row in wrong_second_steps)
    # The phase-2 row whose labeller found an error: the trajectory stops before it, the error is an alternative.
    senate = [row for row in rows if row["problem"].startswith("A Senate committee")]
    assert {row["finish_reason"] for row in senate} == {"found_error"} and {row["phase"] for row in senate} == {2}
    assert next(row for row in senate if not row["alternative"])["labels"] == [1.0] * 6
    assert sorted(row["labels"][-1] for row in senate if row["alternative"]) == [0.0, 1.0, 1.0, 1.0]

    neutral_as_half = data_recipes.load("prm800k", {"path": str(path), "neutral_label": 0.5})
    neutral_count = sum(1 for raw in raws for step in raw["label"]["steps"] for c in (step["completions"] or [])
                        if c["rating"] == 0)
    assert neutral_count > 0
    assert 0.5 in {label for row in neutral_as_half for label in row["labels"]}
    only_trajectories = data_recipes.load("prm800k", {"path": str(path), "alternatives": False})
    assert len(only_trajectories) == 6 and not any(only_trajectories["alternative"])


def test_prm800k_give_up_row_ends_at_the_step_with_no_completion():
    raw = {"question": {"problem": "p", "ground_truth_answer": "1"}, "generation": None,
           "label": {"finish_reason": "give_up", "steps": [
               {"completions": [{"text": "a", "rating": 1, "flagged": False}], "human_completion": None, "chosen_completion": 0},
               {"completions": [{"text": "b", "rating": -1, "flagged": False}], "human_completion": {"text": "h", "rating": None},
                "chosen_completion": None},
               {"completions": None, "human_completion": None, "chosen_completion": None},
               {"completions": [{"text": "never", "rating": 1, "flagged": False}], "human_completion": None, "chosen_completion": 0},
           ]}}
    rows = prm800k_rows(raw)
    assert [(row["steps"], row["labels"], row["alternative"]) for row in rows] == [
        (["a", "b"], [1.0, 0.0], True), (["a", "h"], [1.0, 1.0], False)]


# --- Math-Shepherd -------------------------------------------------------------------------------


def test_math_shepherd_steps_and_labels_follow_the_tags(shared_data):
    path = shared_data / "math_shepherd_samples" / "samples_math-shepherd.jsonl"
    raws = raw_rows(path)
    rows = list(data_recipes.load("math_shepherd", {"path": str(path)}))
    check_step_rows(rows, "math_shepherd")
    assert len(rows) == len(raws) == 7
    for raw, row in zip(raws, rows):
        signs = re.findall(r" ([+-])(?=\n|$)", raw["label"])  # each tag became " +" or " -" at a line end
        assert len(row["steps"]) == raw["input"].count("ки") == len(signs)
        assert row["labels"] == [1.0 if sign == "+" else 0.0 for sign in signs]
        assert [step.split(":")[0] for step in row["steps"]] == [f"Step {i}" for i in range(1, len(signs) + 1)]
        assert not any("ки" in step or step != step.strip() for step in row["steps"])
        assert raw["input"].startswith(row["prompt"]) and row["prompt"].endswith("?") and "Step 1" not in row["prompt"]
        assert row["task"] == "GSM8K"
    assert rows[0]["labels"] == [1.0, 1.0, 1.0, 1.0, 0.0] and rows[0]["steps"][-1].endswith("The answer is: 13520")
    assert sum(label == 0.0 for row in rows for label in row["labels"]) == 20


def test_math_shepherd_tag_inside_the_problem_is_dropped_and_a_mismatched_label_is_an_error():
    raw = {"input": "Mr. Rocky has 3 apples ки and 2 pears. How many? Step 1: 3+2=5 ки\nStep 2: The answer is: 5 ки",
           "label": "Mr. Rocky has 3 apples + and 2 pears. How many? Step 1: 3+2=5 +\nStep 2: The answer is: 5 -", "task": "GSM8K"}
    row = math_shepherd_row(raw)
    assert row["problem"] == "Mr. Rocky has 3 apples  and 2 pears. How many?"
    assert row["steps"] == ["Step 1: 3+2=5", "Step 2: The answer is: 5"] and row["labels"] == [1.0, 0.0]
    with pytest.raises(ValueError, match="does not match"):
        math_shepherd_row({**raw, "label": raw["label"].replace("pears", "plums")})


# --- OmegaPRM / MATH-APS -------------------------------------------------------------------------


def test_math_aps_flat_prefixes_become_root_to_leaf_paths_with_mc_labels(shared_data):
    path = shared_data / "math_aps_samples" / "samples_math-aps.jsonl"
    raws = raw_rows(path)
    rows = list(data_recipes.load("math_aps", {"path": str(path)}))
    check_step_rows(rows, "math_aps")
    expected_rows = 0
    for raw in raws:
        prefixes = {entry["solution_prefix"] for entry in raw["reasoning_steps"]}
        expected_rows += sum(1 for p in prefixes if not any(q != p and q.startswith(p) for q in prefixes))  # leaves
    assert len(rows) == expected_rows == 124
    for raw in raws:
        values = collections.defaultdict(list)
        for entry in raw["reasoning_steps"]:
            values[entry["solution_prefix"]].append(entry["mc_value"])
        question_rows = [row for row in rows if row["problem"] == raw["question"]]
        assert question_rows and all(row["answer"] == raw["final_answer"] for row in question_rows)
        assert question_rows[0]["root_value"] == pytest.approx(sum(values[raw["question"]]) / len(values[raw["question"]]))
        for row in question_rows:
            # Walking the path, each label is the (mean) MC value of a prefix that contains the steps so far.
            prefix_end = len(raw["question"])
            for step, label in zip(row["steps"], row["labels"]):
                candidates = [p for p in values if len(p) > prefix_end and step in p[prefix_end:] and p.startswith(raw["question"])]
                assert any(sum(values[p]) / len(values[p]) == pytest.approx(label) for p in candidates)
    soft = [label for row in rows for label in row["labels"] if 0 < label < 1]
    assert soft, "MC values are soft labels"


def test_math_aps_tree_rows_are_the_paths_of_the_tree(shared_data):
    path = shared_data / "math_aps_samples" / "samples_math-aps-tree.jsonl"
    raws = raw_rows(path)
    rows = list(data_recipes.load("math_aps", {"path": str(path)}))
    check_step_rows(rows, "math_aps")

    def leaves(node):
        return 1 if not node["children"] else sum(leaves(child) for child in node["children"])

    def depth_labels(node, path=()):
        if not node["children"]:
            yield path
        for child in node["children"]:
            yield from depth_labels(child, (*path, child["mc_value"]))

    assert len(rows) == sum(leaves(raw["reasoning_steps"]) for raw in raws) == 242
    expected = [list(labels) for raw in raws for labels in depth_labels(raw["reasoning_steps"])]
    assert [row["labels"] for row in rows] == expected
    assert [row["root_value"] for row in rows][:1] == [raws[0]["reasoning_steps"]["mc_value"]]
    assert max(len(row["steps"]) for row in rows) >= 2


# --- PRMBench ------------------------------------------------------------------------------------


def test_prmbench_error_steps_become_step_labels_and_originals_are_added_once(shared_data):
    directory = shared_data / "prmbench"
    one_file = directory / "prm800k_test_p1_4o_missing_condition.jsonl"
    raws = raw_rows(one_file)
    rows = list(data_recipes.load("prmbench", {"path": str(one_file)}))
    check_step_rows(rows, "prmbench")
    modified = [row for row in rows if not row["original"]]
    originals = [row for row in rows if row["original"]]
    out_of_range = sum(1 for raw in raws
                       if raw["error_steps"] and not any(1 <= i <= len(raw["modified_process"]) for i in raw["error_steps"]))
    assert len(modified) == len(raws) - out_of_range and out_of_range == 2
    assert len(originals) == len({raw["idx"] for raw in raws}) == 90
    by_idx = {raw["idx"]: raw for raw in raws}
    for row in modified:
        raw = by_idx[row["idx"]]
        assert row["classification"] == "missing_condition" and row["steps"] == raw["modified_process"]
        assert row["prompt"] == raw["modified_question"]
        wrong = [i + 1 for i, right in enumerate(row["hard_labels"]) if not right]
        assert wrong == row["error_steps"] == sorted(i for i in raw["error_steps"] if 1 <= i <= len(raw["modified_process"]))
        assert row["first_error"] == min(row["error_steps"]) - 1
    assert all(all(row["hard_labels"]) and row["classification"] == "correct" and row["error_steps"] == [] for row in originals)

    everything = data_recipes.load("prmbench", {"path": str(directory)})
    classes = collections.Counter(everything["classification"])
    assert set(classes) == {"circular", "confidence", "counterfactual", "deception", "domain_inconsistency",
                            "missing_condition", "redundency", "step_contradiction", "correct", "multi_solutions"}
    assert classes["multi_solutions"] == 10 and classes["correct"] == 407
    no_originals = data_recipes.load("prmbench", {"path": str(directory), "include_original": False, "classes": ["circular"]})
    assert set(no_originals["classification"]) == {"circular"}


def test_prmbench_originals_come_from_the_redundency_row_and_repeats_are_dropped():
    def record(classification, original_steps, error_steps=(2,)):
        return {"original_question": "q", "modified_question": "q", "original_process": original_steps,
                "modified_process": ["a", "b", "c"], "modified_steps": list(error_steps), "error_steps": list(error_steps),
                "reason": "", "idx": "x", "question": "q", "classification": classification}

    records = [record("circular", ["1. a", "2. b"]), record("redundency", ["a", "b"]), record("redundency", ["a", "b"]),
               record("deception", ["a", "b"], error_steps=(7,))]
    rows, dropped = prmbench_rows(records)
    assert [(row["classification"], row["labels"]) for row in rows] == [
        ("circular", [1.0, 0.0, 1.0]), ("redundency", [1.0, 0.0, 1.0]), ("correct", [1.0, 1.0])]
    assert rows[-1]["steps"] == ["a", "b"]
    assert dropped == {"out_of_range_indices": 1, "rows_without_valid_error": 1, "repeated_rows": 1}
    stripped, _ = prmbench_rows([record("circular", ["1. a", "2. b"])], strip_numbers=True)
    assert stripped[-1]["steps"] == ["a", "b"]


def test_recipes_render_the_template_and_report_their_columns(shared_data):
    path = str(shared_data / "math_shepherd_samples" / "samples_math-shepherd.jsonl")
    rows = data_recipes.load("math_shepherd", {"path": path, "template": "Q: {problem}\nA:", "limit": 2})
    assert len(rows) == 2 and rows[0]["prompt"] == f"Q: {rows[0]['problem']}\nA:"
    for name in ("prm800k", "math_shepherd", "math_aps", "prmbench"):
        assert set(COMMON_COLUMNS) <= set(data_recipes.columns(name, {"path": path}))
    with pytest.raises(data_recipes.RecipeError, match="does not exist"):
        data_recipes.columns("prm800k", {"path": "/nonexistent.jsonl"})
    with pytest.raises(data_recipes.RecipeError, match="has no option 'neutral'"):
        data_recipes.columns("prm800k", {"path": path, "neutral": 0.5})
