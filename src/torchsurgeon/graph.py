"""The traced model as a ``networkx.DiGraph``.

This module owns the node-attribute schema: it is the only place that knows
both torch.fx nodes and the networkx graph.  One graph node per fx node, keyed
by the fx node name, with these attributes:

===============  ==========================================================
``op``           fx opcode: placeholder, get_attr, call_module,
                 call_function, call_method, output
``target``       module path, attribute path, function or method name
``layer``        the user-facing name: module qualified name for modules
                 and attributes, the fx node name (``add_1``) otherwise
``module_type``  class name of the module, ``name()`` for a function,
                 ``.name()`` for a tensor method
``scope``        qualified name of the module whose ``forward`` made the call
``param_names``  qualified names of the parameters the node uses
``buffer_names`` qualified names of the buffers the node uses
``input_shapes`` shapes of the tensor inputs (set by shape propagation)
``output_shape`` shape of the output tensor, or a tuple of shapes
``dtype``        dtype of the output tensor, as a string
``status``       a :class:`~torchsurgeon.records.Status` value
``message``      why the status is what it is (expected vs got and the fix)
``finding``      the :class:`~torchsurgeon.records.Finding` of an invalid node
``rule``         how the shape was obtained: ``rule``, ``meta`` or ``-``
===============  ==========================================================

The graph-level attributes ``model`` (the user's module) and
``graph_module`` (the fx GraphModule) link back to torch; exports drop them.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import networkx as nx
import torch
import torch.fx
from torch import nn

from .records import Status
from .trace import Traced

__all__ = ("NODE_ATTRS", "annotate", "build_graph", "callable_name", "fx_nodes", "module_of")

NODE_ATTRS = (
    "op",
    "target",
    "layer",
    "module_type",
    "scope",
    "param_names",
    "buffer_names",
    "input_shapes",
    "output_shape",
    "dtype",
    "status",
    "message",
    "finding",
    "rule",
)

_OPERATOR_NAMES = {getattr(operator, n): n for n in dir(operator) if not n.startswith("_")}


def callable_name(target: Any) -> str:
    """A short readable name for an fx call target.

    Examples
    --------
    >>> import operator, torch
    >>> callable_name(operator.add), callable_name(torch.flatten), callable_name("view")
    ('add', 'flatten', 'view')
    """
    if isinstance(target, str):
        return target
    if target in _OPERATOR_NAMES:
        return _OPERATOR_NAMES[target]
    return str(getattr(target, "__name__", target))


def _scope(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _type = list(stack.values())[-1]
    return str(path)


def build_graph(traced: Traced) -> nx.DiGraph:
    """Turn a traced model into a ``networkx.DiGraph`` with the node schema above.

    Parameters
    ----------
    traced : Traced
        The result of :func:`torchsurgeon.trace.trace`.

    Returns
    -------
    networkx.DiGraph
        One node per fx node (keyed by fx node name), an edge per data
        dependency; shapes and statuses are filled in by the analyzers.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU())))
    >>> list(G.nodes)
    ['input_1', '_0', '_1', 'output']
    >>> G.nodes["_0"]["layer"], G.nodes["_0"]["module_type"], G.nodes["_0"]["param_names"]
    ('0', 'Linear', ('0.weight', '0.bias'))
    """
    gm = traced.graph_module
    model = traced.model
    G = nx.DiGraph(model=model, graph_module=gm, opaque=dict(traced.opaque))
    param_ids = {id(p) for p in model.parameters()}
    for node in gm.graph.nodes:
        op = node.op
        params: tuple[str, ...] = ()
        buffers: tuple[str, ...] = ()
        layer = node.name
        if op == "call_module":
            target = str(node.target)
            module = model.get_submodule(target)
            layer = target or type(module).__name__  # "" is the model itself as one node (an nn.LSTM)
            module_type = type(module).__name__
            prefix = f"{target}." if target else ""
            params = tuple(prefix + n for n, _ in module.named_parameters(remove_duplicate=False))
            buffers = tuple(prefix + n for n, _ in module.named_buffers(remove_duplicate=False))
        elif op == "get_attr":
            target = str(node.target)
            layer = target
            value = _fetch(model, gm, target)
            if isinstance(value, nn.Parameter) or (isinstance(value, torch.Tensor) and id(value) in param_ids):
                module_type, params = "Parameter", (target,)
            elif isinstance(value, torch.Tensor) and target in dict(model.named_buffers()):
                module_type, buffers = "Buffer", (target,)
            else:
                module_type = type(value).__name__
        elif op == "call_function":
            target = callable_name(node.target)
            module_type = f"{target}()"
        elif op == "call_method":
            target = callable_name(node.target)
            module_type = f".{target}()"
        elif op == "placeholder":
            target, module_type = str(node.target), "input"
        else:
            target, module_type = "output", "output"
        G.add_node(
            node.name,
            op=op,
            target=target,
            layer=layer,
            module_type=module_type,
            scope=_scope(node),
            param_names=params,
            buffer_names=buffers,
            input_shapes=(),
            output_shape=None,
            dtype=None,
            status=Status.OK,
            message="",
            finding=None,
            rule="-",
        )
        for src in node.all_input_nodes:
            G.add_edge(src.name, node.name)
    return G


def _fetch(model: nn.Module, gm: torch.fx.GraphModule, target: str) -> Any:
    obj: Any = model
    try:
        for part in target.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        obj = gm
        for part in target.split("."):
            obj = getattr(obj, part)
    return obj


def fx_nodes(G: nx.DiGraph) -> Iterator[torch.fx.Node]:
    """The fx nodes behind ``G``, in execution order.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.Sequential(nn.ReLU())))
    >>> [n.op for n in fx_nodes(G)]
    ['placeholder', 'call_module', 'output']
    """
    gm: torch.fx.GraphModule = G.graph["graph_module"]
    return iter(gm.graph.nodes)


def module_of(G: nx.DiGraph, node: str) -> nn.Module | None:
    """The user's submodule a ``call_module`` node calls, else ``None``.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.Sequential(nn.Linear(4, 2))))
    >>> module_of(G, "_0")
    Linear(in_features=4, out_features=2, bias=True)
    """
    data = G.nodes[node]
    if data["op"] != "call_module":
        return None
    model: nn.Module = G.graph["model"]
    return model.get_submodule(data["target"])


def annotate(G: nx.DiGraph, node: str, **attrs: Any) -> None:
    """Set schema attributes on one node; unknown attribute names are a bug.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.ReLU()))
    >>> annotate(G, "output", message="done")
    >>> G.nodes["output"]["message"]
    'done'
    """
    unknown = set(attrs) - set(NODE_ATTRS)
    if unknown:
        raise KeyError(f"not in the node schema: {sorted(unknown)}; known: {NODE_ATTRS}")
    G.nodes[node].update(attrs)
