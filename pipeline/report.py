"""`run_dir/report.md`: the run at a glance, rebuilt after every `gradus run` from the ledger.

Its second table is the forgetting table: one row per model the manifest evaluates (the base model
and each stage an eval stage starts from), one column per eval set, pass@1 in each cell. When a
chain evaluates each stage's model on the same sets, reading down a column shows what each stage
gained on that set, and what a later stage lost (forgot) on sets it did not train on. A third gives
pass@1 per difficulty level for the evals that report levels. A fourth,
for eval stages that draw several samples per problem, puts pass@k, majority vote and each verifier's
best-of-n and weighted vote (a PRM's, say) side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.ledger import Ledger
from pipeline.plan import Plan, PlannedStage
from stages.arguments import DataBlock
from stages.kinds import stage_kind


def eval_set_label(data: DataBlock) -> str:
    """A short name for an eval stage's data: the recipe plus the split or file it reads."""
    options = data.options
    detail = options.get("split") or (Path(options["path"]).parent.name + "/" + Path(options["path"]).name if options.get("path") else "")
    return f"{data.recipe}:{detail}" if detail else data.recipe


def finished_evals(plan: Plan, ledger: Ledger) -> list[tuple[PlannedStage, dict[str, Any]]]:
    """(stage, metrics) of every eval stage the ledger says is done, in chain order: what each table reads."""
    finished = []
    for stage in plan.stages:
        entry = ledger.entry(stage.name) or {}
        if stage_kind(stage.kind).evaluates and entry.get("state") == "done":
            finished.append((stage, entry.get("metrics") or {}))
    return finished


def eval_row(stage: PlannedStage, cells: list[str]) -> str:
    """A markdown row naming the eval stage, the model it scored and its eval set, then `cells`."""
    return f"| {stage.name} | {stage.model_label} | {eval_set_label(stage.resolved.data)} | " + " | ".join(cells) + " |"


def forgetting_table(plan: Plan, ledger: Ledger) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """(models in chain order, eval sets, pass@1 by (model, set)) over the eval stages that are done.

    When several eval stages score one model on one set, a one-sample (greedy, by default) eval fills the
    cell over a sampled one (best-of-n at temperature 1, say), so the column compares like with like."""
    models: list[str] = []
    sets: list[str] = []
    cells: dict[tuple[str, str], float] = {}
    for stage, metrics in finished_evals(plan, ledger):
        model, label = stage.model_label, eval_set_label(stage.resolved.data)
        models += [model] if model not in models else []
        sets += [label] if label not in sets else []
        if metrics.get("samples_per_item", 1) == 1 or (model, label) not in cells:
            cells[(model, label)] = metrics["accuracy"]
    return models, sets, cells


def sampled_eval_table(plan: Plan, ledger: Ledger) -> list[str]:
    """Markdown lines: one row per finished eval stage with several samples per problem, every overall metric."""
    rows = [(stage, metrics["overall"]) for stage, metrics in finished_evals(plan, ledger) if metrics.get("samples_per_item", 1) > 1]
    if not rows:
        return []
    columns = list(dict.fromkeys(key for _, overall in rows for key in overall))
    lines = ["", "## sampled evals: pass@k, majority vote, verifiers", "",
             "| eval stage | model | eval set | " + " | ".join(columns) + " |", "|---|---|---|" + "---:|" * len(columns)]
    for stage, overall in rows:
        lines.append(eval_row(stage, [f"{overall[key]:.3f}" if key in overall else "" for key in columns]))
    return lines


def by_level_table(plan: Plan, ledger: Ledger) -> list[str]:
    """Markdown lines: pass@1 per difficulty level, one row per finished eval stage that reported levels
    (its `difficulty_column`). A chain that evaluates every model on one levelled set shows here which
    levels each stage moved, which the overall figure averages away."""
    rows = [(stage, metrics["by_level"]) for stage, metrics in finished_evals(plan, ledger) if metrics.get("by_level")]
    if not rows:
        return []
    levels = sorted({level for _, by_level in rows for level in by_level}, key=lambda level: (0, int(level), "") if level.isdigit() else (1, 0, level))
    lines = ["", "## pass@1 by level", "", "| eval stage | model | eval set | " + " | ".join(f"L{level}" for level in levels) + " |",
             "|---|---|---|" + "---:|" * len(levels)]
    for stage, by_level in rows:
        lines.append(eval_row(stage, [f"{by_level[level]['pass@1']:.2f}" if "pass@1" in by_level.get(level, {}) else "" for level in levels]))
    return lines


def write_report(plan: Plan, ledger: Ledger) -> str:
    lines = [f"# gradus run: {plan.run_dir}", "", "| stage | kind | state | duration | key metric | clipped |", "|---|---|---|---:|---|---:|"]
    for stage in plan.stages:
        entry = ledger.entry(stage.name) or {"state": "pending"}
        metrics = entry.get("metrics") or {}
        key = next((f"{name} {metrics[name]:.3f}" for name in ("accuracy", "final_reward", "final_loss", "positive_fraction") if isinstance(metrics.get(name), (int, float))), "")
        duration = f"{entry['duration_s']:.0f}s" if entry.get("duration_s") is not None else ""
        # The share of completions (eval's, or GRPO's samples) cut at the length limit: a high one explains a low score.
        clipped = f"{metrics['clipped_fraction']:.1%}" if isinstance(metrics.get("clipped_fraction"), (int, float)) else ""
        lines.append(f"| {stage.name} | {stage.kind} | {entry['state']} | {duration} | {key} | {clipped} |")
    models, sets, cells = forgetting_table(plan, ledger)
    if cells:
        lines += ["", "## pass@1 by model and eval set", "", "| model | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
        for model in models:
            lines.append(f"| {model} | " + " | ".join(f"{cells[(model, label)]:.3f}" if (model, label) in cells else "" for label in sets) + " |")
    lines += by_level_table(plan, ledger)
    lines += sampled_eval_table(plan, ledger)
    text = "\n".join(lines) + "\n"
    (plan.run_dir / "report.md").write_text(text)
    return text
