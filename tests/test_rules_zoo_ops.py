"""Rules for the ops the segmentation and detection zoos call (MONAI, smp, DETR), against real CPU calls.

Each op here ran on ``meta`` in the analysis of a third-party zoo model, where meta
execution costs milliseconds a call (``F.instance_norm`` runs batch norm's Python
decomposition on ``meta``).  As in test_rules.py: whenever a rule answers, meta
execution must not raise and gives the same shape, dtype and strides; a real CPU
call of the same layout gives them too, and coverage asserts make sure the
ordinary cases are answered.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from test_rules import SETTINGS, _apply, _check, _signature, tensors
from torchsurgeon import paramcount
from torchsurgeon.rules import FALLBACK, Call, function_rule


def _cpu_or_error(call: Any) -> tuple[Any, BaseException | None]:
    try:
        return call(), None
    except Exception as exc:
        return None, exc


@SETTINGS
@given(
    data=st.data(),
    use_input_stats=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_instance_norm_function_rule_matches_the_cpu(
    data: st.DataObject, use_input_stats: bool, dtype: torch.dtype
) -> None:
    x, build = data.draw(tensors(min_rank=2, max_rank=5, dtype=dtype))
    c = int(x.shape[1])
    size = c if data.draw(st.integers(0, 5)) else c + 1  # sometimes the wrong channel count: torch raises
    stats = {
        name: torch.empty(size, dtype=dtype, device="meta") if data.draw(st.integers(0, 3)) else None
        for name in ("running_mean", "running_var", "weight", "bias")
    }
    kwargs: dict[str, Any] = {**stats, "use_input_stats": use_input_stats}
    rule = function_rule(F.instance_norm)
    answered = _check(rule, (x,), kwargs, lambda: F.instance_norm(x, **kwargs))
    on_cpu = {k: torch.ones(v.shape, dtype=dtype) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    cpu, error = _cpu_or_error(lambda: F.instance_norm(build("cpu"), **on_cpu))
    if answered:  # the oracle: a real call of the same layout
        assert error is None, f"the rule answered but the CPU raises {error!r}"
        assert _signature(_apply(rule, (x,), kwargs)) == _signature(cpu)
    else:
        assert error is not None, "a call the CPU runs should have been answered"


def test_instance_norm_function_refuses_what_torch_refuses() -> None:
    rule = function_rule(F.instance_norm)
    assert _apply(rule, (torch.empty(2, 3, 4, device="meta"),), {}) is not FALLBACK
    one_element = torch.empty(2, 3, 1, 1, device="meta")  # torch: more than 1 spatial element when training
    assert _apply(rule, (one_element,), {}) is FALLBACK
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        F.instance_norm(torch.zeros(2, 3, 1, 1))
    x = torch.empty(2, 3, 4, device="meta")  # no running statistics to use
    assert _apply(rule, (x,), {"use_input_stats": False}) is FALLBACK


class _FunctionalInstanceNorm(nn.Module):
    """MONAI's and smp's pattern: F.instance_norm called in a forward (here beside the module)."""

    def __init__(self, affine: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.weight = nn.Parameter(torch.ones(4)) if affine else None
        self.bias = nn.Parameter(torch.zeros(4)) if affine else None
        self.module = nn.InstanceNorm2d(4, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.module(x) + F.instance_norm(x, weight=self.weight, bias=self.bias)


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_function_flops_are_the_modules_and_fvcores(affine: bool) -> None:
    fvcore = pytest.importorskip("fvcore.nn")
    model = _FunctionalInstanceNorm(affine).eval()
    report = paramcount(model, (3, 8, 8), batch=2)
    layers = {layer.name: layer for layer in report.layers}
    function = next(layer for name, layer in layers.items() if name.startswith("instance_norm"))
    assert function.flops == layers["module"].flops == 2 * 4 * 6 * 6 * (5 if affine else 4)
    counted = fvcore.FlopCountAnalysis(model, torch.zeros(2, 3, 8, 8)).unsupported_ops_warnings(False)
    assert function.flops + layers["module"].flops == counted.by_operator()["instance_norm"]


@SETTINGS
@given(
    length=st.integers(1, 3),
    source=st.integers(1, 4),
    batch=st.sampled_from([None, 1, 2]),
    heads=st.integers(1, 3),
    head_width=st.integers(1, 3),
    widths=st.sampled_from(["same", "other"]),
    need_weights=st.booleans(),
    average=st.booleans(),
    masked=st.booleans(),
)
def test_multi_head_attention_function_rule_matches_the_cpu(
    length: int,
    source: int,
    batch: int | None,
    heads: int,
    head_width: int,
    widths: str,
    need_weights: bool,
    average: bool,
    masked: bool,
) -> None:
    """``F.multi_head_attention_forward`` (open_clip's ResNet pools its map with it): packed or separate projections,
    batched or not, with or without weights; a mask (which the rule leaves to meta) falls back."""
    e = heads * head_width
    ek, ev = (e, e) if widths == "same" else (e + 1, e + 2)
    lead = () if batch is None else (batch,)
    q, k, v = torch.randn(length, *lead, e), torch.randn(source, *lead, ek), torch.randn(source, *lead, ev)
    kwargs: dict[str, Any] = {
        "embed_dim_to_check": e,
        "num_heads": heads,
        "in_proj_weight": torch.randn(3 * e, e) if widths == "same" else None,
        "in_proj_bias": torch.randn(3 * e),
        "bias_k": None,
        "bias_v": None,
        "add_zero_attn": False,
        "dropout_p": 0.0,
        "out_proj_weight": torch.randn(e + 3, e),
        "out_proj_bias": None,
        "training": False,
        "need_weights": need_weights,
        "average_attn_weights": average,
        "attn_mask": torch.zeros(length, source, dtype=torch.bool) if masked else None,
    }
    if widths == "other":
        kwargs.update(
            use_separate_proj_weight=True,
            q_proj_weight=torch.randn(e, e),
            k_proj_weight=torch.randn(e, ek),
            v_proj_weight=torch.randn(e, ev),
        )
    rule = function_rule(F.multi_head_attention_forward)
    assert rule is not None and rule.shape is not None
    meta = {name: a.to("meta") if isinstance(a, torch.Tensor) else a for name, a in kwargs.items()}
    out = rule.shape(None, (q.to("meta"), k.to("meta"), v.to("meta")), meta, Call("", "", False))
    with torch.no_grad():
        real = F.multi_head_attention_forward(q, k, v, **kwargs)
    if masked:
        assert out is FALLBACK
        return
    assert out is not FALLBACK and _signature(out[0]) == _signature(real[0])
    assert (out[1] is None) == (real[1] is None) == (not need_weights)
    if need_weights:
        assert _signature(out[1]) == _signature(real[1])
