"""Pooling, resampling and sliding windows: max, average and adaptive pooling, interpolation, grid sampling,
unfold (``F.unfold``, ``nn.Unfold``: im2col), functions and modules (no FLOPs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (
    REQUIRED,
    OpRule,
    Spec,
    bind,
    float_tensor,
    fn,
    is_int,
    new,
    ntuple,
    one_tensor,
    plainly_contiguous,
    suggest_memory_format,
    transformers_copies,
)
from .registry import FALLBACK, Call, ShapeFn, builtin

__all__ = ("ADAPTIVE_POOLS", "ADAPTIVE_POOL_FUNCTIONS", "refused_interpolation")


_LP_POOLS = (nn.LPPool1d, nn.LPPool2d, nn.LPPool3d)


def _pooled(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's ``pooling_output_shape`` for one dim."""
    o = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return o


def _pool(
    x: Any,
    nsp: int,
    kernel: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
    is_max: bool,
    call: Call | None = None,
) -> Any:
    """Output of max/avg pooling (torch's pooling_output_shape), else FALLBACK.

    With ``call`` (a pooling layer or function), an input too small for the
    window is a mismatch naming the smallest size that fits, and propagation
    goes on with an output of size 1 there, as for convolutions.  3-d average
    pooling needs the whole window inside the input, padding or not (torch:
    "input image smaller than kernel size").
    """
    if not float_tensor(x) or not plainly_contiguous(x) or x.dim() not in (nsp + 1, nsp + 2):
        return FALLBACK
    if not isinstance(ceil_mode, bool):
        return FALLBACK
    k = ntuple(kernel, nsp)
    s = k if stride is None or stride == [] or stride == () else ntuple(stride, nsp)
    p, d = ntuple(padding, nsp), ntuple(dilation, nsp)
    if k is None or s is None or p is None or d is None:
        return FALLBACK
    out = []
    small: list[tuple[int, int, int]] = []  # (dim, smallest size that fits, size)
    for i, size in enumerate(x.shape[-nsp:]):
        ki, si, pi, di = k[i], s[i], p[i], d[i]
        if ki <= 0 or si <= 0 or di <= 0 or pi < 0:
            return FALLBACK
        if pi > ki // 2:  # torch: "pad should be at most half of kernel size" (dilation aside)
            return FALLBACK
        whole = not is_max and nsp == 3  # avg_pool3d: "input image smaller than kernel size"
        o = _pooled(size, ki, si, pi, di, ceil_mode)
        if (o < 1 or (whole and size < ki)) and size >= 1 and call is not None:
            bound = di * (ki - 1) + 1  # the window fits without padding: o >= 1
            need = next((n for n in range(size + 1, bound) if _pooled(n, ki, si, pi, di, ceil_mode) >= 1), bound)
            small.append((i, ki if whole else need, size))
            o = max(o, 1)
        elif whole and size < ki:
            return FALLBACK
        if o < 1 or size < 1:
            return FALLBACK
        out.append(o)
    for i, need, size in small:  # reported once every dim is known to be computed exactly
        assert call is not None
        call.mismatch(
            f"spatial size (dim {i})", f">= {need}", size, "use a larger input, or less downsampling before this layer"
        )
    return new((*x.shape[:-nsp], *out), x.dtype)


def _max_pool_fn(nsp: int) -> ShapeFn:
    spec: Spec = (
        ("input", REQUIRED),
        ("kernel_size", REQUIRED),
        ("stride", None),
        ("padding", 0),
        ("dilation", 1),
        ("ceil_mode", False),
        ("return_indices", False),
    )

    def rule(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
        b = bind(args, kwargs, spec)
        if b is None or b[6] is not False:
            return FALLBACK
        return _pool(b[0], nsp, b[1], b[2], b[3], b[4], b[5], is_max=True, call=call)

    return rule


def _avg_pool_fn(nsp: int) -> ShapeFn:
    spec: Spec = (
        ("input", REQUIRED),
        ("kernel_size", REQUIRED),
        ("stride", None),
        ("padding", 0),
        ("ceil_mode", False),
        ("count_include_pad", True),
        *((("divisor_override", None),) if nsp > 1 else ()),
    )

    def rule(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
        b = bind(args, kwargs, spec)
        if b is None or (nsp > 1 and b[6] is not None and (not is_int(b[6]) or b[6] == 0)):
            return FALLBACK
        return _pool(b[0], nsp, b[1], b[2], b[3], 1, b[4], is_max=False, call=call)

    return rule


def _lp_pool(x: Any, nsp: int, norm_type: Any, kernel: Any, stride: Any, ceil_mode: Any, call: Call) -> Any:
    """Output of ``F.lp_poolNd``: the average pooling of ``x.pow(norm_type)`` without padding (the max pooling of
    ``x.abs()`` for an infinite norm), else FALLBACK."""
    if not isinstance(norm_type, (int, float)) or isinstance(norm_type, bool) or norm_type == 0:
        return FALLBACK  # torch: "norm_type must be a non-zero value"
    if nsp == 1 and not is_int(kernel):  # lp_pool1d multiplies by kernel_size: an int
        return FALLBACK
    return _pool(x, nsp, kernel, stride, 0, 1, ceil_mode, is_max=math.isinf(norm_type), call=call)


def _lp_pool_fn(nsp: int) -> ShapeFn:
    spec: Spec = (("input", REQUIRED), ("norm_type", REQUIRED), ("kernel_size", REQUIRED), ("stride", None))
    spec += (("ceil_mode", False),)

    def rule(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
        b = bind(args, kwargs, spec)
        return FALLBACK if b is None else _lp_pool(b[0], nsp, b[1], b[2], b[3], b[4], call)

    return rule


def _adaptive_pool(x: Any, nsp: int, output_size: Any) -> Any:
    if not float_tensor(x) or x.dim() not in (nsp + 1, nsp + 2):
        return FALLBACK
    # 1-d adaptive pooling runs as 2-d on x.unsqueeze(-2): a (1, 2, 1) tensor with strides (2, 1, 2) is
    # contiguous, its 4-d view suggests channels-last, and the output keeps that layout
    seen = x.unsqueeze(-2) if nsp == 1 and x.dim() == 3 else x
    layout = torch.contiguous_format
    if not plainly_contiguous(seen):  # torch's kernels give the memory format a batched input suggests
        if suggest_memory_format is None:  # pragma: no cover - torch without _prims_common
            return FALLBACK
        layout = suggest_memory_format(seen) if x.dim() == nsp + 2 and seen.dim() in (4, 5) else layout
    if any(d == 0 for d in x.shape[-nsp - 1 :]):
        return FALLBACK
    if is_int(output_size):
        sizes: Sequence[Any] = (output_size,) * nsp
    elif isinstance(output_size, (tuple, list)) and len(output_size) == nsp:
        sizes = output_size
    else:
        return FALLBACK
    out = []
    for i, want in enumerate(sizes):
        if want is None and nsp > 1:  # "keep this size" exists for 2-d and 3-d pooling only
            out.append(int(x.shape[x.dim() - nsp + i]))
        elif is_int(want) and want >= 0:
            out.append(int(want))
        else:
            return FALLBACK
    if layout is torch.contiguous_format:
        return new((*x.shape[:-nsp], *out), x.dtype)
    shape = (*seen.shape[:-2], 1, *out) if seen is not x else (*x.shape[:-nsp], *out)
    made = torch.empty(shape, dtype=x.dtype, device="meta", memory_format=layout)
    return made.squeeze(-2) if seen is not x else made


def _adaptive_pool_fn(nsp: int, is_max: bool) -> OpRule:
    spec: Spec = (("input", REQUIRED), ("output_size", REQUIRED), *((("return_indices", False),) if is_max else ()))

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, spec)
        if b is None or (is_max and b[2] is not False):
            return FALLBACK
        return _adaptive_pool(b[0], nsp, b[1])

    return rule


def _max_pool_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.modules.pooling._MaxPoolNd)
    if m.return_indices:
        return FALLBACK
    nsp = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[type(m)]  # type: ignore[index]
    return _pool(x, nsp, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, is_max=True, call=call)


def _avg_pool_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d))
    if getattr(m, "divisor_override", None) == 0:
        return FALLBACK
    nsp = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}[type(m)]
    return _pool(x, nsp, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode, is_max=False, call=call)


def _lp_pool_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, _LP_POOLS)
    return _lp_pool(x, _LP_POOLS.index(type(m)) + 1, m.norm_type, m.kernel_size, m.stride, m.ceil_mode, call)


def _adaptive_pool_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    nsp = int(type(m).__name__[-2])  # AdaptiveAvgPool2d -> 2
    if getattr(m, "return_indices", False):
        return FALLBACK
    return _adaptive_pool(x, nsp, getattr(m, "output_size", None))


_RANK_OF_MODE = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}  # other modes: any rank 3 to 5
_NO_CORNERS = ("nearest", "nearest-exact", "area")  # align_corners must stay None
_INTERPOLATE: Spec = (
    ("input", REQUIRED),
    ("size", None),
    ("scale_factor", None),
    ("mode", "nearest"),
    ("align_corners", None),
    ("recompute_scale_factor", None),
    ("antialias", False),
)


def _interpolated_sizes(x: torch.Tensor, size: Any, scale_factor: Any) -> list[int] | None:
    """The spatial sizes ``F.interpolate`` gives ``x`` (torch's ``_interp_output_size``): ``size``, or
    ``floor(size * scale)`` whether or not the scale is recomputed; None for arguments it would reject."""
    nsp = x.dim() - 2
    if size is not None and scale_factor is None:
        sizes = [size] * nsp if is_int(size) else list(size) if isinstance(size, (tuple, list)) else []
        if len(sizes) != nsp or not all(is_int(d) for d in sizes):
            return None
        return [int(d) for d in sizes]
    if scale_factor is not None and size is None:
        scales = [scale_factor] * nsp if not isinstance(scale_factor, (tuple, list)) else list(scale_factor)
        if len(scales) != nsp or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in scales):
            return None
        return [math.floor(int(d) * float(f)) for d, f in zip(x.shape[2:], scales)]
    return None


def refused_interpolation(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """torch's error for an ``F.interpolate`` to an empty size where the meta kernel gives an empty tensor (the
    linear, bilinear, bicubic and trilinear modes: the CPU's and CUDA's kernels refuse it); None otherwise.

    Examples
    --------
    >>> import torch
    >>> refused_interpolation((torch.empty(1, 2, 3, 2, device="meta"),), {"scale_factor": 0.3, "mode": "bilinear"})
    'Input and output sizes should be greater than 0, but got input (H: 3, W: 2) output (H: 0, W: 0)'
    """
    b = bind(args, dict(kwargs), _INTERPOLATE)
    if b is None or not isinstance(b[0], torch.Tensor) or b[0].dim() not in (3, 4, 5) or b[3] not in _RANK_OF_MODE:
        return None
    x = b[0]
    out = _interpolated_sizes(x, b[1], b[2])
    if out is None or 0 not in out or min(out) < 0 or 0 in x.shape[2:]:
        return None
    names = ("D", "H", "W")[-len(out) :]
    given, made = (", ".join(f"{n}: {int(d)}" for n, d in zip(names, dims)) for dims in (x.shape[2:], out))
    joined = " and" if len(out) == 1 else ""  # torch's 1-d kernel words it so
    return f"Input and output sizes should be greater than 0, but got input ({given}){joined} output ({made})"


def _interpolate(x: Any, size: Any, scale_factor: Any, mode: Any, align_corners: Any, antialias: Any) -> Any:
    """Output of ``F.interpolate`` (torch's ``_interp_output_size``), else FALLBACK.

    With ``size``: those sizes.  With ``scale_factor``: ``floor(size * scale)``, whether or not the
    scale is recomputed.  Options ``F.interpolate`` would reject, and non-contiguous inputs, fall back.
    """
    if not float_tensor(x) or x.dim() not in (3, 4, 5) or 0 in x.shape:
        return FALLBACK
    if not isinstance(mode, str) or _RANK_OF_MODE.get(mode, x.dim()) != x.dim() or antialias is not False:
        return FALLBACK
    if mode not in (*_RANK_OF_MODE, *_NO_CORNERS) or (mode in _NO_CORNERS and align_corners is not None):
        return FALLBACK
    out = _interpolated_sizes(x, size, scale_factor)
    if out is None or any(d <= 0 for d in out):
        return FALLBACK
    # 1-d "area" is adaptive_avg_pool1d: a 2-d pooling of x.unsqueeze(-2), whose layout may suggest channels-last
    seen = x.unsqueeze(-2) if mode == "area" and x.dim() == 3 else x
    if plainly_contiguous(seen):
        return new((*x.shape[:2], *out), x.dtype)
    # torch's kernels give the memory format the input suggests (channels-last, or contiguous for any other layout)
    if suggest_memory_format is None or x.dim() == 3:
        return FALLBACK
    layout = suggest_memory_format(x)
    return torch.empty((*x.shape[:2], *out), dtype=x.dtype, device="meta", memory_format=layout)


def _interpolate_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, _INTERPOLATE)
    return FALLBACK if b is None else _interpolate(b[0], b[1], b[2], b[3], b[4], b[6])


def _upsample_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.Upsample)
    return _interpolate(x, m.size, m.scale_factor, m.mode, m.align_corners, False)


def _pair(v: Any) -> tuple[int, ...] | None:
    """``v`` as ``F.unfold`` reads it: :func:`ntuple` of 2, except that a sequence of one int is refused, as torch
    refuses it ("It is expected kernel_size equals to 2")."""
    return None if isinstance(v, (tuple, list)) and len(v) != 2 else ntuple(v, 2)


def _unfold(x: Any, kernel_size: Any, dilation: Any, padding: Any, stride: Any) -> Any:
    """Output of ``F.unfold`` (im2col: T2T-ViT's soft split, PiT's pooling): ``(N, C * kh * kw, L)`` for a batched
    input (``(C * kh * kw, L)`` unbatched), ``L`` the number of window positions, torch's
    ``(size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1`` in each spatial dim.

    CPU and CUDA kernels give a new contiguous tensor for any input layout (meta's decomposition gives a permuted
    one for a non-contiguous input and a 1 x 1 window without padding).  What torch refuses (no window position,
    a size-0 channel or spatial dim, a non-positive kernel, dilation or stride, negative padding, which meta lets
    through) falls back, and so do inputs that are not floating.

    Examples
    --------
    >>> x = torch.empty(2, 3, 8, 8, device="meta")
    >>> tuple(_unfold(x, 3, 1, 1, 2).shape) == tuple(F.unfold(torch.zeros(2, 3, 8, 8), 3, 1, 1, 2).shape) == (2, 27, 16)
    True
    >>> _unfold(x, 9, 1, 0, 1) is FALLBACK  # a 9 x 9 window does not fit in 8 x 8: torch raises
    True
    """
    if not float_tensor(x) or x.dim() not in (3, 4) or 0 in x.shape[-3:]:
        return FALLBACK
    k, d, p, s = _pair(kernel_size), _pair(dilation), _pair(padding), _pair(stride)
    if k is None or d is None or p is None or s is None:
        return FALLBACK
    positions = 1
    for size, ki, di, pi, si in zip(x.shape[-2:], k, d, p, s):
        if ki <= 0 or di <= 0 or pi < 0 or si <= 0:
            return FALLBACK
        o = (int(size) + 2 * pi - di * (ki - 1) - 1) // si + 1
        if o < 1:
            return FALLBACK  # torch: "its components must be at least one"
        positions *= o
    return new((*x.shape[:-3], int(x.shape[-3]) * k[0] * k[1], positions), x.dtype)


_UNFOLD: Spec = (("input", REQUIRED), ("kernel_size", REQUIRED), ("dilation", 1), ("padding", 0), ("stride", 1))


def _unfold_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, _UNFOLD)
    return FALLBACK if b is None else _unfold(*b)


def _unfold_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.Unfold)
    return _unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)


_GRID_SAMPLE: Spec = (
    ("input", REQUIRED),
    ("grid", REQUIRED),
    ("mode", "bilinear"),
    ("padding_mode", "zeros"),
    ("align_corners", None),
)


def _grid_sample_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``F.grid_sample(x, grid)``: ``(N, C, *grid.shape[1:-1])``, contiguous (torch's kernels); on meta its Python
    decomposition costs about 7 ms a call (Deformable DETR's attention samples each level)."""
    b = bind(args, kwargs, _GRID_SAMPLE)
    if b is None or not float_tensor(b[0]) or not float_tensor(b[1]) or b[0].dtype != b[1].dtype:
        return FALLBACK
    x, grid, mode, padding = b[0], b[1], b[2], b[3]
    if x.dim() not in (4, 5) or grid.dim() != x.dim() or grid.shape[0] != x.shape[0] or grid.shape[-1] != x.dim() - 2:
        return FALLBACK
    if mode not in ("bilinear", "nearest", "bicubic") or (mode == "bicubic" and x.dim() == 5):
        return FALLBACK
    if padding not in ("zeros", "border", "reflection") or 0 in x.shape[1:]:
        return FALLBACK
    return new((*x.shape[:2], *grid.shape[1:-1]), x.dtype)


builtin(F.grid_sample, shape=fn(_grid_sample_fn))
_DEFORMABLE_ATTENTION: Spec = (
    ("value", REQUIRED),
    ("value_spatial_shapes", REQUIRED),
    ("value_spatial_shapes_list", REQUIRED),
    ("level_start_index", REQUIRED),
    ("sampling_locations", REQUIRED),
    ("attention_weights", REQUIRED),
    ("im2col_step", REQUIRED),
)


def _deformable_attention(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
    """transformers' ``MultiScaleDeformableAttention`` (Deformable DETR, RT-DETR, Grounding DINO...): ``value``
    (N, keys, heads, d) split into its levels' (h, w) maps, sampled (``grid_sample``) at ``sampling_locations``
    (N, queries, heads, levels, points, 2), weighted by ``attention_weights`` (N, queries, heads, levels, points)
    and summed: (N, queries, heads * d), contiguous.  Any other call runs on meta (67 nodes when traced through)."""
    b = bind(args, kwargs, _DEFORMABLE_ATTENTION)
    if b is None or not all(float_tensor(b[i]) for i in (0, 4, 5)) or b[0].dtype != b[4].dtype:
        return FALLBACK
    value, levels, locations, weights = b[0], b[2], b[4], b[5]
    if value.dim() != 4 or locations.dim() != 6 or not isinstance(levels, (list, tuple)):
        return FALLBACK
    n, keys, heads, d = value.shape
    if not all(isinstance(hw, (list, tuple)) and len(hw) == 2 and all(is_int(s) for s in hw) for hw in levels):
        return FALLBACK
    queries = locations.shape[1]
    expected = (n, queries, heads, len(levels), locations.shape[4], 2)
    if tuple(locations.shape) != expected or tuple(weights.shape) != expected[:-1]:
        return FALLBACK
    if sum(h * w for h, w in levels) != keys or 0 in value.shape or 0 in locations.shape:
        return FALLBACK
    return new((n, queries, heads * d), torch.promote_types(value.dtype, weights.dtype))


builtin(  # one forward, copied into each model that samples multi-scale maps
    *transformers_copies(
        "MultiScaleDeformableAttention",
        "deformable_detr",
        "rt_detr",
        "grounding_dino",
        "mm_grounding_dino",
        "omdet_turbo",
        "lw_detr",
        "rf_detr",
        "pp_doclayout_v2",
        "pp_doclayout_v3",
        "pp_doclayout_v4",
    ),
    shape=_deformable_attention,
    leaf=True,
)
for _n in (1, 2, 3):
    builtin(getattr(F, f"max_pool{_n}d"), shape=_max_pool_fn(_n))
    builtin(getattr(F, f"avg_pool{_n}d"), shape=_avg_pool_fn(_n))
    builtin(getattr(F, f"lp_pool{_n}d"), shape=_lp_pool_fn(_n))
    builtin(getattr(F, f"adaptive_avg_pool{_n}d"), shape=fn(_adaptive_pool_fn(_n, is_max=False)))
    builtin(getattr(F, f"adaptive_max_pool{_n}d"), shape=fn(_adaptive_pool_fn(_n, is_max=True)))
builtin(F.interpolate, shape=fn(_interpolate_fn))
builtin(F.unfold, shape=fn(_unfold_fn))
builtin(nn.Unfold, shape=one_tensor(_unfold_module))
builtin(nn.Upsample, shape=one_tensor(_upsample_module))
builtin(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, shape=one_tensor(_max_pool_module))
builtin(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, shape=one_tensor(_avg_pool_module))
builtin(*_LP_POOLS, shape=one_tensor(_lp_pool_module))
ADAPTIVE_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
"""The adaptive pooling layers: they give as many features whatever the input's size."""
ADAPTIVE_POOL_FUNCTIONS = frozenset(
    getattr(F, f"adaptive_{kind}_pool{n}d") for kind in ("avg", "max") for n in (1, 2, 3)
) | frozenset(getattr(torch._C._nn, f"adaptive_avg_pool{n}d") for n in (2, 3))
"""Their functions (and the two torch binds directly)."""
builtin(*ADAPTIVE_POOLS, shape=one_tensor(_adaptive_pool_module))
