"""What a sweep keeps between propagations through one graph: node results to reuse by their inputs.

:func:`torchsurgeon.shapes.propagate_shapes` takes a :class:`ShapeMemo` and
looks each node up in it before running it; ``paramcount_sweep`` makes one
per sweep.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch

from .graph import NodeRecord, graph_cache, graph_module_of

__all__ = ("METADATA_INPLACE", "ShapeMemo", "reshapes_in_place")


METADATA_INPLACE = frozenset(
    {
        "resize_",
        "resize_as_",
        "unsqueeze_",
        "squeeze_",
        "transpose_",
        "t_",
        "swapdims_",
        "swapaxes_",
        "as_strided_",
        "set_",
    }
)
"""In-place methods that change a tensor's shape or strides: a graph with one is never memoised."""


def reshapes_in_place(G: nx.DiGraph) -> bool:
    """Whether the graph calls a method that changes a tensor's shape or strides in place (``x.unsqueeze_(0)``).

    Its values then cannot be shared between nodes or propagations (cached with the graph).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> reshapes_in_place(build_graph(trace(nn.Sequential(nn.ReLU()))))
    False
    """
    nodes = graph_module_of(G).graph.nodes
    found: bool = graph_cache(
        G, "reshapes_in_place", lambda: any(n.op == "call_method" and n.target in METADATA_INPLACE for n in nodes)
    )
    return found


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
    >>> from torchsurgeon.shapes import propagate_shapes
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten())))
    >>> memo = ShapeMemo(G)
    >>> [propagate_shapes(G, (c, 8, 8), memo=memo).output_shape for c in (3, 1)]
    [(1, 288), (1, 288)]
    >>> memo.hits  # the ReLU and Flatten of the second input
    2
    """

    def __init__(self, G: nx.DiGraph) -> None:
        gm = graph_module_of(G)
        self.graph_module = gm
        self.enabled = not reshapes_in_place(G)
        self.hits = 0
        self.calls: dict[tuple[str, tuple[int, ...]], tuple[tuple[Any, ...], Any, NodeRecord]] = {}
        self._outputs: dict[tuple[str, Any], Any] = {}

    def canonical(self, node: str, value: Any) -> Any:
        """``value``, or the equal value an earlier propagation gave ``node`` (the one later nodes met)."""
        sig = _signature(value)
        if sig is None:
            return value
        return self._outputs.setdefault((node, sig), value)
