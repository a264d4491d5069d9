"""MACs/FLOPs from propagated shapes against FlopCounterMode, fvcore and hand counts."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models import LlamaDecoder, on_meta
from torchsurgeon import paramcount
from torchsurgeon.flops import FlopKind, count_flops
from torchsurgeon.graph import build_graph
from torchsurgeon.shapes import propagate_shapes
from torchsurgeon.trace import trace


def _flop_counter(model: nn.Module, *inputs: torch.Tensor) -> dict[str, int]:
    """FlopCounterMode's totals per aten op, running ``model`` (on meta, nothing is computed)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


def _analysed(model: nn.Module, shape: tuple[int, ...], batch: int = 1) -> object:
    G = build_graph(trace(model))
    propagate_shapes(G, shape, batch=batch)
    return count_flops(G)


@pytest.mark.parametrize("name", ["resnet50", "vit_b_16"])
def test_flops_agree_with_flop_counter_mode(name: str) -> None:
    model = on_meta(torchvision.models.get_model, name=name)
    counted = _flop_counter(model, torch.empty(2, 3, 224, 224, device="meta"))
    summary = _analysed(model, (3, 224, 224), batch=2)
    assert summary.matmul_flops == sum(counted.values())
    by_kind = {kind: 2 * sum(f.macs for f in summary.layers.values() if f.kind == kind) for kind in FlopKind}
    assert by_kind[FlopKind.CONV] == counted.pop("aten.convolution")
    # linear layers and attention (projections, q @ k^T, weights @ v): addmm, mm and bmm
    assert by_kind[FlopKind.LINEAR] + by_kind[FlopKind.ATTENTION] == sum(counted.values())
    assert summary.uncounted == ()


def test_report_totals_and_table_column() -> None:
    report = paramcount(on_meta(torchvision.models.resnet18), (3, 64, 64), batch=2)
    assert report.macs == sum(layer.macs for layer in report.layers)
    assert report.flops == sum(layer.flops for layer in report.layers)
    norms = sum(layer.flops for layer in report.layers if layer.type == "BatchNorm2d")
    assert report.flops == 2 * report.macs + norms > 0
    text = str(report)
    assert f"{report.macs:,}" in next(line for line in text.splitlines() if line.startswith("MACs:"))
    fc = report.layer("fc")
    fc_row = next(line for line in text.splitlines() if line.startswith("fc "))
    assert fc.macs == 2 * 512 * 1000 and f" {fc.macs:,} " in fc_row
    rows = [line for line in text.splitlines() if line.endswith(("ok", "invalid"))]
    top = [row for row in rows if not row.startswith(" ")]  # blocks' totals: the indented rows are inside them
    column = sum(int(row.split()[-2].replace(",", "")) for row in top if row.split()[-2] != "-")
    assert column == report.macs  # the printed MACs column sums to the printed total
    assert len(top) < len(rows)  # resnet18 is printed by blocks (layer1, layer1.0, ...)
    assert report.to_dict()["macs"] == report.macs
    assert report.to_dict()["layers"][0]["macs"] == report.layers[0].macs


def test_macs_by_hand() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
            self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
            self.fc = nn.Linear(6, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.up(self.conv(x)).permute(0, 2, 3, 1)  # (N, 16, 16, 6)
            z = self.fc(y)
            return z @ z.transpose(-1, -2)

    s = _analysed(Net(), (4, 16, 16), batch=3)
    assert s.layers["conv"].macs == 3 * 8 * 8 * 8 * (4 // 2) * 9
    assert s.layers["up"].macs == 3 * 8 * 8 * 4 * 8 * (6 // 1)  # input positions x kernel x in x out/groups
    assert s.layers["fc"].macs == 3 * 16 * 16 * 6 * 5
    assert s.layers["matmul"].macs == 3 * 16 * 16 * 5 * 16
    counted = _flop_counter(Net(), torch.zeros(3, 4, 16, 16))
    assert s.matmul_flops == sum(counted.values())


def test_transposed_and_grouped_convs_agree_with_flop_counter_mode() -> None:
    net = nn.Sequential(
        nn.Conv1d(6, 9, 3, groups=3, dilation=2),
        nn.ConvTranspose1d(9, 4, 3, stride=2, groups=1, output_padding=1),
    )
    s = _analysed(net, (6, 20), batch=2)
    assert s.matmul_flops == sum(_flop_counter(net, torch.zeros(2, 6, 20)).values())


def test_attention_agrees_with_flop_counter_mode() -> None:
    with torch.device("meta"):
        mha = nn.MultiheadAttention(16, 4, batch_first=True, kdim=8, vdim=8)
    q, kv = torch.empty(2, 5, 16, device="meta"), torch.empty(2, 7, 8, device="meta")

    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return self.mha(q, kv, kv, need_weights=False)[0]

    G = build_graph(trace(Attend()))
    propagate_shapes(G, (q, kv))
    s = count_flops(G)
    assert s.layers["mha"].kind == FlopKind.ATTENTION
    assert s.matmul_flops == sum(_flop_counter(Attend(), q, kv).values())


def test_llama_macs_by_hand_and_flop_counter_mode() -> None:
    model = LlamaDecoder(vocab=64, dim=32, layers=2, heads=4, hidden=48)
    seq, batch = 9, 2
    report = paramcount(model, (seq,), batch=batch)
    per_layer = seq * (4 * 32 * 32 + 3 * 32 * 48) + seq * seq * 32 * 2
    assert report.macs == batch * (2 * per_layer + seq * 32 * 64)
    # on meta: the CPU flash-attention kernel is not seen by FlopCounterMode, meta's math decomposition is
    counted = _flop_counter(model.to("meta"), torch.zeros(batch, seq, dtype=torch.long, device="meta"))
    assert 2 * report.macs == sum(counted.values())
    rms = [layer for layer in report.layers if layer.type == "RMSNorm"]
    assert len(rms) == 5 and all(layer.flops == batch * seq * 32 * 4 for layer in rms)


def test_norm_flops_follow_fvcore() -> None:
    fvcore = pytest.importorskip("fvcore.nn")
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.GroupNorm(2, 8),
        nn.Flatten(2),
        nn.LayerNorm(36),
        nn.LayerNorm(36, elementwise_affine=False),
    )
    x = torch.zeros(2, 3, 8, 8)
    for training in (False, True):
        net.train(training)
        s = _analysed(net, (3, 8, 8), batch=2)
        by_op = fvcore.FlopCountAnalysis(net, x).unsupported_ops_warnings(False).by_operator()
        want = sum(by_op[op] for op in ("batch_norm", "group_norm", "layer_norm"))
        assert s.norm_flops == want
        assert s.layers["_1"].flops == 2 * 8 * 6 * 6 * (5 if training else 2)


def test_macs_scale_with_batch_and_size() -> None:
    model = on_meta(torchvision.models.resnet18)
    one = paramcount(model, (3, 64, 64))
    four = paramcount(model, (3, 64, 64), batch=4)
    assert four.macs == 4 * one.macs
    bigger = paramcount(model, (3, 128, 128))
    assert 3.5 * one.macs < bigger.macs < 4.5 * one.macs


def test_uncounted_layers_are_listed_not_zeroed() -> None:
    class Opaque(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bi,ij->bj", x, self.w)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Opaque()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.inner(x))

    report = paramcount(Net(), (4,))
    assert report.flops_uncounted == ("inner",)  # the einsum reads inner.w: named by the module that owns it
    assert report.macs == 16
    assert "FLOPs not counted" in str(report) and "inner" in str(report).splitlines()[-1]
    leaf = paramcount(Net(), (4,), leaf_modules=["inner"])
    assert leaf.flops_uncounted == ("inner",)
