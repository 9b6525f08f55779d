"""Config classes for the stage kinds that have no TRL config of their own.

They play the part `SFTConfig` plays for `sft`: a manifest's `args` for the kind are checked against
these fields before launch, and the stage builds one from them. Plain dataclasses, no torch, so the
planner can read them cheaply. The `curriculum:` block has its own schema here too (pydantic, as the
manifest validates it with `model_validate`).
"""

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


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
    num_samples: int = 1
    """Completions per problem. Above 1 (with a temperature > 0), pass@k and maj@k are reported."""
    k: list[int] = field(default_factory=lambda: [1, 4, 8, 16])
    """The k of pass@k and maj@k; those above num_samples are skipped."""
    difficulty_column: str = "level"
    """Column accuracy is broken down by; rows without it count only in the overall figure."""
    seed: int | None = None
    """Sampling seed; defaults to the manifest's seed."""


CURRICULUM_KINDS = ("grpo",)
"""Stage kinds that take a `curriculum:` block (the sampler in stages/curriculum/ could also serve dpo's
on-policy prompt choice and a static order for sft; neither is wired yet)."""

# The options each strategy reads beyond the shared ones; setting another strategy's option is an error,
# so a manifest never carries a knob that silently does nothing. `uniform` is the control: no safeguards.
SAFEGUARDS = frozenset({"min_share", "repeat_window"})
STRATEGY_OPTIONS: dict[str, frozenset[str]] = {
    "uniform": frozenset(),
    "ordered": SAFEGUARDS | {"start_competence", "ramp_fraction"},
    "adaptive": SAFEGUARDS | {"start_competence", "ramp_fraction", "reestimate_every"},
    "band": SAFEGUARDS | {"band", "retire_above", "revisit_probability"},
    "bandit": SAFEGUARDS | {"temperature"},
    "ucb": SAFEGUARDS | {"temperature", "exploration"},
}
NEEDS_DIFFICULTY_COLUMN = frozenset({"ordered", "adaptive", "bandit", "ucb"})
CURRICULUM_INDEX_COLUMN = "curriculum_index"
"""The column the stage adds to the training data (the row index) so scores can be traced back to prompts."""


class CurriculumArgs(BaseModel):
    """A stage's `curriculum:` block: which prompts GRPO samples next, and from what evidence.

    Prompts fall into buckets by `difficulty_column` (one bucket per value, or `num_buckets` quantile
    bins for a numeric column with more distinct values). Every generation batch updates each prompt's
    pass rate and its bucket's statistics from the scores of `signal_reward`; the strategy turns them
    into the next batch's bucket shares. The strategies, their papers and where gradus deviates are
    documented in stages/curriculum/__init__.py.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["uniform", "ordered", "adaptive", "band", "bandit", "ucb"] = "bandit"
    """uniform: TRL's shuffle (the baseline); ordered: easy to hard by the column (competence pacing);
    adaptive: the same pacing with difficulty re-estimated online (ADCL); band: prompts whose pass rate
    is inside `band`; bandit: buckets as arms valued by mean |advantage| (SEC); ucb: the same value plus
    an exploration bonus (DUMP)."""
    difficulty_column: str | None = "level"
    """Data column that puts prompts in buckets, numeric (ascending = harder) or categorical; null puts
    every prompt in one bucket (only `uniform` and `band` work without buckets)."""
    num_buckets: int = Field(10, ge=2)
    """A numeric column with more distinct values than this is cut into this many quantile buckets."""
    signal_reward: str | None = None
    """The reward (by its manifest name) whose scores drive the curriculum; default: the stage's first."""
    pass_threshold: float = 0.5
    """A completion passes when its signal reward is at least this (math_accuracy scores 1 or 0)."""
    learning_rate: float = Field(0.3, gt=0, le=1)
    """Step size of the per-bucket moving averages (pass rate, mean |advantage|): SEC's TD(0) alpha."""
    min_share: float = Field(0.05, ge=0, lt=1)
    """Floor on every non-empty bucket's sampling share, so no difficulty is starved."""
    repeat_window: int = Field(10, ge=1)
    """A prompt is drawn at most once in any this many consecutive generation batches."""
    temperature: float = Field(0.1, gt=0)
    """bandit, ucb: Boltzmann temperature over bucket values, in reward units (0.1 suits rewards in [0, 1])."""
    exploration: float = Field(1.0, ge=0)
    """ucb: weight c of the bonus c * sqrt(2 ln(all completions) / (bucket's completions + 1))."""
    band: tuple[float, float] = (0.2, 0.8)
    """band: pass rates (inclusive) that count as learnable."""
    retire_above: float = Field(1.0, gt=0, le=1)
    """band: a prompt whose latest group passed at least this often is retired (never drawn again)."""
    revisit_probability: float = Field(0.1, ge=0, le=1)
    """band: relative weight of a prompt outside the band (e.g. never solved) against one inside it."""
    start_competence: float = Field(0.25, gt=0, le=1)
    """ordered, adaptive: fraction of the data (easiest first) admitted at the start."""
    ramp_fraction: float = Field(0.5, gt=0, le=1)
    """ordered, adaptive: fraction of the stage's generation batches after which all data is admitted."""
    reestimate_every: int = Field(10, ge=1)
    """adaptive: generation batches between re-rankings of the buckets by their online pass rate."""

    @field_validator(*sorted({option for options in STRATEGY_OPTIONS.values() for option in options}))
    @classmethod
    def _option_of_the_strategy(cls, value: Any, info: ValidationInfo) -> Any:
        strategy = info.data.get("strategy")
        if strategy is not None and info.field_name not in STRATEGY_OPTIONS[strategy]:
            users = [name for name, options in STRATEGY_OPTIONS.items() if info.field_name in options]
            raise ValueError(f"an option of {', '.join(users)}, not of strategy {strategy!r}")
        return value

    @field_validator("band")
    @classmethod
    def _band_in_order(cls, band: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= band[0] <= band[1] <= 1:
            raise ValueError(f"two pass rates with 0 <= low <= high <= 1, got {list(band)}")
        return band

    @field_validator("difficulty_column")
    @classmethod
    def _buckets_when_needed(cls, column: str | None, info: ValidationInfo) -> str | None:
        strategy = info.data.get("strategy")
        if column is None and strategy in NEEDS_DIFFICULTY_COLUMN:
            raise ValueError(f"strategy {strategy!r} needs a difficulty column to form buckets")
        return column

    def check(self, kind: str, columns: Collection[str]) -> str | None:
        """What is wrong with this curriculum for a `kind` stage whose data has `columns`, or None."""
        if self.difficulty_column is not None and self.difficulty_column not in columns:
            return f"difficulty_column {self.difficulty_column!r} is not a column of the data; it has {', '.join(sorted(columns))}"
        if CURRICULUM_INDEX_COLUMN in columns:
            return f"the data already has a column {CURRICULUM_INDEX_COLUMN!r}, which the curriculum adds itself"
        return None
