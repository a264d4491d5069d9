"""Pure tensor -> tensor transforms adapting a pretrained first layer to new input channels.

A pretrained stem has a weight of shape ``(out, I, *kernel)`` (``Conv1d``,
``Conv2d``, ``Conv3d``) or ``(out, I)`` (``Linear``), usually with ``I == 3``
(RGB).  The functions here map that weight to ``C`` input channels in the ways
listed in :class:`~torchsurgeon.records.FoldMode`:

==============  =================================  ===================================
mode            new weight                         exact on
==============  =================================  ===================================
``sum``         ``W.sum(dim=1, keepdim=True)``     a grey image (``C == 1`` only)
``spread``      each channel ``W.sum(dim=1) / C``  a grey image replicated to ``C``
``repeat``      ``W`` tiled to ``C``, ``* I / C``  the input tiled alike (``I`` | ``C``)
``zero_extra``  ``W``, then ``C - I`` zeros        ``concat(rgb, any extra)``
==============  =================================  ===================================

:func:`fold_normalization` folds a per-channel input normalisation into the
layer, and :func:`recognise_fold` tells which fold turned one weight into
another (used by the surgery report).

Every function is pure: the inputs are never modified and the result is a new
tensor (detached from autograd) with the dtype and device of the input.  The
arithmetic runs in float64 for float64 weights and in float32 otherwise, so
float16/bfloat16 weights are folded without extra rounding.

Notes
-----
The functions see a weight tensor only.  For a grouped convolution
(``groups > 1``) dim 1 of the weight holds ``in_channels // groups``, not the
layer's input channels, so callers must not fold such layers with these
functions.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

import torch

from torchsurgeon.errors import InputError, SurgeryError, check_option
from torchsurgeon.records import FoldMode

__all__ = (
    "fold_normalization",
    "fold_repeat",
    "fold_spread",
    "fold_sum",
    "fold_weight",
    "fold_zero_extra",
    "is_exact_fold",
    "recognise_fold",
)

_FOLD_MODES = (FoldMode.SUM, FoldMode.SPREAD, FoldMode.REPEAT, FoldMode.ZERO_EXTRA)
_FIRST_FILTERS = 8
"""Filters :func:`recognise_fold` compares first, before the whole weight."""
_VALID_MODES = ", ".join(repr(str(m)) for m in _FOLD_MODES)


def _check_weight(weight: object, name: str = "weight") -> torch.Tensor:
    """Return ``weight`` if it is a floating-point ``(out, in, *kernel)`` tensor, else raise."""
    if not isinstance(weight, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if weight.ndim < 2:
        raise SurgeryError(
            f"{name} of shape {tuple(weight.shape)} is not a conv or linear weight — "
            "expected (out_channels, in_channels, *kernel) with at least 2 dims"
        )
    if not weight.is_floating_point():
        raise InputError(
            f"{name} has dtype {weight.dtype}, only floating-point weights can be folded — "
            "dequantize or convert it first"
        )
    if weight.shape[1] == 0:
        raise SurgeryError(f"{name} of shape {tuple(weight.shape)} has 0 input channels — nothing to fold")
    return weight


def _check_channels(channels: object) -> int:
    """Return ``channels`` as an int if it is a positive integer, else raise InputError."""
    if isinstance(channels, bool):
        raise InputError(f"channels must be a positive int, got channels={channels!r}")
    try:
        value = operator.index(channels)  # type: ignore[arg-type]
    except TypeError as e:
        raise InputError(f"channels must be a positive int, got channels={channels!r}") from e
    if value <= 0:
        raise InputError(f"channels must be a positive int, got channels={value}")
    return value


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any of ``dtypes`` is float64, else float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _as_compute(weight: torch.Tensor) -> torch.Tensor:
    """A detached view or copy of ``weight`` in its compute dtype (never modified by callers)."""
    return weight.detach().to(_compute_dtype(weight.dtype))


def _restore(result: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A freshly computed ``result`` cast back to the dtype of ``like``, contiguous."""
    return result.to(like.dtype).contiguous()


def fold_sum(weight: torch.Tensor) -> torch.Tensor:
    """Fold a weight to 1 input channel by summing over its input channels.

    Parameters
    ----------
    weight : torch.Tensor
        Weight of shape ``(out, in, *kernel)`` (conv) or ``(out, in)`` (linear).

    Returns
    -------
    torch.Tensor
        ``weight.sum(dim=1, keepdim=True)``, shape ``(out, 1, *kernel)``, in the
        dtype and on the device of ``weight``.

    Raises
    ------
    SurgeryError
        If ``weight`` has fewer than 2 dims or 0 input channels.
    InputError
        If ``weight`` is not a floating-point tensor.

    Notes
    -----
    Exact on grey images: the folded layer applied to a 1-channel image ``g``
    gives the output of the original layer applied to ``g`` replicated to all
    of its input channels.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[[1.0], [2.0], [3.0]]])  # Conv1d weight (1, 3, 1)
    >>> fold_sum(w)
    tensor([[[6.]]])
    """
    weight = _check_weight(weight)
    return _restore(_as_compute(weight).sum(dim=1, keepdim=True), weight)


def fold_spread(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Give each of ``channels`` new input channels the channel-sum of ``weight`` / ``channels``.

    Parameters
    ----------
    weight : torch.Tensor
        Weight of shape ``(out, in, *kernel)`` (conv) or ``(out, in)`` (linear).
    channels : int
        The new number of input channels ``C`` (>= 1).

    Returns
    -------
    torch.Tensor
        Shape ``(out, C, *kernel)``; every input channel holds
        ``weight.sum(dim=1) / C``.  Same dtype and device as ``weight``.

    Raises
    ------
    InputError
        If ``channels`` is not a positive int, or ``weight`` is not floating point.
    SurgeryError
        If ``weight`` has fewer than 2 dims or 0 input channels.

    Notes
    -----
    Exact on any grey image replicated to ``C`` channels: the output equals
    the original layer's output on the grey image replicated to its own input
    channels.  ``fold_spread(w, 1)`` equals ``fold_sum(w)``.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[[1.0], [2.0], [3.0]]])  # (1, 3, 1)
    >>> fold_spread(w, 2)
    tensor([[[3.],
             [3.]]])
    """
    weight = _check_weight(weight)
    channels = _check_channels(channels)
    per_channel = _as_compute(weight).sum(dim=1, keepdim=True) / channels
    ones = (1,) * (weight.ndim - 2)
    return _restore(per_channel.repeat(1, channels, *ones), weight)


def fold_repeat(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Tile the input channels of ``weight`` to ``channels``, scaled by ``in / channels`` (timm).

    Parameters
    ----------
    weight : torch.Tensor
        Weight of shape ``(out, in, *kernel)`` (conv) or ``(out, in)`` (linear).
    channels : int
        The new number of input channels ``C`` (>= 1).

    Returns
    -------
    torch.Tensor
        ``weight.repeat(1, ceil(C / in), ...)[:, :C] * (in / C)``, shape
        ``(out, C, *kernel)``; for ``C == 1`` the channel sum
        (:func:`fold_sum`), and for ``C == in`` an unchanged copy.  Same dtype
        and device as ``weight``.

    Raises
    ------
    InputError
        If ``channels`` is not a positive int, or ``weight`` is not floating point.
    SurgeryError
        If ``weight`` has fewer than 2 dims or 0 input channels.

    Notes
    -----
    Numerically identical to ``timm.models.adapt_input_conv(C, weight)`` for
    4-D float32/float16/bfloat16 weights with 3 input channels and every
    ``C >= 1`` (timm sums for ``C == 1`` and returns the weight itself for
    ``C == 3``; this function returns a copy).  timm computes in float32 even
    for float64 weights; this function keeps float64, so float64 results
    differ from timm's by float32 rounding (about 1e-7 relative).  Unlike timm,
    any number of input channels and any weight rank are accepted.

    When ``C`` is a multiple of ``in``, the folded layer applied to the input
    tiled ``C / in`` times along the channels gives the original output.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[[1.0], [2.0], [3.0]]])  # (1, 3, 1)
    >>> fold_repeat(w, 6).flatten().tolist()
    [0.5, 1.0, 1.5, 0.5, 1.0, 1.5]
    >>> fold_repeat(w, 1).flatten().tolist()
    [6.0]
    """
    weight = _check_weight(weight)
    channels = _check_channels(channels)
    in_channels = weight.shape[1]
    if channels == in_channels:
        return weight.detach().clone(memory_format=torch.contiguous_format)
    if channels == 1:
        return fold_sum(weight)
    repeats = math.ceil(channels / in_channels)
    ones = (1,) * (weight.ndim - 2)
    tiled = _as_compute(weight).repeat(1, repeats, *ones)[:, :channels]
    return _restore(tiled * (in_channels / channels), weight)


def is_exact_fold(mode: FoldMode | str, in_channels: int, channels: int) -> bool:
    """Whether the fold of ``in_channels`` to ``channels`` gives the original's output on some input (the
    table above): every fold but ``repeat`` to a channel count that is neither 1 nor a multiple of
    ``in_channels``, which keeps the first channels' filters scaled (13 → 2: the first two × 6.5).

    Examples
    --------
    >>> is_exact_fold("repeat", 3, 6), is_exact_fold("repeat", 3, 1), is_exact_fold("repeat", 13, 2)
    (True, True, False)
    >>> is_exact_fold("spread", 13, 2)
    True
    """
    return _parse_mode(mode) != FoldMode.REPEAT or channels == 1 or channels % in_channels == 0


def fold_zero_extra(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the pretrained input channels of ``weight`` and append zero weights for the extra ones.

    Parameters
    ----------
    weight : torch.Tensor
        Weight of shape ``(out, in, *kernel)`` (conv) or ``(out, in)`` (linear).
    channels : int
        The new number of input channels ``C``; must be greater than ``in``.

    Returns
    -------
    torch.Tensor
        Shape ``(out, C, *kernel)``: ``weight`` in the first ``in`` channels,
        zeros in the others.  Same dtype and device as ``weight``.

    Raises
    ------
    SurgeryError
        If ``channels <= in`` (use ``sum`` or ``spread`` to reduce channels),
        or ``weight`` has fewer than 2 dims or 0 input channels.
    InputError
        If ``channels`` is not a positive int, or ``weight`` is not floating point.

    Notes
    -----
    Exact for any extra input: the folded layer applied to
    ``concat(rgb, extra)`` gives the original layer's output on ``rgb``.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[[1.0], [2.0], [3.0]]])  # (1, 3, 1)
    >>> fold_zero_extra(w, 4).flatten().tolist()
    [1.0, 2.0, 3.0, 0.0]
    """
    weight = _check_weight(weight)
    channels = _check_channels(channels)
    in_channels = weight.shape[1]
    if channels <= in_channels:  # the one mode that folds to this count (sum folds to 1 channel only)
        fix = (
            "it takes them already: nothing to fold"
            if channels == in_channels
            else f"use {'mode=' + repr('sum') + ' or ' if channels == 1 else ''}mode='spread' to reduce channels"
        )
        raise SurgeryError(
            f"zero_extra adds channels: it needs channels > {in_channels} "
            f"(the weight's input channels), got channels={channels} — {fix}"
        )
    out = torch.zeros((weight.shape[0], channels, *weight.shape[2:]), dtype=weight.dtype, device=weight.device)
    out[:, :in_channels] = weight.detach()
    return out


def _parse_mode(mode: FoldMode | str) -> FoldMode:
    """``mode`` as one of the folds (:func:`~torchsurgeon.errors.check_option`: any case), or InputError naming
    them (never ``'random'``, which no fold takes); ``'random'`` itself raises the SurgeryError that says what
    it is instead."""
    if isinstance(mode, str) and mode.lower() == FoldMode.RANDOM:
        raise SurgeryError(
            "mode='random' is not a fold: it discards the pretrained weights — "
            "re-initialise the layer instead (adapt_input_channels does this for "
            f"mode='random'), or fold with one of {_VALID_MODES}"
        )
    return check_option(mode, FoldMode, "mode", among=_FOLD_MODES)


def fold_weight(weight: torch.Tensor, channels: int, mode: FoldMode | str) -> torch.Tensor:
    """Fold ``weight`` to ``channels`` input channels with the fold named by ``mode``.

    Parameters
    ----------
    weight : torch.Tensor
        Weight of shape ``(out, in, *kernel)`` (conv) or ``(out, in)`` (linear).
    channels : int
        The new number of input channels (>= 1).
    mode : FoldMode or str
        ``"sum"`` (channels must be 1), ``"spread"``, ``"repeat"`` or
        ``"zero_extra"``; see :func:`fold_sum`, :func:`fold_spread`,
        :func:`fold_repeat`, :func:`fold_zero_extra`.

    Returns
    -------
    torch.Tensor
        The folded weight, shape ``(out, channels, *kernel)``, in the dtype and
        on the device of ``weight``.

    Raises
    ------
    InputError
        If ``mode`` is not a fold mode, ``channels`` is not a positive int, or
        ``weight`` is not floating point.
    SurgeryError
        If ``mode`` is ``"sum"`` and ``channels != 1``; if ``mode`` is
        ``"random"`` (not a fold: re-initialise the layer instead); if
        ``mode`` is ``"zero_extra"`` and ``channels`` does not exceed the
        weight's input channels; if ``weight`` has fewer than 2 dims.

    Examples
    --------
    >>> import torch
    >>> w = torch.ones(4, 3, 3, 3)
    >>> fold_weight(w, 1, "sum").shape
    torch.Size([4, 1, 3, 3])
    >>> fold_weight(w, 4, FoldMode.ZERO_EXTRA).shape
    torch.Size([4, 4, 3, 3])
    >>> fold_weight(w, 4, "sum")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.SurgeryError: sum folds to 1 channel, got channels=4 — use ...
    """
    parsed = _parse_mode(mode)
    channels = _check_channels(channels)
    weight = _check_weight(weight)
    if parsed is FoldMode.SUM:
        if channels != 1:
            raise SurgeryError(f"sum folds to 1 channel, got channels={channels} — use mode='spread' or mode='repeat'")
        return fold_sum(weight)
    folds: dict[FoldMode, Callable[[torch.Tensor, int], torch.Tensor]] = {
        FoldMode.SPREAD: fold_spread,
        FoldMode.REPEAT: fold_repeat,
        FoldMode.ZERO_EXTRA: fold_zero_extra,
    }
    return folds[parsed](weight, channels)


def _per_channel(
    values: Sequence[float] | torch.Tensor, name: str, in_channels: int, like: torch.Tensor
) -> torch.Tensor:
    """``values`` as a 1-D tensor of ``in_channels`` finite values, dtype and device of ``like``.

    The values are checked on the CPU (so weights on ``meta`` can be folded too).
    """
    try:
        tensor = torch.as_tensor(values, dtype=like.dtype).detach().reshape(-1).cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{name} must be a sequence of floats or a tensor, got {values!r}") from e
    if tensor.numel() != in_channels:
        raise SurgeryError(
            f"{name} has {tensor.numel()} values but the weight has {in_channels} "
            f"input channels — give one {name} per input channel"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{name} must be finite, got {name}={tensor.tolist()}")
    if name == "std" and not bool((tensor > 0).all()):
        raise InputError(f"std must be > 0 for every channel, got std={tensor.tolist()}")
    return tensor.to(like.device)


def fold_normalization(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an input normalisation ``(x - mean) / std`` into a layer's weight and bias.

    The folded layer applied to raw ``x`` gives the original layer's output on
    ``(x - mean[c]) / std[c]`` (normalised per input channel ``c``).

    Parameters
    ----------
    weight : torch.Tensor
        Weight of shape ``(out, in, *kernel)`` (conv) or ``(out, in)`` (linear).
    bias : torch.Tensor or None
        Bias of shape ``(out,)``; ``None`` means no bias (zeros).
    mean, std : sequence of float or torch.Tensor
        One value per input channel (``in`` values; a tensor of any shape with
        ``in`` elements, such as ``(1, in, 1, 1)``, is accepted).  ``std`` must
        be > 0.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``W' = W / std[c]`` and
        ``b' = b - sum_{c, k} W[o, c, k] * mean[c] / std[c]``.  The weight
        keeps the dtype and device of ``weight``; the bias keeps the dtype of
        ``bias`` (of ``weight`` when ``bias`` is None) and is always returned.

    Raises
    ------
    SurgeryError
        If ``mean`` or ``std`` does not have one value per input channel, if
        ``bias`` does not have shape ``(out,)``, or if ``weight`` has fewer
        than 2 dims.
    InputError
        If ``std`` has a value <= 0, ``mean``/``std`` is not finite, or a
        tensor is not floating point.

    Notes
    -----
    Exact only for layers without zero padding (``padding=0``, or a
    ``Linear``).  A zero-padded border of the normalised input stands for the
    raw value ``mean``, while the folded layer pads the raw input with zeros,
    which normalise to ``-mean / std``; outputs touching the border differ.
    The caller should report that for padded layers.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[[2.0], [4.0]]])  # Conv1d weight (1, 2, 1)
    >>> w2, b2 = fold_normalization(w, None, mean=[1.0, 0.5], std=[2.0, 4.0])
    >>> w2.flatten().tolist(), b2.tolist()
    ([1.0, 1.0], [-1.5])
    """
    weight = _check_weight(weight)
    out_channels, in_channels = weight.shape[0], weight.shape[1]
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise InputError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if tuple(bias.shape) != (out_channels,):
            raise SurgeryError(
                f"bias of shape {tuple(bias.shape)} does not match weight of shape "
                f"{tuple(weight.shape)} — expected ({out_channels},)"
            )
        if not bias.is_floating_point():
            raise InputError(f"bias has dtype {bias.dtype}, expected a floating-point bias")
    compute = _compute_dtype(weight.dtype, *((bias.dtype,) if bias is not None else ()))
    w = weight.detach().to(compute)
    mean_t = _per_channel(mean, "mean", in_channels, w)
    std_t = _per_channel(std, "std", in_channels, w)
    shape = (1, in_channels) + (1,) * (weight.ndim - 2)
    new_w = w / std_t.reshape(shape)
    shift = (new_w * mean_t.reshape(shape)).sum(dim=tuple(range(1, weight.ndim)))
    if bias is None:
        b = torch.zeros(out_channels, dtype=compute, device=w.device)
    else:
        b = bias.detach().to(compute)
    new_b = b - shift.to(b.device)
    bias_dtype = weight.dtype if bias is None else bias.dtype
    return _restore(new_w, weight), new_b.to(bias_dtype).contiguous()


def _tolerance(*dtypes: torch.dtype) -> tuple[float, float]:
    """(rtol, atol relative to the weight scale) for the least precise of ``dtypes``."""
    eps = max(torch.finfo(d).eps for d in dtypes)
    return max(1e-5, 2.0 * eps), max(1e-6, eps)


def recognise_fold(
    original: torch.Tensor,
    edited: torch.Tensor,
    *,
    fold: Callable[[torch.Tensor, FoldMode], torch.Tensor] | None = None,
) -> FoldMode | None:
    """Tell which fold turned ``original`` into ``edited``, if any.

    Parameters
    ----------
    original : torch.Tensor
        The pretrained weight, shape ``(out, in, *kernel)`` or ``(out, in)``.
    edited : torch.Tensor
        The weight after surgery, shape ``(out, C, *kernel)``.
    fold : callable, optional
        How a mode folds ``original`` when the layer reads the input through a
        rearrangement of its values (a space-to-depth stem: each group of
        pixels' colours folded, :meth:`~torchsurgeon.channelmap.ChannelMap.fold`);
        by default the input channels are folded as one group.

    Returns
    -------
    FoldMode or None
        ``SUM``, ``SPREAD``, ``REPEAT`` or ``ZERO_EXTRA`` (checked in that
        order) if that fold of ``original`` is close to ``edited``; ``None`` if
        no fold matches, if the shapes differ outside the input-channel
        dimension, or if ``edited`` has the shape of ``original`` and is close
        to it (kept weights, not a fold).

    Raises
    ------
    SurgeryError
        If either weight has fewer than 2 dims or 0 input channels.
    InputError
        If either weight is not a floating-point tensor.

    Notes
    -----
    Closeness is :func:`torch.allclose` with ``rtol = max(1e-5, 2 * eps)``
    and ``atol = max(1e-6, eps) * max|original|``, where ``eps`` is the
    machine epsilon of the less precise of the two dtypes; float64 weights
    get float32 tolerances so that folds computed in float32 (as timm does)
    are recognised.  For ``C == 1`` the sum, spread and repeat folds
    coincide; ``SUM`` is returned.

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(8, 3, 3, 3)
    >>> recognise_fold(w, fold_repeat(w, 4))
    <FoldMode.REPEAT: 'repeat'>
    >>> recognise_fold(w, fold_sum(w))
    <FoldMode.SUM: 'sum'>
    >>> recognise_fold(w, w.clone()) is None
    True
    """
    original = _check_weight(original, "original")
    edited = _check_weight(edited, "edited")
    if (
        original.ndim != edited.ndim
        or original.shape[0] != edited.shape[0]
        or original.shape[2:] != edited.shape[2:]
        or original.numel() == 0
    ):
        return None
    compute = _compute_dtype(original.dtype, edited.dtype)
    rtol, atol_scale = _tolerance(original.dtype, edited.dtype)
    orig = original.detach()
    target = edited.detach().to(device=orig.device, dtype=compute)
    atol = atol_scale * float(orig.abs().max().to(compute))

    def close(candidate: torch.Tensor, rows: slice = slice(None)) -> bool:
        want = target[rows]
        return candidate.shape == want.shape and torch.allclose(candidate.to(compute), want, rtol=rtol, atol=atol)

    def folds_to(make: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Whether ``make(orig)`` is close to ``target``, told by the first filters first: a weight that is no such
        fold (check_surgery asks this of every fine-tuned weight) already differs there, and a built-in fold of the
        first filters is the first filters of the fold (a fold mixes input channels, never filters)."""
        first = slice(_FIRST_FILTERS)
        return (orig.shape[0] <= _FIRST_FILTERS or close(make(orig[first]), first)) and close(make(orig))

    if orig.shape == edited.shape and folds_to(lambda w: w):
        return None
    if fold is not None:  # SUM first: for one channel per group, the sum, spread and repeat folds coincide
        for mode in (FoldMode.SUM, FoldMode.SPREAD, FoldMode.REPEAT, FoldMode.ZERO_EXTRA):
            try:
                if close(fold(orig, mode)):
                    return mode
            except SurgeryError:  # a mode that does not apply to these counts (zero_extra to fewer channels)
                continue
        return None
    channels, in_channels = edited.shape[1], orig.shape[1]
    if channels == 1 and folds_to(fold_sum):
        return FoldMode.SUM
    if folds_to(lambda w: fold_spread(w, channels)):
        return FoldMode.SPREAD
    if folds_to(lambda w: fold_repeat(w, channels)):
        return FoldMode.REPEAT
    if channels > in_channels and folds_to(lambda w: fold_zero_extra(w, channels)):
        return FoldMode.ZERO_EXTRA
    return None


def recognise_scaled_fold(original: torch.Tensor, edited: torch.Tensor) -> tuple[FoldMode, float] | None:
    """Tell which fold, times a constant, turned ``original`` into ``edited``: a fold done by hand with the mean
    (``w.mean(1, keepdim=True)``, which many tutorials use) is the sum fold divided by the channel count.

    Such a weight keeps what the pretrained filters respond to, but it is not equivalent: on the input the fold
    relates, the layer gives the constant times the original's output.

    Parameters
    ----------
    original, edited : torch.Tensor
        As in :func:`recognise_fold`.

    Returns
    -------
    tuple of FoldMode and float, or None
        The fold (``SUM``, ``SPREAD`` or ``REPEAT``) and the constant, which is
        neither 0 nor 1; ``None`` when no scaled fold matches (an exact fold:
        :func:`recognise_fold`).

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(8, 3, 3, 3)
    >>> mode, k = recognise_scaled_fold(w, w.mean(1, keepdim=True))
    >>> str(mode), round(k, 4)
    ('sum', 0.3333)
    >>> recognise_scaled_fold(w, fold_sum(w)) is None
    True
    """
    original = _check_weight(original, "original")
    edited = _check_weight(edited, "edited")
    if original.shape[0] != edited.shape[0] or original.shape[2:] != edited.shape[2:] or original.numel() == 0:
        return None
    compute = _compute_dtype(original.dtype, edited.dtype)
    rtol, atol_scale = _tolerance(original.dtype, edited.dtype)
    orig = original.detach().to(compute)
    target = edited.detach().to(device=orig.device, dtype=compute)
    channels = edited.shape[1]
    folds = [(FoldMode.SUM, fold_sum(orig))] if channels == 1 else []
    folds += [(FoldMode.SPREAD, fold_spread(orig, channels)), (FoldMode.REPEAT, fold_repeat(orig, channels))]
    for mode, fold in folds:
        norm = float((fold * fold).sum())
        if fold.shape != target.shape or norm == 0:
            continue
        k = float((fold * target).sum()) / norm
        if abs(k) < 1e-12:
            continue
        atol = atol_scale * float(fold.abs().max()) * abs(k)
        if abs(k - 1) > rtol and torch.allclose(k * fold, target, rtol=rtol, atol=atol):
            return mode, k
    return None
