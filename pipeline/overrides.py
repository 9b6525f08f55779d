"""Command-line overrides, `gradus run|plan MANIFEST key.path=value ...`, and the manifest a run ran.

An override edits the manifest's raw mapping before validation, so it is checked, planned and
fingerprinted exactly as the same edit to the file would be: an override equal to the file's value
changes nothing, any other one changes the stage's fingerprint like an edit. Paths are dotted keys;
in a list, an item is addressed by its `name` (stages, rewards) or its index:

    seed=1
    stages.sft.args.learning_rate=1e-3
    stages.grpo.rewards.math_accuracy.weight=0.5
    stages.sft.launch={profile: ddp, num_processes: 2}

Values are YAML, read by the same loader as manifest files (`load_yaml`, where `1e-3` is a number).
A path must exist up to its last key; the last key may be new, and a missing block the schema
knows (`launch`, `decontamination`, ...) is created. Anything else is a one-line error naming the
override, with the closest key when one is close.

`gradus run` saves what it runs, overrides applied, as `run_dir/manifest.yaml`: running that file
again (from the same directory, since its paths are relative to it) reproduces the run.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel

from data_recipes import suggest
from launch.atomic import write_atomically
from pipeline.errors import ManifestError

RESOLVED_MANIFEST = "manifest.yaml"


class ManifestLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-3` as a number as YAML 1.2 does (PyYAML's YAML 1.1 reads it as
    a string, which a trainer would then get as its learning rate)."""


ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=ManifestLoader)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], schema: type[BaseModel]) -> dict[str, Any]:
    """A copy of the raw manifest with each `key.path=value` applied in order; `schema` (the manifest's, passed
    in so this module need not import the one that imports it) says which keys exist and which blocks it may create."""
    result = copy.deepcopy(raw)
    for override in overrides:
        path, equals, text = override.partition("=")
        if not equals or not path or path.startswith("-"):
            raise ManifestError(f"{override!r}: not an option, nor an override key.path=value (e.g. stages.sft.args.learning_rate=1e-3)")
        try:
            value = load_yaml(text)
        except yaml.YAMLError as error:
            raise ManifestError(f"override {override!r}: the value is not valid YAML: {getattr(error, 'problem', error)}") from None
        _set(result, path.split("."), value, override, schema)
    return result


def resolved_manifest_text(manifest_path: Path, overrides: Sequence[str], schema: type[BaseModel]) -> str:
    """What `run_dir/manifest.yaml` holds: the manifest with its overrides applied, and where it came from."""
    raw = apply_overrides(load_yaml(manifest_path.read_text()), overrides, schema)
    applied = f" with {' '.join(overrides)}" if overrides else ""
    return (
        f"# The manifest of this run: {manifest_path}{applied}.\n"
        f"# Its paths are relative to {Path.cwd()}; run it again from there with `gradus run <this file>`.\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )


def save_resolved_manifest(run_dir: Path, text: str) -> None:
    """Write `run_dir/manifest.yaml` atomically (a kill never leaves half of it)."""
    write_atomically(run_dir / RESOLVED_MANIFEST, text)


def _set(root: dict[str, Any], parts: list[str], value: Any, override: str, manifest_schema: type[BaseModel]) -> None:
    node: Any = root
    schema: type[BaseModel] | None = manifest_schema
    walked: list[str] = []
    while True:
        where = ".".join(walked) or "the manifest"
        if isinstance(node, list):
            index, used = _list_item(node, parts, where, override)
            walked.append(".".join(parts[:used]))
            parts = parts[used:]
            if not parts:
                node[index] = value
                return
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise ManifestError(f"override {override!r}: {where} is {node!r}, not a mapping with keys")
        key = parts[0]
        fields = schema.model_fields if schema is not None else {}
        if len(parts) == 1:
            if key not in node and schema is not None and schema.model_config.get("extra") == "forbid" and key not in fields:
                raise ManifestError(f"override {override!r}: {where} has no field {key!r}{suggest(key, fields)}")
            node[key] = value
            return
        if key not in node:
            if key not in fields:
                raise ManifestError(f"override {override!r}: no key {key!r} in {where}{suggest(key, [*node, *fields])}")
            node[key] = {}
        node, schema = node[key], _field_schema(schema, key)
        walked.append(key)
        parts = parts[1:]


def _list_item(items: list[Any], parts: list[str], where: str, override: str) -> tuple[int, int]:
    """The index of the item `parts` starts with (by name, which may contain dots, or by index), and
    how many parts that took."""
    names = [item.get("name") for item in items if isinstance(item, dict)]
    for used in range(len(parts), 0, -1):  # the longest dotted name first: a stage may be named "sft.v2"
        name = ".".join(parts[:used])
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("name") == name:
                return index, used
    if parts[0].isdigit() and int(parts[0]) < len(items):
        return int(parts[0]), 1
    listed = ", ".join(str(name) for name in names if name is not None) or f"indices 0-{len(items) - 1}"
    raise ManifestError(f"override {override!r}: nothing named {parts[0]!r} in {where}{suggest(parts[0], [str(n) for n in names])}; {where}: {listed}")


def _field_schema(schema: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The pydantic model of field `key` (or of the items of a list field), if it has one."""
    if schema is None or key not in schema.model_fields:
        return None
    annotation = schema.model_fields[key].annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        for inner in (candidate, *typing.get_args(candidate)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None
