"""Indices of known data that point outside a tensor: what a real forward raises and ``meta`` never checks.

A ``meta`` tensor has shapes and no data, so ``table[idx]``,
``torch.index_select(table, 0, idx)`` or ``F.embedding(ids, weight)`` on
``meta`` give a result of the right shape whatever ``idx`` holds.  When the
indices are known (:mod:`torchsurgeon.knowndata`: positions made from the
input's size with ``torch.arange``), :func:`index_past` checks them as the
real op does, one home for every op that reads or writes at positions:

* ``x[idx]``, ``x[idx] = v``, ``index_put`` — each index tensor against its dim;
* ``index_select``, ``gather``, ``scatter``, ``scatter_add``, ``scatter_reduce``,
  ``index_add``, ``index_copy``, ``index_fill`` (functions, methods and
  in-place methods) — the index against the size of ``dim``;
* ``take`` — against the number of elements; ``F.embedding`` — against the
  table's rows; ``F.one_hot`` — against ``num_classes``.

Shape propagation turns a hit into an invalid layer
(:meth:`torchsurgeon.knowndata.KnownData.past_the_end`); code run on ``meta``
raises torch's error (:mod:`torchsurgeon.rules.on_meta`); a fake-tensor step checks the aten ops
they come down to (:func:`aten_index_past`, :class:`torchsurgeon.fakevalues.KnownIndices`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = ("Past", "aten_index_past", "checked", "ids_past", "index_past", "out_of_bounds")


class Past(NamedTuple):
    """An index outside the tensor it reads or writes: what a real forward raises."""

    position: int
    """The first index outside (torch names the first one)."""
    size: int
    """The size it had to stay below."""
    message: str
    """torch's message."""
    error: type[Exception]
    """The exception a real forward raises."""


def _known(t: Any) -> bool:
    """An integer tensor of data on the CPU (an index meta cannot check)."""
    return type(t) is torch.Tensor and not t.is_meta and not t.is_floating_point() and t.dtype != torch.bool


def _first_outside(index: torch.Tensor, size: int, negative: bool) -> int | None:
    flat = index.flatten()
    outside = flat[(flat >= size) | (flat < (-size if negative else 0))]
    return int(outside[0]) if outside.numel() else None


def out_of_bounds(shape: Sequence[int], index: Any) -> Past | None:
    """The :class:`Past` of ``x[index]`` for a tensor of ``shape`` when an integer tensor in ``index`` on the CPU
    points outside its dim; None when every such index is inside (or the index has forms not checked).

    Examples
    --------
    >>> out_of_bounds((3, 111), (slice(None), torch.tensor([0, 111, 200]))).message
    'index 111 is out of bounds for dimension 1 with size 111'
    >>> out_of_bounds((3, 111), torch.tensor([2, -3])) is None
    True
    """
    items = index if type(index) in (tuple, list) else (index,)
    consumed = 0
    for item in items:
        if isinstance(item, torch.Tensor):
            consumed += item.dim() if item.dtype == torch.bool else 1
        elif item is not None and item is not Ellipsis:
            consumed += 1
    dim = 0
    for item in items:
        if item is None:
            continue
        if item is Ellipsis:
            dim += len(shape) - consumed
            continue
        if isinstance(item, torch.Tensor) and item.dtype == torch.bool:
            dim += item.dim()
            continue
        if _known(item) and item.numel():
            if dim >= len(shape):
                return None  # too many indices: torch says so, and shape propagation does too
            size = int(shape[dim])
            found = _first_outside(item, size, negative=True)
            if found is not None:
                says = f"index {found} is out of bounds for dimension {dim} with size {size}"
                return Past(found, size, says, IndexError)
        dim += 1
    return None


def ids_past(ids: Any, rows: int) -> Past | None:
    """The :class:`Past` of ``ids``, integers on the CPU, looking up an embedding of ``rows`` rows past its end;
    None otherwise (also for ids on meta).

    Examples
    --------
    >>> ids_past(torch.arange(6), 4)
    Past(position=4, size=4, message='index out of range in self', error=<class 'IndexError'>)
    """
    if not _known(ids) or not ids.numel():
        return None
    found = _first_outside(ids, rows, negative=False)
    return None if found is None else Past(found, rows, "index out of range in self", IndexError)


def _argument(args: Sequence[Any], kwargs: Mapping[str, Any], position: int, *names: str) -> Any:
    if len(args) > position:
        return args[position]
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return None


def _along_dim(negative: bool, error: type[Exception]) -> Callable[[Sequence[Any], Mapping[str, Any]], Past | None]:
    """The check of an op called ``(input, dim, index, ...)`` (``negative``: whether ``-size <= index`` is
    inside)."""

    def check(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
        x = _argument(args, kwargs, 0, "input", "self")
        dim = _argument(args, kwargs, 1, "dim")
        index = _argument(args, kwargs, 2, "index")
        if not isinstance(x, torch.Tensor) or type(dim) is not int or not _known(index) or not index.numel():
            return None
        if not -max(x.dim(), 1) <= dim < max(x.dim(), 1):
            return None  # torch says the dim is wrong, and meta does too
        dim %= max(x.dim(), 1)
        size = int(x.shape[dim]) if x.dim() else 1
        found = _first_outside(index, size, negative)
        if found is None:
            return None
        return Past(found, size, f"index {found} is out of bounds for dimension {dim} with size {size}", error)

    return check


def _getitem(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    x = args[0] if args else None
    return out_of_bounds(tuple(x.shape), args[1]) if isinstance(x, torch.Tensor) and len(args) >= 2 else None


def _index_put(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    x, indices = _argument(args, kwargs, 0, "input", "self"), _argument(args, kwargs, 1, "indices")
    return out_of_bounds(tuple(x.shape), tuple(indices)) if isinstance(x, torch.Tensor) and indices else None


def _embedding(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    weight = _argument(args, kwargs, 1, "weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    return ids_past(_argument(args, kwargs, 0, "input"), int(weight.shape[0]))


def _take(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    x, index = _argument(args, kwargs, 0, "input", "self"), _argument(args, kwargs, 1, "index")
    if not isinstance(x, torch.Tensor) or not _known(index) or not index.numel():
        return None
    size = x.numel()
    found = _first_outside(index, size, negative=True)
    if found is None:
        return None
    return Past(found, size, f"out of range: tried to access index {found} on a tensor of {size} elements.", IndexError)


def _one_hot(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    labels, classes = _argument(args, kwargs, 0, "input", "tensor"), _argument(args, kwargs, 1, "num_classes")
    if type(classes) is not int or classes < 0 or not _known(labels) or not labels.numel():
        return None  # -1: as many classes as the largest label needs
    found = _first_outside(labels, classes, negative=False)
    if found is None:
        return None
    says = "Class values must be non-negative." if found < 0 else "Class values must be smaller than num_classes."
    return Past(found, classes, says, RuntimeError)


def _checks() -> dict[Any, Callable[[Sequence[Any], Mapping[str, Any]], Past | None]]:
    table: dict[Any, Callable[[Sequence[Any], Mapping[str, Any]], Past | None]] = {
        operator.getitem: _getitem,
        torch.Tensor.__getitem__: _getitem,
        operator.setitem: _getitem,
        torch.Tensor.__setitem__: _getitem,
        F.embedding: _embedding,
        F.one_hot: _one_hot,
    }
    along = {
        "index_select": _along_dim(False, IndexError),
        "gather": _along_dim(False, RuntimeError),
        "scatter": _along_dim(False, RuntimeError),
        "scatter_add": _along_dim(False, RuntimeError),
        "scatter_reduce": _along_dim(False, RuntimeError),
        "index_add": _along_dim(False, RuntimeError),
        "index_copy": _along_dim(False, IndexError),
        "index_fill": _along_dim(True, IndexError),
        "take": _take,
        "index_put": _index_put,
    }
    for name, check in along.items():
        for owner, called in ((torch, name), (torch.Tensor, name), (torch.Tensor, name + "_")):
            fn = getattr(owner, called, None)
            if fn is not None:
                table[fn] = check
    return table


_CHECKS = _checks()


def checked(func: Any) -> bool:
    """Whether :func:`index_past` checks calls of ``func``.

    Examples
    --------
    >>> checked(torch.gather), checked(torch.add)
    (True, False)
    """
    try:
        return func in _CHECKS
    except TypeError:  # an unhashable callable: none of the ops checked
        return False


def index_past(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    """The :class:`Past` of calling ``func`` (a torch function, a tensor method as ``torch.Tensor.name``, or an
    operator) when an index of known data in its arguments points outside what it reads or writes; None when
    every index is inside, or the call is not one that reads at positions.

    Examples
    --------
    >>> table = torch.empty(16, 4, device="meta")  # no data: torch.index_select on meta would not check
    >>> index_past(torch.index_select, (table, 0, torch.arange(20)), {}).message
    'index 16 is out of bounds for dimension 0 with size 16'
    >>> index_past(torch.Tensor.gather, (table, 1, torch.zeros(2, 4, dtype=torch.long)), {}) is None
    True
    """
    return _CHECKS[func](args, kwargs) if checked(func) else None


def _aten_index(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    x, indices = _argument(args, kwargs, 0, "self"), _argument(args, kwargs, 1, "indices")
    if not isinstance(x, torch.Tensor) or not isinstance(indices, (list, tuple)):
        return None
    return out_of_bounds(tuple(x.shape), tuple(slice(None) if i is None else i for i in indices))  # None: all


def _aten_embedding(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    weight, ids = _argument(args, kwargs, 0, "weight"), _argument(args, kwargs, 1, "indices")
    return ids_past(ids, int(weight.shape[0])) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


_aten = torch.ops.aten
_ATEN_CHECKS: dict[Any, Callable[[Sequence[Any], Mapping[str, Any]], Past | None]] = {
    _aten.embedding.default: _aten_embedding,
    _aten.index_select.default: _along_dim(False, IndexError),
    _aten.gather.default: _along_dim(False, RuntimeError),
    _aten.index.Tensor: _aten_index,
    _aten.index_put.default: _aten_index,
    _aten.index_put_.default: _aten_index,
}


def aten_index_past(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Past | None:
    """:func:`index_past` of an aten op (what a dispatch mode sees: ``F.embedding`` is ``aten.embedding(weight,
    ids)``, ``x[idx]`` is ``aten.index(x, [idx])``): the embedding, ``index_select``, ``gather`` and indexing
    ops; None for any other.

    Examples
    --------
    >>> table = torch.empty(64, 8, device="meta")
    >>> aten_index_past(torch.ops.aten.embedding.default, (table, torch.arange(100)), {}).message
    'index out of range in self'
    >>> aten_index_past(torch.ops.aten.index.Tensor, (table, [None, torch.tensor([7])]), {}) is None
    True
    """
    check = _ATEN_CHECKS.get(func)
    return check(args, kwargs) if check is not None else None
