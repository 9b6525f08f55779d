"""The `prm` stage's parts short of a training run: the soft-label loss, the collator, the held-out split,
the config, and a manifest that uses them."""

from __future__ import annotations

import pytest
import torch

from rewards.steps import IGNORE_INDEX
from stages.prm import PRMConfig, StepLabelCollator, held_out_split, step_bce_loss, truth_of


def loss_at(logit: float, target: float) -> float:
    logits = torch.tensor([[[0.0], [logit], [0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, target, IGNORE_INDEX]], dtype=torch.float32)
    return step_bce_loss({"logits": logits}, labels).item()


def test_soft_label_loss_is_lowest_where_the_predicted_probability_equals_the_soft_label():
    grid = [x / 100 for x in range(-400, 401)]
    best = min(grid, key=lambda logit: loss_at(logit, 0.7))
    assert torch.sigmoid(torch.tensor(best)).item() == pytest.approx(0.7, abs=0.01)
    # Gradient descent on the logit lands there too.
    logit = torch.zeros(1, 1, 1, requires_grad=True)
    optimizer = torch.optim.SGD([logit], lr=1.0)
    for _ in range(300):
        optimizer.zero_grad()
        step_bce_loss({"logits": logit}, torch.tensor([[0.7]])).backward()
        optimizer.step()
    assert torch.sigmoid(logit).item() == pytest.approx(0.7, abs=1e-3)


def test_the_soft_target_is_not_truncated_to_a_hard_one():
    """TRL cast labels to int64, so 0.7 trained as 0: the loss there would be lowest at P = 0."""
    truncated_target = float(torch.tensor(0.7).long())
    assert truncated_target == 0.0
    for logit in (-2.0, 0.85, 2.0):  # (at logit 0 every target costs ln 2)
        assert loss_at(logit, 0.7) != pytest.approx(loss_at(logit, truncated_target))
    assert loss_at(0.85, 0.7) < loss_at(-4.0, 0.7)  # P = 0.70 beats P = 0.02 for a 0.7 label
    assert loss_at(-4.0, truncated_target) < loss_at(0.85, truncated_target)  # the truncated label says the opposite


def test_loss_is_a_mean_over_labelled_steps_or_a_sum_over_the_trainers_count():
    logits = torch.tensor([[[1.0], [2.0], [-1.0]]])
    labels = torch.tensor([[1.0, IGNORE_INDEX, 0.25]])
    per_step = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 0.25]), reduction="none")
    assert step_bce_loss({"logits": logits}, labels).item() == pytest.approx(per_step.mean().item())
    assert step_bce_loss({"logits": logits}, labels, num_items_in_batch=8).item() == pytest.approx(per_step.sum().item() / 8)
    # A two-label head (TRL-style) is read as the log-odds of class 1.
    two = torch.tensor([[[0.0, 1.0], [0.0, 0.0], [0.5, -0.5]]])
    assert step_bce_loss({"logits": two}, labels).item() == pytest.approx(per_step.mean().item())


def test_collator_pads_and_keeps_float_labels():
    from transformers import DataCollatorForTokenClassification

    from stages.models import build_tokenizer

    features = [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, IGNORE_INDEX, 0.7]}, {"input_ids": [8], "labels": [0.25]}]
    batch = StepLabelCollator(pad_token_id=0)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].flatten().tolist() == pytest.approx([IGNORE_INDEX, IGNORE_INDEX, 0.7, 0.25, IGNORE_INDEX, IGNORE_INDEX])
    # Why not transformers' token-classification collator: it makes labels int64, 0.7 -> 0.
    stock = DataCollatorForTokenClassification(build_tokenizer("llama"))(features)
    assert stock["labels"][0, 2].item() == 0


def test_rows_reach_the_loss_with_their_soft_labels_or_rounded_ones_when_asked():
    import datasets

    from stages.models import build_tokenizer
    from stages.prm import tokenized

    tokenizer = build_tokenizer("llama")
    rows = datasets.Dataset.from_list([{"prompt": "Q: 1 +1\nA:", "steps": [" 1+1=2", "\\boxed{2}"], "labels": [0.8, 0.3]}])
    for soft, expected in ((True, [0.8, 0.3]), (False, [1.0, 0.0])):
        config = PRMConfig(output_dir="unused", use_cpu=True, soft_labels=soft)
        features = list(tokenized(rows, tokenizer, config, training=True))
        labels = StepLabelCollator(tokenizer.pad_token_id)(features)["labels"]
        assert labels[labels != IGNORE_INDEX].tolist() == pytest.approx(expected)
    outcome_only = PRMConfig(output_dir="unused", use_cpu=True, train_on_last_step_only=True)
    for training, expected in ((True, [0.3]), (False, [0.8, 0.3])):  # held-out rows keep every step's label
        labels = StepLabelCollator(0)(list(tokenized(rows, tokenizer, outcome_only, training=training)))["labels"]
        assert labels[labels != IGNORE_INDEX].tolist() == pytest.approx(expected)


def test_held_out_split_keeps_all_rows_of_a_prompt_together_and_is_seeded():
    prompts = ["a", "b", "a", "c", "d", "b", "e", "f", "g", "h", "i", "j"]
    train, held_out = held_out_split(prompts, 0.2, seed=0)
    assert sorted(train + held_out) == list(range(len(prompts)))
    held_prompts = {prompts[i] for i in held_out}
    assert len(held_prompts) == 2 and not held_prompts & {prompts[i] for i in train}
    assert held_out_split(prompts, 0.2, seed=0) == (train, held_out)
    assert held_out_split(prompts, 0.0, seed=0) == (list(range(len(prompts))), [])
    assert len({prompts[i] for i in held_out_split(prompts, 0.01, seed=0)[1]}) == 1  # a positive fraction holds one out
    assert held_out_split(["a", "a"], 0.5, seed=0) == ([0, 1], [])  # one prompt: nothing left to train on otherwise


def test_truth_prefers_the_hard_labels_column_over_thresholded_soft_labels():
    assert truth_of({"labels": [0.9, 0.5, 0.2]}) == [True, True, False]
    assert truth_of({"labels": [0.1, 0.2], "hard_labels": [True, False]}) == [True, False]


def test_config_fields_and_validation():
    config = PRMConfig(output_dir="unused", use_cpu=True)
    assert (config.step_separator, config.max_length, config.soft_labels, config.train_on_last_step_only,
            config.eval_fraction, config.disable_dropout, config.learning_rate) == ("\n", 1024, True, False, 0.1, True, 1e-5)
    with pytest.raises(ValueError, match="step_separator"):
        PRMConfig(output_dir="unused", use_cpu=True, step_separator="")
    with pytest.raises(ValueError, match="eval_fraction"):
        PRMConfig(output_dir="unused", use_cpu=True, eval_fraction=1.0)


def test_a_manifest_with_a_prm_stage_is_checked_against_prm_config_and_the_step_columns(tmp_path):
    import json

    from pipeline.manifest import ManifestError
    from pipeline.preflight import checked_plan
    from tests.conftest import TINY_MODEL, write_manifest

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "Q: 1 +1\nA:", "steps": [" 1+1=2", "\\boxed{2}"], "labels": [1.0, 1.0]}) + "\n")

    def manifest(args, data=None):
        stage = {"name": "prm", "kind": "prm", "data": data or {"recipe": "jsonl", "path": str(rows)}, "args": args}
        return write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL, "stages": [stage]})

    checked_plan(manifest({"soft_labels": False, "step_separator": "\n\n", "max_steps": 3}))
    with pytest.raises(ManifestError, match="args.soft_label': not a field of PRMConfig \\(did you mean 'soft_labels'\\?\\)"):
        checked_plan(manifest({"soft_label": False}))
    with pytest.raises(ManifestError, match="no column 'labels'"):
        checked_plan(manifest({}, {"recipe": "synthetic_arithmetic", "num_examples": 4, "levels": [1]}))
