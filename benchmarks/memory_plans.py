"""The memory planner's benchmark section (issue 11): plan vs bytes saved in a real step vs torchinfo.

``run.py --memory`` prints it alone; ``make bench`` writes it to results.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from harness import ROOT, gib, mib, ms, peak_rss_bytes, spawn


def memory_worker() -> dict[str, Any]:
    """memory_plan vs a real CPU training step vs torchinfo, on the models of tests/test_memory.py."""
    import torch
    import torchinfo

    sys.path.insert(0, str(ROOT / "tests"))
    from models import MEMORY_BATCH, MEMORY_MODELS, MEMORY_SIZE, measure_training_step
    from torchsurgeon import memory_plan

    rows = []
    for name, (build, amp) in MEMORY_MODELS.items():
        torch.manual_seed(0)
        model = build()
        start = time.perf_counter()
        plan = memory_plan(model, MEMORY_SIZE, batch=MEMORY_BATCH, amp=amp, device="cpu")
        seconds = time.perf_counter() - start
        real = measure_training_step(model, torch.randn(MEMORY_BATCH, *MEMORY_SIZE), amp)
        stats = torchinfo.summary(model, input_size=(MEMORY_BATCH, *MEMORY_SIZE), verbose=0, mode="train")
        rows.append(
            {
                "model": name,
                "measured": real.saved,
                "activations": plan.activations,
                "gradients": plan.gradients,
                "measured_gradients": real.gradients,
                "peak": plan.peak,
                "seconds": seconds,
                "torchinfo_pass": stats.total_output_bytes,
                "torchinfo_total": stats.total_input + stats.total_output_bytes + stats.total_param_bytes,
            }
        )
    return {"rows": rows, "batch": MEMORY_BATCH, "size": list(MEMORY_SIZE)}


def memory_7b_worker(which: str) -> dict[str, Any]:
    """Plan a 7B LLaMA-style decoder on meta at batch 8 × 4,096 tokens (bf16 autocast, AdamW): time and RSS."""
    import torch

    from torchsurgeon import memory_plan

    if which == "hf":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32
        )
        with torch.device("meta"):
            model: Any = LlamaForCausalLM(config)
        spec: Any = {"input_ids": (4096,)}
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from models import llama_7b_on_meta

        model, spec = llama_7b_on_meta(), (4096,)
    start = time.perf_counter()
    plan = memory_plan(model, spec, batch=8, optimizer="adamw", amp=torch.bfloat16)
    seconds = time.perf_counter() - start
    totals = {k: v for k, v in plan.to_dict().items() if k != "layers"}
    return {"seconds": seconds, "peak_rss": peak_rss_bytes(), "plan": totals}


def memory_resnet50_worker() -> dict[str, Any]:
    """The largest resnet50 batch (3×224×224, AdamW) in 24 GiB: fully trainable vs frozen backbone (fc only)."""
    import torchvision

    from torchsurgeon import memory_plan

    model = torchvision.models.resnet50()
    out: dict[str, Any] = {}
    for what in ("full", "frozen backbone"):
        if what != "full":
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("fc."))
        start = time.perf_counter()
        plan = memory_plan(model, (3, 224, 224), batch=32, optimizer="adamw")
        best = plan.max_batch("24GiB")
        out[what] = {
            "max_batch": best,
            "seconds": time.perf_counter() - start,
            "peak_32": plan.peak,
            "activations_32": plan.activations,
        }
    return out


def memory_gpu_worker() -> dict[str, Any]:
    """Plans now (device="cuda" and "cpu") against the training steps measured on a GPU (gpu_memory_h200.json)."""
    import json

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_memory
    from torchsurgeon import memory_plan

    measured = json.loads((ROOT / "benchmarks" / "gpu_memory_h200.json").read_text())
    cases = {name: (build, batch, spec) for name, build, batch, spec in (*gpu_memory.CASES, *gpu_memory._small_cases())}
    rows = []
    for amp_name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        for name, real in measured["runs"][amp_name].items():
            build, batch, spec = cases[name]
            model = build()
            cuda = memory_plan(model, spec, batch=batch, amp=amp)
            cpu = memory_plan(model, spec, batch=batch, amp=amp, device="cpu")
            rows.append(
                {
                    "model": name,
                    "amp": amp_name,
                    "batch": batch,
                    "saved": real["activations"],
                    "peak": real["peak"],
                    "cuda_activations": cuda.activations,
                    "cuda_peak": cuda.peak,
                    "cpu_activations": cpu.activations,
                    "cpu_peak": cpu.peak,
                }
            )
    return {"gpu": measured["gpu"], "torch": measured["torch"], "rows": rows}


def _gpu_lines(args: argparse.Namespace) -> list[str]:
    table = spawn("memory-gpu:", args)
    if "rows" not in table:
        return [f"GPU comparison fails: {table.get('error')}", ""]
    lines = [
        f"Plans made now against real AdamW training steps measured on an {table['gpu']} (torch {table['torch']}; "
        "`benchmarks/gpu_memory.py` wrote `benchmarks/gpu_memory_h200.json`): *saved* is what autograd saved in a "
        'real step\'s forward, *peak* `torch.cuda.max_memory_allocated()` over steps 2-3. `device="cuda"` (the '
        'default) plans CUDA\'s dropout, attention and autocast and the cuBLAS workspaces; `device="cpu"` the '
        "CPU's kernels.",
        "",
        "| model | amp | batch | saved on GPU | cuda plan / saved | cpu plan / saved | real peak | "
        "cuda plan / peak | cpu plan / peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['model']} | {r['amp']} | {r['batch']} | {mib(r['saved'])} | "
            f"{r['cuda_activations'] / max(r['saved'], 1):.3f} | {r['cpu_activations'] / max(r['saved'], 1):.3f} | "
            f"{gib(r['peak'])} | {r['cuda_peak'] / r['peak']:.3f} | {r['cpu_peak'] / r['peak']:.3f} |"
        )
    return [*lines, ""]


def memory_sections(args: argparse.Namespace) -> list[str]:
    """The memory planner's tables (issue 11): plan vs measured vs torchinfo, the 7B decoder, resnet50 in 24 GiB."""
    table = spawn("memory:", args)
    lines = ["## Memory plan (issue 11)", ""]
    if "rows" in table:
        b, size = table["batch"], "×".join(str(d) for d in table["size"])
        lines += [
            f'Batch {b} × ({size}), AdamW, `device="cpu"`. *Measured*: bytes autograd saved in a real CPU '
            "training-mode forward "
            "(`saved_tensors_hooks`, unique storages, parameters and buffers excluded; "
            "`tests/models.py:measure_training_step`). torchinfo: `summary(model, input_size, mode='train')` "
            "(no autocast): its *Forward/backward pass size* and *Estimated Total Size*.",
            "",
            "| model | measured saved | `plan.activations` | plan / measured | torchinfo fwd/bwd pass | "
            "torchinfo / measured | torchinfo Estimated Total | `plan.peak` | gradients plan = real | plan time |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in table["rows"]:
            lines.append(
                f"| {r['model']} | {mib(r['measured'])} | {mib(r['activations'])} | "
                f"{r['activations'] / r['measured']:.3f} | {mib(r['torchinfo_pass'])} | "
                f"{r['torchinfo_pass'] / r['measured']:.2f} | {mib(r['torchinfo_total'])} | {mib(r['peak'])} | "
                f"{'yes' if r['gradients'] == r['measured_gradients'] else 'NO'} | {ms(r['seconds'])} |"
            )
    else:
        lines.append(f"fails: {table.get('error')}")
    lines += ["", "7B LLaMA-style decoder on meta, batch 8 × 4,096 tokens, AdamW, bf16 autocast:", ""]
    lines += ["| model | plan time | peak RSS (whole process) | activations | `plan.peak` |", "|---|---|---|---|---|"]
    for which, label in (("decoder", "tests/models.py LlamaDecoder"), ("hf", "transformers LlamaForCausalLM")):
        r = spawn(f"memory7b:{which}", args)
        if "seconds" in r:
            plan = r["plan"]
            lines.append(
                f"| {label} | {ms(r['seconds'])} | {gib(r['peak_rss'])} | {gib(plan['activations'])} | "
                f"{gib(plan['peak'])} |"
            )
        else:
            lines.append(f"| {label} | fails: {r.get('error')} | | | |")
    r50 = spawn("memory-resnet50:", args)
    lines += ["", "resnet50, 3×224×224, AdamW, fp32: the largest batch whose planned peak fits in 24 GiB:", ""]
    lines += ["| trainable | max batch in 24 GiB | peak at batch 32 | time (plan + max_batch) |", "|---|---|---|---|"]
    for what in ("full", "frozen backbone"):
        if what in r50:
            r = r50[what]
            lines.append(f"| {what} | {r['max_batch']} | {gib(r['peak_32'])} | {ms(r['seconds'])} |")
    if "error" in r50:
        lines.append(f"| fails: {r50['error']} | | | |")
    return [*lines, "", *_gpu_lines(args)]
