"""A stage's `model` (or a distill stage's `teacher`) may be a model outside the chain: a saved directory, a
tiny spec or a GGUF file the runner makes once under run_dir/models, a real model known by name. Sampling
such a model, even one with another tokenizer, is sequence-level distillation: its verified samples become
the chain's SFT data through `accepted_samples`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.manifest import TinyModelSpec, load_manifest
from pipeline.plan import MODELS_DIR, make_plan
from tests.conftest import TINY_MODEL, gradus, write_manifest

OTHER_TOKENIZER = {"arch": "qwen2", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
PROMPTS = {"recipe": "synthetic_arithmetic", "levels": [1], "num_examples": 12, "seed": 5}


def sampling_chain(tmp_path: Path, outside: object) -> Path:
    stages = [
        {"name": "teacher_samples", "kind": "difficulty", "model": outside, "data": PROMPTS, "rewards": [{"name": "math_accuracy"}],
         "args": {"num_samples": 2, "max_new_tokens": 12, "batch_size": 24}},
        {"name": "student", "kind": "sft", "model": "base",
         # min_score 0: a random-init teacher is never right; the test is about where the samples come from
         "data": {"recipe": "accepted_samples", "stage": "teacher_samples", "min_score": 0.0, "mode": "all"},
         "args": {"max_steps": 3, "per_device_train_batch_size": 8, "max_length": 48, "logging_steps": 1, "gradient_checkpointing": False, "report_to": "none"}},
    ]
    return write_manifest(tmp_path / "m.yaml", {"run_dir": str(tmp_path / "run"), "base_model": TINY_MODEL, "stages": stages})


@pytest.mark.slow
@pytest.mark.ci
def test_a_model_outside_the_chain_with_another_tokenizer_is_sampled_and_its_samples_train_the_student(tmp_path):
    from stages.models import build_tiny_model

    outside = tmp_path / "outside_teacher"
    build_tiny_model(TinyModelSpec(**OTHER_TOKENIZER).model_dump(), seed=3, out_dir=outside)
    path = sampling_chain(tmp_path, str(outside))
    result = gradus("run", str(path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]

    run_dir = tmp_path / "run"
    assert yaml.safe_load((run_dir / "teacher_samples" / "stage.yaml").read_text())["model_path"] == str(outside.resolve())
    import datasets

    samples = datasets.load_from_disk(str(run_dir / "teacher_samples" / "dataset"))
    assert len(samples) == 12 and all(len(row) == 2 for row in samples["samples"])
    # The outside teacher's vocabulary (byte-level, 261 tokens) is not the student's (102): only text crosses over.
    assert json.loads((outside / "config.json").read_text())["vocab_size"] == 261
    assert json.loads((run_dir / "base_model" / "config.json").read_text())["vocab_size"] == 102
    metrics = json.loads((run_dir / "student" / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and metrics["final_loss"] > 0


def test_a_tiny_spec_or_gguf_file_as_a_stage_model_is_made_once_under_run_dir_models(tmp_path):
    spec_manifest = yaml.safe_load(sampling_chain(tmp_path, {"tiny": OTHER_TOKENIZER}).read_text())
    spec_manifest["stages"].append({**spec_manifest["stages"][0], "name": "again"})  # the same outside model twice
    plan = make_plan(load_manifest(write_manifest(tmp_path / "spec.yaml", spec_manifest)))
    first, second = plan.stages[0], plan.stages[2]
    (made_dir, identity), = first.models_to_make
    assert made_dir.parent == plan.run_dir / MODELS_DIR and identity == {"tiny": {**TinyModelSpec().model_dump(), **OTHER_TOKENIZER}, "seed": 0}
    assert second.models_to_make == first.models_to_make and first.resolved.model_path == str(made_dir)
    assert first.model_label.startswith("tiny:")

    other = yaml.safe_load(yaml.safe_dump(spec_manifest))
    other["stages"][0]["model"] = {"tiny": {**OTHER_TOKENIZER, "hidden_size": 32}}
    replanned = make_plan(load_manifest(write_manifest(tmp_path / "other.yaml", other)))
    assert replanned.stages[0].fingerprint != first.fingerprint and replanned.stages[2].fingerprint == second.fingerprint

    gguf_manifest = yaml.safe_load(yaml.safe_dump(spec_manifest))
    gguf_manifest["stages"][0]["model"] = "smollm2-135m-instruct"  # a real model known by name: its installed GGUF file
    gguf_stage = make_plan(load_manifest(write_manifest(tmp_path / "gguf.yaml", gguf_manifest))).stages[0]
    (gguf_dir, gguf_identity), = gguf_stage.models_to_make
    assert gguf_dir.parent == plan.run_dir / MODELS_DIR and gguf_identity["gguf"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert gguf_stage.model_label == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
