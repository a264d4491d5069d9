"""What a user passes as the model: the ``nn.Module`` to analyse inside ``torch.compile``, ``DataParallel``, DDP and
peft wrappers (:func:`unwrap_model`); and what ``model(x)`` runs when a ``forward`` is set on the model itself
(:func:`instance_forward`) or on one of its layers (:func:`patched_forward`)."""

from __future__ import annotations

import inspect
import itertools
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .errors import InputError, TraceError

__all__ = ("distributed_wrapper", "from_peft", "instance_forward", "patched_forward", "unwrap_model")


def _passes_on_everything(model: nn.Module, inner: Any) -> bool:
    """Whether ``model`` only hands its arguments to ``inner``: its ``forward`` takes ``(*args, **kwargs)`` and
    it holds no parameter or buffer ``inner`` does not (a prompt-tuning PeftModel holds its prompt encoder)."""
    if not isinstance(inner, nn.Module) or inner is model:
        return False
    try:
        kinds = {p.kind for p in inspect.signature(model.forward).parameters.values()}
    except (TypeError, ValueError):
        return False
    if not kinds <= {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
        return False
    own = {id(t) for t in itertools.chain(model.parameters(), model.buffers())}
    return own == {id(t) for t in itertools.chain(inner.parameters(), inner.buffers())}


def from_peft(obj: object) -> bool:
    """Whether ``obj``'s class comes from peft (a ``PeftModel``, a LoRA layer around a Linear).

    Examples
    --------
    >>> from torch import nn
    >>> from_peft(nn.Linear(2, 2))
    False
    """
    return type(obj).__module__.split(".")[0] == "peft"


def unwrap_model(model: object) -> nn.Module:
    """Return the ``nn.Module`` to analyse, unwrapping ``torch.compile``, ``DataParallel``, DDP and peft's
    ``PeftModel`` (a LoRA model's ``forward(*args, **kwargs)`` only calls its base model, which holds the adapters).

    The wrapped model is analysed and edited: its layers are named without
    the wrapper's ``module.`` prefix.

    Parameters
    ----------
    model : object
        What the user passed.

    Returns
    -------
    nn.Module
        ``model`` itself, or the module a wrapper holds.

    Raises
    ------
    InputError
        If ``model`` is not an ``nn.Module``, or is a ``torch.jit`` module (no Python ``forward`` to trace).

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Linear(2, 3)
    >>> unwrap_model(m) is m, unwrap_model(nn.DataParallel(m)) is m
    (True, True)
    """
    inner = _wrapped(model)
    if inner is not None:
        return unwrap_model(inner)
    if not isinstance(model, nn.Module):
        if isinstance(model, type) and issubclass(model, nn.Module):
            hint = f"pass an instance, e.g. {model.__name__}(...), not the class"
        elif isinstance(getattr(model, "__self__", None), nn.Module):
            hint = f"pass the module itself, not its {getattr(model, '__name__', 'method')} method"
        else:
            hint = "pass the model object itself, e.g. paramcount(torchvision.models.resnet50(), (3, 224, 224))"
        raise InputError(f"expected a torch.nn.Module, got {type(model).__name__} ({model!r:.60}) — {hint}")
    if isinstance(model, torch.jit.ScriptModule):  # a scripted block inside a model is analysed as one opaque layer
        raise InputError(
            f"expected a Python torch.nn.Module, got the torch.jit {type(model).__name__} torch.jit.script or "
            "torch.jit.trace made: its forward is compiled TorchScript, which torch.fx cannot trace — pass the model "
            "it was made from (analyse it first, then script it)"
        )
    return model


def _wrapped(model: object) -> nn.Module | None:
    """The module ``model`` wraps (one layer of wrapping), or None when it is no wrapper."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        wrapped: nn.Module = model.module
        return wrapped
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module):
        return inner
    base = getattr(model, "get_base_model", None)  # peft's PeftModel: forward(*args, **kwargs) calls the base model
    if isinstance(model, nn.Module) and callable(base) and _passes_on_everything(model, inner := base()):
        return inner
    compiled = getattr(model, "_torchdynamo_orig_callable", None)  # torch.compile of a compiled module's forward
    owner = getattr(compiled, "__self__", None)
    if isinstance(owner, nn.Module) and getattr(compiled, "__name__", "") == "forward":
        return owner
    return None


def distributed_wrapper(model: object) -> nn.parallel.DistributedDataParallel | None:
    """The ``DistributedDataParallel`` among the wrappers :func:`unwrap_model` takes off ``model``, or None.

    Examples
    --------
    >>> from torch import nn
    >>> distributed_wrapper(nn.DataParallel(nn.Linear(2, 3))) is None
    True
    """
    while model is not None:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model
        model = _wrapped(model)
    return None


def instance_forward(root: nn.Module, forward: Callable[..., Any]) -> Callable[..., Any]:
    """The ``forward`` that ``root(x)`` runs, as a function of the root: ``forward`` (its class's, which fx traces),
    unless one is set on the model itself.

    Cadene's ``pretrainedmodels`` sets ``model.forward = types.MethodType(forward, model)`` on the torchvision
    models it wraps (whose class ``forward`` then fails: ``self.fc`` is None), a user
    ``model.forward = model.forward_features``: a method of the model is its function.  A wrapper (accelerate's
    hooks and ``prepare``, ``functools.wraps``) is called as it is, with the arguments of the function it wraps,
    or of the class's ``forward`` when it takes only ``*args, **kwargs``.

    Raises
    ------
    TraceError
        If ``forward`` is set to a callable of other arguments that is no method of the model.

    Examples
    --------
    >>> class Net(nn.Sequential):
    ...     def features(self, x):
    ...         return self[0](x)
    >>> net = Net(nn.ReLU(), nn.Flatten())
    >>> instance_forward(net, Net.forward) is Net.forward
    True
    >>> net.forward = net.features
    >>> instance_forward(net, Net.forward) is Net.features
    True
    """
    own = root.__dict__.get("forward")
    if own is None:
        return forward
    inner = inspect.unwrap(own)
    method = isinstance(own, types.MethodType) and own.__self__ is root
    if isinstance(inner, types.MethodType) and inner.__self__ is root and not _only_varargs(inner):
        named: Callable[..., Any] = inner.__func__  # its arguments: those of the method wrapped
        if inner is own:
            return named
    elif method and isinstance(inner, types.FunctionType) and not _only_varargs(inner):
        named = inner  # a method whose function wraps one taking self (accelerate's autocast around the class's)
    elif _only_varargs(inner):
        named = forward  # a wrapper of any arguments: the model's own
    else:
        raise TraceError(
            f"{type(root).__name__}.forward is set on the model to {own!r}, not a method of it: torch.fx traces a "
            f"model's forward with its arguments — write it with self first, def forward(self, x): ..., and bind "
            f"it: model.forward = types.MethodType(forward, model)"
        )

    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return own(*args, **kwargs)

    wrapper.__wrapped__ = named  # type: ignore[attr-defined]  # what fx reads the arguments of (inspect.unwrap)
    return wrapper


def patched_forward(module: nn.Module) -> bool:
    """Whether ``module(x)`` runs a ``forward`` set on the module itself, other than its class's seen through
    wrappers (accelerate's hooks call the class's): ``model.fc.forward = lambda x: x``.

    Examples
    --------
    >>> fc = nn.Linear(4, 2)
    >>> patched_forward(fc)
    False
    >>> fc.forward = lambda x: x
    >>> patched_forward(fc)
    True
    """
    own = module.__dict__.get("forward")
    if own is None:
        return False
    inner = inspect.unwrap(own)
    return not (
        isinstance(inner, types.MethodType) and inner.__self__ is module and inner.__func__ is type(module).forward
    )


def _only_varargs(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes only ``*args`` and ``**kwargs`` (after ``self``, for a function of a method)."""
    try:
        params = list(inspect.signature(fn, follow_wrapped=False).parameters.values())
    except (TypeError, ValueError):
        return False
    return all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params if p.name != "self")
