"""bench/prmbench.py on a few real PRMBench rows with a tiny PRM: the harness, not the figures."""

from __future__ import annotations

import json

from bench import prmbench


def test_bench_scores_every_class_and_writes_per_class_metrics(prm_dir, shared_data, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert prmbench.main(["--model", str(prm_dir), "--data", str(shared_data / "prmbench"), "--limit", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["records_read"] == 17  # one row from each of the 17 files
    error_classes = {"circular", "confidence", "counterfactual", "deception", "domain_inconsistency",
                     "missing_condition", "redundency", "step_contradiction"}
    assert set(results["classes"]) == error_classes | {"correct"}
    for name in error_classes:
        figures = results["classes"][name]
        assert figures["wrong_steps"] > 0 and figures["first_error_accuracy"] is not None
        assert figures["auc"] is None or 0.0 <= figures["auc"] <= 1.0
    assert results["classes"]["correct"]["wrong_steps"] == 0 and results["classes"]["correct"]["auc"] is None
    assert results["all_error_classes"]["rows"] == sum(results["classes"][name]["rows"] for name in error_classes)
    printed = capsys.readouterr().out
    assert "| ALL error classes |" in printed and "| step_contradiction |" in printed
