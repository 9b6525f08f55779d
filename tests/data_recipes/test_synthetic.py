"""The synthetic task: deterministic, train and test disjoint, gold solutions correct step by step."""

from __future__ import annotations

import re

import pytest

import data_recipes
from data_recipes.synthetic import SyntheticOptions, apply, generate, step_errors


def test_same_options_same_rows_and_levels_as_asked():
    options = SyntheticOptions(split="test", levels=[1, 3, 6], per_level=30)
    rows = generate(options)
    assert rows == generate(options)
    assert [row["level"] for row in rows] == [1] * 30 + [3] * 30 + [6] * 30
    assert len({row["prompt"] for row in rows}) == 90


def test_train_and_test_never_share_a_problem():
    train = {row["prompt"] for row in generate(SyntheticOptions(levels=[1, 2], num_examples=5000))}
    test = {row["prompt"] for row in generate(SyntheticOptions(split="test", levels=[1, 2], per_level=100))}
    assert train and test and not train & test


def test_gold_solution_is_right_and_its_answer_is_boxed():
    for row in generate(SyntheticOptions(levels=[1, 2, 3, 4, 5, 6], num_examples=300, seed=7)):
        assert step_errors(row["prompt"], row["completion"]) == [False] * row["level"]
        numbers = row["prompt"].removeprefix("Q: ").removesuffix("\nA:").split()
        value = int(numbers[0])
        for token in numbers[1:]:
            value = apply(value, token[0], int(token[1:]))
            assert 0 <= value <= 99
        assert row["completion"].endswith(f"\\boxed{{{value}}}") and row["answer"] == str(value)


def test_step_errors_finds_the_wrong_step():
    prompt = "Q: 17 -2 +2 +8\nA:"
    assert step_errors(prompt, " 17-2=15\n15+2=17\n17+8=25\n\\boxed{25}") == [False, False, False]
    assert step_errors(prompt, " 17-2=15\n15+2=18\n18+8=26\n\\boxed{26}") == [False, True, False]
    assert step_errors(prompt, " 17-2=15\n15*2=30\n30+8=38\n\\boxed{38}") == [False, True, False]
    assert step_errors(prompt, " 17-2=15\nno idea") == [False, True]


def test_conversational_format():
    rows = generate(SyntheticOptions(levels=[2], num_examples=3, format="conversational"))
    assert rows[0]["messages"][0]["role"] == "user" and rows[0]["messages"][1]["role"] == "assistant"
    assert re.search(r"\\boxed\{\d+\}$", rows[0]["messages"][1]["content"])
    assert data_recipes.columns("synthetic_arithmetic", {"num_examples": 3, "format": "conversational"})[:2] == ["prompt", "messages"]


def test_options_are_validated():
    with pytest.raises(data_recipes.RecipeError, match="exactly one of num_examples or per_level"):
        data_recipes.columns("synthetic_arithmetic", {"levels": [1]})
    with pytest.raises(data_recipes.RecipeError, match="did you mean 'synthetic_arithmetic'"):
        data_recipes.columns("synthetic_arithmetc", {})
