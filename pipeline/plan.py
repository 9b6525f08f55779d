"""From a validated manifest to a plan: each stage's resolved stage file, fingerprint and command.

Everything here is a pure function of the manifest (and the data files it names), so `gradus plan`
can print exactly what `gradus run` will execute, and tests can check commands without launching.

A stage's fingerprint is the hash of what determines its output: its resolved spec (kind, data,
args, peft, rewards), the manifest seed, the identity of its data (file hashes, generator
options), of its rewards' code (`reward_identity`), and the fingerprint of the stage it starts from
(or the identity of the base model, `model_identity`). A change anywhere upstream therefore changes
every fingerprint downstream. Launch settings are left out on purpose: they say where a stage runs,
not what it computes, so a job requeued on other nodes still resumes (the runner refuses a resume on
another number of processes, which would change what the resume skips).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import shlex
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import data_recipes
import launch
from data_recipes.decontamination import decontamination_identity
from rewards.registry import BUILTIN_REWARDS, resolve
from pipeline.base_models import cached_hub_revision
from pipeline.manifest import GGUFModelSpec, Manifest, ModelRef, StageSpec, TinyModelSpec
from stages.arguments import RENAMED_CURRICULUM_OPTIONS, CurriculumArgs, DataBlock, ReliftArgs, StageFile

BASE_MODEL_DIR = "base_model"
MODELS_DIR = "models"  # the outside models a stage names that gradus makes (tiny specs, GGUF files), one directory each


@dataclasses.dataclass
class PlannedStage:
    name: str
    kind: str
    fingerprint: str
    stage_dir: Path
    model_path: str
    upstream: str | None  # the stage whose model this one starts from (None: the base model, or an outside one)
    depends_on: list[str]  # every earlier stage whose output it reads (upstream included)
    resolved: StageFile  # the content of stage.yaml
    command: list[str]  # what the runner executes (for a multi-node stage: srun over the nodes)
    node_commands: list[list[str]]  # multi-node only: what each node runs, rank by rank
    env: dict[str, str]  # launch.env: set for the stage's processes, on top of the runner's environment
    models_to_make: list[tuple[Path, dict[str, Any]]] = dataclasses.field(default_factory=list)
    """Models the runner makes before launching the stage (base, tiny or GGUF): (directory, what `stages.models` makes)."""
    model_label: str = "base"  # what the stage starts from, as `gradus plan` and the report show it

    @property
    def stage_file(self) -> Path:
        return self.stage_dir / "stage.yaml"


@dataclasses.dataclass
class Plan:
    run_dir: Path
    base_model: str | TinyModelSpec | GGUFModelSpec
    seed: int
    stages: list[PlannedStage]


def fingerprint(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A stage's `model` or `teacher` as the stage loads it and as its fingerprint sees it."""

    path: str
    identity: Any  # an earlier stage's fingerprint, or what the model is (`base_identity` without where a file lies)
    stage: PlannedStage | None = None  # the earlier stage whose model it is
    make: tuple[Path, dict[str, Any]] | None = None  # made by the runner first: (directory, what stages.models makes)
    label: str = "base"


def _resolve_model(ref: ModelRef, base: ResolvedModel, planned: dict[str, PlannedStage], run_dir: Path, seed: int) -> ResolvedModel:
    """Where the model a stage names is, and what it is: the base model, an earlier stage's, or an outside one
    (a path or hub id as it is; a tiny spec or GGUF file made once into `run_dir/models/<its identity>`)."""
    if ref == "base":
        return base
    if isinstance(ref, str) and ref in planned:
        return ResolvedModel(str(planned[ref].stage_dir / "model"), planned[ref].fingerprint, stage=planned[ref], label=ref)
    if isinstance(ref, (TinyModelSpec, GGUFModelSpec)):
        identity = base_identity(ref, seed)
        content = _content_identity(identity)
        directory = run_dir / MODELS_DIR / fingerprint(content)
        label = f"gguf:{ref.gguf.name}" if isinstance(ref, GGUFModelSpec) else "tiny:" + fingerprint(content)[:8]
        return ResolvedModel(str(directory), content, make=(directory, identity), label=label)
    local = Path(ref).expanduser()
    return ResolvedModel(str(local.resolve()) if local.exists() else ref, model_identity(ref), label=ref)


def _content_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """A made model's identity without where its GGUF file lies: a moved file reruns nothing."""
    return {key: value for key, value in identity.items() if key != "gguf"}


WHOLE_FILE_DIGEST_LIMIT = 1 << 20  # model files up to 1 MiB (configs, tokenizers) are hashed; larger ones by size and mtime


def base_identity(base_model: str | TinyModelSpec | GGUFModelSpec, seed: int) -> dict[str, Any]:
    """What the base model is: the tiny model by its spec and seed, a GGUF file by its content (so a moved file
    reruns nothing and a replaced one reruns everything), anything else by `model_identity`. For the models
    the runner makes (tiny, GGUF) this is also what `stages.models` is told to make."""
    if isinstance(base_model, TinyModelSpec):
        return {"tiny": base_model.model_dump(), "seed": seed}
    if isinstance(base_model, GGUFModelSpec):
        path = base_model.gguf.expanduser().resolve()
        return {"gguf": str(path), "sha256": data_recipes.file_sha256(path)}
    return model_identity(base_model)


def model_identity(model: str) -> dict[str, Any]:
    """What a base model named by a string is: a local directory by its files (config and tokenizer
    files by content, weight files by size and modification time, so a multi-GB checkpoint costs no
    read), a hub id by the revision the local HF cache resolved `main` to, where it has one."""
    path = Path(model).expanduser()
    if path.is_dir():
        files = {}
        for file in sorted(entry for entry in path.rglob("*") if entry.is_file()):
            stat = file.stat()
            key = str(file.relative_to(path))
            files[key] = data_recipes.file_sha256(file) if stat.st_size <= WHOLE_FILE_DIGEST_LIMIT else [stat.st_size, stat.st_mtime_ns]
        return {"model": model, "files": files}
    return {"model": model, "revision": cached_hub_revision(model)}


def reward_identity(name: str) -> dict[str, Any]:
    """What a reward's code is: a built-in by gradus's version, a plugin (entry point or module path) by
    the digest of the source file it is defined in. Code it imports from elsewhere is not seen."""
    if name in BUILTIN_REWARDS:
        return {"builtin": name, "gradus": _version("gradus")}
    target = resolve(name)
    source = inspect.getsourcefile(inspect.unwrap(target)) or inspect.getsourcefile(type(target))
    return {"plugin": name, "source": data_recipes.file_sha256(Path(source)) if source else None}


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _data_identity(spec: Any, planned: dict[str, "PlannedStage"]) -> dict[str, Any] | None:
    if spec is None:
        return None
    reading = data_recipes.stage_input(spec.recipe)
    if reading is not None:
        producer = planned[spec.model_extra["stage"]]
        return reading.identity(producer.name, producer.fingerprint)
    return data_recipes.identity(spec.recipe, spec.model_extra or {})


def _data_block(spec: Any, run_dir: Path) -> dict[str, Any] | None:
    """The data block as the stage reads it: a recipe reading an earlier stage's output gets the path in that
    stage's directory it reads (`data_recipes.StageInput`); a replay is `_replay_block`'s."""
    if spec is None:
        return None
    block = {"recipe": spec.recipe, **_jsonable(spec.model_extra or {})}
    reading = data_recipes.stage_input(spec.recipe)
    if reading is not None:
        block["path"] = str(run_dir / block["stage"] / reading.subdirectory)
    return block


def _replay_block(spec: DataBlock, planned: dict[str, "PlannedStage"]) -> dict[str, Any]:
    """A `replay` resolved to the replayed stage's data block as that stage reads it (its own replay left
    out), so the stage process reads only its own stage file."""
    if spec.replay is None:
        return {}
    source = planned[spec.replay.stage].resolved.data
    return {"replay": {"stage": spec.replay.stage, "fraction": spec.replay.fraction, "data": source.model_dump(mode="json", exclude={"replay"})}}


def _reward_block(reward: Any, planned: dict[str, "PlannedStage"]) -> dict[str, Any]:
    """A reward whose `model` option names an earlier stage gets that stage's model directory."""
    options = _jsonable(reward.options)
    if options.get("model") in planned:
        options["model"] = str(planned[options["model"]].stage_dir / "model")
    return {"name": reward.name, "weight": reward.weight, "options": options}


def _dependencies(spec: StageSpec, planned: dict[str, "PlannedStage"]) -> list[str]:
    """Every earlier stage whose output this one reads: its model and teacher, a stage_output dataset or scored
    samples, a reward's model; and a replayed stage, whose data (and fingerprint) it reads."""
    names = [ref for ref in (spec.model, spec.teacher) if isinstance(ref, str) and ref in planned]
    names += [block.model_extra["stage"] for block in (spec.data, spec.eval_data)
              if block is not None and data_recipes.stage_input(block.recipe) is not None]
    names += [spec.data.replay.stage] if spec.data.replay is not None else []
    names += [reward.options["model"] for reward in spec.rewards if reward.options.get("model") in planned]
    return list(dict.fromkeys(names))


def _fingerprinted_spec(spec: StageSpec) -> dict[str, Any]:
    """What the manifest says of the stage, for its fingerprint: paths gradus derives are left out (a moved run_dir
    keeps its fingerprints), unset blocks too (a gradus upgrade adding one reruns nothing), and renamed curriculum
    options are hashed under the names they had when runs were made (`RENAMED_CURRICULUM_OPTIONS`), so a rename
    reruns no one's stages."""
    payload = {key: value for key, value in spec.model_dump(mode="json", exclude={"name", "model", "teacher", "launch"}).items() if value is not None}
    if payload.get("curriculum"):
        old_name = {new: old for old, new in RENAMED_CURRICULUM_OPTIONS.items()}
        payload["curriculum"] = {old_name.get(key, key): value for key, value in payload["curriculum"].items()}
    return payload


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _distinct(values: Any) -> list[Any]:
    """The distinct JSON-like values, sorted by their JSON text."""
    unique = {json.dumps(value, sort_keys=True, default=str): value for value in values}
    return [unique[key] for key in sorted(unique)]


def make_plan(manifest: Manifest) -> Plan:
    run_dir = manifest.run_dir.resolve()
    base_model = manifest.base_model
    identity = base_identity(base_model, manifest.seed)
    if isinstance(base_model, (TinyModelSpec, GGUFModelSpec)):
        base = ResolvedModel(str(run_dir / BASE_MODEL_DIR), _content_identity(identity), make=(run_dir / BASE_MODEL_DIR, identity))
    else:
        local = Path(base_model).expanduser()
        base = ResolvedModel(str(local.resolve()) if local.exists() else base_model, identity)

    # Each distinct eval set once, in a fixed order: a second eval stage on the same data (best-of-n next
    # to greedy, say) or reordered eval stages change nothing a training stage removes, so rerun nothing.
    eval_sets = _distinct(_data_block(spec.data, run_dir) for spec in manifest.stages if spec.declared.evaluates)
    check = manifest.decontamination
    decontaminate = {"against": eval_sets, **check.model_dump(exclude={"enabled"})} if check.enabled and eval_sets else None

    planned: dict[str, PlannedStage] = {}
    eval_data = [spec.data for spec in manifest.stages if spec.declared.evaluates]
    for spec in manifest.stages:
        dependencies = _dependencies(spec, planned)
        model = _resolve_model(spec.model, base, planned, run_dir, manifest.seed)
        teacher = _resolve_model(spec.teacher, base, planned, run_dir, manifest.seed) if spec.teacher is not None else None
        model_path = model.path
        stage_dir = run_dir / spec.name
        resolved = StageFile(
            name=spec.name,
            kind=spec.kind,
            fingerprint="",  # below: the hash of what determines the output
            seed=manifest.seed,
            stage_dir=stage_dir,
            model_path=model_path,
            teacher_path=teacher.path if teacher else None,
            data={**_data_block(spec.data, run_dir), **_replay_block(spec.data, planned)},
            eval_data=_data_block(spec.eval_data, run_dir),
            args=_jsonable(spec.args),
            peft=_jsonable(spec.peft),
            rewards=[_reward_block(reward, planned) for reward in spec.rewards],
            on_policy=spec.on_policy,
            curriculum=CurriculumArgs.model_validate(spec.curriculum) if spec.curriculum is not None else None,
            relift=ReliftArgs.model_validate(spec.relift) if spec.relift is not None else None,
            decontaminate=decontaminate if spec.declared.produces_model else None,
            num_processes=spec.world_size,
        )
        what_determines_output = {
            # What the manifest says of the stage...
            "spec": _fingerprinted_spec(spec),
            "seed": manifest.seed,
            # What the overlap check reads of each eval set (its problems, not their rendering); the refusal
            # threshold changes no output. A stage_output set's producer is earlier (load_manifest checks).
            "decontaminate": (check.model_dump(exclude={"max_removed_fraction"}), _distinct(
                decontamination_identity(data.recipe, data.model_extra or {}, {name: stage.fingerprint for name, stage in planned.items()})
                for data in eval_data)) if resolved.decontaminate else None,
            # ...plus what its inputs are.
            "data": _data_identity(spec.data, planned),
            "eval_data": _data_identity(spec.eval_data, planned),
            # The model it starts from: an earlier stage by its fingerprint, a GGUF file by its content, not where it lies.
            "upstream": model.identity,
            "reward_code": [reward_identity(reward.name) for reward in spec.rewards],
            "dependencies": {name: planned[name].fingerprint for name in dependencies},
        }
        if teacher is not None:  # only when there is one: the fingerprints of stages without stay what they were
            what_determines_output["teacher"] = teacher.identity
        resolved.fingerprint = fingerprint(what_determines_output)
        planned[spec.name] = PlannedStage(
            name=spec.name,
            kind=spec.kind,
            fingerprint=resolved.fingerprint,
            stage_dir=stage_dir,
            model_path=model_path,
            upstream=model.stage.name if model.stage else None,
            depends_on=dependencies,
            resolved=resolved,
            command=srun_command(spec, stage_dir / "stage.yaml") if (spec.launch.num_machines or 1) > 1
            else launch_command(spec, stage_dir / "stage.yaml"),
            node_commands=node_commands(spec, stage_dir / "stage.yaml") if (spec.launch.num_machines or 1) > 1 else [],
            env=dict(spec.launch.env),
            models_to_make=[made.make for made in (model, teacher) if made is not None and made.make is not None],
            model_label=model.label,
        )
    return Plan(run_dir=run_dir, base_model=base_model, seed=manifest.seed, stages=list(planned.values()))


def accelerate_executable() -> str:
    """`accelerate` from the same environment as gradus, so an unactivated venv still works."""
    beside_python = Path(sys.executable).parent / "accelerate"
    return str(beside_python) if beside_python.exists() else (shutil.which("accelerate") or "accelerate")


MAIN_ADDR_VARIABLE = "$GRADUS_MAIN_ADDR"
DEFAULT_MAIN_PORT = 29500


def launch_command(spec: StageSpec, stage_file: Path, machine_rank: int | str | None = None) -> list[str]:
    """`accelerate launch --config_file launch/<profile>.yaml [overrides] -m <the kind's module> <stage file>`.

    With `machine_rank`, the flags one node of a multi-node stage needs are added.
    """
    command = [accelerate_executable(), "launch", "--config_file", str(launch.profile_path(spec.launch.profile))]
    for flag in ("num_processes", "num_machines", "main_process_port"):
        value = getattr(spec.launch, flag)
        if value is not None:
            command += [f"--{flag}", str(value)]
    if machine_rank is not None:
        command += ["--machine_rank", str(machine_rank), "--main_process_ip", spec.launch.main_process_ip or MAIN_ADDR_VARIABLE]
        if spec.launch.main_process_port is None:
            command += ["--main_process_port", str(DEFAULT_MAIN_PORT)]
    return command + ["-m", spec.declared.module, str(stage_file)]


def node_commands(spec: StageSpec, stage_file: Path) -> list[list[str]]:
    """One command per node of a multi-node stage (what each node runs; `gradus plan` prints them)."""
    return [launch_command(spec, stage_file, machine_rank=rank) for rank in range(spec.launch.num_machines or 1)]


def shell_line(words: list[str]) -> str:
    """A command as one shell line: every word quoted except `$VARIABLE`s, which must expand."""
    return " ".join(word if word.startswith("$") else shlex.quote(word) for word in words)


def srun_command(spec: StageSpec, stage_file: Path) -> list[str]:
    """A multi-node stage inside a SLURM allocation: one task per node, each filling in its own rank.

    The node command goes through `bash -c` so `$SLURM_PROCID` and `$GRADUS_MAIN_ADDR` expand on
    each node; `--label` prefixes each line of the stage log with the task (= machine rank) it came from.
    """
    script = shell_line(launch_command(spec, stage_file, machine_rank="$SLURM_PROCID"))
    machines = spec.launch.num_machines
    return ["srun", f"--nodes={machines}", f"--ntasks={machines}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--label",
            "bash", "-c", script]
