"""The forward hooks a model installs on itself, run while tracing; the model left exactly as it was found.

transformers collects hidden states with forward hooks the model installs on
itself during its first forward (UperNet's and DPT's heads read them): a
trace runs those hooks, and the user's that may return a value (a pre-hook
making grey images RGB), never those that only look.  A forward may also change the
model itself (a flag, an attribute set from a traced size, a cache filled
in place, a buffer it moves): :meth:`OwnHooks.restore` puts everything back.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .copies import HOOK_DICTS
from .hookkinds import (
    CONTAINER_TYPES,
    changed,
    held_recorders,
    hook_recorders,
    hook_runs,
    libraries_of,
    model_hook,
    put_back,
    shallow,
    without_side_effects,
)

__all__ = ("OwnHooks",)

_FORWARD_HOOKS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


_HOOK_NAMES = frozenset(HOOK_DICTS)


def _held(value: Any) -> tuple[Any, ...]:
    """The attributes of a plain Python object a module holds (timm's ``FeatureHooks`` keeps the outputs its hooks
    collect in a dict of its own); nothing for a module, a tensor, a class or anything without a ``__dict__``."""
    state = getattr(value, "__dict__", None)
    if type(state) is not dict or isinstance(value, (nn.Module, torch.Tensor, type, ModuleType)) or callable(value):
        return ()
    return tuple(state.values())


class OwnHooks:
    """The forward hooks that change what a model computes, run while tracing; hooks that only look never are.

    A hook runs when it was installed during the trace (transformers installs
    its output-capturing hooks on the first forward), when its function comes
    from the installed library that defines the model's class, when it is a
    method of an object the model holds (fastai's ``Hook``, whose stored output
    ``DynamicUnet``'s blocks read: :func:`torchsurgeon.hookkinds.held_recorders`;
    its attributes are put back after the trace), or when it may
    return a value (:func:`torchsurgeon.hookkinds.returns_values`).
    :meth:`restore` removes whatever the trace added to the model's modules (hooks, attributes such as
    ``_output_capturing_hooks_installed``) and puts back the attributes it
    replaced (transformers' Swin sets ``window_size`` from the traced input
    size: a proxy left in the model).  ``modules``: all of the model's modules, each once (the trace's walk).

    Examples
    --------
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.window = 7
    >>> m = Block()
    >>> own = OwnHooks(m)
    >>> handle = m.register_forward_hook(lambda *a: None)  # installed "during the trace"
    >>> own.installed(m)
    True
    >>> m.window = "set from a traced size"
    >>> own.restore(); len(m._forward_hooks), m.window
    (0, 7)
    """

    def __init__(self, model: nn.Module, modules: Iterable[nn.Module] | None = None) -> None:
        self._modules = list(model.modules() if modules is None else modules)
        # each module's attributes as they were: a shallow copy of the __dict__ of modules whose Python
        # forward the trace runs; torch.nn layers are traced as leaves, their attribute count is enough
        self._attributes: list[dict[str, Any] | int] = [
            len(m.__dict__) if type(m).__module__.startswith("torch.nn.") else dict(m.__dict__) for m in self._modules
        ]
        # and the contents of their lists, dicts and sets: a forward may fill a cache in place (transformers'
        # LeViT keys its attention biases by device: a proxy, whose entry failed every later trace)
        self._contents: list[tuple[Any, Any]] = [
            (value, shallow(value))
            for before in self._attributes
            if not isinstance(before, int)
            for name, value in before.items()
            if name not in _HOOK_NAMES
            for value in (value, *_held(value))
            if type(value) in CONTAINER_TYPES
        ]
        # hook ids come from one process-wide counter: a hook with an id past it was installed during the trace
        self._first_new = RemovableHandle.next_id
        self._libraries = libraries_of(model, self._modules)
        recorders = hook_recorders(self._modules)
        # objects whose hooks record what the model reads (fastai's)
        self._held = held_recorders(model, recorders, self._modules)
        # their attributes as they were: such a hook, run in the trace, stores a proxy there
        self._recorders = [(r, dict(vars(r))) for r in recorders.values() if type(getattr(r, "__dict__", None)) is dict]
        self._quiet: dict[int, Callable[..., Any]] = {}  # the user's hooks that run, by id (without_side_effects)

    def installed(self, module: nn.Module) -> bool:
        """Whether ``module`` has forward hooks that are the model's own (cheap when it has none)."""
        if not (module._forward_hooks or module._forward_pre_hooks):
            return False
        return any(True for _ in self._own(module, "_forward_hooks")) or any(
            True for _ in self._own(module, "_forward_pre_hooks")
        )

    def _own(self, module: nn.Module, attr: str) -> Iterator[tuple[int, Callable[..., Any]]]:
        for key, hook in getattr(module, attr).items():
            if key >= self._first_new:
                yield key, hook
            elif hook_runs(hook, self._libraries, self._held):
                if model_hook(hook, self._libraries, self._held):
                    yield key, hook
                    continue
                quiet = self._quiet.get(key)  # the user's, returning a value: what it records is put back
                if quiet is None:
                    quiet = self._quiet[key] = without_side_effects(hook)
                yield key, quiet

    def call(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], forward: Callable[..., Any]
    ) -> Any:
        """``forward(*args, **kwargs)`` with only the module's own forward hooks, as ``nn.Module.__call__`` runs them.

        ``forward`` traces the module: through its ``forward``, or as one node when it is a leaf.
        """
        with_kwargs = module._forward_pre_hooks_with_kwargs
        for key, hook in self._own(module, "_forward_pre_hooks"):
            if key in with_kwargs:
                result = hook(module, args, kwargs)
                if result is not None:
                    args, kwargs = result
            else:
                result = hook(module, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        output = forward(*args, **kwargs)
        for key, hook in self._own(module, "_forward_hooks"):
            if key in module._forward_hooks_with_kwargs:
                result = hook(module, args, kwargs, output)
            else:
                result = hook(module, args, output)
            if result is not None:
                output = result
        return output

    def restore(self) -> None:
        """Remove the hooks and attributes the trace added to the model's modules; put back those it replaced."""
        hooks_added = RemovableHandle.next_id != self._first_new  # none at all, in the whole process: skip them
        for m, before in zip(self._modules, self._attributes):
            state = m.__dict__
            if hooks_added:
                for attr in _FORWARD_HOOKS:
                    table = state[attr]
                    for key in [k for k in table if k >= self._first_new]:
                        del table[key]
            if isinstance(before, int):  # attributes are appended to __dict__ in order
                if len(state) > before:
                    for name in list(state)[before:]:
                        del state[name]
            else:
                _put_back_attributes(state, before)
        for container, contents in self._contents:
            if changed(container, contents):
                put_back(container, contents)
        for recorder, attributes in self._recorders:
            _put_back_attributes(vars(recorder), attributes)


def _put_back_attributes(state: dict[str, Any], before: dict[str, Any]) -> None:
    """Make an object's ``__dict__`` what it was, ``before``; same names in the same order, each the same object:
    nothing to do (the common case, one pass in C)."""
    if len(state) != len(before) or any(map(operator.is_not, state.values(), before.values())):
        state.clear()
        state.update(before)
