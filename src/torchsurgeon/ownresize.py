"""A model's own call that makes it take another image size, for the fix of a finding the input's size causes.

A ViT built for 224×224 images holds position tables with one row per patch of that size, and its patch
embedding asserts the size; fine-tuning at 320×320 is common, and the search of :mod:`~torchsurgeon.inputsize`
can only name the size the model takes now. Models that know how to resample their own tables say so with a
method: timm's ``set_input_size(img_size=...)`` (its ViTs, DeiT, BEiT, EVA, Swin, FlexiViT) interpolates the
position tables the way timm loads a checkpoint at another size and updates the patch embedding's checks.
:func:`own_resize_fix` names that call, once it has run on a ``meta`` copy of the model and the copy's forward
took the input; the model itself is not touched.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from .crosscheck import forward_runs
from .shapes import meta_copy

__all__ = ("own_resize_fix",)


def own_resize_fix(model: nn.Module | None, inputs: Mapping[str, Any], batch: int = 1) -> str:
    """The statement that makes ``model`` take ``inputs`` (one image, by forward's name: a per-sample shape
    ``(C, H, W)``), by its own ``set_input_size(img_size=(H, W))``, as a fix; ``""`` when the model has no such
    method, or when the call fails on a ``meta`` copy of the model or the copy's forward fails after it
    (:func:`~torchsurgeon.crosscheck.forward_runs`).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class TinyViT(nn.Module):
    ...     def __init__(self, size=32, patch=8):
    ...         super().__init__()
    ...         self.patch, self.proj = patch, nn.Conv2d(3, 4, patch, patch)
    ...         self.pos = nn.Parameter(torch.zeros(1, 4, size // patch, size // patch))
    ...     def set_input_size(self, img_size):
    ...         grid = [s // self.patch for s in img_size]
    ...         self.pos = nn.Parameter(nn.functional.interpolate(self.pos.data, size=grid, mode="bilinear"))
    ...     def forward(self, x):
    ...         return self.proj(x) + self.pos
    >>> own_resize_fix(TinyViT(), {"x": (3, 48, 64)})
    'model.set_input_size(img_size=(48, 64))'
    >>> own_resize_fix(nn.Conv2d(3, 4, 8), {"input": (3, 48, 64)})  # no call of its own
    ''
    """
    method = getattr(model, "set_input_size", None)
    if model is None or not callable(method) or len(inputs) != 1:
        return ""
    ((name, input),) = inputs.items()
    if not isinstance(input, tuple) or len(input) != 3 or not all(type(s) is int and s > 0 for s in input):
        return ""
    try:
        if "img_size" not in inspect.signature(method).parameters:
            return ""
    except (TypeError, ValueError):
        return ""
    size = tuple(input[1:])
    try:
        copy_ = meta_copy(model).eval()
        cast(Any, copy_).set_input_size(img_size=size)
    except Exception:  # the model's own call refuses this size: not a fix
        return ""
    if not forward_runs(copy_, {name: torch.empty(batch, *input, device="meta")}):
        return ""
    return f"model.set_input_size(img_size={size})"
