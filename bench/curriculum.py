"""Adaptive curriculum strategies against uniform sampling, GRPO from one SFT checkpoint.

For each strategy and seed, a one-stage manifest (grpo from `--sft-model`, the quickstart's GRPO
settings, a `curriculum: {strategy: S}` block with that strategy's defaults, the manifest's `seed`)
is run with `gradus run`, saving a checkpoint every `--eval-every` steps. Each checkpoint (and the
shared SFT start, step 0) is then scored in-process: greedy decoding on the held-out
`{recipe: synthetic_arithmetic, split: test, levels: [1..6], per_level: N}` set, `math_accuracy`.

    .venv/bin/python bench/curriculum.py                       # --steps 20 --eval-every 10 --per-level 20 --seeds 0 1 2
    .venv/bin/python bench/curriculum.py --sft-model runs/quickstart/sft/model

The SFT checkpoint is any HF model dir of the quickstart's tiny model; the quickstart's `sft` stage
writes one (`gradus run examples/quickstart.yaml` -> `runs/quickstart/sft/model`, 500 SFT steps).

Reports (stdout, `bench/curriculum_results/`): per strategy, the mean +- std over seeds of mean
held-out accuracy at every eval step and of the hardest levels' (5-6) final accuracy, and the steps
to reach uniform's final seed-mean accuracy (first eval step whose seed-mean is at least that; its
ratio to the budget). `curriculum.png` plots accuracy over steps with a min-max band over seeds;
`curriculum.json` holds every per-level accuracy; `table.md` the Markdown table. Finished runs are
cached in the work dir, so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEVELS = [1, 2, 3, 4, 5, 6]
HARD = ["5", "6"]

GRPO_ARGS = {  # examples/quickstart.yaml's grpo stage
    "learning_rate": 3.0e-5, "lr_scheduler_type": "constant", "beta": 0.0, "loss_type": "dapo",
    "num_generations": 8, "per_device_train_batch_size": 64, "temperature": 1.0,
    "max_completion_length": 96, "logging_steps": 10, "gradient_checkpointing": False,
}


def manifest(sft_model: str, run_dir: Path, strategy: str, seed: int, steps: int, eval_every: int) -> dict:
    return {
        "run_dir": str(run_dir),
        "seed": seed,
        "base_model": sft_model,
        "stages": [{
            "name": "grpo", "kind": "grpo", "model": "base",
            "data": {"recipe": "synthetic_arithmetic", "split": "train", "levels": LEVELS, "num_examples": 5000, "seed": 1},
            "rewards": [{"name": "math_accuracy", "weight": 1.0}],
            "curriculum": {"strategy": strategy},
            "args": {**GRPO_ARGS, "max_steps": steps, "save_steps": eval_every, "save_total_limit": None},
        }],
    }


class Evaluator:
    """Greedy held-out accuracy per level of a model dir, in this process."""

    def __init__(self, tokenizer_path: str, per_level: int, batch_size: int):
        import rewards
        from stages import common

        self.common = common
        self.data = common.load_data({"recipe": "synthetic_arithmetic", "split": "test", "levels": LEVELS, "per_level": per_level})
        self.tokenizer = common.load_tokenizer(tokenizer_path)
        self.score = rewards.build("math_accuracy", {})
        self.batch_size = batch_size

    def __call__(self, model_path: str) -> dict[str, float]:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_path).eval()
        prompts = list(self.data["prompt"])
        completions = self.common.generate(model, self.tokenizer, prompts, max_new_tokens=96, batch_size=self.batch_size)
        scores = self.score(prompts=prompts, completions=completions, answer=list(self.data["answer"]))
        by_level: dict[str, list[float]] = {}
        for level, score in zip(self.data["level"], scores):
            by_level.setdefault(str(level), []).append(0.0 if score is None else float(score))
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        result = {level: float(np.mean(values)) for level, values in sorted(by_level.items())}
        result["mean"] = float(np.mean(scores_or_zero(scores)))
        return result


def scores_or_zero(scores: list) -> list[float]:
    return [0.0 if score is None else float(score) for score in scores]


def run_one(args, evaluator: Evaluator, strategy: str, seed: int) -> dict:
    import yaml

    run_dir = Path(args.work_dir) / f"{strategy}_seed{seed}"
    cached = run_dir / "evals.json"
    if cached.exists():
        return json.loads(cached.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest(args.sft_model, run_dir, strategy, seed, args.steps, args.eval_every), sort_keys=False))
    started = time.time()
    log = (run_dir / "gradus.log").open("w")
    status = subprocess.run([str(Path(sys.executable).parent / "gradus"), "run", str(path)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if status.returncode:
        raise SystemExit(f"{strategy} seed {seed}: gradus run failed, see {run_dir / 'gradus.log'}")
    train_seconds = time.time() - started
    evals = {}
    for step in range(args.eval_every, args.steps + 1, args.eval_every):
        checkpoint = next((run_dir / "grpo").rglob(f"checkpoint-{step}"), None)
        if checkpoint is None:
            raise SystemExit(f"no checkpoint-{step} under {run_dir / 'grpo'}")
        evals[str(step)] = evaluator(str(checkpoint))
    result = {"strategy": strategy, "seed": seed, "train_seconds": train_seconds, "eval_seconds": time.time() - started - train_seconds, "evals": evals}
    cached.write_text(json.dumps(result, indent=1))
    return result


def summarise(results: dict, strategies: list[str], seeds: list[int], steps: list[int]) -> dict:
    """Per strategy: seed-mean/std/min/max of mean accuracy at each step, hard-level final, steps to uniform's final."""
    summary = {}
    for strategy in strategies:
        curves = np.array([[results["step0"]["mean"]] + [results[strategy][seed]["evals"][str(step)]["mean"] for step in steps[1:]] for seed in seeds])
        hard = np.array([np.mean([results[strategy][seed]["evals"][str(steps[-1])][level] for level in HARD]) for seed in seeds])
        per_level = {level: float(np.mean([results[strategy][seed]["evals"][str(steps[-1])][level] for seed in seeds])) for level in map(str, LEVELS)}
        summary[strategy] = {
            "mean": curves.mean(0).tolist(), "std": curves.std(0, ddof=1).tolist() if len(seeds) > 1 else [0.0] * len(steps),
            "min": curves.min(0).tolist(), "max": curves.max(0).tolist(),
            "hard_mean": float(hard.mean()), "hard_std": float(hard.std(ddof=1)) if len(seeds) > 1 else 0.0,
            "final_per_level": per_level,
        }
    target = summary["uniform"]["mean"][-1]
    for strategy in strategies:
        mean = summary[strategy]["mean"]
        reached = next((step for step, value in zip(steps[1:], mean[1:]) if value >= target - 1e-12), None)
        # The same criterion per seed, against the same target, to show the spread of the step count.
        per_seed = []
        for seed in seeds:
            curve = [results[strategy][seed]["evals"][str(step)]["mean"] for step in steps[1:]]
            per_seed.append(next((step for step, value in zip(steps[1:], curve) if value >= target - 1e-12), None))
        summary[strategy]["steps_to_uniform_final"] = reached
        summary[strategy]["steps_to_uniform_final_per_seed"] = per_seed
    summary["target"] = target
    return summary


def markdown(summary: dict, strategies: list[str], steps: list[int], budget: int) -> str:
    head = "| strategy | " + " | ".join(f"step {step}" for step in steps) + " | final L5-6 | steps to uniform's final (ratio) | per seed |"
    lines = [head, "|---|" + "---:|" * (len(steps) + 3)]
    for strategy in strategies:
        row = summary[strategy]
        reached = row["steps_to_uniform_final"]
        reach = f"{reached} ({reached / budget:.1f}x)" if reached is not None else "not reached"
        per_seed = ", ".join("-" if value is None else str(value) for value in row["steps_to_uniform_final_per_seed"])
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(row["mean"], row["std"])]
        lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {row['hard_mean']:.3f} ± {row['hard_std']:.3f} | {reach} | {per_seed} |")
    lines += ["", "Final held-out accuracy per level (seed-mean):", "",
              "| strategy | " + " | ".join(f"L{level}" for level in LEVELS) + " |", "|---|" + "---:|" * len(LEVELS)]
    for strategy in strategies:
        lines.append(f"| {strategy} | " + " | ".join(f"{summary[strategy]['final_per_level'][str(level)]:.2f}" for level in LEVELS) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, strategies: list[str], steps: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for strategy in strategies:
        row = summary[strategy]
        line, = axis.plot(steps, row["mean"], marker="o", markersize=3, label=strategy, linewidth=2 if strategy == "uniform" else 1.3)
        axis.fill_between(steps, row["min"], row["max"], color=line.get_color(), alpha=0.15)
    axis.axhline(summary["target"], color="grey", linestyle=":", linewidth=1, label="uniform final")
    axis.set_xlabel("GRPO step")
    axis.set_ylabel("held-out greedy accuracy (levels 1-6)")
    axis.set_title("Curriculum strategies: seed mean, band = min-max over seeds")
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft-model", default="/tmp/curriculum_bench/sft_model")
    parser.add_argument("--strategies", nargs="+", default=["uniform", "bandit", "ucb", "band", "adaptive"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20, help="GRPO steps per run (the same budget for all)")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--per-level", type=int, default=20, help="held-out problems per level")
    parser.add_argument("--batch-size", type=int, default=120, help="eval generation batch")
    parser.add_argument("--work-dir", default="/tmp/curriculum_bench/runs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "curriculum_results"))
    args = parser.parse_args()
    if "uniform" not in args.strategies:
        args.strategies.insert(0, "uniform")
    if args.steps % args.eval_every:
        parser.error("--steps must be a multiple of --eval-every")

    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(args.sft_model, args.per_level, args.batch_size)
    step0_path = Path(args.work_dir) / f"step0_{args.per_level}.json"
    if not step0_path.exists():
        step0_path.write_text(json.dumps(evaluator(args.sft_model)))
    results: dict = {"step0": json.loads(step0_path.read_text())}
    print(f"step 0 (SFT start): {results['step0']}", flush=True)
    started = time.time()
    # Seed-major order: every strategy gets seed 0 before any gets seed 1, so a cut-short run still compares them all.
    for seed in args.seeds:
        for strategy in args.strategies:
            result = run_one(args, evaluator, strategy, seed)
            results.setdefault(strategy, {})[seed] = result
            curve = " ".join(f"{step}:{e['mean']:.3f}" for step, e in result["evals"].items())
            print(f"[{time.time() - started:6.0f}s] {strategy:8s} seed {seed}: train {result['train_seconds']:.0f}s "
                  f"eval {result['eval_seconds']:.0f}s  mean acc {curve}", flush=True)

    steps = [0] + list(range(args.eval_every, args.steps + 1, args.eval_every))
    summary = summarise(results, args.strategies, args.seeds, steps)
    table = markdown(summary, args.strategies, steps, args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(summary, args.strategies, steps, out / "curriculum.png")
    (out / "table.md").write_text(table)
    (out / "curriculum.json").write_text(json.dumps({
        "config": {key: value for key, value in vars(args).items()}, "steps": steps, "summary": summary,
        "runs": {strategy: {str(seed): results[strategy][seed] for seed in args.seeds} for strategy in args.strategies},
        "step0": results["step0"],
    }, indent=1))
    print(f"\nuniform's final seed-mean accuracy: {summary['target']:.3f}\n")
    print(table)
    print(f"plot: {out / 'curriculum.png'}")


if __name__ == "__main__":
    main()
