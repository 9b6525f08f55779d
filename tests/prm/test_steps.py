"""The step format's plain functions: tokenization (label placement), scoring positions, splitting,
aggregation and the step-level metrics."""

from __future__ import annotations

import math

import pytest

from rewards.steps import IGNORE_INDEX, aggregate, score_steps, split_steps, tokenize_row
from stages.models import build_tokenizer
from stages.prm_steps import auc, step_metrics
from tests.prm.helpers import merging_tokenizer

PROMPT = "Q: 17 -2 +2 *3\nA:"  # holds a "\n" itself: prompt tokens are never labelled
STEPS = [" 17-2=15", "15+2=17", "17*3=51", "\\boxed{51}"]
LABELS = [1.0, 0.7, 0.0, 0.25]


def tokenizers():
    return {"merging_bpe": merging_tokenizer(), "qwen2_bytes": build_tokenizer("qwen2"), "llama_chars": build_tokenizer("llama")}


@pytest.mark.parametrize("name", ["merging_bpe", "qwen2_bytes", "llama_chars"])
def test_each_label_sits_on_the_separator_token_closing_its_step_and_nothing_else_is_labelled(name):
    tokenizer = tokenizers()[name]
    row = tokenize_row(tokenizer, PROMPT, STEPS, LABELS, separator="\n")
    (newline,) = tokenizer.encode("\n", add_special_tokens=False)
    prompt_length = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    separator_positions = [i for i, token in enumerate(row["input_ids"]) if token == newline and i >= prompt_length]
    labelled = [i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX]
    assert labelled == separator_positions == row["step_positions"]
    assert [row["labels"][i] for i in labelled] == LABELS  # floats kept: 0.7 stays 0.7
    assert all(label == IGNORE_INDEX for i, label in enumerate(row["labels"]) if i not in labelled)
    # The ids are the prompt's, then each step's own tokens followed by the separator.
    expected = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    for step in STEPS:
        expected += tokenizer(step, add_special_tokens=False)["input_ids"] + [newline]
    assert row["input_ids"] == expected


def test_the_merging_tokenizer_really_fuses_steps_with_the_separator_when_tokenized_at_once():
    """What makes step-by-step tokenization necessary: joined, "17\\n" and "}\\n" are single tokens,
    so there would be no separator token at the end of steps 2 and 4 to put their labels on."""
    tokenizer = merging_tokenizer()
    joined = tokenizer.convert_ids_to_tokens(tokenizer("\n".join(STEPS) + "\n", add_special_tokens=False)["input_ids"])
    assert "7Ċ" in joined and "}Ċ" in joined
    per_step = tokenizer.convert_ids_to_tokens(tokenize_row(tokenizer, PROMPT, STEPS, LABELS)["input_ids"])
    assert "7Ċ" not in per_step and "}Ċ" not in per_step


def test_a_multi_token_separator_is_labelled_on_its_last_token_and_bos_is_prepended_once():
    tokenizer = build_tokenizer("llama")
    row = tokenize_row(tokenizer, PROMPT, STEPS[:2], LABELS[:2], separator="\n\n")
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert [tokens[i - 1 : i + 1] for i in row["step_positions"]] == [["\n", "\n"], ["\n", "\n"]]
    assert [row["labels"][i - 1] for i in row["step_positions"]] == [IGNORE_INDEX, IGNORE_INDEX]
    tokenizer.bos_token = "<|endoftext|>"
    with_bos = tokenize_row(tokenizer, PROMPT, STEPS[:2], LABELS[:2])
    assert with_bos["input_ids"][0] == tokenizer.bos_token_id and with_bos["input_ids"][1] != tokenizer.bos_token_id
    assert with_bos["labels"][0] == IGNORE_INDEX
    again = tokenize_row(tokenizer, "<|endoftext|>" + PROMPT, STEPS[:2], LABELS[:2])
    assert again["input_ids"] == with_bos["input_ids"]  # a prompt that already starts with BOS gets no second one


def test_truncation_cuts_tokens_and_the_labels_of_steps_it_cuts_and_last_step_only_keeps_one_label():
    tokenizer = build_tokenizer("llama")
    full = tokenize_row(tokenizer, PROMPT, STEPS, LABELS)
    cut = tokenize_row(tokenizer, PROMPT, STEPS, LABELS, max_length=full["step_positions"][1] + 1)
    assert cut["input_ids"] == full["input_ids"][: len(cut["input_ids"])]
    assert cut["step_positions"] == full["step_positions"][:2]
    assert [label for label in cut["labels"] if label != IGNORE_INDEX] == LABELS[:2]
    outcome = tokenize_row(tokenizer, PROMPT, STEPS, LABELS, last_step_only=True)
    assert [label for label in outcome["labels"] if label != IGNORE_INDEX] == [LABELS[-1]]
    assert outcome["step_positions"] == full["step_positions"]
    with pytest.raises(ValueError, match="4 steps but 3 labels"):
        tokenize_row(tokenizer, PROMPT, STEPS, LABELS[:3])
    with pytest.raises(ValueError, match="separator"):
        tokenize_row(tokenizer, PROMPT, STEPS, LABELS, separator="")


class PreviousTokenModel:
    """A stand-in token classifier whose logit at position t is a function of the token at t-1, so a
    score read one position off would differ. Counts its calls."""

    def __init__(self):
        import torch

        self.parameter = torch.nn.Parameter(torch.zeros(1))
        self.training, self.calls = False, 0

    def parameters(self):
        return iter([self.parameter])

    def eval(self):
        self.training = False
        return self

    def train(self, mode=True):
        self.training = mode
        return self

    def __call__(self, input_ids, attention_mask):
        import torch

        self.calls += 1
        previous = torch.cat([torch.zeros_like(input_ids[:, :1]), input_ids[:, :-1]], dim=1)
        logits = (previous.float() - 60.0) / 20.0 + 0.001 * torch.arange(input_ids.shape[1]).float()
        return type("Output", (), {"logits": logits.unsqueeze(-1)})()


def expected_scores(tokenizer, prompt, steps):
    row = tokenize_row(tokenizer, prompt, steps)
    ids = row["input_ids"]
    return [1 / (1 + math.exp(-((ids[p - 1] - 60.0) / 20.0 + 0.001 * p))) for p in row["step_positions"]]


def test_score_steps_reads_each_step_at_its_training_position_whatever_the_batching():
    tokenizer = merging_tokenizer()
    prompts = [PROMPT, "Q: 5 +2\nA:", "Q: 9 *2 -1\nA:"]
    step_lists = [STEPS, [" 5+2=7", "\\boxed{7}"], [" 9*2=18", "18-1=17", "\\boxed{17}"]]
    model = PreviousTokenModel()
    together = score_steps(model, tokenizer, prompts, step_lists, batch_size=3)
    one_by_one = score_steps(model, tokenizer, prompts, step_lists, batch_size=1)
    for scores, alone, prompt, steps in zip(together, one_by_one, prompts, step_lists):
        assert scores == pytest.approx(expected_scores(tokenizer, prompt, steps), abs=1e-6)
        assert scores == pytest.approx(alone, abs=1e-6)
    # The step "15+2=17" is scored at its own separator, right after its last token "17" (not a merged "7\n").
    ids, positions = (lambda row: (row["input_ids"], row["step_positions"]))(tokenize_row(tokenizer, PROMPT, STEPS))
    assert tokenizer.convert_ids_to_tokens(ids[positions[1] - 1 : positions[1] + 1]) == ["17", "Ċ"]
    assert model.calls == 1 + 3  # one batch of three, then three of one
    assert score_steps(model, tokenizer, ["p"], [[]]) == [[]]


def test_split_steps_keeps_step_text_verbatim_and_drops_blank_pieces():
    assert split_steps(" 17-2=15\n15+2=17\n\\boxed{17}") == [" 17-2=15", "15+2=17", "\\boxed{17}"]
    assert split_steps("a\n\n b\n  \nc\n") == ["a", " b", "c"]
    assert split_steps("a\n\nb\n\nc\nd", "\n\n") == ["a", "b", "c\nd"]
    assert split_steps("") == []
    with pytest.raises(ValueError):
        split_steps("a", "")


def test_aggregations_on_hand_made_scores():
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores) == aggregate(scores, "min") == 0.5
    assert aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "product") == pytest.approx(0.36)
    assert aggregate([0.3], "product") == aggregate([0.3], "min") == 0.3
    assert aggregate([], "mean") is None
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate(scores, "max")


def test_auc_counts_ties_as_half_and_is_none_with_one_class():
    assert auc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auc([0.5, 0.5, 0.5], [True, False, True]) == 0.5
    assert auc([0.9, 0.4, 0.6, 0.2], [True, True, False, False]) == 0.75
    assert auc([0.1, 0.2], [True, True]) is None


def test_step_metrics_first_error_and_all_correct_accuracies():
    truth = [
        [True, False, False],   # first error at 1, predicted first error at 1: exact
        [True, True, False],    # first error at 2, but a false alarm at 0: not exact, yet flagged
        [True, False],          # first error at 1, missed
        [True, True],           # all right, predicted all right
        [True, True, True],     # all right, a false alarm
    ]
    scores = [
        [0.9, 0.1, 0.2],
        [0.3, 0.8, 0.1],
        [0.7, 0.6],
        [0.6, 0.5],
        [0.9, 0.4, 0.9],
    ]
    metrics = step_metrics(truth, scores)
    assert metrics["first_error_accuracy"] == pytest.approx(1 / 3)
    assert metrics["first_error_flagged"] == pytest.approx(2 / 3)
    assert metrics["all_correct_accuracy"] == 0.5
    assert (metrics["solutions_with_error"], metrics["all_correct_solutions"], metrics["steps"], metrics["wrong_steps"]) == (3, 2, 13, 4)
    # By hand, right steps positive: TP 7, FP 1 (row 3's missed error), FN 2 (the two false alarms), TN 3.
    assert metrics["f1"] == pytest.approx(14 / 17)
    assert metrics["error_f1"] == pytest.approx(6 / 9)
    assert metrics["prm_score"] == pytest.approx((14 / 17 + 6 / 9) / 2)
    assert metrics["step_accuracy"] == pytest.approx(10 / 13)
    # A step with no score (cut by max_length) is left out, truth included.
    assert step_metrics([[True, False]], [[0.9]])["steps"] == 1
