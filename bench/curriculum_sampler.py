"""The curriculum sampler's own cost per training step, on a dataset of one million prompts.

One step here is what the sampler does for one GRPO generation batch: draw the next chunk (pulling
its indices through the RepeatSampler-shaped stream, as the dataloader does) and record the batch's
scores. No model, no trainer: the figure is the sampler's overhead on top of whatever a step costs.
Scores are Bernoulli draws from a pass rate that falls with the level, so the adaptive strategies
really adapt while they are timed.

    python -m bench.curriculum_sampler [--prompts 1000000] [--steps 2000]

Prints, per strategy and batch shape, the mean CPU time of this thread per step (immune to other
processes competing for the cores), the wall-clock median and 99th percentile (which include any
preemption), and the one-off construction time. The budget (under 1 ms) is judged on the CPU mean.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from stages.arguments import CurriculumArgs
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout

STRATEGIES = ["uniform", "ordered", "adaptive", "band", "bandit", "ucb"]
# (prompts per generation batch, generations per prompt): the quickstart's 8 x 8 and a larger 64 x 8.
SHAPES = [(8, 8), (64, 8)]
PASS_RATE_BY_LEVEL = np.array([0.0, 0.95, 0.8, 0.6, 0.4, 0.2, 0.05])


def time_steps(
    strategy: str, levels: np.ndarray, prompts_per_generation: int, num_generations: int, steps: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """Construction seconds, then CPU and wall milliseconds of each step."""
    started = time.perf_counter()
    sampler = CurriculumSampler(
        CurriculumArgs(strategy=strategy), levels, len(levels), RepeatLayout(num_generations, prompts_per_generation, 1),
        seed=0, planned_generations=steps,
    )
    construction = time.perf_counter() - started
    stream = itertools.chain.from_iterable(iter(sampler) for _ in itertools.count())
    per_batch = prompts_per_generation * num_generations
    pass_rate = PASS_RATE_BY_LEVEL[levels]
    outcomes = np.random.default_rng(1)
    cpu_seconds, wall_seconds = np.empty(steps), np.empty(steps)
    for step in range(steps):
        uniforms = outcomes.random(per_batch)  # the "model": not part of the sampler's cost
        cpu_started, wall_started = time.thread_time(), time.perf_counter()
        indices = np.fromiter(itertools.islice(stream, per_batch), np.int64, per_batch)
        scores = uniforms < pass_rate[indices]
        sampler.record(indices, scores)
        cpu_seconds[step], wall_seconds[step] = time.thread_time() - cpu_started, time.perf_counter() - wall_started
    return construction, cpu_seconds * 1e3, wall_seconds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=2000)
    options = parser.parse_args()
    levels = np.random.default_rng(0).integers(1, 7, options.prompts)
    print(f"{options.prompts:,} prompts in 6 levels, {options.steps} steps per row; milliseconds per step (draw + record)")
    print(f"{'strategy':<10} {'batch':>6} {'cpu mean':>9} {'wall median':>12} {'wall p99':>9} {'build s':>8}")
    worst_mean = 0.0
    for strategy in STRATEGIES:
        for prompts_per_generation, num_generations in SHAPES:
            construction, cpu, wall = time_steps(strategy, levels, prompts_per_generation, num_generations, options.steps)
            worst_mean = max(worst_mean, cpu.mean())
            print(
                f"{strategy:<10} {f'{prompts_per_generation}x{num_generations}':>6} {cpu.mean():9.3f} "
                f"{np.median(wall):12.3f} {np.percentile(wall, 99):9.3f} {construction:8.2f}"
            )
    print(f"worst CPU mean per step: {worst_mean:.3f} ms ({'under' if worst_mean < 1 else 'OVER'} the 1 ms budget)")


if __name__ == "__main__":
    main()
