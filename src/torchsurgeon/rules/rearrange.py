"""einops' ``rearrange``, ``repeat`` and ``reduce`` (functions) and ``Rearrange`` and ``Reduce`` (layers): a
reshape, a permute, a reduction, new axes and a reshape; MONAI's Swin window partition and reverse, and the
shifted-window attention mask.

MONAI's SwinUNETR and UNETR, and many research models (vit-pytorch's class
tokens: ``repeat(self.cls_token, '1 1 d -> b 1 d', b=b)``; its pooling heads:
``Reduce('b c h w -> b c', 'mean')``), move axes with einops.  Its torch
backend computes, from the pattern and the input's shape, an optional
reshape, an optional permute, a reduction over some axes, new axes (an
``unsqueeze`` each, then one ``expand``) and an optional final reshape
(``einops.einops._reconstruct_from_shape``); the rules ask einops for that
recipe and apply the ``reshape``, ``permute``, ``amin``/``amax``/``sum``/``mean``,
``unsqueeze`` and ``expand`` rules of :mod:`~torchsurgeon.rules.views` and
:mod:`~torchsurgeon.rules.reductions` in the same order, so the output's
strides are the ones a real call gives.  Other reductions (``prod``, ``any``,
``all``, a callable), lists of tensors, an einops without these internals,
and anything einops refuses (its own error message is then recorded) run on
``meta``.  Registered by qualified name: einops is optional.  No FLOPs (as
for torch's reductions).

MONAI's SwinUNETR (and SwinUNETR-v2) cut maps into windows with module-level
functions that ask the input's rank and unpack its shape: ``window_partition``
(a view, a permute, a copy, a view: 12 nodes and a question a call, when traced
through), ``window_reverse`` and ``compute_mask`` (a zero map filled region by
region: 9 or 27 ``setitem`` nodes, then partitioned).  Kept as one call each
(``builtin(..., leaf=True)``); their rules give the contiguous outputs they
make, for sizes the windows divide (else they run on ``meta``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._common import OpRule, fn, is_int, new, one_tensor
from .reductions import _EXTREMUM, _MEAN, _SUM_OR_PROD
from .registry import FALLBACK, Call, builtin
from .views import _expand, _permute_of, _reshape_method, _unsqueeze

__all__: tuple[str, ...] = ()


_REDUCTIONS: dict[str, OpRule] = {  # as einops' torch backends reduce: one call over the reduced axes
    "min": _EXTREMUM,  # x.amin(dim=axes)
    "max": _EXTREMUM,  # x.amax(dim=axes)
    "sum": _SUM_OR_PROD,
    "mean": _MEAN,  # a floating tensor only, as einops asks
}


def _recipe_steps(
    recipe: Any, x: torch.Tensor, axes_lengths: tuple[tuple[str, int], ...], reduction: str = "rearrange"
) -> Any:
    """``x`` transformed by an einops recipe (``reduction``: "rearrange", "repeat" or a reduction's name), or
    FALLBACK."""
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
    init, reordering, reduced, added, final, n_axes = steps  # shared with einops' cache: only read
    if reduced and reduction not in _REDUCTIONS:
        return FALLBACK
    out: Any = x
    if init is not None:
        out = _reshape_method((out, tuple(init)), {})
    if reordering is not None and out is not FALLBACK:
        out = _permute_of(out, list(reordering))
    if reduced and out is not FALLBACK:
        out = _REDUCTIONS[reduction]((out, tuple(reduced)), {})
    if added and out is not FALLBACK:
        repeats = [-1] * n_axes
        for position, length in added.items():
            out = _unsqueeze((out, position), {})
            if out is FALLBACK:
                return FALLBACK
            repeats[position] = length
        out = _expand((out, repeats), {})
    if final is not None and out is not FALLBACK:
        out = _reshape_method((out, tuple(final)), {})
    return out


def _einops_fn(reduction: str | None) -> OpRule:
    """The rule of ``rearrange(x, pattern, **lengths)`` / ``repeat(x, pattern, **lengths)`` (``reduction`` fixed),
    or of ``reduce(x, pattern, reduction, **lengths)`` (None: the third argument)."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        given = 2 if reduction is not None else 3
        if len(args) != given or not isinstance(args[0], torch.Tensor) or not isinstance(args[1], str):
            return FALLBACK
        x, pattern = args[0], args[1]
        how = reduction if reduction is not None else args[2]
        if not isinstance(how, str) or not all(isinstance(k, str) and type(v) is int for k, v in kwargs.items()):
            return FALLBACK  # a callable reduction (torch.var), or lengths computed as tensors
        try:
            from einops.einops import _prepare_transformation_recipe

            recipe = _prepare_transformation_recipe(pattern, how, axes_names=tuple(kwargs), ndim=x.dim())
        except Exception:  # an einops without it, or a pattern it refuses
            return FALLBACK
        return _recipe_steps(recipe, x, tuple(kwargs.items()), how)

    return rule


def _einops_layer(m: nn.Module, call: Call, x: torch.Tensor) -> Any:
    """``Rearrange`` (its reduction is "rearrange") and ``Reduce`` layers: their recipe for the input's rank."""
    recipes, lengths = getattr(m, "_multirecipe", None), getattr(m, "_axes_lengths", None)
    how = getattr(m, "reduction", "rearrange")
    if (
        not isinstance(recipes, dict)
        or x.dim() not in recipes
        or not isinstance(lengths, tuple)
        or type(how) is not str
    ):
        return FALLBACK  # a callable reduction: meta runs it
    return _recipe_steps(recipes[x.dim()], x, lengths, how)


builtin("einops.einops.rearrange", shape=fn(_einops_fn("rearrange")))
builtin("einops.einops.repeat", shape=fn(_einops_fn("repeat")))
builtin("einops.einops.reduce", shape=fn(_einops_fn(None)))
builtin("einops.layers.torch.Rearrange", "einops.layers.torch.Reduce", shape=one_tensor(_einops_layer))


def _windows(sizes: Sequence[Any], window: Any) -> int | None:
    """How many windows of ``window`` tile ``sizes`` (MONAI's Swin: 2 or 3 spatial dims), None when they do not."""
    if not isinstance(window, (tuple, list)) or len(window) != len(sizes) or len(sizes) not in (2, 3):
        return None
    if not all(is_int(w) and w > 0 and is_int(s) and s >= 0 and s % w == 0 for s, w in zip(sizes, window)):
        return None
    return int(math.prod(s // w for s, w in zip(sizes, window)))


def _window_partition(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``window_partition(x, window_size)``: (N, *spatial, C) cut into (N * windows, prod(window_size), C)."""
    if len(args) != 2 or kwargs or not isinstance(args[0], torch.Tensor) or not args[0].is_contiguous():
        return FALLBACK
    x, window = args
    count = _windows(tuple(x.shape[1:-1]), window) if x.dim() in (4, 5) else None
    if count is None:
        return FALLBACK
    return new((x.shape[0] * count, math.prod(window), x.shape[-1]), x.dtype)


def _window_reverse(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``window_reverse(windows, window_size, dims)``: the windows put back into a (N, *spatial, C) map, ``dims``
    being (N, *spatial)."""
    if len(args) != 3 or kwargs or not isinstance(args[0], torch.Tensor) or not args[0].is_contiguous():
        return FALLBACK
    windows, window, dims = args
    if not isinstance(dims, (tuple, list)) or not dims or not is_int(dims[0]) or dims[0] <= 0:
        return FALLBACK
    count = _windows(tuple(dims[1:]), window)
    positions = dims[0] * count * math.prod(window) if count is not None else 0
    if positions == 0 or windows.numel() % positions:
        return FALLBACK
    return new((*dims, windows.numel() // positions), windows.dtype)


def _compute_mask(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``compute_mask(dims, window_size, shift_size, device)``: for each window, which of its positions come from
    the same region of the shifted map: (windows, prod(window_size), prod(window_size)) in the default dtype."""
    if len(args) != 4 or kwargs:
        return FALLBACK
    dims, window, shift = args[0], args[1], args[2]
    count = _windows(tuple(dims), window) if isinstance(dims, (tuple, list)) else None
    if count is None or not isinstance(shift, (tuple, list)) or len(shift) != len(dims):
        return FALLBACK
    if not all(is_int(s) for s in shift):
        return FALLBACK
    size = math.prod(window)
    return new((count, size, size), torch.get_default_dtype())


_SWIN = "monai.networks.nets.swin_unetr"
builtin(f"{_SWIN}.window_partition", shape=fn(_window_partition), leaf=True)
builtin(f"{_SWIN}.window_reverse", shape=fn(_window_reverse), leaf=True)
builtin(f"{_SWIN}.compute_mask", shape=fn(_compute_mask), leaf=True)
