"""einops' ``rearrange`` (function) and ``Rearrange`` (layer): a reshape, a permute and a reshape.

MONAI's SwinUNETR and UNETR, and many research models, move axes with
einops.  Its torch backend computes, from the pattern and the input's shape,
an optional reshape, an optional permute and an optional final reshape
(``einops.einops._reconstruct_from_shape``); the rule asks einops for that
recipe and applies the ``reshape`` and ``permute`` rules of
:mod:`~torchsurgeon.rules.views` in the same order, so the output's strides
are the ones a real call gives.  Patterns that reduce or add axes, lists of
tensors, an einops without these internals, and anything einops refuses
(its own error message is then recorded) run on ``meta``.  Registered by
qualified name: einops is optional.  No FLOPs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._common import fn, one_tensor
from .registry import FALLBACK, Call, builtin
from .views import _permute_of, _reshape_method

__all__: tuple[str, ...] = ()


def _recipe_steps(recipe: Any, x: torch.Tensor, axes_lengths: tuple[tuple[str, int], ...]) -> Any:
    """``x`` rearranged by an einops recipe, or FALLBACK."""
    try:
        from einops.einops import _reconstruct_from_shape, _reconstruct_from_shape_uncached
    except ImportError:  # pragma: no cover - einops without it
        return FALLBACK
    try:
        try:  # einops' own cache per input shape, as a real call reads it (computing it took 18 of the rule's 100 us)
            steps = _reconstruct_from_shape(recipe, x.shape, axes_lengths)
        except TypeError:  # an axis length that cannot be hashed: computed, as einops does then
            steps = _reconstruct_from_shape_uncached(recipe, list(x.shape), list(axes_lengths))
    except Exception:  # einops refuses the shape: its own message, from running it on meta
        return FALLBACK
    init, reordering, reduced, added, final, _ = steps  # shared with einops' cache: only read
    if reduced or added:
        return FALLBACK
    out: Any = x
    if init is not None:
        out = _reshape_method((out, tuple(init)), {})
    if reordering is not None and out is not FALLBACK:
        out = _permute_of(out, list(reordering))
    if final is not None and out is not FALLBACK:
        out = _reshape_method((out, tuple(final)), {})
    return out


def _rearrange_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 2 or not isinstance(args[0], torch.Tensor) or not isinstance(args[1], str):
        return FALLBACK
    x, pattern = args
    if not all(isinstance(k, str) and type(v) is int for k, v in kwargs.items()):
        return FALLBACK
    try:
        from einops.einops import _prepare_transformation_recipe

        recipe = _prepare_transformation_recipe(pattern, "rearrange", axes_names=tuple(kwargs), ndim=x.dim())
    except Exception:  # an einops without it, or a pattern it refuses
        return FALLBACK
    return _recipe_steps(recipe, x, tuple(kwargs.items()))


def _rearrange_layer(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    recipes, lengths = getattr(m, "_multirecipe", None), getattr(m, "_axes_lengths", None)
    if not isinstance(recipes, dict) or x.dim() not in recipes or not isinstance(lengths, tuple):
        return FALLBACK
    return _recipe_steps(recipes[x.dim()], x, lengths)


builtin("einops.einops.rearrange", shape=fn(_rearrange_fn))
builtin("einops.layers.torch.Rearrange", shape=one_tensor(_rearrange_layer))
