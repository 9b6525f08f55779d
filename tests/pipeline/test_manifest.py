"""Every validation error is one line naming the stage and the field, and nothing is launched."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.manifest import ManifestError, load_manifest
from pipeline.preflight import checked_plan
from tests.conftest import tiny_manifest, write_manifest


def error_for(tmp_path: Path, mutate) -> str:
    manifest = tiny_manifest(tmp_path / "run")
    mutate(manifest)
    with pytest.raises(ManifestError) as caught:
        checked_plan(write_manifest(tmp_path / "m.yaml", manifest))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_valid_manifest_loads(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", tiny_manifest(tmp_path / "run")))
    assert [stage.name for stage in manifest.stages] == ["sft", "eval"]


def test_unknown_top_level_key(tmp_path):
    message = error_for(tmp_path, lambda m: m.update(sedd=3))
    assert "'sedd'" in message and "unknown key" in message and "did you mean 'seed'" in message


def test_unknown_stage_key(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][0].update(arg={}))
    assert message.startswith("stage 'sft'") and "'arg'" in message and "did you mean 'args'" in message


def test_unknown_trainer_arg_gets_suggestion(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][0]["args"].update(learnig_rate=1e-3))
    assert "stage 'sft'" in message and "args.learnig_rate" in message
    assert "SFTConfig" in message and "did you mean 'learning_rate'" in message


def test_wrong_type_of_trainer_arg(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][0]["args"].update(max_steps="many"))
    assert "args.max_steps" in message and "'many'" in message


def test_wrong_type_of_stage_field(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][0].update(launch={"profile": "single", "num_processes": "two"}))
    assert "stage 'sft'" in message and "launch.num_processes" in message


def test_unknown_kind(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][0].update(kind="sfft"))
    assert "stage 'sft'" in message and "field 'kind'" in message and "did you mean 'sft'" in message


def test_model_naming_missing_stage(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][1].update(model="sfr"))
    assert "stage 'eval'" in message and "field 'model'" in message and "did you mean 'sft'" in message


def test_model_naming_later_stage(tmp_path):
    def reorder(manifest):
        manifest["stages"][0]["model"] = "eval2"
        manifest["stages"].append(copy.deepcopy(manifest["stages"][0]) | {"name": "eval2", "model": "base"})

    message = error_for(tmp_path, reorder)
    assert "stage 'sft'" in message and "comes later" in message


def test_model_naming_a_stage_without_model(tmp_path):
    def chain_after_eval(manifest):
        manifest["stages"].append(copy.deepcopy(manifest["stages"][0]) | {"name": "sft2", "model": "eval"})

    assert "produces no model" in error_for(tmp_path, chain_after_eval)


def test_duplicate_names(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][1].update(name="sft", model="base"))
    assert "duplicate" in message and "'sft'" in message


def test_missing_data_file(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][1].update(data={"recipe": "jsonl", "path": str(tmp_path / "nope.jsonl")}))
    assert "stage 'eval'" in message and "field 'data'" in message and "does not exist" in message


def test_missing_column(tmp_path):
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text('{"question": "1+1", "solution": "2"}\n')
    message = error_for(tmp_path, lambda m: m["stages"][1].update(data={"recipe": "jsonl", "path": str(data_file)}))
    assert "stage 'eval'" in message and "'prompt'" in message and "question" in message


def test_renamed_column_not_in_file(tmp_path):
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text('{"question": "1+1", "answer": "2"}\n')
    spec = {"recipe": "jsonl", "path": str(data_file), "columns": {"prompt": "questoin"}}
    message = error_for(tmp_path, lambda m: m["stages"][1].update(data=spec))
    assert "questoin" in message and "did you mean 'question'" in message


def test_unknown_recipe_option(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][0]["data"].update(level=[1]))
    assert "stage 'sft'" in message and "'level'" in message and "did you mean 'levels'" in message


def test_unknown_launch_profile(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][0].update(launch={"profile": "zero5"}))
    assert "stage 'sft'" in message and "launch.profile" in message and "zero5" in message


def test_field_owned_by_gradus(tmp_path):
    message = error_for(tmp_path, lambda m: m["stages"][0]["args"].update(output_dir="/tmp/x"))
    assert "args.output_dir" in message and "set by gradus" in message


def test_cli_reports_one_line_and_touches_nothing(tmp_path):
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"][0]["args"]["learnig_rate"] = 1.0
    path = write_manifest(tmp_path / "m.yaml", manifest)
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "learnig_rate" in result.stdout and len(result.stdout.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_does_not_import_torch_for_status(tmp_path):
    code = "import sys; from pipeline import cli; cli.main(['status', sys.argv[1]]); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.stdout.strip().endswith("False")
