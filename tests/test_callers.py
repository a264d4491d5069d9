"""A model's own type checks of traced values (kornia's input guards), with hand-written models (no kornia needed).

kornia starts most forwards with ``if not isinstance(x, torch.Tensor): raise TypeError``
(``KORNIA_CHECK_IS_TENSOR``): a trace's proxy failed it, so ``SIFTDescriptor``, ``KeyNet`` and its
``VisionTransformer`` gave a TraceError at an input the real model accepts, and its filters inside a
model became opaque layers whose MACs were not counted.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from models import tensor_shapes
from torchsurgeon import TraceError, paramcount


class TypeCheckError(TypeError):
    """kornia's own exception class for a failed type check."""


def check_is_tensor(x: Any) -> bool:
    """kornia's ``KORNIA_CHECK_IS_TENSOR``: a function of the library, not the model's forward."""
    if not isinstance(x, torch.Tensor):
        raise TypeCheckError(f"Type mismatch: expected Tensor, got {type(x)}.")
    return True


class Guarded(nn.Module):
    """A stem behind one form of input guard; the guard on a traced size must still say it is no tensor."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "isinstance" and not isinstance(x, torch.Tensor):
            raise TypeError(f"Input x type is not a torch.Tensor. Got: {type(x)}")  # kornia's VisionTransformer
        if self.form == "is_tensor" and not torch.is_tensor(x):
            raise TypeError("expected a tensor")
        if self.form == "from torch import Tensor" and not isinstance(x, (Tensor, list)):
            raise TypeError("expected a tensor or a list of them")
        if self.form == "library check":
            check_is_tensor(x)
        width = x.shape[-1]
        if isinstance(width, torch.Tensor):  # a size is an int in a real forward, and stays one
            raise TypeError("a size read as a tensor")
        return self.conv(x)


@pytest.mark.parametrize("form", ["isinstance", "is_tensor", "from torch import Tensor", "library check"])
def test_a_forward_checking_its_input_is_a_tensor_is_traced(form: str) -> None:
    model = Guarded(form)
    report = paramcount(model, (3, 16, 16))
    with torch.no_grad():
        real = model(torch.zeros(1, 3, 16, 16))
    assert report.output_shape == tensor_shapes(real) == (1, 8, 14, 14)
    assert report.total == sum(p.numel() for p in model.parameters()) and not report.opaque


class Blur(nn.Module):
    """kornia's GaussianBlur2d as a layer of a model: it checks its input, then convolves it depthwise."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.full((3, 1, 3, 3), 1 / 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_is_tensor(x)
        return nn.functional.conv2d(x, self.kernel, padding=1, groups=3)


def test_a_layer_checking_its_input_inside_a_model_is_traced_and_its_macs_counted() -> None:
    """The blur was an opaque layer, its depthwise convolution missing from the MACs."""
    model = nn.Sequential(Blur(), nn.Conv2d(3, 8, 3))
    report = paramcount(model, (3, 32, 32))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    assert not report.opaque and report.macs == counter.get_total_flops() // 2


def test_torch_and_torchsurgeon_still_see_a_proxy() -> None:
    """Only the model's own ``isinstance`` is answered: torch's C functions check the type too (before they take
    the object for a tensor) from the same line, and torch.fx must keep telling proxies from constants."""

    class CallsTorch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            check_is_tensor(x)
            y = torch.tensordot(x.flatten(1), x.flatten(1), dims=([1], [1]))  # nested arguments: fx's own walk
            return nn.functional.conv2d(x, torch.ones(2, 3, 1, 1)) + y.sum()

    report = paramcount(CallsTorch(), (3, 4, 4))
    assert report.output_shape == (1, 2, 4, 4) and not report.opaque


def test_a_type_check_by_type_names_the_check_and_a_fix_that_runs() -> None:
    """``type(x) is not torch.Tensor`` cannot be answered (a proxy's type is its own): the error says which line
    and how to analyse the model anyway."""

    class Strict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if type(x) is not torch.Tensor:
                raise TypeError("expected a tensor")
            return self.conv(x)

    model = Strict()
    with pytest.raises(TraceError, match=r"its type check 'if type\(x\) is not torch.Tensor:' \(.*test_callers.py:"):
        paramcount(model, (3, 16, 16))
    with pytest.raises(TraceError, match=r"write it isinstance\(x, torch.Tensor\).* pass leaf_modules=\[Strict\]"):
        paramcount(model, (3, 16, 16))
    report = paramcount(model, (3, 16, 16), leaf_modules=[Strict])  # the fix, as written
    assert report.output_shape == (1, 8, 14, 14) and report.total == sum(p.numel() for p in model.parameters())


class SizeChecks(nn.Module):
    """Python type checks of sizes read from the input (kornia's ``KORNIA_CHECK(isinstance(h, int))``, a crop
    bound computed only for an int): a real forward sees an int, a ``torch.Size``, a float."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, size = x.shape[2], x.shape[2:]
        if self.form == "raise" and not isinstance(h, int):
            raise TypeError(f"a size must be an int, got {type(h)}")
        rows = h // 2 if isinstance(h, int) else 1  # silently a different crop were h no int
        if self.form == "size" and not isinstance(size, tuple):
            rows = 1
        if self.form == "float" and not isinstance(h / 2, float):
            rows = 1
        return self.conv(x)[:, :, :rows]


@pytest.mark.parametrize("form", ["raise", "branch", "size", "float"])
def test_a_type_check_of_a_traced_size_takes_the_forward_s_path(form: str) -> None:
    """``isinstance(h, int)`` of ``h = x.shape[2]`` was answered False: a TraceError at an input the model
    accepts, or a trace down the other branch, whose output shape (1, 4, 1, 16) was reported as the model's."""
    model = SizeChecks(form)
    report = paramcount(model, (3, 16, 16))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        real = model(torch.zeros(1, 3, 16, 16))
    assert report.output_shape == tensor_shapes(real) == (1, 4, 8, 16)
    assert report.macs == counter.get_total_flops() // 2 and not report.opaque
    assert report.total == sum(p.numel() for p in model.parameters())
