"""Tensors a fake-tensor step left in the caches of a model's code: forgotten when the step ends.

A model's code may cache what it computes from sizes alone in a
process-wide ``functools.lru_cache``: transformers' BEiT and Data2VecVision
their relative position index (a static method keyed by the window size),
DINOv3 its patch coordinates, the DETR family and Mask2Former their sine
position embeddings (keyed by shape, device and dtype).  Run on fake tensors
(:mod:`torchsurgeon.fakestep`), such a function caches a *fake* tensor, and
every later real forward of any model of that class gets it back: its
outputs become fake tensors with no values, silently.  After a step,
:func:`forget_cached` clears the caches that hold one of the step's tensors
(a cache is a memo: its next call computes the value again, for real).

Only caches reachable from the model's code are looked at (its classes, and
the globals of the Python modules that define them, through static methods
and the closures of decorators); :mod:`torchsurgeon.fakestep` warns about a
tensor left anywhere else.

Examples
--------
>>> import functools, torch
>>> from torch import nn
>>> from torch._subclasses.fake_tensor import FakeTensorMode
>>> class Positions(nn.Module):
...     @staticmethod
...     @functools.lru_cache
...     def index(n):
...         return torch.arange(n)
>>> with FakeTensorMode():
...     fake = Positions.index(4)
>>> forget_cached(Positions(), {id(fake)}, id)
['Positions.index']
>>> type(Positions.index(4)).__name__
'Tensor'
"""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn

__all__ = ("forget_cached",)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in a cached key or result (a tensor, or tensors in tuples, lists and dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list, dict)):
        yield from (t for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor))


def _caches_in(value: Any, depth: int, seen: set[int]) -> Iterator[functools._lru_cache_wrapper[Any]]:
    """The lru caches ``value`` is or wraps: a static or class method, a property, a function's closure (a
    decorator's), a class's attributes; ``depth`` levels of functions and classes down."""
    if id(value) in seen:
        return
    seen.add(id(value))
    if type(value) is functools._lru_cache_wrapper:
        yield value
    elif isinstance(value, (staticmethod, classmethod)):
        yield from _caches_in(value.__func__, depth, seen)
    elif isinstance(value, property):
        yield from _caches_in(value.fget, depth, seen)
    elif isinstance(value, types.FunctionType) and depth:
        for cell in value.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell
                yield from _caches_in(cell.cell_contents, depth - 1, seen)
    elif isinstance(value, type) and depth:
        for attribute in list(vars(value).values()):
            yield from _caches_in(attribute, depth - 1, seen)


def _model_caches(model: nn.Module) -> Iterator[functools._lru_cache_wrapper[Any]]:
    """The lru caches of the model's classes and of the globals of the Python modules that define them."""
    seen: set[int] = set()
    modules: set[str] = set()
    for cls in dict.fromkeys(c for m in model.modules() for c in type(m).__mro__):
        yield from _caches_in(cls, 2, seen)
        python_module = sys.modules.get(cls.__module__)
        if python_module is not None and cls.__module__ not in modules:
            modules.add(cls.__module__)
            for value in list(vars(python_module).values()):
                yield from _caches_in(value, 2, seen)


def forget_cached(model: nn.Module, leaked: set[Any], key: Callable[[torch.Tensor], Any]) -> list[str]:
    """Clear every ``functools.lru_cache`` of ``model``'s code that holds a tensor whose ``key(tensor)`` is in
    ``leaked``.

    Parameters
    ----------
    model : nn.Module
        Its classes, and the Python modules that define them, are searched.
    leaked : set
        Keys (of :mod:`torchsurgeon.fakestep`'s storages) of tensors a step
        made that are still alive after it.
    key : callable
        A tensor's key, comparable with ``leaked``.

    Returns
    -------
    list of str
        The qualified names of the caches cleared.
    """
    if not leaked:
        return []
    cleared = []
    for cache in _model_caches(model):
        # a C lru_cache's referents are its cached keys and results
        if any(key(t) in leaked for held in gc.get_referents(cache) for t in _tensors(held)):
            cache.cache_clear()
            cleared.append(getattr(cache, "__qualname__", repr(cache)))
    return cleared
