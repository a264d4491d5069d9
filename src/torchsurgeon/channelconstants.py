"""Per-channel constants a model keeps for its input: a normalisation inside the model with one mean and one std
per input channel (torchvision's detection models: ``model.transform.image_mean`` / ``image_std``; Segment
Anything's ``pixel_mean`` / ``pixel_std`` buffers).

They guard the channel count as ``config.num_channels`` does: a 4-channel image meets 3 means and the model
fails before its first convolution.  :func:`widen_channel_constants` gives them one value per new channel when
:func:`~torchsurgeon.adapt_input_channels` widens the input, and says so in a ``setting`` row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .records import ParamChange, ParamReport

__all__ = ("channel_constants", "widen_channel_constants")

_NAMES = ("mean", "std")


def _constants(model: nn.Module, channels: int) -> Iterator[tuple[str, nn.Module, str, Any]]:
    """``(qualified name, module, attribute, value)`` of each per-channel mean or std of ``channels`` values:
    a module's own list or tuple of numbers, or a buffer of ``channels`` values (``(C,)``, ``(C, 1, 1)``), on
    modules that are not normalisation layers (a batch norm's running mean is the layer's own state)."""
    for where, module in model.named_modules():
        if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
            continue
        for attr, value in vars(module).items():
            if attr.startswith("_") or not any(word in attr.lower() for word in _NAMES):
                continue
            if isinstance(value, (list, tuple)) and len(value) == channels:
                if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    yield f"{where}.{attr}".lstrip("."), module, attr, value
        for attr, buffer in module._buffers.items():
            if buffer is None or not any(word in attr.lower() for word in _NAMES):
                continue
            if buffer.dim() >= 1 and buffer.shape[0] == channels and buffer.numel() == channels:
                yield f"{where}.{attr}".lstrip("."), module, attr, buffer


def channel_constants(model: nn.Module, channels: int) -> list[str]:
    """The qualified names of the per-channel means and stds of ``channels`` values ``model`` keeps.

    Examples
    --------
    >>> sam = nn.Module()  # Segment Anything keeps them as buffers
    >>> sam.register_buffer("pixel_mean", torch.tensor([123.7, 116.3, 103.5]).view(-1, 1, 1))
    >>> sam.register_buffer("pixel_std", torch.tensor([58.4, 57.1, 57.4]).view(-1, 1, 1))
    >>> channel_constants(sam, 3), channel_constants(sam, 1)
    (['pixel_mean', 'pixel_std'], [])
    """
    return [name for name, *_ in _constants(model, channels)]


def widen_channel_constants(model: nn.Module, before: int, after: int) -> list[ParamReport]:
    """Give each per-channel mean and std of ``model`` (see the module docstring) ``after`` values instead of
    ``before``, the old ones tiled (channel ``c`` gets old channel ``c % before``'s), one ``setting`` row each.

    Only for a wider input (``after > before``): a narrower one (a grey image) already meets every mean, broadcast
    to the old channels, which is the original model's own answer on the image replicated (nothing to change).
    The new channels' values are the tiled ones: exact for a ``zero_extra`` fold (their weights are zero), else
    the user sets their data's statistics, as the row says.

    Examples
    --------
    >>> class Normalise(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.image_mean, self.image_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    >>> model = nn.Sequential(Normalise(), nn.Conv2d(3, 8, 3))
    >>> [(row.name, row.message) for row in widen_channel_constants(model, 3, 4)]  # doctest: +NORMALIZE_WHITESPACE
    [('0.image_mean', "3 → 4 values, tiled: [0.485, 0.456, 0.406, 0.485] — set the new channels' own statistics
       if they are not RGB's"),
     ('0.image_std', "3 → 4 values, tiled: [0.229, 0.224, 0.225, 0.229] — set the new channels' own statistics
       if they are not RGB's")]
    """
    if after <= before:
        return []
    rows = []
    for name, module, attr, value in list(_constants(model, before)):
        index = torch.arange(after) % before
        if isinstance(value, torch.Tensor):
            new: Any = value.index_select(0, index.to(value.device))
            shown = new.flatten().tolist() if new.device.type != "meta" else list(new.shape)
            module._buffers[attr] = new
        else:
            new = type(value)(value[i] for i in index.tolist())
            shown = list(new)
            setattr(module, attr, new)
        note = f"{before} → {after} values, tiled: {shown} — set the new channels' own statistics if they are not RGB's"
        rows.append(ParamReport(name, ParamChange.SETTING, None, None, "", note))
    return rows
