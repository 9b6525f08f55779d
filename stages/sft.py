"""`sft` stage: supervised fine-tuning with TRL's SFTTrainer.

Data is prompt-completion (loss on the completion only, TRL's default for that format) or
conversational `messages` (set `assistant_only_loss: true` in `args` to train on assistant turns
only; the chat template needs `{% generation %}` markers, which the built-in tiny tokenizer has).
A `peft:` block trains LoRA adapters instead of the full model; they are merged into `model/`.

A `curriculum: {strategy: ordered}` block orders the rows easy to hard by a difficulty column
(competence pacing, Platanios et al. 2019: the easiest c(t) of the data is admitted at step t, c
growing from `start_competence` to all of it over `ramp_fraction` of the stage); the column travels
with the rows through TRL's tokenisation and the sampler is checkpointed, so a resumed stage continues
the same order (stages/curriculum/training.py, `attach_to_sft`; the sampler override is
stages/trl_hooks.py's `sft_trainer_class`).
"""

from __future__ import annotations

from typing import Any

from stages import common
from stages.arguments import StageFile
from stages.preflight import missing_eval_data


def text_columns(dataset, keep: str | None = None) -> list[str]:
    """Only the columns SFTTrainer trains on, so extra ones (answer, level, ...) don't reach the collator,
    and `keep` (a curriculum's difficulty column, which the trainer drops before its collator)."""
    columns = ["messages"] if "messages" in dataset.column_names else ["prompt", "completion"]
    return columns + ([keep] if keep else [])


def trainer_args(stage: StageFile, planned_world_size: int | None = None) -> Any:
    """The SFTConfig this stage trains with (also what `gradus plan`'s preflight constructs)."""
    from trl import SFTConfig

    return common.training_args(SFTConfig, stage, planned_world_size)


# What SFTTrainer refuses at init of a config that builds (stages/kinds.py: the preflight asks before launch).
preflight = missing_eval_data


def run(stage: StageFile) -> None:
    from trl import SFTTrainer

    trainer_class = SFTTrainer
    if stage.curriculum is not None:
        from stages.curriculum.training import attach_to_sft
        from stages.trl_hooks import sft_trainer_class

        trainer_class = sft_trainer_class(SFTTrainer)
    train_dataset = common.load_training_data(stage)
    train_dataset = train_dataset.select_columns(text_columns(train_dataset, stage.curriculum and stage.curriculum.difficulty_column))
    eval_dataset = None
    if stage.eval_data:
        eval_dataset = common.load_data(stage.eval_data)
        eval_dataset = eval_dataset.select_columns(text_columns(eval_dataset))

    trainer = trainer_class(
        model=stage.model_path,
        args=trainer_args(stage),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=common.load_tokenizer(stage.model_path),
        peft_config=common.peft_config(stage),
    )
    if stage.curriculum is not None:
        attach_to_sft(trainer, stage.curriculum, stage.stage_dir)
    metrics = common.train_and_save(trainer, stage, ["loss", "eval_loss", "learning_rate"], evaluate=True)
    common.finish(stage, metrics)


if __name__ == "__main__":
    run(common.start())
