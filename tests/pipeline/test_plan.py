"""Launch commands per profile, and fingerprints that change downstream but never upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

import launch
from pipeline.manifest import load_manifest
from pipeline.plan import make_plan
from tests.conftest import tiny_manifest, write_manifest


def plan_for(tmp_path: Path, manifest: dict):
    return make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))


@pytest.mark.parametrize("profile", ["single", "ddp", "zero2", "zero3"])
def test_launch_command_per_profile(tmp_path, profile):
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"][0]["launch"] = {"profile": profile, "num_processes": 2}
    command = plan_for(tmp_path, manifest).stages[0].command
    assert Path(command[0]).name == "accelerate" and command[1] == "launch"
    assert command[2:4] == ["--config_file", str(launch.profile_path(profile))]
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-3:] == ["-m", "stages.sft", str((tmp_path / "run" / "sft" / "stage.yaml").resolve())]


def test_every_profile_file_is_an_accelerate_config():
    import yaml

    for name in ["single", "ddp", "zero2", "zero3"]:
        config = yaml.safe_load(launch.profile_path(name).read_text())
        assert config["compute_environment"] == "LOCAL_MACHINE"
        assert (config["distributed_type"] == "DEEPSPEED") == name.startswith("zero")
        if name.startswith("zero"):
            assert config["deepspeed_config"]["zero_stage"] == int(name[-1])


def test_changing_args_changes_that_stage_and_downstream_only(tmp_path):
    before = plan_for(tmp_path, tiny_manifest(tmp_path / "run"))
    edited = tiny_manifest(tmp_path / "run")
    edited["stages"][1]["args"]["max_new_tokens"] = 41
    after = plan_for(tmp_path, edited)
    assert before.stages[0].fingerprint == after.stages[0].fingerprint
    assert before.stages[1].fingerprint != after.stages[1].fingerprint

    edited_upstream = tiny_manifest(tmp_path / "run", learning_rate=1e-3)
    after_upstream = plan_for(tmp_path, edited_upstream)
    assert all(a.fingerprint != b.fingerprint for a, b in zip(before.stages, after_upstream.stages))


def test_launch_settings_do_not_change_the_fingerprint(tmp_path):
    before = plan_for(tmp_path, tiny_manifest(tmp_path / "run"))
    moved = tiny_manifest(tmp_path / "run")
    moved["stages"][0]["launch"] = {"profile": "ddp", "num_processes": 2}
    assert plan_for(tmp_path, moved).stages[0].fingerprint == before.stages[0].fingerprint


def test_eval_sets_decide_training_fingerprints_not_eval_stages(tmp_path):
    """Training data is decontaminated against every eval set, so a new eval set reruns training; a second
    eval stage on a set already there (best-of-n next to greedy) does not."""
    manifest = tiny_manifest(tmp_path / "run")
    before = plan_for(tmp_path, manifest).stages[0]
    best_of_n = {**manifest["stages"][1], "name": "eval_best_of_n", "args": {"num_samples": 4, "temperature": 1.0}}
    manifest["stages"].append(best_of_n)
    same_set = plan_for(tmp_path, manifest).stages[0]
    assert same_set.fingerprint == before.fingerprint
    manifest["stages"].append({**best_of_n, "name": "eval_level_3", "data": {**best_of_n["data"], "levels": [3]}})
    assert plan_for(tmp_path, manifest).stages[0].fingerprint != before.fingerprint


def test_editing_a_data_file_changes_the_fingerprint(tmp_path):
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text('{"prompt": "Q: 1 +1\\nA:", "answer": "2"}\n')
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"][1]["data"] = {"recipe": "jsonl", "path": str(data_file)}
    before = plan_for(tmp_path, manifest).stages[1].fingerprint
    data_file.write_text('{"prompt": "Q: 1 +2\\nA:", "answer": "3"}\n')
    assert plan_for(tmp_path, manifest).stages[1].fingerprint != before


def test_stage_file_names_upstream_model(tmp_path):
    plan = plan_for(tmp_path, tiny_manifest(tmp_path / "run"))
    assert plan.stages[0].model_path == str((tmp_path / "run" / "base_model").resolve())
    assert plan.stages[1].resolved.model_path == str(plan.stages[0].stage_dir / "model")


def test_multi_node_example_plans_one_command_per_node(shared_data, tmp_path):
    """The real-model example validates here and prints what each of its 2 nodes must run."""
    repo = Path(__file__).resolve().parents[2]
    example = (repo / "examples" / "qwen2.5-math-1.5b.yaml").read_text()
    # The example names the data as seen from the repository root; point it at wherever the data is here.
    manifest = tmp_path / "qwen2.5-math-1.5b.yaml"
    manifest.write_text(example.replace("../shared/data", str(shared_data)))
    plan = make_plan(load_manifest(manifest))
    sft = plan.stages[0]
    assert len(sft.node_commands) == 2
    for rank, command in enumerate(sft.node_commands):
        flags = dict(zip(command[2:-3:2], command[3:-3:2]))
        assert flags["--config_file"].endswith("launch/zero3.yaml")
        assert flags["--num_machines"] == "2" and flags["--num_processes"] == "16"
        assert flags["--machine_rank"] == str(rank)
        assert flags["--main_process_ip"] == "$GRADUS_MAIN_ADDR" and flags["--main_process_port"] == "29500"
        assert command[-3:] == ["-m", "stages.sft", str(sft.stage_file)]
    assert sft.command[:5] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert "--machine_rank $SLURM_PROCID" in sft.command[-1] and "'$" not in sft.command[-1]
    assert all(not stage.node_commands for stage in plan.stages[1:])


def test_multi_node_stage_outside_slurm_is_refused(tmp_path, monkeypatch):
    from pipeline.runner import RunError, run

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"][0]["launch"] = {"profile": "ddp", "num_machines": 2, "num_processes": 4}
    with pytest.raises(RunError, match="runs on 2 machines"):
        run(plan_for(tmp_path, manifest), say=lambda line: None)


def test_slurm_script_is_valid_shell():
    import shutil
    import subprocess

    script = launch.PROFILE_DIR / "slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_a_local_base_model_is_fingerprinted_by_its_files_not_its_path(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 32}')
    (model / "model.safetensors").write_bytes(b"\0" * (2 << 20))  # large: by size and modification time
    manifest = tiny_manifest(tmp_path / "run") | {"base_model": str(model)}
    before = plan_for(tmp_path, manifest).stages[0].fingerprint
    (model / "config.json").write_text('{"hidden_size": 64}')
    after_config = plan_for(tmp_path, manifest).stages[0].fingerprint
    (model / "model.safetensors").write_bytes(b"\1" * (2 << 20 + 1))
    after_weights = plan_for(tmp_path, manifest).stages[0].fingerprint
    assert len({before, after_config, after_weights}) == 3


def test_a_reward_plugin_is_fingerprinted_by_its_source(tmp_path, monkeypatch):
    plugin = tmp_path / "my_reward.py"
    plugin.write_text("def exact(prompts, completions, answer, **kwargs):\n    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"].append({
        "name": "grpo", "kind": "grpo", "model": "sft", "rewards": [{"name": "my_reward:exact"}],
        "data": {"recipe": "synthetic_arithmetic", "levels": [1], "num_examples": 16},
    })
    before = plan_for(tmp_path, manifest).stages[2].fingerprint
    plugin.write_text(plugin.read_text().replace("c.strip() == a", "a in c"))  # a looser, hackable reward
    import importlib
    import sys

    sys.modules.pop("my_reward", None)
    importlib.invalidate_caches()
    assert plan_for(tmp_path, manifest).stages[2].fingerprint != before


def test_a_recipe_that_reads_a_stage_is_planned_from_its_declaration_alone(tmp_path, monkeypatch):
    """The pipeline names no stage-reading recipe: a new one (registered here) gets its producer checked,
    its path, its dependency and its producer's fingerprint from its `StageInput`."""
    import dataclasses

    import data_recipes
    from data_recipes.accepted_samples import RECIPE

    registry = data_recipes._registry
    rescored = dataclasses.replace(RECIPE, name="rescored", reads_stage=data_recipes.StageInput("scored_samples", "scored samples", "dataset"))
    monkeypatch.setattr(data_recipes, "_registry", lambda: {**registry(), "rescored": rescored})

    def plan_with(eval_batch_size: int, producer: str = "eval"):
        manifest = tiny_manifest(tmp_path / "run")
        manifest["stages"][1]["args"]["batch_size"] = eval_batch_size
        manifest["stages"].append({"name": "again", "kind": "sft", "model": "sft", "args": {"max_steps": 2},
                                   "data": {"recipe": "rescored", "stage": producer}})
        return make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))

    again = plan_with(40).stages[-1]
    assert again.resolved.data.model_extra["path"] == str((tmp_path / "run" / "eval" / "dataset").resolve())
    assert again.depends_on == ["sft", "eval"]
    assert plan_with(20).stages[-1].fingerprint != again.fingerprint  # the producer reran: its output changed
    with pytest.raises(Exception, match="field 'data': stage 'sft' is a sft stage and writes no scored samples"):
        plan_with(40, producer="sft")


def test_an_eval_set_of_scored_samples_is_refused_where_a_training_stage_runs_before_its_producer(tmp_path):
    """Like a `stage_output` eval set: the training stage is checked against it, so it must exist by then."""
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"].append({"name": "eval_samples", "kind": "eval", "model": "sft",
                               "data": {"recipe": "accepted_samples", "stage": "eval"}, "args": {"max_new_tokens": 8}})
    with pytest.raises(Exception, match="stage 'sft': decontamination: eval stage 'eval_samples' reads the dataset of stage 'eval', which runs after it"):
        load_manifest(write_manifest(tmp_path / "m.yaml", manifest))
    manifest["decontamination"] = {"enabled": False}
    assert make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest))).stages[-1].depends_on == ["sft", "eval"]
