"""Curriculum strategies against uniform sampling, GRPO from one SFT start, in two regimes.

    python -m bench.curriculum                  # everything, resuming from what bench/curriculum_results/start_<sft>/runs/ holds
    python -m bench.curriculum --regimes skewed --seeds 0 --strategies uniform lp   # a slice

From the repository root. What it does, each step cached so an interrupted bench resumes:

1. **The SFT start**, trained once: the quickstart's `sft` stage (examples/quickstart.yaml, 500 steps on
   levels 1-6), run with `gradus run` into `<work-dir>/sft` and copied to `bench/curriculum_results/sft_start/`
   (4 MB, committed: another CPU trains other weights from the same manifest, so a later session on another
   machine can add runs only from the committed start). Its weights' hash is stamped on every result and names
   the folder of its runs; results from another start are never mixed in.
2. **Two pools** of synthetic arithmetic prompts (train split), and for each the **offline estimate**:
   `num_samples` completions per prompt from the SFT start, scored by `math_accuracy`
   (`stages.difficulty.estimate_shard`, the `difficulty` stage's own code), giving every prompt a pass rate.
   - *skewed*: levels 1-10 (7-10 never seen in SFT; level 1 nearly saturated), weighted toward both ends;
     the bench stops unless at least 60 % of its prompts are at pass rate 0 or 1 by the estimate;
   - *balanced*: levels 1-6, the quickstart's GRPO pool.
3. **GRPO runs**, one per (regime, strategy, seed): a one-stage manifest (the quickstart's `grpo` args,
   `max_steps` 150, a checkpoint every 25 steps, logging every step) run with `gradus run`. Strategies:

   | name        | curriculum block                                     | pays for the estimate |
   |-------------|------------------------------------------------------|---|
   | uniform     | strategy: uniform (TRL's shuffle)                     | no |
   | dynamic     | uniform + dynamic_sampling (DAPO)                     | no (pays its extra generations) |
   | speed       | uniform + dynamic_sampling, screen_generations 4 (SPEED-RL) | no (idem) |
   | offline     | uniform on the prompts the estimate puts in [0.2, 0.8] (open-r1) | yes |
   | band_prior  | band, prior_column: pass_rate                         | yes |
   | band, bandit, ucb, lp, ordered, adaptive | that strategy over `level` buckets, defaults | no |

   The balanced regime runs uniform and the two best of the skewed regime (by plateau, the mean held-out
   accuracy over steps 75-150, then steps to uniform's final accuracy), or `--balanced-strategies`. Runs go most telling
   first (`run_order`): seed 0 of every skewed strategy; seeds 1-2 of uniform, the two best so far and
   dynamic sampling; the balanced regime; the other skewed seeds.
4. **Held-out accuracy** of every checkpoint (and of the start, step 0): greedy, `math_accuracy`, on
   `{split: test}` problems: levels 1-8 x 40 (skewed; 320 problems), levels 1-6 x 50 (balanced; 300).

Each finished run becomes `bench/curriculum_results/start_<sft>/runs/<regime>_<strategy>_seed<n>.json`
(`<sft>`: the first 16 hex digits of the SFT start's weights' sha256) (its config key,
held-out curve, per-step logs: zero-advantage fraction, step time, dynamic sampling's extra completions),
small enough to commit, so a later session resumes from what landed; its checkpoints are then deleted.
The summary (`curriculum.json`, `table.md`, `curriculum.png`) is rebuilt from whatever runs exist.

Per strategy: the seed-mean (± sample std, and min-max band in the plot) held-out accuracy at every eval
step; the steps, generated completions (GRPO's 64 a step, dynamic sampling's extras, the estimate's k per
prompt where used) and wall-clock (TRL's logged step time, plus the estimate's) to reach uniform's final
seed-mean accuracy, linearly interpolated between eval steps, as a ratio to uniform's full budget, from the
seed-mean curve and per seed against that seed's uniform final; the mean fraction of zero-advantage groups
(TRL's `frac_reward_zero_std`; for dynamic sampling, also dropped groups over all groups generated).

Threads: every process runs with `OMP_NUM_THREADS=1` unless `--threads` says otherwise; on a shared
2-core machine one thread is many times faster than two fighting other jobs (one eval: 7 s against 270 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from launch.atomic import write_atomically

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
STEPS, EVAL_EVERY = 150, 25
CHECKPOINTS = list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
KEEP_BAND = [0.2, 0.8]  # open-r1's offline filter
SKEW_GOAL = 0.6  # share of the skewed pool at pass rate 0 or 1
COMMITTED_START = REPO / "bench" / "curriculum_results" / "sft_start"


@dataclass(frozen=True)
class Regime:
    pool: dict[str, Any]  # synthetic_arithmetic options of the training pool
    held_out: dict[str, Any]  # synthetic_arithmetic options of the held-out set
    max_new_tokens: int  # held-out greedy decoding
    max_completion_length: int  # GRPO, and the estimate's sampling


REGIMES = {
    "skewed": Regime(
        pool={"split": "train", "levels": list(range(1, 11)), "level_weights": [2, 1, 1, 1, 1, 1, 2, 2, 2, 2], "num_examples": 600, "seed": 1},
        held_out={"split": "test", "levels": list(range(1, 9)), "per_level": 40},
        max_new_tokens=112, max_completion_length=128,
    ),
    "balanced": Regime(
        pool={"split": "train", "levels": list(range(1, 7)), "num_examples": 600, "seed": 1},
        held_out={"split": "test", "levels": list(range(1, 7)), "per_level": 50},
        max_new_tokens=96, max_completion_length=96,
    ),
}


@dataclass(frozen=True)
class Strategy:
    curriculum: dict[str, Any]
    uses_estimate: bool = False  # its cost includes the offline estimate's completions and time
    filtered_pool: bool = False  # trains only on the prompts the estimate puts inside KEEP_BAND


STRATEGIES = {
    "uniform": Strategy({"strategy": "uniform"}),
    "dynamic": Strategy({"strategy": "uniform", "dynamic_sampling": True}),
    "offline": Strategy({"strategy": "uniform"}, uses_estimate=True, filtered_pool=True),
    "band_prior": Strategy({"strategy": "band", "prior_column": "pass_rate"}, uses_estimate=True),
    "band": Strategy({"strategy": "band"}),
    "bandit": Strategy({"strategy": "bandit"}),
    "ucb": Strategy({"strategy": "ucb"}),
    "lp": Strategy({"strategy": "lp"}),
    "speed": Strategy({"strategy": "uniform", "dynamic_sampling": True, "screen_generations": 4}),
    "ordered": Strategy({"strategy": "ordered"}),
    "adaptive": Strategy({"strategy": "adaptive"}),
}


def key_of(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(payload, indent=1) + "\n")


def gradus_run(manifest: dict[str, Any], path: Path) -> float:
    """`gradus run` a manifest (resuming whatever an interrupted run left); its wall seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    started = time.time()
    with (path.parent / "gradus.log").open("a") as log:
        status = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if status.returncode:
        raise SystemExit(f"gradus run {path} failed; see {path.parent / 'gradus.log'}")
    return time.time() - started


def quickstart_stage(name: str) -> dict[str, Any]:
    return next(stage for stage in yaml.safe_load(QUICKSTART.read_text())["stages"] if stage["name"] == name)


def committed_sft_start(committed: Path, run_dir: Path, stage: dict[str, Any]) -> Path:
    """`committed`, the SFT start a bench's results rest on, if it holds a model; else `stage` (an sft stage
    on the quickstart's base model) trained with `gradus run` in `run_dir` and copied there, to be committed.
    The same manifest trains other weights on another CPU (its float kernels differ), so only a committed
    start lets a later session on another machine add runs to the same experiment."""
    if (committed / "model.safetensors").is_file():
        return committed
    if not (run_dir / stage["name"] / "done.json").is_file():
        quickstart = yaml.safe_load(QUICKSTART.read_text())
        print(f"training the SFT start into {run_dir}", flush=True)
        gradus_run({"run_dir": str(run_dir), "seed": quickstart["seed"], "base_model": quickstart["base_model"],
                    "decontamination": {"enabled": False}, "stages": [stage]}, run_dir / "manifest.yaml")
    shutil.copytree(run_dir / stage["name"] / "model", committed, ignore=shutil.ignore_patterns("training_args.bin"))
    return committed


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.work = Path(options.work_dir)
        self.sft_model = self.train_sft_start()
        self.sft_hash = hashlib.sha256((self.sft_model / "model.safetensors").read_bytes()).hexdigest()[:16]
        # One folder per SFT start: the same manifest trains other weights on another CPU (its float kernels
        # differ), and runs from two starts are two experiments, never one table.
        self.out = Path(options.out) / f"start_{self.sft_hash}"
        self.runs = self.out / "runs"
        self._evaluator: Evaluator | None = None

    # -- the shared start and the pools -----------------------------------------------------------

    def train_sft_start(self) -> Path:
        """The committed SFT start (`bench/curriculum_results/sft_start/`): the quickstart's sft stage."""
        return committed_sft_start(COMMITTED_START, self.work / "sft", quickstart_stage("sft"))
        model = self.work / "sft" / "sft" / "model"
        if not (self.work / "sft" / "sft" / "done.json").is_file():
            quickstart = yaml.safe_load(QUICKSTART.read_text())
            print("training the SFT start (the quickstart's sft stage)", flush=True)
            gradus_run({"run_dir": str(self.work / "sft"), "seed": quickstart["seed"], "base_model": quickstart["base_model"],
                        "decontamination": {"enabled": False}, "stages": [quickstart_stage("sft")]}, self.work / "sft" / "manifest.yaml")
        shutil.copytree(model, COMMITTED_START, ignore=shutil.ignore_patterns("training_args.bin"))
        return COMMITTED_START

    def pool(self, regime: str) -> Any:
        import data_recipes

        return data_recipes.load("synthetic_arithmetic", REGIMES[regime].pool)

    def estimate(self, regime: str) -> dict[str, Any]:
        """The offline estimate of the pool's pass rates for the SFT start, cached in runs/."""
        settings = {"sft": self.sft_hash, "pool": REGIMES[regime].pool, "num_samples": self.options.estimate_samples,
                    "max_new_tokens": REGIMES[regime].max_completion_length, "temperature": 1.0}
        path = self.runs / f"{regime}_estimate.json"
        if path.is_file() and json.loads(path.read_text())["key"] == key_of(settings):
            cached = json.loads(path.read_text())
            if "cpu_seconds" in cached or not self.options.time_estimates:
                return cached
            # An estimate cached before its CPU time was recorded: sample it again (the same seed, so
            # the same pass rates on this machine) only to time it.
            timed = self.sample_estimate(regime, settings)
            if timed["pass_rate"] != cached["pass_rate"]:
                raise SystemExit(f"[{regime}] the estimate sampled again differs from the cached one: its CPU time would not be its own")
            write_json(path, {**cached, "cpu_seconds": timed["cpu_seconds"]})
            return json.loads(path.read_text())
        payload = self.sample_estimate(regime, settings)
        write_json(path, payload)
        return payload

    def sample_estimate(self, regime: str, settings: dict[str, Any]) -> dict[str, Any]:
        """`num_samples` completions per pool prompt from the SFT start, scored: the difficulty stage's own code."""
        import rewards
        from stages import common
        from stages.arguments import DifficultyArgs
        from stages.difficulty import estimate_shard, summary
        from transformers import AutoModelForCausalLM, set_seed

        print(f"[{regime}] offline estimate: {settings['num_samples']} samples per prompt", flush=True)
        started, cpu_started = time.time(), time.process_time()
        model = AutoModelForCausalLM.from_pretrained(str(self.sft_model)).eval()
        tokenizer = common.load_tokenizer(str(self.sft_model))
        args = DifficultyArgs(num_samples=settings["num_samples"], max_new_tokens=settings["max_new_tokens"], batch_size=512)
        pool = self.pool(regime)
        score = rewards.build("math_accuracy", {})
        set_seed(0)
        estimate = estimate_shard(pool, common.policy_sampler(model, tokenizer, args), tokenizer, [("math_accuracy", 1.0, score)], args)
        return {
            "key": key_of(settings), "settings": settings, "pass_rate": estimate["pass_rate"],
            "completions": len(pool) * args.num_samples, "seconds": round(time.time() - started, 1),
            # this process's CPU (generation, one thread); the reward's scoring workers are not counted
            "cpu_seconds": round(time.process_time() - cpu_started, 1),
            "summary": summary(estimate["pass_rate"], list(pool["level"])),
        }

    def pool_file(self, regime: str, filtered: bool) -> Path:
        """The pool as JSON Lines with each prompt's estimated `pass_rate`; `filtered`: only those in KEEP_BAND."""
        estimate = self.estimate(regime)
        path = self.work / regime / ("pool_filtered.jsonl" if filtered else "pool.jsonl")
        rows = [{**row, "pass_rate": rate} for row, rate in zip(self.pool(regime), estimate["pass_rate"], strict=True)]
        if filtered:
            rows = [row for row in rows if KEEP_BAND[0] <= row["pass_rate"] <= KEEP_BAND[1]]
        text = "".join(json.dumps(row) + "\n" for row in rows)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return path

    # -- one run --------------------------------------------------------------------------------

    def manifest(self, regime: str, strategy: str, seed: int, run_dir: Path) -> dict[str, Any]:
        grpo = quickstart_stage("grpo")
        args = {**grpo["args"], "max_steps": STEPS, "save_steps": EVAL_EVERY, "save_total_limit": None, "logging_steps": 1,
                "max_completion_length": REGIMES[regime].max_completion_length, "report_to": "none"}
        data = {"recipe": "jsonl", "path": str(self.pool_file(regime, STRATEGIES[strategy].filtered_pool))}
        stage = {"name": "grpo", "kind": "grpo", "model": "base", "data": data, "rewards": grpo["rewards"],
                 "curriculum": {"difficulty_column": "level", **STRATEGIES[strategy].curriculum}, "args": args}
        if stage["curriculum"]["strategy"] == "uniform":
            stage["curriculum"].pop("difficulty_column")  # uniform needs no buckets; the shares it logs would be constant
        return {"run_dir": str(run_dir), "seed": seed, "base_model": str(self.sft_model), "decontamination": {"enabled": False}, "stages": [stage]}

    def key(self, regime: str, strategy: str, seed: int) -> tuple[str, dict[str, Any]]:
        """A run's cache key (everything its figures depend on, no paths) and its manifest."""
        manifest = self.manifest(regime, strategy, seed, self.work / regime / f"{strategy}_seed{seed}")
        pool_path = Path(manifest["stages"][0]["data"]["path"])
        identity = {**manifest, "run_dir": None, "base_model": self.sft_hash,
                    "stages": [{**manifest["stages"][0], "data": {"pool_sha256": hashlib.sha256(pool_path.read_bytes()).hexdigest()}}]}
        key = key_of({"manifest": identity, "held_out": REGIMES[regime].held_out,
                      "max_new_tokens": REGIMES[regime].max_new_tokens, "estimate": self.estimate(regime)["key"]})
        return key, manifest

    def cached(self, regime: str, strategy: str, seed: int) -> dict[str, Any] | None:
        path = self.runs / f"{regime}_{strategy}_seed{seed}.json"
        if path.is_file() and json.loads(path.read_text())["key"] == self.key(regime, strategy, seed)[0]:
            return json.loads(path.read_text())
        return None

    def run(self, regime: str, strategy: str, seed: int) -> dict[str, Any]:
        cached = self.cached(regime, strategy, seed)
        if cached is not None:
            return cached
        path = self.runs / f"{regime}_{strategy}_seed{seed}.json"
        key, manifest = self.key(regime, strategy, seed)
        run_dir, pool_path = Path(manifest["run_dir"]), Path(manifest["stages"][0]["data"]["path"])
        cpu_before = os.times()
        wall = gradus_run(manifest, run_dir / "manifest.yaml")
        cpu_after = os.times()
        checkpoints = run_dir / "grpo" / "checkpoints"
        log_history = json.loads((checkpoints / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())["log_history"]
        evaluator = self.evaluator(regime)
        held_out = {str(step): evaluator(checkpoints / f"checkpoint-{step}") for step in CHECKPOINTS}
        result = {
            "key": key, "regime": regime, "strategy": strategy, "seed": seed, "sft": self.sft_hash,
            "curriculum": manifest["stages"][0]["curriculum"], "uses_estimate": STRATEGIES[strategy].uses_estimate,
            "train_prompts": sum(1 for _ in pool_path.open()),
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu_after.children_user + cpu_after.children_system
                                                              - cpu_before.children_user - cpu_before.children_system, 1),
            "held_out": held_out, "steps": per_step(log_history),
        }
        write_json(path, result)
        shutil.rmtree(checkpoints)  # the figures are in the result; the models are not kept
        return result

    def evaluator(self, regime: str) -> Evaluator:
        if self._evaluator is None or self._evaluator.regime != regime:
            self._evaluator = Evaluator(regime, str(self.sft_model))
        return self._evaluator

    def start_accuracy(self, regime: str) -> dict[str, float]:
        path = self.runs / f"{regime}_start.json"
        settings = {"sft": self.sft_hash, "held_out": REGIMES[regime].held_out, "max_new_tokens": REGIMES[regime].max_new_tokens}
        if path.is_file() and json.loads(path.read_text())["key"] == key_of(settings):
            return json.loads(path.read_text())["held_out"]
        held_out = self.evaluator(regime)(self.sft_model)
        write_json(path, {"key": key_of(settings), "held_out": held_out})
        return held_out


def per_step(log_history: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """The per-step figures the summary needs, one list per quantity (step 1 first)."""
    entries = {entry["step"]: entry for entry in log_history if "frac_reward_zero_std" in entry}
    names = {"frac_reward_zero_std": "zero_std", "reward": "reward", "step_time": "step_time",
             "dynamic_sampling/extra_completions": "extra_completions", "dynamic_sampling/dropped_groups": "dropped_groups",
             "completions/mean_length": "mean_length"}
    steps = sorted(entries)
    return {"step": steps} | {short: [entries[step].get(name) for step in steps] for name, short in names.items()}


class Evaluator:
    """Greedy held-out accuracy (mean and per level) of a model directory, in this process."""

    def __init__(self, regime: str, tokenizer_path: str) -> None:
        import data_recipes
        import rewards
        from stages import common

        self.regime, self.common = regime, common
        self.data = data_recipes.load("synthetic_arithmetic", REGIMES[regime].held_out)
        self.tokenizer = common.load_tokenizer(tokenizer_path)
        self.score = rewards.build("math_accuracy", {})

    def __call__(self, model_path: Path) -> dict[str, float]:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(model_path)).eval()
        prompts = list(self.data["prompt"])
        completions = self.common.generate(model, self.tokenizer, prompts, max_new_tokens=REGIMES[self.regime].max_new_tokens, batch_size=len(prompts))
        scores = [0.0 if score is None else float(score) for score in self.score(prompts=prompts, completions=completions, answer=list(self.data["answer"]))]
        by_level: dict[str, list[float]] = {}
        for level, score in zip(self.data["level"], scores):
            by_level.setdefault(str(level), []).append(score)
        return {"mean": float(np.mean(scores))} | {level: float(np.mean(values)) for level, values in sorted(by_level.items(), key=lambda item: int(item[0]))}


# -- the summary --------------------------------------------------------------------------------


def first_reach(xs: list[float], ys: list[float], target: float) -> float | None:
    """The first x at which the piecewise-linear curve (xs, ys) reaches `target`, or None."""
    for index, (x, y) in enumerate(zip(xs, ys)):
        if y >= target - 1e-12:
            if index == 0:
                return x
            x0, y0 = xs[index - 1], ys[index - 1]
            return x0 + (x - x0) * (target - y0) / (y - y0)
    return None


def cumulative_at(per_step_values: list[float], step: float) -> float:
    """The sum of per-step values over steps 1..step, linearly interpolated within a step."""
    totals = np.concatenate([[0.0], np.cumsum(per_step_values)])
    return float(np.interp(step, np.arange(len(totals)), totals))


@dataclass
class Costs:
    """What one run spent by each step (the estimate's share included where the strategy uses it):
    completions generated, wall seconds (TRL's step time), and CPU seconds (the run's CPU time shared
    out over the steps in proportion to their wall time; the estimate's own CPU time, or where it was
    not recorded its wall time, an upper bound with one thread). Wall time moves with whatever else
    the machine runs; CPU time much less."""

    completions_per_step: list[float]
    seconds_per_step: list[float]
    cpu_seconds_total: float
    upfront_completions: float = 0.0
    upfront_seconds: float = 0.0
    upfront_cpu_seconds: float = 0.0

    @classmethod
    def of(cls, run: dict[str, Any], estimate: dict[str, Any], batch: Batch) -> Costs:
        steps = run["steps"]
        extra = [value or 0.0 for value in steps["extra_completions"]]
        costs = cls([batch.completions + value for value in extra], [value or 0.0 for value in steps["step_time"]], run["cpu_seconds"])
        if run["uses_estimate"]:
            costs.upfront_completions, costs.upfront_seconds = estimate["completions"], estimate["seconds"]
            costs.upfront_cpu_seconds = estimate.get("cpu_seconds", estimate["seconds"])
        return costs

    def completions(self, step: float) -> float:
        return self.upfront_completions + cumulative_at(self.completions_per_step, step)

    def seconds(self, step: float) -> float:
        return self.upfront_seconds + cumulative_at(self.seconds_per_step, step)

    def cpu_seconds(self, step: float) -> float:
        share = cumulative_at(self.seconds_per_step, step) / max(sum(self.seconds_per_step), 1e-9)
        return self.upfront_cpu_seconds + self.cpu_seconds_total * share


@dataclass(frozen=True)
class Batch:
    """One GRPO step of the quickstart's settings: completions generated and groups trained."""

    completions: int
    groups: int


def summarise(results: list[dict[str, Any]], start: dict[str, dict[str, float]], estimates: dict[str, dict[str, Any]], batch: Batch) -> dict[str, Any]:
    """Per regime and strategy: curves over seeds, costs to reach uniform's final accuracy, waste."""
    summary: dict[str, Any] = {}
    points = [0, *CHECKPOINTS]
    for regime in REGIMES:
        runs = [run for run in results if run["regime"] == regime]
        if not any(run["strategy"] == "uniform" for run in runs):
            continue
        by_strategy: dict[str, dict[int, dict[str, Any]]] = {}
        for run in runs:
            by_strategy.setdefault(run["strategy"], {})[run["seed"]] = run
        curve = lambda run: [start[regime]["mean"]] + [run["held_out"][str(step)]["mean"] for step in CHECKPOINTS]  # noqa: E731
        uniform = by_strategy["uniform"]
        target = float(np.mean([curve(run)[-1] for run in uniform.values()]))
        uniform_costs = {seed: Costs.of(run, estimates[regime], batch) for seed, run in uniform.items()}
        budget_completions = np.mean([costs.completions(STEPS) for costs in uniform_costs.values()])
        budget_seconds = np.mean([costs.seconds(STEPS) for costs in uniform_costs.values()])
        budget_cpu = np.mean([costs.cpu_seconds(STEPS) for costs in uniform_costs.values()])
        rows = {}
        for strategy in [name for name in STRATEGIES if name in by_strategy]:
            seeds = sorted(by_strategy[strategy])
            runs_of = [by_strategy[strategy][seed] for seed in seeds]
            curves = np.array([curve(run) for run in runs_of])
            costs = [Costs.of(run, estimates[regime], batch) for run in runs_of]
            mean_curve = curves.mean(0)
            reached = first_reach(points, mean_curve.tolist(), target)
            # Per seed, against the same seed's uniform final (paired: the same sampling seed).
            per_seed = []
            for seed, run_curve, run_costs in zip(seeds, curves, costs):
                seed_target = curve(uniform[seed])[-1] if seed in uniform else target
                step = first_reach(points, run_curve.tolist(), seed_target)
                per_seed.append(None if step is None else {
                    "steps": step / STEPS, "completions": run_costs.completions(step) / uniform_costs.get(seed, run_costs).completions(STEPS),
                    "seconds": run_costs.seconds(step) / uniform_costs.get(seed, run_costs).seconds(STEPS),
                })
            dropped = [sum(value or 0 for value in run["steps"]["dropped_groups"]) for run in runs_of]
            trained_groups = [len(run["steps"]["step"]) * batch.groups for run in runs_of]
            zero = [float(np.mean([value for value in run["steps"]["zero_std"] if value is not None])) for run in runs_of]
            wasted = [(d + z * t) / (d + t) for d, z, t in zip(dropped, zero, trained_groups)]
            rows[strategy] = {
                "seeds": seeds,
                "steps": points,
                "mean": mean_curve.tolist(), "std": (curves.std(0, ddof=1) if len(seeds) > 1 else np.zeros(len(points))).tolist(),
                "min": curves.min(0).tolist(), "max": curves.max(0).tolist(),
                # The plateau: mean held-out accuracy over the second half of the budget, per seed.
                "plateau": float(curves[:, [index for index, step in enumerate(points) if step >= STEPS // 2]].mean()),
                "plateau_std": float(curves[:, [index for index, step in enumerate(points) if step >= STEPS // 2]].mean(1).std(ddof=1))
                if len(seeds) > 1 else 0.0,
                "final_per_level": {level: float(np.mean([run["held_out"][str(STEPS)][level] for run in runs_of]))
                                    for level in runs_of[0]["held_out"][str(STEPS)] if level != "mean"},
                "zero_std_fraction": float(np.mean(zero)), "wasted_group_fraction": float(np.mean(wasted)),
                "reach_steps": None if reached is None else reached / STEPS,
                "reach_completions": None if reached is None else float(np.mean([c.completions(reached) for c in costs]) / budget_completions),
                "reach_seconds": None if reached is None else float(np.mean([c.seconds(reached) for c in costs]) / budget_seconds),
                "reach_cpu": None if reached is None else float(np.mean([c.cpu_seconds(reached) for c in costs]) / budget_cpu),
                "reach_per_seed": per_seed,
                "completions_at_budget": float(np.mean([c.completions(STEPS) for c in costs])),
            }
        summary[regime] = {"target": target, "start": start[regime], "estimate": estimates[regime]["summary"],
                           "estimate_completions": estimates[regime]["completions"], "strategies": rows}
    return summary


def ratio(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}x"


def markdown(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    for regime, block in summary.items():
        rows = block["strategies"]
        estimate = block["estimate"]
        lines += [f"### {regime}", "",
                  f"Pool by the offline estimate: {estimate['share_never_solved']:.0%} never solved, {estimate['share_always_solved']:.0%} always, "
                  f"{estimate['share_learnable']:.0%} in between ({block['estimate_completions']} completions). "
                  f"Target = uniform's final seed-mean accuracy {block['target']:.3f} (start {block['start']['mean']:.3f}).", "",
                  "| strategy | seeds | " + " | ".join(f"step {step}" for step in next(iter(rows.values()))["steps"])
                  + f" | steps {STEPS // 2}-{STEPS} | steps to target | completions to target | CPU to target | per seed (steps / completions) | zero-adv. groups |",
                  "|---|---|" + "---:|" * (len(CHECKPOINTS) + 2) + "---:|---:|---:|---|---:|"]
        for strategy, row in rows.items():
            cells = [f"{mean:.3f} ± {std:.3f}" for mean, std in zip(row["mean"], row["std"])]
            per_seed = ", ".join("-" if reach is None else f"{reach['steps']:.2f}/{reach['completions']:.2f}" for reach in row["reach_per_seed"])
            waste = f"{row['zero_std_fraction']:.2f}" + (f" ({row['wasted_group_fraction']:.2f} of all)" if row["wasted_group_fraction"] != row["zero_std_fraction"] else "")
            lines.append(f"| {strategy} | {len(row['seeds'])} | " + " | ".join(cells) + f" | {row['plateau']:.3f} ± {row['plateau_std']:.3f}"
                         + f" | {ratio(row['reach_steps'])} | {ratio(row['reach_completions'])} | {ratio(row['reach_cpu'])} | {per_seed} | {waste} |")
        levels = list(next(iter(rows.values()))["final_per_level"])
        lines += ["", "Final held-out accuracy per level (seed-mean):", "",
                  "| strategy | " + " | ".join(f"L{level}" for level in levels) + " |", "|---|" + "---:|" * len(levels)]
        for strategy, row in rows.items():
            lines.append(f"| {strategy} | " + " | ".join(f"{row['final_per_level'][level]:.2f}" for level in levels) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summary), figsize=(6.6 * len(summary), 4.4), squeeze=False)
    for axis, (regime, block) in zip(axes[0], summary.items()):
        for strategy, row in block["strategies"].items():
            line, = axis.plot(row["steps"], row["mean"], marker="o", markersize=3, label=f"{strategy} ({len(row['seeds'])})",
                              linewidth=2.2 if strategy == "uniform" else 1.2, color="black" if strategy == "uniform" else None)
            axis.fill_between(row["steps"], row["min"], row["max"], color=line.get_color(), alpha=0.12)
        axis.axhline(block["target"], color="grey", linestyle=":", linewidth=1, label="uniform final")
        axis.set(xlabel="GRPO step", ylabel="held-out greedy accuracy", title=f"{regime}: seed mean, band = min-max over seeds")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def best_strategies(summary: dict[str, Any], count: int) -> list[str]:
    """The `count` strategies (not uniform) with the highest plateau in the skewed regime (mean held-out
    accuracy over the second half of the budget; ties go to fewer steps to uniform's final accuracy).
    Not the steps themselves: uniform reaches its own final accuracy early and then wanders within the
    eval's noise, so a first crossing ranks noise as much as speed."""
    rows = summary.get("skewed", {}).get("strategies", {})
    ranked = sorted((name for name in rows if name != "uniform"),
                    key=lambda name: (-round(rows[name]["plateau"], 4), rows[name]["reach_steps"] is None, rows[name]["reach_steps"] or 0))
    return ranked[:count]


def run_order(summary: dict[str, Any], options: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Every run, the most telling first, so a bench cut short has answered the most: the first seed of
    every skewed strategy; the other seeds of uniform, the two best so far and dynamic sampling; the
    balanced regime; then the other seeds of the rest. "Best" is re-ranked as results land."""
    first, *others = options.seeds
    skewed = ["uniform", *[name for name in options.strategies if name != "uniform"]]
    best = best_strategies(summary, 2)
    core = [name for name in dict.fromkeys(["uniform", *best, "dynamic"]) if name in skewed]
    balanced = options.balanced_strategies or ["uniform", *best]
    order = ([("skewed", name, first) for name in skewed] + [("skewed", name, seed) for seed in others for name in core]
             + [("balanced", name, seed) for seed in options.seeds for name in balanced]
             + [("skewed", name, seed) for seed in others for name in skewed])
    return [run for run in dict.fromkeys(order) if run[0] in options.regimes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES), help="skewed regime")
    parser.add_argument("--balanced-strategies", nargs="+", choices=list(STRATEGIES), help="default: uniform + the skewed regime's best two")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--estimate-samples", type=int, default=8, help="k of the offline estimate")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--work-dir", default="/tmp/curriculum_bench")
    parser.add_argument("--out", default=str(REPO / "bench" / "curriculum_results"))
    parser.add_argument("--summary-only", action="store_true", help="rebuild the summary from runs/ without running anything")
    parser.add_argument("--time-estimates", action="store_true", help="sample a cached estimate that has no CPU time again, to time it")
    options = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(options.threads)
    import torch

    torch.set_num_threads(options.threads)
    bench = Bench(options)
    grpo_args = quickstart_stage("grpo")["args"]
    batch = Batch(grpo_args["per_device_train_batch_size"], grpo_args["per_device_train_batch_size"] // grpo_args["num_generations"])

    def report() -> dict[str, Any]:
        results = [json.loads(path.read_text()) for path in sorted(bench.runs.glob("*_seed*.json"))]
        foreign = sorted({run["sft"] for run in results} - {bench.sft_hash})
        if foreign:
            raise SystemExit(f"{bench.runs} holds results from another SFT start ({', '.join(foreign)}): not mixed")
        regimes = [regime for regime in REGIMES if any(run["regime"] == regime for run in results)]
        summary = summarise(results, {regime: bench.start_accuracy(regime) for regime in regimes},
                            {regime: bench.estimate(regime) for regime in regimes}, batch)
        if summary:
            (bench.out / "table.md").write_text(markdown(summary))
            write_json(bench.out / "curriculum.json", summary)
            plot(summary, bench.out / "curriculum.png")
        return summary

    if not options.summary_only:
        started = time.time()
        skew = bench.estimate("skewed")["summary"]
        at_the_ends = skew["share_never_solved"] + skew["share_always_solved"]
        print(f"skewed pool: {at_the_ends:.0%} of prompts at pass rate 0 or 1 by the estimate", flush=True)
        if at_the_ends < SKEW_GOAL:
            raise SystemExit(f"the skewed pool is not skewed enough ({at_the_ends:.0%} < {SKEW_GOAL:.0%} at pass rate 0 or 1)")
        while True:
            pending = [run for run in run_order(report(), options) if bench.cached(*run) is None]
            if not pending:
                break
            regime, strategy, seed = pending[0]
            bench.start_accuracy(regime)
            run = bench.run(regime, strategy, seed)
            curve = " ".join(f"{step}:{value['mean']:.3f}" for step, value in run["held_out"].items())
            print(f"[{time.time() - started:6.0f}s] {regime} {strategy} seed {seed}: {run['wall_seconds']:.0f}s  {curve}  "
                  f"({len(pending) - 1} runs to go)", flush=True)
    summary = report()
    print(markdown(summary))


if __name__ == "__main__":
    main()
