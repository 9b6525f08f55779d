"""The `prm_label` stage's labelling logic against the truth of the synthetic task, no model involved.

Two scripted stand-ins for the policy: a rollout oracle whose outcomes follow the true first wrong step
(the labellers alone), and a text policy that writes and continues synthetic solutions with planted
errors (splitting, `math_accuracy` scoring and the rollouts as the stage runs them). The truth is
`data_recipes.synthetic.step_goodness`: a step is good when no step up to it is wrong, and the boxed step
when, besides, its answer is the gold one.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest

from data_recipes.synthetic import SyntheticOptions, apply, generate, step_goodness
from stages.arguments import PRMLabelArgs
from stages.prm_label import (
    PrefixRollouts,
    Solution,
    balance_rows,
    label_binary_search,
    label_mc,
    label_problems,
    split_steps,
)

K = 4


def planted_solution(row: dict, wrong_step: int | None) -> list[str]:
    """The row's worked solution as steps, with the result of `wrong_step` off by one (carried on after)."""
    steps, value = [], int(row["prompt"].removeprefix("Q: ").split()[0])
    for index, operation in enumerate(row["prompt"].removeprefix("Q: ").removesuffix("\nA:").split()[1:]):
        result = apply(value, operation[0], int(operation[1:])) + (1 if index == wrong_step else 0)
        steps.append(f"{value}{operation}={result}")
        value = result
    return steps + [f"\\boxed{{{value}}}"]


class FirstErrorOracle:
    """Rollouts whose outcomes follow the truth: from a good prefix, some (a varying number, at least
    one) of the k rollouts reach the answer; from a bad one none does."""

    def __init__(self, goodness: list[list[bool]]) -> None:
        self.goodness = goodness
        self.calls = 0

    def fraction(self, index: int, length: int) -> float:
        return (1 + (index + length) % K) / K if self.goodness[index][length - 1] else 0.0

    def __call__(self, requests: list[tuple[int, int]]) -> list[list[bool]]:
        self.calls += 1
        return [[trial < round(self.fraction(index, length) * K) for trial in range(K)] for index, length in requests]


def long_solutions(level: int = 9, count: int = 30) -> tuple[list[dict], list[Solution], list[list[bool]]]:
    rows = generate(SyntheticOptions(levels=[level], per_level=count, seed=7))
    rng = random.Random(0)
    solutions, goodness = [], []
    for index, row in enumerate(rows):
        wrong_step = None if index % 5 == 0 else rng.randrange(level)  # one in five right, the others wrong at a random step
        steps = planted_solution(row, wrong_step)
        solutions.append(Solution(steps, float(wrong_step is None), terminal=True))
        goodness.append(step_goodness(row["prompt"], steps, row["answer"]))
    return rows, solutions, goodness


def test_planted_truth_is_what_step_errors_says():
    row = generate(SyntheticOptions(levels=[4], per_level=1, seed=1))[0]
    assert planted_solution(row, None)[:-1] == row["steps"]
    assert step_goodness(row["prompt"], planted_solution(row, None), row["answer"]) == [True] * 5
    assert step_goodness(row["prompt"], planted_solution(row, 2), row["answer"]) == [True, True, False, False, False]


@pytest.mark.parametrize("labeller", [label_mc, label_binary_search])
def test_both_methods_find_the_first_wrong_step_exactly(labeller):
    _, solutions, goodness = long_solutions()
    labelled = labeller(solutions, FirstErrorOracle(goodness))
    for solution, truth, labels in zip(solutions, goodness, labelled):
        assert labels.hard_labels == truth
        assert labels.first_error == truth.index(False) if False in truth else len(truth)
        assert len(labels.labels) == len(labels.measured) == len(solution.steps)
        assert all(0.0 <= value <= 1.0 for value in labels.labels)


def test_mc_soft_labels_are_the_rollout_fractions_and_every_prefix_is_rolled_out():
    _, solutions, goodness = long_solutions()
    oracle = FirstErrorOracle(goodness)
    labelled = label_mc(solutions, oracle)
    assert oracle.calls == 1  # every prefix of every solution in one batch
    for index, (solution, labels) in enumerate(zip(solutions, labelled)):
        steps = len(solution.steps)
        assert labels.rollouts == K * (steps - 1)  # the boxed step is scored, not rolled out
        assert labels.labels[:-1] == [oracle.fraction(index, length) for length in range(1, steps)]
        assert labels.labels[-1] == solution.final_value and all(labels.measured)


def test_binary_search_spends_fewer_rollouts_on_long_solutions_and_records_what_it_measured():
    _, solutions, goodness = long_solutions(level=9)
    oracle = FirstErrorOracle(goodness)
    search, full = label_binary_search(solutions, oracle), label_mc(solutions, FirstErrorOracle(goodness))
    assert oracle.calls <= math.ceil(math.log2(10))  # the searches advance in lockstep: one batch per round
    for index, (solution, searched, labelled) in enumerate(zip(solutions, search, full)):
        if solution.final_value:
            assert searched.rollouts == 0 and searched.labels == [1.0] * 10 and searched.measured == [False] * 9 + [True]
            continue
        assert searched.rollouts <= K * math.ceil(math.log2(10)) < labelled.rollouts
        for step, (value, measured) in enumerate(zip(searched.labels, searched.measured)):
            if measured and step < 9:
                assert value == oracle.fraction(index, step + 1)
            elif not measured:
                assert value == float(searched.hard_labels[step])
    assert sum(s.rollouts for s in search) < 0.5 * sum(s.rollouts for s in full)


def test_binary_search_rolls_out_the_last_prefix_of_a_solution_cut_off_before_its_answer():
    rows, solutions, goodness = long_solutions(level=6, count=10)
    cut = [Solution(solution.steps[:-1], 0.0, terminal=False) for solution in solutions]
    labelled = label_binary_search(cut, FirstErrorOracle([truth[:-1] for truth in goodness]))
    for truth, labels in zip(goodness, labelled):
        assert labels.hard_labels == truth[:-1] and labels.rollouts > 0


class ScriptedPolicy:
    """Writes and continues synthetic solutions, one line a step. A fresh solution has a wrong step (a
    result off by one, carried on) with probability `error_rate`; a continuation of a prefix errs on its
    first step with probability `rollout_error_rate`. Errors only ever add, and every operation is
    increasing, so an error is never undone and the final answer is right exactly when no step is wrong."""

    def __init__(self, error_rate: float, rollout_error_rate: float, seed: int = 0) -> None:
        self.error_rate, self.rollout_error_rate = error_rate, rollout_error_rate
        self.rng = random.Random(seed)
        self.sampled = 0

    def __call__(self, prompts: list[str], n: int) -> list[str]:
        self.sampled += len(prompts) * n
        return [self.continue_text(prompt) for prompt in prompts for _ in range(n)]

    def continue_text(self, text: str) -> str:
        question, _, written = text.partition("\nA:")
        numbers = question.removeprefix("Q: ").split()
        lines = [line.strip() for line in written.split("\n") if line.strip()]
        value = int(lines[-1].split("=")[-1]) if lines else int(numbers[0])
        remaining = numbers[1 + len(lines):]
        if lines:
            wrong = 0 if self.rng.random() < self.rollout_error_rate else None
        else:
            wrong = self.rng.randrange(len(remaining)) if self.rng.random() < self.error_rate else None
        steps = []
        for index, operation in enumerate(remaining):
            result = apply(value, operation[0], int(operation[1:])) + (1 if index == wrong else 0)
            steps.append(f"{value}{operation}={result}")
            value = result
        body = "\n".join(steps + [f"\\boxed{{{value}}}"])
        return body if lines else " " + body


@pytest.fixture(scope="module")
def score():
    import rewards

    reward = rewards.build("math_accuracy", {})
    yield reward
    reward.__wrapped__.close()


@pytest.mark.parametrize("method", ["mc", "binary_search"])
def test_scripted_policy_labels_match_step_errors(method, score):
    rows = generate(SyntheticOptions(levels=[3, 5, 7], per_level=6, seed=11))
    problems = [{"prompt": row["prompt"], "answer": row["answer"], "level": row["level"], "problem_index": index}
                for index, row in enumerate(rows)]
    policy = ScriptedPolicy(error_rate=0.6, rollout_error_rate=0.3)
    args = PRMLabelArgs(method=method, num_solutions=3, rollouts_per_step=6)
    labelled, counts = label_problems(problems, policy, score, args)

    assert len(labelled) == 3 * len(problems)
    assert counts["unscorable_problems"] == counts["empty_solutions"] == 0
    assert 0 < counts["correct_solutions"] < len(labelled)  # both kinds of solution are there
    for row in labelled:
        truth = step_goodness(row["prompt"], row["steps"], row["answer"])
        assert row["hard_labels"] == truth, row
        assert len(row["steps"]) == len(row["labels"]) == len(row["measured"]) == problems[row["problem_index"]]["level"] + 1
        assert row["steps"][0].startswith(" ") and row["steps"][-1].startswith("\\boxed")
        assert [value > 0 for value in row["labels"]] == truth  # soft and hard agree on which steps are good
    spent = sum(row["rollouts"] for row in labelled)
    assert policy.sampled == len(labelled) + spent  # the solutions, then exactly the rollouts counted
    if method == "mc":
        assert all(row["rollouts"] == 6 * (len(row["steps"]) - 1) for row in labelled)
        good = [value for row in labelled for value, hard in zip(row["labels"][:-1], row["hard_labels"]) if hard]
        assert 0.5 < sum(good) / len(good) < 0.9  # about 1 - rollout_error_rate from a good prefix


def test_rollouts_score_prefix_plus_continuation(score):
    rows = generate(SyntheticOptions(levels=[2], per_level=1, seed=3))
    steps = rows[0]["completion"].split("\n")
    seen = []

    def echo(prompts: list[str], n: int) -> list[str]:
        seen.extend(prompts)
        return [steps[-1]] * (len(prompts) * n)  # the right boxed answer, whatever the prefix

    oracle = PrefixRollouts(echo, score, 2, "\n", [rows[0]["prompt"]], [rows[0]["answer"]], [Solution(steps, 1.0, True)])
    assert oracle([(0, 2), (0, 1)]) == [[True, True], [True, True]]
    assert seen == [rows[0]["prompt"] + steps[0] + "\n", rows[0]["prompt"] + steps[0] + "\n" + steps[1] + "\n"]  # shortest first


def test_steps_split_on_the_separator_blank_pieces_dropped_nothing_after_the_answer():
    assert split_steps(" 17-2=15\n15+2=17\n\\boxed{17}") == [" 17-2=15", "15+2=17", "\\boxed{17}"]
    assert split_steps(" 1+1=2\n\n2+1=3\n\\boxed{3}\n3+1=4\n") == [" 1+1=2", "2+1=3", "\\boxed{3}"]
    assert split_steps("a ки b ки c", " ки ") == ["a", "b", "c"]
    assert split_steps("\n \n") == []


def test_balance_drops_single_class_rows_of_the_majority_only():
    def row(*hard: bool) -> dict:
        return {"hard_labels": list(hard)}

    rows = [row(True, True, True)] * 6 + [row(True, False, False), row(False, False), row(True, True, False)]
    kept = balance_rows(rows, seed=0)
    positives = sum(sum(r["hard_labels"]) for r in kept)
    negatives = sum(len(r["hard_labels"]) for r in kept) - positives
    assert abs(positives - negatives) <= 3 and kept[-3:] == rows[-3:]  # mixed and minority rows all kept
    assert balance_rows(rows, seed=0) == kept
    mostly_negative = [row(False, False)] * 5 + [row(True, False)]
    assert balance_rows(mostly_negative, seed=0) == [row(True, False)]  # 1 positive, 1 negative left
    assert balance_rows([row(True, False)], seed=0) == [row(True, False)]
    # Once a drop has flipped the majority, no further row of the old majority goes.
    flip = [row(*[True] * 8), row(True), row(True, False, False, False, False, False)]
    for seed in range(20):
        kept = balance_rows(flip, seed)
        assert kept in ([flip[1], flip[2]], [flip[0], flip[2]])


def test_args_are_checked_and_the_module_imports_no_torch():
    with pytest.raises(ValueError, match="rollouts_per_step"):
        PRMLabelArgs(rollouts_per_step=0)
    with pytest.raises(ValueError, match="temperature"):
        PRMLabelArgs(temperature=0.0)
    probe = "import sys, stages.prm_label; print(sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
