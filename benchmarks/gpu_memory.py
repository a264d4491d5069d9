"""Compare ``memory_plan(...)`` with what a real training step allocates on a CUDA GPU.

Run on a machine with a CUDA GPU (issue 11 asks for >= 3 models)::

    PYTHONPATH=src python benchmarks/gpu_memory.py                 # Markdown tables on stdout
    PYTHONPATH=src python benchmarks/gpu_memory.py --amp bf16
    PYTHONPATH=src python benchmarks/gpu_memory.py --json out.json

For each model: the plan (simulated on fake CPU tensors, nothing allocated), then on the GPU the
model, an AdamW optimizer and a batch, and three real training steps (forward, ``backward`` from
every output as the plan does, ``step``, ``zero_grad``).  Measured, beside the plan's figures:

* ``peak``: ``max_memory_allocated`` over the steps after the first (the optimizer state exists
  from the first step on);
* ``activations``: the storages autograd saves in the second step's forward, each once, parameters
  and buffers excluded (``saved_tensors_hooks``), as the plan counts them;
* ``weights`` (parameters and buffers) and ``optimizer_state`` (the AdamW state tensors);
* ``inference_peak``: ``max_memory_allocated`` over a ``no_grad`` forward in eval mode.

Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GIB = 2**30


def _torchvision(name: str, frozen: bool = False) -> Callable[[], Any]:
    def build() -> Any:
        import torchvision

        model = torchvision.models.get_model(
            name, weights=None, **({"weights_backbone": None} if "deeplab" in name else {})
        )
        if frozen:
            for pname, p in model.named_parameters():
                p.requires_grad_(pname.startswith(("fc.", "heads.", "classifier.")))
        return model

    return build


def _timm(name: str) -> Callable[[], Any]:
    def build() -> Any:
        import timm

        return timm.create_model(name, pretrained=False, drop_rate=0.1, attn_drop_rate=0.1)

    return build


def _bert() -> Any:
    import transformers

    config = transformers.BertConfig(attn_implementation="sdpa")  # bert-base sizes, random weights
    return transformers.BertForSequenceClassification(config)


def _small_cases() -> tuple[tuple[str, Callable[[], Any], int, Any], ...]:
    """tests/models.py's GPU_MEMORY_MODELS: the test plans them against this script's JSON."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from models import GPU_MEMORY_MODELS

    return tuple((name, build, batch, spec) for name, (build, batch, spec) in GPU_MEMORY_MODELS.items())


# (name, builder, batch, per-sample input given to memory_plan)
CASES: tuple[tuple[str, Callable[[], Any], int, Any], ...] = (
    ("resnet50", _torchvision("resnet50"), 32, (3, 224, 224)),
    ("resnet50, frozen backbone", _torchvision("resnet50", frozen=True), 32, (3, 224, 224)),
    ("mobilenet_v3_large (in-place hardswish)", _torchvision("mobilenet_v3_large"), 64, (3, 224, 224)),
    ("efficientnet_b0 (dropout, stochastic depth)", _torchvision("efficientnet_b0"), 32, (3, 224, 224)),
    ("vit_b_16", _torchvision("vit_b_16"), 16, (3, 224, 224)),
    ("bert-base, 512 tokens (transformers, SDPA)", _bert, 8, {"input_ids": (512,)}),
    # not measured yet (no GPU was left when they were added): 3-D pooling, interpolate and timm's attention under
    # autocast, which cudakernels changes from the CPU's
    ("r3d_18 (3-D convolutions and pooling)", _torchvision("r3d_18"), 8, (3, 16, 112, 112)),
    ("deeplabv3_mobilenet_v3_large (interpolate)", _torchvision("deeplabv3_mobilenet_v3_large"), 8, (3, 512, 512)),
    ("timm vit_small, dropout 0.1 (fused attention)", _timm("vit_small_patch16_224"), 32, (3, 224, 224)),
)


def _batch(spec: Any, batch: int) -> dict[str, Any] | Any:
    import torch

    if isinstance(spec, dict):
        return {k: torch.randint(0, 1000, (batch, *v), device="cuda") for k, v in spec.items()}
    return torch.randn(batch, *spec, device="cuda")


def _outputs(out: Any) -> list[Any]:
    """Every tensor in a model's output (a tensor, a tuple, a dict or a transformers ModelOutput)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for v in out for t in _outputs(v)] if isinstance(out, (list, tuple)) else []


def _measure(model: Any, batch: int, spec: Any, amp: Any) -> dict[str, int]:
    import torch

    torch.cuda.empty_cache()
    model = model.cuda().train()
    weights = torch.cuda.memory_allocated()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    x = _batch(spec, batch)
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(t: Any) -> Any:
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            saved[s.data_ptr()] = s.nbytes()
        return t

    def call() -> Any:
        return model(**x) if isinstance(x, dict) else model(x)

    peaks = []
    for i in range(3):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with torch.autocast("cuda", amp, enabled=amp is not None):
            if i == 1:
                saved.clear()
                with hooks:
                    out = call()
            else:
                out = call()
        outs = [t for t in _outputs(out) if t.requires_grad]
        torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])
        del out, outs
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated())
    activations = sum(saved.values())
    state = sum(
        t.untyped_storage().nbytes() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
    )
    del optimizer
    model.eval()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), torch.autocast("cuda", amp, enabled=amp is not None):
        call()
    torch.cuda.synchronize()
    inference = torch.cuda.max_memory_allocated()
    model.cpu()
    torch.cuda.empty_cache()
    return {
        "weights": weights,
        "activations": activations,
        "optimizer_state": state,
        "peak": max(peaks[1:]),
        "inference_peak": inference,
    }


def _cublas_workspaces() -> tuple[int, int]:
    """Bytes the allocator gives cuBLAS at the first matrix product of the forward's thread and of autograd's."""
    import torch

    a = torch.randn(256, 256, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    b = a @ a
    torch.cuda.synchronize()
    forward = torch.cuda.memory_allocated() - before - b.untyped_storage().nbytes()
    b.sum().backward()
    torch.cuda.synchronize()
    backward = torch.cuda.memory_allocated() - before - forward - b.untyped_storage().nbytes()
    backward -= a.grad.untyped_storage().nbytes() if a.grad is not None else 0
    return forward, backward


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON to FILE")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast dtype for both")
    parser.add_argument("--only", nargs="*", default=None, help="models whose name contains one of these")
    args = parser.parse_args(argv)
    import torch

    from torchsurgeon import memory_plan

    if not torch.cuda.is_available():
        print("No CUDA GPU on this machine: plan.peak cannot be compared with torch.cuda.max_memory_allocated().")
        return 0
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp or "")
    workspaces = _cublas_workspaces()
    rows: list[dict[str, Any]] = []
    for name, build, batch, spec in (*CASES, *_small_cases()):
        if args.only and not any(part in name for part in args.only):
            continue
        row: dict[str, Any] = {"model": name, "batch": batch}
        try:
            model = build()
            plan = memory_plan(model, spec, batch=batch, optimizer="adamw", amp=amp)
            row["plan_cpu_kernels_activations"] = memory_plan(
                model, spec, batch=batch, amp=amp, device="cpu"
            ).activations
            row["plan"] = {
                k: getattr(plan, k)
                for k in (
                    "weights",
                    "buffers",
                    "gradients",
                    "optimizer_state",
                    "activations",
                    "transient",
                    "step_transient",
                    "peak",
                    "inference_peak",
                )
            }
            row["real"] = _measure(model, batch, spec, amp)
        except Exception as exc:  # a benchmark row reports its failure and the others go on
            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
            traceback.print_exc()
        rows.append(row)
        model = None
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "gpu": torch.cuda.get_device_name(),
                    "torch": torch.__version__,
                    "amp": args.amp,
                    "cublas_workspaces": workspaces,
                    "rows": rows,
                },
                f,
                indent=1,
            )
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, amp {args.amp or 'off'}, AdamW")
    print(f"cuBLAS workspaces: {workspaces[0]:,} B (forward's thread), {workspaces[1]:,} B (autograd's)\n")
    print(
        "| model | batch | plan peak | real peak (steps 2-3) | plan / real | plan activations | saved on GPU | "
        "plan / real | plan inference peak | real | plan / real |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['batch']} | {r['error']} |")
            continue
        p, m = r["plan"], r["real"]
        print(
            f"| {r['model']} | {r['batch']} | {p['peak'] / GIB:.2f} GiB | {m['peak'] / GIB:.2f} GiB | "
            f"{p['peak'] / m['peak']:.3f} | {p['activations'] / GIB:.3f} GiB | {m['activations'] / GIB:.3f} GiB | "
            f"{p['activations'] / max(m['activations'], 1):.3f} | {p['inference_peak'] / GIB:.3f} GiB | "
            f"{m['inference_peak'] / GIB:.3f} GiB | {p['inference_peak'] / m['inference_peak']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
