"""`prm` stage: a process reward model, trained as token classification with one logit per step.

TRL's `PRMTrainer` was removed upstream (trl#7133), so gradus owns this small trainer, following its
spec (anchors.md §C.3) with one deliberate fix. The model is `AutoModelForTokenClassification` with
`num_labels=1` loaded from a causal-LM checkpoint (the SFT stage's model, say), so the score head is
new. Each row (`prompt`, `steps`, `labels`) is tokenized as TRL's `tokenize_row` did
(`rewards.steps.tokenize_row`): the label of a step sits on the last token of `tok(step) +
tok(separator)`, everything else is -100. The fix: TRL cast labels to int64, truncating Monte-Carlo
labels such as 0.7 to 0; here the loss is binary cross-entropy with logits on the labelled positions
with float targets, so a soft label is a soft target (`soft_labels: false` rounds them at 0.5 instead).

The trainer is a plain `transformers.Trainer`; the loss goes in through its public `compute_loss_func`
seam, normalised by the number of labelled steps in the whole (accumulated, all-process) batch, as the
Trainer counts them. LoRA comes from the stage's `peft:` block (task type TOKEN_CLS, so the new head is
trained and saved in full), resume from the stage's last complete checkpoint.

Held-out metrics: unless `eval_data` is given, `eval_fraction` of the *prompts* (all rows of a prompt
together, so PRM800K alternatives of one solution never straddle the split) is held out. On it the stage
reports step-level AUC, F1 (threshold 0.5 against the hard truth: the `hard_labels` column if the data
has one, else labels >= 0.5), PRMBench's error-F1 and PRMScore, first-error accuracy and all-correct
accuracy (see `prm_steps.step_metrics`), plus the loss curve and ROC curve PNGs.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from transformers import TrainingArguments

from rewards.steps import IGNORE_INDEX, prompt_text, separator_ids, step_probabilities, tokenize_row
from stages import common
from stages.arguments import StageFile
from stages.prm_steps import auc, hard, roc_curve, step_metrics

CURVES = ["loss", "eval_loss", "learning_rate"]


@dataclasses.dataclass
class PRMConfig(TrainingArguments):
    """`args` of a `prm` stage: the fields of `transformers.TrainingArguments`, plus these."""

    step_separator: str = dataclasses.field(
        default="\n", metadata={"help": "Text appended to every step; its last token carries the step's label."})
    max_length: int | None = dataclasses.field(
        default=1024, metadata={"help": "Tokens per row (prompt + steps); later steps are cut and lose their labels."})
    soft_labels: bool = dataclasses.field(
        default=True, metadata={"help": "BCE on the label as given (e.g. a Monte-Carlo value); false rounds labels at 0.5 first."})
    train_on_last_step_only: bool = dataclasses.field(
        default=False,
        metadata={"help": "Train on the last step's label only (outcome supervision); held-out metrics still use every step."})
    eval_fraction: float = dataclasses.field(
        default=0.1, metadata={"help": "Share of prompts held out for step-level metrics when the stage has no eval_data; 0 for none."})
    disable_dropout: bool = dataclasses.field(
        default=True, metadata={"help": "Set every dropout to 0, as TRL's PRMConfig did."})
    learning_rate: float = dataclasses.field(default=1e-5, metadata={"help": "TRL's PRMConfig default."})
    logging_steps: float = dataclasses.field(default=10, metadata={"help": "Log every this many steps."})

    def __post_init__(self) -> None:
        if not self.step_separator:
            raise ValueError("step_separator must be a non-empty string")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        super().__post_init__()


def held_out_split(prompts: list[Any], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train rows, held-out rows): a seeded `fraction` of the distinct prompts, at least one when the
    fraction is positive and there are two or more prompts; every row of a held-out prompt is held out."""
    keys = [prompt if isinstance(prompt, str) else repr(prompt) for prompt in prompts]
    distinct = sorted(set(keys))
    random.Random(seed).shuffle(distinct)
    count = 0 if fraction <= 0 or len(distinct) < 2 else min(max(round(fraction * len(distinct)), 1), len(distinct) - 1)
    held_out = set(distinct[:count])
    train = [index for index, key in enumerate(keys) if key not in held_out]
    evaluation = [index for index, key in enumerate(keys) if key in held_out]
    return train, evaluation


def truth_of(row: dict[str, Any]) -> list[bool]:
    """The right/wrong truth of a row's steps: its `hard_labels` if present, else its labels at 0.5."""
    if row.get("hard_labels") is not None:
        return [bool(value) for value in row["hard_labels"]]
    return [hard(label) for label in row["labels"]]


def tokenized(dataset: Any, tokenizer: Any, config: PRMConfig, training: bool) -> Any:
    """The step-format rows as `input_ids` + per-token `labels`, ready for the collator."""
    def encode(row: dict[str, Any]) -> dict[str, list]:
        labels = [float(hard(label)) if not config.soft_labels else float(label) for label in row["labels"]]
        encoded = tokenize_row(
            tokenizer, prompt_text(tokenizer, row["prompt"]), row["steps"], labels, config.step_separator,
            config.max_length, last_step_only=training and config.train_on_last_step_only,
        )
        return {"input_ids": encoded["input_ids"], "labels": encoded["labels"]}

    return dataset.map(encode, remove_columns=dataset.column_names, desc="tokenizing steps")


class StepLabelCollator:
    """Right-pads `input_ids` (pad id) and float `labels` (-100) into tensors.

    Not `DataCollatorForTokenClassification`: it builds every tensor as int64, which is exactly TRL's
    soft-label truncation.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(feature["input_ids"]) for feature in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), float(IGNORE_INDEX), dtype=torch.float32)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            input_ids[row, :length] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            attention_mask[row, :length] = 1
            labels[row, :length] = torch.as_tensor(feature["labels"], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def step_bce_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Binary cross-entropy with logits on the labelled positions, float targets (soft labels intact).

    Summed and divided by `num_items_in_batch` (the Trainer's count of labelled positions over the
    accumulated batch and all processes) when given, so gradient accumulation and data parallelism see
    the same per-step mean as one big batch; a plain mean otherwise.
    """
    import torch

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    logits = logits[..., 0].float() if logits.shape[-1] == 1 else logits[..., 1].float() - logits[..., 0].float()
    mask = labels != IGNORE_INDEX
    targets = labels[mask].float()
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], targets, reduction="sum")
    if num_items_in_batch is not None:
        return losses / num_items_in_batch
    return losses / mask.sum().clamp(min=1)


def disable_dropout(model: Any) -> None:
    """Every dropout to 0: `nn.Dropout` modules, and the attention dropout rate Llama-style attention reads."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def load_model(stage: StageFile, config: PRMConfig) -> Any:
    """The token classifier (a new one-logit head on the stage's starting model), LoRA-wrapped if asked."""
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(stage.model_path, num_labels=1)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    if config.disable_dropout:
        disable_dropout(model)
    lora = common.peft_config(stage)
    if lora is not None:
        from peft import get_peft_model

        if "task_type" not in (stage.peft or {}):
            lora.task_type = "TOKEN_CLS"  # common.peft_config defaults to CAUSAL_LM, which would leave the new head frozen
        model = get_peft_model(model, lora)
    return model


def held_out_scores(
    trainer: Any, eval_set: Any, eval_rows: Any, config: PRMConfig,
) -> tuple[list[list[float]], dict[str, float]]:
    """P(right) at each labelled position of each held-out row, and the loss metrics of that pass.

    Read from `trainer.predict` (so it also works with the model sharded or replicated across processes)
    at the positions that carry labels, in order: the same positions `rewards.steps.score_steps` reads, as both
    come from `tokenize_row`. The labels that come back with the predictions are checked against the rows'
    own, a guard against pairing a prediction with another row's truth.
    """
    import numpy as np

    prediction = trainer.predict(eval_set, metric_key_prefix="eval")
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    probabilities = step_probabilities(np.asarray(logits)).numpy()
    label_ids = np.asarray(prediction.label_ids)
    if len(label_ids) != len(eval_rows):
        raise RuntimeError(f"predicted {len(label_ids)} held-out rows, expected {len(eval_rows)}")
    scores = []
    for index, row in enumerate(eval_rows):
        labelled = label_ids[index] != IGNORE_INDEX
        expected = [float(label) if config.soft_labels else float(hard(label)) for label in row["labels"]][: int(labelled.sum())]
        if not np.allclose(label_ids[index][labelled], expected, atol=1e-6):
            raise RuntimeError(f"held-out row {index}: the predictions came back paired with another row's labels")
        scores.append(probabilities[index][labelled].tolist())
    return scores, prediction.metrics


def plot_roc(truth: list[list[bool]], scores: list[list[float]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat_truth = [value for row, row_scores in zip(truth, scores) for value in row[: len(row_scores)]]
    flat_scores = [score for row, row_scores in zip(truth, scores) for score in row_scores[: len(row)]]
    fpr, tpr = roc_curve(flat_scores, flat_truth)
    area = auc(flat_scores, flat_truth)
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.plot(fpr, tpr, marker=".")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.set_xlabel("false positive rate (wrong steps called right)")
    axis.set_ylabel("true positive rate")
    axis.set_title("held-out step ROC" + ("" if area is None else f", AUC {area:.3f}"))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def trainer_args(stage: StageFile, planned_world_size: int | None = None) -> PRMConfig:
    """The PRMConfig this stage trains with."""
    return common.training_args(PRMConfig, stage, planned_world_size)


def run(stage: StageFile) -> None:
    from transformers import Trainer

    config = trainer_args(stage)
    tokenizer = common.load_tokenizer(stage.model_path)
    separator_ids(tokenizer, config.step_separator)  # fail now, not after loading data, on a separator that tokenizes to nothing

    rows = common.load_training_data(stage)
    if stage.eval_data:
        train_rows, eval_rows = rows, common.load_data(stage.eval_data)
    else:
        train_indices, eval_indices = held_out_split(rows["prompt"], config.eval_fraction, config.seed)
        train_rows, eval_rows = rows.select(train_indices), rows.select(eval_indices)
    train_set = tokenized(train_rows, tokenizer, config, training=True)
    eval_set = tokenized(eval_rows, tokenizer, config, training=False) if len(eval_rows) else None

    trainer = Trainer(
        model=load_model(stage, config),
        args=config,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=StepLabelCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        compute_loss_func=step_bce_loss,
    )
    metrics = common.train_and_save(trainer, stage, CURVES)
    metrics["train_rows"], metrics["eval_rows"] = len(train_rows), len(eval_rows)
    if eval_set is not None:
        truth = [truth_of(row) for row in eval_rows]
        scores, loss_metrics = held_out_scores(trainer, eval_set, eval_rows, config)
        metrics.update(loss_metrics)
        metrics.update(step_metrics(truth, scores))
        metrics["truth"] = "hard_labels" if "hard_labels" in eval_rows.column_names else "labels >= 0.5"
        if trainer.accelerator.is_main_process:
            plot_roc(truth, scores, stage.stage_dir / "roc.png")
    common.finish(stage, metrics)


if __name__ == "__main__":
    run(common.start())
