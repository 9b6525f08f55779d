"""`prm`: a trained process reward model as a TRL reward, one number per completion.

GRPO and DPO rank whole completions, so the PRM's per-step scores are aggregated into one scalar
(the pragmatic path of ms-swift#3952; anchors.md §(f).3): the completion is split into steps on
`separator`, each step is scored at its separator token exactly as the `prm` stage trained it
(`rewards.steps.score_steps`), and the scores are combined by `aggregate`: `min` (default: a chain
is as good as its worst step), `mean`, `last` or `product`. Scores are probabilities in [0, 1].
A completion with no step (empty or blank) scores 0.0. Every step is scored, including any written after
a \\boxed{} answer (the `prm_label` stage's own split stops there, so such steps are unlike its training
rows; scoring them keeps text after the answer from going unjudged). Per-step advantages are out of scope.

`model` is a directory holding a PRM (a `prm` stage's `model/`; in a manifest, the name of that stage,
which the planner replaces by its model directory). It is loaded once, on the first call, onto the
current CUDA device (each process of a multi-GPU stage holds its own full copy, in bf16) or the CPU, in
eval mode. This is the one reward that imports torch, and only then, so `gradus plan` stays light. The
prompt the PRM reads is the dataset prompt, rendered with the PRM tokenizer's chat template when it is
a list of messages; train the PRM on prompts written the same way as the policy's (the recipes'
`template` option) or its scores are off-distribution.
"""

from __future__ import annotations

import threading
from typing import Any

from rewards.completions import completion_text
from rewards.steps import AGGREGATIONS, aggregate, score_steps, split_steps


class ProcessReward:
    """The `prm` reward; its constructor's arguments are the manifest options.

    Args:
        model: directory of the PRM (or, in a manifest, the name of the `prm` stage that trained it).
        aggregate: how step scores become one reward: min, mean, last or product.
        separator: the step separator the PRM was trained with (the stage's `step_separator`).
        batch_size: completions scored per forward pass.
    """

    __name__ = "prm"

    def __init__(self, model: str, aggregate: str = "min", separator: str = "\n", batch_size: int = 16) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a PRM directory or the name of a prm stage, got {model!r}")
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATIONS)}, got {aggregate!r}")
        if not isinstance(separator, str) or not separator:
            raise ValueError("separator must be a non-empty string")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model_path = model
        self.aggregate = aggregate
        self.separator = separator
        self.batch_size = batch_size
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def __call__(self, prompts: list, completions: list, **kwargs: object) -> list[float]:
        model, tokenizer = self._model()
        step_lists = [split_steps(completion_text(completion), self.separator) for completion in completions]
        scored = [index for index, steps in enumerate(step_lists) if steps]
        step_scores = score_steps(
            model, tokenizer, [prompts[index] for index in scored], [step_lists[index] for index in scored],
            separator=self.separator, batch_size=self.batch_size,
        )
        rewards = [0.0] * len(completions)
        for index, scores in zip(scored, step_scores):
            value = aggregate(scores, self.aggregate)
            rewards[index] = 0.0 if value is None else value
        return rewards

    def _model(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                self._loaded = load_prm(self.model_path)
            return self._loaded

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for worker processes): the loaded model and the lock stay behind, reloaded on first use."""
        return {key: value for key, value in self.__dict__.items() if key not in {"_loaded", "_lock"}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._loaded, self._lock = None, threading.Lock()


def load_prm(path: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a PRM directory, in eval mode on the current CUDA device or the CPU."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    else:
        device, dtype = torch.device("cpu"), torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Under a ZeRO-3 stage, transformers would partition any model loaded in the process across ranks
    # (zero.Init), leaving this one unusable outside a DeepSpeed engine. The PRM is inference-only and
    # small next to the policy, so each process loads it whole: ZeRO-3 is hidden from from_pretrained.
    from transformers.integrations import deepspeed as hf_deepspeed

    stage_deepspeed_config = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        model = AutoModelForTokenClassification.from_pretrained(path, dtype=dtype).to(device)
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = stage_deepspeed_config
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer
