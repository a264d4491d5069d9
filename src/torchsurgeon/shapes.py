"""Shape propagation for any input shape, past layers that do not fit.

Follows the torch.fx Interpreter pattern (torch/fx/passes/shape_prop.py):
one ``run_node`` override, one public entry, :func:`propagate_shapes`.
No real activation is allocated: values are tensors on the ``meta`` device.

Layers whose fit depends on the input (convolutions, linear layers, norms,
embeddings) have closed-form rules.  When such a layer does not fit, it is
marked ``invalid`` with a :class:`~torchsurgeon.records.Finding` (expected vs
got, and the fix) and propagation continues *as if the layer had been resized
to fit*, so one call reports every invalid layer, like a type checker.

The common parameter-free modules, functions and tensor methods have
closed-form rules too, in three registries: ``_SHAPE_MODULE_RULES`` and
``_MODULE_ARGS_RULES`` (by module class), ``_FUNCTION_RULES`` (by function)
and ``_METHOD_RULES`` (by method name).  A rule never guesses: outside the
cases it computes exactly it returns ``_FALLBACK``, and the node runs on
``meta`` (parameter-free code directly, modules with weights through a meta
copy; the user's model is never touched).  Each node records which way its
shape was obtained (``rule`` or ``meta``).  Rules make the cost independent
of the input size and avoid meta kernels that are slow in Python (element-wise
ops, ~100 µs each); tests/test_rules.py checks them against meta execution.

A node that cannot run is ``invalid`` (a shape error) or ``unknown`` (no meta
kernel, data-dependent); nodes after it are ``unknown``.  :class:`ShapeMemo`
lets a sweep over inputs reuse the nodes whose inputs did not change.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import networkx as nx
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.node import map_aggregate
from torch.nn.utils import parametrize

from .errors import InputError, ShapeError
from .graph import annotate, fx_nodes
from .records import Finding, Status
from .trace import detached_copy, run_on_zeros

__all__ = ("InputSpec", "NodeShape", "ShapeMemo", "ShapeResult", "normalize_input", "propagate_shapes")

Shape = tuple[int, ...]
InputSpec = Union[Sequence[int], torch.Size, torch.Tensor, Sequence[Any], Mapping[str, Any]]


@dataclass(frozen=True)
class NodeShape:
    """The propagated shape of one graph node."""

    node: str
    input_shapes: tuple[Any, ...]
    output_shape: Any
    dtype: str | None
    status: Status
    message: str = ""
    finding: Finding | None = None
    rule: str = "-"


@dataclass(frozen=True)
class ShapeResult:
    """Result of :func:`propagate_shapes`."""

    nodes: Mapping[str, NodeShape]
    output_shape: Any
    findings: tuple[Finding, ...]
    input_shapes: Mapping[str, Shape] = field(default_factory=dict)

    @property
    def invalid(self) -> tuple[NodeShape, ...]:
        """Nodes whose status is ``invalid``."""
        return tuple(n for n in self.nodes.values() if n.status == Status.INVALID)


class _Unknown:
    """Value of a node whose output could not be computed."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def __repr__(self) -> str:
        return f"<unknown since {self.origin}>"


# --------------------------------------------------------------------------- input


def _check_shape(shape: Any, where: str) -> Shape:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise InputError(
            f"{where}: expected a shape such as (3, 224, 224), got {shape!r} — "
            "give the per-sample shape as a tuple of positive ints; the batch is added (batch=1)"
        )
    dims = tuple(shape)
    if not dims:
        raise InputError(f"{where}: the shape is empty — give the per-sample shape, e.g. (3, 224, 224)")
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int):
            if isinstance(d, float) and d.is_integer():
                hint = f"use {int(d)}"
            else:
                hint = "dimensions are whole numbers"
            raise InputError(f"{where}: dimension {i} is {d!r} ({type(d).__name__}) in shape {dims!r} — {hint}")
        if d <= 0:
            raise InputError(
                f"{where}: dimension {i} is {d} in shape {dims!r} — every dimension must be a positive int"
            )
    return dims


def normalize_input(spec: InputSpec, placeholders: Sequence[str]) -> dict[str, Shape | torch.Tensor]:
    """Map an input spec to ``{placeholder name: per-sample shape or tensor}``.

    Parameters
    ----------
    spec : shape, tensor, tuple of shapes, or mapping
        ``(3, 224, 224)`` for one input; ``((3, 224, 224), (1, 224, 224))``
        for several positional inputs; ``{"image": (3, 224, 224)}`` by name;
        a tensor (real or ``meta``) is used as it is, batch included.
    placeholders : sequence of str
        The names of ``forward``'s inputs, in order.

    Returns
    -------
    dict
        Per-sample shapes (batch not yet added) or tensors, by input name.

    Raises
    ------
    InputError
        For malformed shapes (zero, negative, non-integer dims) or names
        that are not inputs of the model.

    Examples
    --------
    >>> normalize_input((3, 32, 32), ["x"])
    {'x': (3, 32, 32)}
    >>> normalize_input({"mask": [1, 8, 8]}, ["image", "mask"])
    {'mask': (1, 8, 8)}
    """
    if not placeholders:
        raise InputError("the model's forward takes no inputs — nothing to propagate")
    if isinstance(spec, torch.Tensor):
        return {placeholders[0]: spec}
    if isinstance(spec, Mapping):
        out: dict[str, Shape | torch.Tensor] = {}
        for name, value in spec.items():
            if name not in placeholders:
                raise InputError(f"input {name!r} is not an argument of forward — the inputs are {list(placeholders)}")
            out[name] = value if isinstance(value, torch.Tensor) else _check_shape(value, f"input {name!r}")
        return out
    if (
        isinstance(spec, (list, tuple))
        and spec
        and all(isinstance(s, (list, tuple, torch.Size, torch.Tensor)) for s in spec)
    ):
        if len(spec) > len(placeholders):
            raise InputError(
                f"{len(spec)} input shapes given, but forward takes {len(placeholders)} "
                f"inputs ({list(placeholders)}) — give one shape per input"
            )
        return {
            name: s if isinstance(s, torch.Tensor) else _check_shape(s, f"input {name!r}")
            for name, s in zip(placeholders, spec)
        }
    return {placeholders[0]: _check_shape(spec, "input shape")}


def _input_dtype(G: nx.DiGraph, node: torch.fx.Node, model: nn.Module) -> torch.dtype:
    """Integer inputs for embeddings, else the model's floating dtype."""
    for user in node.users:
        if user.op == "call_module" and isinstance(model.get_submodule(str(user.target)), nn.Embedding):
            return torch.long
        if user.op == "call_function" and user.target is torch.nn.functional.embedding:
            return torch.long
    for p in itertools.chain(model.parameters(), model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


# --------------------------------------------------------------------------- rules


def _meta(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device="meta")


@dataclass
class _Ctx:
    layer: str
    type: str
    from_input: bool
    findings: list[Finding] = field(default_factory=list)

    def mismatch(self, what: str, expected: Any, got: Any, fix: str) -> None:
        self.findings.append(Finding(self.layer, self.type, what, expected, got, fix))


def _rank(ctx: _Ctx, x: torch.Tensor, ranks: tuple[int, ...], layout: str) -> bool:
    if x.dim() in ranks:
        return True
    ctx.mismatch(
        "input rank",
        " or ".join(str(r) for r in ranks) + f" {layout}",
        f"{x.dim()} {tuple(x.shape)}",
        "give the per-sample shape without the batch dimension (batch= adds it)"
        if ctx.from_input
        else "the previous layer gives a tensor of another rank: reshape before this layer",
    )
    return False


def _channel_fix(ctx: _Ctx, got: int, rebuild: str) -> str:
    if ctx.from_input:
        return f"fold it with adapt_input_channels(model, {got})"
    return f"the layer before gives {got}: make it give the expected value, or rebuild as {rebuild} (new weights)"


def _conv_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, (nn.modules.conv._ConvNd))
    nsp = len(m.kernel_size)
    if not _rank(ctx, x, (nsp + 2, nsp + 1), "(N, C, *spatial) or (C, *spatial)"):
        return None
    batched = x.dim() == nsp + 2
    c = int(x.shape[1 if batched else 0])
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    if c != m.in_channels:
        args = f"{c}, {m.out_channels}, kernel_size={tuple(m.kernel_size)}"
        ctx.mismatch("in_channels", m.in_channels, c, _channel_fix(ctx, c, f"{type(m).__name__}({args})"))
        if c % m.groups:
            ctx.mismatch(
                "in_channels % groups", 0, f"{c} % {m.groups}", f"use a channel count divisible by groups={m.groups}"
            )
    out_sp = []
    for i, size in enumerate(x.shape[-nsp:]):
        k, s, d = m.kernel_size[i], m.stride[i], m.dilation[i]
        if transposed:
            assert isinstance(m, nn.modules.conv._ConvTransposeNd)
            p = m.padding[i]  # type: ignore[index]
            o = (size - 1) * s - 2 * int(p) + d * (k - 1) + m.output_padding[i] + 1
        elif isinstance(m.padding, str):
            o = size if m.padding == "same" else (size - d * (k - 1) - 1) // s + 1
        else:
            o = (size + 2 * int(m.padding[i]) - d * (k - 1) - 1) // s + 1
        if o <= 0:
            need = d * (k - 1) + 1 - (0 if isinstance(m.padding, str) else 2 * int(m.padding[i]))  # type: ignore[index]
            ctx.mismatch(
                f"spatial size (dim {i})",
                f">= {need}",
                size,
                "use a larger input, or less downsampling before this layer",
            )
            o = 1
        out_sp.append(o)
    lead = (x.shape[0],) if batched else ()
    return _meta((*lead, m.out_channels, *out_sp), x)


def _linear_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.Linear)
    if not _rank(ctx, x, tuple(range(1, 9)), "(..., in_features)"):
        return None
    got = int(x.shape[-1])
    if got != m.in_features:
        fix = (
            f"rebuild as nn.Linear({got}, {m.out_features}) (new weights), or feed an input that gives "
            f"{m.in_features} features (an nn.AdaptiveAvgPool before flatten makes it size-independent)"
        )
        ctx.mismatch("in_features", m.in_features, got, fix)
    return _meta((*x.shape[:-1], m.out_features), x)


_NORM_RANKS: dict[type[nn.Module], tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3),
    nn.BatchNorm2d: (4,),
    nn.BatchNorm3d: (5,),
    nn.InstanceNorm1d: (2, 3),
    nn.InstanceNorm2d: (3, 4),
    nn.InstanceNorm3d: (4, 5),
}


def _batchnorm_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.modules.batchnorm._NormBase)
    ranks = _NORM_RANKS.get(type(m), (2, 3, 4, 5))
    if not _rank(ctx, x, ranks, "(N, C, ...)"):
        return None
    channel_dim = 0 if isinstance(m, nn.modules.instancenorm._InstanceNorm) and x.dim() == min(ranks) else 1
    got = int(x.shape[channel_dim])
    checks = m.affine or m.track_running_stats or not isinstance(m, nn.modules.instancenorm._InstanceNorm)
    if checks and got != m.num_features:
        ctx.mismatch("num_features", m.num_features, got, _channel_fix(ctx, got, f"{type(m).__name__}({got})"))
    return _meta(x.shape, x)


def _groupnorm_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.GroupNorm)
    if not _rank(ctx, x, tuple(range(2, 9)), "(N, C, ...)"):
        return None
    got = int(x.shape[1])
    if got != m.num_channels:
        rebuild = f"GroupNorm({m.num_groups}, {got})"
        ctx.mismatch("num_channels", m.num_channels, got, _channel_fix(ctx, got, rebuild))
    if got % m.num_groups:
        ctx.mismatch(
            "channels % num_groups", 0, f"{got} % {m.num_groups}", "use a channel count divisible by num_groups"
        )
    return _meta(x.shape, x)


def _layernorm_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, (nn.LayerNorm, nn.RMSNorm))
    n = len(m.normalized_shape)
    got = tuple(int(d) for d in x.shape[-n:]) if x.dim() >= n else tuple(x.shape)
    if got != tuple(m.normalized_shape):
        rebuild = f"{type(m).__name__}({got if n > 1 else got[-1] if got else ()})"
        ctx.mismatch(
            "normalized_shape", tuple(m.normalized_shape), got, _channel_fix(ctx, got[-1] if got else 0, rebuild)
        )
    return _meta(x.shape, x)


def _embedding_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.Embedding)
    if x.is_floating_point():
        ctx.mismatch("input dtype", "an integer dtype (token ids)", str(x.dtype), "pass a torch.long tensor as input")
    return torch.empty((*x.shape, m.embedding_dim), dtype=m.weight.dtype, device="meta")


_Rule = Callable[[nn.Module, _Ctx, torch.Tensor], Any]  # a tensor, None (rank mismatch) or _FALLBACK

_MODULE_RULES: dict[type[nn.Module], _Rule] = {
    **{
        t: _conv_rule
        for t in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    },
    nn.Linear: _linear_rule,
    **{
        t: _batchnorm_rule
        for t in (
            nn.BatchNorm1d,
            nn.BatchNorm2d,
            nn.BatchNorm3d,
            nn.SyncBatchNorm,
            nn.InstanceNorm1d,
            nn.InstanceNorm2d,
            nn.InstanceNorm3d,
        )
    },
    nn.GroupNorm: _groupnorm_rule,
    nn.LayerNorm: _layernorm_rule,
    nn.RMSNorm: _layernorm_rule,
    nn.Embedding: _embedding_rule,
}


# --------------------------------------------------------------------------- op rules
#
# Closed-form rules for parameter-free modules, functions and tensor methods.
# A rule computes the node's output from its arguments without running the
# op, or returns ``_FALLBACK`` when the arguments are outside the cases it
# computes exactly: the op then runs on ``meta``.  Rules never guess:
#
# * the output is a meta tensor with the shape, dtype *and strides* meta
#   execution gives (strides matter: ``.view`` fails on non-contiguous input);
# * rules of ops that allocate a new tensor answer only for contiguous inputs
#   of one floating dtype (their output is then contiguous); view ops (permute,
#   transpose, slicing, expand...) compute the view's strides for any input;
# * anything that would raise (wrong sizes, bad dims) falls back, so the
#   error message is torch's own.
#
# tests/test_rules.py checks every rule against meta execution with
# Hypothesis.  Python values (sizes, ints) are computed by running the
# Python operator itself, which is exact.


class _Fallback:
    """Marker returned by a rule: not a case it computes; run the op on meta."""

    def __repr__(self) -> str:
        return "FALLBACK"


_FALLBACK: Any = _Fallback()

try:  # torch's Python mirror of TensorIterator's output layout, used by meta kernels
    from torch._prims_common import compute_elementwise_output_strides as _elementwise_strides
    from torch._prims_common import suggest_memory_format as _suggest_memory_format
except ImportError:  # pragma: no cover - private API; without it, rules only answer for contiguous inputs
    _elementwise_strides = None  # type: ignore[assignment]
    _suggest_memory_format = None  # type: ignore[assignment]
_REQUIRED: Any = object()
_META = torch.device("meta")
_Spec = tuple[tuple[str, Any], ...]
_OpRule = Callable[[tuple[Any, ...], dict[str, Any]], Any]


def _bind(args: tuple[Any, ...], kwargs: Mapping[str, Any], spec: _Spec) -> list[Any] | None:
    """The arguments of a call, in ``spec`` order (name, default); None if the call does not fit."""
    if len(args) > len(spec):
        return None
    values = list(args)
    rest = spec[len(args) :]
    if kwargs and not {name for name, _ in rest}.issuperset(kwargs):
        return None
    values += [kwargs.get(name, default) for name, default in rest]
    if any(v is _REQUIRED for v in values):
        return None
    return values


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _norm_dim(d: Any, rank: int) -> int | None:
    """``d`` as a dim in ``range(rank)``, or None when it is not a valid dim."""
    if not _is_int(d):
        return None
    r = max(rank, 1)
    if not -r <= d < r:
        return None
    return int(d) % r


def _float_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def _new(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous meta tensor."""
    return torch.empty(tuple(shape), dtype=dtype, device=_META)


def _view(shape: Sequence[int], stride: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A meta tensor with the given strides (the result of a view op)."""
    return torch.empty_strided(tuple(shape), tuple(stride), dtype=dtype, device=_META)


def _contiguous_stride(shape: Sequence[int]) -> tuple[int, ...]:
    stride, acc = [], 1
    for d in reversed(shape):
        stride.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(stride))


def _broadcast(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """The broadcast shape, or None when the shapes do not broadcast."""
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


# ----------------------------------------------------------------- elementwise


def _elementwise(tensors: Sequence[torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> Any:
    """The output of an element-wise op on ``tensors`` broadcast to ``shape``.

    Contiguous operands give a contiguous output; otherwise the strides are
    torch's own rule for element-wise outputs (the one meta kernels use:
    ``torch._prims_common.compute_elementwise_output_strides``).
    """
    if all(t.is_contiguous() for t in tensors):
        return _new(shape, dtype)
    if _elementwise_strides is None:  # pragma: no cover - torch without _prims_common
        return _FALLBACK
    expanded = [t if tuple(t.shape) == shape else t.expand(shape) for t in tensors]
    return _view(shape, _elementwise_strides(*expanded), dtype)


def _unary_rule(spec: _Spec) -> _OpRule:
    """Shape-preserving ops on one floating tensor: activations, exp, sqrt..."""
    names = [name for name, _ in spec]
    inplace_at = names.index("inplace") if "inplace" in names else None

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(args, kwargs, spec)
        if b is None or not _float_tensor(b[0]) or any(isinstance(v, torch.Tensor) for v in b[1:]):
            return _FALLBACK
        x: torch.Tensor = b[0]
        if inplace_at is not None and b[inplace_at] is True:
            return x
        return _elementwise((x,), tuple(x.shape), x.dtype)

    return rule


_X: _Spec = (("input", _REQUIRED),)
_X_INPLACE: _Spec = (("input", _REQUIRED), ("inplace", False))


def _binary_rule(spec: _Spec) -> _OpRule:
    """Broadcasting arithmetic: tensors of one floating dtype, plus Python numbers."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(args, kwargs, spec)
        if b is None:
            return _FALLBACK
        a, other, *rest = b
        operands = (a, other)
        tensors = [v for v in operands if isinstance(v, torch.Tensor)]
        if not tensors:
            return _FALLBACK
        if any(isinstance(v, torch.Tensor) for v in rest):
            return _FALLBACK
        if any(isinstance(v, bool) or not isinstance(v, (torch.Tensor, int, float)) for v in operands):
            return _FALLBACK  # bools (x - True is an error on the CPU only), complex, strings...
        dtype = tensors[0].dtype
        if not tensors[0].is_floating_point() or any(t.dtype != dtype for t in tensors):
            return _FALLBACK
        shape = _broadcast(*(t.shape for t in tensors))
        if shape is None:
            return _FALLBACK
        return _elementwise(tensors, shape, dtype)

    return rule


_BINARY: _Spec = (("input", _REQUIRED), ("other", _REQUIRED))
_BINARY_ALPHA: _Spec = (("input", _REQUIRED), ("other", _REQUIRED), ("alpha", 1))
_BINARY_DIV: _Spec = (("input", _REQUIRED), ("other", _REQUIRED), ("rounding_mode", None))


def _dropout_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("p", 0.5), ("training", True), ("inplace", False)))
    if b is None or not _float_tensor(b[0]) or not isinstance(b[1], (int, float)) or not 0 <= b[1] <= 1:
        return _FALLBACK
    x, p, training, inplace = b
    if training is False or p == 0 or inplace is True:
        return x
    if training is not True or inplace is not False:
        return _FALLBACK
    return _dropout_output(x)


def _dropout_output(x: torch.Tensor) -> Any:
    """``input * noise`` with ``noise = empty_like(input)``, as torch's dropout computes it."""
    if x.is_contiguous():
        return _new(x.shape, x.dtype)
    return _elementwise((x, torch.empty_like(x, device=_META)), tuple(x.shape), x.dtype)


def _stochastic_depth(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """torchvision.ops.stochastic_depth: ``input`` itself, or ``input * noise`` (same shape)."""
    b = _bind(args, kwargs, (("input", _REQUIRED), ("p", _REQUIRED), ("mode", _REQUIRED), ("training", True)))
    if b is None or not _float_tensor(b[0]) or not isinstance(b[1], (int, float)):
        return _FALLBACK
    x, p, mode, training = b
    if not 0.0 <= p <= 1.0 or mode not in ("batch", "row") or not isinstance(training, bool):
        return _FALLBACK
    if not training or p == 0.0:
        return x
    if x.dim() == 0:
        return _FALLBACK
    noise = _new((x.shape[0], *(1,) * (x.dim() - 1)) if mode == "row" else (1,) * x.dim(), x.dtype)
    return _elementwise((x, noise), tuple(x.shape), x.dtype)


def _softmax_fn(spec: _Spec) -> _OpRule:
    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(args, kwargs, spec)
        if b is None or not _float_tensor(b[0]):
            return _FALLBACK
        x, dim, dtype = b[0], b[1], b[-1]
        if _norm_dim(dim, x.dim()) is None or not x.is_contiguous():
            return _FALLBACK
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            return _FALLBACK
        return _new(x.shape, dtype or x.dtype)

    return rule


# ----------------------------------------------------------------- views and shapes


def _flatten_shape(shape: Sequence[int], start: Any, end: Any) -> tuple[int, ...] | None:
    rank = len(shape)
    s, e = _norm_dim(start, rank), _norm_dim(end, rank)
    if s is None or e is None or s > e:
        return None
    if rank == 0:
        return (1,)
    return (*shape[:s], math.prod(shape[s : e + 1]), *shape[e + 1 :])


def _flatten(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("start_dim", 0), ("end_dim", -1)))
    if b is None or not isinstance(b[0], torch.Tensor) or not b[0].is_contiguous():
        return _FALLBACK
    shape = _flatten_shape(b[0].shape, b[1], b[2])
    return _FALLBACK if shape is None else _new(shape, b[0].dtype)


def _infer_shape(sizes: Sequence[Any], numel: int) -> tuple[int, ...] | None:
    """``view``/``reshape`` sizes with one ``-1`` resolved; None when they do not fit ``numel``."""
    if not all(_is_int(d) and d >= -1 for d in sizes) or sum(1 for d in sizes if d == -1) > 1:
        return None
    known = math.prod(d for d in sizes if d != -1)
    if -1 in sizes:
        if known == 0 or numel % known:
            return None
        return tuple(numel // known if d == -1 else int(d) for d in sizes)
    return tuple(int(d) for d in sizes) if known == numel else None


def _sizes(rest: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Method sizes given as ``*sizes`` or as one sequence."""
    if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
        return tuple(rest[0])
    return rest


def _view_method(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, *rest = args
    sizes = _sizes(tuple(rest))
    if kwargs or not isinstance(x, torch.Tensor) or not sizes or not x.is_contiguous():
        return _FALLBACK  # view(dtype), keyword sizes, non-contiguous strides: meta knows
    shape = _infer_shape(sizes, x.numel())
    return _FALLBACK if shape is None else _new(shape, x.dtype)


def _reshape_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("shape", _REQUIRED)))
    if b is None or not isinstance(b[1], (tuple, list, torch.Size)):
        return _FALLBACK
    return _view_method((b[0], tuple(b[1])), {})


def _permute_of(x: Any, dims: Any) -> Any:
    if not isinstance(x, torch.Tensor) or not isinstance(dims, (tuple, list)) or len(dims) != x.dim():
        return _FALLBACK
    norm = [_norm_dim(d, x.dim()) for d in dims]
    if any(d is None for d in norm) or len(set(norm)) != len(norm):
        return _FALLBACK
    shape, stride = x.shape, x.stride()
    return _view([shape[d] for d in norm], [stride[d] for d in norm], x.dtype)  # type: ignore[index]


def _permute_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("dims", _REQUIRED)))
    return _FALLBACK if b is None else _permute_of(b[0], b[1])


def _permute_method(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, *rest = args
    if kwargs or not rest:
        return _FALLBACK
    return _permute_of(x, _sizes(tuple(rest)))


def _transpose(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("dim0", _REQUIRED), ("dim1", _REQUIRED)))
    if b is None or not isinstance(b[0], torch.Tensor):
        return _FALLBACK
    x = b[0]
    d0, d1 = _norm_dim(b[1], x.dim()), _norm_dim(b[2], x.dim())
    if d0 is None or d1 is None:
        return _FALLBACK
    if x.dim() == 0:
        return _view((), (), x.dtype)
    dims = list(range(x.dim()))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return _permute_of(x, dims)


def _contiguous(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        return _FALLBACK
    x = args[0]
    return x if x.is_contiguous() else _new(x.shape, x.dtype)


def _unsqueeze(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("dim", _REQUIRED)))
    if b is None or not isinstance(b[0], torch.Tensor):
        return _FALLBACK
    x = b[0]
    d = _norm_dim(b[1], x.dim() + 1)
    if d is None:
        return _FALLBACK
    shape, stride = list(x.shape), list(x.stride())
    new_stride = 1 if d >= x.dim() else shape[d] * stride[d]
    return _view([*shape[:d], 1, *shape[d:]], [*stride[:d], new_stride, *stride[d:]], x.dtype)


def _squeeze(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not args or not isinstance(args[0], torch.Tensor) or set(kwargs) - {"dim"}:
        return _FALLBACK
    x, rest = args[0], (*args[1:], *kwargs.values())
    if len(rest) > 1:
        return _FALLBACK
    rank = x.dim()
    if not rest or rest[0] is None:
        drop = {i for i in range(rank) if x.shape[i] == 1}
    else:
        dims = rest[0] if isinstance(rest[0], (tuple, list)) else (rest[0],)
        norm = [_norm_dim(d, rank) for d in dims]
        if any(d is None for d in norm):
            return _FALLBACK
        drop = {d for d in norm if d is not None and rank and x.shape[d] == 1}
    keep = [i for i in range(rank) if i not in drop]
    return _view([x.shape[i] for i in keep], [x.stride()[i] for i in keep], x.dtype)


def _expand(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, *rest = args
    sizes = _sizes(tuple(rest))
    if kwargs or not isinstance(x, torch.Tensor) or not rest or sizes is None or len(sizes) < x.dim():
        return _FALLBACK
    if not all(_is_int(d) for d in sizes):
        return _FALLBACK
    lead = len(sizes) - x.dim()
    shape, stride = [], []
    for i, want in enumerate(sizes):
        if i < lead:
            if want < 0:
                return _FALLBACK
            shape.append(int(want))
            stride.append(0)
            continue
        have, st = int(x.shape[i - lead]), int(x.stride()[i - lead])
        if want == -1 or want == have:
            shape.append(have)
            stride.append(st)
        elif have == 1 and want >= 0:
            shape.append(int(want))
            stride.append(0)
        else:
            return _FALLBACK
    return _view(shape, stride, x.dtype)


def _index_tensor(x: torch.Tensor, index: Any) -> Any:
    """Basic indexing (ints, slices with step >= 1, None, Ellipsis): a view."""
    items = index if isinstance(index, tuple) else (index,)
    if not all(_is_int(i) or i is None or i is Ellipsis or isinstance(i, slice) for i in items):
        return _FALLBACK  # tensors, lists, bools: advanced indexing
    if sum(1 for i in items if i is Ellipsis) > 1:
        return _FALLBACK
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if consumed > x.dim():
        return _FALLBACK
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = (*items[:at], *(slice(None),) * (x.dim() - consumed), *items[at + 1 :])
    else:
        items = (*items, *(slice(None),) * (x.dim() - consumed))
    shape, stride = [], []
    dim = 0
    xs, xt = list(x.shape), list(x.stride())
    for item in items:
        if item is None:
            shape.append(1)
            stride.append(xs[dim] * xt[dim] if dim < len(xs) else 1)
            continue
        size, st = xs[dim], xt[dim]
        dim += 1
        if isinstance(item, slice):
            if not all(v is None or _is_int(v) for v in (item.start, item.stop, item.step)):
                return _FALLBACK
            if item.step is not None and item.step < 1:
                return _FALLBACK
            start, stop, step = item.indices(size)
            shape.append(max(0, (stop - start + step - 1) // step))
            stride.append(st * step)
        elif not -size <= item < size:
            return _FALLBACK  # IndexError: meta says it
    return _view(shape, stride, x.dtype)


def _getitem(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 2 or kwargs:
        return _FALLBACK
    obj, index = args
    if isinstance(obj, torch.Tensor):
        return _index_tensor(obj, index)
    if isinstance(index, torch.Tensor):
        return _FALLBACK
    return obj[index]


def _split_views(x: torch.Tensor, sizes: Sequence[int], dim: int) -> tuple[torch.Tensor, ...]:
    shape, stride = list(x.shape), list(x.stride())
    out = []
    for s in sizes:
        shape[dim] = s
        out.append(_view(shape, stride, x.dtype))
    return tuple(out)


def _chunk(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("chunks", _REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], torch.Tensor) or not _is_int(b[1]) or b[1] < 1:
        return _FALLBACK
    x, chunks = b[0], int(b[1])
    dim = _norm_dim(b[2], x.dim())
    if dim is None or x.dim() == 0 or x.shape[dim] == 0:
        return _FALLBACK
    n = int(x.shape[dim])
    step = -(-n // chunks)
    return _split_views(x, [min(step, n - i) for i in range(0, n, step)], dim)


def _split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("tensor", _REQUIRED), ("split_size_or_sections", _REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], torch.Tensor) or b[0].dim() == 0:
        return _FALLBACK
    x, size = b[0], b[1]
    dim = _norm_dim(b[2], x.dim())
    if dim is None:
        return _FALLBACK
    n = int(x.shape[dim])
    if _is_int(size) and size > 0 and n > 0:
        return _split_views(x, [min(size, n - i) for i in range(0, n, size)], dim)
    if isinstance(size, (list, tuple)) and all(_is_int(s) and s >= 0 for s in size) and sum(size) == n:
        return _split_views(x, [int(s) for s in size], dim)
    return _FALLBACK


def _split_method(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if "split_size" in kwargs:
        kwargs = {("split_size_or_sections" if k == "split_size" else k): v for k, v in kwargs.items()}
    return _split(args, kwargs)


def _cat_is_contiguous(tensors: Sequence[torch.Tensor], extra_dims: int = 0) -> bool:
    """Whether ``cat`` gives a contiguous output: torch uses the inputs' common suggested memory format.

    Only 4-d and 5-d tensors can suggest channels-last, and one input that
    suggests the contiguous format makes the output contiguous.
    """
    if tensors[0].dim() + extra_dims not in (4, 5) or any(t.is_contiguous() for t in tensors):
        return True
    if _suggest_memory_format is None or extra_dims:  # pragma: no cover - torch without _prims_common
        return False
    return any(_suggest_memory_format(t) == torch.contiguous_format for t in tensors)


def _cat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("tensors", _REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], (list, tuple)) or not b[0]:
        return _FALLBACK
    tensors = b[0]
    if not all(isinstance(t, torch.Tensor) for t in tensors) or not _cat_is_contiguous(tensors):
        return _FALLBACK
    first = tensors[0]
    if first.dim() == 0 or any(t.dim() != first.dim() or t.dtype != first.dtype for t in tensors):
        return _FALLBACK
    dim = _norm_dim(b[1], first.dim())
    if dim is None:
        return _FALLBACK
    others = [s for i, s in enumerate(first.shape) if i != dim]
    if any([s for i, s in enumerate(t.shape) if i != dim] != others for t in tensors):
        return _FALLBACK
    shape = list(first.shape)
    shape[dim] = sum(int(t.shape[dim]) for t in tensors)
    return _new(shape, first.dtype)


def _stack(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("tensors", _REQUIRED), ("dim", 0)))
    if b is None or not isinstance(b[0], (list, tuple)) or not b[0]:
        return _FALLBACK
    tensors = b[0]
    if not all(isinstance(t, torch.Tensor) for t in tensors) or not _cat_is_contiguous(tensors, 1):
        return _FALLBACK
    first = tensors[0]
    if any(t.shape != first.shape or t.dtype != first.dtype for t in tensors):
        return _FALLBACK
    dim = _norm_dim(b[1], first.dim() + 1)
    if dim is None:
        return _FALLBACK
    shape = list(first.shape)
    shape.insert(dim, len(tensors))
    return _new(shape, first.dtype)


def _reduction_rule(spec: _Spec) -> _OpRule:
    """sum/mean/amax/amin over dims of a contiguous floating tensor."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(args, kwargs, spec)
        if b is None or not _float_tensor(b[0]) or not b[0].is_contiguous():
            return _FALLBACK
        x, dim, keepdim = b[0], b[1], b[2]
        if (len(b) > 3 and b[3] is not None) or not isinstance(keepdim, bool):
            return _FALLBACK  # dtype= conversions: meta knows
        rank = x.dim()
        if dim is None or dim == () or dim == []:
            dims = set(range(rank))
        else:
            seq = dim if isinstance(dim, (tuple, list)) else (dim,)
            norm = [_norm_dim(d, rank) for d in seq]
            if any(d is None for d in norm) or len(set(norm)) != len(norm):
                return _FALLBACK
            dims = {d for d in norm if d is not None}
        if rank == 0:
            return _new((), x.dtype)
        shape = [1 if i in dims else s for i, s in enumerate(x.shape) if keepdim or i not in dims]
        return _new(shape, x.dtype)

    return rule


_REDUCE: _Spec = (("input", _REQUIRED), ("dim", None), ("keepdim", False), ("dtype", None))
_REDUCE_NO_DTYPE: _Spec = (("input", _REQUIRED), ("dim", ()), ("keepdim", False))


def _size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("dim", None)))
    if b is None or not isinstance(b[0], torch.Tensor):
        return _FALLBACK
    if b[1] is None:
        return b[0].shape
    d = _norm_dim(b[1], b[0].dim())
    return _FALLBACK if d is None or b[0].dim() == 0 else int(b[0].shape[d])


def _dim(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        return _FALLBACK
    return args[0].dim()


_TENSOR_ATTRS = frozenset({"shape", "dtype", "ndim", "device"})


def _getattr(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if kwargs or len(args) != 2 or not isinstance(args[1], str):
        return _FALLBACK
    obj, name = args
    if isinstance(obj, torch.Tensor):
        return getattr(obj, name) if name in _TENSOR_ATTRS else _FALLBACK
    return getattr(obj, name)


def _to_dtype(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.to(dtype)``, ``x.float()``-style conversions of a contiguous tensor."""
    if len(args) != 2 or not isinstance(args[0], torch.Tensor) or not isinstance(args[1], torch.dtype):
        return _FALLBACK
    if kwargs:
        return _FALLBACK
    x, dtype = args
    if x.dtype == dtype:
        return x
    return _new(x.shape, dtype) if x.is_contiguous() else _FALLBACK


def _assert(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not kwargs and args and args[0] is True:
        return None
    return _FALLBACK


# ----------------------------------------------------------------- linear algebra


def _same_float(*tensors: Any) -> bool:
    """Tensors of one floating dtype (matrix products give contiguous outputs for any input layout)."""
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return False
    dtype = tensors[0].dtype
    return bool(dtype.is_floating_point) and all(t.dtype == dtype for t in tensors)


def _matmul(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("other", _REQUIRED)))
    if b is None or not _same_float(b[0], b[1]):
        return _FALLBACK
    a, c = b[0], b[1]
    if a.dim() == 0 or c.dim() == 0:
        return _FALLBACK
    if a.shape[-1] != c.shape[-2 if c.dim() > 1 else -1]:
        return _FALLBACK
    if a.dim() == 1 and c.dim() == 1:
        return _new((), a.dtype)
    if c.dim() == 1:
        return _new(a.shape[:-1], a.dtype)
    if a.dim() == 1:
        return _new((*c.shape[:-2], c.shape[-1]), a.dtype)
    batch = _broadcast(a.shape[:-2], c.shape[:-2])
    if batch is None:
        return _FALLBACK
    return _new((*batch, a.shape[-2], c.shape[-1]), a.dtype)


def _bmm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("mat2", _REQUIRED)))
    if b is None or not _same_float(b[0], b[1]):
        return _FALLBACK
    a, c = b[0], b[1]
    if a.dim() != 3 or c.dim() != 3 or a.shape[0] != c.shape[0] or a.shape[2] != c.shape[1]:
        return _FALLBACK
    return _new((a.shape[0], a.shape[1], c.shape[2]), a.dtype)


def _linear_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = _bind(args, kwargs, (("input", _REQUIRED), ("weight", _REQUIRED), ("bias", None)))
    if b is None or not _same_float(b[0], b[1]):
        return _FALLBACK
    x, w, bias = b
    if x.dim() == 0 or w.dim() != 2 or x.shape[-1] != w.shape[1]:
        return _FALLBACK
    if bias is not None and (not _same_float(x, bias) or tuple(bias.shape) != (w.shape[0],)):
        return _FALLBACK
    return _new((*x.shape[:-1], w.shape[0]), x.dtype)


def _embedding_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spec: _Spec = (
        ("input", _REQUIRED),
        ("weight", _REQUIRED),
        ("padding_idx", None),
        ("max_norm", None),
        ("norm_type", 2.0),
        ("scale_grad_by_freq", False),
        ("sparse", False),
    )
    b = _bind(args, kwargs, spec)
    if b is None or not isinstance(b[0], torch.Tensor) or not isinstance(b[1], torch.Tensor):
        return _FALLBACK
    ids, w = b[0], b[1]
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or w.dim() != 2 or b[3] is not None:
        return _FALLBACK
    return _new((*ids.shape, w.shape[1]), w.dtype)


def _sdpa(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spec: _Spec = (
        ("query", _REQUIRED),
        ("key", _REQUIRED),
        ("value", _REQUIRED),
        ("attn_mask", None),
        ("dropout_p", 0.0),
        ("is_causal", False),
        ("scale", None),
        ("enable_gqa", False),
    )
    b = _bind(args, kwargs, spec)
    if b is None:
        return _FALLBACK
    q, k, v, mask, dropout_p, is_causal, scale, gqa = b
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)) or mask is not None or gqa is not False:
        return _FALLBACK
    dtype = q.dtype
    if not dtype.is_floating_point or k.dtype != dtype or v.dtype != dtype:
        return _FALLBACK
    if not isinstance(dropout_p, (int, float)) or not isinstance(is_causal, bool):
        return _FALLBACK
    if scale is not None and not isinstance(scale, (int, float)):
        return _FALLBACK
    if not q.dim() == k.dim() == v.dim() or q.dim() < 3:
        return _FALLBACK
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        return _FALLBACK
    return _new((*q.shape[:-1], v.shape[-1]), dtype)


def _layer_norm_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spec: _Spec = (("input", _REQUIRED), ("normalized_shape", _REQUIRED), ("weight", None), ("bias", None))
    b = _bind(args, kwargs, (*spec, ("eps", 1e-5)))
    if b is None or not _float_tensor(b[0]) or not b[0].is_contiguous():
        return _FALLBACK
    x, norm_shape, w, bias = b[0], b[1], b[2], b[3]
    if isinstance(norm_shape, int):
        norm_shape = (norm_shape,)
    if not isinstance(norm_shape, (tuple, list, torch.Size)) or not norm_shape:
        return _FALLBACK
    n = len(norm_shape)
    if x.dim() < n or tuple(x.shape[-n:]) != tuple(norm_shape):
        return _FALLBACK
    for t in (w, bias):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(norm_shape)):
            return _FALLBACK
    return _new(x.shape, x.dtype)


# ----------------------------------------------------------------- pooling


def _ntuple(v: Any, n: int) -> tuple[int, ...] | None:
    if _is_int(v):
        return (int(v),) * n
    if isinstance(v, (tuple, list)) and all(_is_int(d) for d in v):
        if len(v) == n:
            return tuple(int(d) for d in v)
        if len(v) == 1:
            return (int(v[0]),) * n
    return None


def _pool(
    x: Any,
    nsp: int,
    kernel: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
    is_max: bool,
) -> Any:
    """Output of max/avg pooling (torch's pooling_output_shape), else FALLBACK."""
    if not _float_tensor(x) or not x.is_contiguous() or x.dim() not in (nsp + 1, nsp + 2):
        return _FALLBACK
    if not isinstance(ceil_mode, bool):
        return _FALLBACK
    k = _ntuple(kernel, nsp)
    s = k if stride is None or stride == [] or stride == () else _ntuple(stride, nsp)
    p, d = _ntuple(padding, nsp), _ntuple(dilation, nsp)
    if k is None or s is None or p is None or d is None:
        return _FALLBACK
    out = []
    for i, size in enumerate(x.shape[-nsp:]):
        ki, si, pi, di = k[i], s[i], p[i], d[i]
        if ki <= 0 or si <= 0 or di <= 0 or pi < 0:
            return _FALLBACK
        if pi > ki // 2:  # torch: "pad should be at most half of kernel size" (dilation aside)
            return _FALLBACK
        if not is_max and nsp == 3 and size < ki:  # avg_pool3d: "input image smaller than kernel size"
            return _FALLBACK
        o = (size + 2 * pi - di * (ki - 1) - 1 + (si - 1 if ceil_mode else 0)) // si + 1
        if ceil_mode and (o - 1) * si >= size + pi:
            o -= 1
        if o < 1 or size < 1:
            return _FALLBACK
        out.append(o)
    return _new((*x.shape[:-nsp], *out), x.dtype)


def _max_pool_fn(nsp: int) -> _OpRule:
    spec: _Spec = (
        ("input", _REQUIRED),
        ("kernel_size", _REQUIRED),
        ("stride", None),
        ("padding", 0),
        ("dilation", 1),
        ("ceil_mode", False),
        ("return_indices", False),
    )

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(args, kwargs, spec)
        if b is None or b[6] is not False:
            return _FALLBACK
        return _pool(b[0], nsp, b[1], b[2], b[3], b[4], b[5], is_max=True)

    return rule


def _avg_pool_fn(nsp: int) -> _OpRule:
    spec: _Spec = (
        ("input", _REQUIRED),
        ("kernel_size", _REQUIRED),
        ("stride", None),
        ("padding", 0),
        ("ceil_mode", False),
        ("count_include_pad", True),
        *((("divisor_override", None),) if nsp > 1 else ()),
    )

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(args, kwargs, spec)
        if b is None or (nsp > 1 and b[6] is not None and (not _is_int(b[6]) or b[6] == 0)):
            return _FALLBACK
        return _pool(b[0], nsp, b[1], b[2], b[3], 1, b[4], is_max=False)

    return rule


def _adaptive_pool(x: Any, nsp: int, output_size: Any) -> Any:
    if not _float_tensor(x) or not x.is_contiguous() or x.dim() not in (nsp + 1, nsp + 2):
        return _FALLBACK
    if any(d == 0 for d in x.shape[-nsp - 1 :]):
        return _FALLBACK
    if _is_int(output_size):
        sizes: Sequence[Any] = (output_size,) * nsp
    elif isinstance(output_size, (tuple, list)) and len(output_size) == nsp:
        sizes = output_size
    else:
        return _FALLBACK
    out = []
    for i, want in enumerate(sizes):
        if want is None and nsp > 1:  # "keep this size" exists for 2-d and 3-d pooling only
            out.append(int(x.shape[x.dim() - nsp + i]))
        elif _is_int(want) and want >= 0:
            out.append(int(want))
        else:
            return _FALLBACK
    return _new((*x.shape[:-nsp], *out), x.dtype)


def _adaptive_pool_fn(nsp: int, is_max: bool) -> _OpRule:
    spec: _Spec = (("input", _REQUIRED), ("output_size", _REQUIRED), *((("return_indices", False),) if is_max else ()))

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(args, kwargs, spec)
        if b is None or (is_max and b[2] is not False):
            return _FALLBACK
        return _adaptive_pool(b[0], nsp, b[1])

    return rule


# ----------------------------------------------------------------- Python values


def _python_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a Python operator on Python values (sizes, ints): exact by construction."""
    return fn(*args, **kwargs)


def _python_or(fn: Callable[..., Any], tensor_rule: _OpRule | None) -> _OpRule:
    """An operator: run it on Python values, use ``tensor_rule`` on tensors."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not any(isinstance(a, torch.Tensor) for a in args) and not any(
            isinstance(v, torch.Tensor) for v in kwargs.values()
        ):
            if any(isinstance(a, (list, tuple, dict)) and _first_tensor(a) is not None for a in args):
                return _FALLBACK
            return _python_call(fn, args, kwargs)
        return tensor_rule(args, kwargs) if tensor_rule is not None else _FALLBACK

    return rule


# ----------------------------------------------------------------- registries

_ACTIVATIONS: dict[Callable[..., Any], _Spec] = {
    torch.relu: _X,
    torch.sigmoid: _X,
    torch.tanh: _X,
    torch.exp: _X,
    torch.sqrt: _X,
    torch.rsqrt: _X,
    torch.neg: _X,
    torch.abs: _X,
    F.relu: _X_INPLACE,
    F.relu6: _X_INPLACE,
    F.silu: _X_INPLACE,
    F.mish: _X_INPLACE,
    F.hardswish: _X_INPLACE,
    F.hardsigmoid: _X_INPLACE,
    F.selu: _X_INPLACE,
    F.gelu: (("input", _REQUIRED), ("approximate", "none")),
    F.sigmoid: _X,
    F.tanh: _X,
    F.leaky_relu: (("input", _REQUIRED), ("negative_slope", 0.01), ("inplace", False)),
    F.elu: (("input", _REQUIRED), ("alpha", 1.0), ("inplace", False)),
    F.hardtanh: (("input", _REQUIRED), ("min_val", -1.0), ("max_val", 1.0), ("inplace", False)),
    F.softplus: (("input", _REQUIRED), ("beta", 1.0), ("threshold", 20.0)),
}

_FUNCTION_RULES: dict[Callable[..., Any], _OpRule] = {
    **{fn: _unary_rule(spec) for fn, spec in _ACTIVATIONS.items()},
    operator.neg: _python_or(operator.neg, _unary_rule(_X)),
    operator.add: _python_or(operator.add, _binary_rule(_BINARY)),
    operator.sub: _python_or(operator.sub, _binary_rule(_BINARY)),
    operator.mul: _python_or(operator.mul, _binary_rule(_BINARY)),
    operator.truediv: _python_or(operator.truediv, _binary_rule(_BINARY)),
    operator.matmul: _python_or(operator.matmul, _matmul),
    operator.getitem: _getitem,
    **{
        fn: _python_or(fn, None)
        for fn in (
            operator.floordiv,
            operator.mod,
            operator.pow,
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
    },
    getattr: _getattr,
    torch._assert: _assert,
    torch.add: _binary_rule(_BINARY_ALPHA),
    torch.sub: _binary_rule(_BINARY_ALPHA),
    torch.mul: _binary_rule(_BINARY),
    torch.div: _binary_rule(_BINARY_DIV),
    torch.maximum: _binary_rule(_BINARY),
    torch.minimum: _binary_rule(_BINARY),
    F.dropout: _dropout_fn,
    F.softmax: _softmax_fn((("input", _REQUIRED), ("dim", None), ("_stacklevel", 3), ("dtype", None))),
    F.log_softmax: _softmax_fn((("input", _REQUIRED), ("dim", None), ("_stacklevel", 3), ("dtype", None))),
    torch.softmax: _softmax_fn((("input", _REQUIRED), ("dim", _REQUIRED), ("dtype", None))),
    torch.flatten: _flatten,
    torch.reshape: _reshape_fn,
    torch.permute: _permute_fn,
    torch.transpose: _transpose,
    torch.swapaxes: _transpose,
    torch.swapdims: _transpose,
    torch.unsqueeze: _unsqueeze,
    torch.squeeze: _squeeze,
    torch.chunk: _chunk,
    torch.split: _split,
    torch.cat: _cat,
    torch.concat: _cat,
    torch.stack: _stack,
    torch.sum: _reduction_rule(_REDUCE),
    torch.mean: _reduction_rule(_REDUCE),
    torch.amax: _reduction_rule(_REDUCE_NO_DTYPE),
    torch.amin: _reduction_rule(_REDUCE_NO_DTYPE),
    torch.matmul: _matmul,
    torch.bmm: _bmm,
    F.linear: _linear_fn,
    F.embedding: _embedding_fn,
    F.scaled_dot_product_attention: _sdpa,
    F.layer_norm: _layer_norm_fn,
    F.max_pool1d: _max_pool_fn(1),
    F.max_pool2d: _max_pool_fn(2),
    F.max_pool3d: _max_pool_fn(3),
    F.avg_pool1d: _avg_pool_fn(1),
    F.avg_pool2d: _avg_pool_fn(2),
    F.avg_pool3d: _avg_pool_fn(3),
    F.adaptive_avg_pool1d: _adaptive_pool_fn(1, is_max=False),
    F.adaptive_avg_pool2d: _adaptive_pool_fn(2, is_max=False),
    F.adaptive_avg_pool3d: _adaptive_pool_fn(3, is_max=False),
    F.adaptive_max_pool1d: _adaptive_pool_fn(1, is_max=True),
    F.adaptive_max_pool2d: _adaptive_pool_fn(2, is_max=True),
    F.adaptive_max_pool3d: _adaptive_pool_fn(3, is_max=True),
}
"""Rules for ``call_function`` nodes, by the function object."""

_NAMED_FUNCTION_RULES: dict[str, _OpRule] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": _stochastic_depth,
}
"""Rules for functions of optional libraries, by ``module.qualname`` (no import needed)."""


_METHOD_RULES: dict[str, _OpRule] = {
    **{name: _unary_rule(_X) for name in ("relu", "sigmoid", "tanh", "exp", "sqrt", "rsqrt", "neg", "abs")},
    "add": _binary_rule(_BINARY_ALPHA),
    "sub": _binary_rule(_BINARY_ALPHA),
    "mul": _binary_rule(_BINARY),
    "div": _binary_rule(_BINARY_DIV),
    "softmax": _softmax_fn((("input", _REQUIRED), ("dim", _REQUIRED), ("dtype", None))),
    "log_softmax": _softmax_fn((("input", _REQUIRED), ("dim", _REQUIRED), ("dtype", None))),
    "flatten": _flatten,
    "view": _view_method,
    "reshape": _view_method,
    "permute": _permute_method,
    "transpose": _transpose,
    "swapaxes": _transpose,
    "swapdims": _transpose,
    "contiguous": _contiguous,
    "unsqueeze": _unsqueeze,
    "squeeze": _squeeze,
    "expand": _expand,
    "chunk": _chunk,
    "split": _split_method,
    "sum": _reduction_rule(_REDUCE),
    "mean": _reduction_rule(_REDUCE),
    "amax": _reduction_rule(_REDUCE_NO_DTYPE),
    "amin": _reduction_rule(_REDUCE_NO_DTYPE),
    "matmul": _matmul,
    "bmm": _bmm,
    "size": _size,
    "dim": _dim,
    "to": _to_dtype,
}
"""Rules for ``call_method`` nodes on tensors, by method name (``self`` is the first argument)."""


# ----------------------------------------------------------------- parameter-free modules


def _activation_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    if not _float_tensor(x):
        return _FALLBACK
    if getattr(m, "inplace", False) is True:
        return x
    return _new(x.shape, x.dtype) if x.is_contiguous() else _FALLBACK


def _prelu_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.PReLU)
    if m.num_parameters != 1 and (x.dim() < 2 or x.shape[1] != m.num_parameters):
        return _FALLBACK
    return _activation_module(m, ctx, x) if m.weight.dtype == x.dtype else _FALLBACK


def _softmax_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    dim = getattr(m, "dim", None)
    if dim is None:
        return _FALLBACK  # implicit dim: a deprecated guess in torch itself
    return _softmax_fn((("input", _REQUIRED), ("dim", _REQUIRED), ("dtype", None)))((x, dim), {})


_FEATURE_DROPOUT_RANKS: dict[type[nn.Module], tuple[int, ...]] = {
    nn.Dropout1d: (2, 3),
    nn.Dropout2d: (3, 4),
    nn.Dropout3d: (4, 5),
}


def _dropout_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.modules.dropout._DropoutNd)
    ranks = _FEATURE_DROPOUT_RANKS.get(type(m))
    if not _float_tensor(x) or (ranks is not None and x.dim() not in ranks):
        return _FALLBACK
    if not m.training or m.p == 0 or m.inplace:
        return x if ranks is None else _view(x.shape, x.stride(), x.dtype)
    if ranks is not None or isinstance(m, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
        return _new(x.shape, x.dtype) if x.is_contiguous() else _FALLBACK  # feature noise: (N, C, 1, ...)
    return _dropout_output(x)


def _identity_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    return x


def _flatten_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.Flatten)
    return _flatten((x, m.start_dim, m.end_dim), {})


def _unflatten_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.Unflatten)
    dim = _norm_dim(m.dim, x.dim()) if isinstance(m.dim, int) else None
    sizes = m.unflattened_size
    if dim is None or x.dim() == 0 or not x.is_contiguous() or not isinstance(sizes, (tuple, list, torch.Size)):
        return _FALLBACK
    inner = _infer_shape(tuple(sizes), int(x.shape[dim]))
    if inner is None or not inner:
        return _FALLBACK
    return _new((*x.shape[:dim], *inner, *x.shape[dim + 1 :]), x.dtype)


def _max_pool_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.modules.pooling._MaxPoolNd)
    if m.return_indices:
        return _FALLBACK
    nsp = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[type(m)]  # type: ignore[index]
    return _pool(x, nsp, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, is_max=True)


def _avg_pool_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    assert isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d))
    if getattr(m, "divisor_override", None) == 0:
        return _FALLBACK
    nsp = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}[type(m)]
    return _pool(x, nsp, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode, is_max=False)


def _adaptive_pool_module(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> Any:
    nsp = int(type(m).__name__[-2])  # AdaptiveAvgPool2d -> 2
    if getattr(m, "return_indices", False):
        return _FALLBACK
    return _adaptive_pool(x, nsp, getattr(m, "output_size", None))


_SHAPE_MODULE_RULES: dict[type[nn.Module], _Rule] = {
    **{
        t: _activation_module
        for t in (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
            nn.ELU,
            nn.SELU,
            nn.CELU,
            nn.GELU,
            nn.SiLU,
            nn.Mish,
            nn.Sigmoid,
            nn.Tanh,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.Hardtanh,
            nn.Softplus,
            nn.Softsign,
            nn.Tanhshrink,
            nn.LogSigmoid,
            nn.Hardshrink,
            nn.Softshrink,
            nn.Threshold,
        )
    },
    nn.PReLU: _prelu_module,
    **{t: _softmax_module for t in (nn.Softmax, nn.LogSoftmax, nn.Softmin)},
    **{
        t: _dropout_module
        for t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
    },
    nn.Identity: _identity_module,
    nn.Flatten: _flatten_module,
    nn.Unflatten: _unflatten_module,
    **{t: _max_pool_module for t in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)},
    **{t: _avg_pool_module for t in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)},
    **{
        t: _adaptive_pool_module
        for t in (
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
        )
    },
}
"""Rules for parameter-free modules called with one tensor: output from input, no findings."""


def _mha_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """nn.MultiheadAttention without masks: (output, averaged or per-head weights or None)."""
    assert isinstance(m, nn.MultiheadAttention)
    spec: _Spec = (
        ("query", _REQUIRED),
        ("key", _REQUIRED),
        ("value", _REQUIRED),
        ("key_padding_mask", None),
        ("need_weights", True),
        ("attn_mask", None),
        ("average_attn_weights", True),
        ("is_causal", False),
    )
    b = _bind(args, kwargs, spec)
    if b is None:
        return _FALLBACK
    q, k, v, key_padding_mask, need_weights, attn_mask, average, is_causal = b
    if key_padding_mask is not None or attn_mask is not None or is_causal is not False:
        return _FALLBACK
    if not isinstance(need_weights, bool) or not isinstance(average, bool):
        return _FALLBACK
    if not _float_tensor(q) or not isinstance(k, torch.Tensor) or not isinstance(v, torch.Tensor):
        return _FALLBACK
    weight = m.in_proj_weight if m.in_proj_weight is not None else m.q_proj_weight
    if k.dtype != q.dtype or v.dtype != q.dtype or weight is None or weight.dtype != q.dtype:
        return _FALLBACK
    if m.bias_k is not None or m.add_zero_attn or q.dim() not in (2, 3) or not q.dim() == k.dim() == v.dim():
        return _FALLBACK
    if q.shape[-1] != m.embed_dim or k.shape[-1] != m.kdim or v.shape[-1] != m.vdim:
        return _FALLBACK
    e, heads = m.embed_dim, m.num_heads
    if q.dim() == 2:
        length, source = int(q.shape[0]), int(k.shape[0])
        if v.shape[0] != source:
            return _FALLBACK
        out = _new((length, e), q.dtype)
        lead: tuple[int, ...] = ()
    else:
        if m.batch_first:
            (n, length), (nk, source), (nv, sv) = q.shape[:2], k.shape[:2], v.shape[:2]
        else:
            (length, n), (source, nk), (sv, nv) = q.shape[:2], k.shape[:2], v.shape[:2]
        if nk != n or nv != n or sv != source:
            return _FALLBACK
        # computed sequence-first, returned transposed when batch_first
        out = _view((n, length, e), (e, n * e, 1), q.dtype) if m.batch_first else _new((length, n, e), q.dtype)
        lead = (int(n),)
    if not need_weights:
        return (out, None)
    per_head: tuple[int, ...] = () if average else (heads,)
    return (out, _new((*lead, *per_head, length, source), q.dtype))


_MODULE_ARGS_RULES: dict[type[nn.Module], Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Any]] = {
    nn.MultiheadAttention: _mha_module,
}
"""Rules for modules called with several arguments."""

_LAYOUT_FREE_MODULES: frozenset[type[nn.Module]] = frozenset(
    {
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
        nn.Linear,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.Embedding,
    }
)
"""Layers of ``_MODULE_RULES`` whose output on meta is contiguous whatever the input strides.

For the others (batch norm keeps a channels-last layout...), a layer that
fits a non-contiguous input runs on meta so that the strides are exact.
"""


def _base_rule(kind: type[nn.Module]) -> _Rule | None:
    """The rule of the nearest base class of ``kind`` that has one (for subclasses with their own forward)."""
    return next((_MODULE_RULES[base] for base in kind.__mro__[1:] if base in _MODULE_RULES), None)


def _resized_meta_copy(module: nn.Module, finding: Finding) -> nn.Module | None:
    """A meta copy of a Conv/Linear layer resized to the input it got, or None for other mismatches."""
    got = finding.got
    if not isinstance(got, int) or got <= 0:
        return None
    copy_ = meta_copy(module).eval()
    if finding.what == "in_channels" and isinstance(copy_, nn.modules.conv._ConvNd):
        if isinstance(copy_, nn.modules.conv._ConvTransposeNd) or got % copy_.groups:
            return None
        shape = (copy_.out_channels, got // copy_.groups, *copy_.kernel_size)
        copy_.weight = nn.Parameter(torch.empty(shape, dtype=copy_.weight.dtype, device="meta"))
        copy_.in_channels = got
        return copy_
    if finding.what == "in_features" and isinstance(copy_, nn.Linear):
        copy_.weight = nn.Parameter(torch.empty(copy_.out_features, got, dtype=copy_.weight.dtype, device="meta"))
        copy_.in_features = got
        return copy_
    return None


def has_rule(module: nn.Module) -> bool:
    """Whether ``module`` has a closed-form shape rule (exact type match).

    Examples
    --------
    >>> from torch import nn
    >>> has_rule(nn.Conv2d(3, 8, 3)), has_rule(nn.ReLU()), has_rule(nn.LSTM(4, 4))
    (True, True, False)
    """
    kind = type(module)
    return kind in _MODULE_RULES or kind in _SHAPE_MODULE_RULES or kind in _MODULE_ARGS_RULES


# --------------------------------------------------------------------------- interpreter


def _on_meta(module: nn.Module) -> bool:
    return all(t.device.type == "meta" for t in itertools.chain(module.parameters(), module.buffers()))


def meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers live on ``meta``.

    No weight data is copied and the original is not touched.

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Linear(3, 2)
    >>> c = meta_copy(m)
    >>> c.weight.device.type, m.weight.device.type, c.weight.requires_grad
    ('meta', 'cpu', True)
    """
    return detached_copy(module, lambda t: torch.empty_like(t, device="meta"))  # without the user's hooks


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.device.type != "meta":
        return torch.empty_like(value, device="meta")
    return value


def _describe(value: Any) -> Any:
    """Shapes of the tensors in ``value`` (nested like ``value``), else None."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)  # torch.Size holds ints
    if isinstance(value, (int, float, str, bool, torch.Size)) or value is None:
        return None
    if isinstance(value, (list, tuple)) and _first_tensor(value) is not None:  # nested too: ((a, b), (c, d))
        return tuple(_describe(v) for v in value)
    if isinstance(value, dict) and _first_tensor(value) is not None:
        return {k: _describe(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # model outputs as dataclasses
        return _describe({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return None


def _first_tensor(value: Any) -> torch.Tensor | None:
    found: list[torch.Tensor] = []
    map_aggregate(value, lambda v: found.append(v) if isinstance(v, torch.Tensor) else None)
    return found[0] if found else None


def _dtype_of(value: Any) -> str | None:
    t = value if isinstance(value, torch.Tensor) else _first_tensor(value)
    return str(t.dtype).replace("torch.", "") if t is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


_METADATA_INPLACE = frozenset(
    {"resize_", "resize_as_", "unsqueeze_", "squeeze_", "transpose_", "t_", "swapdims_", "swapaxes_", "as_strided_"}
)
"""In-place methods that change a tensor's shape or strides: a graph with one is never memoised."""


def _signature(value: Any) -> Any:
    """What shape propagation can see of a value (shapes, strides, dtypes, Python values); None if opaque."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.stride(), value.dtype, value.device.type)
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.Size)):
        return (type(value), value)
    if isinstance(value, (tuple, list)):
        parts = tuple(_signature(v) for v in value)
        return None if any(p is None for p in parts) else (type(value), parts)
    return None


class ShapeMemo:
    """Results of earlier propagations through one graph, for :func:`propagate_shapes` to reuse.

    A node whose inputs are the very values it had in an earlier propagation
    gets the same output and record without being run again; an output equal
    (same shapes, strides, dtypes, Python values) to an earlier one is
    replaced by it, so that the nodes after it hit too.  A sweep over
    channel counts then re-computes only the first layers.  Valid while the
    model is not edited: make a new memo (and a new trace) after surgery.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten())))
    >>> memo = ShapeMemo(G)
    >>> [propagate_shapes(G, (c, 8, 8), memo=memo).output_shape for c in (3, 1)]
    [(1, 288), (1, 288)]
    >>> memo.hits  # the ReLU and Flatten of the second input
    2
    """

    def __init__(self, G: nx.DiGraph) -> None:
        gm: torch.fx.GraphModule = G.graph["graph_module"]
        self.graph_module = gm
        self.enabled = not any(n.op == "call_method" and n.target in _METADATA_INPLACE for n in gm.graph.nodes)
        self.hits = 0
        self._calls: dict[tuple[str, tuple[int, ...]], tuple[tuple[Any, ...], Any, NodeShape]] = {}
        self._outputs: dict[tuple[str, Any], Any] = {}

    def _canonical(self, node: str, value: Any) -> Any:
        sig = _signature(value)
        if sig is None:
            return value
        return self._outputs.setdefault((node, sig), value)


_FUNCTIONAL_CONVS = frozenset({F.conv1d, F.conv2d, F.conv3d})
_CONV_SPEC: _Spec = (
    ("input", _REQUIRED),
    ("weight", _REQUIRED),
    ("bias", None),
    ("stride", 1),
    ("padding", 0),
    ("dilation", 1),
    ("groups", 1),
)


def _function_rule(fn: Callable[..., Any]) -> _OpRule | None:
    try:
        rule = _FUNCTION_RULES.get(fn)
    except TypeError:  # pragma: no cover - unhashable callables
        return None
    if rule is None:
        rule = _NAMED_FUNCTION_RULES.get(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}")
    return rule


def _has_tensor(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    return _first_tensor((args, dict(kwargs))) is not None


def _method_rule(method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _OpRule | None:
    if not isinstance(args[0], torch.Tensor):
        if _has_tensor(args, kwargs):
            return None
        # a method of a Python value (a torch.Size, a tuple): run it, it is exact
        return lambda a, k: getattr(a[0], method)(*a[1:], **k)
    return _METHOD_RULES.get(method)


def _apply_rule(rule: _OpRule | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The rule's output, or ``_FALLBACK`` when there is no rule or it cannot answer."""
    if rule is None:
        return _FALLBACK
    try:
        return rule(args, kwargs)
    except Exception:  # the op raises on these arguments: meta execution records torch's message
        return _FALLBACK


def _call_function(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # a wrapped Python function reading tensor values: one run on zeros if small
        return run_on_zeros(fn, args, kwargs, exc)


class _ShapeInterpreter(torch.fx.Interpreter):
    """Runs the graph on meta tensors, recording a NodeShape per node."""

    def __init__(
        self, G: nx.DiGraph, inputs: Mapping[str, Shape | torch.Tensor], batch: int, memo: ShapeMemo | None = None
    ) -> None:
        super().__init__(G.graph["graph_module"], garbage_collect_values=True)
        self.memo = memo if memo is not None and memo.enabled else None
        self.G = G
        self.model: nn.Module = G.graph["model"]
        self.inputs = inputs
        self.batch = batch
        self.records: dict[str, NodeShape] = {}
        self.input_shapes: dict[str, Shape] = {}
        self._meta_copies: dict[str, nn.Module] = {}
        # one walk of the module tree instead of a get_submodule per node
        self._modules = dict(self.model.named_modules(remove_duplicate=False))
        self._unknown_seen = False  # no node has failed yet: inputs need no scan for unknown values

    def run_graph(self) -> Any:
        """Run every node once; return the value of the output node."""
        result: Any = None
        for node in self.graph.nodes:
            self.env[node] = self.run_node(node) if self.memo is None else self._run_memoised(node, self.memo)
            for to_delete in self.user_to_last_uses.get(node, []):
                del self.env[to_delete]
            if node.op == "output":
                result = self.env[node]
        return result

    def _run_memoised(self, n: torch.fx.Node, memo: ShapeMemo) -> Any:
        if n.op == "output":
            return self.run_node(n)
        if n.op == "placeholder":
            return memo._canonical(n.name, self.run_node(n))
        inputs = tuple(self.env[a] for a in n.all_input_nodes)
        key = (n.name, tuple(map(id, inputs)))  # the inputs are kept alive in the memo: ids stay unique
        hit = memo._calls.get(key)
        if hit is not None:
            memo.hits += 1
            self.records[n.name] = hit[2]
            if hit[2].status not in (Status.OK, Status.OPAQUE):
                self._unknown_seen = True
            return hit[1]
        value = memo._canonical(n.name, self.run_node(n))
        memo._calls[key] = (inputs, value, self.records[n.name])
        return value

    def _fresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Arguments for code we do not control: with a memo, new aliases, so in-place edits stay local."""
        if self.memo is None:
            return args, kwargs
        return map_aggregate((args, kwargs), lambda v: v.view(v.shape) if isinstance(v, torch.Tensor) else v)

    def _record(
        self,
        n: torch.fx.Node,
        ins: tuple[Any, ...],
        out: Any,
        status: Status,
        message: str = "",
        finding: Finding | None = None,
        rule: str = "-",
    ) -> None:
        self.records[n.name] = NodeShape(n.name, ins, _describe(out), _dtype_of(out), status, message, finding, rule)

    def _module_call(self, n: torch.fx.Node, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = str(n.target)
        if key not in self._meta_copies:  # a copy in eval mode: batch=1 must not trip training-only checks
            self._meta_copies[key] = meta_copy(module).eval()
        module = self._meta_copies[key]
        # bypass hooks: the user's hooks must never see our meta tensors
        try:
            return type(module).forward(module, *args, **kwargs)
        except Exception as exc:  # Python code on tensor values: one run on zeros if small
            return run_on_zeros(self.model.get_submodule(str(n.target)), args, kwargs, exc)

    def run_node(self, n: torch.fx.Node) -> Any:
        if n.op == "placeholder":
            return self._placeholder(n)
        if n.op == "output":
            args, _ = self.fetch_args_kwargs_from_env(n)
            return args[0]
        if n.op == "get_attr":
            value = _to_meta(self.fetch_attr(str(n.target)))
            self._record(n, (), value, Status.OK)  # read from the model: no shape computed
            return value
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        ins = tuple(d for d in (_describe(a) for a in itertools.chain(args, kwargs.values())) if d is not None)
        if self._unknown_seen:
            unknown: list[_Unknown] = []
            map_aggregate((args, kwargs), lambda v: unknown.append(v) if isinstance(v, _Unknown) else None)
            if unknown:
                self._record(n, ins, None, Status.UNKNOWN, f"input unknown (since {unknown[0].origin})")
                return unknown[0]
        data = self.G.nodes[n.name]
        if n.op == "call_module":
            module = self._modules.get(str(n.target)) or self.model.get_submodule(str(n.target))
            kind = type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)
            rule = _MODULE_RULES.get(kind)  # a parametrized layer (weight_norm) keeps its class's forward
            x = args[0] if args else None
            if rule is not None and isinstance(x, torch.Tensor) and len(args) == 1 and not kwargs:
                from_input = any(a.op == "placeholder" for a in n.all_input_nodes)
                ctx = _Ctx(data["layer"], data["module_type"], from_input)
                out = rule(module, ctx, x)
                # a layer that fits a non-contiguous input runs on meta, unless its output layout is fixed
                exact = ctx.findings or out is None or x.is_contiguous() or type(module) in _LAYOUT_FREE_MODULES
                if exact:
                    finding = ctx.findings[0] if ctx.findings else None
                    status = Status.INVALID if finding else Status.OK
                    message = "; ".join(f.message for f in ctx.findings)
                    if out is None:
                        self._record(n, ins, None, status, message, finding, rule="rule")
                        self._unknown_seen = True
                        return _Unknown(data["layer"])
                    self._record(n, ins, out, status, message, finding, rule="rule")
                    return out
            base_rule = None if rule is not None else _base_rule(type(module))
            if base_rule is not None and isinstance(x, torch.Tensor) and len(args) == 1 and not kwargs:
                # a subclass with its own forward (timm's Conv2dSame): the base class says whether it
                # fits; if not, a copy resized to fit runs the subclass's forward on meta
                ctx = _Ctx(data["layer"], data["module_type"], any(a.op == "placeholder" for a in n.all_input_nodes))
                base_rule(module, ctx, x)
                resized = _resized_meta_copy(module, ctx.findings[0]) if len(ctx.findings) == 1 else None
                if resized is not None:
                    finding = ctx.findings[0]
                    (x,), _ = self._fresh((x,), {})
                    try:
                        with torch.device("meta"):
                            out = type(resized).forward(resized, x)
                    except Exception:  # fall through to the generic path
                        out = None
                    if isinstance(out, torch.Tensor):
                        self._record(n, ins, out, Status.INVALID, finding.message, finding, rule="meta")
                        return out
            out = self._module_shape_rule(module, args, kwargs)
            if out is not _FALLBACK:
                self._record(n, ins, out, Status.OK, rule="rule")
                return out
            status = Status.OPAQUE if data["layer"] in self.G.graph["opaque"] else Status.OK
            args, kwargs = self._fresh(args, kwargs)
            return self._execute(n, ins, status, lambda: self._module_call(n, module, args, kwargs))
        if n.op == "call_function":
            fn = n.target
            assert callable(fn)
            if fn in _FUNCTIONAL_CONVS:
                resized = self._functional_conv(n, ins, fn, args, kwargs)
                if resized is not _FALLBACK:
                    return resized
            out = _apply_rule(_function_rule(fn), args, kwargs)
            if out is not _FALLBACK:
                self._record(n, ins, out, Status.OK, rule="rule")
                return out
            args, kwargs = self._fresh(args, kwargs)
            return self._execute(n, ins, Status.OK, lambda: _call_function(fn, args, kwargs))
        # call_method
        obj, *rest = args
        method = str(n.target)
        out = _apply_rule(_method_rule(method, args, kwargs), args, kwargs)
        if out is not _FALLBACK:
            self._record(n, ins, out, Status.OK, rule="rule")
            return out
        (obj, *rest), kwargs = self._fresh(args, kwargs)
        return self._execute(n, ins, Status.OK, lambda: getattr(obj, method)(*rest, **kwargs))

    def _functional_conv(
        self,
        n: torch.fx.Node,
        ins: tuple[Any, ...],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """``F.convNd`` on a computed weight (timm's ScaledStdConv2d): check the channels, continue resized."""
        bound = _bind(args, kwargs, _CONV_SPEC)
        if bound is None:
            return _FALLBACK
        x, weight, groups = bound[0], bound[1], bound[6]
        if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) or not _is_int(groups):
            return _FALLBACK
        expected, got = int(weight.shape[1]) * groups, int(x.shape[1]) if x.dim() == weight.dim() else -1
        if got in (-1, expected) or got % groups:
            return _FALLBACK
        data = self.G.nodes[n.name]
        layer = data["scope"] or data["layer"]  # the module whose forward calls the conv
        kind = type(self.model.get_submodule(layer)).__name__ if data["scope"] else data["module_type"]
        ctx = _Ctx(layer, kind, any(a.op == "placeholder" for a in n.all_input_nodes))
        rebuild = f"{kind}({got}, {int(weight.shape[0])}, ...)"
        ctx.mismatch("in_channels", expected, got, _channel_fix(ctx, got, rebuild))
        bound[1] = torch.empty((weight.shape[0], got // groups, *weight.shape[2:]), dtype=weight.dtype, device="meta")
        try:
            with torch.device("meta"):
                out = fn(*bound)
        except Exception:  # the resized conv fails too: the generic path reports torch's message
            return _FALLBACK
        finding = ctx.findings[0]
        self._record(n, ins, out, Status.INVALID, finding.message, finding, rule="meta")
        return out

    @staticmethod
    def _module_shape_rule(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The output of a parameter-free or multi-input module by its rule, else ``_FALLBACK``."""
        shape_rule = _SHAPE_MODULE_RULES.get(type(module))
        if shape_rule is not None:
            if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                return _FALLBACK
            return _apply_rule(lambda a, k: shape_rule(module, _Ctx("", "", False), a[0]), args, kwargs)
        args_rule = _MODULE_ARGS_RULES.get(type(module))
        if args_rule is not None:
            return _apply_rule(lambda a, k: args_rule(module, a, k), args, kwargs)
        return _FALLBACK

    def _execute(self, n: torch.fx.Node, ins: tuple[Any, ...], status: Status, call: Callable[[], Any]) -> Any:
        layer = self.G.nodes[n.name]["layer"]
        try:
            with torch.device("meta"):  # tensors the op creates land on meta too
                out = call()
        except Exception as exc:
            text = _first_line(exc)
            if isinstance(exc, NotImplementedError) or "meta" in text.lower() or "data-dependent" in text.lower():
                self._record(n, ins, None, Status.UNKNOWN, f"cannot run on meta: {text}", rule="meta")
            else:
                kind = self.G.nodes[n.name]["module_type"]
                finding = Finding(layer, kind, "input", "a compatible input", str(ins), text)
                self._record(n, ins, None, Status.INVALID, f"{layer} ({kind}) fails on {ins}: {text}", finding, "meta")
            self._unknown_seen = True
            return _Unknown(layer)
        self._record(n, ins, out, status, self.G.graph["opaque"].get(layer, ""), rule="meta")
        return out

    def _placeholder(self, n: torch.fx.Node) -> Any:
        name = str(n.target).lstrip("*")
        if name in self.inputs:
            spec = self.inputs[name]
            if isinstance(spec, torch.Tensor):
                value = _to_meta(spec)
            else:
                value = torch.empty((self.batch, *spec), dtype=_input_dtype(self.G, n, self.model), device="meta")
            self.input_shapes[name] = tuple(value.shape)
        elif n.args:
            value = n.args[0]  # the default value of the argument
        else:
            raise InputError(
                f"forward needs input {name!r} but no shape was given for it — "
                f"pass a mapping such as {{{name!r}: (3, 224, 224)}} or a tuple of shapes"
            )
        self._record(n, (), value, Status.OK)
        return value


def propagate_shapes(G: nx.DiGraph, input: InputSpec, *, batch: int = 1, memo: ShapeMemo | None = None) -> ShapeResult:
    """Propagate an input shape through the traced graph ``G`` and annotate its nodes.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`; its nodes get
        ``input_shapes``, ``output_shape``, ``dtype``, ``status``, ``message``.
    input : shape, tensor, tuple of shapes, or mapping
        Per-sample shape(s), batch excluded: ``(1, 224, 224)``; see
        :func:`normalize_input`.  Any channel count and size.
    batch : int
        Batch size prepended to every shape.
    memo : ShapeMemo, optional
        Results of earlier propagations through ``G`` to reuse (a sweep over
        inputs); built with ``ShapeMemo(G)``.

    Returns
    -------
    ShapeResult
        Every node's shape and status, the model output shape and the findings.

    Raises
    ------
    InputError
        For malformed shapes or batch, or a memo made for another graph.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 6, 5), nn.Flatten(), nn.Linear(6 * 28 * 28, 10))))
    >>> r = propagate_shapes(G, (1, 32, 32))
    >>> r.output_shape
    (1, 10)
    >>> [f.message for f in r.findings]
    ['0 (Conv2d) expects in_channels=3, got 1 — fold it with adapt_input_channels(model, 1)']
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise InputError(f"batch={batch!r} — the batch size must be a positive int")
    placeholders = [str(n.target).lstrip("*") for n in fx_nodes(G) if n.op == "placeholder"]
    inputs = normalize_input(input, placeholders)
    if memo is not None and memo.graph_module is not G.graph["graph_module"]:
        raise InputError("this ShapeMemo was made for another graph — make one per graph: ShapeMemo(G)")
    interp = _ShapeInterpreter(G, inputs, batch, memo)
    try:
        with torch.no_grad():  # rules build meta tensors; fallbacks run under torch.device("meta")
            out = interp.run_graph()
    except InputError:
        raise
    except Exception as exc:  # pragma: no cover - run_node catches per node
        raise ShapeError(f"shape propagation failed: {_first_line(exc)}") from exc
    findings: list[Finding] = []
    for name, rec in interp.records.items():
        annotate(
            G,
            name,
            input_shapes=rec.input_shapes,
            output_shape=rec.output_shape,
            dtype=rec.dtype,
            status=rec.status,
            message=rec.message,
            finding=rec.finding,
            rule=rec.rule,
        )
        if rec.finding is not None:
            findings.append(rec.finding)
    output_shape = _describe(out)
    annotate(G, "output", output_shape=output_shape, dtype=_dtype_of(out))
    return ShapeResult(dict(interp.records), output_shape, tuple(findings), dict(interp.input_shapes))
