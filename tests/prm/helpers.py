"""Shared by the PRM tests: a tokenizer that merges across the separator, and synthetic step data."""

from __future__ import annotations

import random
from typing import Any

from data_recipes.synthetic import SyntheticOptions, generate, step_errors


def merging_tokenizer() -> Any:
    """The byte-level tiny tokenizer plus merges that fuse a step's last character with "\\n" ("}\\n",
    "7\\n") and "17" into one token, so a completion tokenized at once has no separate newline token there."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from stages.models import EOS, PAD, SPECIAL_TOKENS, UNK

    newline = "Ċ"  # byte-level alphabet's "\n"
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("}", newline), ("7", newline), ("1", "7")]
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + alphabet + [left + right for left, right in merges])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def corrupt(row: dict[str, Any], rng: random.Random) -> str:
    """The row's completion with one step's result made wrong and every later step continuing from it."""
    numbers = row["prompt"].removeprefix("Q: ").removesuffix("\nA:").split()
    operations = [(token[0], int(token[1:])) for token in numbers[1:]]
    wrong_at = rng.randrange(len(operations))
    value, lines = int(numbers[0]), []
    for index, (operator, operand) in enumerate(operations):
        result = {"+": value + operand, "-": value - operand, "*": value * operand}[operator]
        if index == wrong_at:
            result += rng.choice([-3, -2, -1, 1, 2, 3])
        lines.append(f"{value}{operator}{operand}={result}")
        value = result
    return " " + "\n".join(lines) + f"\n\\boxed{{{value}}}"


def synthetic_step_rows(num_examples: int, seed: int = 0, corrupt_share: float = 0.5) -> list[dict[str, Any]]:
    """Step-format rows from the synthetic task: gold solutions (all steps right) and corrupted ones,
    labelled from `step_errors` the Math-Shepherd way: the first wrong step and every step after it 0.0."""
    rng = random.Random(seed)
    rows = []
    for row in generate(SyntheticOptions(levels=[2, 3], num_examples=num_examples, seed=seed)):
        completion = corrupt(row, rng) if rng.random() < corrupt_share else row["completion"]
        errors = step_errors(row["prompt"], completion)
        first_error = errors.index(True) if True in errors else -1
        steps = completion.split("\n")  # the boxed answer is the last step
        labels = [0.0 if first_error >= 0 and index >= first_error else 1.0 for index in range(len(steps))]
        rows.append({"prompt": row["prompt"], "steps": steps, "labels": labels,
                     "hard_labels": [label >= 0.5 for label in labels], "answer": row["answer"], "level": row["level"]})
    return rows
