"""Values on ``meta`` of the nodes of a graph being traced, computed when Python asks about them.

Python on shapes in a forward (``if h % stride``, ``len(x.shape)``,
``for d in x.shape``) asks a question torch.fx's proxies cannot answer.
:class:`MetaValues` computes the value of the node asked about on
``meta`` (and of the nodes it depends on, once), applying the in-place edits
recorded so far; small tensors given with their data stay known data on the
CPU (:mod:`torchsurgeon.knowndata`).  :func:`meta_question` turns a value into
Python's answer.  The shape-aware proxies that ask are in
:mod:`torchsurgeon.frontend`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch import nn

from .copies import SHAPE_EDITS, container_edit, edits_in_place, meta_like, thawed
from .datamoves import kept_in_place
from .fxbookkeeping import node_scope
from .knowndata import (
    DATA_FACTORIES,
    DATA_LIMIT,
    data_and_meta,
    edits_values,
    from_known_data,
    given_as_data,
    masks_as_indices,
    off_meta,
    on_one_device,
    settled,
    stand_ins_or_data,
    unsettled,
)
from .modelindex import ModelIndex
from .resize import as_folded_inputs, hands_on_channels
from .rules import FALLBACK
from .rules.on_meta import ruled_call, ruled_meta

__all__ = ("DATA_INPUTS", "FAILED_NODE", "NO_EXAMPLE", "MetaValues", "meta_question")

_CPU, _META = torch.device("cpu"), torch.device("meta")


class _Unknown(LookupError):
    """A node's value on ``meta`` is not known (no example input for a placeholder: its name is ``input``)."""

    input = ""


def _edits(node: torch.fx.Node) -> bool:
    """Whether ``node`` edits its first argument in place: a container or shape edit
    (:func:`~torchsurgeon.copies.edits_in_place`), or an edit of a tensor's values
    (:func:`~torchsurgeon.knowndata.edits_values`)."""
    return edits_in_place(node) or edits_values(node.op, node.target)


DATA_INPUTS = "torchsurgeon_data_inputs"
"""The attribute giving, on the error of a Python branch on tensor values or of an op meta cannot run without
them (``unique_consecutive``), the model inputs given as shapes (``{"input_ids": (shape, dtype, decides)}``),
``decides`` for those whose data it depends on."""
NO_EXAMPLE = "torchsurgeon_no_example"
"""The attribute naming, on the error of a Python question about a value computed from an input given no shape,
that input and the per-sample shapes of those given: ``(name, {name: shape})``."""


def _no_data(node: torch.fx.Node, values: Mapping[torch.fx.Node, Any]) -> bool:
    """Whether ``node``'s value is known and holds no tensor (a device, a dtype, a size): known whatever the data of
    the tensors it was read from (``eos.to(hidden_states.device)`` needs no data of ``hidden_states``)."""
    return node in values and not pytree.tree_any(lambda v: isinstance(v, torch.Tensor), values[node])


FAILED_NODE = "torchsurgeon_failed_node"
"""The attribute naming, on an error raised while :class:`MetaValues` answered a question, the layer and node whose
value failed (``"embeddings (add)"``): the op the input does not fit, which may come well before the line Python
asked at."""

_OPS = frozenset({"call_function", "call_method", "call_module"})


_PLAIN_TYPES = frozenset({int, float, bool, complex, str, torch.Size, torch.dtype, torch.device})
"""The types of traced values that ``isinstance`` is answered for as a real forward's (a tuple or a list of
them is not: its items may hold proxies)."""

_NO_TENSOR_TYPES = _PLAIN_TYPES | {type(None)}
"""Argument types that hold no tensor: a call given only these (``x.shape[2] // window``) has nothing on ``meta``
to answer by a rule or to move off it; it runs as it is."""


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

    def inputs_behind(
        self, node: torch.fx.Node, needed: Sequence[torch.fx.Node] = ()
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype, bool]]:
        """The model inputs whose data is not known (given as shapes), in the order of ``forward``'s arguments, with
        their shapes and dtypes and whether the data ``node`` needs (``needed``'s values, else its own) is computed
        from them alone: given with their data, the trace would know it.  Data that a leaf module or a weight
        also computes (a detector's scores, kept where they pass a threshold) stays unknown whatever the inputs
        hold: no input decides it.
        """
        seen: set[torch.fx.Node] = set()
        todo = list(needed) or [node]
        computable = True
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            value = self._values.get(current)
            if current.op != "placeholder" and (self.known_data(current, value) or _no_data(current, self._values)):
                continue  # known already: what made it does not matter
            if current.op == "call_module" or (current.op == "get_attr" and isinstance(value, torch.Tensor)):
                computable = False  # a leaf's output, a weight on meta: unknown whatever the inputs hold
            todo.extend(current.all_input_nodes)
        found = {}
        for n in node.graph.nodes:
            name = str(n.target).lstrip("*")
            given = self._given.get(name) if n.op == "placeholder" else None
            if isinstance(given, torch.Tensor) and not self.known_data(n, self._inputs.get(name, given)):
                found[name] = (tuple(given.shape), given.dtype, computable and n in seen)
        return found

    def given_shapes(self) -> dict[str, tuple[int, ...]]:
        """The per-sample shapes of the inputs given an example, by name (without the batch size)."""
        return {name: tuple(t.shape[1:]) for name, t in self._given.items() if isinstance(t, torch.Tensor)}

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

    def python_type(self, node: torch.fx.Node) -> type | None:
        """The type a real forward's value of ``node`` has, as ``isinstance`` sees it: ``torch.Tensor`` for a
        tensor, ``int`` for a size (``x.shape[2]``), ``torch.Size``, ``float``, ``bool``, a dtype or a device;
        None when it cannot be computed here or is of another type.  Not recorded in ``resolved``: what an op
        gives is a tensor, an int or a size whatever the input's shape."""
        try:
            value = self._on_meta(node)
        except Exception:  # not computable here: the proxy stays a proxy
            return None
        if isinstance(value, torch.Tensor):
            return torch.Tensor
        return type(value) if type(value) in _PLAIN_TYPES else None

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

    def _masks(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        """The arguments of ``node`` holding masks or indices (bool or integer tensors): the data an op that meta
        cannot run needs (``h[mask]`` needs the mask's, not ``h``'s)."""
        return [
            a
            for a in node.all_input_nodes
            if isinstance(value := self._values.get(a), torch.Tensor)
            and not (value.is_floating_point() or value.is_complex())
        ]

    def _submodule(self, name: str) -> nn.Module:
        module = self._modules.get(name)
        return module if module is not None else self._root.get_submodule(name)

    def _value(self, node: torch.fx.Node) -> Any:
        if node in self._values:
            return self._values[node]
        try:
            # fresh lists: a wrapped function may edit them, as in a real call
            args = thawed(torch.fx.node.map_arg(node.args, self._value))
            kwargs = thawed(torch.fx.node.map_arg(node.kwargs, self._value)) if node.kwargs else {}
            if node in self._values:  # an in-place edit, applied when the value it edits was computed
                return self._values[node]
            self._values[node] = self._compute(node, args, kwargs)
            for user in node.users:  # in-place edits of it recorded so far (all before the question being answered)
                if user.args and user.args[0] is node and _edits(user):
                    self._edit(user)
            return self._values[node]
        except Exception as exc:  # the innermost op that failed, for the trace's error (analysis: real_failure)
            if node.op in _OPS and not hasattr(exc, FAILED_NODE):
                layer = str(node.target) if node.op == "call_module" else node_scope(node)
                setattr(exc, FAILED_NODE, f"{layer} ({node.name})" if layer else node.name)
                if isinstance(exc, NotImplementedError):  # an op meta cannot run without values (unique, nonzero)
                    setattr(exc, DATA_INPUTS, self.inputs_behind(node, self._masks(node)))
            raise

    def _compute(self, node: torch.fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``node``'s value from its arguments' values."""
        op, target = node.op, node.target
        if op == "placeholder":
            return self._input(str(target).lstrip("*"))
        if op == "get_attr":
            return self._attribute(str(target))
        if op == "call_function" and target in DATA_FACTORIES and from_known_data((args, kwargs)):
            value = target(*off_meta(args, _CPU), **off_meta(kwargs, _CPU))  # type: ignore[operator]
            # known data, on the CPU if small (torch.ones(batch, length))
            return torch.empty_like(value, device="meta") if value.numel() > DATA_LIMIT else value
        if op == "call_function" and target is getattr and args[1:2] == ("device",):
            return _META if isinstance(args[0], torch.Tensor) else getattr(*args)  # known data: the input's device
        if (
            op == "call_function"
            and _NO_TENSOR_TYPES.issuperset(map(type, args))
            and (not kwargs or _NO_TENSOR_TYPES.issuperset(map(type, kwargs.values())))
        ):  # Python on sizes (a fifth of SwinUNETR's values): what the general path below ends in, without its checks
            return target(*args, **kwargs)  # type: ignore[operator]
        if op == "call_function":
            args = masks_as_indices(target, args)
            return stand_ins_or_data(  # known data meeting meta: stand-ins, or the data where an op refuses them
                lambda a, k: self._function(target, a, k), (args, kwargs), on_one_device(args, kwargs, module=False)
            )
        if op == "call_method":
            args, kwargs = kept_in_place(target, args, kwargs)  # known data moved to the input's device stays known
            return stand_ins_or_data(
                lambda a, k: self._method(str(target), a, k), (args, kwargs), on_one_device(args, kwargs, module=False)
            )
        if op == "call_module":
            module = self._submodule(str(target))
            return stand_ins_or_data(
                lambda a, k: self._module(node, module, a, k), (args, kwargs), on_one_device(args, kwargs, module=True)
            )
        raise _Unknown(node.format_node())

    @staticmethod
    def _function(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value = ruled_call("call_function", target, args, kwargs)  # the mode's answer, without its dispatch
        return target(*args, **kwargs) if value is FALLBACK else value

    @staticmethod
    def _method(target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value = ruled_call("call_method", target, args, kwargs)
        return getattr(args[0], target)(*args[1:], **kwargs) if value is FALLBACK else value

    def _module(self, node: torch.fx.Node, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return self._leaf_call(module, args, kwargs)
        except Exception:
            # a layer reading the input that refuses its channel count (a patch embedding checking it):
            # its output once folded, as shape propagation goes on (ShapeInterpreter._as_folded)
            return self._folded_call(node, module, args, kwargs)

    def _input(self, name: str) -> torch.Tensor:
        """A model input's value: its example's shape and dtype on ``meta``, or a small CPU tensor given with its
        data (known data: its own copy)."""
        if name not in self._inputs:
            if name not in self._given:
                unknown = _Unknown(f"input {name!r}, which gets no example tensor")
                unknown.input = name
                raise unknown
            given = self._given[name]
            if given_as_data(given):
                self._inputs[name] = given.clone()
            else:
                self._inputs[name] = torch.empty(given.shape, dtype=given.dtype, device="meta")
        return self._inputs[name]

    def _attribute(self, target: str) -> Any:
        """A parameter, buffer or other attribute of the model read by ``get_attr``: tensors as ``meta`` likes."""
        index = self._index
        value: Any = index.params.get(target, index.buffers.get(target)) if index is not None else None
        if value is None:
            value = self._root
            for part in target.split("."):
                value = getattr(value, part)
        if isinstance(value, torch.fx.Proxy):  # stored in the model by this forward (CTRL's positions)
            raise _Unknown(f"{target}, a traced value the forward stored in the model")
        return meta_like(value) if isinstance(value, torch.Tensor) else value

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
    except _Unknown as unknown:
        try:
            return fx_answer()
        except Exception as refused:
            if unknown.input:  # Python needs an input given no shape (RAFT's image2 beside image1)
                setattr(refused, NO_EXAMPLE, (unknown.input, values.given_shapes()))
            raise
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
