"""Launch profiles: `accelerate launch` config files, one per way of running a stage.

A profile is a plain accelerate config (`accelerate launch --config_file launch/<name>.yaml`), so
anything accelerate documents works in it. The stage code calls nothing CUDA-specific, so the same
profiles run on GPU nodes and, for tests, on a CPU-only machine (gloo, DeepSpeed's CPU accelerator).
"""

from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent


def profile_names() -> list[str]:
    return sorted(path.stem for path in PROFILE_DIR.glob("*.yaml"))


def profile_path(name: str) -> Path:
    return PROFILE_DIR / f"{name}.yaml"
