"""torchsurgeon.ambient: the public functions answer inside a caller's torch state as in a plain context, and leave
that state as they found it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import torch
from torch import nn

from torchsurgeon import fold_input_normalization, memory_plan, paramcount, replace_head


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()


@contextmanager
def _default_meta() -> Iterator[None]:
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


META_DEVICES: dict[str, Callable[[], AbstractContextManager[object]]] = {
    "with torch.device('meta')": lambda: torch.device("meta"),
    "torch.set_default_device('meta')": _default_meta,
}


@pytest.mark.parametrize("default", list(META_DEVICES))
def test_replace_head_in_a_meta_device_block_gives_a_head_on_the_models_device(default: str) -> None:
    net = _net()
    with META_DEVICES[default]():
        edited = replace_head(net, 5).model
        assert torch.get_default_device().type == "meta"  # the caller's block is as it was
    assert edited(torch.randn(2, 3, 16, 16)).shape == (2, 5)  # was NotImplementedError: Cannot copy out of meta


@pytest.mark.parametrize("default", list(META_DEVICES))
def test_fold_input_normalization_in_a_meta_device_block_folds(default: str) -> None:
    net, mean, std = _net(), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    with META_DEVICES[default]():  # was InputError: mean must be a sequence of floats or a tensor, got [0.5, ...]
        folded = fold_input_normalization(net, mean, std).model
    x = torch.rand(2, 3, 16, 16)
    normalized = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(folded(x), net(normalized), rtol=1e-4, atol=1e-5)  # no padding: exact


def test_a_model_built_in_a_meta_block_is_counted_there_as_outside() -> None:
    with torch.device("meta"):
        net = _net()
        report = paramcount(net, (3, 16, 16))
    assert report.total == sum(p.numel() for p in _net().parameters())
    assert report.output_shape == tuple(_net()(torch.randn(1, 3, 16, 16)).shape)


def test_memory_plan_in_a_meta_device_block_is_the_plain_plan() -> None:
    net = _net()
    plain = memory_plan(net, (3, 16, 16), batch=2).to_dict()
    with torch.device("meta"):  # the step's input was made on meta, run by meta kernels (a larger inference peak)
        inside = memory_plan(net, (3, 16, 16), batch=2).to_dict()
    assert inside == plain


def test_a_flop_counter_around_memory_plan_counts_nothing_and_changes_no_answer() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    net = _net()
    plain = memory_plan(net, (3, 16, 16), batch=2)
    with FlopCounterMode(display=False) as counter:
        inside = memory_plan(net, (3, 16, 16), batch=2)
        report = paramcount(net, (3, 16, 16))
    assert counter.get_total_flops() == 0  # the user counts their own operations, not the analysis's
    assert inside.to_dict() == plain.to_dict()
    assert inside.max_batch("64MiB") == plain.max_batch("64MiB")
    assert report.output_shape == tuple(net(torch.randn(1, 3, 16, 16)).shape)


def test_a_model_with_values_analysed_and_edited_inside_a_fake_tensor_mode() -> None:
    from torch._subclasses import FakeTensorMode

    net = _net()
    plain = memory_plan(net, (3, 16, 16), batch=2).to_dict()
    with FakeTensorMode():  # was AssertionError: Please convert all Tensors to FakeTensors first
        inside = memory_plan(net, (3, 16, 16), batch=2).to_dict()
        edited = replace_head(net, 5).model
    assert inside == plain
    assert edited(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_memory_plan_with_anomaly_detection_on_is_the_plain_plan_and_leaves_it_on() -> None:
    net = _net()
    plain = memory_plan(net, (3, 16, 16), batch=2).to_dict()
    with torch.autograd.set_detect_anomaly(True):
        # was MemoryPlanError: the backward of a fake-tensor copy failed (DataDependentOutputException)
        inside = memory_plan(net, (3, 16, 16), batch=2).to_dict()
        assert torch.is_anomaly_enabled() and torch.is_anomaly_check_nan_enabled()
    assert inside == plain


def test_a_global_module_hook_sees_no_analysis_and_is_back_after() -> None:
    net, seen = _net(), []
    plain = memory_plan(net, (3, 16, 16), batch=2).to_dict()
    handle = nn.modules.module.register_module_forward_hook(lambda _m, _args, out: seen.append(out))
    try:  # a hook holding what modules make (a FlopCounterMode's module tracker) held the fake step's tensors
        inside = memory_plan(net, (3, 16, 16), batch=2).to_dict()
        replace_head(net, 5)
        assert seen == []
        net(torch.randn(1, 3, 16, 16))
        assert len(seen) == len(list(net.modules()))  # still registered, for the user's own forward
    finally:
        handle.remove()
    assert inside == plain
