"""The built-in tiny model: a random-init causal LM and a character tokenizer, built with no download.

`python -m stages.models SPEC_JSON OUT_DIR SEED` writes it as an ordinary HF model directory, so
every stage loads it with `from_pretrained` exactly as it would load a real checkpoint: the
embedded default and a real model share one code path.

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


def build_tokenizer(arch: str) -> Any:
    """A tokenizer whose decode(encode(text)) == text for any printable ASCII, spaces and newlines."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if arch == "qwen2":
        byte_vocab = pre_tokenizers.ByteLevel.alphabet()
        vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + sorted(byte_vocab))}
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
    else:
        characters = sorted(set(string.printable) - set("\x0b\x0c\r"))
        vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + characters)}
        backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        additional_special_tokens=[token for token in SPECIAL_TOKENS if token not in {PAD, EOS, UNK}],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(spec: dict[str, Any], seed: int, out_dir: Path) -> None:
    """Write the tiny model and its tokenizer to `out_dir` (atomically: a crash leaves nothing half-made)."""
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
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(out_dir)


if __name__ == "__main__":
    build_tiny_model(json.loads(sys.argv[1]), int(sys.argv[3]), Path(sys.argv[2]))
