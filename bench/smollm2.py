"""SmolLM2-135M-Instruct through `examples/smollm2.yaml`: held-out pass@1 per level before and after the chain,
over GRPO seeds, under the strict boxed reading and math-verify's lenient one, and GSM8K before and after.

    python -m bench.smollm2                 # seeds 0 1 2; resumes from bench/smollm2_results/ and its run directory
    python -m bench.smollm2 --table         # the table and plot from what is cached, running nothing

`gradus run examples/smollm2.yaml` once per seed into one run directory, the seed given to the `grpo` stage only
(`stages.grpo.args.seed=N`), so the base evals and the SFT stage run once and every seed starts GRPO from the
same weights: the spread is GRPO's. An interrupted seed resumes from its stages' checkpoints (the runner's own
resume); a finished one is cached in `bench/smollm2_results/<manifest hash>/seed<n>.json` with every eval's
figures and every stage's wall time, so a changed manifest is another experiment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "examples" / "smollm2.yaml"
ARITHMETIC = {"base": "eval_base", "sft": "eval_sft", "grpo": "eval_grpo"}  # model -> the eval stage that scores it
GSM8K = {"base": "gsm8k_base", "grpo": "gsm8k_grpo"}
READINGS = ("boxed", "lenient")


def run_seed(run_dir: Path, seed: int) -> dict[str, Any]:
    """One chain with this GRPO seed; every eval's pass@1 under both readings, and every stage's wall time."""
    command = [sys.executable, "-m", "pipeline.cli", "run", str(MANIFEST), f"run_dir={run_dir}", f"stages.grpo.args.seed={seed}"]
    if subprocess.run(command, cwd=REPO).returncode:
        raise SystemExit(f"the chain with grpo seed {seed} failed; see {run_dir / 'gradus.log'}")
    ledger = json.loads((run_dir / "ledger.json").read_text())["stages"]
    result: dict[str, Any] = {"seed": seed, "wall_s": {name: entry.get("duration_s") for name, entry in ledger.items()}}
    for name in {*ARITHMETIC.values(), *GSM8K.values()}:
        metrics = json.loads((run_dir / name / "metrics.json").read_text())
        result[name] = {**metrics["by_extraction"], "clipped_fraction": metrics["clipped_fraction"], "n": metrics["n"] - metrics["unscorable"]}
    grpo = json.loads((run_dir / "grpo" / "metrics.json").read_text())
    result["grpo_train"] = {key: value for key, value in grpo.items() if not isinstance(value, (dict, list))}
    return result


def results_folder(out: Path) -> Path:
    return out / hashlib.sha256(MANIFEST.read_bytes()).hexdigest()[:12]


def cell(values: list[float]) -> str:
    return f"{fmean(values):.3f} ± {stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def table(results: list[dict[str, Any]]) -> list[str]:
    """Per reading: pass@1 per level and overall for base, SFT and GRPO (mean ± sample std over seeds), then
    each seed's gain of the chain over the base model; GSM8K before and after; stage wall times."""
    levels = list(results[0]["eval_base"]["boxed"]["accuracy_by_level"])
    lines = []
    for reading in READINGS:
        lines += [f"**{reading} reading**", "", "| model | " + " | ".join(f"L{level}" for level in levels) + " | all |",
                  "|---|" + "---:|" * (len(levels) + 1)]
        for model, stage in ARITHMETIC.items():
            per_level = [cell([run[stage][reading]["accuracy_by_level"][level] for run in results]) for level in levels]
            lines.append(f"| {model} | " + " | ".join(per_level) + f" | {cell([run[stage][reading]['accuracy'] for run in results])} |")
        gains = [run["eval_grpo"][reading]["accuracy"] - run["eval_base"][reading]["accuracy"] for run in results]
        lines += ["", "chain gain over the base model, per seed: " + ", ".join(f"{100 * gain:+.1f}" for gain in gains) + " points", ""]
    lines += ["| GSM8K test (200) | boxed | lenient |", "|---|---:|---:|"]
    for model, stage in GSM8K.items():
        lines.append(f"| {model} | " + " | ".join(cell([run[stage][reading]["accuracy"] for run in results]) for reading in READINGS) + " |")
    stages = list(results[0]["wall_s"])
    lines += ["", "| stage | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages),
              "| wall s (seed mean) | " + " | ".join(f"{fmean(run['wall_s'][stage] or 0 for run in results):.0f}" for stage in stages) + " |"]
    return lines


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(results[0]["eval_base"]["boxed"]["accuracy_by_level"])
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for axis, reading in zip(axes, READINGS):
        for offset, (model, stage) in enumerate(ARITHMETIC.items()):
            values = [[run[stage][reading]["accuracy_by_level"][level] for run in results] for level in levels]
            axis.bar([index + 0.27 * (offset - 1) for index in range(len(levels))], [fmean(v) for v in values], width=0.27, label=model,
                     yerr=[stdev(v) if len(v) > 1 else 0 for v in values])
        axis.set_xticks(range(len(levels)), [f"level {level}" for level in levels])
        axis.set_title(f"{reading} reading")
        axis.set_ylim(0, 1)
    axes[0].set_ylabel("held-out pass@1")
    axes[0].legend()
    figure.suptitle(f"SmolLM2-135M-Instruct, {len(results)} GRPO seed(s)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--run-dir", default="/tmp/smollm2_bench")
    parser.add_argument("--out", default=str(REPO / "bench" / "smollm2_results"))
    parser.add_argument("--table", action="store_true", help="print the table from cached seeds only")
    options = parser.parse_args()
    folder = results_folder(Path(options.out))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in options.seeds:
        cached = folder / f"seed{seed}.json"
        if not cached.is_file():
            if options.table:
                continue
            cached.write_text(json.dumps(run_seed(Path(options.run_dir), seed), indent=1) + "\n")
        results.append(json.loads(cached.read_text()))
        lenient = results[-1]
        print(f"seed {seed}: lenient base {lenient['eval_base']['lenient']['accuracy']:.3f} -> sft {lenient['eval_sft']['lenient']['accuracy']:.3f}"
              f" -> grpo {lenient['eval_grpo']['lenient']['accuracy']:.3f}", flush=True)
    if results:
        (folder / "table.md").write_text("\n".join(table(results)) + "\n")
        plot(results, folder / "smollm2.png")
        print("\n".join(table(results)))


if __name__ == "__main__":
    main()
