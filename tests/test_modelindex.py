"""The model walk a trace hands on: modules, parameters and buffers by name, and what each called module holds."""

from __future__ import annotations

import dataclasses

import torch
import torchvision
from torch import nn

from models import TiedLM
from torchsurgeon.graph import build_graph, node_records
from torchsurgeon.modelindex import model_index
from torchsurgeon.trace import trace


class _Holders(nn.Module):
    """A leaf with submodules (held by it), a shared layer under two names, a parametrized conv."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.shared = nn.Linear(4, 4)
        self.again = self.shared
        self.conv = torch.nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.again(self.shared(self.block(x)))
        return self.conv(y.unsqueeze(-1)).squeeze(-1)


def _held_by_names(index, path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a module at ``path`` holds, written out from the names: the prefix test the index avoids."""
    prefix = f"{path}." if path else ""
    return (
        tuple(n for n in index.params if n.startswith(prefix)),
        tuple(n for n in index.buffers if n.startswith(prefix)),
    )


def test_held_by_equals_the_prefix_of_every_name() -> None:
    model = _Holders()
    index = model_index(model)
    paths = ["block", "block.0", "block.1", "shared", "again", "conv", ""]
    held = index.held_by(paths)
    for path in paths:
        assert held[path] == _held_by_names(index, path), path
    weight = "conv.parametrizations.weight"
    assert held["conv"][0] == ("conv.bias", f"{weight}.original0", f"{weight}.original1")


def test_names_follow_named_parameters_without_removing_duplicates() -> None:
    model = TiedLM()
    index = model_index(model)
    assert list(index.params) == [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert list(index.buffers) == [n for n, _ in model.named_buffers(remove_duplicate=False)]
    assert list(index.modules) == [n for n, _ in model.named_modules(remove_duplicate=False)]


def test_the_graph_from_the_trace_walk_equals_the_graph_from_its_own_walk() -> None:
    for model in (torchvision.models.resnet18(), _Holders(), TiedLM()):
        traced = trace(model)
        assert traced.index is not None
        own_walk = build_graph(dataclasses.replace(traced, index=None))
        from_trace = build_graph(traced)
        assert list(node_records(from_trace)) == list(node_records(own_walk))
        assert list(own_walk.edges) == list(from_trace.edges)


def test_records_hold_only_what_differs_and_read_defaults_from_the_class() -> None:
    G = build_graph(trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU())))
    relu = next(r for r in node_records(G) if r.layer == "1")
    assert "params" not in vars(relu)  # left to the class default
    spelled_out = type(relu)(**{f.name: getattr(relu, f.name) for f in dataclasses.fields(relu)})
    assert relu == spelled_out and relu.params == 0 and relu.findings == ()
    assert dataclasses.replace(relu, message="x").message == "x"
