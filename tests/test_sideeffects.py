"""Calls forward makes for their side effects alone, skipped by a trace (torchsurgeon.sideeffects)."""

from __future__ import annotations

import numbers
import threading
from typing import Any

import pytest
import torch
from torch import nn

from torchsurgeon import paramcount, replace_head
from torchsurgeon.sideeffects import quiet
from torchsurgeon.trace import trace

_LOGGED: list[tuple[int, str]] = []
"""The thread and name of each value logged, outside the model (Lightning's Trainer keeps them in its result
collection)."""


class LightningModule(nn.Module):
    """Lightning's LightningModule as its ``log`` and ``log_dict`` behave: the value is checked (a Tensor or a
    number, as Lightning's ``__check_allowed``), then its name recorded in :data:`_LOGGED`, and None returned."""

    __module__ = "lightning.pytorch.core.module"

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        if not isinstance(value, (numbers.Number, torch.Tensor)):
            raise ValueError(
                f"`self.log({name}, {value})` was called, but `{type(value).__name__}` values cannot be logged"
            )
        _LOGGED.append((threading.get_ident(), name))

    def log_dict(self, dictionary: dict[str, Any], **kwargs: Any) -> None:
        for name, value in dictionary.items():
            self.log(name, value)


class Logging(LightningModule):
    """A LightningModule whose forward logs, as users write it: a norm (a float), a dict of means."""

    __module__ = __name__

    def __init__(self) -> None:
        super().__init__()
        self.body, self.fc = nn.Sequential(nn.Linear(16, 32), nn.ReLU()), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        self.log("feature_norm", features.norm().item(), prog_bar=True)
        self.log_dict({"mean": features.mean(), "batch": x.shape[0]})
        return self.fc(features)


class Wrapping(nn.Module):
    """A plain module holding a LightningModule: the one that logs is traced through."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Logging()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.mark.parametrize("build", [Logging, Wrapping])
def test_logging_in_forward_is_skipped_by_the_analysis(build: type[nn.Module]) -> None:
    """Found by a probe: paramcount and replace_head of a LightningModule calling self.log(...) in forward raised
    TraceError (Lightning refuses a traced value). The calls give nothing to what forward computes: skipped, and
    the model, its class and its log left as found."""
    model = build()
    state = dict(model.__dict__)
    expected = model(torch.randn(2, 16)).shape
    report = paramcount(model, (16,))
    assert report.total == sum(p.numel() for p in model.parameters())
    assert report.output_shape == (1, *expected[1:])
    edited = replace_head(model, 5).model
    assert edited(torch.randn(2, 16)).shape == (2, 5)
    assert type(model) is build and model.__dict__ == state
    _LOGGED.clear()
    model(torch.randn(2, 16))  # after the analysis, the class's log still logs
    assert [name for _, name in _LOGGED] == ["feature_norm", "mean", "batch"]


def test_a_class_with_its_own_log_keeps_it() -> None:
    """A method of the user's own named ``log`` computes what forward returns: it is traced, not skipped."""

    class OwnLog(LightningModule):
        def log(self, x: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            return torch.log1p(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.log(x)

    model = OwnLog()
    assert type(quiet(model)).log is OwnLog.log  # its log_dict, Lightning's, is still skipped
    assert [n.target for n in trace(model).graph_module.graph.nodes if n.op == "call_function"] == [torch.log1p]


def test_another_threads_forward_logs_while_a_trace_skips() -> None:
    """The stand-in is the trace's own: another thread calling the model meanwhile logs as without torchsurgeon."""
    model = Logging()
    started, results = threading.Event(), []
    _LOGGED.clear()

    def forwards() -> None:
        started.set()
        for _ in range(20):
            model(torch.randn(2, 16))
        results.append(sum(thread == threading.get_ident() for thread, _ in _LOGGED))

    worker = threading.Thread(target=forwards)
    worker.start()
    started.wait()
    for _ in range(3):
        trace(model)
    worker.join()
    assert results == [60]
    assert type(quiet(model)).__mro__[1] is Logging and quiet(model).__dict__ is model.__dict__
