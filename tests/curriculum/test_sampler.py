"""The curriculum sampler without models: TRL's repetition contract, what each strategy does with
planted evidence, the safeguards, and determinism (the property that makes ranks agree)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from trl.trainer.utils import RepeatSampler

from stages.arguments import CurriculumArgs
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout
from stages.curriculum.strategies import Buckets

STRATEGIES = ["uniform", "ordered", "adaptive", "band", "bandit", "ucb", "lp"]
LEVELS = np.repeat(np.arange(1, 7), 50)  # 300 prompts, 50 per level


def sampler_for(strategy: str, levels=LEVELS, layout=RepeatLayout(4, 6, 1), planned_generations: int = 100, **options) -> CurriculumSampler:
    return CurriculumSampler(
        CurriculumArgs(strategy=strategy, **options), list(levels), len(levels), layout, seed=7, planned_generations=planned_generations
    )


def stream(sampler: CurriculumSampler):
    """The index stream over as many epochs as asked for, as the trainer iterates it."""
    return itertools.chain.from_iterable(iter(sampler) for _ in itertools.count())


def run(sampler: CurriculumSampler, generations: int, pass_probability, seed: int = 0, after_record=lambda: None) -> list[np.ndarray]:
    """Draw `generations` chunks, score each prompt's group with Bernoulli(pass_probability(prompt)),
    record; return the chunks (distinct prompts of each generation batch)."""
    layout, indices, rng = sampler.layout, stream(sampler), np.random.default_rng(seed)
    per_chunk = layout.prompts_per_generation * layout.num_generations * layout.repeat_count
    chunks = []
    for _ in range(generations):
        emitted = np.fromiter(itertools.islice(indices, per_chunk), np.int64, per_chunk)
        once = emitted[: layout.prompts_per_generation * layout.num_generations]
        scores = (rng.random(len(once)) < pass_probability(once)).astype(float)
        sampler.record(once, scores)
        after_record()
        chunks.append(once[:: layout.num_generations])
    return chunks


def by_level(pass_rates: dict[int, float]):
    return lambda prompts: np.array([pass_rates[LEVELS[prompt]] for prompt in prompts])


# --- the repetition contract --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    "num_generations, generation_batch_size, steps_per_generation, num_iterations",
    [(2, 12, 1, 1), (4, 24, 2, 1), (8, 64, 1, 2), (3, 18, 3, 2), (16, 16, 1, 1)],
)
def test_every_strategy_keeps_trls_repetition_contract(strategy, num_generations, generation_batch_size, steps_per_generation, num_iterations):
    layout = RepeatLayout(num_generations, generation_batch_size // num_generations, steps_per_generation * num_iterations)
    sampler = sampler_for(strategy, layout=layout)
    emitted = np.array(list(sampler))
    assert len(emitted) == len(sampler) == (300 // layout.prompts_per_generation) * generation_batch_size * layout.repeat_count
    chunk_length = generation_batch_size * layout.repeat_count
    for chunk in emitted.reshape(-1, chunk_length):
        copies = chunk.reshape(layout.repeat_count, generation_batch_size)
        assert (copies == copies[0]).all()  # the chunk is repeated steps_per_generation x num_iterations times
        groups = copies[0].reshape(layout.prompts_per_generation, num_generations)
        assert (groups == groups[:, :1]).all()  # each prompt num_generations times in a row
        assert len(set(groups[:, 0])) == layout.prompts_per_generation  # distinct prompts per generation batch
    assert emitted.min() >= 0 and emitted.max() < 300


def test_uniform_is_trls_shuffle_index_for_index_over_several_epochs():
    layout = RepeatLayout(4, 7, 2)
    ours = sampler_for("uniform", layout=layout)
    trls = RepeatSampler(list(range(300)), mini_repeat_count=4, batch_size=7, repeat_count=2, shuffle=True, seed=7)
    for _epoch in range(3):
        assert list(ours) == list(trls)


# --- buckets ------------------------------------------------------------------------------------------


def test_buckets_by_value_quantile_and_category():
    by_value = Buckets.from_column([3, 1, 2, 1], "level", 10, 4)
    assert by_value.names == ["level=1", "level=2", "level=3"] and by_value.of_prompt.tolist() == [2, 0, 1, 0] and by_value.numeric
    quantiles = Buckets.from_column(list(np.linspace(0, 1, 1000)), "score", 4, 1000)
    assert len(quantiles.names) == 4 and quantiles.sizes.tolist() == [250, 250, 250, 250]
    categories = Buckets.from_column(["geometry", "algebra", "geometry"], "topic", 10, 3)
    assert categories.names == ["topic=algebra", "topic=geometry"] and not categories.numeric
    assert Buckets.from_column(None, None, 10, 5).names == ["all"]


def test_pacing_strategies_refuse_a_categorical_column():
    with pytest.raises(ValueError, match="numeric difficulty column"):
        sampler_for("ordered", levels=["a", "b"] * 150)


# --- strategies with planted evidence ------------------------------------------------------------------


def test_bandit_shares_move_toward_the_bucket_with_the_largest_advantage():
    # Level 4 sits at pass rate 1/2 (mean |advantage| 1/2 for 0/1 rewards); the others are (almost) solved or hopeless.
    planted = by_level({1: 1.0, 2: 1.0, 3: 0.97, 4: 0.5, 5: 0.03, 6: 0.0})
    sampler = sampler_for("bandit", min_share=0.02)
    assert np.allclose(sampler.bucket_share, 1 / 6)
    chunks = run(sampler, 150, planted)
    assert sampler.bucket_share.argmax() == 3 and sampler.bucket_share[3] > 0.5
    assert sampler.evidence.bucket_value.argmax() == 3
    late = np.concatenate(chunks[-50:])
    assert (LEVELS[late] == 4).mean() > 0.4  # the draws follow the shares


def test_ucb_prefers_the_high_advantage_bucket_yet_keeps_exploring():
    planted = by_level({1: 1.0, 2: 1.0, 3: 1.0, 4: 0.5, 5: 0.0, 6: 0.0})
    sampler = sampler_for("ucb", min_share=0.0)
    run(sampler, 150, planted)
    assert sampler.bucket_share.argmax() == 3
    assert (sampler.evidence.bucket_completions > 0).all()  # the exploration bonus visited every bucket


def test_minimum_share_is_a_floor_for_every_bucket():
    planted = by_level({1: 1.0, 2: 1.0, 3: 1.0, 4: 0.5, 5: 0.0, 6: 0.0})
    sampler = sampler_for("bandit", min_share=0.1, boltzmann_temperature=0.01)
    chunks = run(sampler, 200, planted)
    assert sampler.bucket_share.min() == pytest.approx(0.1) and sampler.bucket_share.sum() == pytest.approx(1.0)
    counts = np.bincount(LEVELS[np.concatenate(chunks[50:])], minlength=7)[1:]
    assert (counts / counts.sum() > 0.06).all()
    with pytest.raises(ValueError, match="exceeds 1"):
        sampler_for("bandit", min_share=0.2)


def test_default_floor_is_a_tenth_of_the_batch_however_many_buckets():
    for levels in (LEVELS, np.repeat(np.arange(1, 11), 30)):
        sampler = sampler_for("bandit", levels=levels)
        assert sampler.min_share * len(sampler.buckets.names) == pytest.approx(0.1)
    assert sampler_for("uniform").min_share == 0.0


def observe(sampler: CurriculumSampler, level: int, pass_rate: float) -> None:
    """One generation batch in which one group of 4 of a `level` prompt passed `pass_rate` of the time."""
    prompt = int(np.flatnonzero(LEVELS == level)[0])
    passes = round(4 * pass_rate)
    sampler.record([prompt] * 4, [1.0] * passes + [0.0] * (4 - passes))


def test_learning_progress_is_the_change_of_a_buckets_pass_rate_between_two_windows():
    sampler = sampler_for("lp", lp_window=2)
    for batch in range(4):
        observe(sampler, 1, 0.5)  # steady: no progress, though its groups have signal
        observe(sampler, 2, [0.0, 0.25, 0.5, 0.75][batch])  # learning: windows average 0.125 then 0.625
        observe(sampler, 3, 0.0)  # hopeless: no progress
    observe(sampler, 4, 0.5)  # one observation: not yet measured
    progress = sampler.strategy.progress()
    assert progress[:4] == pytest.approx([0.0, 0.5, 0.0, 1.0]) and (progress[4:] == 1.0).all()
    # Only the newest 2 x lp_window observations count: steady ones at 0.75 push the climb out of both windows.
    observe(sampler, 2, 0.75), observe(sampler, 2, 0.75)
    assert sampler.strategy.progress()[1] == pytest.approx(0.75 - 0.625)
    observe(sampler, 2, 0.75), observe(sampler, 2, 0.75)
    assert sampler.strategy.progress()[1] == pytest.approx(0.0)


def test_learning_progress_draws_the_buckets_whose_pass_rate_moves():
    # Level 3's pass rate climbs through training; the others stay where they are (levels 1-2 solved, 5-6 hopeless, 4 at 1/2).
    clock = {"drawn": 0}

    def planted(prompts: np.ndarray) -> np.ndarray:
        climbing = min(1.0, 0.1 + clock["drawn"] / 150)
        return np.array([{1: 1.0, 2: 1.0, 3: climbing, 4: 0.5, 5: 0.0, 6: 0.0}[LEVELS[prompt]] for prompt in prompts])

    sampler = sampler_for("lp", layout=RepeatLayout(8, 12, 1), lp_window=3)
    chunks = run(sampler, 100, planted, after_record=lambda: clock.update(drawn=clock["drawn"] + 1))
    late = LEVELS[np.concatenate(chunks[30:])]
    assert (late == 3).mean() > 0.3 and (late == 3).mean() > 2 * max((late == level).mean() for level in (1, 2, 5, 6))


def test_a_prior_warm_starts_prompts_and_buckets():
    prior = np.where(LEVELS <= 2, 1.0, np.where(LEVELS >= 5, 0.0, 0.5)).tolist()
    prior[0] = None  # not measured: stays unseen
    sampler = CurriculumSampler(CurriculumArgs(strategy="band"), list(LEVELS), len(LEVELS), RepeatLayout(4, 6, 1), seed=7, prior=prior)
    evidence = sampler.evidence
    assert np.isnan(evidence.prompt_pass_rate[0]) and evidence.prompt_pass_rate[1] == 1.0
    assert evidence.bucket_pass_rate.tolist() == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    assert evidence.bucket_value.tolist() == [0.0, 0.0, 0.5, 0.5, 0.0, 0.0]  # 2 p (1 - p)
    assert evidence.generations_recorded == 0 and (evidence.bucket_completions == 0).all()
    first = np.concatenate([sampler._chunk(0, position) for position in range(10)])
    assert set(LEVELS[first]) <= {1, 3, 4, 5, 6} and (np.isin(LEVELS[first], [3, 4])).mean() > 0.7  # band: mastered retired, learnable first
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CurriculumSampler(CurriculumArgs(strategy="band"), list(LEVELS), len(LEVELS), RepeatLayout(4, 6, 1), prior=[2.0] * len(LEVELS))


@pytest.mark.parametrize("strategy", ["uniform", "bandit"])
def test_replacement_draws_are_new_distinct_prompts_and_follow_the_strategy(strategy):
    sampler = sampler_for(strategy, layout=RepeatLayout(2, 6, 1))
    chunk = next(iter(np.array(list(itertools.islice(iter(sampler), 12)))[::2].reshape(1, -1)))
    replacements = sampler.draw_replacements(20, chunk)
    assert len(set(replacements.tolist())) == 20 and not set(replacements.tolist()) & set(chunk.tolist())
    assert sampler.draw_replacements(0, chunk).size == 0


def test_band_retires_mastered_prompts_and_revisits_unsolved_ones_rarely():
    planted = by_level({1: 1.0, 2: 1.0, 3: 0.5, 4: 0.5, 5: 0.0, 6: 0.0})
    sampler = sampler_for("band", min_share=0.0, revisit_probability=0.05, repeat_window=1)
    retired_by: list[set[int]] = []  # prompts retired once generation g was recorded
    chunks = run(sampler, 200, planted, after_record=lambda: retired_by.append(set(np.flatnonzero(sampler.evidence.prompt_pass_rate >= 1.0).tolist())))
    assert len(retired_by[-1]) > 50 and set(LEVELS[list(retired_by[-1])]) <= {1, 2, 3, 4}
    for generation in range(1, 200):
        assert not retired_by[generation - 1] & set(chunks[generation].tolist())  # a retired prompt is never drawn again
    late = LEVELS[np.concatenate(chunks[100:])]
    assert ((late == 3) | (late == 4)).mean() > 0.6  # the learnable band dominates
    assert ((late == 5) | (late == 6)).any()  # never-solved prompts still come back now and then
    assert sampler.strategy.class_counts.sum() == 300


def test_ordered_paces_from_easy_to_hard_and_ends_uniform():
    sampler = sampler_for("ordered", min_share=0.0, start_competence=0.2, ramp_fraction=0.5, planned_generations=100)
    chunks = run(sampler, 100, by_level(dict.fromkeys(range(1, 7), 0.5)))
    assert set(LEVELS[np.concatenate(chunks[:5])]) <= {1, 2}  # only the easiest fifth at the start
    assert np.allclose(sampler.bucket_share, 1 / 6)  # everything admitted after half the stage
    first_seen = [next(g for g, chunk in enumerate(chunks) if (LEVELS[chunk] == level).any()) for level in range(1, 7)]
    assert first_seen == sorted(first_seen)


def test_adaptive_reranks_buckets_by_online_pass_rate():
    # The column says level 1 is easiest, but the model finds level 6 easiest: ADCL's difficulty shift.
    planted = by_level({1: 0.1, 2: 0.2, 3: 0.3, 4: 0.5, 5: 0.7, 6: 0.95})
    sampler = sampler_for("adaptive", min_share=0.05, start_competence=0.2, ramp_fraction=1.0, reestimate_every=5, planned_generations=400)
    run(sampler, 60, planted)
    assert sampler.strategy.easiest_first.tolist()[:2] == [5, 4]  # levels 6 and 5 now rank easiest
    assert sampler.bucket_share[5] == sampler.bucket_share.max() and np.allclose(sampler.bucket_share[:3], 0.05)  # 1-3 only at the floor


def test_repeat_window_caps_how_often_a_prompt_comes_back():
    tiny_bucket = np.array([1] * 6 + [2] * 294)  # level 1 has 6 prompts, and the bandit loves it
    planted = lambda prompts: np.where(tiny_bucket[prompts] == 1, 0.5, 1.0)  # noqa: E731
    sampler = sampler_for("bandit", levels=tiny_bucket, layout=RepeatLayout(4, 4, 1), repeat_window=5, min_share=0.0, boltzmann_temperature=0.01)
    chunks = run(sampler, 100, planted)
    last_seen: dict[int, int] = {}
    for generation, chunk in enumerate(chunks):
        for prompt in chunk.tolist():
            assert generation - last_seen.get(prompt, -10**9) >= 5
            last_seen[prompt] = generation
    assert sum((tiny_bucket[chunk] == 1).sum() for chunk in chunks[20:]) > 50  # the cap, not the bandit, set the pace


def test_a_dataset_too_small_for_the_window_still_fills_every_chunk():
    sampler = sampler_for("bandit", levels=[1, 2, 3, 4, 5, 6], layout=RepeatLayout(2, 4, 1), repeat_window=10, min_share=0.0)
    chunks = run(sampler, 10, lambda prompts: np.full(len(prompts), 0.5))
    assert all(len(set(chunk.tolist())) == 4 for chunk in chunks)


def test_record_ignores_unscored_completions_and_uses_unnormalised_advantages():
    sampler = sampler_for("bandit", step_size=1.0)
    prompts = np.repeat([0, 60], 4)  # level 1 and level 2, four completions each
    sampler.record(prompts, [1, 0, np.nan, 1, 1, 1, 1, 1])
    assert sampler.evidence.prompt_pass_rate[0] == pytest.approx(2 / 3) and sampler.evidence.prompt_pass_rate[60] == 1.0
    assert sampler.evidence.bucket_value[0] == pytest.approx(4 / 9)  # |1-2/3|, |0-2/3|, |1-2/3| averaged
    assert sampler.evidence.bucket_value[1] == 0.0 and np.isnan(sampler.evidence.bucket_pass_rate[2])
    assert sampler.evidence.bucket_completions[:2].tolist() == [3, 4]


# --- determinism -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_and_same_evidence_give_the_same_stream_and_state(strategy):
    planted = by_level({1: 0.9, 2: 0.7, 3: 0.5, 4: 0.4, 5: 0.2, 6: 0.05})
    first, second = sampler_for(strategy), sampler_for(strategy)
    assert [c.tolist() for c in run(first, 80, planted)] == [c.tolist() for c in run(second, 80, planted)]
    first_state, second_state = first.state_dict(1, 30), second.state_dict(1, 30)  # 80 chunks = 50 + 30 in epoch 1
    assert first_state.keys() == second_state.keys()
    assert all(np.array_equal(first_state[key], second_state[key], equal_nan=first_state[key].dtype.kind == "f") for key in first_state)


def test_log_values_name_every_bucket():
    sampler = sampler_for("bandit")
    run(sampler, 3, by_level(dict.fromkeys(range(1, 7), 0.5)))
    values = sampler.log_values()
    assert {f"curriculum/share/level={level}" for level in range(1, 7)} <= set(values)
    assert sum(value for key, value in values.items() if "/share/" in key) == pytest.approx(1.0)
    assert all(0 <= value <= 1 for key, value in values.items() if "/pass_rate/" in key)
