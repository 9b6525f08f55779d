"""What the check runs on, as the stage processes will see it: `python -m bench.gpu.environment OUT_JSON`.

Run in a child process with the check's PYTHONPATH (carried wheels first, then the image), so the
versions are those every stage imports. `unmet` walks gradus's dependency closure from pyproject.toml
and lists each requirement the environment does not satisfy: the image's own packages (pyarrow for
datasets, say) are judged against what the carried wheels declare, which `pip install --no-deps`
never checked.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
SHOWN = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "deepspeed", "math-verify", "pydantic",
         "tokenizers", "huggingface_hub", "numpy", "pandas", "pyarrow", "matplotlib")
# The imports a stage needs before it trains: a broken one here fails every part of the check the same way.
IMPORTS = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "deepspeed", "math_verify", "pydantic",
           "matplotlib.pyplot", "yaml", "rich")
# Left out of the carried wheels on purpose (bench/gpu/requirements-gpu.txt says why), so not reported as unmet.
NOT_CARRIED = frozenset({"hf-xet"})


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def unmet_requirements(roots: list[str]) -> list[str]:
    """Every requirement in the closure of `roots` (requirement strings) that is missing or of the wrong version."""
    unmet, seen, pending = [], set(), [Requirement(text) for text in roots]
    while pending:
        requirement = pending.pop()
        key = requirement.name.lower().replace("_", "-")
        if key in NOT_CARRIED or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        found = installed_version(requirement.name)
        if found is None or not requirement.specifier.contains(found, prereleases=True):
            unmet.append(f"{requirement} (found {found or 'nothing'})")
        elif key not in seen:
            seen.add(key)
            pending += [Requirement(text) for text in metadata.requires(requirement.name) or []]
    return sorted(set(unmet))


def report() -> dict:
    import torch

    failed_imports = {}
    for module in IMPORTS:
        try:
            importlib.import_module(module)
        except Exception as error:  # the report names every import that fails, not only the first
            failed_imports[module] = f"{type(error).__name__}: {error}"
    cuda = torch.cuda.is_available()
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()})",
        "cuda_devices": torch.cuda.device_count() if cuda else 0,
        "cuda_version": torch.version.cuda,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "versions": {name: installed_version(name) for name in SHOWN},
        "failed_imports": failed_imports,
        "unmet": unmet_requirements(dependencies),
    }


if __name__ == "__main__":
    # A file, not stdout: DeepSpeed prints its accelerator warning on stdout when imported.
    Path(sys.argv[1]).write_text(json.dumps(report(), indent=2))
