"""Layers with weights whose fit depends on the input: convolutions, linear layers, norms, embeddings.

Their shape rules check the fit: a layer that does not fit reports a
mismatch (expected vs got, and a fix that runs as written, from
:mod:`torchsurgeon.resize`) and returns the output *as if it had been
resized to fit*, so propagation goes on and one call lists every invalid
layer.  MAC and FLOP formulas sit beside each rule.

FLOP conventions: convolutions and linear layers count MACs (``flops = 2 *
macs``, as ``torch.utils.flop_counter.FlopCounterMode``; biases not
counted); norms follow fvcore's per-element estimates: batch norm at
inference 2 per element with affine weights (1 without); layer, group and
instance norm, and batch norm in training, 5 per element with affine
weights (4 without); RMS norm 4 with a weight (3 without).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..records import FlopKind
from ._common import (
    REQUIRED,
    Spec,
    bind,
    elementwise,
    fit_fix,
    float_tensor,
    fn,
    is_int,
    mixed_dtypes,
    new,
    ntuple,
    numel,
    one_tensor,
    plainly_contiguous,
    transformers_copies,
    weight_dtype,
)
from .registry import FALLBACK, Call, builtin

__all__: tuple[str, ...] = ()


def _rank(call: Call, x: torch.Tensor, ranks: tuple[int, ...], layout: str) -> bool:
    if x.dim() in ranks:
        return True
    call.mismatch(
        "input rank",
        " or ".join(str(r) for r in ranks) + f" {layout}",
        f"{x.dim()} {tuple(x.shape)}",
        (
            "give the per-sample shape without the batch dimension (batch= adds it)"
            if x.dim() > max(ranks)
            else f"give the per-sample shape {layout.split(' or ')[-1].replace('N, ', '')} (batch= adds the batch)"
        )
        if call.from_input
        else "the previous layer gives a tensor of another rank: reshape before this layer",
    )
    return False


def _same_dtype(m: nn.Module, call: Call, x: torch.Tensor) -> torch.dtype:
    """A convolution or linear layer multiplies its input by its weight: a real forward outside ``torch.autocast``
    raises when their floating-point dtypes differ (a float32 head added to a model in bfloat16; see
    :func:`~torchsurgeon.rules._common.mixed_dtypes`), and under it too for an integer or bool input (token ids
    given to a Linear).  The dtype its output has once fixed: the input's when the layer is the odd one (its
    dtype is not the model's: cast the layer), the layer's when the input is (a float32 input given to a float64
    model: cast the input or the whole model, one fix, and the layers after it are not each reported; an integer
    input, cast or embedded before the layer, the same)."""
    dtype = weight_dtype(m)
    if dtype is None or dtype == x.dtype:  # most layers
        return x.dtype
    name = str(dtype).removeprefix("torch.")
    if not x.is_floating_point() and not x.is_complex() and dtype.is_floating_point:  # even under torch.autocast
        call.mismatch(
            "input dtype",
            f"{dtype} (its weight's)",
            str(x.dtype),
            f"a real forward raises RuntimeError: give the model a {name} input, x.to(torch.{name}); token ids need "
            "an nn.Embedding before this layer"
            if call.from_input
            else f"a real forward raises RuntimeError: token ids need an nn.Embedding before this layer; other "
            f"integers or a mask, .to(torch.{name}) before it",
        )
        return dtype  # once fixed, the layer gives its weight's dtype: the layers after it are not each reported
    elif mixed_dtypes((x, new((), dtype))):
        if dtype == call.model_dtype:  # the model's dtype: its input is the odd one, and so are the layers' after
            where = "the model's input" if call.from_input else "its input"
            call.mismatch(
                "input dtype",
                f"{dtype} (its weight's, the model's)",
                str(x.dtype),
                f"a real forward raises RuntimeError outside torch.autocast: {where} is {x.dtype}, the model "
                f"{dtype} — give it a {name} input (x.to(torch.{name})), or make the model's dtype the input's, "
                f"model.to({x.dtype}), or run the forward under torch.autocast",
            )
            return dtype
        call.mismatch(
            "input dtype",
            f"{dtype} (its weight's)",
            str(x.dtype),
            f"a real forward raises RuntimeError outside torch.autocast: make the layer's dtype the input's, "
            f"model.get_submodule({call.layer!r}).to({x.dtype}), or the input's the layer's (.to(torch.{name}) "
            "before it), or run the forward under torch.autocast",
        )
    return x.dtype


def _conv_rule(m: nn.Module, call: Call, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, (nn.modules.conv._ConvNd))
    nsp = len(m.kernel_size)
    names = "L" if nsp == 1 else ", ".join(("D", "H", "W")[-nsp:])
    if not _rank(call, x, (nsp + 2, nsp + 1), f"(N, C, {names}) or (C, {names})"):
        return None
    shape = x.shape
    batched = len(shape) == nsp + 2
    if not batched and call.from_input and call.batch_added:  # the batch would be taken for the channels
        spatial = ("L",) if nsp == 1 else ("H", "W") if nsp == 2 else ("D", "H", "W")[-nsp:]
        call.mismatch(
            "input rank",
            f"{nsp + 2} (N, C, {', '.join(spatial)})",
            f"{len(shape)} {tuple(shape)}",
            f"the per-sample shape {tuple(shape[1:])} has no channel dimension: give (C, {', '.join(spatial)}), "
            f"{nsp + 1} dimensions (the batch is added)",
        )
        return None
    c = int(shape[1 if batched else 0])
    dtype = _same_dtype(m, call, x)
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    if c != m.in_channels:
        fix = fit_fix(call, m, "in_channels", m.in_channels, c)
        if call.from_input and call.batch_added and batched and shape[-1] == m.in_channels:  # (H, W, C) given?
            fix += f"; if the input is channels-last, give its shape as {(m.in_channels, c, *shape[2:-1])}"
        call.mismatch("in_channels", m.in_channels, c, fix)
    if not transposed or c == m.in_channels:  # a transposed one given other channels is resized to them
        _some_filters(m, call, transposed)
    # padding_mode other than zeros: F.pad by the list the layer keeps (not its padding, which may be edited after)
    padded = not transposed and m.padding_mode != "zeros"
    pads = list(getattr(m, "_reversed_padding_repeated_twice", [])) if padded else []
    out_sp = []
    for i, size in enumerate(shape[-nsp:]):
        k, s, d = m.kernel_size[i], m.stride[i], m.dilation[i]
        if padded and len(pads) == 2 * nsp:
            before, after = int(pads[2 * (nsp - 1 - i)]), int(pads[2 * (nsp - 1 - i) + 1])
            if m.padding_mode == "reflect" and max(before, after) >= size:
                call.mismatch(
                    f"spatial size (dim {i})",
                    f"> {max(before, after)} (padding_mode='reflect' pads by reflecting the input)",
                    size,
                    "use a larger input, or a smaller padding",
                )
            if m.padding_mode == "circular" and max(before, after) > size:
                call.mismatch(
                    f"spatial size (dim {i})",
                    f">= {max(before, after)} (padding_mode='circular' wraps the input around once at most)",
                    size,
                    "use a larger input, or a smaller padding",
                )
            o = (size + before + after - d * (k - 1) - 1) // s + 1
        elif transposed:
            assert isinstance(m, nn.modules.conv._ConvTransposeNd)
            p = m.padding[i]  # type: ignore[index]
            o = (size - 1) * s - 2 * int(p) + d * (k - 1) + m.output_padding[i] + 1
        elif isinstance(m.padding, str):
            o = size if m.padding == "same" else (size - d * (k - 1) - 1) // s + 1
        else:
            o = (size + 2 * int(m.padding[i]) - d * (k - 1) - 1) // s + 1
        if o <= 0:
            if transposed:  # (size - 1) * s >= 2p - d(k - 1) - output_padding
                gap = 2 * int(m.padding[i]) - d * (k - 1) - m.output_padding[i]  # type: ignore[index]
                need = 1 + -(-gap // s)
            else:
                need = d * (k - 1) + 1 - (0 if isinstance(m.padding, str) or padded else 2 * int(m.padding[i]))  # type: ignore[index]
            call.mismatch(
                f"spatial size (dim {i})",
                f">= {need}",
                size,
                "use a larger input, or less downsampling before this layer",
            )
            o = 1
        out_sp.append(o)
    lead = (shape[0],) if batched else ()
    return new((*lead, m.out_channels, *out_sp), dtype)


def _same_padded_conv_rule(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    """Convolutions with TensorFlow's 'SAME' padding (efficientnet_pytorch's, vendored by smp, and timm's
    ``Conv2dSame``): the static one pads by its ``static_padding`` (an ``nn.ZeroPad2d`` or an ``nn.Identity``, fixed
    for the image size it was built for), the others by what their forward computes from the input's size (timm's
    ran on meta); then the convolution."""
    if x.dim() < 3:
        return _conv_rule(m, call, x)  # the rank mismatch, as a convolution reports it
    if "static_padding" not in m._modules:  # Conv2dDynamicSamePadding, Conv2dSame
        assert isinstance(m, nn.Conv2d)
        pads = []
        for size, k, s, d in zip(x.shape[-2:], m.weight.shape[-2:], m.stride, m.dilation):
            pads.append(max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0))
        return _conv_rule(m, call, x.new_empty((*x.shape[:-2], x.shape[-2] + pads[0], x.shape[-1] + pads[1])))
    pad = m._modules["static_padding"]
    if isinstance(pad, nn.ConstantPad2d) and pad.value == 0:
        left, right, top, bottom = pad.padding
        x = x.new_empty((*x.shape[:-2], x.shape[-2] + top + bottom, x.shape[-1] + left + right))
    elif not isinstance(pad, nn.Identity):
        return FALLBACK  # edited by hand: its forward decides
    return _conv_rule(m, call, x)


def _some_filters(m: nn.modules.conv._ConvNd, call: Call, transposed: bool) -> None:
    """torch runs no convolution whose weight has no filters (its first dim: ``out_channels``, a transposed
    one's ``in_channels``): a real forward raises RuntimeError on every device, meta aside, for any input.  A
    width computed as ``channels // reduction`` (a squeeze-excitation block) is 0 below the reduction."""
    what = "in_channels" if transposed else "out_channels"
    if getattr(m, what) == 0:
        call.mismatch(
            what,
            ">= 1",
            0,
            f"a real forward raises RuntimeError (a convolution's weight needs at least one filter): build the layer "
            f"with {what} >= 1 — a width computed as channels // reduction is 0 when channels < reduction",
        )


def _linear_rule(m: nn.Module, call: Call, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.Linear)
    if not _rank(call, x, tuple(range(1, 9)), "(..., in_features)"):
        return None
    got = int(x.shape[-1])
    dtype = _same_dtype(m, call, x)
    if got != m.in_features:
        fix = fit_fix(call, m, "in_features", m.in_features, got)
        if not call.from_input and not call.pooled and x.dim() == 2:  # flattened features: may follow the input size
            fix += f" (an nn.AdaptiveAvgPool before flatten gives {m.in_features} features for any input size)"
        call.mismatch("in_features", m.in_features, got, fix)
    return new((*x.shape[:-1], m.out_features), dtype)


_NORM_RANKS: dict[type[nn.Module], tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3),
    nn.BatchNorm2d: (4,),
    nn.BatchNorm3d: (5,),
    nn.InstanceNorm1d: (2, 3),
    nn.InstanceNorm2d: (3, 4),
    nn.InstanceNorm3d: (4, 5),
}


def _batchnorm_rule(m: nn.Module, call: Call, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.modules.batchnorm._NormBase)
    ranks = _NORM_RANKS.get(type(m), (2, 3, 4, 5))
    if not _rank(call, x, ranks, "(N, C, ...)"):
        return None
    channel_dim = 0 if isinstance(m, nn.modules.instancenorm._InstanceNorm) and x.dim() == min(ranks) else 1
    got = int(x.shape[channel_dim])
    # without weights or running statistics a norm uses its input's statistics, channel by channel: any count fits
    checks = m.affine or m.track_running_stats
    if checks and got != m.num_features:
        call.mismatch("num_features", m.num_features, got, fit_fix(call, m, "num_features", m.num_features, got))
    _batch_statistics(m, call, x, channel_dim)
    return new(x.shape, x.dtype)


def _batch_statistics(m: nn.modules.batchnorm._NormBase, call: Call, x: torch.Tensor, channel_dim: int) -> None:
    """A norm that normalises with the statistics of its input needs more than one value to average.

    Instance norm using its input's statistics averages each sample's channel over the spatial dims: one
    spatial element is refused at any batch, so the layer does not fit.  Batch norm in training mode (or
    without running statistics) averages each channel over the batch too: one value there is a matter of
    the batch (the analysis runs at batch 1 unless told otherwise), which the report cautions about.
    """
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        if (m.training or not m.track_running_stats) and math.prod(x.shape[channel_dim + 1 :]) == 1:
            call.mismatch(
                "spatial elements when training",
                "> 1",
                1,
                "use a larger input, or less downsampling before this layer",
            )
    elif m.training and x.numel() == x.shape[1]:
        call.caution(
            "a training-mode forward raises (batch norm averages each channel over 1 value); train with a batch "
            "of 2 or more (check it with batch=2; CLI: --batch 2), or call model.eval() for inference"
        )
    elif m.running_mean is None and m.running_var is None and x.numel() == x.shape[1]:
        call.caution(
            "a forward raises (batch norm without running statistics averages each channel over 1 value); "
            "use a batch of 2 or more (check it with batch=2; CLI: --batch 2)"
        )


def _groupnorm_rule(m: nn.Module, call: Call, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.GroupNorm)
    if not _rank(call, x, tuple(range(2, 9)), "(N, C, ...)"):
        return None
    got = int(x.shape[1])
    if got != m.num_channels and m.affine:  # without weights, any count its groups divide fits
        call.mismatch("num_channels", m.num_channels, got, fit_fix(call, m, "num_channels", m.num_channels, got))
    if got % m.num_groups:
        call.mismatch(
            "channels % num_groups", 0, f"{got} % {m.num_groups}", "use a channel count divisible by num_groups"
        )
    elif x.numel() == m.num_groups:  # torch averages each group over the batch too: one value is refused
        call.caution(
            "a forward raises (group norm averages each group over 1 value); "
            "use a batch of 2 or more (check it with batch=2; CLI: --batch 2)"
        )
    return new(x.shape, x.dtype)


def _layernorm_rule(m: nn.Module, call: Call, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, (nn.LayerNorm, nn.RMSNorm))
    n = len(m.normalized_shape)
    got = tuple(int(d) for d in x.shape[-n:]) if x.dim() >= n else tuple(x.shape)
    if got != tuple(m.normalized_shape):
        expected = tuple(m.normalized_shape)
        call.mismatch("normalized_shape", expected, got, fit_fix(call, m, "normalized_shape", expected, got))
    return new(x.shape, x.dtype)


def _channels_layernorm_rule(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    """smp's mix-transformer ``LayerNorm``: a 4-D map normalised over its channels (viewed as (N, H*W, C), normed,
    transposed and viewed back: channels-last strides, as its forward gives them); any other input as
    ``nn.LayerNorm``."""
    if x.dim() != 4:
        return _layernorm_rule(m, call, x)
    n, c, h, w = x.shape
    try:
        tokens = x.view(n, c, -1).transpose(1, 2)
    except RuntimeError:  # a view its forward cannot take either: meta execution gives torch's message
        return FALLBACK
    return _layernorm_rule(m, call, tokens).transpose(1, 2).view(n, c, h, w)  # type: ignore[union-attr]


def _frozen_batchnorm_rule(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    """A batch norm whose statistics and affine values are buffers (DETR's and RT-DETR's backbones, torchvision's
    detection models): ``x * scale + shift``, both of shape (1, C, 1, 1) and computed from the buffers, so the
    output broadcasts as the product does (the input's layout, the buffers' dtype promoted with its own); an input
    whose channels the buffers do not match runs on meta, which raises torch's broadcast error as a forward would."""
    buffers = [getattr(m, name, None) for name in _FROZEN_BUFFERS]
    channels = int(x.shape[1]) if x.dim() == 4 else -1
    if not all(isinstance(b, torch.Tensor) and tuple(b.shape) == (channels,) for b in buffers):
        return FALLBACK
    dtype = functools.reduce(torch.promote_types, (b.dtype for b in buffers), x.dtype)  # type: ignore[union-attr]
    return elementwise((x, new((1, channels, 1, 1), dtype)), tuple(x.shape), dtype)


def _embedding_rule(m: nn.Module, call: Call, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.Embedding)
    if x.is_floating_point():
        call.mismatch("input dtype", "an integer dtype (token ids)", str(x.dtype), "pass a torch.long tensor as input")
    return torch.empty((*x.shape, m.embedding_dim), dtype=weight_dtype(m), device="meta")


def _layer_norm_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spec: Spec = (("input", REQUIRED), ("normalized_shape", REQUIRED), ("weight", None), ("bias", None))
    b = bind(args, kwargs, (*spec, ("eps", 1e-5)))
    if b is None or not float_tensor(b[0]):  # any layout: the output is contiguous
        return FALLBACK
    x, norm_shape, w, bias = b[0], b[1], b[2], b[3]
    if isinstance(norm_shape, int):
        norm_shape = (norm_shape,)
    if not isinstance(norm_shape, (tuple, list, torch.Size)) or not norm_shape:
        return FALLBACK
    n = len(norm_shape)
    if x.dim() < n or tuple(x.shape[-n:]) != tuple(norm_shape):
        return FALLBACK
    for t in (w, bias):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(norm_shape)):
            return FALLBACK
    return new(x.shape, x.dtype)


def _per_channel(x: torch.Tensor, *stats: Any) -> bool:
    """Every per-channel tensor given (weights, running statistics) has shape (C,) for x's channels."""
    channels = int(x.shape[1])
    return all(t is None or (isinstance(t, torch.Tensor) and tuple(t.shape) == (channels,)) for t in stats)


_BATCH_NORM_SPEC: Spec = (
    ("input", REQUIRED),
    ("running_mean", REQUIRED),
    ("running_var", REQUIRED),
    ("weight", None),
    ("bias", None),
    ("training", False),
    ("momentum", 0.1),
    ("eps", 1e-5),
)


def _batch_norm_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, _BATCH_NORM_SPEC)
    if b is None or not float_tensor(b[0]) or b[0].dim() < 2 or not plainly_contiguous(b[0]):
        return FALLBACK
    x, mean, var, training = b[0], b[1], b[2], b[5]
    if training is not True and training is not False:
        return FALLBACK
    if not training and (mean is None or var is None):  # torch: running statistics are needed in eval mode
        return FALLBACK
    if training and math.prod(x.shape) // int(x.shape[1]) <= 1:  # torch: more than 1 value per channel
        return FALLBACK
    return new(x.shape, x.dtype) if _per_channel(x, mean, var, b[3], b[4]) else FALLBACK


_INSTANCE_NORM_SPEC: Spec = (
    ("input", REQUIRED),
    ("running_mean", None),
    ("running_var", None),
    ("weight", None),
    ("bias", None),
    ("use_input_stats", True),
    ("momentum", 0.1),
    ("eps", 1e-5),
)


def _instance_norm_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """F.instance_norm: torch normalises a contiguous ``(1, N * C, ...)`` copy of any layout, so the output is
    contiguous."""
    b = bind(args, kwargs, _INSTANCE_NORM_SPEC)
    if b is None or not float_tensor(b[0]) or b[0].dim() < 2 or not b[0].numel():
        return FALLBACK
    x, mean, var, use_input_stats = b[0], b[1], b[2], b[5]
    if use_input_stats is not True and use_input_stats is not False:
        return FALLBACK
    if (mean is None) != (var is None) or (not use_input_stats and mean is None):  # torch: both, or neither
        return FALLBACK  # (and both when the running statistics are used)
    if use_input_stats and math.prod(x.shape[2:]) == 1:  # torch: more than 1 spatial element per channel
        return FALLBACK
    return new(x.shape, x.dtype) if _per_channel(x, mean, var, b[3], b[4]) else FALLBACK


def _group_norm_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spec: Spec = (("input", REQUIRED), ("num_groups", REQUIRED), ("weight", None), ("bias", None), ("eps", 1e-5))
    b = bind(args, kwargs, spec)
    if b is None or not float_tensor(b[0]) or b[0].dim() < 2 or not plainly_contiguous(b[0]) or not is_int(b[1]):
        return FALLBACK
    x, groups = b[0], int(b[1])
    if groups <= 0 or int(x.shape[1]) % groups or math.prod(x.shape) // groups <= 1:  # torch: > 1 value per group
        return FALLBACK
    return new(x.shape, x.dtype) if _per_channel(x, b[2], b[3]) else FALLBACK


def _contiguous_only(rule: Any) -> Any:
    """A layer whose output keeps its input's layout (batch norm): a fitting non-contiguous input runs on meta."""

    def checked(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
        out = rule(m, call, x)
        if out is not None and not call.findings and not x.is_contiguous():
            return FALLBACK
        return out

    return checked


_CONV_SPEC: Spec = (
    ("input", REQUIRED),
    ("weight", REQUIRED),
    ("bias", None),
    ("stride", 1),
    ("padding", 0),
    ("dilation", 1),
    ("groups", 1),
)


def _fitting_conv(bound: list[Any]) -> Any:
    """Output of ``F.convNd`` for a call that fits (same formula as the modules), else FALLBACK.

    Contiguous float input (any layout in 1-d) and weight, one bias per output channel, integer or
    ``"valid"``/``"same"`` padding (``"same"`` at stride 1); anything else runs on meta.
    """
    x, weight, bias, stride, padding, dilation, groups = bound
    xs, ws = x.shape, weight.shape
    nsp = len(ws) - 2
    # a 1-d convolution's output is contiguous for any input layout (Mamba's depthwise conv reads a transpose)
    if not float_tensor(x) or x.dtype != weight.dtype or not (x.is_contiguous() or nsp == 1):
        return FALLBACK
    if not weight.is_contiguous():
        return FALLBACK
    if len(xs) not in (nsp + 1, nsp + 2) or nsp not in (1, 2, 3) or 0 in xs or 0 in ws:
        return FALLBACK
    c_out = int(ws[0])
    if groups < 1 or c_out % groups or int(xs[-nsp - 1]) != int(ws[1]) * groups:
        return FALLBACK
    if bias is not None and (
        not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (c_out,) or bias.dtype != x.dtype
    ):
        return FALLBACK
    s, d = ntuple(stride, nsp), ntuple(dilation, nsp)
    p = ntuple(padding, nsp) if not isinstance(padding, str) else (0,) * nsp
    if s is None or d is None or p is None or min(s) < 1 or min(d) < 1 or min(p) < 0:
        return FALLBACK
    if isinstance(padding, str) and (padding not in ("valid", "same") or (padding == "same" and max(s) > 1)):
        return FALLBACK
    out = []
    for i, size in enumerate(xs[-nsp:]):
        k = int(ws[2 + i])
        o = int(size) if padding == "same" else (int(size) + 2 * p[i] - d[i] * (k - 1) - 1) // s[i] + 1
        if o <= 0:
            return FALLBACK  # meta raises the error torch gives
        out.append(o)
    return new((*xs[: -nsp - 1], c_out, *out), x.dtype)


def _functional_conv(fn: Any) -> Any:
    """``F.convNd`` on a computed weight (timm's ScaledStdConv2d): check the channels, continue resized.

    The mismatch names the module whose ``forward`` calls the convolution.
    A call that fits gets the modules' closed form (:func:`_fitting_conv`).
    """

    def shape(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
        bound = bind(args, kwargs, _CONV_SPEC)
        if bound is None:
            return FALLBACK
        x, weight, groups = bound[0], bound[1], bound[6]
        if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) or not is_int(groups):
            return FALLBACK
        expected, got = int(weight.shape[1]) * groups, int(x.shape[1]) if x.dim() == weight.dim() else -1
        if got == expected or (x.dim() == weight.dim() - 1 and int(x.shape[0]) == expected):
            return _fitting_conv(bound)
        if got == -1 or got % groups:
            return FALLBACK
        owner = call.scope_module
        layer = call.scope or call.layer
        kind = type(owner).__name__ if owner is not None else call.type
        if owner is not None and (isinstance(owner, nn.modules.conv._ConvNd) or call.from_input):
            named = Call(layer, kind, call.from_input, fold_input=call.fold_input, fold_alone=call.fold_alone)
            fix = fit_fix(named, owner, "in_channels", expected, got)
        else:
            fix = f"what comes before it gives {got}: make that give {expected}"
        bound[1] = torch.empty((weight.shape[0], got // groups, *weight.shape[2:]), dtype=weight.dtype, device="meta")
        with torch.device("meta"):
            out = fn(*bound)
        call.mismatch("in_channels", expected, got, fix, layer=layer, type=kind)
        return out

    return shape


# --------------------------------------------------------------------------- MACs and FLOPs


def _conv_macs(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    x = args[0].shape
    nsp = len(m.kernel_size)
    batched = len(x) == nsp + 2
    c_in = x[1 if batched else 0]  # the input's channels: an invalid layer counts as resized to fit
    groups = m.groups if c_in % m.groups == 0 else 1
    k = numel(m.kernel_size)
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        n = x[0] if batched else 1
        return int(n * numel(x[-nsp:]) * k * c_in * (m.out_channels // groups))
    return int(numel(out.shape) * (c_in // groups) * k)


def _linear_macs(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    x = args[0].shape
    return numel(x[:-1]) * int(x[-1]) * int(m.out_features)


def _per_element(*, running_statistics: bool, affine: bool) -> int:
    """FLOPs per element of a norm (fvcore's convention): normalising with running statistics costs 1
    (x * scale + shift, folded), computing the statistics 4; a weight adds 1."""
    return (1 if running_statistics else 4) + affine


def _norm_flops(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    elements = int(args[0].numel())
    affine = getattr(m, "weight", None) is not None
    if isinstance(m, nn.RMSNorm):
        return elements * (4 if affine else 3)
    running = isinstance(m, nn.modules.batchnorm._BatchNorm) and not (m.training or not m.track_running_stats)
    return elements * _per_element(running_statistics=running, affine=affine)


def _frozen_batchnorm_flops(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """As ``nn.BatchNorm2d`` in eval mode (the same arithmetic): 2 per element."""
    return int(args[0].numel()) * _per_element(running_statistics=True, affine=True)


def _conv_fn_macs(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    bound = bind(args, kwargs, _CONV_SPEC)
    if bound is None or not isinstance(out, torch.Tensor) or not isinstance(bound[0], torch.Tensor):
        return 0
    x, w, groups = bound[0].shape, bound[1].shape, bound[6]
    c_in = int(x[1] if len(x) == len(w) else x[0])  # the input's channels: an invalid call counts as resized to fit
    groups = int(groups) if is_int(groups) and c_in % int(groups) == 0 else 1
    return numel(out.shape) * (c_in // groups) * numel(w[2:])


_CONV_TRANSPOSE_SPEC: Spec = (
    ("input", REQUIRED),
    ("weight", REQUIRED),
    ("bias", None),
    ("stride", 1),
    ("padding", 0),
    ("output_padding", 0),
    ("groups", 1),
    ("dilation", 1),
)


def _conv_transpose_fn_macs(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """``F.conv_transposeNd(input, weight, ...)``: each input element times ``weight[c]``, ``(out / groups, *kernel)``
    (as ``nn.ConvTranspose2d``'s formula and ``FlopCounterMode`` count it)."""
    bound = bind(args, kwargs, _CONV_TRANSPOSE_SPEC)
    if bound is None or not isinstance(bound[0], torch.Tensor) or not isinstance(bound[1], torch.Tensor):
        return 0
    return int(bound[0].numel()) * numel(bound[1].shape[1:])


def _norm_fn_flops(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """F.layer_norm / F.group_norm: 5 per element with a weight, 4 without."""
    spec: Spec = (("input", REQUIRED), ("shape_or_groups", REQUIRED), ("weight", None))
    bound = bind(args, {k: v for k, v in kwargs.items() if k == "weight"}, spec)
    if bound is None or not isinstance(bound[0], torch.Tensor):
        return 0
    return int(bound[0].numel()) * _per_element(running_statistics=False, affine=bound[2] is not None)


def _batch_norm_fn_flops(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """F.batch_norm, as the module's formula: 2 per element (1 without weight) with running statistics, else 5 (4)."""
    b = bind(args, kwargs, _BATCH_NORM_SPEC)
    if b is None or not isinstance(b[0], torch.Tensor):
        return 0
    running = not b[5] and b[1] is not None
    return int(b[0].numel()) * _per_element(running_statistics=running, affine=b[3] is not None)


def _instance_norm_fn_flops(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """F.instance_norm, as the module's formula (and fvcore's): 5 per element with a weight, 4 without."""
    b = bind(args, kwargs, _INSTANCE_NORM_SPEC)
    if b is None or not isinstance(b[0], torch.Tensor):
        return 0
    return int(b[0].numel()) * _per_element(running_statistics=False, affine=b[3] is not None)


# --------------------------------------------------------------------------- registrations

_EFFICIENTNETS = ("efficientnet_pytorch.utils", "segmentation_models_pytorch.encoders._efficientnet")
_TF_SAME_CONVS = (  # TensorFlow's 'SAME' padding: EfficientNet's (vendored by smp) and timm's (its tf_ models)
    *(f"{library}.Conv2d{kind}SamePadding" for library in _EFFICIENTNETS for kind in ("Static", "Dynamic")),
    "timm.layers.conv2d_same.Conv2dSame",
)
_FROZEN_BUFFERS = ("weight", "bias", "running_mean", "running_var")
_FROZEN_BATCHNORMS = (  # one forward, copied from torchvision's into each of transformers' detection models
    "torchvision.ops.misc.FrozenBatchNorm2d",
    *transformers_copies(
        "FrozenBatchNorm2d",
        ("detr", "Detr"),
        ("conditional_detr", "ConditionalDetr"),
        ("dab_detr", "DabDetr"),
        ("deformable_detr", "DeformableDetr"),
        ("table_transformer", "TableTransformer"),
        ("rt_detr", "RTDetr"),
        ("rt_detr_v2", "RTDetrV2"),
        ("d_fine", "DFine"),
        ("deimv2", "Deimv2"),
        ("grounding_dino", "GroundingDino"),
        ("mm_grounding_dino", "MMGroundingDino"),
        ("pp_doclayout_v2", "PPDocLayoutV2"),
        ("pp_doclayout_v3", "PPDocLayoutV3"),
        ("pp_doclayout_v4", "PPDocLayoutV4"),
    ),
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
builtin(*_CONVS, shape=one_tensor(_conv_rule), macs=_conv_macs, kind=FlopKind.CONV, fits=True)
builtin(  # fx would trace through their forward: 4 nodes (the padding, two get_attr, F.conv2d), more for the dynamic
    *_TF_SAME_CONVS,
    shape=one_tensor(_same_padded_conv_rule),
    macs=_conv_macs,
    kind=FlopKind.CONV,
    fits=True,
    leaf=True,
)
builtin(nn.Linear, shape=one_tensor(_linear_rule), macs=_linear_macs, kind=FlopKind.LINEAR, fits=True)
builtin(
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    # timm's BatchNorm + activation, a leaf torch.fx does not trace into (same shape out): the norm's rule, not meta
    "timm.layers.norm_act.BatchNormAct2d",
    shape=one_tensor(_contiguous_only(_batchnorm_rule)),
    flops=_norm_flops,
    kind=FlopKind.NORM,
    fits=True,
)
builtin(  # its forward asks x.ndim and unpacks x.shape: 13 nodes and a question each, when traced through
    "segmentation_models_pytorch.encoders.mix_transformer.LayerNorm",
    shape=one_tensor(_channels_layernorm_rule),
    flops=_norm_flops,
    kind=FlopKind.NORM,
    fits=True,
    leaf=True,
)
builtin(  # its forward reshapes four buffers and computes a scale and a shift: 11 nodes each, when traced through
    *_FROZEN_BATCHNORMS,
    shape=one_tensor(_frozen_batchnorm_rule),
    flops=_frozen_batchnorm_flops,
    kind=FlopKind.NORM,
    leaf=True,
)
builtin(nn.GroupNorm, shape=one_tensor(_groupnorm_rule), flops=_norm_flops, kind=FlopKind.NORM, fits=True)
builtin(nn.LayerNorm, shape=one_tensor(_layernorm_rule), flops=_norm_flops, kind=FlopKind.NORM, fits=True)
builtin(
    nn.RMSNorm, shape=one_tensor(_contiguous_only(_layernorm_rule)), flops=_norm_flops, kind=FlopKind.NORM, fits=True
)
builtin(nn.Embedding, shape=one_tensor(_embedding_rule), fits=True)
for _fn in (F.conv1d, F.conv2d, F.conv3d):
    builtin(_fn, shape=_functional_conv(_fn), macs=_conv_fn_macs, kind=FlopKind.CONV)
# shapes by meta execution; counted, not zero: a layer calling them (LowFormer's ConvAttention) hid their MACs
builtin(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, macs=_conv_transpose_fn_macs, kind=FlopKind.CONV)
builtin(F.layer_norm, shape=fn(_layer_norm_fn), flops=_norm_fn_flops, kind=FlopKind.NORM)
builtin(F.group_norm, shape=fn(_group_norm_fn), flops=_norm_fn_flops, kind=FlopKind.NORM)
builtin(F.batch_norm, shape=fn(_batch_norm_fn), flops=_batch_norm_fn_flops, kind=FlopKind.NORM)
builtin(F.instance_norm, shape=fn(_instance_norm_fn), flops=_instance_norm_fn_flops, kind=FlopKind.NORM)
