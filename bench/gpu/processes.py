"""Running a benchmark's child command under a wall-clock budget, whole process tree included.

A bench arm is several processes deep (`gradus run` -> `accelerate launch` -> the training process), and
`subprocess.run(timeout=...)` kills only the first: the training process would go on holding the GPU
while the next part starts. Each command here runs in its own session, and on overrun the whole
session gets SIGTERM (gradus records the stage as interrupted) and, if still there after a grace
period, SIGKILL.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
from pathlib import Path

TAIL_LINES = 30


class BoundedRunError(RuntimeError):
    """A command that failed or overran; the message ends with the tail of its output."""


def output_tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last non-empty lines of a command's output (progress bars' carriage returns resolved)."""
    kept = [line.split("\r")[-1] for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def run_bounded(command: list[str], timeout_s: float, log_path: Path, cwd: Path | None = None, grace_s: float = 20.0) -> str:
    """Run `command` with its output in `log_path`; return the output, or raise BoundedRunError naming
    the exit code or the overrun, with the output's tail."""
    if timeout_s <= 0:
        raise BoundedRunError(f"no time left for {' '.join(command[:4])} ...")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            exit_code = process.wait(timeout=None if math.isinf(timeout_s) else timeout_s)
        except subprocess.TimeoutExpired:
            exit_code = None
            _stop_session(process, grace_s)
    output = log_path.read_text(errors="replace")
    if exit_code is None:
        raise BoundedRunError(f"over its {timeout_s:.0f} s budget, stopped\n{output_tail(output)}")
    if exit_code != 0:
        raise BoundedRunError(f"exit code {exit_code}\n{output_tail(output)}")
    return output


def _stop_session(process: subprocess.Popen, grace_s: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
