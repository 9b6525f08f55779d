"""Throughput and agreement: gradus's `math_accuracy` against TRL's `accuracy_reward`, same completions;
and the census of gold answers that are not math, in every shipped dataset.

Run from the repository root:  python -m bench.reward_throughput [--repeats 3] [--append BENCHMARKS.md]

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
hardly change when other jobs share the machine. Ours in steady state is read from the live workers
(psutil) before and after the batch. The machine's load is measured, not guessed: the CPU seconds that
all its processes used during the timed runs (/proc/stat), less this benchmark's own, are what other
jobs took.

Agreement is checked on the rows both scorers can score: TRL returns a score (its raw gold parse is not
empty) and reads the gold as gradus does (the same expression); there every score must be the same.
The other rows are listed by kind. The census parses every gold of every shipped dataset, as the data
recipes deliver it (`answer`), with `rewards.math_scoring.parse_gold`, and lists those that are not math.
"""

from __future__ import annotations

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
from typing import Any, Callable

from data_recipes.math_sets import competition_row, gsm8k_row, math_row
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
# Each shipped data file with a gold column, and how its recipe turns a raw row into the gold.
GOLD_SOURCES: dict[str, Callable[[dict[str, Any]], str]] = {
    "gsm8k/train.jsonl": lambda raw: gsm8k_row(raw)["answer"],
    "gsm8k/test.jsonl": lambda raw: gsm8k_row(raw)["answer"],
    "gsm8k/test_socratic.jsonl": lambda raw: gsm8k_row(raw)["answer"],
    "math/test.jsonl": lambda raw: math_row(raw)["answer"],
    "math500/test.jsonl": lambda raw: math_row(raw)["answer"],
    "aime24/test.jsonl": lambda raw: competition_row(raw)["answer"],
    "amc23/test.jsonl": lambda raw: competition_row(raw)["answer"],
    "prm800k_samples/samples_prm800k.jsonl": lambda raw: raw["question"].get("ground_truth_answer") or "",
    "math_aps_samples/samples_math-aps.jsonl": lambda raw: str(raw["final_answer"]),
}


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
    """CPU time of this process, of its reaped children (a reward's workers once it is closed) and of
    its live children (the workers of a reward still open)."""
    import psutil

    times = os.times()
    live_children = sum(child.cpu_times().user + child.cpu_times().system for child in psutil.Process().children(recursive=True))
    return times.user + times.system + times.children_user + times.children_system + live_children


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (Linux /proc/stat: all but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle_and_iowait = fields[3] + fields[4]
    return (sum(fields[:8]) - idle_and_iowait) / os.sysconf("SC_CLK_TCK")


def time_trl(batch: Batch, earlier: Batch) -> tuple[float, float, list]:
    """Wall seconds, CPU seconds, scores."""
    from trl.rewards import accuracy_reward

    accuracy_reward(earlier.completions, solution=earlier.golds)
    cpu_before, started = cpu_seconds(), time.perf_counter()
    scores = accuracy_reward(batch.completions, solution=batch.golds)
    return time.perf_counter() - started, cpu_seconds() - cpu_before, scores


def time_gradus(batch: Batch, earlier: Batch | None) -> tuple[float, float, list]:
    """Wall seconds, CPU seconds and scores for `batch`, by a fresh reward that scores `earlier` first if
    given (its workers then started and warm); without `earlier`, the cold start (spawning) counts too."""
    reward = MathAccuracy()
    cpu_before = cpu_seconds()
    if earlier is not None:
        reward(None, earlier.completions, answer=earlier.golds)
        cpu_before = cpu_seconds()
    started = time.perf_counter()
    scores = reward(None, batch.completions, answer=batch.golds)
    elapsed = time.perf_counter() - started
    used = cpu_seconds() - cpu_before
    reward.close()
    return elapsed, used, scores


def same_reading(golds: list[str]) -> list[bool]:
    """Per gold: does TRL's raw parse (what its accuracy_reward compares against) give the expression
    gradus's parse gives? Where it does not, TRL scores against a fragment, or returns None."""
    from math_verify import parse

    from rewards.math_scoring import parse_gold

    readings = {}
    for gold in dict.fromkeys(golds):
        raw, ours = parse(gold), parse_gold(gold, 5, False)
        readings[gold] = bool(raw) and ours is not None and str(raw[0]) == str(ours[1][0])
    return [readings[gold] for gold in golds]


def agreement_report(batch: Batch, trl: list, ours: list) -> list[str]:
    """Per kind: how often each scorer gives the expected score; the rows both can score and whether they
    agree there; then every other kind of disagreement, with examples."""
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
    read_alike = same_reading(batch.golds)
    both = [i for i in range(len(ours)) if trl[i] is not None and read_alike[i]]
    agreeing = sum(trl[i] == ours[i] for i in both)
    lines += ["", f"Rows both can score (TRL returns a score and reads the gold as gradus does): {len(both)}; "
              f"same score on {agreeing} of them."]
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


def gold_census() -> list[str]:
    """Per shipped dataset: rows, distinct golds, and every gold that is not math under gradus's rule."""
    from rewards.math_scoring import parse_gold

    lines = ["| dataset | rows | distinct golds | not math (None) |", "|---|---:|---:|---|"]
    for name, gold_of in GOLD_SOURCES.items():
        with open(SHARED_DATA / name, encoding="utf-8") as source:
            golds = [gold_of(json.loads(line)) for line in source if line.strip()]
        distinct = list(dict.fromkeys(golds))
        unusable = [gold for gold in distinct if not gold or parse_gold(gold, 5, False) is None]
        listed = ", ".join(f"`{gold}`" if gold else "a missing gold" for gold in unusable) if unusable else "none"
        lines.append(f"| {name} | {len(golds)} | {len(distinct)} | {len(unusable)}: {listed} |")
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
    machine_before, ours_before, started = machine_busy_seconds(), cpu_seconds(), time.perf_counter()

    # Interleaved, so that whatever else runs on the machine slows every scorer alike.
    runs: dict[str, list[tuple[float, float]]] = {TRL: [], COLD: [], STEADY: []}
    for _ in range(arguments.repeats):
        *trl_run, trl_scores = time_trl(batch, earlier)
        *cold_run, _ = time_gradus(batch, earlier=None)
        *steady_run, our_scores = time_gradus(batch, earlier)
        for name, run in ((TRL, trl_run), (COLD, cold_run), (STEADY, steady_run)):
            runs[name].append(tuple(run))
    measured = time.perf_counter() - started
    others = (machine_busy_seconds() - machine_before) - (cpu_seconds() - ours_before)
    wall = {name: statistics.median(elapsed for elapsed, _ in results) for name, results in runs.items()}
    cpu = {name: statistics.median(used for _, used in results) for name, results in runs.items()}
    cores = os.cpu_count() or 1

    lines = [
        f"## Rewards: math_accuracy vs TRL's accuracy_reward ({datetime.date.today()})",
        "",
        f"Command: `python -m bench.reward_throughput --repeats {arguments.repeats}`  ",
        f"Machine: {cores} CPU cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}; "
        f"{len(batch.golds)} completions: {PROBLEMS} MATH-500 problems x {GENERATIONS} (2 of each kind below); "
        f"median of {arguments.repeats} interleaved runs.  ",
        f"Load: other jobs used {others:.0f} CPU s of the {cores * measured:.0f} the machine had during the "
        f"{measured:.0f} s of timed runs ({others / measured:.2f} cores on average); load average before the run {load_before:.2f}.",
        "",
        "| scorer | wall s | completions/s | vs TRL (wall) | CPU s, all processes | vs TRL (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {wall[name]:.2f} | {len(batch.golds) / wall[name]:.0f} | {wall[TRL] / wall[name]:.2f}x "
            f"| {cpu[name]:.2f} | {cpu[TRL] / cpu[name]:.2f}x |"
            for name in runs
        ),
        "",
        *agreement_report(batch, trl_scores, our_scores),
        "",
        "Golds that are not math (every completion scores None), per shipped dataset, as its recipe delivers them:",
        "",
        *gold_census(),
        "",
    ]
    print("\n".join(lines))
    if arguments.append:
        with open(arguments.append, "a", encoding="utf-8") as markdown:
            markdown.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
