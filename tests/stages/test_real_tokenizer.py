"""The traps a real tokenizer sets, on SmolLM2-135M-Instruct's (pad == eos == `<|im_end|>`, a ChatML template that
inserts a system turn of its own). Each test fails on the broken behaviour it names:

* eos masked out of SFT labels because it is also the pad token (the model never learns to stop);
* a chat template applied twice, or special tokens added on top of it (a prompt the model never saw);
* generation that does not stop at the end of turn;
* completions cut at the length limit going uncounted.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from transformers import AutoModelForCausalLM

from data_recipes.synthetic import SyntheticOptions, generate as synthetic_rows
from stages import common

pytestmark = [pytest.mark.slow, pytest.mark.ci]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path):
    return common.load_tokenizer(str(smollm2_dir))


@pytest.fixture(scope="module")
def model(smollm2_dir: Path):
    return AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()


def sft_batch(smollm2_dir: Path, tokenizer, rows: list[dict], tmp_path: Path) -> dict:
    """What TRL's SFTTrainer, as the sft stage builds it, feeds the model for these rows: one collated batch."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(tmp_path), max_length=256, report_to="none", use_cpu=True, bf16=False)
    trainer = SFTTrainer(model=str(smollm2_dir), args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer)
    return trainer.data_collator([trainer.train_dataset[index] for index in range(len(rows))])


def test_the_real_tokenizer_pads_with_its_eos(tokenizer):
    """The premise of the eos trap: a collator that masks padding by token id masks every eos too."""
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("format", ["prompt_completion", "conversational_prompt_completion"])
def test_sft_learns_the_eos_that_ends_each_completion_although_pad_is_eos(format, smollm2_dir, tokenizer, tmp_path):
    rows = synthetic_rows(SyntheticOptions(levels=[1, 3], per_level=1, wording="question", format=format))
    rows = [{"prompt": row["prompt"], "completion": row["completion"]} for row in rows]
    batch = sft_batch(smollm2_dir, tokenizer, rows, tmp_path)
    eos = tokenizer.eos_token_id
    for labels, attention in zip(batch["labels"].tolist(), batch["attention_mask"].tolist()):
        trained = [token for token, mask in zip(labels, attention) if mask and token != -100]
        # The end of turn is trained on, and nothing but the newline ChatML writes after it follows: the model
        # learns to stop where its answer ends.
        assert eos in trained, tokenizer.decode(trained)
        after = trained[len(trained) - trained[::-1].index(eos) :]
        assert tokenizer.decode(after).strip() == "", tokenizer.decode(trained)
    # The shorter row is padded (with eos ids): padding is never trained on.
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["attention_mask"] == 0).any()


def test_sft_renders_the_chat_template_once(smollm2_dir, tokenizer, tmp_path):
    rows = synthetic_rows(SyntheticOptions(levels=[2], per_level=1, wording="question", format="conversational_prompt_completion"))
    batch = sft_batch(smollm2_dir, tokenizer, [{"prompt": rows[0]["prompt"], "completion": rows[0]["completion"]}], tmp_path)
    text = tokenizer.decode(batch["input_ids"][0])
    # The template's own system turn, the user's and the assistant's: three turns, each opened once.
    assert text.count("<|im_start|>") == 3 and text.count("<|im_start|>system") == 1, text
    assert text.count("<|im_start|>assistant") == 1 and text.count("<|im_end|>") == 3, text


def test_generation_prompts_are_rendered_once_with_no_token_added(tokenizer):
    prompt = [{"role": "user", "content": "What is 2 + 2? Put the final answer in \\boxed{}."}]
    ids = common.prompt_inputs(tokenizer, [prompt])["input_ids"][0].tolist()
    assert ids == tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    text = tokenizer.decode(ids)
    assert text.count("<|im_start|>") == 3 and text.endswith("<|im_start|>assistant\n"), text


def test_generation_stops_at_the_end_of_turn_and_clipped_completions_are_counted(model, tokenizer):
    prompts = [[{"role": "user", "content": "What is 2 + 2? Put the final answer in \\boxed{}."}]] * 2
    finished = common.generate(model, tokenizer, prompts, max_new_tokens=96, batch_size=2)
    assert finished.clipped == [False, False], list(finished)
    assert all("<|im_end|>" not in text and "<|im_start|>" not in text for text in finished)
    cut = common.generate(model, tokenizer, prompts, max_new_tokens=3, batch_size=2)
    assert cut.clipped == [True, True]
    assert all(len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 3 for text in cut)
