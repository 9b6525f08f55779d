"""The stage manifest: its schema, and every check that can run before anything launches.

A manifest is one YAML file. `load_manifest` parses it and raises `ManifestError` with a one-line
message naming the stage and the field for anything wrong: unknown keys, wrong types, unknown
kinds, dangling or forward `model` references, duplicate names, missing data files or columns,
unknown launch profiles, trainer `args` that are not fields of the kind's config class, and
rewards that don't resolve. The CLI turns that error into one line and a non-zero exit, with
nothing launched and nothing under `run_dir` touched.

Heavy libraries are imported only where a check needs them (the trainer config classes, to read
their real fields), never at CLI start.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import data_recipes
import launch
import rewards


class ManifestError(ValueError):
    """A manifest problem, phrased as one line that names the stage and the field."""


@dataclasses.dataclass(frozen=True)
class KindInfo:
    """What the pipeline must know about a stage kind without importing its module."""

    config_class: str  # "module:Class" whose dataclass fields are the stage's valid `args`
    produces_model: bool  # can a later stage start from this stage's output?
    needs_rewards: bool = False
    output_columns: tuple[str, ...] = ()  # a kind that writes <stage>/dataset: its columns
    needs_columns: tuple[str, ...] = ("prompt",)


# `args` of each kind are the fields of these classes, so TRL's own help text documents them.
KINDS: dict[str, KindInfo] = {
    "sft": KindInfo("trl:SFTConfig", produces_model=True),
    "eval": KindInfo("stages.arguments:EvalArgs", produces_model=False, needs_columns=("prompt", "answer")),
    "grpo": KindInfo("trl:GRPOConfig", produces_model=True, needs_rewards=True),
    "dpo": KindInfo("trl:DPOConfig", produces_model=True, needs_columns=("prompt", "chosen", "rejected")),
    "prm_label": KindInfo(
        "stages.prm_label:PRMLabelArgs", produces_model=False, needs_columns=("prompt", "answer"),
        output_columns=("prompt", "answer", "level", "steps", "labels", "hard_labels", "rollouts"),
    ),
    "prm": KindInfo("stages.prm:PRMConfig", produces_model=True, needs_columns=("prompt", "steps", "labels")),
}
# `data: {recipe: stage_output, stage: NAME}` reads the dataset an earlier stage wrote (prm_label's labels).
STAGE_OUTPUT_RECIPE = "stage_output"
TRAINING_KINDS = {kind for kind, info in KINDS.items() if info.produces_model}

# Fields gradus sets itself; a manifest that sets them would silently fight the runner.
ARGS_OWNED_BY_GRADUS = {
    "output_dir": "gradus writes checkpoints to <run_dir>/<stage>/checkpoints",
    "resume_from_checkpoint": "gradus resumes from the stage's last checkpoint by itself",
}


class TinyModelSpec(BaseModel):
    """A random-init causal LM built from a config, with a locally built character tokenizer.

    It exists so the whole pipeline runs with no download; real runs name an HF id or a path.
    """

    model_config = ConfigDict(extra="forbid")

    arch: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = Field(128, gt=0)
    intermediate_size: int = Field(512, gt=0)
    num_hidden_layers: int = Field(4, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    max_position_embeddings: int = Field(512, gt=0)


class LaunchSpec(BaseModel):
    """Where a stage runs: a profile in `launch/` plus overrides of its `accelerate launch` flags."""

    model_config = ConfigDict(extra="forbid")

    profile: str = "single"
    num_processes: int | None = Field(None, gt=0)
    num_machines: int | None = Field(None, gt=0)
    main_process_ip: str | None = None  # multi-node: defaults to $GRADUS_MAIN_ADDR, set by launch/slurm.sbatch
    main_process_port: int | None = None
    env: dict[str, str] = {}  # extra environment variables for the stage's processes (e.g. NCCL_* settings)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str) -> str:
        return _one_of(profile, launch.profile_names(), "launch profile")


class DataSpec(BaseModel):
    """A data recipe name; the other keys are that recipe's options, validated by the recipe."""

    model_config = ConfigDict(extra="allow")

    recipe: str


class RewardSpec(BaseModel):
    """A reward by name (built-in, entry point or `module:function`), its weight, and its options."""

    model_config = ConfigDict(extra="allow")

    name: str
    weight: float = 1.0

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OnPolicySpec(BaseModel):
    """DPO on the stage's own samples: n completions per prompt, scored by the stage's rewards, the
    best and worst kept as a pair when their scores differ by at least `margin`; repeated for
    `rounds` rounds, each starting from the model the previous round trained."""

    model_config = ConfigDict(extra="forbid")

    num_completions: int = Field(8, ge=2)
    margin: float = Field(0.5, ge=0)
    rounds: int = Field(1, ge=1)
    prompts_per_round: int | None = Field(None, gt=0)
    generation_batch_size: int = Field(16, gt=0)  # prompts per generate call, each with num_completions samples
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(128, gt=0)


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: str
    model: str = "base"
    data: DataSpec
    eval_data: DataSpec | None = None
    args: dict[str, Any] = {}
    peft: dict[str, Any] | None = None
    rewards: list[RewardSpec] = []
    on_policy: OnPolicySpec | None = None
    curriculum: dict[str, Any] | None = None
    launch: LaunchSpec = LaunchSpec()

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        return _one_of(kind, list(KINDS), "kind")


class DecontaminationSpec(BaseModel):
    """Before a training stage trains, its prompts are checked for n-gram overlap with the data of
    every eval stage in the manifest; overlaps are reported and, unless `remove: false`, dropped."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ngram: int = Field(13, gt=0)
    remove: bool = True


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    seed: int = 0
    base_model: str | TinyModelSpec
    decontamination: DecontaminationSpec = DecontaminationSpec()
    stages: list[StageSpec] = Field(min_length=1)

    @field_validator("base_model", mode="before")
    @classmethod
    def _tiny_shorthand(cls, value: Any) -> Any:
        """`base_model: tiny` and `base_model: {tiny: {...}}` both mean the built-in tiny model."""
        if value == "tiny":
            return {}
        if isinstance(value, dict) and set(value) == {"tiny"}:
            return value["tiny"] or {}
        return value

    def stage(self, name: str) -> StageSpec:
        return next(stage for stage in self.stages if stage.name == name)


def load_manifest(path: str | Path) -> Manifest:
    """Parse and fully validate a manifest; raise `ManifestError` (one line) on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ManifestError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: a manifest is a YAML mapping with run_dir, base_model and stages")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as error:
        raise ManifestError(_describe_validation_error(error, raw)) from None
    _check_stage_graph(manifest)
    earlier: dict[str, StageSpec] = {}
    for stage in manifest.stages:
        columns = _check_data(stage, earlier)
        _check_args(stage)
        _check_rewards(stage, columns, earlier)
        _check_curriculum(stage, columns)
        earlier[stage.name] = stage
    return manifest


def _check_stage_graph(manifest: Manifest) -> None:
    seen: dict[str, StageSpec] = {}
    all_names = [stage.name for stage in manifest.stages]
    for stage in manifest.stages:
        if stage.name in seen:
            raise ManifestError(f"stage {stage.name!r}: field 'name': duplicate stage name")
        if stage.model != "base":
            if stage.model not in all_names:
                choices = ["base", *seen]
                raise ManifestError(
                    f"stage {stage.name!r}: field 'model': no stage named {stage.model!r}"
                    f"{_suggest(stage.model, choices)}; use 'base' or an earlier stage: {', '.join(choices)}"
                )
            if stage.model not in seen:
                raise ManifestError(
                    f"stage {stage.name!r}: field 'model': stage {stage.model!r} comes later; a stage can only start from an earlier one"
                )
            if not KINDS[seen[stage.model].kind].produces_model:
                raise ManifestError(
                    f"stage {stage.name!r}: field 'model': stage {stage.model!r} is a {seen[stage.model].kind} stage and produces no model"
                )
        if stage.on_policy is not None and stage.kind != "dpo":
            raise ManifestError(f"stage {stage.name!r}: field 'on_policy': only dpo stages generate on-policy pairs")
        if stage.on_policy is not None and not stage.rewards:
            raise ManifestError(f"stage {stage.name!r}: field 'rewards': on-policy pairs are ranked by rewards; list at least one")
        if stage.kind == "dpo" and stage.on_policy is None and stage.rewards:
            raise ManifestError(f"stage {stage.name!r}: field 'rewards': a dpo stage uses rewards only with on_policy; add on_policy or remove them")
        seen[stage.name] = stage


def _check_data(stage: StageSpec, earlier: dict[str, StageSpec]) -> set[str]:
    """Check `data` (and `eval_data`) against what the kind needs; return the columns of `data`."""
    found: dict[str, set[str]] = {}
    for field in ("data", "eval_data"):
        spec = getattr(stage, field)
        if spec is None:
            continue
        options = spec.model_extra or {}
        try:
            if spec.recipe == STAGE_OUTPUT_RECIPE:
                columns = set(_stage_output_columns(options, earlier))
            else:
                columns = set(data_recipes.columns(spec.recipe, options))
        except (data_recipes.RecipeError, ValueError) as error:
            raise ManifestError(f"stage {stage.name!r}: field '{field}': {error}") from None
        missing = _missing_columns(stage, columns, field)
        if missing:
            raise ManifestError(
                f"stage {stage.name!r}: field '{field}': recipe {spec.recipe!r} gives no column {missing}; "
                f"it has {', '.join(sorted(columns))}"
            )
        found[field] = columns
    return found["data"]


def _stage_output_columns(options: dict[str, Any], earlier: dict[str, StageSpec]) -> tuple[str, ...]:
    name = options.get("stage")
    if set(options) != {"stage"}:
        raise ValueError(f"recipe {STAGE_OUTPUT_RECIPE!r} takes one option, stage (the name of an earlier stage)")
    producers = [stage_name for stage_name, stage in earlier.items() if KINDS[stage.kind].output_columns]
    if name not in earlier:
        raise ValueError(f"no earlier stage named {name!r}{_suggest(str(name), producers)}; stages with a dataset: {', '.join(producers) or 'none'}")
    if name not in producers:
        raise ValueError(f"stage {name!r} is a {earlier[name].kind} stage and writes no dataset")
    return KINDS[earlier[name].kind].output_columns


def _missing_columns(stage: StageSpec, columns: set[str], field: str) -> str | None:
    """The column(s) a stage needs that its `field` (data or eval_data) lacks, for the error message.

    On-policy DPO generates its own pairs from `data`'s prompts; its `eval_data` is still pairs."""
    if stage.kind == "sft":
        if "messages" in columns or {"prompt", "completion"} <= columns:
            return None
        return "'messages' (or 'prompt' + 'completion')"
    needs = ("prompt",) if stage.on_policy is not None and field == "data" else KINDS[stage.kind].needs_columns
    return next((repr(needed) for needed in needs if needed not in columns), None)


def config_class(kind: str) -> type:
    module_name, class_name = KINDS[kind].config_class.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _check_args(stage: StageSpec) -> None:
    """Check `args` against the real fields and types of the kind's config class (e.g. trl.SFTConfig).

    Only names and types are checked here: the config's own `__post_init__` runs in the stage
    process, on the machine that trains (a CPU login node can't judge `bf16=True`).
    """
    if not stage.args:
        return
    from pydantic import TypeAdapter

    cls = config_class(stage.kind)
    fields = {field.name for field in dataclasses.fields(cls) if field.init}
    hints = typing.get_type_hints(cls)
    for key, value in stage.args.items():
        where = f"stage {stage.name!r}: field 'args.{key}'"
        if key in ARGS_OWNED_BY_GRADUS:
            raise ManifestError(f"{where}: set by gradus ({ARGS_OWNED_BY_GRADUS[key]})")
        if key not in fields:
            raise ManifestError(f"{where}: not a field of {cls.__name__}{_suggest(key, fields)}")
        try:
            TypeAdapter(hints[key]).validate_python(value)
        except ValidationError:
            raise ManifestError(f"{where}: {value!r} is not a valid {_type_name(hints[key])}") from None


def _check_rewards(stage: StageSpec, columns: set[str], earlier: dict[str, StageSpec]) -> None:
    if KINDS[stage.kind].needs_rewards and not stage.rewards:
        raise ManifestError(f"stage {stage.name!r}: field 'rewards': a {stage.kind} stage needs at least one reward")
    for index, reward in enumerate(stage.rewards):
        where = f"stage {stage.name!r}: field 'rewards[{index}]' ({reward.name})"
        model = reward.options.get("model")
        if isinstance(model, str) and model in earlier and not KINDS[earlier[model].kind].produces_model:
            raise ManifestError(f"{where}: option 'model': stage {model!r} produces no model")
        try:
            rewards.check(reward.name, reward.options, columns)
        except rewards.RewardSpecError as error:
            raise ManifestError(f"{where}: {error}") from None


def _check_curriculum(stage: StageSpec, columns: set[str]) -> None:
    """The `curriculum:` block is validated by its own schema (stages/arguments.py), against the data's columns."""
    if stage.curriculum is None:
        return
    from stages.arguments import CURRICULUM_KINDS, CurriculumArgs

    where = f"stage {stage.name!r}: field 'curriculum"
    if stage.kind not in CURRICULUM_KINDS:
        raise ManifestError(f"{where}': {stage.kind} stages take no curriculum (only {', '.join(CURRICULUM_KINDS)})")
    try:
        curriculum = CurriculumArgs.model_validate(stage.curriculum)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        hint = _suggest(str(first["loc"][-1]), CurriculumArgs.model_fields) if first["type"] == "extra_forbidden" else ""
        raise ManifestError(f"{where}.{key}': {first['msg'].removeprefix('Value error, ')}{hint}") from None
    reward_names = [reward.name for reward in stage.rewards]
    if curriculum.signal_reward is not None and curriculum.signal_reward not in reward_names:
        raise ManifestError(
            f"{where}.signal_reward': {curriculum.signal_reward!r} is not one of the stage's rewards"
            f"{_suggest(curriculum.signal_reward, reward_names)}; rewards: {', '.join(reward_names)}"
        )
    problem = curriculum.check(stage.kind, columns)
    if problem:
        raise ManifestError(f"{where}': {problem}")


def _one_of(value: str, known: list[str], what: str) -> str:
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}{_suggest(value, known)}; {what}s: {', '.join(known)}")
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe_validation_error(error: ValidationError, raw: dict[str, Any]) -> str:
    """Turn pydantic's first error into 'stage NAME: field F: problem' with a suggestion."""
    first = error.errors()[0]
    # pydantic reports a union's branches as extra path parts ('str', 'TinyModelSpec'); drop them.
    location = [part for part in first["loc"] if not _is_type_tag(part)]
    prefix, owner = "", Manifest
    if len(location) >= 2 and location[0] == "stages" and isinstance(location[1], int):
        stages = raw.get("stages") or []
        stage_raw = stages[location[1]] if location[1] < len(stages) else {}
        name = stage_raw.get("name") if isinstance(stage_raw, dict) else None
        prefix = f"stage {name!r}: " if name else f"stages[{location[1]}]: "
        location, owner = location[2:], StageSpec
    field = ".".join(str(part) for part in location) or "(top level)"
    if first["type"] == "extra_forbidden":
        nested = {"launch": LaunchSpec, "base_model": TinyModelSpec, "decontamination": DecontaminationSpec}
        if len(location) >= 2:
            owner = nested.get(str(location[-2]), owner)
        return f"{prefix}field '{field}': unknown key{_suggest(str(location[-1]), owner.model_fields)}"
    if first["type"] == "missing":
        return f"{prefix}field '{field}': required"
    message = first["msg"].removeprefix("Value error, ")
    return f"{prefix}field '{field}': {message} (got {first.get('input')!r})"


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in {"str", "int", "float"} or part[:1].isupper())
