"""MACs and FLOPs per layer, from the shapes propagated through the graph.

Nothing runs here: each op's MAC and FLOP formula sits beside its shape rule
in :mod:`torchsurgeon.rules`, shape propagation records each node's count,
and this module only sums them.  Every count is a closed-form function of a
node's arguments' shapes (and of its module's configuration), so it costs
the same for any batch and resolution.

Conventions
-----------
* **MACs** (multiply-accumulates) of convolutions, linear layers, matrix
  products, attention and the gates of recurrent layers (LSTM, GRU, RNN
  and their cells, per token, layer and direction:
  :mod:`torchsurgeon.rules.recurrent`); ``flops = 2 * macs`` for them,
  which is what ``torch.utils.flop_counter.FlopCounterMode`` counts
  (biases, activations, pooling and element-wise ops are not counted, as
  there).  ``docs/flops.md`` writes the conventions out.
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

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

from .arguments import check_graph
from .graph import node_records
from .records import FlopKind

__all__ = ("FlopKind", "FlopSummary", "LayerFlops", "count_flops")


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
        Multiply-accumulates of convolutions, linear layers, matrix products,
        attention and recurrent layers.
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


def count_flops(G: nx.DiGraph, *, per_layer: bool = True) -> FlopSummary:
    """MACs and FLOPs of every node of a graph whose shapes were propagated.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`, after
        :func:`torchsurgeon.shapes.propagate_shapes` (or
        :func:`torchsurgeon.analysis.analyse_graph`).
    per_layer : bool
        Whether to fill ``layers``; without them, only the totals and the
        uncounted layers (what a report keeps: its rows read each node's own).

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
    >>> s.flops == 2 * s.macs, count_flops(G, per_layer=False).layers
    (True, {})
    """
    check_graph(G, "count_flops", "G = build_graph(trace(model)); propagate_shapes(G, input); count_flops(G)")
    layers: dict[str, LayerFlops] = {}
    uncounted: list[str] = []
    macs_total = norm_total = 0
    for rec in node_records(G):
        if rec.op in ("placeholder", "output", "get_attr"):
            continue
        if not rec.flops_known:
            uncounted.append(rec.layer)
            continue
        macs, flops = rec.macs, rec.flops
        if macs or flops:
            if per_layer:
                layers[rec.name] = LayerFlops(rec.name, macs, flops, rec.flop_kind)
            macs_total += macs
            norm_total += flops - 2 * macs
    return FlopSummary(
        macs=macs_total,
        flops=2 * macs_total + norm_total,
        matmul_flops=2 * macs_total,
        norm_flops=norm_total,
        layers=layers,
        uncounted=tuple(uncounted),
    )
