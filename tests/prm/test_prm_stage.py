"""The `prm` stage trains for real on the synthetic task.

The first test drives `gradus run` as a user does: a manifest with a `prm` stage on a JSON Lines file of
step rows (gold solutions all right, corrupted ones wrong from their first wrong step on, truth from
`data_recipes.synthetic.step_errors`), trained from the built-in tiny model. The second calls the stage
in-process with LoRA, soft labels and a separate `eval_data` set, on a signal the PRM can learn in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, write_manifest
from tests.prm.helpers import synthetic_step_rows

PRM_ARGS = {
    "max_steps": 60, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "logging_steps": 5,
    "save_steps": 30, "max_length": 64, "report_to": "none", "eval_fraction": 0.2,
}
STEP_METRICS = ("auc", "f1", "error_f1", "first_error_accuracy", "first_error_flagged", "all_correct_accuracy")


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_prm_stage_learns_from_step_rows_and_its_model_serves_the_reward(tmp_path):
    data = write_rows(tmp_path / "steps.jsonl", synthetic_step_rows(300, seed=0))
    run_dir = tmp_path / "run"
    manifest = {"run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL, "stages": [
        {"name": "prm", "kind": "prm", "data": {"recipe": "jsonl", "path": str(data)}, "args": PRM_ARGS}]}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(write_manifest(tmp_path / "m.yaml", manifest))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    stage_dir = run_dir / "prm"
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 60
    assert metrics["final_loss"] < metrics["first_loss"]
    assert metrics["eval_rows"] > 0 and metrics["train_rows"] + metrics["eval_rows"] == 300
    for key in STEP_METRICS:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["solutions_with_error"] > 0 and metrics["all_correct_solutions"] > 0
    assert (stage_dir / "training.png").is_file() and (stage_dir / "roc.png").is_file()

    config = json.loads((stage_dir / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForTokenClassification"] and len(config["id2label"]) == 1
    import rewards

    reward = rewards.build("prm", {"model": str(stage_dir / "model")})
    scores = reward(prompts=["Q: 17 -2 +2\nA:"] * 2, completions=[" 17-2=15\n15+2=17\n\\boxed{17}", ""])
    assert 0.0 < scores[0] < 1.0 and scores[1] == 0.0


@pytest.mark.slow
def test_prm_stage_with_lora_learns_a_soft_labelled_step_signal_in_process(tmp_path):
    """A signal only the step's labelled token can see: a step is "right" when its last character is not an
    odd digit. Its labels are soft (0.8 right, 0.1 wrong), so the AUC also shows they were not truncated:
    cast to int, both would be 0 and there would be nothing to rank."""
    from stages import prm
    from stages.arguments import StageFile
    from stages.models import build_tiny_model

    base = tmp_path / "base"
    build_tiny_model({"arch": "llama", "max_position_embeddings": 512, **TINY_MODEL["tiny"]}, 0, base)
    rows = synthetic_step_rows(200, seed=1)
    for row in rows:
        row["labels"] = [0.1 if step[-1] in "13579" else 0.8 for step in row["steps"]]
        row["hard_labels"] = [label >= 0.5 for label in row["labels"]]
    train = write_rows(tmp_path / "train.jsonl", rows[:160])
    held_out = write_rows(tmp_path / "eval.jsonl", rows[160:])
    stage = StageFile(
        name="prm", kind="prm", fingerprint="test", seed=0, stage_dir=tmp_path / "prm", model_path=str(base),
        data={"recipe": "jsonl", "path": str(train)}, eval_data={"recipe": "jsonl", "path": str(held_out)},
        args={**PRM_ARGS, "max_steps": 60, "learning_rate": 2e-2, "save_steps": 60},
        peft={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    )
    prm.run(stage)

    metrics = json.loads((stage.stage_dir / "metrics.json").read_text())
    assert metrics["eval_rows"] == 40 and metrics["train_rows"] == 160
    assert metrics["final_loss"] < metrics["first_loss"]
    assert metrics["truth"] == "hard_labels" and all(key in metrics for key in STEP_METRICS)
    assert metrics["auc"] > 0.75  # 0.85 when written; an untrained head or truncated labels give about 0.5
    # LoRA: the adapter (with the new head saved in full) and a merged plain model whose head is the trained one.
    from safetensors.torch import load_file

    adapter = load_file(stage.stage_dir / "adapter" / "adapter_model.safetensors")
    merged = load_file(stage.stage_dir / "model" / "model.safetensors")
    head = next(key for key in adapter if key.endswith("score.weight"))
    assert (adapter[head] == merged["score.weight"]).all()
    assert not any("lora" in key for key in merged)
