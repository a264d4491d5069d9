"""What torch.fx needs beyond its defaults to trace library models as their users call them.

Three pieces (the last two mostly in their own modules), each used by :mod:`torchsurgeon.trace`'s tracer:

* **Wrapped forwards.**  transformers 5 wraps ``forward`` in decorators
  taking ``(*args, **kwargs)``; fx reads the inner signature but calls the
  wrapper positionally, so values land in the wrong slots.
  :func:`call_by_name` calls the wrapper with keywords instead.  A
  ``forward`` set on the model itself (Cadene's ``pretrainedmodels``,
  ``model.forward = model.forward_features``) is what ``model(x)`` runs, and
  what is traced (:func:`~torchsurgeon.wrappers.instance_forward`); fx
  traces its class's.
* **The model's own hooks** (:mod:`torchsurgeon.ownhooks`).  transformers
  collects hidden states with forward hooks the model installs on itself
  during its first forward: they run (and the user's that return a value,
  never those that only look), and the model is left exactly as it was found.
* **Shape-aware proxies.**  Python on shapes (``if h % stride``,
  ``len(x.shape)``, ``for d in x.shape``) is resolved for the input given,
  as transformers' former ``HFTracer`` did, but lazily: a node's value on
  ``meta`` is computed only when Python asks a question fx cannot answer
  (:class:`torchsurgeon.metavalues.MetaValues`).  A question about tensor *values* still fails, so
  the smallest module holding it becomes an opaque leaf.

torch.fx's bookkeeping without its generic copies is in :mod:`torchsurgeon.fxbookkeeping`.

See docs/frontend.md for the measurements behind these choices.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import operator
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from .arguments import InputPaths, grouped_inputs
from .autocast import autocast_on_cpu
from .callers import isinstance_in_model, unpacked_count
from .metavalues import MetaValues, meta_question

__all__ = (
    "PACKED_SEQUENCES",
    "ShapeProxy",
    "bind_inputs",
    "call_by_name",
    "library_answers",
)


PACKED_SEQUENCES: tuple[Callable[..., Any], ...] = tuple(
    getattr(nn.utils.rnn, name)
    for name in ("pack_padded_sequence", "pad_packed_sequence", "pack_sequence", "unpack_sequence", "unpad_sequence")
)
"""torch's functions of packed sequences, each one call in a graph: they read the data of the lengths and
branch on a ``PackedSequence``'s fields in Python (``if unsorted_indices is not None``, ``batch_sizes.device``),
which a trace's proxies cannot answer; run on the values they are given, they decide as a real forward does."""


def bind_inputs(
    model: nn.Module, values: Mapping[str, Any], paths: InputPaths | None = None
) -> tuple[list[Any], dict[str, Any]]:
    """Inputs by name as ``model(*args, **kwargs)``: positional as far as ``forward`` allows, then by name.

    ``paths`` (:func:`~torchsurgeon.arguments.input_paths`) regroups the
    inputs that are part of one argument first: a dict's tensors into the
    dict, ``*args``' entries after the positional arguments.

    Examples
    --------
    >>> from torch import nn
    >>> bind_inputs(nn.Bilinear(2, 2, 1), {"input2": 2, "input1": 1})
    ([1, 2], {})
    >>> bind_inputs(nn.Bilinear(2, 2, 1), {"input2": 2})
    ([], {'input2': 2})
    >>> class Sum(nn.Module):
    ...     def forward(self, x, *rest, cond=None):
    ...         return x
    >>> bind_inputs(Sum(), {"x": 1, "rest_0": 2, "cond_t": 3}, {"rest_0": ("rest", 0), "cond_t": ("cond", "t")})
    ([1, 2], {'cond': {'t': 3}})
    """
    rest = grouped_inputs(values, paths or {})
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = True
    for p in inspect.signature(model.forward).parameters.values():
        if p.name not in rest:
            positional = False
            continue
        if positional and p.kind == p.VAR_POSITIONAL and isinstance(rest[p.name], list):
            args.extend(rest.pop(p.name))  # *args given entry by entry
        elif positional and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL):
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


def _class(proxy: torch.fx.Proxy) -> type:
    """``proxy.__class__``, which ``isinstance`` reads when the proxy's own type does not match: ``torch.Tensor``
    when a model's (or a library's) own code asks about a traced tensor, so that its type guard
    (``if not isinstance(x, torch.Tensor): raise TypeError``, ``torch.is_tensor(x)``, kornia's
    ``KORNIA_CHECK_IS_TENSOR``) passes as in a real forward; ``int`` for a size (``h = x.shape[2]``), so that
    ``isinstance(h, int)`` takes the path a forward takes, and so for the other plain types of
    :meth:`~torchsurgeon.metavalues.MetaValues.python_type`.  torch's and torchsurgeon's own checks, and
    anything traced without example inputs, see the proxy's class.  Nothing process-wide changes: only this
    trace's proxies answer, and only in the thread that traces (no other holds them).  ``type(x)`` cannot be
    answered: :func:`torchsurgeon.traceerrors.trace_error` names such a guard."""
    own = type(proxy)
    if not isinstance_in_model(sys._getframe(1)):
        return own
    values = getattr(proxy.tracer, "meta_values", None)
    answer = values.python_type(proxy.node) if values is not None else None
    return answer if answer is not None else own


def _numpy_asks(frame: Any) -> bool:
    """Whether the code asking for an attribute is numpy's own (``np.prod(x.shape[1:])`` asks the shape for its
    ``prod`` method, and reduces its values when it has none)."""
    return str(frame.f_globals.get("__name__", "")).startswith("numpy")


def _lacks(proxy: torch.fx.Proxy, name: str) -> bool:
    """Whether a real forward's value of ``proxy`` (a size, a ``torch.Size``: its value on ``meta``) has no
    attribute ``name``: numpy then takes its values instead (Perceiver's ``np.prod(index_dims)``)."""
    values = getattr(proxy.tracer, "meta_values", None)
    kind = values.python_type(proxy.node) if values is not None else None
    return kind is not None and kind is not torch.Tensor and not hasattr(kind, name)


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
    __class__ = property(_class)  # type: ignore[assignment]

    def __getattr__(self, k: str) -> Any:
        if k in _NOT_PROXIED or (_numpy_asks(sys._getframe(1)) and _lacks(self, k)):
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


_DEVICE = "device"


class _ShapeAttribute(torch.fx.proxy.Attribute):
    __len__ = _len
    __int__ = __index__ = _int
    __array__ = _array
    __iter__ = _iter
    __class__ = property(_class)  # type: ignore[assignment]

    def __init__(self, root: torch.fx.Proxy, attr: str) -> None:
        super().__init__(root, attr)
        self._stack = copy.copy(getattr(self.tracer, "module_stack", None))  # the module reading the attribute

    @property
    def node(self) -> torch.fx.Node:  # type: ignore[override]
        """fx makes the node when the attribute is first used, perhaps in the next module (``.values`` of a
        ``topk`` returned to it): it is the module's that read it."""
        if self._node is None:
            node = self._node = self.tracer.create_proxy("call_function", getattr, (self.root, self.attr), {}).node
            if self._stack is not None:  # empty: read at the top level
                node.meta["nn_module_stack"] = self._stack
        return self._node

    def __getattr__(self, k: str) -> Any:
        if k in _NOT_PROXIED:
            raise AttributeError(k)
        return super().__getattr__(k)

    def __hash__(self) -> int:
        # every tensor of a forward is on one device: ``x.device`` read twice is one dict key (timm's FeatureHooks
        # keys what its hooks collect by it); equality is then answered from the values on meta, as in a forward
        return hash(_DEVICE) if self.attr == "device" else id(self)


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
      input type``, and its decoder was reported invalid);
    * ``torch.autocast(x.device.type, ...)``: the CPU's
      (:func:`~torchsurgeon.autocast.autocast_on_cpu`; x-transformers' rotary
      embeddings disable autocast on their input's device).

    Recorded as a graph node, as torch.fx records any other torch function
    of a proxy (the approach of transformers' former HFTracer):

    * ``torch.ones(batch, length)`` and the other factories of a size
      (``zeros``, ``empty``, ``full``, ``rand``, ``randn``), and
      ``torch.tensor(x.size(-1))`` / ``torch.as_tensor(x)``: torch's argument
      parser rejects a proxy inside a size or as data (OPT's and BART's
      decoder masks, DeBERTa's attention scale, MONAI's HighResNet blocks);
    * a real tensor's ``expand``, ``view``, ``reshape``, ``repeat``,
      ``permute``, ``tile``, ``flip`` and ``new_zeros`` / ``new_ones`` /
      ``new_empty`` given a proxy size (peft's prompt tuning:
      ``self.prompt_tokens[adapter].unsqueeze(0).expand(batch_size, -1)``);
    * a function made by ``torch.vmap`` (also of another's) called with a
      proxy: one call, run by shape propagation on the values (transformers'
      ``sdpa_mask`` of a custom mask function over ``torch.arange`` of traced
      lengths: Nemotron ASR, T5Gemma 2); not when the function vmapped holds
      a proxy in its closure (a padding mask), which vmap sees as before.

    Anything without a proxy goes to the real function.  Process-wide, like
    torch.fx's own patches (docs/threads.md).
    """
    real_finfo, real_iinfo, real_isinstance = torch.finfo, torch.iinfo, torch.jit.isinstance
    factories = {name: getattr(torch, name) for name in _FACTORIES}

    def wrap(cls: type) -> type:
        return _TracedInfo(cls.__name__, (), {"real": cls, "values": staticmethod(values), "__doc__": cls.__doc__})

    def jit_isinstance(obj: Any, target_type: Any) -> bool:
        if isinstance(obj, torch.fx.Proxy):
            proxy = obj
            obj = meta_question(values(), proxy, "object", lambda: proxy)
        return bool(real_isinstance(obj, target_type))  # type: ignore[no-untyped-call]

    def recorded(factory: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(factory)
        def make(*args: Any, **kwargs: Any) -> Any:
            return _recorded_if_traced("call_function", factory, factory, args, kwargs)

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

    real_vmap = torch.vmap

    def vmap(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        mapped = real_vmap(func, *args, **kwargs)
        if _captures_proxy(func):  # a mask of traced values (a padding mask): not one call of known inputs
            return mapped

        @functools.wraps(mapped)
        def call(*a: Any, **k: Any) -> Any:
            return _recorded_if_traced("call_function", mapped, mapped, a, k)

        call._captures_no_proxy = True  # type: ignore[attr-defined]  # checked: vmap of vmap (transformers' masks)
        return call

    def recorded_method(name: str) -> Callable[..., Any]:
        real = getattr(torch.Tensor, name)

        @functools.wraps(real)
        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return _recorded_if_traced("call_method", name, real, (self, *args), kwargs)

        return method

    patches: list[tuple[Any, str, Any]] = [  # (owner, attribute, what stands for it during the trace)
        (torch, "finfo", wrap(real_finfo)),
        (torch, "iinfo", wrap(real_iinfo)),
        (torch.jit, "isinstance", jit_isinstance),
        (torch, "_check", check),
        (torch, "_check_with", check_with),
        (torch, "_check_tensor_all_with", check_tensor_all_with),  # torch._check_tensor_all calls it
        *((torch, name, recorded(factory)) for name, factory in factories.items()),
        *((torch.Tensor, name, recorded_method(name)) for name in _SIZE_METHODS),
        (torch, "vmap", vmap),
    ]
    if real_is_tracing is not None:
        patches.append((masks, "is_tracing", is_tracing))
    if real_is_tensor is not None:
        patches.append((boxes, "is_torch_tensor", is_torch_tensor))
    _fill_torch_caches()
    originals = [(owner, name, vars(owner).get(name, _INHERITED)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        with autocast_on_cpu():  # torch.autocast(x.device.type, ...) of a traced x (x-transformers' rotary embeddings)
            yield
    finally:
        for owner, name, real in originals:
            if real is _INHERITED:  # torch.Tensor.expand is TensorBase's: the class gets none of its own back
                delattr(owner, name)
            else:
                setattr(owner, name, real)


def _fill_torch_caches() -> None:
    """Fill the caches of ``torch.overrides`` (the functions in torch's namespaces, found once per process, the first
    time one is asked for) before the patches of :func:`library_answers`: asked for during a trace, they kept the
    trace's stand-ins for ``torch.finfo``, ``torch.zeros``, ``Tensor.new_zeros``... in place of torch's own for the
    rest of the process (``torch.finfo in get_ignored_functions()`` was False after an analysis), and with them,
    through their closures, the trace that made them."""
    for cached in _TORCH_CACHES:
        cached()


_TORCH_CACHES = (
    torch.overrides.get_ignored_functions,
    torch.overrides.get_default_nowrap_functions,
    torch.overrides.get_testing_overrides,
    torch.overrides._get_overridable_functions,
    torch.overrides._get_tensor_methods,
)


class _TracedInfo(type):
    """``torch.finfo`` / ``torch.iinfo`` during a trace: a traced dtype is answered from its value on meta, anything
    else goes to the real class; ``isinstance`` and ``issubclass`` answer as for the real class, in every thread
    (a plain function there raised ``TypeError: isinstance() arg 2 must be a type``)."""

    real: type
    values: Callable[[], MetaValues | None]

    def __call__(cls, type: Any = None) -> Any:  # torch's own parameter name
        if isinstance(type, torch.fx.Proxy):
            type = meta_question(cls.values(), type, "value", lambda: type)
        return cls.real() if type is None else cls.real(type)

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, cls.real)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return subclass is cls or issubclass(subclass, cls.real)


_INHERITED: Any = object()
_SIZE_METHODS = ("expand", "view", "reshape", "repeat", "permute", "tile", "flip", "new_zeros", "new_ones", "new_empty")
"""Tensor methods taking sizes or dims as separate arguments: torch's argument parser rejects a proxy among them
(``self.cls_token.expand(x.shape[0], -1)`` of a tensor the model holds as a plain attribute, not a parameter)."""


_FACTORIES = ("ones", "zeros", "empty", "full", "rand", "randn", "tensor", "as_tensor")


_PYTHON_DTYPES: dict[Any, torch.dtype] = {
    int: torch.int64,
    float: torch.float64,
    bool: torch.bool,
    complex: torch.complex128,
}  # what torch reads a Python type given as a dtype as


def _recorded_if_traced(
    kind: str, target: Any, real: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A graph node of ``target`` when a proxy is among the arguments (or inside a flat size), else ``real``'s
    result."""
    proxy = _first_proxy(args)  # never `or`: that asks a proxy for its truth value
    if proxy is None and kwargs:
        proxy = _first_proxy(kwargs.values())
    if proxy is None:
        return real(*args, **kwargs)
    if isinstance(dtype := kwargs.get("dtype"), type) and dtype in _PYTHON_DTYPES:  # `dtype=int`: torch's dtype
        kwargs = {**kwargs, "dtype": _PYTHON_DTYPES[dtype]}
    return proxy.tracer.create_proxy(kind, target, args, kwargs)


def _captures_proxy(func: Any, depth: int = 0) -> bool:
    """Whether ``func``'s closure holds a proxy: itself, or in a function, list or tuple it holds (transformers'
    ``and_masks(*mask_functions)``), a few levels down."""
    if getattr(func, "_captures_no_proxy", False):
        return False
    if depth > 4:
        return True
    held = [value for cell in getattr(func, "__closure__", None) or () if (value := _contents(cell)) is not None]
    held += [getattr(func, "func", None)] if isinstance(func, functools.partial) else []
    held += list(getattr(func, "args", ())) if isinstance(func, functools.partial) else []
    for value in held:
        items = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, torch.fx.Proxy) or (callable(item) and _captures_proxy(item, depth + 1)):
                return True
    return False


def _contents(cell: Any) -> Any:
    """What a closure cell holds; None for an empty one (a name the function reads, not assigned yet)."""
    try:
        return cell.cell_contents
    except ValueError:
        return None


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
