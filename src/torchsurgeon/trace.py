"""Symbolic tracing: an ``nn.Module`` becomes a ``torch.fx.GraphModule``.

The tracer treats ``torch.nn`` modules as leaves (as torch.fx does) plus any
module the caller names.  When tracing fails inside a submodule, that
submodule is made a leaf and tracing is retried (a bounded number of times);
such submodules are *opaque*: they are analysed by running them on the
``meta`` device, and the report says why.  When nothing works, the error is a
:class:`~torchsurgeon.errors.TraceError` naming the module, the source line
and the fix.  Tracing never changes the model.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
import torch.fx
from torch import nn

from .errors import InputError, TraceError

__all__ = ("Traced", "trace", "unwrap_model")

_MAX_AUTO_LEAVES = 32
_TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass(frozen=True)
class Traced:
    """A traced model: the fx ``GraphModule`` and how it was obtained.

    Attributes
    ----------
    model : nn.Module
        The user's model, untouched.
    graph_module : torch.fx.GraphModule
        The traced graph; its submodules are the model's own (shared, not copied).
    opaque : Mapping[str, str]
        Submodules made leaves automatically because tracing failed inside
        them, with the reason.
    leaf_modules : tuple[str, ...]
        Qualified names of every non-``torch.nn`` submodule treated as a leaf.
    """

    model: nn.Module
    graph_module: torch.fx.GraphModule
    opaque: Mapping[str, str] = field(default_factory=dict)
    leaf_modules: tuple[str, ...] = ()


class _SurgeonTracer(torch.fx.Tracer):
    """fx Tracer with configurable leaves that remembers where tracing failed."""

    def __init__(
        self,
        leaf_names: frozenset[str],
        leaf_types: tuple[type[nn.Module], ...],
        autowrap_modules: tuple[ModuleType, ...],
        autowrap_functions: tuple[Callable[..., Any], ...],
    ) -> None:
        super().__init__(
            autowrap_modules=autowrap_modules,  # type: ignore[arg-type]
            autowrap_functions=autowrap_functions,
        )
        self._leaf_names = leaf_names
        self._leaf_types = leaf_types
        self._stack: list[str] = []
        self.failed_in: list[str] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_names:
            return True
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        self._stack.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = list(self._stack)
            raise
        finally:
            self._stack.pop()


def unwrap_model(model: object) -> nn.Module:
    """Return the ``nn.Module`` to analyse, unwrapping ``torch.compile`` wrappers.

    Parameters
    ----------
    model : object
        What the user passed.

    Returns
    -------
    nn.Module
        ``model`` itself, or the module a ``torch.compile`` wrapper holds.

    Raises
    ------
    InputError
        If ``model`` is not an ``nn.Module``.

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Linear(2, 3)
    >>> unwrap_model(m) is m
    True
    """
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module):
        return inner
    if not isinstance(model, nn.Module):
        raise InputError(
            f"expected a torch.nn.Module, got {type(model).__name__} ({model!r:.60}) — "
            "pass the model object itself, e.g. paramcount(torchvision.models.resnet50(), (3, 224, 224))"
        )
    return model


def _source_line(exc: BaseException) -> str:
    """The innermost frame of ``exc`` outside torch: 'file:line: code'."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not frame.filename.startswith(_TORCH_DIR) and "torchsurgeon" not in frame.filename:
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    if frames:
        last = frames[-1]
        return f"{last.filename}:{last.lineno}: {(last.line or '').strip()}"
    return "<unknown source line>"


def _reason(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


def trace(
    model: nn.Module,
    *,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    concrete_args: Mapping[str, Any] | None = None,
    autowrap_functions: Iterable[Callable[..., Any]] = (),
    auto_leaf: bool = True,
) -> Traced:
    """Symbolically trace ``model`` with torch.fx.

    Parameters
    ----------
    model : nn.Module
        The model; it is not modified.
    leaf_modules : iterable of str or type
        Qualified submodule names (``"layer1.0"``) or module classes to keep
        as single nodes instead of tracing through them.
    concrete_args : mapping, optional
        Values for ``forward`` arguments that control Python flow
        (``{"return_loss": False}``), passed to torch.fx.
    autowrap_functions : iterable of callables
        Functions to record as single calls (for example helpers with Python
        control flow on shapes).
    auto_leaf : bool
        When tracing fails inside a submodule, make it a leaf and retry
        (at most 32 times).  The submodule is then reported as opaque.

    Returns
    -------
    Traced
        The GraphModule and the list of opaque submodules.

    Raises
    ------
    InputError
        If ``model`` is not an ``nn.Module`` or a leaf name is not a submodule.
    TraceError
        If tracing fails at the top level of ``forward`` or keeps failing;
        the message names the module, the source line and the fix.

    Examples
    --------
    >>> from torch import nn
    >>> t = trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    >>> [n.op for n in t.graph_module.graph.nodes]
    ['placeholder', 'call_module', 'call_module', 'output']
    """
    model = unwrap_model(model)
    names: set[str] = set()
    types: list[type[nn.Module]] = []
    submodules = dict(model.named_modules())
    for leaf in leaf_modules:
        if isinstance(leaf, str):
            if leaf not in submodules:
                raise InputError(
                    f"leaf_modules names {leaf!r}, which is not a submodule of {type(model).__name__} — "
                    f"use a qualified name such as {next(iter(n for n in submodules if n), 'layer1.0')!r}"
                )
            names.add(leaf)
        elif isinstance(leaf, type) and issubclass(leaf, nn.Module):
            types.append(leaf)
        else:
            raise InputError(f"leaf_modules entries must be names or nn.Module classes, got {leaf!r}")

    opaque: dict[str, str] = {}
    for _attempt in range(_MAX_AUTO_LEAVES + 1):
        tracer = _SurgeonTracer(frozenset(names), tuple(types), (math,), tuple(autowrap_functions))
        try:
            graph = tracer.trace(model, concrete_args=dict(concrete_args) if concrete_args else None)
        except Exception as exc:
            where = [p for p in (tracer.failed_in or []) if p]
            culprit = where[-1] if where else ""
            if auto_leaf and culprit and culprit not in names:
                names.add(culprit)
                opaque[culprit] = _reason(exc)
                continue
            raise _trace_error(model, culprit, exc, concrete_args) from exc
        graph_module = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
        leaves = sorted(
            {n.target for n in graph.nodes if n.op == "call_module"}  # type: ignore[misc]
            - {q for q, m in submodules.items() if type(m).__module__.startswith("torch.nn")}
        )
        return Traced(model, graph_module, opaque, tuple(str(x) for x in leaves))
    raise TraceError(  # pragma: no cover - needs > 32 nested failures
        f"{type(model).__name__}: tracing still fails after making {len(opaque)} submodules leaves "
        f"({', '.join(opaque)}) — pass leaf_modules=[...] for the modules with Python control flow"
    )


def _trace_error(
    model: nn.Module, culprit: str, exc: BaseException, concrete_args: Mapping[str, Any] | None
) -> TraceError:
    where = culprit or f"{type(model).__name__}.forward (the top-level model)"
    fix = (
        f"pass leaf_modules=[{culprit!r}] to treat it as one opaque node"
        if culprit
        else "pass concrete_args={...} for arguments that steer Python control flow, "
        "or leaf_modules=[...] for the submodules that contain it"
    )
    if concrete_args:
        fix += f" (concrete_args given: {sorted(concrete_args)})"
    return TraceError(f"torch.fx cannot trace {where}: {_reason(exc)}\n  at {_source_line(exc)}\n  fix: {fix}")
