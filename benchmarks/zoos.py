"""Third-party zoos (issue 10, point 5): paramcount vs torchinfo.summary on the zoo tests' own models.

``run.py --zoos-only`` runs this section alone and updates it in results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import ROOT, describe_error, peak_rss_bytes, spawn

ZOO_LIBRARIES = ("transformers", "smp", "monai", "open_clip")
ZOO_REPEAT = 5  # per model: the median of 5 after 1 warm-up, each tool in turn (3 left verdicts near 1x to chance)
FORWARD_EXEMPT_S = 0.020  # issue 10: models whose whole forward takes under 20 ms may be slower than torchinfo


def _zoo_models(library: str) -> list[tuple[str, Callable[[], Any], Any, int, Any]]:
    """(name, build, paramcount input, batch, real input) of each model of ``library``'s zoo test, as it builds it.

    The model tables come from the zoo test modules themselves (``tests/test_zoo_*.py``); the
    models are put in ``eval()`` mode (torchinfo's default mode).  ``paramcount`` gets the test's
    input spec (per-sample shapes; ``batch=`` for the smp, MONAI and open_clip tests), torchinfo
    and the forward get real CPU tensors of the same shapes: token ids for ``*_ids`` inputs,
    a dict for dict inputs.
    """
    import functools
    import importlib

    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    zoo = importlib.import_module(f"test_zoo_{library}")
    if library == "transformers":
        return [
            (name, functools.partial(zoo._build, name), zoo.ZOO[name][2], 1, zoo._real_input(zoo.ZOO[name][2]))
            for name in zoo.ZOO
        ]
    batch = importlib.import_module("zoo_checks").BATCH
    if library == "monai":
        builds = {name: build for name, (build, _) in zoo.MODELS.items()}
        shapes = {name: shape for name, (_, shape) in zoo.MODELS.items()}
    elif library == "smp":

        def build_smp(name: str) -> Any:
            arch, encoder = name.split("/")
            return getattr(zoo.smp, arch)(encoder_name=encoder, encoder_weights=None, classes=2)

        builds = {name: functools.partial(build_smp, name) for name in zoo.MODELS}
        shapes = dict.fromkeys(zoo.MODELS, zoo.SHAPE)
    elif library == "open_clip":
        import logging

        logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded": asked for

        def build_clip(name: str) -> Any:
            return zoo.open_clip.create_model(name, pretrained=None).visual

        builds = {name: functools.partial(build_clip, name) for name in zoo.MODELS}
        shapes = dict.fromkeys(zoo.MODELS, zoo.SHAPE)
    else:
        raise ValueError(library)
    return [(name, build, shapes[name], batch, torch.randn(batch, *shapes[name])) for name, build in builds.items()]


def zoos_worker(library: str, warmup: int, threads: int) -> dict[str, Any]:
    """Per model of one zoo: paramcount, torchinfo.summary and a real forward, interleaved, in this one process.

    ``threads`` > 0 sets torch's intra-op threads (0: torch's default).
    """
    import collections

    import torch
    import torchinfo

    from torchsurgeon import paramcount

    if threads > 0:
        torch.set_num_threads(threads)

    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name, build, spec, batch, x in _zoo_models(library):
        torch.manual_seed(0)
        model = build().eval()

        def ours(model: Any = model, spec: Any = spec, batch: int = batch) -> Any:
            return paramcount(model, spec, batch=batch)

        def theirs(model: Any = model, x: Any = x) -> Any:
            return torchinfo.summary(model, input_data=x, device="cpu", verbose=0)

        def forward(model: Any = model, x: Any = x) -> Any:
            with torch.no_grad():
                return model(**x) if isinstance(x, dict) else model(x)

        tools: dict[str, Callable[[], Any]] = {"torchsurgeon": ours, "torchinfo": theirs, "forward": forward}
        row: dict[str, Any] = {"name": name, **{tool: [] for tool in tools}}
        failed: dict[str, str] = {}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for i in range(warmup + ZOO_REPEAT):  # interleaved: each round runs every tool once
                for tool, fn in tools.items():
                    if tool in failed:
                        continue
                    gc.collect()  # each tool's time is its own work, not a collection of the garbage left before it
                    start = time.perf_counter()
                    try:
                        result = fn()
                    except Exception as exc:
                        failed[tool] = describe_error(exc)
                        continue
                    if i >= warmup:
                        row[tool].append(time.perf_counter() - start)
                    if tool == "torchsurgeon":
                        report = result
        for tool, error in failed.items():
            row[tool] = error
        if "torchsurgeon" not in failed:
            fallbacks = [layer for layer in report.layers if layer.name in set(report.shape_fallbacks)]
            row["fallbacks"] = len(report.shape_fallbacks)
            row["fallback_ops"] = dict(collections.Counter(layer.type for layer in fallbacks))
        rows.append(row)
        del model, tools, ours, theirs, forward
        report = None
    versions = {"transformers": "transformers", "smp": "segmentation_models_pytorch", "monai": "monai"}
    module = __import__(versions.get(library, library))
    seconds = time.perf_counter() - began  # imports, building, measuring: not the wait for idle cores
    return {
        "rows": rows,
        "version": getattr(module, "__version__", "?"),
        "seconds": seconds,
        "peak_rss": peak_rss_bytes(),
    }


def _zoo_verdict(row: dict[str, Any]) -> str:
    ours, theirs, forward = row["torchsurgeon"], row["torchinfo"], row["forward"]
    if isinstance(ours, str):
        return "torchsurgeon fails"
    if isinstance(theirs, str):
        return "torchinfo fails"
    if statistics.median(ours) < statistics.median(theirs):
        return "faster"
    if not isinstance(forward, str) and statistics.median(forward) < FORWARD_EXEMPT_S:
        return "slower but forward < 20 ms"
    return "SLOWER"


def _zoos_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """The Markdown table of the third-party zoos, a summary line per library and the common fallback ops."""
    lines = [
        "| library | model | torchsurgeon ms | torchinfo ms (torchinfo / torchsurgeon) | forward ms "
        "| meta fallbacks | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    summaries: list[str] = []
    for library in ZOO_LIBRARIES:
        result = results.get(library, {})
        if "rows" not in result:
            lines.append(f"| {library} | - | fails: {result.get('error', 'not run')} | | | | |")
            continue
        verdicts: dict[str, list[str]] = {}
        ops: dict[str, int] = {}
        for row in result["rows"]:
            ours, theirs, forward = row["torchsurgeon"], row["torchinfo"], row["forward"]
            verdict = _zoo_verdict(row)
            verdicts.setdefault(verdict, []).append(row["name"])
            for op, n in row.get("fallback_ops", {}).items():
                ops[op] = ops.get(op, 0) + n
            ours_cell = f"fails: {ours}" if isinstance(ours, str) else f"{statistics.median(ours) * 1e3:,.1f}"
            if isinstance(theirs, str):
                theirs_cell = f"fails: {theirs}"
            else:
                theirs_cell = f"{statistics.median(theirs) * 1e3:,.1f}"
                if not isinstance(ours, str):
                    theirs_cell += f" ({statistics.median(theirs) / statistics.median(ours):.2f}×)"
            forward_cell = (
                f"fails: {forward}" if isinstance(forward, str) else f"{statistics.median(forward) * 1e3:,.1f}"
            )
            lines.append(
                f"| {library} | {row['name']} | {ours_cell} | {theirs_cell} | {forward_cell} "
                f"| {row.get('fallbacks', '-')} | {verdict} |"
            )
        exempt = verdicts.get("slower but forward < 20 ms", [])
        slower = verdicts.get("SLOWER", [])
        others = {v: names for v, names in verdicts.items() if v.endswith("fails")}
        summary = (
            f"- **{library}** {result['version']}: {len(result['rows'])} models, "
            f"{len(verdicts.get('faster', []))} faster, {len(exempt)} exempt (forward < 20 ms"
            + (f": {', '.join(exempt)}" if exempt else "")
            + f"), {len(slower)} slower"
            + (f" ({', '.join(slower)})" if slower else "")
            + "".join(f"; {len(names)} {v} ({', '.join(names)})" for v, names in others.items())
            + "."
        )
        common = sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
        if common:
            summary += " Meta fallbacks by layer type: " + ", ".join(f"{op} {n}" for op, n in common) + "."
        summaries.append(summary)
    return [*lines, "", *summaries]


def _threads(n: int) -> str:
    return "torch's default threads" if n <= 0 else f"{n} torch thread{'s' * (n != 1)} (`torch.set_num_threads`)"


def zoos_section(args: argparse.Namespace) -> list[str]:
    """Run one subprocess per library and return the results.md section (heading, protocol, table, summaries)."""
    start = time.monotonic()
    load = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for library in ZOO_LIBRARIES:
        print(f"zoo {library} ...", end=" ", flush=True)
        results[library] = r = spawn(f"zoos:{library}|{args.zoo_threads}", args)
        print(r.get("error", f"{len(r.get('rows', []))} models"), flush=True)
    seconds = time.monotonic() - start
    working = sum(r.get("seconds", 0.0) for r in results.values())
    return [
        "## Third-party zoos: paramcount vs torchinfo.summary (issue 10, point 5)",
        "",
        f"Every model of tests/test_zoo_transformers.py, test_zoo_smp.py, test_zoo_monai.py and "
        f"test_zoo_open_clip.py, built as the tests build them, in `eval()` mode. One process per library, "
        f"{_threads(args.zoo_threads)}; per "
        f"model the median of {ZOO_REPEAT} runs after {args.warmup} warm-up, the three measurements interleaved: "
        "`paramcount(model, input)` (the test's input spec), `torchinfo.summary(model, input_data=x, verbose=0)` "
        "and one `model(x)` forward under `no_grad` (x: real CPU tensors, token ids for `*_ids`, a dict for dict "
        "inputs), each after a `gc.collect()`, so that no tool pays for collecting another's garbage. "
        "Meta fallbacks: `len(report.shape_fallbacks)`, layers whose shape came from running them on "
        "`meta`. Verdict: faster when torchsurgeon's median < torchinfo's; a slower model is exempt when its "
        "forward takes < 20 ms.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average (1 min) "
        f"before / after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}; section wall time {seconds:.0f} s, of which "
        f"{working:.0f} s measuring in the four processes (the rest: waiting for idle cores, starting the processes); "
        f"command: `{Path(sys.executable).name} benchmarks/run.py{' --zoos-only' if args.zoos_only else ''}"
        f"{f' --zoo-threads {args.zoo_threads}' if args.zoo_threads != 1 else ''}`",
        "",
        *_zoos_table(results),
        "",
    ]
