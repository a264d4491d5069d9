"""Running real Python on ``meta`` tensors with torch's calls answered by their rules.

torch's own ``meta`` kernels of many common ops are Python decompositions:
an element-wise add costs about 0.1 ms, a batch norm 0.6 ms, where a rule
answers in microseconds.  :func:`ruled_meta` is a torch function mode under
which each torch function, tensor method and operator called on ``meta``
tensors is answered by its shape rule when the registry has one that applies
exactly (the same rules, with the same exactness guarantees, that shape
propagation uses: shape, dtype and strides of meta execution); anything
else, and any call a rule declines, runs as usual.  The model's own Python
(its control flow, hooks, and modules) runs unchanged: only the arithmetic
of the ops is looked up.

A check of tensor values (``torch._check_tensor_all(cond)``, which reads
``cond._is_all_true().item()``: transformers' ``torch_compilable_check`` of
a detector's feature map sizes) passes when ``cond`` is on ``meta``, as it
does during a trace: its data is unknown there, and a check decides no
shape (on ``meta`` it raised, and the cross-check ran the model again on
zeros on the CPU, where such a check sees zeros, not the data either).

Data a real forward makes from sizes and constants (``torch.arange(n,
device=x.device)``: positions, relative distances) is made on the CPU when
small, as in a trace (:mod:`torchsurgeon.knowndata`), and an index into a
``meta`` table by such positions is checked as a real forward checks it: a
position past the table's end raises ``IndexError`` (timm's MViTv2 at an
input larger than it was built for).  Where known data meets ``meta``
tensors otherwise, it gets ``meta`` stand-ins, unless the op refuses them
and takes the data (a packed sequence's lengths and batch sizes:
:func:`~torchsurgeon.knowndata.stand_ins_or_data`); moved to the input's
device, it stays known (:func:`~torchsurgeon.datamoves.kept_in_place`).

Used where torchsurgeon runs a real forward on ``meta``: the cross-check of
a traced graph, opaque leaves during propagation.  :func:`ruled_leaf`
answers a whole leaf module by its module rule, without running it (the
tracer's leaves, when Python asks about shapes during a trace).
"""

from __future__ import annotations

import contextlib
import operator
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..autocast import as_autocast_gives, autocast_now, autocast_on_cpu, op_name
from ..bounds import index_past
from ..datamoves import kept_in_place, unknown_to_cpu
from ..knowndata import (
    DATA_FACTORIES,
    DATA_LIMIT,
    PLAIN_TENSORS,
    data_and_meta,
    edits_values,
    from_known_data,
    masks_as_indices,
    off_meta,
    on_one_device,
    stand_ins,
    stand_ins_or_data,
    unsettled,
)
from ..records import FlopKind
from ._common import mixed_dtypes, shared_outputs
from .pooling import refused_interpolation
from .registry import (
    FALLBACK,
    Call,
    Rule,
    counted_without_formula,
    function_rule,
    method_rule,
    module_rule,
    rules_version,
    runs_forward_of,
)

__all__ = (
    "FlopTally",
    "answered_by_rules",
    "as_the_cpu_returns",
    "by_cpu_rule",
    "check_as_the_cpu",
    "ruled_call",
    "ruled_leaf",
    "ruled_meta",
)

_OPERATORS: dict[str, Callable[..., Any]] = {
    "__add__": operator.add,
    "__sub__": operator.sub,
    "__mul__": operator.mul,
    "__truediv__": operator.truediv,
    "__pow__": operator.pow,
    "__matmul__": operator.matmul,
    "__neg__": operator.neg,
    "__getitem__": operator.getitem,
    "__eq__": operator.eq,
    "__ne__": operator.ne,
    "__lt__": operator.lt,
    "__le__": operator.le,
    "__gt__": operator.gt,
    "__ge__": operator.ge,
    "__and__": operator.and_,
    "__or__": operator.or_,
}
_REFLECTED: dict[str, Callable[..., Any]] = {
    "__radd__": operator.add,
    "__rsub__": operator.sub,
    "__rmul__": operator.mul,
    "__rtruediv__": operator.truediv,
    "__rpow__": operator.pow,
    "__rmatmul__": operator.matmul,
    "__rand__": operator.and_,
    "__ror__": operator.or_,
}


def _rule_of(func: Any) -> tuple[Rule | None, bool]:
    """The rule of a call as torch function modes see it, and whether its two operands are swapped."""
    rule = function_rule(func)
    if rule is not None:
        return rule, False
    name = getattr(func, "__name__", "")
    if getattr(torch.Tensor, name, None) is not func:
        return None, False
    if name in _OPERATORS:
        return function_rule(_OPERATORS[name]), False
    if name in _REFLECTED:
        return function_rule(_REFLECTED[name]), True
    return method_rule(name), False


@dataclass
class FlopTally:
    """The MACs and FLOPs of the torch calls run inside :func:`ruled_meta` (``counting=``), by their rules' formulas.

    What a node with no formula of its own does (a user function recorded as
    one call, torchvision MViT's ``_unsqueeze``): each torch function, tensor
    method and operator it calls counts as a node of that op would
    (:func:`~torchsurgeon.rules.registry.counted_without_formula`).  ``known``
    stays True while every call is counted: a call whose FLOPs are unknown
    (``einsum``, a user rule without a formula) makes the whole unknown.

    Examples
    --------
    >>> import torch
    >>> tally = FlopTally()
    >>> with ruled_meta(counting=tally):
    ...     _ = (torch.empty(2, 3, device="meta") @ torch.empty(3, 4, device="meta")).unsqueeze(0).relu()
    >>> tally.counts()
    (24, 48, <FlopKind.MATMUL: 'matmul'>, True)
    """

    macs: int = 0
    flops: int = 0
    known: bool = True
    kind: FlopKind = FlopKind.NONE

    def add(self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> None:
        """Count one call ``func(*args, **kwargs)`` that gave ``out``."""
        if not self.known:
            return
        rule, swapped = _rule_of(func)
        if rule is None or not rule.counts:
            method = getattr(torch.Tensor, getattr(func, "__name__", ""), None) is func
            self.known = counted_without_formula("call_method" if method else "call_function", func, None, rule)
            return
        operands = (args[1], args[0], *args[2:]) if swapped and len(args) >= 2 else args
        try:
            with torch._C.DisableTorchFunction():
                macs = rule.macs(None, operands, dict(kwargs), out) if rule.macs is not None else 0
                extra = rule.flops(None, operands, dict(kwargs), out) if rule.flops is not None else 0
        except Exception:  # a formula that does not apply to these arguments
            self.known = False
            return
        if macs > self.macs:  # the kind of the larger part
            self.kind = rule.kind
        self.macs += macs
        self.flops += 2 * macs + extra

    def counts(self) -> tuple[int, int, FlopKind, bool]:
        """``(macs, flops, kind, known)``, as a node's record holds them (nothing counted while unknown)."""
        return (self.macs, self.flops, self.kind, True) if self.known else (0, 0, FlopKind.NONE, False)


_NOT_TENSORS = frozenset({int, float, bool, str, type(None), slice, type(Ellipsis), torch.dtype, torch.device})
"""Exact types of arguments that are neither tensors nor containers (most arguments besides the tensors)."""


def _meta_tensors(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool | None:
    """Every tensor argument (also inside one list or tuple) is a plain tensor on meta; None without any."""
    found: bool | None = None
    for value in (*args, *kwargs.values()) if kwargs else args:
        kind = type(value)
        if kind in _NOT_TENSORS:  # a size, a dim, a dtype: the common arguments, decided by their type alone
            continue
        if kind in PLAIN_TENSORS:
            if not value.is_meta:
                return False
            found = True
            continue
        items = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, torch.Tensor):
                if type(item) not in PLAIN_TENSORS or not item.is_meta:
                    return False
                found = True
    return found


_ALL_TRUE = torch.Tensor._is_all_true
_TO = torch.Tensor.to
_CPU = torch.device("cpu")


class _RuledMeta(TorchFunctionMode):
    def __init__(self, resized: bool, counting: FlopTally | None = None) -> None:
        super().__init__()
        self.resized = resized
        self.counting = counting
        self.forgotten: dict[int, torch.Tensor] = {}
        """Known data edited in place by values that are not known, by the address of its memory (it is kept here,
        so no other tensor gets that address): it and its views get ``meta`` stand-ins from then on."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        if self.counting is not None:
            out = self._answered(func, args, kwargs)
            self.counting.add(func, args, kwargs or {}, out)
            return out
        return self._answered(func, args, kwargs)

    def _answered(self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None) -> Any:
        direct = None if self.forgotten else _direct(func)
        if direct is not None:  # what the steps below end in when every tensor argument is on meta, without them
            rule, swapped, product = direct
            kwargs = kwargs or {}
            with torch._C.DisableTorchFunction():
                on_meta = _meta_tensors(args, kwargs)
                if on_meta:
                    if product and not self.resized:
                        _same_dtypes(args, kwargs)
                    out = _answer(rule, args, kwargs, swapped, self.resized)
            if on_meta:
                return _as_autocast_gives(func, args, kwargs, func(*args, **kwargs) if out is FALLBACK else out)
        if self.forgotten:
            args, kwargs = self._unknown(args), {k: self._unknown(v) for k, v in (kwargs or {}).items()}
        elif not kwargs and len(args) == 1 and isinstance(args[0], torch.Tensor) and _passes_through(func):
            return func(*args)  # x.shape, x.dim(): what the steps below would end in, without them
        kwargs = kwargs or {}
        if func is _ALL_TRUE and len(args) == 1 and type(args[0]) in PLAIN_TENSORS and args[0].is_meta:
            return torch.tensor(True, device="cpu")  # a check of values that meta does not have (module docstring)
        if func in DATA_FACTORIES:
            made = self._known_data(func, args, kwargs)
            if made is not None:
                return made
        elif _known_with_meta(func, args, kwargs):  # also known data made by an earlier run (a model's own cache)
            edited = args[0] if args and edits_values("call_method", func) else None
            if (
                isinstance(edited, torch.Tensor)
                and type(edited) in PLAIN_TENSORS
                and not edited.is_meta
                and edited.dim()
            ):
                # known data edited by values that are not known (pos.add_(x.sum())): no longer known
                self.forgotten[edited.untyped_storage().data_ptr()] = edited
                args = self._unknown(args)
            converted = _meeting_meta(func, args, kwargs)
            if unsettled(func):
                args, kwargs = converted
            else:  # a CPU integer tensor an op reads beside meta ones (pack_padded_sequence's lengths): its data
                return stand_ins_or_data(lambda a, k: self._run(func, a, k), (args, kwargs), converted)
        elif unknown_to_cpu(func, args, kwargs):  # x.cpu() of data not known: still not known, a stand-in
            return args[0]
        elif func is _TO:  # known data moved to the input's device (meta in a trace) stays known
            args, kwargs = kept_in_place(func, args, kwargs)
        return self._run(func, args, kwargs)

    def _run(self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """``func(*args, **kwargs)`` by its rule where one answers, else run (known data has met meta already)."""
        if func in _PRODUCTS and not self.resized:  # a trace (resized) goes on past it, as shape propagation does
            _same_dtypes(args, kwargs)
        if (
            func is F.interpolate and not self.resized
        ):  # an empty output: meta's linear kernels give it, the CPU's raise
            refused = refused_interpolation(args, kwargs)
            if refused is not None:
                raise RuntimeError(refused)
        rule, swapped = _rule_of(func)
        if rule is not None and rule.shape is not None:
            # rules build their meta tensors explicitly: other modes (torch.device("meta")) would only slow them down
            with torch._C.DisableTorchFunction():
                on_meta = _meta_tensors(args, kwargs)
            if on_meta is None:  # torch.zeros(2, 3): on meta when that is the default device
                on_meta = torch.get_default_device().type == "meta"
            if on_meta:
                with torch._C.DisableTorchFunction():
                    out = _answer(rule, args, kwargs, swapped, self.resized)
                if out is not FALLBACK:
                    return _as_autocast_gives(func, args, kwargs, out)
        return _as_autocast_gives(func, args, kwargs, func(*args, **kwargs))

    def _unknown(self, value: Any) -> Any:
        """``value`` (a tensor, or a list or tuple of them) with a ``meta`` stand-in for each tensor whose memory
        holds data no longer known (:attr:`forgotten`)."""
        if type(value) in (list, tuple):
            return type(value)(self._unknown(v) for v in value)
        if isinstance(value, torch.Tensor) and not value.is_meta:
            with torch._C.DisableTorchFunction():
                if value.untyped_storage().data_ptr() in self.forgotten:
                    return torch.empty_like(value, device="meta")
        return value

    def _known_data(self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """A factory of known data (``torch.arange(n, device=x.device)``) asked for on meta: made on the CPU when
        small, as a real forward makes it; else None (made as usual)."""
        device = kwargs.get("device")
        on_meta = torch.get_default_device().type == "meta" if device is None else torch.device(device).type == "meta"
        if not on_meta or not from_known_data((args, kwargs)):
            return None
        shaped = func(*args, **kwargs)  # on meta: its size
        if not isinstance(shaped, torch.Tensor) or shaped.numel() > DATA_LIMIT:
            return shaped
        try:
            return func(*off_meta(args, _CPU), **{**off_meta(kwargs, _CPU), "device": _CPU})
        except Exception:  # what the CPU refuses and meta takes (pin_memory without an accelerator): as asked
            return shaped


_THROUGH: dict[tuple[int, bool], dict[Any, bool]] = {}


def _as_autocast_gives(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> Any:
    """``out`` in the dtype a real forward gives it inside a ``torch.autocast`` block (meta tensors are not
    autocast's: :mod:`torchsurgeon.autocast`); as it is outside any."""
    regions = autocast_now()
    if not regions:
        return out
    with torch._C.DisableTorchFunction():
        dtypes = [t.dtype for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
        return as_autocast_gives(op_name("call_function", func), dtypes, regions, out)


_Answers = TypeVar("_Answers")


def _of_this_version(table: dict[tuple[int, bool], dict[Any, _Answers]]) -> dict[Any, _Answers]:
    """``table``'s answers for the registry's state now (:func:`rules_version`); a few states are kept."""
    version = rules_version()
    known = table.get(version)
    if known is None:
        if len(table) > 8:
            table.clear()
        known = table.setdefault(version, {})
    return known


def _passes_through(func: Any) -> bool:
    """Whether :class:`_RuledMeta` runs ``func`` of one tensor as it is: no rule answers it, it makes no data and
    is not random, and known data cannot meet ``meta`` in one tensor (``x.shape``, ``x.dim()``, ``x.is_meta``:
    most calls of a model's Python and of torchsurgeon's own checks).  Cached per :func:`rules_version`."""
    known = _of_this_version(_THROUGH)
    try:
        through = known.get(func)
    except TypeError:  # an unhashable callable: the usual steps
        return False
    if through is None:
        rule, _ = _rule_of(func)
        through = known[func] = (
            func is not _ALL_TRUE
            and func is not torch.Tensor.cpu  # unknown_to_cpu
            and func not in DATA_FACTORIES
            and func not in _PRODUCTS
            and not unsettled(func)
            and (rule is None or rule.shape is None)
        )
    return through


_DIRECT: dict[tuple[int, bool], dict[Any, tuple[Rule, bool, bool] | None]] = {}


def _direct(func: Any) -> tuple[Rule, bool, bool] | None:
    """``(rule, swapped, product)`` of ``func`` when :class:`_RuledMeta` answers it by its rule as soon as its tensor
    arguments are all on ``meta`` (then no known data meets them: the other steps pass it by), None when one of
    those steps may act on it (a factory, a move, an interpolation, a check of values) or no rule answers it.
    Cached per :func:`rules_version`."""
    known = _of_this_version(_DIRECT)
    try:
        if func in known:
            return known[func]
    except TypeError:  # an unhashable callable: the usual steps
        return None
    rule, swapped = _rule_of(func)
    special = (
        func is _ALL_TRUE
        or func is _TO
        or func is torch.Tensor.cpu
        or func is F.interpolate
        or func in DATA_FACTORIES
        or unsettled(func)
    )
    known[func] = None if special or rule is None or rule.shape is None else (rule, swapped, func in _PRODUCTS)
    return known[func]


_PRODUCTS = frozenset(
    (
        *(F.linear, F.bilinear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d),
        *(F.conv_transpose3d, torch.matmul, torch.mm, torch.bmm, torch.addmm, operator.matmul),
        *(torch.Tensor.__matmul__, torch.Tensor.matmul),
    )
)
"""Products of two tensors: a real forward raises when their floating-point dtypes differ, meta does not."""


def _same_dtypes(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Raise as a real forward outside ``torch.autocast`` does when the floating-point tensors a product multiplies
    (and its bias) differ in dtype (a float32 layer given bfloat16 activations)."""
    mixed = mixed_dtypes((*args, *kwargs.values()))
    if mixed is not None:
        a, b = mixed
        raise RuntimeError(f"expected both operands to have the same dtype, but got {a} and {b} (outside autocast)")


def _known_with_meta(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """Whether the arguments hold a CPU tensor of known data (more than 0-dim) and a ``meta`` tensor, or known
    data given to a random op (which gets a meta stand-in: its result is not known)."""
    data, meta = data_and_meta(args, kwargs)
    return data and (meta or unsettled(func))


def _meeting_meta(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A call's arguments once known data meets ``meta`` tensors: ``meta`` stand-ins for it
    (:func:`~torchsurgeon.knowndata.on_one_device`), after an index into a ``meta`` table by known positions is
    checked as a real forward checks it (:func:`~torchsurgeon.bounds.index_past`)."""
    if unsettled(func):
        return stand_ins(args), {k: stand_ins(v) for k, v in kwargs.items()}
    found = index_past(func, args, kwargs)
    if found is not None:
        raise found.error(found.message)
    return on_one_device(masks_as_indices(func, tuple(args)), dict(kwargs), module=False)


def ruled_leaf(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    past_cautions: bool = False,
    resized: bool = False,
) -> Any:
    """The output on ``meta`` of ``module(*args, **kwargs)`` from its module rule, without running it; else FALLBACK.

    As shape propagation applies a module's rule, in training mode too: only
    the rule of the module's own class, or of a base class whose ``forward``
    it keeps, and only when every tensor argument is on ``meta``.  The
    module is read, never run (its hooks neither), so it may be the user's
    own.  FALLBACK: no such rule, or the rule declines, finds a mismatch or
    cautions about the batch (a batch norm in training mode averaging one
    value per channel raises): running the module decides.  With
    ``past_cautions`` the output is given despite such a caution: a trace
    asking about shapes goes on at a batch that is too small, as shape
    propagation does (its report says so); with ``resized``, past a
    mismatch, with the output of the layer resized to fit (a ``LayerNorm``
    given another width), as shape propagation goes on past an invalid layer.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> ruled_leaf(nn.Linear(3, 2).eval(), (torch.empty(4, 3, device="meta"),), {}).shape
    torch.Size([4, 2])
    >>> ruled_leaf(nn.Linear(3, 2).eval(), (torch.empty(4, 5, device="meta"),), {})
    FALLBACK
    >>> ruled_leaf(nn.Linear(3, 2).eval(), (torch.empty(4, 5, device="meta"),), {}, resized=True).shape
    torch.Size([4, 2])
    >>> ruled_leaf(nn.BatchNorm1d(3), (torch.empty(1, 3, device="meta"),), {})  # training, 1 value: it raises
    FALLBACK
    >>> ruled_leaf(nn.BatchNorm1d(3), (torch.empty(2, 3, device="meta"),), {}).shape
    torch.Size([2, 3])
    """
    found = module_rule(type(module))
    if found is None or found[0].shape is None:
        return FALLBACK
    rule, owner = found
    if not runs_forward_of(type(module), owner):
        return FALLBACK  # a subclass with its own forward (a Conv2d that pads first): its forward decides
    with torch._C.DisableTorchFunction():
        if not _meta_tensors(args, kwargs):
            return FALLBACK
        return _answer(rule, args, kwargs, False, resized, module, past_cautions)


def answered_by_rules(copy_: torch.nn.Module) -> torch.nn.Module:
    """``copy_`` (a copy of torchsurgeon's own, which nobody else sees) with each of its modules that a module rule
    answers (:func:`ruled_leaf`) answered by it when called on ``meta`` tensors, instead of running its ``forward``.

    A forward of a whole model inside :func:`ruled_meta` runs each layer's Python (a batch norm's checks and
    momentum, ``F.batch_norm``'s dispatch to the mode) before the mode answers the op inside by its rule: about
    half of the time of a cross-check's forward of MONAI's UNETR.  The module rule gives what those ops give
    (shape, dtype and strides, as shape propagation takes them): each such module gets an instance ``forward``
    that asks :func:`ruled_leaf` first.  Its hooks still run (``__call__`` runs them around ``forward``), and the
    module runs its own ``forward`` wherever the rule declines: a mismatch, which its ops raise as a real forward
    does (a float32 layer fed bfloat16), a batch too small, arguments not all on ``meta``, or inside
    ``torch.autocast`` (whose dtypes the ops' answers follow, the module rule does not).  A module with a
    ``forward`` of its own on the instance, or whose class overrides the ``forward`` of the class whose rule
    applies, keeps it.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> model = answered_by_rules(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).to("meta"))
    >>> with torch.no_grad(), ruled_meta():
    ...     out = model(torch.empty(2, 3, device="meta"))
    >>> tuple(out.shape), out.device.type
    ((2, 4), 'meta')
    """
    for module in copy_.modules():
        kind = type(module)
        found = module_rule(kind)
        if (
            found is None
            or found[0].shape is None
            or not runs_forward_of(kind, found[1])
            or "forward" in module.__dict__
            or isinstance(module, torch.jit.ScriptModule)
        ):
            continue
        module.__dict__["forward"] = _RuledForward(module)
    return copy_


class _RuledForward:
    """A module's ``forward`` answered by its module rule (:func:`answered_by_rules`); its class's otherwise."""

    __slots__ = ("module",)

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = weakref.ref(module)  # no reference cycle: the copy is freed as soon as it is dropped

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module = self.module()
        assert module is not None  # it calls this forward
        if not autocast_now():
            out = ruled_leaf(module, args, kwargs)
            if out is not FALLBACK:
                return out
        return type(module).forward(module, *args, **kwargs)


def ruled_call(op: str, target: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The output on ``meta`` of a graph node's function or method call from its rule, else FALLBACK.

    What running the call inside :func:`ruled_meta` with ``resized=True``
    gives, without torch's dispatch to the mode: a trace asking Python's
    questions about shapes computes many values this way.

    Examples
    --------
    >>> import torch
    >>> x = torch.empty(2, 3, device="meta")
    >>> ruled_call("call_method", "transpose", (x, 0, 1), {}).shape
    torch.Size([3, 2])
    >>> ruled_call("call_function", torch.relu, (torch.empty(2),), {})  # not on meta: the op runs
    FALLBACK
    """
    if op == "call_function":
        rule = function_rule(target)
    elif op == "call_method" and args and isinstance(args[0], torch.Tensor):
        rule = method_rule(str(target))
    else:
        return FALLBACK
    if rule is None or rule.shape is None:
        return FALLBACK
    with torch._C.DisableTorchFunction():
        if not _meta_tensors(args, kwargs):
            return FALLBACK
        return _answer(rule, args, kwargs, False, True)


def _answer(
    rule: Rule,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    swapped: bool,
    resized: bool,
    module: Any = None,
    past_cautions: bool = False,
) -> Any:
    """The rule's output, else FALLBACK (an error, a caution unless ``past_cautions``, or a mismatch unless
    ``resized``: torch's op decides)."""
    operands = (args[1], args[0], *args[2:]) if swapped and len(args) >= 2 else args
    call = Call("", "")
    try:
        out = rule.shape(module, operands, dict(kwargs), call)  # type: ignore[misc]
    except Exception:  # the op raises on these arguments: torch says how
        return FALLBACK
    return FALLBACK if out is None or (call.cautions and not past_cautions) or (call.findings and not resized) else out


@contextlib.contextmanager
def ruled_meta(*, resized: bool = False, counting: FlopTally | None = None) -> Iterator[None]:
    """Answer torch calls on ``meta`` tensors by their rules, for the code run inside.

    With ``resized``, a call its rule finds does not fit (a convolution fed
    another channel count) gets the output of the layer resized to fit,
    as shape propagation continues past a mismatch, instead of torch's
    error: a trace answers Python's questions about shapes this way, so
    that its graph also holds what follows a layer the input does not fit.
    With ``counting``, each call is counted there (:class:`FlopTally`).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> bn = nn.BatchNorm2d(8, device="meta").eval()
    >>> with ruled_meta():
    ...     out = torch.relu(bn(torch.empty(2, 8, 5, 5, device="meta")) + 1)
    >>> tuple(out.shape), out.device.type
    ((2, 8, 5, 5), 'meta')
    """
    with _RuledMeta(resized, counting), shared_outputs(False), autocast_on_cpu():  # the code may reshape in place
        yield


def _cpu_kernels() -> dict[Any, Callable[..., Any]]:
    """aten ops whose meta kernel refuses what their CPU kernel runs, with the torch function whose rule answers."""
    kernels: dict[Any, Callable[..., Any]] = {}
    if hasattr(torch.ops.aten, "_grouped_mm") and hasattr(torch, "_grouped_mm"):
        kernels[torch.ops.aten._grouped_mm.default] = torch._grouped_mm  # meta: bfloat16 only; CPU: float32 too
    return kernels


_CPU_KERNELS = _cpu_kernels()


def by_cpu_rule(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """For a dispatch mode (fake tensors): the output of an aten op whose meta kernel refuses arguments its CPU
    kernel runs, made by the rule of its torch function on stand-ins; FALLBACK for every other call.

    A float32 Mixture-of-Experts layer runs ``aten._grouped_mm`` on the CPU, while its meta kernel (which fake
    tensors use) accepts bfloat16 only; its backward calls the same op.  The output is made with the arguments'
    device, by the modes below the caller (a fake tensor under ``FakeTensorMode``).

    Examples
    --------
    >>> import torch
    >>> a, b = torch.empty(8, 16, device="meta"), torch.empty(2, 16, 4, device="meta")
    >>> offs = torch.empty(2, dtype=torch.int32, device="meta")
    >>> by_cpu_rule(torch.ops.aten._grouped_mm.default, (a, b), {"offs": offs}).shape
    torch.Size([8, 4])
    >>> by_cpu_rule(torch.ops.aten.mm.default, (a, b), {})
    FALLBACK
    """
    stand_in = _CPU_KERNELS.get(func)
    rule = function_rule(stand_in) if stand_in is not None else None
    if rule is None or rule.shape is None:
        return FALLBACK
    device = next((t.device for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
    with torch.utils._python_dispatch._disable_current_modes():  # real meta stand-ins, whatever modes run
        meta = {
            id(t): torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
            for t in (*args, *kwargs.values())
            if isinstance(t, torch.Tensor)
        }
        on_meta = tuple([meta.get(id(v), v) for v in args])
        out = _answer(rule, on_meta, {k: meta.get(id(v), v) for k, v in kwargs.items()}, False, False)
    if out is FALLBACK or not isinstance(out, torch.Tensor):
        return FALLBACK
    return torch.empty_strided(out.shape, out.stride(), dtype=out.dtype, device=device)


_ONE_DTYPE = frozenset(
    getattr(torch.ops.aten, name).default for name in ("mm", "addmm", "mv", "addmv") if hasattr(torch.ops.aten, name)
)
"""Products whose CPU and CUDA kernels refuse operands of two dtypes and whose meta kernels run them (``F.linear``
and ``@`` come down to them)."""


def check_as_the_cpu(func: Any, args: tuple[Any, ...]) -> None:
    """For a dispatch mode (fake tensors): raise as a real kernel does where the meta kernel lets arguments through.

    A bfloat16 ``nn.Linear`` given a float32 input (a bf16 LLaMA whose final
    norm was kept in float32) runs on fake tensors, and a memory plan of a step
    that cannot run was given with confidence.

    Examples
    --------
    >>> import torch
    >>> a, b = torch.empty(2, 3, device="meta"), torch.empty(3, 4, device="meta", dtype=torch.bfloat16)
    >>> check_as_the_cpu(torch.ops.aten.mm.default, (a, b))
    Traceback (most recent call last):
    ...
    RuntimeError: expected m1 and m2 to have the same dtype, but got: float32 != bfloat16
    """
    if func not in _ONE_DTYPE:
        return
    dtypes = list(dict.fromkeys(a.dtype for a in args if isinstance(a, torch.Tensor)))
    if len(dtypes) > 1:
        got = " != ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: {got}")


def _norm_parameters() -> dict[Any, tuple[int, ...]]:
    """Norm ops whose statistics (outputs 1 and 2) the CPU keeps in float32 for a half-precision input with float32
    parameters, with the positions of those parameters (weight, bias, running mean and variance)."""
    aten = torch.ops.aten
    ops = {
        "native_layer_norm.default": (2, 3),
        "native_group_norm.default": (1, 2),
        "native_batch_norm.default": (1, 2, 3, 4),
        "_native_batch_norm_legit.default": (1, 2, 3, 4),
        "_native_batch_norm_legit.no_stats": (1, 2),
        "_native_batch_norm_legit_functional.default": (1, 2, 3, 4),
        "_batch_norm_with_update.default": (1, 2, 3, 4),
    }
    found = {}
    for name, positions in ops.items():
        packet, overload = name.split(".")
        op = getattr(getattr(aten, packet, None), overload, None)
        if op is not None:
            found[op] = positions
    return found


_NORM_PARAMETERS = _norm_parameters()


def as_the_cpu_returns(func: Any, args: tuple[Any, ...], out: Any) -> Any:
    """For a dispatch mode (fake tensors): ``out`` with the dtypes the CPU kernel gives where the meta kernel may give
    others.

    A layer, group or batch norm keeps its mean and inverse std, which
    autograd saves, in float32 on the CPU when its input is bfloat16 or
    float16 and a parameter (weight, bias, running statistics) is float32, as
    under CPU autocast (the norms run in the input's dtype, their weights stay
    float32); else in the input's dtype.  Fake tensors made them in the
    input's dtype: a plan of Swin V2 in bfloat16 was 0.9 % under its real
    step, a lone LayerNorm over 512 tokens 2 %.

    Examples
    --------
    >>> import torch
    >>> from torch._subclasses.fake_tensor import FakeTensorMode
    >>> layer_norm = torch.ops.aten.native_layer_norm.default
    >>> with FakeTensorMode():
    ...     x, w = torch.empty(2, 8, 4, dtype=torch.bfloat16), torch.empty(4)
    ...     out = layer_norm(x, [4], w, None, 1e-5)
    ...     cpu = as_the_cpu_returns(layer_norm, (x, [4], w, None, 1e-5), out)
    >>> out[1].dtype, cpu[1].dtype
    (torch.bfloat16, torch.float32)
    """
    positions = _NORM_PARAMETERS.get(func)
    if positions is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return out
    mixed = args[0].dtype in (torch.bfloat16, torch.float16) and any(
        isinstance(args[i], torch.Tensor) and args[i].dtype == torch.float32 for i in positions if i < len(args)
    )
    dtype = torch.float32 if mixed else args[0].dtype
    if all(t.dtype == dtype for t in out[1:3]):
        return out
    stats = [
        torch.empty_strided(t.shape, t.stride(), dtype=dtype, device=t.device) if 1 <= i <= 2 else t
        for i, t in enumerate(out)
    ]
    return type(out)(stats)
