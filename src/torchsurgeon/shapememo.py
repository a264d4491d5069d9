"""Node results to reuse by their inputs: between propagations through one graph, and between twin nodes.

:func:`torchsurgeon.shapes.propagate_shapes` takes a :class:`ShapeMemo` and
looks each node up in it before running it; ``paramcount_sweep`` makes one
per sweep.  Within one propagation, :func:`twin_kinds` numbers the nodes
that compute the same thing from the same inputs (the repeated blocks of a
ResNet or a transformer): a twin given the very values an earlier one had
gets its output and shapes without running its rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import torch
import torch.fx
from torch import nn

from ._steps import steps_of
from .copies import HOOK_DICTS
from .graph import NodeRecord, graph_cache, graph_module_of, node_record, opaque_of
from .shapespec import Shape, TypedShape

__all__ = ("METADATA_INPLACE", "ShapeMemo", "reshapes_in_place", "sharing_inputs", "twin_kinds")


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
        self._kept: set[int] = set()  # ids of the values in _outputs (kept alive there)

    def canonical(self, node: str, value: Any) -> Any:
        """``value``, or the equal value an earlier propagation gave ``node`` (the one later nodes met).

        A value already kept for a node (a twin's output, shared) is kept as it is.
        """
        if id(value) in self._kept:
            return value
        sig = _signature(value)
        if sig is None:
            return value
        kept = self._outputs.setdefault((node, sig), value)
        self._kept.add(id(kept))
        return kept


def _sizes(inputs: Mapping[str, Shape | TypedShape | torch.Tensor]) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """Each input's dtype (None: the one a plain shape gets) and sizes."""
    sizes: dict[str, tuple[Any, tuple[int, ...]]] = {}
    for name, spec in inputs.items():
        if isinstance(spec, torch.Tensor):
            sizes[name] = (spec.dtype, tuple(spec.shape))
        elif isinstance(spec, TypedShape):
            sizes[name] = (spec.dtype, spec.shape)
        else:
            sizes[name] = (None, tuple(spec))
    return sizes


def _one_size_apart(a: Mapping[str, tuple[Any, tuple[int, ...]]], b: Mapping[str, tuple[Any, tuple[int, ...]]]) -> bool:
    """Whether two inputs' sizes differ in one size at most (a channel count), with the same names, dtypes, ranks."""
    if a.keys() != b.keys():
        return False
    apart = 0
    for name, (dtype, shape) in a.items():
        other_dtype, other = b[name]
        if dtype != other_dtype or len(shape) != len(other):
            return False
        apart += sum(1 for x, y in zip(shape, other) if x != y)
    return apart <= 1


def sharing_inputs(inputs: Sequence[Mapping[str, Shape | TypedShape | torch.Tensor]]) -> list[bool]:
    """For each input (as :func:`~torchsurgeon.shapespec.normalize_input` gives it), whether a :class:`ShapeMemo`
    may pay for it: another input of the list is one size apart (a channel count), so that most nodes get the same
    values from both.

    Two inputs apart in more sizes (a new image size) give almost every node other values: the memo's
    bookkeeping (a key and a lookup for each node, each new value kept) would cost more than the few nodes it
    spares (those after a global pooling).  Which inputs share changes only the time, never a result.

    Examples
    --------
    >>> sharing_inputs([{"x": (1, 224, 224)}, {"x": (3, 224, 224)}, {"x": (3, 256, 256)}])
    [True, True, False]
    """
    sizes = [_sizes(spec) for spec in inputs]
    return [any(_one_size_apart(a, b) for j, b in enumerate(sizes) if j != i) for i, a in enumerate(sizes)]


_NOT_STATE = frozenset(  # read separately, never by a rule, or derived from a setting (a convolution's padding)
    {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_reversed_padding_repeated_twice"}
    | set(HOOK_DICTS)
)
_CALLS = frozenset({"call_module", "call_function", "call_method"})
_SETTINGS: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}
"""By class and the names in an instance's ``__dict__``, in order: the names of its settings."""


_SLOTS: list[object] = []
"""``_SLOTS[i]``: the ``i``-th input node of a node among its arguments (an object equal to nothing else)."""


def _slot(i: int) -> object:
    while len(_SLOTS) <= i:
        _SLOTS.append(object())
    return _SLOTS[i]


_NUMBERS = frozenset({bool, int, float, complex})


def _with_slots(value: Any, slots: Mapping[torch.fx.Node, object]) -> Any:
    """The arguments as written in the graph, each node as its input's :func:`_slot`, lists and dicts as tuples."""
    kind = type(value)
    if kind is torch.fx.Node:
        return slots[value]
    if kind in _NUMBERS:  # 2 == 2.0 == True, but x * 2 keeps an integer dtype
        return (kind, value)
    if kind is str or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return (kind, tuple([_with_slots(v, slots) for v in value]))
    if isinstance(value, dict):
        return (dict, tuple([(k, _with_slots(v, slots)) for k, v in value.items()]))
    if kind is slice:
        return (slice, _with_slots((value.start, value.stop, value.step), slots))
    return value


def _tensors(table: dict[str, Any]) -> Any:
    """The names, shapes, dtypes and ``requires_grad`` of a module's own parameters or buffers."""
    if not table:
        return ()
    return tuple(table), tuple([None if t is None else (t.shape, t.dtype, t.requires_grad) for t in table.values()])


def _module_state(module: nn.Module) -> Any:
    """What a rule can read of a leaf module (its settings, its tensors' shapes and dtypes, its children's alike: the
    padding of smp's ``Conv2dStaticSamePadding``), hashable by value; None for a module whose children have children
    (a block traced as one node: not compared)."""
    state = module.__dict__
    children = state["_modules"]
    if children:
        if any(child is None or child._modules for child in children.values()):
            return None
        return _own_state(state, type(module)), tuple(
            [(k, _own_state(c.__dict__, type(c))) for k, c in children.items()]
        )
    return _own_state(state, type(module))


def _own_state(state: dict[str, Any], kind: type) -> Any:
    layout = (kind, tuple(state))
    names = _SETTINGS.get(layout)
    if names is None:
        names = _SETTINGS.setdefault(layout, tuple(k for k in layout[1] if k not in _NOT_STATE))
    settings = tuple([state[k] for k in names])
    if state.get("padding_mode", "zeros") != "zeros":  # a convolution pads by this list, not by its padding
        settings += (tuple(state["_reversed_padding_repeated_twice"]),)
    return layout[0], names, settings, _tensors(state["_parameters"]), _tensors(state["_buffers"])


def twin_kinds(G: nx.DiGraph) -> dict[torch.fx.Node, int]:
    """Nodes numbered by what they compute: two nodes of one number give the same output for the same inputs.

    The same function or method with the same constant arguments, or leaf
    modules of one class whose settings and tensor shapes are all equal, their
    children's too (``layer3.1.conv1`` and ``layer3.2.conv1`` of a ResNet-50),
    each reading a model input or not alike.  Settings and constants are
    compared by value (an object without its own ``==`` by identity).  Nodes
    inside opaque parts, modules whose children have children, and nodes with
    a setting or constant that has no hash (a mutable object) have no number.
    Cached with the graph.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))))
    >>> kinds = twin_kinds(G)  # the first layer reads the model input: it is nobody's twin
    >>> [kinds.get(n) for n in graph_module_of(G).graph.nodes if n.op == "call_module"]
    [0, 1, 2, 1, 2]
    """

    def build() -> dict[torch.fx.Node, int]:
        opaque = opaque_of(G)
        numbers: dict[Any, int] = {}
        kinds: dict[torch.fx.Node, int] = {}
        states: dict[int, Any] = {}  # by module id: a module called several times (a ResNet block's relu) read once
        for node, step in steps_of(G).items():
            op = node.op
            if op not in _CALLS or (opaque and node_record(G, node.name).layer in opaque):
                continue
            module = step.module
            if module is None:
                what = node.target
            else:
                what = states.get(id(module), states)
                if what is states:
                    what = states[id(module)] = _module_state(module)
            if what is None:
                continue
            args, kwargs = node.args, node.kwargs
            if not kwargs and len(args) == 1 and type(args[0]) is torch.fx.Node:  # most layers: one input
                key: Any = (op, what, step.from_input, step.autocast)
            else:
                slots = {a: _slot(i) for i, a in enumerate(step.inputs)}
                key = (op, what, _with_slots(args, slots), _with_slots(kwargs, slots), step.from_input, step.autocast)
            try:  # equal settings and constants: the same computation (a setting compared by identity: the same)
                kinds[node] = numbers.setdefault(key, len(numbers))
            except TypeError:  # a setting or constant without a hash (a mutable object): no twin
                continue
        return kinds

    kinds: dict[torch.fx.Node, int] = graph_cache(G, "twin_kinds", build)
    return kinds
