"""Per-sample shapes as users write them in contracts and lockfiles: check, normalise, add the batch.

A shape spec is a tuple of ints (``(3, 224, 224)``), nested tuples for several
inputs or outputs, or a mapping of names to shapes; lists are accepted too
(TOML and JSON have no tuples).  :mod:`torchsurgeon.contracts` and
:mod:`torchsurgeon.lockfile` both read them through this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InputError

__all__ = ("plain", "shape_spec", "with_batch")


def shape_spec(value: Any, key: str, minimum: int) -> Any:
    """Normalise a shape, nested shapes or a mapping of shapes to tuples and dicts.

    Parameters
    ----------
    value : shape, nested shapes, or mapping
        What the user wrote, batch excluded.
    key : str
        The field it was given as (``input``, ``output``), named in messages.
    minimum : int
        Smallest dimension allowed: 1 for inputs, 0 for outputs.

    Raises
    ------
    InputError
        For an empty or non-shape value, or a dimension that is not a whole
        number of at least ``minimum``; the message names ``key`` and the dimension.

    Examples
    --------
    >>> shape_spec([1, 224, 224], "input", 1), shape_spec({"image": [3, 8, 8]}, "input", 1)
    ((1, 224, 224), {'image': (3, 8, 8)})
    >>> shape_spec((3, 0), "input", 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: input=(3, 0): dimension 1 is 0 — every dimension must be positive, ...
    """
    example = "e.g. (1, 224, 224)" if key == "input" else "e.g. (10,)"
    if isinstance(value, Mapping):
        if not value:
            raise InputError(f"{key}={value!r} is empty — give at least one shape, {example}")
        return {str(k): shape_spec(v, f"{key}[{k!r}]", minimum) for k, v in value.items()}
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InputError(f"{key}={value!r} is not a shape — give a tuple of ints, {example} (batch excluded)")
    items = list(value)
    if not items:
        raise InputError(f"{key}={value!r} is empty — give the per-sample shape, {example}")
    if all(isinstance(d, Sequence) and not isinstance(d, (str, bytes)) for d in items):
        return tuple(shape_spec(d, f"{key}[{i}]", minimum) for i, d in enumerate(items))
    for i, d in enumerate(items):
        if isinstance(d, bool) or not isinstance(d, int):
            raise InputError(f"{key}={value!r}: dimension {i} is {d!r} — dimensions are whole numbers, {example}")
        if d < minimum:
            bound = "positive" if minimum > 0 else "non-negative"
            raise InputError(f"{key}={value!r}: dimension {i} is {d} — every dimension must be {bound}, {example}")
    return tuple(items)


def plain(value: Any) -> Any:
    """Shapes as plain tuples (lists too), mappings as dicts: comparable whatever they were read from.

    Examples
    --------
    >>> plain([1, 10]) == plain((1, 10)), plain({"logits": [1, 10]})
    (True, {'logits': (1, 10)})
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(plain(v) for v in value)
    return value


def with_batch(shape: Any, batch: int) -> Any:
    """A normalised per-sample shape spec (:func:`shape_spec`) with ``batch`` prepended to every shape.

    Examples
    --------
    >>> with_batch((3, 8, 8), 4), with_batch(((10,), (5,)), 1), with_batch({"logits": (2,)}, 1)
    ((4, 3, 8, 8), ((1, 10), (1, 5)), {'logits': (1, 2)})
    """
    if isinstance(shape, Mapping):
        return {k: with_batch(v, batch) for k, v in shape.items()}
    if shape and all(isinstance(d, int) for d in shape):
        return (batch, *shape)
    return tuple(with_batch(s, batch) for s in shape)
