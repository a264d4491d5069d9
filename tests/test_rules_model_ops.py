"""Rules for the small ops Hugging Face models call (masks, positions, rotary tables), against meta execution.

Each op here used to run on ``meta`` in the transformers zoo (``cumsum`` of
a mask, ``x.new_ones(())``, ``cos``/``sin`` of rotary tables, ``addmm`` in
GPT-2's ``Conv1D``...).  As in test_rules.py: whenever a rule answers, meta
execution must not raise and must give the same shape, dtype and strides;
coverage asserts make sure the ordinary cases are answered.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from test_rules import SETTINGS, _apply, _check, tensors
from torchsurgeon.rules import FALLBACK, function_rule, method_rule

DTYPES = [torch.float32, torch.float16, torch.int64, torch.int32, torch.bool]


def _method(name: str, x: Any, *args: Any, **kwargs: Any) -> bool:
    """Check the rule of tensor method ``name`` on ``x``; return whether it answered."""
    return _check(method_rule(name), (x, *args), kwargs, lambda: getattr(x, name)(*args, **kwargs))


def _function(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    return _check(function_rule(fn), args, kwargs, lambda: fn(*args, **kwargs))


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["cos", "sin", "log", "log1p", "erf", "reciprocal"]))
def test_float_unary_rules_match_meta(data: st.DataObject, name: str) -> None:
    dtype = data.draw(st.sampled_from([torch.float32, torch.bfloat16, torch.int64]))
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    answered = _method(name, x) | _function(getattr(torch, name), x)
    assert answered == dtype.is_floating_point  # integers are promoted: left to meta


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_sign_and_bitwise_rules_keep_the_dtype(data: st.DataObject, dtype: torch.dtype) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    signed = [_function(torch.abs, x), _method("abs", x), _function(torch.neg, x), _function(operator.neg, x)]
    bitwise = [_function(operator.invert, x), _function(torch.bitwise_not, x), _method("bitwise_not", x)]
    assert all(signed) == (dtype != torch.bool) and all(bitwise) == (not dtype.is_floating_point)


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), name=st.sampled_from(["cumsum", "cumprod"]))
def test_scan_rules_match_meta(data: st.DataObject, dtype: torch.dtype, name: str) -> None:
    x, _ = data.draw(tensors(min_rank=1, dtype=dtype))
    dim = data.draw(st.integers(-x.dim() - 1, x.dim()))
    kwargs = {"dtype": torch.float64} if data.draw(st.booleans()) else {}
    answered = _method(name, x, dim, **kwargs) and _function(getattr(torch, name), x, dim, **kwargs)
    assert answered == (-x.dim() <= dim < x.dim())


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["argmax", "argmin"]), keepdim=st.booleans())
def test_arg_reduction_rules_match_meta(data: st.DataObject, name: str, keepdim: bool) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=data.draw(st.sampled_from([torch.float32, torch.int64]))))
    dim = data.draw(st.one_of(st.none(), st.integers(-x.dim() - 1, max(x.dim(), 1))))
    answered = _method(name, x, dim=dim, keepdim=keepdim)
    _function(getattr(torch, name), x, dim, keepdim)
    if dim is not None and -max(x.dim(), 1) <= dim < max(x.dim(), 1) and x.dim():
        assert answered


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), n=st.integers(0, 4))
def test_diff_rule_matches_meta(data: st.DataObject, dtype: torch.dtype, n: int) -> None:
    x, _ = data.draw(tensors(min_rank=1, dtype=dtype))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
    kwargs: dict[str, Any] = {"n": n, "dim": dim}
    if data.draw(st.booleans()):
        shape = list(x.shape)
        shape[dim] = data.draw(st.integers(1, 2))
        kwargs["prepend"] = torch.zeros(shape, dtype=data.draw(st.sampled_from([dtype, torch.float64])), device="meta")
    answered = _function(torch.diff, x, **kwargs)
    if x.is_contiguous() and "prepend" not in kwargs and 1 <= n < x.shape[dim]:
        assert answered


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([None, torch.bool, torch.float16]))
def test_new_tensor_rules_match_meta(data: st.DataObject, dtype: torch.dtype | None) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=data.draw(st.sampled_from([torch.float32, torch.int64]))))
    size = tuple(data.draw(st.lists(st.integers(-1, 3), max_size=3)))
    kwargs = {} if dtype is None else {"dtype": dtype}
    as_one = data.draw(st.booleans())
    args = (size,) if as_one else size
    answered = [_method(name, x, *args, **kwargs) for name in ("new_zeros", "new_ones", "new_empty")]
    answered.append(_method("new_full", x, size, data.draw(st.sampled_from([0, 2.5, True])), **kwargs))
    if all(s >= 0 for s in size) and (as_one or size):
        assert all(answered)


@SETTINGS
@given(data=st.data(), fn=st.sampled_from([torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like]))
def test_like_rules_match_meta(data: st.DataObject, fn: Callable[..., Any]) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=data.draw(st.sampled_from([torch.float32, torch.int64]))))
    kwargs = {"dtype": torch.float16} if data.draw(st.booleans()) else {}
    args = (x, 7) if fn is torch.full_like else (x,)
    answered = _function(fn, *args, **kwargs)
    if x.is_contiguous():
        assert answered


@SETTINGS
@given(data=st.data())
def test_t_repeat_gather_and_type_as_rules_match_meta(data: st.DataObject) -> None:
    x, _ = data.draw(tensors(min_rank=0, max_rank=3))
    assert _method("t", x) == (x.dim() <= 2) and _function(torch.t, x) == (x.dim() <= 2)
    counts = data.draw(st.lists(st.integers(0, 3), min_size=max(x.dim() - 1, 0), max_size=x.dim() + 2))
    assert _method("repeat", x, *counts) == (len(counts) >= max(x.dim(), 1))
    other = torch.empty(
        (), dtype=data.draw(st.sampled_from([torch.float32, torch.float16, torch.int64])), device="meta"
    )
    answered = _method("type_as", x, other)
    if other.dtype == x.dtype or x.is_contiguous():
        assert answered
    if x.dim():
        dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
        shape = [data.draw(st.integers(1, 4)) for _ in range(x.dim())]
        index = torch.zeros(shape, dtype=torch.int64, device="meta")
        fits = all(i == dim % x.dim() or n <= s for i, (n, s) in enumerate(zip(shape, x.shape)))
        assert _method("gather", x, dim, index) == fits and _function(torch.gather, x, dim, index) == fits


@SETTINGS
@given(data=st.data(), fn=st.sampled_from([torch.addmm, torch.baddbmm, torch.addbmm]), method=st.booleans())
def test_added_product_rules_match_meta(data: st.DataObject, fn: Callable[..., Any], method: bool) -> None:
    n, m, p, b = (data.draw(st.integers(1, 4)) for _ in range(4))
    batched = fn is not torch.addmm
    m1, _ = data.draw(tensors(shape=(b, n, m) if batched else (n, m)))
    m2, _ = data.draw(tensors(shape=(b, m, p) if batched else (m, p)))
    out = (b, n, p) if fn is torch.baddbmm else (n, p)
    bias, _ = data.draw(
        tensors(shape=tuple(1 if data.draw(st.booleans()) else s for s in out)[-data.draw(st.integers(1, len(out))) :])
    )
    kwargs = {"beta": 0.5, "alpha": 2} if data.draw(st.booleans()) else {}
    name = fn.__name__
    answered = _method(name, bias, m1, m2, **kwargs) if method else _function(fn, bias, m1, m2, **kwargs)
    assert answered


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), other_kind=st.sampled_from(["tensor", "int", "float", "other"]))
def test_where_and_pairwise_min_max_rules_match_meta(data: st.DataObject, dtype: torch.dtype, other_kind: str) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    shape = tuple(1 if data.draw(st.booleans()) else s for s in x.shape)
    condition, _ = data.draw(tensors(shape=shape, dtype=torch.bool))
    if other_kind == "tensor":
        y, _ = data.draw(tensors(shape=shape, dtype=dtype))
    elif other_kind == "other":
        y, _ = data.draw(tensors(shape=shape, dtype=torch.float64))
    else:
        y = 2 if other_kind == "int" else -0.5
    answered = _function(torch.where, condition, x, y)
    if other_kind == "tensor" or (other_kind == "int" and dtype != torch.bool):
        assert answered
    if isinstance(y, torch.Tensor):
        pairwise = [_function(torch.min, x, y), _function(torch.max, x, y)]
        promoted = other_kind == "other" and x.is_contiguous() and y.is_contiguous()  # to float64
        assert all(pairwise) == ((other_kind == "tensor" and dtype != torch.bool) or promoted)


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.int64, torch.bool]))
def test_in_place_masked_fill_rule_matches_meta(data: st.DataObject, dtype: torch.dtype) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    x = torch.empty_strided(x.shape, x.stride(), dtype=dtype, device="meta") if x.numel() else x  # writable
    shape = tuple(1 if data.draw(st.booleans()) else s for s in x.shape)
    mask = torch.zeros(shape, dtype=torch.bool, device="meta")
    value = {torch.float32: -1.0, torch.int64: 0, torch.bool: False}[dtype]
    assert (
        _method("masked_fill_", x, mask, value)
        and method_rule("masked_fill_").shape(None, (x, mask, value), {}, None) is x
    )  # type: ignore[union-attr]


@SETTINGS
@given(data=st.data(), n=st.integers(0, 5), m=st.integers(0, 5), dtype=st.sampled_from([torch.float32, torch.int64]))
def test_outer_rule_matches_meta(data: st.DataObject, n: int, m: int, dtype: torch.dtype) -> None:
    a, _ = data.draw(tensors(shape=(n,), dtype=dtype, min_size=0))
    b, _ = data.draw(tensors(shape=(m,), dtype=data.draw(st.sampled_from([dtype, torch.float64]))))
    answered = _function(torch.outer, a, b) & _method("outer", a, b) & _function(torch.ger, a, b)
    assert answered  # of two dtypes too, promoted (Flux's float32 positions times float64 frequencies)


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), contiguous=st.booleans())
def test_integer_tensor_index_rule_matches_meta(data: st.DataObject, dtype: torch.dtype, contiguous: bool) -> None:
    """``table[index]`` (Swin's relative-position bias): the index's shape then the table's other dims."""
    x, _ = data.draw(tensors(min_rank=0, max_rank=3))
    if not contiguous and x.dim() >= 2:
        x = x.transpose(0, 1)
    shape = data.draw(st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple))
    index = torch.empty(shape, dtype=dtype, device="meta")
    answered = _function(operator.getitem, x, index)
    ordinary = dtype in (torch.int64, torch.int32) and index.dim() >= 1 and x.dim() >= 1 and x.is_contiguous()
    assert answered == ordinary


@SETTINGS
@given(data=st.data(), count=st.integers(1, 3), contiguous=st.booleans())
def test_several_integer_tensor_indices_rule_matches_meta(data: st.DataObject, count: int, contiguous: bool) -> None:
    """``mask[batch_idx, kv_idx]`` (transformers' padding masks): the indices' broadcast shape, then the rest."""
    x, _ = data.draw(tensors(min_rank=1, max_rank=3))
    if not contiguous and x.dim() >= 2:
        x = x.transpose(0, 1)
    indices = []
    for _ in range(count):
        shape = data.draw(st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple))
        index = torch.empty(
            shape, dtype=data.draw(st.sampled_from([torch.int64, torch.int32, torch.bool])), device="meta"
        )
        if data.draw(st.booleans()) and index.dim() >= 2:
            index = index.transpose(0, -1)  # an index of another layout still gives a contiguous result
        indices.append(index)
    answered = _function(operator.getitem, x, tuple(indices))
    dims = [tuple(i.shape) for i in indices]
    broadcasts = all(
        len({d[len(d) - k] for d in dims if len(d) >= k} - {1}) <= 1 for k in range(1, max(map(len, dims)) + 1)
    )
    ordinary = (
        all(i.dtype != torch.bool and i.dim() >= 1 for i in indices)
        and x.is_contiguous()
        and count <= x.dim()
        and broadcasts
    )
    assert answered == ordinary


@SETTINGS
@given(
    data=st.data(),
    layout=st.sampled_from(["2d3d", "3d3d", "2d2d", "3d2d"]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
)
def test_grouped_mm_rule_matches_the_cpu_kernel(data: st.DataObject, layout: str, dtype: torch.dtype) -> None:
    """Mixture-of-Experts layers (transformers' Qwen2-MoE, Mixtral): torch's meta kernel accepts bfloat16 only, the
    CPU kernel float32 too; the rule answers as the CPU kernel does, and where it raises, the rule does not answer."""
    if not hasattr(torch, "_grouped_mm"):
        return
    groups, m, k, n = (data.draw(st.sampled_from([1, 2, 3, 4, 8, 16])) for _ in range(4))
    shapes = {
        "2d3d": ((groups * m, k), (groups, k, n)),
        "3d3d": ((groups, m, k), (groups, k, n)),
        "2d2d": ((m, groups * k), (groups * k, n)),
        "3d2d": ((groups, m, k), (k, groups * n)),
    }[layout]
    a, b = (torch.randn(s).to(dtype) for s in shapes)
    if data.draw(st.booleans()):  # weights stored as nn.Linear's (out, in), passed transposed
        b = b.transpose(-2, -1).contiguous().transpose(-2, -1)
    step = {"2d3d": m, "3d3d": 0, "2d2d": k, "3d2d": n}[layout]
    offs = torch.arange(1, groups + 1, dtype=torch.int32) * step if step else None
    if offs is not None and data.draw(st.integers(0, 4)) == 0:
        offs = offs.long()  # the kernel wants int32
    kwargs = {"offs": offs} if offs is not None else {}
    rule = function_rule(torch._grouped_mm)
    out = _apply(rule, (a.to("meta"), b.to("meta")), {k: v.to("meta") for k, v in kwargs.items()})
    try:
        real = torch._grouped_mm(a, b, **kwargs)
    except RuntimeError:
        assert out is FALLBACK
        return
    assert out is not FALLBACK
    assert (tuple(out.shape), out.dtype, out.stride()) == (tuple(real.shape), real.dtype, real.stride())


def test_grouped_mm_macs_count_each_row_once() -> None:
    """Per group, an (m x k) @ (k x n) product: the MACs of the per-group matrix products, summed."""
    if not hasattr(torch, "_grouped_mm"):
        return
    rule = function_rule(torch._grouped_mm)
    assert rule is not None and rule.macs is not None
    meta = lambda *shape: torch.empty(shape, device="meta")  # noqa: E731
    offs = torch.empty(3, dtype=torch.int32, device="meta")
    cases = [  # (a, b, offs, the products' MACs written out: 3 groups)
        (meta(12, 8), meta(3, 8, 16), offs, 12 * 8 * 16),  # 12 rows, each times its group's 8 x 16
        (meta(3, 4, 8), meta(3, 8, 16), None, 3 * (4 * 8 * 16)),
        (meta(4, 24), meta(24, 16), offs, 4 * 24 * 16),  # K = 24 split into 3 groups
        (meta(3, 4, 8), meta(8, 48), offs, 4 * 8 * 48),  # N = 48 split into 3 groups
    ]
    for a, b, o, macs in cases:
        kwargs = {"offs": o} if o is not None else {}
        out = _apply(rule, (a, b), kwargs)
        assert rule.macs(None, (a, b), kwargs, out) == macs


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), largest=st.booleans())
def test_topk_and_sort_rules_match_meta(data: st.DataObject, dtype: torch.dtype, largest: bool) -> None:
    """Mixture-of-Experts routing: ``topk`` of the router's scores, ``sort`` of the expert ids."""
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    dim = data.draw(st.integers(-x.dim() - 1, max(x.dim(), 1)))
    k = data.draw(st.integers(0, 4))
    topk = _function(torch.topk, x, k, dim, largest) & _method("topk", x, k, dim=dim)
    ordinary = dtype != torch.bool and -max(x.dim(), 1) <= dim < max(x.dim(), 1)
    assert topk == (ordinary and k <= (x.shape[dim] if x.dim() else 1))
    sort = _function(torch.sort, x, dim, descending=largest) & _method("sort", x, dim)
    assert sort == (-max(x.dim(), 1) <= dim < max(x.dim(), 1) and x.is_contiguous())


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), bins=st.integers(-1, 8), low=st.sampled_from([0, -1.5, 3]))
def test_histc_rule_matches_meta(data: st.DataObject, dtype: torch.dtype, bins: int, low: float) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    answered = _function(torch.histc, x, bins=bins, min=low, max=2) & _method("histc", x, bins, low, 2)
    assert answered == (dtype != torch.bool and bins > 0 and low <= 2)  # integers too, as meta (Mixtral's router)


NUMBERS = st.one_of(
    st.booleans(), st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), st.complex_numbers(max_magnitude=2)
)


@SETTINGS
@given(
    data=st.one_of(
        NUMBERS,
        st.lists(NUMBERS, min_size=1, max_size=3),
        st.lists(st.lists(st.integers(0, 3), min_size=2, max_size=2), min_size=1, max_size=3),
        st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=3), min_size=2, max_size=2),  # ragged too
        st.just([]),
    ),
    dtype=st.sampled_from([None, torch.float16, torch.int32]),
)
def test_tensor_of_python_numbers_rule_matches_meta(data: Any, dtype: torch.dtype | None) -> None:
    kwargs = {} if dtype is None else {"dtype": dtype}
    if dtype is not None and any(isinstance(v, complex) for v in _flat(data)):
        return  # torch refuses complex numbers into a real dtype: not a case of interest
    answered = _function(torch.tensor, data, **kwargs)
    ragged = isinstance(data, list) and len({len(r) for r in data if isinstance(r, list)}) > 1
    assert answered == (data != [] and not ragged)


def _flat(value: Any) -> list[Any]:
    return [v for item in value for v in _flat(item)] if isinstance(value, list) else [value]


# ---------------------------------------------------------------- ops of detection models (DETR family)


@SETTINGS
@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    low=st.sampled_from([None, 0, -1.5]),
    high=st.sampled_from([None, 3, 0.5]),
    name=st.sampled_from(["clamp", "clip"]),
)
def test_clamp_rules_match_meta(data: st.DataObject, dtype: torch.dtype, low: Any, high: Any, name: str) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    answered = _function(getattr(torch, name), x, low, high) & _method(name, x, min=low, max=high)
    floats = any(isinstance(b, float) for b in (low, high))
    ordinary = dtype != torch.bool and (low, high) != (None, None) and (dtype.is_floating_point or not floats)
    assert answered == ordinary  # bool, no bound, an integer tensor with a float bound: meta
    if low is not None and high is not None:
        assert (_function(torch.clamp_min, x, low) & _method("clamp_max", x, high)) == ordinary


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_abs_operator_and_detach_rules_match_meta(data: st.DataObject, dtype: torch.dtype) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    assert _function(operator.abs, x) == (dtype != torch.bool)
    assert _method("detach", x) and _function(torch.detach, x)  # any layout: a view of x's strides
    assert _apply(function_rule(operator.abs), (-3,), {}) == 3  # a size in Python code


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), keepdim=st.booleans())
def test_sum_and_prod_rules_count_integers_as_int64(data: st.DataObject, dtype: torch.dtype, keepdim: bool) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    dim = data.draw(st.integers(-max(x.dim(), 1), max(x.dim(), 1) - 1))
    answered = [
        _function(torch.sum, x, dim, keepdim),
        _method("sum", x),
        _function(torch.prod, x),
        _method("prod", x, dim, keepdim=keepdim),
    ]
    assert all(answered)  # mask[:, :, 0].sum(1) of a bool mask: int64, contiguous for any layout
    assert not _function(torch.prod, x, (dim,)) and not _function(torch.prod, x, keepdim=True)  # torch refuses


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), keepdim=st.booleans(), name=st.sampled_from(["max", "min"]))
def test_max_min_rules_match_meta(data: st.DataObject, dtype: torch.dtype, keepdim: bool, name: str) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype, min_size=0))
    dim = data.draw(st.integers(-max(x.dim(), 1) - 1, max(x.dim(), 1)))
    fn = getattr(torch, name)
    whole = _function(fn, x) & _method(name, x)
    over_dim = _function(fn, x, dim, keepdim) & _method(name, x, dim=dim, keepdim=keepdim)
    assert whole == (x.numel() > 0)
    valid = -max(x.dim(), 1) <= dim < max(x.dim(), 1) and (x.dim() == 0 or x.shape[dim] > 0)
    assert over_dim == valid
    if over_dim:  # a named tuple, as torch's: .values and .indices
        out = _apply(method_rule(name), (x, dim), {"keepdim": keepdim})
        assert type(out) is type(getattr(torch.empty(2, device="meta"), name)(0))


@SETTINGS
@given(
    start=st.sampled_from([0, -1.5, 2]),
    end=st.sampled_from([1, 0.5, 7]),
    steps=st.integers(-1, 6),
    dtype=st.sampled_from([None, torch.float16, torch.int64]),
)
def test_linspace_rule_matches_meta(start: Any, end: Any, steps: int, dtype: torch.dtype | None) -> None:
    kwargs = {} if dtype is None else {"dtype": dtype}
    assert _function(torch.linspace, start, end, steps, **kwargs) == (steps >= 0)
    assert not _function(torch.linspace, torch.tensor(0.0, device="meta"), end, steps)  # tensor bounds: meta


@SETTINGS
@given(
    data=st.data(),
    count=st.integers(1, 3),
    indexing=st.sampled_from([None, "ij", "xy"]),
    as_list=st.booleans(),
)
def test_meshgrid_rule_matches_meta(data: st.DataObject, count: int, indexing: str | None, as_list: bool) -> None:
    inputs = [data.draw(tensors(min_rank=0, max_rank=1, min_size=0))[0] for _ in range(count)]
    kwargs = {} if indexing is None else {"indexing": indexing}
    args = (inputs,) if as_list else tuple(inputs)
    with warnings.catch_warnings():  # torch asks for indexing= when it is not given
        warnings.simplefilter("ignore", UserWarning)
        assert _function(torch.meshgrid, *args, **kwargs)
        ints = torch.zeros(2, dtype=torch.int64, device="meta")
        assert not _function(torch.meshgrid, inputs[0], ints, **kwargs) or inputs[0].dtype == torch.int64


@SETTINGS
@given(
    data=st.data(),
    x=st.sampled_from([0.0, 1, True, -1.5]),
    y=st.sampled_from([float("-inf"), 2, False]),
)
def test_where_of_two_numbers_rule_matches_meta(data: st.DataObject, x: Any, y: Any) -> None:
    condition, _ = data.draw(tensors(min_rank=0, dtype=torch.bool))
    assert _function(torch.where, condition, x, y)  # where(mask, 0.0, -inf): the numbers' dtype, the mask's layout


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), to=st.sampled_from([torch.float32, torch.int64, torch.bool]))
def test_type_and_logical_rules_match_meta(data: st.DataObject, dtype: torch.dtype, to: torch.dtype) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    assert _method("type", x, to) or not x.is_contiguous()  # a copy of another layout: meta
    assert not _method("type", x)  # x.type(): a string, left to meta
    shape = tuple(1 if data.draw(st.booleans()) else s for s in x.shape)
    other, _ = data.draw(tensors(shape=shape, dtype=data.draw(st.sampled_from([dtype, torch.bool]))))
    answered = _function(torch.logical_and, x, other) & _method("logical_or", x, other)
    answered &= _function(torch.logical_xor, other, x)
    assert answered == (x.is_contiguous() and other.is_contiguous())


@SETTINGS
@given(n=st.integers(-1, 4), m=st.sampled_from([None, 0, 3]), dtype=st.sampled_from([None, torch.int64]))
def test_eye_and_as_tensor_of_numbers_rules_match_meta(n: int, m: int | None, dtype: torch.dtype | None) -> None:
    kwargs = {} if dtype is None else {"dtype": dtype}
    sizes = (n,) if m is None else (n, m)
    assert _function(torch.eye, *sizes, **kwargs) == (n >= 0)
    shapes = torch.fx.immutable_collections.immutable_list([(n, 3), (2, 1)])  # as fx hands a list to a call
    assert _function(torch.as_tensor, shapes, **kwargs) and _function(torch.as_tensor, [1.5, n], device="meta")


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), repeats=st.integers(-1, 3))
def test_repeat_interleave_rule_matches_meta(data: st.DataObject, dtype: torch.dtype, repeats: int) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=dtype))
    dim = data.draw(st.sampled_from([None, *range(-max(x.dim(), 1), max(x.dim(), 1))]))
    kwargs = {} if dim is None else {"dim": dim}
    answered = _function(torch.repeat_interleave, x, repeats, **kwargs) & _method("repeat_interleave", x, repeats)
    assert answered == (repeats >= 0 and (x.dim() > 0 or dim is None))  # a 0-dim tensor over a dim: meta
    counts = torch.ones(max(x.numel(), 1), dtype=torch.int64, device="meta")
    assert not _function(torch.repeat_interleave, x, counts)  # repeats by values: meta


@SETTINGS
@given(data=st.data(), other=st.sampled_from([torch.bool, torch.int64, torch.float32]))
def test_product_of_two_masks_rule_matches_meta(data: st.DataObject, other: torch.dtype) -> None:
    x, _ = data.draw(tensors(min_rank=0, dtype=torch.bool))
    shape = tuple(1 if data.draw(st.booleans()) else s for s in x.shape)
    y, _ = data.draw(tensors(shape=shape, dtype=other))
    answered = _function(operator.mul, x, y) & _function(torch.mul, y, x) & _method("mul", x, y)
    if other == torch.bool:
        assert answered  # two masks: their logical and, bool
    assert not _function(operator.mul, x, 2) and not _function(operator.sub, x, x)  # promoted; torch refuses


@SETTINGS
@given(data=st.data(), in_place=st.booleans(), add=st.booleans(), number=st.booleans())
def test_scatter_rules_match_meta(data: st.DataObject, in_place: bool, add: bool, number: bool) -> None:
    """BigBird's ``view[:, :, 1].scatter_(3, index, src)``: x's shape and dtype whenever torch accepts the call."""
    x, _ = data.draw(tensors(min_rank=1, max_rank=4))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
    shape = [data.draw(st.integers(1, 4)) for _ in range(x.dim())]
    if data.draw(st.integers(0, 5)) == 0:
        shape = shape[1:]  # another rank: torch raises
    index = torch.zeros(shape, dtype=torch.int64, device="meta")
    src: Any = 1.5
    if not (number and not add):
        src_shape = [n + data.draw(st.integers(-1, 1)) if n > 1 else n for n in shape]
        src, _ = data.draw(tensors(shape=tuple(src_shape), dtype=data.draw(st.sampled_from([x.dtype, torch.float16]))))
    name = ("scatter_add" if add else "scatter") + ("_" if in_place else "")
    answered = _check(method_rule(name), (x, dim, index, src), {}, lambda: getattr(x, name)(dim, index, src))
    fits = (
        len(shape) == x.dim()
        and all(i == dim % x.dim() or n <= s for i, (n, s) in enumerate(zip(shape, x.shape)))
        and (
            not isinstance(src, torch.Tensor)
            or (src.dtype == x.dtype and all(n <= s for n, s in zip(shape, src.shape)))
        )
    )
    assert answered == (fits and (in_place or x.is_contiguous()))
    if answered and in_place:
        assert _apply(method_rule(name), (x, dim, index, src), {}) is x


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["unsqueeze_", "squeeze_", "transpose_", "swapaxes_", "t_"]))
def test_in_place_reshapes_match_meta(data: st.DataObject, name: str) -> None:
    """BigBird's ``mask.unsqueeze_(1)``: the tensor itself, with the shape and strides meta gives it."""
    x, build = data.draw(tensors(min_rank=0, max_rank=4))
    rank = x.dim()
    dims = st.integers(-rank - 1, rank) if rank else st.integers(-1, 0)
    extra: tuple[Any, ...] = {
        "unsqueeze_": (data.draw(st.integers(-rank - 2, rank + 1)),),
        "squeeze_": (data.draw(dims),) if data.draw(st.booleans()) else (),
        "transpose_": (data.draw(dims), data.draw(dims)),
        "swapaxes_": (data.draw(dims), data.draw(dims)),
        "t_": (),
    }[name]
    other = build("meta")  # the meta op edits its own copy
    out = _apply(method_rule(name), (x, *extra), {})
    try:
        expected = getattr(other, name)(*extra)
    except Exception:  # IndexError, RuntimeError; meta's t_ raises an AssertionError
        assert out is FALLBACK  # torch raises: the fallback reports it
        return
    assert out is x and tuple(x.shape) == tuple(expected.shape) and x.stride() == expected.stride()


def test_integer_index_then_full_slices_and_a_one_dimensional_linear_weight_are_ruled() -> None:
    """CTRL's ``table[(positions, :)]`` and D-FINE's ``F.linear(x, w)`` with a 1-d ``w`` used to run on meta."""
    table = torch.empty(256, 32, device="meta")
    ids = torch.zeros(1, 8, dtype=torch.int64, device="meta")
    assert _function(operator.getitem, table, (ids, slice(None)))
    assert _function(operator.getitem, torch.empty(4, 5, 6, device="meta"), (ids, slice(None), slice(None)))
    assert _function(operator.getitem, torch.empty(4, 5, 6, device="meta"), (ids, ids, slice(None)))
    assert not _function(operator.getitem, table, (ids, slice(1, None)))  # a real slice after it: meta answers
    x, w = torch.empty(80, 33, device="meta"), torch.empty(33, device="meta")
    assert _function(torch.nn.functional.linear, x, w)
    assert not _function(torch.nn.functional.linear, x, w, torch.empty((), device="meta"))  # torch raises
    assert not _function(torch.nn.functional.linear, x, torch.empty(32, device="meta"))


@SETTINGS
@given(data=st.data(), descending=st.booleans())
def test_argsort_rule_gives_sorts_indices(data: st.DataObject, descending: bool) -> None:
    """ViT-MAE's random masking: ``torch.argsort(noise, dim=1)`` ran on meta."""
    x, _ = data.draw(tensors(min_rank=1, dtype=data.draw(st.sampled_from([torch.float32, torch.int64]))))
    dim = data.draw(st.integers(-x.dim() - 1, x.dim()))
    answered = _function(torch.argsort, x, dim=dim, descending=descending) and _method("argsort", x, dim)
    assert answered == (x.is_contiguous() and -x.dim() <= dim < x.dim())


@SETTINGS
@given(data=st.data(), order=st.sampled_from([2, 1, 0, 3.5, float("inf"), -float("inf")]), keepdim=st.booleans())
def test_vector_norm_rule_matches_meta(data: st.DataObject, order: float, keepdim: bool) -> None:
    """ConvNeXt V2's global response norm: ``torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)``."""
    x, _ = data.draw(tensors(min_rank=1, dtype=data.draw(st.sampled_from([torch.float32, torch.bfloat16]))))
    dims = data.draw(st.one_of(st.none(), st.lists(st.integers(-x.dim(), x.dim() - 1), max_size=x.dim())))
    dim = tuple(dims) if dims is not None else None
    answered = _function(torch.linalg.vector_norm, x, order, dim, keepdim)
    unique = dim is None or len({d % x.dim() for d in dim}) == len(dim)
    assert answered == unique


@SETTINGS
@given(data=st.data(), p=st.sampled_from([2.0, 1, 3.0]))
def test_normalize_rule_keeps_the_layout(data: st.DataObject, p: float) -> None:
    """SwinV2's cosine attention: ``F.normalize(query, dim=-1)`` of a permuted view ran on meta."""
    x, _ = data.draw(tensors(min_rank=1, dtype=data.draw(st.sampled_from([torch.float32, torch.float16]))))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
    answered = _function(F.normalize, x, p, dim)
    if x.is_contiguous():
        assert answered


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["reshape_as", "view_as"]))
def test_reshape_as_and_view_as_rules_match_meta(data: st.DataObject, name: str) -> None:
    """LeViT's attention: ``x.reshape_as(other)`` (22 calls that ran on meta)."""
    x, _ = data.draw(tensors(min_rank=1))
    shape = data.draw(st.permutations(list(x.shape)).map(tuple))  # the same elements, another arrangement
    answered = _method(name, x, torch.empty(shape, device="meta"))
    if x.is_contiguous():
        assert answered


@SETTINGS
@given(size=st.lists(st.integers(0, 4), max_size=3).map(tuple), dtype=st.sampled_from([None, torch.float16]))
def test_factories_take_their_size_by_keyword_and_random_ones_are_ruled(size: tuple[int, ...], dtype: Any) -> None:
    """BEiT's ``torch.zeros(size=(n, n), dtype=...)`` and ViT-MAE's ``torch.rand(n, m, device=...)`` ran on meta."""
    options = {"device": "meta", **({"dtype": dtype} if dtype is not None else {})}
    assert _function(torch.zeros, size=size, **options) and _function(torch.ones, size=size, **options)
    assert _function(torch.rand, size, **options) and _function(torch.randn, *size, **options) == bool(size)
    assert not _function(torch.rand, size, device="meta", dtype=torch.int64)  # torch refuses it on the CPU


@SETTINGS
@given(data=st.data(), trailing=st.booleans())
def test_one_index_tensor_after_whole_dims_matches_meta(data: st.DataObject, trailing: bool) -> None:
    """LeViT's attention biases read at their offsets, ``biases[:, idxs]`` (5 calls that ran on meta)."""
    x, _ = data.draw(tensors(min_rank=2))
    at = data.draw(st.integers(1, x.dim() - 1))
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    idx = torch.empty(shape, dtype=data.draw(st.sampled_from([torch.int64, torch.int32])), device="meta")
    index = (*(slice(None),) * at, idx, *((slice(None),) if trailing and at + 1 < x.dim() else ()))
    answered = _function(operator.getitem, x, index)
    assert answered == x.is_contiguous()
