"""Dynamic sampling inside a real GRPOTrainer (tiny random model, CPU): TRL's batch contract holds and
every extra generation is counted.

The signal reward is planted: level 1 always passes, level 3 never, level 2 by a fair coin on the
completion's hash (tests/curriculum/planted_rewards.py), so levels 1 and 3 always tie and a level-2
group ties only when its coins agree. A second reward (weight 0) records every batch TRL scores, which
is exactly the batch it trains on.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from pipeline.manifest import TinyModelSpec
from stages.arguments import CURRICULUM_INDEX_COLUMN
from stages.addons import trainer_class_with
from stages.curriculum.dynamic_sampling import DynamicSampling
from stages.curriculum.training import GRPOCurriculum
from stages.models import build_tiny_model
from tests.conftest import TINY_MODEL
from tests.curriculum.planted_rewards import level_coin

GROUP, PROMPTS_PER_BATCH, STEPS = 4, 4, 4


class Recorder:
    """A weight-0 reward that keeps, per call, the prompt index of every row TRL scored."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, prompts: list, completions: list, **columns: object) -> list[float]:
        self.batches.append([int(index) for index in columns[CURRICULUM_INDEX_COLUMN]])
        return [0.0] * len(completions)


class CountingSignal:
    """`level_coin`, counting the completions it scores (screens and TRL's scoring alike)."""

    __name__ = "level_coin"

    def __init__(self) -> None:
        self.scored = 0

    def __call__(self, prompts: list, completions: list, level: list[int], **columns: object) -> list[float]:
        self.scored += len(completions)
        return level_coin(prompts, completions, level)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    build_tiny_model(TinyModelSpec(**TINY_MODEL["tiny"]).model_dump(), seed=0, out_dir=path)
    return path


def train(tiny_model: Path, stage_dir: Path, levels: list[int], **curriculum: object) -> tuple[Recorder, CountingSignal, list[dict]]:
    from trl import GRPOConfig, GRPOTrainer

    from stages import common

    data = datasets.Dataset.from_dict({"prompt": [f"Q: {index} +1\nA:" for index in range(len(levels))], "level": levels})
    args = GRPOConfig(
        output_dir=str(stage_dir / "checkpoints"), use_cpu=True, bf16=False, max_steps=STEPS, learning_rate=1e-4, beta=0.0,
        num_generations=GROUP, per_device_train_batch_size=GROUP * PROMPTS_PER_BATCH, max_completion_length=8,
        logging_steps=1, save_strategy="no", report_to="none", remove_unused_columns=False, gradient_checkpointing=False, seed=0,
    )
    signal, recorder = CountingSignal(), Recorder()
    curriculum = GRPOCurriculum.build(
        {"strategy": "uniform", "dynamic_sampling": True, **curriculum}, args, data, [signal, recorder], stage_dir,
    )
    addons = [curriculum, DynamicSampling.build(curriculum, args)]
    trainer = trainer_class_with(GRPOTrainer, addons)(
        model=str(tiny_model), reward_funcs=curriculum.rewards, args=args, train_dataset=curriculum.train_dataset,
        processing_class=common.load_tokenizer(str(tiny_model)), callbacks=[curriculum.callback],
    )
    trainer.train()
    return recorder, signal, [entry for entry in trainer.state.log_history if "dynamic_sampling/extra_completions" in entry]


def contract_holds(batches: list[list[int]]) -> None:
    """Every scored batch is one generation batch: PROMPTS_PER_BATCH distinct prompts, each GROUP times in a row."""
    assert len(batches) == STEPS
    for batch in batches:
        assert len(batch) == GROUP * PROMPTS_PER_BATCH
        groups = [batch[start : start + GROUP] for start in range(0, len(batch), GROUP)]
        assert all(len(set(group)) == 1 for group in groups) and len({group[0] for group in groups}) == PROMPTS_PER_BATCH


@pytest.mark.parametrize("screen, rounds", [(None, 6), (2, 1)])
def test_dynamic_sampling_trains_on_groups_with_signal_in_trls_batch_shape_and_counts_every_extra_completion(tmp_path, tiny_model, screen, rounds):
    levels = [1, 2, 3] * 20  # a third of the prompts can have signal
    options = {"max_sampling_rounds": rounds} | ({"screen_generations": screen} if screen else {})
    recorder, signal, logged = train(tiny_model, tmp_path, levels, **options)
    contract_holds(recorder.batches)

    trained_levels = [levels[index] for batch in recorder.batches for index in batch[::GROUP]]
    assert trained_levels.count(2) > (0.75 if rounds > 1 else 0.4) * len(trained_levels)  # uniform would give a third
    assert len(logged) == STEPS and all(entry["dynamic_sampling/rounds"] <= rounds for entry in logged)

    batch_size, screen_size = GROUP * PROMPTS_PER_BATCH, screen or GROUP
    screened = signal.scored - STEPS * batch_size  # the signal scored every screen, then TRL scored each batch
    extra = sum(entry["dynamic_sampling/extra_completions"] for entry in logged)
    # generated = screens + the rest of each chosen group; extra = generated - the batches' own completions
    assert extra == screened - STEPS * PROMPTS_PER_BATCH * screen_size > 0
    assert sum(entry["dynamic_sampling/dropped_groups"] for entry in logged) * screen_size >= extra
