"""The zoo models that are slower than torchinfo at the zoo's tiny configurations, at their default sizes.

The third-party zoo section of ``results.md`` builds every model from a small
configuration (Deformable DETR with ``d_model=32`` at 128×128), where a forward
is mostly Python overhead and torchinfo's hooked forward is cheap.  This script
times the same three measurements at each model's default configuration and a
real input size: ``paramcount``, ``torchinfo.summary`` and one forward under
``no_grad`` (median of 3 after 1 warm-up, interleaved, 1 torch thread, random
weights: no download).

    .venv/bin/python benchmarks/full_size.py            # prints a markdown table
    .venv/bin/python benchmarks/full_size.py --write    # also writes benchmarks/results_full_size.md
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness import ms

OUT = Path(__file__).resolve().parent / "results_full_size.md"


def _models() -> list[tuple[str, Callable[[], torch.nn.Module], int]]:
    import transformers

    def deformable_detr() -> torch.nn.Module:
        config = transformers.DeformableDetrConfig(use_pretrained_backbone=False)  # a timm resnet50 backbone
        return transformers.DeformableDetrModel(config)

    def d_fine() -> torch.nn.Module:
        return transformers.DFineForObjectDetection(transformers.DFineConfig())

    return [("Deformable DETR (default config)", deformable_detr, 512), ("D-FINE (default config)", d_fine, 640)]


def measure(repeat: int = 3) -> list[dict[str, Any]]:
    import torchinfo

    from torchsurgeon import paramcount

    torch.set_num_threads(1)
    rows = []
    for label, build, size in _models():
        torch.manual_seed(0)
        model = build().eval()
        x = torch.randn(1, 3, size, size)

        def forward(model: torch.nn.Module = model, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                model(x)

        calls = {
            "paramcount": lambda model=model, size=size: paramcount(model, (3, size, size)),
            "torchinfo": lambda model=model, x=x: torchinfo.summary(model, input_data=x, verbose=0),
            "forward": forward,
        }
        times: dict[str, list[float]] = {name: [] for name in calls}
        for i in range(repeat + 1):  # the first round warms up
            for name, call in calls.items():
                gc.collect()
                start = time.perf_counter()
                call()
                if i:
                    times[name].append(time.perf_counter() - start)
        report = paramcount(model, (3, size, size))
        rows.append(
            {
                "model": label,
                "input": f"1 × 3×{size}×{size}",
                "params": sum(p.numel() for p in model.parameters()),
                "exact": report.total == sum(p.numel() for p in model.parameters()),
                "trust": report.crosscheck.trust.value,
                **{name: statistics.median(t) for name, t in times.items()},
            }
        )
        del model, report
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | input | parameters | torchsurgeon | torchinfo (torchinfo / torchsurgeon) | forward "
        "| total exact, cross-check |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["torchinfo"] / r["paramcount"]
        lines.append(
            f"| {r['model']} | {r['input']} | {r['params']:,} | {ms(r['paramcount'])} | "
            f"{ms(r['torchinfo'])} ({ratio:.1f}×) | {ms(r['forward'])} | {r['exact']}, {r['trust']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"also write {OUT.name}")
    args = parser.parse_args()
    start, load = time.time(), os.getloadavg()[0]
    lines = table(measure())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Full-size detectors: paramcount vs torchinfo.summary",
        "",
        f"- {when}; `.venv/bin/python benchmarks/full_size.py --write`; 1 torch thread; median of 3 after 1 "
        f"warm-up, interleaved; load average (1 min) before: {load:.2f}; wall time {time.time() - start:.0f} s",
        "- The transformers zoo's two detectors, slower than torchinfo or level with it at the zoo's small "
        "configurations (results.md), here at their default configurations and a real input size.",
        "",
    ]
    text = "\n".join([*head, *lines, ""])
    print(text)
    if args.write:
        OUT.write_text(text)


if __name__ == "__main__":
    main()
