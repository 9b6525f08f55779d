"""The built-in tiny model and tokenizer, loaded back the way every stage loads a model."""

from __future__ import annotations

import pytest

TEXTS = ["Q: 17 -2 +2 +8\nA: 17-2=15\n15+2=17\n17+8=25\n\\boxed{25}", "  two  spaces\n\n\ttab", "What is 12+7?\nAnswer: 19"]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tokenizer_round_trips_spaces_and_newlines_after_save_and_load(tmp_path, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.models import build_tiny_model

    spec = {"arch": arch, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 128}
    build_tiny_model(spec, seed=0, out_dir=tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config.vocab_size == len(tokenizer)


def test_same_seed_same_weights(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from stages.models import build_tiny_model

    spec = {"arch": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 128}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        build_tiny_model(spec, seed=seed, out_dir=tmp_path / name)
    a, b, c = (AutoModelForCausalLM.from_pretrained(tmp_path / name).state_dict() for name in "abc")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)
