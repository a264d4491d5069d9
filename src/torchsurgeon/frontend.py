"""What torch.fx needs beyond its defaults to trace library models as their users call them.

Three pieces (the second in its own module), each used by :mod:`torchsurgeon.trace`'s tracer:

* **Wrapped forwards.**  transformers 5 wraps ``forward`` in decorators
  taking ``(*args, **kwargs)``; fx reads the inner signature but calls the
  wrapper positionally, so values land in the wrong slots.
  :func:`call_by_name` calls the wrapper with keywords instead.
* **The model's own hooks** (:mod:`torchsurgeon.ownhooks`).  transformers
  collects hidden states with forward hooks the model installs on itself
  during its first forward: they run (never the user's), and the model is
  left exactly as it was found.
* **Shape-aware proxies.**  Python on shapes (``if h % stride``,
  ``len(x.shape)``, ``for d in x.shape``) is resolved for the input given,
  as transformers' former ``HFTracer`` did, but lazily: a node's value on
  ``meta`` is computed only when Python asks a question fx cannot answer
  (:class:`MetaValues`).  A question about tensor *values* still fails, so
  the smallest module holding it becomes an opaque leaf.

torch.fx's bookkeeping without its generic copies is in :mod:`torchsurgeon.fxbookkeeping`.

See docs/frontend.md for the measurements behind these choices.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.fx
from torch import nn

from .callers import unpacked_count
from .copies import SHAPE_EDITS, container_edit, edits_in_place, meta_like, thawed
from .fxbookkeeping import node_scope
from .knowndata import (
    DATA_FACTORIES,
    DATA_LIMIT,
    data_and_meta,
    edits_values,
    from_known_data,
    masks_as_indices,
    off_meta,
    on_one_device,
    settled,
    unsettled,
)
from .modelindex import ModelIndex
from .resize import as_folded_inputs, hands_on_channels
from .rules import FALLBACK
from .rules.on_meta import ruled_call, ruled_meta

__all__ = (
    "MetaValues",
    "ShapeProxy",
    "bind_inputs",
    "call_by_name",
    "library_answers",
    "meta_question",
)


def bind_inputs(model: nn.Module, values: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Inputs by argument name as ``model(*args, **kwargs)``: positional as far as ``forward`` allows, then by name.

    Examples
    --------
    >>> from torch import nn
    >>> bind_inputs(nn.Bilinear(2, 2, 1), {"input2": 2, "input1": 1})
    ([1, 2], {})
    >>> bind_inputs(nn.Bilinear(2, 2, 1), {"input2": 2})
    ([], {'input2': 2})
    """
    rest = dict(values)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = True
    for p in inspect.signature(model.forward).parameters.values():
        if p.name not in rest:
            positional = False
            continue
        if positional and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL):
            args.append(rest.pop(p.name))
        else:
            kwargs[p.name] = rest.pop(p.name)
    kwargs.update(rest)
    return args, kwargs


def call_by_name(
    wrapper: Callable[..., Any], names: Sequence[str], defaults: Collection[str] = ()
) -> Callable[..., Any] | None:
    """A function taking fx's flat arguments that calls ``wrapper`` binding them by name.

    Parameters
    ----------
    wrapper : callable
        The decorated ``forward`` (``functools.wraps`` around the real one).
    names : sequence of str
        fx's argument names of the inner function after ``self``:
        ``"input_ids"``, ``"*args"``, ``"**kwargs"``.
    defaults : collection of str
        Arguments whose value is only their default: they are not passed,
        so the wrapper fills them as it does in ``model(x)`` (transformers'
        decorators take them from the model's config).

    Returns
    -------
    callable or None
        ``f(self, *values)``; None when the values cannot be bound by name
        (``*args`` receiving tensors and a positional argument after it).

    Examples
    --------
    >>> import functools
    >>> def forward(self, a, b=2, **kwargs):
    ...     return a, b, kwargs
    >>> @functools.wraps(forward)
    ... def wrapper(self, *args, **kwargs):
    ...     return forward(self, *args, **kwargs)
    >>> call_by_name(wrapper, ["a", "b", "**kwargs"])(None, 1, 3, {})
    (1, 3, {})
    """
    if any(n.startswith("*") and not n.startswith("**") for n in names):
        return None  # positional tensors after *args: fx's positional call is the only binding

    def call(root: Any, *values: Any) -> Any:
        keywords: dict[str, Any] = {}
        for name, value in zip(names, values):
            if name in defaults:
                continue
            if name.startswith("**"):
                if not isinstance(value, Mapping):
                    raise torch.fx.proxy.TraceError(f"{name} receives a traced value; give it a fixed mapping")
                keywords.update(value)
            else:
                keywords[name] = value
        return wrapper(root, **keywords)

    return call


def _len(proxy: torch.fx.Proxy) -> int:
    """``len()`` of a proxy from its value on ``meta``, else torch.fx's error."""
    values = getattr(proxy.tracer, "meta_values", None)
    return int(meta_question(values, proxy, "len", lambda: torch.fx.Proxy.__len__(proxy)))


def _int(proxy: torch.fx.Proxy) -> int:
    """``int()`` / ``operator.index`` of a proxy (a size as a count or a slice bound) from its value on ``meta``."""

    def fx_answer() -> int:
        raise TypeError(f"int() argument must be a number, not a traced value ({proxy.node.format_node()})")

    values = getattr(proxy.tracer, "meta_values", None)
    return int(meta_question(values, proxy, "int", fx_answer))


def _iter(proxy: torch.fx.Proxy) -> Iterator[Any]:
    """``b, c, h, w = x.shape`` / ``for d in x.shape``: torch.fx's way when unpacking, else the value on ``meta``.

    Unpacking needs no value: the bytecode says how many items (as torch.fx
    does it, but disassembling each function once: fx disassembles the
    calling function on every iteration, a fifth of the time of tracing
    MONAI's SwinUNETR).  A loop over a proxy takes the length of its value.
    """
    caller = sys._getframe(1)
    count = unpacked_count(caller.f_code, caller.f_lasti)
    values = getattr(proxy.tracer, "meta_values", None)
    if count is not None:
        known = values.peek(proxy.node) if values is not None else None  # an input's shape: checked, as Python does
        if isinstance(known, (tuple, list)):
            if len(known) != count:
                few = f"not enough values to unpack (expected {count}, got {len(known)})"
                raise ValueError(few if len(known) < count else f"too many values to unpack (expected {count})")
            assert values is not None
            values.rely_on_rank(proxy.node)
        return (proxy[i] for i in range(count))  # type: ignore[index]
    return iter(meta_question(values, proxy, "iter", lambda: proxy.tracer.iter(proxy)))


def _array(proxy: torch.fx.Proxy, dtype: Any = None, copy: bool | None = None) -> Any:
    """``np.array(x.shape[2:])``: the shape's value on ``meta`` as a numpy array."""
    import numpy

    def fx_answer() -> Any:
        raise TypeError(f"numpy cannot convert a traced value ({proxy.node.format_node()})")

    values = getattr(proxy.tracer, "meta_values", None)
    return numpy.asarray(meta_question(values, proxy, "int", fx_answer), dtype=dtype)


_NOT_PROXIED = frozenset(  # numpy asks these around __array__ (np.ceil(h / 7) asks for __array_wrap__ too)
    {
        "__array_struct__",
        "__array_interface__",
        "__array_ufunc__",
        "__array_function__",
        "__array_priority__",
        "__array_wrap__",
        "__array_prepare__",
        "__array_finalize__",
        "__cuda_array_interface__",  # torch.tensor(x.size(-1)) asks it before the sequence protocol
        "__dlpack__",
    }
)


# Both classes derive from fx's directly (no mixin): torch.fx walks a proxy's MRO for every argument it records.
class ShapeProxy(torch.fx.Proxy):
    """An fx proxy whose ``len()``, ``int()``, numpy value and attributes know its value on ``meta`` (when known)."""

    __len__ = _len
    __int__ = __index__ = _int
    __array__ = _array
    __iter__ = _iter

    def __getattr__(self, k: str) -> Any:
        if k in _NOT_PROXIED:
            raise AttributeError(k)
        return _ShapeAttribute(self, k)

    def __setitem__(self, key: Any, value: Any) -> None:  # ids[:, 1:] = ...: recorded like torch.fx records calls
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``callable(proxy)`` is always True (fx proxies record calls): ``if callable(cond): cond = cond()``
        (transformers' ``torch_compilable_check``) on a traced bool gets the bool back, not a call of it."""
        values = getattr(self.tracer, "meta_values", None)
        if not (args or kwargs) and values is not None:
            try:
                value = values.resolve(self.node, "callable")
            except Exception:  # not computable here: recorded as fx does
                value = len
            if not callable(value):
                return self
        return super().__call__(*args, **kwargs)

    @classmethod
    def __torch_function__(
        cls,
        orig_method: Callable[..., Any],
        types: tuple[type, ...],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """``F.conv2d(x, self.weight)`` recorded as torch.fx records it, without its two pytree walks.

        torch.fx finds the tracer by mapping a function over every argument
        (half the cost of recording a torch function); arguments that are
        proxies, plain values or flat tuples and lists of them are scanned
        directly.  Anything else (nested containers, script methods,
        higher-order operators) goes to torch.fx's own code.
        """
        args = args if args else ()
        kwargs = kwargs if kwargs else {}
        tracer = _sole_tracer(cls, args, kwargs)
        if tracer is None or isinstance(orig_method, (torch._C.ScriptMethod, torch._ops.HigherOrderOperator)):
            return super().__torch_function__(orig_method, types, args, kwargs)
        if torch.overrides.is_tensor_method_or_property(orig_method):
            return tracer.create_proxy("call_method", orig_method.__name__, args, kwargs)
        name = tracer.graph._target_to_str(orig_method.__name__)
        return tracer.create_proxy("call_function", orig_method, args, kwargs, name=name)


_LEAVES = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format})


def _sole_tracer(cls: type[torch.fx.Proxy], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The one tracer of the ``cls`` proxies among flat arguments; None when torch.fx must look (or decide) itself."""
    found: Any = None
    for group in (args, kwargs.values()):
        for value in group:
            for item in value if type(value) is tuple or type(value) is list else (value,):
                if isinstance(item, cls):
                    if found is not None and item.tracer is not found:
                        return None  # several tracers: torch.fx raises its error
                    found = item.tracer
                elif type(item) not in _LEAVES and not isinstance(item, (torch.fx.Proxy, torch.Tensor)):
                    return None  # a container (or anything pytree may open): torch.fx walks it
    return found


class _ShapeAttribute(torch.fx.proxy.Attribute):
    __len__ = _len
    __int__ = __index__ = _int
    __array__ = _array
    __iter__ = _iter

    def __getattr__(self, k: str) -> Any:
        if k in _NOT_PROXIED:
            raise AttributeError(k)
        return super().__getattr__(k)


_CPU, _META = torch.device("cpu"), torch.device("meta")


class _Unknown(LookupError):
    """A node's value on ``meta`` is not known (no example input for a placeholder)."""


def _edits(node: torch.fx.Node) -> bool:
    """Whether ``node`` edits its first argument in place: a container or shape edit
    (:func:`~torchsurgeon.copies.edits_in_place`), or an edit of a tensor's values
    (:func:`~torchsurgeon.knowndata.edits_values`)."""
    return edits_in_place(node) or edits_values(node.op, node.target)


DATA_INPUTS = "torchsurgeon_data_inputs"
"""The attribute giving, on the error of a Python branch on tensor values or of an op meta cannot run without
them (``unique_consecutive``), the model inputs given as shapes (``{"input_ids": (shape, dtype, decides)}``),
``decides`` for those whose data it depends on."""

FAILED_NODE = "torchsurgeon_failed_node"
"""The attribute naming, on an error raised while :class:`MetaValues` answered a question, the layer and node whose
value failed (``"embeddings (add)"``): the op the input does not fit, which may come well before the line Python
asked at."""

_OPS = frozenset({"call_function", "call_method", "call_module"})


class MetaValues:
    """Values on ``meta`` of the nodes of a graph being traced, computed on demand.

    Parameters
    ----------
    root : nn.Module
        The traced model (its attributes back ``get_attr`` nodes).
    inputs : mapping of str to Tensor
        Example inputs by placeholder name (on any device; only shape and dtype matter).
    leaf_call : callable
        ``leaf_call(module, args, kwargs)`` runs a leaf module on ``meta`` arguments.
    untraced : callable, optional
        A context manager during which fx's patches of ``nn.Module`` pass
        through (attribute reads give the real tensors, calls run for real).
    modules : mapping of str to nn.Module, optional
        The root's submodules by qualified name (the trace's model walk):
        looked up instead of walked with ``get_submodule``, whose attribute
        reads go through fx's patch of ``nn.Module.__getattr__``.

    Examples
    --------
    >>> import torch, operator
    >>> g = torch.fx.Graph()
    >>> x = g.placeholder("x")
    >>> size = g.call_method("size", (x,))
    >>> values = MetaValues(torch.nn.Module(), {"x": torch.empty(2, 3)}, lambda m, a, k: None)
    >>> values.resolve(size, "len")
    torch.Size([2, 3])
    """

    def __init__(
        self,
        root: nn.Module,
        inputs: Mapping[str, torch.Tensor],
        leaf_call: Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Any],
        untraced: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
        index: ModelIndex | None = None,
    ) -> None:
        self._root = root
        self._modules = index.modules if index is not None else {}
        self._index = index  # the model's parameters and buffers as found: its forward may store proxies in them
        self._untraced = untraced
        self._given = inputs  # read only when a question is asked: a plain model never pays for examples
        self._inputs: dict[str, torch.Tensor] = {}
        self._leaf_call = leaf_call
        self._values: dict[torch.fx.Node, Any] = {}
        self._edited: set[torch.fx.Node] = set()  # in-place edits applied to the values they edit
        self._scanned: torch.fx.Node | None = None  # the last graph node looked at for edits
        self.resolved: list[str] = []  # what Python asked about shapes, in order
        self.ranks: dict[str, int] = {}  # input -> the rank the graph holds for (its shape was unpacked)

    def resolve(self, node: torch.fx.Node, question: str) -> Any:
        """The value of ``node`` on ``meta``, for ``question`` (bool, len, iter, keys).

        Raises LookupError when it depends on an input without an example tensor.
        """
        value = self._on_meta(node)
        self.resolved.append(f"{question}({node.format_node()})")
        return value

    def inputs_behind(self, node: torch.fx.Node) -> dict[str, tuple[tuple[int, ...], torch.dtype, bool]]:
        """The model inputs whose data is not known (given as shapes), in the order of ``forward``'s arguments, with
        their shapes and dtypes and whether ``node``'s value is computed from them."""
        seen: set[torch.fx.Node] = set()
        todo = [node]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(current.all_input_nodes)
        found = {}
        for n in node.graph.nodes:
            name = str(n.target).lstrip("*")
            given = self._given.get(name) if n.op == "placeholder" else None
            if isinstance(given, torch.Tensor) and not self.known_data(n, self._inputs.get(name, given)):
                found[name] = (tuple(given.shape), given.dtype, n in seen)
        return found

    def peek(self, node: torch.fx.Node) -> Any:
        """The value of ``node`` if it is known or one step from known values (an input's ``size()``), else None."""
        if node not in self._values and any(
            a.op != "placeholder" and a not in self._values for a in node.all_input_nodes
        ):
            return None
        try:  # not recorded in ``resolved``: a length that holds for one shape holds for every shape of its rank
            return self._on_meta(node)
        except Exception:  # not computable here: the question stays fx's
            return None

    def _on_meta(self, node: torch.fx.Node) -> Any:
        with self._untraced(), ruled_meta(resized=True):  # past a layer the input does not fit, as propagation goes
            self._catch_up(node.graph)
            return self._value(node)

    def _catch_up(self, graph: torch.fx.Graph) -> None:
        """Apply the in-place edits recorded since the last question to the values already computed (the trace
        asks in graph order: every node there comes before the question)."""
        root = graph._root
        current = (self._scanned if self._scanned is not None else root).next
        while current is not root:
            first = current.args[0] if current.args else None
            if type(first) is torch.fx.Node and first in self._values and _edits(current):
                self._edit(current)
            self._scanned = current
            current = current.next

    def _edit(self, node: torch.fx.Node) -> None:
        """Apply ``node``, an in-place edit of its first argument's value (once): the edited value stands for it."""
        if node in self._edited:
            return
        self._edited.add(node)
        edited = node.args[0]
        assert isinstance(edited, torch.fx.Node)
        target = self._values[edited]
        shape_edit = node.op == "call_method" and node.target in SHAPE_EDITS
        if (
            isinstance(target, torch.Tensor)
            and not shape_edit
            and (target.device.type == "meta" or not edits_values(node.op, node.target))
        ):
            return  # values meta does not hold: nothing to apply (its arguments are not computed for it)
        try:
            rest, kwargs = thawed(torch.fx.node.map_arg((node.args[1:], node.kwargs), self._value))
            if isinstance(target, torch.Tensor) and shape_edit:  # on a view: the value may be another node's too
                out = getattr(target.view(target.shape), str(node.target))(*rest, **kwargs)
                self._values[edited] = self._values[node] = out
                return
            if isinstance(target, torch.Tensor):  # known data edited in place: as the real forward edits it
                self._edit_data(node, edited, target, rest, kwargs)
                return
            edit = container_edit(node, (target, *rest), kwargs)
        except Exception:  # not computable here: the value stays as it was
            return
        if edit is not None:
            self._values[edited], self._values[node] = edit

    def _edit_data(
        self, node: torch.fx.Node, edited: torch.fx.Node, target: torch.Tensor, rest: Any, kwargs: dict[str, Any]
    ) -> None:
        """Apply ``target.<method>_(...)`` to known data (its own copy); what cannot be applied on the CPU, or gives
        random values, leaves it unknown (a ``meta`` stand-in)."""
        try:
            if data_and_meta(rest, kwargs)[1]:  # data meta does not hold (the input's): not known from here on
                raise ValueError("edited by values that are not known")
            if node.op == "call_function":  # x[i] = v
                node.target(target, *rest, **kwargs)  # type: ignore[operator]
            elif unsettled(str(node.target)):
                raise ValueError("random or uninitialised: no longer known")
            else:
                getattr(target, str(node.target))(*rest, **kwargs)
            self._values[node] = target
        except Exception:  # it meets meta tensors, or is random: not known from here on
            self._values[edited] = self._values[node] = torch.empty_like(target, device="meta")

    def numbers(self) -> dict[str, Any]:
        """The Python numbers computed so far, by node name (a message formatted while tracing names them)."""
        return {n.name: v for n, v in self._values.items() if type(v) in (int, float, bool)}

    def settled(self, node: torch.fx.Node) -> bool:
        """Whether ``node``'s value is the same in every forward at this input (:func:`.knowndata.settled`)."""
        return settled(node, self._values)

    def known(self, node: torch.fx.Node) -> bool:
        """Whether ``node``'s data is known at this input: a settled CPU tensor (transformers' attention mask of
        ones, for inputs given without one); recorded as an answer the graph relies on."""
        try:
            value = self._on_meta(node)
        except Exception:  # not computable here: unknown
            return False
        if not self.known_data(node, value):
            return False
        self.resolved.append(f"known({node.format_node()})")
        return True

    def known_data(self, node: torch.fx.Node, value: Any) -> bool:
        """Whether ``value``, ``node``'s, is a tensor whose data is known: on the CPU and :meth:`settled`."""
        return isinstance(value, torch.Tensor) and value.device.type != "meta" and self.settled(node)

    def rely_on_rank(self, node: torch.fx.Node) -> None:
        """Record that the graph holds only for inputs of the rank ``node``'s input placeholders have now."""
        for a in node.all_input_nodes:
            value = self._values.get(a)
            if a.op == "placeholder" and isinstance(value, torch.Tensor):
                self.ranks[str(a.target).lstrip("*")] = value.dim()

    def _reads_input(self, node: torch.fx.Node) -> bool:
        """Whether ``node`` reads a model input, directly or through nodes that hand it on with its channels
        (as shape propagation's plan decides, ``torchsurgeon._steps``)."""
        for a in node.all_input_nodes:
            if a.op == "placeholder":
                return True
            module = self._submodule(str(a.target)) if a.op == "call_module" else None
            if hands_on_channels(a.op, a.target, module) and self._reads_input(a):
                return True
        return False

    def _submodule(self, name: str) -> nn.Module:
        module = self._modules.get(name)
        return module if module is not None else self._root.get_submodule(name)

    def _value(self, node: torch.fx.Node) -> Any:
        if node in self._values:
            return self._values[node]
        try:
            # fresh lists: a wrapped function may edit them, as in a real call
            args, kwargs = thawed(torch.fx.node.map_arg((node.args, node.kwargs), self._value))
            if node in self._values:  # an in-place edit, applied when the value it edits was computed
                return self._values[node]
            if node.op == "placeholder":
                name = str(node.target).lstrip("*")
                if name not in self._inputs:
                    if name not in self._given:
                        raise _Unknown(f"input {name!r}, which gets no example tensor")
                    given = self._given[name]
                    if type(given) is torch.Tensor and given.device.type == "cpu" and given.numel() <= DATA_LIMIT:
                        self._inputs[name] = given.clone()  # a small tensor given with its data: known data (own copy)
                    else:
                        self._inputs[name] = torch.empty(given.shape, dtype=given.dtype, device="meta")
                value: Any = self._inputs[name]
            elif node.op == "get_attr":
                target = str(node.target)
                index = self._index
                value = index.params.get(target, index.buffers.get(target)) if index is not None else None
                if value is None:
                    value = self._root
                    for part in target.split("."):
                        value = getattr(value, part)
                if isinstance(value, torch.fx.Proxy):  # stored in the model by this forward (CTRL's positions)
                    raise _Unknown(f"{target}, a traced value the forward stored in the model")
                if isinstance(value, torch.Tensor):
                    value = meta_like(value)
            elif node.op == "call_function" and node.target in DATA_FACTORIES and from_known_data((args, kwargs)):
                value = node.target(*off_meta(args, _CPU), **off_meta(kwargs, _CPU))  # type: ignore[operator]
                if value.numel() > DATA_LIMIT:  # known data, on the CPU if small (torch.ones(batch, length))
                    value = torch.empty_like(value, device="meta")
            elif node.op == "call_function" and node.target is getattr and args[1:2] == ("device",):
                # known data is on the input's device
                value = _META if isinstance(args[0], torch.Tensor) else getattr(*args)
            elif node.op == "call_function":
                args, kwargs = on_one_device(masks_as_indices(node.target, args), kwargs, module=False)
                value = ruled_call(node.op, node.target, args, kwargs)  # the mode's answer, without its dispatch
                if value is FALLBACK:
                    value = node.target(*args, **kwargs)  # type: ignore[operator]
            elif node.op == "call_method":
                if node.target == "to" and isinstance(args[0], torch.Tensor) and args[0].device.type != "meta":
                    args, kwargs = off_meta((args, kwargs), args[0].device)  # known data stays where it is
                args, kwargs = on_one_device(args, kwargs, module=False)
                value = ruled_call(node.op, node.target, args, kwargs)
                if value is FALLBACK:
                    value = getattr(args[0], str(node.target))(*args[1:], **kwargs)
            elif node.op == "call_module":
                args, kwargs = on_one_device(args, kwargs, module=True)
                module = self._submodule(str(node.target))
                try:
                    value = self._leaf_call(module, args, kwargs)
                except Exception:
                    # a layer reading the input that refuses its channel count (a patch embedding checking it):
                    # its output once folded, as shape propagation goes on (ShapeInterpreter._as_folded)
                    value = self._folded_call(node, module, args, kwargs)
            else:
                raise _Unknown(node.format_node())
            self._values[node] = value
            for user in node.users:  # in-place edits of it recorded so far (all before the question being answered)
                if user.args and user.args[0] is node and _edits(user):
                    self._edit(user)
            return self._values[node]
        except Exception as exc:  # the innermost op that failed, for the trace's error (analysis: real_failure)
            if node.op in _OPS and not hasattr(exc, FAILED_NODE):
                layer = str(node.target) if node.op == "call_module" else node_scope(node)
                setattr(exc, FAILED_NODE, f"{layer} ({node.name})" if layer else node.name)
                if isinstance(exc, NotImplementedError):  # an op meta cannot run without values (unique, nonzero)
                    setattr(exc, DATA_INPUTS, self.inputs_behind(node))
            raise

    def _folded_call(
        self, node: torch.fx.Node, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The leaf's output once its input convolution is folded (the first channel dim it accepts), or the error
        of its call on ``args`` (being handled) when there is none."""
        for fitting, *_ in as_folded_inputs(module, args) if self._reads_input(node) else ():
            try:
                return self._leaf_call(module, fitting, kwargs)
            except Exception:  # not the channel dim: the next one
                continue
        raise


@contextlib.contextmanager
def library_answers(values: Callable[[], MetaValues | None]) -> Iterator[None]:
    """Library functions that reject or misjudge a proxy, answered or recorded during a trace.

    Answered from the proxy's value on ``meta`` (without a value, no example
    input, the real function sees the proxy, as with torch.fx):

    * ``torch.finfo(x.dtype)`` / ``torch.iinfo(...)``: classes implemented in
      C that reject a proxy (Bloom's and T5's attention masks read
      ``torch.finfo(scores.dtype).min``);
    * ``torch.jit.isinstance(x, torch.Tensor)``: False for a proxy, so a
      branch taken for tensors vanished from the trace without an error
      (MONAI's BasicUNet lost its skip connections);
    * ``torch._check(x.shape[1] == 8)``, ``torch._check_with`` (transformers'
      ``torch_compilable_check``,
      in 159 files of transformers.models): rejects a proxy; checked on the value, and
      skipped on tensor values (a check, not a branch), as is
      ``torch._check_tensor_all(cond)`` of a traced tensor;
    * transformers' ``is_tracing(mask)`` (``transformers.masking_utils``):
      False for a proxy whose data is known (:mod:`torchsurgeon.knowndata`:
      the mask of ones built for an input given without one), so the mask
      is skipped when all ones, as in a real forward (Nystromformer's
      landmark attention cannot take one: a false invalid layer before);
    * transformers' ``is_torch_tensor(boxes)`` (``transformers.image_transforms``):
      True for a traced tensor (D-FINE's box conversions raised ``Unsupported
      input type``, and its decoder was reported invalid).

    Recorded as a graph node, as torch.fx records any other torch function
    of a proxy (the approach of transformers' former HFTracer):

    * ``torch.ones(batch, length)`` and the other factories of a size
      (``zeros``, ``empty``, ``full``, ``rand``, ``randn``), and
      ``torch.tensor(x.size(-1))`` / ``torch.as_tensor(x)``: torch's argument
      parser rejects a proxy inside a size or as data (OPT's and BART's
      decoder masks, DeBERTa's attention scale, MONAI's HighResNet blocks).

    Anything without a proxy goes to the real function.  Process-wide, like
    torch.fx's own patches (docs/threads.md).
    """
    real_finfo, real_iinfo, real_isinstance = torch.finfo, torch.iinfo, torch.jit.isinstance
    factories = {name: getattr(torch, name) for name in _FACTORIES}

    def wrap(cls: Callable[..., Any]) -> Callable[..., Any]:
        def info(type: Any = None) -> Any:  # torch's own parameter name
            if isinstance(type, torch.fx.Proxy):
                type = meta_question(values(), type, "value", lambda: type)
            return cls() if type is None else cls(type)

        return info

    def jit_isinstance(obj: Any, target_type: Any) -> bool:
        if isinstance(obj, torch.fx.Proxy):
            proxy = obj
            obj = meta_question(values(), proxy, "object", lambda: proxy)
        return bool(real_isinstance(obj, target_type))  # type: ignore[no-untyped-call]

    def recorded(factory: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(factory)
        def make(*args: Any, **kwargs: Any) -> Any:
            proxy = _first_proxy(args)  # never `or`: that asks a proxy for its truth value
            if proxy is None and kwargs:
                proxy = _first_proxy(kwargs.values())
            if proxy is None:
                return factory(*args, **kwargs)
            return proxy.tracer.create_proxy("call_function", factory, args, kwargs)

        return make

    real_check, real_check_with = torch._check, torch._check_with

    def known_condition(cond: Any) -> Any:
        """The condition's value; True on tensor values (a check, not a branch: the real forward makes it)."""
        if not isinstance(cond, torch.fx.Proxy):
            return cond
        try:
            return meta_question(values(), cond, "bool", lambda: True)
        except torch.fx.proxy.TraceError:
            return True

    def check(cond: Any, *args: Any, **kwargs: Any) -> None:
        real_check(known_condition(cond), *args, **kwargs)

    def check_with(error_type: Any, cond: Any, *args: Any, **kwargs: Any) -> None:
        real_check_with(error_type, known_condition(cond), *args, **kwargs)

    real_check_tensor = torch._check_tensor_all_with

    def check_tensor_all_with(error_type: Any, cond: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(cond, torch.fx.Proxy):  # tensor values: a check, not a branch (known_condition)
            real_check_tensor(error_type, cond, *args, **kwargs)

    masks = sys.modules.get("transformers.masking_utils")
    real_is_tracing = getattr(masks, "is_tracing", None)

    def is_tracing(tensor: Any = None) -> bool:
        known = values() if isinstance(tensor, torch.fx.Proxy) else None
        if known is not None and known.known(tensor.node):  # type: ignore[union-attr]
            tensor = None  # its data decides, as in a real forward; compiling or exporting still counts
        return bool(real_is_tracing(tensor))  # type: ignore[misc]

    boxes = sys.modules.get("transformers.image_transforms")
    real_is_tensor = getattr(boxes, "is_torch_tensor", None)

    def is_torch_tensor(obj: Any) -> bool:  # box conversions in detection heads (D-FINE): a traced tensor is one
        if isinstance(obj, torch.fx.Proxy):
            return jit_isinstance(obj, torch.Tensor)
        return bool(real_is_tensor(obj))  # type: ignore[misc]

    patches: list[tuple[Any, str, Any]] = [  # (owner, attribute, what stands for it during the trace)
        (torch, "finfo", wrap(real_finfo)),
        (torch, "iinfo", wrap(real_iinfo)),
        (torch.jit, "isinstance", jit_isinstance),
        (torch, "_check", check),
        (torch, "_check_with", check_with),
        (torch, "_check_tensor_all_with", check_tensor_all_with),  # torch._check_tensor_all calls it
        *((torch, name, recorded(factory)) for name, factory in factories.items()),
    ]
    if real_is_tracing is not None:
        patches.append((masks, "is_tracing", is_tracing))
    if real_is_tensor is not None:
        patches.append((boxes, "is_torch_tensor", is_torch_tensor))
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, real in originals:
            setattr(owner, name, real)


_FACTORIES = ("ones", "zeros", "empty", "full", "rand", "randn", "tensor", "as_tensor")


def _first_proxy(values: Iterable[Any]) -> torch.fx.Proxy | None:
    """The first proxy among ``values`` or inside one of them that is a tuple or list (a size)."""
    for value in values:
        if isinstance(value, torch.fx.Proxy):
            return value
        if isinstance(value, (tuple, list)):
            for item in value:
                if isinstance(item, torch.fx.Proxy):
                    return item
    return None


def meta_question(values: MetaValues | None, proxy: torch.fx.Proxy, question: str, fx_answer: Callable[[], Any]) -> Any:
    """The Python answer (bool, iterator, keys, len) for ``proxy`` from its value on ``meta``.

    Without the value (no example inputs, or none for an input it depends
    on) the answer is ``fx_answer()``: torch.fx's own, usually its error, so
    a model traced without example inputs traces exactly as with torch.fx.
    """
    if values is None:
        return fx_answer()
    try:
        value = values.resolve(proxy.node, question)
    except _Unknown:
        return fx_answer()
    if question == "value":  # a dtype or a device: the input's, whatever Python does with it
        if isinstance(value, torch.Tensor):
            raise torch.fx.proxy.TraceError(f"a tensor value is data-dependent ({proxy.node.format_node()})")
        return value
    if question in ("bool", "int"):
        if isinstance(value, torch.Tensor) and not values.known_data(proxy.node, value):  # data-dependent
            exc = torch.fx.proxy.TraceError(
                "symbolically traced variables cannot be used as inputs to control flow (a tensor value)"
                if question == "bool"
                else f"int() of a tensor value: data-dependent ({proxy.node.format_node()})"
            )
            inputs = values.inputs_behind(proxy.node)
            if any(decides for *_, decides in inputs.values()):
                setattr(exc, DATA_INPUTS, inputs)
            raise exc
        return bool(value) if question == "bool" else value
    if question == "iter":
        return iter([proxy[i] for i in range(len(value))])  # type: ignore[index]
    if question == "len":
        return len(value)
    if question == "object":  # what it is (a tensor, a tuple...), for type checks
        return value
    return value.keys()
