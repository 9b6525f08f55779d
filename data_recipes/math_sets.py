"""Real math sets: GSM8K, MATH, MATH-500, AIME24, AMC23, from a local JSON Lines file or the HF hub.

Each recipe turns its set's own schema into gradus's columns:
    prompt       the problem rendered by the recipe's template (plain text, or chat messages)
    problem      the problem text alone, which decontamination compares (templates would all match)
    completion   a worked solution ending in \\boxed{gold}, for SFT (sets that ship solutions); with
                 `chat: true` the assistant's message, as TRL's conversational prompt-completion format has it
    answer       the gold answer as math-verify should read it (never wrapped in \\boxed)
    level        a difficulty: MATH's level 1-5, GSM8K's number of solution lines (a proxy), else 0
    source       the recipe name, so mixtures and reports can break results down by set

The quirks handled here (see shared/data/README.md): GSM8K's gold is the text after `####` with
thousands separators removed and its rationale carries `<<48/2=24>>` calculator notes; MATH has
no answer field, so the gold is the *last* `\\boxed{...}` of the solution, braces nested; MATH's
level is the string "Level 3" while MATH-500's is the int 3; AMC23's answers are floats (27.0 -> "27").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict, model_validator

from data_recipes import Recipe, RecipeError, file_sha256

if TYPE_CHECKING:
    import datasets

COLUMNS = ["prompt", "problem", "completion", "answer", "level", "source"]
DEFAULT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")


class MathSetOptions(BaseModel):
    """Where a set comes from and how its prompts read."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    split: str = "test"
    template: str = DEFAULT_TEMPLATE
    system_prompt: str | None = None
    chat: bool = False
    limit: int | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "MathSetOptions":
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of path (a local .jsonl) or hub_id")
        if "{problem}" not in self.template:
            raise ValueError("template must contain {problem}")
        return self


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in text, with nested braces kept whole."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for index in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[brace + 1 : index]
    return None


def gsm8k_row(raw: dict[str, Any]) -> dict[str, Any]:
    rationale, _, gold = raw["answer"].rpartition("####")
    answer = gold.strip().replace(",", "")
    steps = [line for line in CALCULATOR_NOTE.sub("", rationale).strip().split("\n") if line.strip()]
    completion = "\n".join(steps) + f"\nThe answer is \\boxed{{{answer}}}."
    return {"problem": raw["question"], "completion": completion, "answer": answer, "level": len(steps)}


def math_row(raw: dict[str, Any]) -> dict[str, Any]:
    level = raw.get("level")
    if isinstance(level, str):
        level = int(level.removeprefix("Level ").strip()) if level.removeprefix("Level ").strip().isdigit() else 0
    answer = raw.get("answer") or last_boxed(raw["solution"]) or ""
    return {"problem": raw["problem"], "completion": raw["solution"], "answer": str(answer), "level": level or 0}


def competition_row(raw: dict[str, Any]) -> dict[str, Any]:
    """AIME24 / AMC23: no levels; AMC23's answers are floats; AIME24's solutions don't always box the answer."""
    answer = raw["answer"]
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    solution = raw.get("solution") or ""
    completion = solution if last_boxed(solution) is not None else f"{solution}\n\nThe answer is \\boxed{{{answer}}}.".lstrip()
    return {"problem": raw["problem"], "completion": completion, "answer": str(answer), "level": 0}


def _make_recipe(name: str, to_row: Callable[[dict[str, Any]], dict[str, Any]]) -> Recipe:
    def columns(options: MathSetOptions) -> list[str]:
        if options.path is not None and not options.path.is_file():
            raise RecipeError(f"data file {options.path} does not exist")
        return COLUMNS

    def identity(options: MathSetOptions) -> dict[str, Any]:
        return {"sha256": file_sha256(options.path)} if options.path is not None else {"hub_id": options.hub_id}

    def load(options: MathSetOptions) -> "datasets.Dataset":
        import datasets

        if options.path is not None:
            raw = datasets.load_dataset("json", data_files=str(options.path), split="train")
        else:
            raw = datasets.load_dataset(options.hub_id, options.hub_config, split=options.split)
        if options.limit is not None:
            raw = raw.select(range(min(options.limit, len(raw))))
        rows = []
        for record in raw:
            row = to_row(record)
            text = options.template.format(problem=row["problem"])
            if options.chat:
                system = [{"role": "system", "content": options.system_prompt}] if options.system_prompt else []
                prompt: Any = system + [{"role": "user", "content": text}]
                # TRL takes a chat prompt only with a chat completion (a string there fails inside SFTTrainer).
                row["completion"] = [{"role": "assistant", "content": row["completion"]}]
            else:
                prompt = f"{options.system_prompt}\n\n{text}" if options.system_prompt else text
            rows.append({"prompt": prompt, **row, "source": name})
        return datasets.Dataset.from_list(rows)

    def chat_columns(options: MathSetOptions) -> set[str]:
        return {"prompt", "completion"} if options.chat else set()

    return Recipe(name, MathSetOptions, columns, identity, load, chat_columns)


RECIPES = [
    _make_recipe("gsm8k", gsm8k_row),
    _make_recipe("math", math_row),
    _make_recipe("math500", math_row),
    _make_recipe("aime24", competition_row),
    _make_recipe("amc23", competition_row),
]
