"""Synthetic arithmetic chains: the embedded default task, with a difficulty level per problem.

A problem is a start number and `level` operations applied left to right (`+1..9`, `-1..9`,
`*2..9`), drawn so every intermediate value stays in 0..99:

    prompt:      "Q: 17 -2 +2 +8\\nA:"
    completion:  " 17-2=15\\n15+2=17\\n17+8=25\\n\\boxed{25}"

With `wording: question` the same problem is asked as an instruct model expects a question, with
parentheses where left-to-right order differs from the usual precedence (the split is the same):

    prompt:      "What is 17 - 2 + 2 + 8? Put the final answer in \\boxed{}."
    completion:  "17 - 2 = 15\n15 + 2 = 17\n17 + 8 = 25\n\\boxed{25}"

SmolLM2-135M-Instruct answers 0.19 of level 1 so worded, and few of level 2 and 3 (BENCHMARKS.md).

Every line of the worked solution is one checkable step (`step_errors` finds the wrong ones, which
is what the PRM work needs), and the final answer sits in `\\boxed{}` so math-verify can score it.
A 1 M-parameter model learns levels 1-6 from scratch in a few hundred SFT steps on 2 CPU cores
(see shared/research/learnability.md); it does not extrapolate to levels it never saw.

Train and test never share a problem: a problem belongs to the test split when a hash of its
prompt falls in the held-out bucket, whatever the seed or size asked for.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from data_recipes import Recipe

if TYPE_CHECKING:
    import datasets

TEST_BUCKET_PERCENT = 10
STEP_PATTERN = re.compile(r"^\s*(\d+)([+\-*])(\d+)=(-?\d+)\s*$")


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["train", "test"] = "train"
    levels: list[int] = Field(default=[1, 2, 3, 4, 5, 6], min_length=1)
    level_weights: list[float] | None = None
    num_examples: int | None = Field(None, gt=0, description="total rows, levels drawn by level_weights")
    per_level: int | None = Field(None, gt=0, description="exactly this many rows per level")
    format: Literal["prompt_completion", "conversational", "conversational_prompt_completion"] = "prompt_completion"
    """TRL's dataset formats: plain prompt + completion; chat `messages` (with the user turn as `prompt`, to
    generate from); or a chat `prompt` with the assistant's turn as `completion`, which SFT trains on alone
    whatever the chat template (`messages` needs `{% generation %}` markers for assistant-only loss)."""
    # Left out of the data's identity at its default, so runs made before the option existed keep their fingerprints.
    wording: Literal["symbols", "question"] = Field("symbols", exclude_if=lambda wording: wording == "symbols")
    seed: int = 0

    @model_validator(mode="after")
    def _one_size(self) -> "SyntheticOptions":
        if (self.num_examples is None) == (self.per_level is None):
            raise ValueError("give exactly one of num_examples or per_level")
        if any(level < 1 for level in self.levels):
            raise ValueError("levels start at 1")
        if self.level_weights is not None and len(self.level_weights) != len(self.levels):
            raise ValueError("level_weights needs one weight per level")
        return self


def make_problem(rng: random.Random, level: int) -> tuple[int, list[tuple[str, int]]]:
    """A start value and `level` (operator, operand) pairs that keep every value in 0..99."""
    value = start = rng.randint(0, 99)
    operations = []
    for _ in range(level):
        choices = [("+", n) for n in range(1, 10) if value + n <= 99]
        choices += [("-", n) for n in range(1, 10) if value - n >= 0]
        choices += [("*", n) for n in range(2, 10) if value * n <= 99]
        operator, operand = rng.choice(choices)
        value = apply(value, operator, operand)
        operations.append((operator, operand))
    return start, operations


def apply(value: int, operator: str, operand: int) -> int:
    return {"+": value + operand, "-": value - operand, "*": value * operand}[operator]


def as_question(start: int, operations: list[tuple[str, int]]) -> tuple[str, str]:
    """The problem as an instruct model is asked it, and its worked solution written the same way.

    The operations apply left to right, so a product after a sum or difference brackets what came before:
    17 + 2 * 3 is asked as (17 + 2) * 3.
    """
    expression, steps, value = str(start), [], start
    for index, (operator, operand) in enumerate(operations):
        bracket = operator == "*" and index > 0 and operations[index - 1][0] != "*"
        expression = f"({expression})" if bracket else expression
        expression += f" {operator} {operand}"
        result = apply(value, operator, operand)
        steps.append(f"{value} {operator} {operand} = {result}")
        value = result
    return f"What is {expression}? Put the final answer in \\boxed{{}}.", "\n".join(steps) + f"\n\\boxed{{{value}}}"


def render(start: int, operations: list[tuple[str, int]]) -> dict[str, Any]:
    """Prompt, worked solution (one step a line), gold answer and steps of one problem."""
    prompt = "Q: " + " ".join([str(start)] + [f"{op}{n}" for op, n in operations]) + "\nA:"
    steps, value = [], start
    for operator, operand in operations:
        result = apply(value, operator, operand)
        steps.append(f"{value}{operator}{operand}={result}")
        value = result
    completion = " " + "\n".join(steps) + f"\n\\boxed{{{value}}}"
    return {"prompt": prompt, "completion": completion, "answer": str(value), "level": len(operations), "steps": steps}


def is_test_problem(prompt: str) -> bool:
    bucket = int(hashlib.sha1(prompt.encode()).hexdigest(), 16) % 100
    return bucket < TEST_BUCKET_PERCENT


def step_errors(prompt: str, completion: str) -> list[bool]:
    """For each line of a completion before the boxed answer: is this step wrong?

    A step is right when its arithmetic is correct and it continues from the previous result
    (the first from the prompt's start value) with the prompt's next operation. This is the
    ground truth that automatic PRM labels are measured against.
    """
    numbers = prompt.removeprefix("Q: ").removesuffix("\nA:").split()
    expected_value = int(numbers[0])
    wrong = []
    lines = [line for line in completion.strip().split("\n") if line and not line.startswith("\\boxed")]
    for index, line in enumerate(lines):
        match = STEP_PATTERN.match(line)
        expected_op = numbers[index + 1] if index + 1 < len(numbers) else None
        if not match or expected_op is None:
            wrong.append(True)
            continue
        left, operator, operand, result = int(match[1]), match[2], int(match[3]), int(match[4])
        right = (
            left == expected_value
            and f"{operator}{operand}" == expected_op
            and apply(left, operator, operand) == result
        )
        wrong.append(not right)
        expected_value = result
    return wrong


def step_goodness(prompt: str, steps: list[str], answer: str) -> list[bool]:
    """Per step of a solution: is every step up to and including it right?

    The final `\\boxed{}` step is good when, besides, it holds the gold answer; any other line that starts
    with `\\boxed` is wrong. This is exactly what a Monte-Carlo step label estimates ("can this prefix still
    reach the answer?"), so it is the truth that automatic labels and trained PRMs are measured against.
    """
    good, clean, checked = [], True, []
    for step in steps:
        text = step.strip()
        if text.startswith("\\boxed"):
            clean = clean and text == f"\\boxed{{{answer}}}"
        else:
            checked.append(text)
            clean = clean and not step_errors(prompt, "\n".join(checked))[-1]
        good.append(clean)
    return good


def generate(options: SyntheticOptions) -> list[dict[str, Any]]:
    """Deterministic rows for the options: same options, same rows, on every machine."""
    rng = random.Random(f"synthetic-arithmetic/{options.seed}/{options.split}")
    want_test = options.split == "test"
    if options.per_level is not None:
        plan = [level for level in options.levels for _ in range(options.per_level)]
    else:
        plan = rng.choices(options.levels, weights=options.level_weights, k=options.num_examples)
    rows, seen = [], set()
    for level in plan:
        for _attempt in range(10_000):
            problem = make_problem(rng, level)
            row = render(*problem)
            # The split is decided on the compact prompt, so both wordings split the same problems alike.
            if is_test_problem(row["prompt"]) != want_test:
                continue
            # The test split is small and scored per problem, so it holds no duplicates.
            if want_test and row["prompt"] in seen:
                continue
            seen.add(row["prompt"])
            if options.wording == "question":
                row["prompt"], row["completion"] = as_question(*problem)
            rows.append(row)
            break
        else:
            raise ValueError(f"level {level}: not enough distinct {options.split} problems for the size asked")
    if options.format == "conversational":
        for row in rows:
            row["messages"] = [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row.pop("completion")},
            ]
            row["prompt"] = row["messages"][:1]
    elif options.format == "conversational_prompt_completion":
        for row in rows:
            row["prompt"] = [{"role": "user", "content": row["prompt"]}]
            row["completion"] = [{"role": "assistant", "content": row["completion"]}]
    return rows


def _columns(options: SyntheticOptions) -> list[str]:
    text = ["messages"] if options.format == "conversational" else ["completion"]
    return ["prompt", *text, "answer", "level", "steps"]


def _chat_columns(options: SyntheticOptions) -> set[str]:
    return {"prompt_completion": set(), "conversational": {"prompt", "messages"}, "conversational_prompt_completion": {"prompt", "completion"}}[options.format]


def _identity(options: SyntheticOptions) -> dict[str, Any]:
    return {"generator": "synthetic_arithmetic/v1"}


def _load(options: SyntheticOptions) -> "datasets.Dataset":
    import datasets

    return datasets.Dataset.from_list(generate(options))


RECIPE = Recipe("synthetic_arithmetic", SyntheticOptions, _columns, _identity, _load, _chat_columns)
