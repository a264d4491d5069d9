"""More forms of views and repeats, against real CPU calls: ``unflatten`` (function, method, layer),
``split_with_sizes``, ``reshape(shape=...)`` / ``view(size=...)``, ``repeat_interleave(..., output_size=...)`` and
``torch.outer`` of two dtypes.

diffusers' transformers (DiT, SD3, Flux) and video UNet call them in these forms; each call ran on ``meta``.
Whenever a rule answers, a CPU call of the same layout gives the same shape, dtype and strides (of dims larger than
1); what torch refuses falls back, and meta then raises torch's own error.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from test_rules import _answer, _signatures, tensors
from torchsurgeon.rules import FALLBACK, function_rule, method_rule, module_rule


def _agrees(out: Any, call: Any) -> None:
    """The rule's answer is the CPU call's (shape, dtype, strides), or the rule fell back where the CPU raises."""
    try:
        real = call()
    except (RuntimeError, ValueError, IndexError, TypeError):
        assert out is FALLBACK
        return
    assert out is not FALLBACK
    assert _signatures(out) == _signatures(real)


@settings(max_examples=50, deadline=None)
@given(st.data(), st.sampled_from(["function", "method", "layer"]), st.booleans())
def test_unflatten_is_a_view_with_the_strides_torch_gives(data: st.DataObject, form: str, inferred: bool) -> None:
    """Any layout (permuted, sliced, expanded, channels-last): the split dim's stride times the sizes after it."""
    x, build = data.draw(tensors(min_rank=1, max_rank=4))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
    n = int(x.shape[dim])
    first = data.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    sizes = (-1 if inferred else first, n // first) if data.draw(st.booleans()) else (first, 1, n // first)
    cpu = build("cpu")
    if form == "function":
        out = _answer(function_rule(torch.unflatten), (x, dim, sizes), {})
        _agrees(out, lambda: torch.unflatten(cpu, dim, sizes))
    elif form == "method":
        out = _answer(method_rule("unflatten"), (x, dim, sizes), {})
        _agrees(out, lambda: cpu.unflatten(dim, sizes))
    else:
        layer = nn.Unflatten(dim, sizes)
        found = module_rule(nn.Unflatten)
        assert found is not None
        out = _answer(found[0], (x,), {}, layer)
        _agrees(out, lambda: layer(cpu))


def test_unflatten_sizes_that_do_not_fit_fall_back() -> None:
    x = torch.empty(2, 6, device="meta")
    assert _answer(method_rule("unflatten"), (x, 1, (4, -1)), {}) is FALLBACK
    assert _answer(method_rule("unflatten"), (x, 2, (2, 3)), {}) is FALLBACK
    assert _answer(method_rule("unflatten"), (x, "c", (2, 3)), {}) is FALLBACK


@settings(max_examples=60, deadline=None)
@given(st.data(), st.booleans())
def test_split_with_sizes_matches_the_cpu(data: st.DataObject, as_method: bool) -> None:
    """Flux's ``torch.split_with_sizes(tokens, [text, image], dim=1)``: views of the input, or a fallback where the
    sizes do not add up (the CPU raises)."""
    x, build = data.draw(tensors(min_rank=1, max_rank=3))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
    n = int(x.shape[dim])
    cut = data.draw(st.integers(0, n))
    sizes = [cut, n - cut + data.draw(st.sampled_from([0, 0, 0, 1]))]
    cpu = build("cpu")
    if as_method:
        out = _answer(method_rule("split_with_sizes"), (x, sizes), {"dim": dim})
        _agrees(out, lambda: cpu.split_with_sizes(sizes, dim=dim))
    else:
        out = _answer(function_rule(torch.split_with_sizes), (x, sizes, dim), {})
        _agrees(out, lambda: torch.split_with_sizes(cpu, sizes, dim))


@settings(max_examples=60, deadline=None)
@given(st.data(), st.booleans())
def test_sizes_given_by_keyword_match_the_cpu(data: st.DataObject, reshape: bool) -> None:
    """``x.reshape(shape=...)`` (diffusers' unpatchify) and ``x.view(size=...)``: as given positionally; a view of a
    layout that cannot be viewed falls back (the CPU raises)."""
    x, build = data.draw(tensors(min_rank=1, max_rank=4))
    sizes = (-1, *x.shape[-1:]) if data.draw(st.booleans()) else (int(x.numel()),)
    cpu = build("cpu")
    if reshape:
        out = _answer(method_rule("reshape"), (x,), {"shape": sizes})
        _agrees(out, lambda: cpu.reshape(shape=sizes))
    else:
        out = _answer(method_rule("view"), (x,), {"size": sizes})
        _agrees(out, lambda: cpu.view(size=sizes))


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(0, 3), st.booleans(), st.sampled_from([0, 0, 1]))
def test_repeat_interleave_with_its_output_size_matches_the_cpu(
    data: st.DataObject, repeats: int, over_a_dim: bool, off: int
) -> None:
    """``repeat_interleave(repeats, dim=..., output_size=...)`` (Flux's rotary tables, the video UNet's
    ``encoder_hidden_states`` per frame): answered when ``output_size`` is the size it makes; another size falls back,
    and the CPU raises ('Invalid output_size')."""
    x, build = data.draw(tensors(min_rank=1, max_rank=3))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1)) if over_a_dim else None
    size = (int(x.shape[dim]) if dim is not None else int(x.numel())) * repeats + off
    cpu = build("cpu")
    out = _answer(method_rule("repeat_interleave"), (x, repeats), {"dim": dim, "output_size": size})
    _agrees(out, lambda: cpu.repeat_interleave(repeats, dim=dim, output_size=size))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int64]),
    st.sampled_from([torch.float32, torch.float64, torch.int32]),
)
def test_outer_of_two_dtypes_matches_the_cpu(n: int, m: int, a_dtype: torch.dtype, b_dtype: torch.dtype) -> None:
    """Flux's rotary frequencies: float32 positions times float64 frequencies, a float64 table."""
    a, b = torch.ones(n, dtype=a_dtype), torch.ones(m, dtype=b_dtype)
    out = _answer(function_rule(torch.outer), (a.to("meta"), b.to("meta")), {})
    _agrees(out, lambda: torch.outer(a, b))
