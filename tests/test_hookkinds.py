"""Tests of torchsurgeon.hookkinds: which forward hooks change what a model computes."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from torch import nn

from torchsurgeon.hookkinds import acts_in_place, hook_runs, returns_values


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
