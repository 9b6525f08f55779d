"""Stage kinds: what the pipeline knows of each kind, declared once, without importing the kind's module.

A kind is a module that `accelerate launch -m <module> <stage.yaml>` runs, plus one `StageKind` row: the
planner, the manifest checks and the preflight read the row and nothing else, so a new kind costs one
module and one row, and nothing in `pipeline/` names a kind. The row is torch-free (the CLI imports it);
what only the kind's own code can judge runs in the preflight subprocess, through two functions of the
kind's module: `trainer_args(stage, planned_world_size)` builds its trainer config, and an optional
`preflight(stage, config)` returns `(field, message)` for what its trainer or its wiring would refuse.

Kinds are found as rewards are (rewards/registry.py): a built-in name, then an entry point of an installed
distribution in group `gradus.kinds` whose value is a `StageKind`, then a `package.module:ATTRIBUTE` path.
The built-ins are also declared as entry points in pyproject.toml (a test keeps the two lists equal), so
`importlib.metadata.entry_points(group="gradus.kinds")` lists every kind of an installed gradus.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from importlib.metadata import entry_points
from typing import Literal

from data_recipes import suggest

ENTRY_POINT_GROUP = "gradus.kinds"
BLOCKS = frozenset({"curriculum", "relift", "on_policy"})
"""The optional blocks of a stage a kind may accept (a kind that lists none refuses them at plan time)."""


class KindError(ValueError):
    """A manifest names a stage kind that cannot be found, or a plugin's declaration is not a `StageKind`."""


@dataclasses.dataclass(frozen=True)
class StageKind:
    """What the pipeline must know about a stage kind without importing its module."""

    module: str
    """Run as `python -m <module> <stage.yaml>` (under accelerate); it reads the stage file and writes done.json last."""
    config: str
    """`module:Class` whose fields a manifest's `args` are (a TRL config, or a gradus args dataclass)."""
    produces_model: bool
    """Whether a later stage (or a reward) can start from this stage's `model/`; such a stage is a training stage:
    its data can be replayed and is decontaminated against the eval sets."""
    trainer: bool = False
    """The config is built by the module's `trainer_args` in the preflight subprocess (it needs TRL). False: the
    config is a light dataclass the manifest checks construct in-process (names, types, `__post_init__`)."""
    needs_columns: tuple[tuple[str, ...], ...] = (("prompt",),)
    """The data must have every column of one of these alternatives."""
    output_columns: tuple[str, ...] = ()
    """A kind that writes `<stage>/dataset`: its columns (what `stage_output` gives a later stage)."""
    scored_samples: bool = False
    """Writes each prompt's completions with their scores (what `accepted_samples` reads)."""
    rewards: Literal["needed", "optional", "with on_policy"] = "optional"
    """Whether the stage must list rewards, may, or may only with an `on_policy` block (which ranks by them)."""
    blocks: frozenset[str] = frozenset()
    """Which of BLOCKS the kind accepts."""
    curriculum_draws: Literal["rows", "groups", "prompts", "rounds"] = "prompts"
    """What a `curriculum` block (where the kind accepts one) chooses, which decides what it can do: training rows
    that are never scored (sft: only a scoreless strategy), GRPO groups (dynamic sampling can refill them),
    prompts of on-policy samples (distill), or each on-policy round's prompts (dpo: needs on_policy with
    prompts_per_round, and reads the completions' total score)."""
    model_class: Literal["causal_lm", "token_classifier"] = "causal_lm"
    """What its `model/` is (a kind that produces one): a causal LM generates, so any stage can start from it or learn
    from it; a token classifier (a PRM) scores steps, and only a kind making the same can start from it."""
    teacher: Literal["needed", "refused"] = "refused"
    """Whether the stage names a `teacher:` model it learns from (any model reference, like `model:`)."""
    rendered_together: tuple[str, ...] = ()
    """Columns its trainer takes all as chat messages or all as text (a mix fails TRL at launch)."""
    evaluates: bool = False
    """Its data is an eval set: training stages are decontaminated against it, and the report tables read its metrics."""
    needs_generation_markers_with: str | None = None
    """An `args` field that, when true, makes the trainer find the assistant's tokens by the chat template's
    `{% generation %}` markers (sft's `assistant_only_loss`): the plan refuses it on a template without them."""

    def __post_init__(self) -> None:
        unknown = set(self.blocks) - BLOCKS
        if unknown:
            raise KindError(f"a stage kind accepts blocks among {', '.join(sorted(BLOCKS))}, not {', '.join(sorted(unknown))}")

    def accepts(self, block: str) -> bool:
        return block in self.blocks


def load_attribute(path: str) -> object:
    """The object a `package.module:attribute` path names, imported (and so run) as it is."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


# A curriculum (stages/curriculum/) attaches to grpo (TRL's prompt sampler replaced), distill (the same, one sample a
# prompt), dpo with `on_policy` (each round's prompts drawn by the sampler, its evidence the pair sampling's scores),
# and sft (`ordered` only: easy-to-hard pacing needs no scores); each row's `curriculum_draws` says which.
SFT = StageKind(module="stages.sft", config="trl:SFTConfig", produces_model=True, trainer=True,
                needs_columns=(("messages",), ("prompt", "completion")), blocks=frozenset({"curriculum"}), curriculum_draws="rows",
                rendered_together=("prompt", "completion"), needs_generation_markers_with="assistant_only_loss")
EVAL = StageKind(module="stages.eval", config="stages.arguments:EvalArgs", produces_model=False,
                 needs_columns=(("prompt", "answer"),), scored_samples=True, evaluates=True)
GRPO = StageKind(module="stages.grpo", config="trl:GRPOConfig", produces_model=True, trainer=True, rewards="needed",
                 blocks=frozenset({"curriculum", "relift"}), curriculum_draws="groups")
DPO = StageKind(module="stages.dpo", config="trl:DPOConfig", produces_model=True, trainer=True, rewards="with on_policy",
                needs_columns=(("prompt", "chosen", "rejected"),), blocks=frozenset({"curriculum", "on_policy"}), curriculum_draws="rounds",
                rendered_together=("prompt", "chosen", "rejected"))
PRM_LABEL = StageKind(module="stages.prm_label", config="stages.arguments:PRMLabelArgs", produces_model=False,
                      needs_columns=(("prompt", "answer"),),
                      output_columns=("prompt", "answer", "level", "steps", "labels", "hard_labels", "rollouts"))
PRM = StageKind(module="stages.prm", config="stages.prm:PRMConfig", produces_model=True, trainer=True,
                needs_columns=(("prompt", "steps", "labels"),), model_class="token_classifier")
DIFFICULTY = StageKind(module="stages.difficulty", config="stages.arguments:DifficultyArgs", produces_model=False,
                       rewards="needed", scored_samples=True,
                       output_columns=("prompt", "answer", "level", "pass_rate", "scores", "samples"))  # the pool's own columns pass through too
DISTILL = StageKind(module="stages.distill", config="trl:DistillationConfig", produces_model=True, trainer=True,
                    teacher="needed", blocks=frozenset({"curriculum"}))
BUILTIN_KINDS: dict[str, StageKind] = {"sft": SFT, "eval": EVAL, "grpo": GRPO, "dpo": DPO, "prm_label": PRM_LABEL, "prm": PRM,
                                       "difficulty": DIFFICULTY, "distill": DISTILL}
"""The built-in kinds by name; pyproject.toml declares each as an entry point too (tests/stages/test_kinds.py)."""


@functools.lru_cache(maxsize=None)
def stage_kind(name: str) -> StageKind:
    """The kind a manifest's `kind:` names: a built-in, an entry point in `gradus.kinds`, or `module:attribute`."""
    if name in BUILTIN_KINDS:
        return BUILTIN_KINDS[name]
    plugin = next((point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name == name), None)
    if plugin is not None:
        return _declared(name, plugin.load, f"entry point {plugin.value!r}")
    if ":" in name:
        return _declared(name, lambda: load_attribute(name), "module path")
    known = kind_names()
    raise KindError(f"unknown kind {name!r}{suggest(name, known)}; kinds: {', '.join(known)} (or a package.module:KIND path)")


def kind_names() -> list[str]:
    """Every kind known by name: the built-ins, then those installed distributions declare."""
    return list(dict.fromkeys([*BUILTIN_KINDS, *(point.name for point in entry_points(group=ENTRY_POINT_GROUP))]))


def _declared(name: str, load: object, where: str) -> StageKind:
    try:
        declared = load()  # type: ignore[operator]
    except Exception as error:  # a plugin's import error is the user's to read, as one line
        raise KindError(f"kind {name!r}: loading its {where} failed: {type(error).__name__}: {error}") from None
    if not isinstance(declared, StageKind):
        raise KindError(f"kind {name!r}: its {where} is a {type(declared).__name__}, not a stages.kinds.StageKind")
    return declared
