"""Threads per CPU stage process: one thread, the cores with OpenMP's spinning waits, the cores with passive waits.

    python -m bench.omp_threads            # prints seconds for 3,000 steps of a small MLP under each setting

Run it on the machine as it is (idle, or shared with other jobs): spinning threads only hurt when other
processes want the same cores, which is the case the runner's `OMP_WAIT_POLICY=PASSIVE` default is for.
"""

from __future__ import annotations

import os
import subprocess
import sys

import launch

PROBE = """
import time, torch
x, w, w2 = torch.randn(64, 128), torch.randn(128, 512), torch.randn(512, 128)
for _ in range(50): (x @ w).relu() @ w2
start = time.perf_counter()
for _ in range(3000): (x @ w).relu() @ w2
print(time.perf_counter() - start)
"""


def seconds(env: dict[str, str]) -> float:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("OMP_")}
    return float(subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    cores = str(launch.cpu_threads_per_process(1))
    settings = {
        "OMP_NUM_THREADS=1 (what accelerate gives)": {"OMP_NUM_THREADS": "1"},
        f"OMP_NUM_THREADS={cores}, spinning waits": {"OMP_NUM_THREADS": cores},
        f"OMP_NUM_THREADS={cores}, OMP_WAIT_POLICY=PASSIVE (the runner's default)": {"OMP_NUM_THREADS": cores, "OMP_WAIT_POLICY": "PASSIVE"},
    }
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for label, env in settings.items():
        print(f"| {label} | {seconds(env):.2f} s |")


if __name__ == "__main__":
    main()
