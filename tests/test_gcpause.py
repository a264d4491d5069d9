"""torchsurgeon.gcpause: no collection during an analysis, the collector's state restored after."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from torch import nn

from torchsurgeon import analysis, paramcount, paramcount_sweep
from torchsurgeon.errors import InputError
from torchsurgeon.gcpause import paused_gc


@pytest.fixture
def collections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The generations Python collects while a sweep traces and analyses (``gc.callbacks``)."""
    seen: list[int] = []
    inside: list[bool] = []
    sweep = analysis._sweep

    def watched(*args: Any) -> Any:
        inside.append(True)
        try:
            return sweep(*args)
        finally:
            inside.clear()

    monkeypatch.setattr(analysis, "_sweep", watched)

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and inside:
            seen.append(info["generation"])

    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)


def _net() -> nn.Module:
    return nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()) for _ in range(40)])


def test_a_sweep_runs_no_collection_and_leaves_the_collector_on(collections: list[int]) -> None:
    net = _net()
    gc.set_threshold(1)  # without the pause, every allocation would start a collection
    try:
        reports = paramcount_sweep(net, [(4, 16, 16), (4, 24, 24), (4, 32, 32)])
        assert collections == []
    finally:
        gc.set_threshold(700, 10, 10)
    assert [r.output_shape for r in reports] == [(1, 4, 16, 16), (1, 4, 24, 24), (1, 4, 32, 32)]
    assert gc.isenabled()


def test_the_collector_is_restored_after_an_error_and_left_off_when_it_was_off() -> None:
    with pytest.raises(InputError, match="batch"):
        paramcount(_net(), (4, 8, 8), batch=0)
    assert gc.isenabled()
    gc.disable()
    try:
        paramcount(_net(), (4, 8, 8))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_nested_and_concurrent_pauses_enable_the_collector_when_the_last_one_ends() -> None:
    inside = threading.Barrier(4)
    states: list[bool] = []

    def analyse() -> None:
        with paused_gc():
            inside.wait()  # all four are paused at once
            with paused_gc():
                states.append(gc.isenabled())
            inside.wait()

    threads = [threading.Thread(target=analyse) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert states == [False] * 4
    assert gc.isenabled()
