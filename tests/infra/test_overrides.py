"""`gradus run|plan MANIFEST key.path=value ...`: overrides edit the raw manifest before validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.manifest import Manifest, ManifestError, load_manifest
from pipeline.overrides import RESOLVED_MANIFEST, resolved_manifest_text, save_resolved_manifest
from pipeline.plan import make_plan
from tests.conftest import gradus, tiny_manifest, write_manifest


@pytest.fixture
def manifest_file(tmp_path) -> Path:
    manifest = tiny_manifest(tmp_path / "run")  # sft learning_rate 3e-3, then eval
    manifest["stages"].append({
        "name": "grpo.v2", "kind": "grpo", "model": "sft",
        "data": {"recipe": "synthetic_arithmetic", "levels": [1], "num_examples": 50},
        "args": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 4, "max_completion_length": 16},
        "rewards": [{"name": "math_accuracy"}, {"name": "format", "weight": 0.2}],
    })
    return write_manifest(tmp_path / "m.yaml", manifest)


def fingerprints(path: Path, *overrides: str) -> dict[str, str]:
    return {stage.name: stage.fingerprint for stage in make_plan(load_manifest(path, overrides)).stages}


def test_values_are_typed_as_yaml(manifest_file):
    manifest = load_manifest(manifest_file, [
        "seed=1", "stages.sft.args.learning_rate=1e-3", "stages.sft.args.gradient_checkpointing=true",
        "stages.eval.data.levels=[1, 3]", "stages.sft.launch={profile: ddp, num_processes: 2}",
        "stages.grpo.v2.rewards.format.weight=0.5", "stages.1.args.batch_size=8", "decontamination.ngram=8",
    ])
    sft, evaluation, grpo = manifest.stages
    assert manifest.seed == 1 and sft.args["learning_rate"] == 1e-3 and isinstance(sft.args["learning_rate"], float)
    assert sft.args["gradient_checkpointing"] is True
    assert evaluation.data.model_extra["levels"] == [1, 3] and evaluation.args["batch_size"] == 8
    assert (sft.launch.profile, sft.launch.num_processes) == ("ddp", 2)  # a block the file lacked, created
    assert [reward.weight for reward in grpo.rewards] == [1.0, 0.5]  # a reward by name, in a stage named with a dot
    assert manifest.decontamination.ngram == 8


@pytest.mark.parametrize("override, message", [
    ("stages.sftt.args.learning_rate=1", "nothing named 'sftt' in stages (did you mean 'sft'?); stages: sft, eval, grpo.v2"),
    ("stages.sft.argz.learning_rate=1", "no key 'argz' in stages.sft (did you mean 'args'?)"),
    ("seeed=1", "the manifest has no field 'seeed' (did you mean 'seed'?)"),
    ("stages.sft.lanch=1", "stages.sft has no field 'lanch' (did you mean 'launch'?)"),
    ("stages.sft.args.learning_rate.x=1", "stages.sft.args.learning_rate is 0.003, not a mapping"),
    ("stages.grpo.v2.rewards.lenght.weight=1", "nothing named 'lenght' in stages.grpo.v2.rewards"),
    ("seed", "not an option, nor an override key.path=value"),
    ("seed=[1", "the value is not valid YAML"),
])
def test_a_path_that_does_not_exist_is_one_line_naming_it(manifest_file, override, message):
    with pytest.raises(ManifestError) as raised:
        load_manifest(manifest_file, [override])
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_override_changes_fingerprints_exactly_as_editing_the_file(manifest_file, tmp_path):
    before = fingerprints(manifest_file)
    assert fingerprints(manifest_file, "stages.sft.args.learning_rate=3e-3") == before  # the file's own value
    assert fingerprints(manifest_file, "seed=0", "stages.eval.args.max_new_tokens=40") == before

    overridden = fingerprints(manifest_file, "stages.sft.args.learning_rate=1e-3")
    edited = yaml.safe_load(manifest_file.read_text())
    edited["stages"][0]["args"]["learning_rate"] = 0.001
    assert overridden == fingerprints(write_manifest(tmp_path / "edited.yaml", edited))
    assert all(overridden[name] != before[name] for name in before)  # the stage and everything downstream


def test_the_saved_manifest_reproduces_the_run(manifest_file, tmp_path):
    overrides = ["seed=3", "stages.sft.args.learning_rate=1e-3"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_resolved_manifest(run_dir, resolved_manifest_text(manifest_file, overrides, Manifest))
    saved = run_dir / RESOLVED_MANIFEST
    assert saved.read_text().startswith(f"# The manifest of this run: {manifest_file} with seed=3 ")
    assert fingerprints(saved) == fingerprints(manifest_file, *overrides)


@pytest.mark.slow
def test_the_command_line_takes_overrides_before_and_after_options(manifest_file):
    typo = gradus("run", str(manifest_file), "seed=7", "--from", "sft", "stages.sft.args.max_stepz=3")
    assert typo.returncode == 2 and "field 'args.max_stepz': not a field of SFTConfig (did you mean 'max_steps'?)" in typo.stdout
    assert not (manifest_file.parent / "run").exists()  # nothing written before the error
