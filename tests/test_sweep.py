"""paramcount_sweep: one trace, many inputs, the same reports as one paramcount per input."""

from __future__ import annotations

import copy
from unittest import mock

import networkx as nx
import pytest
import torch
import torchvision
from torch import nn

import torchsurgeon.analysis
from models import CifarNet, TwoInputs, bert_of_64_positions, on_meta
from torchsurgeon import InputError, ShapeError, TypedShape, paramcount, paramcount_sweep
from torchsurgeon.graph import build_graph, node_record
from torchsurgeon.shapememo import ShapeMemo
from torchsurgeon.shapes import propagate_shapes
from torchsurgeon.trace import trace

SHAPES = [(1, 224, 224), (3, 224, 224), (4, 224, 224), (3, 512, 512), (3, 97, 131)]


def test_sweep_reports_equal_one_paramcount_per_input() -> None:
    model = on_meta(torchvision.models.resnet18)
    reports = paramcount_sweep(model, SHAPES, batch=2)
    assert len(reports) == len(SHAPES)
    for shape, report in zip(SHAPES, reports):
        assert report.to_dict() == paramcount(model, shape, batch=2).to_dict()
    assert [r.total_for_input for r in reports[:3]] == [
        11689512 - 64 * 2 * 49,
        11689512,
        11689512 + 64 * 49,
    ]
    assert {r.output_shape for r in reports} == {(2, 1000)}


def test_sweep_traces_once() -> None:
    with mock.patch.object(torchsurgeon.analysis, "trace", wraps=torchsurgeon.analysis.trace) as traced:
        paramcount_sweep(CifarNet(), [(3, 32, 32), (1, 32, 32), (3, 40, 40)])
    assert traced.call_count == 1


def test_sweep_reports_do_not_share_graphs() -> None:
    first, second = paramcount_sweep(CifarNet(), [(1, 32, 32), (3, 32, 32)])
    assert node_record(first.graph, "conv1").status == "invalid"
    assert node_record(second.graph, "conv1").status == "ok"
    assert first.layer("conv1").status == "invalid" and second.invalid == []


def test_sweep_report_graph_is_made_on_first_use_as_it_was() -> None:
    first, second, third = paramcount_sweep(CifarNet(), [(1, 32, 32), (3, 40, 40), (3, 32, 32)])
    assert not isinstance(first._graph, nx.DiGraph)  # kept as records until asked for
    graph = first.graph
    assert first.graph is graph  # made once
    assert node_record(graph, "conv1").input_shapes == ((1, 1, 32, 32),)  # not the later inputs' records
    assert node_record(second.graph, "fc1").input_shapes == ((1, 16 * 7 * 7),)
    assert sorted(graph.edges) == sorted(third.graph.edges) and set(graph.nodes) == set(third.graph.nodes)
    assert graph.graph["model"] is third.graph.graph["model"]


def test_sweep_with_several_inputs_and_mappings() -> None:
    reports = paramcount_sweep(TwoInputs(), [((3, 8, 8), (1, 8, 8)), ((3, 16, 16), (1, 16, 16))])
    assert [r.output_shape for r in reports] == [(1, 4, 8, 8), (1, 4, 16, 16)]
    by_name = paramcount_sweep(TwoInputs(), [{"image": (3, 8, 8), "mask": (1, 8, 8)}])
    assert by_name[0].output_shape == (1, 4, 8, 8)


def test_sweep_leaves_the_model_alone() -> None:
    model = CifarNet().train()
    before = copy.deepcopy(model.state_dict())
    paramcount_sweep(model, [(1, 32, 32), (3, 64, 64)])
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sweep_errors() -> None:
    with pytest.raises(InputError, match="at least one input shape"):
        paramcount_sweep(CifarNet(), [])
    with pytest.raises(InputError, match="different forward arguments"):
        paramcount_sweep(TwoInputs(), [((3, 8, 8), (1, 8, 8)), {"image": (3, 8, 8)}])
    with pytest.raises(InputError, match="dimension 0 is 0"):
        paramcount_sweep(CifarNet(), [(3, 32, 32), (0, 32, 32)])
    with pytest.raises(ShapeError, match="input rank"):
        paramcount_sweep(nn.Sequential(nn.Conv2d(3, 4, 3)), [(3, 8, 8), (8,)])


class _Mixed(nn.Module):
    """Rules and meta fallbacks (logcumsumexp has no rule) after the first conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logcumsumexp(self.conv(x), dim=-1).mean((2, 3))


def test_shape_memo_reuses_unchanged_nodes_only() -> None:
    G = build_graph(trace(_Mixed()))
    memo = ShapeMemo(G)
    first = propagate_shapes(G, (3, 8, 8), memo=memo)
    assert memo.hits == 0
    second = propagate_shapes(G, (1, 8, 8), memo=memo)  # conv differs, its output does not
    assert memo.hits >= 2
    assert {n: r.output_shape for n, r in second.nodes.items() if n != "x"} == {
        n: r.output_shape for n, r in first.nodes.items() if n != "x"
    }
    assert second.nodes["conv"].status == "invalid" and first.nodes["conv"].status == "ok"
    assert second.nodes["logcumsumexp"].shape_source == "meta" and second.nodes["logcumsumexp"].output_shape == (
        1,
        4,
        6,
        6,
    )
    third = propagate_shapes(G, (3, 10, 10), memo=memo)
    assert third.output_shape == (1, 4) and third.nodes["logcumsumexp"].output_shape == (1, 4, 8, 8)
    assert paramcount_sweep(_Mixed(), [(3, 8, 8), (1, 8, 8), (3, 10, 10)])[1].to_dict() == (
        paramcount(_Mixed(), (1, 8, 8)).to_dict()
    )


def test_shape_memo_belongs_to_one_graph() -> None:
    G, other = build_graph(trace(CifarNet())), build_graph(trace(CifarNet()))
    with pytest.raises(InputError, match="another graph"):
        propagate_shapes(G, (3, 32, 32), memo=ShapeMemo(other))


def test_shape_memo_is_off_for_graphs_that_reshape_in_place() -> None:
    class InPlace(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.unsqueeze_(0)

    memo = ShapeMemo(build_graph(trace(InPlace())))
    assert not memo.enabled


def test_a_constant_of_another_type_is_not_a_twin() -> None:
    """Found by a differential probe: ``y * 2`` and ``y * 2.0`` (2 == 2.0, one hash) were twins, and the float
    product took the integer one's result: an embedding fed floats was reported fitting."""

    class TwoProducts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            y = ids + 0
            _ = y * 2  # integer
            return self.emb(y * 2.0)  # float: a real forward raises

    with pytest.raises(RuntimeError, match="Expected tensor for argument #1 'indices'"):
        TwoProducts()(torch.zeros(1, 5, dtype=torch.long))
    assert [layer.name for layer in paramcount(TwoProducts(), TypedShape((5,), "long")).invalid] == ["emb"]


def test_a_sweep_retraces_when_its_first_input_made_a_part_opaque() -> None:
    """Found by a differential probe: BERT swept from 65 tokens (past its 64 positions) kept the attention it
    made opaque at 65 for the next input, 16 tokens (MACs 109,568 instead of 240,640)."""
    pytest.importorskip("transformers")
    model = bert_of_64_positions()
    tokens = [TypedShape((65,), "long"), TypedShape((16,), "long")]
    swept = paramcount_sweep(model, tokens)[1]
    alone = paramcount(model, tokens[1])
    assert swept.opaque == alone.opaque == {} and swept.macs == alone.macs


def test_a_sweep_does_not_reuse_a_message_that_names_an_earlier_inputs_size() -> None:
    """Found by a differential probe: torchvision's ViT asserts its image size with an f-string; the sweep reused
    the first input's message ("got 97") for the second (112)."""
    model = torchvision.models.VisionTransformer(96, 16, 1, 2, 16, 32).eval()
    swept = paramcount_sweep(model, [(3, 97, 97), (3, 112, 112)])
    assert "but got 112!" in swept[1].invalid[0].message and "but got 97!" in swept[0].invalid[0].message


def test_a_sweep_keeps_its_memo_for_inputs_one_size_apart() -> None:
    """A new image size gives almost every node other values: its propagation runs without the memo's bookkeeping,
    the others with it, and every report is still the one paramcount gives."""
    model = on_meta(torchvision.models.resnet18)
    specs = [(1, 64, 64), (3, 96, 96), (3, 64, 64), (2, 80, 80), (4, 64, 64)]
    propagate = torchsurgeon.analysis.propagate_shapes
    with mock.patch.object(torchsurgeon.analysis, "propagate_shapes", wraps=propagate) as propagated:
        reports = paramcount_sweep(model, specs)
    assert [c.kwargs["memo"] is not None for c in propagated.call_args_list] == [True, False, True, False, True]
    assert propagated.call_args_list[4].kwargs["memo"].hits > 50  # everything after the stem of (3, 64, 64)
    for spec, report in zip(specs, reports):
        assert report.to_dict() == paramcount(model, spec).to_dict()
