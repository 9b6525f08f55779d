"""`eval` stage: generate answers for a held-out set and score them with `math_accuracy`.

With `rewards:` (e.g. `{name: prm, model: <prm stage>}`) and several samples, each reward acts as a
verifier: best-of-n (the sample it rates highest) and verifier-weighted majority vote are reported
next to plain majority vote and pass@1.

Greedy by default (one sample, pass@1 = accuracy); with `num_samples: n` and a temperature, also
unbiased pass@k and maj@k for each k in `k` up to n. maj@k votes on the final \\boxed answers: answers
math-verify finds equal (`\\frac{1}{2}`, `0.5`, `1/2`) are one, a sample without a box does not vote, and
a tie goes to the answer that came first (`answer_classes`, `majority_correct`); verifier-weighted
majority sums ratings over the same classes.
Everything is reported overall, per difficulty level and per source set. `extraction` (EvalArgs) says which
part of a completion is its answer; pass@1 under both readings, the strict box a training reward reads and
math-verify's lenient one, is reported side by side (`by_extraction`), so a model that learns to box is not
mistaken for one that learns the task. Completions that hit `max_new_tokens` are counted (`clipped`). Items whose gold answer is
not math (`rewards.math_scoring.parse_gold`) are skipped, counted (`unscorable`) and listed
(`unscorable_golds`, the first few), never scored as correct.
Outputs next to `metrics.json`: `report.md` (the table), `predictions.jsonl` (every prompt,
completion, score, answer and answer class) and `accuracy_by_level.png`. With several processes,
each generates a slice and the main process scores the gathered whole.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from typing import Any, Callable

from rewards.answer_text import final_box
from stages import common
from stages.arguments import EvalArgs, RewardBlock, StageFile

UNSCORABLE_GOLDS_LISTED = 10


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """Unbiased pass@k from `samples` draws with `correct` right (Chen et al. 2021, eq. 1)."""
    if samples - correct < k:
        return 1.0
    return 1.0 - math.prod((samples - correct - i) / (samples - i) for i in range(k))


def answer_classes(answers: list[str | None], judge: Callable[..., list[float | None]]) -> list[int | None]:
    """Each sample's answer class, for one item: answers math-verify finds equal share a class, numbered in
    order of first appearance (a lower number, an earlier first member); a sample without an answer, None.

    An answer joins the first class whose first member it equals, as `judge` (math_accuracy) scores it with
    that first member as the gold (verify is asymmetric: the earlier answer is the reference), the same
    text without asking; otherwise it opens a class. So `\\frac{1}{2}`, `0.5` and `1/2` are one answer, and
    an answer that is not math (prose) is the same only as its own text.
    """
    firsts: list[str] = []
    class_of: dict[str, int] = {}
    for answer in dict.fromkeys(answer for answer in answers if answer is not None):
        verdicts = judge(prompts=[""] * len(firsts), completions=[f"\\boxed{{{answer}}}"] * len(firsts), answer=firsts) if firsts else []
        class_of[answer] = next((number for number, verdict in enumerate(verdicts) if verdict == 1.0), len(firsts))
        if class_of[answer] == len(firsts):
            firsts.append(answer)
    return [None if answer is None else class_of[answer] for answer in answers]


def _winner(weights: dict[int, float]) -> int | None:
    """The class with the largest weight; a tie goes to the class whose first member came first."""
    return min(weights, key=lambda number: (-weights[number], number), default=None)


def majority_correct(classes: list[int | None], scores: list[float]) -> float:
    """maj@k for one item: is the answer class with the most samples correct (its first member's score)?
    Samples without an answer do not vote; when no sample has one, nothing is chosen and the item scores 0."""
    winner = _winner(Counter(number for number in classes if number is not None))
    return 0.0 if winner is None else scores[classes.index(winner)]


def verifier_metrics(classes: list[int | None], scores: list[float], verdicts: dict[str, list[float | None]]) -> dict[str, float]:
    """For each verifier (e.g. a PRM): best-of-n (is the sample it rates highest correct? the earliest on a
    tie) and verifier-weighted majority vote (the answer class with the largest summed rating, ties as in
    maj@k) over all n samples. An unrated sample (None) is never picked over a rated one and adds nothing to
    its class; with no rated sample (with an answer, for the vote), nothing is chosen and the item scores 0."""
    metrics = {}
    for name, ratings in verdicts.items():
        rated = [sample for sample, rating in enumerate(ratings) if rating is not None]
        best = max(rated, key=lambda sample: ratings[sample], default=None)
        metrics[f"best_of_{len(scores)}/{name}"] = 0.0 if best is None else scores[best]
        totals: dict[int, float] = defaultdict(float)
        for number, rating in zip(classes, ratings):
            if number is not None and rating is not None:
                totals[number] += rating
        winner = _winner(totals)
        metrics[f"weighted_maj@{len(scores)}/{name}"] = 0.0 if winner is None else scores[classes.index(winner)]
    return metrics


def item_metrics(
    scores: list[float], classes: list[int | None], ks: list[int], verdicts: dict[str, list[float | None]] | None = None,
) -> dict[str, float]:
    """pass@1, pass@k and maj@k of one item's samples (k up to the number of samples), and with
    several samples, each verifier's best-of-n and weighted majority."""
    metrics = {"pass@1": sum(scores) / len(scores)}
    for k in ks:
        if 1 < k <= len(scores):
            metrics[f"pass@{k}"] = pass_at_k(len(scores), int(sum(scores)), k)
            metrics[f"maj@{k}"] = majority_correct(classes[:k], scores[:k])
    if verdicts and len(scores) > 1:
        metrics.update(verifier_metrics(classes, scores, verdicts))
    return metrics


def math_scores(score: Callable[..., list[float | None]], rows: list[dict[str, Any]], completions: list[str], num_samples: int) -> list[float | None]:
    """`score`'s (a math_accuracy's) score of each completion, `num_samples` consecutive ones per row."""
    repeated = [row for row in rows for _ in range(num_samples)]
    return score(prompts=[row["prompt"] for row in repeated], completions=completions, answer=[row["answer"] for row in repeated])


def score_items(
    rows: list[dict[str, Any]], completions: list[str], num_samples: int, ratings: dict[str, list[float | None]], difficulty_column: str,
    extraction: str = "boxed",
) -> list[dict[str, Any]]:
    """One item per row, from its `num_samples` consecutive completions: math_accuracy's score of each (read by
    `extraction`), its final answer (its last \\boxed{}, `rewards.answer_text.final_box`, as math_accuracy reads
    a boxed answer; None without one) and answer class (`answer_classes`), and each verifier's ratings."""
    import rewards

    score = rewards.build("math_accuracy", {"extraction": extraction})
    scores = math_scores(score, rows, completions, num_samples)
    items = []
    for index, row in enumerate(rows):
        samples = slice(index * num_samples, (index + 1) * num_samples)
        answers = [final_box(text) for text in completions[samples]]
        items.append({
            "prompt": row["prompt"], "answer": row["answer"], "completions": completions[samples], "scores": scores[samples],
            "answers": answers, "classes": answer_classes(answers, score),
            "verdicts": {name: values[samples] for name, values in ratings.items()},
            "level": row.get(difficulty_column), "source": row.get("source"),
        })
    return items


def reading_accuracy(items: list[dict[str, Any]], scores: list[float | None], num_samples: int) -> dict[str, Any]:
    """pass@1 overall and per level of the same items scored by another reading (`scores`, `num_samples` a row),
    as `accuracy_report` gives them for the stage's own reading."""
    rescored = [{**item, "scores": scores[index * num_samples : (index + 1) * num_samples], "verdicts": {}} for index, item in enumerate(items)]
    report = accuracy_report(rescored, ks=[])
    return {"accuracy": report["accuracy"], "accuracy_by_level": report["accuracy_by_level"]}


def verifier_ratings(verifiers: list[RewardBlock], rows: list[dict[str, Any]], completions: list[str]) -> dict[str, list[float | None]]:
    """Each of the stage's rewards, acting as a verifier, rates every sample (`rows`: each sample's data
    row). None, where it gives no rating, stays None: a 0 in its place would outrank a real negative one."""
    import rewards

    columns = {column: [row[column] for row in rows] for column in (rows[0] if rows else {}) if column != "prompt"}
    return {
        verifier.name: list(rewards.build(verifier.name, verifier.options)(prompts=[row["prompt"] for row in rows], completions=completions, **columns))
        for verifier in verifiers
    }


def accuracy_report(items: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Metrics overall, per level and per source; items whose gold can't be parsed are counted apart.

    Each item is {"scores": [...], "classes": [...], "level": ..., "source": ..., "verdicts": {verifier:
    [...]}}, one score, answer class (`answer_classes`) and rating per verifier per sample.
    `accuracy` is pass@1 (the mean over samples), the figure the ledger and `gradus status` show.
    """
    scorable = [item for item in items if all(score is not None for score in item["scores"])]

    def summarise(group: list[dict[str, Any]]) -> dict[str, float]:
        per_item = [item_metrics(item["scores"], item["classes"], ks, item.get("verdicts")) for item in group]
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
    if "by_extraction" in report:
        readings = ", ".join(f"{reading} {figures['accuracy']:.3f}" for reading, figures in report["by_extraction"].items())
        lines.append(f"\nAnswers read by the `{report['extraction']}` extraction; pass@1 by reading: {readings}. "
                     f"{report['clipped']} completion(s) ({report['clipped_fraction']:.1%}) clipped at max_new_tokens.")
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
        started = time.perf_counter()
        my_completions = common.generate(
            model, tokenizer, [dataset[i]["prompt"] for i in my_indices],
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=args.temperature, top_p=args.top_p,
        )
        my_generation_s = time.perf_counter() - started
    completions = gather_object(list(my_completions))
    clipped = gather_object(my_completions.clipped)
    generated_tokens = sum(gather_object(my_completions.tokens))
    generation_s = max(gather_object([my_generation_s]))  # the processes generate side by side: the slowest one's time

    if state.is_main_process:
        rows = dataset.to_list()
        # The stage's rewards, if any, act as verifiers: they rate samples, math_accuracy still judges them.
        ratings = verifier_ratings(stage.rewards, [rows[index] for index in repeated], completions)
        items = score_items(rows, completions, args.num_samples, ratings, args.difficulty_column, args.extraction)
        report = accuracy_report(items, args.k)
        report["extraction"] = args.extraction
        other = "lenient" if args.extraction == "boxed" else "boxed"
        other_scores = math_scores(rewards.build("math_accuracy", {"extraction": other}), rows, completions, args.num_samples)
        report["by_extraction"] = {
            args.extraction: {"accuracy": report["accuracy"], "accuracy_by_level": report["accuracy_by_level"]},
            other: reading_accuracy(items, other_scores, args.num_samples),
        }
        report["clipped"], report["clipped_fraction"] = sum(clipped), sum(clipped) / max(len(clipped), 1)
        report["generation"] = {"tokens": generated_tokens, "seconds": generation_s, "tokens_per_s": generated_tokens / generation_s}
        for item, first in zip(items, range(0, len(clipped), args.num_samples)):
            item["clipped"] = clipped[first : first + args.num_samples]
        stage.stage_dir.mkdir(parents=True, exist_ok=True)
        with (stage.stage_dir / "predictions.jsonl").open("w") as handle:
            for item in items:
                handle.write(json.dumps(item) + "\n")
        (stage.stage_dir / "report.md").write_text(markdown_table(stage.name, report))
        print_table(stage.name, report)
        plot_by_level(stage.name, report, stage.stage_dir / "accuracy_by_level.png")
        common.finish(stage, report)
    else:
        common.finish(stage, {})


if __name__ == "__main__":
    run(common.start())
