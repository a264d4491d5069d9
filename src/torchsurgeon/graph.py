"""The traced model as a ``networkx.DiGraph`` of typed node records.

This module owns the node schema: it is the only code that knows both
torch.fx nodes and the networkx graph, and the only code that reads or
writes node attributes.  One graph node per fx node, keyed by the fx node
name, carrying one :class:`NodeRecord` under the key ``"record"``; every
other module reads it with :func:`node_record` / :func:`node_records` and
changes it with :func:`update_record`.  Graph-level links back to torch are
read with :func:`model_of`, :func:`graph_module_of` and :func:`opaque_of`.

Examples
--------
>>> from torch import nn
>>> from torchsurgeon.trace import trace
>>> G = build_graph(trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU())))
>>> rec = node_record(G, "_0")
>>> rec.layer, rec.module_type, rec.param_names, str(rec.status)
('0', 'Linear', ('0.weight', '0.bias'), 'ok')
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
import torch.fx
from torch import nn

from .arguments import check_graph
from .fxbookkeeping import node_scope, reads_metadata
from .modelindex import ModelIndex, model_index
from .records import Finding, FlopKind, LayerStatus, ParamChange, ShapeSource, from_fields, layer_label
from .trace import Traced

__all__ = (
    "NodeRecord",
    "build_graph",
    "callable_name",
    "findings_of",
    "fx_node",
    "graph_cache",
    "graph_copy",
    "graph_module_of",
    "index_of",
    "is_probing",
    "model_dtype",
    "model_of",
    "module_of",
    "node_record",
    "node_records",
    "opaque_of",
    "param_facts",
    "probing",
    "records_now",
    "set_records",
    "shape_specific_of",
    "specialised_of",
    "update_record",
)


@dataclass(frozen=True)
class NodeRecord:
    """Everything known about one graph node.

    The first group of fields comes from the trace; the second is filled in
    by shape propagation (:func:`torchsurgeon.shapes.propagate_shapes`) for
    one input; ``change`` by :func:`torchsurgeon.check_surgery`.

    Attributes
    ----------
    name : str
        The fx node name (the graph key).
    op : str
        fx opcode: placeholder, get_attr, call_module, call_function,
        call_method, output.
    target : str
        Module path, attribute path, function or method name.
    layer : str
        The user-facing name: module qualified name for modules and
        attributes, and for a function on data reading the parameters of
        one module (``F.conv2d(x, self.weight)`` in ``encoder._conv_stem``),
        directly or through steps computing a weight from them (timm's
        ``StdConv2d``); the fx node name (``add_1``) otherwise.
    module_type : str
        Class name of the module, ``name()`` for a function, ``.name()`` for
        a tensor method.
    scope : str
        Qualified name of the module whose ``forward`` made the call.
    param_names, buffer_names : tuple[str, ...]
        Qualified names of the parameters and buffers the node uses.
    params, trainable, param_bytes, buffers : int
        Elements of the unique parameters the node uses (all, with
        ``requires_grad``, in bytes) and of its unique buffers, as the model
        stood when the graph was built.
    shared : tuple[str, ...]
        The node's parameters that other nodes use too (tied weights).
    input_shapes : tuple
        Shapes of the tensor inputs.
    output_shape : tuple, nested tuples or None
        Shape of the output tensor, or shapes of a tuple/dict output.
    dtype : str or None
        dtype of the (first) output tensor.
    status : LayerStatus
        ok, invalid, opaque or unknown.
    message : str
        Why the status is what it is (expected vs got and the fix).
    findings : tuple[Finding, ...]
        Every mismatch of an invalid node.
    shape_source : ShapeSource
        How the output shape was obtained.
    macs, flops : int
        Multiply-accumulates and FLOPs of the node for this input.
    flop_kind : FlopKind
        What the FLOPs are made of.
    flops_known : bool
        False when the node's FLOPs cannot be known from shapes (an opaque
        layer, a leaf with weights and no formula, ``einsum``...).
    change : ParamChange or None
        What a model edit did to the node's weights (set by check_surgery).
    """

    name: str
    op: str
    target: str
    layer: str
    module_type: str
    scope: str = ""
    param_names: tuple[str, ...] = ()
    buffer_names: tuple[str, ...] = ()
    params: int = 0
    trainable: int = 0
    param_bytes: int = 0
    buffers: int = 0
    shared: tuple[str, ...] = ()
    input_shapes: tuple[Any, ...] = ()
    output_shape: Any = None
    dtype: str | None = None
    status: LayerStatus = LayerStatus.OK
    message: str = ""
    findings: tuple[Finding, ...] = ()
    shape_source: ShapeSource = ShapeSource.NONE
    macs: int = 0
    flops: int = 0
    flop_kind: FlopKind = FlopKind.NONE
    flops_known: bool = True
    change: ParamChange | None = None

    def analysed(
        self,
        input_shapes: tuple[Any, ...],
        output_shape: Any,
        dtype: str | None,
        status: LayerStatus,
        message: str,
        findings: tuple[Finding, ...],
        shape_source: ShapeSource,
        macs: int,
        flops: int,
        flop_kind: FlopKind,
        flops_known: bool,
    ) -> NodeRecord:
        """This node's record with the results of one shape propagation (the fast path of the shape pass: one
        dict update, no ``__init__``)."""
        record = object.__new__(NodeRecord)
        values = record.__dict__
        values.update(self.__dict__)
        values["input_shapes"] = input_shapes
        values["output_shape"] = output_shape
        values["dtype"] = dtype
        values["status"] = status
        values["message"] = message
        values["findings"] = findings
        values["shape_source"] = shape_source
        values["macs"] = macs
        values["flops"] = flops
        values["flop_kind"] = flop_kind
        values["flops_known"] = flops_known
        return record

    @property
    def analysis(self) -> dict[str, Any]:
        """The results of one shape propagation, by field: what :meth:`with_analysis` gives another node."""
        return {name: getattr(self, name) for name in _ANALYSIS}

    def with_analysis(self, analysis: Mapping[str, Any]) -> NodeRecord:
        """This node's record with another node's :attr:`analysis` (a twin given the same inputs).

        Examples
        --------
        >>> a = NodeRecord("a", "call_module", "a", "a", "ReLU")
        >>> b = NodeRecord("b", "call_module", "b", "b", "ReLU", output_shape=(1, 2), macs=3)
        >>> c = a.with_analysis(b.analysis)
        >>> c.name, c.output_shape, c.macs, c == dataclasses.replace(a, output_shape=(1, 2), macs=3)
        ('a', (1, 2), 3, True)
        """
        record = object.__new__(NodeRecord)
        values = record.__dict__
        values.update(self.__dict__)
        values.update(analysis)
        return record

    @property
    def where(self) -> str:
        """For a function or method named by its fx node name (``expand_1``), the module whose ``forward``
        calls it (``embeddings``; ``the model`` at the top level); empty for every other node.

        Messages name the node with it (:func:`~torchsurgeon.records.layer_label`): the row's name alone
        is not a name to find in the code.
        """
        if self.op not in ("call_function", "call_method") or self.layer != self.name:
            return ""
        return self.scope or "the model"

    @property
    def label(self) -> str:
        """The node as messages name it: ``conv1 (Conv2d)``, ``expand_1 (.expand() in embeddings)``."""
        return layer_label(self.layer, self.module_type, self.where)

    @property
    def finding(self) -> Finding | None:
        """The first finding of an invalid node, else ``None``."""
        return self.findings[0] if self.findings else None

    @property
    def from_input(self) -> bool:
        """Whether the node is a model input."""
        return self.op == "placeholder"


_FIELDS = frozenset(f.name for f in dataclasses.fields(NodeRecord))
_ANALYSIS = (
    "input_shapes",
    "output_shape",
    "dtype",
    "status",
    "message",
    "findings",
    "shape_source",
    "macs",
    "flops",
    "flop_kind",
    "flops_known",
)
"""The fields one shape propagation fills in (:meth:`NodeRecord.analysed`)."""


def _record_from(values: dict[str, Any]) -> NodeRecord:
    """A NodeRecord from field values: building a graph and propagating shapes make one per node each.

    Fields left out of ``values`` keep their default: a dataclass field's
    default is also a class attribute, which an instance without the field
    in its ``__dict__`` reads.  The records of a graph hold only what differs.
    """
    return from_fields(NodeRecord, values)


_KEY = "record"


def node_record(G: nx.DiGraph, node: str) -> NodeRecord:
    """The record of one node.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> node_record(build_graph(trace(nn.ReLU())), "output").op
    'output'
    """
    record: NodeRecord = G._node[node][_KEY]
    return record


def node_records(G: nx.DiGraph) -> Iterator[NodeRecord]:
    """Every node's record, in execution order.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> [r.op for r in node_records(build_graph(trace(nn.Sequential(nn.ReLU()))))]
    ['placeholder', 'call_module', 'output']
    """
    for data in G._node.values():  # networkx's node data view costs a generator step per node
        yield data[_KEY]


def update_record(G: nx.DiGraph, node: str, **changes: Any) -> NodeRecord:
    """Replace fields of one node's record; unknown field names are a bug.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.ReLU()))
    >>> update_record(G, "output", message="done").message
    'done'
    """
    unknown = set(changes) - _FIELDS
    if unknown:
        raise KeyError(f"not fields of NodeRecord: {sorted(unknown)}")
    data = G._node[node]
    record = _record_from({**data[_KEY].__dict__, **changes})  # dataclasses.replace runs the frozen __init__
    data[_KEY] = record
    return record


def set_records(G: nx.DiGraph, records: Iterable[NodeRecord]) -> None:
    """Store whole records (by their ``name``): the fast path of analyzers that rebuild every record."""
    nodes = G._node  # networkx's node view costs a call per node
    for record in records:
        nodes[record.name][_KEY] = record


def graph_copy(G: nx.DiGraph, records: Mapping[str, NodeRecord] | None = None) -> nx.DiGraph:
    """``G.copy()``: a graph whose nodes' records change independently of ``G``'s, built faster.

    networkx's ``copy`` adds each node and edge through its public methods;
    this fills the adjacency dicts directly (networkx resets its cached views
    when they are assigned).  ``records`` (every node's, by name, as
    :func:`records_now` took them) replace ``G``'s own: a sweep keeps each
    input's records and makes a report's graph only when it is asked for.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU())))
    >>> H = graph_copy(G)
    >>> nx.utils.graphs_equal(G, H), list(H.predecessors("_1"))
    (True, ['_0'])
    >>> update_record(H, "_1", message="changed").message, node_record(G, "_1").message
    ('changed', '')
    """
    H = G.__class__()
    H.graph.update(G.graph)
    if records is None:
        H._node = {n: data.copy() for n, data in G._node.items()}
    else:
        H._node = {n: {**data, _KEY: records[n]} for n, data in G._node.items()}
    succ = {u: {v: data.copy() for v, data in nbrs.items()} for u, nbrs in G._succ.items()}
    H._adj = succ  # also H._succ
    H._pred = {v: {u: succ[u][v] for u in nbrs} for v, nbrs in G._pred.items()}
    return H


def records_now(G: nx.DiGraph) -> dict[str, NodeRecord]:
    """Every node's record as it is now, by name: what :func:`graph_copy` needs to make a copy of ``G`` later.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.Sequential(nn.ReLU())))
    >>> kept = records_now(G)
    >>> _ = update_record(G, "_0", message="changed")
    >>> node_record(graph_copy(G, kept), "_0").message, node_record(G, "_0").message
    ('', 'changed')
    """
    return {n: data[_KEY] for n, data in G._node.items()}


def findings_of(records: Iterable[NodeRecord]) -> tuple[Finding, ...]:
    """The findings of ``records``, in order, each once: a layer called twice (an encoder reading each image of a
    pair) finds the same thing twice.

    Examples
    --------
    >>> f = Finding("conv", "Conv2d", "in_channels", 3, 1, "fold it")
    >>> calls = [NodeRecord(n, "call_module", "conv", "conv", "Conv2d", findings=(f,)) for n in ("conv", "conv_1")]
    >>> findings_of(calls) == (f,)
    True
    """
    return tuple(dict.fromkeys(f for rec in records for f in rec.findings))


def model_of(G: nx.DiGraph) -> nn.Module:
    """The user's model behind ``G``.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> m = nn.ReLU()
    >>> model_of(build_graph(trace(m))) is m
    True
    """
    model: nn.Module = G.graph["model"]
    return model


def graph_module_of(G: nx.DiGraph) -> torch.fx.GraphModule:
    """The fx GraphModule behind ``G`` (its submodules are the model's own)."""
    gm: torch.fx.GraphModule = G.graph["graph_module"]
    return gm


def index_of(G: nx.DiGraph) -> ModelIndex:
    """The model's modules, parameters and buffers by qualified name (one walk, made by :func:`build_graph`)."""
    index: ModelIndex = G.graph["index"]
    return index


@contextlib.contextmanager
def probing(G: nx.DiGraph) -> Iterator[None]:
    """While a search propagates inputs through ``G`` that the user did not give (sizes tried for the one that fits):
    what only a report of a given input names, the fold that runs, is not looked for (:func:`is_probing`).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.ReLU()))
    >>> with probing(G):
    ...     is_probing(G)
    True
    >>> is_probing(G)
    False
    """
    before = is_probing(G)
    G.graph["probing"] = True
    try:
        yield
    finally:
        G.graph["probing"] = before


def is_probing(G: nx.DiGraph) -> bool:
    """Whether ``G`` is propagated for a search now (:func:`probing`)."""
    return bool(G.graph.get("probing"))


def graph_cache(G: nx.DiGraph, key: str, build: Callable[[], Any]) -> Any:
    """A value derived from the graph alone (not from an input), built once and kept with the graph.

    Analyzers keep here what every propagation through the same graph needs
    (a sweep propagates the same graph many times).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.ReLU()))
    >>> graph_cache(G, "n", lambda: len(G)), graph_cache(G, "n", lambda: 0)
    (3, 3)
    """
    cache: dict[str, Any] = G.graph.setdefault("cache", {})
    if key not in cache:
        cache[key] = build()
    return cache[key]


def fx_node(G: nx.DiGraph, name: str) -> torch.fx.Node:
    """The torch.fx node a graph node stands for, by name (the map is cached with the graph).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> fx_node(build_graph(trace(nn.Sequential(nn.ReLU()))), "_0").target
    '0'
    """
    nodes: dict[str, torch.fx.Node] = graph_cache(
        G, "fx nodes by name", lambda: {n.name: n for n in graph_module_of(G).graph.nodes}
    )
    return nodes[name]


def opaque_of(G: nx.DiGraph) -> Mapping[str, str]:
    """Submodules analysed without tracing inside, with the reason (see :mod:`torchsurgeon.trace`)."""
    opaque: Mapping[str, str] = G.graph["opaque"]
    return opaque


def specialised_of(G: nx.DiGraph) -> Mapping[str, Any]:
    """``forward`` arguments the trace fixed (``use_cache=False``, defaults): a real forward to compare with
    the graph gets them too (see :attr:`torchsurgeon.trace.Traced.specialised`).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> specialised_of(build_graph(trace(nn.Sequential(nn.Linear(4, 2)))))
    {}
    """
    specialised: Mapping[str, Any] = G.graph.get("specialised", {})
    return specialised


def shape_specific_of(G: nx.DiGraph) -> tuple[str, ...]:
    """The Python questions about the input's shapes the trace answered for its example inputs: the graph holds
    for inputs of those shapes only (see :attr:`torchsurgeon.trace.Traced.shape_specific`).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> shape_specific_of(build_graph(trace(nn.Sequential(nn.Linear(4, 2)))))
    ()
    """
    found: tuple[str, ...] = G.graph.get("shape_specific", ())
    return found


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


def build_graph(traced: Traced) -> nx.DiGraph:
    """Turn a traced model into a ``networkx.DiGraph`` of :class:`NodeRecord` s.

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
    >>> node_record(G, "_1").module_type
    'ReLU'
    """
    check_graph(traced, "build_graph", "build_graph(trace(model))")
    gm = traced.graph_module
    model = traced.model
    index = traced.index if traced.index is not None else model_index(model)
    G = nx.DiGraph(
        model=model,
        graph_module=gm,
        opaque=dict(traced.opaque),
        index=index,
        specialised=dict(traced.specialised),
        shape_specific=tuple(traced.shape_specific),
    )
    modules = index.modules
    all_params = index.params
    all_buffers = index.buffers
    nodes = list(gm.graph.nodes)
    held = index.held_by({str(n.target) for n in nodes if n.op == "call_module"})
    param_ids: set[int] | None = None  # made when a get_attr node needs it
    # one walk of the fx graph: each node's fields, its parameter counts (a parameter is counted once
    # per node that uses it) and its edges, filled into the adjacency dicts directly (as in
    # graph_copy: add_nodes_from / add_edges_from cost more than the rest of the graph)
    rows: list[dict[str, Any]] = []
    facts: dict[str, ParamFact] = {}  # used parameter -> its fact
    users: dict[int, int] = {}  # parameter id -> nodes using it
    succ: dict[str, dict[str, dict[str, Any]]] = {}
    pred: dict[str, dict[str, dict[str, Any]]] = {}
    weights: dict[str, frozenset[str]] = {}  # node computed from attributes alone, no input -> the parameters read
    for node in nodes:
        op = node.op
        name = node.name
        params: tuple[str, ...] = ()
        buffers: tuple[str, ...] = ()
        layer = name
        if op == "call_module":
            target = str(node.target)
            module = modules[target] if target in modules else model.get_submodule(target)
            layer = target or type(module).__name__  # "" is the model itself as one node (an nn.LSTM)
            module_type = type(module).__name__
            params, buffers = held[target]
        elif op == "get_attr":
            target = str(node.target)
            layer = target
            value: Any = all_params.get(target)  # the model walk knows its parameters and buffers by name
            if value is None:
                value = all_buffers[target] if target in all_buffers else _fetch(model, gm, target)
            if isinstance(value, torch.Tensor) and param_ids is None:
                param_ids = {id(p) for p in all_params.values()}
            if isinstance(value, nn.Parameter) or (param_ids is not None and id(value) in param_ids):
                module_type, params = "Parameter", (target,)
            elif isinstance(value, torch.Tensor) and target in all_buffers:
                module_type, buffers = "Buffer", (target,)
            else:
                module_type = type(value).__name__
            weights[name] = frozenset(params)
        elif op == "call_function":
            target = callable_name(node.target)
            module_type = f"{target}()"
            layer = _weight_owner(node, weights, modules) or layer  # F.conv2d(x, self.weight): the module's name
        elif op == "call_method":
            target = callable_name(node.target)
            module_type = f".{target}()"
            _weight_owner(node, weights, modules)  # notes a step computing a weight (self.weight.reshape(...))
        elif op == "placeholder":
            target, module_type = str(node.target), "input"
        else:
            target, module_type = "output", "output"
        values = {  # the other fields keep their defaults
            "name": name,
            "op": op,
            "target": target,
            "layer": layer,
            "module_type": module_type,
            "scope": node_scope(node),
            "param_names": params,
            "buffer_names": buffers,
        }
        if params:
            unique: dict[int, ParamFact] = {}
            for n in params:
                fact = facts.get(n)
                if fact is None:
                    fact = facts[n] = _fact(all_params[n])
                unique[fact[0]] = fact
            total = trainable = size_bytes = 0
            for pid, size, grad, nbytes, _ in unique.values():
                users[pid] = users.get(pid, 0) + 1
                total += size
                trainable += size if grad else 0
                size_bytes += nbytes
            values["params"] = total
            values["trainable"] = trainable
            values["param_bytes"] = size_bytes
        if buffers:
            values["buffers"] = sum({id(all_buffers[n]): all_buffers[n].numel() for n in buffers}.values())
        rows.append(values)
        succ[name] = {}
        into = pred[name] = {}
        for src in node.all_input_nodes:  # fx nodes come after their inputs
            src_name = src.name
            if src_name not in into:
                into[src_name] = succ[src_name][name] = {}  # one edge data dict, shared by both ends
    shared = {pid for pid, count in users.items() if count > 1}  # tied weights: known once every node is seen
    if shared:
        for values in rows:
            values["shared"] = tuple(n for n in values["param_names"] if facts[n][0] in shared)
    G.graph["cache"] = {"param facts": facts}  # param_facts completes it
    G._node = {values["name"]: {_KEY: _record_from(values)} for values in rows}
    G._adj = succ  # also G._succ
    G._pred = pred
    return G


ParamFact = tuple[int, int, bool, int, torch.dtype]
"""What parameter counts read of one parameter: (id, elements, requires_grad, bytes, dtype)."""


def _fact(p: torch.Tensor) -> ParamFact:
    size = p.numel()
    return id(p), size, p.requires_grad, size * p.element_size(), p.dtype


def param_facts(G: nx.DiGraph) -> Mapping[str, ParamFact]:
    """Every parameter's :data:`ParamFact` by qualified name, read once per graph (as it was built).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> facts = param_facts(build_graph(trace(nn.Linear(4, 2))))
    >>> [(name, f[1], f[2], f[3]) for name, f in facts.items()]
    [('weight', 8, True, 32), ('bias', 2, True, 8)]
    """

    def read() -> dict[str, ParamFact]:
        used = graph_cache(G, "param facts", dict)  # build_graph read those its nodes use
        return {name: used.get(name) or _fact(p) for name, p in index_of(G).params.items()}

    facts: dict[str, ParamFact] = graph_cache(G, "param facts, all", read)
    return facts


def _weight_owner(node: torch.fx.Node, weights: dict[str, frozenset[str]], modules: Mapping[str, nn.Module]) -> str:
    """The one module whose parameters a functional call on data reads (``F.conv2d(x, self.weight)``), else "".

    The parameters may reach the call through steps computing them from attributes alone (timm's ``StdConv2d``
    standardises its weight: ``F.conv2d(x, F.batch_norm(self.weight.reshape(...)).reshape_as(self.weight))``);
    such a step is noted in ``weights`` (the node -> the parameters it reads) and is not named by the module: it
    is part of the weight, and the call on the data is the layer.  Only a module whose submodules hold no
    parameters, a layer written with functions (timm's ``Conv2dSame``, a ``LayerNorm``, smp's
    ``Conv2dStaticSamePadding`` with its padding module): a call reading one parameter of a block (the layer
    scale of a ConvNeXt block, the position embedding of a ViT encoder) is one step of it, and the block's name
    on its row would make ``report.layer(block)`` that step.
    A parameter's device, dtype or shape read is no step of a weight: a tensor made on its device
    (``torch.zeros(b, 8, h, w, device=self.conv.weight.device)``, a recurrent cell's first state) is no layer.
    """
    if node.op == "call_function" and reads_metadata(node):  # weight.device: not noted in ``weights``, no weight read
        return ""
    inputs = node.all_input_nodes
    read = [weights[a.name] for a in inputs if a.name in weights]
    if len(read) == len(inputs):  # no data in: a step computing a weight, or a constant
        weights[node.name] = frozenset().union(*read)
        return ""
    owners = {p.rpartition(".")[0] for params in read for p in params}
    if len(owners) != 1:
        return ""
    owner = owners.pop()
    module = modules.get(owner)
    if module is None or any(next(child.parameters(), None) is not None for child in module.children()):
        return ""
    return owner


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
    record = node_record(G, node)
    if record.op != "call_module":
        return None
    return model_of(G).get_submodule(record.target)


def model_dtype(G: nx.DiGraph) -> torch.dtype | None:
    """The floating dtype most of the model's parameters have (None without floating parameters, or for a tie);
    read once per graph from its parameter facts.

    Examples
    --------
    >>> from torchsurgeon.trace import trace
    >>> model_dtype(build_graph(trace(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double(), nn.Linear(2, 2)))))
    torch.float32
    """

    def count() -> torch.dtype | None:
        counts: dict[torch.dtype, int] = {}
        for *_, dtype in {fact[0]: fact for fact in param_facts(G).values()}.values():  # a tied weight once
            if dtype.is_floating_point:
                counts[dtype] = counts.get(dtype, 0) + 1
        ranked = sorted(counts.values(), reverse=True)
        return max(counts, key=counts.__getitem__) if ranked and ranked[:2] != [ranked[0]] * 2 else None

    found: torch.dtype | None = graph_cache(G, "model dtype", count)
    return found
