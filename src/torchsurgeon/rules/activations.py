"""Activations, dropout, stochastic depth, softmax and identity: shape-preserving ops, no FLOPs counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (
    REQUIRED,
    OpRule,
    Spec,
    bind,
    elementwise,
    float_tensor,
    fn,
    new,
    norm_dim,
    one_tensor,
    view,
    weight_dtype,
)
from .registry import FALLBACK, Call, builtin

__all__: tuple[str, ...] = ()


def _unary_rule(spec: Spec) -> OpRule:
    """Shape-preserving ops on one floating tensor: activations, exp, sqrt..."""
    names = [name for name, _ in spec]
    inplace_at = names.index("inplace") if "inplace" in names else None

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, spec)
        if b is None or not float_tensor(b[0]) or any(isinstance(v, torch.Tensor) for v in b[1:]):
            return FALLBACK
        x: torch.Tensor = b[0]
        if inplace_at is not None and b[inplace_at] is True:
            return x
        return elementwise((x,), tuple(x.shape), x.dtype)

    return rule


def _in_place(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.relu_()``, ``x.round_()``...: ``x`` itself, edited in place (a floating tensor whose elements are its own:
    torch refuses to write into an expanded one)."""
    if len(args) != 1 or kwargs or not float_tensor(x := args[0]):
        return FALLBACK
    return FALLBACK if any(st == 0 and n > 1 for n, st in zip(x.shape, x.stride())) else x


def _bernoulli_in_place(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.bernoulli_(p)`` (timm's DropPath in training: ``x.new_empty(shape).bernoulli_(keep)``): ``x`` itself, for a
    number ``p`` in [0, 1] (a tensor of probabilities, or a generator: torch decides)."""
    b = bind(args, kwargs, (("input", REQUIRED), ("p", 0.5), ("generator", None)))
    if b is None or b[2] is not None or type(b[1]) not in (int, float) or not 0 <= b[1] <= 1:
        return FALLBACK
    return _in_place((b[0],), {})


_X: Spec = (("input", REQUIRED),)
_X_INPLACE: Spec = (("input", REQUIRED), ("inplace", False))


def _dropout_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("p", 0.5), ("training", True), ("inplace", False)))
    if b is None or not float_tensor(b[0]) or not isinstance(b[1], (int, float)) or not 0 <= b[1] <= 1:
        return FALLBACK
    x, p, training, inplace = b
    if training is False or p == 0 or inplace is True:
        return x
    if training is not True or inplace is not False:
        return FALLBACK
    return _dropout_output(x)


def _dropout_output(x: torch.Tensor) -> Any:
    """``input * noise`` with ``noise = empty_like(input)``, as torch's dropout computes it."""
    if x.is_contiguous():
        return new(x.shape, x.dtype)
    return elementwise((x, torch.empty_like(x, device="meta")), tuple(x.shape), x.dtype)


def _stochastic_depth(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """torchvision.ops.stochastic_depth: ``input`` itself, or ``input * noise`` (same shape)."""
    b = bind(args, kwargs, (("input", REQUIRED), ("p", REQUIRED), ("mode", REQUIRED), ("training", True)))
    if b is None or not float_tensor(b[0]) or not isinstance(b[1], (int, float)):
        return FALLBACK
    x, p, mode, training = b
    if not 0.0 <= p <= 1.0 or mode not in ("batch", "row") or not isinstance(training, bool):
        return FALLBACK
    if not training or p == 0.0:
        return x
    if x.dim() == 0:
        return FALLBACK
    noise = new((x.shape[0], *(1,) * (x.dim() - 1)) if mode == "row" else (1,) * x.dim(), x.dtype)
    return elementwise((x, noise), tuple(x.shape), x.dtype)


_SOFTMAX_DIM: Spec = (("input", REQUIRED), ("dim", REQUIRED), ("dtype", None))


def _softmax_fn(spec: Spec) -> OpRule:
    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, spec)
        if b is None or not float_tensor(b[0]):
            return FALLBACK
        x, dim, dtype = b[0], b[1], b[-1]
        if norm_dim(dim, x.dim()) is None:  # a new contiguous tensor for any layout (the CPU's and meta's kernels)
            return FALLBACK
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            return FALLBACK
        return new(x.shape, dtype or x.dtype)

    return rule


def _activation_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    if not float_tensor(x):
        return FALLBACK
    if getattr(m, "inplace", False) is True:
        return x
    return elementwise((x,), tuple(x.shape), x.dtype)


def _prelu_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.PReLU)
    if m.num_parameters != 1 and (x.dim() < 2 or x.shape[1] != m.num_parameters):
        return FALLBACK
    return _activation_module(m, call, x) if weight_dtype(m) == x.dtype else FALLBACK


def _softmax_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    dim = getattr(m, "dim", None)
    if dim is None:
        return FALLBACK  # implicit dim: a deprecated guess in torch itself
    return _softmax_fn(_SOFTMAX_DIM)((x, dim), {})


_FEATURE_DROPOUT_RANKS: dict[type[nn.Module], tuple[int, ...]] = {
    nn.Dropout1d: (2, 3),
    nn.Dropout2d: (3, 4),
    nn.Dropout3d: (4, 5),
}


def _dropout_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    assert isinstance(m, nn.modules.dropout._DropoutNd)
    ranks = _FEATURE_DROPOUT_RANKS.get(type(m))
    if not float_tensor(x) or (ranks is not None and x.dim() not in ranks):
        return FALLBACK
    if not m.training or m.p == 0 or m.inplace:
        return x if ranks is None else view(x.shape, x.stride(), x.dtype)
    if ranks is not None or isinstance(m, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
        return new(x.shape, x.dtype) if x.is_contiguous() else FALLBACK  # feature noise: (N, C, 1, ...)
    return _dropout_output(x)


def _identity_module(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    return x


_ACTIVATIONS: dict[Callable[..., Any], Spec] = {
    F.relu: _X_INPLACE,
    F.relu6: _X_INPLACE,
    F.silu: _X_INPLACE,
    F.mish: _X_INPLACE,
    F.hardswish: _X_INPLACE,
    F.hardsigmoid: _X_INPLACE,
    F.selu: _X_INPLACE,
    F.gelu: (("input", REQUIRED), ("approximate", "none")),
    F.sigmoid: _X,
    F.tanh: _X,
    F.leaky_relu: (("input", REQUIRED), ("negative_slope", 0.01), ("inplace", False)),
    F.elu: (("input", REQUIRED), ("alpha", 1.0), ("inplace", False)),
    F.hardtanh: (("input", REQUIRED), ("min_val", -1.0), ("max_val", 1.0), ("inplace", False)),
    F.softplus: (("input", REQUIRED), ("beta", 1.0), ("threshold", 20.0)),
}


for _fn, _spec in _ACTIVATIONS.items():
    builtin(_fn, shape=fn(_unary_rule(_spec)))
for _name in ("relu", "sigmoid", "tanh", "exp", "sqrt", "rsqrt", "cos", "sin", "log", "log1p", "erf", "reciprocal"):
    # torch.relu and Tensor.relu bind the same way: one rule for both
    builtin(getattr(torch, _name), _name, shape=fn(_unary_rule(_X)))
for _name in ("round", "floor", "ceil", "trunc"):  # of floats (round's decimals= and integers: torch decides)
    builtin(getattr(torch, _name), _name, shape=fn(_unary_rule(_X)))
for _name in ("relu_", "sigmoid_", "tanh_", "exp_", "sqrt_", "round_", "floor_", "ceil_", "trunc_"):
    builtin(_name, shape=fn(_in_place))
builtin("bernoulli_", shape=fn(_bernoulli_in_place))
builtin(F.dropout, shape=fn(_dropout_fn))
builtin("torchvision.ops.stochastic_depth.stochastic_depth", shape=fn(_stochastic_depth))
_SOFTMAX_FN: Spec = (("input", REQUIRED), ("dim", None), ("_stacklevel", 3), ("dtype", None))
builtin(F.softmax, shape=fn(_softmax_fn(_SOFTMAX_FN)))
builtin(F.log_softmax, shape=fn(_softmax_fn(_SOFTMAX_FN)))
builtin(torch.softmax, "softmax", shape=fn(_softmax_fn(_SOFTMAX_DIM)))
builtin("log_softmax", shape=fn(_softmax_fn(_SOFTMAX_DIM)))
builtin(
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
    shape=one_tensor(_activation_module),
)
builtin(nn.PReLU, shape=one_tensor(_prelu_module))
builtin(nn.Softmax, nn.LogSoftmax, nn.Softmin, shape=one_tensor(_softmax_module))
builtin(
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    shape=one_tensor(_dropout_module),
)
builtin(nn.Identity, shape=one_tensor(_identity_module))
