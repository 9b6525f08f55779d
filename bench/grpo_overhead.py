"""How much does the `grpo` stage cost over a bare GRPOTrainer script, in tokens per second?

Both arms train the same model on the same synthetic rows with the same GRPOConfig and the same
`math_accuracy` reward (the bare arm calls the reward function unwrapped; the stage wraps it in
the registry's row guard), both under `accelerate launch` with the same profile and, on a CPU, the
same thread count (`same_threads_for_both_arms`). Each arm runs in its own process, alternating
(stage, bare, stage, bare, ...), `--repeats` times. Every figure comes from the trainer's own metrics of `train()`, so process
start-up and imports are excluded from both: `train_runtime`, and from TRL's logs averaged over the
whole run (logging is set to fire only at the end for this), `num_tokens` (prompt + completion tokens,
each trained once) and `completions/mean_length` (tokens generated per completion).

    python -m bench.grpo_overhead --steps 30 --repeats 3      (from the repository root)
Goal (issues 3 and 15): the stage within 5 % of the bare script. bench/gpu/check.py runs the same
comparison on a GPU with a realistically shaped model (`compare` below).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

import launch
from bench.gpu.processes import run_bounded
from pipeline.plan import accelerate_executable

REPO = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
DATA = {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3], "num_examples": 2000, "seed": 1}


def grpo_args(steps: int, bf16: bool = False, **overrides: Any) -> dict[str, Any]:
    """The GRPOConfig both arms use. Logging fires once, after the last step, so the final log (and with
    it `train()`'s metrics) holds TRL's averages over the whole run, not over the last window."""
    return {
        "max_steps": steps, "learning_rate": 3e-5, "beta": 0.0, "num_generations": 8,
        "per_device_train_batch_size": 32, "max_completion_length": 48, "temperature": 1.0,
        "logging_steps": steps + 1, "save_strategy": "no", "gradient_checkpointing": False, "report_to": "none",
        "seed": 0, "bf16": bf16, **overrides,
    }


@dataclasses.dataclass
class Setup:
    """What both arms train: the manifest's `base_model` (a tiny spec or a model directory), data, GRPOConfig
    fields, and the launch profile both run under."""

    base_model: dict[str, Any] | str
    data: dict[str, Any]
    args: dict[str, Any]
    profile: str = "single"


def throughput(metrics: dict[str, Any], args: dict[str, Any], num_processes: int = 1) -> dict[str, float]:
    """An arm's figures from its `train()` metrics: seconds per step, tokens generated and trained per second.

    Completions per step = per-device batch x gradient accumulation x processes (TRL generates once per
    `steps_per_generation` steps, as many completions as those steps train on); `num_tokens` counts
    each completion's prompt and completion tokens once, as trained with `num_iterations` 1.
    """
    if args.get("num_iterations", 1) != 1:
        raise ValueError("throughput: num_iterations must be 1 (each generated token trained once)")
    steps, runtime = metrics["global_step"], metrics["train_runtime"]
    completions = steps * args["per_device_train_batch_size"] * args.get("gradient_accumulation_steps", 1) * num_processes
    return {
        "seconds_per_step": runtime / steps,
        "generated_tokens_per_s": metrics["completions/mean_length"] * completions / runtime,
        "trained_tokens_per_s": metrics["num_tokens"] / runtime,
    }


def run_stage(work: Path, setup: Setup, first: bool, timeout_s: float) -> dict[str, float]:
    """One `gradus run` of a single grpo stage (`--from grpo` after the first, so it trains again)."""
    manifest = {
        "run_dir": str(work / "run"), "seed": 0, "base_model": setup.base_model,
        "stages": [{"name": "grpo", "kind": "grpo", "data": setup.data, "args": setup.args,
                    "rewards": [{"name": "math_accuracy"}], "launch": {"profile": setup.profile, "num_processes": 1}}],
    }
    path = work / "grpo.yaml"
    path.write_text(yaml.safe_dump(manifest))
    command = [sys.executable, "-m", "pipeline.cli", "run", str(path)] + ([] if first else ["--from", "grpo"])
    run_bounded(command, timeout_s, work / "stage.log", cwd=REPO)
    metrics = json.loads((work / "run" / "grpo" / "metrics.json").read_text())
    return throughput(metrics, setup.args, metrics["num_processes"])


def run_bare_arm(work: Path, setup: Setup, timeout_s: float) -> dict[str, float]:
    """The bare script in its own process, launched the way the stage is (and TRL documents its scripts)."""
    setup_file, result = work / "setup.json", work / "bare.json"
    setup_file.write_text(json.dumps(dataclasses.asdict(setup)))
    command = [accelerate_executable(), "launch", "--config_file", str(launch.profile_path(setup.profile)), "--num_processes", "1",
               "-m", "bench.grpo_overhead", "--bare", str(setup_file), str(model_dir(work, setup)), str(result)]
    run_bounded(command, timeout_s, work / "bare.log", cwd=REPO)
    return json.loads(result.read_text())


def model_dir(work: Path, setup: Setup) -> Path:
    """Where the bare arm loads the model: the stage's materialised tiny model, or the directory named."""
    return work / "run" / "base_model" if isinstance(setup.base_model, dict) else Path(setup.base_model)


def train_bare(setup: Setup, model_path: Path, out_dir: Path) -> dict[str, float]:
    """The same training as a plain TRL script would write it."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from data_recipes.synthetic import SyntheticOptions, generate

    options = SyntheticOptions(**{key: value for key, value in setup.data.items() if key != "recipe"})
    trainer = GRPOTrainer(
        model=str(model_path),
        reward_funcs=[rewards.resolve("math_accuracy")()],
        args=GRPOConfig(output_dir=str(out_dir), **setup.args),
        train_dataset=Dataset.from_list(generate(options)),
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )
    output = trainer.train()
    metrics = {**output.metrics, "global_step": trainer.state.global_step}
    return throughput(metrics, setup.args, trainer.accelerator.num_processes)


def compare(setup: Setup, work: Path, repeats: int, deadline: float, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Alternate stage and bare arms `repeats` times before `deadline` (a time.time()); each arm's runs,
    medians and the stage/bare ratios. An arm that fails or runs out of time ends the comparison: the
    result then carries `error` (with the arm's output tail) beside what the arms before it measured."""
    arms: dict[str, list[dict[str, float]]] = {"stage": [], "bare": []}
    error = None
    same_threads_for_both_arms()
    try:
        for repeat in range(repeats):
            arms["stage"].append(run_stage(work, setup, first=repeat == 0, timeout_s=deadline - time.time()))
            arms["bare"].append(run_bare_arm(work, setup, timeout_s=deadline - time.time()))
            say(f"repeat {repeat + 1}: stage {arms['stage'][-1]['trained_tokens_per_s']:.1f} trained tokens/s, "
                f"bare {arms['bare'][-1]['trained_tokens_per_s']:.1f}")
    except Exception as failure:  # recorded, not raised: the runs before it are still figures
        error = f"{type(failure).__name__}: {failure}"
    result = summarise(arms)
    if error:
        result["error"] = error
    return result


def same_threads_for_both_arms() -> None:
    """On a CPU machine the runner gives a stage all the cores (launch.cpu_threads_per_process), where
    `accelerate launch` gives a bare script one thread: pin the runner's choice for both arms (a value
    already set wins, in both), so the comparison is of gradus against TRL, not of thread counts."""
    if not launch.has_gpu():
        os.environ.setdefault("OMP_NUM_THREADS", str(launch.cpu_threads_per_process(1)))


def summarise(arms: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Each arm's runs and medians; ratio = stage median / bare median per figure (above 1 = stage faster)."""
    medians = {arm: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for arm, runs in arms.items() if runs}
    result: dict[str, Any] = {"runs": arms, "median": medians}
    if len(medians) == 2:
        result["ratio"] = {key: medians["stage"][key] / medians["bare"][key] for key in ("generated_tokens_per_s", "trained_tokens_per_s")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bare", nargs=3, metavar=("SETUP_JSON", "MODEL_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        setup = Setup(**json.loads(Path(args.bare[0]).read_text()))
        with tempfile.TemporaryDirectory() as scratch:
            figures = train_bare(setup, Path(args.bare[1]), Path(scratch))
        Path(args.bare[2]).write_text(json.dumps(figures))
        return

    setup = Setup(base_model={"tiny": TINY}, data=DATA, args=grpo_args(args.steps, use_cpu=True))
    with tempfile.TemporaryDirectory() as scratch:
        result = compare(setup, Path(scratch), args.repeats, deadline=float("inf"))
    if "error" in result:
        sys.exit(f"grpo_overhead: {result['error']}")
    stage, bare = result["median"]["stage"], result["median"]["bare"]
    print(f"\nmedian s/step: gradus grpo stage {stage['seconds_per_step']:.3f}, bare GRPOTrainer {bare['seconds_per_step']:.3f}; "
          f"trained tokens/s ratio {result['ratio']['trained_tokens_per_s']:.3f} "
          f"({'within' if result['ratio']['trained_tokens_per_s'] >= 0.95 else 'OUTSIDE'} the 5 % goal)")


if __name__ == "__main__":
    main()
