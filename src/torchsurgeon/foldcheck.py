"""Is a folded layer exact?  Layers whose ``forward`` computes the weight it convolves with.

:mod:`torchsurgeon.fold` folds a weight so that a plain convolution or linear
layer computes, on the new input, what it computed on the input the fold is
exact on (a grey image replicated to RGB for ``sum``).  A subclass whose
``forward`` transforms its weight first (timm's ``StdConv2d`` and
``ScaledStdConv2d``, transformers' ``WeightStandardizedConv2d``: BiT and
NFNet standardise each output channel's weight) breaks that: the folded
weight is standardised again, and a grey image gives outputs about half off.
:func:`fold_difference` runs the original and the folded layer (copies, in
float64 on the CPU) on the two inputs the fold relates; surgery refuses a fold
that differs.  :func:`refold_standardised` makes the fold exact for layers
that standardise with a per-channel gain (``ScaledStdConv2d``): it folds the
standardised weight and sets the gain that reproduces it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .copies import model_copy
from .errors import SurgeryError
from .fold import fold_weight, is_exact_fold
from .records import FoldMode

__all__ = (
    "checked_fold",
    "computes_its_weight",
    "fold_difference",
    "fold_is_exact",
    "no_exact_fold",
    "refold_standardised",
    "tolerance",
)


def computes_its_weight(layer: nn.Module) -> bool:
    """Whether ``layer`` is a conv or linear layer whose class has its own ``forward`` (it may transform its weight).

    Examples
    --------
    >>> class Standardised(nn.Conv2d):
    ...     def forward(self, x):
    ...         w = (self.weight - self.weight.mean()) / self.weight.std()
    ...         return self._conv_forward(x, w, self.bias)
    >>> computes_its_weight(nn.Conv2d(3, 8, 3)), computes_its_weight(Standardised(3, 8, 3))
    (False, True)
    """
    for base in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear):
        if isinstance(layer, base):
            return type(layer).forward is not base.forward
    return False


def _inputs(layer: nn.Module, mode: FoldMode, before: int, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(input of the original layer, input of the folded one) that the fold relates, float64; None when the fold
    is exact on no input (``repeat`` to a channel count that is not a multiple of the original's)."""
    if isinstance(layer, nn.Linear):
        spatial: tuple[int, ...] = ()
    else:
        assert isinstance(layer, nn.modules.conv._ConvNd)
        spatial = tuple(d * (k - 1) + 1 + 2 * s + 3 for k, s, d in zip(layer.kernel_size, layer.stride, layer.dilation))
    generator = torch.Generator().manual_seed(0)

    def random(c: int) -> torch.Tensor:
        x = torch.randn((1, c, *spatial), generator=generator, dtype=torch.float64)
        return x if spatial else x.reshape(1, c)

    if mode in (FoldMode.SUM, FoldMode.SPREAD) or (mode == FoldMode.REPEAT and channels == 1):  # grey, replicated
        grey = random(1)  # (repeat to one channel is timm's sum)
        return grey.expand(1, before, *spatial).contiguous(), grey.expand(1, channels, *spatial).contiguous()
    x = random(before)
    if mode == FoldMode.REPEAT:
        if not is_exact_fold(mode, before, channels):  # scaled copies cut to the channel count: no input it is exact on
            return None
        return x, x.repeat(1, channels // before, *([1] * len(spatial)))
    return x, torch.cat([x, random(channels - before)], dim=1)  # zero_extra


def fold_difference(original: nn.Module, folded: nn.Module, mode: FoldMode, before: int, channels: int) -> float:
    """The largest difference between ``original`` and ``folded`` on the inputs the fold relates, relative to the
    largest output; 0.0 when their weights have no values to run (``meta``) or the fold is exact on no input,
    infinity when ``folded`` fails.

    Examples
    --------
    >>> from torchsurgeon.fold import fold_sum
    >>> conv = nn.Conv2d(3, 4, 3).double()
    >>> grey = nn.Conv2d(1, 4, 3).double()
    >>> grey.weight.data, grey.bias.data = fold_sum(conv.weight), conv.bias.data
    >>> fold_difference(conv, grey, FoldMode.SUM, 3, 1) < 1e-12
    True
    """
    if any(p.is_meta for p in (*original.parameters(), *folded.parameters())):
        return 0.0
    related = _inputs(original, mode, before, channels)
    if related is None:  # no input to compare on: nothing to say
        return 0.0
    x_before, x_after = related
    dtype = torch.float64
    with torch.no_grad():
        try:
            a = _unquantised(original).double()(x_before)
        except RuntimeError:  # a layer that runs in its own dtype only
            dtype = next((p.dtype for p in original.parameters()), torch.float32)
            a = _unquantised(original)(x_before.to(dtype))
        try:
            b = _unquantised(folded).to(dtype)(x_after.to(dtype))
        except Exception:  # the layer cannot run with the folded weight at all
            return float("inf")
    scale = float(a.abs().max()) or 1.0
    return float((a - b).abs().max()) / scale if a.shape == b.shape else float("inf")


def _unquantised(layer: nn.Module) -> nn.Module:
    """A CPU copy of ``layer`` in eval mode, its fake quantisation (a QAT layer's) off: the fold is of the float
    weight, which the layer quantises anew once trained on (its observers calibrate to the folded weight)."""
    copy_ = model_copy(layer).cpu().eval()
    copy_.apply(torch.ao.quantization.disable_fake_quant)
    copy_.apply(torch.ao.quantization.disable_observer)
    return copy_


def tolerance(dtype: torch.dtype) -> float:
    """The largest relative difference of an exact fold of weights of ``dtype`` (rounding of the folded weight).

    Examples
    --------
    >>> tolerance(torch.float64), tolerance(torch.float32) < 1e-4, tolerance(torch.bfloat16)
    (1e-06, True, 0.05)
    """
    return min(0.05, max(1e-6, 50 * torch.finfo(dtype).eps))


def refold_standardised(original: nn.Module, folded: nn.Module, fold: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Make the fold of a layer that standardises its weight with a per-channel gain exact (timm's
    ``ScaledStdConv2d``: ``gain * scale * (w - mean) / sqrt(var + eps)`` per output channel).

    The standardised weight has zero mean per output channel, and so has its fold; the folded layer gets that
    fold as its weight and the gain that makes its standardisation give it back.  Returns False (``folded``
    unchanged) for a layer without ``gain``, ``scale`` and ``eps``.
    """
    gain, scale, eps = (getattr(original, name, None) for name in ("gain", "scale", "eps"))
    weight = getattr(original, "weight", None)
    if not isinstance(gain, nn.Parameter) or not isinstance(weight, torch.Tensor) or weight.is_meta:
        return False
    if not isinstance(scale, (int, float)) or not isinstance(eps, (int, float)) or gain.numel() != weight.shape[0]:
        return False
    with torch.no_grad():
        w = weight.detach().double().reshape(weight.shape[0], -1)
        standardised = (w - w.mean(1, keepdim=True)) / torch.sqrt(w.var(1, unbiased=False, keepdim=True) + eps)
        standardised = standardised * (gain.detach().double().reshape(-1, 1) * scale)
        new_weight = fold(standardised.reshape(weight.shape))
        flat = new_weight.reshape(new_weight.shape[0], -1)
        new_gain = torch.sqrt(flat.var(1, unbiased=False) + eps) / scale
    folded.weight = nn.Parameter(new_weight.to(weight.dtype), requires_grad=weight.requires_grad)
    folded.gain = nn.Parameter(new_gain.reshape(gain.shape).to(gain.dtype), requires_grad=gain.requires_grad)
    return True


def checked_fold(
    layer_name: str,
    original: nn.Module,
    folded: nn.Module,
    mode: FoldMode,
    before: int,
    channels: int,
    fold: Callable[[torch.Tensor], torch.Tensor],
) -> str:
    """Check the fold of a layer whose forward computes its weight: ``""`` when exact, a note when its standardised
    weight had to be folded (:func:`refold_standardised`), else :class:`~torchsurgeon.errors.SurgeryError`.

    ``fold`` folds a weight of ``original`` as surgery did; ``layer_name`` names the layer in the error.

    Examples
    --------
    >>> from torchsurgeon.fold import fold_sum
    >>> conv = nn.Conv2d(3, 4, 3)
    >>> grey = nn.Conv2d(1, 4, 3)
    >>> grey.weight.data, grey.bias.data = fold_sum(conv.weight), conv.bias.data
    >>> checked_fold("conv (Conv2d)", conv, grey, FoldMode.SUM, 3, 1, fold_sum)
    ''
    """
    limit = tolerance(next(original.parameters()).dtype)
    if fold_difference(original, folded, mode, before, channels) <= limit:
        return ""
    refolded = refold_standardised(original, folded, fold)
    difference = fold_difference(original, folded, mode, before, channels)
    if refolded and difference <= limit:
        return " (its standardised weight folded, its gain set to give it back)"
    differs = "fails" if difference == float("inf") else f"gives other outputs (relative difference {difference:.2g})"
    raise SurgeryError(
        f"{layer_name} computes the weight it uses in its forward (a weight standardisation?): with a folded "
        f"weight it {differs} on the input the {mode!s} fold is exact on, so the edited model would not compute "
        f"what the pretrained one does — {no_exact_fold(before, channels)}"
    )


def no_exact_fold(before: int, channels: int) -> str:
    """What to do with an input layer no fold keeps exact (a standardised convolution): runnable ways out.

    Examples
    --------
    >>> no_exact_fold(3, 1)[:60]
    'keep the layer and feed it 3 channels (a grey image as 3 equ'
    """
    return (
        f"keep the layer and feed it {before} channels (a grey image as {before} equal channels: "
        f"x.expand(-1, {before}, *x.shape[2:])), or start it from new weights: "
        f"adapt_input_channels(model, {channels}, mode='random')"
    )


def fold_is_exact(layer: nn.Module, channels: int, mode: FoldMode) -> bool:
    """Whether a fold of ``layer`` to ``channels`` keeps its outputs, tried on a CPU copy with random weights when
    its forward computes its weight (a plain layer's fold is exact by construction).

    Examples
    --------
    >>> from timm.layers import Conv2dSame, ScaledStdConv2d, StdConv2d
    >>> [fold_is_exact(c, 1, FoldMode.SUM) for c in (Conv2dSame(3, 4, 3), ScaledStdConv2d(3, 4, 3), StdConv2d(3, 4, 3))]
    [True, True, False]
    """
    before = getattr(layer, "in_channels", getattr(layer, "in_features", None))
    if not computes_its_weight(layer) or getattr(layer, "groups", 1) != 1 or not isinstance(before, int):
        return True
    original = copy.deepcopy(layer).to_empty(device="cpu").double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in (*original.parameters(), *original.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype) + 0.5)
    folded = copy.deepcopy(original)

    def fold(w: torch.Tensor) -> torch.Tensor:
        return fold_weight(w, channels, mode)

    folded.weight = nn.Parameter(fold(original.get_parameter("weight")))
    setattr(folded, "in_channels" if hasattr(folded, "in_channels") else "in_features", channels)
    try:
        checked_fold("", original, folded, mode, before, channels, fold)
    except SurgeryError:
        return False
    return True
