"""A trained PRM against the truth: does it find the first wrong step of held-out synthetic solutions?

Run from the repository root after `gradus run examples/prm.yaml`:
    python -m bench.prm_first_error [--run-dir runs/prm] [--per-level 50] [--append BENCHMARKS.md]

The policy (`<run-dir>/sft/model`) samples `--num-solutions` solutions (temperature 1) to problems of the
synthetic task's *test* split, which no training stage saw; they are cut into steps by the stage's own
splitter, and every step's truth comes from `data_recipes.synthetic.step_goodness` (good when no step up
to it is wrong, and the boxed step when its answer is also right), not from rollouts. The PRM
(`<run-dir>/prm/model`) scores every step with `rewards.steps.score_steps`, the code the `prm` reward runs.

Reported with `prm_steps.step_metrics` at the 0.5 threshold the stage uses: step AUC, first-error
accuracy (over solutions with a wrong step, is the first step scored below 0.5 exactly the first wrong
one?) and all-correct accuracy, overall and per level. Next to them, the first-error accuracy of two
baselines that know the step count but not the steps: *chance* (pick one of the n steps or "none"
uniformly: 1/(n+1) per solution) and the best *constant position* (always the same step index, the one
that would score best in hindsight, an optimistic baseline).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

from bench.markdown import append_section
from data_recipes.synthetic import SyntheticOptions, generate, step_goodness
from stages.arguments import PRMLabelArgs
from stages.prm_label import policy_sampler, sample_solutions
from rewards.steps import score_steps
from stages.prm_steps import first_wrong, step_metrics

REPO = Path(__file__).resolve().parents[1]
LEVELS = [1, 2, 3, 4, 5, 6]


def shown(path: Path) -> Path:
    """A path as the reader would type it: relative to the repository when inside it."""
    path = path.resolve()
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def baselines(truth: list[list[bool]]) -> dict[str, float]:
    """First-error accuracy of guessing: uniformly among the steps and "none", and the best constant index."""
    firsts = [(first_wrong(goods), len(goods)) for goods in truth if not all(goods)]
    chance = sum(1 / (steps + 1) for _, steps in firsts) / len(firsts)
    best_index, hits = Counter(first for first, _ in firsts).most_common(1)[0]
    return {"chance": chance, "constant": hits / len(firsts), "constant_index": best_index}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "prm", help="a finished examples/prm.yaml run")
    parser.add_argument("--policy", type=Path, help="default: <run-dir>/sft/model")
    parser.add_argument("--prm", type=Path, help="default: <run-dir>/prm/model")
    parser.add_argument("--per-level", type=int, default=50, help=f"test problems per level, levels {LEVELS}")
    parser.add_argument("--num-solutions", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--append", type=Path, help="append the table and the command to this Markdown file")
    options = parser.parse_args()
    started = time.time()

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, set_seed

    import rewards
    from stages import common

    torch.set_num_threads(1)  # what a one-process stage gets under accelerate launch
    policy_dir = options.policy or options.run_dir / "sft" / "model"
    prm_dir = options.prm or options.run_dir / "prm" / "model"
    for directory in (policy_dir, prm_dir):
        if not (directory / "config.json").is_file():
            sys.exit(f"no model at {directory}: run `gradus run examples/prm.yaml` first, or pass --policy / --prm")

    policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    tokenizer = common.load_tokenizer(str(policy_dir))
    args = PRMLabelArgs(num_solutions=options.num_solutions, temperature=1.0, max_new_tokens=96, batch_size=256)
    rows = generate(SyntheticOptions(split="test", levels=LEVELS, per_level=options.per_level))
    problems = [{"prompt": row["prompt"], "answer": row["answer"], "level": row["level"], "problem_index": index}
                for index, row in enumerate(rows)]
    score = rewards.build("math_accuracy", {})
    set_seed(options.seed)
    solutions, owners, _ = sample_solutions(problems, policy_sampler(policy, tokenizer, args), score, args)
    score.__wrapped__.close()
    truth = [step_goodness(owner["prompt"], solution.steps, owner["answer"]) for owner, solution in zip(owners, solutions)]

    prm = AutoModelForTokenClassification.from_pretrained(prm_dir).eval()
    prm_tokenizer = common.load_tokenizer(str(prm_dir))
    scores = score_steps(prm, prm_tokenizer, [owner["prompt"] for owner in owners], [solution.steps for solution in solutions])

    groups = {"all": list(range(len(solutions)))}
    for level in LEVELS:
        groups[f"level {level}"] = [index for index, owner in enumerate(owners) if owner["level"] == level]
    table = [
        "| solutions | n | with a wrong step | step AUC | first error: PRM | chance | best constant | all-correct acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    overall: dict = {}
    for name, members in groups.items():
        group_truth = [truth[index] for index in members]
        figures = step_metrics(group_truth, [scores[index] for index in members])
        if name == "all":
            overall = figures
        guess = baselines(group_truth) if figures["solutions_with_error"] else None
        constant = "-" if guess is None else f"{guess['constant']:.3f} (step {guess['constant_index'] + 1})"
        table.append(
            f"| {name} | {len(members)} | {figures['solutions_with_error']} | {cell(figures['auc'])} "
            f"| {cell(figures['first_error_accuracy'])} | {cell(guess and guess['chance'])} | {constant} "
            f"| {cell(figures['all_correct_accuracy'])} |"
        )
    header = (
        f"{len(problems)} test problems (levels {LEVELS[0]}-{LEVELS[-1]}, {options.per_level} each) x {options.num_solutions} "
        f"solutions from {shown(policy_dir)}, {overall['steps']} steps ({overall['wrong_steps']} not good); PRM {shown(prm_dir)}"
    )
    timing = (f"whole bench {time.time() - started:.0f} s; torch {torch.__version__}, {os.cpu_count()} CPU cores "
              f"({platform.machine()}), load average {os.getloadavg()[0]:.1f}")
    print(header)
    print("\n".join(table))
    print(timing)
    if options.append:
        append_section(
            options.append, "PRM on held-out solutions: first wrong step against the truth", "bench/prm_first_error.py",
            header, table,
            "First error: over solutions with a wrong step, the share where the first step scored below 0.5 is exactly the "
            "first wrong one. Chance: one of the n steps or \"none\" picked uniformly (1/(n+1)). Best constant: always the same "
            "step index, chosen in hindsight. All-correct acc: solutions with no wrong step scored >= 0.5 at every step.",
            timing,
        )


if __name__ == "__main__":
    main()
