"""Slices past the end of a model's own tensor, which Python clamps: why an input too long for its model fails far
from where it was cut.

BERT's embeddings read ``self.position_ids[:, :seq_length]`` and
``self.token_type_ids[:, :seq_length]``, buffers of ``max_position_embeddings``
entries.  Given more tokens, the slice silently gives fewer, and the op that
fails is a later ``expand`` or ``add``, whose own message (*the expanded size of
the tensor (72) must match the existing size (64)*) does not say what to do.
:func:`clamped_slice_hint` finds such a slice among what a failing node reads.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx

__all__ = ("clamped_slice_hint",)

_LOOK_BACK = 64
"""At most this many nodes before the failing one are looked at."""


def _stop(value: Any, scalars: Mapping[str, Any]) -> int | None:
    """A slice bound as a number: an int, or a node standing for a size (its number in ``scalars``)."""
    if isinstance(value, torch.fx.Node):
        value = scalars.get(value.name)
    return value if type(value) is int else None


def _past_the_end(node: torch.fx.Node, tensor: Any, scalars: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    """(dim, start, stop, size) of the first slice of ``tensor[index]`` that asks for more than ``tensor`` holds."""
    index = node.args[1] if len(node.args) > 1 else None
    parts = index if isinstance(index, tuple) else (index,)
    if not isinstance(tensor, torch.Tensor) or Ellipsis in parts:
        return None
    dim = 0
    for part in parts:
        if part is None:  # a new axis: no dimension of the tensor
            continue
        if isinstance(part, slice) and dim < tensor.dim() and part.step in (None, 1):
            start, stop = _stop(part.start, scalars), _stop(part.stop, scalars)
            size = tensor.shape[dim]
            if stop is not None and stop > size and (start or 0) >= 0:
                return dim, start or 0, stop, size
        dim += 1
    return None


def clamped_slice_hint(node: torch.fx.Node, fetch_attr: Callable[[str], Any], scalars: Mapping[str, Any]) -> str:
    """A hint for a node that failed: the model tensor sliced past its end that it reads, if any, else ``""``.

    Parameters
    ----------
    node : torch.fx.Node
        The node whose op failed.
    fetch_attr : callable
        The model's tensor for a ``get_attr`` target.
    scalars : mapping of str to int
        The Python numbers (sizes) the propagation computed, by node name.

    Examples
    --------
    >>> g = torch.fx.Graph()  # x + ids[:, :n], where the model's ids hold 4 and n is 6
    >>> x, n, ids = g.placeholder("x"), g.placeholder("n"), g.get_attr("ids")
    >>> cut = g.call_function(operator.getitem, (ids, (slice(None), slice(None, n))))
    >>> add = g.call_function(operator.add, (x, cut))
    >>> hint = clamped_slice_hint(add, {"ids": torch.zeros(1, 4)}.get, {"n": 6})
    >>> hint.split(" (Python")[0], "give at most 4 there" in hint
    (' — it reads ids[:, :6], which holds only 4 along dim 1', True)
    """
    seen: set[torch.fx.Node] = set()
    todo = list(node.all_input_nodes)
    while todo and len(seen) < _LOOK_BACK:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.add(current)
        source = current.args[0] if current.args else None
        if (
            current.op == "call_function"
            and current.target is operator.getitem
            and isinstance(source, torch.fx.Node)
            and source.op == "get_attr"
        ):
            found = _past_the_end(current, fetch_attr(str(source.target)), scalars)
            if found is not None:
                dim, start, stop, size = found
                where = ", ".join([":"] * dim + [f"{start or ''}:{stop}"])
                return (
                    f" — it reads {source.target}[{where}], which holds only {size} along dim {dim} (Python clamps a "
                    f"slice past the end): the input is longer than the model was built for; give at most {size} "
                    "there, or build the model for more (transformers: max_position_embeddings)"
                )
        todo.extend(current.all_input_nodes)
    return ""
