"""PRMBench through a PRM: per error class, how well step scores find the injected errors.

Run from the repository root:

    .venv/bin/python -m bench.prmbench [--model PRM_DIR] [--limit 5 | --full] [--out runs/prmbench/results.json]

Every file of shared/data/prmbench/ is read with the `prmbench` recipe's rules (data_recipes/prm_formats.py:
out-of-range error indices dropped, rows repeated across files kept once, each problem's original
PRM800K solution added once as class "correct") and every solution is scored by
`rewards.steps.score_steps`, exactly as the `prm` reward scores completions. The question
(PRMBench's `modified_question`, or `original_question` for the originals) is the prompt, through
`--template` (default: as it is).

Per error class, against the labels "step i is wrong iff i is in error_steps": step-level AUC, F1 of
right steps and of wrong steps and their mean (PRMBench's PRMScore), first-error accuracy (the first
step scored below 0.5 is the first wrong one) and PRMBench's own first_error_acc (the first wrong step
is scored below 0.5). For "correct" and "multi_solutions" (all-right solutions): the share scored
all-right. A JSON with every figure is written, and a table printed.

Without `--model` the PRM is the built-in tiny model (stages/models.py, default spec) with a new,
untrained one-logit head, since there is no trained PRM on this machine: its figures are chance-level
by construction and only show the harness runs. `--limit` caps the rows read per file (default 5:
about 90 solutions, a minute or so on 2 CPU cores, as the tiny tokenizer spends one token per character
and a PRM800K solution averages 1,200 characters); `--full` reads all 3,357 solutions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from data_recipes.prm_formats import prmbench_files, prmbench_rows, read_jsonl
from rewards.steps import score_steps
from stages.prm_steps import step_metrics

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GRADUS_SHARED_DATA", REPO.parent / "shared" / "data"))
ALL_RIGHT_CLASSES = ("correct", "multi_solutions")
TABLE_COLUMNS = ("auc", "prm_score", "f1", "error_f1", "first_error_accuracy", "first_error_flagged", "all_correct_accuracy")


def load_prm(model_dir: str | None, seed: int = 0) -> tuple[Any, Any, str]:
    """(model, tokenizer, description): a PRM directory, or the tiny model with a fresh head."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    if model_dir is None:
        from pipeline.manifest import TinyModelSpec
        from stages.models import build_tiny_model

        model_dir = str(Path(tempfile.mkdtemp(prefix="prmbench_")) / "tiny")
        build_tiny_model(TinyModelSpec().model_dump(), seed, Path(model_dir))
        description = f"built-in tiny model (default spec, seed {seed}), untrained score head"
    else:
        description = model_dir
    torch.manual_seed(seed)  # the tiny model's new head is drawn from it
    head = {"num_labels": 1} if description != model_dir else {}
    model = AutoModelForTokenClassification.from_pretrained(model_dir, **head)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, description


def run_bench(model: Any, tokenizer: Any, data_dir: Path, limit: int | None, separator: str = "\n",
              batch_size: int = 8, max_length: int | None = None, template: str = "{problem}") -> dict[str, Any]:
    """Score every PRMBench row and report metrics per class and over all error classes."""
    files = prmbench_files(data_dir)
    records = [record for path in files for _, record in read_jsonl(path, limit)]
    rows, dropped = prmbench_rows(records)
    started = time.perf_counter()
    prompts = [template.replace("{problem}", row["problem"]) for row in rows]
    scores = score_steps(model, tokenizer, prompts, [row["steps"] for row in rows],
                         separator=separator, batch_size=batch_size, max_length=max_length)
    seconds = time.perf_counter() - started
    by_class: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_class.setdefault(row["classification"], []).append(index)

    def metrics(indices: list[int]) -> dict[str, Any]:
        result = step_metrics([rows[i]["hard_labels"] for i in indices], [scores[i] for i in indices])
        return {"rows": len(indices), **result}

    error_rows = [index for index, row in enumerate(rows) if row["classification"] not in ALL_RIGHT_CLASSES]
    return {
        "files": [path.name for path in files],
        "limit_per_file": limit,
        "records_read": len(records),
        "rows_scored": len(rows),
        "dropped": dropped,
        "steps_unscored_by_max_length": sum(len(row["steps"]) - len(score) for row, score in zip(rows, scores)),
        "scoring_seconds": round(seconds, 1),
        "classes": {name: metrics(indices) for name, indices in sorted(by_class.items())},
        "all_error_classes": metrics(error_rows),
    }


def table(results: dict[str, Any]) -> str:
    """The per-class figures as a Markdown table."""
    def cell(value: Any) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = ["| class | rows | steps | wrong steps | " + " | ".join(TABLE_COLUMNS) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(TABLE_COLUMNS)]
    for name, figures in [*results["classes"].items(), ("ALL error classes", results["all_error_classes"])]:
        lines.append(f"| {name} | {figures['rows']} | {figures['steps']} | {figures['wrong_steps']} | "
                     + " | ".join(cell(figures[column]) for column in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="PRM directory (a prm stage's model/); default: the tiny model, untrained head")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "prmbench", help="a PRMBench file or directory")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--limit", type=int, default=5, help="rows read per file (default 5)")
    size.add_argument("--full", action="store_true", help="read every row of every file")
    parser.add_argument("--separator", default="\n", help="the step separator the PRM was trained with")
    parser.add_argument("--template", default="{problem}", help="the prompt template the PRM was trained with")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None, help="tokens per solution; later steps go unscored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/prmbench/results.json"), help="where the JSON goes (runs/ is git-ignored)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    model, tokenizer, description = load_prm(args.model, args.seed)
    results = {"model": description, **run_bench(model, tokenizer, args.data, None if args.full else args.limit,
                                                   args.separator, args.batch_size, args.max_length, args.template)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"PRMBench, {results['rows_scored']} solutions from {len(results['files'])} files "
          f"({'all rows' if args.full else f'at most {args.limit} rows per file'}), PRM: {description}")
    print(f"scored in {results['scoring_seconds']} s; dropped: {results['dropped']}")
    print(table(results))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
