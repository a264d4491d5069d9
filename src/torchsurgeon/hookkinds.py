"""Which forward hooks change what a model computes, and running them without leaving traces in the user's objects.

A hook the model installs on itself (its library's), or one of the user's
that returns a value or changes a tensor in place, runs in the analysis as
in a real forward (:func:`hook_runs`); a hook that only looks never does.
What a running hook records in the user's lists, dicts, objects and
variables is put back after each call (:func:`without_side_effects`).  Used by the trace
(:class:`torchsurgeon.ownhooks.OwnHooks`) and by the copies
(:func:`torchsurgeon.copies.detached_copy`).
"""

from __future__ import annotations

import collections
import contextlib
import dis
import functools
import operator
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = (
    "CONTAINER_TYPES",
    "REPARAMETRIZING",
    "acts_in_place",
    "changed",
    "held_recorders",
    "hook_recorders",
    "hook_runs",
    "libraries_of",
    "library_hook",
    "library_of",
    "model_hook",
    "put_back",
    "returns_values",
    "shallow",
    "without_side_effects",
)


def libraries_of(model: nn.Module, modules: Iterable[nn.Module] | None = None) -> frozenset[str]:
    """The installed packages that define the classes of ``model`` and its modules (torch's only for a model of
    torch's own classes): a peft model around a transformers one is both libraries' code.  ``modules``: all of
    ``model.modules()``, when the caller has walked them already.

    Examples
    --------
    >>> from torch import nn
    >>> sorted(libraries_of(nn.Sequential(nn.Linear(2, 2)))), sorted(libraries_of(type("Mine", (nn.Module,), {})()))
    (['torch'], [])
    """
    own = library_of(model)
    found = {_library_of_class(type(m)) for m in (model.modules() if modules is None else modules)} - {None, "torch"}
    return frozenset({*found, own} if own is not None else found)  # type: ignore[arg-type]


def _library_of_class(cls: type) -> str | None:
    found = _LIBRARIES.get(cls, _LIBRARIES)
    if found is _LIBRARIES:
        package = cls.__module__.split(".")[0]
        path = os.path.abspath(getattr(sys.modules.get(package), "__file__", None) or "")
        found = _LIBRARIES[cls] = package if f"{os.sep}site-packages{os.sep}" in path else None
    return found  # type: ignore[no-any-return]


_LIBRARIES: dict[type, Any] = {}


def library_of(module: nn.Module) -> str | None:
    """The installed package that defines ``module``'s class (``"transformers"``), or None for code of your own.

    Examples
    --------
    >>> from torch import nn
    >>> library_of(nn.Linear(2, 2))
    'torch'
    """
    return _library_of_class(type(module))


REPARAMETRIZING = frozenset({"torch.nn.utils.prune", "torch.nn.utils.weight_norm", "torch.nn.utils.spectral_norm"})
"""Modules of torch's pre-hooks that compute a layer's weight before each forward (a copy keeps them: its training
step computes what the model's does; the trace need not run them, the weight they last computed has its shape)."""


def hook_runs(hook: Any, libraries: frozenset[str], held: frozenset[int] = frozenset()) -> bool:
    """Whether a forward hook runs in the analysis as in a real forward: a hook the model installs on itself (its
    function comes from one of ``libraries``, :func:`libraries_of` the model: transformers collects hidden states
    with forward hooks, and its ``enable_input_require_grads`` makes the embeddings' output require grad, also
    inside a peft model; or it is a method of an object the model holds, ``held``, :func:`held_recorders`), or one
    of the user's that may return a value (:func:`returns_values`) or changes a tensor in place
    (:func:`acts_in_place`): it changes what the module takes or gives.  A hook of the user's that only looks is
    never run: it never sees torchsurgeon's tensors.

    Examples
    --------
    >>> keep_five = lambda module, inputs, output: output[:, :5]
    >>> features = []
    >>> hook_runs(keep_five, frozenset()), hook_runs(lambda m, i, o: features.append(o), frozenset())
    (True, False)
    >>> hook_runs(lambda m, i, o: o.requires_grad_(True), frozenset())
    True
    """
    if type(hook).__module__ in REPARAMETRIZING:  # it sets the layer's weight: a proxy would be left in the model
        return False
    return model_hook(hook, libraries, held) or returns_values(hook) or acts_in_place(hook)


def model_hook(hook: Any, libraries: frozenset[str], held: frozenset[int]) -> bool:
    """Whether a hook is the model's own: its function comes from one of ``libraries`` (:func:`library_hook`), or it
    is a method of an object the model holds (``held``, :func:`held_recorders`: the model reads what it records).

    Examples
    --------
    >>> class Store:
    ...     def keep(self, module, inputs, output):
    ...         self.stored = output
    >>> store = Store()
    >>> model_hook(store.keep, frozenset(), frozenset({id(store)})), model_hook(store.keep, frozenset(), frozenset())
    (True, False)
    """
    if library_hook(hook, libraries):
        return True
    recorder = _recorder_of(hook)
    return recorder is not None and id(recorder) in held


def _recorder_of(hook: Any) -> Any:
    """The object a hook is a method of (under its partials), when it is not a module; else None."""
    while isinstance(hook, functools.partial):
        hook = hook.func
    if isinstance(hook, types.MethodType) and not isinstance(hook.__self__, nn.Module):
        return hook.__self__
    return None


def hook_recorders(modules: Iterable[nn.Module]) -> dict[int, Any]:
    """The objects, by id, whose methods are forward hooks on ``modules`` (objects, not modules: fastai's ``Hook``,
    timm's ``FeatureHooks``)."""
    return {
        id(r): r
        for m in modules
        if m._forward_hooks or m._forward_pre_hooks
        for table in (m._forward_hooks, m._forward_pre_hooks)
        for hook in table.values()
        if (r := _recorder_of(hook)) is not None
    }


def held_recorders(
    model: nn.Module, recorders: Mapping[int, Any] | None = None, modules: Sequence[nn.Module] | None = None
) -> frozenset[int]:
    """The ids of the objects whose methods are forward hooks on ``model``'s modules and that its modules hold as
    attributes (directly, or in a list, tuple or dict): the model reads what such a hook records.  fastai's
    ``DynamicUnet`` hooks its encoder's layers with ``Hook`` objects that store their outputs, and each of its
    ``UnetBlock`` holds one and reads ``self.hook.stored``: such a hook not run, the trace read the output of the
    last real forward (the dummy one fastai makes when it builds the model, at batch 1) as a constant.
    ``recorders``: :func:`hook_recorders` of the model's modules, and ``modules``: all of ``model.modules()``,
    when the caller has them (most models have no such hook: no walk of their modules).

    Examples
    --------
    >>> class Store:
    ...     def keep(self, module, inputs, output):
    ...         self.stored = output
    >>> encoder, head = nn.Linear(2, 2), nn.Linear(2, 2)
    >>> store = Store()
    >>> _ = encoder.register_forward_hook(store.keep)
    >>> held_recorders(nn.Sequential(encoder, head)) == frozenset()
    True
    >>> head.store = store  # the head reads what the hook stores
    >>> held_recorders(nn.Sequential(encoder, head)) == {id(store)}
    True
    """
    if recorders is None:
        modules = list(model.modules()) if modules is None else modules
        recorders = hook_recorders(modules)
    if not recorders:
        return frozenset()
    if modules is None:
        modules = list(model.modules())
    held: set[int] = set()
    for m in modules:
        for name, value in m.__dict__.items():
            if name in _MODULE_STATE:
                continue
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
            held.update(id(v) for v in (value, *items) if id(v) in recorders)
    return frozenset(held)


def library_hook(hook: Any, libraries: frozenset[str]) -> bool:
    """Whether a hook's function comes from one of ``libraries``, the installed libraries that define the model's
    classes (:func:`libraries_of`).

    Examples
    --------
    >>> library_hook(print, frozenset({"builtins"})), library_hook(print, frozenset())
    (True, False)
    """
    fn = _function_of(hook)  # timm's FeatureHooks: partial(self._collect, id)
    return str(getattr(fn, "__module__", "") or "").split(".")[0] in libraries


def _function_of(hook: Any) -> Any:
    """The function under a hook's ``functools.partial`` and bound-method wrappers."""
    while isinstance(hook, (functools.partial, types.MethodType)):
        hook = hook.func if isinstance(hook, functools.partial) else hook.__func__
    return hook


def _call_of(obj: Any) -> Any:
    """The ``__call__`` function a callable object's class defines, else None."""
    return next((vars(k)["__call__"] for k in type(obj).__mro__ if "__call__" in vars(k)), None)


_NONE_RETURNING = frozenset(
    {"append", "extend", "insert", "add", "update", "discard", "remove", "clear", "__setitem__", "__delitem__"}
    | {"print", "setattr", "delattr"}
)
"""Calls whose result is None (list, set and dict edits, ``print``): ``lambda m, i, o: features.append(o)`` looks."""
_RETURNS = frozenset({"RETURN_VALUE", "RETURN_CONST"})
_PROLOGUE = frozenset({"RESUME", "NOP", "CACHE", "EXTENDED_ARG", "COPY_FREE_VARS", "MAKE_CELL"})
_CALLS = frozenset({"CALL", "CALL_FUNCTION", "CALL_METHOD", "PRECALL"})
_NAMES = frozenset({"LOAD_GLOBAL", "LOAD_DEREF", "LOAD_FAST", "LOAD_NAME", "LOAD_ATTR", "LOAD_METHOD"})


def _code_of(hook: Any) -> types.CodeType | None:
    """The code a hook runs (under its partials and bound methods; a callable object's ``__call__``), else None."""
    fn = _function_of(hook)
    code = getattr(fn, "__code__", None)
    if code is None and not isinstance(fn, types.BuiltinFunctionType):
        code = getattr(_call_of(fn), "__code__", None)  # a callable object
    return code if isinstance(code, types.CodeType) else None


def returns_values(hook: Any) -> bool:
    """Whether a hook may return a value other than None (a forward hook that does replaces the module's input or
    output); True when its code cannot be read.

    Read from its bytecode: every ``return`` gives the constant None, or the
    hook's whole body is one call of a list, set or dict edit or ``print``.

    Examples
    --------
    >>> def record(module, inputs, output):
    ...     seen.append(output.shape)
    >>> returns_values(record), returns_values(lambda m, i, o: o.float()), returns_values(len)
    (False, True, True)
    """
    code = _code_of(hook)
    if code is None:
        return True
    body = [i for i in dis.get_instructions(code) if i.opname not in _PROLOGUE]
    returns = [k for k, i in enumerate(body) if i.opname in _RETURNS]
    for k in returns:
        done = body[k]
        before = body[k - 1] if k else None
        given = done if done.opname == "RETURN_CONST" else before  # the value returned, when a constant
        if given is not None and given.opname in ("RETURN_CONST", "LOAD_CONST") and given.argval is None:
            continue
        if len(returns) == 1 and before is not None and before.opname in _CALLS:  # one expression: its callee
            chain: list[Any] = []
            for i in body:
                if i.opname not in _NAMES or (chain and i.opname not in ("LOAD_ATTR", "LOAD_METHOD")):
                    break
                chain.append(i.argval)
            if chain and chain[-1] in _NONE_RETURNING:
                continue
        return True
    return False


def acts_in_place(hook: Any) -> bool:
    """Whether a hook's code calls an in-place tensor method (``output.requires_grad_(True)``, ``output.mul_(2)``):
    returning None, it still changes what the module gives.  False when its code cannot be read (a hook that
    returns a value is caught by :func:`returns_values`).

    Examples
    --------
    >>> acts_in_place(lambda m, i, o: o.clamp_(min=0)), acts_in_place(lambda m, i, o: print(o.shape))
    (True, False)
    """
    code = _code_of(hook)
    if code is None:
        return False
    return any(
        i.opname in ("LOAD_ATTR", "LOAD_METHOD") and _IN_PLACE.fullmatch(str(i.argval)) is not None
        for i in dis.get_instructions(code)
    )


_IN_PLACE = re.compile(r"[a-z][a-z0-9_]*[a-z0-9]_")
"""A tensor method that acts in place: ``mul_``, ``requires_grad_`` (not ``__setitem__``, not ``_private``)."""


CONTAINER_TYPES = frozenset({dict, list, set, collections.OrderedDict, collections.defaultdict, collections.Counter})
"""The containers whose contents :func:`shallow` takes and :func:`put_back` restores."""
_MODULE_STATE = frozenset(nn.Module().__dict__)  # torch's own attributes of every module (parameters, hooks...)


def shallow(container: Any) -> Any:
    """A list's, dict's or set's items as they are: a dict for a dict (order kept), a tuple for a list, a frozenset."""
    if isinstance(container, dict):
        return dict(container)
    return tuple(container) if isinstance(container, list) else frozenset(container)


def changed(container: Any, contents: Any) -> bool:
    """Whether a container holds other items than :func:`shallow` ``contents`` (by identity: values may be tensors)."""
    if len(container) != len(contents):
        return True
    if isinstance(container, dict):
        return any(k not in contents or v is not contents[k] for k, v in container.items())
    if isinstance(container, list):
        return any(map(operator.is_not, container, contents))
    return bool(container.symmetric_difference(contents))


def put_back(container: Any, contents: Any) -> None:
    """Refill ``container`` in place with the :func:`shallow` ``contents`` taken before."""
    container.clear()
    if isinstance(container, dict):
        container.update(contents)
    elif isinstance(container, list):
        container.extend(contents)
    else:
        container.update(contents)


class _Reach(NamedTuple):
    """What a hook's code reaches by name, and may change: see :func:`_reached`."""

    containers: list[Any]  # lists, dicts and sets: their contents
    objects: list[Any]  # plain objects and modules: their attributes (``self.calls += 1``)
    cells: list[types.CellType]  # its closure's variables (``nonlocal calls``)
    module_globals: dict[str, Any]  # the globals of its function's module
    assigned: tuple[str, ...]  # the names among them it assigns (``global calls``)


def _reached(hook: Any) -> _Reach:
    """What a hook's code reaches by name: the lists, dicts and sets of its closure, of the module globals it names,
    of the object it is a method of (a module's own torch state left out) and its partial arguments; those objects
    and the plain objects it names; its closure's cells; the globals it assigns."""
    values: list[Any] = []
    objects: list[Any] = []
    fn = hook
    while isinstance(fn, (functools.partial, types.MethodType)):
        if isinstance(fn, functools.partial):
            values += [*fn.args, *fn.keywords.values()]
            fn = fn.func
        else:
            owner = vars(fn.__self__) if hasattr(fn.__self__, "__dict__") else {}
            skip = _MODULE_STATE if isinstance(fn.__self__, nn.Module) else ()
            values += [v for k, v in owner.items() if k not in skip]
            objects.append(fn.__self__)
            fn = fn.__func__
    if not isinstance(fn, types.FunctionType):  # a callable object: its attributes, then its __call__'s names
        values += list(getattr(fn, "__dict__", {}).values())
        objects.append(fn)
        fn = _call_of(fn)
    cells: list[types.CellType] = []
    found: dict[str, Any] = {}
    assigned: tuple[str, ...] = ()
    if isinstance(fn, types.FunctionType):
        for cell in fn.__closure__ or ():
            cells.append(cell)
            with contextlib.suppress(ValueError):  # a cell not filled yet
                values.append(cell.cell_contents)
        found = fn.__globals__
        values += [found[n] for n in fn.__code__.co_names if n in found]
        assigned = tuple({i.argval: None for i in dis.get_instructions(fn) if i.opname in _GLOBAL_STORES})
    unique = {id(v): v for v in values if type(v) in CONTAINER_TYPES}
    objects += [v for v in values if _has_attributes(v)]
    return _Reach(list(unique.values()), list({id(o): o for o in objects}.values()), cells, found, assigned)


_GLOBAL_STORES = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})


def _has_attributes(value: Any) -> bool:
    """Whether ``value`` is an object whose attributes a hook may set: a module or a plain object with a ``__dict__``
    (not a class, a function, a Python module or a tensor)."""
    if isinstance(value, nn.Module):
        return True
    if isinstance(value, (type, types.ModuleType, torch.Tensor)) or callable(value):
        return False
    return type(getattr(value, "__dict__", None)) is dict


def _attributes(obj: Any) -> dict[str, Any]:
    """An object's attributes as they are (a module's own torch state left out: its parameters, hooks...)."""
    if isinstance(obj, nn.Module):
        return {k: v for k, v in vars(obj).items() if k not in _MODULE_STATE}
    return dict(vars(obj))


def _put_attributes(obj: Any, before: dict[str, Any]) -> None:
    """Give ``obj`` back the :func:`_attributes` taken before: remove those added, restore those replaced."""
    state = vars(obj)
    skip = _MODULE_STATE if isinstance(obj, nn.Module) else frozenset()
    for name in [k for k in state if k not in before and k not in skip]:
        del state[name]
    for name, value in before.items():
        if state.get(name, _MISSING) is not value:
            state[name] = value


_MISSING: Any = object()


def without_side_effects(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook``, putting back after each call whatever its code changed in what it reaches by name
    (:func:`_reached`): the contents of lists, dicts and sets; the attributes of the module it is called on, of the
    object it is a method of and of the objects it names; its closure's variables; the globals it assigns.

    A user's hook that both records and returns a value runs in the analysis
    (it changes what the module gives): what it records there (torch.fx's
    proxies, ``meta`` tensors, a call counter) must not stay in the user's
    objects.

    Examples
    --------
    >>> seen, calls = [], 0
    >>> def double(module, inputs, output):
    ...     global calls
    ...     seen.append(output)
    ...     calls += 1
    ...     return output * 2
    >>> without_side_effects(double)(None, (), 21), seen, calls
    (42, [], 0)
    """
    reach = _reached(hook)

    def quiet(*args: Any, **kwargs: Any) -> Any:
        before = [(c, shallow(c)) for c in reach.containers]
        objects = [*reach.objects, *(a for a in args[:1] if isinstance(a, nn.Module))]  # hook(module, ...)
        attributes = [(o, _attributes(o)) for o in objects]
        cells = [(cell, _cell_contents(cell)) for cell in reach.cells]
        found = reach.module_globals
        names = [(n, found.get(n, _MISSING)) for n in reach.assigned]
        try:
            return hook(*args, **kwargs)
        finally:
            for container, contents in before:
                if changed(container, contents):
                    put_back(container, contents)
            for obj, state in attributes:
                _put_attributes(obj, state)
            for cell, value in cells:
                if _cell_contents(cell) is not value:
                    if value is _MISSING:
                        del cell.cell_contents
                    else:
                        cell.cell_contents = value
            for name, value in names:
                if value is _MISSING:
                    found.pop(name, None)
                elif found.get(name, _MISSING) is not value:
                    found[name] = value

    return quiet


def _cell_contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not filled yet
        return _MISSING
