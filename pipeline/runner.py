"""Run a plan: one launched process per stage, the ledger updated around each, resumption by stage.

For each stage, in manifest order, the runner decides:
    skip    done before with the same fingerprint and its done.json is there
    resume  started before with the same fingerprint (running/failed/interrupted): the stage process
            finds its last checkpoint and continues from it
    restore its last done output other than the current one, kept in `run_dir/.previous/<stage>`,
            has this fingerprint (an edit reverted): it is put back instead of retrained
    fresh   anything else: a done output is kept in `run_dir/.previous/<stage>` (replacing the one kept
            before), an unfinished attempt is deleted, and the stage starts from scratch
Because a stage's fingerprint includes its upstream's, a changed stage makes every stage after it
fresh, and nothing before it reruns.

This module is the one place that starts subprocesses. A stage's output streams to the console
and to `<stage>/log.txt`. SIGINT/SIGTERM stop the running stage (its whole process group) and are
recorded as `interrupted`; a stage that exits non-zero is recorded as `failed` with its log tail,
and the run stops there. Finished stages and the ledger are never touched by a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import launch
from pipeline.ledger import Ledger, now
from pipeline.overrides import save_resolved_manifest
from pipeline.plan import Plan, PlannedStage
from pipeline.report import write_report
from stages.arguments import BASE_MODEL_IDENTITY_FILE

LOG_TAIL_LINES = 25
DEFAULT_STOP_GRACE_S = 60.0  # after SIGINT/SIGTERM, how long a stage may take to stop before SIGKILL ($GRADUS_STOP_GRACE_S)


class RunError(RuntimeError):
    """A run that cannot proceed, phrased as one line."""


def decide(stage: PlannedStage, ledger: Ledger, forced: bool) -> str:
    entry = ledger.entry(stage.name)
    if forced:
        return "fresh"
    if entry is None or entry.get("fingerprint") != stage.fingerprint:
        return "restore" if _done_fingerprint(kept_output(stage)) == stage.fingerprint else "fresh"
    if entry["state"] == "done" and _done_marker_matches(stage):
        return "skip"
    return "resume"


def kept_output(stage: PlannedStage) -> Path:
    """Where the stage's last done output other than the current one is kept: `run_dir/.previous/<stage>`."""
    return stage.stage_dir.parent / ".previous" / stage.name


def _done_fingerprint(stage_dir: Path) -> str | None:
    marker = stage_dir / "done.json"
    return json.loads(marker.read_text()).get("fingerprint") if marker.is_file() else None


def _done_marker_matches(stage: PlannedStage) -> bool:
    return _done_fingerprint(stage.stage_dir) == stage.fingerprint


def actions(plan: Plan, ledger: Ledger, from_stage: str | None = None, only: str | None = None) -> list[tuple[PlannedStage, str]]:
    """What a run would do with each stage it touches: skip, resume or fresh (`--only` touches one)."""
    names = [stage.name for stage in plan.stages]
    first_forced = names.index(only or from_stage) if (only or from_stage) else len(names)
    return [
        (stage, decide(stage, ledger, forced=index >= first_forced))
        for index, stage in enumerate(plan.stages)
        if not only or stage.name == only
    ]


def run(plan: Plan, from_stage: str | None = None, only: str | None = None, say=print, resolved_manifest: str | None = None) -> int:
    """Run the plan; return the exit code (0 all done, 1 a stage failed, 130 interrupted). `resolved_manifest`
    (the manifest text, overrides applied) is saved as run_dir/manifest.yaml once this run holds the run_dir."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(plan.run_dir):
        if resolved_manifest is not None:
            save_resolved_manifest(plan.run_dir, resolved_manifest)
        ledger = Ledger(plan.run_dir)
        todo = actions(plan, ledger, from_stage, only)
        refuse_before_launch(plan, todo, ledger)
        for stage, action in todo:
            if action == "skip":
                say(f"[gradus] {stage.name}: done (fingerprint {stage.fingerprint}), skipped")
                continue
            _check_upstream_done(stage, ledger)
            if action == "restore":
                _restore(stage, ledger)
                say(f"[gradus] {stage.name}: restored its kept output for fingerprint {stage.fingerprint} from {kept_output(stage)}")
                continue
            if stage.node_commands and "SLURM_JOB_ID" not in os.environ:
                raise RunError(
                    f"stage {stage.name!r} runs on {len(stage.node_commands)} machines: submit it with launch/slurm.sbatch, "
                    "or run the per-node commands `gradus plan` prints on each node"
                )
            if action == "fresh":
                _set_aside(stage)
            say(f"[gradus] {stage.name}: {'resuming' if action == 'resume' else 'starting'} ({stage.kind}, fingerprint {stage.fingerprint})")
            for directory, identity in stage.models_to_make:
                _make_model(directory, identity, say)
            exit_code = _run_stage(stage, ledger, say)
            if exit_code != 0:
                write_report(plan, ledger)
                return exit_code
        say(write_report(plan, ledger))
        say(f"[gradus] run complete: {plan.run_dir} (report: {plan.run_dir / 'report.md'})")
        return 0


def refuse_before_launch(plan: Plan, todo: list[tuple[PlannedStage, str]], ledger: Ledger) -> None:
    """What would make a run wrong, refused before its first stage starts.

    * A stage reads an upstream this run will not run (`--only`, or a skip) whose done output is not the
      one the manifest now describes: it would train on a stale input and be recorded as fresh.
    * A resume on another number of processes than the checkpoint was written with: HF's data skip and
      the curriculum's stream are counted in batches of the old world size.
    """
    planned = {stage.name: stage for stage in plan.stages}
    running = {stage.name for stage, action in todo if action not in ("skip", "restore")}
    for stage, action in todo:
        if stage.name not in running:
            continue
        for name in stage.depends_on:
            entry = ledger.entry(name)
            if name in running or entry is None or entry.get("state") != "done":
                continue  # it runs first in this run, or _check_upstream_done stops the run before this stage
            if entry.get("fingerprint") != planned[name].fingerprint:
                raise RunError(
                    f"stage {stage.name!r} reads {name!r}, which changed since it ran (its output has fingerprint "
                    f"{entry.get('fingerprint')}, the manifest now gives {planned[name].fingerprint}); run with "
                    f"`--from {name}` (or without --only) so {name!r} reruns first"
                )
        entry = ledger.entry(stage.name)
        checkpointed = any((stage.stage_dir / "checkpoints").glob("checkpoint-*"))
        if action == "resume" and checkpointed and entry and entry.get("num_processes", stage.resolved.num_processes) != stage.resolved.num_processes:
            raise RunError(
                f"stage {stage.name!r} was checkpointed on {entry['num_processes']} processes and would resume on "
                f"{stage.resolved.num_processes}, which misaligns the batches its resume skips: launch it with "
                f"num_processes {entry['num_processes']} again, or start it over with `--only {stage.name}`"
            )


def _check_upstream_done(stage: PlannedStage, ledger: Ledger) -> None:
    for name in stage.depends_on:
        entry = ledger.entry(name)
        if not entry or entry.get("state") != "done":
            raise RunError(f"stage {stage.name!r} reads the output of {name!r}, which has not finished; run it first")


def _set_aside(stage: PlannedStage) -> None:
    """Clear the stage directory for a fresh run. A done output is kept (replacing the one kept before),
    so reverting to it later restores it; an unfinished attempt is deleted and never displaces it."""
    if not stage.stage_dir.exists():
        return
    if _done_fingerprint(stage.stage_dir) is None:
        shutil.rmtree(stage.stage_dir)
        return
    kept = kept_output(stage)
    shutil.rmtree(kept, ignore_errors=True)
    kept.parent.mkdir(parents=True, exist_ok=True)
    stage.stage_dir.rename(kept)


def _restore(stage: PlannedStage, ledger: Ledger) -> None:
    """Put the kept done output with this fingerprint back (the current output, if done, is kept instead)."""
    kept = kept_output(stage)
    swap = kept.with_name(kept.name + ".restoring")
    kept.rename(swap)
    _set_aside(stage)
    swap.rename(stage.stage_dir)
    model_dir = stage.stage_dir / "model"
    ledger.update(
        stage.name, state="done", kind=stage.kind, fingerprint=stage.fingerprint, ended_at=now(), exit_code=0,
        output=str(stage.stage_dir), message=f"restored from {kept}", num_processes=stage.resolved.num_processes,
        metrics=json.loads((stage.stage_dir / "metrics.json").read_text()), model=str(model_dir) if model_dir.is_dir() else None,
    )


def _make_model(target: Path, identity: dict, say) -> None:
    """Make a model the plan says gradus makes (the base model or an outside one a stage names: a tiny model, a
    GGUF file converted) once per run directory and identity, in a subprocess: the CLI imports no torch.
    `stages.models` writes it atomically, with the identity inside, so a directory that is there and matches
    is complete."""
    made = target / BASE_MODEL_IDENTITY_FILE
    if made.is_file() and json.loads(made.read_text()) == identity:
        return
    if "gguf" in identity:
        say(f"[gradus] converting {identity['gguf']} into {target} (once per run directory)")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "stages.models", json.dumps(identity), str(target)], check=True)


def _run_stage(stage: PlannedStage, ledger: Ledger, say) -> int:
    stage.stage_dir.mkdir(parents=True, exist_ok=True)
    stage.resolved.write(stage.stage_file)
    started = time.time()
    ledger.update(
        stage.name, state="running", kind=stage.kind, fingerprint=stage.fingerprint, started_at=now(),
        ended_at=None, duration_s=None, output=str(stage.stage_dir), command=stage.command,
        exit_code=None, message=None, metrics={}, num_processes=stage.resolved.num_processes,
    )
    log_path = stage.stage_dir / "log.txt"
    exit_code, interrupted_by = _execute(stage.command, log_path, stage_environment(stage))
    duration = round(time.time() - started, 1)
    if exit_code == 0 and _done_marker_matches(stage):
        metrics = json.loads((stage.stage_dir / "metrics.json").read_text())
        model_dir = stage.stage_dir / "model"
        ledger.update(
            stage.name, state="done", ended_at=now(), duration_s=duration, exit_code=0, metrics=metrics,
            model=str(model_dir) if model_dir.is_dir() else None,
        )
        say(f"[gradus] {stage.name}: done in {duration:.0f}s")
        if interrupted_by:  # the signal came as the stage finished: it is done, and the run still stops here
            say(f"[gradus] stopped by {interrupted_by}; rerun the same command to go on with the next stage")
            return 130
        return 0
    if interrupted_by:
        message = f"stopped by {interrupted_by}; rerun the same command to resume from the last checkpoint"
        ledger.update(stage.name, state="interrupted", ended_at=now(), duration_s=duration, exit_code=exit_code, message=message)
        say(f"[gradus] {stage.name}: {message}")
        return 130
    tail = _log_tail(log_path)
    reason = f"exit code {exit_code}" if exit_code != 0 else "exited 0 without writing done.json"
    ledger.update(stage.name, state="failed", ended_at=now(), duration_s=duration, exit_code=exit_code, message=f"{reason}\n{tail}")
    say(f"[gradus] {stage.name}: FAILED ({reason}); last lines of {log_path}:\n{tail}")
    return 1


def stage_environment(stage: PlannedStage) -> dict[str, str]:
    """`launch.env`, plus, on a machine without a GPU, the cores shared out among the stage's processes
    (accelerate gives a single CPU process one thread), with passive waiting; a user's own
    OMP_NUM_THREADS (or OMP_WAIT_POLICY) wins."""
    env = dict(stage.env)
    if not launch.has_gpu() and "OMP_NUM_THREADS" not in env and "OMP_NUM_THREADS" not in os.environ:
        machines = max(1, len(stage.node_commands))
        env["OMP_NUM_THREADS"] = str(launch.cpu_threads_per_process(max(1, stage.resolved.num_processes // machines)))
        if "OMP_WAIT_POLICY" not in env and "OMP_WAIT_POLICY" not in os.environ:
            # Threads that sleep instead of spinning between ops: on a machine other jobs share, spinning
            # OpenMP threads made a step 10x slower than one thread (BENCHMARKS.md, "CPU threads").
            env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def _log_tail(log_path: Path) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    lines = [line.split("\r")[-1] for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _execute(command: list[str], log_path: Path, extra_env: dict[str, str]) -> tuple[int, str | None]:
    """Run one stage command in its own process group, teeing output to the console and the log.

    Returns the exit code and the name of the signal that interrupted the run, if one did.
    """
    interrupted_by: list[str] = []
    grace_s = float(os.environ.get("GRADUS_STOP_GRACE_S", DEFAULT_STOP_GRACE_S))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra_env}
    with log_path.open("ab") as log:
        log.write(f"\n===== {now()} {' '.join(command)}\n".encode())
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=launch.terminate_with_parent,
        )

        def forward(signum: int, _frame) -> None:
            interrupted_by.append(signal.Signals(signum).name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            if len(interrupted_by) == 1:  # a stage that outlives its grace (and may hold the pipe open) is killed
                killer.start()

        killer = threading.Timer(grace_s, _kill_group, args=(process.pid,))
        killer.daemon = True
        previous_handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while chunk := os.read(process.stdout.fileno(), 65536):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                log.write(chunk)
            exit_code = _wait_then_kill(process, grace_s)
        finally:
            killer.cancel()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
    return exit_code, (interrupted_by[0] if interrupted_by else None)


def _wait_then_kill(process: subprocess.Popen, grace_s: float) -> int:
    """The stage's exit code once its output closed; a launcher that lingers past the grace is killed."""
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        return process.wait()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def _exclusive_lock(run_dir: Path) -> Iterator[None]:
    with (run_dir / ".gradus.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another gradus run is using {run_dir}") from None
        yield
