"""torch.fx's bookkeeping during a trace, without its generic copies (the same objects, built faster).

torch.fx copies its scope on every module call and its module stack on
every node with ``copy.copy``; :class:`ModuleStack` and :class:`FastScope`
give the same copies without ``copy``'s generic path.
:func:`lazy_graph_module` builds the traced ``GraphModule`` without
compiling its code and with one walk per module path.  :func:`node_autocast`
records the ``torch.autocast`` regions a node was made in (fx records no
``with`` block), and :func:`autocast_as` enters them again.  :func:`reads_metadata` tells a node that
reads a tensor's dtype, device or sizes, none of its values.  Used by
:mod:`torchsurgeon.trace`'s tracer; docs/frontend.md has the measurements.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.fx
from torch import nn

from .autocast import Autocast, autocast_now

__all__ = (
    "FastScope",
    "ModuleStack",
    "autocast_as",
    "lazy_graph_module",
    "node_autocast",
    "node_scope",
    "reads_metadata",
    "record_autocast",
)

_AUTOCAST = "torchsurgeon_autocast"


def record_autocast(node: torch.fx.Node) -> None:
    """Note on ``node`` the ``torch.autocast`` regions active now (the tracer runs the model's ``with`` blocks)."""
    if torch._C._is_any_autocast_enabled():
        node.meta[_AUTOCAST] = autocast_now()


def node_autocast(node: torch.fx.Node) -> Autocast:
    """The autocast regions ``node`` was made in (:func:`record_autocast`), none for most.

    Examples
    --------
    >>> g = torch.fx.Graph()
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     x = g.placeholder("x")
    ...     record_autocast(x)
    >>> node_autocast(x), node_autocast(g.output(x))
    ((('cpu', torch.bfloat16),), ())
    """
    found: Autocast = node.meta.get(_AUTOCAST, ())
    return found


@contextlib.contextmanager
def autocast_as(regions: Autocast) -> Iterator[None]:
    """Run the code inside in the autocast ``regions`` (:func:`node_autocast`).

    Examples
    --------
    >>> with autocast_as((("cpu", torch.bfloat16),)):
    ...     torch.is_autocast_enabled("cpu")
    True
    """
    with contextlib.ExitStack() as stack:
        for device, dtype in regions:
            stack.enter_context(torch.autocast(device_type=device, dtype=dtype))
        yield


class FastScope(torch.fx.proxy.Scope):
    """torch.fx's ``Scope`` (module path and type) whose ``copy.copy`` is one constructor call.

    fx copies the tracer's scope on entering every module; ``copy.copy``
    reaches a plain object through ``__reduce_ex__``.

    Examples
    --------
    >>> import copy
    >>> scope = FastScope("layer1", None)
    >>> saved = copy.copy(scope)
    >>> scope.module_path = "layer2"
    >>> saved.module_path, type(saved).__name__
    ('layer1', 'FastScope')
    """

    def __copy__(self) -> FastScope:
        return FastScope(self.module_path, self.module_type)


def node_scope(node: torch.fx.Node) -> str:
    """The qualified name of the innermost module whose ``forward`` made ``node`` (its ``nn_module_stack``'s
    last entry), or "" at the top level.

    Examples
    --------
    >>> g = torch.fx.Graph()
    >>> x = g.placeholder("x")
    >>> x.meta["nn_module_stack"] = {"layer1": ("layer1", None), "layer1.0": ("layer1.0", None)}
    >>> node_scope(x), node_scope(g.output(x))
    ('layer1.0', '')
    """
    stack = node.meta.get("nn_module_stack")
    return str(next(reversed(stack.values()))[0]) if stack else ""


class ModuleStack(collections.OrderedDict):  # type: ignore[type-arg]
    """torch.fx's module stack, whose ``copy.copy`` is one snapshot per state of the stack.

    fx stores ``copy.copy(module_stack)`` as each node's ``nn_module_stack``;
    the stack changes only when a module call starts or ends, so the nodes
    recorded in between share one snapshot (a plain ``OrderedDict``, equal
    to what ``copy.copy`` gives; read it, do not change it).

    Examples
    --------
    >>> import copy
    >>> stack = ModuleStack()
    >>> stack["layer1"] = ("layer1", None)
    >>> a, b = copy.copy(stack), copy.copy(stack)
    >>> stack["layer1.conv"] = ("layer1.conv", None)
    >>> a is b, a == {"layer1": ("layer1", None)}, len(copy.copy(stack)), type(a).__name__
    (True, True, 2, 'OrderedDict')
    """

    _snapshot: collections.OrderedDict[Any, Any] | None = None

    def __copy__(self) -> collections.OrderedDict[Any, Any]:
        if self._snapshot is None:
            self._snapshot = collections.OrderedDict(self)
        return self._snapshot

    def __setitem__(self, key: Any, value: Any) -> None:
        self._snapshot = None
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self._snapshot = None
        super().__delitem__(key)

    def popitem(self, last: bool = True) -> tuple[Any, Any]:
        self._snapshot = None
        return super().popitem(last)

    def pop(self, *args: Any) -> Any:
        self._snapshot = None
        return super().pop(*args)

    def clear(self) -> None:
        self._snapshot = None
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._snapshot = None
        super().update(*args, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._snapshot = None
        return super().setdefault(key, default)

    def move_to_end(self, key: Any, last: bool = True) -> None:
        self._snapshot = None
        super().move_to_end(key, last)


def lazy_graph_module(
    root: nn.Module, graph: torch.fx.Graph, name: str, originals: Callable[[str], Any] | None = None
) -> torch.fx.GraphModule:
    """``torch.fx.GraphModule(root, graph, name)``, generating its Python code only when asked, built faster.

    ``torch.fx.GraphModule`` compiles ``forward`` on construction (a third of
    the trace time of a resnet50); the lazy variant does it on first call:
    analysis interprets the graph.  torch.fx copies each node's target from
    ``root`` by walking its path from the top with ``getattr`` (a tenth of the
    trace of an EfficientNet); here each module path is walked once, with
    torch.fx's own rules for what is copied (see :func:`_copy_targets`).
    ``originals(target)`` gives the tensor a target held before the trace,
    for one the model's forward replaced with a traced value.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> gm = lazy_graph_module(model, torch.fx.Tracer().trace(model), "Sequential")
    >>> gm.get_submodule("0") is model[0], [n for n, _ in gm.named_parameters()], gm(torch.ones(1, 2)).shape
    (True, ['0.weight', '0.bias'], torch.Size([1, 3]))
    """
    cls: type[torch.fx.GraphModule]
    try:
        from torch.fx._lazy_graph_module import _LazyGraphModule

        cls = _LazyGraphModule
    except ImportError:  # pragma: no cover - torch without it
        cls = torch.fx.GraphModule
    # built around a graph without targets (the same tracer class and extras, which it reads), then given the real one
    empty = torch.fx.Graph(tracer_cls=graph._tracer_cls, tracer_extras=graph._tracer_extras)
    gm = cls(root, empty, name)
    # each target once (a module called several times, a weight read twice): copying it again changes nothing
    targets = dict.fromkeys(str(n.target) for n in graph.nodes if n.op in ("get_attr", "call_module"))
    _copy_targets(root, gm, targets, originals)
    gm.graph = graph
    return gm


def _copy_targets(
    root: nn.Module, gm: nn.Module, targets: Iterable[str], originals: Callable[[str], Any] | None = None
) -> None:
    """torch.fx's ``_copy_attr(root, gm, target)`` for each target in turn, each module path looked up once.

    The objects themselves are shared with ``root`` (parameters, buffers,
    leaf modules); the modules on the way are new empty modules,
    except under a module copied whole, where nothing more is copied.
    ``root`` is only read.
    """
    walked: dict[str, tuple[Any, Any]] = {"": (root, gm)}  # path -> (its object in root, its module in gm)
    for target in targets:
        path, _, field = target.rpartition(".")
        pair = walked.get(path)
        if pair is None:
            pair = _walk(walked, path)
        source, copy = pair
        if copy is source:
            continue  # inside a module already copied whole
        value = getattr(source, field)
        if isinstance(value, torch.fx.Proxy) and originals is not None:
            value = originals(target)
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            copy.register_buffer(field, value, persistent=field not in source._non_persistent_buffers_set)
        else:
            setattr(copy, field, value)
        if isinstance(value, nn.Module):
            if target in walked:  # it replaces an empty module made on the way: what was made under that goes
                for key in [k for k in walked if k.startswith(f"{target}.")]:
                    del walked[key]
            walked[target] = (value, value)


def _walk(walked: dict[str, tuple[Any, Any]], path: str) -> tuple[Any, Any]:
    """(the object at ``path`` in root, its counterpart in gm), creating empty modules in gm as torch.fx does."""
    parent, _, item = path.rpartition(".")
    source, copy = walked.get(parent) or _walk(walked, parent)
    if copy is source:
        pair = (source, source)  # inside a module already copied whole
    else:
        child = getattr(source, item)
        existing = getattr(copy, item, None)
        if existing is None:
            existing = nn.Module()
            setattr(copy, item, existing)
        pair = (child, existing)
    walked[path] = pair
    return pair


_METADATA = frozenset({"dtype", "device", "shape", "ndim", "is_cuda", "is_meta", "requires_grad", "layout"})
"""Tensor attributes that read no values: ``weight.dtype`` does not use the weight."""


def reads_metadata(node: torch.fx.Node) -> bool:
    """Whether ``node`` reads a tensor's dtype, device or sizes (``x.dtype``, ``x.size()``), none of its values.

    Examples
    --------
    >>> from torch import fx
    >>> g = fx.symbolic_trace(lambda x: x.new_zeros(x.size(0), dtype=x.dtype) + x.sum())
    >>> [n.name for n in g.graph.nodes if reads_metadata(n)]
    ['size', 'getattr_1']
    """
    if node.op == "call_function":
        return node.target is getattr and len(node.args) > 1 and node.args[1] in _METADATA
    return node.op == "call_method" and node.target in ("size", "dim", "numel", "get_device")
