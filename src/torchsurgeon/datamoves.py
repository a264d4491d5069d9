"""Known data moved between devices: what a real forward's ``.to(device)`` and ``.cpu()`` give in a trace.

Known data (:mod:`torchsurgeon.knowndata`: small CPU tensors whose values the
analysis follows) moved to the input's device stays known, although that
device is ``meta`` in a trace (:func:`kept_in_place`); a ``meta`` tensor moved
to the CPU is still not known (:func:`unknown_to_cpu`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .knowndata import off_meta

__all__ = ("kept_in_place", "unknown_to_cpu")


_TO = frozenset({"to", torch.Tensor.to})


def kept_in_place(
    target: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of ``known.to(device)`` (``target``: ``"to"`` or ``Tensor.to``) with a ``meta`` device as the
    device ``known`` is on when it is known data or a setting (a CPU tensor): moved to the input's device
    (``sorted_indices.to(input.device)``), which is ``meta`` only in a trace, it stays known, as in a real forward;
    any other call's arguments as they are.

    Examples
    --------
    >>> args, kwargs = kept_in_place("to", (torch.arange(3), torch.device("meta")), {})
    >>> args[0].to(*args[1:], **kwargs).device.type
    'cpu'
    """
    if target not in _TO or not args or not isinstance(args[0], torch.Tensor) or args[0].device.type == "meta":
        return args, dict(kwargs)
    device = args[0].device
    return (args[0], *off_meta(args[1:], device)), off_meta(dict(kwargs), device)


_CPU_MOVES = frozenset({torch.Tensor.cpu, torch.Tensor.to})


def unknown_to_cpu(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """Whether ``func(*args, **kwargs)`` only moves a ``meta`` tensor to the CPU (``x.cpu()``, ``x.to("cpu")``): its
    data is not known there either, and the ``meta`` tensor stands for the result (a real forward's copy; meta
    cannot copy data it does not have: ``pad_packed_sequence`` reads ``unsorted_indices.cpu()``).

    Examples
    --------
    >>> x = torch.empty(2, device="meta")
    >>> unknown_to_cpu(torch.Tensor.cpu, (x,), {}), unknown_to_cpu(torch.Tensor.to, (x, "cpu"), {})
    (True, True)
    >>> unknown_to_cpu(torch.Tensor.to, (x, "cpu", torch.float16), {}), unknown_to_cpu(torch.Tensor.cpu, (x.cpu,), {})
    (False, False)
    """
    if func not in _CPU_MOVES or not args or type(args[0]) is not torch.Tensor or not args[0].is_meta:
        return False
    rest = (*args[1:], *kwargs.values())
    if func is torch.Tensor.cpu:
        return not rest
    if set(kwargs) - {"device"} or len(rest) != 1:
        return False
    device = rest[0]
    return isinstance(device, (str, torch.device)) and torch.device(device).type == "cpu"
