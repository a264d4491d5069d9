"""Run a command and report its wall time, CPU time and the peak of its whole process tree's memory.

``/usr/bin/time -v`` reports the largest single process only; under pytest-xdist the workers (and the
processes tests start) are separate processes, so this reports the largest sum over the command and all
its descendants, sampled every 0.25 s, of their RSS (shared pages, torch's libraries among them, count once
per process: an upper bound) and of their PSS (each shared page split between the processes that map it:
the memory the tree uses, the README's figure)::

    .venv/bin/python tools/peak_rss.py .venv/bin/python -m pytest -q -n 2 --dist loadgroup

Needs psutil (installed with the dev extra's ipykernel).
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    child = subprocess.Popen(argv)
    root = psutil.Process(child.pid)
    peak_sum = peak_one = peak_pss = 0
    cpu: dict[int, float] = {}  # the last CPU time seen of each process, reaped ones included
    while child.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        total = proportional = 0
        for process in tree:
            try:
                memory = process.memory_full_info()  # Linux: rss and pss (smaps_rollup)
                times = process.cpu_times()
            except psutil.Error:
                continue
            cpu[process.pid] = times.user + times.system
            total += memory.rss
            proportional += getattr(memory, "pss", memory.rss)
            peak_one = max(peak_one, memory.rss)
        peak_sum = max(peak_sum, total)
        peak_pss = max(peak_pss, proportional)
        time.sleep(0.25)
    print(
        f"peak_rss: wall {time.perf_counter() - start:.1f} s, CPU {sum(cpu.values()):.1f} s, peak PSS of the "
        f"process tree {peak_pss / 2**30:.2f} GiB, peak RSS {peak_sum / 2**30:.2f} GiB (largest process "
        f"{peak_one / 2**30:.2f} GiB), "
        f"exit {child.returncode}",
        file=sys.stderr,
    )
    return child.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
