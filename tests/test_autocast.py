"""torch.autocast's output dtypes, which meta tensors do not get: the lists against torch's own autocast, and
shape propagation with them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from models import cuda_autocast
from torchsurgeon import paramcount
from torchsurgeon.autocast import LOWER_PRECISION, autocast_dtype, op_name
from torchsurgeon.graph import node_record

_W = (8, 8)
# a call for every name in LOWER_PRECISION, on float32 tensors (x: 2 x 8 x 8)
CALLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "conv1d": lambda x: F.conv1d(x, x.new_ones(8, 8, 3)),
    "conv2d": lambda x: F.conv2d(x[None], x.new_ones(2, 2, 3, 3)),
    "conv3d": lambda x: F.conv3d(x[None, None], x.new_ones(2, 1, 1, 3, 3)),
    "conv_transpose1d": lambda x: F.conv_transpose1d(x, x.new_ones(8, 2, 3)),
    "conv_transpose2d": lambda x: F.conv_transpose2d(x[None], x.new_ones(2, 2, 3, 3)),
    "conv_transpose3d": lambda x: F.conv_transpose3d(x[None, None], x.new_ones(1, 2, 1, 3, 3)),
    "linear": lambda x: F.linear(x, x.new_ones(_W)),
    "matmul": lambda x: x @ x,
    "mm": lambda x: torch.mm(x[0], x[1]),
    "bmm": lambda x: torch.bmm(x, x),
    "baddbmm": lambda x: torch.baddbmm(x, x, x),
    "addmm": lambda x: torch.addmm(x[0], x[0], x[1]),
    "addbmm": lambda x: torch.addbmm(x[0], x, x),
    "prelu": lambda x: F.prelu(x, x.new_ones(8)),
    "scaled_dot_product_attention": lambda x: F.scaled_dot_product_attention(x, x, x),
    "multi_head_attention_forward": lambda x: F.multi_head_attention_forward(
        x,
        x,
        x,
        8,
        2,
        x.new_ones(24, 8),
        x.new_ones(24),
        None,
        None,
        False,
        0.0,
        x.new_ones(_W),
        x.new_ones(8),
        training=False,
        need_weights=False,
    )[0],
}


def test_every_name_in_the_list_has_a_call() -> None:
    assert set(CALLS) == LOWER_PRECISION


@pytest.mark.parametrize("name", sorted(LOWER_PRECISION))
def test_lower_precision_ops_give_the_blocks_dtype_on_both_devices(name: str) -> None:
    """Checked against torch's autocast on fake tensors (CUDA's kernels without a GPU)."""
    call = CALLS[name]
    with FakeTensorMode():
        with cuda_autocast():
            on_cuda = call(torch.rand(2, 8, 8, device="cuda")).dtype
        with torch.autocast("cpu", torch.bfloat16):
            on_cpu = call(torch.rand(2, 8, 8)).dtype
    for device, real in (("cuda", on_cuda), ("cpu", on_cpu)):
        assert real == torch.bfloat16 == autocast_dtype(name, [torch.float32], ((device, torch.bfloat16),))


def test_float64_and_ops_in_no_list_keep_the_inputs_dtype() -> None:
    bf16 = (("cpu", torch.bfloat16),)
    assert (
        autocast_dtype("linear", [torch.float64], bf16) is None
        and autocast_dtype("relu", [torch.float32], bf16) is None
    )
    assert (
        op_name("call_module", "proj", nn.Conv2d(1, 1, 1)) == "conv2d"
        and op_name("call_method", "__matmul__") == "matmul"
    )


class _AutocastThenFloat32(nn.Module):
    """A layer inside the model's bfloat16 autocast block feeding a float32 layer outside it."""

    def __init__(self, cast_back: bool) -> None:
        super().__init__()
        self.inside, self.outside, self.cast_back = nn.Linear(4, 4), nn.Linear(4, 2), cast_back

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.inside(x)
            with torch.autocast("cpu", enabled=False):
                z = torch.relu(y)  # autocast off: the input's dtype
        return self.outside(z.float() if self.cast_back else z)


@pytest.mark.parametrize("cast_back", [False, True])
def test_an_autocast_blocks_output_dtype_is_the_real_forwards(cast_back: bool) -> None:
    """Found by a probe: the block's output was float32 on meta, and the float32 layer after it was reported
    fitting, trusted, while a real forward raises (mat1 and mat2 must have the same dtype)."""
    model = _AutocastThenFloat32(cast_back)
    report = paramcount(model, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real = model.inside(torch.randn(1, 4)).dtype
    assert node_record(report.graph, "inside").dtype == str(real).removeprefix("torch.") == "bfloat16"
    assert node_record(report.graph, "relu").dtype == "bfloat16"
    if cast_back:
        assert model(torch.randn(1, 4)).shape == (1, 2) and report.invalid == []
    else:
        with pytest.raises(RuntimeError, match="same dtype"):
            model(torch.randn(1, 4))
        assert [layer.name for layer in report.invalid] == ["outside"] and report.trusted
