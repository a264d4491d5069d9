"""forget_cached: what a fake-tensor step left in the caches of a model's code is gone when memory_plan returns."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from torchsurgeon import memory_plan


class CachedIndex(nn.Module):
    """BEiT's relative position index: a static method cached process-wide, keyed by a size only."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(7, 2))

    @staticmethod
    @functools.lru_cache(maxsize=4)
    def index(n: int) -> torch.Tensor:
        return torch.arange(n) % 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.table[self.index(x.shape[-1])].sum(-1)


def test_a_real_forward_after_memory_plan_computes_with_values() -> None:
    """Found by a probe: transformers' BEiT cached the fake relative position index the plan's step made
    (``lru_cache`` on a static method), and every later real forward of a BEiT computed on fake tensors: its
    outputs had no values, and a CPU step measured after the plan saved a third of its bytes."""
    CachedIndex.index.cache_clear()
    model, x = CachedIndex(), torch.randn(2, 5)
    expected = x * model.table[torch.arange(5) % 7].sum(-1)
    memory_plan(model, (5,), batch=2, optimizer="sgd", device="cpu")
    out = model(x)
    assert type(out) is torch.Tensor and torch.equal(out, expected)


def test_a_value_cached_by_a_real_forward_is_kept() -> None:
    CachedIndex.index.cache_clear()
    model = CachedIndex()
    model(torch.randn(2, 5))
    cached = CachedIndex.index(5)
    memory_plan(model, (5,), batch=2, optimizer="sgd", device="cpu")
    assert CachedIndex.index(5) is cached  # the step used it: nothing of the step's is in the cache


@pytest.mark.slow
def test_transformers_beit_after_memory_plan() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BeitConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
        use_relative_position_bias=True,
    )
    model = transformers.BeitModel(config)
    memory_plan(model, {"pixel_values": (3, 29, 31)}, batch=2, device="cpu")  # a window size of its own: 1 x 1
    out = model(pixel_values=torch.randn(1, 3, 29, 31), interpolate_pos_encoding=True).last_hidden_state
    assert type(out) is torch.Tensor and out.shape == (1, 2, 32)


_OFFSETS: dict[int, torch.Tensor] = {}


class DictCached(nn.Module):
    """Offsets cached in a module-level dict: nothing torchsurgeon can clear."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] not in _OFFSETS:
            _OFFSETS[x.shape[0]] = torch.arange(x.shape[0], dtype=x.dtype)[:, None]
        return self.lin(x) + _OFFSETS[x.shape[0]]


def test_a_fake_tensor_left_elsewhere_is_said() -> None:
    _OFFSETS.clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"DictCached: its forward on fake tensors left 1 of them"):
            memory_plan(DictCached(), (4,), batch=3, optimizer="sgd", device="cpu")
    finally:
        _OFFSETS.clear()
