"""Values on ``meta`` of a graph being traced (torchsurgeon.metavalues): Python on sizes, known data from sizes."""

from __future__ import annotations

import operator

import torch

from torchsurgeon.knowndata import DATA_LIMIT
from torchsurgeon.metavalues import MetaValues


def _values(x: torch.Tensor) -> MetaValues:
    return MetaValues(torch.nn.Module(), {"x": x}, lambda m, a, k: None)


def test_python_on_sizes_gives_what_python_gives_on_the_real_sizes() -> None:
    g = torch.fx.Graph()
    x = g.placeholder("x")
    size = g.call_method("size", (x,))
    h = g.call_function(operator.getitem, (size, 2))
    windows = g.call_function(operator.floordiv, (h, 3))
    rest = g.call_function(operator.mod, (h, 3))
    pad = g.call_function(max, (rest, 1))
    tail = g.call_function(operator.getitem, (size, slice(1, None)))
    real = torch.empty(2, 5, 11)
    values = _values(real)
    assert values.resolve(windows, "int") == real.shape[2] // 3 == 3
    assert values.resolve(pad, "int") == max(real.shape[2] % 3, 1) == 2
    assert values.resolve(tail, "iter") == real.shape[1:] and type(values.resolve(tail, "iter")) is torch.Size


def test_a_factory_given_sizes_only_is_known_data_when_small_and_a_meta_stand_in_when_large() -> None:
    """``torch.ones(batch, length)`` of sizes is a factory of known data (knowndata), although its arguments are
    Python numbers only, as those of Python on sizes are: small, its values on the CPU; past ``DATA_LIMIT``
    elements, a ``meta`` stand-in (never made on the CPU)."""
    g = torch.fx.Graph()
    x = g.placeholder("x")
    batch = g.call_function(operator.getitem, (g.call_method("size", (x,)), 0))
    small = g.call_function(torch.ones, (batch, 4))
    large = g.call_function(torch.ones, (batch, DATA_LIMIT))
    values = _values(torch.empty(3, 4))
    value = values.resolve(small, "bool")
    assert value.device.type == "cpu" and torch.equal(value, torch.ones(3, 4))
    value = values.resolve(large, "bool")
    assert value.device.type == "meta" and tuple(value.shape) == (3, DATA_LIMIT)
