"""Kill and resume at the sampler level: a resumed run trains on the same batches as an uninterrupted one.

`train` replays HF Trainer's data loop around the real pieces: accelerate's `prepare_data_loader`
(one batch of look-ahead), `skip_first_batches` on resume, `gradient_accumulation_steps` batches
fetched before each optimizer step (`get_batch_samples`), the epoch arithmetic of
`set_initial_training_values` / `_init_training_state` / `_run_epoch`, and TRL's `_prepare_inputs`
(generate and score every `steps_per_generation x num_iterations` micro-steps, counting from 0 again
after a resume). Scores go through `ScoreFeedback` (the gather path, one process here) and the state
through `CurriculumCallback` (written at save steps, read in `on_train_begin`), exactly as in a stage.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from torch.utils.data import DataLoader

from stages.arguments import CurriculumArgs
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout
from stages.curriculum.callback import CurriculumCallback
from stages.curriculum.training import ScoreFeedback

LEVELS = np.repeat(np.arange(1, 7), 10)  # 60 prompts
PASS_RATE = np.array([0, 0.9, 0.7, 0.5, 0.35, 0.2, 0.05])
MAX_STEPS = 40


def score(prompts: list[int], micro_step: int) -> list[float]:
    """A deterministic stand-in for the model: the same prompt at the same micro-step scores the same."""
    draws = [((prompt * 7919 + micro_step * 104729 + j * 1299709) % 1000) / 1000 for j, prompt in enumerate(prompts)]
    return [float(draw < PASS_RATE[LEVELS[prompt]]) for draw, prompt in zip(draws, prompts)]


def train(strategy: str, ga: int, steps_per_generation: int, num_iterations: int, save_steps: int,
          stage_dir: Path, resume_from: int | None = None, kill_at: int | None = None,
          lags: list[int] | None = None, replace_ties: bool = False, prior: bool = False) -> tuple[dict[int, tuple[int, list[int]]], CurriculumSampler]:
    """Train to MAX_STEPS (or until `kill_at`), resuming from checkpoint `resume_from`; returns, for each
    micro-step (numbered from the start of training: epoch x batches per epoch + step), the optimizer
    step it belongs to and the batch trained, and the sampler. `lags` collects, at each scoring, how
    many later chunks the sampler had already drawn. `replace_ties` does what dynamic sampling does to
    the sampler: every group whose scores tie gets a replacement prompt, drawn and recorded; `prior`
    starts every prompt from its level's planted pass rate (a `prior_column`)."""
    layout = RepeatLayout(num_generations=2, prompts_per_generation=4, repeat_count=steps_per_generation * num_iterations)
    sampler = CurriculumSampler(
        CurriculumArgs(strategy=strategy), LEVELS.tolist(), len(LEVELS), layout, seed=3,
        planned_generations=MAX_STEPS * ga // layout.repeat_count, lookahead_batches=ga + 1,
        prior=PASS_RATE[LEVELS].tolist() if prior else None,
    )
    feedback = ScoreFeedback(lambda prompts, completions, **columns: score(prompts, columns["micro_step"][0]), sampler)
    stage_dir.mkdir(parents=True, exist_ok=True)
    callback = CurriculumCallback(sampler, stage_dir)
    args = SimpleNamespace(output_dir=str(stage_dir / "checkpoints"), gradient_accumulation_steps=ga)
    state = SimpleNamespace(global_step=resume_from or 0, is_world_process_zero=True)
    control = SimpleNamespace(should_save=False)
    loader = prepare_data_loader(DataLoader(range(len(LEVELS)), batch_size=layout.prompts_per_generation * layout.num_generations, sampler=sampler),
                                 num_processes=1, process_index=0)
    batches_per_epoch = len(loader)
    updates_per_epoch = max(batches_per_epoch // ga + int(batches_per_epoch % ga > 0), 1)
    epochs_trained, skipped = divmod(state.global_step, updates_per_epoch)
    skipped *= ga
    callback.on_train_begin(args, state, control)

    trained: dict[int, tuple[int, list[int]]] = {}
    trl_step = 0  # GRPOTrainer._step: micro-steps since this train() call began
    for epoch in range(epochs_trained, MAX_STEPS):
        epoch_loader, step, first_update = loader, -1, 0
        if epoch == epochs_trained and skipped:
            epoch_loader, step, first_update = skip_first_batches(loader, skipped), skipped - 1, skipped // ga
        epoch_loader.set_epoch(epoch)
        batches = iter(epoch_loader)
        remainder = batches_per_epoch % ga or ga
        for update in range(first_update, updates_per_epoch):
            fetched = [batch for _, batch in zip(range(ga if update != updates_per_epoch - 1 else remainder), batches)]
            for batch in fetched:
                step += 1
                micro_step = epoch * batches_per_epoch + step
                prompts = batch.tolist()
                if trl_step % layout.repeat_count == 0:  # TRL generates (and scores) a fresh generation batch
                    if lags is not None:
                        lags.append(sampler.evidence.generations_drawn - sampler.evidence.generations_recorded - 1)
                    scores = feedback(prompts=prompts, completions=[""] * len(prompts), curriculum_index=prompts,
                                      micro_step=[micro_step] * len(prompts), log_metric=lambda name, value: None)
                    if replace_ties:
                        tied = [index for index in range(0, len(prompts), 2) if scores[index] == scores[index + 1]]
                        replacements = sampler.draw_replacements(len(tied), prompts[::2]).tolist()
                        replaced = np.repeat(replacements, 2).tolist()
                        sampler.record(replaced, score(replaced, micro_step), completes_batch=False)
                        prompts = prompts + replaced
                trained[micro_step] = (state.global_step + 1, prompts)
                trl_step += 1
            state.global_step += 1
            control.should_save = state.global_step % save_steps == 0
            callback.on_step_end(args, state, control)
            if state.global_step in (MAX_STEPS, kill_at):
                return trained, sampler
    raise AssertionError("ran out of epochs")


def curriculum_csv(stage_dir: Path) -> list[dict[str, str]]:
    with (stage_dir / "curriculum.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def same_state(reference: CurriculumSampler, restored: CurriculumSampler) -> None:
    """Every array and counter of the sampler, its evidence and its strategy, equal."""
    for name in ("last_drawn", "queue", "queue_cursor"):
        assert np.array_equal(getattr(reference, name), getattr(restored, name), equal_nan=True), name
    for name in ("prompt_pass_rate", "bucket_pass_rate", "bucket_value", "bucket_completions", "bucket_draws"):
        assert np.array_equal(getattr(reference.evidence, name), getattr(restored.evidence, name), equal_nan=True), name
    reference_strategy, restored_strategy = reference.strategy.state_dict(), restored.strategy.state_dict()
    assert reference_strategy.keys() == restored_strategy.keys()
    for name, value in reference_strategy.items():
        assert np.array_equal(value, restored_strategy[name], equal_nan=True), f"strategy.{name}"
    assert reference.rng.bit_generator.state == restored.rng.bit_generator.state
    assert reference.evidence.generations_drawn == restored.evidence.generations_drawn


@pytest.mark.parametrize("strategy", ["uniform", "ordered", "adaptive", "band", "bandit", "ucb", "lp"])
@pytest.mark.parametrize(
    "ga, steps_per_generation, num_iterations, save_steps, resume_from, kill_at",
    [
        (1, 1, 1, 5, 10, 13),  # TRL defaults; killed three steps after a checkpoint
        (1, 1, 1, 15, 15, 17),  # checkpoint exactly at an epoch boundary (15 batches per epoch)
        (2, 2, 1, 6, 24, 27),  # gradient accumulation; resume in the fourth epoch
        (1, 1, 2, 4, 8, 11),  # num_iterations 2: each chunk trained twice, no staleness
        (2, 4, 1, 4, 12, 13),  # steps_per_generation 2 x gradient accumulation
        (2, 1, 1, 7, 21, 25),  # generation every micro-step; 15 batches per epoch is not a multiple of 2
    ],
)
def test_killed_and_resumed_run_trains_on_the_same_batches_as_an_uninterrupted_one(
    tmp_path, strategy, ga, steps_per_generation, num_iterations, save_steps, resume_from, kill_at
):
    setting = (strategy, ga, steps_per_generation, num_iterations, save_steps)
    uninterrupted, reference = train(*setting, stage_dir=tmp_path / "a")

    killed, _ = train(*setting, stage_dir=tmp_path / "b", kill_at=kill_at)
    assert killed.items() <= uninterrupted.items()  # so far, the same run
    checkpoint = tmp_path / "b" / "checkpoints" / f"checkpoint-{resume_from}" / "curriculum_state.npz"
    assert checkpoint.is_file()
    resumed, restored = train(*setting, stage_dir=tmp_path / "b", resume_from=resume_from)

    trained_by_checkpoint = [micro_step for micro_step, (update, _) in killed.items() if update <= resume_from]
    assert min(resumed) == max(trained_by_checkpoint) + 1 and max(resumed) == max(uninterrupted)
    assert {step: uninterrupted[step] for step in resumed} == resumed
    same_state(reference, restored)
    assert curriculum_csv(tmp_path / "a") == curriculum_csv(tmp_path / "b")  # rows past the checkpoint were rewritten


@pytest.mark.parametrize("strategy", ["uniform", "band", "lp"])
@pytest.mark.parametrize("ga, steps_per_generation, save_steps, resume_from, kill_at", [(1, 1, 5, 10, 13), (2, 2, 6, 24, 27)])
def test_replacement_draws_and_a_prior_resume_exactly_too(tmp_path, strategy, ga, steps_per_generation, save_steps, resume_from, kill_at):
    """Dynamic sampling's replacement draws and recorded dropped groups, on a sampler warm-started from a
    prior: a resumed run replaces the same groups with the same prompts and ends in the same state."""
    setting = dict(strategy=strategy, ga=ga, steps_per_generation=steps_per_generation, num_iterations=1, save_steps=save_steps,
                   replace_ties=True, prior=True)
    uninterrupted, reference = train(**setting, stage_dir=tmp_path / "a")
    assert any(len(batch) > 8 for _, batch in uninterrupted.values())  # ties were replaced
    train(**setting, stage_dir=tmp_path / "b", kill_at=kill_at)
    resumed, restored = train(**setting, stage_dir=tmp_path / "b", resume_from=resume_from)
    assert {step: uninterrupted[step] for step in resumed} == resumed
    same_state(reference, restored)


def test_a_checkpoint_of_another_sampler_is_refused(tmp_path):
    train("bandit", 1, 1, 1, save_steps=5, stage_dir=tmp_path, kill_at=5)
    other = CurriculumSampler(CurriculumArgs(strategy="ucb"), LEVELS.tolist(), len(LEVELS), RepeatLayout(2, 4, 1))
    with pytest.raises(ValueError, match="different sampler"):
        other.load(tmp_path / "checkpoints" / "checkpoint-5" / "curriculum_state.npz")


@pytest.mark.parametrize(
    "ga, steps_per_generation, num_iterations, lag",
    [(1, 1, 1, 1), (4, 4, 1, 1), (1, 1, 2, 0), (2, 4, 1, 0)],
)
def test_staleness_is_what_the_module_docstring_says(tmp_path, ga, steps_per_generation, num_iterations, lag):
    """TRL's defaults (steps_per_generation = gradient accumulation, one iteration): the next generation
    batch is drawn before this one is scored. Two iterations, or steps_per_generation twice the
    accumulation: it is drawn after."""
    lags: list[int] = []
    train("bandit", ga, steps_per_generation, num_iterations, save_steps=1000, stage_dir=tmp_path, lags=lags)
    assert max(lags) == lag and lags.count(lag) > len(lags) / 2
