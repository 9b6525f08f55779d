"""The ledger survives crashes: a write interrupted at any point leaves the old or the new ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.ledger import Ledger


def test_round_trip(tmp_path):
    Ledger(tmp_path).update("sft", state="running", fingerprint="abc")
    Ledger(tmp_path).update("sft", state="done")
    entry = Ledger(tmp_path).entry("sft")
    assert entry["state"] == "done" and entry["fingerprint"] == "abc"


def test_failed_replace_keeps_previous_ledger(tmp_path, monkeypatch):
    ledger = Ledger(tmp_path)
    ledger.update("sft", state="done", fingerprint="old")

    def crash(*_args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        ledger.update("sft", state="failed", fingerprint="new")
    monkeypatch.undo()
    assert Ledger(tmp_path).entry("sft") == {"state": "done", "fingerprint": "old"}
    assert [path.name for path in tmp_path.iterdir()] == ["ledger.json"]  # no temp file left behind


def test_sigkill_during_writes_never_leaves_it_unreadable(tmp_path):
    """Kill a process that rewrites a large ledger in a loop, many times, at random moments."""
    writer = (
        "import sys; from pipeline.ledger import Ledger\n"
        "ledger = Ledger(sys.argv[1])\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1\n"
        "    ledger.update(f'stage{i % 50}', state='running', metrics={'blob': 'x' * 20000, 'i': i})\n"
    )
    for attempt in range(15):
        process = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path)])
        time.sleep(0.3 + 0.05 * attempt)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        stages = json.loads((tmp_path / "ledger.json").read_text())["stages"]
        assert stages and all(entry["state"] == "running" for entry in stages.values())
