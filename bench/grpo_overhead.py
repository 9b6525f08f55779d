"""How much time per step does the `grpo` stage add over a bare GRPOTrainer script?

Both arms train the same tiny model on the same synthetic rows with the same GRPOConfig and the
same `math_accuracy` reward (the bare arm calls the reward function unwrapped; the stage wraps it in
the registry's row guard), both under `accelerate launch --config_file launch/single.yaml` (which
also fixes the thread count). Each arm runs in its own process, alternating, `--repeats` times; the
figure compared is the trainer's own `train_runtime / global_step`, so process start-up and
imports are excluded from both.

    python bench/grpo_overhead.py --steps 30 --repeats 3      (from the repository root)
Goal (issue 3): the stage within 5 % of the bare script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import launch
from pipeline.plan import accelerate_executable

REPO = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
DATA = {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3], "num_examples": 2000, "seed": 1}


def grpo_args(steps: int) -> dict:
    return {
        "max_steps": steps, "learning_rate": 3e-5, "beta": 0.0, "num_generations": 8,
        "per_device_train_batch_size": 32, "max_completion_length": 48, "temperature": 1.0,
        "logging_steps": 10, "save_strategy": "no", "gradient_checkpointing": False, "report_to": "none",
        "use_cpu": True, "bf16": False, "seed": 0,
    }


def run_stage(work: Path, steps: int, first: bool) -> float:
    """One `gradus run` of a single grpo stage; seconds per training step."""
    manifest = {
        "run_dir": str(work / "run"), "seed": 0, "base_model": {"tiny": TINY},
        "stages": [{"name": "grpo", "kind": "grpo", "data": DATA, "args": grpo_args(steps),
                    "rewards": [{"name": "math_accuracy"}]}],
    }
    path = work / "grpo.yaml"
    path.write_text(yaml.safe_dump(manifest))
    command = [sys.executable, "-m", "pipeline.cli", "run", str(path)] + ([] if first else ["--from", "grpo"])
    subprocess.run(command, check=True, capture_output=True)
    metrics = json.loads((work / "run" / "grpo" / "metrics.json").read_text())
    return metrics["train_runtime"] / metrics["global_step"]


def run_bare(model_dir: Path, steps: int, out_dir: Path) -> float:
    """The same training as a plain TRL script would write it; seconds per training step."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from data_recipes.synthetic import SyntheticOptions, generate

    options = SyntheticOptions(**{key: value for key, value in DATA.items() if key != "recipe"})
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=[rewards.resolve("math_accuracy")()],
        args=GRPOConfig(output_dir=str(out_dir), **grpo_args(steps)),
        train_dataset=Dataset.from_list(generate(options)),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    output = trainer.train()
    return output.metrics["train_runtime"] / trainer.state.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bare", nargs=2, metavar=("MODEL_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        with tempfile.TemporaryDirectory() as scratch:
            seconds = run_bare(Path(args.bare[0]), args.steps, Path(scratch))
        Path(args.bare[1]).write_text(json.dumps(seconds))
        return

    stage_times, bare_times = [], []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for repeat in range(args.repeats):
            stage_times.append(run_stage(work, args.steps, first=repeat == 0))
            result = work / "bare.json"
            # Launched the way the stage is (and TRL documents its scripts): `accelerate launch` with the
            # same profile, which also sets the same thread count.
            bare = ["-m", "bench.grpo_overhead", "--steps", str(args.steps), "--bare", str(work / "run" / "base_model"), str(result)]
            subprocess.run([accelerate_executable(), "launch", "--config_file", str(launch.profile_path("single")), *bare],
                           check=True, capture_output=True, cwd=REPO)
            bare_times.append(json.loads(result.read_text()))
            print(f"repeat {repeat + 1}: stage {stage_times[-1]:.3f} s/step, bare {bare_times[-1]:.3f} s/step", flush=True)
    stage, bare = statistics.median(stage_times), statistics.median(bare_times)
    print(f"\nmedian s/step: gradus grpo stage {stage:.3f}, bare GRPOTrainer {bare:.3f}; ratio {stage / bare:.3f} "
          f"({'within' if stage / bare <= 1.05 else 'OVER'} the 5 % goal)")


if __name__ == "__main__":
    main()
