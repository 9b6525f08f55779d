"""On-policy DPO settings against their SFT start: which settings make examples/dpo.yaml's rounds learn.

    python -m bench.dpo                                  # the sweep on seed 0, then the best setting on seeds 0-2
    python -m bench.dpo --settings lr3e-4 example --seeds 0   # a slice

From the repository root. What it does, each step cached so an interrupted bench resumes:

1. **The SFT start**: examples/dpo.yaml's `sft` stage is the quickstart's, so this is bench/curriculum.py's
   committed start (`bench/curriculum_results/sft_start/`; trained with `gradus run` into `<work-dir>/sft`
   only where it is missing). Its weights' hash is stamped on every result, and results from another
   start are never mixed in (each start gets its own `start_<hash>/` folder).
2. **DPO runs**, one per (setting, seed): a one-stage manifest, the example's `dpo` stage with the
   setting's `on_policy` and `args` changes (`SETTINGS`), from the SFT start, run with `gradus run`. The
   seed moves the rounds' prompt order, sampling and training; the start and the prompt pool are fixed.
3. **Held-out greedy accuracy** per level (`math_accuracy`), in this process:
   - *validation*, what settings are chosen by: 50 problems per level 1-6 of the test split drawn with
     seed 1, none of them in the reported test set (nor, being the test split, in any training data);
   - *test*, what is reported: the example's own eval set (test split, seed 0, 100 per level), scored
     only for the SFT start and the chosen setting's runs.
4. **The choice**: the setting with the best seed-0 validation mean (`--choose` overrides); it then runs
   on every seed of `--seeds`, and the summary reports its test accuracy per level against the start's,
   as the seed mean and sample std, with each round's log (pairs, score gap, TRL's loss and implicit
   reward margin, first and last) and a plot of the loss and margin curves over the rounds.

Each finished run becomes `bench/dpo_results/start_<hash>/runs/<setting>_seed<n>.json` (its config key,
accuracies, the stage's per-round logs and curves), small enough to commit; its run directory is then
deleted. The summary (`dpo.json`, `table.md`, `dpo.png`) is rebuilt from whatever runs exist.

Every process runs with `OMP_NUM_THREADS=1` (see bench/curriculum.py: on a shared 2-core machine one
thread is many times faster than two fighting other jobs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from bench.curriculum import COMMITTED_START, committed_sft_start, gradus_run, key_of, write_json

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dpo.yaml"
LEVELS = [1, 2, 3, 4, 5, 6]
VALIDATION = {"split": "test", "levels": LEVELS, "per_level": 100, "seed": 1}  # minus the test rows, then 50 a level
VALIDATION_PER_LEVEL = 50

# What each setting changes in the example's dpo stage. `example` is the stage as the issue measured it
# (lr 1e-5, one best-vs-worst pair a prompt): the control.
EXAMPLE_AS_MEASURED = {
    "on_policy": {"pairs_per_prompt": 1},
    "args": {"learning_rate": 1.0e-5, "num_train_epochs": 2, "beta": 0.1, "loss_type": ["sigmoid", "sft"]},
}
ONE_EPOCH = {"learning_rate": 1.0e-4, "num_train_epochs": 1}
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {  # the sweep runs in this order; the last four ablate the pick
    "lr3e-4": {"on_policy": {"pairs_per_prompt": 4}, "args": {"learning_rate": 3.0e-4, "num_train_epochs": 3}},
    "lr1e-4_1ep": {"on_policy": {"pairs_per_prompt": 4}, "args": ONE_EPOCH},
    "example": EXAMPLE_AS_MEASURED,
    "lr3e-5_1ep": {"on_policy": {"pairs_per_prompt": 4}, "args": {**ONE_EPOCH, "learning_rate": 3.0e-5}},
    "lr1e-4_1ep_one_pair": {"on_policy": {"pairs_per_prompt": 1}, "args": ONE_EPOCH},
    "lr1e-4_1ep_no_nll": {"on_policy": {"pairs_per_prompt": 4}, "args": {**ONE_EPOCH, "loss_type": ["sigmoid"]}},
    "lr1e-4_1ep_beta0.5": {"on_policy": {"pairs_per_prompt": 4}, "args": {**ONE_EPOCH, "beta": 0.5}},
    # More on-policy rounds at a gentler step: each round's pairs come from the model the last one trained.
    "4rounds_lr5e-5": {"on_policy": {"pairs_per_prompt": 4, "rounds": 4}, "args": {**ONE_EPOCH, "learning_rate": 5.0e-5}},
}


def example_stage(name: str) -> dict[str, Any]:
    return next(stage for stage in yaml.safe_load(EXAMPLE.read_text())["stages"] if stage["name"] == name)


def dpo_stage(setting: str) -> dict[str, Any]:
    """The example's dpo stage with the setting's changes (the example's values first, so `example`
    stays the issue's control whatever the example now says)."""
    stage = example_stage("dpo")
    for block in ("on_policy", "args"):
        stage[block] = {**stage[block], **EXAMPLE_AS_MEASURED[block], **SETTINGS[setting].get(block, {})}
    stage["model"] = "base"
    return stage


class Evaluator:
    """Greedy accuracy, overall and per level, of a model directory on the validation or test rows."""

    def __init__(self, tokenizer_path: Path) -> None:
        import data_recipes
        from stages import common

        test_block = example_stage("eval")
        test = data_recipes.load("synthetic_arithmetic", {key: value for key, value in test_block["data"].items() if key != "recipe"})
        reported = set(test["prompt"])
        counts: dict[int, int] = {}
        validation = []
        for row in data_recipes.load("synthetic_arithmetic", VALIDATION).to_list():
            if row["prompt"] not in reported and counts.get(row["level"], 0) < VALIDATION_PER_LEVEL:
                counts[row["level"]] = counts.get(row["level"], 0) + 1
                validation.append(row)
        self.rows = {"validation": validation, "test": test.to_list()}
        self.max_new_tokens = test_block["args"]["max_new_tokens"]
        self.common = common
        self.tokenizer = common.load_tokenizer(str(tokenizer_path))

    def __call__(self, model_path: Path, split: str) -> dict[str, float]:
        from transformers import AutoModelForCausalLM

        from stages.eval import accuracy_report, score_items

        rows = self.rows[split]
        model = AutoModelForCausalLM.from_pretrained(str(model_path)).eval()
        completions = self.common.generate(model, self.tokenizer, [row["prompt"] for row in rows], max_new_tokens=self.max_new_tokens, batch_size=100)
        report = accuracy_report(score_items(rows, completions, 1, {}, "level"), [1])
        return {"mean": report["accuracy"], **report["accuracy_by_level"]}


def train_sft_start(work: Path) -> tuple[Path, str]:
    """The SFT start and its weights' hash, which names the results folder. examples/dpo.yaml's sft stage is
    the quickstart's, so this is bench/curriculum.py's committed start (trained here only if it is missing):
    the same manifest trains other weights on another CPU, and runs from two starts are two experiments."""
    model = committed_sft_start(COMMITTED_START, work / "sft", example_stage("sft"))
    return model, hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()[:16]


class Bench:
    """The cached steps: the start's accuracy and each (setting, seed) run."""

    def __init__(self, work: Path, out: Path) -> None:
        self.work = work
        self.sft_model, self.sft_hash = train_sft_start(work)
        self.runs = out / f"start_{self.sft_hash}" / "runs"
        self.evaluate = Evaluator(self.sft_model)

    def start(self) -> dict[str, Any]:
        """The SFT start's validation and test accuracy, cached."""
        path = self.runs / "start.json"
        if not path.is_file():
            write_json(path, {split: self.evaluate(self.sft_model, split) for split in ("validation", "test")})
        return json.loads(path.read_text())

    def run(self, setting: str, seed: int, with_test: bool) -> dict[str, Any]:
        """One (setting, seed) run, cached in runs/; its test accuracy added when asked for."""
        stage = dpo_stage(setting)
        key = key_of({"sft": self.sft_hash, "stage": stage, "seed": seed, "validation": VALIDATION})
        path = self.runs / f"{setting}_seed{seed}.json"
        if path.is_file() and json.loads(path.read_text())["key"] == key:
            result = json.loads(path.read_text())
            if with_test and "test" not in result:
                result["test"] = self.evaluate(self.work / "runs" / path.stem / "dpo" / "model", "test")
                write_json(path, result)
            return result
        run_dir = self.work / "runs" / path.stem
        print(f"[{setting} seed {seed}] gradus run", flush=True)
        seconds = gradus_run({"run_dir": str(run_dir), "seed": seed, "base_model": str(self.sft_model),
                              "decontamination": {"enabled": False}, "stages": [stage]}, run_dir / "manifest.yaml")
        metrics = json.loads((run_dir / "dpo" / "metrics.json").read_text())
        model = run_dir / "dpo" / "model"
        result = {
            "key": key, "setting": setting, "seed": seed, "sft": self.sft_hash, "wall_seconds": seconds, "stage": stage,
            "validation": self.evaluate(model, "validation"),
            "rounds": [{"round": record["round"], "log": record.get("log"), "curves": (record["training"] or {}).get("curves")}
                       for record in metrics["rounds"]],
        }
        if with_test:
            result["test"] = self.evaluate(model, "test")
        write_json(path, result)
        shutil.rmtree(run_dir / "dpo" / "rounds", ignore_errors=True)  # checkpoints; dpo/model stays for a later test eval
        print(f"[{setting} seed {seed}] validation {result['validation']['mean']:.3f} in {seconds:.0f} s", flush=True)
        return result


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def summarise(start: dict[str, Any], results: list[dict[str, Any]], chosen: str) -> dict[str, Any]:
    """Per setting, the validation accuracy by seed; for the chosen setting, test accuracy per level
    (seed mean and std) against the start's; every run's per-round logs."""
    sweep = {}
    for result in results:
        sweep.setdefault(result["setting"], {})[str(result["seed"])] = result["validation"]["mean"]
    chosen_runs = [result for result in results if result["setting"] == chosen and "test" in result]
    columns = ["mean"] + [str(level) for level in LEVELS]
    test = {column: mean_std([run["test"][column] for run in chosen_runs]) for column in columns} if chosen_runs else {}
    return {
        "start": start, "validation_by_setting": sweep, "chosen": chosen, "seeds": [run["seed"] for run in chosen_runs],
        "test": test, "gain": {column: test[column]["mean"] - start["test"][column] for column in test},
        "rounds": {f"{result['setting']} seed {result['seed']}": [record["log"] for record in result["rounds"]] for result in results},
    }


def markdown(summary: dict[str, Any]) -> str:
    levels = [str(level) for level in LEVELS]
    lines = ["| setting | validation mean by seed |", "|---|---|",
             f"| SFT start | {summary['start']['validation']['mean']:.3f} |"]
    lines += [f"| {setting} | {', '.join(f's{seed} {value:.3f}' for seed, value in sorted(seeds.items()))} |"
              for setting, seeds in summary["validation_by_setting"].items()]
    if summary["test"]:
        lines += ["", f"Test (the example's eval set), `{summary['chosen']}` on seeds {summary['seeds']}: mean ± sample std",
                  "", "| | " + " | ".join(f"L{level}" for level in levels) + " | mean |", "|---" * (len(levels) + 2) + "|"]
        start = summary["start"]["test"]
        lines.append("| SFT start | " + " | ".join(f"{start[level]:.3f}" for level in levels + ["mean"]) + " |")
        lines.append("| DPO | " + " | ".join(f"{summary['test'][level]['mean']:.3f} ± {summary['test'][level]['std']:.3f}" for level in levels + ["mean"]) + " |")
    lines += ["", "Per round (TRL's logged DPO loss, implicit reward margin and pair accuracy, first and last logged step):", "",
              "| run | round | pairs | score gap | loss first → last | margin first → last | accuracy first → last |", "|---|---|---|---|---|---|---|"]
    for run, logs in summary["rounds"].items():
        for number, log in enumerate(logs, start=1):
            if log:
                lines.append(f"| {run} | {number} | {log['pairs']} | {log['mean_score_gap']:.2f} | "
                             + " | ".join(f"{log[key][0]:.3f} → {log[key][1]:.3f}" for key in ("loss", "rewards/margins", "rewards/accuracies")) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Every run's DPO loss and implicit reward margin over its rounds' steps, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for result in results:
        for axis, key in zip(axes, ("loss", "rewards/margins")):
            xs, ys, offset = [], [], 0
            for record in result["rounds"]:
                points = (record["curves"] or {}).get(key, [])
                xs += [offset + step for step, _ in points]
                ys += [value for _, value in points]
                offset += (record["log"] or {}).get("steps") or 0
                axis.axvline(offset, color="grey", alpha=0.2)
            axis.plot(xs, ys, marker=".", label=f"{result['setting']} seed {result['seed']}")
    for axis, key in zip(axes, ("TRL loss (DPO sigmoid + the sft NLL term; ln 2 = 0.693: no preference)", "rewards/margins (chosen - rejected, x beta)")):
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("step over rounds (grey: round ends)")
        axis.grid(alpha=0.3)
    axes[0].axhline(0.693, color="red", alpha=0.4, linestyle="--")
    axes[0].legend()
    figure.suptitle("on-policy DPO rounds from one SFT start (bench/dpo.py)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), help="the sweep, on seed 0, in this order")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds the chosen setting runs on")
    parser.add_argument("--choose", choices=list(SETTINGS), help="report this setting instead of the best on validation")
    parser.add_argument("--work-dir", default="/tmp/dpo_bench")
    parser.add_argument("--out", default=str(REPO / "bench" / "dpo_results"))
    options = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    bench = Bench(Path(options.work_dir), Path(options.out))
    start = bench.start()
    print(f"SFT start {bench.sft_hash}: validation {start['validation']['mean']:.3f}, test {start['test']['mean']:.3f}", flush=True)
    sweep = [bench.run(setting, 0, with_test=False) for setting in options.settings]
    chosen = options.choose or max(sweep, key=lambda result: result["validation"]["mean"])["setting"]
    print(f"chosen: {chosen}", flush=True)
    started = time.time()
    reported = [bench.run(chosen, seed, with_test=True) for seed in options.seeds]
    print(f"chosen setting's seeds done in {time.time() - started:.0f} s", flush=True)
    results = list({(result["setting"], result["seed"]): result for result in sweep + reported}.values())
    summary = summarise(start, results, chosen)
    write_json(bench.runs.parent / "dpo.json", summary)
    (bench.runs.parent / "table.md").write_text(markdown(summary))
    plot(results, bench.runs.parent / "dpo.png")
    print(markdown(summary))


if __name__ == "__main__":
    main()
