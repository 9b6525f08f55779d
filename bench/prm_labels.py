"""Automatic PRM step labels against the truth: full Monte-Carlo (Math-Shepherd) and binary search (OmegaPRM).

Run from the repository root:
    python -m bench.prm_labels [--policy DIR] [--per-level 12] [--append BENCHMARKS.md]

On the synthetic task every step's truth is known (`data_recipes.synthetic.step_goodness`). A step is
*good* when no step up to and including it is wrong, and the final `\\boxed{}` step when, besides, its
answer is the gold one: exactly what a prefix's Monte-Carlo value estimates ("can this prefix still
reach the answer?"), and what both methods' hard labels claim.

The policy is a partly trained tiny model, so that its samples hold both right and wrong steps: by
default the quickstart's SFT model (`runs/quickstart/sft/model`, 1 M parameters, 500 SFT steps, about
0.4 greedy accuracy over levels 1-6). If it is missing, the bench trains the same SFT stage itself
through `gradus run` (a manifest holding only the quickstart's base model and sft stage, under
`runs/bench_prm_labels/`; about 6 minutes on 2 free cores, once: gradus skips it on reruns).

What is measured. The stage's own code samples `num_solutions` solutions per problem (temperature 1)
and cuts them into steps; then k_max rollouts are drawn once from every step prefix (the stage's
`PrefixRollouts`, scored with `math_accuracy`). Every method and k reads its outcomes from that one
pool, taking the first k of a prefix's rollouts, and is charged for exactly the rollouts it reads: the
same distribution as fresh rollouts, and a paired comparison (the methods see the same draws). Full MC
reads every non-final prefix, binary search only the prefixes its search visits. The "outcome only"
row labels every step with its solution's final answer, with no rollouts: the baseline rollouts must beat.

Reported per method and k: agreement of the hard labels with the truth (step accuracy; and its two
errors: the share of truly good steps labelled bad, and of truly bad steps labelled good), of the soft
labels thresholded at 0.5, the AUC of the soft labels (how well they rank good steps above bad ones;
binary search's unmeasured steps carry their hard label as soft label), how often the first wrong step
is found exactly (solutions that have one), and rollouts spent.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # one progress bar per generate call is noise here

from bench.markdown import append_section
from data_recipes.synthetic import SyntheticOptions, generate, step_goodness
from stages.arguments import PRMLabelArgs
from stages.prm_label import (
    LABELLERS,
    PrefixRollouts,
    Solution,
    StepLabels,
    policy_sampler,
    sample_solutions,
)
from stages.prm_steps import auc

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_POLICY = REPO / "runs" / "quickstart" / "sft" / "model"
OWN_RUN_DIR = REPO / "runs" / "bench_prm_labels"
LEVELS = [2, 3, 4, 5]
KS = [2, 4, 8, 16]


def agreement(labelled: list[StepLabels], truth: list[list[bool]]) -> dict[str, float]:
    flat_truth = [good for goods in truth for good in goods]
    hard = [value for labels in labelled for value in labels.hard_labels]
    soft = [value for labels in labelled for value in labels.labels]
    with_error = [(labels, goods) for labels, goods in zip(labelled, truth) if False in goods]
    return {
        "hard_accuracy": sum(h == t for h, t in zip(hard, flat_truth)) / len(flat_truth),
        "good_called_bad": sum(t and not h for h, t in zip(hard, flat_truth)) / max(1, sum(flat_truth)),
        "bad_called_good": sum(h and not t for h, t in zip(hard, flat_truth)) / max(1, len(flat_truth) - sum(flat_truth)),
        "soft_accuracy": sum((s >= 0.5) == t for s, t in zip(soft, flat_truth)) / len(flat_truth),
        "auc": step_auc if (step_auc := auc(soft, flat_truth)) is not None else float("nan"),
        "first_error_exact": sum(labels.first_error == goods.index(False) for labels, goods in with_error) / max(1, len(with_error)),
        "rollouts": sum(labels.rollouts for labels in labelled),
    }


def outcome_only(solutions: list[Solution]) -> list[StepLabels]:
    return [
        StepLabels([solution.final_value] * len(solution.steps), [solution.final_value > 0] * len(solution.steps),
                   [False] * len(solution.steps), 0)
        for solution in solutions
    ]


def own_policy() -> Path:
    """Train the quickstart's SFT stage under runs/bench_prm_labels (gradus skips it once done)."""
    import yaml

    quickstart = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    manifest = {"run_dir": str(OWN_RUN_DIR), "seed": quickstart["seed"], "base_model": quickstart["base_model"],
                "stages": [stage for stage in quickstart["stages"] if stage["name"] == "sft"]}
    OWN_RUN_DIR.mkdir(parents=True, exist_ok=True)
    manifest_path = OWN_RUN_DIR / "policy.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    print(f"no policy at {QUICKSTART_POLICY}: training the quickstart's SFT stage ({manifest_path}), about 6 minutes", flush=True)
    subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(manifest_path)], check=True, cwd=REPO)
    return OWN_RUN_DIR / "sft" / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", type=Path,
                        help=f"a partly trained model directory (default: {QUICKSTART_POLICY.relative_to(REPO)}, else trained)")
    parser.add_argument("--per-level", type=int, default=50, help=f"problems per level, levels {LEVELS}")
    parser.add_argument("--num-solutions", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, what `accelerate launch` gives a one-process stage; on 2 cores shared "
                             "with other jobs, 2 threads made generation about 10x slower)")
    parser.add_argument("--append", type=Path, help="append the table and the command to this Markdown file")
    options = parser.parse_args()
    started = time.time()

    import torch
    from transformers import AutoModelForCausalLM, set_seed

    import rewards
    from stages import common

    torch.set_num_threads(options.threads)
    policy = options.policy or (QUICKSTART_POLICY if (QUICKSTART_POLICY / "config.json").is_file() else own_policy())
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    tokenizer = common.load_tokenizer(str(policy))
    k_max = max(KS)
    label_args = PRMLabelArgs(num_solutions=options.num_solutions, rollouts_per_step=k_max, temperature=1.0, max_new_tokens=96, batch_size=256)
    rows = generate(SyntheticOptions(split="train", levels=LEVELS, per_level=options.per_level, seed=101))
    problems = [{"prompt": row["prompt"], "answer": row["answer"], "level": row["level"], "problem_index": index}
                for index, row in enumerate(rows)]
    score = rewards.build("math_accuracy", {})
    sample = policy_sampler(model, tokenizer, label_args)
    set_seed(options.seed)

    clock = time.time()
    solutions, owners, counts = sample_solutions(problems, sample, score, label_args)
    sampling_seconds = time.time() - clock
    truth = [step_goodness(owner["prompt"], solution.steps, owner["answer"]) for owner, solution in zip(owners, solutions)]

    pool = PrefixRollouts(sample, score, k_max, "\n", [owner["prompt"] for owner in owners], [owner["answer"] for owner in owners], solutions)
    requests = [(index, length) for index, solution in enumerate(solutions)
                for length in range(1, len(solution.steps) + 1) if not (solution.terminal and length == len(solution.steps))]
    clock = time.time()
    drawn = dict(zip(requests, pool(requests)))
    rollout_seconds = time.time() - clock
    seconds_per_rollout = rollout_seconds / (len(requests) * k_max)
    score.__wrapped__.close()

    results = [("outcome only", "-", agreement(outcome_only(solutions), truth))]
    for method in ("mc", "binary_search"):
        for k in KS:
            labelled = LABELLERS[method](solutions, lambda asked, k=k: [drawn[request][:k] for request in asked])
            results.append((method, str(k), agreement(labelled, truth)))

    steps = sum(len(goods) for goods in truth)
    good_steps = sum(sum(goods) for goods in truth)
    with_error = sum(False in goods for goods in truth)
    header = (
        f"{len(problems)} problems (levels {LEVELS[0]}-{LEVELS[-1]}, {options.per_level} each), {len(solutions)} sampled solutions "
        f"({counts['correct_solutions']} with the right answer, {with_error} with a wrong step), {steps} steps "
        f"({good_steps / steps:.0%} truly good); policy {policy.relative_to(REPO) if policy.is_relative_to(REPO) else policy}"
    )
    table = [
        "| method | k | rollouts | per solution | hard-label acc | good called bad | bad called good | soft>=0.5 acc | soft AUC | first error exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, k, figures in results:
        table.append(
            f"| {method} | {k} | {figures['rollouts']} | {figures['rollouts'] / len(solutions):.1f} | {figures['hard_accuracy']:.3f} "
            f"| {figures['good_called_bad']:.3f} | {figures['bad_called_good']:.3f} "
            f"| {figures['soft_accuracy']:.3f} | {figures['auc']:.3f} | {figures['first_error_exact']:.3f} |"
        )
    timing = (
        f"sampling {sampling_seconds:.0f} s, rollout pool ({len(requests)} prefixes x {k_max}) {rollout_seconds:.0f} s "
        f"({1000 * seconds_per_rollout:.0f} ms a rollout), whole bench {time.time() - started:.0f} s; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {os.cpu_count()} CPU cores ({platform.machine()}), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(header)
    print("\n".join(table))
    print(timing)

    if options.append:
        append_section(
            options.append, "PRM step labels: full Monte-Carlo vs binary search", "bench/prm_labels.py", header, table,
            f"Rollouts are drawn once (k = {k_max} from every non-final prefix) and each row reads the first k of the prefixes "
            "it visits, charged for what it reads. Truth: a step is good when no step through it is wrong (`step_goodness`), "
            "the boxed step when its answer is also right. \"good called bad\": share of truly good steps whose hard label is bad; "
            "\"bad called good\": the reverse. Binary search labels a solution with a right answer all good, with no rollouts.",
            timing,
        )

if __name__ == "__main__":
    main()
