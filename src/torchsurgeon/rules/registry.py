"""One registry of op rules: a shape rule and a MAC/FLOP formula per op, side by side.

Modules are looked up by class (the nearest class of the module's MRO that
has a rule), functions by identity (or, for functions of optional libraries,
by ``module.qualname``), tensor methods by name.  Built-in rules live in the
other modules of this package, one file per op family; users add theirs with
:func:`register_rule`, and a registered rule wins over the built-ins and over
running the op on ``meta``.  Registering the same target twice is refused.

Calling conventions (internal; :func:`register_rule` adapts user functions):

* ``shape(module, args, kwargs, call)`` returns the output (meta tensors and
  Python values), ``None`` when a rank mismatch leaves no output, or
  :data:`FALLBACK` when the arguments are outside what the rule computes
  exactly (the op then runs on ``meta``).  ``call`` is the :class:`Call`
  being evaluated: a rule reports a layer that does not fit with
  ``call.mismatch(...)`` and returns the output *as if the layer had been
  resized to fit*.
* ``macs(module, args, kwargs, out)`` and ``flops(...)`` return ints: the
  multiply-accumulates and the FLOPs that are not ``2 * macs`` (norms).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn

from ..errors import InputError, as_written
from ..records import Finding, FlopKind

__all__ = (
    "FALLBACK",
    "Call",
    "Rule",
    "RuleTarget",
    "builtin",
    "builtin_leaves",
    "counted_without_formula",
    "disabled_rules",
    "function_rule",
    "method_rule",
    "module_rule",
    "register_rule",
    "registered_rules",
    "rules_version",
    "runs_forward_of",
    "unregister_rule",
    "user_ruled",
)


class _Fallback:
    """Marker returned by a rule: not a case it computes exactly; run the op on meta."""

    def __repr__(self) -> str:
        return "FALLBACK"


FALLBACK: Any = _Fallback()
"""What a shape rule returns for arguments it does not compute exactly."""

RuleTarget = Union[type[nn.Module], Callable[..., Any], str]
"""A module class, a function, or a tensor method name (``"view"``); a dotted string names a function."""

ShapeFn = Callable[[Any, tuple[Any, ...], dict[str, Any], "Call"], Any]
CountFn = Callable[[Any, tuple[Any, ...], dict[str, Any], Any], int]


@dataclass
class Call:
    """The node a rule is evaluating: its user-facing name and type, and the mismatches found.

    ``from_input`` says whether the node reads a model input (directly, or
    through padding, dropout, identity or dtype conversions, or with its axes
    moved but its channels kept: a video's frames merged into the batch); the
    fix of a mismatch is then a fold of the input layer, not a change of the
    layer before); ``scope`` and ``scope_module`` are the module whose
    ``forward`` made the call; ``batch_added`` that the inputs were given as
    per-sample shapes, so their first dimension is the batch; ``pooled``
    that the node reads features that do not follow the input's size (what an
    adaptive pooling gives, through flatten, views, norms and dropout, or no
    flattened map at all: a transformer's pooled token); ``model_dtype``
    the floating dtype most of the model's parameters have (a layer of another
    dtype is the odd one, not its input); ``fold_input``,
    for a node reading the input with its axes moved, gives the ``input=`` a fold
    of it needs, as Python, from the channel count the layer expects (the graph
    alone does not show that the move keeps the channels); ``fold_alone``, for a node reading the input, gives
    from the channel count it gets the layers a fold names with ``layer=`` (others read the input only
    rearranged) and why no fold runs, if none does (:func:`~torchsurgeon.foldalone.fold_alone`).
    """

    layer: str
    type: str
    from_input: bool = False
    scope: str = ""
    scope_module: nn.Module | None = None
    batch_added: bool = False
    pooled: bool = False
    model_dtype: torch.dtype | None = None
    findings: list[Finding] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)
    fold_input: Callable[[int], str] | None = None
    fold_layout: tuple[int, int] = (1, 0)
    """For a node reading the input's channels merged with another axis (an image pair stacked, ``(t c)``), how many
    groups of channels the merge makes, and the channels joined to them (``torch.cat([x, state], 1)``): the layer
    gets and expects ``groups`` × the input's channels + ``joined``."""
    fold_alone: Callable[[int], tuple[tuple[str, ...], str]] | None = None
    where: str = ""
    whole_model: bool = False
    """Whether the layer is the whole model (a model that is one ``nn.LSTM``): a fix replaces ``model`` itself."""

    def mismatch(
        self, what: str, expected: Any, got: Any, fix: str, *, layer: str | None = None, type: str | None = None
    ) -> None:
        """Record that the layer expects ``what=expected`` but got ``got``; ``fix`` runs as written.

        ``layer`` and ``type`` name another layer than the node's own (the
        module whose ``forward`` called a functional convolution).
        """
        where = "" if layer else self.where  # another layer: a module, named by its qualified name
        self.findings.append(Finding(layer or self.layer, type or self.type, what, expected, got, fix, where))

    def caution(self, text: str) -> None:
        """Record what the layer needs of a *batch* this one lacks (batch norm in training mode at batch 1).

        The layer fits; the report says that a real forward at this batch
        raises, and how to check another.
        """
        self.cautions.append(text)


@dataclass(frozen=True)
class Rule:
    """What torchsurgeon knows about one op.

    Attributes
    ----------
    target : module class, function or str
        What the rule is for.
    shape : callable or None
        The shape rule (internal convention, see the module docstring).
    macs, flops : callable or None
        MAC formula and extra (non-MAC) FLOP formula.
    kind : FlopKind
        What the op's FLOPs are made of.
    fits : bool
        The shape rule checks whether a layer with weights fits its input
        (conv, linear, norms, embedding): a subclass with its own
        ``forward`` is still checked by it.
    builtin : bool
        Shipped with torchsurgeon (``False`` for :func:`register_rule`).
    uncounted : bool
        The op does arithmetic that its shapes do not tell (``einsum``): its
        FLOPs are listed as not counted rather than counted as zero.
    python : bool
        On Python values (no tensor among its arguments: ``x.shape[2] // 7``)
        the op is plain Python, and its value is exact: propagation computes
        it directly.
    """

    target: Any
    shape: ShapeFn | None = None
    macs: CountFn | None = None
    flops: CountFn | None = None
    kind: FlopKind = FlopKind.NONE
    fits: bool = False
    builtin: bool = True
    uncounted: bool = False
    python: bool = False

    @property
    def counts(self) -> bool:
        """Whether the rule has a MAC or FLOP formula."""
        return self.macs is not None or self.flops is not None


@dataclass
class _Table:
    modules: dict[type[nn.Module], Rule] = field(default_factory=dict)
    functions: dict[Any, Rule] = field(default_factory=dict)
    named: dict[str, Rule] = field(default_factory=dict)
    methods: dict[str, Rule] = field(default_factory=dict)

    def slot(self, target: Any) -> tuple[dict[Any, Rule], Any]:
        if isinstance(target, type):
            return self.modules, target  # type: ignore[return-value]
        if isinstance(target, str):
            return (self.named, target) if "." in target else (self.methods, target)
        return self.functions, target


_BUILTIN = _Table()
_USER = _Table()
_DISABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("torchsurgeon_rules_disabled", default=False)
_module_cache: dict[type[nn.Module], tuple[Rule, type[nn.Module]] | None] = {}
_NAMED_LEAVES: list[str] = []  # builtin(..., leaf=True): resolved by builtin_leaves once their library is imported
_generation = [0]  # bumped by every registration and removal


def _check_target(target: Any) -> None:
    if isinstance(target, type):
        if not issubclass(target, nn.Module):
            raise InputError(f"register_rule target {target.__name__} is a class but not an nn.Module subclass")
    elif isinstance(target, str):
        if not target or not target.replace(".", "").replace("_", "").isalnum():
            raise InputError(f"register_rule target {target!r} — give a tensor method name such as 'view'")
    elif not callable(target):
        raise InputError(
            f"register_rule target {target!r} — give an nn.Module class, a function, or a tensor method name"
        )


def _unregister_call(target: Any) -> str:
    """The ``unregister_rule`` call for ``target`` as a user's code names it: torch's by their path
    (``unregister_rule(nn.ReLU)``), the user's own by their name.

    Examples
    --------
    >>> import torch
    >>> _unregister_call(torch.nn.ReLU), _unregister_call("view"), _unregister_call(torch.nn.functional.relu)
    ('unregister_rule(nn.ReLU)', "unregister_rule('view')", 'unregister_rule(torch.nn.functional.relu)')
    """
    return f"unregister_rule({as_written(target)})"


def _add(table: _Table, rule: Rule, what: str) -> None:
    slot, key = table.slot(rule.target)
    try:
        present = key in slot
    except TypeError as exc:  # an unhashable callable
        raise InputError(f"{what} target {rule.target!r} cannot be a registry key (unhashable)") from exc
    if present:
        name = getattr(rule.target, "__qualname__", rule.target)
        fix = f"{_unregister_call(rule.target)} first" if table is _USER else "one rule per op: merge the two"
        raise InputError(f"{what}: a rule for {name!r} is already registered — {fix}")
    slot[key] = rule
    _module_cache.clear()
    _generation[0] += 1


def builtin(
    *targets: RuleTarget,
    shape: ShapeFn | None = None,
    macs: CountFn | None = None,
    flops: CountFn | None = None,
    kind: FlopKind = FlopKind.NONE,
    fits: bool = False,
    uncounted: bool = False,
    python: bool = False,
    leaf: bool = False,
) -> None:
    """Register one built-in rule for several targets (a function and its method twin...); ``leaf``: classes and
    functions named by their qualified name that fx would trace through, whose rule describes the whole layer or
    call (one node)."""
    for target in targets:
        _add(_BUILTIN, Rule(target, shape, macs, flops, kind, fits, True, uncounted, python), "built-in rule")
        if leaf:
            assert isinstance(target, str), "a built-in leaf is named by its qualified name"
            _NAMED_LEAVES.append(target)


def builtin_leaves() -> tuple[type[nn.Module], ...]:
    """The classes built-in rules keep as one node (``builtin(..., leaf=True)``) whose library is imported; none
    while rules are disabled (:func:`disabled_rules`: traced through, as without their rule).

    Examples
    --------
    >>> from timm.layers import Conv2dSame  # TensorFlow's 'SAME' padding, then the convolution: one rule
    >>> Conv2dSame in builtin_leaves()
    True
    """
    return tuple(kind for kind in _named_leaves() if isinstance(kind, type) and issubclass(kind, nn.Module))


def builtin_leaf_functions() -> tuple[Callable[..., Any], ...]:
    """The functions built-in rules keep as one call (``builtin(..., leaf=True)``, fx's ``autowrap_functions``)
    whose library is imported; none while rules are disabled.

    Examples
    --------
    >>> from monai.networks.nets import swin_unetr  # cuts maps into windows, asking their shapes in Python
    >>> swin_unetr.window_partition in builtin_leaf_functions()
    True
    """
    return tuple(f for f in _named_leaves() if not isinstance(f, type) and callable(f))


def _named_leaves() -> list[Any]:
    """What the names of ``builtin(..., leaf=True)`` stand for, in the libraries imported so far."""
    if _DISABLED.get():
        return []
    found = []
    for name in _NAMED_LEAVES:
        library, _, attribute = name.rpartition(".")
        value = getattr(sys.modules.get(library), attribute, None)
        if value is not None:
            found.append(value)
    return found


def register_rule(
    target: RuleTarget,
    *,
    shape: Callable[..., Any] | None = None,
    macs: Callable[..., int] | None = None,
    flops: Callable[..., int] | None = None,
) -> Rule:
    """Teach torchsurgeon the output shape and the MACs of a layer, function or tensor method.

    A registered rule wins over the built-in rules and over running the op
    on ``meta``, so the owner of a layer that cannot be traced or run on
    ``meta`` (value-dependent code, a custom kernel) can describe it.

    Parameters
    ----------
    target : nn.Module subclass, function, or str
        A module class (its subclasses that keep its ``forward`` use the
        rule too), a function called in ``forward`` (``torch.cumsum``, your
        own function wrapped with ``torch.fx.wrap``), or a tensor method
        name (``"cumsum"``).
    shape : callable, optional
        ``shape(module, *args, **kwargs)``: the output, from the call's
        arguments with tensors as ``meta`` tensors; ``module`` is the layer,
        or ``None`` for a function or method (a method gets the tensor as
        first argument).  Return ``meta`` tensors (``torch.empty(...,
        device="meta")``), a tuple or dict of them, or Python values.  An
        exception marks the layer invalid with its message.
    macs : callable, optional
        ``macs(module, output, *args, **kwargs) -> int``: its
        multiply-accumulates for these arguments (FLOPs count ``2 * macs``).
    flops : callable, optional
        ``flops(module, output, *args, **kwargs) -> int``: FLOPs beyond
        ``2 * macs`` (the norms' per-element arithmetic, for example).

    Returns
    -------
    Rule
        The registered rule; :func:`unregister_rule` removes it.

    Raises
    ------
    InputError
        If the target is not a module class, function or method name, no
        formula is given, or a rule for it is already registered.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torchsurgeon import paramcount, register_rule, unregister_rule
    >>> class TopK(nn.Module):  # value-dependent: cannot be traced or run on meta
    ...     def forward(self, x):
    ...         return x[:, : int(x.abs().sum() > 0) * 4]
    >>> _ = register_rule(
    ...     TopK,
    ...     shape=lambda m, x: torch.empty(x.shape[0], 4, device="meta"),
    ...     macs=lambda m, out, x: x.numel(),
    ... )
    >>> r = paramcount(nn.Sequential(nn.Linear(8, 16), TopK()), (8,))
    >>> r.output_shape, r.layer("1").macs, r.shape_fallbacks
    ((1, 4), 16, [])
    >>> unregister_rule(TopK)
    """
    _check_target(target)
    if shape is None and macs is None and flops is None:
        raise InputError("register_rule needs shape=, macs= or flops= — give at least one formula")
    rule = Rule(
        target,
        shape=_user_shape(shape) if shape is not None else None,
        macs=_user_count(macs) if macs is not None else None,
        flops=_user_count(flops) if flops is not None else None,
        kind=FlopKind.CUSTOM if macs is not None or flops is not None else FlopKind.NONE,
        builtin=False,
    )
    _add(_USER, rule, "register_rule")
    return rule


def _user_shape(fn: Callable[..., Any]) -> ShapeFn:
    def shape(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
        return fn(module, *args, **kwargs)

    return shape


def _user_count(fn: Callable[..., int]) -> CountFn:
    def count(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
        return int(fn(module, out, *args, **kwargs))

    return count


def unregister_rule(target: RuleTarget) -> None:
    """Remove the rule :func:`register_rule` registered for ``target``.

    Raises
    ------
    InputError
        If no user rule is registered for it (built-in rules cannot be removed;
        :func:`disabled_rules` turns them off for a block).

    Examples
    --------
    >>> from torchsurgeon import register_rule, unregister_rule
    >>> _ = register_rule("my_op", shape=lambda m, x: x)
    >>> unregister_rule("my_op")
    >>> unregister_rule("my_op")
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: no rule registered for 'my_op' — register_rule(...) registers one
    """
    slot, key = _USER.slot(target)
    if key not in slot:
        raise InputError(f"no rule registered for {as_written(target)} — register_rule(...) registers one")
    del slot[key]
    _module_cache.clear()
    _generation[0] += 1


@contextlib.contextmanager
def disabled_rules() -> Iterator[None]:
    """Turn the built-in rules off in this block (this thread only): every op runs on ``meta``.

    Rules registered with :func:`register_rule` still apply.  Used to check
    the rules against meta execution.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon import disabled_rules, paramcount
    >>> with disabled_rules():
    ...     paramcount(nn.Sequential(nn.Linear(4, 2), nn.ReLU()), (4,)).shape_fallbacks
    ['0', '1']
    """
    token = _DISABLED.set(True)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def _from(table: _Table, slot_name: str, key: Any) -> Rule | None:
    slot: dict[Any, Rule] = getattr(table, slot_name)
    try:
        return slot.get(key)
    except TypeError:  # unhashable callables
        return None


def rules_version() -> tuple[int, bool]:
    """What a cache of rule lookups keys on: it changes when a rule is registered or removed, and in
    a :func:`disabled_rules` block.

    Examples
    --------
    >>> before = rules_version()
    >>> _ = register_rule("my_op", shape=lambda m, x: x)
    >>> unregister_rule("my_op")
    >>> rules_version() == before
    False
    """
    return _generation[0], _DISABLED.get()


def module_rule(kind: type[nn.Module]) -> tuple[Rule, type[nn.Module]] | None:
    """The rule of the nearest class in ``kind``'s MRO that has one, and that class; user rules first."""
    disabled = _DISABLED.get()
    if not disabled:
        try:
            return _module_cache[kind]
        except KeyError:
            pass
    found: tuple[Rule, type[nn.Module]] | None = None
    for cls in kind.__mro__:  # built-ins for optional libraries' classes are registered by qualified name
        rule = _USER.modules.get(cls) or (
            None
            if disabled
            else _BUILTIN.modules.get(cls) or _BUILTIN.named.get(f"{cls.__module__}.{cls.__qualname__}")
        )
        if rule is not None:
            found = (rule, cls)
            break
    if not disabled:
        _module_cache[kind] = found
    return found


def user_ruled(kind: type[nn.Module]) -> bool:
    """Whether a rule given to :func:`register_rule` gives the output of modules of class ``kind``: the tracer
    keeps them as single nodes (fx would trace through a class it can trace, and the rule would never be asked).

    Examples
    --------
    >>> from torch import nn
    >>> class Twice(nn.Module):
    ...     def forward(self, x):
    ...         return x * 2
    >>> _ = register_rule(Twice, shape=lambda m, x: x)
    >>> user_ruled(Twice), user_ruled(nn.Linear)
    (True, False)
    >>> unregister_rule(Twice)
    """
    if not _USER.modules:  # the common case: no rule of the user's
        return False
    found = module_rule(kind)
    return found is not None and not found[0].builtin and runs_forward_of(kind, found[1])


def runs_forward_of(kind: type[nn.Module], owner: type[nn.Module]) -> bool:
    """Whether a module of class ``kind`` runs the ``forward`` of ``owner``, the class whose rule
    :func:`module_rule` found: the rule then gives its output.  A subclass with its own ``forward``
    (an ``nn.Conv2d`` of one's own that pads first) is only checked by it.

    Examples
    --------
    >>> from torch import nn
    >>> class Padded(nn.Conv2d):
    ...     def forward(self, x):
    ...         return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))
    >>> runs_forward_of(nn.Conv2d, nn.Conv2d), runs_forward_of(Padded, nn.Conv2d)
    (True, False)
    """
    return owner is kind or kind.forward is owner.forward


def function_rule(fn: Any) -> Rule | None:
    """The rule of a function called in ``forward``: by identity, else by ``module.qualname``."""
    rule = _from(_USER, "functions", fn) or _by_name(_USER, fn)
    if rule is not None or _DISABLED.get():
        return rule
    return _from(_BUILTIN, "functions", fn) or _by_name(_BUILTIN, fn)


def _by_name(table: _Table, fn: Any) -> Rule | None:
    if not table.named:
        return None
    return table.named.get(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}")


def method_rule(name: str) -> Rule | None:
    """The rule of a tensor method, by name."""
    rule = _USER.methods.get(name)
    if rule is not None or _DISABLED.get():
        return rule
    return _BUILTIN.methods.get(name)


def registered_rules(*, builtin: bool | None = None) -> list[Rule]:
    """Every rule in the registry (``builtin=True``/``False`` for one kind only).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> targets = {r.target for r in registered_rules(builtin=True)}
    >>> nn.Conv2d in targets, torch.flatten in targets, "view" in targets
    (True, True, True)
    """
    tables = [t for t, b in ((_USER, False), (_BUILTIN, True)) if builtin is None or builtin == b]
    return [r for t in tables for slot in (t.modules, t.functions, t.named, t.methods) for r in slot.values()]


_VISIBLE_PACKAGES = frozenset({"", "torch", "operator", "_operator", "math", "builtins"})


def counted_without_formula(op: str, target: Any, module: nn.Module | None, rule: Rule | None) -> bool:
    """Whether a node with no MAC formula is known to do no counted arithmetic (else its FLOPs are unknown).

    Built-in rules without a formula (activations, pooling, views) count
    zero; a parameter-free module counts zero; a module with weights and no
    formula does not; torch functions and Python operators do what their
    name says, while a user function recorded as one call may hide matrix
    products.  Ops marked ``uncounted`` (``einsum``) are never known.  Shape
    propagation counts a node this says False for by the calls it makes
    (:class:`~torchsurgeon.rules.on_meta.FlopTally`).
    """
    if rule is not None and rule.uncounted:
        return False
    if rule is not None and rule.builtin:
        return True
    if op == "call_module":
        return module is None or next(module.parameters(), None) is None
    if op == "call_function":
        package = str(getattr(target, "__module__", None) or "").split(".")[0]
        return package in _VISIBLE_PACKAGES
    return True
