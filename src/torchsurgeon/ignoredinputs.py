"""Inputs ``forward`` would silently ignore: one rule for every entry point.

``model(x, mask=m)`` with ``forward(self, x, **kwargs)`` hands ``mask`` to
``**kwargs``, and ``model(batch)`` hands a dict whose entries ``forward``
reads by key: no Python error tells the user that ``forward`` never looked at
one of them.  An analysis of such an input would answer for a call that
differs from the one the user means, so it is refused, naming the inputs and
the input without them, which runs the same (the forward never read them).

An input is *ignored* when no op of ``forward`` reads it and it is

* a name ``forward`` takes through its ``**kwargs`` (a name that is no
  argument of ``forward`` at all is refused earlier, as a typo:
  :func:`~torchsurgeon.arguments.check_input_names`), or
* an entry of a dict given to one argument: through ``**kwargs``, or to a
  named argument of which another entry is read (a named argument never read
  at all is the model's own business, as ``forward(x, mask=None)`` not reading
  ``mask`` is; the input without it would lack an argument the call needs).

"No op reads it" is found by the trace (:func:`unread_inputs`: no node uses
the input) for :func:`~torchsurgeon.paramcount`, shape propagation and every
surgery, and by the fake training step for
:func:`~torchsurgeon.memory_plan` (which runs the model in training mode:
a ``mask`` read only when ``self.training`` is read there, and ignored by
``paramcount`` of the model in eval mode, as a real forward in that mode ignores it).  An input ``forward``
returns as it is (``return {"out": y, "mask": kwargs["mask"]}``) is used by both: the trace's output reads it,
and the step's output holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.fx
from torch import nn

from .arguments import ExampleInputs, check_input, forward_parameters, own_arguments, placeholders, tensor_inputs
from .errors import InputError, TraceError
from .shapespec import input_args, input_name, normalize_input, shown_input
from .trace import trace

__all__ = ("check_input_traced", "check_inputs_read", "ignored_inputs", "unread_inputs")


def unread_inputs(graph_module: torch.fx.GraphModule) -> list[str]:
    """The inputs of a traced graph that no node uses, by input name.

    Examples
    --------
    >>> from torch import nn
    >>> class Net(nn.Linear):
    ...     def forward(self, input, mask=None):
    ...         return super().forward(input)
    >>> unread_inputs(torch.fx.symbolic_trace(Net(2, 2)))
    ['mask']
    """
    return [name for name, node in placeholders(graph_module).items() if not node.users]


def ignored_inputs(model: nn.Module, spec: Any, unread: Iterable[str]) -> list[tuple[str, str | None]]:
    """The inputs of ``spec`` that ``forward`` would silently ignore (see the module's docstring), as
    ``(argument, key)``: ``key`` None for an input given by name, else the key of the dict given to ``argument``.
    ``unread`` are the input names (:func:`~torchsurgeon.shapespec.input_name` for a dict's tensors) no op read.

    Examples
    --------
    >>> from torch import nn
    >>> class Net(nn.Linear):
    ...     def forward(self, input, batch=None, **kwargs):
    ...         return super().forward(input) * batch["scale"]
    >>> spec = {"input": (2,), "batch": {"scale": (2,), "extra": (3,)}, "mask": (2,)}
    >>> ignored_inputs(Net(2, 2), spec, ["batch_extra", "mask"])
    [('batch', 'extra'), ('mask', None)]
    """
    if not isinstance(spec, Mapping):
        return []
    own = set(own_arguments(forward_parameters(model)))
    unread = set(unread)
    found: list[tuple[str, str | None]] = []
    for name, value in spec.items():
        name = str(name)
        if not isinstance(value, Mapping):
            if name not in own and name in unread:
                found.append((name, None))
            continue
        keys = [str(key) for key in value]
        missed = [key for key in keys if input_name(name, key) in unread]
        if missed and (name not in own or len(missed) < len(keys)):
            found.extend((name, key) for key in missed)
    return found


def check_inputs_read(model: nn.Module, spec: Any, unread: Iterable[str], *, training: bool | None = None) -> None:
    """Refuse the inputs of ``spec`` that ``forward`` would silently ignore (:func:`ignored_inputs`), naming them and
    the input without them.  ``training``: the mode the forward that found ``unread`` ran in (default: the model's).

    Raises
    ------
    InputError
        Naming the inputs never read and ``input=`` without them.

    Examples
    --------
    >>> from torch import nn
    >>> class Net(nn.Linear):
    ...     def forward(self, input, **kwargs):
    ...         return super().forward(input)
    >>> check_inputs_read(Net(2, 2), {"input": (2,), "nope": (3,)}, ["nope"])
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: input 'nope' is never read: Net.forward takes it through **kwargs and no op \
reads it, so it would be silently ignored — leave it out: input={'input': (2,)} (CLI: --input input=2)
    """
    ignored = ignored_inputs(model, spec, unread)
    if not ignored:
        return
    assert isinstance(spec, Mapping)  # ignored_inputs finds none in anything else
    names = ", ".join(repr(argument) if key is None else f"{argument!r}[{key!r}]" for argument, key in ignored)
    several = len(ignored) > 1
    entries = [key is not None for _, key in ignored]
    how = (
        f"takes {'them' if several else 'it'} through **kwargs"
        if not any(entries)
        else "reads other entries of the dict, but"
        if all(entries)
        else "takes them"
    )
    how += "" if how.endswith("but") else " and"
    mode = "" if (model.training if training is None else training) else " in eval mode"
    raise InputError(
        f"input{'s' if several else ''} {names} {'are' if several else 'is'} never read: "
        f"{type(model).__name__}.forward {how} no op reads {'them' if several else 'it'}{mode}, so "
        f"{'they' if several else 'it'} would be silently ignored — leave {'them' if several else 'it'} out: "
        f"{_without(spec, ignored)}"
    )


def _without(spec: Mapping[Any, Any], ignored: list[tuple[str, str | None]]) -> str:
    """``input=`` without the ``ignored`` inputs, as Python (shapes as written, tensors as ``input[...]``), and as
    the command line writes it when it can."""
    drop = set(ignored)
    kept: dict[str, Any] = {}
    for name, value in spec.items():
        name = str(name)
        if isinstance(value, Mapping):
            entries = {str(k): v for k, v in value.items() if (name, str(k)) not in drop}
            if entries:
                kept[name] = entries
        elif (name, None) not in drop:
            kept[name] = value
    text = ", ".join(f"{name!r}: {_shown(value, f'input[{name!r}]')}" for name, value in kept.items())
    cli = input_args({k: tuple(v) if isinstance(v, list) else v for k, v in kept.items()})
    return f"input={{{text}}}" + (f" (CLI: {' '.join(f'--input {t}' for t in cli)})" if cli else "")


def _shown(value: Any, path: str) -> str:
    """An input's value as Python (:func:`~torchsurgeon.shapespec.shown_input`), a dict entry by entry."""
    if isinstance(value, dict):
        entries = (f"{k!r}: {_shown(v, path + f'[{k!r}]')}" for k, v in value.items())
        return f"{{{', '.join(entries)}}}"
    return shown_input(value, path)


def check_input_traced(model: nn.Module, spec: Any) -> dict[str, Any]:
    """:func:`~torchsurgeon.arguments.check_input`, and for a name ``forward`` would take through its ``**kwargs``
    or an entry of a dict, whether an op of the trace reads it: one forward would silently ignore is refused as
    :func:`torchsurgeon.paramcount` refuses it (:func:`check_inputs_read`).  A model
    that cannot be traced is left to the caller.  Returns the spec normalised by input name, as
    :func:`~torchsurgeon.arguments.check_input` does.

    Raises
    ------
    InputError
        Naming the inputs never read and the input without them.

    Examples
    --------
    >>> class Net(nn.Linear):
    ...     def forward(self, input, **kwargs):
    ...         return super().forward(input)
    >>> check_input_traced(Net(2, 2), {"input": (2,), "nope": (3,)})
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: input 'nope' is never read: Net.forward takes it through **kwargs and no op \
reads it, so it would be silently ignored — leave it out: input={'input': (2,)} (CLI: --input input=2)
    """
    checked = check_input(model, spec)
    own = set(own_arguments(forward_parameters(model)))
    if not isinstance(spec, Mapping) or all(str(k) in own and not isinstance(v, Mapping) for k, v in spec.items()):
        return checked
    try:
        traced = trace(model, inputs=tensor_inputs(spec), example_inputs=ExampleInputs(model, spec, 1))
    except TraceError:
        return checked
    found = normalize_input(spec, list(placeholders(traced.graph_module)))
    check_inputs_read(model, spec, unread_inputs(traced.graph_module))
    return found
