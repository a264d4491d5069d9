"""MACs/FLOPs from propagated shapes against FlopCounterMode, fvcore and hand counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models import HandWrittenConv, LlamaDecoder, on_meta
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


class _AddedProducts(nn.Module):
    """Bloom's ``scores.baddbmm(q, k)`` with ALiBi, addmm and addbmm, as functions and methods."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(7, 4))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = q.new_zeros(q.shape[0], q.shape[1], k.shape[2]).baddbmm(q, k, beta=0.5, alpha=2.0)
        flat = torch.addmm(q.new_zeros(1, 4), scores.flatten(0, 1), self.w)  # (B*L, 7) @ (7, 4)
        summed = q.new_zeros(q.shape[1], k.shape[2]).addbmm(q, k)
        return flat.sum() + summed.sum() + torch.baddbmm(scores, q, k).sum()


def _pool_like_open_clip(x: torch.Tensor, mha: nn.MultiheadAttention, out: nn.Linear, every: bool) -> torch.Tensor:
    """open_clip's AttentionPool2d: the mean and every position attend to each other, separate projections,
    an output projection to another width (``every=False``: only the mean queries)."""
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    return F.multi_head_attention_forward(
        query=x if every else x[:1],
        key=x,
        value=x,
        embed_dim_to_check=x.shape[-1],
        num_heads=mha.num_heads,
        q_proj_weight=mha.q_proj_weight,
        k_proj_weight=mha.k_proj_weight,
        v_proj_weight=mha.v_proj_weight,
        in_proj_weight=None,
        in_proj_bias=mha.in_proj_bias,
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=out.weight,
        out_proj_bias=out.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )[0]


@pytest.mark.parametrize("case", ["added products", "functional attention", "functional attention, one query"])
def test_matrix_products_without_a_module_agree_with_flop_counter_mode(case: str) -> None:
    if case == "added products":
        model: nn.Module = _AddedProducts()
        inputs = (torch.empty(3, 5, 6, device="meta"), torch.empty(3, 6, 7, device="meta"))
    else:
        with torch.device("meta"):
            mha = nn.MultiheadAttention(16, 4, kdim=16, vdim=16)
            mha.in_proj_weight = None  # separate projections, as open_clip holds them
            mha.q_proj_weight = nn.Parameter(torch.empty(16, 16))
            mha.k_proj_weight = nn.Parameter(torch.empty(16, 16))
            mha.v_proj_weight = nn.Parameter(torch.empty(16, 16))

            out = nn.Linear(16, 8)

        class Pool(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.mha, self.c_proj = mha, out

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return _pool_like_open_clip(x, self.mha, self.c_proj, every=case == "functional attention")

        model, inputs = Pool(), (torch.empty(9, 2, 16, device="meta"),)
    report = paramcount(model, tuple(inputs))
    assert report.flops_uncounted == ()
    # FlopCounterMode has no formula for addbmm: counted by hand, a batched (5, 6) @ (6, 7) summed over 3
    by_hand = report.layer("addbmm").macs if case == "added products" else 0
    assert by_hand == (3 * 5 * 6 * 7 if case == "added products" else 0)
    assert 2 * (report.macs - by_hand) == sum(_flop_counter(model.to("meta"), *inputs).values()) > 0


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
            return torch.einsum("bi,ij,jk->bk", x, self.w, self.w)  # three operands: the path is torch's choice

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


def _lifted(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, int]:
    """torchvision MViT's ``_unsqueeze``: a view, recorded as one call (``torch.fx.wrap``)."""
    rank = x.dim()
    return (x.unsqueeze(dim) if rank == 3 else x), rank


def _dropped(x: torch.Tensor, dim: int, rank: int) -> torch.Tensor:
    """torchvision MViT's ``_squeeze``."""
    return x.squeeze(dim) if rank == 3 else x


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """MViT's ``_add_rel_pos`` in small: products inside a function recorded as one call."""
    return torch.einsum("bnd,bmd->bnm", q, k) / q.shape[-1] ** 0.5 + q.sum(-1, keepdim=True)


torch.fx.wrap("_lifted")
torch.fx.wrap("_dropped")
torch.fx.wrap("_scores")


class _WrappedCalls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, rank = _lifted(self.proj(x), 1)
        return _scores(_dropped(y, 1, rank), x)


def test_a_function_recorded_as_one_call_counts_the_ops_it_runs() -> None:
    """Found by a probe: torchvision's mvit_v2_s listed 135 layers as not counted, 103 of them its wrapped
    ``_unsqueeze`` / ``_squeeze`` views; a wrapped function is now counted by the torch calls it makes."""
    model = _WrappedCalls()
    graph = trace(model).graph_module.graph
    assert [n.target for n in graph.nodes if n.op == "call_function"][:1] == [_lifted]  # one call, as in MViT
    x = torch.randn(2, 5, 8)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    report = paramcount(model, x)
    assert (report.macs, report.flops_uncounted) == (counter.get_total_flops() // 2, ())


EINSUMS = (
    "bi,ij->bj",
    "blxd,blyd->blxy",
    "bhqk,bhkd->bhqd",
    "ij,jk->i",
    "ijk,ik->j",
    "i,j->ij",
    "ij,ij->ij",
    "ij,ij->",
    "ab,bc",
    "ab , bc -> ac",
)


@pytest.mark.parametrize("equation", EINSUMS)
def test_einsum_of_two_operands_counts_what_flop_counter_mode_counts(equation: str) -> None:
    left, right = (part.strip() for part in equation.split("->")[0].split(","))
    sizes = dict(zip("abcdhijklqxy", (2, 3, 4, 5, 2, 3, 4, 5, 3, 4, 2, 3)))

    class Einsum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn([sizes[i] for i in right]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum(equation, x, self.w)

    model = Einsum()
    x = torch.randn([sizes[i] for i in left])
    with FlopCounterMode(display=False) as counter:
        out = model(x)
    report = paramcount(model, x)  # the tensor as it is, batch included
    assert (report.macs, report.flops_uncounted) == (counter.get_total_flops() // 2, ())
    assert report.output_shape == tuple(out.shape)


@pytest.mark.parametrize(
    ("equation", "x_shape", "w_shape"),
    [
        ("bcxy,oc->boxy", (3, 2, 7, 1), (5, 1)),  # c is 1 in w: broadcast, summed in x first
        ("bcxy,oc->boxy", (3, 1, 4, 4), (5, 1)),  # c is 1 in both: squeezed, an element-wise product
        ("bte,eo->bto", (2, 3, 4), (1, 4)),
        ("bij,bjk->bik", (2, 3, 1), (2, 1, 5)),
        ("bij,bjk->bik", (1, 3, 4), (2, 4, 5)),  # b is 1 in x: broadcast in the output, j still contracted
    ],
)
def test_einsum_with_a_size_1_index_counts_what_flop_counter_mode_counts(
    equation: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...]
) -> None:
    """A contracted index of size 1 in one operand broadcasts: torch sums it in the other operand first (no
    product), and it was counted as contracted (fuzzer probe 30: 210 MACs where FlopCounterMode counts 0)."""

    class Einsum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(w_shape))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum(equation, x, self.w)

    model, x = Einsum(), torch.randn(x_shape)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
    report = paramcount(model, x_shape[1:], batch=x_shape[0])
    assert (report.macs, report.flops_uncounted) == (counter.get_total_flops() // 2, ())
    assert report.output_shape == tuple(out.shape)


# --------------------------------------------------------------------------- recurrent layers
# Hand counts: MACs per token (time step × batch element), per layer and direction, are
# gates × hidden × (layer input + hidden); 4 gates for an LSTM, 3 for a GRU, 1 for an RNN.


def test_lstm_macs_against_a_hand_count() -> None:
    # LSTM(10, 20, num_layers=2, bidirectional=True) on (seq 5, batch 3): 15 tokens.
    #   layer 0, per direction: 4 × 20 × (10 + 20) = 2,400   → 2 directions: 4,800
    #   layer 1 reads both directions (40 features): 4 × 20 × (40 + 20) = 4,800 → 2 directions: 9,600
    #   per token 14,400; × 15 tokens = 216,000 MACs, 432,000 FLOPs
    lstm = nn.LSTM(10, 20, num_layers=2, bidirectional=True)
    r = paramcount(lstm, torch.zeros(5, 3, 10))
    assert (r.macs, r.flops, r.flops_uncounted) == (216_000, 432_000, ())
    assert r.output_shape == ((5, 3, 40), ((4, 3, 20), (4, 3, 20)))  # output, (h_n, c_n): layers × directions
    first = nn.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True)
    r = paramcount(first, (5, 10), batch=3)  # batch first: (3, 5, 10), the same 15 tokens
    assert r.macs == 216_000 and r.output_shape == ((3, 5, 40), ((4, 3, 20), (4, 3, 20)))
    assert r.layers[0].flops == 432_000
    s = count_flops(r.graph)
    assert [(f.macs, f.kind) for f in s.layers.values()] == [(216_000, FlopKind.RECURRENT)]


@pytest.mark.parametrize(
    ("layer", "x", "macs", "output"),
    [
        # GRU(10, 20) on (5, 3, 10): 15 tokens × 3 × 20 × (10 + 20) = 15 × 1,800 = 27,000
        (nn.GRU(10, 20), (5, 3, 10), 27_000, ((5, 3, 20), (1, 3, 20))),
        # RNN(10, 20, num_layers=2) on (5, 3, 10): 15 × (20 × 30 + 20 × (20 + 20)) = 15 × 1,400 = 21,000
        (nn.RNN(10, 20, num_layers=2), (5, 3, 10), 21_000, ((5, 3, 20), (2, 3, 20))),
        # unbatched GRU on (7, 4): 7 tokens × 3 × 8 × (4 + 8) = 2,016
        (nn.GRU(4, 8), (7, 4), 2_016, ((7, 8), (1, 8))),
        # LSTM(10, 20, proj_size=7): per token 4 × 20 × (10 + 7) + 20 × 7 = 1,360 + 140 = 1,500; × 15 = 22,500
        (nn.LSTM(10, 20, proj_size=7), (5, 3, 10), 22_500, ((5, 3, 7), ((1, 3, 7), (1, 3, 20)))),
        # LSTMCell(10, 20) on (3, 10): 3 × 4 × 20 × 30 = 7,200
        (nn.LSTMCell(10, 20), (3, 10), 7_200, ((3, 20), (3, 20))),
        # GRUCell(10, 20): 3 × 3 × 20 × 30 = 5,400; RNNCell: 3 × 20 × 30 = 1,800
        (nn.GRUCell(10, 20), (3, 10), 5_400, (3, 20)),
        (nn.RNNCell(10, 20, nonlinearity="relu"), (3, 10), 1_800, (3, 20)),
    ],
)
def test_recurrent_macs_against_hand_counts(
    layer: nn.Module, x: tuple[int, ...], macs: int, output: tuple[object, ...]
) -> None:
    r = paramcount(layer, torch.zeros(x))
    assert (r.macs, r.flops, r.output_shape) == (macs, 2 * macs, output)
    assert r.layers[0].macs == macs and r.flops_uncounted == ()


class _Tagger(nn.Module):
    """A recurrent layer inside a model, its hidden state fed to a head."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(6, 8, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out)


def test_recurrent_macs_agree_with_flop_counter_mode() -> None:
    # FlopCounterMode sees the per-step addmm/mm of the native CPU kernels (oneDNN off: its fused LSTM counts 0)
    model, x = _Tagger(), torch.randn(2, 9, 6)
    with torch.backends.mkldnn.flags(enabled=False):
        counted = _flop_counter(model, x)
        lstm = nn.LSTM(6, 8, num_layers=3, bidirectional=True, proj_size=4)
        lstm_counted = _flop_counter(lstm, x)
    r = paramcount(model, (9, 6), batch=2)
    assert r.flops == sum(counted.values()) == 2 * (r.layer("rnn").macs + r.layer("head").macs)
    assert paramcount(lstm, x).flops == sum(lstm_counted.values()) > 0


def test_packed_sequences_count_the_tokens_they_hold() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence

    from torchsurgeon.rules import module_rule

    gru = nn.GRU(4, 8)
    packed = pack_padded_sequence(torch.zeros(5, 2, 4), torch.tensor([5, 2]))  # 7 tokens, padding excluded
    found = module_rule(nn.GRU)
    assert found is not None and found[0].macs is not None
    # 7 × 3 × 8 × (4 + 8) = 2,016: the formula the registry applies to a GRU's call
    assert found[0].macs(gru, (packed,), {}, gru(packed)) == 2_016


class _Upsampler(nn.Module):
    """Calls ``F.conv_transposeNd`` on its own weight (LowFormer's ConvAttention upsamples so)."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims
        self.weight = nn.Parameter(torch.randn(8, 4, *(3,) * dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transposed = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.dims - 1]
        return transposed(x, self.weight, None, 2, 1)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("leaf", [False, True])
def test_functional_transposed_convolutions_are_counted(dims: int, leaf: bool) -> None:
    """A call_function node, and a leaf layer counted by the calls it makes: both counted 0, listed nowhere."""
    model = nn.Sequential(nn.Conv1d(3, 8, 1) if dims == 1 else (nn.Conv2d if dims == 2 else nn.Conv3d)(3, 8, 1))
    model.append(_Upsampler(dims))
    shape = (3, *(5,) * dims)
    want = sum(_flop_counter(model, torch.randn(2, *shape)).values())
    report = paramcount(model, shape, batch=2, leaf_modules=[_Upsampler] if leaf else ())
    assert 2 * report.macs == want and report.flops_uncounted == ()


def test_products_without_a_formula_are_uncounted_not_zero() -> None:
    class Scorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 6, 6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.inner(F.bilinear(x, x, self.w), x[:, :5])

    report = paramcount(Scorer(), (6,), batch=2)
    assert report.output_shape == (2, 2) and len(report.flops_uncounted) == 2


def test_an_invalid_functional_conv_counts_as_resized_to_fit_as_a_conv_module_does() -> None:
    """Found by a probe: timm's StdConv2d at 1 channel counted the MACs of its 3-channel weight (55,296 for a 3 → 8
    channel 3×3 conv on 16×16), an nn.Conv2d those of the conv resized to fit (the 1-channel input's)."""
    model = nn.Sequential(HandWrittenConv())  # F.conv2d(x, self.weight * self.g): 3 → 8 channels, 3×3
    grey = torch.empty(1, 1, 16, 16, device="meta")
    resized = _flop_counter(lambda x: F.conv2d(x, torch.empty(8, 1, 3, 3, device="meta")), grey)
    report = paramcount(model, (1, 16, 16))
    assert report.layer("0").status == "invalid"
    assert (
        2 * report.layer("0").macs
        == resized["aten.convolution"]
        == 2 * paramcount(nn.Conv2d(3, 8, 3), (1, 16, 16)).macs
    )
