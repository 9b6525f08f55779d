"""The preflight: build every trainer stage's real config in one process, before any stage launches.

`gradus plan` and `gradus run` start `python -m stages.preflight <stage files...> --out <result.json>`
once for all the stages that will run (pipeline/preflight.py decides which, and caches what passed).
It constructs each stage's TRL config exactly as the stage will (`trainer_args` of the kind's module,
with the world size the stage is launched with), so what TRL's `__post_init__` and the trainers' init
checks would raise at launch is found now, phrased as one line naming the stage and the field.

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

# The kinds whose args are a TRL/transformers config: (the module whose `trainer_args` builds it, the class).
TRAINER_KINDS = {
    "sft": ("stages.sft", "trl:SFTConfig"),
    "grpo": ("stages.grpo", "trl:GRPOConfig"),
    "dpo": ("stages.dpo", "trl:DPOConfig"),
    "prm": ("stages.prm", "stages.prm:PRMConfig"),
}


@dataclasses.dataclass
class Problem:
    stage: str
    field: str
    message: str


def check(stage: StageFile) -> Problem | None:
    """The first thing that would stop `stage` before its first training step, or None."""
    module_name, config_name = TRAINER_KINDS[stage.kind]
    module = importlib.import_module(module_name)
    class_module, class_name = config_name.split(":")
    config_cls = getattr(importlib.import_module(class_module), class_name)
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
    return _check_peft(stage) or _check_kind(stage, config)


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
    if not stage.peft:
        return None
    from peft import LoraConfig

    try:
        config = LoraConfig(**{"task_type": "CAUSAL_LM", **stage.peft})
    except (ValueError, TypeError) as error:
        return Problem(stage.name, "peft", _first_line(error))
    targets = config.target_modules if isinstance(config.target_modules, (set, list, tuple)) else [config.target_modules]
    if stage.kind == "grpo" and "lm_head" in targets:
        return Problem(stage.name, "peft.target_modules", "GRPOTrainer cannot train a LoRA adapter on lm_head (it reads lm_head.weight directly)")
    return None


def _check_kind(stage: StageFile, config: Any) -> Problem | None:
    """What the trainers check at init, and what gradus's own wiring needs of the config."""
    if stage.kind == "grpo":
        if config.reward_weights is not None and len(config.reward_weights) != len(stage.rewards):
            return Problem(stage.name, "args.reward_weights",
                           f"{len(config.reward_weights)} weights for {len(stage.rewards)} rewards; set each reward's weight instead")
        if stage.curriculum is not None:
            from stages.curriculum.trl_wiring import unmet_requirement

            unmet = unmet_requirement(config, stage.curriculum)
            if unmet:
                field, _, message = unmet.partition(": ")
                return Problem(stage.name, field, f"curriculum: {message}")
        if stage.relift is not None:
            from stages.relift import unmet_requirement as relift_unmet

            unmet = relift_unmet(config)
            if unmet:
                field, _, message = unmet.partition(": ")
                return Problem(stage.name, field, f"relift: {message}")
    eval_strategy = getattr(config.eval_strategy, "value", config.eval_strategy)
    if eval_strategy != "no" and stage.eval_data is None and stage.kind != "prm":  # the prm stage holds out its own split
        return Problem(stage.name, "args.eval_strategy", f"{eval_strategy!r} needs eval_data (transformers' Trainer refuses it at init); "
                       "add an eval_data block or set eval_strategy: 'no'")
    return None


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
