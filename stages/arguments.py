"""The stage contract: the resolved stage file, and the argument classes of the kinds TRL has none for.

The plan (pipeline/plan.py) builds one `StageFile` per stage and writes it as `<stage>/stage.yaml`; the
stage process (`accelerate launch -m stages.<kind> <stage.yaml>`) reads it back with `StageFile.read`
and reads nothing else. Both sides import this module, so it stays light: pydantic and the standard
library, no torch, no TRL (the CLI imports it at start).

The argument classes play the part `SFTConfig` plays for `sft`: a manifest's `args` for `eval` and
`prm_label` are checked against their fields and types (and their `__post_init__` checks) before launch,
and the stage builds one from them. `OnPolicyArgs` and `CurriculumArgs` are the schemas of the
`on_policy:`, `curriculum:` and `relift:` blocks.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
import warnings
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


# Written into the base model directory the runner has `stages.models` make (the tiny model, a GGUF file
# converted), holding the plan's identity of that model: a directory whose file matches is complete and current.
BASE_MODEL_IDENTITY_FILE = "gradus_base.json"


def refuse_invalid(args: Any, valid: dict[str, bool], hint: str = "") -> None:
    """Raise one ValueError naming every field of `args` whose check in `valid` failed."""
    bad = [name for name, ok in valid.items() if not ok]
    if bad:
        raise ValueError(f"invalid {', '.join(f'{name}={getattr(args, name)!r}' for name in bad)}{hint}")


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
    extraction: Literal["boxed", "lenient"] = "boxed"
    """Which part of a completion is its answer (math_accuracy's option): `boxed`, the final box, as training
    rewards read it; `lenient`, also an unboxed final answer (math-verify's own extraction), for a model
    that answers right without boxing. The report gives pass@1 under both; this one is `accuracy`."""

    def __post_init__(self) -> None:
        problems = {
            "max_new_tokens": self.max_new_tokens >= 1,
            "batch_size": self.batch_size >= 1,
            "temperature": self.temperature >= 0,
            "top_p": 0 < self.top_p <= 1,
            "num_samples": self.num_samples >= 1 and (self.num_samples == 1 or self.temperature > 0),
            "k": all(k >= 1 for k in self.k),
        }
        several_greedy = self.num_samples > 1 and self.temperature <= 0
        refuse_invalid(self, problems, " (several samples per problem need temperature > 0)" if several_greedy else "")


@dataclass
class PRMLabelArgs:
    """How the `prm_label` stage samples solutions and labels their steps (the manifest's `args`)."""

    method: Literal["mc", "binary_search"] = "mc"
    """mc: roll out from every step prefix (Math-Shepherd); binary_search: search for the first wrong step
    (OmegaPRM), fewer rollouts, soft labels only where measured."""
    num_solutions: int = 4
    """Solutions sampled per problem; each becomes one row of the dataset."""
    rollouts_per_step: int = 8
    """k: continuations sampled from each step prefix that is rolled out."""
    temperature: float = 1.0
    """Sampling temperature of the solutions and of the rollouts (must be above 0)."""
    top_p: float = 1.0
    max_new_tokens: int = 256
    """Longest solution sampled, and longest continuation of a prefix."""
    step_separator: str = "\n"
    """What separates steps in a solution; the PRM stage must use the same."""
    batch_size: int = 256
    """Sequences generated together (prompts x their samples) in one `generate` call."""
    max_problems: int | None = None
    """Label only the first this many problems of the data (all of them when null)."""
    problems_per_shard: int = 16
    """Problems labelled together and saved as one shard: the unit a rerun resumes from."""
    balance: bool = False
    """Drop single-class rows of the majority class until positive and negative steps are as even as
    that allows (OmegaPRM's balancing; see stages/prm_label.py)."""
    seed: int | None = None
    """Sampling seed; defaults to the manifest's seed."""

    def __post_init__(self) -> None:
        checks = {
            "method": self.method in ("mc", "binary_search"),
            "num_solutions": self.num_solutions >= 1,
            "rollouts_per_step": self.rollouts_per_step >= 1,
            "temperature": self.temperature > 0,
            "max_new_tokens": self.max_new_tokens >= 1,
            "step_separator": self.step_separator != "",
            "batch_size": self.batch_size >= 1,
            "max_problems": self.max_problems is None or self.max_problems >= 1,
            "problems_per_shard": self.problems_per_shard >= 1,
        }
        refuse_invalid(self, checks)


class OnPolicyArgs(BaseModel):
    """DPO on the stage's own samples: n completions per prompt, scored by the stage's rewards, the
    best and worst kept as a pair when their scores differ by at least `margin`; repeated for
    `rounds` rounds, each starting from the model the previous round trained."""

    model_config = ConfigDict(extra="forbid")

    num_completions: int = Field(8, ge=2)
    margin: float = Field(0.5, ge=0)
    pairs_per_prompt: int = Field(1, ge=1)
    """Most pairs one prompt gives: 1 is best vs worst; more draws further correct x incorrect pairs from
    the same samples (stages.dpo.preference_pairs), so a round trains on more pairs for no extra sampling."""
    rounds: int = Field(1, ge=1)
    prompts_per_round: int | None = Field(None, gt=0)
    generation_batch_size: int = Field(16, gt=0)  # prompts per generate call, each with num_completions samples
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(128, gt=0)


@dataclass
class DifficultyArgs:
    """How the `difficulty` stage estimates each prompt's pass rate for its model (the manifest's `args`)."""

    num_samples: int = 8
    """k: completions sampled per prompt; the pass rate is the fraction that pass."""
    temperature: float = 1.0
    """Sampling temperature (above 0: k greedy completions would all be the same)."""
    top_p: float = 1.0
    max_new_tokens: int = 256
    """Longest completion sampled; one cut here usually scores as a fail."""
    batch_size: int = 256
    """Sequences generated together (prompts x their samples) in one `generate` call."""
    pass_threshold: float = 0.5
    """A completion passes when its score (the weighted sum of the stage's rewards) is at least this."""
    keep_pass_rate: list[float] | None = None
    """[low, high]: keep only prompts whose pass rate is inside (inclusive), as open-r1's offline
    0.2-0.8 filter does; null keeps every prompt."""
    max_prompts: int | None = None
    """Estimate only the first this many prompts of the data (all of them when null)."""
    prompts_per_shard: int = 64
    """Prompts estimated together and saved as one shard: the unit a rerun resumes from."""
    seed: int | None = None
    """Sampling seed; defaults to the manifest's seed."""

    def __post_init__(self) -> None:
        keep = self.keep_pass_rate
        checks = {
            "num_samples": self.num_samples >= 1,
            "temperature": self.temperature > 0,
            "top_p": 0 < self.top_p <= 1,
            "max_new_tokens": self.max_new_tokens >= 1,
            "batch_size": self.batch_size >= 1,
            "keep_pass_rate": keep is None or (len(keep) == 2 and 0 <= keep[0] <= keep[1] <= 1),
            "max_prompts": self.max_prompts is None or self.max_prompts >= 1,
            "prompts_per_shard": self.prompts_per_shard >= 1,
        }
        refuse_invalid(self, checks)


SCORELESS_STRATEGIES = ("uniform", "ordered")
"""The strategies that learn from no scores: what an sft stage can take, and a stage without rewards."""

# The options each strategy reads beyond the shared ones; setting another strategy's option is an error,
# so a manifest never carries a knob that silently does nothing. `uniform` is the control: no safeguards.
SAFEGUARDS = frozenset({"min_share", "repeat_window"})
STRATEGY_OPTIONS: dict[str, frozenset[str]] = {
    "uniform": frozenset(),
    "ordered": SAFEGUARDS | {"start_competence", "ramp_fraction"},
    "adaptive": SAFEGUARDS | {"start_competence", "ramp_fraction", "reestimate_every"},
    "band": SAFEGUARDS | {"band", "retire_above", "revisit_probability"},
    "bandit": SAFEGUARDS | {"boltzmann_temperature"},
    "ucb": SAFEGUARDS | {"boltzmann_temperature", "exploration"},
    "lp": SAFEGUARDS | {"lp_window"},
}
RENAMED_CURRICULUM_OPTIONS = {"learning_rate": "step_size", "temperature": "boltzmann_temperature"}
"""Old names of `CurriculumArgs` fields, still accepted (with a warning naming the new one): a grpo stage also has
the optimizer's `args.learning_rate` and the sampling `args.temperature`, which these never were."""
NEEDS_DIFFICULTY_COLUMN = frozenset({"ordered", "adaptive", "bandit", "ucb", "lp"})
DYNAMIC_SAMPLING_OPTIONS = frozenset({"screen_generations", "max_sampling_rounds"})
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

    strategy: Literal["uniform", "ordered", "adaptive", "band", "bandit", "ucb", "lp"] = "bandit"
    """uniform: TRL's shuffle (the baseline); ordered: easy to hard by the column (competence pacing);
    adaptive: the same pacing with difficulty re-estimated online (ADCL); band: prompts whose pass rate
    is inside `band`; bandit: buckets as arms valued by mean |advantage| (SEC); ucb: the same value plus
    an exploration bonus (DUMP); lp: buckets drawn in proportion to how fast their pass rate changes
    (absolute learning progress, ALP-GMM)."""
    difficulty_column: str | None = "level"
    """Data column that puts prompts in buckets, numeric (ascending = harder) or categorical; null puts
    every prompt in one bucket (only `uniform` and `band` work without buckets)."""
    num_buckets: int = Field(10, ge=2)
    """A numeric column with more distinct values than this is cut into this many quantile buckets."""
    signal_reward: str | None = None
    """The reward (by its manifest name) whose scores drive the curriculum; default: the stage's first."""
    pass_threshold: float = 0.5
    """A completion passes when its signal reward is at least this (math_accuracy scores 1 or 0)."""
    step_size: float = Field(0.3, gt=0, le=1)
    """Step size of the per-bucket moving averages (pass rate, mean |advantage|): SEC's TD(0) alpha (formerly
    `learning_rate`)."""
    min_share: float | None = Field(None, ge=0, lt=1)
    """Floor on every non-empty bucket's sampling share, so no difficulty is starved. Default: a tenth
    of every batch spread evenly, 0.1 / (number of buckets), so the floor's total stays the same however
    many buckets there are (a fixed 0.05 over 10 buckets kept half of every batch on the floor)."""
    repeat_window: int = Field(10, ge=1)
    """A prompt is drawn at most once in any this many consecutive generation batches."""
    boltzmann_temperature: float = Field(0.1, gt=0)
    """bandit, ucb: temperature of the Boltzmann (softmax) choice of a bucket by its value, in reward units (0.1
    suits rewards in [0, 1]); not the sampling temperature (formerly `temperature`)."""
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
    lp_window: int = Field(4, ge=1)
    """lp: observations (generation batches that drew the bucket) per window; progress = |recent window
    - the window before it| of the bucket's pass rate."""
    prior_column: str | None = None
    """A data column of pass rates in [0, 1] measured before training (a `difficulty` stage's
    `pass_rate`): every prompt starts with it as its pass rate, every bucket with its prompts' mean, so
    the strategies know the pool before the first draw. Null: everything starts unseen."""
    dynamic_sampling: bool = False
    """grpo only (DAPO's dynamic sampling): a group whose signal rewards all tie (zero advantage) is
    dropped and replaced by a group of another prompt drawn by the strategy, so every trained group
    carries signal; the extra generations are counted and logged (`dynamic_sampling/*`)."""
    screen_generations: int | None = Field(None, ge=2)
    """dynamic_sampling: screen each candidate prompt with this many completions first and generate the
    rest of its group only if they do not all tie (SPEED-RL's cheaper screening: a dropped prompt costs
    this many completions, not a whole group). Null: screen with the whole group (DAPO)."""
    max_sampling_rounds: int = Field(4, ge=1)
    """dynamic_sampling: rounds of replacement draws per generation batch; slots still unfilled after
    them keep tied groups (as DAPO's cap on generation batches), so the batch size never changes."""
    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, raw: Any) -> Any:
        """Accept an option by its old name (`RENAMED_CURRICULUM_OPTIONS`), warning once per name; refuse both names."""
        if not isinstance(raw, dict) or not raw.keys() & RENAMED_CURRICULUM_OPTIONS.keys():
            return raw
        renamed = dict(raw)
        for old, new in RENAMED_CURRICULUM_OPTIONS.items():
            if old not in renamed:
                continue
            if new in renamed:
                raise ValueError(f"{old} and {new} both given; {old} is the old name of {new}: keep {new} alone")
            warnings.warn(f"curriculum.{old} is deprecated; it is now curriculum.{new} (the same option)", FutureWarning, stacklevel=2)
            renamed[new] = renamed.pop(old)
        return renamed

    @field_validator(*sorted({option for options in STRATEGY_OPTIONS.values() for option in options}))
    @classmethod
    def _option_of_the_strategy(cls, value: Any, info: ValidationInfo) -> Any:
        strategy = info.data.get("strategy")
        if strategy is not None and info.field_name not in STRATEGY_OPTIONS[strategy]:
            users = [name for name, options in STRATEGY_OPTIONS.items() if info.field_name in options]
            raise ValueError(f"an option of {', '.join(users)}, not of strategy {strategy!r}")
        return value

    @field_validator(*sorted(DYNAMIC_SAMPLING_OPTIONS))
    @classmethod
    def _option_of_dynamic_sampling(cls, value: Any, info: ValidationInfo) -> Any:
        if not info.data.get("dynamic_sampling"):
            raise ValueError("an option of dynamic_sampling, which is off; set dynamic_sampling: true")
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

    def check(self, kind: str, draws: str, columns: Collection[str], on_policy: OnPolicyArgs | None = None) -> str | None:
        """What is wrong with this curriculum for a `kind` stage whose curriculum draws `draws` (its row's
        `curriculum_draws`), with its `on_policy` block if any, and whose data has `columns`; or None."""
        if draws == "rows" and self.strategy not in SCORELESS_STRATEGIES:
            return f"{kind} stages score nothing, so they take strategy {' or '.join(SCORELESS_STRATEGIES)}, not {self.strategy!r}"
        if draws == "rounds" and on_policy is None:
            return f"{kind} stages draw prompts only with on_policy (fixed pairs have no prompts to choose); add on_policy"
        if draws == "rounds" and on_policy.prompts_per_round is None:
            return "a curriculum chooses each round's prompts; set on_policy.prompts_per_round (without it every round takes them all)"
        if draws == "rounds" and self.signal_reward is not None:
            return f"a {kind} curriculum reads each completion's total score (what its pairs are ranked by); remove signal_reward"
        if self.dynamic_sampling and draws != "groups":
            return f"dynamic_sampling replaces GRPO groups; {kind} stages have none"
        for option in ("difficulty_column", "prior_column"):
            column = getattr(self, option)
            if column is not None and column not in columns:
                return f"{option} {column!r} is not a column of the data; it has {', '.join(sorted(columns))}"
        if CURRICULUM_INDEX_COLUMN in columns:
            return f"the data already has a column {CURRICULUM_INDEX_COLUMN!r}, which the curriculum adds itself"
        return None


RELIFT_INDEX_COLUMN = "relift_index"
"""The column a grpo stage with `relift:` adds to its training data (the row index), so a failed group's
scores lead back to the row whose demonstration is replayed."""


class ReliftArgs(BaseModel):
    """A grpo stage's `relift:` block (ReLIFT, Ma et al. 2025): prompts whose whole GRPO group fails go to a
    hard buffer, and once it holds `sft_batch_size` of them the stage takes one SFT step on their
    demonstrations between GRPO steps, at most one per `every_n_steps` GRPO steps. Implemented in
    stages/relift.py."""

    model_config = ConfigDict(extra="forbid")

    demonstration_column: str = "completion"
    """Data column holding each prompt's demonstration (a worked solution): the SFT target after the prompt."""
    signal_reward: str | None = None
    """The reward (by its manifest name) that decides whether a completion passed; default: the stage's first."""
    pass_threshold: float = 0.5
    """A completion passes when its signal reward is at least this; a group with no pass is a failed group."""
    sft_batch_size: int = Field(16, ge=1)
    """Demonstrations per SFT step (across all processes; a multiple of their number): the buffer must
    hold this many before a step is taken, and the step takes the oldest this many out of it."""
    replay_solved: int = Field(0, ge=0)
    """Demonstrations of prompts GRPO has solved (their latest group passed) added to each SFT step, drawn
    at random (the same rows on every rank and on resume). SFT on hard demonstrations alone pulls a model
    off what it solves: on the tiny benchmark levels 1-3 fell from 0.67 to 0.04 in 65 such steps, and
    mixing solved ones in keeps them (BENCHMARKS.md, "ReLIFT"). 0: hard demonstrations only, as ReLIFT."""
    every_n_steps: int = Field(1, ge=1)
    """The buffer is checked after every this many GRPO steps: at most one SFT step per this many."""
    learning_rate: float | None = Field(None, gt=0)
    """Learning rate of the SFT step; null: the GRPO step's current one."""
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = "constant"
    """How `learning_rate` moves over the stage's steps (TRL's names): held, or decayed to 0 at the last
    step. Early large SFT steps teach what GRPO cannot find; late small ones stop pulling the model off
    what GRPO has sharpened since (BENCHMARKS.md, "ReLIFT"). Needs `learning_rate`: null follows GRPO's."""
    max_length: int = Field(512, ge=8)
    """Prompt + demonstration tokens kept per row (the end of a longer demonstration is cut)."""

    def check(self, columns: Collection[str], reward_names: Collection[str], world_size: int) -> tuple[str, str] | None:
        """(field, what is wrong) with this block for a grpo stage whose data has `columns` and rewards
        `reward_names`, launched on `world_size` processes, or None."""
        if self.demonstration_column not in columns:
            return "demonstration_column", f"{self.demonstration_column!r} is not a column of the data; it has {', '.join(sorted(columns))}"
        if self.signal_reward is not None and self.signal_reward not in reward_names:
            return "signal_reward", f"{self.signal_reward!r} is not one of the stage's rewards: {', '.join(reward_names)}"
        if RELIFT_INDEX_COLUMN in columns:
            return "demonstration_column", f"the data already has a column {RELIFT_INDEX_COLUMN!r}, which relift adds itself"
        if self.sft_batch_size % world_size:
            return "sft_batch_size", f"{self.sft_batch_size} is not a multiple of the {world_size} processes the stage is launched on (each takes an equal share)"
        if self.lr_scheduler_type != "constant" and self.learning_rate is None:
            return "lr_scheduler_type", f"{self.lr_scheduler_type!r} decays learning_rate, which is unset (null follows the GRPO step's own rate and schedule)"
        if self.replay_solved % world_size:
            return "replay_solved", f"{self.replay_solved} is not a multiple of the {world_size} processes the stage is launched on (each takes an equal share)"
        return None


class ReplayBlock(BaseModel):
    """`replay: {stage: NAME, fraction: F}` in a training stage's `data`: a share F of the rows it trains on
    is drawn (seeded by the manifest seed, without replacement) from that earlier stage's training data,
    against forgetting what it taught. In a stage file, `data` is that stage's resolved data block (its own
    replay left out), so the stage process reads only its stage file."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    fraction: float
    data: DataBlock | None = Field(None, exclude_if=lambda data: data is None)

    @field_validator("fraction")
    @classmethod
    def _a_share(cls, fraction: float) -> float:
        if not 0 < fraction < 1:
            raise ValueError("the share of the stage's rows drawn from the earlier stage, strictly between 0 and 1")
        return fraction


class DataBlock(BaseModel):
    """A `data:` block: a recipe name; the other keys are that recipe's options (data_recipes validates them),
    except `replay` (ReplayBlock), which is gradus's.

    In a stage file, a `stage_output` block also carries `path`, the dataset directory the producer wrote."""

    model_config = ConfigDict(extra="allow")

    recipe: str
    replay: ReplayBlock | None = Field(None, exclude_if=lambda replay: replay is None)  # absent, it changes no fingerprint

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


ReplayBlock.model_rebuild()


class RewardBlock(BaseModel):
    """A resolved reward: a `model` option that named an earlier stage is that stage's model directory."""

    model_config = ConfigDict(extra="forbid")

    name: str
    weight: float = 1.0
    options: dict[str, Any] = {}


class Decontamination(BaseModel):
    """Drop (or only report) training problems that share an n-gram with any of these eval sets."""

    model_config = ConfigDict(extra="forbid")

    against: list[DataBlock]
    ngram: int
    remove: bool
    max_removed_fraction: float
    """A removal that would drop a larger share of the rows is refused: a check gone wrong, not contamination."""


class StageFile(BaseModel):
    """`<run_dir>/<stage>/stage.yaml`: everything a stage process reads. Its outputs, all in `stage_dir`:

        checkpoints/     the trainer's output_dir (checkpoint-N/ for resume)
        model/           the final model + tokenizer, what a later stage's `model: <this stage>` loads
        metrics.json     the numbers `gradus status` shows and the ledger records
        done.json        written last: its presence (with the fingerprint) means the stage finished
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    fingerprint: str
    seed: int
    stage_dir: Path
    model_path: str
    teacher_path: str | None = None
    """A distillation stage's teacher, as a path or hub id the trainer loads."""
    data: DataBlock
    eval_data: DataBlock | None = None
    args: dict[str, Any] = {}
    peft: dict[str, Any] | None = None
    rewards: list[RewardBlock] = []
    on_policy: OnPolicyArgs | None = None
    curriculum: CurriculumArgs | None = None
    relift: ReliftArgs | None = None
    decontaminate: Decontamination | None = None
    num_processes: int = 1
    """Processes the stage is launched with, across all machines (the world size its batch sizes assume)."""

    @property
    def checkpoint_dir(self) -> Path:
        return self.stage_dir / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.stage_dir / "model"

    @classmethod
    def read(cls, path: str | Path) -> StageFile:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))

    def write(self, path: str | Path) -> None:
        # Unset fields stay out: a curriculum block lists only the options its strategy takes.
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json", exclude_unset=True), sort_keys=False))
