"""Time torchsurgeon against the tools people use to get shapes and parameter counts.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/run.py``).  Every
measurement runs in its own subprocess (so peak RSS is its own, and a peer
that runs out of memory cannot take the machine down), in a fixed order:
cases in the order below, and for each case torchsurgeon, torchinfo, fvcore,
torch.fx ShapeProp.  Each measurement is the median of ``--repeat`` runs
(>= 5) after ``--warmup`` runs; model construction and input creation are
not timed.  The table is printed and written to ``benchmarks/results.md``.

Peers:

* ``torchinfo.summary(model, input_size, verbose=0)``: a real forward with hooks.
* fvcore ``parameter_count_table(model)`` + ``FlopCountAnalysis(model, x).total()``: a JIT trace.
* ``torch.fx.symbolic_trace`` + ``ShapeProp(gm).propagate(x)`` under ``torch.no_grad()``: a real forward.
* torchsurgeon ``paramcount(model, shape, batch=...)``: a trace and closed-form shape rules, no forward.

The 7B decoder is built on ``meta`` (27 GB of float32 weights otherwise), so
peers get ``meta`` inputs there; a peer that fails is reported, not hidden.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
import unittest.mock
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ROOT, describe_error, gib, interleaved_runs, ms, peak_rss_bytes, replace_section, spawn, time_runs
from memory_plans import memory_7b_worker, memory_gpu_worker, memory_resnet50_worker, memory_sections, memory_worker
from zoos import zoos_section, zoos_worker

RESULTS = ROOT / "benchmarks" / "results.md"
TOOLS = ("torchsurgeon", "torchinfo", "fvcore", "fx ShapeProp")
SWEEP_SHAPES = [  # channels and sizes: 5 different sizes
    (1, 224, 224),
    (3, 224, 224),
    (4, 224, 224),
    (3, 256, 256),
    (1, 320, 320),
    (3, 384, 384),
    (3, 512, 512),
    (4, 512, 512),
]
CHANNEL_SWEEP = [(c, s, s) for s in (224, 512) for c in (1, 2, 3, 4)]  # adapting the stem: 2 sizes
SWEEP_ROUNDS = 15  # the sweep section: median of at least this many rounds (one, mixed, channel sweep, loop in turn)


@dataclass(frozen=True)
class Case:
    """One model and input: ``batch`` x ``shape``."""

    key: str
    model: str
    batch: int
    shape: tuple[int, ...]
    note: str = ""

    @property
    def on_meta(self) -> bool:
        return self.model == "llama7b"

    @property
    def label(self) -> str:
        dims = "×".join(str(d) for d in self.shape)
        where = " on meta" if self.on_meta else ""
        return f"{self.model} {self.batch} × ({dims}){where}"


CASES = (
    Case("resnet50", "resnet50", 1, (3, 224, 224)),
    Case("vit_b_16", "vit_b_16", 1, (3, 224, 224)),
    Case("convnext_tiny", "convnext_tiny", 1, (3, 224, 224)),
    Case("resnet50-b32-512", "resnet50", 32, (3, 512, 512)),
    Case("resnet50-grey", "resnet50", 1, (1, 224, 224), "grey input: the RGB stem does not fit"),
    Case("llama7b", "llama7b", 1, (2048,), "LLaMA-7B-style decoder, 6.74 B parameters, weights on meta"),
)


# --------------------------------------------------------------------------- worker side


def _build(case: Case) -> tuple[Any, Any]:
    """The model (eval mode) and its input tensor, outside any timing."""
    import torch
    import torchvision

    if case.on_meta:
        sys.path.insert(0, str(ROOT / "tests"))
        from models import llama_7b_on_meta

        model = llama_7b_on_meta().eval()
        return model, torch.zeros((case.batch, *case.shape), dtype=torch.long, device="meta")
    torch.manual_seed(0)
    model = torchvision.models.get_model(case.model).eval()
    return model, torch.randn(case.batch, *case.shape)


def _tool(name: str, case: Case, model: Any, x: Any) -> Callable[[], Any]:
    import torch

    if name == "torchsurgeon":
        from torchsurgeon import paramcount

        return lambda: paramcount(model, case.shape, batch=case.batch)
    if name == "torchinfo":
        import torchinfo

        if case.on_meta:
            return lambda: torchinfo.summary(model, input_data=x, device="meta", verbose=0)
        return lambda: torchinfo.summary(model, input_size=tuple(x.shape), device="cpu", verbose=0)
    if name == "fvcore":
        from fvcore.nn import FlopCountAnalysis, parameter_count_table

        def run_fvcore() -> Any:
            table = parameter_count_table(model)
            flops = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return table, flops.total()

        return run_fvcore
    if name == "fx ShapeProp":
        from torch.fx.passes.shape_prop import ShapeProp

        def run_shapeprop() -> Any:
            gm = torch.fx.symbolic_trace(model)
            with torch.no_grad():
                return ShapeProp(gm).propagate(x)

        return run_shapeprop
    raise ValueError(name)


def _worker(task: str, warmup: int, repeat: int) -> dict[str, Any]:
    warnings.simplefilter("ignore")
    kind, _, rest = task.partition(":")
    if kind == "measure":
        case_key, tool = rest.split("|")
        case = next(c for c in CASES if c.key == case_key)
        model, x = _build(case)
        fn = _tool(tool, case, model, x)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                times = time_runs(fn, warmup, repeat)
        except Exception as exc:
            return {"error": describe_error(exc), "peak_rss": peak_rss_bytes()}
        return {"times": times, "peak_rss": peak_rss_bytes()}
    if kind == "sweep":
        return _sweep_worker(warmup, repeat)
    if kind == "zoo":
        return _zoo_worker()
    if kind == "profile":
        return _profile_worker()
    if kind == "memory":
        return memory_worker()
    if kind == "memory7b":
        return memory_7b_worker(rest)
    if kind == "memory-resnet50":
        return memory_resnet50_worker()
    if kind == "memory-gpu":
        return memory_gpu_worker()
    if kind == "zoos":
        library, _, threads = rest.partition("|")
        return zoos_worker(library, warmup, int(threads or 0))
    raise ValueError(task)


def _sweep_worker(warmup: int, repeat: int) -> dict[str, Any]:
    import torchvision

    from torchsurgeon import analysis, paramcount, paramcount_sweep

    model = torchvision.models.resnet50().eval()
    timed = interleaved_runs(
        {
            "one": lambda: paramcount(model, (3, 224, 224)),
            "sweep": lambda: paramcount_sweep(model, SWEEP_SHAPES),
            "channels": lambda: paramcount_sweep(model, CHANNEL_SWEEP),
            "loop": lambda: [paramcount(model, s) for s in SWEEP_SHAPES],
        },
        warmup,
        max(repeat, SWEEP_ROUNDS),
    )
    # 20 sweeps in a row, as a loop over configurations runs them: the mean counts the full garbage
    # collections some of them trigger, with the collector paused during each (as released) and not
    in_a_row = time_runs(lambda: paramcount_sweep(model, SWEEP_SHAPES), 2, 20)
    with unittest.mock.patch.object(analysis, "paused_gc", contextlib.nullcontext):
        unpaused = time_runs(lambda: paramcount_sweep(model, SWEEP_SHAPES), 2, 20)
    return {
        **timed,
        "in_a_row": in_a_row,
        "unpaused": unpaused,
        "peak_rss": peak_rss_bytes(),
    }


def _zoo_worker() -> dict[str, Any]:
    import torchvision

    sys.path.insert(0, str(ROOT / "tests"))
    from models import natural_size, on_meta
    from torchsurgeon import paramcount

    names = torchvision.models.list_models(module=torchvision.models)
    built = analysed = 0.0
    failures: list[str] = []
    for name in names:  # one model at a time: building is not timed, analysing is
        start = time.perf_counter()
        model = on_meta(torchvision.models.get_model, name=name)
        built += time.perf_counter() - start
        size = natural_size(name)
        start = time.perf_counter()
        for channels in (1, 3):
            try:
                paramcount(model, (channels, size, size))
            except Exception as exc:
                failures.append(f"{name} C={channels}: {describe_error(exc)}")
        analysed += time.perf_counter() - start
        del model
    return {
        "models": len(names),
        "analyses": 2 * len(names),
        "seconds": analysed,
        "build_seconds": built,
        "failures": failures,
    }


def _profile_worker() -> dict[str, Any]:
    import torchvision

    from torchsurgeon import analyse_graph, build_graph, paramcount, propagate_shapes
    from torchsurgeon.analysis import _analyse, _trace_explained
    from torchsurgeon.arguments import tensor_inputs
    from torchsurgeon.gcpause import paused_gc
    from torchsurgeon.records import CrossCheckMode
    from torchsurgeon.trace import trace

    SHAPE = (3, 224, 224)

    model = torchvision.models.resnet50().eval()
    traced = trace(model)
    G = build_graph(traced)
    stages = {
        "trace": statistics.median(time_runs(lambda: trace(model), 1, 5)),
        "graph": statistics.median(time_runs(lambda: build_graph(traced), 1, 5)),
        "analysis": statistics.median(time_runs(lambda: analyse_graph(G, (3, 224, 224)), 1, 5)),
        "shapes": statistics.median(time_runs(lambda: propagate_shapes(G, (3, 224, 224)), 1, 5)),
    }
    # paramcount's own two halves, timed in the same calls: its trace, then everything after it (its private
    # steps, called as paramcount calls them: no copy of the graph), inside one pause of the garbage collector
    # as in paramcount; the collection when the pause ends walks what both halves made, and is timed apart
    options = {"leaf_modules": (), "concrete_args": None, "autowrap_functions": (), "inputs": tensor_inputs(SHAPE)}
    halves: list[tuple[float, float, float]] = []
    for i in range(25):
        with paused_gc():
            start = time.perf_counter()
            traced_now = _trace_explained(model, SHAPE, 1, options)
            middle = time.perf_counter()
            _analyse(build_graph(traced_now), SHAPE, 1, "", None, CrossCheckMode.AUTO, copy_graph=False)
            end = time.perf_counter()
        if i >= 5:  # warm-up
            halves.append((middle - start, end - middle, time.perf_counter() - end))
    stages["paired trace"] = statistics.median(t for t, _, _ in halves)
    stages["paired after"] = statistics.median(a for _, a, _ in halves)
    stages["paired collection"] = statistics.median(c for _, _, c in halves)
    for _ in range(3):
        paramcount(model, (3, 224, 224))
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(20):
        paramcount(model, (3, 224, 224))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"torchsurgeon|fx/_symbolic_trace|fx/graph_module", 18)
    return {"profile": out.getvalue(), "stages": stages}


# --------------------------------------------------------------------------- driver side


def _cell(result: dict[str, Any], reference: float | None) -> str:
    if "error" in result:
        return f"fails: {result['error']}"
    median = statistics.median(result["times"])
    if reference is None:
        return ms(median)
    return f"{ms(median)} ({median / reference:,.1f}×)"


def _table(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "| case | " + " | ".join(TOOLS) + " |",
        "|---|" + "---|" * len(TOOLS),
    ]
    for case in CASES:
        row = results[case.key]
        ours = row["torchsurgeon"]
        ref = statistics.median(ours["times"]) if "times" in ours else None
        cells = [_cell(row[tool], None if tool == "torchsurgeon" else ref) for tool in TOOLS]
        lines.append(f"| {case.label} | " + " | ".join(cells) + " |")
    lines += ["", "| case | " + " | ".join(f"{t} peak RSS" for t in TOOLS) + " |", "|---|" + "---|" * len(TOOLS)]
    for case in CASES:
        cells = [gib(r["peak_rss"]) if "peak_rss" in r else "-" for r in (results[case.key][t] for t in TOOLS)]
        lines.append(f"| {case.label} | " + " | ".join(cells) + " |")
    return lines


def _why(results: dict[str, dict[str, dict[str, Any]]], sweep: dict[str, Any], stages: dict[str, float]) -> list[str]:
    """Why the speed targets are missed, from the measured stages of one resnet50 analysis."""
    if not stages:
        return []
    t, g, a, sh = (stages[k] for k in ("trace", "graph", "analysis", "shapes"))
    lines = [
        "## Where the time goes (resnet50, 1 × 3×224×224)",
        "",
        f"`trace` (torch.fx symbolic trace + GraphModule) {ms(t)}, `build_graph` {ms(g)}, "
        f"`analyse_graph` {ms(a)} (of which shape propagation {ms(sh)}; the rest is parameter accounting, "
        "FLOPs and the report rows).",
        "",
    ]
    info = results.get("resnet50", {}).get("torchinfo", {})
    if "times" in info:
        budget = 0.25 * statistics.median(info["times"])
        if t + g + a > budget:
            lines.append(
                f"- ≤ 0.25 × torchinfo means ≤ {ms(budget)} here: torchinfo's eval-mode forward of resnet50 on this "
                f"CPU is fast, and fx's symbolic trace and graph alone take {ms(t + g)}."
            )
    if "sweep" in sweep:
        one, many = statistics.median(sweep["one"]), statistics.median(sweep["sweep"])
        if many > 1.5 * one:
            lines.append(
                f"- A sweep saves the trace and the graph ({ms(t + g)}) for every input after the first, but each "
                f"input still costs its propagation, parameter counts, FLOPs and report ({ms(a)} with a fresh "
                f"propagation): 8 inputs ≈ {ms(t + g)} + 8 × {ms(a)}. ≤ 1.5 × one analysis would need "
                f"≤ {ms((1.5 * (t + g + a) - t - g) / 8)} per input."
            )
    return [*lines, ""]


def _targets(
    results: dict[str, dict[str, dict[str, Any]]],
    sweep: dict[str, Any],
    zoo: dict[str, Any],
    stages: dict[str, float],
) -> list[tuple[str, str, bool | None]]:
    def median_of(case: str, tool: str = "torchsurgeon") -> float | None:
        r = results[case][tool]
        return statistics.median(r["times"]) if "times" in r else None

    rows: list[tuple[str, str, bool | None]] = []
    ours, theirs = median_of("resnet50"), median_of("resnet50", "torchinfo")
    if ours and theirs:
        rows.append(
            (
                "resnet50 1 × (3×224×224): torchsurgeon ≤ 0.25 × torchinfo",
                f"{ours / theirs:.3f}×",
                ours <= 0.25 * theirs,
            )
        )
    else:
        rows.append(("resnet50 1 × (3×224×224): torchsurgeon ≤ 0.25 × torchinfo", "not measured", None))
    big, small = median_of("resnet50-b32-512"), median_of("resnet50")
    if big and small:
        rows.append(
            ("resnet50 32 × (3×512×512) within 1.2 × of 1 × (3×224×224)", f"{big / small:.2f}×", big <= 1.2 * small)
        )
    if "paired after" in stages:
        after, traced = stages["paired after"], stages["paired trace"]
        rows.append(
            (
                "analysis after the trace ≤ 0.30 × the trace (resnet50 1 × 3×224×224, paramcount's two halves)",
                f"{after / traced:.2f}× ({ms(after)} after a {ms(traced)} trace, same calls; then "
                f"{ms(stages['paired collection'])} collecting garbage when the pause ends)",
                after <= 0.30 * traced,
            )
        )
    if "sweep" in sweep:
        one, many = statistics.median(sweep["one"]), statistics.median(sweep["sweep"])
        rows.append(
            (
                f"sweep of {len(SWEEP_SHAPES)} shapes ≤ 1.5 × one analysis (resnet50, mixed sweep)",
                f"{many / one:.2f}×",
                many <= 1.5 * one,
            )
        )
    llama = results["llama7b"]["torchsurgeon"]
    if "times" in llama:
        t = statistics.median(llama["times"])
        rss = llama["peak_rss"]
        rows.append(("7B decoder on meta: analysis < 10 s", ms(t), t < 10))
        rows.append(("7B decoder on meta: peak RSS < 2 GiB (whole process)", gib(rss), rss < 2 * 2**30))
    if "seconds" in zoo:
        rows.append(
            (
                f"torchvision zoo ({zoo['models']} classification models) at C ∈ {{1, 3}} < 90 s",
                f"{zoo['seconds']:.1f} s ({len(zoo['failures'])} failures)",
                zoo["seconds"] < 90 and not zoo["failures"],
            )
        )
    return rows


def _machine() -> list[str]:
    import fvcore
    import torch
    import torchinfo
    import torchvision

    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"torchinfo {torchinfo.__version__}, fvcore {getattr(fvcore, '__version__', '?')}"
    )
    return [
        f"- Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {versions}",
        f"- Date: {datetime.date.today().isoformat()}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median; >= 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement before giving up")
    parser.add_argument("--memory-gib", type=float, default=8.0, help="address-space cap per measurement")
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="seconds to wait for other processes to go idle first"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown file to write")
    parser.add_argument("--only", nargs="*", default=None, help="case keys to run (default: all)")
    parser.add_argument("--memory", action="store_true", help="only the memory planner's tables, printed (no file)")
    parser.add_argument(
        "--zoos-only", action="store_true", help="run only the third-party zoos section; update it in --output"
    )
    parser.add_argument(
        "--zoo-threads",
        type=int,
        default=1,
        help="torch threads in the zoos section (0: torch's default); 1 keeps tiny forwards stable on a busy machine",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.warmup, args.repeat)))
        return 0
    if args.repeat < 5:
        parser.error("--repeat must be at least 5 (the median of >= 5 runs)")
    if args.zoos_only:
        zoos = zoos_section(args)
        print("\n".join(zoos))
        args.output.write_text(replace_section(args.output.read_text() if args.output.exists() else "", zoos))
        print(f"section updated in {args.output}")
        return 0

    if args.memory:
        print("\n".join(memory_sections(args)))
        return 0
    load_before = os.getloadavg()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for case in CASES:
        if args.only is not None and case.key not in args.only:
            continue
        results[case.key] = {}
        for tool in TOOLS:
            print(f"{case.label:45s} {tool:14s}", end=" ", flush=True)
            results[case.key][tool] = r = spawn(f"measure:{case.key}|{tool}", args)
            print(_cell(r, None), flush=True)
    if args.only is not None:
        print(json.dumps(results, indent=1))
        return 0
    print("sweep ...", flush=True)
    sweep = spawn("sweep:", args)
    print("zoo ...", flush=True)
    zoo = spawn("zoo:", args)
    profile = spawn("profile:", args)
    print("memory ...", flush=True)
    memory = memory_sections(args)
    zoos = zoos_section(args)

    load_after = os.getloadavg()
    lines = ["# torchsurgeon benchmarks", ""]
    lines += _machine()
    lines.append(
        f"- Load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(the 2 cores are shared: peers' multi-threaded forwards slow down a lot on a busy machine)"
    )
    lines += [
        f"- Command: `make bench` (`{Path(sys.executable).name} benchmarks/run.py`); median of {args.repeat} runs "
        f"after {args.warmup} warm-up, each measurement in its own process (memory cap {args.memory_gib:g} GiB), "
        "in this order: " + ", ".join(TOOLS) + ".",
        "- Times exclude building the model and its input. In parentheses: the peer's time / torchsurgeon's.",
        "",
        "## Time",
        "",
    ]
    lines += _table(results)
    notes = [f"{c.label}: {c.note}" for c in CASES if c.note]
    notes.append(f"out of memory: the measurement needed more than the {args.memory_gib:g} GiB address-space cap")
    lines += ["", "Notes: " + "; ".join(notes) + ".", ""]
    if "sweep" in sweep:
        one, many, chans, loop = (statistics.median(sweep[k]) for k in ("one", "sweep", "channels", "loop"))
        lines += [
            "## Sweep (resnet50, trace once, re-propagate)",
            "",
            f"Mixed sweep: {', '.join(str(s) for s in SWEEP_SHAPES)}. "
            f"Channel sweep: C = 1, 2, 3, 4 at 224 and 512 (after the stem, nodes are reused). "
            f"Medians of {len(sweep['one'])} rounds in one process, each round timing the four in turn (a slower "
            "or faster spell of the shared machine falls on all four alike).",
            "",
            "| one `paramcount` | `paramcount_sweep`, mixed 8 | `paramcount_sweep`, channel 8 | 8 × `paramcount` |",
            "|---|---|---|---|",
            f"| {ms(one)} | {ms(many)} ({many / one:.2f}×) | {ms(chans)} ({chans / one:.2f}×) "
            f"| {ms(loop)} ({loop / one:.2f}×) |",
            "",
        ]
        if "in_a_row" in sweep:
            row, unpaused = sweep["in_a_row"], sweep["unpaused"]
            lines += [
                f"20 mixed sweeps in a row (the mean counts the full garbage collections some of them trigger): "
                f"mean {ms(statistics.mean(row))}, slowest {ms(max(row))} with the collector paused during each "
                f"call (`torchsurgeon.gcpause`); without the pause mean {ms(statistics.mean(unpaused))}, slowest "
                f"{ms(max(unpaused))}.",
                "",
            ]
    else:
        lines += ["## Sweep", "", f"fails: {sweep.get('error')}", ""]
    if "seconds" in zoo:
        lines += [
            "## torchvision zoo",
            "",
            f"{zoo['analyses']} analyses ({zoo['models']} classification models built on meta, C = 1 and C = 3 "
            f"at their natural size): {zoo['seconds']:.1f} s (building them: {zoo['build_seconds']:.1f} s). "
            f"Failures: {', '.join(zoo['failures']) or 'none'}.",
            "",
        ]
    lines += zoos
    lines += ["## Targets (from issues 5 and 9)", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in _targets(results, sweep, zoo, profile.get("stages", {})):
        lines.append(f"| {target} | {measured} | {'yes' if met else 'no' if met is not None else '?'} |")
    lines += ["", *_why(results, sweep, profile.get("stages", {}))]
    lines += memory
    if "profile" in profile:
        lines += [
            "",
            "## Profile (cProfile, 20 × paramcount(resnet50, (3, 224, 224)), torchsurgeon and fx frames)",
            "",
            "```",
            *[line.rstrip() for line in profile["profile"].strip().splitlines() if line.strip()][-24:],
            "```",
        ]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    args.output.write_text(text)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
