"""MACs and FLOPs per layer, from the shapes propagated through the graph.

Nothing runs: every count is a closed-form function of a node's input and
output shapes (and of its module's configuration), so it costs the same for
any batch and resolution.

Conventions
-----------
* **MACs** (multiply-accumulates) of convolutions, linear layers, matrix
  products and attention; ``flops = 2 * macs`` for them, which is what
  ``torch.utils.flop_counter.FlopCounterMode`` counts (biases, activations,
  pooling and element-wise ops are not counted, as there).
* **Norm FLOPs** follow fvcore's per-element estimates: batch norm at
  inference 2 per element with affine weights (1 without); layer, group and
  instance norm, and batch norm in training, 5 per element with affine
  weights (4 without); RMS norm 4 with a weight (3 without).
* A node whose FLOPs cannot be known from shapes (an opaque submodule, a
  leaf module with weights and no formula, ``einsum``, a user function fx
  recorded as one call, a node whose shape is unknown) is listed in
  :attr:`FlopSummary.uncounted` rather than counted as zero silently.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from .graph import module_of
from .records import Status, StrEnum

__all__ = ("FlopKind", "FlopSummary", "LayerFlops", "count_flops")


class FlopKind(StrEnum):
    """What a node's FLOPs are made of."""

    NONE = ""
    """No counted arithmetic (activations, pooling, reshapes...)."""
    CONV = "conv"
    """A convolution (or transposed convolution)."""
    LINEAR = "linear"
    """A linear layer or ``F.linear``."""
    MATMUL = "matmul"
    """``matmul``, ``@``, ``bmm``."""
    ATTENTION = "attention"
    """``scaled_dot_product_attention`` or ``nn.MultiheadAttention`` (projections included)."""
    NORM = "norm"
    """Batch, layer, group, instance or RMS normalisation."""


@dataclass(frozen=True)
class LayerFlops:
    """MACs and FLOPs of one graph node."""

    node: str
    macs: int
    flops: int
    kind: FlopKind = FlopKind.NONE


@dataclass(frozen=True)
class FlopSummary:
    """Result of :func:`count_flops`.

    Attributes
    ----------
    macs : int
        Multiply-accumulates of convolutions, linear layers, matrix products
        and attention.
    flops : int
        ``2 * macs`` plus ``norm_flops``.
    matmul_flops : int
        ``2 * macs``: the number ``FlopCounterMode`` reports.
    norm_flops : int
        FLOPs of normalisation layers (fvcore's per-element estimates).
    layers : Mapping[str, LayerFlops]
        Per graph node, for the nodes with a count.
    uncounted : tuple[str, ...]
        Layers whose FLOPs are not known from shapes (not in the totals).
    """

    macs: int
    flops: int
    matmul_flops: int
    norm_flops: int
    layers: Mapping[str, LayerFlops]
    uncounted: tuple[str, ...] = ()


_Shape = tuple[int, ...]


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(d, int) for d in value)


def _shapes(data: Mapping[str, Any]) -> list[_Shape]:
    return [s for s in data["input_shapes"] if _is_shape(s)]


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


# --------------------------------------------------------------------------- formulas


def _conv_macs(m: nn.modules.conv._ConvNd, x: _Shape, out: _Shape) -> int:
    nsp = len(m.kernel_size)
    batched = len(x) == nsp + 2
    c_in = x[1 if batched else 0]  # the input's channels: an invalid layer counts as resized to fit
    k = _numel(m.kernel_size)
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        n = x[0] if batched else 1
        return n * _numel(x[-nsp:]) * k * c_in * (m.out_channels // m.groups)
    return _numel(out) * (c_in // m.groups) * k


def _mha_macs(m: nn.MultiheadAttention, ins: list[_Shape]) -> int:
    if len(ins) < 3:
        return 0
    q, k = ins[0], ins[1]
    e = m.embed_dim
    if len(q) == 3 and m.batch_first:
        n, length, source = q[0], q[1], k[1]
    elif len(q) == 3:
        n, length, source = q[1], q[0], k[0]
    else:
        n, length, source = 1, q[0], k[0]
    kdim, vdim = int(m.kdim), int(m.vdim)
    projections = n * (length * e * e + source * kdim * e + source * vdim * e + length * e * e)
    return int(projections + n * length * source * e * 2)  # q @ k^T and weights @ v over all heads


def _norm_flops(m: nn.Module, x: _Shape) -> int:
    affine = getattr(m, "weight", None) is not None
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        training = m.training or not m.track_running_stats
        if not training:
            return _numel(x) * (2 if affine else 1)
    if isinstance(m, nn.RMSNorm):
        return _numel(x) * (4 if affine else 3)
    return _numel(x) * (5 if affine else 4)


_NORM_MODULES = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.RMSNorm,
)
_COUNTED_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, *_NORM_MODULES)


def _matmul_macs(a: _Shape, b: _Shape) -> int:
    if not a or not b:
        return 0
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    batch = torch.broadcast_shapes(a2[:-2], b2[:-2])  # type: ignore[no-untyped-call]
    return _numel(batch) * a2[-2] * a2[-1] * b2[-1]


def _sdpa_macs(ins: list[_Shape]) -> int:
    if len(ins) < 3:
        return 0
    q, k, v = ins[:3]
    return _numel(q[:-1]) * k[-2] * (q[-1] + v[-1])


def _linear_fn_macs(ins: list[_Shape]) -> int:
    if len(ins) < 2:
        return 0
    x, w = ins[:2]
    return _numel(x[:-1]) * x[-1] * w[0]


def _conv_fn_macs(ins: list[_Shape], out: _Shape) -> int:
    if len(ins) < 2:
        return 0
    w = ins[1]
    return _numel(out) * w[1] * _numel(w[2:])


def _layer_norm_fn_flops(ins: list[_Shape]) -> int:
    return _numel(ins[0]) * (5 if len(ins) > 1 else 4) if ins else 0


_Formula = Callable[[list[_Shape], _Shape], tuple[int, FlopKind]]

_FUNCTION_FORMULAS: dict[Any, _Formula] = {
    **{
        fn: lambda ins, out: (_matmul_macs(ins[0], ins[1]) if len(ins) >= 2 else 0, FlopKind.MATMUL)
        for fn in (torch.matmul, operator.matmul, torch.bmm, torch.mm)
    },
    F.linear: lambda ins, out: (_linear_fn_macs(ins), FlopKind.LINEAR),
    F.scaled_dot_product_attention: lambda ins, out: (_sdpa_macs(ins), FlopKind.ATTENTION),
    **{fn: lambda ins, out: (_conv_fn_macs(ins, out), FlopKind.CONV) for fn in (F.conv1d, F.conv2d, F.conv3d)},
}
"""MACs of ``call_function`` nodes (their norms are in ``_FUNCTION_NORMS``)."""

_METHOD_FORMULAS: dict[str, _Formula] = {
    "matmul": _FUNCTION_FORMULAS[torch.matmul],
    "bmm": _FUNCTION_FORMULAS[torch.matmul],
    "mm": _FUNCTION_FORMULAS[torch.matmul],
}

_FUNCTION_NORMS: dict[Any, Callable[[list[_Shape]], int]] = {
    F.layer_norm: _layer_norm_fn_flops,
    F.group_norm: _layer_norm_fn_flops,
}

_UNCOUNTED_TORCH_FUNCTIONS = frozenset(
    {torch.einsum, torch.functional.einsum, torch.tensordot, torch.addmm, torch.baddbmm, torch.mv}
)
_VISIBLE_PACKAGES = frozenset({"", "torch", "operator", "_operator", "math", "builtins"})
_VISIBLE_FUNCTIONS = frozenset({"torchvision.ops.stochastic_depth.stochastic_depth"})


def _function_is_visible(fn: Any) -> bool:
    """torch functions and Python operators do what their name says; user functions may hide matmuls."""
    module = getattr(fn, "__module__", None) or ""
    if module.split(".")[0] in _VISIBLE_PACKAGES:
        return True
    return f"{module}.{getattr(fn, '__qualname__', '')}" in _VISIBLE_FUNCTIONS


def _node_flops(
    G: nx.DiGraph, node: str, data: Mapping[str, Any], modules: Mapping[str, nn.Module]
) -> tuple[int, int, FlopKind, bool]:
    """(macs, norm flops, kind, counted) of a call_module or call_method node."""
    op = data["op"]
    out = data["output_shape"]
    if op == "call_module":
        m = modules.get(data["target"]) or module_of(G, node)
        if m is None:  # pragma: no cover - call_module always has a module
            return 0, 0, FlopKind.NONE, True
        if data["layer"] in G.graph.get("opaque", {}):
            return 0, 0, FlopKind.NONE, False
        if not isinstance(m, _COUNTED_MODULES):
            # a leaf we have no formula for: harmless without weights (activations, pooling)
            return 0, 0, FlopKind.NONE, next(m.parameters(), None) is None or isinstance(m, nn.Embedding)
        ins = _shapes(data)
        if isinstance(m, nn.modules.conv._ConvNd):
            if not ins or not _is_shape(out):
                return 0, 0, FlopKind.CONV, False
            return _conv_macs(m, ins[0], out), 0, FlopKind.CONV, True
        if isinstance(m, nn.Linear):
            if not ins:
                return 0, 0, FlopKind.LINEAR, False
            x = ins[0]
            return _numel(x[:-1]) * x[-1] * m.out_features, 0, FlopKind.LINEAR, True
        if isinstance(m, nn.MultiheadAttention):
            if len(ins) < 3:
                return 0, 0, FlopKind.ATTENTION, False
            return _mha_macs(m, ins), 0, FlopKind.ATTENTION, True
        if isinstance(m, _NORM_MODULES):
            if not ins:
                return 0, 0, FlopKind.NORM, False
            return 0, _norm_flops(m, ins[0]), FlopKind.NORM, True
    if op == "call_method":
        formula = _METHOD_FORMULAS.get(data["target"])
        if formula is not None:
            if data["status"] == Status.UNKNOWN or out is None:
                return 0, 0, FlopKind.NONE, False
            macs, kind = formula(_shapes(data), out)
            return macs, 0, kind, True
        return 0, 0, FlopKind.NONE, data["target"] != "einsum"
    return 0, 0, FlopKind.NONE, True


def count_flops(G: nx.DiGraph) -> FlopSummary:
    """MACs and FLOPs of every node of a graph whose shapes were propagated.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`, after
        :func:`torchsurgeon.shapes.propagate_shapes` (or
        :func:`torchsurgeon.analysis.analyse_graph`).

    Returns
    -------
    FlopSummary
        Totals, per-layer counts and the layers that could not be counted.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> from torchsurgeon.shapes import propagate_shapes
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))))
    >>> _ = propagate_shapes(G, (3, 32, 32))
    >>> s = count_flops(G)
    >>> s.layers["_0"].macs == 8 * 30 * 30 * 3 * 3 * 3, s.layers["_2"].macs == 8 * 30 * 30 * 10
    (True, True)
    >>> s.flops == 2 * s.macs
    True
    """
    targets = {n.name: n.target for n in G.graph["graph_module"].graph.nodes}
    model: nn.Module = G.graph["model"]
    modules = dict(model.named_modules(remove_duplicate=False))  # one walk, not a lookup per node
    layers: dict[str, LayerFlops] = {}
    uncounted: list[str] = []
    macs_total = norm_total = 0
    for node, data in G.nodes(data=True):
        op = data["op"]
        if op in ("placeholder", "output", "get_attr"):
            continue
        if op == "call_function":
            macs, norm, kind, counted = _function_flops(targets[node], data)
        else:
            macs, norm, kind, counted = _node_flops(G, node, data, modules)
        if not counted:
            uncounted.append(data["layer"])
            continue
        if macs or norm:
            layers[node] = LayerFlops(node, macs, 2 * macs + norm, kind)
            macs_total += macs
            norm_total += norm
    return FlopSummary(
        macs=macs_total,
        flops=2 * macs_total + norm_total,
        matmul_flops=2 * macs_total,
        norm_flops=norm_total,
        layers=layers,
        uncounted=tuple(uncounted),
    )


def _function_flops(target: Any, data: Mapping[str, Any]) -> tuple[int, int, FlopKind, bool]:
    out = data["output_shape"]
    try:
        formula = _FUNCTION_FORMULAS.get(target)
        norm = _FUNCTION_NORMS.get(target)
    except TypeError:  # pragma: no cover - unhashable target
        return 0, 0, FlopKind.NONE, False
    if formula is not None:
        if data["status"] == Status.UNKNOWN or not _is_shape(out):
            return 0, 0, FlopKind.NONE, False
        macs, kind = formula(_shapes(data), out)
        return macs, 0, kind, True
    if norm is not None:
        ins = _shapes(data)
        return (0, norm(ins), FlopKind.NORM, True) if ins else (0, 0, FlopKind.NORM, False)
    return 0, 0, FlopKind.NONE, target not in _UNCOUNTED_TORCH_FUNCTIONS and _function_is_visible(target)
