"""Splits into views against real CPU calls: ``tensor_split`` (torchvision's MViT splits its class token off with
``torch.tensor_split(x, indices=(1,), dim=2)``, which ran on ``meta``).  Whenever the rule answers, a CPU call of the
same layout gives the same shapes, dtypes and strides; a tensor of indices falls back."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from test_rules import _answer, tensors
from test_rules_views_forms import _agrees
from torchsurgeon.rules import FALLBACK, function_rule, method_rule


@settings(max_examples=80, deadline=None)
@given(st.data(), st.sampled_from(["function", "method", "keyword"]))
def test_tensor_split_matches_the_cpu(data: st.DataObject, form: str) -> None:
    """n sections (more than the size: empty parts), or indices (past the size, decreasing: empty parts)."""
    x, build = data.draw(tensors(min_rank=1, max_rank=3))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
    n = int(x.shape[dim])
    if data.draw(st.booleans()):
        split: int | list[int] = data.draw(st.integers(1, n + 2))
    else:
        split = data.draw(st.lists(st.integers(0, n + 2), min_size=1, max_size=3))
    cpu = build("cpu")
    if form == "function":
        out = _answer(function_rule(torch.tensor_split), (x, split, dim), {})
        _agrees(out, lambda: torch.tensor_split(cpu, split, dim))
    elif form == "method":
        out = _answer(method_rule("tensor_split"), (x, split), {"dim": dim})
        _agrees(out, lambda: cpu.tensor_split(split, dim=dim))
    else:  # the overloads' names
        name = "sections" if isinstance(split, int) else "indices"
        out = _answer(function_rule(torch.tensor_split), (x,), {name: split, "dim": dim})
        _agrees(out, lambda: torch.tensor_split(cpu, **{name: split, "dim": dim}))


def test_a_tensor_of_indices_falls_back() -> None:
    x = torch.empty(4, 6, device="meta")
    assert _answer(function_rule(torch.tensor_split), (x, torch.tensor([1, 3])), {"dim": 1}) is FALLBACK
