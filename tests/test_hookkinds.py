"""Tests of torchsurgeon.hookkinds: which forward hooks change what a model computes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from torchsurgeon.hookkinds import (
    acts_in_place,
    held_recorders,
    hook_recorders,
    hook_runs,
    libraries_of,
    returns_values,
)


@pytest.mark.parametrize(
    ("hook", "changes"),
    [
        (lambda m, i, o: o * 2, True),
        (lambda m, i, o: None, False),
        (lambda m, i, o: print(o.shape), False),
        (lambda m, i, o: _SEEN.append(o), False),
        (lambda m, i, o: _SEEN.pop(), True),  # returns the popped item
        (functools.partial(lambda tag, m, i, o: o + tag, 1), True),
        (len, True),  # no code to read: it may return a value
    ],
)
def test_returns_values_reads_the_hooks_code(hook: Any, changes: bool) -> None:
    assert returns_values(hook) is changes


def _only_on_none(module: nn.Module, inputs: Any, output: Any) -> Any:
    if output is None:
        return None
    return output.float()


def test_returns_values_looks_at_every_return() -> None:
    class Looks:
        def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
            _SEEN.append(output)

    assert returns_values(_only_on_none) and not returns_values(Looks()) and not returns_values(Looks().__call__)


_SEEN: list[Any] = []


def _make_inputs_require_grads(module: nn.Module, inputs: Any, output: Any) -> None:
    output.requires_grad_(True)  # transformers' enable_input_require_grads: returns None, changes the output


@pytest.mark.parametrize(
    ("hook", "in_place"),
    [
        (_make_inputs_require_grads, True),
        (lambda m, i, o: o.mul_(2), True),
        (lambda m, i, o: _SEEN.append(o.detach()), False),
        (lambda m, i, o: setattr(m, "last", o), False),
        (len, False),  # no code to read
    ],
)
def test_acts_in_place_reads_the_hooks_code(hook: Any, in_place: bool) -> None:
    assert acts_in_place(hook) is in_place
    assert hook_runs(hook, frozenset()) is (in_place or returns_values(hook))


_CALLS = 0


class _Counter:
    def __init__(self) -> None:
        self.calls = 0

    def keep_three(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        self.calls += 1
        return output[:, :3]


def _counted_everywhere() -> tuple[nn.Module, _Counter, Callable[[], int]]:
    """A model whose hooks both count (a global, an attribute of the layer, a method's object, a closure's variable)
    and return a value: they change what the model computes, so the analysis runs them."""
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5))
    counter = _Counter()
    model[0].calls = 0
    calls = 0

    def count_global(module: nn.Module, inputs: Any, output: Any) -> Any:
        global _CALLS
        _CALLS += 1
        module.calls += 1
        module.last = output
        return output

    def count_nonlocal(module: nn.Module, inputs: Any) -> Any:
        nonlocal calls
        calls += 1
        return inputs

    model[0].register_forward_hook(count_global)
    model[1].register_forward_pre_hook(count_nonlocal)
    model[2].register_forward_hook(counter.keep_three)
    return model, counter, lambda: calls


def test_analyses_run_the_users_counting_hooks_and_put_back_what_they_counted() -> None:
    """Found by a probe: a hook counting its calls (``global calls; calls += 1``, ``module.calls += 1``,
    ``self.calls += 1``) and returning a value ran in every analysis and left its counts raised."""
    from torchsurgeon import adapt_input_channels, check_surgery, memory_plan, paramcount, paramcount_sweep

    model, counter, nonlocal_calls = _counted_everywhere()
    real = tuple(model(torch.zeros(2, 4)).shape)
    counts = (_CALLS, model[0].calls, counter.calls, nonlocal_calls(), set(vars(model[0])))
    assert counts[1:4] == (1, 1, 1)  # the real forward counts once

    report = paramcount(model, (4,), batch=2)
    paramcount_sweep(model, [(4,), (4,)])
    memory_plan(model, (4,), batch=2)
    check_surgery(model, adapt_input_channels(model, 5, "zero_extra", input=(4,)).model, (5,))

    assert report.output_shape == real  # the hooks ran: keep_three cut the output
    assert (_CALLS, model[0].calls, counter.calls, nonlocal_calls(), set(vars(model[0]))) == counts


class _Store:
    """A hook object storing a layer's output where the model reads it (fastai's ``Hook`` in ``DynamicUnet``)."""

    def __init__(self, layer: nn.Module) -> None:
        self.stored: torch.Tensor | None = None
        layer.register_forward_hook(self.keep)

    def keep(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.stored = output


class _Up(nn.Module):
    def __init__(self, store: _Store, channels: int) -> None:
        super().__init__()
        self.store = store
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.store.stored
        assert skip is not None
        x = nn.functional.interpolate(x, size=skip.shape[-2:])
        return self.conv(torch.cat([x, skip], 1))


class _HookedUnet(nn.Module):
    """A U-Net whose decoder reads the encoder's output through a hook it holds, built with a dummy forward at batch
    1 and 16 x 16 (as fastai's ``create_unet_model`` builds ``DynamicUnet``)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.up = _Up(_Store(self.enc1), 8)
        with torch.no_grad():
            self(torch.zeros(1, 3, 16, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.enc2(self.enc1(x)))


@pytest.mark.parametrize("batch", [1, 2])
def test_a_hook_storing_what_the_model_reads_runs_and_leaves_the_model_as_found(batch: int) -> None:
    """Not run, the trace read the output stored by the last real forward as a constant: at (3, 32, 32) the
    report gave (1, 8, 16, 16) for a forward giving (1, 8, 32, 32), and at batch 2 an invalid ``cat``, trusted."""
    from torch.utils.flop_counter import FlopCounterMode

    from torchsurgeon import adapt_input_channels, paramcount

    torch.manual_seed(0)
    model = _HookedUnet().eval().double()
    stored = model.up.store.stored
    report = paramcount(model, (3, 32, 32), batch=batch)
    assert model.up.store.stored is stored  # no proxy left where the model reads
    x = torch.randn(batch, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(x)
    assert report.output_shape == tuple(out.shape) == (batch, 8, 32, 32)
    assert not report.invalid and report.trusted
    assert report.macs == counter.get_total_flops() // 2
    model.up.store.stored = stored  # as before the forward above
    result = adapt_input_channels(model, 1)
    assert model.up.store.stored is stored and model.up.store.stored.shape == (1, 8, 16, 16)  # as found
    grey = torch.randn(batch, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(grey), model(grey.expand(-1, 3, -1, -1)), rtol=1e-12, atol=1e-12)


class _Recorder:
    def keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.stored = output


class _NoWalk(nn.Sequential):
    def modules(self) -> Any:  # the caller gave them: walking them again is the cost this test guards against
        raise AssertionError("modules walked again")


def test_walked_modules_given_give_the_same_answers_without_another_walk() -> None:
    encoder, head = nn.Linear(2, 2), nn.Linear(2, 2)
    store = _Recorder()
    encoder.register_forward_hook(store.keep)
    head.store = store  # the head reads what the hook stores
    model = _NoWalk(encoder, head)
    modules = list(nn.Sequential.modules(model))
    assert held_recorders(model, hook_recorders(modules), modules) == {id(store)}
    assert held_recorders(model, modules=modules) == {id(store)}
    assert held_recorders(model, {}) == frozenset()  # no hook recorders: nothing to look for
    plain = _NoWalk(nn.Linear(2, 2))
    assert libraries_of(plain, list(nn.Sequential.modules(plain))) == frozenset()
