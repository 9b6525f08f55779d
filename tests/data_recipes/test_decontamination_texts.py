"""What the decontamination check reads: each set's problem text, and the identity of an eval set."""

from __future__ import annotations

import json

import datasets

from data_recipes.decontamination import (
    MIN_TEXTS_TO_FIND_A_TEMPLATE,
    contaminated_rows,
    decontamination_identity,
    problem_keys,
    problem_texts,
    strip_shared_affixes,
)


def test_problem_text_is_the_problem_column_else_the_last_user_message_else_the_prompt():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
    assert problem_texts(datasets.Dataset.from_list([{"prompt": "rendered", "problem": "bare"}])) == (["bare"], "problem")
    assert problem_texts(datasets.Dataset.from_list([{"prompt": chat}])) == (["What is 2 + 2?"], "prompt")
    assert problem_texts(datasets.Dataset.from_list([{"prompt": "Q: 1 +1\nA:"}])) == (["Q: 1 +1\nA:"], "prompt")
    replied = [*chat, {"role": "assistant", "content": "4"}]
    assert problem_texts(datasets.Dataset.from_list([{"messages": replied}])) == (["What is 2 + 2?"], "messages")


def test_a_template_is_told_apart_only_among_enough_distinct_texts():
    texts = [f"Solve this problem: {index} + {index}\nAnswer in a box." for index in range(MIN_TEXTS_TO_FIND_A_TEMPLATE)]
    assert strip_shared_affixes(texts) == [f"{index} + {index}" for index in range(MIN_TEXTS_TO_FIND_A_TEMPLATE)]
    assert strip_shared_affixes(texts[:-1]) == texts[:-1]  # too few: words they share may be the problems'


def test_an_exact_copy_is_found_even_when_only_one_side_could_be_stripped():
    """Twenty problems that all begin "What is": stripped in the eval set, not in a varied training set."""
    eval_texts = [f"What is {index} squared?" for index in range(MIN_TEXTS_TO_FIND_A_TEMPLATE)]
    train_texts = [f"Find {index} cubed." for index in range(30)] + [eval_texts[3]]
    overlapping = contaminated_rows(problem_keys(train_texts, 13, "prompt"), problem_keys(eval_texts, 13, "prompt"))
    assert overlapping == [30]


def write_math_file(path):
    path.write_text("".join(json.dumps({"problem": f"Problem {index}", "solution": "\\boxed{1}", "level": 1}) + "\n" for index in range(3)))
    return str(path)


def test_an_eval_set_is_identified_by_its_problems_not_by_how_they_are_shown(tmp_path):
    math = {"path": write_math_file(tmp_path / "a.jsonl")}
    same = decontamination_identity("math500", math, {})
    shown_otherwise = {**math, "template": "Problem: {problem}", "system_prompt": "Be brief.", "chat": True}
    assert decontamination_identity("math500", shown_otherwise, {}) == same
    assert decontamination_identity("math500", {**math, "limit": 2}, {}) != same
    synthetic = {"split": "test", "per_level": 5}
    assert decontamination_identity("synthetic_arithmetic", {**synthetic, "format": "conversational"}, {}) == \
        decontamination_identity("synthetic_arithmetic", synthetic, {})

    def mixture(template: str, other: dict) -> dict:
        return {"num_examples": 4, "components": [{"recipe": "math500", **math, "template": template, "weight": 1}, other]}

    with_problems = {"recipe": "gsm8k", "path": write_math_file(tmp_path / "b.jsonl")}
    assert decontamination_identity("mixture", mixture("{problem}", with_problems), {}) == \
        decontamination_identity("mixture", mixture("Solve: {problem}", with_problems), {})
    # Without a problem column in every component, the mixture's prompts are read: its templates count.
    without_problems = {"recipe": "synthetic_arithmetic", **synthetic}
    assert decontamination_identity("mixture", mixture("{problem}", without_problems), {}) != \
        decontamination_identity("mixture", mixture("Solve: {problem}", without_problems), {})
    assert decontamination_identity("stage_output", {"stage": "labels"}, {"labels": "abc"}) == {"stage": "labels", "fingerprint": "abc"}
