"""The reward wrapper that feeds the sampler: same scores, same name, training batches only, async too."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import datasets
import numpy as np

from stages.arguments import CurriculumArgs
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout
from rewards.wrapping import is_async
from stages.curriculum.training import GRPOCurriculum, ScoreFeedback

LEVELS = [1, 1, 2, 2]


def sampler() -> CurriculumSampler:
    return CurriculumSampler(CurriculumArgs(), LEVELS, len(LEVELS), RepeatLayout(2, 2, 1))


def half_right(prompts: list, completions: list, **columns: object) -> list[float | None]:
    return [1.0, 0.0, None, 1.0]


def test_scores_pass_through_and_training_batches_reach_the_sampler_and_the_log():
    feedback, logged = ScoreFeedback(half_right, sampler()), {}
    batch = {"prompts": ["a"] * 4, "completions": ["x"] * 4, "level": [1, 1, 2, 2], "log_metric": logged.__setitem__}
    assert feedback(**batch, curriculum_index=[0, 0, 2, 2]) == [1.0, 0.0, None, 1.0]
    assert feedback.__name__ == "half_right"
    assert feedback.sampler.evidence.prompt_pass_rate[[0, 2]].tolist() == [0.5, 1.0] and feedback.sampler.evidence.generations_recorded == 1
    assert logged["curriculum/pass_rate/level=1"] == 0.5 and "curriculum/share/level=2" in logged

    feedback(**batch)  # an eval batch: no curriculum_index column, so nothing is recorded
    assert feedback.sampler.evidence.generations_recorded == 1


def test_an_async_signal_reward_stays_async():
    async def async_half_right(prompts: list, completions: list, **columns: object) -> list[float | None]:
        return half_right(prompts, completions)

    feedback = ScoreFeedback(async_half_right, sampler())
    assert is_async(feedback) and not is_async(ScoreFeedback(half_right, sampler()))
    scores = asyncio.run(feedback(prompts=["a"] * 4, completions=["x"] * 4, curriculum_index=[1, 1, 3, 3]))
    assert scores == [1.0, 0.0, None, 1.0]
    assert np.isnan(feedback.sampler.evidence.prompt_pass_rate[0]) and feedback.sampler.evidence.prompt_pass_rate[1] == 0.5


def test_grpo_wiring_wraps_only_the_signal_reward_and_indexes_the_data(tmp_path):
    def other(prompts: list, completions: list, **columns: object) -> list[float]:
        return [0.0] * len(completions)

    data = datasets.Dataset.from_dict({"prompt": ["p"] * 8, "level": [1, 2] * 4})
    grpo_args = SimpleNamespace(
        remove_unused_columns=False, ignore_data_skip=False, num_generations=2, generation_batch_size=4, num_iterations=1,
        steps_per_generation=1, gradient_accumulation_steps=1, max_steps=10, seed=0, dataloader_num_workers=0,
        dataloader_prefetch_factor=None,
    )
    curriculum = GRPOCurriculum.build({"signal_reward": "other"}, grpo_args, data, [half_right, other], stage_dir=tmp_path)
    assert [type(reward).__name__ for reward in curriculum.rewards] == ["function", "ScoreFeedback"]
    assert curriculum.train_dataset["curriculum_index"] == list(range(8))
    assert curriculum.sampler.layout == RepeatLayout(2, 2, 1) and curriculum.sampler.evidence.planned_generations == 10


def test_a_trainer_without_groups_builds_the_curriculum_from_its_own_layout_and_refuses_dynamic_sampling(tmp_path):
    """On-policy distillation (no `num_generations`, no rewards of its own) takes the curriculum add-on
    with `distillation_layout`; dynamic sampling, which replaces GRPO groups, says it needs them."""
    from trl import DistillationConfig

    from stages.curriculum.dynamic_sampling import DynamicSampling
    from stages.trl_hooks import distillation_layout

    config = DistillationConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=2,
                                gradient_accumulation_steps=2, max_steps=6, report_to="none")
    data = datasets.Dataset.from_dict({"prompt": ["p"] * 16, "level": [1, 2] * 8})
    curriculum = GRPOCurriculum.build({"strategy": "ordered"}, config, data, [half_right], tmp_path, layout=distillation_layout(config, 1))
    assert curriculum.sampler.layout == RepeatLayout(1, 4, 2) and curriculum.sampler.evidence.planned_generations == 6
    assert [type(reward).__name__ for reward in curriculum.rewards] == ["ScoreFeedback"]
    assert DynamicSampling.unmet_requirement(CurriculumArgs(dynamic_sampling=True), config) == (
        "curriculum.dynamic_sampling: dynamic sampling replaces GRPO groups, and a DistillationConfig has no num_generations")
