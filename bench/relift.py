"""ReLIFT against plain GRPO from an SFT start that never saw the hard levels.

    OMP_NUM_THREADS=1 python -m bench.relift              # plain GRPO and the chosen relift arm, 300 steps, seeds 0-4
    OMP_NUM_THREADS=1 python -m bench.relift --seeds 0 1 2 --arms grpo replay16_lr5e-4_cosine
    OMP_NUM_THREADS=1 python -m bench.relift --steps 100 --arms grpo relift   # in bench/relift_results/steps100/

From the repository root. Each step is cached, so an interrupted bench resumes:

1. **The SFT start**: the quickstart's `sft` stage (examples/quickstart.yaml, 500 steps) on levels 1-3
   only, trained once with `gradus run` into `<work-dir>/sft` and copied to `bench/relift_results/sft_start/`
   (4 MB, committed, so a later session on another CPU adds runs from the same weights). Its weights' hash
   keys every result.
2. **GRPO runs**, one per (arm, seed): a one-stage manifest, the quickstart's `grpo` args without its
   curriculum (TRL's shuffle), `--steps` (default STEPS) on a pool of 600 prompts of levels 1-6, seed = the
   manifest seed. Arms (`ARMS`): `grpo` (plain) and relift arms, the same plus a `relift:` block (hard
   demonstrations alone or with `replay_solved`, at several SFT learning rates, held or decayed); the
   demonstrations are the pool's `completion` column, the worked solutions SFT trains on.
3. **Held-out accuracy** of the final model: greedy `math_accuracy` on levels 1-6 x 50 test problems
   (bench/curriculum.py's balanced held-out set and evaluator), per level; and of the start.

Each run lands in bench/relift_results/steps<N>/runs/<arm>_seed<n>.json (held-out accuracy, ReLIFT's summary
from the stage metrics: SFT steps, demonstrations used and their share of the pool, which is what SFT on all
of them would take); checkpoints are deleted. `steps<N>/table.md` is rebuilt from whatever runs of that
length exist: per arm the seed-mean per-level accuracy, and relift minus grpo per seed on levels 1-3 and 4-6;
`steps<N>/relift.png` plots the same differences.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bench.curriculum import Evaluator, committed_sft_start, gradus_run, key_of, quickstart_stage, write_json

STEPS = 300  # level 4 takes off after about 100 SFT steps: at 100 GRPO steps no arm gained (BENCHMARKS.md)
POOL = {"split": "train", "levels": list(range(1, 7)), "num_examples": 600, "seed": 1}
SFT_LEVELS = [1, 2, 3]
# Each arm's relift block (None: plain GRPO), for the SFT steps' own AdamW (stages/relift.py). The first three
# train on failed prompts' demonstrations alone; the others also replay solved ones.
ARMS: dict[str, dict[str, Any] | None] = {
    "grpo": None,
    "relift": {"sft_batch_size": 8, "learning_rate": 1.0e-3},
    "relift_lr1e-4": {"sft_batch_size": 8, "learning_rate": 1.0e-4},
    "relift_grpo_lr": {"sft_batch_size": 8},  # the GRPO step's own learning rate (3e-5)
    # Each SFT step also replays 8 demonstrations of prompts GRPO solves (hard ones alone overwrite them).
    "replay_lr3e-4": {"sft_batch_size": 8, "replay_solved": 8, "learning_rate": 3.0e-4},
    "replay_lr1e-3": {"sft_batch_size": 8, "replay_solved": 8, "learning_rate": 1.0e-3},
    "replay16_lr3e-4": {"sft_batch_size": 8, "replay_solved": 16, "learning_rate": 3.0e-4},
    "replay16_lr5e-4": {"sft_batch_size": 8, "replay_solved": 16, "learning_rate": 5.0e-4},
    "replay32_lr5e-4": {"sft_batch_size": 8, "replay_solved": 32, "learning_rate": 5.0e-4},
    "replay32_lr3e-4": {"sft_batch_size": 8, "replay_solved": 32, "learning_rate": 3.0e-4},
    "replay16_lr5e-4_every2": {"sft_batch_size": 8, "replay_solved": 16, "learning_rate": 5.0e-4, "every_n_steps": 2},
    "replay16_lr5e-4_cosine": {"sft_batch_size": 8, "replay_solved": 16, "learning_rate": 5.0e-4, "lr_scheduler_type": "cosine"},
    "replay16_lr7e-4_cosine": {"sft_batch_size": 8, "replay_solved": 16, "learning_rate": 7.0e-4, "lr_scheduler_type": "cosine"},
    "replay16_lr1e-3_cosine": {"sft_batch_size": 8, "replay_solved": 16, "learning_rate": 1.0e-3, "lr_scheduler_type": "cosine"},
    "replay32_lr1e-3_cosine": {"sft_batch_size": 8, "replay_solved": 32, "learning_rate": 1.0e-3, "lr_scheduler_type": "cosine"},
}
CHOSEN = "replay32_lr1e-3_cosine"  # examples/relift.yaml's block
HELD_OUT = "balanced"  # bench/curriculum.py's regime whose held-out set is levels 1-6 x 50 (test split)
EASY, HARD = ("1", "2", "3"), ("4", "5", "6")
COMMITTED_START = Path(__file__).resolve().parent / "relift_results" / "sft_start"


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.work, self.out, self.steps = Path(options.work_dir), Path(options.out), options.steps
        self.results = self.out / f"steps{self.steps}"  # runs of another length are another experiment
        self.sft_model = self.train_sft_start()
        self.sft_hash = hashlib.sha256((self.sft_model / "model.safetensors").read_bytes()).hexdigest()[:16]
        self.evaluator = Evaluator(HELD_OUT, str(self.sft_model))

    def train_sft_start(self) -> Path:
        """The quickstart's sft stage on levels 1-3 only, committed in `bench/relift_results/sft_start/`."""
        stage = quickstart_stage("sft")
        stage["data"] = {key: value for key, value in stage["data"].items() if key != "level_weights"} | {"levels": SFT_LEVELS}
        return committed_sft_start(COMMITTED_START, self.work / "sft", stage)

    def manifest(self, arm: str, seed: int) -> dict[str, Any]:
        stage = quickstart_stage("grpo")
        stage.pop("curriculum")
        stage["model"] = "base"
        stage["data"] = {"recipe": "synthetic_arithmetic", **POOL}
        stage["args"] |= {"max_steps": self.steps, "save_steps": self.steps, "logging_steps": 1}
        if ARMS[arm] is not None:
            stage["relift"] = ARMS[arm]
        return {"run_dir": str(self.work / f"{arm}_seed{seed}_steps{self.steps}"), "seed": seed, "base_model": str(self.sft_model.resolve()),
                "decontamination": {"enabled": False}, "stages": [stage]}

    def run(self, arm: str, seed: int) -> dict[str, Any]:
        manifest = self.manifest(arm, seed)
        identity = {"sft": self.sft_hash, "stage": manifest["stages"][0], "seed": seed}
        if ARMS[arm] is not None:  # the SFT steps' own AdamW; runs from when they shared GRPO's are in shared_adam/
            identity["sft_optimizer"] = "own"
        if (ARMS[arm] or {}).get("replay_solved"):  # runs before replays were counted apart from the failed prompts' share
            identity["shares"] = "failed prompts only"
        key = key_of(identity)
        path = self.results / "runs" / f"{arm}_seed{seed}.json"
        if path.is_file() and json.loads(path.read_text())["key"] == key:
            return json.loads(path.read_text())
        print(f"running {arm} seed {seed}", flush=True)
        run_dir = Path(manifest["run_dir"])
        # `gradus run` would skip a stage done under other code with the same manifest: only an interrupted
        # run of this very key resumes.
        marker = run_dir / "bench_key"
        if run_dir.exists() and (not marker.is_file() or marker.read_text() != key):
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(key)
        cpu_before = os.times()
        wall = gradus_run(manifest, run_dir / "manifest.yaml")
        cpu_after = os.times()
        metrics = json.loads((run_dir / "grpo" / "metrics.json").read_text())
        result = {
            "key": key, "arm": arm, "seed": seed, "sft": self.sft_hash, "relift_block": ARMS[arm],
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu_after.children_user + cpu_after.children_system - cpu_before.children_user - cpu_before.children_system, 1),
            "held_out": self.evaluator(run_dir / "grpo" / "model"), "relift": metrics.get("relift"),
            "pool_size": POOL["num_examples"], "final_reward": metrics.get("final_reward"),
        }
        write_json(path, result)
        shutil.rmtree(run_dir / "grpo" / "checkpoints", ignore_errors=True)
        return result

    def start_accuracy(self) -> dict[str, float]:
        path = self.out / "start.json"
        if path.is_file() and json.loads(path.read_text())["sft"] == self.sft_hash:
            return json.loads(path.read_text())["held_out"]
        held_out = self.evaluator(self.sft_model)
        write_json(path, {"sft": self.sft_hash, "held_out": held_out})
        return held_out


def mean_of(held_out: dict[str, float], levels: tuple[str, ...]) -> float:
    return float(np.mean([held_out[level] for level in levels]))


def minus_grpo(results: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float]]]:
    """Per relift arm, (seed, levels 1-3, levels 4-6) of relift minus plain GRPO, for every seed both ran."""
    by_key = {(run["arm"], run["seed"]): run["held_out"] for run in results}
    differences: dict[str, list[tuple[int, float, float]]] = {}
    for arm in [name for name, block in ARMS.items() if block is not None]:
        for seed in sorted({run["seed"] for run in results}):
            if ("grpo", seed) in by_key and (arm, seed) in by_key:
                plain, relift = by_key["grpo", seed], by_key[arm, seed]
                differences.setdefault(arm, []).append((seed, mean_of(relift, EASY) - mean_of(plain, EASY), mean_of(relift, HARD) - mean_of(plain, HARD)))
    return differences


def markdown(start: dict[str, float], results: list[dict[str, Any]]) -> str:
    """Per arm, the seed-mean per-level held-out accuracy; then relift - grpo per seed on levels 1-3 and 4-6."""
    levels = [str(level) for level in range(1, 7)]
    lines = ["| model | seeds | " + " | ".join(f"L{level}" for level in levels) + " | L1-3 | L4-6 | all | failed prompts' demos used (share of pool) | any demo used, replays too (share) | demos trained on, with repeats | SFT steps |",
             "|---|---|" + "---|" * (len(levels) + 7)]
    lines.append("| SFT start (L1-3) | - | " + " | ".join(f"{start[level]:.2f}" for level in levels)
                 + f" | {mean_of(start, EASY):.3f} | {mean_of(start, HARD):.3f} | {start['mean']:.3f} | - | - | - | - |")
    for arm in ARMS:
        runs = [run for run in results if run["arm"] == arm]
        if not runs:
            continue
        mean = {key: float(np.mean([run["held_out"][key] for run in runs])) for key in [*levels, "mean"]}
        demos = any_share = passes = steps = "-"
        if ARMS[arm] is not None:
            used = [run["relift"]["demonstrations_used"] for run in runs]
            demos = f"{np.mean(used):.0f} ({np.mean([run['relift']['demonstrations_used_share'] for run in runs]):.3f})"
            # Runs from before solved replay have neither count: nothing but failed prompts was trained on.
            any_share = f"{np.mean([run['relift'].get('any_demonstration_share', run['relift']['demonstrations_used_share']) for run in runs]):.3f}"
            passes = f"{np.mean([run['relift']['demonstrations_trained'] + run['relift'].get('solved_replayed', 0) for run in runs]):.0f}"
            steps = f"{np.mean([run['relift']['sft_steps'] for run in runs]):.1f}"
        lines.append(f"| {arm} | {','.join(str(run['seed']) for run in runs)} | " + " | ".join(f"{mean[level]:.2f}" for level in levels)
                     + f" | {mean_of(mean, EASY):.3f} | {mean_of(mean, HARD):.3f} | {mean['mean']:.3f} | {demos} | {any_share} | {passes} | {steps} |")
    lines += ["", "| arm | seed | minus grpo, L1-3 | minus grpo, L4-6 |", "|---|---|---|---|"]
    for arm, differences in minus_grpo(results).items():
        lines += [f"| {arm} | {seed} | {easy:+.3f} | {hard:+.3f} |" for seed, easy, hard in differences]
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path, steps: int) -> None:
    """Per relift arm and seed, relift minus plain GRPO on levels 1-3 (x) against levels 4-6 (y), with the
    issue's goal (4-6 at least +10 points, 1-3 no worse) shaded: where each setting sits on the trade-off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 5))
    points = []
    for arm, differences in minus_grpo(results).items():
        _, xs, ys = zip(*differences)
        (line,) = axis.plot(xs, ys, "o", alpha=0.5)
        axis.plot(np.mean(xs), np.mean(ys), "*", markersize=14, color=line.get_color(), label=f"{arm} ({len(xs)} seeds; star: mean)")
        points += zip(xs, ys)
    if not points:
        plt.close(figure)
        return
    left, right = min(-0.1, *(x for x, _ in points)) - 0.02, max(0.05, *(x for x, _ in points)) + 0.02
    top = max(0.15, *(y for _, y in points)) + 0.02
    axis.fill_between([0, right], 0.10, top, color="green", alpha=0.1, label="goal: 4-6 >= +0.10, 1-3 >= 0")
    axis.axvline(0, color="grey", linewidth=0.8)
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_xlim(left, right)
    axis.set_ylim(min(-0.05, *(y for _, y in points)) - 0.02, top)
    axis.set_xlabel("relift minus GRPO, held-out accuracy on levels 1-3 (seen in SFT)")
    axis.set_ylabel("relift minus GRPO, levels 4-6 (never seen in SFT)")
    axis.set_title(f"ReLIFT vs plain GRPO, {steps} steps from an SFT start on levels 1-3 (bench/relift.py)", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=["grpo", CHOSEN], choices=list(ARMS))
    parser.add_argument("--steps", type=int, default=STEPS, help="GRPO steps per run (both arms)")
    parser.add_argument("--work-dir", default="runs/bench_relift")
    parser.add_argument("--out", default="bench/relift_results")
    options = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    bench = Bench(options)
    start = bench.start_accuracy()
    for seed in options.seeds:
        for arm in options.arms:
            bench.run(arm, seed)
    results = [json.loads(path.read_text()) for path in sorted((bench.results / "runs").glob("*_seed*.json"))]
    results = [run for run in results if run["sft"] == bench.sft_hash]
    table = markdown(start, results)
    (bench.results / "table.md").write_text(table)
    plot(results, bench.results / "relift.png", bench.steps)
    print(table)


if __name__ == "__main__":
    main()
