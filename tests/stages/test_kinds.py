"""The kind table (stages/kinds.py) is what the pipeline knows of a kind: each row must match its module."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from stages.kinds import BUILTIN_KINDS, KindError, load_attribute, stage_kind


@pytest.mark.parametrize("name", sorted(BUILTIN_KINDS))
def test_each_row_names_a_module_that_runs_a_stage_and_the_config_its_args_are(name):
    kind = BUILTIN_KINDS[name]
    module = importlib.import_module(kind.module)
    assert callable(module.run)
    assert dataclasses.is_dataclass(load_attribute(kind.config))
    # A trainer kind's config is built by its module in the preflight; the others' in-process, without TRL.
    assert hasattr(module, "trainer_args") == kind.trainer
    assert not hasattr(module, "preflight") or kind.trainer


def test_an_unknown_kind_is_refused_with_a_suggestion_and_the_known_ones():
    with pytest.raises(KindError, match=r"unknown kind 'gpro' \(did you mean 'grpo'\?\); kinds: sft, eval, grpo"):
        stage_kind("gpro")


def test_a_module_path_to_something_that_is_not_a_kind_is_refused():
    with pytest.raises(KindError, match="kind 'stages.kinds:BLOCKS': its module path is a frozenset, not a stages.kinds.StageKind"):
        stage_kind("stages.kinds:BLOCKS")


def test_pyproject_declares_every_built_in_kind_as_an_entry_point():
    """Built-in kinds register as plugins do; the table is what a source checkout reads without metadata."""
    import tomllib

    from tests.conftest import REPO

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["gradus.kinds"]
    assert {name: load_attribute(value) for name, value in declared.items()} == BUILTIN_KINDS
