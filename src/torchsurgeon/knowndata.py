"""The values a trace knows at its input: a model's scalar settings, and small tensors of known data.

A trace answers Python's questions about a proxy from its value on ``meta``
(:class:`torchsurgeon.frontend.MetaValues`), which has shapes but no data.
Some data is known all the same, and a real forward decides by it:

* a model's 0-dim integer or bool buffers are settings, not data
  (:func:`~torchsurgeon.copies.meta_like` keeps their values): transformers'
  Encodec computes its paddings from its ``stride`` buffers;
* a tensor made from sizes and constants (:data:`DATA_FACTORIES`):
  transformers builds ``torch.ones(batch, length)`` as the attention mask of
  an input given without one, and skips the mask when it is all ones.

Such values are computed on the CPU (small ones only), and Python may read
them (:func:`settled`); anything random, uninitialised or computed by a
leaf module stays data-dependent.  They never meet a ``meta`` tensor with
their data: an op mixing them with ``meta`` tensors gets ``meta`` stand-ins
(:func:`on_one_device`), as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ("DATA_FACTORIES", "DATA_LIMIT", "from_known_data", "off_meta", "on_one_device", "settled")

DATA_FACTORIES = frozenset({torch.ones, torch.zeros, torch.full, torch.arange, torch.eye, torch.tensor})
"""Factories of known data: made on the CPU in a trace's values when asked for on ``meta``."""

DATA_LIMIT = 1 << 16
"""Elements of the largest tensor of known data kept on the CPU; a larger one is a ``meta`` stand-in."""

_UNSETTLED = frozenset(
    (
        *("rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "multinomial", "poisson"),
        *("normal", "normal_", "bernoulli", "bernoulli_", "uniform_", "exponential_", "geometric_", "cauchy_"),
        *("log_normal_", "random_", "empty", "empty_like", "new_empty", "empty_strided", "rrelu", "rrelu_"),
        *("dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d"),
    )
)
"""The torch functions and methods whose values differ between forwards (random, uninitialised)."""


def settled(node: torch.fx.Node, values: Mapping[torch.fx.Node, Any]) -> bool:
    """Whether ``node``'s value (in ``values``) is the same in every forward at this input.

    Sizes, Python numbers and ``meta`` tensors (whose data never flows into
    a known value) are settled; a CPU tensor is when it was computed from
    settled values by an op that is neither random nor uninitialised, and
    not by a leaf module.

    Examples
    --------
    >>> g = torch.fx.Graph()
    >>> ones, noise = g.call_function(torch.ones, (3,)), g.call_function(torch.rand, (3,))
    >>> total = g.call_method("sum", (ones,))
    >>> values = {ones: torch.ones(3), noise: torch.rand(3), total: torch.tensor(3.0)}
    >>> settled(total, values), settled(noise, values)
    (True, False)
    """
    value = values.get(node)
    if not isinstance(value, torch.Tensor) or value.device.type == "meta":
        return True
    if node.op == "call_module":
        return False
    if node.op in ("call_function", "call_method"):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name in _UNSETTLED:
            return False
    return all(settled(a, values) for a in node.all_input_nodes)


def from_known_data(value: Any) -> bool:
    """Whether ``value`` (a call's arguments, nested in tuples, lists and dicts) holds no ``meta`` tensor: a factory
    given only sizes, constants and known tensors makes known data; one given a ``meta`` tensor (a fill value, a
    traced tensor's data) does not.

    Examples
    --------
    >>> from_known_data(((2, 3), {"dtype": torch.float32})), from_known_data(((2,), torch.empty((), device="meta")))
    (True, False)
    """
    if isinstance(value, torch.Tensor):
        return not value.is_meta
    if isinstance(value, (tuple, list)):
        return all(from_known_data(v) for v in value)
    if isinstance(value, dict):
        return all(from_known_data(v) for v in value.values())
    return True


def off_meta(value: Any, device: torch.device) -> Any:
    """``value`` (nested in tuples, lists and dicts) with each ``meta`` device in it replaced by ``device``.

    Examples
    --------
    >>> off_meta(((2, 3), {"device": torch.device("meta")}), torch.device("cpu"))
    ((2, 3), {'device': device(type='cpu')})
    """
    if isinstance(value, (tuple, list)):
        return type(value)(off_meta(v, device) for v in value)
    if isinstance(value, dict):
        return {k: off_meta(v, device) for k, v in value.items()}
    if (isinstance(value, torch.device) and value.type == "meta") or (isinstance(value, str) and value == "meta"):
        return device
    return value


def on_one_device(
    args: tuple[Any, ...], kwargs: dict[str, Any], module: bool
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with every CPU tensor of known data as a ``meta`` stand-in when it meets ``meta``
    tensors (or a module, whose weights are on ``meta``); CPU scalars stay (torch lets them meet any device).

    Examples
    --------
    >>> x, mask = torch.empty(2, 3, device="meta"), torch.ones(2, 3)
    >>> [a.device.type for a in on_one_device((x, mask), {}, module=False)[0]]
    ['meta', 'meta']
    >>> [a.device.type for a in on_one_device((mask, 1), {}, module=False)[0][:1]]
    ['cpu']
    """
    data, on_meta = False, module  # a module's weights are on meta
    for values in (args, kwargs.values()):
        for value in values:
            for t in value if type(value) in (list, tuple) else (value,):
                if type(t) is torch.Tensor:
                    if t.is_meta:
                        on_meta = True
                    elif t.dim():
                        data = True
    if not (data and on_meta):
        return args, kwargs

    def stand_in(v: Any) -> Any:
        if type(v) in (list, tuple):
            return type(v)(stand_in(t) for t in v)
        if type(v) is torch.Tensor and not v.is_meta and v.dim():
            return torch.empty_like(v, device="meta")
        return v

    return tuple(stand_in(a) for a in args), {k: stand_in(v) for k, v in kwargs.items()}
