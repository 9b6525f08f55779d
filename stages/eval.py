"""`eval` stage: generate answers for a held-out set and score them with `math_accuracy`.

Accuracy is reported overall and per difficulty level. Items whose gold answer math-verify cannot
parse are skipped and counted (`unscorable`), never scored as correct. Outputs next to
`metrics.json`: `predictions.jsonl` (every prompt, completion and score) and `accuracy_by_level.png`.
With several processes, each generates a slice and the main process scores the gathered whole.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from stages import common
from stages.arguments import EvalArgs


def accuracy_report(scores: list[float | None], levels: list[Any]) -> dict[str, Any]:
    """Overall and per-level accuracy over the scorable items; unscorable ones are counted apart."""
    by_level: dict[Any, list[float]] = defaultdict(list)
    scored = [score for score in scores if score is not None]
    for score, level in zip(scores, levels):
        if score is not None and level is not None:
            by_level[level].append(score)
    return {
        "accuracy": sum(scored) / len(scored) if scored else 0.0,
        "n": len(scores),
        "unscorable": len(scores) - len(scored),
        "accuracy_by_level": {str(level): sum(values) / len(values) for level, values in sorted(by_level.items())},
        "n_by_level": {str(level): len(values) for level, values in sorted(by_level.items())},
    }


def print_table(stage_name: str, report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{stage_name}: accuracy by level")
    table.add_column("level")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    for level, accuracy in report["accuracy_by_level"].items():
        table.add_row(level, str(report["n_by_level"][level]), f"{accuracy:.3f}")
    table.add_row("all", str(report["n"] - report["unscorable"]), f"{report['accuracy']:.3f}", style="bold")
    Console().print(table)
    if report["unscorable"]:
        Console().print(f"{report['unscorable']} item(s) skipped: gold answer not parseable")


def plot_by_level(stage_name: str, report: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(report["accuracy_by_level"])
    figure, axis = plt.subplots(figsize=(1.0 + 0.7 * max(len(levels), 3), 3.2))
    axis.bar(levels, [report["accuracy_by_level"][level] for level in levels], color="#4C72B0")
    axis.axhline(report["accuracy"], color="black", linestyle="--", linewidth=1, label=f"overall {report['accuracy']:.2f}")
    axis.set_ylim(0, 1)
    axis.set_xlabel("level")
    axis.set_ylabel("accuracy")
    axis.set_title(stage_name)
    axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(stage: common.Stage) -> None:
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import AutoModelForCausalLM

    import rewards

    args = EvalArgs(**stage.args)
    torch.manual_seed(args.seed if args.seed is not None else stage.seed)
    dataset = common.load_data(stage.data)
    state = PartialState()
    model = AutoModelForCausalLM.from_pretrained(stage.model_path).to(state.device).eval()
    tokenizer = common.load_tokenizer(stage.model_path)

    with state.split_between_processes(list(range(len(dataset)))) as my_indices:
        my_completions = common.generate(
            model, tokenizer, [dataset[i]["prompt"] for i in my_indices],
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=args.temperature, top_p=args.top_p,
        )
    completions = gather_object(my_completions)

    if state.is_main_process:
        score = rewards.build("math_accuracy", {})
        scores = score(prompts=dataset["prompt"], completions=completions, answer=dataset["answer"])
        levels = dataset[args.difficulty_column] if args.difficulty_column in dataset.column_names else [None] * len(dataset)
        report = accuracy_report(scores, levels)
        stage.stage_dir.mkdir(parents=True, exist_ok=True)
        with (stage.stage_dir / "predictions.jsonl").open("w") as handle:
            for row, completion, item_score in zip(dataset, completions, scores):
                handle.write(json.dumps({"prompt": row["prompt"], "answer": row["answer"], "completion": completion, "score": item_score}) + "\n")
        print_table(stage.name, report)
        plot_by_level(stage.name, report, stage.stage_dir / "accuracy_by_level.png")
        common.finish(stage, report)
    else:
        common.finish(stage, {})


if __name__ == "__main__":
    run(common.start())
