"""`prm_label` stage: step labels for a process reward model, from Monte-Carlo rollouts of the policy.

The stage samples `num_solutions` solutions per training problem from its model, cuts each into steps
at `step_separator`, and estimates each step's quality by rolling out `rollouts_per_step` (k)
continuations from the prefix that ends with it (prompt + steps[:i+1] joined by the separator, plus
the separator) and scoring their final answers against the gold `answer` with `math_accuracy`.

Math-Shepherd (Wang et al. 2024, arXiv 2312.08935), `method: mc`: every prefix is rolled out. The soft
label of step i is the fraction of its k rollouts that reach the gold answer ("soft estimation"), the
hard label whether any did ("hard estimation"). Cost: k x (steps - 1) rollouts a solution.

OmegaPRM (Luo et al. 2024, arXiv 2406.06592), `method: binary_search`: assuming that a prefix which
cannot reach the answer stays unable to as steps are added, the first wrong step is found by binary
search over the prefixes (a prefix is good when any of its k rollouts reaches the gold answer). Steps
before the first bad prefix are labelled correct, it and every later step wrong. Cost: at most
k x ceil(log2(steps)) rollouts for a solution whose answer is wrong, none for one whose answer is right.
All solutions of a shard are searched in lockstep, so each round's probes are generated in one batch.

Where gradus differs from the papers:
  * A step that holds the final answer (a `\\boxed{}`) ends the solution; its label is the solution's
    own score, with no rollouts (Math-Shepherd's last step; steps after it are dropped). Blank pieces
    (two separators in a row) are not steps.
  * binary_search trusts a right final answer: all steps of such a solution are labelled correct
    without rollouts, as OmegaPRM only searches solutions that fail. A right answer reached through a
    wrong step (two errors that cancel) is therefore labelled all correct; `mc` can catch some of those.
  * binary_search records the soft values it measured; a step it did not roll out gets its hard label
    as soft label (1.0 before the first error, 0.0 from it on). The `measured` column says which are
    which. OmegaPRM's MCTS (tree reuse of rollouts, the alpha/beta selection score) is not reproduced:
    only its binary search over one sampled solution is.
  * `balance` (OmegaPRM "balances the positive and negative examples"; the paper does not give the
    rule): after labelling, rows whose steps are all of the majority class are dropped, in a seeded
    random order, while dropping one brings the positive and negative step counts closer. Rows that
    hold both classes are always kept. Works with either method.

The dataset (`<stage>/dataset`, HF `save_to_disk`) has one row per labelled solution:
    prompt       the prompt text (a chat prompt is rendered with the tokenizer's template)
    answer       gold answer;  level: the data's `level` (None where it has none)
    steps        list[str], each step's text without the separator
    labels       list[float] in [0, 1], soft;  hard_labels: list[bool]
    rollouts     rollouts spent on this row
    measured     list[bool]: which soft labels come from rollouts or the final answer (not inferred)
    problem_index  the problem's row in the stage's data
The PRM trainer reads prompt, steps, labels and the same separator. bench/prm_labels.py measures both
methods' labels against the synthetic task's known step truth (BENCHMARKS.md).

Layout of the stage directory, which is also how a rerun resumes:
    partial/shard-<n>.json   problems [n * problems_per_shard, (n + 1) * problems_per_shard), labelled,
                             written atomically when the shard is finished; a rerun skips these
    dataset/                 all shards assembled (and balanced) at the end
    metrics.json, done.json
Each shard is seeded by its number, so a resumed stage labels exactly what an uninterrupted one would,
and the number of processes changes nothing (both tested on CPU; GPU kernels may add nondeterminism).
With several processes, each labels its share of the shards and the main process assembles them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from data_recipes.math_sets import last_boxed
from rewards.steps import prompt_text, split_steps
from stages import common
from stages.arguments import PRMLabelArgs, StageFile
from stages.common import Sampler, policy_sampler

log = logging.getLogger("gradus")

# ---------------------------------------------------------------------------------------------------
# Labelling logic: pure functions of the solutions and a rollout oracle (tests script the oracle).
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Solution:
    """One sampled solution, cut into steps."""

    steps: list[str]
    final_value: float  # its own score: 1.0 if its final answer is right
    terminal: bool  # its last step holds a final answer (so that prefix needs no rollouts)


@dataclasses.dataclass
class StepLabels:
    labels: list[float]
    hard_labels: list[bool]
    measured: list[bool]
    rollouts: int

    @property
    def first_error(self) -> int:
        """Index of the first step labelled wrong (len(steps) if none is)."""
        return next((index for index, hard in enumerate(self.hard_labels) if not hard), len(self.hard_labels))


RolloutOracle = Callable[[list[tuple[int, int]]], list[list[bool]]]
"""Given requests (solution index, number of steps in the prefix), the outcomes of the rollouts from
each prefix: one bool per rollout, True when it reached the gold answer. Called with many requests at
once, so it can batch them."""


def label_mc(solutions: Sequence[Solution], rollouts: RolloutOracle) -> list[StepLabels]:
    """Math-Shepherd: roll out every prefix; soft = fraction right, hard = any right."""
    requests = [
        (index, length)
        for index, solution in enumerate(solutions)
        for length in range(1, len(solution.steps) + 1)
        if not (solution.terminal and length == len(solution.steps))
    ]
    outcomes = dict(zip(requests, rollouts(requests) if requests else [], strict=True))
    results = []
    for index, solution in enumerate(solutions):
        labels, hard_labels, spent = [], [], 0
        for length in range(1, len(solution.steps) + 1):
            if (index, length) in outcomes:
                trials = outcomes[(index, length)]
                spent += len(trials)
                labels.append(sum(trials) / len(trials) if trials else 0.0)
                hard_labels.append(any(trials))
            else:  # the terminal step: the solution's own answer decides
                labels.append(float(solution.final_value))
                hard_labels.append(solution.final_value > 0)
        results.append(StepLabels(labels, hard_labels, [True] * len(labels), spent))
    return results


def label_binary_search(solutions: Sequence[Solution], rollouts: RolloutOracle) -> list[StepLabels]:
    """OmegaPRM: binary search for the first bad prefix, all solutions searched in lockstep so each
    round's probes are rolled out in one batch."""
    low = [0] * len(solutions)  # the first bad step lies in [low, high]; high == len(steps) means none
    high = [len(solution.steps) for solution in solutions]
    measured: list[dict[int, float]] = [{} for _ in solutions]
    spent = [0] * len(solutions)
    for index, solution in enumerate(solutions):
        if solution.terminal and solution.steps:
            last = len(solution.steps) - 1
            measured[index][last] = float(solution.final_value)
            if solution.final_value > 0:
                low[index] = len(solution.steps)
            else:
                high[index] = last
    while True:
        probes = [(index, (low[index] + high[index]) // 2) for index in range(len(solutions)) if low[index] < high[index]]
        if not probes:
            break
        outcomes = rollouts([(index, step + 1) for index, step in probes])
        for (index, step), trials in zip(probes, outcomes, strict=True):
            spent[index] += len(trials)
            measured[index][step] = sum(trials) / len(trials) if trials else 0.0
            if any(trials):
                low[index] = step + 1
            else:
                high[index] = step
    results = []
    for index, solution in enumerate(solutions):
        first_error = low[index]
        hard_labels = [step < first_error for step in range(len(solution.steps))]
        labels = [measured[index].get(step, float(hard)) for step, hard in enumerate(hard_labels)]
        is_measured = [step in measured[index] for step in range(len(solution.steps))]
        results.append(StepLabels(labels, hard_labels, is_measured, spent[index]))
    return results


LABELLERS: dict[str, Callable[[Sequence[Solution], RolloutOracle], list[StepLabels]]] = {
    "mc": label_mc,
    "binary_search": label_binary_search,
}


def balance_rows(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Rows kept by `balance`: single-class rows of the majority class are dropped (seeded order) while
    dropping one brings positive and negative step counts closer. Order is preserved."""
    positives = sum(sum(row["hard_labels"]) for row in rows)
    negatives = sum(len(row["hard_labels"]) for row in rows) - positives
    majority = positives > negatives
    candidates = [index for index, row in enumerate(rows) if row["hard_labels"] and all(hard == majority for hard in row["hard_labels"])]
    random.Random(seed).shuffle(candidates)
    dropped = set()
    for index in candidates:
        surplus = positives - negatives if majority else negatives - positives  # negative once the majority flipped
        size = len(rows[index]["hard_labels"])
        if size < 2 * surplus:  # after dropping, |surplus - size| < surplus
            dropped.add(index)
            if majority:
                positives -= size
            else:
                negatives -= size
    return [row for index, row in enumerate(rows) if index not in dropped]


# ---------------------------------------------------------------------------------------------------
# The model side: sampling solutions and rolling out prefixes.
# ---------------------------------------------------------------------------------------------------


class PrefixRollouts:
    """A `RolloutOracle` backed by a sampler: k continuations of each prefix, scored with `math_accuracy`
    as prefix + continuation against the gold answer of the solution's problem."""

    def __init__(self, sample: Sampler, score: Callable, k: int, separator: str,
                 prompts: list[str], answers: list[str], solutions: Sequence[Solution]) -> None:
        self.sample, self.score, self.k, self.separator = sample, score, k, separator
        self.prompts, self.answers, self.solutions = prompts, answers, solutions  # prompts and answers: one per solution

    def prefix(self, index: int, length: int) -> str:
        return self.separator.join(self.solutions[index].steps[:length]) + self.separator

    def __call__(self, requests: list[tuple[int, int]]) -> list[list[bool]]:
        k = self.k
        texts = [self.prompts[index] + self.prefix(index, length) for index, length in requests]
        order = sorted(range(len(requests)), key=lambda position: len(texts[position]))  # similar lengths batch with less padding
        continuations = self.sample([texts[position] for position in order], k)
        repeated = [requests[position] for position in order for _ in range(k)]
        scores = self.score(
            prompts=[self.prompts[index] for index, _ in repeated],
            completions=[self.prefix(*request) + text for request, text in zip(repeated, continuations, strict=True)],
            answer=[self.answers[index] for index, _ in repeated],
        )
        outcomes: list[list[bool]] = [[] for _ in requests]
        for rank, position in enumerate(order):
            outcomes[position] = [bool(value) for value in scores[rank * k : (rank + 1) * k]]
        return outcomes


def sample_solutions(
    problems: list[dict[str, Any]], sample: Sampler, score: Callable, args: PRMLabelArgs,
) -> tuple[list[Solution], list[dict[str, Any]], dict[str, int]]:
    """Sample `num_solutions` solutions to each problem (a dict with prompt text, answer, level and
    problem_index), cut them into steps and score them. Returns the solutions, the problem of each, and
    counts: a problem whose gold `math_accuracy` cannot parse is skipped (its solutions would all score
    None), and so is an empty solution (no step)."""
    n = args.num_solutions
    completions = sample([problem["prompt"] for problem in problems], n)
    owner_of = [position for position in range(len(problems)) for _ in range(n)]
    steps = [split_steps(text, args.step_separator) for text in completions]
    finals = score(
        prompts=[problems[owner]["prompt"] for owner in owner_of],
        completions=[args.step_separator.join(each) for each in steps],
        answer=[problems[owner]["answer"] for owner in owner_of],
    )
    unscorable = {owner for owner, final in zip(owner_of, finals) if final is None}
    scorable = [index for index, owner in enumerate(owner_of) if owner not in unscorable]
    kept = [index for index in scorable if steps[index]]
    solutions = [Solution(steps[index], float(finals[index]), last_boxed(steps[index][-1]) is not None) for index in kept]
    counts = {
        "unscorable_problems": len(unscorable),
        "empty_solutions": len(scorable) - len(kept),
        "correct_solutions": sum(solution.final_value > 0 for solution in solutions),
    }
    return solutions, [problems[owner_of[index]] for index in kept], counts


def label_problems(
    problems: list[dict[str, Any]], sample: Sampler, score: Callable, args: PRMLabelArgs,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Sample solutions to `problems`, label their steps with `args.method`; the dataset rows and counts."""
    solutions, owners, counts = sample_solutions(problems, sample, score, args)
    oracle = PrefixRollouts(
        sample, score, args.rollouts_per_step, args.step_separator,
        [owner["prompt"] for owner in owners], [owner["answer"] for owner in owners], solutions,
    )
    rows = [
        {
            "prompt": owner["prompt"], "answer": owner["answer"], "level": owner.get("level"),
            "steps": solution.steps, "labels": [float(value) for value in step_labels.labels],
            "hard_labels": step_labels.hard_labels, "rollouts": step_labels.rollouts,
            "measured": step_labels.measured, "problem_index": owner["problem_index"],
        }
        for owner, solution, step_labels in zip(owners, solutions, LABELLERS[args.method](solutions, oracle), strict=True)
    ]
    return rows, counts


# ---------------------------------------------------------------------------------------------------
# The stage: shards, resume, assembly.
# ---------------------------------------------------------------------------------------------------


def label_shard(stage: StageFile, shard: int, problems: list[dict[str, Any]], sample: Sampler,
                score: Callable, args: PRMLabelArgs, seed: int) -> dict[str, Any]:
    """Label one shard's problems and write the shard file (atomically); return its content."""
    from transformers import set_seed

    started = time.time()
    set_seed(seed + shard)  # per shard, so a resumed stage samples what an uninterrupted one would
    rows, counts = label_problems(problems, sample, score, args)
    payload = {
        "problems": [problem["problem_index"] for problem in problems],
        "rows": rows, "rollouts": sum(row["rollouts"] for row in rows), "seconds": round(time.time() - started, 2), **counts,
    }
    common.write_shard(stage, shard, payload)
    return payload


def label_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    steps = sum(len(row["steps"]) for row in rows)
    positives = sum(sum(row["hard_labels"]) for row in rows)
    return {
        "solutions": len(rows),
        "steps": steps,
        "positive_fraction": positives / steps if steps else None,
        "mean_soft_label": sum(sum(row["labels"]) for row in rows) / steps if steps else None,
    }


def run(stage: StageFile) -> None:
    from accelerate.utils import gather_object
    from transformers import AutoModelForCausalLM

    import rewards

    started = time.time()
    args = PRMLabelArgs(**stage.args)
    seed = args.seed if args.seed is not None else stage.seed
    dataset = common.load_data(stage.data)
    num_problems = len(dataset) if args.max_problems is None else min(args.max_problems, len(dataset))
    num_shards = -(-num_problems // args.problems_per_shard)
    state = common.distributed_state()
    todo, resumed_here = common.unfinished_shards(stage, num_shards, state)
    resumed = gather_object([resumed_here])
    rollouts_this_run = 0
    if todo:
        model = AutoModelForCausalLM.from_pretrained(stage.model_path).to(state.device).eval()
        tokenizer = common.load_tokenizer(stage.model_path)
        sample = policy_sampler(model, tokenizer, args)
        score = rewards.build("math_accuracy", {})
        for number, shard in enumerate(todo, start=1):
            indices = range(shard * args.problems_per_shard, min((shard + 1) * args.problems_per_shard, num_problems))
            problems = [
                {"prompt": prompt_text(tokenizer, row["prompt"]), "answer": row["answer"], "level": row.get("level"), "problem_index": index}
                for index, row in zip(indices, dataset.select(indices))
            ]
            payload = label_shard(stage, shard, problems, sample, score, args, seed)
            rollouts_this_run += payload["rollouts"]
            log.info("shard %d (%d of %d here): %d problems, %d solutions, %d rollouts, %.1f s",
                     shard, number, len(todo), len(problems), len(payload["rows"]), payload["rollouts"], payload["seconds"])
        score.__wrapped__.close()
    rollouts_this_run = sum(gather_object([rollouts_this_run]))
    state.wait_for_everyone()

    if state.is_main_process:
        shards = common.all_finished_shards(stage, num_shards)
        rows = [row for payload in shards for row in payload["rows"]]
        if not rows:
            raise RuntimeError("prm_label: no solution could be labelled (every gold unparseable, or every sample empty)")
        before = label_metrics(rows)
        if args.balance:
            rows = balance_rows(rows, seed)
        common.save_dataset(rows, stage.stage_dir / common.DATASET_DIR)
        metrics = {
            "method": args.method,
            "problems": num_problems,
            "unscorable_problems": sum(payload["unscorable_problems"] for payload in shards),
            "empty_solutions": sum(payload["empty_solutions"] for payload in shards),
            "sampled_correct_fraction": sum(payload["correct_solutions"] for payload in shards) / before["solutions"],
            **label_metrics(rows),
            "rollouts": sum(payload["rollouts"] for payload in shards),
            "rollouts_per_solution": sum(payload["rollouts"] for payload in shards) / before["solutions"],
            "rollouts_this_run": rollouts_this_run,
            "shards": num_shards,
            "shards_resumed": sum(resumed),
            "labelling_seconds": round(sum(payload["seconds"] for payload in shards), 1),
            "seconds": round(time.time() - started, 1),
            "num_processes": state.num_processes,
        }
        if args.balance:
            metrics["before_balance"] = before
        log.info("labelled %d solutions (%d steps, %.0f%% positive) with %d rollouts",
                 metrics["solutions"], metrics["steps"], 100 * (metrics["positive_fraction"] or 0), metrics["rollouts"])
        common.finish(stage, metrics)
    else:
        common.finish(stage, {})


if __name__ == "__main__":
    run(common.start())
