"""What `stages/trl_hooks.py` relies on inside TRL, transformers and accelerate, pinned to the installed TRL.

Each assertion is one coupling the hooks module names in its docstring. When TRL is upgraded this file
fails first and says which coupling to re-check; then move `CHECKED_WITH` to the new version.
"""

from __future__ import annotations

import inspect

import pytest
import trl
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from stages.curriculum.sampler import RepeatLayout
from stages.trl_hooks import checkpoint_file, distillation_layout, grpo_layout, trainer_resume_position, unwrapped_optimizer

CHECKED_WITH = "1.16.0"


def test_the_couplings_were_checked_against_the_installed_trl():
    assert trl.__version__ == CHECKED_WITH, (
        f"trl {trl.__version__} is installed; stages/trl_hooks.py was checked against {CHECKED_WITH}: "
        "re-check every coupling listed in its docstring, then update CHECKED_WITH"
    )


def test_grpo_trainer_builds_its_sampler_in_the_overridden_method_as_grpo_layout_says():
    method = GRPOTrainer._get_train_sampler
    assert list(inspect.signature(method).parameters) == ["self", "dataset"]
    source = inspect.getsource(method)
    assert "RepeatSampler(" in source
    for argument in ("mini_repeat_count=self.num_generations", "batch_size=self.args.generation_batch_size // self.num_generations",
                     "repeat_count=self.num_iterations * self.args.steps_per_generation"):
        assert argument in source, argument
    args = GRPOConfig(output_dir="unused", use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
                      gradient_accumulation_steps=3, num_iterations=2)
    layout = grpo_layout(args)
    assert (layout.num_generations, layout.prompts_per_generation, layout.repeat_count) == (4, 3, 6)
    assert "repeat_count" in inspect.signature(RepeatSampler).parameters


def test_distillation_trainer_builds_its_sampler_as_distillation_layout_says():
    """The curriculum add-on sizes its sampler for on-policy distillation with `distillation_layout`."""
    from trl import DistillationConfig, DistillationTrainer

    method = DistillationTrainer._get_train_sampler
    assert list(inspect.signature(method).parameters) == ["self", "dataset"]
    source = inspect.getsource(method)
    assert "RepeatSampler(" in source and "mini_repeat_count=1," in source and "repeat_count=self.args.gradient_accumulation_steps," in source
    assert ("generation_batch_size = (\n            self.args.per_device_train_batch_size\n            * self.accelerator.num_processes\n"
            "            * self.args.gradient_accumulation_steps\n        )") in source and "batch_size=generation_batch_size," in source
    args = DistillationConfig(output_dir="unused", use_cpu=True, bf16=False, per_device_train_batch_size=4, gradient_accumulation_steps=3)
    assert distillation_layout(args, num_processes=2) == RepeatLayout(num_generations=1, prompts_per_generation=24, repeat_count=3)


def test_the_sampler_override_reads_the_layout_of_the_repeat_sampler_the_trainer_would_build():
    """`sampling_trainer_class` checks gradus's sampler against the `RepeatSampler` TRL's method returns."""
    sampler = RepeatSampler(list(range(12)), mini_repeat_count=4, batch_size=3, repeat_count=2, shuffle=False)
    assert (sampler.mini_repeat_count, sampler.batch_size, sampler.repeat_count) == (4, 3, 2)


def test_reward_functions_receive_log_metric_and_dataset_columns():
    source = inspect.getsource(GRPOTrainer)
    assert 'reward_kwargs["log_metric"] = self._log_metric' in source


def test_rewards_are_called_with_the_columns_and_the_trainer_state_as_score_as_trl_does():
    calculate = inspect.getsource(GRPOTrainer._calculate_rewards)
    assert 'keys = [key for key in inputs[0] if key not in ["prompt", "completion", "completion_ids"]]' in calculate
    assert 'reward_kwargs["trainer_state"] = self.state' in calculate
    assert "reward_func(\n" in calculate and "prompts=prompts, completions=completions, completion_ids=completion_ids_list, **reward_kwargs" in calculate


def test_relift_reads_grpos_learning_rate_through_accelerates_optimizer_wrapper():
    """HF Trainer replaces its optimizer by what `accelerator.prepare` returns, an `AcceleratedOptimizer`
    holding the torch optimizer as `optimizer` (`unwrapped_optimizer`)."""
    import torch
    from accelerate.optimizer import AcceleratedOptimizer
    from transformers import Trainer

    assert "self.optimizer = optimizer" in inspect.getsource(AcceleratedOptimizer.__init__)
    assert "self.optimizer = self.accelerator.prepare(self.optimizer)" in inspect.getsource(Trainer)
    plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    assert unwrapped_optimizer(plain) is plain


@pytest.mark.parametrize("batches_per_epoch, accumulation, step, expected", [(10, 2, 7, (1, 4)), (9, 2, 5, (1, 0)), (4, 4, 3, (3, 0))])
def test_resume_position_matches_hf_trainers_update_arithmetic(batches_per_epoch, accumulation, step, expected):
    from transformers import Trainer

    # HF counts updates per epoch as ceil(batches / accumulation) and skips the rest of the epoch's batches.
    assert "num_update_steps_per_epoch" in inspect.getsource(Trainer)
    assert trainer_resume_position(step, batches_per_epoch, accumulation) == expected


def test_checkpoints_are_written_where_the_callback_looks():
    from transformers.trainer import Trainer
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    assert PREFIX_CHECKPOINT_DIR == "checkpoint"
    assert 'f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"' in inspect.getsource(Trainer._save_checkpoint)
    assert checkpoint_file("out", 7, "state.npz").as_posix() == "out/checkpoint-7/state.npz"


def test_on_step_end_runs_after_the_optimizer_step_and_before_the_checkpoint_save():
    """The callbacks write their state (and relift takes its SFT step) in `on_step_end`: the optimizer has
    stepped and zeroed its gradients, and the checkpoint of this step is not written yet."""
    from transformers import Trainer

    loop = inspect.getsource(Trainer._run_epoch)
    order = [loop.index(text) for text in ("self.optimizer.step()", "model.zero_grad()", "self.state.global_step += 1",
                                           "self.callback_handler.on_step_end(", "self._maybe_log_save_evaluate(")]
    assert order == sorted(order)


def test_metrics_appended_to_the_trainers_train_metrics_are_averaged_into_the_next_log():
    """`log_train_metric` (relift's SFT steps) appends to `_metrics["train"]`, which `log` averages and clears."""
    assert 'self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}' in inspect.getsource(GRPOTrainer.__init__)
    log = inspect.getsource(GRPOTrainer.log)
    assert "for key, val in self._metrics[mode].items():" in log and "self._metrics[mode].clear()" in log


def test_dynamic_sampling_hands_trl_its_generations_through_generate():
    """`DynamicSampling.fill` generates through `_generate` and hands the results back when TRL's
    `_generate_and_score_completions` calls it once, with the prompts of the rows it was given."""
    scoring = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == ["self", "inputs"]
    assert scoring.count("self._generate(prompts)") == 1 and 'prompts = [x["prompt"] for x in inputs]' in scoring
    assert "self._pending_metrics" in scoring  # what `_log_metric` collected is logged with this batch
    assert list(inspect.signature(GRPOTrainer._generate).parameters) == ["self", "prompts"]
    generate = inspect.getsource(GRPOTrainer._generate)
    assert "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images" in generate
    assert list(inspect.signature(GRPOTrainer._log_metric).parameters) == ["self", "name", "value"]
    init = inspect.getsource(GRPOTrainer.__init__)
    assert "data_collator=identity" in init  # the rows TRL scores are `train_dataset[i]`, as replacements are
    assert "self.async_loop" in inspect.getsource(GRPOTrainer)  # where async rewards are awaited


def test_hf_trainer_asks_the_overridden_method_for_the_sft_sampler():
    from transformers import Trainer

    assert list(inspect.signature(Trainer._get_train_sampler).parameters) == ["self", "train_dataset"]
    assert "sampler_fn=self._get_train_sampler" in inspect.getsource(Trainer.get_train_dataloader)


def test_distillation_trainer_hands_its_generation_hook_the_rows_and_returns_the_completion_tensors():
    """`scoring_on_policy` overrides `_generate_and_score_completions(inputs)`: the rows are the dataset's
    (identity collator), the output holds `completion_ids` and `completion_mask`, and `_metrics[mode]` lists are
    averaged by its `log`."""
    from trl import DistillationTrainer

    method = DistillationTrainer._generate_and_score_completions
    assert list(inspect.signature(method).parameters) == ["self", "inputs"]
    source = inspect.getsource(method)
    assert 'prompts = [x["prompt"] for x in inputs]' in source
    assert '"completion_ids": completion_ids,' in source and '"completion_mask": completion_mask,' in source
    assert "data_collator=identity" in inspect.getsource(DistillationTrainer.__init__)
    log = inspect.getsource(DistillationTrainer.log)
    assert "for key, val in self._metrics[mode].items():" in log and "sum(valid) / len(valid)" in log
