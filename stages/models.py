"""Base models the runner makes before the first stage: the built-in tiny model, and GGUF files converted.

`python -m stages.models IDENTITY_JSON OUT_DIR` writes either as an ordinary HF model directory, so every
stage loads it with `from_pretrained` exactly as it would load a real checkpoint: the embedded default, a
GGUF file and a hub model share one code path. IDENTITY_JSON is the plan's identity of the base model
(`{"tiny": spec, "seed": n}` or `{"gguf": path, "sha256": digest}`); it is written into the directory as
`gradus_base.json` before the directory appears, so the runner can tell a finished one that matches.

The tiny model is a random-init causal LM with a character tokenizer, built with no download.

Why a character tokenizer: arithmetic is about digits, and one token per character keeps the
model tiny. Why Llama by default: with a Qwen2 config, transformers 5 swaps any saved tokenizer for
`Qwen2Tokenizer`, which rebuilds the pre-tokenizer and drops spaces (cpu-stack.md §3). For `arch:
qwen2` the vocabulary is therefore byte-level BPE with no merges, which survives that swap.
"""

from __future__ import annotations

import json
import shutil
import string
import sys
from pathlib import Path
from typing import Any

from stages.arguments import BASE_MODEL_IDENTITY_FILE

SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]
PAD, EOS, UNK = "<|pad|>", "<|im_end|>", "<|unk|>"

# ChatML with {% generation %} markers, so SFTConfig(assistant_only_loss=True) works on chat data.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|im_start|>assistant\n{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_vocabulary(arch: str) -> list[str]:
    """The tiny tokenizer's tokens in id order (torch-free: the plan compares vocabularies with it)."""
    if arch == "qwen2":
        from tokenizers import pre_tokenizers

        return SPECIAL_TOKENS + sorted(pre_tokenizers.ByteLevel.alphabet())
    return SPECIAL_TOKENS + sorted(set(string.printable) - set("\x0b\x0c\r"))


def build_tokenizer(arch: str) -> Any:
    """A tokenizer whose decode(encode(text)) == text for any printable ASCII, spaces and newlines."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(tiny_vocabulary(arch))}
    if arch == "qwen2":
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
    else:
        backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        additional_special_tokens=[token for token in SPECIAL_TOKENS if token not in {PAD, EOS, UNK}],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(spec: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """The tiny model (random init from `seed`) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen2Config

    tokenizer = build_tokenizer(spec.get("arch", "llama"))
    config_cls = Qwen2Config if spec.get("arch") == "qwen2" else LlamaConfig
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        # Grouped-query attention only where a caller asks (bench/gpu builds the Qwen2.5-0.5B shape); the
        # manifest's tiny spec has no such field, so its models keep one KV head per attention head.
        num_key_value_heads=spec.get("num_key_value_heads", spec["num_attention_heads"]),
        max_position_embeddings=spec["max_position_embeddings"],
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model, tokenizer


def convert_gguf(gguf_path: Path) -> tuple[Any, Any]:
    """A GGUF file's model, dequantised to fp32, as a plain transformers model that can be saved.

    transformers loads GGUF with a quantization config that makes `save_pretrained` refuse; a model built
    afresh from the same config without it, holding the same tensors, saves and loads like any other.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    # Generation stops at the chat template's end of turn, and pads with the tokenizer's pad token.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    return model, tokenizer


def make_base_model(identity: dict[str, Any], out_dir: Path) -> None:
    """Write the base model `identity` describes to `out_dir`, atomically: a crash leaves nothing half-made,
    and `BASE_MODEL_IDENTITY_FILE` is in the directory from the moment it exists."""
    if "gguf" in identity:
        model, tokenizer = convert_gguf(Path(identity["gguf"]))
    else:
        model, tokenizer = tiny_model(identity["tiny"], identity["seed"])
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / BASE_MODEL_IDENTITY_FILE).write_text(json.dumps(identity, sort_keys=True))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def build_tiny_model(spec: dict[str, Any], seed: int, out_dir: Path) -> None:
    """Write the tiny model `spec` describes, initialised from `seed`, to `out_dir` (as the runner does)."""
    make_base_model({"tiny": spec, "seed": seed}, out_dir)


if __name__ == "__main__":
    make_base_model(json.loads(sys.argv[1]), Path(sys.argv[2]))
