"""Expert iteration (sample -> filter -> SFT, two rounds) against as much compute spent on more SFT steps.

    python -m bench.expert_iteration               # from the repository root; resumes what bench/expert_iteration_results/ holds

One manifest (`gradus run`, stage by stage: bench/stagewise.py), both arms starting from the quickstart's
SFT stage (500 steps; reused from bench/curriculum.py's work directory when that bench trained it):

- **expert iteration**, rounds 1 and 2: a `difficulty` stage samples `--samples` completions (temperature 1)
  of `--prompts` fresh train prompts from the latest model, scored by `math_accuracy`; `accepted_samples`
  keeps the correct ones (every distinct one, two per prompt at most); an `sft` stage trains the latest
  model on them for `--round-steps` steps (about three epochs of what was kept at the defaults);
- **more SFT**: `--chunks` stages of `--chunk-steps` steps each on fresh rows of the quickstart's own SFT
  data (its recipe, another seed per chunk), each starting from the last, with the same SFT args as the
  rounds (constant learning rate 2e-3, the quickstart's, batch 64), so the two arms differ in data only.

Every model is evaluated greedily on the same 300 test problems (levels 1-6 x 50). Compute is CPU seconds
of every process a stage's `gradus run` waits for: the sampling, the training and the per-stage start
(CLI, preflight, launch, imports, about the same for every stage), not the evaluations. Expert iteration
pays two stage starts a round, more SFT one a chunk. The arms are compared at equal compute by linear
interpolation of more SFT's accuracy over its cumulative CPU seconds at each round's.
Results: `bench/expert_iteration_results/results.json` and `table.md` (with the run's report.md copied).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from bench.stagewise import parse_options, quickstart_head, reuse_trained_start, run_stagewise

TEST_SET = {"recipe": "synthetic_arithmetic", "split": "test", "levels": [1, 2, 3, 4, 5, 6], "per_level": 50}
EVAL_ARGS = {"max_new_tokens": 96, "batch_size": 100}
SFT_ARGS = {"per_device_train_batch_size": 64, "learning_rate": 2.0e-3, "lr_scheduler_type": "constant", "max_length": 128,
            "logging_steps": 10, "save_steps": 1000, "gradient_checkpointing": False, "report_to": "none"}


def evaluation(model: str) -> dict[str, Any]:
    return {"name": f"eval_{model}", "kind": "eval", "model": model, "data": TEST_SET, "args": EVAL_ARGS}


def manifest(options: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    chain = quickstart_head(run_dir)
    sft_data = chain["stages"][0]["data"]
    stages = [evaluation("sft")]
    latest = "sft"
    for number in (1, 2):
        sample, train = f"sample_{number}", f"round_{number}"
        stages += [
            {"name": sample, "kind": "difficulty", "model": latest, "rewards": [{"name": "math_accuracy"}],
             "data": {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3, 4, 5, 6], "num_examples": options.prompts, "seed": 10 + number},
             "args": {"num_samples": options.samples, "temperature": 1.0, "max_new_tokens": 96, "batch_size": 256}},
            {"name": train, "kind": "sft", "model": latest, "args": {**SFT_ARGS, "max_steps": options.round_steps},
             "data": {"recipe": "accepted_samples", "stage": sample, "min_score": 1.0, "mode": "all", "max_per_prompt": 2}},
            evaluation(train),
        ]
        latest = train
    latest = "sft"
    for number in range(1, options.chunks + 1):
        chunk = f"more_sft_{number}"
        stages += [{"name": chunk, "kind": "sft", "model": latest, "args": {**SFT_ARGS, "max_steps": options.chunk_steps},
                    "data": {**sft_data, "num_examples": options.chunk_steps * 64, "seed": 100 + number}}, evaluation(chunk)]
        latest = chunk
    return {**chain, "stages": chain["stages"] + stages}


def interpolate(xs: list[float], ys: list[float], x: float) -> float | None:
    """y at x on the piecewise-linear curve through (xs, ys), None outside it."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def kept_rows(stage_dir: Path) -> int:
    """How many accepted completions a round trained on: its data, as its stage file gives it."""
    from stages.arguments import StageFile
    from stages.common import load_data

    return len(load_data(StageFile.read(stage_dir / "stage.yaml").data))


def summarise(stages: dict[str, dict[str, Any]], options: argparse.Namespace) -> dict[str, Any]:
    def accuracy(model: str) -> dict[str, Any]:
        metrics = stages[f"eval_{model}"]["metrics"]
        return {"accuracy": metrics["accuracy"], "by_level": metrics["accuracy_by_level"]}

    rows = [{"arm": "start", "model": "sft", "steps": 0, "cpu_seconds": 0.0, **accuracy("sft")}]
    spent, steps = 0.0, 0
    for number in (1, 2):
        sample, train = stages[f"sample_{number}"], stages[f"round_{number}"]
        spent += sample["cpu_seconds"] + train["cpu_seconds"]
        steps += train["metrics"]["global_step"]
        rows.append({"arm": "expert iteration", "model": f"round_{number}", "steps": steps, "cpu_seconds": round(spent, 1),
                     "sampled": sample["metrics"]["completions"], "kept_rows": kept_rows(Path(options.work_dir, "run", f"round_{number}")),
                     "sample_pass_rate": sample["metrics"]["mean_pass_rate"], **accuracy(f"round_{number}")})
    spent, steps = 0.0, 0
    for number in range(1, options.chunks + 1):
        chunk = stages[f"more_sft_{number}"]
        spent += chunk["cpu_seconds"]
        steps += chunk["metrics"]["global_step"]
        rows.append({"arm": "more SFT", "model": f"more_sft_{number}", "steps": steps, "cpu_seconds": round(spent, 1), **accuracy(f"more_sft_{number}")})
    baseline = [row for row in rows if row["arm"] in ("start", "more SFT")]
    for row in rows:
        if row["arm"] == "expert iteration":
            at = interpolate([b["cpu_seconds"] for b in baseline], [b["accuracy"] for b in baseline], row["cpu_seconds"])
            row["more_sft_at_equal_cpu"] = None if at is None else round(at, 4)
    return {"options": vars(options), "rows": rows}


def markdown(summary: dict[str, Any]) -> str:
    levels = list(summary["rows"][0]["by_level"])
    lines = ["| arm | model | SFT steps | CPU s (cumulative) | accuracy | more SFT at equal CPU | " + " | ".join(f"L{level}" for level in levels) + " |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(levels)]
    for row in summary["rows"]:
        equal = row.get("more_sft_at_equal_cpu")
        lines.append(f"| {row['arm']} | {row['model']} | {row['steps']} | {row['cpu_seconds']:.0f} | {row['accuracy']:.3f} | "
                     f"{'' if equal is None else f'{equal:.3f}'} | " + " | ".join(f"{row['by_level'][level]:.2f}" for level in levels) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=500, help="train prompts sampled per round")
    parser.add_argument("--samples", type=int, default=4, help="completions sampled per prompt")
    parser.add_argument("--round-steps", type=int, default=20, help="SFT steps per round")
    parser.add_argument("--chunks", type=int, default=3, help="more-SFT stages")
    parser.add_argument("--chunk-steps", type=int, default=50, help="steps per more-SFT stage")
    options = parse_options(parser, "expert_iteration")
    run_dir = Path(options.work_dir) / "run"
    reuse_trained_start(run_dir)
    stages = run_stagewise(manifest(options, run_dir), Path(options.work_dir) / "manifest.yaml")
    summary = summarise(stages, options)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**summary, "stages": stages}, indent=1, default=str) + "\n")
    (out / "table.md").write_text(markdown(summary))
    shutil.copy(run_dir / "report.md", out / "report.md")
    print(markdown(summary))


if __name__ == "__main__":
    main()
