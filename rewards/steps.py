"""The PRM step format in one place: split, tokenize, score, aggregate.

Shared by the `prm` reward (GRPO/DPO, eval verifiers), the `prm` and `prm_label` stages (training
rows, labelling) and the PRM benches, so a step is scored at exactly the position it was trained at.
It lives in `rewards` because the reward needs it and `rewards` never imports `stages`; the trainer's
own metrics stay in `stages.prm_steps`. The module is light: torch is imported only inside
`step_probabilities` and `score_steps`, because the reward registry imports it at plan time.

A row of the step format is `prompt` (str, or chat messages), `steps` (list[str], each step's text
without the separator) and `labels` (list[float] in [0, 1], the probability that the step is right:
a Monte-Carlo estimate, or 0.0/1.0 for hard datasets).

Tokenization follows TRL's removed `PRMTrainer.tokenize_row` (anchors.md §C.3): the prompt's tokens
(BOS first if the tokenizer has one), then for each step `tok(step) + tok(separator)`, tokenized
*separately*; the step's label sits on the last token of its segment (the separator's last token),
every other position is -100; the whole is cut at `max_length`. Tokenizing step by step matters: if
the completion were tokenized at once, a step's last characters could merge with the separator into
one token (byte-level BPE merges such as "}\\n"), and there would be no separator token to score.
Differences from TRL: labels stay floats (TRL cast them to int64, truncating soft labels to 0), and a
prompt that already starts with BOS (a chat template that writes it) gets no second one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from data_recipes.math_sets import last_boxed

IGNORE_INDEX = -100
AGGREGATIONS = ("min", "mean", "last", "product")


def split_steps(completion: str, separator: str = "\n") -> list[str]:
    """The steps of a completion: the pieces between separators, blank pieces dropped, and nothing
    after the first step that holds a final `\\boxed{}` answer (what follows is not reasoning).

    Step text is kept verbatim (a leading space stays), as the step format stores it. The labeller
    (prm_label), the trainer's data and the reward all split with this one function.
    """
    if not separator:
        raise ValueError("the step separator must be a non-empty string")
    steps = []
    for piece in completion.split(separator):
        if not piece.strip():
            continue
        steps.append(piece)
        if last_boxed(piece) is not None:
            break
    return steps


def aggregate(scores: Sequence[float], how: str = "min") -> float | None:
    """One number for a solution from its step scores: `min` (default; a chain is as good as its worst
    step), `mean`, `last` (the final step's score, outcome-like) or `product` (the chance that every step
    is right, if step scores were independent). None for no scores."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}")
    if not scores:
        return None
    if how == "min":
        return float(min(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    if how == "last":
        return float(scores[-1])
    return float(math.prod(scores))


def prompt_text(tokenizer: Any, prompt: Any) -> str:
    """A prompt as the text the PRM reads: a string as it is; chat messages rendered by the tokenizer's
    chat template with the generation prompt (where the steps begin), or joined if it has none."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(message, dict) for message in prompt):
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return "\n".join(str(message.get("content", "")) for message in prompt)
    raise TypeError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def separator_ids(tokenizer: Any, separator: str) -> list[int]:
    ids = tokenizer.encode(separator, add_special_tokens=False)
    if not ids:
        raise ValueError(f"the step separator {separator!r} tokenizes to nothing")
    return list(ids)


def tokenize_row(
    tokenizer: Any,
    prompt: str,
    steps: Sequence[str],
    labels: Sequence[float] | None = None,
    separator: str = "\n",
    max_length: int | None = None,
    last_step_only: bool = False,
) -> dict[str, list]:
    """Token ids, per-token labels and the position of each step's label, as the PRM trains and scores.

    Returns `input_ids`, `labels` (floats at step positions, -100 elsewhere; all -100 when `labels` is
    None) and `step_positions`: for each step that survived truncation, the index of its labelled token
    (a step cut by `max_length` has none, so the list can be shorter than `steps`). With `last_step_only`
    only the final step keeps its label (outcome-style supervision, TRL's `train_on_last_step_only`),
    while `step_positions` still lists every step.
    """
    if labels is not None and len(labels) != len(steps):
        raise ValueError(f"{len(steps)} steps but {len(labels)} labels")
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else []
    bos = tokenizer.bos_token_id
    if bos is not None and prompt_ids[:1] != [bos]:
        prompt_ids = [bos, *prompt_ids]
    sep = separator_ids(tokenizer, separator)
    step_ids = tokenizer(list(steps), add_special_tokens=False)["input_ids"] if steps else []
    input_ids = list(prompt_ids)
    token_labels: list[float] = [IGNORE_INDEX] * len(prompt_ids)
    positions = []
    for index, ids in enumerate(step_ids):
        segment = list(ids) + sep
        label = IGNORE_INDEX
        if labels is not None and (not last_step_only or index == len(step_ids) - 1):
            label = float(labels[index])
        input_ids += segment
        token_labels += [IGNORE_INDEX] * (len(segment) - 1) + [label]
        positions.append(len(input_ids) - 1)
    if max_length is not None:
        input_ids, token_labels = input_ids[:max_length], token_labels[:max_length]
        positions = [position for position in positions if position < max_length]
    return {"input_ids": input_ids, "labels": token_labels, "step_positions": positions}


def step_probabilities(logits: Any) -> Any:
    """P(step is right) from token-classification logits (..., num_labels): the sigmoid of a single
    logit (gradus's PRM), or the softmax of class 1 for a two-label PRM (TRL's PRMTrainer, LABEL_1 = right)."""
    import torch

    logits = torch.as_tensor(logits).float()
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[..., 0])
    return torch.softmax(logits, dim=-1)[..., 1]


def score_steps(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    step_lists: Sequence[Sequence[str]],
    separator: str = "\n",
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[list[float]]:
    """For each solution, the probability that each of its steps is right, read at the step's labelled
    token exactly as in training. Rows are batched longest first (less padding) and right-padded, so a
    causal model's scores do not depend on the batch. A step cut off by `max_length` gets no score."""
    import torch

    if len(prompts) != len(step_lists):
        raise ValueError(f"{len(prompts)} prompts but {len(step_lists)} step lists")
    rows = [
        tokenize_row(tokenizer, prompt_text(tokenizer, prompt), list(steps), None, separator, max_length)
        for prompt, steps in zip(prompts, step_lists)
    ]
    scores: list[list[float]] = [[] for _ in rows]
    pending = sorted((index for index, row in enumerate(rows) if row["step_positions"]),
                     key=lambda index: len(rows[index]["input_ids"]), reverse=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, len(pending), batch_size):
                batch = pending[begin : begin + batch_size]
                width = max(len(rows[index]["input_ids"]) for index in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for slot, index in enumerate(batch):
                    ids = rows[index]["input_ids"]
                    input_ids[slot, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[slot, : len(ids)] = 1
                logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
                probabilities = step_probabilities(logits).cpu()
                for slot, index in enumerate(batch):
                    scores[index] = probabilities[slot, rows[index]["step_positions"]].tolist()
    finally:
        model.train(was_training)
    return scores
