"""What every benchmark section shares: timing, subprocesses with a memory cap, units.

Imported by ``benchmarks/run.py`` and its sections (``zoos.py``, ``memory_plans.py``); each
measurement runs in a fresh ``run.py --worker TASK`` process (see :func:`spawn`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def time_runs(fn: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved_runs(fns: dict[str, Callable[[], Any]], warmup: int, rounds: int) -> dict[str, list[float]]:
    """Each function timed once per round, in turn: a slower or faster spell of a shared machine falls on all of
    them alike, so ratios of their medians are not one function's spell against another's."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def describe_error(exc: BaseException) -> str:
    while exc.__cause__ is not None:  # torchinfo and ShapeProp wrap the error of the failing layer
        exc = exc.__cause__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "can't allocate memory" in text or isinstance(exc, MemoryError):
        return "out of memory"
    if len(text) > 110:
        text = text[:107] + "..."
    return f"{type(exc).__name__}: {text}"


def busy_cores(interval: float = 0.5) -> float:
    """Cores kept busy by any process over ``interval`` seconds (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(interval)
    busy1, total1 = sample()
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)


def wait_until_quiet(max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until other processes leave the cores idle; return the busy cores seen."""
    if not Path("/proc/stat").exists():
        return float("nan")
    deadline = time.monotonic() + max_wait
    busy = busy_cores()
    while busy > 0.3 and time.monotonic() < deadline:
        time.sleep(2.0)
        busy = busy_cores()
    return busy


def spawn(task: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one task in a fresh interpreter with a memory cap and a timeout, once the machine is quiet."""
    limit = int(args.memory_gib * 2**30)
    busy = wait_until_quiet(args.quiet_wait)

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [sys.executable, str(RUN), "--worker", task, "--warmup", str(args.warmup), "--repeat", str(args.repeat)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, preexec_fn=cap_memory, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout (> {args.timeout:.0f} s for {args.warmup} + {args.repeat} runs)"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "can't allocate memory" in done.stderr or "MemoryError" in done.stderr or done.returncode == -9:
            return {"error": "out of memory"}
        return {"error": f"crashed (exit {done.returncode}): {tail[:140]}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["busy_before"] = busy
    return result


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def mib(n: float) -> str:
    return f"{n / 2**20:,.2f} MiB"


def replace_section(text: str, section: list[str]) -> str:
    """``text`` with the section that starts with ``section``'s heading replaced (or appended)."""
    lines, heading = text.splitlines(), section[0]
    if heading not in lines:
        return text.rstrip("\n") + "\n\n" + "\n".join(section).rstrip("\n") + "\n"
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join([*lines[:start], *section, *lines[end:]]).rstrip("\n") + "\n"
