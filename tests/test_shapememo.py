"""Twin nodes (shapememo.twin_kinds): a node given the very values of an identical earlier one takes its result."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

import torchsurgeon.shapes
from models import on_meta
from torchsurgeon import TypedShape, paramcount, register_rule, unregister_rule
from torchsurgeon.graph import build_graph, graph_module_of, node_records
from torchsurgeon.records import LayerStatus, ShapeSource
from torchsurgeon.shapememo import ShapeMemo, sharing_inputs, twin_kinds
from torchsurgeon.shapes import propagate_shapes
from torchsurgeon.trace import trace


class Branches(nn.Module):
    """A stem, then two layers reading the stem's output side by side."""

    def __init__(self, stem: nn.Module, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.stem, self.a, self.b = stem, a, b

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        return self.a(x), self.b(x)


def _records(model: nn.Module, shape: tuple[int, ...], **options: Any) -> dict[str, Any]:
    return {rec.layer: rec for rec in propagate_shapes(build_graph(trace(model, **options)), shape).nodes.values()}


def test_identical_layers_reading_the_same_value_are_twins_and_take_one_result() -> None:
    model = Branches(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 3), nn.Conv2d(8, 4, 3))
    G = build_graph(trace(model))
    kinds = {n.target: twin_kinds(G).get(n) for n in graph_module_of(G).graph.nodes if n.op == "call_module"}
    assert kinds["a"] == kinds["b"] != kinds["stem"]
    recs = {rec.layer: rec for rec in propagate_shapes(G, (3, 10, 10)).nodes.values()}
    assert recs["a"].output_shape == recs["b"].output_shape == (1, 4, 8, 8)
    assert recs["a"].macs == recs["b"].macs == 4 * 8 * 9 * 64
    assert (recs["a"].name, recs["b"].name) == ("a", "b")  # each keeps its own identity


def test_twin_layers_that_do_not_fit_report_their_own_findings() -> None:
    # both convolutions expect 4 channels and get 6: each is invalid under its own name, with its own fix
    model = Branches(nn.Conv2d(3, 6, 1), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
    report = paramcount(model, (3, 10, 10))
    assert sorted(f.layer for f in report.findings) == ["a", "b"]
    for layer in ("a", "b"):
        row = report.layer(layer)
        assert row.status == LayerStatus.INVALID
        assert row.message.startswith(f"{layer} (Conv2d) expects in_channels=4, got 6")


CONV_SETTINGS: dict[str, Callable[[nn.Conv2d], None]] = {
    "stride": lambda m: setattr(m, "stride", (2, 1)),
    "padding": lambda m: setattr(m, "padding", (1, 2)),
    "dilation": lambda m: setattr(m, "dilation", (2, 2)),
    "padding 'same'": lambda m: setattr(m, "padding", "same"),
    "no bias": lambda m: setattr(m, "bias", None),
    "channels-last weight": lambda m: setattr(
        m, "weight", nn.Parameter(m.weight.to(memory_format=torch.channels_last))
    ),
}


@pytest.mark.parametrize("change", CONV_SETTINGS)
def test_layers_that_differ_in_one_setting_are_not_twins(change: str) -> None:
    a = nn.Conv2d(8, 4, 3)
    b = copy.deepcopy(a)
    CONV_SETTINGS[change](b)
    model = Branches(nn.Conv2d(3, 8, 1), a, b).eval()
    recs = _records(model, (3, 11, 13))
    real_a, real_b = model(torch.zeros(1, 3, 11, 13))
    assert recs["a"].output_shape == tuple(real_a.shape)
    assert recs["b"].output_shape == tuple(real_b.shape)


def test_leaf_layers_with_children_are_twins_only_when_their_children_are_alike() -> None:
    """A leaf holding a child (smp's same-padded conv holds its padding): its children's settings are part of what
    it computes; the same padding makes twins, another padding does not."""
    smp_efficientnet = pytest.importorskip("segmentation_models_pytorch.encoders._efficientnet")

    def padded(image_size: int) -> nn.Module:
        return smp_efficientnet.Conv2dStaticSamePadding(8, 4, 3, stride=2, image_size=image_size)

    for b, twins in ((padded(32), True), (padded(31), False)):  # padding (0, 1, 0, 1), then (1, 1, 1, 1)
        model = Branches(nn.Conv2d(3, 8, 1), padded(32), b).eval()
        G = build_graph(trace(model))
        kinds = {n.target: twin_kinds(G).get(n) for n in graph_module_of(G).graph.nodes if n.op == "call_module"}
        assert (kinds["a"] is not None and kinds["a"] == kinds["b"]) is twins
        recs = {rec.layer: rec for rec in propagate_shapes(G, (3, 32, 32)).nodes.values()}
        real_a, real_b = model(torch.zeros(1, 3, 32, 32))
        assert (recs["a"].output_shape, recs["b"].output_shape) == (tuple(real_a.shape), tuple(real_b.shape))


def test_layers_whose_weights_differ_in_dtype_are_not_twins() -> None:
    model = Branches(nn.Identity(), nn.Embedding(10, 4), nn.Embedding(10, 4).half())
    ids = torch.zeros(1, 5, dtype=torch.long)
    recs = {r.layer: r for r in propagate_shapes(build_graph(trace(model)), ids).nodes.values()}
    real_a, real_b = model(ids)
    assert (recs["a"].dtype, recs["b"].dtype) == (str(real_a.dtype).removeprefix("torch."), "float16")
    assert real_b.dtype == torch.float16


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 3),  # kernel
            st.integers(1, 2),  # stride
            st.integers(0, 2),  # padding
            st.integers(1, 2),  # dilation
        ),
        min_size=2,
        max_size=4,
    ),
    st.integers(9, 17),
)
@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_side_by_side_convolutions_each_get_the_shape_of_a_real_forward(
    convs: list[tuple[int, int, int, int]], size: int
) -> None:
    class Side(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(2, 4, 1)
            self.convs = nn.ModuleList(nn.Conv2d(4, 4, k, s, p, d) for k, s, p, d in convs)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            x = self.stem(x)
            return [torch.relu(conv(x)) for conv in self.convs]

    model = Side().eval()
    recs = _records(model, (2, size, size))
    real = model(torch.zeros(1, 2, size, size))
    for i, out in enumerate(real):
        assert recs[f"convs.{i}"].output_shape == tuple(out.shape)


class Counted(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_a_users_rule_runs_for_every_twin() -> None:
    calls: list[int] = []

    def shape(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls.append(id(module))
        return torch.empty(x.shape, device="meta")

    register_rule(Counted, shape=shape)
    try:
        model = Branches(nn.Identity(), Counted(), Counted())
        recs = _records(model, (3, 4, 4), leaf_modules=[Counted])
    finally:
        unregister_rule(Counted)
    assert calls == [id(model.a), id(model.b)]  # the user's code may read anything: it is never skipped
    assert recs["a"].shape_source == recs["b"].shape_source == ShapeSource.RULE
    assert recs["a"].status == recs["b"].status == LayerStatus.OK


class FrozenNorm(nn.Module):
    """transformers' DetrFrozenBatchNorm2d: its forward reshapes and combines its four buffers."""

    def __init__(self, width: int) -> None:
        super().__init__()
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.register_buffer(name, torch.rand(width) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + 1e-5).rsqrt()
        bias = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + bias


def test_norms_of_one_width_combine_their_buffers_once() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), FrozenNorm(8), nn.Conv2d(8, 8, 1), FrozenNorm(8), nn.Conv2d(8, 4, 1))
    model.append(FrozenNorm(4))
    G = build_graph(trace(model))
    graph = graph_module_of(G).graph
    from_input: set[torch.fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(a in from_input for a in node.all_input_nodes):
            from_input.add(node)
    scopes = {r.name: r.scope for r in node_records(G)}
    buffers_only = {  # the calls of each norm computed from its buffers alone
        scope: {
            n.name
            for n in graph.nodes
            if n.op in ("call_method", "call_function") and n not in from_input and scopes[n.name] == scope
        }
        for scope in ("1", "3", "5")
    }
    run: list[str] = []
    run_node = torchsurgeon.shapes._ShapeInterpreter._run_node

    def counted(self: Any, n: torch.fx.Node) -> Any:
        run.append(n.name)
        return run_node(self, n)

    with mock.patch.object(torchsurgeon.shapes._ShapeInterpreter, "_run_node", counted):
        with_twins = propagate_shapes(G, (3, 5, 6)).nodes
    assert len(buffers_only["3"]) == 9  # 4 reshapes, +, rsqrt, 2 *, -
    assert buffers_only["1"] & set(run) and buffers_only["5"] & set(run)  # the first norm of each width computes
    assert not buffers_only["3"] & set(run)  # the second norm of width 8 takes the first one's results
    with mock.patch.object(torchsurgeon.shapes, "twin_kinds", lambda G: {}):
        alone = propagate_shapes(G, (3, 5, 6)).nodes
    assert [r.analysis for r in with_twins.values()] == [r.analysis for r in alone.values()]
    ShapeProp(graph_module_of(G)).propagate(torch.zeros(1, 3, 5, 6))  # a real forward
    for node in graph.nodes:
        if node.op != "output":
            assert with_twins[node.name].output_shape == tuple(node.meta["tensor_meta"].shape), node.name


ZOO = ("resnet50", "vit_b_16", "convnext_tiny", "swin_t", "efficientnet_b0", "mobilenet_v3_large", "densenet121")


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
@pytest.mark.parametrize("name", ZOO)
def test_twins_give_every_node_the_record_it_gets_when_run(name: str) -> None:
    G = build_graph(trace(on_meta(getattr(torchvision.models, name))))
    memo = ShapeMemo(G)
    for shape in ((3, 224, 224), (1, 224, 224), (3, 96, 128)):
        with_twins = propagate_shapes(G, shape).nodes
        with_memo = propagate_shapes(G, shape, memo=memo).nodes
        with mock.patch.object(torchsurgeon.shapes, "twin_kinds", lambda G: {}):
            alone = propagate_shapes(G, shape).nodes
        assert [r.analysis for r in with_twins.values()] == [r.analysis for r in alone.values()]
        assert [r.analysis for r in with_memo.values()] == [r.analysis for r in alone.values()]
    assert len(twin_kinds(G)) > len(set(twin_kinds(G).values()))  # it has twins
    assert all(rec.layer for rec in node_records(G) if rec.op == "call_module")


def test_inputs_share_a_memo_when_one_size_apart() -> None:
    image = {"x": (3, 64, 64)}
    assert sharing_inputs([image, {"x": (1, 64, 64)}, {"x": (3, 64, 80)}]) == [True, True, True]
    assert sharing_inputs([image, {"x": (3, 80, 80)}, {"x": (1, 96, 96)}]) == [False, False, False]
    assert sharing_inputs([image, {"x": (3, 64)}]) == [False, False]  # another rank
    assert sharing_inputs([image, {"x": TypedShape((3, 64, 64), "bf16")}]) == [False, False]  # another dtype
    assert sharing_inputs([image, {"x": torch.empty(1, 3, 64, 64)}]) == [False, False]  # batch given, dtype named
    two = {"x": (3, 64, 64), "mask": (1, 64, 64)}
    assert sharing_inputs([two, {"x": (3, 64, 64), "mask": (2, 64, 64)}, {"x": (4, 64, 64), "mask": (2, 64, 64)}]) == [
        True,
        True,
        True,
    ]
    assert sharing_inputs([two, {"x": (4, 64, 64), "mask": (2, 64, 64)}]) == [False, False]
    assert sharing_inputs([image]) == [False]
