"""A failed trace explained in the user's terms: where it failed, why, and a fix that runs as written.

:func:`torchsurgeon.trace.trace` raises what :func:`trace_error` makes when
torch.fx cannot get past a part of the model that cannot be made an opaque
leaf (the model's own forward, a leaf called with what fx cannot record).
"""

from __future__ import annotations

import linecache
import math
import re
import traceback
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .arguments import forward_parameters
from .errors import TraceError, failure_reason, library_file, source_line
from .knowndata import DATA_LIMIT
from .metavalues import DATA_INPUTS, NO_EXAMPLE
from .shapespec import missing_input, written_inputs

__all__ = ("UNREGISTERED", "data_fix", "trace_error", "type_guard", "unregistered")


_HINTS = (
    ("inputs to control flow", "Python if/while/assert on a tensor value"),
    ("cannot be iterated", "a loop over, or unpacking of, a traced value (for example a list of tensors as input)"),
    ("'len' is not supported", "len() of a traced value (use x.shape[0])"),
    ("argument of type", "a value fx cannot record passed to a leaf"),
)


_EXAMPLE_VALUES: dict[Any, Any] = {bool: False, "bool": False, int: 1, "int": 1, float: 1.0, "float": 1.0}
"""An example value of a ``forward`` argument annotated as a Python number or flag, for the fix that passes it."""


def _python_argument(model: nn.Module, name: str, given: Mapping[str, Any]) -> str:
    """The fix for a ``forward`` argument annotated as a Python flag or number (SAM's ``multimask_output: bool``) that
    was not given: its value by name, which paramcount traces as a constant; ``""`` for any other argument."""
    found = [p.annotation for p in forward_parameters(model) if p.name == name]
    example = _EXAMPLE_VALUES.get(found[0]) if found and isinstance(found[0], (type, str)) else None
    if example is None:
        return ""
    return (
        f"forward needs {name!r}, a Python {type(example).__name__} (its annotation), which was not given — pass "
        f"its value by name, traced as a constant: paramcount(model, {written_inputs({**given, name: example})})"
    )


def _hint(exc: BaseException) -> str:
    text = str(exc)
    return next((f" ({hint})" for key, hint in _HINTS if key in text), "")


def _data_decides(inputs: Mapping[str, tuple[tuple[int, ...], torch.dtype, bool]]) -> bool:
    """Whether the data of some of ``inputs`` decides a branch, all of them small enough to be read as data."""
    deciding = [shape for shape, _, decides in inputs.values() if decides]
    return bool(deciding) and all(math.prod(shape) <= DATA_LIMIT for shape in deciding)


def data_fix(inputs: Mapping[str, tuple[tuple[int, ...], torch.dtype | str, bool]]) -> str:
    """The fix for a branch of the model's own forward (or an op) on the data of some ``inputs`` (given as shapes,
    with their shapes, dtypes and whether their data decides): give the inputs as tensors, with the user's own
    values (no values of ours are sure to take the path theirs take).

    Examples
    --------
    >>> print(data_fix({"lengths": ((2,), torch.int64, True)}))  # doctest: +NORMALIZE_WHITESPACE
    the values of 'lengths' decide what the forward does here (a branch, or an op that needs them): give the inputs
    with their values, paramcount(model, {'lengths': lengths}) with lengths your (2,) int64 tensor (a small CPU
    tensor given as an input is read as data)
    """
    names = " and ".join(repr(n) for n, (*_, decides) in inputs.items() if decides)
    given = ", ".join(f"{n!r}: {n}" for n in inputs)
    shapes = "; ".join(
        f"{n} your {tuple(shape)} {str(dtype).removeprefix('torch.')} tensor" for n, (shape, dtype, _) in inputs.items()
    )
    return (
        f"the values of {names} decide what the forward does here (a branch, or an op that needs them): give the "
        f"inputs with their values, paramcount(model, {{{given}}}) with {shapes} (a small CPU tensor given as an "
        "input is read as data)"
    )


_TYPE_CHECK = re.compile(r"\btype\(\s*[\w.]+\s*\)\s*(?:is\b|[!=]=|not\s+in\b|in\b)|\.__class__\s*(?:is\b|[!=]=)")


def type_guard(exc: BaseException) -> tuple[str, str] | None:
    """The type check by ``type(x)`` that raised ``exc`` in the model's own code (``if type(x) is not torch.Tensor:
    raise TypeError``), as ``('file:line', code)``: a trace's proxy is never of the tensor type there, only
    ``isinstance`` is answered for it (:mod:`torchsurgeon.frontend`).  None for any other failure.

    Examples
    --------
    >>> import torch
    >>> def forward(x):
    ...     if type(x) is not torch.Tensor:
    ...         raise TypeError("expected a tensor")
    >>> try:
    ...     forward(1)
    ... except TypeError as exc:
    ...     print(type_guard(exc)[1])
    if type(x) is not torch.Tensor:
    """
    frame = next((f for f in reversed(traceback.extract_tb(exc.__traceback__)) if not library_file(f.filename)), None)
    if frame is None or frame.lineno is None:
        return None
    for lineno in range(frame.lineno, max(frame.lineno - 3, 0), -1):  # the raise, or the if just above it
        code = linecache.getline(frame.filename, lineno).strip()
        if _TYPE_CHECK.search(code):
            return f"{frame.filename}:{lineno}", code
    return None


UNREGISTERED = "torchsurgeon_unregistered"
"""The attribute naming, on the error of a module with weights that is not the model's submodule, where it is."""


def unregistered(root: nn.Module, module: nn.Module) -> str:
    """Where the model keeps ``module`` outside its submodules (``heads['age']``, a plain dict), else its class."""
    for prefix, holder in root.named_modules():
        for name, value in vars(holder).items():
            items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
            for key, item in items:
                if item is module and not name.startswith("_"):
                    return f"{prefix + '.' if prefix else ''}{name}[{key!r}] ({type(module).__name__})"
    return type(module).__name__


def trace_error(
    model: nn.Module,
    culprit: str,
    stack: list[str],
    exc: BaseException,
    concrete_args: Mapping[str, Any] | None,
    opaque: Mapping[str, str],
) -> TraceError:
    inner = next((p for p in reversed(stack) if p), "")
    whole_model = not culprit and "." not in inner  # the model's own forward: no leaf gets past it
    if culprit:
        where = culprit
        fix = f"pass leaf_modules=[{culprit!r}] to treat it as one opaque node"
    elif inner and not whole_model:
        where = f"{inner} (already a leaf)"
        parent = inner.rpartition(".")[0]
        fix = f"the leaf {inner!r} cannot even be called symbolically: pass leaf_modules=[{parent!r}]"
    elif inner:
        where = f"{inner} (already a leaf)"
        fix = (
            f"the model's own forward calls the leaf {inner!r} with what torch.fx cannot record: "
            "analyse the model's parts that take tensors"
        )
    elif getattr(exc, UNREGISTERED, None):
        where = f"{type(model).__name__}.forward (the top-level model)"
        fix = (
            f"it calls {getattr(exc, UNREGISTERED)}, a module with weights that is not a submodule of the model (kept "
            "in a plain dict or list): its weights are not in model.parameters(), .to() or state_dict() either — "
            "hold it in nn.ModuleDict / nn.ModuleList"
        )
    elif isinstance(exc, ValueError) and "values to unpack" in str(exc):
        where = f"{type(model).__name__}.forward (the top-level model)"
        fix = "it unpacks an input's shape, which has another number of dimensions: a real forward fails too"
    elif getattr(exc, NO_EXAMPLE, None):  # Python asks about an input given no shape: a shape for it, like another's
        where = f"{type(model).__name__}.forward (the top-level model)"
        name, given = getattr(exc, NO_EXAMPLE)
        fix = _python_argument(model, name, given) or missing_input(name, given, next(iter(given.values()), None))
    elif _data_decides(getattr(exc, DATA_INPUTS, {})):  # the forward branches on the data of small inputs
        where = f"{type(model).__name__}.forward (the top-level model)"
        fix = data_fix(getattr(exc, DATA_INPUTS))
    elif isinstance(exc, NotImplementedError) and hasattr(exc, DATA_INPUTS):  # no input's data alone decides it
        where = f"{type(model).__name__}.forward (the top-level model)"
        fix = (
            "its own code needs values that its layers compute (an op whose output size depends on them: nonzero, "
            "a boolean mask, unique), which a trace on meta never has, whatever the input: analyse its parts"
        )
    elif (guard := type_guard(exc)) is not None:
        where = f"{type(model).__name__}.forward (the top-level model)"
        fix = (
            f"its type check {guard[1]!r} ({guard[0]}) rejects the traced value, "
            "whose type() is torch.fx's Proxy: write it isinstance(x, torch.Tensor), which a trace answers for a "
            f"traced tensor, or pass leaf_modules=[{type(model).__name__}] to analyse the whole model as one layer"
        )
    else:
        where = f"{type(model).__name__}.forward (the top-level model)"
        fix = (
            "pass concrete_args={...} for arguments that steer Python control flow, "
            "or leaf_modules=[...] for the submodules that contain it; a forward that branches on tensor "
            "values must be rewritten with torch.where or moved into a submodule"
        )
    if concrete_args:
        fix += f" (concrete_args given: {sorted(concrete_args)})"
    tried = f"\n  already opaque: {', '.join(opaque)}" if opaque else ""
    reason = f"{failure_reason(exc)}{_hint(exc)}"
    source = source_line(exc)
    message = f"torch.fx cannot trace {where}: {reason}\n  at {source}{tried}\n  fix: {fix}"
    return TraceError(message, whole_model=whole_model, source=source)
