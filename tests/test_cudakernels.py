"""cudakernels: what a GPU's kernels save, made to happen in a CPU step.

The numbers by hand come from what CUDA's kernels keep (a 1-byte dropout mask; a fused attention
kernel's output and log-sum-exp).  The autocast lists are checked against torch's own dispatcher:
CUDA autocast's kernels run on fake CUDA tensors without a GPU (forward only), CPU autocast on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn import functional as F

from models import cuda_autocast
from torchsurgeon.autocast import CPU_FLOAT32 as _CPU_FLOAT32
from torchsurgeon.autocast import CUDA_FLOAT32 as _CUDA_FLOAT32
from torchsurgeon.cudakernels import CudaKernels


def _saved(fn: Callable[[], Any], cuda: bool) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of each storage autograd saves while ``fn`` runs, parameters included, each once.

    On fake tensors, as in memory_plan's step: CUDA's fused attention kernels have no CPU implementation.
    """
    seen: dict[int, tuple[tuple[int, ...], torch.dtype]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen.setdefault(t.untyped_storage()._cdata, (tuple(t.shape), t.dtype))
        return t

    with FakeTensorMode(allow_non_fake_inputs=True), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if cuda:
            with CudaKernels():
                fn()
        else:
            fn()
    return list(seen.values())


def _bytes(saved: list[tuple[tuple[int, ...], torch.dtype]]) -> int:
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in saved)


def test_dropout_keeps_a_one_byte_mask_as_on_a_gpu() -> None:
    x = torch.randn(4, 32, requires_grad=True)
    cpu = _saved(lambda: F.dropout(x, 0.1), cuda=False)
    gpu = _saved(lambda: F.dropout(x, 0.1), cuda=True)
    assert _bytes(cpu) == 4 * 32 * 4  # the CPU keeps a float noise tensor
    assert gpu == [((4, 32), torch.bool)]  # CUDA's native_dropout keeps a bool mask
    # in place, at p=0 or in eval: what the CPU does (CUDA does not fuse these either)
    assert _saved(lambda: F.dropout(x.clone(), 0.1, inplace=True), cuda=True) == _saved(
        lambda: F.dropout(x.clone(), 0.1, inplace=True), cuda=False
    )
    assert _saved(lambda: F.dropout(x, 0.0), cuda=True) == _saved(lambda: F.dropout(x, 0.0), cuda=False) == []
    assert _saved(lambda: torch.dropout(x, 0.5, True), cuda=True) == [((4, 32), torch.bool)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_with_dropout_keeps_no_attention_matrix(dtype: torch.dtype) -> None:
    """B=2, H=4, L=40, E=16, dropout 0.1: the CPU takes the math path (the attention matrix, its dropout mask);
    a GPU runs a fused kernel that keeps q, k, v, the output and a float32 log-sum-exp per row (padded to 32 rows
    by the memory-efficient kernel, which a GPU runs in float32), and two int64 random-number offsets."""
    b, h, length, e = 2, 4, 40, 16
    q, k, v = (torch.randn(b, h, length, e, dtype=dtype, requires_grad=True) for _ in range(3))
    cpu = _saved(lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1), cuda=False)
    gpu = _saved(lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1), cuda=True)
    assert any(shape == (b, h, length, length) for shape, _ in cpu)
    assert all(shape != (b, h, length, length) for shape, _ in gpu)
    rows = 64 if dtype == torch.float32 else length  # memory-efficient kernel: log-sum-exp rows padded to 32
    expected = 4 * b * h * length * e * dtype.itemsize + b * h * rows * 4
    assert expected < _bytes(gpu) <= expected + 24  # + the random-number state: 16 to 24 bytes by kernel


def test_grouped_query_attention_follows_the_kernel_a_gpu_picks() -> None:
    """Half precision: flash attention reads each key-value head for its group (nothing expanded is saved);
    float32: the memory-efficient kernel has no grouped-query attention, so a GPU takes the math path."""
    q = torch.randn(2, 4, 32, 16, dtype=torch.bfloat16, requires_grad=True)
    kv = torch.randn(2, 2, 32, 16, dtype=torch.bfloat16, requires_grad=True)
    half = _saved(lambda: F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True), cuda=True)
    floats = [(shape, dtype) for shape, dtype in half if dtype.is_floating_point]  # not the random-number state
    assert sorted(floats, key=str) == sorted(
        [
            ((2, 4, 32, 16), torch.bfloat16),
            ((2, 2, 32, 16), torch.bfloat16),
            ((2, 4, 32, 16), torch.bfloat16),
            ((2, 4, 32), torch.float32),
        ],
        key=str,
    )  # q, the unexpanded k = v, the output, the log-sum-exp
    q32, kv32 = q.detach().float().requires_grad_(), kv.detach().float().requires_grad_()
    full = _saved(lambda: F.scaled_dot_product_attention(q32, kv32, kv32, is_causal=True, enable_gqa=True), cuda=True)
    assert any(shape == (2, 4, 32, 32) for shape, _ in full)  # the math path's attention matrix


@pytest.mark.parametrize(
    ("q", "kv", "v", "dtype"),
    [
        ((2, 4, 10, 64), (2, 4, 12, 64), (2, 4, 12, 32), torch.bfloat16),  # values narrower than keys: not flash
        ((2, 4, 10, 100), (2, 4, 10, 100), (2, 4, 10, 100), torch.float32),
        ((2, 4, 1, 300), (2, 4, 1, 300), (2, 4, 1, 300), torch.bfloat16),
        ((4, 10, 64), (4, 12, 64), (4, 12, 64), torch.float32),  # 3-D: the math path
    ],
)
def test_attention_gives_what_sdpa_gives_for_any_widths(
    q: tuple[int, ...], kv: tuple[int, ...], v: tuple[int, ...], dtype: torch.dtype
) -> None:
    with FakeTensorMode():
        query, key, value = (torch.empty(s, dtype=dtype, requires_grad=True) for s in (q, kv, v))
        expected = F.scaled_dot_product_attention(query, key, value, dropout_p=0.1)
        with CudaKernels():
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.1)
        out.sum().backward()
    assert (out.shape, out.dtype) == (expected.shape, expected.dtype)
    assert query.grad is not None and query.grad.shape == query.shape


def test_multihead_attention_uses_the_fused_kernel_inside_nn_multiheadattention() -> None:
    mha = nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True)
    x = torch.randn(2, 10, 32)
    cpu = _saved(lambda: mha(x, x, x, need_weights=False), cuda=False)
    gpu = _saved(lambda: mha(x, x, x, need_weights=False), cuda=True)
    assert any(shape == (2, 4, 10, 10) for shape, _ in cpu)  # math path with dropout
    assert all(shape != (2, 4, 10, 10) for shape, _ in gpu)
    assert F.multi_head_attention_forward.__globals__["scaled_dot_product_attention"] is F.scaled_dot_product_attention


_X = (4, 8, 6, 6)
# a call for every name in the two lists, on a 4-D bf16 tensor (3-D pooling sees it as C x D x H x W)
CALLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "pow": lambda x: torch.pow(x, 2),
    "rpow": lambda x: 2**x,
    "exp": torch.exp,
    "expm1": torch.expm1,
    "log": torch.log,
    "log10": torch.log10,
    "log2": torch.log2,
    "log1p": torch.log1p,
    "reciprocal": torch.reciprocal,
    "rsqrt": torch.rsqrt,
    "acos": torch.acos,
    "asin": torch.asin,
    "cosh": torch.cosh,
    "sinh": torch.sinh,
    "tan": torch.tan,
    "erfinv": torch.erfinv,
    "softplus": F.softplus,
    "layer_norm": lambda x: F.layer_norm(x, (6,)),
    "group_norm": lambda x: F.group_norm(x, 2),
    "rms_norm": lambda x: F.rms_norm(x, (6,)),
    "softmax": lambda x: x.softmax(-1),
    "log_softmax": lambda x: F.log_softmax(x, -1),
    "logsumexp": lambda x: torch.logsumexp(x, -1),
    "cumsum": lambda x: x.cumsum(-1),
    "cumprod": lambda x: torch.cumprod(x, -1),
    "sum": lambda x: x.sum(),
    "norm": lambda x: x.norm(),
    "normalize": F.normalize,
    "cosine_similarity": lambda x: F.cosine_similarity(x, x),
    "dist": lambda x: torch.dist(x, x),
    "pdist": lambda x: F.pdist(x[0, 0]),
    "renorm": lambda x: x.renorm(2, 0, 1.0),
    "interpolate": lambda x: F.interpolate(x, scale_factor=2.0, mode="bilinear"),
    "upsample": lambda x: F.upsample(x, scale_factor=2.0),
    "upsample_nearest": lambda x: F.upsample_nearest(x, scale_factor=2.0),
    "upsample_bilinear": lambda x: F.upsample_bilinear(x, scale_factor=2.0),
    "max_pool3d": lambda x: F.max_pool3d(x, 2),
    "avg_pool3d": lambda x: F.avg_pool3d(x, 2),
    "adaptive_avg_pool3d": lambda x: F.adaptive_avg_pool3d(x, 1),
    "adaptive_max_pool3d": lambda x: F.adaptive_max_pool3d(x, 1),
}


def test_every_name_in_the_lists_has_a_call() -> None:
    assert set(CALLS) == _CUDA_FLOAT32 | _CPU_FLOAT32


@pytest.mark.parametrize("name", sorted(_CUDA_FLOAT32 | _CPU_FLOAT32))
def test_autocast_lists_are_where_cuda_and_cpu_autocast_differ(name: str) -> None:
    """In _CUDA_FLOAT32: CUDA autocast gives float32, CPU autocast does not; in _CPU_FLOAT32 the other way;
    and under CudaKernels the CPU gives what CUDA gives."""
    import warnings

    call = CALLS[name]
    with FakeTensorMode(), warnings.catch_warnings():  # fake tensors: some CPU kernels have no bfloat16
        warnings.simplefilter("ignore")  # F.upsample's deprecation
        with cuda_autocast():
            on_cuda = call(torch.rand(_X, device="cuda", dtype=torch.bfloat16)).dtype
        x = torch.rand(_X, dtype=torch.bfloat16)
        with torch.autocast("cpu", torch.bfloat16):
            on_cpu = call(x).dtype
            with CudaKernels():
                emulated = call(x).dtype
    assert on_cuda != on_cpu
    assert on_cuda == (torch.float32 if name in _CUDA_FLOAT32 else torch.bfloat16)
    assert emulated == on_cuda


def test_reflection_padding_stays_in_half_precision_as_on_a_gpu() -> None:
    x = torch.rand(1, 2, 5, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        assert F.pad(x, (1, 1, 1, 1), mode="reflect").dtype == torch.float32  # CPU autocast: float32
        with CudaKernels():
            assert F.pad(x, (1, 1, 1, 1), mode="reflect").dtype == torch.bfloat16
            assert F.pad(x, (1, 1, 1, 1)).dtype == torch.bfloat16  # constant padding: no autocast anywhere
    with FakeTensorMode(), cuda_autocast():
        assert F.pad(
            torch.rand(1, 2, 5, 5, device="cuda", dtype=torch.bfloat16), (1, 1, 1, 1), mode="reflect"
        ).dtype == (torch.bfloat16)


class _AutocastAroundCheckpoint(nn.Module):
    """accelerate's ``prepare`` of a model with gradient checkpointing: an autocast region of ``device`` around a
    block that ``torch.utils.checkpoint`` runs again in the backward."""

    def __init__(self, device: str, reentrant: bool) -> None:
        super().__init__()
        self.device, self.reentrant = device, reentrant
        self.stem, self.out = nn.Linear(32, 64), nn.Linear(64, 10)
        self.block = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device, dtype=torch.bfloat16):
            h = torch.utils.checkpoint.checkpoint(self.block, self.stem(x), use_reentrant=self.reentrant)
            return self.out(h)


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_a_gpu_autocast_around_a_checkpointed_block_is_planned_as_a_gpu_runs_it(reentrant: bool) -> None:
    """Found by a probe (docs/memory.md's Limits): planned for device="cuda", torch's checkpoint took the step's
    fake CPU tensors for CPU ones, kept the CPU's autocast state (off) and ran the block again in float32 in the
    backward, where its saved bf16 tensors met float32 weights: MemoryPlanError, saying a real step raises it too.
    On a GPU the block runs again in the CUDA region's autocast; the plan now saves what a real CPU step of the
    same model with a CPU autocast region saves (the same casts for these layers)."""
    from models import measure_training_step
    from torchsurgeon import memory_plan

    torch.manual_seed(0)
    on_a_gpu, on_the_cpu = _AutocastAroundCheckpoint("cuda", reentrant), _AutocastAroundCheckpoint("cpu", reentrant)
    on_the_cpu.load_state_dict(on_a_gpu.state_dict())
    plan = memory_plan(on_a_gpu, (32,), batch=8, device="cuda")
    real = measure_training_step(on_the_cpu, torch.randn(8, 32))
    assert (plan.activations, plan.gradients) == (real.saved, real.gradients)
    assert plan.amp == "bfloat16"
