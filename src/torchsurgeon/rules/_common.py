"""Helpers shared by the rule families: argument binding, meta tensors, layouts.

A rule never guesses: outside the cases it computes exactly it returns
:data:`~torchsurgeon.rules.registry.FALLBACK`, and the op runs on ``meta``.

* the output is a meta tensor with the shape, dtype *and strides* meta
  execution gives (strides matter: ``.view`` fails on non-contiguous input);
* rules of ops that allocate a new tensor answer only for contiguous inputs
  of one floating dtype (their output is then contiguous); view ops (permute,
  transpose, slicing, expand...) compute the view's strides for any input;
* anything that would raise (wrong sizes, bad dims) falls back, so the
  error message is torch's own.

tests/test_rules.py checks every rule against meta execution with Hypothesis.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from ..autocast import HALF
from ..resize import input_fix, rebuild_fix
from .registry import FALLBACK, Call, CountFn, ShapeFn

_T = TypeVar("_T")

__all__ = (
    "REQUIRED",
    "Spec",
    "bind",
    "broadcast",
    "elementwise",
    "first_tensor",
    "fit_fix",
    "float_tensor",
    "fn",
    "fn_count",
    "is_int",
    "mixed_dtypes",
    "new",
    "norm_dim",
    "ntuple",
    "numel",
    "one_tensor",
    "plainly_contiguous",
    "preserved",
    "same_float",
    "shared_outputs",
    "size_args",
    "suggest_memory_format",
    "view",
    "weight_dtype",
)

try:  # torch's Python mirror of TensorIterator's output layout, used by meta kernels
    from torch._prims_common import compute_elementwise_output_strides as _elementwise_strides
    from torch._prims_common import suggest_memory_format
except ImportError:  # pragma: no cover - private API; without it, rules only answer for contiguous inputs
    _elementwise_strides = None  # type: ignore[assignment]
    suggest_memory_format = None  # type: ignore[assignment]

REQUIRED: Any = object()
"""Marks an argument without default in a :data:`Spec`."""
_META = torch.device("meta")
Spec = tuple[tuple[str, Any], ...]
"""An op's arguments in order: (name, default)."""
OpRule = Callable[[tuple[Any, ...], dict[str, Any]], Any]
"""A rule of a function or method: ``(args, kwargs) -> output | FALLBACK``."""
ModuleRule = Callable[[nn.Module, Call, torch.Tensor], Any]
"""A rule of a module called with one tensor: ``(module, call, x) -> output | None | FALLBACK``."""


def fn(rule: OpRule) -> ShapeFn:
    """A function/method rule in the registry's convention."""

    def shape(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
        return rule(args, kwargs)

    return shape


def one_tensor(rule: ModuleRule) -> ShapeFn:
    """A module rule for calls with one tensor argument; other calls fall back."""

    def shape(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            return FALLBACK
        return rule(module, call, args[0])

    return shape


def fn_count(count: Callable[[tuple[Any, ...], dict[str, Any], Any], int]) -> CountFn:
    """A function/method MAC or FLOP formula in the registry's convention."""

    def formula(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
        return count(args, kwargs, out)

    return formula


def numel(shape: Sequence[int]) -> int:
    """Elements of a shape."""
    return int(math.prod(shape))


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor inside nested lists, tuples and dicts."""
    return first_of(value, torch.Tensor)


def first_of(value: Any, kind: type[_T]) -> _T | None:
    """The first ``kind`` inside nested lists, tuples (named ones too), dicts and slices, without rebuilding them
    (fx's ``map_aggregate`` rebuilds a named tuple from what its function returns: a ``PackedSequence`` of ``None``
    raises).

    Examples
    --------
    >>> from torch.nn.utils.rnn import PackedSequence
    >>> first_of([1, {"p": PackedSequence(torch.ones(2, 1), torch.tensor([2]))}], torch.Tensor).shape
    torch.Size([2, 1])
    >>> first_of((slice(None, 2.5),), float)  # x[:, :n]
    2.5
    """
    if isinstance(value, kind):
        return value
    if type(value) is slice:
        value = (value.start, value.stop, value.step)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found = first_of(item, kind)
        if found is not None:
            return found
    return None


def bind(args: tuple[Any, ...], kwargs: Mapping[str, Any], spec: Spec) -> list[Any] | None:
    """The arguments of a call, in ``spec`` order (name, default); None if the call does not fit."""
    if len(args) > len(spec):
        return None
    values = list(args)
    rest = spec[len(args) :]
    if kwargs and not {name for name, _ in rest}.issuperset(kwargs):
        return None
    values += [kwargs.get(name, default) for name, default in rest]
    if any(v is REQUIRED for v in values):
        return None
    return values


def transformers_copies(name: str, *models: str | tuple[str, str]) -> tuple[str, ...]:
    """Qualified names of a class that transformers copies into each model's modeling file: ``name`` after the
    model's prefix for a ``(model, prefix)`` pair, as it is for a bare model name (built-in rules name them so).

    Examples
    --------
    >>> transformers_copies("FrozenBatchNorm2d", ("detr", "Detr"))
    ('transformers.models.detr.modeling_detr.DetrFrozenBatchNorm2d',)
    >>> transformers_copies("MultiScaleDeformableAttention", "rt_detr")[0].rpartition(".")[2]
    'MultiScaleDeformableAttention'
    """
    pairs = [(m, "") if isinstance(m, str) else m for m in models]
    return tuple(f"transformers.models.{model}.modeling_{model}.{prefix}{name}" for model, prefix in pairs)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def norm_dim(d: Any, rank: int) -> int | None:
    """``d`` as a dim in ``range(rank)``, or None when it is not a valid dim."""
    if not is_int(d):
        return None
    r = max(rank, 1)
    if not -r <= d < r:
        return None
    return int(d) % r


def float_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


_SHARED: contextvars.ContextVar[dict[tuple[tuple[int, ...], torch.dtype], torch.Tensor] | None] = (
    contextvars.ContextVar("torchsurgeon_shared_outputs", default=None)
)


@contextlib.contextmanager
def shared_outputs(share: bool) -> Iterator[None]:
    """In this block, :func:`new` gives one meta tensor per shape and dtype (``share``), or a new one each time.

    Shape propagation shares them (making a meta tensor costs more than a
    rule's arithmetic); a value is then the output of several nodes, so
    code that could change a tensor's shape in place (a fallback run on
    ``meta``, a user's rule) gets its own views, and a graph with such a
    method call does not share.

    Examples
    --------
    >>> with shared_outputs(True):
    ...     new((2, 3), torch.float32) is new((2, 3), torch.float32)
    True
    >>> new((2, 3), torch.float32) is new((2, 3), torch.float32)
    False
    """
    token = _SHARED.set({} if share else None)
    try:
        yield
    finally:
        _SHARED.reset(token)


_EMPTY = torch._C._VariableFunctions.empty
"""torch.empty itself: a trace records ``torch.empty`` of a proxy (``frontend.library_answers``), and a rule's
sizes are numbers (no proxy to look for on every call)."""


def new(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous meta tensor (shared in a :func:`shared_outputs` block)."""
    shared = _SHARED.get()
    if shared is None:
        return _EMPTY(tuple(shape), dtype=dtype, device=_META)
    key = (tuple(shape), dtype)
    out = shared.get(key)
    if out is None:
        out = shared[key] = _EMPTY(key[0], dtype=dtype, device=_META)
    return out


def weight_dtype(m: nn.Module, name: str = "weight") -> torch.dtype | None:
    """The dtype of a module's tensor ``name`` without computing it, None when it has none.

    A parametrized weight is computed on each read, and ``spectral_norm`` in
    training mode steps its power iteration then (the model would change):
    the dtype of the first tensor it is made from stands for it.

    Examples
    --------
    >>> layer = nn.utils.parametrizations.spectral_norm(nn.Linear(3, 2).double())
    >>> u = layer.parametrizations.weight[0]._u.clone()
    >>> weight_dtype(layer), bool((layer.parametrizations.weight[0]._u == u).all())
    (torch.float64, True)
    """
    parametrizations = m._modules.get("parametrizations")
    if parametrizations is not None and name in parametrizations._modules:
        made_from = parametrizations._modules[name]
        originals = made_from._parameters if made_from is not None else {}
        tensor = originals.get("original", originals.get("original0"))
    else:
        tensor = getattr(m, name, None)
    return tensor.dtype if isinstance(tensor, torch.Tensor) else None


def mixed_dtypes(tensors: Sequence[Any]) -> tuple[torch.dtype, torch.dtype] | None:
    """The two floating-point dtypes that differ among the tensors a product multiplies (a convolution's input
    and weight, a matmul's operands), sorted; None when they agree or an autocast region is active, where a
    real forward casts them (``torch.autocast`` in the model's own forward, or around the call).

    Outside autocast a real forward raises on them (``mat1 and mat2 must have the same dtype``); ``meta`` does
    not check it.

    Examples
    --------
    >>> a, b = torch.empty(2, dtype=torch.bfloat16), torch.empty(2)
    >>> mixed_dtypes((a, b))
    (torch.bfloat16, torch.float32)
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     mixed_dtypes((a, b))
    >>> mixed_dtypes((b, b, 3))
    """
    dtypes = {t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()}
    if len(dtypes) < 2 or torch._C._is_any_autocast_enabled():
        return None
    first, second = sorted(dtypes, key=str)[:2]
    return first, second


def view(shape: Sequence[int], stride: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A meta tensor with the given strides (the result of a view op)."""
    return torch.empty_strided(tuple(shape), tuple(stride), dtype=dtype, device=_META)


def broadcast(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """The broadcast shape, or None when the shapes do not broadcast."""
    first = shapes[0]
    if all(s == first for s in shapes):  # the common case (x + y of one shape): that shape
        return tuple(map(int, first))
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        size = 1
        for s in shapes:
            j = i - rank + len(s)
            if j < 0:
                continue
            d = int(s[j])
            if d == 1:
                continue
            if size not in (1, d):
                return None
            size = d
        # a dim where every size is 1 stays 1; a zero-size dim broadcasts with 1
        out.append(size)
    return tuple(out)


def size_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sizes given as ``*sizes`` or as one sequence (``x.view(2, 3)``, ``x.view((2, 3))``, ``torch.zeros([2, 3])``)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return args


def plainly_contiguous(x: torch.Tensor) -> bool:
    """Contiguous, and for 4-d / 5-d tensors not suggesting channels-last.

    A ``(1, 2, 1, 1)`` tensor is contiguous and channels-last at once; ops
    that keep their input's memory format (pooling, interpolation) then give
    a channels-last output, which a rule making a contiguous one would get wrong.

    Examples
    --------
    >>> x = torch.empty_strided((1, 2, 1, 1), (2, 1, 2, 2), device="meta")  # channels-last strides
    >>> x.is_contiguous(), plainly_contiguous(x), plainly_contiguous(torch.empty(1, 2, 1, 1, device="meta"))
    (True, False, True)
    """
    if not x.is_contiguous():
        return False
    if x.dim() not in (4, 5) or suggest_memory_format is None:
        return True
    return bool(suggest_memory_format(x) == torch.contiguous_format)


# ----------------------------------------------------------------- elementwise


def elementwise(tensors: Sequence[torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> Any:
    """The output of an element-wise op on ``tensors`` broadcast to ``shape``.

    Contiguous operands give a contiguous output; otherwise the strides are
    torch's own rule for element-wise outputs (the one meta kernels use:
    ``torch._prims_common.compute_elementwise_output_strides``).  In half
    precision the meta kernels order ties between dimensions otherwise
    (operands of size-1 dimensions and mixed layouts): the strides are then
    those of the meta kernel itself, asked once per layout.
    """
    if all(t.is_contiguous() for t in tensors):
        return new(shape, dtype)
    if _elementwise_strides is None:  # pragma: no cover - torch without _prims_common
        return FALLBACK
    layouts = tuple((tuple(t.shape), t.stride(), t.dtype) for t in tensors)
    strides = _output_strides(shape, layouts)
    return FALLBACK if strides is None else view(shape, strides, dtype)


@functools.lru_cache(maxsize=4096)
def _output_strides(
    shape: tuple[int, ...], layouts: tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...]
) -> Any:
    """torch's strides for an element-wise output (a function of the operands' shapes, strides and dtypes):
    its Python implementation costs tens of microseconds, and repeated blocks ask the same question."""
    assert _elementwise_strides is not None
    if not any(dtype in HALF for _, _, dtype in layouts):
        expanded = [
            torch.empty_strided(size, stride, dtype=dtype, device=_META).expand(shape)
            if size != shape
            else torch.empty_strided(size, stride, dtype=dtype, device=_META)
            for size, stride, dtype in layouts
        ]
        return _elementwise_strides(*expanded)
    given = [torch.empty_strided(size, stride, dtype=dtype, device=_META) for size, stride, dtype in layouts]
    with torch._C.DisableTorchFunction():  # the meta kernel itself (it broadcasts), not the rules around this call
        if len(given) == 1:
            return torch.ops.aten.neg.default(given[0]).stride()
        if len(given) == 2:
            return torch.ops.aten.add.Tensor(*given).stride()
        if len(given) == 3 and given[0].dtype == torch.bool:
            return torch.ops.aten.where.self(*given).stride()
    return None


def preserved(x: torch.Tensor, dtype: torch.dtype) -> Any:
    """A copy of ``x`` in ``preserve_format`` (``x.clone()``, ``x.to(dtype)``): x's own strides, size-1
    dimensions included, when x is dense (contiguous or channels-last); else FALLBACK.

    Examples
    --------
    >>> x = torch.empty_strided((1, 2, 1, 1), (2, 1, 2, 2), device="meta")  # contiguous, channels-last strides
    >>> preserved(x, torch.float16).stride() == x.half().stride() == (2, 1, 2, 2)
    True
    """
    dense = x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
    return view(x.shape, x.stride(), dtype) if dense else FALLBACK


def same_float(*tensors: Any) -> bool:
    """Tensors of one floating dtype (matrix products give contiguous outputs for any input layout)."""
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return False
    dtype = tensors[0].dtype
    return bool(dtype.is_floating_point) and all(t.dtype == dtype for t in tensors)


_INT = frozenset({int})


def ntuple(v: Any, n: int) -> tuple[int, ...] | None:
    """``v`` (an int, or a tuple or list of ``n`` ints or of one) as a tuple of ``n`` ints; None otherwise.

    Examples
    --------
    >>> ntuple(3, 2), ntuple([1, 2], 2), ntuple((4,), 3), ntuple((1, 2), 3), ntuple(True, 2)
    ((3, 3), (1, 2), (4, 4, 4), None, None)
    """
    kind = type(v)
    if kind is int:
        return (v,) * n
    if (kind is tuple or kind is list) and len(v) == n and _INT.issuperset(map(type, v)):  # the common case, exactly
        return tuple(v)
    if is_int(v):
        return (int(v),) * n
    if isinstance(v, (tuple, list)) and all(is_int(d) for d in v):
        if len(v) == n:
            return tuple(int(d) for d in v)
        if len(v) == 1:
            return (int(v[0]),) * n
    return None


def fit_fix(call: Call, m: nn.Module, what: str, expected: Any, got: Any) -> str:
    """The fix of layer ``m`` that expects ``what=expected`` and gets ``got``: fold an input layer; otherwise fix
    what comes before (the input, or the layer before), or replace this one with a layer that fits (new weights).

    Convolutions, linear layers and norms (:mod:`~torchsurgeon.rules.layers`), recurrent layers and transformer
    encoder layers alike: :func:`~torchsurgeon.resize.rebuild_fix` writes the layer that fits."""
    groups, joined = call.fold_layout  # the input's channels merged with another axis (groups), joined to others
    plain = (groups, joined) == (1, 0)
    mapped = plain or (
        isinstance(got, int)
        and isinstance(expected, int)
        and min(got, expected) > joined
        and (got - joined) % groups == (expected - joined) % groups == 0
    )
    if call.from_input and isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(got, int) and mapped:
        if not plain:  # the fold is of the input's channels
            got, expected = (got - joined) // groups, (expected - joined) // groups
        layers, why = call.fold_alone(got) if call.fold_alone is not None else ((), "")
        if call.layer not in layers:  # the layer itself reads the input rearranged (a video's frames): no layer=
            layers, why = (), ""
        if why:
            return why
        given = call.fold_input(expected) if call.fold_input is not None and not layers else ""  # layer=: no run
        return input_fix(m, got, given, layers)
    rebuild = rebuild_fix(m, call.layer, what, got, whole_model=call.whole_model)
    before = f"what comes before it gives {got}: make that give {expected}"
    if call.from_input:
        before = f"the input gives {got}: give {expected}"
    return f"{before}, or replace the layer (new weights): {rebuild}" if rebuild else before
