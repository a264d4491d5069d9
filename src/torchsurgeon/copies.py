"""Copies of a module that leave the user's alone, and the zero run for leaves that cannot run on ``meta``.

:func:`detached_copy` gives a hook-free deep copy with new tensors (on
``meta`` for shape propagation, on the CPU for surgery checks);
:func:`thawed` gives the arguments of a graph node as a real call gets
them (fresh, mutable lists and dicts);
:func:`run_on_zeros` runs a leaf whose Python looks at tensor values once on
zero tensors, on such a copy, to learn its output shapes.  The tracer,
shape propagation and resizing all copy modules through here.
"""

from __future__ import annotations

import collections
import copy
import copyreg
import functools
import itertools
import operator
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

from .errors import failure_reason
from .hookkinds import REPARAMETRIZING, held_recorders, hook_runs, libraries_of, model_hook, without_side_effects

__all__ = (
    "HOOK_DICTS",
    "MODEL_LOCK",
    "SHAPE_EDITS",
    "cannot_run_on_meta",
    "class_forward",
    "container_edit",
    "detached_copy",
    "edits_in_place",
    "inputs_reaching",
    "meta_like",
    "meta_only",
    "model_copy",
    "run_on_zeros",
    "thawed",
    "torch_or_python",
    "without_side_effects",
)

_ZERO_RUN_LIMIT = 1 << 25
_P = ParamSpec("_P")
_R = TypeVar("_R")
MODEL_LOCK = threading.RLock()
"""Held while a trace changes a model in place, and while a model is copied or its state is recorded.

torch.fx patches ``nn.Module.__call__`` and ``__getattr__`` for the whole process while it traces (two traces at
once undo each other's patches), and a model's forward changes the model itself for the length of a trace: the
output-capturing hooks and the ``_output_capturing_hooks_installed`` flag transformers installs on the first
forward, an attribute set from a traced size (transformers' Swin: ``window_size``), put back when the trace ends
(:class:`~torchsurgeon.ownhooks.OwnHooks`).  Traces run one at a time, and a copy, or the record of what a model
held before a trace, waits for the trace of another thread: it never takes that passing state as the model's."""


def _with_model_lock(copier: Callable[_P, _R]) -> Callable[_P, _R]:
    """``copier`` holding :data:`MODEL_LOCK`: it never copies a module another thread's trace holds in a passing
    state."""

    @functools.wraps(copier)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with MODEL_LOCK:
            return copier(*args, **kwargs)

    return locked


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
"""The hook dicts in an ``nn.Module``'s ``__dict__``: never copied, never read by a shape rule."""


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """The stand-in of a model's tensor when it runs on ``meta``: a ``meta`` tensor of its shape and dtype, except a
    0-dim integer or bool tensor, which keeps its value (a new CPU scalar).

    A scalar integer buffer is a setting, not data: transformers' Encodec keeps
    its convolutions' stride and kernel size as ``torch.tensor(2)`` buffers and
    computes its paddings from them, and ``max(left, right)`` of those needs
    their values.  torch lets a CPU scalar meet a tensor on any device, so the
    arithmetic runs as in the model.

    Examples
    --------
    >>> import torch
    >>> meta_like(torch.ones(2, 3)).device.type, meta_like(torch.tensor(4))
    ('meta', tensor(4))
    >>> (torch.empty(2, 5, device="meta") * meta_like(torch.tensor(3))).device.type
    'meta'
    """
    if type(t) is torch.Tensor or type(t) is nn.Parameter:
        # what a torch function mode (ruled_meta) would give, without it: a CPU scalar's copy; the stand-in of a
        # parameter or of a scalar (no known data), or of a contiguous buffer (empty_like's rule keeps its strides)
        with torch._C.DisableTorchFunction():
            if t.dim() == 0 and t.device.type == "cpu" and not (t.is_floating_point() or t.is_complex()):
                return t.detach().clone()
            if not t.is_meta and (type(t) is nn.Parameter or t.dim() == 0 or t.is_contiguous()):
                return torch.empty_like(t, device="meta")
    elif t.dim() == 0 and t.device.type == "cpu" and not (t.is_floating_point() or t.is_complex()):
        return t.detach().clone()
    return torch.empty_like(t, device="meta")


def cannot_run_on_meta(exc: BaseException) -> bool:
    """Whether ``exc`` says that the code cannot run on ``meta`` (it reads a value, a kernel is missing), rather
    than that the call itself is wrong.

    Examples
    --------
    >>> import torch
    >>> try:
    ...     torch.empty(2, device="meta").sum().item()
    ... except Exception as exc:
    ...     cannot_run_on_meta(exc)
    True
    >>> cannot_run_on_meta(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    False
    """
    text = str(exc).lower()
    return isinstance(exc, NotImplementedError) or "meta" in text or "data-dependent" in text


def meta_only(exc: BaseException) -> bool:
    """Whether ``exc`` is ``meta``'s own failure, which a run on real tensors never raises: a kernel ``meta`` does
    not have, a value it cannot give (its message says ``meta``, or data-dependent), not a ``NotImplementedError``
    of the model's own.

    Examples
    --------
    >>> import torch
    >>> try:
    ...     torch.empty(3, device="meta").nonzero()
    ... except Exception as exc:
    ...     meta_only(exc)
    True
    >>> meta_only(NotImplementedError("5-D inputs are not supported")), meta_only(ValueError("meta"))
    (False, False)
    """
    text = str(exc).lower()
    return cannot_run_on_meta(exc) and ("meta" in text or "data-dependent" in text) and type(exc) in _META_FAILURES


_META_FAILURES = (NotImplementedError, RuntimeError)


def run_on_zeros(
    target: nn.Module | Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    failure: Exception,
    *,
    owned: bool = False,
) -> Any:
    """Run a leaf that cannot run on ``meta`` on zero tensors on the CPU; outputs come back on ``meta``.

    A leaf module or a wrapped function whose Python code looks at tensor
    values (``if x.mean() > 0``) fails on ``meta`` tensors.  When it is small
    enough (inputs, parameters and buffers below 2**25 elements) it is run
    once on zero inputs of the same shapes and dtypes (a module: on a CPU
    copy with zero weights, in eval mode), to learn the shapes of its
    outputs.  The user's module and its hooks are never used.  torch's own
    functions are not retried: their failures on ``meta`` stay failures.

    Parameters
    ----------
    target : nn.Module or callable
        The leaf (the user's own module; it is copied, not run), or a
        function wrapped as a single call.
    args, kwargs
        The arguments on ``meta``, as for its ``forward``.
    failure : Exception
        Why running on ``meta`` failed; raised again when the zero run does
        not apply (another kind of failure, a torch function, or too large).
    owned : bool
        ``target`` is torchsurgeon's own copy, which nobody else sees: its
        parameters and buffers become zeros in place instead of in another
        copy (the cross-check's copy of a whole model: a deep copy of a
        detection model's 1,000 modules costs about as much as its forward).

    Returns
    -------
    Any
        The output with every tensor replaced by a ``meta`` tensor.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Gate(nn.Module):
    ...     def forward(self, x):
    ...         return x if x.sum() > 0 else x[:, :2]
    >>> x = torch.empty(1, 5, device="meta")
    >>> run_on_zeros(Gate(), (x,), {}, NotImplementedError("meta")).shape
    torch.Size([1, 2])
    """
    module = target if isinstance(target, nn.Module) else None
    if not cannot_run_on_meta(failure) or (module is None and torch_or_python(target)):
        raise failure
    leaves = [t for t in pytree.tree_leaves((args, dict(kwargs))) if isinstance(t, torch.Tensor)]
    weights = itertools.chain(module.parameters(), module.buffers()) if module is not None else ()
    size = sum(t.numel() for t in itertools.chain(leaves, weights))
    if size > _ZERO_RUN_LIMIT:
        raise NotImplementedError(
            f"{failure_reason(failure)}; too large to run on zeros on the CPU ({size:,} elements > {_ZERO_RUN_LIMIT:,})"
        ) from failure
    # random draws of the leaf (noise, a random mask) come from the CPU generator: the user's stream is left as found
    with torch.device("cpu"), torch.no_grad(), torch.random.fork_rng(devices=()):
        cpu_args, cpu_kwargs = pytree.tree_map(_data_or_zeros, (args, dict(kwargs)))
        if module is not None:
            clone = (_zeroed(module) if owned else detached_copy(module, _zeros_like)).eval()
            out = class_forward(clone)(*cpu_args, **cpu_kwargs)
        else:
            out = target(*cpu_args, **cpu_kwargs)
    return pytree.tree_map(lambda v: torch.empty_like(v, device="meta") if isinstance(v, torch.Tensor) else v, out)


def class_forward(module: nn.Module) -> Callable[..., Any]:
    """``module``'s forward as its class defines it, without its hooks nor a ``forward`` patched on the instance; a
    ``torch.jit`` module's compiled one (its class has no Python forward to call, and it takes no Python hooks).

    Examples
    --------
    >>> from torch import nn
    >>> lin = nn.Linear(2, 3)
    >>> _ = lin.register_forward_hook(lambda *a: print("hook"))
    >>> tuple(class_forward(lin)(torch.zeros(1, 2)).shape)
    (1, 3)
    """
    if isinstance(module, torch.jit.ScriptModule):
        return module.forward
    return functools.partial(type(module).forward, module)


@_with_model_lock
def _zeroed(module: nn.Module) -> nn.Module:
    """``module`` with each parameter and buffer replaced by zeros on the CPU (shared ones stay shared), and each
    ``meta`` tensor it holds as a plain attribute too: a run on ``meta`` stored them there (torchvision's anchor
    generator keeps its anchors moved to the input's device), which a CPU forward cannot read."""
    memo: dict[int, Any] = {}
    for m in module.modules():
        for table, make in ((m._parameters, _zero_parameter), (m._buffers, _zeros_like)):
            for name, t in table.items():
                if t is not None:
                    table[name] = memo[id(t)] if id(t) in memo else memo.setdefault(id(t), make(t))
        for name, value in list(vars(m).items()):
            if not name.startswith("_") and pytree.tree_any(_on_meta, value):
                setattr(m, name, pytree.tree_map(lambda t: _zeros_like(t) if _on_meta(t) else t, value))
    return module


def _on_meta(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "meta"


def _zero_parameter(p: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(_zeros_like(p), requires_grad=p.requires_grad)


def torch_or_python(fn: Any) -> bool:
    """Whether ``fn`` is torch's or Python's own (an operator, a builtin, ``math``), not a model's: running it
    again has no side effect, and what it does is known.

    Examples
    --------
    >>> import operator, torch
    >>> torch_or_python(torch.cat), torch_or_python(operator.add), torch_or_python(meta_like)
    (True, True, False)
    """
    name = str(getattr(fn, "__module__", None) or "")
    return name.split(".")[0] in ("torch", "_operator", "operator", "builtins", "math")


@_with_model_lock
def detached_copy(module: nn.Module, tensor: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """A deep copy of ``module`` with new parameters and buffers, ``tensor(original)``, and only the hooks that change
    what it computes.

    Parameters keep ``requires_grad``; shared parameters stay shared.  The
    forward hooks that run in the analysis (:func:`hook_runs`: those the
    model installs on itself, such as transformers' hidden state collectors
    that UperNet's and DPT's heads read, and the user's that return a value)
    are kept, so the copy computes what the model computes; the user's other
    hooks are neither copied nor run by the copy, so they never see
    torchsurgeon's tensors.  ``module`` is not touched.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Linear(3, 2)
    >>> _ = m.register_forward_hook(lambda *a: print("hook"))
    >>> c = detached_copy(m, meta_like)
    >>> c.weight.device.type, m.weight.device.type, len(c._forward_hooks), len(m._forward_hooks)
    ('meta', 'cpu', 0, 1)
    """
    memo: dict[int, Any] = {}
    modules = list(module.modules())  # one walk, for the libraries and the hooks' recorders too
    for m in modules:
        for p in m._parameters.values():
            if p is not None and id(p) not in memo:
                memo[id(p)] = _new_parameter(p, tensor)
        for b in m._buffers.values():
            if b is not None and id(b) not in memo:
                memo[id(b)] = _uninitialised(b, tensor) if isinstance(b, UninitializedTensorMixin) else tensor(b)
        for t in _computed_attributes(m):
            if id(t) not in memo:
                memo[id(t)] = tensor(t.detach())
    libraries, held = libraries_of(module, modules), held_recorders(module, modules=modules)
    copied: nn.Module = _Copier(module, memo, libraries, tensor, held).copy(module)
    return copied


@_with_model_lock
def model_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, also of a model with a weight its forward pre-hook computes (``torch.nn.utils.prune``,
    the legacy ``weight_norm``): torch refuses to deep-copy that tensor, which autograd made; the copy gets it
    detached, and its own hook computes it again on each forward.

    Examples
    --------
    >>> from torch import nn
    >>> from torch.nn.utils import prune
    >>> layer = prune.l1_unstructured(nn.Linear(4, 2), "weight", amount=0.5)
    >>> copied = model_copy(layer)
    >>> bool((copied.weight == layer.weight).all()), copied.weight_orig is layer.weight_orig
    (True, False)
    """
    memo = {id(t): t.detach().clone() for m in model.modules() for t in _computed_attributes(m)}
    return copy.deepcopy(model, memo)


def _new_parameter(p: torch.Tensor, tensor: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The copy's parameter for ``p``: ``nn.Parameter(tensor(p.detach()))``, keeping ``requires_grad``."""
    if isinstance(p, UninitializedTensorMixin):
        return _uninitialised(p, tensor)
    if tensor is meta_like and type(p) is nn.Parameter:
        # what nn.Parameter does with a plain tensor, without its checks; meta_like reads no data: no detach
        return _MAKE_SUBCLASS(nn.Parameter, meta_like(p), p.requires_grad)
    return nn.Parameter(tensor(p.detach()), requires_grad=p.requires_grad)


_MAKE_SUBCLASS = torch.Tensor._make_subclass


def _computed_attributes(module: nn.Module) -> list[torch.Tensor]:
    """The tensors a module holds as plain attributes that autograd made (a pruned ``weight``)."""
    return [v for v in module.__dict__.values() if type(v) is torch.Tensor and v.grad_fn is not None]


def _uninitialised(t: torch.Tensor, tensor: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A new uninitialised parameter or buffer of a lazy layer, where ``tensor`` puts tensors (its first forward
    makes it)."""
    where: dict[str, Any] = {"device": tensor(torch.empty(0, dtype=t.dtype)).device, "dtype": t.dtype}
    if isinstance(t, nn.Parameter):
        return nn.UninitializedParameter(requires_grad=t.requires_grad, **where)
    return nn.UninitializedBuffer(**where)


_HOOK_NAMES = frozenset(HOOK_DICTS)
_OrderedDict = collections.OrderedDict
_OWN_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")
_NO_HOOKS: set[int] = set()
_KEPT_HOOK_DICTS = frozenset(
    {*_OWN_HOOK_DICTS, "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"}
)


def _numpy_scalars() -> frozenset[type]:
    """numpy's immutable scalar types (MONAI's ViT keeps ``n_patches`` as ``np.int64``), if numpy is installed."""
    try:
        import numpy as np
    except ImportError:  # torch runs without numpy
        return frozenset()
    names: tuple[str, ...] = ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    names += ("float16", "float32", "float64", "longdouble", "complex64", "complex128", "clongdouble")  # not np.void
    return frozenset(getattr(np, name) for name in names if hasattr(np, name))


_ATOMIC = frozenset(
    {type(None), int, float, bool, complex, str, bytes, type, range, torch.dtype, torch.device, torch.layout}
    | {types.FunctionType, types.BuiltinFunctionType, types.MethodWrapperType, type(Ellipsis)}
    | _numpy_scalars()
)
_STATEFUL = ("__deepcopy__", "__reduce__", "__reduce_ex__", "__getnewargs__", "__getnewargs_ex__")
_PLAIN_COPY: dict[type, bool] = {}


class _Copier:
    """``copy.deepcopy(root, memo)`` without the hooks, fast for modules and the plain containers in their ``__dict__``.

    ``copy.deepcopy`` reaches a module through ``__reduce_ex__`` and copies
    its ``__dict__`` one value at a time, asking each value's type how it is
    copied: most of the time of a deep copy of a model with hundreds of small
    modules.  A module whose class copies the standard way (no
    ``__deepcopy__``, ``__reduce_ex__``, ``__getnewargs__``, no
    ``__slots__``, not a container) is rebuilt here as deepcopy rebuilds it:
    ``cls.__new__``, then ``__setstate__`` with its ``__getstate__`` copied,
    each hook dict replaced by an empty one.  Dicts, lists, sets of atoms and
    tuples are copied as deepcopy copies them; immutable named tuples of
    atoms (and numpy scalars) are shared.  Anything else goes to
    ``copy.deepcopy`` with the same ``memo`` (shared objects stay shared),
    after every hook dict under ``root`` is mapped to an empty one in
    ``memo``, so that no hook is copied there either (an empty one too: a
    hook handle kept by the model refers to it, timm's FeatureHookNet).
    """

    def __init__(
        self,
        root: nn.Module,
        memo: dict[int, Any],
        libraries: frozenset[str] = frozenset(),
        tensor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        held: frozenset[int] = frozenset(),
    ) -> None:
        self.root, self.memo, self.hooks_in_memo, self.libraries = root, memo, False, libraries
        self.held = held  # objects the model holds whose methods are its hooks (held_recorders)
        self.tensor = tensor  # what a ScriptModule's tensors become (``memo`` cannot reach them)
        self.pending: list[tuple[nn.Module, dict[int, Any], set[int], dict[int, Any]]] = []

    def _own_hooks(self, state: Mapping[str, Any]) -> set[int]:
        """The ids of a module's forward hooks that run in the analysis (see :func:`hook_runs`)."""
        if not (state.get("_forward_hooks") or state.get("_forward_pre_hooks")):
            return _NO_HOOKS
        return {
            key
            for attr in _OWN_HOOK_DICTS
            for key, hook in (state.get(attr) or {}).items()
            if hook_runs(hook, self.libraries, self.held) or type(hook).__module__ in REPARAMETRIZING
        }

    def _kept(self, hook: Any) -> Any:
        """A hook the copy keeps: the user's (one that returns a value) leaves their containers as they were; the
        model's own (:func:`~torchsurgeon.hookkinds.model_hook`), a method of a helper object (timm's
        ``FeatureHooks``, fastai's ``Hook``), is bound to that object's copy, where the copy's forward reads what
        it collects."""
        if type(hook).__module__ in REPARAMETRIZING:
            return hook
        if model_hook(hook, self.libraries, self.held):
            return self._rebound(hook)
        return without_side_effects(hook)

    def _rebound(self, hook: Any) -> Any:
        if isinstance(hook, functools.partial):
            return functools.partial(self._rebound(hook.func), *hook.args, **hook.keywords)
        if isinstance(hook, types.MethodType) and not isinstance(hook.__self__, nn.Module):
            return types.MethodType(hook.__func__, self.copy(hook.__self__))
        return hook

    def copy(self, value: Any) -> Any:
        cls = type(value)
        if cls in _ATOMIC:
            return value
        memo = self.memo
        found = memo.get(id(value), memo)
        if found is not memo:
            return found
        if cls is dict or cls is collections.OrderedDict:
            out: dict[Any, Any] = cls()
            memo[id(value)] = out
            for k, v in value.items():
                out[k if type(k) is str else self.copy(k)] = v if type(v) in _ATOMIC else self.copy(v)
            return out
        if cls is list:
            out_list: list[Any] = []
            memo[id(value)] = out_list
            out_list.extend(self.copy(v) for v in value)
            return out_list
        if cls is set and _ATOMIC.issuperset(map(type, value)):  # a module's _non_persistent_buffers_set
            return memo.setdefault(id(value), set(value))
        if isinstance(value, tuple) and (cls is tuple or _is_named_tuple(value)):
            if _ATOMIC.issuperset(map(type, value)):  # kernel_size=(3, 3): deepcopy keeps a tuple of atoms
                return value
            items = tuple(self.copy(v) for v in value)
            if all(a is b for a, b in zip(items, value)):  # as deepcopy: a tuple of atoms is kept
                return value
            return memo.setdefault(id(value), items if cls is tuple else cls(*items))
        if isinstance(value, nn.Module) and _copies_plainly(cls):
            module = self._module(value, cls)
            if module is not None:
                return module
        if isinstance(
            value, torch.jit.ScriptModule
        ):  # its tensors live in C++: torch copies it, then they are replaced
            scripted = memo[id(value)] = copy.deepcopy(value)
            if self.tensor is not None:
                _replace_tensors(scripted, self.tensor)
            return scripted
        if cls is torch.Tensor and value.is_leaf and value.grad is None and not value.__dict__:
            # a plain tensor attribute (MONAI's SABlock keeps ``att_mat = torch.Tensor()``): its deepcopy reaches
            # no module and no hook dict, so none is mapped first (a walk of every module of the model)
            return copy.deepcopy(value, memo)
        if not self.hooks_in_memo:
            self.hooks_in_memo = True
            for m in self.root.modules():
                kept = None
                for attr in HOOK_DICTS:
                    hooks = m.__dict__.get(attr)
                    if isinstance(hooks, dict) and id(hooks) not in memo:
                        if kept is None:
                            kept = self._own_hooks(m.__dict__)
                        empty: dict[int, Any] = collections.OrderedDict()
                        memo[id(hooks)] = empty
                        if kept and attr in _KEPT_HOOK_DICTS and not kept.isdisjoint(hooks):
                            self.pending.append((m, hooks, kept, empty))
        copied = copy.deepcopy(value, memo)
        self._fill_pending()
        return copied

    def _module(self, value: nn.Module, cls: type) -> nn.Module | None:
        """A module whose class copies plainly, rebuilt as deepcopy rebuilds it (``cls.__new__``, then
        ``__setstate__`` of its state copied), each hook dict replaced; None when its state is not a dict."""
        # nn.Module's own __getstate__ is a copy of __dict__ without _compiled_call_impl: read __dict__ itself
        own = getattr(cls, "__getstate__", None) is nn.Module.__getstate__
        # never put in memo: __getstate__ gives a new dict, whose id is reused once it is freed
        state = value.__dict__ if own else value.__getstate__()  # type: ignore[no-untyped-call]
        if type(state) is not dict:
            return None
        module: nn.Module = cls.__new__(cls)  # type: ignore[call-overload]  # as deepcopy makes it (copyreg.__newobj__)
        memo = self.memo
        memo[id(value)] = module
        copied = dict(state)  # atoms as they are: most of a module's state (flags, sizes, names)
        if own:
            copied.pop("_compiled_call_impl", None)
        kept = self._own_hooks(state)
        for k, v in state.items():
            if type(v) in _ATOMIC:
                continue
            if k in _HOOK_NAMES and isinstance(v, dict):
                # the copy's hook dict stands for the model's wherever the copy refers to it (a handle that
                # removes a hook: a lazy layer removes its own after its first forward)
                hooks = memo.get(id(v)) if own else None
                if hooks is None:
                    hooks = _OrderedDict()
                    if own:
                        memo[id(v)] = hooks
                if kept and k in _KEPT_HOOK_DICTS:
                    hooks.update(
                        (key, self._kept(_bound_to(hook, value, module))) for key, hook in v.items() if key in kept
                    )
                copied[k] = hooks
            elif k != "_compiled_call_impl" or not own:
                copied[k] = self.copy(v)
        module.__setstate__(copied)  # type: ignore[no-untyped-call]
        return module

    def _fill_pending(self) -> None:
        """The kept hooks of modules ``copy.deepcopy`` copied (under a module that does not copy plainly: peft's
        ``PeftModel``), bound to their copies: their hook dicts were mapped to empty ones in ``memo``."""
        waiting = []
        for original, hooks, kept, empty in self.pending:
            copy_ = self.memo.get(id(original))
            if copy_ is None:
                waiting.append((original, hooks, kept, empty))
                continue
            empty.update(
                (key, self._kept(_bound_to(hook, original, copy_))) for key, hook in hooks.items() if key in kept
            )
        self.pending = waiting


def _replace_tensors(module: nn.Module, tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Each parameter and buffer of ``module`` (a copy) replaced by ``tensor(it)``; parameters stay parameters."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = nn.Parameter(tensor(p.detach()), requires_grad=p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = tensor(b)


def _bound_to(hook: Any, original: nn.Module, copy_: nn.Module) -> Any:
    """``hook``, a method of ``original`` bound to its copy instead (as deepcopy rebinds methods); else itself."""
    if isinstance(hook, types.MethodType) and hook.__self__ is original:
        return types.MethodType(hook.__func__, copy_)
    return hook


def _is_named_tuple(value: tuple[Any, ...]) -> bool:
    return hasattr(type(value), "_fields") and not hasattr(value, "__dict__")


def _copies_plainly(cls: type) -> bool:
    """Whether deepcopy copies an instance of ``cls`` by ``__new__`` and ``__setstate__(deepcopy(__getstate__()))``."""
    plain = _PLAIN_COPY.get(cls)
    if plain is None:
        plain = _PLAIN_COPY[cls] = (
            cls not in getattr(copy, "_deepcopy_dispatch", {})
            and cls not in copyreg.dispatch_table
            and not issubclass(cls, (list, dict, set, tuple))
            and not hasattr(cls, "__slots__")
            and all(getattr(cls, name, None) is getattr(object, name, None) for name in _STATEFUL)
        )
    return plain


def _data_or_zeros(value: Any) -> Any:
    """A CPU tensor given with its data (known data: a sequence's lengths) as it is, a copy; zeros for the others."""
    from .knowndata import given_as_data  # knowndata imports this module

    if given_as_data(value):
        return value.clone()
    return _zeros_like(value)


def _zeros_like(value: Any) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    try:
        return torch.zeros(value.shape, dtype=value.dtype, device="cpu")
    except (RuntimeError, TypeError):  # quantized and other exotic dtypes
        return torch.empty(value.shape, dtype=value.dtype, device="cpu")


_CONTAINER_EDITS = frozenset(
    {"append", "extend", "insert", "pop", "remove", "clear", "reverse", "sort", "update", "setdefault"}
    | {"__setitem__", "__delitem__"}
)


SHAPE_EDITS = frozenset(
    {"unsqueeze_", "squeeze_", "transpose_", "t_", "swapdims_", "swapaxes_", "resize_", "resize_as_", "as_strided_"}
)
"""Tensor methods that change their tensor's shape in place (BigBird: ``first_context_layer.unsqueeze_(2)``)."""


def edits_in_place(node: torch.fx.Node) -> bool:
    """Whether ``node`` may edit its first argument in place: a list or dict edit, or a shape edit of a tensor.

    Examples
    --------
    >>> import operator, torch.fx
    >>> g = torch.fx.Graph()
    >>> x = g.placeholder("x")
    >>> edits_in_place(g.call_method("unsqueeze_", (x, 1))), edits_in_place(g.call_method("unsqueeze", (x, 1)))
    (True, False)
    """
    if node.op == "call_function":
        return node.target in (operator.setitem, operator.delitem)
    return node.op == "call_method" and (node.target in _CONTAINER_EDITS or node.target in SHAPE_EDITS)


def container_edit(node: torch.fx.Node, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """For a node that edits a list or dict made by another node (``pad[2] = (0, 1)``, ``sizes.append(1)``): the
    edited copy, which stands for that node from here on, and the call's result; None for any other node.

    Each node's arguments are fresh copies (:func:`thawed`), so the edit is made on a copy that the caller puts
    in place of the edited node's value: transformers' LongT5 pads by ``pad = [(0, 0)] * x.ndim; pad[2] = ...``.

    Examples
    --------
    >>> import operator, torch.fx
    >>> g = torch.fx.Graph()
    >>> pad = g.placeholder("pad")
    >>> container_edit(g.call_function(operator.setitem, (pad, 1, (0, 1))), ([(0, 0), (0, 0)], 1, (0, 1)), {})
    ([(0, 0), (0, 1)], None)
    """
    if not args or type(args[0]) not in (list, dict) or not isinstance(node.args[0], torch.fx.Node):
        return None
    if node.op == "call_function" and node.target in (operator.setitem, operator.delitem):
        edited = copy.copy(args[0])
        return edited, node.target(edited, *args[1:], **kwargs)
    if node.op == "call_method" and node.target in _CONTAINER_EDITS:
        edited = copy.copy(args[0])
        return edited, getattr(edited, str(node.target))(*args[1:], **kwargs)
    return None


def thawed(value: Any) -> Any:
    """``value`` with torch.fx's immutable lists and dicts (inside tuples too) as new plain ones.

    torch.fx keeps a graph's lists and dicts immutable, and its ``map_arg`` /
    ``map_aggregate`` hand them on as such; a function the trace kept as one
    node may edit its list arguments in place, as in a real forward
    (torchvision's video Swin: ``window_size[i] = size_dhw[i]``).  Each call
    gets new plain lists and dicts, so the graph's constants stay as traced.
    Values without a list or dict are returned as they are.

    Examples
    --------
    >>> import torch.fx
    >>> g = torch.fx.Graph()
    >>> node = g.call_function(max, ([g.placeholder("x"), 3],))
    >>> args = thawed(torch.fx.node.map_arg(node.args, lambda n: 2))
    >>> args, type(args[0]) is list
    (([2, 3],), True)
    """
    kind = type(value)
    if kind is tuple:
        for v in value:  # a loop, not any(): most calls find no list or dict, and this runs for every node
            if type(v) in _MUTABLE:
                break
        else:
            return value
        items = tuple([thawed(v) for v in value])
        return value if all(map(operator.is_, items, value)) else items
    if isinstance(value, list):  # fx's immutable_list is a list
        return [thawed(v) for v in value]
    if isinstance(value, dict):
        return {k: thawed(v) for k, v in value.items()}
    return value


_MUTABLE = frozenset({tuple, list, dict, immutable_list, immutable_dict})


class _AllSeen(Exception):
    """Raised by the last pre-hook of :func:`inputs_reaching`: every part got its arguments."""


def inputs_reaching(
    copy_: nn.Module, parts: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, tuple[Any, ...]]:
    """The positional arguments each submodule in ``parts`` of ``copy_`` gets first in ``copy_(*args, **kwargs)``,
    the forward stopped once every part got them (a pre-hook on each part, removed after).  A part the forward
    does not reach before it ends or fails is missing.  Run it on a copy: its hooks never touch the user's model.

    Examples
    --------
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2), nn.ReLU())
    >>> {k: tuple(v[0].shape) for k, v in inputs_reaching(model, ["1"], (torch.zeros(1, 3, 4),), {}).items()}
    {'1': (1, 12)}
    """
    seen: dict[str, tuple[Any, ...]] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def record(_m: nn.Module, given: tuple[Any, ...]) -> None:
            seen.setdefault(name, given)
            if len(seen) == len(parts):
                raise _AllSeen

        return record

    handles = [copy_.get_submodule(name).register_forward_pre_hook(hook(name)) for name in parts]
    try:
        copy_(*args, **kwargs)
    except Exception:  # _AllSeen, or the forward failed past (or before) a part: what was seen is the answer
        pass
    finally:
        for handle in handles:
            handle.remove()
    return seen
