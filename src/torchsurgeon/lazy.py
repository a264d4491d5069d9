"""Lazy layers (``nn.LazyLinear``, ``nn.LazyConv2d`` …): their parameters are made by the first forward.

Before it, they are ``UninitializedParameter`` s with no shape, which cannot
be counted or copied.  :func:`materialized` runs that first forward on a
``meta`` copy at the input given, so the copy holds the parameters the model
will have once it has seen such an input; the user's model stays lazy.
When a layer that is not lazy refuses the input (a convolution made for 3
channels, given 1), the lazy layers learn their sizes from a forward with
that layer resized to fit, as shape propagation goes past it; the copy keeps
the layer as it is, so the analysis names it, with its fix.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

from .arguments import ExampleInputs
from .errors import ShapeError
from .frontend import bind_inputs
from .resize import resized_copy
from .rules.registry import Call, module_rule
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
        fitted = _made_past_refusals(model, dict(example), example.paths)
        if fitted is not None:
            return fitted
        names = ", ".join(lazy_layers(model)[:4])
        raise ShapeError(
            f"{type(model).__name__}: the lazy layers ({names}) make their parameters in the first forward, which "
            f"fails at input {input!r} ({str(exc).splitlines()[0][:200]}) — give an input the model accepts"
        ) from exc
    return copy  # its lazy layers removed the hooks that made their parameters, as in a real first forward


def _made_past_refusals(model: nn.Module, inputs: dict[str, Any], paths: Any) -> nn.Module | None:
    """A ``meta`` copy of ``model`` whose lazy layers are made as by a first forward in which every layer that
    refused its input was resized to fit it (its rule names the mismatch); the refusing layers stay as they are.
    None when a refusal is no mismatch a layer can be resized for (the input's rank, the model's own code)."""
    work = meta_copy(model)
    for _ in range(sum(1 for _ in model.modules())):  # each round resizes one more layer
        entered: list[tuple[str, nn.Module, tuple[Any, ...]]] = []  # the layers running now, innermost last
        handles = []
        for name, m in work.named_modules():
            if not isinstance(m, LazyModuleMixin):  # a lazy layer is not the one refusing: it takes any size
                handles += [
                    m.register_forward_pre_hook(functools.partial(_enter, entered, name)),
                    m.register_forward_hook(lambda *_, entered=entered: entered.pop() and None),
                ]
        try:
            args, kwargs = bind_inputs(work, inputs, paths)
            with torch.no_grad():
                work(*args, **kwargs)
        except Exception:
            if not entered or (resized := _resized_to_fit(*entered[-1])) is None:
                return None
            work.set_submodule(entered[-1][0], resized)
            continue
        finally:
            for handle in handles:
                handle.remove()
        made = meta_copy(model)
        for name in lazy_layers(model):
            made.set_submodule(name, work.get_submodule(name))
        return made
    return None


def _enter(entered: list[tuple[str, nn.Module, tuple[Any, ...]]], name: str, module: nn.Module, args: Any) -> None:
    entered.append((name, module, args))


def _resized_to_fit(name: str, module: nn.Module, args: tuple[Any, ...]) -> nn.Module | None:
    """``module`` resized to the input ``args`` it refused, when its rule names one mismatch; else None."""
    ruled = module_rule(type(module))
    if not name or ruled is None or ruled[0].shape is None:
        return None
    call = Call(name, type(module).__name__)
    try:
        ruled[0].shape(module, args, {}, call)
    except Exception:  # the rule does not apply to these arguments either
        return None
    return resized_copy(module, call.findings[0]) if len(call.findings) == 1 else None
