"""A report's rows: built when first read, from the records of the analysis that made the report."""

from __future__ import annotations

import pickle

import torch
from torch import nn

from models import CifarNet
from torchsurgeon import analyse_graph, paramcount
from torchsurgeon.graph import build_graph
from torchsurgeon.rows import LayerRows
from torchsurgeon.shapes import propagate_shapes
from torchsurgeon.trace import trace


def test_rows_are_those_of_the_propagation_that_made_the_report() -> None:
    report = paramcount(CifarNet(), (3, 32, 32))
    assert isinstance(report.layers, LayerRows)
    propagate_shapes(report.graph, (1, 64, 64))  # the report's graph, propagated again before the rows are read
    rows = list(report.layers)
    assert [row.status for row in rows] == ["ok"] * len(rows)
    assert rows[0].input_shape == (1, 3, 32, 32) and report.layer(rows[-1].name).output_shape == (1, 10)


def test_rows_are_a_sequence_equal_to_the_list_of_its_rows() -> None:
    G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())))
    report, _ = analyse_graph(G, (3, 8, 8))
    rows = report.layers
    assert len(rows) == 3 and rows == list(rows) and list(rows) == rows and rows[1:] == [rows[1], rows[2]]
    assert rows != (rows[0],) and rows != "not rows"
    assert [row.name for row in reversed(rows)] == ["2", "1", "0"]
    assert pickle.loads(pickle.dumps(rows)) == rows  # pickled as its rows
    assert report.output_shape.layers is rows  # the output shape explains itself with the same rows


def test_rows_of_nested_arguments_read_the_values_inside() -> None:
    class Cat(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x * 2], dim=1).flatten(start_dim=1)

    report = paramcount(Cat(), (2, 3))
    assert [(row.name, row.input_shape, row.output_shape) for row in report.layers] == [
        ("mul", (1, 2, 3), (1, 2, 3)),
        ("cat", None, (1, 4, 3)),
        ("flatten", (1, 4, 3), (1, 12)),
    ]
