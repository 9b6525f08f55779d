"""run_dir/report.md from a plan and a ledger: which eval fills the forgetting table, and the sampled-eval table."""

from __future__ import annotations

from pipeline.ledger import Ledger
from pipeline.manifest import load_manifest
from pipeline.plan import make_plan
from pipeline.report import write_report
from tests.conftest import tiny_manifest, write_manifest


def test_greedy_eval_fills_the_forgetting_table_and_sampled_evals_get_their_own(tmp_path):
    manifest = tiny_manifest(tmp_path / "run")
    greedy = manifest["stages"][1]
    sampled = {**greedy, "name": "eval_best_of_4", "args": {"num_samples": 4, "temperature": 1.0, "k": [1, 4]}}
    manifest["stages"].append(sampled)  # after the greedy eval, as in examples/prm.yaml
    plan = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))
    ledger = Ledger(plan.run_dir)
    ledger.update("sft", state="done", metrics={"final_loss": 0.5})
    overall = {"pass@1": 0.25, "pass@4": 0.5, "maj@4": 0.375, "best_of_4/prm": 0.125}
    ledger.update("eval_best_of_4", state="done", metrics={"accuracy": 0.25, "samples_per_item": 4, "overall": overall})
    ledger.update("eval", state="done", metrics={"accuracy": 0.625, "samples_per_item": 1, "overall": {"pass@1": 0.625}})

    report = write_report(plan, ledger)
    assert "| sft | 0.625 |" in report  # the greedy figure, not the sampled pass@1 that came after it
    assert "| eval_best_of_4 | sft | synthetic_arithmetic:test | 0.250 | 0.500 | 0.375 | 0.125 |" in report
    assert (plan.run_dir / "report.md").read_text() == report


def test_evals_that_report_levels_get_a_pass_at_1_row_per_level(tmp_path):
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"].append({**manifest["stages"][1], "name": "eval_again"})
    plan = make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))
    ledger = Ledger(plan.run_dir)
    levels = {"10": {"n": 4, "pass@1": 0.0}, "2": {"n": 4, "pass@1": 0.75}, "1": {"n": 4, "pass@1": 1.0}}
    ledger.update("eval", state="done", metrics={"accuracy": 0.58, "samples_per_item": 1, "by_level": levels})
    ledger.update("eval_again", state="done", metrics={"accuracy": 1.0, "samples_per_item": 1, "by_level": {"1": {"n": 4, "pass@1": 1.0}}})

    report = write_report(plan, ledger)
    assert "| eval stage | model | eval set | L1 | L2 | L10 |" in report  # levels in numeric order
    assert "| eval | sft | synthetic_arithmetic:test | 1.00 | 0.75 | 0.00 |" in report
    assert "| eval_again | sft | synthetic_arithmetic:test | 1.00 |  |  |" in report  # a level it did not score stays empty
