"""Throughput and agreement: gradus's `math_accuracy` against TRL's `accuracy_reward`, same completions.

Run from the repository root:  .venv/bin/python bench/reward_throughput.py [--repeats 3] [--append BENCHMARKS.md]

The 2,000 completions are shaped like a GRPO batch: 250 MATH-500 problems (a seeded half) with 8
completions each, TRL's default num_generations. Per problem: the dataset's worked solution (it ends in
\\boxed{answer}), twice (once with a preamble); two short correct answers (the problem restated, then
"so the answer is $\\boxed{answer}$" or "The final answer is \\boxed{answer}"); the same two phrasings
with other problems' answers; and the first third and the first two thirds of the worked solution with its
boxes removed (a generation cut off by max_tokens: no answer yet). Each completion is labelled with what a
correct scorer should say, so disagreements can be settled, not just counted.

TRL's reward is called as a trainer calls it, in the main thread (signal timeouts on). Ours runs with its
defaults: a batch this large goes to its pool of 2 worker processes. Timed three ways, interleaved:
  * TRL, after scoring a batch built the same way from the other 250 problems, as a trainer's earlier
    steps would have (math-verify's ANTLR parser builds its caches as it goes; a fresh process is slower);
  * ours from a cold start: new worker processes, spawned and warmed by this batch itself;
  * ours in steady state: a fresh reward first scores that other batch (its workers started and warm, as
    after earlier steps), then this one, whose golds it has not parsed yet.
CPU seconds add up every process (the workers' included): they measure work, and unlike wall time they
hardly change when other jobs share the machine. Ours in steady state is a difference between two runs
(with and without this batch), because a worker's CPU time is only known once it exits.
"""

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rewards.math_accuracy import MathAccuracy

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GRADUS_SHARED_DATA", REPO.parent / "shared" / "data"))
KINDS = ("worked solution", "short correct", "short wrong", "cut off")
PROBLEMS = 250
GENERATIONS = 8  # TRL's default num_generations: a GRPO batch holds this many completions per prompt
EXAMPLES_SHOWN = 3
TRL = "TRL accuracy_reward, warm (main thread)"
COLD = "gradus math_accuracy, cold start (spawns 2 workers)"
STEADY = "gradus math_accuracy, steady state (2 warm workers, new golds)"


@dataclass
class Batch:
    completions: list[list[dict]]  # conversational, as TRL passes them
    golds: list[str]
    kinds: list[str]
    expected: list[float]  # the score a correct scorer gives


def grpo_batch(problems: list[dict], answer_pool: list[dict], rng: random.Random) -> Batch:
    batch = Batch([], [], [], [])
    for problem in problems:
        gold, solution = problem["answer"], problem["solution"]
        restated = f"We are asked: {problem['problem'][:60]}..."  # keeps short answers to different problems distinct
        first_wrong, second_wrong = (other["answer"] for other in rng.sample(answer_pool, 2))
        group = [
            ("worked solution", solution, 1.0),
            ("worked solution", "Let me solve this step by step.\n\n" + solution, 1.0),
            ("short correct", f"{restated} Working through it, so the answer is $\\boxed{{{gold}}}$.", 1.0),
            ("short correct", f"{restated} The final answer is \\boxed{{{gold}}}", 1.0),
            ("short wrong", f"{restated} Working through it, so the answer is $\\boxed{{{first_wrong}}}$.", float(first_wrong == gold)),
            ("short wrong", f"{restated} The final answer is \\boxed{{{second_wrong}}}", float(second_wrong == gold)),
            ("cut off", solution[: len(solution) // 3].replace("\\boxed", ""), 0.0),
            ("cut off", solution[: 2 * len(solution) // 3].replace("\\boxed", ""), 0.0),
        ]
        for kind, text, label in group:
            batch.completions.append([{"role": "assistant", "content": text}])
            batch.golds.append(gold)
            batch.kinds.append(kind)
            batch.expected.append(label)
    return batch


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children: a reward's workers count once it is closed."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def time_trl(batch: Batch, earlier: Batch) -> tuple[float, float, list]:
    """Wall seconds, CPU seconds, scores."""
    from trl.rewards import accuracy_reward

    accuracy_reward(earlier.completions, solution=earlier.golds)
    cpu_before, started = cpu_seconds(), time.perf_counter()
    scores = accuracy_reward(batch.completions, solution=batch.golds)
    return time.perf_counter() - started, cpu_seconds() - cpu_before, scores


def time_gradus(batch: Batch | None, earlier: Batch | None) -> tuple[float, float, list]:
    """Wall seconds for `batch`, CPU seconds for the reward's whole life, and scores, of a fresh reward
    that scores `earlier` first if given. CPU time covers the whole life because the workers' CPU time is
    counted only when they exit: subtract a run without `batch` to get the batch's share.
    """
    reward = MathAccuracy()
    cpu_before = cpu_seconds()
    if earlier is not None:
        reward(None, earlier.completions, answer=earlier.golds)
    started, scores = time.perf_counter(), []
    if batch is not None:
        scores = reward(None, batch.completions, answer=batch.golds)
    elapsed = time.perf_counter() - started
    reward.close()
    return elapsed, cpu_seconds() - cpu_before, scores


def agreement_report(batch: Batch, trl: list, ours: list) -> list[str]:
    """Per kind: how often each scorer gives the expected score; then every kind of disagreement, with examples."""
    lines = ["| kind | n | TRL right | gradus right | TRL None | gradus None |", "|---|---:|---:|---:|---:|---:|"]
    for kind in KINDS:
        rows = [i for i, row_kind in enumerate(batch.kinds) if row_kind == kind]
        lines.append(
            f"| {kind} | {len(rows)} | {sum(trl[i] == batch.expected[i] for i in rows)} "
            f"| {sum(ours[i] == batch.expected[i] for i in rows)} "
            f"| {sum(trl[i] is None for i in rows)} | {sum(ours[i] is None for i in rows)} |"
        )
    lines.append(
        f"| all | {len(ours)} | {sum(t == e for t, e in zip(trl, batch.expected))} "
        f"| {sum(o == e for o, e in zip(ours, batch.expected))} | {trl.count(None)} | {ours.count(None)} |"
    )
    disagreements = [i for i in range(len(ours)) if trl[i] != ours[i]]
    lines += ["", f"Disagreements: {len(disagreements)} of {len(ours)}, by (kind, TRL, gradus, expected):"]
    patterns = Counter((batch.kinds[i], trl[i], ours[i], batch.expected[i]) for i in disagreements)
    for (kind, trl_score, our_score, expected_score), count in patterns.most_common():
        golds = dict.fromkeys(
            batch.golds[i] for i in disagreements if (batch.kinds[i], trl[i], ours[i], batch.expected[i]) == (kind, trl_score, our_score, expected_score)
        )
        shown = ", ".join(f"`{gold}`" for gold in list(golds)[:EXAMPLES_SHOWN])
        lines.append(f"- {count} x {kind}: TRL {trl_score}, gradus {our_score}, expected {expected_score}; golds e.g. {shown}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append", type=Path, help="append the results to this markdown file")
    arguments = parser.parse_args()

    with open(SHARED_DATA / "math500" / "test.jsonl", encoding="utf-8") as source:
        math500 = [json.loads(line) for line in source]
    rng = random.Random(0)
    shuffled = rng.sample(math500, len(math500))
    batch = grpo_batch(shuffled[:PROBLEMS], math500, rng)
    earlier = grpo_batch(shuffled[PROBLEMS : 2 * PROBLEMS], math500, rng)
    load_before = os.getloadavg()[0]

    # Interleaved, so that whatever else runs on the machine slows every scorer alike.
    runs: dict[str, list[tuple[float, float]]] = {TRL: [], COLD: [], STEADY: []}
    for _ in range(arguments.repeats):
        *trl_run, trl_scores = time_trl(batch, earlier)
        *cold_run, _ = time_gradus(batch, earlier=None)
        steady_seconds, steady_and_earlier_cpu, our_scores = time_gradus(batch, earlier)
        _, earlier_cpu, _ = time_gradus(None, earlier)
        for name, run in ((TRL, trl_run), (COLD, cold_run), (STEADY, (steady_seconds, steady_and_earlier_cpu - earlier_cpu))):
            runs[name].append(tuple(run))
    wall = {name: statistics.median(elapsed for elapsed, _ in results) for name, results in runs.items()}
    cpu = {name: statistics.median(used for _, used in results) for name, results in runs.items()}

    lines = [
        f"## Rewards: math_accuracy vs TRL's accuracy_reward ({datetime.date.today()})",
        "",
        f"Command: `.venv/bin/python bench/reward_throughput.py --repeats {arguments.repeats}`  ",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}; "
        f"{len(batch.golds)} completions: {PROBLEMS} MATH-500 problems x {GENERATIONS} (2 of each kind below); "
        f"median of {arguments.repeats} interleaved runs; load average before the run {load_before:.2f}.",
        "",
        "| scorer | wall s | completions/s | vs TRL | CPU s, all processes |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {wall[name]:.2f} | {len(batch.golds) / wall[name]:.0f} | {wall[TRL] / wall[name]:.2f}x "
            f"| {cpu[name]:.2f} |"
            for name in runs
        ),
        "",
        *agreement_report(batch, trl_scores, our_scores),
        "",
    ]
    print("\n".join(lines))
    if arguments.append:
        with open(arguments.append, "a", encoding="utf-8") as markdown:
            markdown.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
