"""Data recipes: named ways to build an HF `datasets.Dataset` from a manifest's `data:` block.

A recipe has three faces, because the pipeline needs two of them before anything launches:
- `columns(options)`: the columns it yields, known at plan time (validation checks them against
  what the stage kind and its rewards need) without importing `datasets` or torch;
- `identity(options)`: what the data *is* (file hashes, generator options), part of the stage
  fingerprint, so editing a data file reruns the stages that read it;
- `load(options)`: the dataset itself, built in the stage process;
- optionally `chat_columns(options)`: which of its columns hold chat messages rather than text, so the plan
  can refuse a format a trainer cannot take (TRL needs a chat prompt with a chat completion);
- optionally `reads_stage` (a `StageInput`): the recipe reads what an earlier stage wrote (`stage_output`,
  `accepted_samples`). The manifest names that stage (option `stage`); the pipeline checks that its kind
  writes what is read, points the option `path` into its directory, makes the stage depend on it, and
  takes the producer's fingerprint for the data's identity, all from this declaration.

The options of each recipe are a pydantic model, so a typo in `data:` is an error naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    import datasets


class RecipeError(ValueError):
    """A bad `data:` block, phrased as one line."""


@dataclasses.dataclass(frozen=True)
class StageInput:
    """How a recipe that reads an earlier stage's output is planned (the `reads_stage` of its `Recipe`)."""

    writes: str
    """The field of the producer's `stages.kinds.StageKind` that says its kind writes what the recipe reads."""
    what: str
    """What it reads, as an error names it ("stages with <what>: ...")."""
    subdirectory: str = ""
    """Where in the producer's stage directory the recipe's `path` points ("": the directory itself)."""
    check_options: Callable[[dict[str, Any]], None] | None = None
    """Refuses the manifest's options before the producer is looked up (so a missing `stage` is named as
    such), raising RecipeError; None: the options model checks them."""
    columns_from_producer: bool = False
    """Its columns are what the producer's kind declares it writes (`StageKind.output_columns`), known
    before the producer has run; False: the recipe's own `columns`."""

    @staticmethod
    def identity(producer: str, fingerprint: str) -> dict[str, Any]:
        """What the data is: the producer's output, which changes exactly when the producer reruns."""
        return {"stage": producer, "fingerprint": fingerprint}


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    options_model: type[BaseModel]
    columns: Callable[[Any], list[str]]
    identity: Callable[[Any], dict[str, Any]]
    load: Callable[[Any], "datasets.Dataset"]
    chat_columns: Callable[[Any], set[str]] | None = None  # None: not known before loading
    reads_stage: StageInput | None = None


class JsonlOptions(BaseModel):
    """A local JSON Lines file; `columns` renames fields (`{new_name: field_in_file}`)."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    columns: dict[str, str] = {}
    limit: int | None = None


def _jsonl_first_row(options: JsonlOptions) -> dict[str, Any]:
    if not options.path.is_file():
        raise RecipeError(f"data file {options.path} does not exist")
    with options.path.open() as handle:
        for line in handle:
            if line.strip():
                return json.loads(line)
    raise RecipeError(f"data file {options.path} is empty")


def _jsonl_columns(options: JsonlOptions) -> list[str]:
    fields = set(_jsonl_first_row(options))
    for new_name, source in options.columns.items():
        if source not in fields:
            raise RecipeError(f"columns.{new_name}: {options.path} has no field {source!r}{suggest(source, fields)}")
    renamed_sources = set(options.columns.values())
    return sorted((fields - renamed_sources) | set(options.columns))


def _jsonl_chat_columns(options: JsonlOptions) -> set[str]:
    """The fields whose first value is a list of messages, under their manifest names."""
    row = _jsonl_first_row(options)
    names = {source: new for new, source in options.columns.items()}
    return {names.get(field, field) for field, value in row.items() if isinstance(value, list) and all(isinstance(item, dict) for item in value)}


def _jsonl_identity(options: JsonlOptions) -> dict[str, Any]:
    return {"sha256": file_sha256(options.path), "columns": options.columns, "limit": options.limit}


def _jsonl_load(options: JsonlOptions) -> "datasets.Dataset":
    import datasets

    dataset = datasets.load_dataset("json", data_files=str(options.path), split="train")
    if options.limit is not None:
        dataset = dataset.select(range(min(options.limit, len(dataset))))
    renames = {source: new for new, source in options.columns.items() if source != new}
    return dataset.rename_columns(renames) if renames else dataset


class MixtureOptions(BaseModel):
    """Several recipes in one stage: `components` are `data:` blocks, each with a `weight`.

    Component i contributes round(num_examples * weight_i / total_weight) rows, drawn without
    replacement while it has enough (cycling through a reshuffle when it has fewer), and the mixture
    is shuffled. Columns are those every component has, plus `source` (the component's recipe).
    """

    model_config = ConfigDict(extra="forbid")

    components: list[dict[str, Any]]
    num_examples: int
    seed: int = 0


def _split_component(component: dict[str, Any]) -> tuple[str, float, dict[str, Any]]:
    options = {key: value for key, value in component.items() if key not in {"recipe", "weight"}}
    if "recipe" not in component:
        raise RecipeError("each mixture component needs a recipe")
    return component["recipe"], float(component.get("weight", 1.0)), options


def _mixture_columns(options: MixtureOptions) -> list[str]:
    shared: set[str] | None = None
    for component in options.components:
        name, _weight, component_options = _split_component(component)
        found = set(columns(name, component_options))
        shared = found if shared is None else shared & found
    return sorted((shared or set()) | {"source"})


def _mixture_identity(options: MixtureOptions) -> dict[str, Any]:
    parts = []
    for component in options.components:
        name, weight, component_options = _split_component(component)
        parts.append({"weight": weight, **identity(name, component_options)})
    return {"components": parts}


def _mixture_load(options: MixtureOptions) -> "datasets.Dataset":
    import datasets

    keep = _mixture_columns(options)
    total_weight = sum(_split_component(component)[1] for component in options.components)
    parts = []
    for index, component in enumerate(options.components):
        name, weight, component_options = _split_component(component)
        dataset = load(name, component_options)
        if "source" not in dataset.column_names:
            dataset = dataset.add_column("source", [name] * len(dataset))
        wanted = round(options.num_examples * weight / total_weight)
        order = [row for cycle in range(-(-wanted // len(dataset)))
                 for row in dataset.shuffle(seed=options.seed + index + cycle).select_columns(keep)][:wanted]
        parts.append(datasets.Dataset.from_list(order))
    return datasets.concatenate_datasets(parts).shuffle(seed=options.seed)


STAGE_OUTPUT = "stage_output"


class StageOutputOptions(BaseModel):
    """`data: {recipe: stage_output, stage: NAME}`: the dataset an earlier stage wrote (e.g. prm_label's step
    labels). The manifest names the stage; the planner adds the path and checks the columns from the producing kind."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    path: Path


def _stage_output_columns(options: StageOutputOptions) -> list[str]:
    info = options.path / "dataset_info.json"
    if not info.is_file():
        raise RecipeError(f"stage {options.stage!r} has not written its dataset yet ({options.path})")
    return sorted(json.loads(info.read_text())["features"])


def _stage_output_only_stage(options: dict[str, Any]) -> None:
    if set(options) != {"stage"}:
        raise RecipeError(f"recipe {STAGE_OUTPUT!r} takes one option, stage (the name of an earlier stage)")


def _stage_output_identity(options: StageOutputOptions) -> dict[str, Any]:
    return {"stage": options.stage}


def _stage_output_load(options: StageOutputOptions) -> "datasets.Dataset":
    import datasets

    return datasets.load_from_disk(str(options.path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _registry() -> dict[str, Recipe]:
    from data_recipes import accepted_samples, math_sets, prm_formats, synthetic

    recipes = [
        synthetic.RECIPE,
        accepted_samples.RECIPE,
        *math_sets.RECIPES,
        *prm_formats.RECIPES,
        Recipe("jsonl", JsonlOptions, _jsonl_columns, _jsonl_identity, _jsonl_load, _jsonl_chat_columns),
        Recipe("mixture", MixtureOptions, _mixture_columns, _mixture_identity, _mixture_load),
        Recipe(STAGE_OUTPUT, StageOutputOptions, _stage_output_columns, _stage_output_identity, _stage_output_load,
               reads_stage=StageInput("output_columns", "a dataset", "dataset", _stage_output_only_stage, columns_from_producer=True)),
    ]
    return {recipe.name: recipe for recipe in recipes}


def _parse(name: str, options: dict[str, Any]) -> tuple[Recipe, BaseModel]:
    recipes = _registry()
    if name not in recipes:
        raise RecipeError(f"unknown recipe {name!r}{suggest(name, recipes)}; recipes: {', '.join(recipes)}")
    recipe = recipes[name]
    try:
        return recipe, recipe.options_model.model_validate(options)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            return_hint = suggest(str(first["loc"][-1]), recipe.options_model.model_fields)
            raise RecipeError(f"recipe {name!r} has no option {key!r}{return_hint}") from None
        raise RecipeError(f"recipe {name!r} option {key!r}: {first['msg']} (got {first.get('input')!r})") from None


def stage_input(name: str) -> StageInput | None:
    """How recipe `name` reads an earlier stage's output, or None when it reads none (or is unknown: `columns`
    names an unknown recipe)."""
    recipe = _registry().get(name)
    return recipe.reads_stage if recipe is not None else None


def columns(name: str, options: dict[str, Any]) -> list[str]:
    recipe, parsed = _parse(name, options)
    return recipe.columns(parsed)


def chat_columns(name: str, options: dict[str, Any]) -> set[str] | None:
    """The recipe's columns that hold chat messages, or None where the recipe cannot say before loading."""
    recipe, parsed = _parse(name, options)
    return recipe.chat_columns(parsed) if recipe.chat_columns is not None else None


def identity(name: str, options: dict[str, Any]) -> dict[str, Any]:
    recipe, parsed = _parse(name, options)
    return {"recipe": name, "options": parsed.model_dump(mode="json"), **recipe.identity(parsed)}


def load(name: str, options: dict[str, Any]) -> "datasets.Dataset":
    recipe, parsed = _parse(name, options)
    return recipe.load(parsed)
