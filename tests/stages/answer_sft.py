"""A stage kind defined outside gradus, as a plugin package would define one: a module and a `StageKind`.

`answer_sft` fine-tunes on each problem's bare answer (`prompt` -> `\\boxed{answer}`), a warm-up a
reasoning-free model could take before GRPO. It is registered by tests/stages/test_plugin_kind.py
through a `gradus.kinds` entry point; the module stays torch-free at import (the CLI reads `KIND`),
and does its heavy imports when the stage runs.
"""

from __future__ import annotations

from typing import Any

from stages.arguments import StageFile
from stages.kinds import StageKind

KIND = StageKind(module=__name__, config="trl:SFTConfig", produces_model=True, trainer=True, needs_columns=(("prompt", "answer"),))


def trainer_args(stage: StageFile, planned_world_size: int | None = None) -> Any:
    """The SFTConfig this stage trains with (the preflight builds it too, in its own process)."""
    from trl import SFTConfig

    from stages import common

    return common.training_args(SFTConfig, stage, planned_world_size)


def run(stage: StageFile) -> None:
    from trl import SFTTrainer

    from stages import common

    rows = common.load_training_data(stage)
    pairs = rows.map(lambda row: {"completion": f"\\boxed{{{row['answer']}}}"}).select_columns(["prompt", "completion"])
    trainer = SFTTrainer(model=stage.model_path, args=trainer_args(stage), train_dataset=pairs,
                         processing_class=common.load_tokenizer(stage.model_path))
    common.finish(stage, common.train_and_save(trainer, stage, ["loss"]))


if __name__ == "__main__":
    from stages import common

    run(common.start())
