"""Rounding, in-place activations and integer conversions, against real CPU calls: ``round``, ``floor``, ``ceil``,
``trunc`` (functions and methods), their in-place forms and ``relu_``, ``sigmoid_``..., and ``byte()``, ``char()``,
``short()``, and integer tensors promoted to floats (a true division, a Python float).

diffusers' AutoencoderTiny quantises its latents as ``x.mul_(255).round_().byte()``: each ran on ``meta``.  Whenever
a rule answers, a CPU call of the same layout gives the same shape, dtype and strides (of dims larger than 1), an
in-place call gives its input itself; what torch refuses (an integer tensor's ``sigmoid_``, writing into an expanded
tensor) falls back, and meta then raises torch's own error.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from test_rules import _answer, _signatures, tensors
from torchsurgeon.rules import FALLBACK, function_rule, method_rule

_DTYPES = st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.uint8])


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(["round", "floor", "ceil", "trunc"]), st.booleans(), _DTYPES)
def test_rounding_keeps_the_layout_torch_gives(
    data: st.DataObject, name: str, method: bool, dtype: torch.dtype
) -> None:
    x, build = data.draw(tensors(min_rank=0, max_rank=4, dtype=dtype))
    rule = method_rule(name) if method else function_rule(getattr(torch, name))
    out = _answer(rule, (x,), {})
    if out is FALLBACK:  # integers: torch's own answer, from meta
        assert not dtype.is_floating_point
        return
    cpu = build("cpu")
    real = getattr(cpu, name)() if method else getattr(torch, name)(cpu)
    assert _signatures(out) == _signatures(real)


@settings(max_examples=60, deadline=None)
@given(
    st.data(), st.sampled_from(["round_", "floor_", "ceil_", "trunc_", "relu_", "sigmoid_", "exp_", "sqrt_"]), _DTYPES
)
def test_in_place_forms_give_their_input_or_fall_back_where_torch_refuses(
    data: st.DataObject, name: str, dtype: torch.dtype
) -> None:
    x, build = data.draw(tensors(min_rank=0, max_rank=4, dtype=dtype))
    _edits_in_place(_answer(method_rule(name), (x,), {}), x, lambda: build("cpu"), lambda t: getattr(t, name)())


def _edits_in_place(out: Any, x: torch.Tensor, cpu: Any, call: Any) -> None:
    """The rule's answer for an in-place method: ``x`` itself where the CPU call edits its tensor and returns it, a
    fallback where the CPU refuses (an expanded tensor, a probability out of range) or for integers."""
    tensor = cpu()
    try:
        real = call(tensor)
    except RuntimeError:
        assert out is FALLBACK
        return
    if out is FALLBACK:  # integers: torch's own answer, from meta
        assert not x.dtype.is_floating_point
        return
    assert out is x and real is tensor


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from(["byte", "char", "short"]), _DTYPES)
def test_integer_conversions_match_the_cpu(data: st.DataObject, name: str, dtype: torch.dtype) -> None:
    x, build = data.draw(tensors(min_rank=0, max_rank=4, dtype=dtype))
    out = _answer(method_rule(name), (x,), {})
    cpu = build("cpu")
    real = getattr(cpu, name)()
    if out is FALLBACK:  # a layout that is not dense (sliced, expanded): torch's strides, from meta
        assert not x.is_contiguous()
        return
    assert _signatures(out) == _signatures(real)
    assert (out is x) == (real is cpu)


@settings(max_examples=60, deadline=None)
@given(
    st.data(),
    st.sampled_from(["operator", "function", "method"]),
    st.sampled_from([torch.uint8, torch.int32, torch.int64]),
    st.sampled_from(["int", "float", "tensor"]),
)
def test_true_division_of_integers_gives_floats_as_torch_does(
    data: st.DataObject, form: str, dtype: torch.dtype, other: str
) -> None:
    """AutoencoderTiny's ``bytes / 255.0``: the default floating dtype, the CPU's strides; a non-contiguous operand,
    which torch casts first, falls back."""
    x, build = data.draw(tensors(min_rank=0, max_rank=4, dtype=dtype))
    divisor: Any = {"int": 255, "float": 255.0}.get(other)
    y, build_y = data.draw(tensors(shape=tuple(x.shape), dtype=dtype)) if other == "tensor" else (divisor, None)
    rules = {
        "operator": function_rule(operator.truediv),
        "function": function_rule(torch.div),
        "method": method_rule("div"),
    }
    out = _answer(rules[form], (x, y), {})
    cpu, cpu_y = build("cpu"), build_y("cpu") if build_y is not None else divisor
    real = operator.truediv(cpu, cpu_y) if form == "operator" else torch.div(cpu, cpu_y)
    if out is FALLBACK:
        assert not (x.is_contiguous() and (not isinstance(y, torch.Tensor) or y.is_contiguous()))
        return
    assert _signatures(out) == _signatures(real) and real.dtype == torch.float32
    assert _answer(rules["function"], (x, y), {"rounding_mode": "floor"}) is FALLBACK  # integers: meta decides


@settings(max_examples=60, deadline=None)
@given(
    st.data(),
    st.sampled_from([operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul]),
    st.sampled_from([torch.uint8, torch.int32, torch.int64]),
    st.sampled_from([1.0, 0.5, 3]),
    st.booleans(),
)
def test_integers_with_a_python_float_give_floats_as_torch_does(
    data: st.DataObject, op: Any, dtype: torch.dtype, number: float, swapped: bool
) -> None:
    """SAM's relative positions, ``torch.arange(q)[:, None] * max(k / q, 1.0)``: the default floating dtype with a
    float, the integer dtype with an int, the CPU's strides; a non-contiguous tensor with a float falls back."""
    x, build = data.draw(tensors(min_rank=0, max_rank=4, dtype=dtype))
    args = (number, x) if swapped and op in (operator.add, operator.sub, operator.mul) else (x, number)
    out = _answer(function_rule(op), args, {})
    cpu = build("cpu")
    real = op(*(cpu if a is x else a for a in args))
    if out is FALLBACK:
        assert type(number) is float and not x.is_contiguous()
        return
    assert _signatures(out) == _signatures(real)
    assert real.dtype == (torch.float32 if type(number) is float else dtype)


@settings(max_examples=40, deadline=None)
@given(st.data(), _DTYPES, st.sampled_from([0.0, 0.3, 1.0, 1.5, 1]))
def test_bernoulli_in_place_gives_its_input_or_falls_back_where_torch_refuses(
    data: st.DataObject, dtype: torch.dtype, p: float
) -> None:
    """timm's DropPath in training mode: ``x.new_empty(shape).bernoulli_(keep_prob)``."""
    x, build = data.draw(tensors(min_rank=0, max_rank=4, dtype=dtype))
    _edits_in_place(_answer(method_rule("bernoulli_"), (x, p), {}), x, lambda: build("cpu"), lambda t: t.bernoulli_(p))
