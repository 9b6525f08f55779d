"""`eval` stage: generate answers for a held-out set and score them with `math_accuracy`.

With `rewards:` (e.g. `{name: prm, model: <prm stage>}`) and several samples, each reward acts as a
verifier: best-of-n (the sample it rates highest) and verifier-weighted majority vote are reported
next to plain majority vote and pass@1.

Greedy by default (one sample, pass@1 = accuracy); with `num_samples: n` and a temperature, also
unbiased pass@k and maj@k (majority vote over the final \\boxed answers) for each k in `k` up to n.
Everything is reported overall, per difficulty level and per source set. Items whose gold answer is
not math (`rewards.math_scoring.parse_gold`) are skipped, counted (`unscorable`) and listed
(`unscorable_golds`, the first few), never scored as correct.
Outputs next to `metrics.json`: `report.md` (the table), `predictions.jsonl` (every prompt,
completion and score) and `accuracy_by_level.png`. With several processes, each generates a slice
and the main process scores the gathered whole.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from typing import Any

from data_recipes.math_sets import last_boxed
from stages import common
from stages.arguments import EvalArgs, StageFile

UNSCORABLE_GOLDS_LISTED = 10


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """Unbiased pass@k from `samples` draws with `correct` right (Chen et al. 2021, eq. 1)."""
    if samples - correct < k:
        return 1.0
    return 1.0 - math.prod((samples - correct - i) / (samples - i) for i in range(k))


def majority_correct(answers: list[str], scores: list[float]) -> float:
    """maj@k for one item: is the most frequent final answer (first seen wins a tie) a correct one?"""
    counts = Counter(answers)
    winner = max(counts, key=lambda answer: (counts[answer], -answers.index(answer)))
    return scores[answers.index(winner)]


def verifier_metrics(answers: list[str], scores: list[float], verdicts: dict[str, list[float]]) -> dict[str, float]:
    """For each verifier (e.g. a PRM): best-of-n (is the sample it rates highest correct?) and
    verifier-weighted majority vote (the answer with the largest summed rating) over all n samples."""
    metrics = {}
    for name, ratings in verdicts.items():
        best = max(range(len(ratings)), key=lambda sample: ratings[sample])
        metrics[f"best_of_{len(scores)}/{name}"] = scores[best]
        totals: dict[str, float] = defaultdict(float)
        for answer, rating in zip(answers, ratings):
            totals[answer] += rating
        winner = max(totals, key=lambda answer: (totals[answer], -answers.index(answer)))
        metrics[f"weighted_maj@{len(scores)}/{name}"] = scores[answers.index(winner)]
    return metrics


def item_metrics(scores: list[float], answers: list[str], ks: list[int], verdicts: dict[str, list[float]] | None = None) -> dict[str, float]:
    """pass@1, pass@k and maj@k of one item's samples (k up to the number of samples), and with
    several samples, each verifier's best-of-n and weighted majority."""
    metrics = {"pass@1": sum(scores) / len(scores)}
    for k in ks:
        if 1 < k <= len(scores):
            metrics[f"pass@{k}"] = pass_at_k(len(scores), int(sum(scores)), k)
            metrics[f"maj@{k}"] = majority_correct(answers[:k], scores[:k])
    if verdicts and len(scores) > 1:
        metrics.update(verifier_metrics(answers, scores, verdicts))
    return metrics


def accuracy_report(items: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Metrics overall, per level and per source; items whose gold can't be parsed are counted apart.

    Each item is {"scores": [...], "answers": [...], "level": ..., "source": ..., "verdicts": {verifier:
    [...]}}, one score (and one rating per verifier) per sample.
    `accuracy` is pass@1 (the mean over samples), the figure the ledger and `gradus status` show.
    """
    scorable = [item for item in items if all(score is not None for score in item["scores"])]

    def summarise(group: list[dict[str, Any]]) -> dict[str, float]:
        per_item = [item_metrics(item["scores"], item["answers"], ks, item.get("verdicts")) for item in group]
        return {key: sum(metrics[key] for metrics in per_item) / len(per_item) for key in per_item[0]} if per_item else {}

    def grouped(key: str) -> dict[str, dict[str, float]]:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in scorable:
            if item.get(key) is not None:
                groups[str(item[key])].append(item)
        return {name: {"n": len(group), **summarise(group)} for name, group in sorted(groups.items(), key=lambda pair: _natural(pair[0]))}

    overall = summarise(scorable)
    by_level = grouped("level")
    return {
        "accuracy": overall.get("pass@1", 0.0),
        "n": len(items),
        "unscorable": len(items) - len(scorable),
        "unscorable_golds": sorted({str(item.get("answer")) for item in items if None in item["scores"]})[:UNSCORABLE_GOLDS_LISTED],
        "samples_per_item": len(items[0]["scores"]) if items else 0,
        "overall": overall,
        "by_level": by_level,
        "by_source": grouped("source"),
        "accuracy_by_level": {level: metrics["pass@1"] for level, metrics in by_level.items()},
    }


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def markdown_table(stage_name: str, report: dict[str, Any]) -> str:
    """The report as a Markdown table: a row per level (and source, when there are several), then all."""
    columns = list(report["overall"])
    lines = [f"### {stage_name}", "", "| group | n | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    rows = [(f"level {level}", metrics) for level, metrics in report["by_level"].items()]
    if len(report["by_source"]) > 1:
        rows += [(source, metrics) for source, metrics in report["by_source"].items()]
    rows.append(("**all**", {"n": report["n"] - report["unscorable"], **report["overall"]}))
    for name, metrics in rows:
        lines.append(f"| {name} | {metrics['n']} | " + " | ".join(f"{metrics[key]:.3f}" for key in columns) + " |")
    if report["unscorable"]:
        golds = ", ".join(f"`{gold}`" for gold in report["unscorable_golds"])
        lines.append(f"\n{report['unscorable']} item(s) skipped: gold answer not math ({golds}).")
    return "\n".join(lines) + "\n"


def print_table(stage_name: str, report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = list(report["overall"])
    table = Table(title=f"{stage_name}: accuracy by level")
    for header in ["level", "n", *columns]:
        table.add_column(header, justify="left" if header == "level" else "right")
    for level, metrics in report["by_level"].items():
        table.add_row(level, str(metrics["n"]), *(f"{metrics[key]:.3f}" for key in columns))
    table.add_row("all", str(report["n"] - report["unscorable"]), *(f"{report['overall'][key]:.3f}" for key in columns), style="bold")
    Console().print(table)
    if report["unscorable"]:
        Console().print(f"{report['unscorable']} item(s) skipped: gold answer not parseable")


def plot_by_level(stage_name: str, report: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(report["accuracy_by_level"])
    figure, axis = plt.subplots(figsize=(1.0 + 0.7 * max(len(levels), 3), 3.2))
    axis.bar(range(len(levels)), [report["accuracy_by_level"][level] for level in levels], color="#4C72B0")
    axis.set_xticks(range(len(levels)), levels)
    axis.axhline(report["accuracy"], color="black", linestyle="--", linewidth=1, label=f"overall {report['accuracy']:.2f}")
    axis.set_ylim(0, 1)
    axis.set_xlabel("level")
    axis.set_ylabel("accuracy")
    axis.set_title(stage_name)
    axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(stage: StageFile) -> None:
    import torch
    from accelerate.utils import gather_object
    from transformers import AutoModelForCausalLM

    import rewards

    args = EvalArgs(**stage.args)
    torch.manual_seed(args.seed if args.seed is not None else stage.seed)
    dataset = common.load_data(stage.data)
    state = common.distributed_state()
    model = AutoModelForCausalLM.from_pretrained(stage.model_path).to(state.device).eval()
    tokenizer = common.load_tokenizer(stage.model_path)

    # Each prompt is repeated num_samples times in a row, so a process's slice keeps an item's samples together.
    repeated = [index for index in range(len(dataset)) for _ in range(args.num_samples)]
    with state.split_between_processes(repeated) as my_indices:
        my_completions = common.generate(
            model, tokenizer, [dataset[i]["prompt"] for i in my_indices],
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=args.temperature, top_p=args.top_p,
        )
    completions = gather_object(my_completions)

    if state.is_main_process:
        score = rewards.build("math_accuracy", {})
        scores = score(prompts=[dataset[i]["prompt"] for i in repeated], completions=completions,
                       answer=[dataset[i]["answer"] for i in repeated])
        # The stage's rewards, if any, act as verifiers: they rate samples, math_accuracy still judges them.
        ratings = {
            reward.name: [0.0 if value is None else value for value in rewards.build(reward.name, reward.options)(
                prompts=[dataset[i]["prompt"] for i in repeated], completions=completions,
                **{column: [dataset[i][column] for i in repeated] for column in dataset.column_names if column != "prompt"})]
            for reward in stage.rewards
        }
        items = []
        for index, row in enumerate(dataset):
            samples = slice(index * args.num_samples, (index + 1) * args.num_samples)
            items.append({
                "prompt": row["prompt"], "answer": row["answer"], "completions": completions[samples], "scores": scores[samples],
                "answers": [last_boxed(text) or text.strip() for text in completions[samples]],
                "verdicts": {name: values[samples] for name, values in ratings.items()},
                "level": row.get(args.difficulty_column), "source": row.get("source"),
            })
        report = accuracy_report(items, args.k)
        stage.stage_dir.mkdir(parents=True, exist_ok=True)
        with (stage.stage_dir / "predictions.jsonl").open("w") as handle:
            for item in items:
                handle.write(json.dumps({key: value for key, value in item.items() if key != "answers"}) + "\n")
        (stage.stage_dir / "report.md").write_text(markdown_table(stage.name, report))
        print_table(stage.name, report)
        plot_by_level(stage.name, report, stage.stage_dir / "accuracy_by_level.png")
        common.finish(stage, report)
    else:
        common.finish(stage, {})


if __name__ == "__main__":
    run(common.start())
