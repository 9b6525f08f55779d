"""Fixtures for the reward tests; `shared_data` (the offline datasets) comes from tests/conftest.py."""

import faulthandler
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGINS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def plugins_on_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make tests/rewards/reward_plugins.py importable as `reward_plugins`, here and in spawned workers."""
    monkeypatch.syspath_prepend(str(PLUGINS_DIR))
    return PLUGINS_DIR


@pytest.fixture
def hang_guard(capfd: pytest.CaptureFixture) -> Iterator[None]:
    """Turn a hang into a visible failure: after 120 s, print every thread's stack and end the test run.

    A watchdog thread, not SIGALRM, which math-verify's own timeouts use (and cancel) in the main thread.
    The stacks go to a copy of the real stderr, taken while pytest's capture is off, or nobody would see them.
    """
    with capfd.disabled():
        real_stderr = os.dup(2)
    faulthandler.dump_traceback_later(120, exit=True, file=real_stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
    os.close(real_stderr)
