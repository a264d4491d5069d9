"""Reductions, scans and selections over dims: sum, prod, mean, var, std, var_mean, std_mean, amax, amin, max, min,
all, any, argmax, argmin, cumsum, cumprod, diff, topk, sort, histc (no FLOPs counted)."""

from __future__ import annotations

from typing import Any

import torch

from ._common import REQUIRED, OpRule, Spec, bind, elementwise, fn, is_int, new, norm_dim
from .arithmetic import pairwise
from .registry import FALLBACK, builtin

__all__: tuple[str, ...] = ()


def _reduction_rule(spec: Spec, *, integers: bool = False) -> OpRule:
    """sum/mean/amax/amin over dims of a floating tensor (a new contiguous tensor for any layout); with
    ``integers`` (sum, prod) also of an integer or bool tensor, which gives int64 (the number of valid positions
    in a mask: ``mask[:, :, 0].sum(1)``)."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, spec)
        if b is None or not isinstance(b[0], torch.Tensor):
            return FALLBACK
        x, dim, keepdim = b[0], b[1], b[2]
        if (len(b) > 3 and b[3] is not None) or not isinstance(keepdim, bool):
            return FALLBACK  # dtype= conversions: meta knows
        if x.is_floating_point():
            dtype = x.dtype
        elif integers and not x.dtype.is_complex:
            dtype = torch.int64
        else:
            return FALLBACK
        shape = _reduced(x, dim, keepdim)
        return FALLBACK if shape is None else new(shape, dtype)

    return rule


def _prod(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``prod(input)`` or ``prod(input, dim, keepdim=False)``: one int dim (torch takes no list), as sum."""
    b = bind(args, kwargs, _REDUCE)
    if b is None:
        return FALLBACK
    if b[1] is None:  # the whole tensor: prod(input, *, dtype=None) takes no keepdim
        if len(args) > 1 or not {"dtype"}.issuperset(kwargs):
            return FALLBACK
    elif not is_int(b[1]):
        return FALLBACK
    return _SUM_OR_PROD(args, kwargs)


def _reduced(x: torch.Tensor, dim: Any, keepdim: bool) -> list[int] | None:
    """The shape of ``x`` reduced over ``dim`` (None, (), []: every dim), else None (a dim out of range or twice)."""
    rank = x.dim()
    if dim is None or dim == () or dim == []:
        dims = set(range(rank))
    else:
        seq = dim if isinstance(dim, (tuple, list)) else (dim,)
        norm = [norm_dim(d, rank) for d in seq]
        if any(d is None for d in norm) or len(set(norm)) != len(norm):
            return None
        dims = {d for d in norm if d is not None}
    if rank == 0:
        return []
    return [1 if i in dims else s for i, s in enumerate(x.shape) if keepdim or i not in dims]


def _truth_reduction(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``all``/``any(input, dim=None, keepdim=False)`` of a contiguous tensor: bool (uint8 for uint8), as torch gives
    (transformers' mask checks: ``(mask == 1).all()``)."""
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", None), ("keepdim", False)))
    if b is None or not isinstance(b[0], torch.Tensor) or b[0].dtype.is_complex or not b[0].is_contiguous():
        return FALLBACK
    if not isinstance(b[2], bool):
        return FALLBACK
    shape = _reduced(b[0], b[1], b[2])
    return FALLBACK if shape is None else new(shape, torch.uint8 if b[0].dtype == torch.uint8 else torch.bool)


_LEGACY_VARIANCE: Spec = (("input", REQUIRED), ("dim", REQUIRED), ("unbiased", True), ("keepdim", False))
_VARIANCE: Spec = (("input", REQUIRED), ("dim", None), ("correction", None), ("keepdim", False))


def _variance_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, list[int]] | None:
    """The input and the reduced shape of ``var``/``std``/``var_mean``/``std_mean`` in torch's three forms, None
    for any other call: ``(input, unbiased: bool)`` (every dim); the legacy ``(input, dim, unbiased=True,
    keepdim=False)`` (``unbiased`` given); ``(input, dim=None, *, correction=None, keepdim=False)``.  A floating
    input only (complex gives a real output, integers raise: meta knows)."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    x = args[0]
    if (len(args) == 2 and not kwargs and isinstance(args[1], bool)) or (
        len(args) == 1 and kwargs.keys() == {"unbiased"} and isinstance(kwargs["unbiased"], bool)
    ):
        dim, keepdim = None, False  # var(input, unbiased): every dim
    elif len(args) > 2 or "unbiased" in kwargs:  # var(input, dim, unbiased=True, keepdim=False): dim required
        b = bind(args, kwargs, _LEGACY_VARIANCE)
        if b is None or not isinstance(b[2], bool):
            return None
        dim, keepdim = b[1], b[3]
    else:  # var(input, dim=None, *, correction=None, keepdim=False)
        b = bind(args, kwargs, _VARIANCE)
        correction = b[2] if b is not None else None
        if b is None or isinstance(correction, bool) or not isinstance(correction, (int, float, type(None))):
            return None
        dim, keepdim = b[1], b[3]
    if not isinstance(keepdim, bool) or isinstance(dim, bool):
        return None
    shape = _reduced(x, dim, keepdim)
    return None if shape is None else (x, shape)


def _variance(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``var``/``std`` (CvT's and NesT's own LayerNorm: ``torch.var(x, dim=1, unbiased=False, keepdim=True)``): a
    new contiguous tensor of the reduced shape in the input's dtype, for any layout (CPU kernels and meta alike)."""
    found = _variance_shape(args, kwargs)
    return FALLBACK if found is None else new(found[1], found[0].dtype)


def _variance_mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``var_mean``/``std_mean``: the tuple ``(var or std, mean)``, two such tensors."""
    found = _variance_shape(args, kwargs)
    if found is None:
        return FALLBACK
    x, shape = found
    return (new(shape, x.dtype), new(shape, x.dtype))


_REDUCE: Spec = (("input", REQUIRED), ("dim", None), ("keepdim", False), ("dtype", None))
_REDUCE_NO_DTYPE: Spec = (("input", REQUIRED), ("dim", ()), ("keepdim", False))


_SUM_OR_PROD = _reduction_rule(_REDUCE, integers=True)
_MEAN = _reduction_rule(_REDUCE)
_EXTREMUM = _reduction_rule(_REDUCE_NO_DTYPE)
"""``amax`` and ``amin`` (einops' ``max`` and ``min`` reductions call them too, :mod:`.rearrange`)."""
builtin(torch.sum, "sum", shape=fn(_SUM_OR_PROD))
builtin(torch.prod, "prod", shape=fn(_prod))
builtin(torch.mean, "mean", shape=fn(_MEAN))
builtin(torch.var, "var", torch.std, "std", shape=fn(_variance))
builtin(torch.var_mean, torch.std_mean, shape=fn(_variance_mean))
builtin(torch.amax, "amax", shape=fn(_EXTREMUM))
builtin(torch.amin, "amin", shape=fn(_EXTREMUM))
builtin(torch.all, "all", torch.any, "any", shape=fn(_truth_reduction))


def _arg_reduction(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``argmax``/``argmin(input, dim=None, keepdim=False)``: int64 indices, contiguous."""
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", None), ("keepdim", False)))
    if b is None or not isinstance(b[0], torch.Tensor) or b[0].dtype.is_complex or not isinstance(b[2], bool):
        return FALLBACK
    x, dim, keepdim = b
    if dim is None:
        return FALLBACK if keepdim or x.numel() == 0 else new((), torch.int64)
    d = norm_dim(dim, x.dim())
    if d is None or (x.dim() and x.shape[d] == 0):
        return FALLBACK  # torch raises on an empty dim
    shape = [1 if i == d else s for i, s in enumerate(x.shape) if keepdim or i != d]
    return new(shape, torch.int64)


def _min_max(kind: Any) -> OpRule:
    """``max``/``min``: of the whole tensor (a 0-dim tensor), over one dim (values and int64 indices, as
    ``torch.return_types.max``), or of two tensors (``maximum``/``minimum``)."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dtype.is_complex:
            return FALLBACK
        x = args[0]
        if len(args) == 1 and not kwargs:
            return FALLBACK if x.numel() == 0 else new((), x.dtype)  # torch raises on an empty tensor
        if len(args) == 2 and not kwargs and isinstance(args[1], torch.Tensor):
            return pairwise(args, {})
        b = bind(args, kwargs, (("input", REQUIRED), ("dim", REQUIRED), ("keepdim", False)))
        if b is None or not isinstance(b[2], bool):
            return FALLBACK
        d = norm_dim(b[1], x.dim())
        if d is None or (x.dim() and x.shape[d] == 0):
            return FALLBACK  # torch raises on an empty dim
        shape = [1 if i == d else s for i, s in enumerate(x.shape) if b[2] or i != d]
        return kind((new(shape, x.dtype), new(shape, torch.int64)))

    return rule


def _scan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``cumsum``/``cumprod(input, dim, dtype=None)``: input's shape, contiguous; integers and bool give int64."""
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", REQUIRED), ("dtype", None)))
    if b is None or not isinstance(b[0], torch.Tensor) or norm_dim(b[1], b[0].dim()) is None:
        return FALLBACK
    x, _, dtype = b
    if dtype is None:
        dtype = x.dtype if x.dtype.is_floating_point or x.dtype.is_complex else torch.int64
    elif not isinstance(dtype, torch.dtype):
        return FALLBACK
    return new(x.shape, dtype)


def _diff(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``diff(input, n=1, dim=-1, prepend=None, append=None)`` of contiguous tensors of one dtype."""
    b = bind(args, kwargs, (("input", REQUIRED), ("n", 1), ("dim", -1), ("prepend", None), ("append", None)))
    if b is None or not isinstance(b[0], torch.Tensor) or not b[0].is_contiguous() or not isinstance(b[1], int):
        return FALLBACK
    x, n, dim = b[0], b[1], norm_dim(b[2], b[0].dim())
    if dim is None or x.dim() == 0:
        return FALLBACK
    length = int(x.shape[dim])
    for extra in (b[3], b[4]):
        if extra is None:
            continue
        if not isinstance(extra, torch.Tensor) or extra.dtype != x.dtype or extra.dim() != x.dim():
            return FALLBACK
        if any(a != e for i, (a, e) in enumerate(zip(x.shape, extra.shape)) if i != dim):
            return FALLBACK
        length += int(extra.shape[dim])
    if not 1 <= n < length:
        return FALLBACK
    shape = list(x.shape)
    shape[dim] = length - n
    return new(shape, x.dtype)


builtin(torch.argmax, "argmax", torch.argmin, "argmin", shape=fn(_arg_reduction))
builtin(torch.max, "max", shape=fn(_min_max(torch.return_types.max)))
builtin(torch.min, "min", shape=fn(_min_max(torch.return_types.min)))
builtin(torch.cumsum, "cumsum", torch.cumprod, "cumprod", shape=fn(_scan))
builtin(torch.diff, "diff", shape=fn(_diff))


def _topk(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``topk(input, k, dim=-1, largest=True, sorted=True)`` (Mixture-of-Experts routers): values and int64
    indices, ``dim`` cut to ``k``, new contiguous tensors."""
    b = bind(args, kwargs, (("input", REQUIRED), ("k", REQUIRED), ("dim", -1), ("largest", True), ("sorted", True)))
    if b is None or not isinstance(b[0], torch.Tensor) or b[0].dtype.is_complex or b[0].dtype == torch.bool:
        return FALLBACK
    x, k = b[0], b[1]
    d = norm_dim(b[2], x.dim())
    if d is None or not is_int(k) or not 0 <= k <= (int(x.shape[d]) if x.dim() else 1):
        return FALLBACK  # torch raises: meta says how
    shape = [k if i == d else s for i, s in enumerate(x.shape)]
    return torch.return_types.topk((new(shape, x.dtype), new(shape, torch.int64)))


def _sort(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``sort(input, dim=-1, descending=False, stable=False)`` of a contiguous tensor: values and int64 indices
    of its shape."""
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", -1), ("descending", False), ("stable", False)))
    if b is None or not isinstance(b[0], torch.Tensor) or not b[0].is_contiguous() or b[0].dtype.is_complex:
        return FALLBACK
    x = b[0]
    if norm_dim(b[1], x.dim()) is None or not isinstance(b[2], bool):
        return FALLBACK
    return torch.return_types.sort((new(x.shape, x.dtype), new(x.shape, torch.int64)))


def _argsort(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``argsort(input, dim=-1, descending=False, stable=False)``: :func:`_sort`'s indices (ViT-MAE's masking)."""
    out = _sort(args, kwargs)
    return out if out is FALLBACK else out[1]


def _vector_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``linalg.vector_norm(x, ord=2, dim=None, keepdim=False)`` of a floating tensor (ConvNeXt V2's global
    response norm): a new contiguous tensor of the reduced shape, in its dtype; an empty reduction is left to meta
    (some orders raise there)."""
    b = bind(args, kwargs, (("x", REQUIRED), ("ord", 2), ("dim", None), ("keepdim", False), ("dtype", None)))
    if b is None or not isinstance(b[0], torch.Tensor) or not b[0].is_floating_point() or b[4] is not None:
        return FALLBACK
    x, order, keepdim = b[0], b[1], b[3]
    if not isinstance(order, (int, float)) or isinstance(order, bool) or not isinstance(keepdim, bool):
        return FALLBACK
    shape = _reduced(x, b[2], keepdim)
    if shape is None or x.numel() == 0:
        return FALLBACK
    return new(shape, x.dtype)


def _normalize(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``F.normalize(input, p=2.0, dim=1, eps=1e-12)`` of a floating tensor (SwinV2's cosine attention): what it
    computes, ``input / norm(input, p, dim, keepdim=True).clamp_min(eps).expand_as(input)``, an element-wise
    division of the input by its expanded norm, laid out by torch's rule for element-wise outputs."""
    b = bind(args, kwargs, (("input", REQUIRED), ("p", 2.0), ("dim", 1), ("eps", 1e-12), ("out", None)))
    if b is None or not isinstance(b[0], torch.Tensor) or not b[0].is_floating_point() or b[4] is not None:
        return FALLBACK
    x = b[0]
    dim = norm_dim(b[2], x.dim())
    if not isinstance(b[1], (int, float)) or isinstance(b[1], bool) or dim is None or x.numel() == 0:
        return FALLBACK
    norm = new([1 if i == dim else s for i, s in enumerate(x.shape)], x.dtype)
    return elementwise([x, norm], tuple(x.shape), x.dtype)


_HISTC_INTEGERS = frozenset({torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8})


def _histc(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``histc(input, bins=100, min=0, max=0)``: ``bins`` counts in the input's dtype.  Integer inputs too, as on
    meta and CUDA (CPU kernels refuse them; Mixtral's router picks int32 off the CPU)."""
    b = bind(args, kwargs, (("input", REQUIRED), ("bins", 100), ("min", 0), ("max", 0)))
    if b is None or not isinstance(b[0], torch.Tensor) or not is_int(b[1]) or b[1] <= 0:
        return FALLBACK
    if not (b[0].is_floating_point() or b[0].dtype in _HISTC_INTEGERS):
        return FALLBACK
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b[2:]) or b[2] > b[3]:
        return FALLBACK  # torch raises (max < min)
    return new((b[1],), b[0].dtype)


builtin(torch.topk, "topk", shape=fn(_topk))
builtin(torch.sort, "sort", shape=fn(_sort))
builtin(torch.argsort, "argsort", shape=fn(_argsort))
builtin(torch.linalg.vector_norm, shape=fn(_vector_norm))
builtin(torch.nn.functional.normalize, shape=fn(_normalize))
builtin(torch.histc, "histc", shape=fn(_histc))
