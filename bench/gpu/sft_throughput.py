"""SFT throughput of one model under one launch profile: tokens/s in the steady state, model FLOP
utilisation, peak memory. bench/gpu/check.py launches it the way a stage is launched:

    accelerate launch --config_file launch/<profile>.yaml --num_processes 1 -m bench.gpu.sft_throughput CONFIG_JSON OUT_JSON

TRL's SFTTrainer as the `sft` stage builds it (model loaded from its directory, the synthetic arithmetic
rows, the local tokenizer), with the rows packed end to end into full `max_length` sequences
(`packing_strategy: wrapped`) so every step trains exactly batch x length tokens and no step is
shorter than the shape it is meant to measure. The first `warmup_steps` steps (CUDA context,
kernel selection, allocator growth) are excluded from the timing.

MFU uses PaLM's count of training FLOPs per token (Chowdhery et al. 2022, appendix B):
6 N + 12 n_layers d_model seq_len, where N counts every parameter once (with tied embeddings the
embedding matrix is the output projection's matmul) and the second term is attention's score and
value matmuls, forward and backward, over the full (not causal-halved) matrix. `mfu_6n` leaves the
attention term out, as many papers do.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity), matched against torch.cuda.get_device_name().
# Checked in order: the H100's PCIe and NVL parts before the SXM default.
BF16_PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def bf16_peak_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak, or None where it is not in the table (a CPU among them)."""
    return next((peak for marker, peak in BF16_PEAK_FLOPS if marker in device_name), None)


def flops_per_token(num_parameters: int, num_layers: int, hidden_size: int, seq_length: int) -> dict[str, float]:
    """Training FLOPs per token by both formulas of the module docstring."""
    dense = 6 * num_parameters
    return {"6n": float(dense), "palm": float(dense + 12 * num_layers * hidden_size * seq_length)}


def utilisation(tokens_per_s: float, per_token: dict[str, float], device_name: str) -> dict[str, float | None]:
    """MFU by each formula against the device's bf16 peak (None where the peak is unknown)."""
    peak = bf16_peak_flops(device_name)
    return {f"mfu_{name}": (tokens_per_s * flops / peak if peak else None) for name, flops in per_token.items()}


def device_name() -> str:
    import platform

    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})"


def peak_memory() -> dict[str, Any]:
    """GPU: the allocator's high-water mark. CPU: the process's peak resident set (what bounds it there)."""
    import torch

    if torch.cuda.is_available():
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "peak_memory_kind": "torch.cuda.max_memory_allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_memory_kind": "ru_maxrss (CPU)"}


def step_timer(warmup_steps: int) -> Any:
    """A TrainerCallback timing the steps after `warmup_steps` and counting their tokens."""
    import torch
    from transformers import TrainerCallback

    def synchronise() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.started: tuple[float, int] | None = None
            self.timed: dict[str, float] = {}
            self.num_parameters = 0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.num_parameters = sum(parameter.numel() for parameter in model.parameters())

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup_steps:
                synchronise()
                self.started = (time.perf_counter(), state.num_input_tokens_seen)

        def on_train_end(self, args, state, control, **kwargs):
            synchronise()
            began, tokens_before = self.started
            self.timed = {"seconds": time.perf_counter() - began, "tokens": state.num_input_tokens_seen - tokens_before,
                          "steps": state.global_step - warmup_steps}

    return StepTimer()


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Train `config['steps']` steps and return the figures (the keys of check.py's SFT rows)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    import data_recipes

    if config["warmup_steps"] >= config["steps"]:
        raise ValueError(f"sft_throughput: warmup_steps ({config['warmup_steps']}) must be below steps ({config['steps']})")
    timer = step_timer(config["warmup_steps"])
    precision = {"bf16": True} if config["bf16"] else {"bf16": False, "use_cpu": not torch.cuda.is_available()}
    with tempfile.TemporaryDirectory() as scratch:
        trainer = SFTTrainer(
            model=config["model_dir"],
            args=SFTConfig(
                output_dir=scratch, max_steps=config["steps"], per_device_train_batch_size=config["batch_size"],
                max_length=config["seq_length"], packing=True, packing_strategy="wrapped", learning_rate=1e-4,
                gradient_checkpointing=False, logging_steps=config["steps"], save_strategy="no", report_to="none",
                include_num_input_tokens_seen="all", seed=0, **precision,
            ),
            train_dataset=data_recipes.load("synthetic_arithmetic", config["data"]).select_columns(["prompt", "completion"]),
            processing_class=AutoTokenizer.from_pretrained(config["model_dir"]),
            callbacks=[timer],
        )
        trainer.train()
    model_config = AutoConfig.from_pretrained(config["model_dir"])
    timed = timer.timed
    tokens_per_s = timed["tokens"] / timed["seconds"]
    per_token = flops_per_token(timer.num_parameters, model_config.num_hidden_layers, model_config.hidden_size, config["seq_length"])
    name = device_name()
    return {
        "device": name, "num_processes": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type.value), "bf16": config["bf16"],
        "num_parameters": timer.num_parameters, "tokens_per_step": timed["tokens"] / timed["steps"],
        "timed_steps": timed["steps"], "seconds_per_step": timed["seconds"] / timed["steps"], "tokens_per_s": tokens_per_s,
        "flops_per_token_6n": per_token["6n"], "flops_per_token_palm": per_token["palm"],
        "bf16_peak_flops": bf16_peak_flops(name), **utilisation(tokens_per_s, per_token, name), **peak_memory(),
    }


def main(config_path: Path, out_path: Path) -> None:
    import torch.distributed as dist

    from stages.common import is_main_process

    figures = measure(json.loads(config_path.read_text()))
    if is_main_process():
        out_path.write_text(json.dumps(figures, indent=2))
    if dist.is_available() and dist.is_initialized():  # a clean exit under DeepSpeed (cpu-stack.md, section 2)
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
