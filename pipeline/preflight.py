"""Before anything launches: every stage that will run gets its real trainer config built once.

The manifest's own checks (pipeline/manifest.py) need no torch. What only TRL knows (its configs'
fields, types and `__post_init__` checks, the trainers' batch arithmetic) is asked of one subprocess,
`python -m stages.preflight`, for all the stages that will run at once; stages the ledger says are
done with the same fingerprint are not asked about. A stage whose check passed is remembered in a
cache keyed by what the check reads (the stage's kind, args, peft, rewards, curriculum, on-policy
block and world size), by the installed versions of the libraries that do the checking, by gradus's
version and by the content of every gradus package the check runs (all of `stages`, what it imports of
`rewards`, `data_recipes` and `launch`, and a plugin kind's module), so an unchanged manifest is planned
again without importing TRL at all. Upgrading trl, transformers, accelerate, peft, torch or gradus, or
editing any code the check runs, invalidates it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import launch
from launch.atomic import write_atomically
from pipeline.manifest import ManifestError, load_manifest
from pipeline.plan import Plan, PlannedStage, make_plan
from stages.kinds import BUILTIN_KINDS, stage_kind

CACHE_SIZE = 2000
CHECKED_BY = ("gradus", "trl", "transformers", "accelerate", "peft", "torch")
REPO = Path(__file__).resolve().parents[1]
CHECKED_PACKAGES = ("stages", "rewards", "data_recipes", "launch")
"""The packages whose code the preflight subprocess runs (pipeline is not among them: it only asks)."""


def cache_path() -> Path:
    """`$GRADUS_CACHE_DIR/preflight.json`, by default under `$XDG_CACHE_HOME` (or ~/.cache)/gradus."""
    root = os.environ.get("GRADUS_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gradus"
    return Path(root) / "preflight.json"


def checked_plan(manifest_path: str | Path) -> Plan:
    """The plan of a manifest whose every stage passed every check, the preflight's included."""
    plan = make_plan(load_manifest(manifest_path))
    check(plan.stages)
    return plan


def check(stages: Iterable[PlannedStage]) -> None:
    """Raise ManifestError (one line: the stage and the field) for the first stage TRL would refuse."""
    pending = [stage for stage in stages if stage_kind(stage.kind).trainer]
    if not pending:
        return
    known = _read_cache()
    keys = {stage.name: _key(stage) for stage in pending}
    unchecked = [stage for stage in pending if keys[stage.name] not in known]
    if not unchecked:
        return
    with tempfile.TemporaryDirectory(prefix="gradus-preflight-") as scratch:
        files = []
        for stage in unchecked:
            path = Path(scratch) / f"{stage.name}.yaml"
            stage.resolved.write(path)
            files.append(str(path))
        result_path = Path(scratch) / "result.json"
        finished = subprocess.run(
            [sys.executable, "-m", "stages.preflight", *files, "--out", str(result_path)],
            capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"},
        )
        if finished.returncode != 0 or not result_path.is_file():
            last = (finished.stderr.strip().splitlines() or ["no output"])[-1]
            raise ManifestError(f"the preflight check of the trainer configs crashed: {last}")
        problems = json.loads(result_path.read_text())["problems"]
    failed = {problem["stage"] for problem in problems}
    _write_cache([*known, *(keys[stage.name] for stage in unchecked if stage.name not in failed)])
    if problems:
        first = problems[0]
        raise ManifestError(f"stage {first['stage']!r}: field '{first['field']}': {first['message']}")


def _key(stage: PlannedStage) -> str:
    """What the preflight's verdict on a stage depends on."""
    resolved = stage.resolved
    what_is_checked = resolved.model_dump(mode="json", include={"kind", "args", "peft", "rewards", "curriculum", "relift", "on_policy", "num_processes"})
    what_is_checked["eval_data"] = resolved.eval_data is not None
    payload = {"stage": what_is_checked, "libraries": _library_versions(), "gpu": launch.has_gpu(),
               "checks": checks_digest(REPO), "kind_code": _plugin_kind_digest(stage.kind)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in CHECKED_BY:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def checks_digest(repo: Path) -> str:
    """The content of every Python file of CHECKED_PACKAGES under `repo`, with their paths: a whole package,
    not a list of its files, so no module the check comes to import can be forgotten (a list once was)."""
    digest = hashlib.sha256()
    for package in CHECKED_PACKAGES:
        for path in sorted((repo / package).rglob("*.py")):
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _plugin_kind_digest(kind: str) -> str | None:
    """A plugin kind's module (whose `trainer_args` and `preflight` the check runs) by its content; None for a built-in."""
    if kind in BUILTIN_KINDS:
        return None
    spec = importlib.util.find_spec(stage_kind(kind).module)
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    return hashlib.sha256(origin.read_bytes()).hexdigest() if origin is not None and origin.is_file() else None


def _read_cache() -> list[str]:
    try:
        return list(json.loads(cache_path().read_text())["passed"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _write_cache(passed: list[str]) -> None:
    """The newest CACHE_SIZE verdicts, best effort (a read-only home only costs the next plan its
    speed), written atomically."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({"passed": list(dict.fromkeys(passed))[-CACHE_SIZE:]}))
    except OSError:
        pass
