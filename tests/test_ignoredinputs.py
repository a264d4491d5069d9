"""Inputs forward takes through **kwargs or in a dict: those it reads are analysed, the others refused, alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from models import KeywordMask
from torchsurgeon import (
    InputError,
    MemoryPlanError,
    TraceError,
    adapt_input_channels,
    check_surgery,
    memory_plan,
    paramcount,
    replace_head,
)
from torchsurgeon.cli import main
from torchsurgeon.ignoredinputs import check_input_traced
from torchsurgeon.trace import trace

_MASKED = {"x": (3, 8, 8), "mask": (1, 8, 8)}


def _entry_points(new: Callable[[], nn.Module], spec: Any) -> dict[str, Callable[[], object]]:
    """Every public function taking ``spec`` for a fresh model from ``new``, memory_plan's training step apart."""
    return {
        "paramcount": lambda: paramcount(new(), spec),
        "check_input_traced": lambda: check_input_traced(new(), spec),
        "replace_head": lambda: replace_head(new(), 7, input=spec),
        "adapt_input_channels": lambda: adapt_input_channels(new(), 1, input=spec),
        "check_surgery": lambda: check_surgery(new(), new(), spec),
    }


@pytest.mark.parametrize("how", ["get", "index", "pop"])
def test_an_input_forward_reads_through_kwargs_is_traced_and_taken_everywhere(
    how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a colleague: forward(x, **kwargs) reading kwargs.get("mask") (or kwargs["mask"], kwargs.pop) was
    traced with **kwargs empty: paramcount and every surgery refused mask as never read (kwargs["mask"]: a
    TraceError) while memory_plan planned it. The trace now gives **kwargs the inputs it takes."""
    model = KeywordMask(how)
    x, mask = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    expected = model(x, mask=mask)
    assert not torch.allclose(expected, model(x, mask=torch.zeros_like(mask)))  # the real forward reads the mask
    torch.testing.assert_close(trace(model, inputs=("x", "mask")).graph_module(x=x, mask=mask), expected)
    assert paramcount(model, _MASKED).total == sum(p.numel() for p in model.parameters())
    for name, call in _entry_points(lambda: KeywordMask(how), _MASKED).items():
        assert call() is not None, name
    assert memory_plan(model, _MASKED, batch=2, device="cpu").input_shapes == {"x": (2, 3, 8, 8), "mask": (2, 1, 8, 8)}
    argv = ["summary", "models:KeywordMask", "--kwargs", f"how='{how}'", "--input", "x=3,8,8", "--input", "mask=1,8,8"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shapes"] == {"x": [1, 3, 8, 8], "mask": [1, 1, 8, 8]}


def test_a_mask_read_in_training_mode_only_is_refused_in_eval_mode_with_the_mode_named() -> None:
    """forward reads mask only when self.training: in eval mode a real forward ignores it, and every trace-based
    entry point says so (naming the mode); memory_plan plans a training step, which reads it."""
    model = KeywordMask("training").eval()
    x, mask = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(x, mask=mask), model(x, mask=torch.zeros_like(mask)))  # ignored in eval mode
    messages = set()
    for call in _entry_points(lambda: KeywordMask("training").eval(), _MASKED).values():
        with pytest.raises(InputError, match=r"input 'mask' is never read: .* no op reads it in eval mode") as got:
            call()
        messages.add(str(got.value))
    assert len(messages) == 1, messages  # one answer, word for word
    assert memory_plan(model, _MASKED, batch=2, device="cpu").input_shapes["mask"] == (2, 1, 8, 8)
    for name, call in _entry_points(lambda: KeywordMask("training"), _MASKED).items():
        assert call() is not None, name  # in training mode every entry point takes it


class _MaskIfAny(nn.Module):
    """Reads ``mask`` from ``**kwargs`` only when one of its values is non-zero."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        mask, y = kwargs.get("mask"), self.conv(x)
        return self.fc((y * mask if mask is not None and bool(mask.any()) else y).mean((2, 3)))


def test_a_mask_read_under_a_condition_on_its_values_is_never_called_unread() -> None:
    """Its values decide whether forward reads it: given by shape, paramcount asks for the values (it said 'not an
    argument of forward') and memory_plan says it cannot read values; given as data, paramcount analyses it."""
    with pytest.raises(TraceError, match=r"the values of 'mask' decide what the forward does here"):
        paramcount(_MaskIfAny(), _MASKED)
    with pytest.raises(MemoryPlanError, match=r"Python that reads values"):
        memory_plan(_MaskIfAny(), _MASKED, device="cpu")
    given = {"x": torch.randn(1, 3, 8, 8), "mask": torch.rand(1, 1, 8, 8)}
    assert paramcount(_MaskIfAny(), given).output_shape == (1, 5)
