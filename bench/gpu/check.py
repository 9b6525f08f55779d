"""The GPU check: gradus's chain, SFT throughput and GRPO overhead on one GPU, in 8 minutes of wall time.

    python -m bench.gpu.check --out DIR            a GPU machine (wheels from .whl/ unless gradus is installed)
    python -m bench.gpu.check --out DIR --cpu      the same code path at tiny sizes, packages from this env

Parts, in order, each under its own time budget and the whole under `--budget-s`; a part that fails or
overruns is recorded as failed with its output's tail, and the next part runs:
    environment    (GPU, unless gradus's requirements are met already; or with --wheels) install the carried
                   wheels into `--site` (`pip install --no-index --no-deps --target`; the image's torch is
                   never touched) and put it first on PYTHONPATH; then the versions every stage will
                   import and any unmet requirement
    quickstart     examples/quickstart.yaml through `gradus run` (bf16 where supported; at tiny sizes with
                   --cpu), every stage to done; its report.md is copied beside the results
    model          a random-init model of the Qwen2.5-0.5B shape with gradus's local byte-level tokenizer
    sft_single, sft_zero2
                   SFT tokens/s, MFU and peak memory under launch/single.yaml and launch/zero2.yaml (one
                   process each), bench/gpu/sft_throughput.py
    grpo           the `grpo` stage against a bare GRPOTrainer script on that model, alternating, tokens
                   generated and trained per second and the ratio (bench/grpo_overhead.py's `compare`)
Results: DIR/results.json (every figure, rewritten after each part) and DIR/results.md (one table);
DIR/logs/ has each command's full output.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.gpu.processes import BoundedRunError, run_bounded

REPO = Path(__file__).resolve().parents[2]
QWEN25_05B_SHAPE = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                    "num_key_value_heads": 2}
TRAINING_KINDS = ("sft", "grpo", "dpo", "prm")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one mode runs: the whole budget, each part's cap, and the size of each part's work."""

    budget_s: float
    part_budget_s: dict[str, float]
    model_shape: dict[str, int]
    seq_length: int
    sft: dict[str, int]            # steps, warmup_steps, batch_size, num_examples
    grpo_steps: int
    grpo_args: dict[str, Any]      # GRPOConfig fields over bench.grpo_overhead.grpo_args
    grpo_repeats: int
    grpo_examples: int
    shrink_quickstart: bool


GPU = Sizes(
    budget_s=470,
    # Caps, not expectations: the expected total is about 330 s (estimates, not yet measured on a GPU).
    part_budget_s={"environment": 60, "quickstart": 200, "model": 45, "sft_single": 60, "sft_zero2": 75, "grpo": 150},
    model_shape=QWEN25_05B_SHAPE, seq_length=2048,
    sft={"steps": 25, "warmup_steps": 5, "batch_size": 8, "num_examples": 16000},
    grpo_steps=6, grpo_args={"per_device_train_batch_size": 64, "max_completion_length": 96}, grpo_repeats=2, grpo_examples=2000,
    shrink_quickstart=False,
)
CPU = Sizes(
    # Hang guards, not targets (unloaded, the whole takes about 2 minutes on 2 cores): a shared CPU machine
    # under load runs each part several times slower, and DeepSpeed's first run on a fresh machine
    # compiles its shm_comm op (about 30 s).
    budget_s=1500,
    part_budget_s={"environment": 120, "quickstart": 600, "model": 120, "sft_single": 180, "sft_zero2": 300, "grpo": 400},
    model_shape={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
    seq_length=128,
    sft={"steps": 6, "warmup_steps": 2, "batch_size": 4, "num_examples": 500},
    grpo_steps=2, grpo_args={"per_device_train_batch_size": 16, "max_completion_length": 16}, grpo_repeats=1, grpo_examples=200,
    shrink_quickstart=True,
)


class PartFailed(RuntimeError):
    """A part that did not finish, with whatever figures it had by then."""

    def __init__(self, message: str, figures: dict[str, Any]):
        super().__init__(message)
        self.figures = figures


@dataclasses.dataclass
class Check:
    """One run of the check: where it writes, its mode and deadline, and the results so far."""

    out: Path
    sizes: Sizes
    on_gpu: bool
    deadline: float
    results: dict[str, Any] = dataclasses.field(default_factory=dict)

    def budget(self, part: str) -> float:
        return min(self.sizes.part_budget_s[part], self.deadline - time.time())

    def log(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    def run_part(self, name: str, body: Callable[["Check"], dict[str, Any]]) -> None:
        started = time.time()
        print(f"[check] {name}: starting ({self.budget(name):.0f} s budget)", flush=True)
        try:
            entry = {"status": "ok", **body(self)}
        except PartFailed as failure:
            entry = {"status": "failed", "error": str(failure), **failure.figures}
        except Exception as failure:  # any other failure of a part is recorded, and the check goes on
            entry = {"status": "failed", "error": f"{type(failure).__name__}: {failure}"}
        entry["seconds"] = round(time.time() - started, 1)
        self.results["parts"][name] = entry
        print(f"[check] {name}: {entry['status']} in {entry['seconds']} s", flush=True)
        self.write()

    def write(self) -> None:
        self.results["wall_s"] = round(time.time() - self.results["started_at_unix"], 1)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2) + "\n")
        (self.out / "results.md").write_text(markdown(self.results))


def private_extensions_dir(out: Path) -> None:
    """Give the check's processes their own torch extensions folder, seeded with this user's builds (so
    none is compiled again). DeepSpeed's first run on a machine JIT-compiles an op (on a CPU, its
    shm_comm); a part stopped for overrunning in the middle of that leaves the build's lock file behind,
    and every later DeepSpeed run would wait on it forever. Here only this check's copy can be left so.

    torch builds under `$TORCH_EXTENSIONS_DIR/<op>` when that is set, and otherwise under
    `~/.cache/torch_extensions/py<major><minor>_<cpu|cuXYZ>/<op>`: the seed is that folder (the only one
    for this Python; with builds for several accelerators, none is seeded and an op compiles afresh)."""
    private = out / "torch_extensions"
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        seeds = [Path(os.environ["TORCH_EXTENSIONS_DIR"])]
    else:
        cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"
        seeds = sorted(cache_root.glob(f"py{sys.version_info.major}{sys.version_info.minor}_*"))
    if len(seeds) == 1 and seeds[0].is_dir() and not private.exists():
        shutil.copytree(seeds[0], private, symlinks=True, ignore=shutil.ignore_patterns("lock"))
    os.environ["TORCH_EXTENSIONS_DIR"] = str(private)


def install_wheels(wheels: Path, site: Path, timeout_s: float, log: Path) -> list[str]:
    """Install every carried wheel into `site` as they are (no index, no dependency resolution: the
    image supplies the rest); a torch wheel is refused, since the image's CUDA build must stay."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise PartFailed(f"no wheels in {wheels}: run bash bench/gpu/fetch_wheels.sh on a machine with registry access", {})
    refused = [path.name for path in files if path.name.lower().startswith(("torch-", "nvidia_", "triton-"))]
    if refused:
        raise PartFailed(f"refusing to install {', '.join(refused)}: the GPU image's own torch must be kept", {})
    shutil.rmtree(site, ignore_errors=True)
    run_bounded([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site), *map(str, files)],
                timeout_s, log)
    return [path.name for path in files]


def use_site(site: Path) -> None:
    """Put the installed wheels ahead of the image's packages, here and in every process started from here."""
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["PATH"] = os.pathsep.join([str(site / "bin"), os.environ["PATH"]])


def part_environment(check: Check, wheels: Path | None, site: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if wheels is not None:
        started = time.time()
        figures["installed_wheels"] = install_wheels(wheels, site, check.budget("environment"), check.log("install"))
        figures["install_s"] = round(time.time() - started, 1)
        use_site(site)
    report = check.out / "logs" / "environment.json"
    run_bounded([sys.executable, "-m", "bench.gpu.environment", str(report)], check.budget("environment"), check.log("environment"), cwd=REPO)
    figures.update(json.loads(report.read_text()))
    if figures["failed_imports"]:
        raise PartFailed(f"imports fail: {', '.join(figures['failed_imports'])}", figures)
    check.results["device"] = figures["device"]
    return figures


def bf16_supported(check: Check) -> bool:
    """As the environment part found it (False if that part failed: the rest still runs, in fp32)."""
    return bool(check.results["parts"].get("environment", {}).get("bf16_supported"))


def quickstart_manifest(run_dir: Path, bf16: bool, shrink: bool) -> dict[str, Any]:
    """examples/quickstart.yaml with its run_dir under the check's folder and bf16 on its training stages
    where the GPU has it. `shrink` makes it a CPU test: every size cut to seconds, and only the last of
    the eval stages kept (each stage is a process start, the most of a tiny stage's time), so the chain is
    sft -> grpo (curriculum and reward as they are) -> eval."""
    import yaml

    manifest = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    manifest["run_dir"] = str(run_dir)
    if shrink:
        manifest["base_model"] = {"tiny": {"arch": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                           "num_attention_heads": 2}}
        last = manifest["stages"][-1]
        manifest["stages"] = [stage for stage in manifest["stages"] if stage["kind"] != "eval" or stage is last]
    for stage in manifest["stages"]:
        if shrink:
            shrink_stage(stage)
        if bf16 and stage["kind"] in TRAINING_KINDS:
            stage["args"]["bf16"] = True
    return manifest


def shrink_stage(stage: dict[str, Any]) -> None:
    """One quickstart stage at CPU-test size: a few steps, a few dozen rows."""
    data, args = stage["data"], stage["args"]
    if stage["kind"] == "eval":
        data["per_level"] = 3
        args.update(max_new_tokens=24, batch_size=18)
    else:
        data["num_examples"] = 300
        args.update(max_steps=4, per_device_train_batch_size=16, logging_steps=2)
        if stage["kind"] == "grpo":
            args.update(max_completion_length=16)


def part_quickstart(check: Check) -> dict[str, Any]:
    import yaml

    from pipeline.ledger import Ledger

    bf16 = bf16_supported(check)
    run_dir = check.out / "quickstart"
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun in the same folder trains again, nothing skipped
    manifest = check.out / "quickstart.yaml"
    manifest.write_text(yaml.safe_dump(quickstart_manifest(run_dir, bf16, check.sizes.shrink_quickstart), sort_keys=False))
    error = None
    try:
        run_bounded([sys.executable, "-m", "pipeline.cli", "run", str(manifest)], check.budget("quickstart"), check.log("quickstart"), cwd=REPO)
    except BoundedRunError as failure:
        error = str(failure)
    stages = {
        name: {"state": entry["state"], "duration_s": entry.get("duration_s"),
               **{key: entry.get("metrics", {}).get(key) for key in ("accuracy", "final_loss", "final_reward") if key in (entry.get("metrics") or {})}}
        for name, entry in Ledger(run_dir).stages.items()
    }
    if (run_dir / "report.md").is_file():
        shutil.copyfile(run_dir / "report.md", check.out / "quickstart_report.md")
    figures = {"bf16": bf16, "manifest": str(manifest), "stages": stages}
    planned = [stage["name"] for stage in yaml.safe_load(manifest.read_text())["stages"]]
    not_done = [name for name in planned if stages.get(name, {}).get("state") != "done"]
    if error or not_done:
        raise PartFailed(error or f"stages not done: {', '.join(not_done)}", figures)
    return figures


def part_model(check: Check) -> dict[str, Any]:
    """The throughput model, built once for the SFT and GRPO parts (stages/models.py, the tiny model's builder)."""
    spec = {"arch": "qwen2", **check.sizes.model_shape, "max_position_embeddings": max(4096, check.sizes.seq_length)}
    target = model_path(check)
    shutil.rmtree(target, ignore_errors=True)
    run_bounded([sys.executable, "-m", "stages.models", json.dumps({"tiny": spec, "seed": 0}), str(target)], check.budget("model"), check.log("model"), cwd=REPO)
    return {"spec": spec, "path": str(target)}


def model_path(check: Check) -> Path:
    return check.out / "model"


def part_sft(profile: str) -> Callable[[Check], dict[str, Any]]:
    def measure(check: Check) -> dict[str, Any]:
        from pipeline.plan import accelerate_executable

        import launch

        sizes, bf16 = check.sizes, bf16_supported(check)
        config = {
            "model_dir": str(model_path(check)), "seq_length": sizes.seq_length, "bf16": bf16,
            **{key: sizes.sft[key] for key in ("steps", "warmup_steps", "batch_size")},
            "data": {"split": "train", "levels": [1, 2, 3, 4, 5, 6], "num_examples": sizes.sft["num_examples"], "seed": 2},
        }
        config_path, result = check.out / "logs" / f"sft_{profile}.json", check.out / "logs" / f"sft_{profile}_result.json"
        config_path.write_text(json.dumps(config))
        run_bounded([accelerate_executable(), "launch", "--config_file", str(launch.profile_path(profile)), "--num_processes", "1",
                     "-m", "bench.gpu.sft_throughput", str(config_path), str(result)],
                    check.budget(f"sft_{profile}"), check.log(f"sft_{profile}"), cwd=REPO)
        return {"profile": profile, "batch_size": sizes.sft["batch_size"], "seq_length": sizes.seq_length, **json.loads(result.read_text())}

    return measure


def part_grpo(check: Check) -> dict[str, Any]:
    from bench.grpo_overhead import Setup, compare, grpo_args

    sizes = check.sizes
    setup = Setup(
        base_model=str(model_path(check)),
        data={"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3], "num_examples": sizes.grpo_examples, "seed": 1},
        args=grpo_args(sizes.grpo_steps, bf16=bf16_supported(check), **({} if check.on_gpu else {"use_cpu": True}), **sizes.grpo_args),
    )
    work = check.out / "grpo"
    shutil.rmtree(work, ignore_errors=True)  # so the first stage run trains, never skips an earlier one
    work.mkdir(parents=True)
    result = compare(setup, work, sizes.grpo_repeats, deadline=time.time() + check.budget("grpo"),
                     say=lambda line: print(f"[check] grpo: {line}", flush=True))
    figures = {"args": setup.args, "repeats": sizes.grpo_repeats, **{key: value for key, value in result.items() if key != "error"}}
    if "error" in result:
        raise PartFailed(result["error"], figures)
    return figures


def markdown(results: dict[str, Any]) -> str:
    """Every figure of results.json as one table: part, figure (a path into the JSON), value."""
    rows = ["| part | figure | value |", "|---|---|---|"]
    for part, entry in results.get("parts", {}).items():
        for key, value in flatten(entry):
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append(f"| {part} | {key} | {text.replace('|', '/').replace(chr(10), ' / ')} |")
    head = (f"# gradus GPU check ({results['mode']} mode, {results.get('device', 'device unknown')}, {results['started_at']})\n\n"
            f"`{results['command']}`: wall {results.get('wall_s', 0):.0f} s of a {results['budget_s']:.0f} s budget.\n\n")
    return head + "".join(f"- {line}\n" for line in headline(results.get("parts", {}))) + "\n" + "\n".join(rows) + "\n"


def headline(parts: dict[str, Any]) -> list[str]:
    """The figures the issue asks for, one line each, above the full table."""
    lines = [f"{name}: {entry['status']} ({entry['seconds']} s)" for name, entry in parts.items() if entry["status"] != "ok"]
    stages = parts.get("quickstart", {}).get("stages", {})
    if stages:
        done = sum(stage["state"] == "done" for stage in stages.values())
        lines.append(f"quickstart: {done} of {len(stages)} stages done")
    for name in ("sft_single", "sft_zero2"):
        sft = parts.get(name, {})
        if "tokens_per_s" in sft:
            mfu = "n/a" if sft["mfu_palm"] is None else f"{sft['mfu_palm']:.1%}"
            lines.append(f"{name}: {sft['tokens_per_s']:,.0f} tokens/s, MFU {mfu} (6N + attention), peak memory "
                         f"{sft['peak_memory_bytes'] / 2**30:.2f} GiB")
    ratio = parts.get("grpo", {}).get("ratio")
    if ratio:
        lines.append(f"grpo stage / bare GRPOTrainer: {ratio['trained_tokens_per_s']:.3f} trained tokens/s, "
                     f"{ratio['generated_tokens_per_s']:.3f} generated tokens/s (goal >= 0.95)")
    return lines


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in flatten(item, f"{prefix}{key}.")]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [pair for index, item in enumerate(value) for pair in flatten(item, f"{prefix}{index}.")]
    return [(prefix.rstrip("."), value)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and the runs")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes, no bf16, packages from this environment")
    parser.add_argument("--wheels", type=Path, help="install these wheels first (bench/gpu/fetch_wheels.sh); GPU mode "
                        "installs .whl/ by default unless gradus's requirements are met already; with --cpu, a rehearsal of that")
    parser.add_argument("--site", type=Path, default=Path("/tmp/gradus-gpu-site"), help="where the wheels are installed")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget of the whole check (default: 470 GPU, 1500 --cpu)")
    args = parser.parse_args(argv)
    sizes = CPU if args.cpu else GPU
    if args.budget_s is not None:
        sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.cpu:
        # One thread per process, for every part and both GRPO arms alike (gradus's runner keeps a value set
        # here): on a shared CPU machine, OpenMP threads spinning against other jobs made steps 7-60x slower.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    private_extensions_dir(args.out)
    started = time.time()
    check = Check(out=args.out, sizes=sizes, on_gpu=not args.cpu, deadline=started + sizes.budget_s, results={
        "mode": "cpu" if args.cpu else "gpu", "command": " ".join(["python -m bench.gpu.check", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": datetime.datetime.now().isoformat(timespec="seconds"), "started_at_unix": started, "budget_s": sizes.budget_s,
        "parts": {},
    })
    if args.wheels is None and not args.cpu and not gradus_installed():
        args.wheels = REPO / ".whl"
    wheels = args.wheels.resolve() if args.wheels else None
    check.run_part("environment", lambda check: part_environment(check, wheels, args.site.resolve()))
    check.run_part("quickstart", part_quickstart)
    check.run_part("model", part_model)
    check.run_part("sft_single", part_sft("single"))
    check.run_part("sft_zero2", part_sft("zero2"))
    check.run_part("grpo", part_grpo)
    failed = [name for name, entry in check.results["parts"].items() if entry["status"] != "ok"]
    print(f"[check] results: {args.out / 'results.json'}, {args.out / 'results.md'}; "
          f"{'all parts ok' if not failed else 'failed: ' + ', '.join(failed)}; wall {check.results['wall_s']:.0f} s", flush=True)
    return 1 if failed else 0


def gradus_installed() -> bool:
    """Whether this Python already meets every requirement of gradus (`pip install -e .` done on a GPU
    machine of one's own): then no wheel is installed."""
    import tomllib

    from bench.gpu.environment import unmet_requirements

    return not unmet_requirements(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


if __name__ == "__main__":
    sys.exit(main())
