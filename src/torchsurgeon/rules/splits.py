"""Splits of a tensor into views: chunk, split, split_with_sizes, tensor_split, unbind.

Each part is a view of its input (its strides); no FLOPs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from ._common import REQUIRED, bind, fn, is_int, norm_dim, view
from .registry import FALLBACK, builtin

__all__: tuple[str, ...] = ()


def _split_views(x: torch.Tensor, sizes: Sequence[int], dim: int) -> tuple[torch.Tensor, ...]:
    shape, stride = list(x.shape), list(x.stride())
    out = []
    for s in sizes:
        shape[dim] = s
        out.append(view(shape, stride, x.dtype))
    return tuple(out)


def _chunk(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("chunks", REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], torch.Tensor) or not is_int(b[1]) or b[1] < 1:
        return FALLBACK
    x, chunks = b[0], int(b[1])
    dim = norm_dim(b[2], x.dim())
    if dim is None or x.dim() == 0 or x.shape[dim] == 0:
        return FALLBACK
    n = int(x.shape[dim])
    step = -(-n // chunks)
    return _split_views(x, [min(step, n - i) for i in range(0, n, step)], dim)


def _split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("tensor", REQUIRED), ("split_size_or_sections", REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], torch.Tensor) or b[0].dim() == 0:
        return FALLBACK
    x, size = b[0], b[1]
    dim = norm_dim(b[2], x.dim())
    if dim is None:
        return FALLBACK
    n = int(x.shape[dim])
    if is_int(size) and size > 0 and n > 0:
        return _split_views(x, [min(size, n - i) for i in range(0, n, size)], dim)
    if isinstance(size, (list, tuple)) and all(is_int(s) and s >= 0 for s in size) and sum(size) == n:
        return _split_views(x, [int(s) for s in size], dim)
    return FALLBACK


def _tensor_split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch.tensor_split(x, sections_or_indices, dim)`` (torchvision's MViT): n parts, the first ``N % n`` one
    longer; or the parts between the indices (clamped to the size; empty where one is past the next)."""
    named = {"indices": "indices_or_sections", "sections": "indices_or_sections"}  # its overloads' names
    kwargs = {named.get(k, k): v for k, v in kwargs.items()}
    b = bind(args, kwargs, (("input", REQUIRED), ("indices_or_sections", REQUIRED), ("dim", 0)))
    if (
        b is None
        or not isinstance(b[0], torch.Tensor)
        or b[0].dim() == 0
        or (dim := norm_dim(b[2], b[0].dim())) is None
    ):
        return FALLBACK
    n, split = int(b[0].shape[dim]), b[1]
    if is_int(split) and split > 0:
        return _split_views(b[0], [n // split + (i < n % split) for i in range(split)], dim)
    if not isinstance(split, (list, tuple)) or not all(is_int(i) and i >= 0 for i in split):
        return FALLBACK  # a tensor of indices, or negative ones: torch decides
    bounds = [0, *(min(int(i), n) for i in split), n]
    return _split_views(b[0], [max(0, end - start) for start, end in itertools.pairwise(bounds)], dim)


def _unbind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.unbind(dim)`` (attention's ``q, k, v = qkv.unbind(0)``): one view per index, without ``dim``."""
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], torch.Tensor) or b[0].dim() == 0:
        return FALLBACK
    x = b[0]
    dim = norm_dim(b[1], x.dim())
    if dim is None:
        return FALLBACK
    shape, stride = list(x.shape), list(x.stride())
    del shape[dim], stride[dim]
    return tuple(view(shape, stride, x.dtype) for _ in range(int(x.shape[dim])))


def _split_with_sizes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.split_with_sizes(sizes, dim=0)`` (Flux's text and image tokens): ``split`` by a list of sizes."""
    b = bind(args, kwargs, (("input", REQUIRED), ("split_sizes", REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[1], (list, tuple)):
        return FALLBACK
    return _split((b[0], b[1], b[2]), {})


def _split_method(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if "split_size" in kwargs:
        kwargs = {("split_size_or_sections" if k == "split_size" else k): v for k, v in kwargs.items()}
    return _split(args, kwargs)


builtin(torch.chunk, "chunk", shape=fn(_chunk))
builtin(torch.split, shape=fn(_split))
builtin("split", shape=fn(_split_method))
builtin(torch.split_with_sizes, "split_with_sizes", shape=fn(_split_with_sizes))
builtin(torch.tensor_split, "tensor_split", shape=fn(_tensor_split))
builtin(torch.unbind, "unbind", shape=fn(_unbind))
