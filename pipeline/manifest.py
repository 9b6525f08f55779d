"""The stage manifest: its schema, and every check that can run before anything launches.

A manifest is one YAML file. `load_manifest` parses it and raises `ManifestError` with a one-line
message naming the stage and the field for anything wrong: unknown keys, wrong types, unknown
kinds, dangling or forward `model` references, duplicate names, missing data files or columns, a base
model or run directory that is not what it should be, unknown launch profiles, `args` of the kinds
gradus defines (eval, prm_label) that their classes refuse, rewards that don't resolve or share a name,
and curricula that don't fit the stage. The CLI turns that error into one line and a non-zero exit, with
nothing launched and nothing under `run_dir` touched.

None of it imports torch, transformers or TRL. What only TRL can judge (its configs' fields, types and
`__post_init__` checks) is the preflight's (pipeline/preflight.py), which runs after the plan.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

import data_recipes
import launch
import rewards
from data_recipes import suggest
from pipeline.base_models import GENERATION_MARKER, KNOWN_MODELS, BaseModelError, chat_template, check_gguf, gguf_vocabulary_size, known_model_path, model_vocabulary_size
from pipeline.errors import ManifestError
from pipeline.overrides import apply_overrides, load_yaml
from pipeline.trackers import check_report_to
from stages.arguments import SCORELESS_STRATEGIES, RENAMED_CURRICULUM_OPTIONS, CurriculumArgs, DataBlock, OnPolicyArgs, ReliftArgs
from stages.kinds import BUILTIN_KINDS, StageKind, load_attribute, stage_kind
from stages.models import tiny_vocabulary


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


class GGUFModelSpec(BaseModel):
    """A GGUF file as the base model, converted once into a model directory under run_dir (pipeline/base_models.py)."""

    model_config = ConfigDict(extra="forbid")

    gguf: Path


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


class RewardSpec(BaseModel):
    """A reward by name (built-in, entry point or `module:function`), its weight, and its options."""

    model_config = ConfigDict(extra="allow")

    name: str
    weight: float = 1.0

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


ModelRef = str | TinyModelSpec | GGUFModelSpec
"""A model a stage starts from or learns from: `base`, an earlier stage, a real model known by name, a path
or hub id, `{gguf: FILE}`, or `{tiny: {...}}` (a model gradus builds). The models gradus makes (tiny, GGUF)
are made once per run directory, as the base model is (pipeline/plan.py)."""


def _tiny_shorthand(value: Any) -> Any:
    """`{tiny: {...}}` means the built-in tiny model with those settings (`{tiny: null}`: its defaults)."""
    if isinstance(value, dict) and set(value) == {"tiny"}:
        return value["tiny"] or {}
    return value


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: str
    model: ModelRef = "base"
    teacher: ModelRef | None = None
    """The model a distillation stage learns from (a kind with `teacher="needed"`); any model reference."""
    data: DataBlock
    eval_data: DataBlock | None = None
    args: dict[str, Any] = {}
    peft: dict[str, Any] | None = None
    rewards: list[RewardSpec] = []
    on_policy: OnPolicyArgs | None = None
    curriculum: dict[str, Any] | None = None
    relift: dict[str, Any] | None = None
    launch: LaunchSpec = LaunchSpec()

    @field_validator("model", "teacher", mode="before")
    @classmethod
    def _model_shorthands(cls, value: Any) -> Any:
        return _tiny_shorthand(value)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        stage_kind(kind)  # raises KindError, a ValueError: pydantic reports it on the field
        return kind

    @property
    def declared(self) -> StageKind:
        """What this stage's kind declares (stages/kinds.py)."""
        return stage_kind(self.kind)

    @property
    def world_size(self) -> int:
        """Processes the stage is launched with, over all its machines: launch.num_processes, else its profile's."""
        if self.launch.num_processes is not None:
            return self.launch.num_processes
        return int(launch.profile_settings(self.launch.profile).get("num_processes", 1))


class DecontaminationSpec(BaseModel):
    """Before a training stage trains, its problems are checked for n-gram overlap with the data of
    every eval stage in the manifest; overlaps are reported and, unless `remove: false`, dropped.
    A removal of more than `max_removed_fraction` of the rows is refused (the stage fails naming the
    counts): so large a share means the check, not the data, is wrong, unless the manifest says so."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ngram: int = Field(13, gt=0)
    remove: bool = True
    max_removed_fraction: float = Field(0.05, ge=0, le=1)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    seed: int = 0
    base_model: str | TinyModelSpec | GGUFModelSpec
    decontamination: DecontaminationSpec = DecontaminationSpec()
    stages: list[StageSpec] = Field(min_length=1)

    @field_validator("base_model", mode="before")
    @classmethod
    def _shorthands(cls, value: Any) -> Any:
        """`base_model: tiny` and `base_model: {tiny: {...}}` both mean the built-in tiny model; a dict
        with `gguf` is a GGUF file (a known model's name is resolved to its file by `load_manifest`)."""
        return {} if value == "tiny" else _tiny_shorthand(value)

    def stage(self, name: str) -> StageSpec:
        return next(stage for stage in self.stages if stage.name == name)


def load_manifest(path: str | Path, overrides: Sequence[str] = ()) -> Manifest:
    """Parse and fully validate a manifest, with command-line `key.path=value` overrides applied first
    (pipeline/overrides.py); raise `ManifestError` (one line) on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ManifestError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: a manifest is a YAML mapping with run_dir, base_model and stages")
    raw = apply_overrides(raw, overrides, Manifest)
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as error:
        raise ManifestError(_describe_validation_error(error, raw)) from None
    _check_stage_graph(manifest)
    _resolve_known_model(manifest)
    _check_paths(manifest)
    earlier: dict[str, StageSpec] = {}
    all_names = [stage.name for stage in manifest.stages]
    for stage in manifest.stages:
        columns = _check_data(stage, earlier)
        _check_args(stage)
        _check_rewards(stage, columns, earlier, all_names)
        _check_curriculum(stage, columns)
        _check_relift(stage, columns)
        earlier[stage.name] = stage
    _check_decontamination_order(manifest)
    _check_generation_markers(manifest)
    _check_teacher_vocabulary(manifest)
    return manifest


def _check_stage_graph(manifest: Manifest) -> None:
    seen: dict[str, StageSpec] = {}
    all_names = [stage.name for stage in manifest.stages]
    for stage in manifest.stages:
        if stage.name in seen:
            raise ManifestError(f"stage {stage.name!r}: field 'name': duplicate stage name")
        _check_model_reference(stage, "model", seen, all_names)
        if stage.declared.teacher == "needed" and stage.teacher is None:
            raise ManifestError(f"stage {stage.name!r}: field 'teacher': a {stage.kind} stage learns from a teacher; name one (an earlier stage, base, or any model)")
        if stage.declared.teacher == "refused" and stage.teacher is not None:
            raise ManifestError(f"stage {stage.name!r}: field 'teacher': only {_kinds_with_teacher()} stages learn from a teacher")
        _check_model_reference(stage, "teacher", seen, all_names)
        if stage.on_policy is not None and not stage.declared.accepts("on_policy"):
            raise ManifestError(f"stage {stage.name!r}: field 'on_policy': only {_kinds_accepting('on_policy')} stages generate on-policy pairs")
        if stage.on_policy is not None and not stage.rewards:
            raise ManifestError(f"stage {stage.name!r}: field 'rewards': on-policy pairs are ranked by rewards; list at least one")
        if stage.declared.rewards == "with on_policy" and stage.on_policy is None and stage.rewards:
            raise ManifestError(f"stage {stage.name!r}: field 'rewards': a {stage.kind} stage uses rewards only with on_policy; add on_policy or remove them")
        seen[stage.name] = stage


def _check_model_reference(stage: StageSpec, field: str, earlier: dict[str, StageSpec], all_names: list[str]) -> None:
    """A `model` or `teacher` that names a stage must name an earlier one that makes a model; a name that is
    no stage and reads as no model (a path, hub id or known model, checked by `_check_paths`) is a typo."""
    ref = getattr(stage, field)
    if not isinstance(ref, str) or ref == "base":
        return
    if ref in earlier:
        named = earlier[ref].declared
        if not named.produces_model:
            raise ManifestError(f"stage {stage.name!r}: field {field!r}: stage {ref!r} is a {earlier[ref].kind} stage and produces no model")
        if named.model_class != "causal_lm" and (field == "teacher" or stage.declared.model_class != named.model_class):
            raise ManifestError(f"stage {stage.name!r}: field {field!r}: stage {ref!r} makes a {named.model_class.replace('_', ' ')}, "
                                f"not a causal LM a {stage.kind} stage can {'learn from' if field == 'teacher' else 'start from'}")
        return
    if ref == stage.name:
        raise ManifestError(f"stage {stage.name!r}: field {field!r}: names the stage itself; name an earlier stage, base, or a model")
    if ref in all_names:
        raise ManifestError(f"stage {stage.name!r}: field {field!r}: stage {ref!r} comes later; a stage can only use an earlier one's model")
    if not _names_outside_model(ref):
        choices = ["base", *earlier]
        raise ManifestError(
            f"stage {stage.name!r}: field {field!r}: no stage named {ref!r}{suggest(ref, choices)}; use 'base' or an earlier "
            f"stage: {', '.join(choices)} (or a model: a path, an HF hub id, {{gguf: FILE}}, {{tiny: {{...}}}})"
        )


def _names_outside_model(ref: str) -> bool:
    """Whether a model reference that names no stage reads as a model: a known model, a path, or an HF hub id."""
    return ref in KNOWN_MODELS or ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists() or bool(HUB_ID.match(ref))


def _kinds_with_teacher() -> str:
    return ", ".join(name for name, kind in BUILTIN_KINDS.items() if kind.teacher != "refused")


def _check_generation_markers(manifest: Manifest) -> None:
    """TRL's `assistant_only_loss` (the field a kind names in `needs_generation_markers_with`) finds the assistant's
    tokens by the chat template's `{% generation %}` markers; a template without them (SmolLM2's, most real
    models') fails at launch. Known at plan time from the model the stage's chain starts from, whose template
    every later stage keeps."""
    for stage in manifest.stages:
        flag = stage.declared.needs_generation_markers_with
        if flag is None or not stage.args.get(flag):
            continue
        root = _root_model(stage.model, manifest)
        if isinstance(root, TinyModelSpec):  # the tiny model's template has the markers
            continue
        template = chat_template(root.gguf, gguf=True) if isinstance(root, GGUFModelSpec) else chat_template(root)
        if template is not None and not GENERATION_MARKER.search(template):
            whose = "the base model's chat template" if root is manifest.base_model else f"the chat template of {_model_label(root)}"
            raise ManifestError(
                f"stage {stage.name!r}: field 'args.{flag}': {whose} has no "
                "{% generation %} markers, so TRL cannot find the assistant's tokens; give the data as a chat prompt and "
                "completion (e.g. format: conversational_prompt_completion), which trains on the completion alone"
            )


def _check_teacher_vocabulary(manifest: Manifest) -> None:
    """On-policy distillation compares the teacher's and the student's next-token distributions token for token,
    so both must have one vocabulary; TRL finds a mismatch only once both models are loaded. Where a side's
    size cannot be read without a download (a hub id not in the local cache) the launch is left to find it."""
    for stage in (stage for stage in manifest.stages if stage.teacher is not None):
        student = _vocabulary_size(_root_model(stage.model, manifest))
        teacher = _vocabulary_size(_root_model(stage.teacher, manifest))
        if student is not None and teacher is not None and student != teacher:
            raise ManifestError(
                f"stage {stage.name!r}: field 'teacher': its vocabulary has {teacher} tokens and the student's {student}; "
                "on-policy distillation needs one vocabulary. Distil across tokenizers at the sequence level instead: sample "
                "the teacher in a difficulty stage (model: <the teacher>) and train the student with sft on "
                "{recipe: accepted_samples, stage: <that stage>}"
            )


def _vocabulary_size(ref: str | TinyModelSpec | GGUFModelSpec) -> int | None:
    if isinstance(ref, TinyModelSpec):
        return len(tiny_vocabulary(ref.arch))
    return gguf_vocabulary_size(ref.gguf) if isinstance(ref, GGUFModelSpec) else model_vocabulary_size(ref)


def _root_model(ref: ModelRef, manifest: Manifest) -> str | TinyModelSpec | GGUFModelSpec:
    """The model `ref`'s chain starts from: stages followed back through their `model` to the base model or an
    outside one (training keeps a model's tokenizer and chat template, so the root's are the stage's)."""
    names = {stage.name for stage in manifest.stages}
    while isinstance(ref, str) and ref in names:
        ref = manifest.stage(ref).model
    return manifest.base_model if ref == "base" else ref


def _model_label(ref: ModelRef) -> str:
    if isinstance(ref, GGUFModelSpec):
        return str(ref.gguf)
    return "the tiny model" if isinstance(ref, TinyModelSpec) else ref


def _check_decontamination_order(manifest: Manifest) -> None:
    """A training stage is checked against every eval set; one read from a stage's dataset must exist by
    then, so its producer must come first (a later one would fail the training stage at load)."""
    if not manifest.decontamination.enabled:
        return
    order = [stage.name for stage in manifest.stages]
    produced = [(stage.name, stage.data.model_extra["stage"]) for stage in manifest.stages
                if stage.declared.evaluates and data_recipes.stage_input(stage.data.recipe) is not None]
    for stage in (stage for stage in manifest.stages if stage.declared.produces_model):
        for evaluation, producer in produced:
            if order.index(producer) > order.index(stage.name):
                raise ManifestError(
                    f"stage {stage.name!r}: decontamination: eval stage {evaluation!r} reads the dataset of stage {producer!r}, which runs "
                    f"after it, so it cannot be checked against it; evaluate on data that exists from the start, or set decontamination: {{enabled: false}}"
                )


def _check_data(stage: StageSpec, earlier: dict[str, StageSpec]) -> set[str]:
    """Check `data` (and `eval_data`) against what the kind needs; return the columns of `data`."""
    found: dict[str, set[str]] = {}
    for field in ("data", "eval_data"):
        spec = getattr(stage, field)
        if spec is None:
            continue
        try:
            columns = _recipe_columns(spec, earlier)
        except (data_recipes.RecipeError, ValueError) as error:
            raise ManifestError(f"stage {stage.name!r}: field '{field}': {error}") from None
        missing = _missing_columns(stage, columns, field)
        if missing:
            raise ManifestError(
                f"stage {stage.name!r}: field '{field}': recipe {spec.recipe!r} gives no column {missing}; "
                f"it has {', '.join(sorted(columns))}"
            )
        found[field] = columns if spec.replay is None else _check_replay(stage, field, columns, earlier)
        _check_chat_format(stage, field, spec, columns, earlier)
    return found["data"]


def _check_chat_format(stage: StageSpec, field: str, spec: DataBlock, columns: set[str], earlier: dict[str, StageSpec]) -> None:
    """Refuse data whose prompt is chat messages and whose completion is text (or the reverse): TRL's trainers
    fail on it at launch. Also a replay whose rows are chat where the stage's own are text (or the reverse).
    `columns`: what the data block's recipe gives."""
    together = stage.declared.rendered_together
    if not together or data_recipes.stage_input(spec.recipe) is not None:  # its format is known once its producer has run
        return
    chat = data_recipes.chat_columns(spec.recipe, spec.model_extra or {})
    if chat is None:
        return
    used = [column for column in together if column in columns]
    if len({column in chat for column in used}) > 1:
        kinds = ", ".join(f"{column!r} {'chat messages' if column in chat else 'text'}" for column in used)
        raise ManifestError(f"stage {stage.name!r}: field '{field}': recipe {spec.recipe!r} gives {kinds}; "
                            f"the {stage.kind} trainer takes them all as chat messages or all as text")
    if spec.replay is not None and field == "data":
        source = earlier[spec.replay.stage].data
        source_chat = data_recipes.chat_columns(source.recipe, source.model_extra or {})
        if source_chat is not None and {column in chat for column in used} != {column in source_chat for column in used}:
            raise ManifestError(f"stage {stage.name!r}: field 'data.replay': stage {spec.replay.stage!r} trains on "
                                f"{'chat messages' if used and used[0] in source_chat else 'text'} and this stage on "
                                f"{'chat messages' if used and used[0] in chat else 'text'}; replayed rows must be in the stage's own format")


def _recipe_columns(spec: DataBlock, earlier: dict[str, StageSpec]) -> set[str]:
    """The columns a data block's recipe gives (a replay aside); an earlier stage it reads must be one that writes what it reads."""
    options = spec.model_extra or {}
    reading = data_recipes.stage_input(spec.recipe)
    if reading is None:
        return set(data_recipes.columns(spec.recipe, options))
    if reading.check_options is not None:
        reading.check_options(options)
    producer = _producer(options.get("stage"), earlier, reading.writes, reading.what)
    return set(producer.declared.output_columns if reading.columns_from_producer else data_recipes.columns(spec.recipe, options))


def _producer(name: Any, earlier: dict[str, StageSpec], writes: str, what: str) -> StageSpec:
    """The earlier stage `name`, whose kind's `writes` (a StageKind field) says it writes `what`."""
    producers = [stage_name for stage_name, stage in earlier.items() if getattr(stage.declared, writes)]
    if name not in earlier:
        raise ValueError(f"no earlier stage named {name!r}{suggest(str(name), producers)}; stages with {what}: {', '.join(producers) or 'none'}")
    if name not in producers:
        raise ValueError(f"stage {name!r} is a {earlier[name].kind} stage and writes no {what}")
    return earlier[name]


def _check_replay(stage: StageSpec, field: str, columns: set[str], earlier: dict[str, StageSpec]) -> set[str]:
    """A replay mixes an earlier training stage's data into a training stage's `data`; the columns both
    share are what the stage trains on, and must still be what its kind needs. Returns them."""
    replay = getattr(stage, field).replay
    where = f"stage {stage.name!r}: field '{field}.replay"
    if field != "data" or not stage.declared.produces_model:
        raise ManifestError(f"{where}': replay mixes earlier training data into the data a training stage trains on; "
                            f"a {stage.kind} stage's {field} takes none")
    if replay.data is not None:
        raise ManifestError(f"{where}.data': set by gradus (the replayed stage's resolved data block)")
    sources = [name for name, spec in earlier.items() if spec.declared.produces_model and spec.on_policy is None]
    if replay.stage not in earlier:
        raise ManifestError(f"{where}.stage': no earlier stage named {replay.stage!r}{suggest(replay.stage, sources)}; "
                            f"stages with training data: {', '.join(sources) or 'none'}")
    source = earlier[replay.stage]
    if replay.stage not in sources:
        why = "its pairs are sampled as it trains" if source.declared.produces_model else "it trains on nothing"
        raise ManifestError(f"{where}.stage': stage {replay.stage!r} is a {source.kind} stage with no training data to replay ({why})")
    shared = columns & _recipe_columns(source.data, earlier)
    missing = _missing_columns(stage, shared, field)
    if missing:
        raise ManifestError(f"{where}': the data of stage {replay.stage!r} and of this stage share no column {missing}; "
                            f"they share {', '.join(sorted(shared)) or 'none'}")
    return shared


def _missing_columns(stage: StageSpec, columns: set[str], field: str) -> str | None:
    """The column(s) a stage needs that its `field` (data or eval_data) lacks, for the error message.

    On-policy DPO generates its own pairs from `data`'s prompts; its `eval_data` is still pairs. A kind
    that takes its data in more than one shape (sft: messages, or prompt + completion) names them all."""
    alternatives = (("prompt",),) if stage.on_policy is not None and field == "data" else stage.declared.needs_columns
    if any(set(needs) <= columns for needs in alternatives):
        return None
    if len(alternatives) == 1:
        return next(repr(needed) for needed in alternatives[0] if needed not in columns)
    first, *others = (" + ".join(map(repr, needs)) for needs in alternatives)
    return first + "".join(f" (or {other})" for other in others)


def _check_args(stage: StageSpec) -> None:
    """The fields gradus owns, and, for the kinds whose config is a light dataclass (eval, prm_label), the whole
    of `args`: names, types and the class's own `__post_init__` checks. A trainer config's fields, types and
    checks are the preflight's (pipeline/preflight.py): only TRL can read them, and importing it costs seconds."""
    for key in stage.args:
        if key in ARGS_OWNED_BY_GRADUS:
            raise ManifestError(f"stage {stage.name!r}: field 'args.{key}': set by gradus ({ARGS_OWNED_BY_GRADUS[key]})")
    check_report_to(stage.name, stage.args.get("report_to"))
    if stage.declared.trainer:
        return
    cls = load_attribute(stage.declared.config)
    class_name = cls.__name__
    fields = {field.name for field in dataclasses.fields(cls) if field.init}
    for key in stage.args:
        if key not in fields:
            raise ManifestError(f"stage {stage.name!r}: field 'args.{key}': not a field of {class_name}{suggest(key, fields)}")
    try:
        TypeAdapter(cls).validate_python(stage.args)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        where = f"stage {stage.name!r}: field 'args{'.' + field if field else ''}'"
        got = f" (got {first['input']!r})" if field else ""
        raise ManifestError(f"{where}: {first['msg'].removeprefix('Value error, ')}{got}") from None


def _check_paths(manifest: Manifest) -> None:
    """What the manifest names on disk is what it should be: a run directory that can be one, and a base
    model given as a path that exists and holds a model (an HF id is looked up by the stage)."""
    run_dir = manifest.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ManifestError(f"field 'run_dir': {run_dir} exists and is not a directory")
    existing = next(parent for parent in [run_dir, *run_dir.absolute().parents] if parent.exists())
    if not os.access(existing, os.W_OK):
        raise ManifestError(f"field 'run_dir': {existing} is not writable, so {run_dir} cannot be created there")
    _check_outside_model(manifest.base_model, "", "base_model")
    names = {stage.name for stage in manifest.stages}
    for stage in manifest.stages:
        for field in ("model", "teacher"):
            ref = getattr(stage, field)
            if ref is not None and not (isinstance(ref, str) and (ref == "base" or ref in names)):
                _check_outside_model(ref, f"stage {stage.name!r}: ", field)


def _check_outside_model(ref: ModelRef, where: str, field: str) -> None:
    """A model named by path or hub id, or a GGUF file, is one that can be loaded (a tiny spec always can)."""
    if isinstance(ref, str):
        _check_model_path(ref, f"{where}field '{field}'")
    elif isinstance(ref, GGUFModelSpec):
        try:
            check_gguf(ref.gguf)
        except BaseModelError as error:
            raise ManifestError(f"{where}field '{field}.gguf': {error}") from None


def _resolve_known_model(manifest: Manifest) -> None:
    """A real model named by its short name (`smollm2-135m-instruct`) becomes its installed GGUF file, as the
    base model or as a stage's `model` or `teacher` (where no stage has that name)."""
    names = {stage.name for stage in manifest.stages}

    def resolved(ref: Any, where: str) -> Any:
        if not isinstance(ref, str) or ref not in KNOWN_MODELS or ref in names:
            return ref
        try:
            return GGUFModelSpec(gguf=known_model_path(ref))
        except BaseModelError as error:
            raise ManifestError(f"{where}: {error}") from None

    manifest.base_model = resolved(manifest.base_model, "field 'base_model'")
    for stage in manifest.stages:
        stage.model = resolved(stage.model, f"stage {stage.name!r}: field 'model'")
        stage.teacher = resolved(stage.teacher, f"stage {stage.name!r}: field 'teacher'")


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _check_model_path(model: str, where: str) -> None:
    """A model named by path must be a model directory; a name that is no path must read as an HF hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ManifestError(f"{where}: {model} is a directory without config.json, not a saved model")
        return
    if path.exists():
        raise ManifestError(f"{where}: {model} is a file; a model is a directory (save_pretrained) or an HF hub id")
    if model.startswith((".", "/", "~")) or not HUB_ID.match(model):
        raise ManifestError(f"{where}: {model} does not exist, and is not an HF hub id (organisation/name)")


def _check_rewards(stage: StageSpec, columns: set[str], earlier: dict[str, StageSpec], all_names: list[str]) -> None:
    if stage.declared.rewards == "needed" and not stage.rewards:
        raise ManifestError(f"stage {stage.name!r}: field 'rewards': a {stage.kind} stage needs at least one reward")
    names = [reward.name for reward in stage.rewards]
    for index, reward in enumerate(stage.rewards):
        where = f"stage {stage.name!r}: field 'rewards[{index}]' ({reward.name})"
        if names.index(reward.name) != index:
            raise ManifestError(
                f"{where}: a second reward named {reward.name!r}; a reward's name is its identity in TRL's logs, the "
                "curriculum's signal and the metrics: combine them into one, or wrap one under another name"
            )
        model = reward.options.get("model")
        if isinstance(model, str):
            if model in earlier:
                if not earlier[model].declared.produces_model:
                    raise ManifestError(f"{where}: option 'model': stage {model!r} produces no model")
            elif model in all_names:
                raise ManifestError(f"{where}: option 'model': stage {model!r} comes later; a reward can only use an earlier stage's model")
            else:
                producers = [name for name, spec in earlier.items() if spec.declared.produces_model]
                try:
                    _check_model_path(model, f"{where}: option 'model'")
                except ManifestError as error:
                    raise ManifestError(f"{error}; nor is it an earlier stage{suggest(model, producers)}") from None
        try:
            rewards.check(reward.name, reward.options, columns)
        except rewards.RewardSpecError as error:
            raise ManifestError(f"{where}: {error}") from None


def _check_curriculum(stage: StageSpec, columns: set[str]) -> None:
    """The `curriculum:` block is validated by its own schema (stages/arguments.py), against the data's columns."""
    if stage.curriculum is None:
        return
    where = f"stage {stage.name!r}: field 'curriculum"
    if not stage.declared.accepts("curriculum"):
        raise ManifestError(f"{where}': {stage.kind} stages take no curriculum (only {_kinds_accepting('curriculum')})")
    curriculum = _validated_block(CurriculumArgs, stage.curriculum, where)
    # Under the current names from here on, so the stage's fingerprint is the same whichever name the manifest used.
    stage.curriculum = {RENAMED_CURRICULUM_OPTIONS.get(key, key): value for key, value in stage.curriculum.items()}
    reward_names = [reward.name for reward in stage.rewards]
    if curriculum.signal_reward is not None and curriculum.signal_reward not in reward_names:
        raise ManifestError(
            f"{where}.signal_reward': {curriculum.signal_reward!r} is not one of the stage's rewards"
            f"{suggest(curriculum.signal_reward, reward_names)}; rewards: {', '.join(reward_names)}"
        )
    problem = curriculum.check(stage.kind, stage.declared.curriculum_draws, columns, on_policy=stage.on_policy)
    if problem:
        raise ManifestError(f"{where}': {problem}")
    if stage.declared.curriculum_draws == "prompts" and not reward_names and curriculum.strategy not in SCORELESS_STRATEGIES:
        raise ManifestError(f"stage {stage.name!r}: field 'rewards': strategy {curriculum.strategy!r} reads the model's pass rate on its own "
                            f"samples, which the stage's rewards score; list one (or use {' or '.join(SCORELESS_STRATEGIES)})")


def _check_relift(stage: StageSpec, columns: set[str]) -> None:
    """The `relift:` block is validated by its own schema (stages/arguments.py), against the data's columns and rewards."""
    if stage.relift is None:
        return
    where = f"stage {stage.name!r}: field 'relift"
    if not stage.declared.accepts("relift"):
        raise ManifestError(f"{where}': {stage.kind} stages take no relift block (only {_kinds_accepting('relift')}: it replays "
                            "demonstrations of failed GRPO groups)")
    relift = _validated_block(ReliftArgs, stage.relift, where)
    problem = relift.check(columns, [reward.name for reward in stage.rewards], stage.world_size)
    if problem:
        field, message = problem
        raise ManifestError(f"{where}.{field}': {message}")
    profile = launch.profile_settings(stage.launch.profile)
    if profile.get("distributed_type") == "DEEPSPEED" or profile.get("mixed_precision") == "fp16":
        raise ManifestError(f"stage {stage.name!r}: field 'launch.profile': relift runs on one process or DDP in fp32 or bf16; "
                            f"profile {stage.launch.profile!r} is DeepSpeed or fp16 (its SFT step runs its own optimizer, outside DeepSpeed and without a loss scaler)")


BlockModel = TypeVar("BlockModel", bound=BaseModel)


def _validated_block(schema: type[BlockModel], raw: dict[str, Any], where: str) -> BlockModel:
    """A stage's block (`curriculum:`, `relift:`) validated by its schema; the first problem as one line naming
    the field under `where` (with a suggestion for a misspelt key)."""
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = "".join(f".{part}" for part in first["loc"])  # none for a problem of the whole block
        hint = suggest(str(first["loc"][-1]), schema.model_fields) if first["type"] == "extra_forbidden" else ""
        raise ManifestError(f"{where}{key}': {first['msg'].removeprefix('Value error, ')}{hint}") from None


def _kinds_accepting(block: str) -> str:
    """The built-in kinds that accept `block`, for a message refusing it (plugins declare their own)."""
    return ", ".join(name for name, kind in BUILTIN_KINDS.items() if kind.accepts(block))


def _one_of(value: str, known: list[str], what: str) -> str:
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}{suggest(value, known)}; {what}s: {', '.join(known)}")
    return value


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
        return f"{prefix}field '{field}': unknown key{suggest(str(location[-1]), owner.model_fields)}"
    if first["type"] == "missing":
        return f"{prefix}field '{field}': required"
    message = first["msg"].removeprefix("Value error, ")
    return f"{prefix}field '{field}': {message} (got {first.get('input')!r})"


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in {"str", "int", "float"} or part[:1].isupper())
