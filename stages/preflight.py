"""The preflight: build every trainer stage's real config in one process, before any stage launches.

`gradus plan` and `gradus run` start `python -m stages.preflight <stage files...> --out <result.json>`
once for all the stages that will run (pipeline/preflight.py decides which, and caches what passed).
It constructs each stage's TRL config exactly as the stage will (`trainer_args` of the kind's module,
with the world size the stage is launched with), then asks the kind's module what its trainer and its
wiring would refuse of that config (its `preflight(stage, config)` hook, stages/kinds.py), so what
would fail at launch is found now, phrased as one line naming the stage and the field.

Result: `{"problems": [{"stage": NAME, "field": FIELD, "message": ...}, ...]}`, in stage order.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
import typing
import warnings
from pathlib import Path
from typing import Any

from data_recipes import suggest
from stages.arguments import StageFile
from stages.common import peft_config
from stages.kinds import load_attribute, stage_kind

Unmet = tuple[str, str]
"""What a kind's `preflight` hook returns for a config its trainer would refuse: (the field, why)."""


@dataclasses.dataclass
class Problem:
    stage: str
    field: str
    message: str


def check(stage: StageFile) -> Problem | None:
    """The first thing that would stop `stage` before its first training step, or None."""
    kind = stage_kind(stage.kind)
    module = importlib.import_module(kind.module)
    config_cls = load_attribute(kind.config)
    problem = _check_names_and_types(stage, config_cls)
    if problem:
        return problem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = module.trainer_args(stage, planned_world_size=stage.num_processes)
    except (ValueError, TypeError) as error:
        message = _first_line(error)
        return Problem(stage.name, _field_named_in(message, stage.args, config_cls), message)
    problem = _check_peft(stage)
    if problem:
        return problem
    unmet = module.preflight(stage, config) if hasattr(module, "preflight") else None
    return Problem(stage.name, *unmet) if unmet else None


def _field_named_in(message: str, args: dict[str, Any], config_cls: type) -> str:
    """The field a config's error is about: the first field it names that the manifest set, else the
    first field it names at all, else `args` as a whole."""
    named = [word for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message) if word in {f.name for f in dataclasses.fields(config_cls)}]
    chosen = next((word for word in named if word in args), named[0] if named else None)
    return f"args.{chosen}" if chosen else "args"


def _check_names_and_types(stage: StageFile, config_cls: type) -> Problem | None:
    """Unknown `args` (with a suggestion) and values of the wrong type, against the config's fields."""
    from pydantic import TypeAdapter, ValidationError

    fields = {field.name for field in dataclasses.fields(config_cls) if field.init}
    hints = typing.get_type_hints(config_cls)
    for key, value in stage.args.items():
        if key not in fields:
            return Problem(stage.name, f"args.{key}", f"not a field of {config_cls.__name__}{suggest(key, fields)}")
        try:
            TypeAdapter(hints[key]).validate_python(value)
        except ValidationError:
            return Problem(stage.name, f"args.{key}", f"{value!r} is not a valid {_type_name(hints[key])}")
    return None


def _check_peft(stage: StageFile) -> Problem | None:
    try:
        peft_config(stage)
    except (ValueError, TypeError) as error:
        return Problem(stage.name, "peft", _first_line(error))
    return None


def lora_targets(stage: StageFile) -> list[str]:
    """The modules a stage's `peft` block puts LoRA adapters on (for a kind's hook that refuses some)."""
    config = peft_config(stage)
    targets = config.target_modules if config is not None else []
    return list(targets) if isinstance(targets, (set, list, tuple)) else [targets]


def missing_eval_data(stage: StageFile, config: Any) -> Unmet | None:
    """transformers' Trainer refuses an eval strategy with no eval set at init; a kind that evaluates on
    `eval_data` makes this part of its `preflight` hook (prm holds out its own split, so it does not)."""
    eval_strategy = getattr(config.eval_strategy, "value", config.eval_strategy)
    if eval_strategy != "no" and stage.eval_data is None:
        return "args.eval_strategy", (f"{eval_strategy!r} needs eval_data (transformers' Trainer refuses it at init); "
                                      "add an eval_data block or set eval_strategy: 'no'")
    return None


def rewards_keep_their_columns(stage: StageFile, config: Any) -> Unmet | None:
    """GRPOTrainer and DistillationTrainer keep only `prompt` of each row when `remove_unused_columns` is true, so a
    reward reading a data column (math_accuracy's `answer`) fails at the first batch; a kind whose rewards score
    on-policy samples makes this part of its `preflight` hook."""
    if stage.rewards and config.remove_unused_columns:
        return "args.remove_unused_columns", "the stage's rewards read data columns (answer, ...), which true drops before them; set false"
    return None


def addons_unmet(stage: StageFile, config: Any, addon_classes: tuple[type, ...]) -> Unmet | None:
    """The first of the stage's add-ons (the `TrainerAddon`s whose block it sets) to refuse the config, as an Unmet."""
    for addon in addon_classes:
        args = getattr(stage, addon.block)
        unmet = block_requirement(addon.block, addon.unmet_requirement(args, config)) if args is not None else None
        if unmet:
            return unmet
    return None


def block_requirement(block: str, unmet: str | None) -> Unmet | None:
    """A block's own `unmet_requirement` ("FIELD: why") as an Unmet whose message names the block."""
    if not unmet:
        return None
    field, _, message = unmet.partition(": ")
    return field, f"{block}: {message}"


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[-2] != "--out":
        sys.exit("usage: python -m stages.preflight STAGE_FILE... --out RESULT.json")
    problems = []
    for path in argv[:-2]:
        stage = StageFile.read(path)
        problem = check(stage)
        if problem is not None:
            problems.append(dataclasses.asdict(problem))
    Path(argv[-1]).write_text(json.dumps({"problems": problems}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
