"""Appending a bench's results to BENCHMARKS.md in one shape: title with date, the exact command, table, notes, time."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path


def append_section(path: Path, title: str, script: str, header: str, table: list[str], notes: str, timing: str) -> None:
    """Append a section whose command line is this process's own arguments, so the figures can be reproduced."""
    command = " ".join(["python", script, *sys.argv[1:]])
    section = [
        "", f"## {title} ({datetime.date.today().isoformat()})", "",
        f"`{command}` (from the repository root, `.venv/bin/python`). {header}.", "",
        *table, "", notes, "", f"Time: {timing}.", "",
    ]
    with path.open("a") as handle:
        handle.write("\n".join(section))
    print(f"appended to {path}")
