"""Arithmetic and Python values: broadcasting operators, sizes, ``getattr``, dtype conversions, asserts.

Python values (sizes, ints) are computed by running the Python operator itself, which is exact.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch

from ..records import FlopKind
from ._common import REQUIRED, OpRule, Spec, bind, broadcast, elementwise, first_tensor, fn, new, norm_dim, preserved
from .creation import python_data
from .linalg import _MATMUL, _matmul
from .registry import FALLBACK, builtin

__all__: tuple[str, ...] = ()


def _binary_rule(spec: Spec, *, integers: bool = False, bools: bool = False, division: bool = False) -> OpRule:
    """Broadcasting arithmetic: tensors of one floating dtype, plus Python numbers; contiguous tensors of
    several dtypes when torch promotes them to a floating one (an integer or bool tensor with a float tensor).

    ``integers``: also tensors of one integer dtype with Python ints (``+``, ``-``, ``*`` of position
    ids), and with a Python float, which gives the default floating dtype for contiguous tensors (SAM's relative
    positions, ``torch.arange(q)[:, None] * 1.0``).  ``bools``: also two bool tensors (``*`` of two masks: their
    logical and).  ``division``: a true division (no ``rounding_mode``) of contiguous tensors of one integer dtype
    gives the default floating dtype too (AutoencoderTiny's ``bytes / 255.0``).
    """

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not kwargs and len(args) == 2:  # the common cases, as the steps below answer them
            a, other = args
            if isinstance(a, torch.Tensor) and a.dtype.is_floating_point and a.is_contiguous():
                if type(other) is float or type(other) is int:  # x * 0.5: x's shape and dtype
                    return new(tuple(map(int, a.shape)), a.dtype)
                if (
                    isinstance(other, torch.Tensor)
                    and other.dtype == a.dtype
                    and other.shape == a.shape
                    and other.is_contiguous()
                ):
                    return new(tuple(map(int, a.shape)), a.dtype)
        b = bind(args, kwargs, spec)
        if b is None:
            return FALLBACK
        a, other, *rest = b
        operands = (a, other)
        tensors = [v for v in operands if isinstance(v, torch.Tensor)]
        if not tensors:
            return FALLBACK
        if any(isinstance(v, torch.Tensor) for v in rest):
            return FALLBACK
        if any(isinstance(v, bool) or not isinstance(v, (torch.Tensor, int, float)) for v in operands):
            return FALLBACK  # bools (x - True is an error on the CPU only), complex, strings...
        dtype = tensors[0].dtype
        if any(t.dtype != dtype for t in tensors):  # torch's promotion, when it gives a float (pow(2.0, arange(n)))
            dtype = torch.result_type(a, other)
            if not dtype.is_floating_point or any(t.dtype.is_complex or not t.is_contiguous() for t in tensors):
                return FALLBACK  # operands cast to another dtype give other output strides: left to meta
        if dtype == torch.bool and bools and len(tensors) == 2:
            pass  # a bool result
        elif dtype.is_complex or dtype == torch.bool:
            return FALLBACK
        elif _to_float(dtype, tensors, operands, rest, division, integers):
            dtype = torch.get_default_dtype()  # each operand cast to it (a non-contiguous one: meta decides)
        elif not dtype.is_floating_point and (not integers or any(isinstance(v, float) for v in operands)):
            return FALLBACK
        shape = broadcast(*(t.shape for t in tensors))
        if shape is None:
            return FALLBACK
        return elementwise(tensors, shape, dtype)

    return rule


def _to_float(
    dtype: torch.dtype,
    tensors: list[torch.Tensor],
    operands: tuple[Any, ...],
    rest: list[Any],
    division: bool,
    integers: bool,
) -> bool:
    """Whether contiguous tensors of one integer ``dtype`` give the default floating dtype: a true division, or
    ``integers`` arithmetic with a Python float."""
    if dtype.is_floating_point or not all(t.is_contiguous() for t in tensors):
        return False
    return (division and not any(rest)) or (integers and any(type(v) is float for v in operands))


def _inplace_rule(spec: Spec) -> OpRule:
    """``x.mul_(y)``, ``x.add_(y)``...: ``x`` itself, when ``y`` (a number, or a tensor of x's floating
    dtype) broadcasts to x's shape."""
    out_of_place = _binary_rule(spec)

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = out_of_place(args, kwargs)
        x = args[0] if args else None
        if out is FALLBACK or not isinstance(x, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
            return FALLBACK
        return x if out.dtype == x.dtype else FALLBACK  # a result x cannot hold: torch raises

    return rule


_CONVERSIONS = {
    "float": torch.float32,
    "double": torch.float64,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "long": torch.int64,
    "int": torch.int32,
    "short": torch.int16,
    "char": torch.int8,
    "byte": torch.uint8,
    "bool": torch.bool,
}


def _converted(x: torch.Tensor, dtype: torch.dtype) -> Any:
    """``x`` in ``dtype``: x itself when nothing changes, else a copy keeping a dense layout."""
    return x if dtype == x.dtype else preserved(x, dtype)


def _conversion(dtype: torch.dtype) -> OpRule:
    """``x.float()``, ``x.long()``...: no arguments but ``memory_format``-free calls."""
    return lambda args, kwargs: (
        _converted(args[0], dtype) if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor) else FALLBACK
    )


def _same_dtype_unary(accepts: Callable[[torch.dtype], bool]) -> OpRule:
    """``-x``, ``x.abs()`` (numbers, not bool) and ``~x`` (bool and integers): x's shape and dtype."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor) or not accepts(args[0].dtype):
            return FALLBACK
        x = args[0]
        return elementwise((x,), tuple(x.shape), x.dtype)

    return rule


_SIGNED = _same_dtype_unary(lambda dtype: dtype != torch.bool and not dtype.is_complex)
_BITWISE = _same_dtype_unary(lambda dtype: not dtype.is_floating_point and not dtype.is_complex)


def _clamp(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``clamp``/``clip(input, min=None, max=None)`` with numbers as bounds (boxes clipped to the image): x's
    shape and dtype for a floating tensor, or an integer one with int bounds; a float bound promotes an integer
    tensor, and tensor bounds broadcast: both run on meta."""
    b = bind(args, kwargs, (("input", REQUIRED), ("min", None), ("max", None)))
    if b is None or not isinstance(b[0], torch.Tensor) or (b[1] is None and b[2] is None):
        return FALLBACK  # torch raises without a bound
    x, dtype = b[0], b[0].dtype
    if dtype == torch.bool or dtype.is_complex:
        return FALLBACK
    for bound in b[1:]:
        if bound is None:
            continue
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            return FALLBACK
        if isinstance(bound, float) and not dtype.is_floating_point:
            return FALLBACK
    return elementwise((x,), tuple(x.shape), dtype)


def _clamp_one(name: str) -> OpRule:
    """``clamp_min(input, min)`` / ``clamp_max(input, max)``: :func:`_clamp` with one bound."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, (("input", REQUIRED), (name, REQUIRED)))
        return FALLBACK if b is None else _clamp((b[0],), {name: b[1]})

    return rule


def _compare_rule(spec: Spec, *, logical: bool = False) -> OpRule:
    """Broadcasting comparisons (``==``, ``<``...) and logical ``&``/``|``: tensors of one dtype, plus numbers.

    Comparisons give ``bool``; ``&`` and ``|`` of bool (or integer) tensors keep their dtype.
    """

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, spec)
        if b is None:
            return FALLBACK
        operands = (b[0], b[1])
        tensors = [v for v in operands if isinstance(v, torch.Tensor)]
        if not tensors or any(not isinstance(v, (torch.Tensor, int, float)) for v in operands):
            return FALLBACK
        dtype = tensors[0].dtype
        if any(t.dtype != dtype for t in tensors) or dtype.is_complex:
            return FALLBACK
        numbers = [v for v in operands if not isinstance(v, torch.Tensor)]
        if logical and (dtype.is_floating_point or any(not isinstance(v, bool) for v in numbers)):
            return FALLBACK  # & of floats raises; & with a number promotes
        if not logical and any(isinstance(v, bool) for v in numbers):
            return FALLBACK
        shape = broadcast(*(t.shape for t in tensors))
        if shape is None:
            return FALLBACK
        return elementwise(tensors, shape, dtype if logical else torch.bool)

    return rule


def _filled(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The ``x`` of ``x.masked_fill(mask, value)`` when a bool mask broadcasts to x and the value fits x's dtype."""
    b = bind(args, kwargs, (("input", REQUIRED), ("mask", REQUIRED), ("value", REQUIRED)))
    if b is None or not isinstance(b[0], torch.Tensor) or not isinstance(b[1], torch.Tensor):
        return None
    x, mask, value = b
    if mask.dtype != torch.bool or broadcast(x.shape, mask.shape) != tuple(x.shape):
        return None
    fits = (
        isinstance(value, (int, float))
        if x.is_floating_point()
        else type(value) is (bool if x.dtype == torch.bool else int)
    )
    return x if fits else None


def _masked_fill(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.masked_fill(mask, value)``: x's shape and dtype, for a contiguous x."""
    x = _filled(args, kwargs)
    return new(x.shape, x.dtype) if x is not None and x.is_contiguous() else FALLBACK


def _masked_fill_inplace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.masked_fill_(mask, value)``: x itself."""
    x = _filled(args, kwargs)
    return FALLBACK if x is None else x


_BINARY: Spec = (("input", REQUIRED), ("other", REQUIRED))
_BINARY_ALPHA: Spec = (("input", REQUIRED), ("other", REQUIRED), ("alpha", 1))
_BINARY_DIV: Spec = (("input", REQUIRED), ("other", REQUIRED), ("rounding_mode", None))
_POW: Spec = (("input", REQUIRED), ("exponent", REQUIRED))


def _size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("dim", None)))
    if b is None or not isinstance(b[0], torch.Tensor):
        return FALLBACK
    if b[1] is None:
        return b[0].shape
    d = norm_dim(b[1], b[0].dim())
    return FALLBACK if d is None or b[0].dim() == 0 else int(b[0].shape[d])


def _dim(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        return FALLBACK
    return args[0].dim()


def _numel(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        return FALLBACK
    return args[0].numel()


_TENSOR_ATTRS = frozenset({"shape", "dtype", "ndim", "device"})


def _getattr(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if kwargs or len(args) != 2 or not isinstance(args[1], str):
        return FALLBACK
    obj, name = args
    if isinstance(obj, torch.Tensor):
        return getattr(obj, name) if name in _TENSOR_ATTRS else FALLBACK
    return getattr(obj, name)


def _to(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.to(dtype)``, ``x.to(device)``, ``x.to(device, dtype)``, ``x.to(other)``, ``x.to(dtype=...)``.

    On meta: known data (a CPU tensor) moved to another device, ``copy=True`` or a ``memory_format`` runs on meta;
    a meta tensor moved to any device stays a meta tensor of the dtype asked for.
    """
    if not args or not isinstance(args[0], torch.Tensor) or not {"dtype", "device", "non_blocking"}.issuperset(kwargs):
        return FALLBACK
    x, rest = args[0], list(args[1:])
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    if rest and isinstance(rest[0], torch.Tensor):  # x.to(other): other's device and dtype
        other = rest.pop(0)
        device, dtype = other.device, other.dtype
    elif rest and isinstance(rest[0], (str, torch.device)):
        device = rest.pop(0)
    if rest and isinstance(rest[0], torch.dtype):
        dtype = rest.pop(0)
    if rest and isinstance(rest[0], bool):
        rest.pop(0)  # non_blocking
    if rest:
        return FALLBACK  # copy, memory_format
    if device is not None and torch.device(device).type != x.device.type and not x.is_meta:
        return FALLBACK
    # a meta tensor moved to the model's device (`pixel_values.to(self.device, self.dtype)`, transformers'
    # TimmWrapperModel): its data is not known there either, and it stands for the result on meta
    return _converted(x, dtype or x.dtype)


def _as_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch.as_tensor(x)`` of a tensor: ``x`` itself (the same object), or converted to ``dtype``; of Python
    numbers (a detector's list of feature map sizes), as ``torch.tensor``; a device other than meta runs on meta."""
    b = bind(args, kwargs, (("data", REQUIRED), ("dtype", None), ("device", None)))
    if b is None or (b[2] is not None and torch.device(b[2]).type != "meta"):
        return FALLBACK
    if not isinstance(b[0], torch.Tensor):
        return python_data((b[0],), {} if b[1] is None else {"dtype": b[1]})
    x, dtype = b[0], b[1]
    return x if dtype is None or dtype == x.dtype else _converted(x, dtype)


pairwise = _binary_rule(_BINARY, integers=True)
"""``torch.max(a, b)`` / ``torch.min(a, b)`` of two tensors, as ``maximum``/``minimum`` (rules.reductions)."""


def _where(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch.where(condition, x, y)``: a bool condition, x and y tensors of one dtype or a tensor and a number
    that keeps its dtype (a float tensor with an int or float, an integer tensor with an int), or two numbers
    (the default float dtype if one is a float, else int64 if one is an int, else bool)."""
    b = bind(args, kwargs, (("condition", REQUIRED), ("input", REQUIRED), ("other", REQUIRED)))
    if b is None or not isinstance(b[0], torch.Tensor) or b[0].dtype != torch.bool:
        return FALLBACK
    condition, x, y = b
    values = [v for v in (x, y) if isinstance(v, torch.Tensor)]
    numbers = [v for v in (x, y) if not isinstance(v, torch.Tensor)]
    if not values and all(type(v) in (bool, int, float) for v in numbers):  # where(mask, 0.0, -inf): by the numbers
        kinds = {type(v) for v in numbers}
        dtype = torch.get_default_dtype() if float in kinds else torch.int64 if int in kinds else torch.bool
        return elementwise((condition,), tuple(condition.shape), dtype)
    if not values or any(v.dtype != values[0].dtype for v in values):
        return FALLBACK
    dtype = values[0].dtype
    for number in numbers:
        if type(number) not in (int, float) or dtype.is_complex or dtype == torch.bool:
            return FALLBACK
        if not dtype.is_floating_point and type(number) is float:
            return FALLBACK  # promotes
    tensors = [condition, *values]
    shape = broadcast(*(t.shape for t in tensors))
    return FALLBACK if shape is None else elementwise(tensors, shape, dtype)


def _type(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.type(dtype)``: ``x.to(dtype)``; ``x.type()`` (a string) and tensor type names run on meta."""
    b = bind(args, kwargs, (("self", REQUIRED), ("dtype", REQUIRED), ("non_blocking", False)))
    if b is None or not isinstance(b[0], torch.Tensor) or not isinstance(b[1], torch.dtype):
        return FALLBACK
    return _converted(b[0], b[1])


def _logical(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``logical_and``/``or``/``xor(a, b)`` of two contiguous tensors: bool, broadcast, contiguous (other layouts
    get other strides than element-wise arithmetic: meta)."""
    if len(args) != 2 or kwargs or not all(isinstance(a, torch.Tensor) and a.is_contiguous() for a in args):
        return FALLBACK
    shape = broadcast(args[0].shape, args[1].shape)
    return FALLBACK if shape is None else new(shape, torch.bool)


def _type_as(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.type_as(other)``: ``x.to(other.dtype)``."""
    if len(args) != 2 or kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        return FALLBACK
    return _converted(args[0], args[1].dtype)


def _assert(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not kwargs and args and args[0] is True:
        return None
    return FALLBACK


def _python_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a Python operator on Python values (sizes, ints): exact by construction."""
    return fn(*args, **kwargs)


def _python_or(fn: Callable[..., Any], tensor_rule: OpRule | None) -> OpRule:
    """An operator: run it on Python values, use ``tensor_rule`` on tensors."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not any(isinstance(a, torch.Tensor) for a in args) and not any(
            isinstance(v, torch.Tensor) for v in kwargs.values()
        ):
            if any(isinstance(a, (list, tuple, dict)) and first_tensor(a) is not None for a in args):
                return FALLBACK
            return _python_call(fn, args, kwargs)
        return tensor_rule(args, kwargs) if tensor_rule is not None else FALLBACK

    return rule


builtin(operator.neg, shape=fn(_python_or(operator.neg, _SIGNED)), python=True)
builtin(torch.neg, "neg", torch.abs, "abs", shape=fn(_SIGNED))
builtin(operator.abs, shape=fn(_python_or(operator.abs, _SIGNED)), python=True)  # abs(x) in a forward
builtin(torch.clamp, torch.clip, "clamp", "clip", shape=fn(_clamp))
builtin(torch.clamp_min, "clamp_min", shape=fn(_clamp_one("min")))
builtin(torch.clamp_max, "clamp_max", shape=fn(_clamp_one("max")))
builtin(operator.invert, shape=fn(_python_or(operator.invert, _BITWISE)), python=True)
builtin(torch.bitwise_not, "bitwise_not", shape=fn(_BITWISE))
for _arith in (operator.add, operator.sub, operator.mul, operator.truediv, operator.pow):
    _integers = _arith in (operator.add, operator.sub, operator.mul)
    _tensor_rule = _binary_rule(
        _BINARY, integers=_integers, bools=_arith is operator.mul, division=_arith is operator.truediv
    )
    builtin(_arith, shape=fn(_python_or(_arith, _tensor_rule)), python=True)
builtin(operator.matmul, shape=fn(_python_or(operator.matmul, _matmul)), macs=_MATMUL, kind=FlopKind.MATMUL)
_PYTHON_OPS: tuple[Callable[..., Any], ...] = (
    operator.floordiv,
    operator.mod,
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    operator.not_,
    operator.and_,
    operator.or_,
    len,
    math.sqrt,
    math.ceil,
    math.floor,
    math.prod,
)
_COMPARISONS = {
    operator.eq: (torch.eq, "eq"),
    operator.ne: (torch.ne, "ne"),
    operator.lt: (torch.lt, "lt"),
    operator.le: (torch.le, "le"),
    operator.gt: (torch.gt, "gt"),
    operator.ge: (torch.ge, "ge"),
}
_LOGICAL = {operator.and_: (torch.bitwise_and, "bitwise_and"), operator.or_: (torch.bitwise_or, "bitwise_or")}


def _contiguous_only(rule: OpRule) -> OpRule:
    """``rule`` for contiguous tensor operands only; others run on meta."""

    def contiguous(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if any(isinstance(v, torch.Tensor) and not v.is_contiguous() for v in (*args, *kwargs.values())):
            return FALLBACK
        return rule(args, kwargs)

    return contiguous


_DIVISIONS: dict[Callable[..., Any], tuple[Callable[..., Any], str]] = {  # token positions: perm // top_k
    operator.floordiv: (torch.floor_divide, "floor_divide"),
    operator.mod: (torch.remainder, "remainder"),
}
for _op in _PYTHON_OPS:
    if _op in _COMPARISONS or _op in _LOGICAL or _op in _DIVISIONS:
        if _op in _DIVISIONS:  # torch's floor division and remainder of floats are decompositions: other strides
            tensor_rule = _contiguous_only(_binary_rule(_BINARY, integers=True))
        else:
            tensor_rule = _compare_rule(_BINARY, logical=_op in _LOGICAL)
        builtin(_op, shape=fn(_python_or(_op, tensor_rule)), python=True)
        builtin(*(_COMPARISONS.get(_op) or _LOGICAL.get(_op) or _DIVISIONS[_op]), shape=fn(tensor_rule))
    else:
        builtin(_op, shape=fn(_python_or(_op, None)), python=True)
builtin(torch.masked_fill, "masked_fill", shape=fn(_masked_fill))
builtin("masked_fill_", shape=fn(_masked_fill_inplace))
builtin(getattr, shape=fn(_getattr), python=True)
builtin(torch._assert, shape=fn(_assert))
builtin(torch.add, "add", shape=fn(_binary_rule(_BINARY_ALPHA, integers=True)))
builtin(torch.sub, "sub", shape=fn(_binary_rule(_BINARY_ALPHA, integers=True)))
builtin(torch.mul, "mul", shape=fn(_binary_rule(_BINARY, integers=True, bools=True)))
builtin(torch.div, "div", shape=fn(_binary_rule(_BINARY_DIV, division=True)))
builtin(torch.maximum, torch.minimum, shape=fn(_binary_rule(_BINARY)))
builtin(torch.pow, "pow", shape=fn(_binary_rule(_POW)))  # RMS norms: x.pow(2).mean(-1)
builtin("size", shape=fn(_size))
builtin("dim", shape=fn(_dim))
builtin("numel", shape=fn(_numel))
builtin("to", shape=fn(_to))
builtin(torch.as_tensor, shape=fn(_as_tensor))
builtin("type_as", shape=fn(_type_as))
builtin("type", shape=fn(_type))
builtin(torch.logical_and, "logical_and", torch.logical_or, "logical_or", shape=fn(_logical))
builtin(torch.logical_xor, "logical_xor", shape=fn(_logical))
builtin(torch.where, shape=fn(_where))
for _name, _dtype in _CONVERSIONS.items():
    builtin(_name, shape=fn(_conversion(_dtype)))
for _name in ("add_", "sub_", "mul_", "div_"):
    builtin(_name, shape=fn(_inplace_rule(_BINARY_ALPHA if _name in ("add_", "sub_") else _BINARY)))
