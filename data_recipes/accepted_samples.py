"""`accepted_samples`: an earlier stage's scored samples, filtered to SFT data (expert iteration).

STaR and rejection-sampling fine-tuning (RFT) train on the model's own completions that a reward
accepts; repeated, sample -> filter -> SFT is expert iteration. A `difficulty` stage (its `dataset`:
k `samples` and their `scores` per prompt) or an `eval` stage (its `predictions.jsonl`) supplies the
samples; this recipe keeps the completions whose *stored* score reaches `min_score` and emits one
prompt/completion row per kept completion. Nothing is re-scored: the producer's reward already judged
each completion, and scoring again here would run reward code in the data loader.

    mode: all    every accepted completion, in sample order (RFT), at most `max_per_prompt` per prompt
    mode: best   the `max_per_prompt` (default 1) highest-scoring accepted ones, earliest first on a tie

`distinct` (on by default) drops a completion identical to one already kept for the same prompt: a
small model repeats itself on easy prompts, and RFT keeps distinct reasoning paths, so those prompts do
not crowd out the rest. A prompt with no accepted completion contributes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from data_recipes import Recipe, RecipeError, StageInput

if TYPE_CHECKING:
    import datasets

NAME = "accepted_samples"
SAMPLE_FILES = ("dataset", "predictions.jsonl")  # what a difficulty stage, and an eval stage, write in its directory
COLUMNS = ["prompt", "completion", "score", "answer", "level"]


class AcceptedSamplesOptions(BaseModel):
    """The manifest names the stage; the planner adds `path`, that stage's directory."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    path: Path | None = None
    min_score: float = 0.5
    mode: Literal["all", "best"] = "all"
    max_per_prompt: int | None = Field(None, gt=0)
    distinct: bool = True


def accepted(completions: list[str], scores: list[float | None], options: AcceptedSamplesOptions) -> list[tuple[str, float]]:
    """The (completion, score) pairs of one prompt that the options keep, in the order they are kept."""
    kept = [(text, score) for text, score in zip(completions, scores, strict=True) if score is not None and score >= options.min_score]
    if options.distinct:
        first: dict[str, float] = {}
        for text, score in kept:
            first.setdefault(text, score)
        kept = list(first.items())
    if options.mode == "best":
        kept = sorted(kept, key=lambda pair: -pair[1])  # stable: the earliest of equal scores first
    cap = options.max_per_prompt or (1 if options.mode == "best" else None)
    return kept[:cap]


def _samples(path: Path) -> list[dict[str, Any]]:
    """The producer's rows, each with `prompt`, `completions` and `scores` (k of each)."""
    if (path / "dataset").is_dir():
        import datasets

        return [{**row, "completions": row["samples"]} for row in datasets.load_from_disk(str(path / "dataset")).to_list()]
    if (path / "predictions.jsonl").is_file():
        return [json.loads(line) for line in (path / "predictions.jsonl").read_text().splitlines() if line.strip()]
    raise RecipeError(f"stage directory {path} holds none of {', '.join(SAMPLE_FILES)}: its stage has not finished")


def _columns(options: AcceptedSamplesOptions) -> list[str]:
    return list(COLUMNS)


def _identity(options: AcceptedSamplesOptions) -> dict[str, Any]:
    return {"stage": options.stage}


def _load(options: AcceptedSamplesOptions) -> "datasets.Dataset":
    import datasets

    if options.path is None:
        raise RecipeError(f"recipe {NAME!r}: no path; the planner sets it to stage {options.stage!r}'s directory")
    rows = []
    for sample in _samples(options.path):
        prompt = sample["prompt"]
        for text, score in accepted(sample["completions"], sample["scores"], options):
            completion = text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]
            rows.append({"prompt": prompt, "completion": completion, "score": float(score),
                         "answer": sample.get("answer"), "level": sample.get("level")})
    if not rows:
        raise RecipeError(f"recipe {NAME!r}: no completion of stage {options.stage!r} scores at least min_score {options.min_score}")
    return datasets.Dataset.from_list(rows)


RECIPE = Recipe(NAME, AcceptedSamplesOptions, _columns, _identity, _load,
                reads_stage=StageInput("scored_samples", "scored samples (difficulty and eval stages write them)"))
