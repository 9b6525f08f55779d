"""`gradus plan | run | status`: the command line. Imports no torch: heavy work runs in stage processes.

    gradus plan MANIFEST               validate, then print each stage, what a run would do, and its command
    gradus run MANIFEST [--from S | --only S]
    gradus status RUN_DIR              the ledger as a table

`status` reads the ledger and nothing else, so it imports neither the manifest schema (pydantic, the
recipes, the reward registry) nor the planner: those load only for `plan` and `run`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.ledger import Ledger

if TYPE_CHECKING:
    from pipeline.plan import Plan, PlannedStage

# Piped output (logs, CI) gets a width that fits the tables; a terminal keeps its own.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
KEY_METRICS = ("accuracy", "final_reward", "final_loss", "eval_loss")


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = argparse.ArgumentParser(prog="gradus", description="Chain LLM post-training stages from one YAML manifest.")
    commands = parser.add_subparsers(dest="command", required=True)
    plan_parser = commands.add_parser("plan", help="validate a manifest and print the plan and exact commands")
    plan_parser.add_argument("manifest", type=Path)
    run_parser = commands.add_parser("run", help="run (or resume) every stage of a manifest")
    run_parser.add_argument("manifest", type=Path)
    for subparser in (plan_parser, run_parser):
        subparser.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE", help="change a manifest field, e.g. stages.sft.args.learning_rate=1e-3")
    partial = run_parser.add_mutually_exclusive_group()
    partial.add_argument("--from", dest="from_stage", metavar="STAGE", help="rerun STAGE and every stage after it")
    partial.add_argument("--only", metavar="STAGE", help="rerun STAGE alone (the stage it starts from must be done)")
    status_parser = commands.add_parser("status", help="show the ledger of a run directory")
    status_parser.add_argument("run_dir", type=Path)
    args, more_overrides = parser.parse_known_args(argv)  # overrides may also follow --from/--only
    if more_overrides and args.command == "status":
        parser.error(f"unrecognized arguments: {' '.join(more_overrides)}")

    if args.command == "status":
        return show_status(args.run_dir)
    return plan_or_run(args, more_overrides)


def _one_line_warning(message: Warning | str, category: type[Warning], *_location: Any) -> str:
    """A warning as `gradus: warning: <text>`: what a user acts on (a deprecated manifest field, say) is the
    text, not the line of gradus that noticed it."""
    return f"gradus: warning: {message}\n"


def plan_or_run(args: argparse.Namespace, more_overrides: list[str]) -> int:
    from pipeline import preflight
    from pipeline.manifest import Manifest, ManifestError, load_manifest
    from pipeline.overrides import resolved_manifest_text
    from pipeline.plan import make_plan
    from pipeline.runner import RunError, actions, run

    try:
        overrides = [*args.overrides, *more_overrides]
        plan = make_plan(load_manifest(args.manifest, overrides))
        from_stage, only = (None, None) if args.command == "plan" else (args.from_stage, args.only)
        for name in (from_stage, only):
            if name is not None and name not in [stage.name for stage in plan.stages]:
                raise ManifestError(f"--from/--only: no stage named {name!r} in {args.manifest}")
        todo = actions(plan, Ledger(plan.run_dir), from_stage, only)
        preflight.check(stage for stage, action in todo if action not in ("skip", "restore"))  # before anything launches or is written
        if args.command == "plan":
            return show_plan(plan, todo)
        return run(plan, from_stage=from_stage, only=only, say=lambda line: console.print(line, markup=False),
                   resolved_manifest=resolved_manifest_text(args.manifest, overrides, Manifest))
    except (ManifestError, RunError) as error:
        # A Text, not a markup string: messages quote field paths and hints such as `pip install -e ".[tensorboard]"`,
        # whose brackets rich would take for markup and drop.
        console.print(Text.assemble(("gradus: error:", "red"), f" {error}"), soft_wrap=True)
        return 2


def show_plan(plan: Plan, todo: list[tuple[PlannedStage, str]]) -> int:
    from pipeline.plan import shell_line

    table = Table(title=f"plan for {plan.run_dir}")
    for column in ("stage", "kind", "starts from", "fingerprint", "if run now"):
        table.add_column(column)
    for stage, action in todo:
        table.add_row(stage.name, stage.kind, stage.model_label, stage.fingerprint, action)
    console.print(table)
    for stage in plan.stages:
        console.print(f"\n# {stage.name}\n{shell_line(stage.command)}", soft_wrap=True, markup=False)
        for rank, command in enumerate(stage.node_commands):
            console.print(f"#   node {rank}: {shell_line(command)}", soft_wrap=True, markup=False)
    return 0


def show_status(run_dir: Path) -> int:
    ledger = Ledger(run_dir)
    if not ledger.stages:
        console.print(f"no ledger in {run_dir}")
        return 1
    table = Table(title=f"status of {run_dir}")
    for column in ("stage", "kind", "state", "fingerprint", "duration", "key metrics", "output"):
        table.add_column(column)
    colours = {"done": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
    for name, entry in ledger.stages.items():
        metrics = entry.get("metrics") or {}
        shown = ", ".join([f"{key} {metrics[key]:.3g}" for key in KEY_METRICS if isinstance(metrics.get(key), (int, float))][:2])
        duration = f"{entry['duration_s']:.0f}s" if entry.get("duration_s") is not None else ""
        state = entry["state"]
        table.add_row(
            name, entry.get("kind", ""), f"[{colours.get(state, 'white')}]{state}[/]", entry.get("fingerprint", ""),
            duration, shown, _short_path(entry.get("model") or entry.get("output", "")),
        )
    console.print(table)
    for name, entry in ledger.stages.items():
        curriculum = (entry.get("metrics") or {}).get("curriculum")
        if curriculum:
            shares = ", ".join(f"{bucket} {share:.2f}" for bucket, share in curriculum["final_share"].items())
            console.print(f"{name} curriculum ({curriculum['strategy']}) final share: {shares}", soft_wrap=True, markup=False)
    for name, entry in ledger.stages.items():
        if entry["state"] in {"failed", "interrupted"} and entry.get("message"):
            console.print(Text.assemble("\n", (name, "bold"), f": {entry['message']}"), soft_wrap=True)
    return 0


def _short_path(path: str) -> str:
    """A path relative to the working directory when it is below it: tables stay readable."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


if __name__ == "__main__":
    sys.exit(main())
