"""torchsurgeon.wrappers: what a user passes as the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from torchsurgeon import (
    InputError,
    adapt_input_channels,
    check_surgery,
    memory_plan,
    paramcount,
    replace_head,
)

CALLS: dict[str, Callable[[nn.Module], Any]] = {
    "paramcount": lambda m: paramcount(m, (3, 8, 8)),
    "memory_plan": lambda m: memory_plan(m, (3, 8, 8)),
    "adapt_input_channels": lambda m: adapt_input_channels(m, 1),
    "replace_head": lambda m: replace_head(m, 5),
    "check_surgery": lambda m: check_surgery(m, m, (3, 8, 8)),
}


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()


@pytest.mark.filterwarnings("ignore:`torch.jit.(script|trace)` is deprecated:FutureWarning")
@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("call", list(CALLS))
def test_a_torchscript_model_is_refused_with_the_module_to_pass(how: str, call: str) -> None:
    net = _net()
    scripted = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.randn(1, 3, 8, 8))
    assert scripted(torch.randn(1, 3, 8, 8)).shape == (1, 2)  # it runs: only its Python forward is gone
    # was AttributeError: '_CachedForward' object has no attribute '__getattr__'
    with pytest.raises(
        InputError, match=r"got the torch\.jit \w+ torch\.jit\.script or torch\.jit\.trace made: .* was made from"
    ):
        CALLS[call](scripted)
    assert paramcount(net, (3, 8, 8)).total == sum(p.numel() for p in net.parameters())  # the module before it
