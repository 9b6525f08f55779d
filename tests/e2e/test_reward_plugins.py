"""A third-party reward package, found through the `gradus.rewards` entry point, used by name in a
manifest; and a `module:function` path next to it. Both really run inside a grpo stage."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import TINY_MODEL, gradus, write_manifest

pytestmark = pytest.mark.slow

PLUGIN = textwrap.dedent('''
    """A reward package as a user would ship it."""

    def ends_with_answer(completions, answer, **kwargs):
        return [1.0 if text.rstrip().endswith("{" + gold + "}") else 0.0 for text, gold in zip(completions, answer)]

    def short(completions, **kwargs):
        return [-len(text) / 100 for text in completions]
''')


def install_plugin(site):
    """Install the package the way pip leaves one: the module plus a dist-info with entry points."""
    site.mkdir()
    (site / "acme_rewards.py").write_text(PLUGIN)
    dist_info = site / "acme_rewards-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rewards\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[gradus.rewards]\nacme_answer = acme_rewards:ends_with_answer\n")


def test_entry_point_and_module_path_rewards_run_in_a_grpo_stage(tmp_path):
    install_plugin(tmp_path / "site")
    run_dir = tmp_path / "run"
    manifest = {
        "run_dir": str(run_dir), "seed": 0, "base_model": TINY_MODEL,
        "stages": [{
            "name": "grpo", "kind": "grpo",
            "data": {"recipe": "synthetic_arithmetic", "levels": [1], "num_examples": 64},
            "rewards": [{"name": "acme_answer"}, {"name": "acme_rewards:short", "weight": 0.1}],
            "args": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 16,
                     "logging_steps": 1, "save_strategy": "no", "gradient_checkpointing": False, "report_to": "none"},
        }],
    }
    path = write_manifest(tmp_path / "m.yaml", manifest)
    env = {"PYTHONPATH": str(tmp_path / "site")}

    unknown = gradus("plan", str(path))  # without the package installed, the name is unknown
    assert unknown.returncode == 2 and "acme_answer" in unknown.stdout

    result = gradus("run", str(path), env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    state = json.loads((run_dir / "grpo" / "metrics.json").read_text())
    assert state["rewards/acme_answer/mean"] is not None
    assert state["rewards/acme_rewards:short/mean"] < 0  # the module:function reward really scored completions
