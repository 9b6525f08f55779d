"""An eval-only manifest on real MATH-500 rows produces the full report, however low the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import gradus, write_manifest

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "eval_math500.yaml"


def test_eval_only_manifest_reports_pass_at_k_and_maj_at_k_per_level(tmp_path, shared_data):
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["run_dir"] = str(tmp_path / "run")
    manifest["stages"][0]["data"] = {"recipe": "math500", "path": str(shared_data / "math500" / "test.jsonl"), "limit": 60}
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-3000:]

    report = json.loads((tmp_path / "run" / "math500" / "metrics.json").read_text())
    assert report["n"] == 60 and report["samples_per_item"] == 4
    assert set(report["overall"]) == {"pass@1", "pass@4", "maj@4"}
    assert set(report["by_level"]) <= {"1", "2", "3", "4", "5"} and len(report["by_level"]) >= 3
    assert all(set(metrics) == {"n", "pass@1", "pass@4", "maj@4"} for metrics in report["by_level"].values())
    assert report["by_source"]["math500"]["n"] == 60 - report["unscorable"]
    table = (tmp_path / "run" / "math500" / "report.md").read_text()
    assert "| level 1 |" in table and "maj@4" in table
    assert "pass@1 by model and eval set" in (tmp_path / "run" / "report.md").read_text()
