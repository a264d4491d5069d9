"""simulate_step: storages counted once through views, module attribution, where the transient peaks, checkpointing."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import StopGradientTarget, measure_allocated, measure_training_step
from torchsurgeon.errors import MemoryPlanError
from torchsurgeon.fakestep import simulate_step


class TwoViews(nn.Module):
    """``sin`` saves ``h``, ``cos`` saves a view of ``h``: one storage."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return h.sin() + h.view(-1, 1).cos().view_as(h)


def test_a_storage_saved_through_two_views_counts_once() -> None:
    step = simulate_step(TwoViews(), {"x": ((4, 5), None)}, train=True, amp=None, dtype=None)
    assert step.activations == 4 * (4 * 5 + 4 * 6)  # x (saved by the Linear) and h, once
    assert step.saved == {"": 4 * 4 * 6, "lin": 4 * 4 * 5}  # h is first saved by the model's own forward
    assert step.got_grad == [True, True] and step.gradients == 4 * (5 * 6 + 6)


def test_what_a_dropped_branch_saved_is_freed_before_backward() -> None:
    # the target branch's result is used only detached: its graph, and what its GELU and last Linear saved
    # (2 x 8 x 1024 floats), is freed in the forward; backward holds the online branch's (x, 2 x 8 x 256 floats)
    model = StopGradientTarget()
    step = simulate_step(model, {"x": ((8, 256), None)}, train=True, amp=None, dtype=None)
    real = measure_training_step(model, torch.randn(8, 256))
    assert step.activations == real.saved == 3 * 8 * 256 * 4
    online = {"online.0": 8 * 256 * 4, "online.1": 8 * 256 * 4, "online.2": 8 * 256 * 4}  # x, and both GELU's ends
    assert step.saved == {"": 0, **online, "target.0": 0, "target.1": 0, "target.2": 0}
    # freed in the forward, they were transient: the input to the target's last Linear and its output
    assert (step.peak_at, step.transient) == ("forward, target.2 (addmm.default)", 4 * 8 * (256 + 2 * 1024 + 256))


def test_eval_forward_saves_nothing_and_frees_as_it_goes() -> None:
    net = nn.Sequential(*[nn.Linear(64, 64) for _ in range(10)])
    step = simulate_step(net, {"input": ((8, 64), None)}, train=False, amp=None, dtype=None)
    assert step.activations == 0 and step.gradients == 0
    assert step.in_use_peak == 3 * 8 * 64 * 4  # the caller's input, one layer's input and its output


def test_peak_is_named_by_module_or_backward_op() -> None:
    net = nn.Sequential(nn.Linear(4, 4096), nn.ReLU(), nn.Linear(4096, 1))
    net[0].requires_grad_(False)  # nothing saved before the last Linear, which saves the ReLU's output
    step = simulate_step(net, {"input": ((2, 4), None)}, train=True, amp=None, dtype=None)
    assert step.activations == 4 * 2 * 4096
    # the input and the first Linear's output, saved by nobody, from the first Linear's addmm on (the first moment)
    assert (step.peak_at, step.transient) == ("forward, 0 (addmm.default)", 4 * (2 * 4 + 2 * 4096))


def test_a_sparse_embedding_gradient_has_a_row_per_lookup() -> None:
    net = nn.Sequential(nn.Embedding(1000, 16, sparse=True), nn.Linear(16, 2))
    step = simulate_step(net, {"input": ((4, 8), torch.int64)}, train=True, amp=None, dtype=None)
    net(torch.randint(0, 1000, (4, 8))).sum().backward()
    grad = net[0].weight.grad
    assert grad is not None and grad.is_sparse  # the real one: uncoalesced, 32 rows and 32 int64 indices
    assert step.sparse_gradients == {0: grad._indices().nbytes + grad._values().nbytes} == {0: 32 * (8 + 16 * 4)}
    assert step.gradients == step.sparse_gradients[0] + 4 * (16 * 2 + 2)


def test_a_step_whose_in_place_op_overwrites_a_saved_tensor_is_refused_as_a_real_one_is() -> None:
    """Found by a fuzzer: ``ReLU()`` then ``ReLU(inplace=True)`` overwrites what the first saved; a real backward
    raises, the simulated one (saved-tensor hooks skip autograd's version check) gave a plan as if it trained."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.ReLU(inplace=True), nn.Linear(4, 2))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        model(torch.randn(2, 4)).sum().backward()
    with pytest.raises(MemoryPlanError, match=r"saved in 1 is at version 1.*in-place op after 1 .*make that op out"):
        simulate_step(model, {"input": ((2, 4), None)}, train=True, amp=None, dtype=None)
    model[2].inplace = False  # out of place: it trains, and so is it planned
    model(torch.randn(2, 4)).sum().backward()
    assert simulate_step(model, {"input": ((2, 4), None)}, train=True, amp=None, dtype=None).activations > 0


class CheckpointedBlocks(nn.Module):
    """Residual MLP blocks with dropout, each run through ``torch.utils.checkpoint.checkpoint`` (``reentrant``:
    True, False), all of them through ``checkpoint_sequential`` in two segments (``"sequential"``), or not at all
    (None).  ``native=True`` calls ``torch.native_dropout``, the kernel a GPU runs for ``F.dropout`` (a 1-byte
    mask kept, where the CPU's dropout keeps a float noise tensor)."""

    def __init__(self, reentrant: bool | str | None, native: bool = False, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.reentrant, self.native = reentrant, native
        self.stem = nn.Linear(width, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {"norm": nn.LayerNorm(width), "up": nn.Linear(width, 4 * width), "down": nn.Linear(4 * width, width)}
            )
            for _ in range(blocks)
        )
        self.head = nn.Linear(width, 4)

    def block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        b = self.blocks[index]
        h = F.gelu(b["up"](b["norm"](x)))
        h = torch.native_dropout(h, 0.1, True)[0] if self.native else F.dropout(h, 0.1, self.training)
        return x + b["down"](h)  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        if self.reentrant == "sequential":
            steps = [functools.partial(self.block, i) for i in range(len(self.blocks))]
            h = torch.utils.checkpoint.checkpoint_sequential(steps, 2, h, use_reentrant=False)
        for i in range(len(self.blocks)) if self.reentrant != "sequential" else ():
            if self.reentrant is None:
                h = self.block(i, h)
            else:
                h = torch.utils.checkpoint.checkpoint(self.block, i, h, use_reentrant=bool(self.reentrant))
        return self.head(h)  # type: ignore[no-any-return]


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
@pytest.mark.parametrize("reentrant", [True, False, "sequential"], ids=["reentrant", "non-reentrant", "sequential"])
def test_a_checkpointed_step_keeps_less_and_computes_again_in_backward_as_a_real_step(reentrant: bool | str) -> None:
    """Activation checkpointing: a real CPU step (torch's allocator, not what autograd says it saves) keeps the
    checkpoints' inputs when its forward returns, and peaks in the backward, where each block runs again."""
    x = torch.randn(16, 64, 32)
    inputs = {"x": ((16, 64, 32), None)}
    torch.manual_seed(0)
    full, model = CheckpointedBlocks(None), CheckpointedBlocks(reentrant)
    model.load_state_dict(full.state_dict())
    plain = simulate_step(full, inputs, train=True, amp=None, dtype=None)
    step = simulate_step(model, inputs, train=True, amp=None, dtype=None)
    real = measure_allocated(model, x)
    output, rng_state = 16 * 64 * 4 * 4, torch.get_rng_state().nbytes  # the head's output; kept by each checkpoint
    assert 0 <= real.at_forward_end - (step.activations + output) <= 4 * rng_state  # the batch, held by the stem
    assert step.activations < plain.activations * (0.6 if reentrant == "sequential" else 0.3)  # its last segment: not
    assert real.peak_in == "backward" and step.peak_at.startswith("backward")
    # plan.peak's upper bound: activations, transient and gradients as if alive at once; checkpoint_sequential runs
    # its last segment as it is, and what that saved is freed before the other segments run again (1.82x here)
    assert (
        real.peak
        <= step.activations + step.transient + step.gradients
        <= (1.9 if reentrant == "sequential" else 1.1) * real.peak
    )


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_a_checkpointed_block_runs_again_with_the_kernels_of_a_gpu(reentrant: bool) -> None:
    """Found by a probe: for device="cuda" the recomputation of a checkpointed block in the backward ran the CPU's
    kernels while the forward had run CUDA's: non-reentrant checkpointing (Hugging Face's and timm's default) failed
    with torch's CheckpointError (`a real training step raises it too`), reentrant planned the CPU's dropout noise
    and attention matrix as its transient.  The same blocks written with the kernel a GPU runs for dropout
    (``torch.native_dropout``), planned with the CPU's, are what the GPU's step is."""
    inputs = {"x": ((16, 64, 32), None)}
    torch.manual_seed(0)
    model, as_on_a_gpu = CheckpointedBlocks(reentrant), CheckpointedBlocks(reentrant, native=True)
    as_on_a_gpu.load_state_dict(model.state_dict())
    step = simulate_step(model, inputs, train=True, amp=None, dtype=None, device="cuda")
    gpu = simulate_step(as_on_a_gpu, inputs, train=True, amp=None, dtype=None, device="cpu")
    real = measure_training_step(as_on_a_gpu, torch.randn(16, 64, 32))
    assert (step.activations, step.gradients) == (gpu.activations, gpu.gradients) == (real.saved, real.gradients)
    assert (step.transient, step.peak_at) == (gpu.transient, gpu.peak_at)


class _SpatialAttentionThenUpsample(nn.Module):
    """diffusers' spatial attention in miniature: tokens made by viewing the map, projected, viewed back as a map
    (channels-last strides, and a batch of 1 whose stride the CPU and fake tensors compute differently), added to the
    input, upsampled; a norm reads the result as it is, a shortcut ``.contiguous()`` (a copy only if it is not)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.norm = nn.GroupNorm(2, 8)
        self.shortcut = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj(x.view(b, c, h * w).transpose(1, 2))
        y = tokens.transpose(-1, -2).reshape(b, c, h, w) + x
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        return self.norm(y).mean() + self.shortcut(y.contiguous()).mean()


@pytest.mark.parametrize("batch", [1, 2])
def test_a_batch_of_one_keeps_the_cpus_memory_format_after_a_view(batch: int) -> None:
    """At batch 1 the view back to a map had, on fake tensors, another stride for its size-1 batch than on the CPU;
    the upsampling then chose channels-last where the CPU keeps it contiguous, ``.contiguous()`` copied it, and the
    step saved 2,048 bytes more than a real one (4,624 against 2,576; diffusers' VAE: 3.6 % more).  Now equal."""
    model = _SpatialAttentionThenUpsample()
    step = simulate_step(model, {"x": ((batch, 8, 4, 4), None)}, train=True, amp=None, dtype=None)
    assert step.activations == measure_training_step(model, torch.randn(batch, 8, 4, 4)).saved
