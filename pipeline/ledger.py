"""`run_dir/ledger.json`: what happened to each stage, written so a crash never leaves it unreadable.

Every write replaces the whole ledger through `launch.atomic`: a reader (or the next run after a
SIGKILL or a crash) sees either the old ledger or the new one, never half of one.

One entry per stage:
    state        pending | running | done | failed | interrupted
    fingerprint  of the spec that produced (or is producing) the stage's output
    started_at, ended_at, duration_s
    output       the stage directory; `model` the final model directory, if the kind makes one
    metrics      copied from the stage's metrics.json when it finishes
    command      the exact launch command; exit_code; message (the log tail when it failed)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from launch.atomic import write_atomically

STATES = ("pending", "running", "done", "failed", "interrupted")


class Ledger:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "ledger.json"
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self.stages = json.loads(self.path.read_text())["stages"]

    def entry(self, name: str) -> dict[str, Any] | None:
        return self.stages.get(name)

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        """Merge fields into a stage's entry and persist the whole ledger atomically."""
        entry = self.stages.setdefault(name, {"state": "pending"})
        entry.update(fields)
        if entry["state"] not in STATES:
            raise ValueError(f"unknown stage state {entry['state']!r}")
        self.save()
        return entry

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"version": 1, "updated_at": now(), "stages": self.stages}, indent=2, default=str)
        write_atomically(self.path, payload + "\n")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
