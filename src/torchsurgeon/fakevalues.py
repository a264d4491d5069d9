"""Values a fake-tensor step may assume: random draws drop nothing, activations are finite.

A fake tensor has no values, so Python that reads one (``bool(t)``,
``t.item()``) cannot run in :mod:`torchsurgeon.fakestep`'s simulated step.
Two kinds of such reads do not depend on the data, and a memory plan can
answer them:

* **Random draws.**  LayerDrop (``if torch.rand([]) < layerdrop: skip the
  layer``, in transformers' Wav2Vec2 and HuBERT) and stochastic depth
  written as a branch.  A draw is assumed to be just under 1 and a Bernoulli
  draw to be 1 (kept): nothing is skipped or dropped, the step that needs
  the most memory.
* **Finiteness checks.**  ``if not torch.isfinite(x).all(): clamp`` (DETR's
  encoder): ``isfinite`` is assumed True everywhere, ``isnan`` and ``isinf``
  False, the path of a healthy step.
* **Masks.**  An op whose output size depends on a mask's values (``nonzero``,
  ``masked_select``, indexing with a boolean mask: Wav2Vec2's SpecAugment in
  its backward) gets the size of an all-True mask, the most memory
  (:func:`masked_upper_bound`).

:class:`AssumedValues` follows, op by op, the tensors whose every element
has one known value (these, constants made by ``full``/``ones``/``zeros``,
and what point-wise ops, views, conversions and ``all``/``any``/``amax``/
``amin`` make of them) and answers a value read of such a tensor.  Any other
read still fails, naming the module.

:class:`KnownIndices` follows the small tensors made from sizes and
constants (``torch.arange`` positions, a ``torch.ones`` mask and its
``cumsum``), their data computed on the CPU beside them, so that an
embedding of positions past the end of its table raises ``IndexError`` as a
real step does (fake tensors' kernels do not look at indices).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import unset_fake_temporarily

from .bounds import aten_index_past
from .knowndata import DATA_LIMIT

__all__ = ("NO_VALUE", "AssumedValues", "KnownIndices", "masked_upper_bound")

NO_VALUE = object()
_aten = torch.ops.aten
_JUST_UNDER_ONE = 1.0 - 2.0**-24
# op -> the value every element of its output is assumed to have, whatever its inputs
_ASSUMED: dict[Any, Any] = {
    _aten.rand.default: _JUST_UNDER_ONE,
    _aten.rand_like.default: _JUST_UNDER_ONE,
    _aten.uniform_.default: _JUST_UNDER_ONE,  # draws in [from, to): just under ``to`` (see ``_uniform``)
    _aten.bernoulli.default: 1.0,
    _aten.bernoulli.p: 1.0,
    _aten.bernoulli_.float: 1.0,
    _aten.bernoulli_.Tensor: 1.0,
    _aten.isfinite.default: True,
    _aten.isnan.default: False,
    _aten.isinf.default: False,
    _aten.isposinf.default: False,
    _aten.isneginf.default: False,
}
_FILL_ARGUMENT = {  # op -> where its fill value is in the arguments
    _aten.full.default: 1,
    _aten.full_like.default: 1,
    _aten.fill_.Scalar: 1,
    _aten.scalar_tensor.default: 0,
}
_FILLED = {_aten.ones.default: 1, _aten.ones_like.default: 1, _aten.zeros.default: 0, _aten.zeros_like.default: 0}
_KEEP = frozenset(  # the value of each element stays (views, copies, conversions, reductions of one value)
    {
        _aten.alias.default, _aten.detach.default, _aten.clone.default, _aten._to_copy.default,
        _aten.view.default, _aten._unsafe_view.default, _aten.reshape.default, _aten.expand.default,
        _aten.squeeze.default, _aten.squeeze.dim, _aten.squeeze.dims, _aten.unsqueeze.default,
        _aten.t.default, _aten.permute.default, _aten.transpose.int, _aten.select.int, _aten.slice.Tensor,
        _aten.lift_fresh.default, _aten.lift_fresh_copy.default,
        _aten.amax.default, _aten.amin.default, _aten.max.default, _aten.min.default,
    }
)  # fmt: skip
_TRUTH = frozenset({_aten.all.default, _aten.all.dim, _aten.any.default, _aten.any.dim})


class AssumedValues:
    """The tensors of a fake step whose every element has one assumed value (module docstring).

    Examples
    --------
    >>> import torch
    >>> from torch._subclasses.fake_tensor import FakeTensorMode
    >>> from torch.utils._python_dispatch import TorchDispatchMode
    >>> class Mode(TorchDispatchMode):
    ...     values = AssumedValues()
    ...     def __torch_dispatch__(self, func, types, args=(), kwargs=None):
    ...         read = self.values.read(func, args)
    ...         if read is not NO_VALUE:
    ...             return read
    ...         out = func(*args, **(kwargs or {}))
    ...         self.values.record(func, args, kwargs or {}, out)
    ...         return out
    >>> with FakeTensorMode(), Mode():
    ...     skip = torch.rand([]) < 0.1  # LayerDrop: is this layer skipped?
    ...     finite = torch.isfinite(torch.empty(4, 8)).all()
    ...     print(bool(skip), bool(finite))
    False True
    """

    def __init__(self) -> None:
        self._values: dict[int, Any] = {}  # id of a live tensor -> its assumed value (tensors compare by value)

    def _get(self, t: torch.Tensor) -> Any:
        return self._values.get(id(t), NO_VALUE)

    def _set(self, t: torch.Tensor, value: Any) -> None:
        if id(t) not in self._values:
            weakref.finalize(t, self._values.pop, id(t), None)
        self._values[id(t)] = value

    def read(self, func: Any, args: tuple[Any, ...]) -> Any:
        """A value read (``item``, ``bool``) of a tensor with an assumed value: that value; else NO_VALUE."""
        if func is not _aten._local_scalar_dense.default or not args or not isinstance(args[0], torch.Tensor):
            return NO_VALUE
        value = self._get(args[0])
        if value is NO_VALUE:
            return NO_VALUE
        dtype = args[0].dtype
        return bool(value) if dtype == torch.bool else float(value) if dtype.is_floating_point else int(value)

    def record(self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> None:
        """Remember the assumed value of ``out`` (one tensor) when ``func`` gives it one."""
        if not isinstance(out, torch.Tensor):
            return
        value = self._value_of(func, args, kwargs, out)
        if value is not NO_VALUE:
            self._set(out, value)

    def _value_of(self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: torch.Tensor) -> Any:
        if func in _ASSUMED:
            return _uniform(args, kwargs) if func is _aten.uniform_.default else _ASSUMED[func]
        if func in _FILLED:
            return _FILLED[func]
        if func in _FILL_ARGUMENT:
            at = _FILL_ARGUMENT[func]
            return args[at] if len(args) > at and isinstance(args[at], (int, float, bool)) else NO_VALUE
        if not self._values:  # nothing has an assumed value yet (most of a step): only the finiteness checks apply
            return _finite(func, args)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors:
            return NO_VALUE
        known = [self._get(t) for t in tensors]
        if any(v is NO_VALUE for v in known):  # unknown values, assumed finite (isfinite, isnan, isinf)
            return _finite(func, args)
        if func in _KEEP:
            return known[0]
        if func in _TRUTH:
            return bool(known[0])
        if torch.Tag.pointwise in getattr(func, "tags", ()):  # on one element of each, as real tensors
            try:
                with unset_fake_temporarily():
                    real = [
                        torch.tensor(self._get(a), dtype=a.dtype) if isinstance(a, torch.Tensor) else a for a in args
                    ]
                    return func(*real, **kwargs).item()
            except Exception:  # not computable on scalars (an out= argument, a device): no assumed value
                return NO_VALUE
        return NO_VALUE


_SAME = {_aten.eq.Tensor: True, _aten.ne.Tensor: False}  # x == x, x != x: no NaN
_WITH_INF = {_aten.eq.Scalar: False, _aten.ne.Scalar: True}  # x == inf, x != inf: no infinity


def _finite(func: Any, args: tuple[Any, ...]) -> Any:
    """What ``isfinite``/``isnan``/``isinf`` (decomposed into these comparisons) give on finite values."""
    if func in _SAME and len(args) == 2 and args[0] is args[1]:
        return _SAME[func]
    if func in _WITH_INF and len(args) == 2 and isinstance(args[1], float) and abs(args[1]) == float("inf"):
        return _WITH_INF[func]
    return NO_VALUE


def _uniform(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> float:
    low = kwargs.get("from", args[1] if len(args) > 1 else 0.0)
    high = kwargs.get("to", args[2] if len(args) > 2 else 1.0)
    return float(low) + (float(high) - float(low)) * _JUST_UNDER_ONE


def masked_upper_bound(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The output of a mask-sized op as if every mask element were True (fake tensors cannot size it); else NO_VALUE.

    Examples
    --------
    >>> import torch
    >>> from torch._subclasses.fake_tensor import FakeTensorMode
    >>> with FakeTensorMode():
    ...     x, mask = torch.empty(2, 5, 3), torch.empty(2, 5, dtype=torch.bool)
    ...     print(masked_upper_bound(torch.ops.aten.index.Tensor, (x, [mask]), {}).shape)
    torch.Size([10, 3])
    """
    if func is _aten.nonzero.default and args and isinstance(args[0], torch.Tensor):
        x = args[0]
        return torch.empty((x.numel(), x.dim()), dtype=torch.long, device=x.device)
    if func is _aten.masked_select.default and len(args) == 2:
        x, mask = args
        size = torch.broadcast_shapes(x.shape, mask.shape).numel()  # type: ignore[no-untyped-call]
        return torch.empty((size,), dtype=x.dtype, device=x.device)
    if func is _aten.index.Tensor and len(args) == 2 and isinstance(args[1], (list, tuple)):
        x, indices = args
        given = [(i, t) for i, t in enumerate(indices) if t is not None]
        if len(given) == 1 and given[0][1].dtype in (torch.bool, torch.uint8):
            at, mask = given[0]
            shape = (*x.shape[:at], mask.numel(), *x.shape[at + mask.dim() :])
            return torch.empty(shape, dtype=x.dtype, device=x.device)
    return NO_VALUE


_SEEDS = frozenset(  # factories of data from sizes and constants alone
    {
        _aten.arange.default, _aten.arange.start, _aten.arange.start_step, _aten.ones.default, _aten.zeros.default,
        _aten.full.default, _aten.scalar_tensor.default, _aten.eye.default,
    }
)  # fmt: skip


class KnownIndices:
    """The tensors of a fake step whose data is known, their data on the CPU (module docstring).

    :meth:`check` raises torch's error for an op reading at known positions
    past the end of a tensor (:func:`torchsurgeon.bounds.aten_index_past`);
    an op that writes unknown data into a known tensor forgets it, and the
    tensors sharing its storage.

    Examples
    --------
    >>> import torch
    >>> from torch._subclasses.fake_tensor import FakeTensorMode
    >>> from torch.utils._python_dispatch import TorchDispatchMode
    >>> class Mode(TorchDispatchMode):
    ...     known = KnownIndices()
    ...     def __torch_dispatch__(self, func, types, args=(), kwargs=None):
    ...         self.known.check(func, args, kwargs or {})
    ...         out = func(*args, **(kwargs or {}))
    ...         self.known.record(func, args, kwargs or {}, out)
    ...         return out
    >>> with FakeTensorMode(), Mode():  # 100 positions in a table of 64 (GPT-2 built for 64 tokens)
    ...     torch.nn.functional.embedding(torch.arange(100), torch.empty(64, 8))
    Traceback (most recent call last):
    ...
    IndexError: index out of range in self
    """

    def __init__(self) -> None:
        self._data: dict[int, torch.Tensor] = {}  # id of a live fake tensor -> its data on the CPU

    def _set(self, t: torch.Tensor, data: torch.Tensor) -> None:
        if id(t) not in self._data:
            weakref.finalize(t, self._data.pop, id(t), None)
        self._data[id(t)] = data

    def _known(self, value: Any) -> Any:
        """``value`` (arguments, nested in lists and tuples) with each tensor's data in its place; None when a tensor
        in it has no known data."""
        if isinstance(value, torch.Tensor):
            return self._data.get(id(value))
        if type(value) in (list, tuple):
            items = [self._known(v) for v in value]
            return None if any(i is None and v is not None for i, v in zip(items, value)) else type(value)(items)
        return value

    def check(self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise as a real step does when ``func`` reads or writes at known positions outside a tensor."""
        if not self._data:
            return
        indexed = [self._data.get(id(a), a) if isinstance(a, torch.Tensor) else a for a in args]
        if len(args) > 1 and isinstance(args[1], (list, tuple)):  # aten.index: a list of index tensors
            indexed[1] = [self._data.get(id(a), a) if isinstance(a, torch.Tensor) else a for a in args[1]]
        with unset_fake_temporarily():
            past = aten_index_past(func, indexed, kwargs)
        if past is not None:
            raise past.error(past.message)

    def record(self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> None:
        """Compute the data of ``out`` on the CPU when ``func`` makes it from sizes, constants and known data."""
        if not isinstance(out, torch.Tensor) or (func not in _SEEDS and not self._data):
            return
        real = self._known(args) if out.numel() <= DATA_LIMIT else None
        data = None
        if real is not None and (func in _SEEDS or any(isinstance(a, torch.Tensor) for a in pytree.tree_leaves(args))):
            try:
                with unset_fake_temporarily():
                    data = func(*real, **kwargs)
            except Exception:  # an op that does not run on the CPU copies: no data known
                data = None
        if isinstance(data, torch.Tensor) and data.shape == out.shape:
            self._set(out, data)
        elif id(out) in self._data:  # unknown data written into a known tensor (in place)
            self._forget(out)

    def _forget(self, t: torch.Tensor) -> None:
        """Forget ``t``'s data and that of every tensor sharing its storage on the CPU (its views)."""
        storage = self._data[id(t)].untyped_storage().data_ptr()
        for key in [k for k, d in self._data.items() if d.untyped_storage().data_ptr() == storage]:
            del self._data[key]
