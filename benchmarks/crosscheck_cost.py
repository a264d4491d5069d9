"""The cost of the cross-check, as docs/crosscheck.md reports it: ``python benchmarks/crosscheck_cost.py``.

Prints the table of ``paramcount`` with ``crosscheck="never"/"auto"/"always"`` (min of 15 runs,
``gc.collect()`` before each, batch 1) and the time of a meta forward of resnet50 with torch's meta
kernels and under ``rules.on_meta.ruled_meta`` (min of 10 runs).  Needs MONAI for the BasicUNet row.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision

from torchsurgeon import paramcount
from torchsurgeon.rules.on_meta import ruled_meta
from torchsurgeon.shapes import meta_copy


def best_ms(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    from monai.networks.nets import BasicUNet

    resnet50 = torchvision.models.resnet50()
    unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)
    cases = [
        ("paramcount(resnet50, (3, 224, 224))", resnet50, (3, 224, 224)),
        ("paramcount(resnet50, (1, 224, 224))", resnet50, (1, 224, 224)),
        ("paramcount(BasicUNet 2D, (1, 64, 64))", unet, (1, 64, 64)),
    ]
    print("| call | never | auto | always |\n| --- | --- | --- | --- |")
    for name, model, shape in cases:
        cells = []
        for mode in ("never", "auto", "always"):
            ms = best_ms(lambda m=model, s=shape, c=mode: paramcount(m, s, crosscheck=c), 15)
            cells.append(f"{ms:.1f} ms ({paramcount(model, shape, crosscheck=mode).crosscheck.trust})")
        print(f"| `{name}` | " + " | ".join(cells) + " |")

    x = torch.empty(1, 3, 224, 224, device="meta")
    print(f"\nresnet50 meta copy: {best_ms(lambda: meta_copy(resnet50), 10):.1f} ms")
    for training in (False, True):
        copy_ = meta_copy(resnet50).train(training)

        def forward(rules: bool, copy_: torch.nn.Module = copy_) -> None:
            with torch.no_grad(), torch.device("meta"), ruled_meta() if rules else torch.device("meta"):
                copy_(x)

        plain, ruled = best_ms(lambda: forward(False), 10), best_ms(lambda: forward(True), 10)
        mode = "training" if training else "eval"
        print(f"resnet50 meta forward, {mode} mode: {plain:.1f} ms with meta kernels, {ruled:.1f} ms under ruled_meta")


if __name__ == "__main__":
    main()
