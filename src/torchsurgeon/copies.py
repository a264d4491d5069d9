"""Copies of a module that leave the user's alone, and the zero run for leaves that cannot run on ``meta``.

:func:`detached_copy` gives a hook-free deep copy with new tensors (on
``meta`` for shape propagation, on the CPU for surgery checks);
:func:`run_on_zeros` runs a leaf whose Python looks at tensor values once on
zero tensors, on such a copy, to learn its output shapes.  The tracer,
shape propagation and resizing all copy modules through here.
"""

from __future__ import annotations

import collections
import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn

from .errors import failure_reason

__all__ = ("detached_copy", "run_on_zeros")

_ZERO_RUN_LIMIT = 1 << 25
_HOOK_DICTS = (
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


def _cannot_run_on_meta(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, NotImplementedError) or "meta" in text or "data-dependent" in text


def run_on_zeros(
    target: nn.Module | Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], failure: Exception
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
    if not _cannot_run_on_meta(failure) or (module is None and _is_torch_function(target)):
        raise failure
    leaves = [t for t in pytree.tree_leaves((args, dict(kwargs))) if isinstance(t, torch.Tensor)]
    weights = itertools.chain(module.parameters(), module.buffers()) if module is not None else ()
    size = sum(t.numel() for t in itertools.chain(leaves, weights))
    if size > _ZERO_RUN_LIMIT:
        raise NotImplementedError(
            f"{failure_reason(failure)}; too large to run on zeros on the CPU ({size:,} elements > {_ZERO_RUN_LIMIT:,})"
        ) from failure
    with torch.device("cpu"), torch.no_grad():
        cpu_args, cpu_kwargs = pytree.tree_map(_zeros_like, (args, dict(kwargs)))
        if module is not None:
            clone = detached_copy(module, _zeros_like).eval()
            out = type(clone).forward(clone, *cpu_args, **cpu_kwargs)
        else:
            out = target(*cpu_args, **cpu_kwargs)
    return pytree.tree_map(lambda v: torch.empty_like(v, device="meta") if isinstance(v, torch.Tensor) else v, out)


def _is_torch_function(fn: Any) -> bool:
    name = str(getattr(fn, "__module__", None) or "")
    return name.split(".")[0] in ("torch", "_operator", "operator", "builtins", "math")


def detached_copy(module: nn.Module, tensor: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """A deep copy of ``module`` with new parameters and buffers, ``tensor(original)``, and no hooks.

    Parameters keep ``requires_grad``; shared parameters stay shared.  The
    hooks of ``module`` and its submodules are neither copied nor run by the
    copy, so user hooks never see torchsurgeon's tensors.  ``module`` is not
    touched.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Linear(3, 2)
    >>> _ = m.register_forward_hook(lambda *a: print("hook"))
    >>> c = detached_copy(m, lambda t: torch.empty_like(t, device="meta"))
    >>> c.weight.device.type, m.weight.device.type, len(c._forward_hooks), len(m._forward_hooks)
    ('meta', 'cpu', 0, 1)
    """
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo.setdefault(id(p), nn.Parameter(tensor(p.detach()), requires_grad=p.requires_grad))
    for b in module.buffers():
        memo.setdefault(id(b), tensor(b))
    for m in module.modules():
        for attr in _HOOK_DICTS:
            hooks = m.__dict__.get(attr)
            if isinstance(hooks, dict):
                memo[id(hooks)] = collections.OrderedDict()
    return copy.deepcopy(module, memo)


def _zeros_like(value: Any) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    try:
        return torch.zeros(value.shape, dtype=value.dtype, device="cpu")
    except (RuntimeError, TypeError):  # quantized and other exotic dtypes
        return torch.empty(value.shape, dtype=value.dtype, device="cpu")
