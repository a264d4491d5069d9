"""Reductions over dims: sum, mean, amax, amin (no FLOPs counted)."""

from __future__ import annotations

from typing import Any

import torch

from ._common import REQUIRED, OpRule, Spec, bind, float_tensor, fn, new, norm_dim
from .registry import FALLBACK, builtin

__all__: tuple[str, ...] = ()


def _reduction_rule(spec: Spec) -> OpRule:
    """sum/mean/amax/amin over dims of a contiguous floating tensor."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, spec)
        if b is None or not float_tensor(b[0]) or not b[0].is_contiguous():
            return FALLBACK
        x, dim, keepdim = b[0], b[1], b[2]
        if (len(b) > 3 and b[3] is not None) or not isinstance(keepdim, bool):
            return FALLBACK  # dtype= conversions: meta knows
        rank = x.dim()
        if dim is None or dim == () or dim == []:
            dims = set(range(rank))
        else:
            seq = dim if isinstance(dim, (tuple, list)) else (dim,)
            norm = [norm_dim(d, rank) for d in seq]
            if any(d is None for d in norm) or len(set(norm)) != len(norm):
                return FALLBACK
            dims = {d for d in norm if d is not None}
        if rank == 0:
            return new((), x.dtype)
        shape = [1 if i in dims else s for i, s in enumerate(x.shape) if keepdim or i not in dims]
        return new(shape, x.dtype)

    return rule


_REDUCE: Spec = (("input", REQUIRED), ("dim", None), ("keepdim", False), ("dtype", None))
_REDUCE_NO_DTYPE: Spec = (("input", REQUIRED), ("dim", ()), ("keepdim", False))


builtin(torch.sum, "sum", shape=fn(_reduction_rule(_REDUCE)))
builtin(torch.mean, "mean", shape=fn(_reduction_rule(_REDUCE)))
builtin(torch.amax, "amax", shape=fn(_reduction_rule(_REDUCE_NO_DTYPE)))
builtin(torch.amin, "amin", shape=fn(_reduction_rule(_REDUCE_NO_DTYPE)))
