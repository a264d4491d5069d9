"""Tests for torchsurgeon.knowndata: Python on known data (sizes, settings, masks of ones) takes the real path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchsurgeon import paramcount


class FirstTokenIfNoPadding(nn.Module):
    """Builds a mask of ones from the input's size and decides by its data, as transformers' mask helpers do."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[:2], device=x.device)
        if mask.sum() == mask.numel():  # no padding: one token stands for all
            x = x[:, :1]
        return self.proj(x)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = FirstTokenIfNoPadding()
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))


@pytest.mark.parametrize("length", [3, 7])
def test_a_decision_on_a_mask_of_ones_takes_the_real_path(length: int) -> None:
    model = Model()
    r = paramcount(model, (length, 4))
    with torch.no_grad():
        want = tuple(model(torch.randn(1, length, 4)).shape)
    assert want == (1, 1, 2)
    assert r.opaque == {} and r.output_shape == want and r.trusted
    assert r.macs == 1 * (4 * 6 + 6 * 2)  # one token through both layers, not `length`


class LargeMask(FirstTokenIfNoPadding):
    """A mask too large to keep on the CPU (more than DATA_LIMIT elements): its data is not known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[0], x.shape[1], 300, 300, device=x.device)
        if mask.sum() == mask.numel():
            x = x[:, :1]
        return self.proj(x)


def test_a_large_tensor_of_known_data_stays_data_dependent() -> None:
    r = paramcount(nn.Sequential(LargeMask()), (2, 4))
    assert list(r.opaque) == ["0"] and r.output_shape == (1, 1, 6)  # the opaque layer run on meta says so


class StepsAsTensor(nn.Module):
    """A factory given a traced tensor (diffusers' ``torch.tensor([timestep], device=sample.device)``): not known
    data; its shape is answered on meta, as before known data."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.tensor([x.mean()], device=x.device)
        if len(steps) == 1:  # a question about its shape only
            x = x * steps
        return self.lin(x)


def test_a_factory_of_traced_data_is_answered_on_meta() -> None:
    r = paramcount(StepsAsTensor(), (8, 4))
    assert r.opaque == {} and r.output_shape == (1, 8, 4) and r.trusted
