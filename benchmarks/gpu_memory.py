"""Compare ``memory_plan(...).peak`` with ``torch.cuda.max_memory_allocated()`` over real training steps.

Run on a machine with a CUDA GPU (issue 11 asks for >= 3 models)::

    PYTHONPATH=src python benchmarks/gpu_memory.py            # Markdown table on stdout
    PYTHONPATH=src python benchmarks/gpu_memory.py --json

For each model: the plan (simulated on fake CPU tensors, nothing allocated), then on the GPU the
model, an AdamW optimizer and a batch, and three real training steps (forward, ``backward`` of the
output's sum, ``step``, ``zero_grad``); ``max_memory_allocated`` over the steps after the first
(the optimizer state exists from the first step on), and the memory allocated before the steps
(weights). Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

CASES: tuple[tuple[str, int, tuple[int, ...]], ...] = (  # torchvision models, random weights
    ("resnet50", 32, (3, 224, 224)),
    ("mobilenet_v3_large", 64, (3, 224, 224)),
    ("vit_b_16", 16, (3, 224, 224)),
    ("resnet50, frozen backbone", 32, (3, 224, 224)),
)


def _build(name: str) -> Any:
    import torchvision

    model = torchvision.models.get_model(name.split(",")[0])
    if "frozen" in name:
        for pname, p in model.named_parameters():
            p.requires_grad_(pname.startswith(("fc.", "head", "classifier")))
    return model


def _measure(model: Any, batch: int, shape: tuple[int, ...], amp: Any) -> dict[str, int]:
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = model.cuda().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    x = torch.randn(batch, *shape, device="cuda")
    before = torch.cuda.memory_allocated()
    peaks = []
    for _ in range(3):
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", amp, enabled=amp is not None):
            out = model(x)
        out.float().sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del out
        peaks.append(torch.cuda.max_memory_allocated())
    model.cpu()
    return {"weights_and_batch": before, "peak": max(peaks[1:])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast dtype for both")
    args = parser.parse_args(argv)
    import torch

    from torchsurgeon import memory_plan

    if not torch.cuda.is_available():
        print("No CUDA GPU on this machine: plan.peak cannot be compared with torch.cuda.max_memory_allocated().")
        return 0
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp or "")
    rows = []
    for name, batch, shape in CASES:
        model = _build(name)
        plan = memory_plan(model, shape, batch=batch, optimizer="adamw", amp=amp)
        real = _measure(model, batch, shape, amp)
        rows.append({"model": name, "batch": batch, "plan_peak": plan.peak, **real})
        del model
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, amp {args.amp or 'off'}, AdamW\n")
    print("| model | batch | `plan.peak` | `max_memory_allocated` (steps 2-3) | plan / real |")
    print("|---|---|---|---|---|")
    for r in rows:
        gib = 2**30
        print(
            f"| {r['model']} | {r['batch']} | {r['plan_peak'] / gib:.2f} GiB | {r['peak'] / gib:.2f} GiB | "
            f"{r['plan_peak'] / r['peak']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
