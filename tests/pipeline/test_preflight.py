"""`gradus plan` refuses, before any stage runs, what a stage or TRL would refuse at its launch.

Each case drives the real CLI on a tiny manifest: exit code 2, one line naming the stage and the field,
no traceback, nothing under run_dir. The preflight builds the real TRL configs (no mocks), in one
process for all stages, and remembers what passed.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import preflight
from pipeline.manifest import load_manifest
from pipeline.plan import make_plan
from pipeline.runner import stage_environment
from stages.kinds import stage_kind
from tests.conftest import gradus, tiny_manifest, write_manifest

GRPO = {
    "name": "grpo", "kind": "grpo", "model": "sft",
    "data": {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 64},
    "rewards": [{"name": "math_accuracy"}],
    "args": {"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 16,
             "gradient_checkpointing": False, "report_to": "none"},
}


def chain(tmp_path: Path) -> dict:
    """sft -> eval -> grpo: the grpo stage launches only after SFT has trained."""
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"].append(copy.deepcopy(GRPO))
    return manifest


def refused(tmp_path: Path, manifest: dict) -> str:
    result = gradus("plan", str(write_manifest(tmp_path / "m.yaml", manifest)))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert not (tmp_path / "run").exists()
    return output


def stage(manifest: dict, name: str) -> dict:
    return next(spec for spec in manifest["stages"] if spec["name"] == name)


def changed(manifest: dict, where: str, change: dict) -> dict:
    target = stage(manifest, where)
    for key, value in change.items():
        target[key] = {**target.get(key, {}), **value} if key == "args" else value
    return manifest


def test_a_grpo_config_trl_would_refuse_after_sft_trained_is_refused_by_plan(tmp_path):
    """Before the preflight, this manifest planned cleanly, trained its sft stage, and failed at grpo's launch."""
    manifest = changed(chain(tmp_path), "grpo", {"args": {"num_generations": 3}})
    message = refused(tmp_path, manifest)
    assert message == "gradus: error: stage 'grpo': field 'args.num_generations': generation_batch_size (8) must be divisible by num_generations (3)."


@pytest.mark.parametrize("where, change, expected", [
    # What TRL's configs check when they are built (__post_init__), against the launched world size.
    ("grpo", {"launch": {"profile": "ddp", "num_processes": 3}, "args": {"generation_batch_size": 8}},
     "stage 'grpo': field 'args.generation_batch_size': generation_batch_size (8) must be divisible by the global batch size (24)"),
    ("grpo", {"args": {"num_generations": 1, "per_device_train_batch_size": 1}}, "GRPO requires at least 2 generations per prompt"),
    ("sft", {"args": {"learnig_rate": 1e-3}}, "stage 'sft': field 'args.learnig_rate': not a field of SFTConfig (did you mean 'learning_rate'?)"),
    ("sft", {"args": {"max_steps": "many"}}, "stage 'sft': field 'args.max_steps': 'many' is not a valid int"),
    ("sft", {"args": {"eval_strategy": "steps"}}, "stage 'sft': field 'args.eval_strategy': 'steps' needs eval_data"),
    # What the trainers check at init, and what gradus's wiring needs of the config.
    ("grpo", {"args": {"reward_weights": [1.0, 0.5]}}, "stage 'grpo': field 'args.reward_weights': 2 weights for 1 rewards"),
    ("grpo", {"peft": {"r": 4, "target_modules": ["q_proj", "lm_head"]}}, "stage 'grpo': field 'peft.target_modules'"),
    ("grpo", {"curriculum": {"strategy": "band", "difficulty_column": None}, "args": {"remove_unused_columns": True}},
     "stage 'grpo': field 'args.remove_unused_columns': curriculum: a curriculum needs false"),
    ("grpo", {"relift": {"sft_batch_size": 4}, "args": {"remove_unused_columns": True}},
     "stage 'grpo': field 'args.remove_unused_columns': relift: relift needs false"),
    ("grpo", {"relift": {"sft_batch_size": 4}, "args": {"fp16": True}}, "stage 'grpo': field 'args.fp16'"),
    ("grpo", {"args": {"remove_unused_columns": True}}, "stage 'grpo': field 'args.remove_unused_columns': the stage's rewards read data columns"),
])
def test_what_trl_would_refuse_at_launch_is_a_preflight_problem(tmp_path, where, change, expected):
    """The same preflight `gradus plan` starts, in this process (TRL imported once for all cases)."""
    from stages.preflight import check

    plan = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", changed(chain(tmp_path), where, change))))
    problems = [problem for planned in plan.stages if stage_kind(planned.kind).trainer and (problem := check(planned.resolved))]
    assert len(problems) == 1
    assert expected in f"stage {problems[0].stage!r}: field '{problems[0].field}': {problems[0].message}"


@pytest.mark.parametrize("change, expected", [
    # What each stage kind checks of its own args.
    (lambda m: stage(m, "eval")["args"].update(num_samples=4), "stage 'eval': field 'args': invalid num_samples=4 (several samples per problem need temperature > 0)"),
    (lambda m: stage(m, "eval")["args"].update(top_p=0), "stage 'eval': field 'args': invalid top_p=0"),
    (lambda m: stage(m, "eval")["args"].update(k="four"), "stage 'eval': field 'args.k'"),
    # Files and directories the manifest names.
    (lambda m: m.update(base_model="./no/such/model"), "field 'base_model': ./no/such/model does not exist"),
    (lambda m: stage(m, "sft")["data"].update(recipe="jsonl", path="missing.jsonl"), "stage 'sft': field 'data'"),
    # Reward names are identities.
    (lambda m: stage(m, "grpo")["rewards"].append({"name": "math_accuracy", "weight": 0.5}), "stage 'grpo': field 'rewards[1]' (math_accuracy): a second reward named 'math_accuracy'"),
    (lambda m: stage(m, "grpo")["rewards"].append({"name": "prm", "model": "sfr"}), "option 'model': sfr does not exist, and is not an HF hub id (organisation/name); nor is it an earlier stage (did you mean 'sft'?)"),
])
def test_what_a_stage_would_refuse_is_refused_by_plan(tmp_path, change, expected):
    manifest = chain(tmp_path)
    change(manifest)
    assert expected in refused(tmp_path, manifest)


def test_a_base_model_directory_must_hold_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    manifest = chain(tmp_path) | {"base_model": str(tmp_path / "empty")}
    assert "is a directory without config.json" in refused(tmp_path, manifest)


def test_a_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("a file")
    manifest = chain(tmp_path) | {"run_dir": str(tmp_path / "taken")}
    result = gradus("plan", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 2 and "field 'run_dir'" in result.stdout and "is not a directory" in result.stdout


def test_preflight_runs_once_for_all_stages_and_remembers_what_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADUS_CACHE_DIR", str(tmp_path / "cache"))
    plan = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", chain(tmp_path))))
    preflight.check(plan.stages)
    passed = json.loads(preflight.cache_path().read_text())["passed"]
    assert len(passed) == 2  # sft and grpo; the eval stage is checked in-process, without TRL
    keys = {stage.name: preflight._key(stage) for stage in plan.stages if stage_kind(stage.kind).trainer}
    assert set(keys.values()) == set(passed)
    # Another TRL would judge the configs afresh.
    monkeypatch.setattr(preflight, "version", lambda name: "0.0.0")
    assert {preflight._key(stage) for stage in plan.stages if stage_kind(stage.kind).trainer}.isdisjoint(passed)


def modules_the_preflight_runs(tmp_path: Path) -> list[Path]:
    """The gradus source files a real preflight (every trainer kind, curriculum and relift included) imported."""
    manifest = chain(tmp_path)
    manifest["stages"].append(copy.deepcopy(GRPO) | {"name": "grpo2", "curriculum": {"strategy": "lp"}, "relift": {"sft_batch_size": 4},
                                                     "args": {**GRPO["args"], "remove_unused_columns": False}})
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "1+1=", "chosen": "2", "rejected": "3"}) + "\n")
    (tmp_path / "steps.jsonl").write_text(json.dumps({"prompt": "1+1=", "steps": ["1+1", "2"], "labels": [1, 1]}) + "\n")
    manifest["stages"] += [{"name": "dpo", "kind": "dpo", "data": {"recipe": "jsonl", "path": str(tmp_path / "pairs.jsonl")}, "args": {"max_steps": 1}},
                           {"name": "prm", "kind": "prm", "data": {"recipe": "jsonl", "path": str(tmp_path / "steps.jsonl")}, "args": {"max_steps": 1}}]
    plan = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))
    files = []
    for planned in (planned for planned in plan.stages if stage_kind(planned.kind).trainer):
        planned.resolved.write(tmp_path / f"{planned.name}.yaml")
        files.append(str(tmp_path / f"{planned.name}.yaml"))
    code = ("import sys; from stages.preflight import main; main(sys.argv[1:]);"
            "print('\\n'.join(getattr(module, '__file__', None) or '' for module in list(sys.modules.values())))")
    result = subprocess.run([sys.executable, "-c", code, *files, "--out", str(tmp_path / "out.json")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "out.json").read_text())["problems"] == []
    loaded = {Path(line) for line in result.stdout.splitlines() if line.startswith(str(preflight.REPO) + "/")}
    # gradus's own modules: not its tests, nor a virtual environment inside the checkout (CI makes .venv there).
    return sorted(path for path in loaded if path.relative_to(preflight.REPO).parts[0] in preflight.CHECKED_PACKAGES)


def test_editing_any_module_the_preflight_runs_expires_its_cached_verdicts(tmp_path):
    """The cache key covers the content of every gradus module the check imports (a list of files once
    missed sft.py, grpo.py, dpo.py and prm.py, whose code the check runs), and gradus's own version."""
    ran = modules_the_preflight_runs(tmp_path)
    names = {str(path.relative_to(preflight.REPO)) for path in ran}
    assert {"stages/sft.py", "stages/grpo.py", "stages/dpo.py", "stages/prm.py", "stages/relift.py", "stages/trl_hooks.py",
            "stages/curriculum/training.py", "stages/curriculum/dynamic_sampling.py"} <= names
    copy_root = tmp_path / "copy"
    for package in preflight.CHECKED_PACKAGES:
        shutil.copytree(preflight.REPO / package, copy_root / package)
    before = preflight.checks_digest(copy_root)
    assert before == preflight.checks_digest(preflight.REPO)
    for path in ran:
        edited = copy_root / path.relative_to(preflight.REPO)
        original = edited.read_bytes()
        edited.write_bytes(original + b"\n# edited\n")
        assert preflight.checks_digest(copy_root) != before, path
        edited.write_bytes(original)
    assert "gradus" in preflight.CHECKED_BY


def probe(*cli_args: str) -> list[str]:
    """The heavy modules a CLI command imported in its own process."""
    code = (
        "import sys; from pipeline.cli import main; code = main(sys.argv[1:]);"
        "print(sorted({'torch', 'transformers', 'trl', 'datasets'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code, *cli_args], capture_output=True, text=True, env=os.environ)
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_plan_run_and_status_import_no_torch_transformers_or_trl(tmp_path):
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"] = [stage(manifest, "eval") | {"model": "base", "args": {"max_new_tokens": 4, "batch_size": 40}}]
    path = write_manifest(tmp_path / "m.yaml", manifest)
    assert gradus("run", str(path)).returncode == 0
    assert probe("plan", str(path)) == "[]"
    assert probe("run", str(path)) == "[]"  # every stage done: skipped, and no preflight either
    assert probe("status", str(tmp_path / "run")) == "[]"


def test_a_cpu_stage_gets_the_cores_shared_among_its_processes_unless_the_user_says(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    manifest = chain(tmp_path)
    stage(manifest, "grpo")["launch"] = {"profile": "ddp", "num_processes": 2}
    plan = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))
    cores = len(os.sched_getaffinity(0))
    by_name = {planned.name: planned for planned in plan.stages}
    assert stage_environment(by_name["sft"])["OMP_NUM_THREADS"] == str(cores)
    assert stage_environment(by_name["sft"])["OMP_WAIT_POLICY"] == "PASSIVE"
    assert stage_environment(by_name["grpo"])["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "OMP_NUM_THREADS" not in stage_environment(by_name["sft"])  # the user's own setting goes through
