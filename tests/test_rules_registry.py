"""The rule registry: user rules, precedence, duplicates, disabling (torchsurgeon.rules.registry)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from torchsurgeon import InputError, disabled_rules, paramcount, register_rule, unregister_rule
from torchsurgeon.rules import registered_rules


class DataDependent(nn.Module):
    """Keeps as many features as the input has positive sums: cannot be traced or run on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = int((x.sum(-1) > 0).sum())
        return self.proj(x)[:, : max(keep, 1)]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.odd = DataDependent()
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.odd(self.inp(x)))


@pytest.fixture
def rule_for_odd() -> Iterator[None]:
    register_rule(
        DataDependent,
        shape=lambda m, x: torch.empty(x.shape[0], 8, device="meta"),
        macs=lambda m, out, x: x.shape[0] * 8 * 8,
    )
    try:
        yield
    finally:
        unregister_rule(DataDependent)


def test_untraceable_layer_without_rule_is_opaque_with_a_guessed_shape() -> None:
    r = paramcount(Net(), (4,), batch=3)
    assert r.layer("odd").status == "opaque"
    assert "odd" in r.shape_fallbacks  # run on zeros: the shape holds for zeros only
    assert "odd" in r.flops_uncounted


def test_registered_rule_describes_an_untraceable_layer(rule_for_odd: None) -> None:
    r = paramcount(Net(), (4,), batch=3)
    odd = r.layer("odd")
    assert odd.status == "ok" and odd.shape_source == "rule" and r.opaque == {}  # one node: the trace never failed
    assert odd.output_shape == (3, 8) and r.output_shape == (3, 8)
    assert odd.macs == 3 * 8 * 8 and odd.flops == 2 * 3 * 8 * 8
    assert r.shape_fallbacks == [] and r.flops_uncounted == ()
    assert r.total == sum(p.numel() for p in Net().parameters())


def test_registered_rule_wins_over_the_builtin_and_leaves_with_unregister() -> None:
    seen: list[tuple[int, ...]] = []

    def shape(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return torch.empty(*x.shape[:-1], 5, device="meta")

    register_rule(nn.ReLU, shape=shape)
    try:
        r = paramcount(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), (3,))
        assert seen == [(1, 4)] and r.output_shape == (1, 5)
    finally:
        unregister_rule(nn.ReLU)
    assert paramcount(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), (3,)).output_shape == (1, 4)


def test_rules_for_functions_and_methods() -> None:
    class Cum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, -1).cummax(-1)[0]

    register_rule(torch.cumsum, shape=lambda m, x, dim: torch.empty_like(x), macs=lambda m, out, x, dim: x.numel())
    register_rule("cummax", shape=lambda m, x, dim: (torch.empty_like(x), torch.empty_like(x, dtype=torch.long)))
    try:
        r = paramcount(Cum(), (4, 6))
        assert r.layer("cumsum").shape_source == "rule" and r.layer("cumsum").macs == 24
        assert r.layer("cummax").shape_source == "rule" and r.output_shape == (1, 4, 6)
    finally:
        unregister_rule(torch.cumsum)
        unregister_rule("cummax")


def test_a_rule_that_raises_marks_the_layer_invalid_with_its_message() -> None:
    def shape(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"DataDependent needs 8 features, got {x.shape[-1]}")

    register_rule(DataDependent, shape=shape)
    try:
        r = paramcount(nn.Sequential(nn.Linear(4, 6), DataDependent()), (4,))
    finally:
        unregister_rule(DataDependent)
    (bad,) = r.invalid
    assert bad.name == "1" and "DataDependent needs 8 features, got 6" in bad.message


def test_duplicates_and_bad_targets_are_refused() -> None:
    register_rule(DataDependent, shape=lambda m, x: x)
    try:
        with pytest.raises(InputError, match=r"a rule for 'DataDependent' is already registered — unregister_rule"):
            register_rule(DataDependent, shape=lambda m, x: x)
    finally:
        unregister_rule(DataDependent)
    with pytest.raises(InputError, match=r"is a class but not an nn\.Module subclass"):
        register_rule(int, shape=lambda m, x: x)
    with pytest.raises(InputError, match="needs shape=, macs= or flops="):
        register_rule(DataDependent)
    with pytest.raises(InputError, match="no rule registered for"):
        unregister_rule(nn.Conv2d)  # built-ins cannot be removed


def test_builtin_rules_are_registered_once_per_op() -> None:
    rules = registered_rules(builtin=True)
    keys = [r.target for r in rules]
    assert len(keys) == len({(type(k), k) if isinstance(k, str) else id(k) for k in keys})
    targets = set(map(id, keys))
    assert id(torch.add) in targets and "add" in keys  # a function and its method twin share one rule
    add = next(r for r in rules if r.target is torch.add)
    method = next(r for r in rules if r.target == "add")
    assert add.shape is method.shape


def test_disabled_rules_run_everything_on_meta_in_this_thread_only() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    with disabled_rules():
        r = paramcount(net, (3, 8, 8))
        assert r.shape_fallbacks == ["0", "1", "2"]
    assert paramcount(net, (3, 8, 8)).shape_fallbacks == []


def test_subclass_keeping_the_forward_uses_the_base_rule() -> None:
    conv = torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3))  # a ParametrizedConv2d subclass
    r = paramcount(nn.Sequential(conv), (1, 8, 8))
    assert r.layer("0").shape_source == "rule" and r.layer("0").status == "invalid"
    assert r.total_for_input == 4 + 4 * 1 * 9 + 4  # magnitude g, direction v resized, bias


class _TopThree(nn.Module):
    """A module fx traces through (the README's MyTopK)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.topk(x, 3).values


def test_a_rule_for_a_class_fx_can_trace_through_is_asked() -> None:
    """Found by a probe: fx traced through the class, so the README's register_rule example changed nothing."""
    model = nn.Sequential(_TopThree(), nn.Linear(3, 2))
    assert [layer.type for layer in paramcount(model, (10,)).layers if layer.name.startswith("0")] != ["_TopThree"]
    register_rule(_TopThree, shape=lambda m, x: torch.empty(x.shape[0], 3, device="meta"), macs=lambda m, out, x: 10)
    try:
        report = paramcount(model, (10,))
        assert report.layer("0").type == "_TopThree" and report.layer("0").macs == 10 and report.macs == 16
    finally:
        unregister_rule(_TopThree)
    assert paramcount(model, (10,)).macs == 6  # traced through again


@pytest.mark.parametrize("target", [nn.PReLU, DataDependent, "unfold"])
def test_a_duplicate_rule_names_the_unregister_call_that_runs(target: Any) -> None:
    """The fix said ``unregister_rule(target) first``, a placeholder: now the call for this target, which runs
    (then the rule registers)."""
    register_rule(target, shape=lambda m, x, *a: x)
    try:
        with pytest.raises(InputError, match=r"already registered — (unregister_rule\(.*\)) first") as info:
            register_rule(target, shape=lambda m, x, *a: x)
        call = re.search(r"unregister_rule\(.*\)", str(info.value))
        assert call is not None
        exec(call.group(0), {"unregister_rule": unregister_rule, "nn": nn, "DataDependent": DataDependent})
        register_rule(target, shape=lambda m, x, *a: x)
    finally:
        unregister_rule(target)


def test_unregistering_a_class_with_no_rule_names_it_as_code_does() -> None:
    """Found by a probe: the message showed ``<class 'torch.nn.modules.pixelshuffle.PixelShuffle'>``."""
    with pytest.raises(InputError, match=r"^no rule registered for nn\.PixelShuffle — "):
        unregister_rule(nn.PixelShuffle)
