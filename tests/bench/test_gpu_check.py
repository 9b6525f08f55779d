"""The GPU check in its CPU mode, end to end, so the script is known to work before GPU time is spent on
it; and the arithmetic its figures rest on (FLOPs per token, MFU, GRPO token counts, unmet requirements)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu.check import CPU, quickstart_manifest
from bench.gpu.environment import unmet_requirements
from bench.gpu.sft_throughput import bf16_peak_flops, flops_per_token, utilisation
from bench.grpo_overhead import grpo_args, throughput

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cpu_mode_measures_every_part(tmp_path):
    out = tmp_path / "check"
    result = subprocess.run([sys.executable, "-m", "bench.gpu.check", "--out", str(out), "--cpu"],
                            capture_output=True, text=True, cwd=REPO, timeout=1800)
    results = json.loads((out / "results.json").read_text())
    parts = results["parts"]
    assert result.returncode == 0, json.dumps({name: entry.get("error") for name, entry in parts.items()}, indent=1)
    assert list(parts) == ["environment", "quickstart", "model", "sft_single", "sft_zero2", "grpo"]
    assert all(entry["status"] == "ok" and entry["seconds"] > 0 for entry in parts.values())

    environment = parts["environment"]
    assert environment["failed_imports"] == {} and environment["unmet"] == []
    assert environment["versions"]["trl"] and environment["bf16_supported"] is False

    chain = parts["quickstart"]["stages"]
    assert list(chain) == ["sft", "grpo", "eval"] and all(stage["state"] == "done" for stage in chain.values())
    assert 0 <= chain["eval"]["accuracy"] <= 1
    assert "pass@1" in (out / "quickstart_report.md").read_text()

    for profile, distributed_type in (("single", "NO"), ("zero2", "DEEPSPEED")):
        sft = parts[f"sft_{profile}"]
        assert sft["distributed_type"] == distributed_type and sft["num_processes"] == 1
        assert sft["tokens_per_step"] == CPU.sft["batch_size"] * CPU.seq_length  # packed: no step is short
        assert sft["timed_steps"] == CPU.sft["steps"] - CPU.sft["warmup_steps"]
        assert sft["tokens_per_s"] > 0 and sft["peak_memory_bytes"] > 0
        assert sft["flops_per_token_palm"] > sft["flops_per_token_6n"] > 0
        assert sft["bf16_peak_flops"] is None and sft["mfu_palm"] is None  # a CPU has no bf16 peak in the table

    grpo = parts["grpo"]
    assert len(grpo["runs"]["stage"]) == len(grpo["runs"]["bare"]) == CPU.grpo_repeats
    for arm in ("stage", "bare"):
        figures = grpo["median"][arm]
        assert figures["trained_tokens_per_s"] > figures["generated_tokens_per_s"] > 0  # trained = prompts + completions
    assert all(ratio > 0 and math.isfinite(ratio) for ratio in grpo["ratio"].values())

    table = (out / "results.md").read_text()
    assert all(f"| {part} |" in table for part in parts) and "| grpo | ratio.trained_tokens_per_s |" in table


def test_mfu_is_model_flops_over_the_devices_bf16_peak():
    per_token = flops_per_token(num_parameters=1_000_000, num_layers=4, hidden_size=128, seq_length=256)
    assert per_token["6n"] == 6e6 and per_token["palm"] == 6e6 + 12 * 4 * 128 * 256
    assert bf16_peak_flops("NVIDIA H200") == bf16_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_peak_flops("NVIDIA H100 PCIe") == 756e12 and bf16_peak_flops("CPU (x86_64)") is None
    mfu = utilisation(1e5, per_token, "NVIDIA H200")
    assert mfu["mfu_palm"] == pytest.approx(1e5 * per_token["palm"] / 989e12)
    assert utilisation(1e5, per_token, "CPU (x86_64)") == {"mfu_6n": None, "mfu_palm": None}


def test_grpo_throughput_counts_every_completion_of_every_step():
    args = grpo_args(10, per_device_train_batch_size=32, gradient_accumulation_steps=2)
    metrics = {"global_step": 10, "train_runtime": 20.0, "completions/mean_length": 40.0, "num_tokens": 50_000.0}
    figures = throughput(metrics, args, num_processes=2)
    assert figures["generated_tokens_per_s"] == 40.0 * 10 * 32 * 2 * 2 / 20.0
    assert figures["trained_tokens_per_s"] == 2500.0 and figures["seconds_per_step"] == 2.0
    with pytest.raises(ValueError, match="num_iterations"):
        throughput(metrics, {**args, "num_iterations": 2})
    assert args["logging_steps"] > args["max_steps"]  # the final log must average the whole run


def test_unmet_requirements_name_what_is_missing_or_too_old():
    assert unmet_requirements(["pytest", "trl>=1.16"]) == []
    unmet = unmet_requirements(["packaging>=999", "no-such-package-for-gradus", "pytest; extra == 'never'"])
    assert len(unmet) == 2 and unmet[0].startswith("no-such-package-for-gradus") and "found nothing" in unmet[0]
    assert unmet[1].startswith("packaging>=999") and "(found " in unmet[1]


def test_quickstart_manifest_turns_bf16_on_for_training_stages_only(tmp_path):
    manifest = quickstart_manifest(tmp_path / "run", bf16=True, shrink=False)
    assert manifest["run_dir"] == str(tmp_path / "run")
    assert [stage["args"].get("bf16") for stage in manifest["stages"]] == [None, True, None, True, None]
    assert len(quickstart_manifest(tmp_path, bf16=False, shrink=True)["stages"]) == 3
