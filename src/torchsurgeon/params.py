"""Parameter accounting over the traced graph.

Totals count every parameter object once (shared or tied weights too), so
``total == sum(p.numel() for p in model.parameters())``.  Each layer reports
the parameters it uses; a parameter used by several layers is marked
``shared`` on each of them.  For a layer that does not fit its input (see
:mod:`torchsurgeon.shapes`), ``params_for_input`` is the count once the layer
is resized to fit.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
from torch import nn

from .graph import module_of
from .records import Finding, Status

__all__ = ("LayerParams", "ParamSummary", "count_params", "resized_param_count")


@dataclass(frozen=True)
class LayerParams:
    """Parameter counts of one graph node."""

    node: str
    params: int
    trainable: int
    buffers: int
    param_bytes: int
    params_for_input: int
    shared: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParamSummary:
    """Result of :func:`count_params`.

    Attributes
    ----------
    total, trainable, frozen : int
        Unique parameters of the model as it stands (shared counted once).
    buffers : int
        Unique buffer elements (running statistics and the like).
    bytes_by_dtype : Mapping[str, int]
        Parameter bytes per dtype.
    total_for_input : int
        ``total`` with every invalid layer resized to fit the input.
    layers : Mapping[str, LayerParams]
        Per graph node.
    unused : tuple[str, ...]
        Parameters no graph node uses (for example an auxiliary head that
        ``forward`` skips); they are still in ``total``.
    """

    total: int
    trainable: int
    frozen: int
    buffers: int
    bytes_by_dtype: Mapping[str, int]
    total_for_input: int
    layers: Mapping[str, LayerParams]
    unused: tuple[str, ...] = ()


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def resized_param_count(module: nn.Module, finding: Finding) -> int:
    """Parameters of ``module`` once resized to take the input it got.

    Parameters
    ----------
    module : nn.Module
        The layer that does not fit.
    finding : Finding
        What does not fit (``in_channels``, ``in_features``, ...).

    Returns
    -------
    int
        The parameter count after resizing; the current count when the
        layer type or the mismatch has no resizing rule.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.records import Finding
    >>> conv = nn.Conv2d(3, 6, 5)
    >>> resized_param_count(conv, Finding("conv1", "Conv2d", "in_channels", 3, 1, ""))
    156
    """
    current = sum(p.numel() for p in module.parameters())
    got = finding.got
    if finding.what == "in_channels" and isinstance(module, nn.modules.conv._ConvNd) and isinstance(got, int):
        k = _numel(tuple(module.kernel_size))
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            weight = got * (module.out_channels // module.groups) * k
        else:
            weight = module.out_channels * max(got // module.groups, 1) * k
        return current - module.weight.numel() + weight  # other parameters (bias, a gain) are unchanged
    if finding.what == "in_features" and isinstance(module, nn.Linear) and isinstance(got, int):
        return current - module.weight.numel() + module.out_features * got
    if finding.what in ("num_features", "num_channels") and isinstance(got, int):
        affine = sum(1 for name in ("weight", "bias") if getattr(module, name, None) is not None)
        return affine * got
    if finding.what == "normalized_shape" and isinstance(module, nn.LayerNorm) and isinstance(got, tuple):
        affine = sum(1 for name in ("weight", "bias") if getattr(module, name, None) is not None)
        return affine * _numel(got)
    return current


def _functional_weights(G: nx.DiGraph, model: nn.Module) -> dict[str, int]:
    """Resized weight counts of layers whose forward calls ``F.convNd`` on a computed weight.

    The invalid functional node names the layer (its scope); the weight parameter's ``get_attr``
    node carries the change, so ``weight: before → after`` reads right in the table.
    """
    out: dict[str, int] = {}
    for _, data in G.nodes(data=True):
        finding = data.get("finding")
        if data["op"] != "call_function" or data["status"] != Status.INVALID or finding is None or not data["scope"]:
            continue
        if finding.layer != data["scope"]:
            continue
        module = model.get_submodule(data["scope"])
        weight = getattr(module, "weight", None)
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(weight, nn.Parameter):
            others = sum(p.numel() for p in module.parameters()) - weight.numel()
            out[f"{data['scope']}.weight"] = resized_param_count(module, finding) - others
    return out


def count_params(G: nx.DiGraph) -> ParamSummary:
    """Count parameters per layer and in total, shared weights once.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`; if shapes were propagated
        (:func:`torchsurgeon.shapes.propagate_shapes`), invalid layers also
        get ``params_for_input``.

    Returns
    -------
    ParamSummary
        Totals and per-layer counts.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    >>> _ = m[1].requires_grad_(False)
    >>> s = count_params(build_graph(trace(m)))
    >>> s.total, s.trainable, s.frozen, s.buffers
    (21, 15, 6, 7)
    """
    model: nn.Module = G.graph["model"]
    named = dict(model.named_parameters(remove_duplicate=False))
    named_buffers = dict(model.named_buffers(remove_duplicate=False))
    unique = {id(p): p for p in named.values()}
    unique_buffers = {id(b): b for b in named_buffers.values()}

    users: Counter[int] = Counter()
    for _, data in G.nodes(data=True):
        for pid in {id(named[n]) for n in data["param_names"]}:
            users[pid] += 1

    layers: dict[str, LayerParams] = {}
    resized: dict[str, int] = {}  # invalid node -> its resized parameter count
    replaced: set[int] = set()
    weight_for_input = _functional_weights(G, model)
    for node, data in G.nodes(data=True):
        params = {id(named[n]): named[n] for n in data["param_names"]}
        buffers = {id(named_buffers[n]): named_buffers[n] for n in data["buffer_names"]}
        count = sum(p.numel() for p in params.values())
        for_input = count
        finding = data.get("finding")
        module = module_of(G, node) if data["status"] == Status.INVALID else None  # a lookup only when needed
        if data["op"] == "get_attr" and data["param_names"] and data["param_names"][0] in weight_for_input:
            for_input = weight_for_input[data["param_names"][0]]
            if not replaced & set(params):
                replaced |= set(params)
                resized[node] = for_input
        elif finding is not None and module is not None:
            for_input = resized_param_count(module, finding)
            if not replaced & set(params):
                replaced |= set(params)
                resized[node] = for_input
        layers[node] = LayerParams(
            node=node,
            params=count,
            trainable=sum(p.numel() for p in params.values() if p.requires_grad),
            buffers=sum(b.numel() for b in buffers.values()),
            param_bytes=sum(p.numel() * p.element_size() for p in params.values()),
            params_for_input=for_input,
            shared=tuple(n for n in data["param_names"] if users[id(named[n])] > 1),
        )

    total = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    bytes_by_dtype: Counter[str] = Counter()
    for p in unique.values():
        bytes_by_dtype[str(p.dtype).replace("torch.", "")] += p.numel() * p.element_size()
    used = {pid for pid in users}
    unused_names = tuple(n for n, p in model.named_parameters() if id(p) not in used)
    total_for_input = total - sum(unique[pid].numel() for pid in replaced) + sum(resized.values())
    return ParamSummary(
        total=total,
        trainable=trainable,
        frozen=total - trainable,
        buffers=sum(b.numel() for b in unique_buffers.values()),
        bytes_by_dtype=dict(bytes_by_dtype),
        total_for_input=total_for_input,
        layers=layers,
        unused=unused_names,
    )
