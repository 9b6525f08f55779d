"""Experiment trackers named in a stage's `args.report_to`, checked at plan time.

transformers starts a tracker's callback when the trainer is built, and a tracker whose package is
missing fails there: in the stage process, after the launch, possibly on a cluster node after the
job waited in the queue. Checked here instead, from the names alone (no torch, no transformers):
every tracker is one transformers 5 knows, and the packages it imports are installed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from data_recipes import suggest
from pipeline.errors import ManifestError

# Tracker -> the modules it needs, each requirement a tuple of alternatives (transformers 5's
# integration_utils: `is_<tracker>_available`). kubeflow is switched on by its environment, no package.
TRACKER_MODULES: dict[str, list[tuple[str, ...]]] = {
    "tensorboard": [("tensorboard", "tensorboardX")],
    "wandb": [("wandb",)],
    "mlflow": [("mlflow",)],
    "comet_ml": [("comet_ml",)],
    "neptune": [("neptune",)],
    "trackio": [("trackio",)],
    "clearml": [("clearml",)],
    "codecarbon": [("codecarbon",)],
    "dvclive": [("dvclive",)],
    "swanlab": [("swanlab",)],
    "dagshub": [("dagshub",), ("mlflow",)],
    "flyte": [("flytekit",)],
    "azure_ml": [("azureml.core",)],
    "kubeflow": [],
}
NO_TRACKER = ("none", "all")  # transformers' own words: no tracker, every installed one
EXTRAS = {"tensorboard": 'pip install -e ".[tensorboard]"'}  # trackers gradus has an extra for


def check_report_to(stage_name: str, report_to: Any) -> None:
    """Raise ManifestError (one line) when a tracker in `args.report_to` cannot work on this machine."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    where = f"stage {stage_name!r}: field 'args.report_to'"
    for name in names:
        if name in NO_TRACKER:
            continue
        if name not in TRACKER_MODULES:
            raise ManifestError(f"{where}: unknown tracker {name!r}{suggest(str(name), TRACKER_MODULES)}; trackers: {', '.join([*NO_TRACKER, *TRACKER_MODULES])}")
        for alternatives in TRACKER_MODULES[name]:
            if not any(_installed(module) for module in alternatives):
                package = alternatives[0].replace(".", "-")  # the pip name: azureml.core is azureml-core
                hint = EXTRAS.get(name, f"pip install {package}")
                raise ManifestError(f"{where}: tracker {name!r} needs the package {package!r}, which is not installed ({hint})")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False
