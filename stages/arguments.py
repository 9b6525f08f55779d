"""Config classes for the stage kinds that have no TRL config of their own.

They play the part `SFTConfig` plays for `sft`: a manifest's `args` for the kind are checked against
these fields before launch, and the stage builds one from them. Plain dataclasses, no torch, so the
planner can read them cheaply.
"""

from dataclasses import dataclass


@dataclass
class EvalArgs:
    """How the `eval` stage generates and scores answers."""

    max_new_tokens: int = 256
    """Longest completion generated per problem; a completion cut here is usually scored wrong."""
    batch_size: int = 64
    """Prompts generated together per process."""
    temperature: float = 0.0
    """0 means greedy decoding (reproducible); above 0 samples."""
    top_p: float = 1.0
    difficulty_column: str = "level"
    """Column accuracy is broken down by; rows without it count only in the overall figure."""
    seed: int | None = None
    """Sampling seed; defaults to the manifest's seed."""
