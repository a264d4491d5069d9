"""Shape changes: flatten, view/reshape, permute, transpose, squeeze, expand, indexing, cat, stack, pad, pixel
(un)shuffle (splits: :mod:`~torchsurgeon.rules.splits`).

View ops compute the view's strides for any input; no FLOPs.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._common import (
    REQUIRED,
    OpRule,
    bind,
    broadcast,
    fn,
    is_int,
    new,
    norm_dim,
    one_tensor,
    plainly_contiguous,
    preserved,
    size_args,
    suggest_memory_format,
    view,
)
from .registry import FALLBACK, Call, builtin

__all__: tuple[str, ...] = ()


def _flatten_shape(shape: Sequence[int], start: Any, end: Any) -> tuple[int, ...] | None:
    rank = len(shape)
    s, e = norm_dim(start, rank), norm_dim(end, rank)
    if s is None or e is None or s > e:
        return None
    if rank == 0:
        return (1,)
    return (*shape[:s], math.prod(shape[s : e + 1]), *shape[e + 1 :])


def _by_kernel(x: torch.Tensor, method: str, *args: Any) -> Any:
    """A reshaping op on a non-contiguous ``meta`` tensor, answered by torch's own meta kernel.

    Whether such a tensor can be viewed, and the strides of the result, are
    torch's stride arithmetic; view, reshape and flatten have C++ meta
    kernels (about a microsecond, no Python decomposition), so the rule asks
    them rather than re-deriving it.  The result is a fresh tensor with the
    kernel's shape and strides, not an alias of ``x``.
    """
    if x.device.type != "meta":
        return FALLBACK
    try:
        out = getattr(x, method)(*args)
    except Exception:  # torch raises: the fallback reports its message
        return FALLBACK
    return view(out.shape, out.stride(), out.dtype)


def _flatten(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("start_dim", 0), ("end_dim", -1)))
    if b is None or not isinstance(b[0], torch.Tensor):
        return FALLBACK
    shape = _flatten_shape(b[0].shape, b[1], b[2])
    if shape is None:
        return FALLBACK
    return new(shape, b[0].dtype) if b[0].is_contiguous() else _by_kernel(b[0], "flatten", b[1], b[2])


def _infer_shape(sizes: Sequence[Any], numel: int) -> tuple[int, ...] | None:
    """``view``/``reshape`` sizes with one ``-1`` resolved; None when they do not fit ``numel``."""
    if not all(is_int(d) and d >= -1 for d in sizes) or sum(1 for d in sizes if d == -1) > 1:
        return None
    known = math.prod(d for d in sizes if d != -1)
    if -1 in sizes:
        if known == 0 or numel % known:
            return None
        return tuple(numel // known if d == -1 else int(d) for d in sizes)
    return tuple(int(d) for d in sizes) if known == numel else None


def _reshaping(method: str) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """The rule of ``x.view(*sizes)`` or ``x.reshape(*sizes)``."""

    keyword = "shape" if method == "reshape" else "size"

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x, *rest = args
        if not rest and kwargs.keys() == {keyword}:  # x.reshape(shape=(...)) (diffusers' unpatchify)
            rest, kwargs = [kwargs[keyword]], {}
        sizes = size_args(tuple(rest))
        if kwargs or not isinstance(x, torch.Tensor) or not sizes:
            return FALLBACK  # view(dtype): meta knows
        shape = _infer_shape(sizes, x.numel())
        if shape is None:
            return FALLBACK
        return new(shape, x.dtype) if x.is_contiguous() else _by_kernel(x, method, shape)

    return rule


_view_method, _reshape_method = _reshaping("view"), _reshaping("reshape")


def _as_other(rule: OpRule) -> OpRule:
    """``x.reshape_as(other)`` / ``x.view_as(other)``: ``x.reshape(other.shape)`` / ``x.view(other.shape)`` (LeViT's
    attention, 22 calls that ran on meta)."""

    def as_other(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, (("self", REQUIRED), ("other", REQUIRED)))
        if b is None or not isinstance(b[1], torch.Tensor):
            return FALLBACK
        return rule((b[0], tuple(b[1].shape)), {})

    return as_other


def _reshape_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("shape", REQUIRED)))
    if b is None or not isinstance(b[1], (tuple, list, torch.Size)):
        return FALLBACK
    return _reshape_method((b[0], tuple(b[1])), {})


def _permute_of(x: Any, dims: Any) -> Any:
    if not isinstance(x, torch.Tensor) or not isinstance(dims, (tuple, list)) or len(dims) != x.dim():
        return FALLBACK
    norm = [norm_dim(d, x.dim()) for d in dims]
    if any(d is None for d in norm) or len(set(norm)) != len(norm):
        return FALLBACK
    shape, stride = x.shape, x.stride()
    return view([shape[d] for d in norm], [stride[d] for d in norm], x.dtype)  # type: ignore[index]


def _permute_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("dims", REQUIRED)))
    return FALLBACK if b is None else _permute_of(b[0], b[1])


def _permute_method(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, *rest = args
    if kwargs or not rest:
        return FALLBACK
    return _permute_of(x, size_args(tuple(rest)))


def _transpose(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("dim0", REQUIRED), ("dim1", REQUIRED)))
    if b is None or not isinstance(b[0], torch.Tensor):
        return FALLBACK
    x = b[0]
    d0, d1 = norm_dim(b[1], x.dim()), norm_dim(b[2], x.dim())
    if d0 is None or d1 is None:
        return FALLBACK
    if x.dim() == 0:
        return view((), (), x.dtype)
    dims = list(range(x.dim()))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return _permute_of(x, dims)


def _t(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.t()``: a 2-d tensor transposed; 0-d and 1-d tensors as they are (a view)."""
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor) or args[0].dim() > 2:
        return FALLBACK
    x = args[0]
    return _permute_of(x, [1, 0]) if x.dim() == 2 else view(x.shape, x.stride(), x.dtype)


def _repeat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.repeat(*sizes)``: each dim times its count (leading counts add dims), contiguous."""
    if not args or kwargs or not isinstance(args[0], torch.Tensor):
        return FALLBACK
    x, counts = args[0], size_args(args[1:])
    if not counts or len(counts) < x.dim() or not all(is_int(c) and c >= 0 for c in counts):
        return FALLBACK
    lead = len(counts) - x.dim()
    shape = [int(c) for c in counts[:lead]] + [int(c) * int(s) for c, s in zip(counts[lead:], x.shape)]
    return new(shape, x.dtype)


def _index_fits(x: torch.Tensor, dim: Any, index: torch.Tensor) -> bool:
    """Whether ``gather`` / ``scatter`` take ``index`` along ``dim`` of ``x``: int64, of x's rank, no larger than x
    outside ``dim`` (else torch raises)."""
    d = norm_dim(dim, x.dim())
    if d is None or index.dtype != torch.int64 or index.dim() != x.dim() or x.dim() == 0:
        return False
    return not any(i != d and int(n) > int(s) for i, (n, s) in enumerate(zip(index.shape, x.shape)))


def _gather(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``gather(input, dim, index)``: index's shape, input's dtype, contiguous."""
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", REQUIRED), ("index", REQUIRED), ("sparse_grad", False)))
    if b is None or not isinstance(b[0], torch.Tensor) or not isinstance(b[2], torch.Tensor) or b[3] is not False:
        return FALLBACK
    x, index = b[0], b[2]
    return new(index.shape, x.dtype) if _index_fits(x, b[1], index) else FALLBACK


def _scattered(args: tuple[Any, ...], kwargs: dict[str, Any], *, value: bool) -> torch.Tensor | None:
    """The ``x`` of ``x.scatter_(dim, index, src)`` (``value``: or a number) when torch accepts the call: an int64
    index of x's rank, no larger than ``src`` in any dim nor than x outside ``dim``, and ``src`` of x's dtype."""
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", REQUIRED), ("index", REQUIRED), ("src", REQUIRED)))
    if b is None or not isinstance(b[0], torch.Tensor) or not isinstance(b[2], torch.Tensor):
        return None  # reduce=..., value=...: meta says it
    x, index, src = b[0], b[2], b[3]
    if not _index_fits(x, b[1], index):
        return None
    if isinstance(src, torch.Tensor):
        if src.dtype != x.dtype or src.dim() != x.dim() or any(int(n) > int(s) for n, s in zip(index.shape, src.shape)):
            return None
    elif not value or not isinstance(src, (int, float)) or (isinstance(src, float) and not x.is_floating_point()):
        return None
    return x


def _scatter_rule(*, in_place: bool, value: bool) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """``scatter``/``scatter_add`` (``value``: a number may stand for ``src``): x's shape and dtype; in place x
    itself, else a new tensor when x is contiguous."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = _scattered(args, kwargs, value=value)
        if x is None:
            return FALLBACK
        if in_place:
            return x
        return new(x.shape, x.dtype) if x.is_contiguous() else FALLBACK

    return rule


def _contiguous(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        return FALLBACK
    x = args[0]
    return x if x.is_contiguous() else new(x.shape, x.dtype)


def _detach(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.detach()``: a new view of x's shape and strides (an in-place reshape of it leaves x alone)."""
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        return FALLBACK
    x = args[0]
    return view(x.shape, x.stride(), x.dtype)


def _clone(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.clone()``: a dense input's strides are kept (``preserve_format``); ``contiguous_format`` is contiguous."""
    if len(args) != 1 or not isinstance(args[0], torch.Tensor) or not {"memory_format"}.issuperset(kwargs):
        return FALLBACK  # memory_format is keyword-only
    x, layout = args[0], kwargs.get("memory_format", torch.preserve_format)
    if layout is torch.contiguous_format:
        return new(x.shape, x.dtype)
    return preserved(x, x.dtype) if layout is torch.preserve_format else FALLBACK


def _repeat_interleave(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``repeat_interleave(x, repeats, dim=None)`` with an int ``repeats`` (keys and values repeated for grouped
    attention): ``dim`` times ``repeats`` (x flattened without a dim), a new contiguous tensor for any layout."""
    b = bind(args, kwargs, (("input", REQUIRED), ("repeats", REQUIRED), ("dim", None), ("output_size", None)))
    if b is None or not isinstance(b[0], torch.Tensor) or not is_int(b[1]) or b[1] < 0:
        return FALLBACK  # a tensor of repeats: its values decide
    x, repeats = b[0], int(b[1])
    d = 0 if b[2] is None else norm_dim(b[2], x.dim())
    if d is None or (b[2] is not None and not x.dim()):
        return FALLBACK  # a 0-dim tensor over a dim: torch's answer depends on the dim given
    shape = (
        [x.numel() * repeats] if b[2] is None else [s * repeats if i == d else int(s) for i, s in enumerate(x.shape)]
    )
    if b[3] is not None and not (is_int(b[3]) and b[3] == shape[d]):  # output_size: a hint torch checks
        return FALLBACK  # torch's error (Invalid output_size), from meta
    return new(shape, x.dtype)


def _roll(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch.roll(x, shifts, dims)`` of a contiguous tensor: same shape, contiguous."""
    b = bind(args, kwargs, (("input", REQUIRED), ("shifts", REQUIRED), ("dims", ())))
    if b is None or not isinstance(b[0], torch.Tensor) or not b[0].is_contiguous():
        return FALLBACK
    x, shifts, dims = b
    shifts = (shifts,) if is_int(shifts) else tuple(shifts) if isinstance(shifts, (tuple, list)) else None
    dims = (dims,) if is_int(dims) else tuple(dims) if isinstance(dims, (tuple, list)) else None
    if shifts is None or dims is None or not all(is_int(v) for v in (*shifts, *dims)):
        return FALLBACK
    if (dims and len(dims) != len(shifts)) or (not dims and len(shifts) != 1) or x.dim() == 0:
        return FALLBACK  # torch raises
    if any(norm_dim(d, x.dim()) is None for d in dims):
        return FALLBACK
    return new(x.shape, x.dtype)


def _setitem(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x[index] = value`` (masks filled in loops, SwinUNETR's): None, when torch would accept it.

    The indexed part is what the ``getitem`` rule computes; a number always fits, a meta tensor fits
    when it broadcasts to the part's shape.
    """
    if kwargs or len(args) != 3 or not isinstance(args[0], torch.Tensor):
        return FALLBACK
    target, index, value = args
    part = _getitem((target, index), {})
    if not isinstance(part, torch.Tensor):
        return FALLBACK
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta" or value.dim() > part.dim():
            return FALLBACK
        return None if broadcast(value.shape, part.shape) == tuple(part.shape) else FALLBACK
    return None if isinstance(value, (int, float)) else FALLBACK


def _unsqueeze(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", REQUIRED)))
    if b is None or not isinstance(b[0], torch.Tensor):
        return FALLBACK
    x = b[0]
    d = norm_dim(b[1], x.dim() + 1)
    if d is None:
        return FALLBACK
    shape, stride = list(x.shape), list(x.stride())
    new_stride = 1 if d >= x.dim() else shape[d] * stride[d]
    return view([*shape[:d], 1, *shape[d:]], [*stride[:d], new_stride, *stride[d:]], x.dtype)


def _squeeze(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not args or not isinstance(args[0], torch.Tensor) or set(kwargs) - {"dim"}:
        return FALLBACK
    x, rest = args[0], (*args[1:], *kwargs.values())
    if len(rest) > 1:
        return FALLBACK
    rank = x.dim()
    if not rest or rest[0] is None:
        drop = {i for i in range(rank) if x.shape[i] == 1}
    else:
        dims = rest[0] if isinstance(rest[0], (tuple, list)) else (rest[0],)
        norm = [norm_dim(d, rank) for d in dims]
        if any(d is None for d in norm):
            return FALLBACK
        drop = {d for d in norm if d is not None and rank and x.shape[d] == 1}
    keep = [i for i in range(rank) if i not in drop]
    return view([x.shape[i] for i in keep], [x.stride()[i] for i in keep], x.dtype)


def _in_place(out_of_place: Callable[[tuple[Any, ...], dict[str, Any]], Any]) -> Callable[..., Any]:
    """``x.unsqueeze_(0)``, ``x.transpose_(0, 1)``...: ``x`` itself, given the shape and strides of the view the
    out-of-place op makes (a graph with one is never memoised: :data:`torchsurgeon.shapememo.METADATA_INPLACE`)."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.device.type != "meta":
            return FALLBACK
        out = out_of_place(args, kwargs)
        if out is FALLBACK:
            return FALLBACK
        return x.as_strided_(out.shape, out.stride())

    return rule


def _expand(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, *rest = args
    sizes = size_args(tuple(rest))
    if kwargs or not isinstance(x, torch.Tensor) or not rest or len(sizes) < x.dim():
        return FALLBACK
    if not all(is_int(d) for d in sizes):
        return FALLBACK
    lead = len(sizes) - x.dim()
    shape, stride = [], []
    for i, want in enumerate(sizes):
        if i < lead:
            if want < 0:
                return FALLBACK
            shape.append(int(want))
            stride.append(0)
            continue
        have, st = int(x.shape[i - lead]), int(x.stride()[i - lead])
        if want == -1 or want == have:
            shape.append(have)
            stride.append(st)
        elif have == 1 and want >= 0:
            shape.append(int(want))
            stride.append(0)
        else:
            return FALLBACK
    return view(shape, stride, x.dtype)


def _index_on_meta(i: torch.Tensor) -> bool:
    """An integer index tensor of at least one dim, on meta: the shape it gives does not depend on its values."""
    return i.is_meta and i.dtype in _INDEX_DTYPES and i.dim() >= 1


def _integer_indices(x: torch.Tensor, items: tuple[torch.Tensor, ...]) -> Any:
    """Integer tensors of indices into the first ``len(items)`` dims of a contiguous tensor (a relative-position
    table read at its index; transformers' ``padding_mask[batch_idx, kv_idx]``): a new contiguous tensor, the
    indices' broadcast shape then the rest of ``x``'s."""
    if not x.is_contiguous() or len(items) > x.dim():
        return FALLBACK  # another layout; too many indices (meta says it)
    if not all(_index_on_meta(i) for i in items):
        return FALLBACK  # a mask (its shape depends on its values), a 0-d index (an int)
    shape = broadcast(*(i.shape for i in items))
    if shape is None:
        return FALLBACK  # the indices do not broadcast: meta says it
    return new((*shape, *x.shape[len(items) :]), x.dtype)


def _one_index_after_slices(x: torch.Tensor, index: tuple[Any, ...]) -> Any:
    """``x[:, idx]``: whole dims, then one integer index tensor, then whole dims (LeViT's attention biases read at
    their offsets, ``biases[:, idxs]``), of a contiguous tensor: the dims before, the index's shape, the dims after,
    contiguous (as torch gives it); any other mix of tensors and slices is left to meta."""
    at = next(k for k, i in enumerate(index) if isinstance(i, torch.Tensor))
    whole = slice(None)
    if not all(isinstance(i, slice) and i == whole for k, i in enumerate(index) if k != at):
        return FALLBACK
    idx = index[at]
    if at >= x.dim() or not x.is_contiguous() or not _index_on_meta(idx):
        return FALLBACK  # too many indices (meta says it), another layout, a mask, a 0-d index
    return new((*x.shape[:at], *idx.shape, *x.shape[at + 1 :]), x.dtype)


def _index_tensor(x: torch.Tensor, index: Any) -> Any:
    """Basic indexing (ints, slices with step >= 1, None, Ellipsis): a view; integer index tensors only
    (:func:`_integer_indices`): a new tensor."""
    if isinstance(index, torch.Tensor):
        return _integer_indices(x, (index,))
    if isinstance(index, tuple) and index and isinstance(index[0], torch.Tensor):
        lead = index
        while lead and isinstance(lead[-1], slice) and lead[-1] == slice(None):  # x[ids, :] is x[ids]
            lead = lead[:-1]
        if lead and all(isinstance(i, torch.Tensor) for i in lead):
            return _integer_indices(x, lead)
    if isinstance(index, tuple) and any(isinstance(i, torch.Tensor) for i in index):
        return _one_index_after_slices(x, index)
    items = index if isinstance(index, tuple) else (index,)
    if not all(is_int(i) or i is None or i is Ellipsis or isinstance(i, slice) for i in items):
        return FALLBACK  # tensors, lists, bools: advanced indexing
    if sum(1 for i in items if i is Ellipsis) > 1:
        return FALLBACK
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if consumed > x.dim():
        return FALLBACK
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = (*items[:at], *(slice(None),) * (x.dim() - consumed), *items[at + 1 :])
    else:
        items = (*items, *(slice(None),) * (x.dim() - consumed))
    shape, stride = [], []
    dim = 0
    xs, xt = list(x.shape), list(x.stride())
    for item in items:
        if item is None:
            shape.append(1)
            stride.append(xs[dim] * xt[dim] if dim < len(xs) else 1)
            continue
        size, st = xs[dim], xt[dim]
        dim += 1
        if isinstance(item, slice):
            if not all(v is None or is_int(v) for v in (item.start, item.stop, item.step)):
                return FALLBACK
            if item.step is not None and item.step < 1:
                return FALLBACK
            start, stop, step = item.indices(size)
            shape.append(max(0, (stop - start + step - 1) // step))
            stride.append(st * step)
        elif not -size <= item < size:
            return FALLBACK  # IndexError: meta says it
    return view(shape, stride, x.dtype)


_INDEX_DTYPES = frozenset({torch.int64, torch.int32})


def _getitem(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 2 or kwargs:
        return FALLBACK
    obj, index = args
    if isinstance(obj, torch.Tensor):
        return _index_tensor(obj, index)
    if isinstance(index, torch.Tensor):
        return FALLBACK
    return obj[index]


def _cat_is_contiguous(tensors: Sequence[torch.Tensor], extra_dims: int = 0) -> bool:
    """Whether ``cat`` gives a contiguous output: torch uses the inputs' common suggested memory format.

    Only 4-d and 5-d tensors can suggest channels-last, and one input that
    suggests the contiguous format makes the output contiguous.
    """
    if tensors[0].dim() + extra_dims not in (4, 5) or (extra_dims and any(t.is_contiguous() for t in tensors)):
        return True
    if suggest_memory_format is None or extra_dims:  # pragma: no cover - torch without _prims_common
        return False
    # not is_contiguous(): a (1, 1, 1, 2) tensor is contiguous and channels-last at once, and suggests the latter
    return any(suggest_memory_format(t) == torch.contiguous_format for t in tensors)


def _cat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("tensors", REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], (list, tuple)) or not b[0]:
        return FALLBACK
    tensors = b[0]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return FALLBACK
    first = tensors[0]
    if first.dim() == 0 or any(t.dim() != first.dim() or t.dtype != first.dtype for t in tensors):
        return FALLBACK
    contiguous = _cat_is_contiguous(tensors)
    if not contiguous and suggest_memory_format is None:  # pragma: no cover - torch without _prims_common
        return FALLBACK
    layout = torch.contiguous_format if contiguous else suggest_memory_format(first)
    dim = norm_dim(b[1], first.dim())
    if dim is None:
        return FALLBACK
    others = [s for i, s in enumerate(first.shape) if i != dim]
    if any([s for i, s in enumerate(t.shape) if i != dim] != others for t in tensors):
        return FALLBACK
    shape = list(first.shape)
    shape[dim] = sum(int(t.shape[dim]) for t in tensors)
    if layout != torch.contiguous_format:  # every input suggests channels-last (smp Segformer's resized maps)
        return torch.empty(shape, dtype=first.dtype, device="meta", memory_format=layout)
    return new(shape, first.dtype)


def _stack(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("tensors", REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], (list, tuple)) or not b[0]:
        return FALLBACK
    tensors = b[0]
    if not all(isinstance(t, torch.Tensor) for t in tensors) or not _cat_is_contiguous(tensors, 1):
        return FALLBACK
    first = tensors[0]
    if any(t.shape != first.shape or t.dtype != first.dtype for t in tensors):
        return FALLBACK
    dim = norm_dim(b[1], first.dim() + 1)
    if dim is None:
        return FALLBACK
    shape = list(first.shape)
    shape.insert(dim, len(tensors))
    return new(shape, first.dtype)


def _flatten_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.Flatten)
    return _flatten((x, m.start_dim, m.end_dim), {})


def _unflatten_of(x: Any, dim: Any, sizes: Any) -> Any:
    """``x.unflatten(dim, sizes)``: a view, ``dim`` split into ``sizes`` (one may be -1), each new dim's stride that
    of ``dim`` times the sizes after it, as ``view`` computes them for a split dim."""
    d = norm_dim(dim, x.dim()) if isinstance(x, torch.Tensor) and is_int(dim) else None
    if d is None or x.dim() == 0 or not isinstance(sizes, (tuple, list, torch.Size)):
        return FALLBACK
    inner = _infer_shape(tuple(sizes), int(x.shape[d]))
    if inner is None or not inner:
        return FALLBACK
    strides: list[int] = []
    step = int(x.stride()[d])
    for size in reversed(inner):
        strides.insert(0, step)
        step *= size
    return view((*x.shape[:d], *inner, *x.shape[d + 1 :]), (*x.stride()[:d], *strides, *x.stride()[d + 1 :]), x.dtype)


def _unflatten(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", REQUIRED), ("sizes", REQUIRED)))
    return FALLBACK if b is None else _unflatten_of(*b)


def _unflatten_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.Unflatten)
    return _unflatten_of(x, m.dim, m.unflattened_size)


def _constant_pad(x: Any, pad: Any, *, any_layout: bool = True) -> Any:
    """``F.pad(x, pad)`` in constant mode: ``pad`` adds (before, after) to the last dims, last dim first.  A new
    tensor in the memory format ``x`` suggests (channels-last kept), for an ``x`` of any layout (RegionViT's
    permuted maps) when no pad is negative; a crop (a negative pad) of a contiguous ``x`` only (torch narrows it
    first); ``any_layout=False``: contiguous ``x`` only."""
    if not isinstance(x, torch.Tensor) or not isinstance(pad, (tuple, list)):
        return FALLBACK
    if not pad or len(pad) % 2 or len(pad) > 2 * x.dim() or not all(is_int(p) for p in pad):
        return FALLBACK
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        shape[-1 - i] += int(pad[2 * i]) + int(pad[2 * i + 1])
    if min(shape[x.dim() - len(pad) // 2 :]) <= 0:
        return FALLBACK  # cropped away: meta gives torch's error or an empty tensor
    if plainly_contiguous(x):
        return new(shape, x.dtype)
    if not any_layout or min(pad) < 0 or not any(pad) or x.numel() == 0 or suggest_memory_format is None:
        return FALLBACK
    return torch.empty(shape, dtype=x.dtype, device="meta", memory_format=suggest_memory_format(x))


def _border_pad(x: Any, pad: Any, mode: str) -> Any:
    """``F.pad(x, pad, mode)`` for ``reflect``, ``replicate`` and ``circular``: 1 to 3 padded dims of an input with
    one or two more dims, pads that are not negative, within the input's size for reflect (``<``) and circular."""
    if not isinstance(x, torch.Tensor) or not isinstance(pad, (tuple, list)) or not all(is_int(p) for p in pad):
        return FALLBACK
    n = len(pad) // 2
    if len(pad) % 2 or n not in (1, 2, 3) or x.dim() not in (n + 1, n + 2) or min(pad) < 0:
        return FALLBACK
    for i in range(n):
        size = int(x.shape[-1 - i])
        if (mode == "reflect" and max(pad[2 * i : 2 * i + 2]) >= size) or (
            mode == "circular" and max(pad[2 * i : 2 * i + 2]) > size
        ):
            return FALLBACK  # torch's error, from meta
    if mode == "circular" and x.dim() != n + 2:
        return FALLBACK  # circular padding wants a batch dim in some torch versions: meta decides
    return _constant_pad(x, pad, any_layout=False) if x.numel() else FALLBACK


def _pad_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("pad", REQUIRED), ("mode", "constant"), ("value", None)))
    if b is None:
        return FALLBACK
    pad = b[1]
    if isinstance(pad, (tuple, list)):  # sizes computed from a model's scalar buffers (Encodec): CPU scalars
        pad = tuple(int(p) if _cpu_integer(p) else p for p in pad)
    if b[2] in ("reflect", "replicate", "circular") and (b[3] is None or (type(b[3]) in (int, float) and b[3] == 0)):
        return _border_pad(b[0], pad, b[2])  # torch takes a value of 0 in these modes (Encodec gives 0.0)
    if b[2] != "constant" or not (b[3] is None or isinstance(b[3], (int, float))):
        return FALLBACK
    return _constant_pad(b[0], pad)


def _cpu_integer(p: Any) -> bool:
    return isinstance(p, torch.Tensor) and not p.is_meta and p.dim() == 0 and not p.dtype.is_floating_point


def _constant_pad_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    return _constant_pad(x, getattr(m, "padding", None))


builtin(torch.t, "t", shape=fn(_t))
builtin("repeat", shape=fn(_repeat))
builtin(torch.gather, "gather", shape=fn(_gather))
builtin(torch.scatter, "scatter", shape=fn(_scatter_rule(in_place=False, value=True)))
builtin("scatter_", shape=fn(_scatter_rule(in_place=True, value=True)))
builtin(torch.scatter_add, "scatter_add", shape=fn(_scatter_rule(in_place=False, value=False)))
builtin("scatter_add_", shape=fn(_scatter_rule(in_place=True, value=False)))
builtin(torch.nn.functional.pad, shape=fn(_pad_fn))
builtin(nn.modules.padding._ConstantPadNd, shape=one_tensor(_constant_pad_module))  # ZeroPad2d, ConstantPad3d...
builtin(torch.flatten, "flatten", shape=fn(_flatten))
builtin(torch.reshape, shape=fn(_reshape_fn))
builtin("view", shape=fn(_view_method))
builtin("reshape", shape=fn(_reshape_method))
builtin("reshape_as", shape=fn(_as_other(_reshape_method)))
builtin("view_as", shape=fn(_as_other(_view_method)))
builtin(torch.permute, shape=fn(_permute_fn))
builtin("permute", shape=fn(_permute_method))
builtin(torch.transpose, torch.swapaxes, torch.swapdims, "transpose", "swapaxes", "swapdims", shape=fn(_transpose))
builtin("contiguous", shape=fn(_contiguous))
builtin(torch.clone, "clone", shape=fn(_clone))
builtin(torch.detach, "detach", shape=fn(_detach))
builtin(torch.roll, "roll", shape=fn(_roll))
builtin(torch.repeat_interleave, "repeat_interleave", shape=fn(_repeat_interleave))
builtin(torch.unsqueeze, "unsqueeze", shape=fn(_unsqueeze))
builtin(torch.squeeze, "squeeze", shape=fn(_squeeze))
builtin("unsqueeze_", shape=fn(_in_place(_unsqueeze)))
builtin("squeeze_", shape=fn(_in_place(_squeeze)))
builtin("transpose_", "swapaxes_", "swapdims_", shape=fn(_in_place(_transpose)))
builtin("t_", shape=fn(_in_place(_t)))
builtin("expand", shape=fn(_expand))
builtin(operator.getitem, shape=fn(_getitem), python=True)
builtin(operator.setitem, shape=fn(_setitem))
builtin(torch.cat, torch.concat, shape=fn(_cat))
builtin(torch.stack, shape=fn(_stack))


def _pixel_shuffle_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    """``nn.PixelShuffle(r)``: ``(*, C, H, W)`` to ``(*, C / r², H·r, W·r)``; ``nn.PixelUnshuffle(r)`` the other way.
    A channel count or size the factor does not divide is a mismatch naming what fits (meta's own error is its
    decomposition's, ``shape '[1, 4, 2, 2, 5, 2]' is invalid``); past it, as if it fitted.  Contiguous inputs only
    (the CPU keeps a channels-last layout, meta does not: meta decides)."""
    up = isinstance(m, nn.PixelShuffle)
    factor = getattr(m, "upscale_factor" if up else "downscale_factor", None)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor <= 0:
        return FALLBACK
    if x.dim() < 3 or 0 in x.shape or not x.is_contiguous():
        return FALLBACK
    r = factor
    c, h, w = (int(d) for d in x.shape[-3:])
    if up:
        if c % (r * r):
            call.mismatch(
                "channels",
                f"a multiple of {r * r} (upscale_factor={r}, squared)",
                c,
                f"make what comes before it give a multiple of {r * r} channels",
            )
        return new((*x.shape[:-3], max(1, c // (r * r)), h * r, w * r), x.dtype)
    for i, size in enumerate((h, w)):
        if size % r:
            call.mismatch(
                f"spatial size (dim {i})",
                f"a multiple of {r} (downscale_factor={r})",
                size,
                f"use an input whose height and width, where this layer reads them, are multiples of {r}",
            )
    return new((*x.shape[:-3], c * r * r, max(1, h // r), max(1, w // r)), x.dtype)


builtin(nn.Flatten, shape=one_tensor(_flatten_module))
builtin(nn.PixelShuffle, nn.PixelUnshuffle, shape=one_tensor(_pixel_shuffle_module))
builtin(nn.Unflatten, shape=one_tensor(_unflatten_module))
builtin(torch.unflatten, "unflatten", shape=fn(_unflatten))
