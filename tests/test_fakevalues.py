"""fakevalues: the values a fake step assumes (nothing dropped, finite, all-True masks), against real CPU steps.

Each model reads a value in its forward or backward that a fake tensor does not have; memory_plan used to fail
with MemoryPlanError.  The reference is a real CPU training step of the same model made to take the path the
plan assumes (no layer dropped), measured by ``models.measure_training_step`` (independent of torchsurgeon).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from models import measure_training_step as measure
from torchsurgeon import MemoryPlanError, memory_plan


class DropsBlocksAtRandom(nn.Module):
    """Stochastic depth written as a branch: ``if torch.rand(1).item() < p: skip the block``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.GELU()) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.training and torch.rand(1).item() < self.p:
                continue
            x = x + block(x)
        return x


class ClampsWhenNotFinite(nn.Module):
    """DETR's encoder layer: ``if not torch.isfinite(x).all(): x = x.clamp(...)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        if torch.isinf(x).any() or torch.isnan(x).any() or not torch.isfinite(x).all():
            x = x.clamp(-1e4, 1e4)  # a copy the real (finite) step never makes
        return torch.tanh(x)


class ReadsItsData(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y if y.sum() > 0 else -y


def test_a_random_branch_is_planned_as_nothing_dropped() -> None:
    model = DropsBlocksAtRandom()
    plan = memory_plan(model, (16,), batch=4, device="cpu")
    real = measure(DropsBlocksAtRandom(p=0.0).train(), torch.randn(4, 16))  # the same blocks, none dropped
    assert (plan.activations, plan.gradients) == (real.saved, real.gradients)


def test_a_finiteness_check_is_planned_as_finite() -> None:
    model = ClampsWhenNotFinite()
    plan = memory_plan(model, (16,), batch=4, device="cpu")
    real = measure(model, torch.randn(4, 16))
    assert (plan.activations, plan.gradients) == (real.saved, real.gradients)


def test_reading_any_other_value_still_fails_naming_the_module() -> None:
    with pytest.raises(MemoryPlanError, match=re.escape("ReadsItsData: the forward of a fake-tensor copy failed")):
        memory_plan(ReadsItsData(), (16,), batch=4)


@pytest.mark.slow
def test_an_input_the_model_refuses_is_not_blamed_on_fake_tensors() -> None:
    """A ViT at another image size, batch norm at batch 1: PyTorch's own checks, which a real step raises too."""
    from torchvision.models import vit_b_16

    with pytest.raises(MemoryPlanError, match=r"Wrong image height.*a real training step at this input raises it too"):
        memory_plan(vit_b_16(), (3, 64, 64))
    stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4))
    with pytest.raises(MemoryPlanError, match=re.escape("give an input the model accepts (batch=2 or more)")):
        memory_plan(stem, (3, 8, 8), batch=1)
    assert memory_plan(stem, (3, 8, 8), batch=2).activations > 0


@pytest.mark.slow  # a real training step of Wav2Vec2: `make test` runs it, `make check` skips it
def test_wav2vec2_with_layerdrop_and_specaugment_is_planned_as_a_real_step() -> None:
    """transformers' Wav2Vec2 in training: LayerDrop (``torch.rand([]) < layerdrop``) and SpecAugment, whose
    backward indexes with a boolean mask.  The real step runs with layerdrop 0 (no layer dropped)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=[8, 8], conv_stride=[5, 2], conv_kernel=[10, 3], num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, layerdrop=0.1, mask_time_prob=0.05,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Wav2Vec2Model(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config, training = model.config.to_dict(), model.training
    plan = memory_plan(model, (1600,), batch=2, device="cpu")
    memory_plan(model, (1600,), batch=2, amp="bf16")  # CUDA's kernels: the copy, never the model, runs them
    after = model.state_dict()  # the model is left as it was: weights, buffers, config, mode, hooks
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert (model.config.to_dict(), model.training) == (config, training)
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    none_dropped = copy.deepcopy(model)
    none_dropped.config.layerdrop = 0.0
    torch.manual_seed(0)
    real = measure(none_dropped, torch.randn(2, 1600))
    assert (plan.activations, plan.gradients) == (real.saved, real.gradients)


class LearnedPositions(nn.Module):
    """GPT-2's absolute positions: ``torch.arange`` over the input's length looked up in a table of 16 rows, the
    offset OPT adds to them computed from a ``torch.ones`` mask's ``cumsum``."""

    def __init__(self, offset: bool = False) -> None:
        super().__init__()
        self.tokens, self.positions, self.offset = nn.Embedding(99, 8), nn.Embedding(16, 8), offset

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.offset:
            at = torch.ones(ids.shape, dtype=torch.long).cumsum(1) + 1  # OPT: 2 .. length + 1
        else:
            at = torch.arange(ids.shape[1]).unsqueeze(0).expand(ids.shape[0], -1)
        return self.tokens(ids) + self.positions(at)


@pytest.mark.parametrize("offset", [False, True])
def test_positions_past_the_end_of_their_table_fail_as_in_a_real_step(offset: bool) -> None:
    """Found by a probe: GPT-2 and OPT given more tokens than positions were planned with confidence (fake tensors'
    embedding does not look at indices), while a real step raises IndexError."""
    model = LearnedPositions(offset)
    fits = 16 - 2 * offset
    plan = memory_plan(model, {"ids": (fits,)}, batch=2, device="cpu")
    assert plan.activations == measure(model, torch.randint(0, 99, (2, fits))).saved
    with pytest.raises(IndexError, match="index out of range in self"):
        measure(model, torch.randint(0, 99, (2, fits + 1)))
    with pytest.raises(MemoryPlanError, match=r"failed in positions \(IndexError: index out of range in self\)"):
        memory_plan(model, {"ids": (fits + 1,)}, batch=2, device="cpu")
