"""Fixtures for the PRM tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prm_dir(tmp_path_factory) -> Path:
    """The smallest tiny model with a fresh one-logit token-classification head, saved as a PRM would be."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from stages.models import build_tiny_model
    from tests.conftest import TINY_MODEL

    base = tmp_path_factory.mktemp("prm") / "base"
    spec = {"arch": "llama", "max_position_embeddings": 512, **TINY_MODEL["tiny"]}
    build_tiny_model(spec, 0, base)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(base, num_labels=1)
    with torch.no_grad():  # a visible head, so scores differ from step to step
        model.score.weight.normal_(0, 1.0)
    out = base.parent / "prm"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out
