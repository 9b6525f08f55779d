"""Every real file in shared/data loads through its recipe, with the gold answers right."""

from __future__ import annotations

import json

import pytest

import data_recipes
from data_recipes.decontamination import contaminated_rows, problem_keys
from data_recipes.math_sets import last_boxed

FILES = {
    "gsm8k": ["gsm8k/train.jsonl", "gsm8k/test.jsonl", "gsm8k/test_socratic.jsonl"],
    "math": ["math/test.jsonl"],
    "math500": ["math500/test.jsonl"],
    "aime24": ["aime24/test.jsonl"],
    "amc23": ["amc23/test.jsonl"],
}


@pytest.mark.parametrize("recipe, relative", [(recipe, path) for recipe, paths in FILES.items() for path in paths])
def test_every_file_loads_with_gradus_columns(shared_data, recipe, relative):
    path = shared_data / relative
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    dataset = data_recipes.load(recipe, {"path": str(path)})
    assert len(dataset) == len(rows)
    assert set(data_recipes.columns(recipe, {"path": str(path)})) <= set(dataset.column_names)
    assert all(answer.strip() for answer in dataset["answer"])
    assert all("\\boxed{" in completion for completion in dataset["completion"])
    assert set(dataset["source"]) == {recipe}


def test_all_gsm8k_golds_are_numbers(shared_data):
    for name in FILES["gsm8k"]:
        dataset = data_recipes.load("gsm8k", {"path": str(shared_data / name)})
        for answer in dataset["answer"]:
            float(answer)  # raises on "1,080" or anything else that is not a plain number
        assert set(dataset["level"]) <= set(range(1, 20)) and min(dataset["level"]) >= 1


def test_math500_gold_is_the_last_boxed_of_its_solution(shared_data):
    rows = [json.loads(line) for line in (shared_data / "math500" / "test.jsonl").read_text().splitlines()]
    squash = lambda text: "".join(text.split())  # noqa: E731 - the README's comparison ignores whitespace
    assert all(squash(last_boxed(row["solution"])) == squash(row["answer"]) for row in rows)
    dataset = data_recipes.load("math500", {"path": str(shared_data / "math500" / "test.jsonl")})
    assert sorted(set(dataset["level"])) == [1, 2, 3, 4, 5]


def test_math_levels_and_nested_boxed_golds(shared_data):
    dataset = data_recipes.load("math", {"path": str(shared_data / "math" / "test.jsonl")})
    levels = dataset["level"]
    assert [levels.count(level) for level in range(1, 6)] == [437, 894, 1131, 1214, 1324]
    assert last_boxed("so $\\boxed{\\frac{1}{2}}$ and finally \\boxed{\\sqrt{\\frac{a}{b}}}.") == "\\sqrt{\\frac{a}{b}}"


def test_amc23_float_answers_become_strings(shared_data):
    dataset = data_recipes.load("amc23", {"path": str(shared_data / "amc23" / "test.jsonl")})
    assert dataset[0]["answer"] == "27" and all(isinstance(answer, str) for answer in dataset["answer"])


def test_chat_template_option_renders_messages(shared_data):
    options = {"path": str(shared_data / "math500" / "test.jsonl"), "chat": True, "system_prompt": "Be brief.", "limit": 3}
    prompt = data_recipes.load("math500", options)[0]["prompt"]
    assert [message["role"] for message in prompt] == ["system", "user"] and "\\boxed{}" in prompt[1]["content"]


def test_mixture_draws_by_weight_and_tags_sources(shared_data):
    options = {"num_examples": 200, "components": [
        {"recipe": "gsm8k", "path": str(shared_data / "gsm8k" / "test.jsonl"), "weight": 3},
        {"recipe": "amc23", "path": str(shared_data / "amc23" / "test.jsonl"), "weight": 1},
    ]}
    dataset = data_recipes.load("mixture", options)
    assert len(dataset) == 200
    assert dataset["source"].count("gsm8k") == 150 and dataset["source"].count("amc23") == 50


def test_decontamination_finds_all_of_math500_in_math_test(shared_data):
    math_test = data_recipes.load("math", {"path": str(shared_data / "math" / "test.jsonl")})
    math500 = data_recipes.load("math500", {"path": str(shared_data / "math500" / "test.jsonl")})
    overlapping = contaminated_rows(problem_keys(math_test["problem"], 13), problem_keys(math500["problem"], 13))
    problems_500 = {json.loads(line)["problem"] for line in (shared_data / "math500" / "test.jsonl").read_text().splitlines()}
    flagged = {json.loads(line)["problem"] for index, line in enumerate((shared_data / "math" / "test.jsonl").read_text().splitlines())
               if index in set(overlapping)}
    assert problems_500 <= flagged
    assert len(overlapping) < 600  # near-duplicates beyond the 500 are few; the rest of MATH test is a clean pool


def test_chat_gsm8k_is_what_trl_sft_takes(shared_data, tmp_path):
    """With `chat: true` the worked solution is the assistant's message: TRL's SFTTrainer took the old string
    completion next to a chat prompt only to fail inside its tokenisation ("can only concatenate list")."""
    from trl import SFTConfig, SFTTrainer

    from stages.models import build_tiny_model, build_tokenizer

    dataset = data_recipes.load("gsm8k", {"path": str(shared_data / "gsm8k" / "train.jsonl"), "chat": True, "limit": 4})
    assert dataset[0]["completion"][0]["role"] == "assistant" and dataset[0]["completion"][0]["content"].endswith("}.")
    assert data_recipes.chat_columns("gsm8k", {"path": str(shared_data / "gsm8k" / "train.jsonl"), "chat": True}) == {"prompt", "completion"}
    build_tiny_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "max_position_embeddings": 2048}, 0, tmp_path / "model")
    trainer = SFTTrainer(model=str(tmp_path / "model"), processing_class=build_tokenizer("llama"),
                         args=SFTConfig(output_dir=str(tmp_path / "out"), max_length=1024, report_to="none", use_cpu=True, bf16=False),
                         train_dataset=dataset.select_columns(["prompt", "completion"]))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert (batch["labels"] != -100).sum() > 0  # the assistant's solution is trained on
