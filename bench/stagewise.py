"""Run a manifest one stage at a time with `gradus run`, recording each stage's CPU seconds.

Shared by bench/expert_iteration.py and bench/replay.py, which compare arms at equal compute or read
each stage's figures. Wall clock on this shared 2-core machine moves with everyone else's jobs; the CPU
time of the processes a `gradus run` waits for (the CLI, its preflight, `accelerate launch` and the stage)
does not, so that is what is counted. Stage i runs as `gradus run` on the manifest's first i stages (the
earlier ones are skipped as done; decontamination must be off, so a prefix plans the same fingerprints),
and its CPU time is cached by fingerprint in `cpu.json` next to the manifest: an interrupted bench resumes
where it stopped, counting only the attempt that finished a resumed stage.

The quickstart's SFT stage, which both benches start from, is copied from a run directory where another
bench already trained it with the same fingerprint (TRAINED_STARTS), rather than trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
from pathlib import Path
from typing import Any

from bench.curriculum import QUICKSTART, gradus_run, quickstart_stage, write_json

REPO = Path(__file__).resolve().parents[1]
# Run directories where the same quickstart SFT stage (same manifest fields and seed, decontamination off) may
# already have trained: bench/curriculum.py's before its start was committed, and bench/quickstart_seeds.py's.
TRAINED_STARTS = (Path("/tmp/curriculum_bench/sft"), Path("/tmp/quickstart_seeds"))


def parse_options(parser: argparse.ArgumentParser, name: str) -> argparse.Namespace:
    """The bench's options plus the work and results directories every stagewise bench takes; each process
    gets one thread unless OMP_NUM_THREADS says otherwise (on this shared machine two fight other jobs)."""
    parser.add_argument("--work-dir", default=f"/tmp/{name}_bench")
    parser.add_argument("--out", default=str(REPO / "bench" / f"{name}_results"))
    options = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return options


def quickstart_head(run_dir: Path) -> dict[str, Any]:
    """A manifest holding the quickstart's SFT stage alone (decontamination off: the synthetic splits are
    disjoint by construction), the head every benched chain adds its stages to."""
    import yaml

    quickstart = yaml.safe_load(QUICKSTART.read_text())
    return {"run_dir": str(run_dir), "seed": quickstart["seed"], "base_model": quickstart["base_model"],
            "decontamination": {"enabled": False}, "stages": [quickstart_stage("sft")]}


def reuse_trained_start(run_dir: Path) -> None:
    """Copy the already trained quickstart SFT (its ledger entry, tiny base model and stage directory without
    checkpoints) into `run_dir` from the first of TRAINED_STARTS that has it; `gradus run` then skips it if,
    and only if, its fingerprint matches."""
    trained = next((start for start in TRAINED_STARTS if (start / "sft" / "done.json").is_file()), None)
    if (run_dir / "sft" / "done.json").is_file() or trained is None:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained / "base_model", run_dir / "base_model", dirs_exist_ok=True)
    shutil.copytree(trained / "sft", run_dir / "sft", ignore=shutil.ignore_patterns("checkpoints"), dirs_exist_ok=True)
    ledger = json.loads((trained / "ledger.json").read_text())
    ledger["stages"] = {"sft": ledger["stages"]["sft"]}
    write_json(run_dir / "ledger.json", ledger)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stagewise(manifest: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """Run every stage of `manifest` in order; per stage its ledger entry plus `cpu_seconds` (None for a
    stage done before this bench measured it, such as the reused SFT start)."""
    import yaml

    from pipeline.manifest import load_manifest
    from pipeline.plan import make_plan

    assert manifest.get("decontamination", {}).get("enabled") is False, "a prefix must plan the fingerprints the whole manifest does"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    planned = {stage.name: stage.fingerprint for stage in make_plan(load_manifest(path)).stages}
    run_dir = Path(manifest["run_dir"])
    cache_path = path.parent / "cpu.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    stages = {}
    for count, stage in enumerate(manifest["stages"], start=1):
        name, fingerprint = stage["name"], planned[stage["name"]]
        done = (_ledger_entry(run_dir, name) or {}).get("fingerprint") == fingerprint and _ledger_entry(run_dir, name)["state"] == "done"
        if not done:
            before = children_cpu_seconds()
            gradus_run({**manifest, "stages": manifest["stages"][:count]}, path)
            cache[name] = {"fingerprint": fingerprint, "cpu_seconds": round(children_cpu_seconds() - before, 1)}
        elif cache.get(name, {}).get("fingerprint") != fingerprint:
            cache[name] = {"fingerprint": fingerprint, "cpu_seconds": None}
        write_json(cache_path, cache)
        stages[name] = {**_ledger_entry(run_dir, name), "cpu_seconds": cache[name]["cpu_seconds"]}
    gradus_run(manifest, path)  # the whole manifest once more: nothing runs, and report.md's tables cover every stage
    return stages


def _ledger_entry(run_dir: Path, name: str) -> dict[str, Any] | None:
    ledger = run_dir / "ledger.json"
    return json.loads(ledger.read_text())["stages"].get(name) if ledger.is_file() else None
