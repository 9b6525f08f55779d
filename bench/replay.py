"""Replay against forgetting: a later SFT stage on levels 4-6 only, with and without 10 % replay of the first SFT's data.

    python -m bench.replay                         # from the repository root; resumes what its work directory holds

One manifest (`gradus run`, stage by stage: bench/stagewise.py) from the quickstart's SFT stage (levels 1-6,
500 steps; reused from bench/curriculum.py's work directory when that bench trained it):

- `later_seed<n>`: `--steps` SFT steps from it on fresh levels 4-6 train problems only (each seen once; constant
  learning rate 2e-3, batch 64: the args of bench/expert_iteration.py); seed n picks those rows and TRL's seed;
- `later_replay_seed<n>`: the same, with `replay: {stage: sft, fraction: 0.1}`: a tenth of the rows it trains
  on are drawn from the first SFT's own data, levels 1-6 (the draw is seeded by the manifest seed, so it is
  the same rows for every n).

Every model is evaluated greedily on two test sets, levels 1-3 and levels 4-6 (`--per-level` problems
each), written as JSON Lines so the run report's forgetting table (`report.md`, pipeline/report.py) gives
them a column each: reading down the levels 1-3 column shows what each later stage kept of what the
first one taught. Results: `bench/replay_results/report.md` (the run's), `results.json`, and `table.md` (each
arm's seed mean ± sample std per test set).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from bench.expert_iteration import EVAL_ARGS, SFT_ARGS
from bench.stagewise import parse_options, quickstart_head, reuse_trained_start, run_stagewise

SETS = {"levels_1-3": [1, 2, 3], "levels_4-6": [4, 5, 6]}


def write_test_sets(directory: Path, per_level: int) -> dict[str, Path]:
    """Each test set as a JSON Lines file (synthetic test split), rewritten only when its content changes."""
    import data_recipes

    paths = {}
    for name, levels in SETS.items():
        rows = data_recipes.load("synthetic_arithmetic", {"split": "test", "levels": levels, "per_level": per_level})
        text = "".join(json.dumps(row) + "\n" for row in rows)
        path = paths[name] = directory / f"{name}.jsonl"
        if not path.is_file() or path.read_text() != text:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return paths


def manifest(options: argparse.Namespace, run_dir: Path, test_sets: dict[str, Path]) -> dict[str, Any]:
    chain = quickstart_head(run_dir)

    def evaluations(model: str) -> list[dict[str, Any]]:
        return [{"name": f"eval_{model}_{name}", "kind": "eval", "model": model, "data": {"recipe": "jsonl", "path": str(path)},
                 "args": EVAL_ARGS} for name, path in test_sets.items()]

    stages = evaluations("sft")
    for seed in options.seeds:
        later_data = {"recipe": "synthetic_arithmetic", "split": "train", "levels": [4, 5, 6], "num_examples": options.steps * 64, "seed": 7 + seed}
        later = {"kind": "sft", "model": "sft", "args": {**SFT_ARGS, "max_steps": options.steps, "seed": seed}}
        plain, replayed = f"later_seed{seed}", f"later_replay_seed{seed}"
        stages += [{"name": plain, **later, "data": later_data}, *evaluations(plain),
                   {"name": replayed, **later, "data": {**later_data, "replay": {"stage": "sft", "fraction": options.fraction}}},
                   *evaluations(replayed)]
    return {**chain, "stages": chain["stages"] + stages}


def summary(accuracy: dict[str, dict[str, Any]], seeds: list[int]) -> str:
    """Per arm, each test set's seed mean ± sample std, and the start's: the forgetting table over seeds."""
    from statistics import fmean, stdev

    def cell(values: list[float]) -> str:
        return f"{fmean(values):.3f} ± {stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    lines = ["| model | seeds | " + " | ".join(SETS) + " |", "|---|---|" + "---:|" * len(SETS),
             "| sft (start) | - | " + " | ".join(f"{accuracy[f'eval_sft_{name}']['accuracy']:.3f}" for name in SETS) + " |"]
    for arm in ("later", "later_replay"):
        cells = [cell([accuracy[f"eval_{arm}_seed{seed}_{name}"]["accuracy"] for seed in seeds]) for name in SETS]
        lines.append(f"| {arm} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="SFT steps of each later stage")
    parser.add_argument("--fraction", type=float, default=0.1, help="replay fraction")
    parser.add_argument("--per-level", type=int, default=30, help="test problems per level")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="a later and a later_replay stage per seed (its data and TRL seed)")
    options = parse_options(parser, "replay")
    work = Path(options.work_dir)
    reuse_trained_start(work / "run")
    stages = run_stagewise(manifest(options, work / "run", write_test_sets(work / "sets", options.per_level)), work / "manifest.yaml")
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    accuracy = {name: {"accuracy": entry["metrics"]["accuracy"], "by_level": entry["metrics"]["accuracy_by_level"]}
                for name, entry in stages.items() if entry["kind"] == "eval"}
    (out / "results.json").write_text(json.dumps({"options": vars(options), "accuracy": accuracy,
                                                  "replay": {seed: stages[f"later_replay_seed{seed}"]["metrics"].get("replay") for seed in options.seeds},
                                                  "cpu_seconds": {name: entry["cpu_seconds"] for name, entry in stages.items()}}, indent=1) + "\n")
    shutil.copy(work / "run" / "report.md", out / "report.md")
    (out / "table.md").write_text(summary(accuracy, options.seeds))
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
