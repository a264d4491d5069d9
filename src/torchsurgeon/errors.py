"""The exception hierarchy of torchsurgeon.

Every error raised on purpose by the library is a :class:`TorchSurgeonError`.
Messages name the layer or value at fault and say how to fix it.
"""

from __future__ import annotations

import difflib
import enum
import functools
import os
import re
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = (
    "ConfigError",
    "ContractError",
    "InputError",
    "MemoryPlanError",
    "ShapeError",
    "SurgeryError",
    "TorchSurgeonError",
    "TraceError",
    "as_written",
    "check_flag",
    "check_option",
    "close_names",
    "did_you_mean",
    "failure_reason",
    "first_line",
    "library_file",
    "no_such_name",
    "source_line",
    "with_numbers",
)


class TorchSurgeonError(Exception):
    """Base class for every error torchsurgeon raises on purpose."""


class InputError(TorchSurgeonError, ValueError):
    """An argument is not a model, a shape or an option torchsurgeon accepts."""


class TraceError(TorchSurgeonError):
    """torch.fx could not trace the model, even with automatic leaf modules.

    ``whole_model`` is True when what fails is the model's own ``forward``
    (no submodule can be made a leaf to get past it: a detection model
    handing its parts an ``ImageList``); :func:`torchsurgeon.paramcount`
    then names a part that can be analysed.
    """

    def __init__(self, message: str, *, whole_model: bool = False, source: str = "") -> None:
        super().__init__(message)
        self.whole_model = whole_model
        self.source = source
        """Where the model's code failed (:func:`source_line` of the trace's error)."""


class ShapeError(TorchSurgeonError):
    """Shapes could not be propagated through the traced graph, or the model itself refuses the input (its own
    ``forward`` checks it, and a real forward raises too)."""


class SurgeryError(TorchSurgeonError):
    """A model edit (folding, head replacement) cannot be done as asked."""


class ContractError(TorchSurgeonError, AssertionError):
    """A model breaks a declared shape or parameter contract."""


class MemoryPlanError(TorchSurgeonError):
    """A training step could not be simulated on fake tensors to plan its memory."""


class ConfigError(TorchSurgeonError):
    """A contract configuration (pyproject table, lockfile, import path) is malformed."""


def as_written(target: Any) -> str:
    """``target`` as a user's code names it, for a message's fix: torch's classes and functions by their path
    (``nn.ReLU``, ``torch.nn.functional.relu``), the user's own by their qualified name, strings quoted.

    Examples
    --------
    >>> import torch
    >>> as_written(torch.nn.ReLU), as_written("view"), as_written(torch.nn.functional.relu)
    ('nn.ReLU', "'view'", 'torch.nn.functional.relu')
    """
    if isinstance(target, str):
        return repr(target)
    module, name = getattr(target, "__module__", None) or "", getattr(target, "__qualname__", repr(target))
    if isinstance(target, type) and module.startswith("torch.nn.modules"):
        return f"nn.{name}"
    return f"{module + '.' if module.startswith('torch') else ''}{name}"


def check_flag(value: Any, name: str, meaning: str, *, optional: bool = False) -> None:
    """Refuse ``value``, given as the argument ``name``, unless it is True or False (or None when ``optional``):
    ``inplace='no'`` is a true value to Python, and would do what the user said not to.

    Raises
    ------
    InputError
        Naming the argument, the value and what True does (``meaning``).

    Examples
    --------
    >>> check_flag(True, "inplace", "True edits the model given, False a copy")
    >>> check_flag("no", "inplace", "True edits the model given, False a copy")
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: inplace='no' — give True or False (True edits the model given, False a copy)
    """
    if not isinstance(value, bool) and not (optional and value is None):
        none = ", or None" if optional else ""
        raise InputError(f"{name}={value!r} — give True or False{none} ({meaning})")


def check_count(value: Any, name: str, meaning: str) -> int:
    """``value``, a count given as the argument ``name``, if it is a positive int (not a bool).

    Raises
    ------
    InputError
        Naming the argument, the value and what it counts (``meaning``).

    Examples
    --------
    >>> check_count(5, "num_classes", "the new class count")
    5
    >>> check_count(0, "num_classes", "the new class count")
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: num_classes=0 — the new class count must be a positive int
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{name}={value!r} — {meaning} must be a positive int")
    return value


E = TypeVar("E", bound=enum.Enum)


def check_option(value: Any, kind: type[E], name: str, *, also: str = "", among: Sequence[E] | None = None) -> E:
    """``value``, given as the argument ``name``, as a member of the option enum ``kind``: the member itself, or
    its value as a string in any case (``"SUM"`` is ``FoldMode.SUM``), the one rule of every option torchsurgeon
    takes (fold modes, ``crosscheck``, ``optimizer``, table formats and columns).

    Raises
    ------
    InputError
        Naming the argument, the value, the closest option (:func:`did_you_mean`) and every option; ``also``
        adds what else the argument takes.  ``among``: the members this argument takes, when not every member
        of ``kind`` (``fold_weight`` takes no ``'random'``): no other is accepted, suggested or listed.

    Examples
    --------
    >>> from torchsurgeon.records import FoldMode
    >>> check_option("SUM", FoldMode, "mode")
    <FoldMode.SUM: 'sum'>
    >>> check_option("sume", FoldMode, "mode")
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: mode='sume' — did you mean 'sum'? mode='sum'; use one of 'sum', 'spread', \
'repeat', 'zero_extra', 'random'
    """
    members = list(kind) if among is None else list(among)
    if isinstance(value, kind) and value in members:
        return value
    values = [str(member.value) for member in members]
    for text in (value, value.lower()) if isinstance(value, str) else ():
        try:
            member = kind(text)  # its own aliases too (TableColumn's torchinfo names)
        except ValueError:
            continue
        if member in members:
            return member
    meant = did_you_mean(value.lower(), values, lambda close: f"{name}={close!r};") if isinstance(value, str) else ""
    options = ", ".join(map(repr, values))
    raise InputError(f"{name}={value!r} — {meant + ' ' if meant else ''}use one of {options}{also}")


def close_names(name: str, names: Iterable[str], *, most: int = 1, cutoff: float = 0.6) -> list[str]:
    """The names of ``names`` most like ``name`` (a typo of one), most alike first, at most ``most`` of them:
    difflib's ratio at least ``cutoff`` (0.6 lets about a letter in three differ, 0.8 one or two in ten).

    Examples
    --------
    >>> close_names("pixel_value", ["labels", "pixel_values"]), close_names("head", ["conv1", "bn1"])
    (['pixel_values'], [])
    """
    return difflib.get_close_matches(name, list(names), n=most, cutoff=cutoff)


def did_you_mean(
    name: str,
    names: Iterable[str],
    fix: Callable[[str], str] | None = None,
    *,
    most: int = 1,
    cutoff: float = 0.6,
    holding: bool = False,
) -> str:
    """What to propose for ``name``, none of ``names``: ``"did you mean 'NAME'? FIX"`` with the names most like it
    (:func:`close_names`; with ``holding``, then those holding it: a layer named without its parent, ``fc`` for
    ``head.fc``), each as Python writes it, and ``fix(NAME)``, what runs with the closest; ``""`` when none is close.

    Every "did you mean" of the library is written here: a layer, an input, a key, a model or an argument.

    Examples
    --------
    >>> did_you_mean("conv1x", ["conv1", "bn1"], lambda name: f"give layer={name!r}")
    "did you mean 'conv1'? give layer='conv1'"
    >>> did_you_mean("fc", ["conv1", "head.fc", "head.fc2"], most=5, holding=True)
    "did you mean 'head.fc', 'head.fc2'?"
    >>> did_you_mean("head", ["conv1", "bn1"])
    ''
    """
    names = list(names)
    close = close_names(name, names, most=most, cutoff=cutoff)
    if holding:
        close = list(dict.fromkeys([*close, *(n for n in names if name and name in n)]))[:most]
    if not close:
        return ""
    said = f"did you mean {', '.join(map(repr, close))}?"
    return f"{said} {fix(close[0])}" if fix is not None else said


def no_such_name(name: str, names: list[str], what: str = "layers", *, most: int = 5) -> str:
    """What to say when ``name`` is none of ``names``: the names most like it (:func:`did_you_mean`, at most
    ``most``, those holding it too), else the first few.

    Examples
    --------
    >>> no_such_name("conv1x", ["conv1", "bn1", "layer1.0.conv1"])
    "did you mean 'conv1'?"
    >>> no_such_name("head", ["conv1", "bn1"])
    'the layers are conv1, bn1'
    """
    said = did_you_mean(name, names, most=most, holding=True)
    return said or f"the {what} are {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"


_PROXY_NAME = re.compile(r"Proxy\((\w+)\)")


def with_numbers(text: str, numbers: Mapping[str, Any]) -> str:
    """``text`` with each ``Proxy(name)`` a message formatted while tracing holds replaced by the number the
    node ``name`` stands for, where known.

    Examples
    --------
    >>> with_numbers("Expected 3 but got Proxy(getitem_4).", {"getitem_4": 1})
    'Expected 3 but got 1.'
    """
    return _PROXY_NAME.sub(lambda m: str(numbers.get(m.group(1), m.group(0))), text)


def first_line(exc: BaseException, limit: int = 300) -> str:
    r"""The first line of ``exc``'s message (its type's name when it has none), at most ``limit`` characters.

    Examples
    --------
    >>> first_line(RuntimeError("shapes do not match\nsee the docs")), first_line(KeyError())
    ('shapes do not match', 'KeyError')
    """
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def failure_reason(exc: BaseException) -> str:
    """One line saying why something failed, for messages and reports: ``"TypeName: first line"``.

    torch.fx's messages go on with a tutorial after their first sentence;
    only that sentence is kept, and the whole is at most 300 characters.

    Examples
    --------
    >>> failure_reason(KeyError("conv1"))
    "KeyError: 'conv1'"
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > 160 and ". " in first:  # fx's messages go on with a tutorial
        first = first[: first.index(". ") + 1]
    return f"{type(exc).__name__}: {first}"[:300]


def library_file(path: str) -> bool:
    """Whether ``path`` is torch's or torchsurgeon's own code: not where a model failed, nor the model's code.

    Examples
    --------
    >>> library_file(__file__), library_file("/home/me/model.py")
    (True, False)
    """
    return os.path.abspath(path).startswith(_library_dirs())


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, str]:
    import torch  # here: importing torchsurgeon (the pytest plugin) does not import torch

    return os.path.dirname(torch.__file__) + os.sep, os.path.dirname(os.path.abspath(__file__)) + os.sep


def source_line(exc: BaseException) -> str:
    """The innermost frame of ``exc`` outside torch and torchsurgeon, as ``'file:line: code'``: where a model's own
    code failed.

    Examples
    --------
    >>> def forward(t):
    ...     assert t <= 16, "too long"
    >>> try:
    ...     forward(20)
    ... except AssertionError as exc:
    ...     print(source_line(exc).split(": ", 1)[1])
    assert t <= 16, "too long"
    """
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not library_file(frame.filename):
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    if frames:
        last = frames[-1]
        return f"{last.filename}:{last.lineno}: {(last.line or '').strip()}"
    return "<unknown source line>"
