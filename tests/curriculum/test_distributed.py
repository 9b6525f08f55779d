"""Two real processes (torch.distributed over gloo) end with identical curriculum state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("two_ranks.py")


@pytest.mark.parametrize("strategy", ["bandit", "band"])
def test_two_ranks_scoring_different_local_rows_end_with_identical_sampler_state(tmp_path, strategy):
    out = tmp_path / "views.json"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT), strategy, str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(out.read_text())
    rank0, rank1 = found["views"]
    assert rank0["digest"] == rank1["digest"]  # RNG, statistics, queues, position: all identical
    assert rank0["completions"] == rank1["completions"] == 60 * 24  # each recorded both ranks' completions
    assert rank0["share"] != [1 / 6] * 6  # the shares moved, so the state being compared is not trivial
    for half0, half1 in zip(rank0["batches"], rank1["batches"]):
        assert half0 != half1  # each rank trains its own shard...
        groups = np.array(half0 + half1).reshape(6, 4)  # ...of one generation batch: six prompts, four each in a row
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 6
