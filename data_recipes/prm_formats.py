r"""Public process-supervision datasets in gradus's step format, from their local JSON Lines files.

Every recipe yields rows with these columns (the `prm` stage needs the first three):
    prompt        the problem rendered by `template` (default: the problem alone)
    steps         list[str], each step's text without a separator
    labels        list[float] in [0, 1], P(step is right): 1.0/0.0 for human or benchmark labels, the
                  Monte-Carlo value for OmegaPRM's
    hard_labels   list[bool], the labels at 0.5 (right = True)
    first_error   index (0-based) of the first step whose hard label is wrong, -1 if none
    problem       the bare problem, which decontamination compares
    source        the recipe name
plus each set's own columns, listed with its recipe. `limit` caps the *source* rows read.

What each format needs (schemas in shared/data/README.md):

* `prm800k` (raw OpenAI PRM800K: `question`, `label.steps[].completions[].rating` in -1/0/+1). The
  trajectory is the chosen completion of each step, or the labeller's own `human_completion` (unrated;
  labelled right, as the labeller wrote it to replace wrong ones); it ends at a step with neither (the
  error a phase-2 labeller found, or a give-up) or at a chosen completion without a rating. With
  `alternatives` (default), every rated completion that was *not* chosen also becomes a row: the
  trajectory so far plus that completion, as TRL's converter did. Rating +1 is 1.0 and -1 is 0.0; the
  neutral 0 becomes `neutral_label`, default 1.0: a neutral step (e.g. "I wonder how many ways...") is
  not an error, labellers went on past it, and PRM800K's "first error" is the first -1. TRL's converter
  made it False; set `neutral_label: 0.0` for that, or 0.5 to train on it as uncertain.
  Extra columns: answer (ground-truth answer, may be null), finish_reason, alternative (the row ends
  in a non-chosen completion), phase (1, or 2 when the row has a `generation`).
  Note: PRM800K's final steps contain "\n\n# Answer\n\n..." so a "\n" separator at reward time splits
  them differently than here.
* `math_shepherd` (`input` with a `ки` tag after every step, `label` the same text with `+`/`-` in
  place of each tag). The labels are read by matching the label text against the input with every tag
  as a `+`/`-` slot, so nothing depends on the tag's length. The prompt is the text before the first
  "Step 1:" (or, without one, up to the question mark that ends the problem); a tag inside the problem
  (a known annotation error of the set) is dropped with its label. Extra column: task.
* `math_aps` (OmegaPRM / MATH-APS Monte-Carlo values). Two layouts, told apart per row: flat
  (`reasoning_steps: [{solution_prefix, mc_value}]`, each prefix starting with the question) and tree
  (`reasoning_steps: {text, mc_value, children}`, the root being the question). Flat prefixes are put
  back into their tree (a prefix's parent is the longest other prefix it extends; a prefix listed
  twice gets the mean of its values); a step is the text a node adds to its parent, stripped. Each
  root-to-leaf path is one row whose labels are the nodes' MC values (soft labels). Steps are chunks of
  several paragraphs, not lines. Extra columns: answer, question_id, root_value (the question's own
  MC value, not a step label).
* `prmbench` (PRMBench: `modified_process` with injected errors at the 1-based `error_steps`). A row is
  the modified process with step i wrong iff i is in `error_steps`; indices outside the process (a known
  data quirk) are dropped, and a row left with no error is skipped. With `include_original` (default),
  every problem's original PRM800K process is added once as an all-right row of class "correct" (taken
  from its `redundency` row when there is one, as PRMBench's own loader does: the copies in other
  classes differ in step numbering). Rows repeated across files (subset400 repeats test rows) are kept
  once. `path` is a file or a directory of them. Extra columns: classification, error_steps (1-based,
  in range), idx, original.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from data_recipes import Recipe, RecipeError, file_sha256

if TYPE_CHECKING:
    import datasets

COMMON_COLUMNS = ["prompt", "steps", "labels", "hard_labels", "first_error", "problem", "source"]
SHEPHERD_TAG = "ки"
SHEPHERD_FIRST_STEP = re.compile(r"[Ss]tep 1:")


class PRMFormatOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path
    template: str = "{problem}"
    limit: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _template_has_problem(self) -> "PRMFormatOptions":
        if "{problem}" not in self.template:
            raise ValueError("template must contain {problem}")
        return self


class PRM800KOptions(PRMFormatOptions):
    neutral_label: float = Field(1.0, ge=0.0, le=1.0)
    alternatives: bool = True


class PRMBenchOptions(PRMFormatOptions):
    include_original: bool = True
    classes: list[str] | None = None
    strip_step_numbers: bool = False


def step_row(problem: str, steps: list[str], labels: list[float], **extra: Any) -> dict[str, Any]:
    """A step-format row with the derived columns filled in (prompt is rendered later, by the recipe)."""
    if len(steps) != len(labels):
        raise ValueError(f"{len(steps)} steps but {len(labels)} labels")
    hard_labels = [float(label) >= 0.5 for label in labels]
    first_error = next((index for index, right in enumerate(hard_labels) if not right), -1)
    return {"problem": problem, "steps": steps, "labels": [float(label) for label in labels],
            "hard_labels": hard_labels, "first_error": first_error, **extra}


def read_jsonl(path: Path, limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of the non-empty lines of a JSON Lines file, at most `limit` rows."""
    count = 0
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            yield number, json.loads(line)


# --- PRM800K -------------------------------------------------------------------------------------


def prm800k_rows(raw: dict[str, Any], neutral_label: float = 1.0, alternatives: bool = True) -> list[dict[str, Any]]:
    """The step-format rows of one raw PRM800K record (see the module docstring)."""
    rating_label = {1: 1.0, 0: neutral_label, -1: 0.0}
    question = raw["question"]
    extra = {
        "answer": question.get("ground_truth_answer"),
        "finish_reason": raw["label"].get("finish_reason"),
        "phase": 1 if raw.get("generation") is None else 2,
    }
    steps: list[str] = []
    labels: list[float] = []
    rows = []
    for step in raw["label"]["steps"] or []:
        completions = step.get("completions") or []
        chosen, human = step.get("chosen_completion"), step.get("human_completion")
        if alternatives:
            for index, completion in enumerate(completions):
                if index != chosen and completion.get("rating") in rating_label:
                    rows.append(step_row(question["problem"], [*steps, completion["text"]],
                                         [*labels, rating_label[completion["rating"]]], alternative=True, **extra))
        if chosen is not None:
            rating = completions[chosen].get("rating")
            if rating not in rating_label:
                break
            steps.append(completions[chosen]["text"])
            labels.append(rating_label[rating])
        elif human is not None:
            steps.append(human["text"])
            labels.append(1.0)
        else:
            break
    if steps:
        rows.append(step_row(question["problem"], steps, labels, alternative=False, **extra))
    return rows


# --- Math-Shepherd -------------------------------------------------------------------------------


def math_shepherd_row(raw: dict[str, Any]) -> dict[str, Any]:
    """The step-format row of one Math-Shepherd record (see the module docstring)."""
    pieces = raw["input"].split(SHEPHERD_TAG)
    if len(pieces) < 2:
        raise ValueError(f"no step tag {SHEPHERD_TAG!r} in the input")
    slots = "".join(re.escape(piece) + "([+-])" for piece in pieces[:-1]) + re.escape(pieces[-1])
    match = re.fullmatch(slots, raw["label"], flags=re.DOTALL)
    if match is None:
        raise ValueError("the label text does not match the input with each tag replaced by + or -")
    labels = [1.0 if sign == "+" else 0.0 for sign in match.groups()]
    texts = pieces[:-1]  # pieces[-1] follows the last tag: no step (usually empty)
    first = next((index for index, text in enumerate(texts) if SHEPHERD_FIRST_STEP.search(text)), None)
    if first is not None:
        marker = SHEPHERD_FIRST_STEP.search(texts[first]).start()
        problem = "".join(texts[:first]) + texts[first][:marker]
        steps = [texts[first][marker:], *texts[first + 1 :]]
        labels = labels[first:]
    else:
        question_end = texts[0].rfind("?")
        if question_end < 0:
            raise ValueError("cannot tell the problem from the first step: no 'Step 1:' and no '?'")
        problem, steps = texts[0][: question_end + 1], [texts[0][question_end + 1 :], *texts[1:]]
    return step_row(problem.strip(), [step.strip() for step in steps], labels, task=raw.get("task"))


# --- OmegaPRM / MATH-APS -------------------------------------------------------------------------


def math_aps_rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One step-format row per root-to-leaf path of a MATH-APS record, flat or tree (module docstring)."""
    tree = raw["reasoning_steps"]
    root = _tree_from_prefixes(raw["question"], tree) if isinstance(tree, list) else tree
    extra = {"answer": str(raw.get("final_answer", "")), "question_id": raw.get("question_id"),
             "root_value": float(root["mc_value"])}
    rows = []
    for path in _leaf_paths(root):
        steps = [node["text"].strip() for node in path]
        rows.append(step_row(raw["question"], steps, [float(node["mc_value"]) for node in path], **extra))
    return rows


def _tree_from_prefixes(question: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The tree of `{text, mc_value, children}` nodes that a flat list of solution prefixes spells."""
    values: dict[str, list[float]] = {}
    for entry in entries:
        values.setdefault(entry["solution_prefix"], []).append(float(entry["mc_value"]))
    prefixes = sorted(values, key=len)
    if not prefixes or not prefixes[0].startswith(question):
        raise ValueError("the shortest solution prefix does not start with the question")
    nodes = {prefix: {"text": prefix, "mc_value": sum(values[prefix]) / len(values[prefix]), "children": []} for prefix in prefixes}
    root = nodes[prefixes[0]]
    for position, prefix in enumerate(prefixes[1:], start=1):
        parent = next((other for other in reversed(prefixes[:position]) if prefix.startswith(other) and len(other) < len(prefix)), None)
        if parent is None:
            continue  # does not extend the question: not part of this tree
        nodes[prefix]["text"] = prefix[len(parent) :]
        nodes[parent]["children"].append(nodes[prefix])
    return root


def _leaf_paths(root: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Each root-to-leaf path, the root (the question) left out."""
    stack = [(child, [child]) for child in reversed(root["children"])]
    while stack:
        node, path = stack.pop()
        if not node["children"]:
            yield path
        stack += [(child, [*path, child]) for child in reversed(node["children"])]


# --- PRMBench ------------------------------------------------------------------------------------


STEP_NUMBER = r"^(?:step\s*)?{number}\s*[.:)]\s*"


def strip_step_numbers(steps: list[str]) -> list[str]:
    """Remove "1. " / "Step 1: " prefixes, only when every step carries its own consecutive number."""
    patterns = [re.compile(STEP_NUMBER.format(number=number), re.IGNORECASE) for number in range(1, len(steps) + 1)]
    if not steps or not all(pattern.match(step) for pattern, step in zip(patterns, steps)):
        return steps
    return [pattern.sub("", step, count=1) for pattern, step in zip(patterns, steps)]


def prmbench_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.jsonl")) if path.is_dir() else [path]


def prmbench_rows(records: list[dict[str, Any]], include_original: bool = True, classes: list[str] | None = None,
                  strip_numbers: bool = False) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The step-format rows of PRMBench records, and counts of what was dropped (module docstring)."""
    rows, seen = [], set()
    originals: dict[str, dict[str, Any]] = {}
    dropped = {"out_of_range_indices": 0, "rows_without_valid_error": 0, "repeated_rows": 0}
    for record in records:
        if classes is not None and record["classification"] not in classes:
            continue
        # the original solution does not depend on the injected error: kept even when the row is not
        known = originals.get(record["idx"])
        if known is None or (record["classification"] == "redundency" and known["classification"] != "redundency"):
            originals[record["idx"]] = record
        process = list(record["modified_process"])
        valid = sorted({index for index in record["error_steps"] if 1 <= index <= len(process)})
        dropped["out_of_range_indices"] += len(set(record["error_steps"])) - len(valid)
        if record["error_steps"] and not valid:
            dropped["rows_without_valid_error"] += 1
            continue
        key = (record["classification"], record["idx"], json.dumps(process))
        if key in seen:
            dropped["repeated_rows"] += 1
            continue
        seen.add(key)
        steps = strip_step_numbers(process) if strip_numbers else process
        rows.append(step_row(
            record["modified_question"], steps, [0.0 if index in valid else 1.0 for index in range(1, len(steps) + 1)],
            classification=record["classification"], error_steps=valid, idx=record["idx"], original=False,
        ))
    if include_original:
        for idx, record in originals.items():
            steps = list(record["original_process"])
            steps = strip_step_numbers(steps) if strip_numbers else steps
            rows.append(step_row(record["original_question"], steps, [1.0] * len(steps),
                                 classification="correct", error_steps=[], idx=idx, original=True))
    return rows, dropped


# --- recipes -------------------------------------------------------------------------------------


def _prompt(template: str, problem: str) -> str:
    return template.replace("{problem}", problem)


def _make_recipe(name: str, options_model: type[PRMFormatOptions], extra_columns: list[str],
                 read: Callable[[PRMFormatOptions], list[dict[str, Any]]], directories: bool = False) -> Recipe:
    def columns(options: PRMFormatOptions) -> list[str]:
        if not (options.path.is_file() or (directories and options.path.is_dir())):
            raise RecipeError(f"data file {options.path} does not exist")
        return COMMON_COLUMNS + extra_columns

    def identity(options: PRMFormatOptions) -> dict[str, Any]:
        return {"sha256": {str(path.name): file_sha256(path) for path in prmbench_files(options.path)}}

    def load(options: PRMFormatOptions) -> "datasets.Dataset":
        import datasets

        rows = [{"prompt": _prompt(options.template, row["problem"]), **row, "source": name} for row in read(options)]
        if not rows:
            raise RecipeError(f"recipe {name!r}: no rows in {options.path}")
        return datasets.Dataset.from_list(rows)

    return Recipe(name, options_model, columns, identity, load)


def _checked(name: str, path: Path, number: int, convert: Callable[[], Any]) -> Any:
    try:
        return convert()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise RecipeError(f"recipe {name!r}: {path} line {number}: {type(error).__name__}: {error}") from None


def read_prm800k(options: PRM800KOptions) -> list[dict[str, Any]]:
    return [row for number, raw in read_jsonl(options.path, options.limit)
            for row in _checked("prm800k", options.path, number, lambda: prm800k_rows(raw, options.neutral_label, options.alternatives))]


def read_math_shepherd(options: PRMFormatOptions) -> list[dict[str, Any]]:
    return [_checked("math_shepherd", options.path, number, lambda: math_shepherd_row(raw))
            for number, raw in read_jsonl(options.path, options.limit)]


def read_math_aps(options: PRMFormatOptions) -> list[dict[str, Any]]:
    return [row for number, raw in read_jsonl(options.path, options.limit)
            for row in _checked("math_aps", options.path, number, lambda: math_aps_rows(raw))]


def read_prmbench(options: PRMBenchOptions) -> list[dict[str, Any]]:
    records = [raw for path in prmbench_files(options.path) for _, raw in read_jsonl(path, options.limit)]
    return prmbench_rows(records, options.include_original, options.classes, options.strip_step_numbers)[0]


RECIPES = [
    _make_recipe("prm800k", PRM800KOptions, ["answer", "finish_reason", "alternative", "phase"], read_prm800k),
    _make_recipe("math_shepherd", PRMFormatOptions, ["task"], read_math_shepherd),
    _make_recipe("math_aps", PRMFormatOptions, ["answer", "question_id", "root_value"], read_math_aps),
    _make_recipe("prmbench", PRMBenchOptions, ["classification", "error_steps", "idx", "original"], read_prmbench, directories=True),
]
