"""The `relift:` block as `gradus plan` sees it, and the demonstration batch its SFT steps train on."""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, load_manifest
from stages.models import build_tokenizer
from stages.arguments import ReliftArgs
from stages.relift import HardBuffer, ReliftCallback, demonstration_batch
from tests.conftest import rl_stage_manifest


def manifest_with(tmp_path, relift: dict, kind: str = "grpo") -> object:
    return rl_stage_manifest(tmp_path, kind, relift=relift)


def test_a_valid_block_passes_the_plan(tmp_path):
    assert load_manifest(manifest_with(tmp_path, {"sft_batch_size": 8, "every_n_steps": 2})).stages[0].relift == {"sft_batch_size": 8, "every_n_steps": 2}


@pytest.mark.parametrize(
    "relift, kind, message",
    [
        ({"demonstration_column": "solution"}, "grpo", "field 'relift.demonstration_column': 'solution' is not a column of the data; it has"),
        ({"signal_reward": "math_acuracy"}, "grpo", "field 'relift.signal_reward': 'math_acuracy' is not one of the stage's rewards"),
        ({"sft_batch_sise": 8}, "grpo", "field 'relift.sft_batch_sise': extra inputs are not permitted (did you mean 'sft_batch_size'?)"),
        ({"every_n_steps": 0}, "grpo", "field 'relift.every_n_steps': input should be greater than or equal to 1"),
        ({"lr_scheduler_type": "cosine"}, "grpo", "field 'relift.lr_scheduler_type': 'cosine' decays learning_rate, which is unset"),
        ({"learning_rate": 1e-3, "lr_scheduler_type": "cosine_with_restarts"}, "grpo", "field 'relift.lr_scheduler_type': input should be 'constant', 'linear' or 'cosine'"),
        ({}, "sft", "field 'relift': sft stages take no relift block"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_field(tmp_path, relift, kind, message):
    with pytest.raises(ManifestError) as error:
        load_manifest(manifest_with(tmp_path, relift, kind))
    assert message.lower() in str(error.value).lower() and "\n" not in str(error.value)


@pytest.mark.parametrize("launch, message", [
    ({"profile": "ddp", "num_processes": 3}, "field 'relift.sft_batch_size': 8 is not a multiple of the 3 processes"),
    ({"profile": "zero2"}, "field 'launch.profile': relift runs on one process or DDP"),
])
def test_a_launch_relift_cannot_run_on_is_refused_by_plan(tmp_path, launch, message):
    """Checked against the planned launch, not when the stage starts (after the stages before it trained)."""
    with pytest.raises(ManifestError) as error:
        load_manifest(rl_stage_manifest(tmp_path, relift={"sft_batch_size": 8}, launch=launch))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_solved_replay_the_processes_cannot_split_is_refused_by_plan(tmp_path):
    with pytest.raises(ManifestError) as error:
        load_manifest(rl_stage_manifest(tmp_path, relift={"sft_batch_size": 4, "replay_solved": 3}, launch={"profile": "ddp", "num_processes": 2}))
    message = "field 'relift.replay_solved': 3 is not a multiple of the 2 processes"
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("schedule, rates", [
    ("constant", [1e-3, 1e-3, 1e-3, 1e-3]),
    ("linear", [1e-3, 7.5e-4, 5e-4, 0.0]),
    ("cosine", [1e-3, 1e-3 * (0.5 + 0.5 * 2 ** -0.5), 5e-4, 0.0]),
])
def test_the_sft_learning_rate_decays_from_learning_rate_to_zero_at_the_last_step(schedule, rates):
    callback = ReliftCallback(ReliftArgs(learning_rate=1e-3, lr_scheduler_type=schedule), HardBuffer(1, 0.5), dataset=None)
    assert [callback.learning_rate(step, max_steps=40) for step in (0, 10, 20, 40)] == pytest.approx(rates, abs=1e-12)


def test_the_loss_falls_on_the_demonstration_and_its_eos_only():
    tokenizer = build_tokenizer("llama")  # the tiny model's character tokenizer
    batch = demonstration_batch(tokenizer, [{"prompt": "1+2=", "sol": "3"}, {"prompt": "10+20=", "sol": "30"}], "sol", max_length=64)
    for row, (prompt, solution) in enumerate([("1+2=", "3"), ("10+20=", "30")]):
        prompt_length, length = len(tokenizer(text=prompt)["input_ids"]), int(batch["attention_mask"][row].sum())
        labels = batch["labels"][row]
        assert (labels[:prompt_length] == -100).all() and (labels[length:] == -100).all()
        assert labels[prompt_length:length].tolist() == tokenizer(text=prompt + solution)["input_ids"][prompt_length:] + [tokenizer.eos_token_id]


def test_a_group_fails_only_when_none_of_its_scored_completions_passes():
    buffer = HardBuffer(num_prompts=5, pass_threshold=0.5)
    buffer.record([0, 0, 1, 1, 2, 2, 3, 3], [0.0, 0.0, 0.0, 1.0, float("nan"), 0.0, float("nan"), float("nan")])
    buffer.record([4, 4, 0, 0], [0.2, 0.4, 0.0, 0.0])  # 0 is already waiting: not queued twice
    assert buffer.waiting == [0, 2, 4] and buffer.counters["groups_failed"] == 4 and buffer.counters["groups_seen"] == 5
    assert buffer.take(2) == [0, 2] and buffer.waiting == [4] and buffer.used_share == pytest.approx(2 / 5)



def test_solved_replay_draws_only_prompts_whose_latest_group_passed_and_the_same_ones_again():
    buffer = HardBuffer(num_prompts=6, pass_threshold=0.5)
    buffer.record([0, 0, 1, 1, 2, 2, 3, 3], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # 0, 2, 3 pass; 1 fails
    buffer.record([3, 3, 4, 4], [0.0, 0.0, float("nan"), float("nan")])  # 3 fails now; 4 is unscored
    assert buffer.solved.tolist() == [True, False, True, False, False, False]
    twin = HardBuffer(num_prompts=6, pass_threshold=0.5)
    twin.load_state_dict(buffer.state_dict())
    drawn = buffer.draw_solved(5, seed=7)
    assert sorted(drawn) == [0, 2] and drawn == twin.draw_solved(5, seed=7)  # at most what is solved, as a resume draws it
    assert buffer.draw_solved(1, seed=7, multiple=2) == []  # one row cannot be split over two ranks
    assert buffer.counters["solved_replayed"] == 2 and buffer.replayed.tolist() == [True, False, True, False, False, False]
    assert buffer.used_share == 0  # the share of failed prompts' demonstrations, ReLIFT's saving, counts no replay
    draws = {tuple(buffer.draw_solved(1, seed=seed)) for seed in range(20)}
    assert draws == {(0,), (2,)}  # the seed decides which
