"""GRPO's gain over its SFT start in the quickstart, over GRPO seeds: what the README's table reports.

    python -m bench.quickstart_seeds                 # seeds 0 1 2; resumes from bench/quickstart_seeds/
    python -m bench.quickstart_seeds --seeds 0 1 2 3

`gradus run examples/quickstart.yaml` once per seed into one run directory, the seed given to the `grpo`
stage only (`stages.grpo.args.seed=N`), so the SFT stage (and its eval) is trained once and every seed
starts GRPO from the same weights: the spread is GRPO's (sampling, prompt order), not SFT's. Each seed's
held-out accuracies (the quickstart's own eval stages, 600 greedy problems) are cached in
`bench/quickstart_seeds/start_<sft>/grpo_<stage>/seed<n>.json`, `<sft>` the SFT weights' hash (the same
manifest trains other weights on another CPU, whose float kernels differ, and its figures are another
experiment), `<stage>` a hash of the quickstart's grpo stage (a changed curriculum is another experiment).

Decontamination is switched off (`decontamination.enabled=false`): the synthetic train and test splits are
disjoint by construction, and so the SFT stage is the one `bench.curriculum` trains (pass
`--run-dir /tmp/curriculum_bench/sft` to reuse it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
STAGES = {"sft": "eval_sft", "grpo": "eval"}  # model -> the eval stage that scores it


def run_seed(run_dir: Path, seed: int) -> dict[str, Any]:
    """One quickstart run with this GRPO seed; returns the two evals' accuracies (overall and per level)."""
    command = [sys.executable, "-m", "pipeline.cli", "run", str(QUICKSTART), f"run_dir={run_dir}",
               "decontamination.enabled=false", f"stages.grpo.args.seed={seed}"]
    if subprocess.run(command, cwd=REPO).returncode:
        raise SystemExit(f"the quickstart with grpo seed {seed} failed; see {run_dir / 'gradus.log'}")
    result: dict[str, Any] = {"seed": seed}
    for model, stage in STAGES.items():
        metrics = json.loads((run_dir / stage / "metrics.json").read_text())
        result[model] = {"accuracy": metrics["accuracy"], "by_level": metrics["accuracy_by_level"]}
    return result


def start_folder(out: Path, run_dir: Path) -> Path | None:
    """Where this SFT start's results with the quickstart's current grpo stage are cached
    (`start_<sft weights>/grpo_<grpo stage>/`), or None before the SFT stage has trained."""
    weights = run_dir / "sft" / "model" / "model.safetensors"
    if not weights.is_file():
        return None
    grpo = next(stage for stage in yaml.safe_load(QUICKSTART.read_text())["stages"] if stage["name"] == "grpo")
    grpo_key = hashlib.sha256(json.dumps(grpo, sort_keys=True).encode()).hexdigest()[:8]
    return out / f"start_{hashlib.sha256(weights.read_bytes()).hexdigest()[:16]}" / f"grpo_{grpo_key}"


def table(results: list[dict[str, Any]]) -> list[str]:
    """Mean ± sample std over seeds per level and overall, for the SFT start and GRPO, and the gain."""
    levels = list(results[0]["sft"]["by_level"])

    def cell(values: list[float]) -> str:
        return f"{fmean(values):.3f} ± {stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    rows = ["| model | " + " | ".join(f"L{level}" for level in levels) + " | all |",
            "|---|" + "---:|" * (len(levels) + 1)]
    for model in STAGES:
        per_level = [cell([run[model]["by_level"][level] for run in results]) for level in levels]
        rows.append(f"| {model} | " + " | ".join(per_level) + f" | {cell([run[model]['accuracy'] for run in results])} |")
    gains = [run["grpo"]["accuracy"] - run["sft"]["accuracy"] for run in results]
    rows.append(f"| gain | " + " | ".join("" for _ in levels) + f" | {cell(gains)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--run-dir", default="/tmp/quickstart_seeds")
    parser.add_argument("--out", default=str(REPO / "bench" / "quickstart_seeds"))
    options = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process: the shared 2-core machine's fastest
    run_dir, out = Path(options.run_dir), Path(options.out)
    results = []
    for seed in options.seeds:
        folder = start_folder(out, run_dir)
        if folder is None or not (folder / f"seed{seed}.json").is_file():
            result = run_seed(run_dir, seed)
            folder = start_folder(out, run_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"seed{seed}.json").write_text(json.dumps(result, indent=1) + "\n")
        results.append(json.loads((folder / f"seed{seed}.json").read_text()))
        print(f"seed {seed}: sft {results[-1]['sft']['accuracy']:.3f} -> grpo {results[-1]['grpo']['accuracy']:.3f}", flush=True)
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
