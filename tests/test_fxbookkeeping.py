"""fxbookkeeping: torch.fx's scope, module stack and GraphModule, built faster, equal to torch.fx's own."""

from __future__ import annotations

import collections
import copy
from typing import Any

import pytest
import torch
import torch.fx
from torch import nn

from torchsurgeon import fxbookkeeping
from torchsurgeon.fxbookkeeping import ModuleStack, lazy_graph_module


def test_module_stack_copies_are_snapshots_of_its_state() -> None:
    """copy.copy gives what a copy of an OrderedDict gives, after any change; unchanged, the same snapshot."""
    stack, plain = ModuleStack(), collections.OrderedDict()
    changes = [
        lambda d: d.__setitem__("a", 1),
        lambda d: d.update(b=2, c=3),
        lambda d: d.setdefault("d", 4),
        lambda d: d.move_to_end("a"),
        lambda d: d.popitem(),
        lambda d: d.pop("b"),
        lambda d: d.__delitem__("c"),
        lambda d: d.clear(),
    ]
    for change in changes:
        change(stack)
        change(plain)
        snapshot = copy.copy(stack)
        assert list(snapshot.items()) == list(copy.copy(plain).items()) and type(snapshot) is collections.OrderedDict
        assert copy.copy(stack) is snapshot and snapshot is not stack


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))
        self.b = self.a  # one module, two paths
        self.register_buffer("steps", torch.zeros(1), persistent=False)
        self.register_buffer("scale", torch.ones(1))


def _graph_of(targets: list[tuple[str, str]]) -> torch.fx.Graph:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    for op, target in targets:
        x = graph.create_node(op, target, (x,) if op == "call_module" else ())
    graph.output(x)
    return graph


@pytest.mark.parametrize(
    "targets",
    [
        [("get_attr", "a.1.0.weight"), ("call_module", "a.1"), ("get_attr", "a.1.0.bias"), ("get_attr", "a.0.bias")],
        [("call_module", "a.0"), ("get_attr", "a.0.weight"), ("get_attr", "b.0.weight"), ("get_attr", "b.1.0.bias")],
        [("get_attr", "steps"), ("get_attr", "scale"), ("call_module", "b"), ("get_attr", "a.1.0.weight")],
        [("get_attr", "b.1.0.weight"), ("get_attr", "b.1.0.bias"), ("call_module", "b.1.0"), ("call_module", "a")],
        # a module called twice, a weight read twice, a module called again after its parent was copied whole
        [("call_module", "a.0"), ("get_attr", "a.1.0.weight"), ("call_module", "a.0"), ("get_attr", "a.1.0.weight")],
        [("call_module", "a.1.0"), ("call_module", "a.1"), ("call_module", "a.1.0"), ("get_attr", "scale")] * 2,
    ],
)
def test_lazy_graph_module_copies_what_torch_fx_copies(targets: list[tuple[str, str]]) -> None:
    """Same modules, parameters and buffers (the same objects, persistence too) as torch.fx.GraphModule."""

    def contents(gm: nn.Module) -> list[Any]:
        modules = [(n, type(m), id(m) if type(m) is not nn.Module else None) for n, m in gm.named_modules() if n]
        tensors = [(n, id(t)) for n, t in [*gm.named_parameters(), *gm.named_buffers()]]
        return [modules, tensors, sorted(gm.state_dict()), gm.training]

    root = _Shared().eval()
    before = contents(root)
    ours = lazy_graph_module(root, _graph_of(targets), "Shared")
    assert contents(ours) == contents(torch.fx.GraphModule(root, _graph_of(targets)))
    assert contents(root) == before and ours.code == torch.fx.GraphModule(root, _graph_of(targets)).code


def test_lazy_graph_module_copies_each_target_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module called several times (a ResNet block's relu) is copied once: each copy walks the targets so far."""
    copied: list[str] = []
    real = fxbookkeeping._copy_targets

    def recording(root: nn.Module, gm: nn.Module, targets: Any, originals: Any = None) -> None:
        copied.extend(targets)
        real(root, gm, targets, originals)

    monkeypatch.setattr(fxbookkeeping, "_copy_targets", recording)
    lazy_graph_module(
        _Shared(), _graph_of([("call_module", "a.0"), ("call_module", "a.0"), ("get_attr", "scale")]), "S"
    )
    assert copied == ["a.0", "scale"]
