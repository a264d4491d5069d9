"""What the code calling into a trace does with a traced value, read from its bytecode (once per function).

torch.fx disassembles the calling function on every question to see whether
a proxy is unpacked (``b, c, h, w = x.shape``): here each function is
disassembled once (a fifth of the time of tracing MONAI's SwinUNETR went
there), and the same reading tells whether a ``bool()`` is an ``assert``'s.
"""

from __future__ import annotations

import bisect
import dis
import functools
import sys
import types
from typing import Any

from .errors import library_file

__all__ = ("asserted_by_caller", "isinstance_in_model", "unpacked_count")


@functools.lru_cache(maxsize=512)
def _instructions(code: types.CodeType) -> tuple[list[int], list[tuple[str, Any]]]:
    """The offsets of ``code``'s instructions, and each one's (opname, argval)."""
    found = list(dis.get_instructions(code))
    return [i.offset for i in found], [(i.opname, i.argval) for i in found]


def _at(code: types.CodeType, lasti: int) -> tuple[int, list[tuple[str, Any]]]:
    """The index of the instruction at ``lasti`` (a frame's ``f_lasti``), and ``code``'s instructions."""
    offsets, instructions = _instructions(code)
    at = bisect.bisect_left(offsets, lasti) if sys.version_info >= (3, 11) else lasti // 2  # as torch.fx finds it
    return at, instructions


def unpacked_count(code: types.CodeType, lasti: int) -> int | None:
    """How many items the instruction at ``lasti`` unpacks (``a, b = ...``), None for anything else.

    Examples
    --------
    >>> def unpack(x):
    ...     a, b = x
    ...     return a
    >>> at = next(i.offset for i in dis.get_instructions(unpack) if i.opname == "UNPACK_SEQUENCE")
    >>> unpacked_count(unpack.__code__, at), unpacked_count(unpack.__code__, 0)
    (2, None)
    """
    at, instructions = _at(code, lasti)
    if at < len(instructions) and instructions[at][0] == "UNPACK_SEQUENCE":
        return int(instructions[at][1])
    return None


def asserted_by_caller() -> bool:
    """Whether the ``bool()`` being answered is an ``assert`` statement's, in the first frame outside torch and
    torchsurgeon: the model checks a value (XLM's ``assert lengths.max().item() <= slen``), which decides no
    shape.

    Examples
    --------
    >>> import torch
    >>> class Checks(torch.nn.Module):  # a trace asks it of the proxy's bool(): data, so not known
    ...     def forward(self, ids):
    ...         assert (ids >= 0).all(), "negative ids"
    ...         return ids.float()
    >>> from torchsurgeon import paramcount
    >>> paramcount(Checks(), {"ids": (4,)}).output_shape
    (1, 4)
    """
    frame = sys._getframe(1)
    while frame is not None and library_file(frame.f_code.co_filename):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return False
    at, instructions = _at(frame.f_code, frame.f_lasti)
    return (
        at + 1 < len(instructions)
        and instructions[at][0].startswith("POP_JUMP")
        and "IF_TRUE" in instructions[at][0]
        and instructions[at + 1][0] == "LOAD_ASSERTION_ERROR"
    )


_PASSING_ON = frozenset({"abc", "typing"})
"""Modules whose ``__instancecheck__`` reads ``__class__`` for their caller's ``isinstance(x, Mapping)``."""


def isinstance_in_model(frame: types.FrameType | None) -> bool:
    """Whether ``frame`` (the Python code that made Python read a proxy's ``__class__``) is a model's own
    ``isinstance(x, ...)`` or ``torch.is_tensor(x)``, outside torch and torchsurgeon, read from its bytecode.

    Only a call of the builtin ``isinstance`` is one: torch's C functions read ``__class__`` too (a subclass check
    before they take the object for a tensor), called from the same line.  Python 3.11 or later (the
    instructions' source positions tell which name is called); always False before.

    Examples
    --------
    >>> import sys
    >>> def check(x):
    ...     return isinstance(x, int), isinstance_in_model(sys._getframe())
    >>> check(1)
    (True, False)
    >>> class Asks:
    ...     @property
    ...     def __class__(self):
    ...         print(isinstance_in_model(sys._getframe(1)))
    ...         return type(self)
    >>> isinstance(Asks(), int) if sys.version_info >= (3, 11) else print(True)
    True
    False
    """
    is_tensor = _is_tensor_code()
    while frame is not None and (frame.f_code is is_tensor or frame.f_globals.get("__name__") in _PASSING_ON):
        if frame.f_code is is_tensor:  # isinstance(obj, torch.Tensor) for the caller
            frame = frame.f_back
            return frame is not None and not _own_code(frame.f_code.co_filename)
        frame = frame.f_back
    if frame is None or frame.f_lasti not in _isinstance_calls(frame.f_code):
        return False
    return not _own_code(frame.f_code.co_filename)


@functools.lru_cache(maxsize=1)
def _is_tensor_code() -> types.CodeType | None:
    import torch  # here: importing torchsurgeon (the pytest plugin) does not import torch

    return getattr(torch.is_tensor, "__code__", None)


@functools.lru_cache(maxsize=1024)
def _own_code(path: str) -> bool:
    return library_file(path)


@functools.lru_cache(maxsize=512)
def _isinstance_calls(code: types.CodeType) -> frozenset[int]:
    """The offsets of ``code``'s calls of the global name ``isinstance`` with two arguments (3.11+: the call's
    source position starts where the name loaded first there does)."""
    if sys.version_info < (3, 11):
        return frozenset()
    first: dict[tuple[int, int], bool] = {}  # where a name load starts -> whether it loads isinstance
    calls = set()
    for ins in dis.get_instructions(code):
        pos = ins.positions
        if pos is None or pos.lineno is None or pos.col_offset is None:
            continue
        start = (pos.lineno, pos.col_offset)
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            first.setdefault(start, ins.argval == "isinstance")
        elif ins.opname in ("PRECALL", "CALL") and ins.arg == 2 and first.get(start, False):
            calls.add(ins.offset)  # 3.11 runs isinstance in PRECALL once specialised (PRECALL_NO_KW_ISINSTANCE)
    return frozenset(calls)
