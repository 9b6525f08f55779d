"""The `prm` reward: registry, plan-time checks, and scores from a real (tiny, untrained) token classifier."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

import rewards
from rewards.prm import ProcessReward
from rewards.steps import aggregate, score_steps, split_steps

PROMPTS = ["Q: 17 -2 +2\nA:", "Q: 5 +2\nA:", "Q: 9 *2 -1\nA:", "Q: 3 +3\nA:"]
COMPLETIONS = [
    " 17-2=15\n15+2=17\n\\boxed{17}",
    [{"role": "assistant", "content": " 5+2=7\n\\boxed{7}"}],  # conversational, as TRL passes it
    " 9*2=18\n\n18-1=17\n\\boxed{17}\n",  # blank line and trailing separator: not steps
    "",  # no step at all
]


def test_prm_is_a_built_in_checked_at_plan_time_without_loading_anything():
    assert rewards.resolve("prm") is ProcessReward
    rewards.check("prm", {"model": "prm_stage", "aggregate": "product"}, columns={"prompt"})  # a stage name: no path yet
    with pytest.raises(rewards.RewardSpecError, match="has no option 'aggregation' \\(did you mean 'aggregate'\\?\\)"):
        rewards.check("prm", {"model": "m", "aggregation": "min"}, columns={"prompt"})
    with pytest.raises(rewards.RewardSpecError, match="needs option 'model'"):
        rewards.check("prm", {}, columns={"prompt"})
    with pytest.raises(rewards.RewardSpecError, match="aggregate must be one of min, mean, last, product"):
        rewards.build("prm", {"model": "m", "aggregate": "max"})
    with pytest.raises(rewards.RewardSpecError, match="separator"):
        rewards.build("prm", {"model": "m", "separator": ""})


def test_checking_and_building_the_reward_imports_no_torch():
    """`gradus plan` checks rewards; the PRM and torch load only when the reward is first called."""
    import subprocess

    code = ("import sys, rewards; rewards.check('prm', {'model': 'x'}, {'prompt'}); rewards.build('prm', {'model': 'x'}); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    repository = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repository)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_reward_is_the_aggregate_of_the_step_scores_and_zero_without_steps(prm_dir):
    from rewards.prm import load_prm

    reward = rewards.build("prm", {"model": str(prm_dir), "aggregate": "min", "batch_size": 2})
    scores = reward(prompts=PROMPTS, completions=COMPLETIONS, answer=["17", "7", "17", "6"])
    assert reward.errors == 0 and len(scores) == 4
    model, tokenizer = load_prm(str(prm_dir))
    texts = [COMPLETIONS[0], COMPLETIONS[1][0]["content"], COMPLETIONS[2]]
    step_scores = score_steps(model, tokenizer, PROMPTS[:3], [split_steps(text) for text in texts])
    assert [len(row) for row in step_scores] == [3, 2, 3]
    assert scores[:3] == pytest.approx([aggregate(row, "min") for row in step_scores], abs=1e-5)
    assert scores[3] == 0.0
    assert len({round(score, 6) for row in step_scores for score in row}) > 3  # the head does tell steps apart
    for how in ("mean", "last", "product"):
        other = rewards.build("prm", {"model": str(prm_dir), "aggregate": how})
        assert other(prompts=PROMPTS, completions=COMPLETIONS)[:3] == pytest.approx(
            [aggregate(row, how) for row in step_scores], abs=1e-5)


def test_reward_sits_beside_math_accuracy_with_trls_signature_and_pickles(prm_dir):
    built = [rewards.build(name, options) for name, options in
             [("math_accuracy", {}), ("prm", {"model": str(prm_dir), "aggregate": "mean"})]]
    columns = {"answer": ["17", "7", "17", "6"], "completion_ids": [[1]] * 4, "trainer_state": None}
    accuracy, process = (reward_fn(prompts=PROMPTS, completions=COMPLETIONS, **columns) for reward_fn in built)
    assert accuracy == [1.0, 1.0, 1.0, 0.0]
    assert all(0.0 <= score <= 1.0 for score in process) and process[3] == 0.0
    assert rewards.required_columns(built[1]) == set()
    restored = pickle.loads(pickle.dumps(built[1].reward_fn))
    assert restored._loaded is None  # the model is not pickled; it reloads on first use
    assert restored(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(process, abs=1e-6)


def test_the_prm_loads_whole_even_inside_a_zero3_stage(prm_dir):
    """Under ZeRO-3, transformers partitions every model loaded in the process; the PRM must not be."""
    from transformers.integrations import deepspeed as hf_deepspeed

    from rewards.prm import load_prm

    class ZeroThree:
        config = {"zero_optimization": {"stage": 3}}

        def is_zero3(self):
            return True

    stage_config = ZeroThree()
    hf_deepspeed.set_hf_deepspeed_config(stage_config)
    try:
        assert hf_deepspeed.is_deepspeed_zero3_enabled()
        model, _ = load_prm(str(prm_dir))
        assert model.score.weight.shape == (1, model.config.hidden_size)  # a partitioned weight would be empty
        assert hf_deepspeed.is_deepspeed_zero3_enabled()  # the stage's setting is back
    finally:
        hf_deepspeed.unset_hf_deepspeed_config()
