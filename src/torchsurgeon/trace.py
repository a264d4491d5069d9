"""Symbolic tracing: an ``nn.Module`` becomes a ``torch.fx.GraphModule``.

The tracer treats ``torch.nn`` modules as leaves (as torch.fx does) plus any
module the caller names, and picks up the leaf modules and functions that
timm and torchvision register for torch.fx when those libraries are already
imported.  When tracing fails inside a submodule, that submodule (and every
other instance of its class) is made a leaf and tracing is retried (a
bounded number of times); such submodules are *opaque*: they are analysed by
running them on the ``meta`` device (or, when their Python code looks at
tensor values, on small zero tensors on the CPU, see
:func:`torchsurgeon.copies.run_on_zeros`), and the report says why.  When nothing works, the error is a
:class:`~torchsurgeon.errors.TraceError` naming the module, the source line
and the fix.

``forward`` arguments that receive no tensor are traced with their default
value (``mask=None``, ``return_features=False``; ``**kwargs`` holding only the
inputs given to it), which is what calling ``model(x)`` does.  Tracing never changes the model.

Threads: while torch.fx traces it replaces ``nn.Module.__call__`` and
``nn.Module.__getattr__`` for the whole process.  :func:`trace` therefore
runs one fx trace at a time (a module-level lock), and the tracer hands
calls and attribute reads from any other thread straight to the real
``nn.Module`` methods, so another thread's forward runs as if nothing were
patched.  What stays process-wide is listed in docs/threads.md.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import math
import operator
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

import torch
import torch.fx
from torch import nn

from .arguments import (
    INPUT_PATH,
    NO_CACHE,
    ExampleInputs,
    InputNames,
    InputPaths,
    forward_parameters,
    fx_name,
    input_paths,
    into_var_keyword,
    keyword_inputs,
    simple_value,
    specialisation,
    trace_options,
    without_caches,
)
from .callers import asserted_by_caller
from .copies import MODEL_LOCK, detached_copy, meta_like
from .errors import InputError, TraceError, failure_reason, with_numbers
from .frontend import PACKED_SEQUENCES, ShapeProxy, call_by_name, library_answers
from .fxbookkeeping import FastScope, ModuleStack, lazy_graph_module, record_autocast
from .metavalues import MetaValues, meta_question
from .modelindex import ModelIndex, model_index
from .ownhooks import OwnHooks
from .rules.on_meta import ruled_leaf
from .rules.registry import FALLBACK, builtin_leaf_functions, builtin_leaves, user_ruled
from .sideeffects import quiet
from .traceerrors import UNREGISTERED, trace_error, unregistered
from .wrappers import instance_forward, patched_forward, unwrap_model

__all__ = (
    "Traced",
    "registered_leaves",
    "trace",
    "unwrap_model",
)

_MAX_ATTEMPTS = 32
_RECURSION_LIMIT = 20_000


@dataclass(frozen=True)
class Traced:
    """A traced model: the fx ``GraphModule`` and how it was obtained.

    Attributes
    ----------
    model : nn.Module
        The user's model, untouched.
    graph_module : torch.fx.GraphModule
        The traced graph; its submodules are the model's own (shared, not copied).
    opaque : Mapping[str, str]
        Submodules made leaves automatically because tracing failed inside
        them (or inside another instance of their class), with the reason.
    leaf_modules : tuple[str, ...]
        Qualified names of every non-``torch.nn`` submodule treated as a leaf.
    specialised : Mapping[str, Any]
        ``forward`` arguments traced with a fixed value (their default),
        because no tensor is given for them.
    shape_specific : tuple[str, ...]
        Python questions about shapes answered for the example inputs
        (``bool(...)``, ``len(...)``): the graph holds for inputs of those
        shapes only.  Empty when the graph holds for any input.
    input_ranks : Mapping[str, int]
        Inputs whose shape ``forward`` unpacks (``batch, length = ids.shape``):
        the graph holds for inputs of this rank only.
    index : ModelIndex or None
        The model's modules, parameters and buffers, from the walk the
        trace made (``None``: :func:`torchsurgeon.graph.build_graph` walks).
    """

    model: nn.Module
    graph_module: torch.fx.GraphModule
    opaque: Mapping[str, str] = field(default_factory=dict)
    leaf_modules: tuple[str, ...] = ()
    specialised: Mapping[str, Any] = field(default_factory=dict)
    shape_specific: tuple[str, ...] = ()
    index: ModelIndex | None = None
    input_ranks: Mapping[str, int] = field(default_factory=dict)


_PLAIN_ARGUMENTS = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device})


class _SurgeonTracer(torch.fx.Tracer):
    """fx Tracer with configurable leaves that remembers where tracing failed.

    It also replaces the proxies of ``forward`` arguments that get no tensor
    by their fixed values (``specialise``), without fx's assertion nodes.
    Module calls and attribute reads made by any thread other than the one
    that created the tracer pass straight through: torch.fx's patches are
    process-wide, its trace is not.
    """

    def __init__(
        self,
        leaf_names: frozenset[str],
        leaf_types: tuple[type[nn.Module], ...],
        autowrap_modules: tuple[ModuleType, ...],
        autowrap_functions: tuple[Callable[..., Any], ...],
        specialise: Mapping[str, Any],
        own_hooks: OwnHooks | None = None,
        example: Mapping[str, torch.Tensor] | None = None,
        defaults: frozenset[str] = frozenset(),
        index: ModelIndex | None = None,
        parts: InputPaths | None = None,
        keywords: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            autowrap_modules=autowrap_modules,  # type: ignore[arg-type]
            autowrap_functions=autowrap_functions,
        )
        # fx wraps every public callable of these modules, classes too: torchvision.ops' layer classes
        # (Conv2dNormActivation) were functions in every thread while the trace ran (isinstance raised, torch.save of
        # another torchvision model failed); a class called in a forward makes a module, not a graph node
        classes = {id(v) for m in autowrap_modules for v in vars(m).values() if isinstance(v, type)}
        self._autowrap_function_ids -= classes - {id(f) for f in autowrap_functions}
        self._autowrap_search.append(nn.utils.rnn)  # nn.utils.rnn.pack_padded_sequence(...): PACKED_SEQUENCES too
        self._leaf_names = leaf_names
        self._leaf_types = leaf_types
        self._specialise = specialise
        self._defaults = defaults  # specialised to their default: a decorated forward gets them from its wrapper
        self._parts: dict[str, list[tuple[str, tuple[str, str | int]]]] = {}  # argument name -> its inputs
        for name, (argument, key) in (parts or {}).items():
            self._parts.setdefault(argument, []).append((name, (argument, key)))
        self._keywords = keywords  # inputs forward takes through its **kwargs (kwargs.get("mask")): given there
        self._stack: list[str] = []
        self.failures: list[tuple[BaseException, list[str]]] = []
        self.dropped: list[torch.fx.Node] = []
        self._thread = threading.get_ident()  # the thread that traces; create the tracer there
        self.proxy_buffer_attributes = True  # buffers sliced by traced sizes (position_ids[:, :n]) stay in the graph
        self._own_hooks = own_hooks
        self._evaluating = False  # running a leaf on meta to answer a question about shapes
        self._meta_copies: dict[int, nn.Module] = {}
        self._names: dict[Any, str] = {}  # fx's name for a node of each target (create_node)
        self._tensor_names: tuple[dict[int, str], dict[int, str]] | None = None  # parameters, buffers: id -> name
        self._index = index  # the model walk trace() made (None: walked on the first attribute read)
        self.meta_values: MetaValues | None = None
        self._example = example
        self.scope, self.module_stack = FastScope("", None), ModuleStack()  # fx copies them for every call and node

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        return ShapeProxy(node, self)

    def create_arg(self, a: Any) -> Any:
        # the common arguments first, as fx would record them (fx asks each about parameters, tensors,
        # modules, named tuples and opaque types before it gets to proxies and plain values)
        kind = type(a)
        if kind in _PLAIN_ARGUMENTS:
            return a
        if isinstance(a, torch.fx.Proxy):
            return a.node
        if kind is tuple or kind is list:
            return kind(self.create_arg(item) for item in a)
        if kind is dict and all(type(k) is str for k in a):  # keyword arguments (mostly none)
            return {k: self.create_arg(v) for k, v in a.items()}
        if kind is slice:
            return slice(self.create_arg(a.start), self.create_arg(a.stop), self.create_arg(a.step))
        if kind.__module__ == "numpy" and hasattr(a, "tolist"):  # np.ceil(h / 7) of a known size: its value
            a = a.tolist()
        return super().create_arg(a)

    def create_node(
        self,
        kind: str,
        target: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None = None,
        type_expr: Any | None = None,
    ) -> torch.fx.Node:
        # Graph.create_node walks every argument with pytree to warn about raw SymInts, never in a symbolic trace
        # (4 of SwinUNETR's 68 ms): made empty, then given them as any graph edit does, which records the uses
        if name is None:  # fx's name for the target (snake case, found by regular expressions), once per target
            try:
                name = self._names.get(target)
                if name is None:
                    name = self._names[target] = self.graph._target_to_str(target)
            except TypeError:  # an unhashable target: fx names it
                pass
        if not (args or kwargs) or self.check_mutable_operations:
            node = super().create_node(kind, target, args, kwargs, name, type_expr)
        else:
            node = super().create_node(kind, target, (), {}, name, type_expr)
            # the properties' own setters record the uses; Node.__setattr__ would also take the node out of the
            # graph's lookup table by (op, target) and put it back, for an edit of neither
            object.__setattr__(node, "args", args)
            if kwargs:
                object.__setattr__(node, "kwargs", kwargs)
        record_autocast(node)  # made inside the model's torch.autocast block: propagation runs it there too
        return node

    def to_bool(self, obj: torch.fx.Proxy) -> bool:
        try:
            return bool(meta_question(self.meta_values, obj, "bool", lambda: super(_SurgeonTracer, self).to_bool(obj)))
        except Exception:
            if self.meta_values is None or not asserted_by_caller():
                raise
            # an assert on data (XLM: assert lengths.max().item() <= slen) checks a value and decides no shape: the
            # trace goes on as a forward it passes; the cross-check's real forward checks it where it can
            self.meta_values.resolved.append(f"assert({obj.node.format_node()})")
            return True

    def iter(self, obj: torch.fx.Proxy) -> Iterator[Any]:
        return iter(meta_question(self.meta_values, obj, "iter", lambda: super(_SurgeonTracer, self).iter(obj)))

    def keys(self, obj: torch.fx.Proxy) -> Any:
        return meta_question(self.meta_values, obj, "keys", lambda: super(_SurgeonTracer, self).keys(obj))

    def _leaf_on_meta(self, m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A leaf's output on meta arguments: from its rule (past a mismatch, as propagation goes on: the report
        names the layer and its fix), else by running a hook-free copy on meta."""
        out = ruled_leaf(m, args, kwargs, past_cautions=True, resized=True)  # a batch too small is the report's note
        if out is not FALLBACK:
            return out
        copy_ = self._meta_copies.get(id(m))
        if copy_ is None:
            copy_ = self._meta_copies.setdefault(id(m), detached_copy(m, meta_like))
        return copy_(*args, **kwargs)

    @contextlib.contextmanager
    def _untraced(self) -> Iterator[None]:
        """fx's patches pass through: attribute reads are real, module calls run their forward."""
        before, self._evaluating = self._evaluating, True
        try:
            yield
        finally:
            self._evaluating = before

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_names or user_ruled(type(m)):  # a rule of the user's describes it
            return True
        if patched_forward(m):  # its own forward, not its class's: traced, as model.fc(x) runs it
            return False
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if self._evaluating or threading.get_ident() != self._thread:
            return forward(*args, **kwargs)  # another thread's real forward: nn.Module.__call__, hooks included
        # torch.compile(model.layer4): fx refuses it (a ScriptModule's _modules has no .get: the class is checked first)
        inner = m._modules.get("_orig_mod") if type(m).__name__ == "OptimizedModule" else None
        if inner is not None:
            return inner(*args, **kwargs)  # traced as the module it compiles (its rows named layer4._orig_mod...)
        if isinstance(m, nn.Identity) and type(m).forward is nn.Identity.forward:  # scripted: no .forward
            given = [*args, *kwargs.values()]
            if len(given) == 1 and not isinstance(given[0], torch.fx.Proxy):
                return given[0]  # not a proxy, as a real forward: Perceiver's None, BEiT's fpn given a tuple
        try:
            path = self.path_of_module(m)
        except NameError as exc:  # a module from a global table (transformers' ACT2FN[...]): not the model's
            if not self._holds_weights_of(m):
                setattr(exc, UNREGISTERED, unregistered(self.root, m))  # heads kept in a plain dict
                raise
            # weightless: traced through, its ops recorded as functions; a container made in forward of the model's
            # own layers (a slice of an nn.Sequential, dpn's self.features[1:4]): its layers are recorded by name
            return m.forward(*args, **kwargs)
        self._stack.append(path)
        own = self._own_hooks

        def without_hooks(*a: Any, **k: Any) -> Any:  # hooks that only look must never see our proxies
            return quiet(m).forward(*a, **k)  # its self.log(...) skipped (sideeffects)

        try:
            if own is not None and (m._forward_hooks or m._forward_pre_hooks) and own.installed(m):

                def traced(*a: Any, **k: Any) -> Any:  # a leaf becomes one node, any other module is traced through
                    return super(_SurgeonTracer, self).call_module(m, without_hooks, a, k)

                return own.call(m, args, kwargs, traced)  # hooks the model installed on itself run as in a forward
            return super().call_module(m, without_hooks, args, kwargs)
        except Exception as exc:
            if not any(seen is exc for seen, _ in self.failures):
                self.failures.append((exc, list(self._stack)))  # innermost module first
            raise
        finally:
            self._stack.pop()

    def _holds_weights_of(self, m: nn.Module) -> bool:
        """Whether every parameter and buffer of ``m`` (none, for a weightless module) is one of the model's."""
        weights = {id(t) for t in itertools.chain(m.parameters(), m.buffers())}
        if not weights:
            return True
        walk = self._index or model_index(self.root)
        return weights <= {id(t) for t in itertools.chain(walk.params.values(), walk.buffers.values())}

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if self._evaluating or threading.get_ident() != self._thread:
            return attr_val  # another thread reads the real parameter, not a proxy of our graph
        if not isinstance(attr_val, torch.Tensor):
            return attr_val
        # fx's own getattr finds the name by walking every parameter of the root on each read (quadratic in
        # models that pass self.weight to F.conv2d); the names are looked up by identity instead, same answers
        if self._tensor_names is None:  # first names first, as named_parameters/named_buffers give them
            walk = self._index or model_index(self.root)
            self._tensor_names = ({}, {})
            for table, names in zip((walk.params, walk.buffers), self._tensor_names):
                for n, t in table.items():
                    names.setdefault(id(t), n)
        params, buffers = self._tensor_names
        name = params.get(id(attr_val)) if isinstance(attr_val, nn.Parameter) else None
        if name is None and self.proxy_buffer_attributes:
            name = buffers.get(id(attr_val))
        if name is None:
            return super().getattr(attr, attr_val, parameter_proxy_cache)  # created during the trace: fx's search
        if name not in parameter_proxy_cache:
            parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
        return parameter_proxy_cache[name]

    def failed_in(self, exc: BaseException) -> list[str]:
        """The module stack (outermost first) where ``exc`` or its cause was raised."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            for recorded, stack in self.failures:
                if recorded is current:
                    return stack
            current = current.__cause__ or current.__context__
        return []

    def create_args_for_root(
        self,
        root_fn: Callable[..., Any],
        is_module: bool,
        concrete_args: Any = None,
    ) -> tuple[Any, list[Any]]:
        root_fn = instance_forward(self.root, root_fn) if is_module else root_fn
        inner = inspect.unwrap(root_fn)
        fn, args = super().create_args_for_root(inner, is_module, concrete_args)
        made = {f"{k}_{i}" for k in concrete_args or () for i in range(1, len(concrete_args or ()) + 1)}
        for node in self.graph.nodes if made else ():  # fx's own input for each (lengths_1), unused once fixed
            if (
                node.op == "placeholder"
                and node.target in made
                and node.target not in inspect.signature(inner).parameters
            ):
                self.dropped.append(node)
        if self._example is not None:
            self.meta_values = MetaValues(self.root, self._example, self._leaf_on_meta, self._untraced, self._index)
        if type(self.graph._codegen).__name__ != "CodeGen":
            return fn, args
        code = inner.__code__
        total = code.co_argcount + code.co_kwonlyargcount
        names = list(code.co_varnames[:total])
        extra = iter(code.co_varnames[total:])
        if code.co_flags & inspect.CO_VARARGS:
            names.append("*" + next(extra))
        if code.co_flags & inspect.CO_VARKEYWORDS:
            names.append("**" + next(extra))
        if not is_module:
            args = [None, *args]
        for i, name in enumerate(names):
            if i < len(args) and name.startswith("**") and self._keywords and isinstance(args[i], torch.fx.Proxy):
                self.dropped.append(args[i].node)
                with self.graph.inserting_before(args[i].node):
                    given = {k: self._made_input(k) for k in self._keywords}
                args[i] = {**self._specialise.get(name, {}), **given}
            elif i < len(args) and name in self._specialise and isinstance(args[i], torch.fx.Proxy):
                self.dropped.append(args[i].node)
                args[i] = self._specialise[name]
            elif i < len(args) and name.removeprefix("*") in self._parts and isinstance(args[i], torch.fx.Proxy):
                args[i] = self._split_input(args[i], name)
        if inner is not root_fn and is_module:  # a decorated forward: call the wrapper, binding by name
            fn = call_by_name(root_fn, names[1:], self._defaults) or fn
        if is_module:  # forward's self.log(...) skipped (sideeffects)
            fn = functools.partial(lambda f, root, *a, **k: f(quiet(root), *a, **k), fn)
        return _without_caches(self._with_root_hooks(fn, is_module)), args if is_module else args[1:]

    def _split_input(self, given: torch.fx.Proxy, name: str) -> Any:
        """An argument given a dict or a list of tensors, or ``*args`` given several, as one input per tensor, in its
        place."""
        self.dropped.append(given.node)
        with self.graph.inserting_before(given.node):
            return self._made_input(name)

    def _made_input(self, name: str) -> Any:
        """The placeholder of input ``name``, or of each tensor of the argument ``name`` given a dict or a list (or of
        each entry of ``*args``: fx names it ``*args``), at the graph's insertion point."""
        parts = self._parts.get(name.removeprefix("*"))
        if parts is None:
            return self.create_proxy("placeholder", name, (), {})
        made: dict[str | int, Any] = {}
        for input_name, path in parts:
            made[path[1]] = self.create_proxy("placeholder", input_name, (), {})
            made[path[1]].node.meta[INPUT_PATH] = path
        if all(isinstance(k, int) for k in made):  # *args' entries, or a list's, in order (input_paths)
            return tuple(made.values()) if name.startswith("*") else list(made.values())
        return made

    def _with_root_hooks(self, fn: Callable[..., Any], is_module: bool) -> Callable[..., Any]:
        """``fn(root, *args)`` with the root's forward hooks that run in the analysis (fx calls ``forward`` itself,
        not the module: a pre-hook making grey images RGB would be skipped)."""
        own = self._own_hooks
        if not is_module or own is None or not own.installed(self.root):
            return fn

        def hooked(root: nn.Module, *args: Any) -> Any:
            return own.call(root, args, {}, lambda *a, **k: fn(root, *a, **k))

        return hooked


def _without_caches(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` returning its output without the transformers caches in it, the graph's output
    (:func:`~torchsurgeon.arguments.without_caches`), after the root's own hooks saw the real one."""

    @functools.wraps(fn)
    def returning(*args: Any) -> Any:
        return without_caches(fn(*args))

    return returning


def registered_leaves() -> tuple[tuple[type[nn.Module], ...], tuple[Callable[..., Any], ...], tuple[ModuleType, ...]]:
    """Leaf module classes, functions and modules that timm and torchvision register for torch.fx.

    Only libraries the program has already imported are consulted (nothing
    is imported here): timm's ``register_notrace_module`` /
    ``register_notrace_function`` registries, ``torchvision.ops``, whose
    functions torchvision's feature extraction wraps as single calls, and
    einops' ``rearrange``/``repeat``/``reduce`` and its ``Rearrange``/``Reduce``
    layers (they read shapes in Python), and the layers and calls built-in rules keep whole.

    Returns
    -------
    tuple
        ``(leaf module classes, functions to wrap, modules whose functions to wrap)``.

    Examples
    --------
    >>> types, functions, modules = registered_leaves()
    >>> all(isinstance(t, type) for t in types), all(callable(f) for f in functions)
    (True, True)
    """
    types: list[type[nn.Module]] = []
    functions: list[Callable[..., Any]] = []
    modules: list[ModuleType] = []
    timm_fx = sys.modules.get("timm.layers._fx")
    if timm_fx is not None:
        for leaf in getattr(timm_fx, "_leaf_modules", ()):
            if isinstance(leaf, type) and issubclass(leaf, nn.Module):
                types.append(leaf)
        for fn in getattr(timm_fx, "_autowrap_functions", ()):
            if callable(fn) and hasattr(fn, "__code__"):
                functions.append(fn)
    einops = sys.modules.get("einops")
    if einops is not None:  # rearrange(x, "b c h w -> b h w c") reads x.shape in Python: one call, run on meta
        functions += [getattr(einops, n) for n in ("rearrange", "repeat", "reduce") if hasattr(einops, n)]
    einops_layers = sys.modules.get("einops.layers.torch")
    if einops_layers is not None:  # their forward looks up a recipe by input.ndim, a dict key fx cannot trace
        types += [getattr(einops_layers, n) for n in ("Rearrange", "Reduce") if hasattr(einops_layers, n)]
    types += builtin_leaves()
    functions += builtin_leaf_functions()
    modules += [ops] if (ops := sys.modules.get("torchvision.ops")) is not None else []
    order = operator.attrgetter("__module__", "__qualname__")
    return tuple(sorted(set(types), key=order)), tuple(sorted(set(functions), key=order)), tuple(modules)


def _tidy(graph: torch.fx.Graph, dropped: Iterable[torch.fx.Node]) -> None:
    """Erase placeholders replaced by fixed values; split ``*args`` into one input per index."""
    for node in dropped:
        if node.graph is graph and not node.users:
            graph.erase_node(node)
    for node in list(graph.nodes):
        target = str(node.target)
        if node.op != "placeholder" or not target.startswith("*") or target.startswith("**"):
            continue
        users = list(node.users)
        if not users:
            graph.erase_node(node)
            continue
        if not all(
            u.op == "call_function"
            and u.target is operator.getitem
            and isinstance(u.args[1], int)
            and not isinstance(u.args[1], bool)
            and u.args[1] >= 0
            for u in users
        ):
            continue
        count = max(int(u.args[1]) for u in users) + 1  # type: ignore[call-overload]
        with graph.inserting_before(node):
            split = [graph.placeholder(f"{target[1:]}_{i}") for i in range(count)]
        for u in users:
            u.replace_all_uses_with(split[int(u.args[1])])  # type: ignore[call-overload]
            graph.erase_node(u)
        graph.erase_node(node)


def trace(
    model: nn.Module,
    *,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    concrete_args: Mapping[str, Any] | None = None,
    autowrap_functions: Iterable[Callable[..., Any]] = (),
    auto_leaf: bool = True,
    inputs: InputNames = None,
    example_inputs: Mapping[str, torch.Tensor] | None = None,
) -> Traced:
    """Symbolically trace ``model`` with torch.fx.

    Parameters
    ----------
    model : nn.Module
        The model (a ``torch.compile`` wrapper is unwrapped); it is not modified.
    leaf_modules : iterable of str or type
        Qualified submodule names (``"layer1.0"``) or module classes to keep
        as single nodes instead of tracing through them.  timm's and
        torchvision's registered leaves are added when those libraries are
        imported (see :func:`registered_leaves`).
    concrete_args : mapping, optional
        Values for ``forward`` arguments that control Python flow
        (``{"return_loss": False}``), passed to torch.fx.
    autowrap_functions : iterable of callables
        Functions to record as single calls (for example helpers with Python
        control flow on shapes).
    auto_leaf : bool
        When tracing fails inside a submodule, make it (and the other
        instances of its class) a leaf and retry, at most 32 times.  Such
        submodules are reported as opaque.
    inputs : int or iterable of str, optional
        The ``forward`` arguments that will receive tensors: their names, or
        the number of leading positional arguments (default 1; past them,
        one input per entry of ``*args``).  A ``(name, key)`` pair makes the
        argument ``name`` a dict with one input per key
        (:func:`~torchsurgeon.arguments.input_paths`).  The other
        arguments are traced with their default value (``None``, a bool, a
        number or a string), ``*args`` empty; an input that is no argument
        of ``forward`` is given to its ``**kwargs``, as ``model(x, mask=m)`` gives it.
    example_inputs : mapping of str to Tensor, optional
        Example inputs by argument name (``meta`` tensors are enough).  With
        them, Python on shapes in ``forward`` (``if h % 8``, ``len(x.shape)``,
        loops over a shape) is answered for these shapes, and
        ``Traced.shape_specific`` lists what was answered; without them such
        code makes its module opaque.

    Returns
    -------
    Traced
        The GraphModule, the opaque submodules and the specialised arguments.

    Raises
    ------
    InputError
        If ``model`` is not an ``nn.Module`` or a leaf name is not a submodule.
    TraceError
        If tracing fails at the top level of ``forward`` or keeps failing;
        the message names the module, the source line and the fix.

    Notes
    -----
    Safe to call from several threads.  torch.fx replaces
    ``nn.Module.__call__`` and ``nn.Module.__getattr__`` for the whole
    process while it traces, so the fx traces of concurrent calls run one
    at a time (the rest of the analysis runs in parallel), and modules
    that other threads call meanwhile run their real ``forward``.  A raw
    ``torch.fx`` trace of your own at the same moment is not covered: see
    docs/threads.md.

    Examples
    --------
    >>> from torch import nn
    >>> t = trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    >>> [n.op for n in t.graph_module.graph.nodes]
    ['placeholder', 'call_module', 'call_module', 'output']
    """
    model = unwrap_model(model)
    submodules = dict(model.named_modules(remove_duplicate=False))
    names, types, wrapped = trace_options(model, submodules, leaf_modules, autowrap_functions, concrete_args, inputs)
    reg_types, reg_functions, reg_modules = registered_leaves()
    leaf_types = tuple(types) + reg_types
    functions = tuple(dict.fromkeys((*wrapped, *reg_functions, *PACKED_SEQUENCES)))
    params = forward_parameters(model)
    given = into_var_keyword(dict(concrete_args or {}), params)
    known = {fx_name(p) for p in params}
    unknown = sorted(set(given) - known - {p.name for p in params})
    if params and unknown:
        raise InputError(
            f"concrete_args names {unknown}, which are not arguments of {type(model).__name__}.forward — "
            f"its arguments are {[p.name for p in params]}"
        )
    # no fx assertion nodes; the mapping **kwargs receives is handed to forward as it is
    simple = {k: v for k, v in given.items() if simple_value(v) or k.startswith("**")}
    concrete_args = {k: v for k, v in given.items() if k not in simple}
    by_default = specialisation(model, inputs, given)
    parts = input_paths(model, inputs)  # a dict's tensors and *args' entries: one input each
    keywords = keyword_inputs(params, inputs)  # given to **kwargs: forward reads them there (kwargs.get("mask"))
    specialise = {**by_default, **simple}
    defaults = frozenset(k for k in by_default if k not in NO_CACHE and not (k.startswith("**") and by_default[k]))

    fixed = {k: v for k, v in specialise.items() if not k.startswith("*")}
    if torch.fx.Tracer().is_leaf_module(model, "") or isinstance(model, leaf_types):
        # the model is itself a layer (nn.LSTM, nn.Conv2d, a parametrized layer): one node, like inside a model
        return Traced(model, _whole_model(model, params, specialise, concrete_args), {}, (), fixed)

    opaque = _scripted(submodules)  # compiled: fx would record its C++ forward as a method of a constant
    names |= opaque.keys()
    # one fx trace at a time (copies.MODEL_LOCK): each restores the recursion limit it found, and records what the
    # model holds when no other trace has changed it; a random factory of constant sizes runs for real in a trace
    # (torch.rand(1)), from the CPU generator: the user's stream is put back as found
    with MODEL_LOCK, torch.random.fork_rng(devices=()):
        own_hooks = OwnHooks(model, {id(m): m for m in submodules.values()}.values())
        index = model_index(model, submodules)  # before the forward's own additions, undone after the trace
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, _RECURSION_LIMIT))
        try:
            for _attempt in range(_MAX_ATTEMPTS + 1):
                tracer = _SurgeonTracer(
                    frozenset(names),
                    leaf_types,
                    (math, *reg_modules),
                    functions,
                    specialise,
                    own_hooks,
                    example_inputs,
                    defaults,
                    index,
                    parts,
                    keywords,
                )
                try:
                    with library_answers(lambda t=tracer: t.meta_values):  # type: ignore[misc]
                        graph = tracer.trace(model, concrete_args=concrete_args or None)
                except RecursionError as exc:
                    raise TraceError(
                        f"{type(model).__name__}: modules nest deeper than Python's recursion limit allows for tracing "
                        f"({sys.getrecursionlimit():,} frames) — raise it first, e.g. sys.setrecursionlimit(100_000)"
                    ) from exc
                except Exception as exc:
                    ids = _ids_given_as_floats(exc, example_inputs)
                    if ids and _attempt < _MAX_ATTEMPTS:  # token ids named otherwise (Perceiver's inputs): as ids
                        example_inputs = cast(ExampleInputs, example_inputs).as_ids(ids)
                        own_hooks.restore()
                        continue
                    stack = tracer.failed_in(exc)
                    culprit = next((p for p in reversed(stack) if p and p not in names), "")
                    if auto_leaf and culprit and _attempt < _MAX_ATTEMPTS:
                        numbers = tracer.meta_values.numbers() if tracer.meta_values is not None else {}
                        _make_opaque(submodules, culprit, with_numbers(failure_reason(exc), numbers), names, opaque)
                        own_hooks.restore()  # what the failed attempt stored in the model (CTRL: a buffer) is a proxy
                        continue
                    raise trace_error(model, culprit, stack, exc, given, opaque) from exc
                _tidy(graph, tracer.dropped)
                graph.lint()
                # a buffer or plain tensor attribute the forward set to a traced value (CTRL's positions, MONAI's
                # AffineHead grid = grid.to(x.device)) is copied as the model held it when the trace began
                held = {name: value for value, name in tracer.tensor_attrs.items()}
                originals = lambda t, held=held: index.buffers.get(t, index.params.get(t, held.get(t)))  # noqa: E731
                graph_module = lazy_graph_module(tracer.root, graph, type(model).__name__, originals)
                break
        finally:
            sys.setrecursionlimit(limit)
            own_hooks.restore()  # hooks and attributes the model's forward added to itself
    torch_nn = {q for q, m in submodules.items() if type(m).__module__.startswith("torch.nn")}
    leaves = sorted({str(n.target) for n in graph.nodes if n.op == "call_module"} - torch_nn)
    resolved = tuple(tracer.meta_values.resolved) if tracer.meta_values is not None else ()
    ranks = dict(tracer.meta_values.ranks) if tracer.meta_values is not None else {}
    return Traced(model, graph_module, opaque, tuple(leaves), fixed, resolved, index, ranks)


_FLOAT_INDICES = re.compile(r"'indices' to have one of the following scalar types: Long, Int; but got torch\.\w*float")


def _ids_given_as_floats(exc: BaseException, example: Mapping[str, torch.Tensor] | None) -> str:
    """The model input that an embedding got as floats in a trace (``exc``: torch's error), when it is the one input
    given by shape whose dtype its name said (:func:`~torchsurgeon.inputdtypes.input_dtype_for`: floats unless named
    ``*_ids``): an embedding reading it says it holds token ids.  ``""`` otherwise."""
    if not isinstance(example, ExampleInputs) or not _FLOAT_INDICES.search(str(exc)):
        return ""
    floats = [name for name in example.by_name if example[name].is_floating_point()]
    return floats[0] if len(floats) == 1 else ""


def _whole_model(
    model: nn.Module, params: list[inspect.Parameter], specialise: Mapping[str, Any], constants: Mapping[str, Any]
) -> torch.fx.GraphModule:
    """A graph calling ``model`` as a single leaf node (target ``""``)."""
    graph = torch.fx.Graph()
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in params:
        name = fx_name(p)
        if name in specialise or name in constants:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                kwargs[p.name] = specialise[name] if name in specialise else constants[name]
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = p.default if p.default is not p.empty else inspect.Signature.empty
        node = graph.placeholder(p.name, default_value=default)
        if kwargs or p.kind == p.KEYWORD_ONLY:
            kwargs[p.name] = node
        else:
            args.append(node)
    graph.output(graph.call_module("", tuple(args), kwargs))
    return torch.fx.GraphModule({"": model}, graph, type(model).__name__)


def _scripted(submodules: Mapping[str, nn.Module]) -> dict[str, str]:
    """The outermost ``torch.jit`` modules (``torch.jit.script(block)``) among ``submodules``, with the reason they are
    leaves: TorchScript runs compiled code that torch.fx cannot trace inside."""
    found: dict[str, str] = {}
    for name, module in submodules.items():
        if name and isinstance(module, torch.jit.ScriptModule) and not any(name.startswith(f"{n}.") for n in found):
            found[name] = (
                f"a torch.jit {type(module).__name__}: compiled TorchScript, which torch.fx cannot trace inside"
            )
    return found


def _make_opaque(
    submodules: Mapping[str, nn.Module], culprit: str, reason: str, names: set[str], opaque: dict[str, str]
) -> None:
    """Make ``culprit`` and the other instances of its class leaves (outermost instances only)."""
    cls = type(submodules[culprit])
    names.add(culprit)
    opaque[culprit] = reason
    for name, module in submodules.items():
        if not name or name in names or type(module) is not cls:
            continue
        if any(name.startswith(f"{outer}.") for outer in names):
            continue  # inside a module that is already a leaf
        names.add(name)
        opaque[name] = f"{reason} (as {culprit}, same class {cls.__name__})"
