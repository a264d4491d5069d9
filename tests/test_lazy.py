"""torchsurgeon.lazy: lazy layers are counted as the first forward at the input makes them; the model stays lazy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchsurgeon import ShapeError, SurgeryError, adapt_input_channels, memory_plan, paramcount, paramcount_sweep


def _lazy() -> nn.Module:
    return nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def _made(shape: tuple[int, ...]) -> int:
    """The parameters a real forward makes: the truth, from torch itself."""
    model = _lazy()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    return sum(p.numel() for p in model.parameters())


def test_lazy_layers_are_counted_as_the_first_forward_makes_them() -> None:
    """It raised torch's ValueError: Attempted to use an uninitialized parameter."""
    model = _lazy()
    hooks = [len(m._forward_pre_hooks) for m in model]
    r = paramcount(model, (3, 16, 16))
    assert r.total == r.total_for_input == _made((3, 16, 16)) == 15_914 and r.output_shape == (1, 10)
    assert [layer.type for layer in r.layers if layer.op == "call_module"] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    assert any(line.startswith("Lazy: 0, 3 make their parameters in the first forward") for line in r.notes())
    assert all(isinstance(p, nn.UninitializedParameter) for p in model.parameters())  # left as found
    assert [len(m._forward_pre_hooks) for m in model] == hooks and type(model[0]) is nn.LazyConv2d
    totals = [s.total for s in paramcount_sweep(model, [(3, 16, 16), (1, 20, 20)])]
    assert totals == [_made((3, 16, 16)), _made((1, 20, 20))]


def test_an_input_the_lazy_layers_cannot_learn_from_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match=r"the lazy layers \(0, 3\) make their parameters in the first forward"):
        paramcount(_lazy(), (3, 2, 2))


def test_a_lazy_model_is_planned_as_made_and_has_nothing_to_adapt() -> None:
    made = _lazy()
    with torch.no_grad():
        made(torch.zeros(1, 3, 16, 16))
    lazy = _lazy()
    assert memory_plan(lazy, (3, 16, 16)).weights == memory_plan(made, (3, 16, 16)).weights == 15_914 * 4
    with pytest.raises(SurgeryError, match="nothing to adapt: the model takes a 1-channel input as it is"):
        adapt_input_channels(lazy, 1)
    with torch.no_grad():
        assert lazy(torch.zeros(1, 1, 16, 16)).shape == (1, 10)  # it does


def test_a_layer_refusing_the_input_before_a_lazy_one_is_named_with_its_fix() -> None:
    """Found by a probe: the lazy layer's first forward failed at the convolution, and the error named the lazy
    layer ``2``. The lazy layers are now made past the convolution resized to fit, as propagation goes past it: the
    convolution is the invalid layer, with the fix of the model without lazy layers, and that fix runs."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(10))
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(RuntimeError, match=r"expected input.* to have 3 channels"):
        model[0](x)  # the real refusal is the convolution's
    r = paramcount(model, (1, 8, 8))
    assert [layer.name for layer in r.invalid] == ["0"] and r.output_shape == (1, 10)
    fix = r.findings[0].fix
    assert (
        fix
        == paramcount(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(288, 10)), (1, 8, 8)).findings[0].fix
    )
    namespace = {"model": model, "adapt_input_channels": adapt_input_channels, "nn": nn}
    fixed = eval(fix.removeprefix("fold it with "), namespace).model
    with torch.no_grad():
        assert fixed(x).shape == (1, 10)
    assert r.total_for_input == sum(p.numel() for p in fixed.parameters())
