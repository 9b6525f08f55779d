"""Resumption that cannot lock in a stale result or lose a finished one (issue 16 items 1-3, 6).

The chains are real `gradus run` processes on the tiny model; the runner-signal cases drive the real
runner over stage commands that are small Python scripts, so the timing can be made exact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.ledger import Ledger
from tests.conftest import gradus, sigkill_runner_when, tiny_manifest, write_manifest

pytestmark = pytest.mark.slow


def ledger(run_dir: Path) -> dict:
    return json.loads((run_dir / "ledger.json").read_text())["stages"]


def done_fingerprint(stage_dir: Path) -> str:
    return json.loads((stage_dir / "done.json").read_text())["fingerprint"]


@pytest.fixture(scope="module")
def finished_chain(tmp_path_factory) -> Path:
    """sft (10 steps, a checkpoint every 5) -> eval, run once to done for the whole module."""
    root = tmp_path_factory.mktemp("chain")
    manifest = tiny_manifest(root / "run", max_steps=10, save_steps=5)
    result = gradus("run", str(write_manifest(root / "m.yaml", manifest)))
    assert result.returncode == 0, result.stdout[-3000:]
    return root / "run"


def copy_of(finished: Path, tmp_path: Path, **sft_args) -> tuple[Path, dict]:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    return run_dir, tiny_manifest(run_dir, max_steps=10, save_steps=5, **sft_args)


def test_only_refuses_to_run_a_stage_on_an_upstream_that_changed(finished_chain, tmp_path):
    run_dir, manifest = copy_of(finished_chain, tmp_path, learning_rate=1e-3)  # sft edited, not rerun
    before = ledger(run_dir)
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)), "--only", "eval")
    assert result.returncode == 2, result.stdout[-2000:]
    assert "stage 'eval' reads 'sft', which changed since it ran" in result.stdout and "--from sft" in result.stdout
    assert ledger(run_dir) == before  # nothing ran, nothing was recorded under a fingerprint it did not earn


def test_a_failed_attempt_never_displaces_the_kept_done_output_and_reverting_restores_it(finished_chain, tmp_path):
    run_dir, v1 = copy_of(finished_chain, tmp_path)
    shutil.rmtree(run_dir / "sft" / "checkpoints")  # so a checkpoint appearing below is the new attempt's
    v1_fingerprint = done_fingerprint(run_dir / "sft")
    v1_weights = (run_dir / "sft" / "model" / "model.safetensors").read_bytes()
    # Edit sft (v2) and kill the run mid-stage: v1's done output is kept aside, v2 is an unfinished attempt.
    _, v2 = copy_of(finished_chain, tmp_path / "unused", learning_rate=1e-3)
    path = write_manifest(tmp_path / "m.yaml", v2 | {"run_dir": str(run_dir)})
    sigkill_runner_when(path, run_dir / "sft" / "checkpoints" / "checkpoint-5" / "trainer_state.json")
    assert done_fingerprint(run_dir / ".previous" / "sft") == v1_fingerprint
    # Edit again (v3), killed again: the v2 attempt is dropped, v1 is still the one kept.
    _, v3 = copy_of(finished_chain, tmp_path / "unused2", learning_rate=2e-3)
    path = write_manifest(tmp_path / "m.yaml", v3 | {"run_dir": str(run_dir)})
    sigkill_runner_when(path, run_dir / "sft" / "checkpoints" / "checkpoint-5" / "trainer_state.json")
    assert done_fingerprint(run_dir / ".previous" / "sft") == v1_fingerprint
    # Revert to v1: restored, not retrained; eval (same fingerprint as before) is skipped.
    path = write_manifest(tmp_path / "m.yaml", v1)
    assert "restore" in gradus("plan", str(path)).stdout
    result = gradus("run", str(path))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "sft: restored its kept output" in result.stdout and "eval: done" in result.stdout
    assert (run_dir / "sft" / "model" / "model.safetensors").read_bytes() == v1_weights
    entries = ledger(run_dir)
    assert entries["sft"]["state"] == "done" and entries["sft"]["fingerprint"] == v1_fingerprint


def test_resuming_on_another_number_of_processes_is_refused_up_front(finished_chain, tmp_path):
    run_dir, manifest = copy_of(finished_chain, tmp_path)
    Ledger(run_dir).update("sft", state="interrupted")  # as a kill after checkpoint-5 or -10 would leave it
    manifest["stages"][0]["launch"] = {"profile": "ddp", "num_processes": 2}
    result = gradus("run", str(write_manifest(tmp_path / "m.yaml", manifest)))
    assert result.returncode == 2
    assert "stage 'sft' was checkpointed on 1 processes and would resume on 2" in result.stdout
    assert ledger(run_dir)["sft"]["state"] == "interrupted"


# --- the runner's signal handling, over scripted stages ------------------------------------------------

DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from pipeline.plan import Plan, PlannedStage
    from pipeline.runner import run
    from stages.arguments import StageFile

    run_dir, scripts = Path(sys.argv[1]), sys.argv[2:]
    stages = []
    for index, script in enumerate(scripts):
        name = f"s{index}"
        resolved = StageFile(name=name, kind="sft", fingerprint=f"f{index}", seed=0, stage_dir=run_dir / name,
                             model_path="none", data={"recipe": "none"})
        stages.append(PlannedStage(name=name, kind="sft", fingerprint=f"f{index}", stage_dir=run_dir / name, model_path="none",
                                   upstream=None, depends_on=[], resolved=resolved, command=[sys.executable, script, str(run_dir / name)],
                                   node_commands=[], env={}))
    sys.exit(run(Plan(run_dir=run_dir, base_model="none", seed=0, stages=stages)))
""")

FINISHES_THEN_LINGERS = textwrap.dedent("""
    import json, signal, sys, time
    from pathlib import Path
    stage_dir = Path(sys.argv[1])
    (stage_dir / "metrics.json").write_text("{}")
    (stage_dir / "done.json").write_text(json.dumps({"fingerprint": "f0"}))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stops cleanly, as a finished stage does
    print("finished", flush=True)
    time.sleep(30)
""")

IGNORES_SIGTERM = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("started", flush=True)
    time.sleep(600)
""")

MARKS_ITS_START = textwrap.dedent("""
    import sys
    from pathlib import Path
    (Path(sys.argv[1]) / "started").write_text("yes")
""")


def start_runner(tmp_path: Path, *scripts: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    paths = []
    for index, source in enumerate(scripts):
        path = tmp_path / f"stage{index}.py"
        path.write_text(source)
        paths.append(str(path))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    run_dir = tmp_path / "run"
    runner = subprocess.Popen([sys.executable, str(driver), str(run_dir), *paths], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **(env or {})})
    return runner, run_dir


def wait_for_line(runner: subprocess.Popen, text: str) -> None:
    for line in runner.stdout:
        if text in line:
            return
    raise AssertionError(f"the runner ended without printing {text!r}")


def test_ctrl_c_as_a_stage_finishes_records_it_done_and_starts_nothing_after(tmp_path):
    runner, run_dir = start_runner(tmp_path, FINISHES_THEN_LINGERS, MARKS_ITS_START)
    wait_for_line(runner, "finished")
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=60) == 130
    assert ledger(run_dir)["s0"]["state"] == "done"
    assert not (run_dir / "s1" / "started").exists() and "s1" not in ledger(run_dir)


def test_a_stage_that_ignores_sigterm_and_holds_the_pipe_is_killed_after_the_grace(tmp_path):
    runner, run_dir = start_runner(tmp_path, IGNORES_SIGTERM, env={"GRADUS_STOP_GRACE_S": "2"})
    wait_for_line(runner, "started")
    started = time.time()
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 130
    assert time.time() - started < 30  # the grace (2 s) and the kill, not the stage's 600 s sleep
    assert ledger(run_dir)["s0"]["state"] == "interrupted"
