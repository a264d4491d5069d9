"""The plan of shape propagation through one graph: what running each node needs that does not depend on the input.

:func:`torchsurgeon.shapes.propagate_shapes` runs the graph once per input;
a sweep runs it once per shape.  Everything here is computed once per graph
and kept with it (:func:`torchsurgeon.graph.graph_cache`): each node's module,
its arguments as they are fetched from the values of the nodes before it
(torch.fx's ``Interpreter`` maps every argument through the generic
``map_arg`` on every run), the values it is the last user of, and its rule
(:func:`rules_of`, kept for the registry's state).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, NamedTuple

import networkx as nx
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .autocast import Autocast
from .copies import thawed, torch_or_python
from .fxbookkeeping import node_autocast
from .graph import graph_cache, graph_module_of, index_of, model_of, node_record
from .inputaxes import joins_parts, moves_axes
from .knowndata import makes_known_data
from .resize import call_name, hands_on_channels, hands_on_features
from .rules import Rule, function_rule, method_rule, module_rule
from .rules.pooling import ADAPTIVE_POOL_FUNCTIONS, ADAPTIVE_POOLS
from .rules.registry import rules_version, runs_forward_of

__all__ = ("Step", "rules_of", "steps_of")


_CONSTANT, _NODE, _NESTED = 0, 1, 2
"""How a step finds one argument: as written in the graph, the value of a node, or values inside a container."""


def _how(arg: Any) -> int:
    if isinstance(arg, torch.fx.Node):
        return _NODE
    if not isinstance(arg, (tuple, list, dict, slice)):
        return _CONSTANT
    nodes: list[torch.fx.Node] = []
    torch.fx.node.map_arg(arg, nodes.append)
    return _NESTED if nodes or thawed(arg) is not arg else _CONSTANT  # a list a call may edit: a new one per call


class Step(NamedTuple):
    """What running one node needs that does not depend on the input: built once per graph."""

    module: nn.Module | None
    """The module of a ``call_module`` node."""
    from_input: bool
    """Whether the node reads a model input (directly, or through padding, dropout, identity or conversions)."""
    scope_module: nn.Module | None
    """The module whose ``forward`` made a function or method call."""
    args: tuple[tuple[int, Any], ...]
    kwargs: tuple[tuple[str, int, Any], ...]
    """The arguments as (how, value in the graph): see :func:`_how`."""
    inputs: tuple[torch.fx.Node, ...]
    """The nodes whose values the node reads (fx's ``all_input_nodes``)."""
    last_uses: tuple[torch.fx.Node, ...]
    """The nodes whose values are not needed after this one."""
    makes_known: bool = False
    """Whether the node makes known data or a known range from none (:func:`.knowndata.makes_known_data`)."""
    autocast: Autocast = ()
    """The ``torch.autocast`` regions the model's forward ran the node in (:func:`.fxbookkeeping.node_autocast`)."""
    pooled: bool = False
    """Whether a linear layer reads features as many whatever the input's size (:func:`_pooled`)."""
    moves: bool = False
    """Whether the node may hand a model input on with its axes moved (a video's frames merged into the batch,
    :func:`.inputaxes.moves_axes`): its first argument is the input, handed on or moved; shape propagation follows
    its axes (:func:`.inputaxes.moved_axes`)."""
    reads_moved: bool = False
    """Whether the node reads a node that :attr:`moves`: it reads the input's channels when that one keeps them
    (:func:`.inputaxes.keeps_channels`)."""

    def fetch(self, env: Mapping[torch.fx.Node, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The node's arguments from the values of the nodes before it (fx's ``fetch_args_kwargs_from_env``)."""
        args = tuple(
            env[a] if how == _NODE else a if how == _CONSTANT else thawed(torch.fx.node.map_arg(a, env.__getitem__))
            for how, a in self.args
        )
        if not self.kwargs:
            return args, {}
        kwargs = {
            k: env[a] if how == _NODE else a if how == _CONSTANT else thawed(torch.fx.node.map_arg(a, env.__getitem__))
            for k, how, a in self.kwargs
        }
        return args, kwargs


def _own_function(node: torch.fx.Node, inputs: tuple[torch.fx.Node, ...], passing: set[torch.fx.Node]) -> bool:
    """A function of the model's own (``fx.wrap``: timm's CrossViT resizes its image in ``scale_image``) given
    only the model input, as :mod:`torchsurgeon.readers` follows it: it uses no weight, so the layer after it
    reads the input, and the fix is a fold of that layer (``adapt_input_channels`` folds it)."""
    return (
        node.op == "call_function"
        and not torch_or_python(node.target)
        and all(a.op == "placeholder" or a in passing for a in inputs)
    )


def _picked(node: torch.fx.Node, owned: set[torch.fx.Node]) -> bool:
    """Whether ``node`` takes one item, by a constant position, of what such a function of the model's own gave
    (``owned``): torchvision's MViT reads ``_unsqueeze(x, 5, 2)[0]``, the input and its rank.  The layer after it
    reads the model input, as :mod:`torchsurgeon.readers` follows it."""
    args = node.args
    return (
        node.op == "call_function"
        and node.target is operator.getitem
        and len(args) == 2
        and args[0] in owned
        and type(args[1]) is int
    )


def _crops(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether ``node`` crops its first argument along the sizes after the channels, keeping them all: an index
    ``x[:, :, 2:18, 2:18]`` (the batch and the channels whole), ``x.narrow(3, 0, 16)``, or ``x[..., :16]`` read by
    convolutions of as many spatial dims or more (a crop of the image, or two crops of it read by one stem).  A
    layer after it reads the model input, and its fix is a fold: ``adapt_input_channels`` folds it."""
    args = node.args
    if (node.op == "call_method" and node.target == "narrow") or (
        node.op == "call_function" and node.target is torch.narrow
    ):
        dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
        return type(dim) is int and dim >= 2
    if node.op != "call_function" or node.target is not operator.getitem or len(args) != 2:
        return False
    index = args[1]
    if not isinstance(index, tuple) or not all(type(i) is slice or i is Ellipsis for i in index):
        return False  # an int drops a dim, None adds one, a tensor gathers
    if index and index[0] is Ellipsis:  # the sizes from the end: as many as the convolutions reading it have
        spatial = len(index) - 1
        readers = [modules.get(str(user.target)) for user in node.users if user.op == "call_module"]
        return len(readers) == len(node.users) > 0 and all(
            isinstance(m, nn.modules.conv._ConvNd) and len(m.kernel_size) >= spatial for m in readers
        )
    whole = slice(None)
    return Ellipsis not in index[:2] and (len(index) < 2 or index[1] == whole)


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
_NORM_FUNCTIONS = frozenset({F.layer_norm, F.batch_norm, F.group_norm, F.instance_norm, F.rms_norm})
_REORDERING = frozenset({"permute", "transpose", "contiguous", "movedim"})  # the same values in another order


def _pooled(node: torch.fx.Node, module: nn.Module | None, modules: Mapping[str, nn.Module]) -> bool:
    """Whether ``node``, a linear layer, reads features as many whatever the input's size: what an adaptive pooling
    gives, through flatten, views, norms, dropout, identity or conversions (torchvision's ResNet: ``avgpool``,
    ``flatten``, ``fc``; timm's heads: pool, norm, flatten), or no flattened map at all (a transformer's pooled
    token, an MLP's hidden layer).  A mismatch then comes from the channels before, not from the input's size."""
    if not isinstance(module, nn.Linear) and node.target is not F.linear:
        return False
    current = node.args[0] if node.args else None
    flattened = False  # a flatten or view on the way: the features may be a map's, as many as its size
    while isinstance(current, torch.fx.Node):
        op, target = current.op, current.target
        held = modules.get(str(target)) if op == "call_module" else None
        if isinstance(held, ADAPTIVE_POOLS) or (
            held is not None and any(isinstance(m, ADAPTIVE_POOLS) for m in held.children())
        ):
            return True  # a pool, or a module holding one (timm's SelectAdaptivePool2d)
        if op == "call_function" and target in ADAPTIVE_POOL_FUNCTIONS:
            return True
        keeps = isinstance(held, _NORMS) or target in _NORM_FUNCTIONS or call_name(op, target) in _REORDERING
        if keeps and current.args:  # keeps the features' count (timm's head: pool, LayerNorm2d's permutes, flatten)
            current = current.args[0]
            continue
        if not hands_on_features(op, target, held) or not current.args:
            return not flattened
        flattened = flattened or not hands_on_channels(op, target, held)  # a flatten, view, reshape or squeeze
        current = current.args[0]
    return not flattened


def steps_of(G: nx.DiGraph) -> dict[torch.fx.Node, Step]:
    """The steps of shape propagation through ``G``, by node, in execution order (cached with the graph)."""

    def build() -> dict[torch.fx.Node, Step]:
        nodes = list(graph_module_of(G).graph.nodes)
        modules = index_of(G).modules
        model = model_of(G)
        inputs = [tuple(node.all_input_nodes) for node in nodes]
        last_uses: dict[int, list[torch.fx.Node]] = {}
        seen: set[torch.fx.Node] = set()
        for i in range(len(nodes) - 1, -1, -1):  # the first use seen backwards is the last use
            for used in inputs[i]:
                if used not in seen:
                    seen.add(used)
                    last_uses.setdefault(i, []).append(used)
        steps: dict[torch.fx.Node, Step] = {}
        passing: set[torch.fx.Node] = set()  # nodes that hand a model input on (resize.hands_on_channels)
        owned: set[torch.fx.Node] = set()  # of them, calls of the model's own functions (_own_function)
        feeding: set[torch.fx.Node] = set()  # the model inputs and the nodes in passing: what from_input looks for
        moved: set[torch.fx.Node] = set()  # nodes that may hand it on with its axes moved (inputaxes.moves_axes)
        node_type = torch.fx.Node
        for i, node in enumerate(nodes):
            module = scope_module = None
            op = node.op
            if op == "call_module":
                target = str(node.target)
                module = modules[target] if target in modules else model.get_submodule(target)
            elif op == "call_function" or op == "call_method":
                scope = node_record(G, node.name).scope
                scope_module = modules.get(scope) if scope else None
            elif op == "placeholder":
                feeding.add(node)
            node_inputs = inputs[i]
            from_input = bool(feeding) and not feeding.isdisjoint(node_inputs)
            if from_input and _own_function(node, node_inputs, passing):
                owned.add(node)
            if from_input and (
                hands_on_channels(op, node.target, module)
                or node in owned
                or _picked(node, owned)
                or _crops(node, modules)
            ):
                passing.add(node)
                feeding.add(node)
            reads_moved = bool(moved) and not moved.isdisjoint(node_inputs)
            args = node.args
            first = args[0] if args else None
            moves = (  # einops' rearrange hands the input on as a function of the model's own does, its axes followed
                isinstance(first, node_type)
                and (first.op == "placeholder" or first in passing or first in moved)
                and (
                    moves_axes(op, node.target, module)
                    or (node not in passing and hands_on_channels(op, node.target, module))
                )
            ) or (  # torch.cat([x, state], 1): the input joined with other channels (a ConvLSTM cell)
                isinstance(first, (list, tuple))
                and joins_parts(op, node.target, first)
                and any(type(a) is node_type and (a.op == "placeholder" or a in passing or a in moved) for a in first)
            )
            if moves:
                moved.add(node)
            kwargs = node.kwargs
            steps[node] = Step(
                module,
                from_input,
                scope_module,
                tuple([(_NODE, a) if type(a) is node_type else (_how(a), a) for a in args]),
                tuple([(k, _how(a), a) for k, a in kwargs.items()]) if kwargs else (),
                node_inputs,
                tuple(last_uses.get(i, ())),
                makes_known_data(node),
                node_autocast(node),
                _pooled(node, module, modules),
                moves,
                reads_moved,
            )
        return steps

    steps: dict[torch.fx.Node, Step] = graph_cache(G, "shape_plan", build)
    return steps


def rules_of(G: nx.DiGraph) -> dict[torch.fx.Node, tuple[Rule | None, bool]]:
    """Each node's rule and whether it applies directly (cached with the graph for the registry's state).

    ``False``: a subclass with its own ``forward`` (a Conv2d that pads first) is only checked by its base class's rule.
    """
    version = rules_version()

    def build() -> dict[torch.fx.Node, tuple[Rule | None, bool]]:
        found: dict[torch.fx.Node, tuple[Rule | None, bool]] = {}
        for node, step in steps_of(G).items():
            module = step.module
            if module is not None:
                owned = module_rule(type(module))
                if owned is None:
                    found[node] = (None, True)
                else:
                    rule, owner = owned
                    found[node] = (rule, runs_forward_of(type(module), owner))
            elif node.op == "call_function":
                found[node] = (function_rule(node.target), True)
            elif node.op == "call_method":
                found[node] = (method_rule(str(node.target)), True)
            else:
                found[node] = (None, True)
        return found

    rules: dict[torch.fx.Node, tuple[Rule | None, bool]] = graph_cache(G, f"rules {version}", build)
    return rules
