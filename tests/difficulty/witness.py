"""A weight-0 reward the difficulty tests name by `module:function` path: it scores nothing, but logs
which process scored which prompt, so a test can tell that no prompt was estimated twice."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def witness(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """Append `pid<TAB>prompt as JSON` per completion to $DIFFICULTY_TEST_LOG; sleep $DIFFICULTY_TEST_SLEEP seconds
    per call (so a test can kill the stage between two shards)."""
    with open(os.environ["DIFFICULTY_TEST_LOG"], "a") as log:
        log.writelines(f"{os.getpid()}\t{json.dumps(prompt)}\n" for prompt in prompts)
    time.sleep(float(os.environ.get("DIFFICULTY_TEST_SLEEP", "0")))
    return [0.0] * len(completions)
