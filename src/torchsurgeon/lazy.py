"""Lazy layers (``nn.LazyLinear``, ``nn.LazyConv2d`` …): their parameters are made by the first forward.

Before it, they are ``UninitializedParameter`` s with no shape, which cannot
be counted or copied.  :func:`materialized` runs that first forward on a
``meta`` copy at the input given, so the copy holds the parameters the model
will have once it has seen such an input; the user's model stays lazy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

from .arguments import ExampleInputs
from .errors import ShapeError
from .frontend import bind_inputs
from .shapes import meta_copy
from .shapespec import InputSpec

__all__ = ("lazy_layers", "materialized")


def lazy_layers(model: nn.Module) -> tuple[str, ...]:
    """The qualified names of the modules holding parameters or buffers the first forward has not made yet.

    Examples
    --------
    >>> lazy_layers(nn.Sequential(nn.Linear(2, 3), nn.LazyLinear(4)))
    ('1',)
    """
    if not any(isinstance(m, LazyModuleMixin) for m in model.modules()):  # most models: one cheap walk
        return ()
    return tuple(
        name
        for name, m in model.named_modules()
        if any(isinstance(t, UninitializedTensorMixin) for t in (*m._parameters.values(), *m._buffers.values()))
    )


def materialized(model: nn.Module, input: InputSpec, batch: int) -> nn.Module:
    """A ``meta`` copy of ``model`` whose lazy layers made their parameters in one forward at ``input``.

    Raises
    ------
    ShapeError
        When that forward fails: the lazy layers cannot learn their sizes from this input.

    Examples
    --------
    >>> net = nn.Sequential(nn.LazyConv2d(8, 3), nn.Flatten(), nn.LazyLinear(10))
    >>> copy = materialized(net, (3, 16, 16), batch=1)
    >>> sum(p.numel() for p in copy.parameters()), lazy_layers(net)
    (15914, ('0', '2'))
    """
    copy = meta_copy(model)
    example = ExampleInputs(model, input, batch)
    args, kwargs = bind_inputs(copy, dict(example), example.paths)
    try:
        with torch.no_grad():
            copy(*args, **kwargs)
    except Exception as exc:
        names = ", ".join(lazy_layers(model)[:4])
        raise ShapeError(
            f"{type(model).__name__}: the lazy layers ({names}) make their parameters in the first forward, which "
            f"fails at input {input!r} ({str(exc).splitlines()[0][:200]}) — give an input the model accepts"
        ) from exc
    return copy  # its lazy layers removed the hooks that made their parameters, as in a real first forward
