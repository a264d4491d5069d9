"""Where each input channel of a layer comes from, when only a rearrangement of the input comes before it.

A space-to-depth stem (timm's TResNet: ``SpaceToDepth`` makes 48 channels of 16 pixels × 3 colours),
``pixel_unshuffle`` or an ``einops`` rearrangement before a patch ``Linear`` only moves the input's values:
each channel the layer reads holds one colour of the input at some of its pixels.  :func:`channel_map` finds,
by running the steps before the layer on a copy (its parameters on ``meta``, its buffers as they are) with an
input whose values say where they come from, which colour and which pixels each of the layer's channels
holds; :meth:`ChannelMap.fold` then folds the colours of each group of channels holding the same pixels, as
:func:`~torchsurgeon.fold.fold_weight` folds the channels of a plain stem, and places them where the steps
before the layer put a ``C``-channel input.  Every fold stays exact in the sense the mode promises: the layer
sees, for each group of pixels, the colours a plain stem would see.

The same holds for images stacked into one's channels (a pair ``(2, C, H, W)`` read as ``2 * C`` channels: each
image's colours are a group) and for the input joined with other channels (``torch.cat([x, state], 1)``): the
layer's channels that hold none of the input's values, found by a second run with every position shifted (what
does not move is made, not read), are kept as they are.  A step that computes with the values (a colour transform
mixing the channels, a normalisation, a DCT, the input's own mean joined to it) is no rearrangement: no map is
found, and the caller refuses the fold.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

from .arguments import ExampleInputs
from .copies import detached_copy, inputs_reaching, meta_like
from .fold import fold_weight, recognise_fold
from .frontend import bind_inputs
from .inputaxes import JOINING
from .readers import colour_axis, guessed_input, image_input, image_shape, input_readers, recoloured
from .records import FoldMode
from .resize import refit_in_place
from .shapespec import InputSpec

__all__ = ("ChannelMap", "channel_map", "channel_maps", "rearranged_fold", "runnable_image")


@dataclass(frozen=True)
class ChannelMap:
    """The input channels of a layer read through a rearrangement of a ``colours``-channel input: ``before[g][c]``
    is the layer's channel holding colour ``c`` of the pixels of group ``g``, and ``after[g][c]`` the one that
    holds it once the input has ``channels`` colours (the same groups, in the same order).  ``kept``: the layer's
    channels that hold none of the input's values (what the input is joined with, ``torch.cat([x, state], 1)`` in
    a ConvLSTM cell), each as (where it is now, where it is then), in order.  ``axis``: the dim of the image's
    per-sample shape that holds its colours."""

    colours: int
    channels: int
    before: tuple[tuple[int, ...], ...]
    after: tuple[tuple[int, ...], ...]
    kept: tuple[tuple[int, int], ...] = ()
    axis: int = 0

    @property
    def width(self) -> int:
        """The layer's input channels (``in_channels``, ``in_features``) for the new input."""
        return len(self.after) * self.channels + len(self.kept)

    def fold(self, weight: torch.Tensor, mode: FoldMode) -> torch.Tensor:
        """``weight`` (the layer's input channels on dim 1) with the colours of each group folded to
        :attr:`channels`, as :func:`~torchsurgeon.fold.fold_weight` folds a plain stem's, and put where the new
        input's channels arrive; the channels :attr:`kept` moved as they are.

        Examples
        --------
        >>> m = ChannelMap(3, 1, ((0, 1, 2), (3, 4, 5)), ((0,), (1,)))
        >>> w = torch.arange(12.0).reshape(2, 6)
        >>> m.fold(w, FoldMode.SUM)
        tensor([[ 3., 12.],
                [21., 30.]])
        >>> ChannelMap(3, 1, ((0, 1, 2),), ((0,),), ((3, 1),)).fold(torch.arange(8.0).reshape(2, 4), FoldMode.SUM)
        tensor([[ 3.,  3.],
                [15.,  7.]])
        """
        out, rest = weight.shape[0], tuple(weight.shape[2:])
        groups = len(self.before)
        chosen = weight[:, torch.tensor(self.before, device=weight.device).flatten()]  # (out, groups * colours, ...)
        folded = fold_weight(chosen.reshape(out * groups, self.colours, *rest), self.channels, mode)
        folded = folded.reshape(out, groups * self.channels, *rest)
        placed = torch.empty((out, self.width, *rest), dtype=folded.dtype, device=folded.device)
        placed[:, torch.tensor(self.after, device=weight.device).flatten()] = folded
        for now, then in self.kept:
            placed[:, then] = weight[:, now]
        return placed


def channel_map(
    model: nn.Module, layer: str, image: InputSpec, channels: int, axis: int = 0, others: Sequence[str] = ()
) -> ChannelMap | None:
    """The :class:`ChannelMap` of ``layer`` for an input of ``image``'s channels recoloured to ``channels``, or None
    when what comes before it is no rearrangement of the input's values (or does not run on the copy, or not on
    ``channels`` colours).

    Parameters
    ----------
    model : nn.Module
        Left as it is: a copy is run, with its parameters on ``meta`` and its buffers as they are, only until
        ``layer``.
    layer : str
        A Linear or Conv layer reading the input (its channels: dim 1 of a convolution's input, the last of a
        Linear's).
    image : shape or mapping
        An input the model takes now (its image's first dim: the colours).
    channels : int
        The new input's channel count.
    axis : int
        The dim of the image's per-sample shape that holds its colours (:func:`~torchsurgeon.readers.colour_axis`):
        the first, or another (a pair of images ``(2, C, H, W)`` stacked into ``2 * C`` channels).
    others : sequence of str
        The layers reading the input's channels as they are, folded with ``layer`` (ChangeViT's encoder reads each
        image of the pair before its detail branch reads them stacked): resized in the copy run on ``channels``.

    Examples
    --------
    >>> model = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 8, 3))
    >>> m = channel_map(model, "1", (3, 8, 8), 1)
    >>> m.before, m.after
    (((0, 4, 8), (1, 5, 9), (2, 6, 10), (3, 7, 11)), ((0,), (1,), (2,), (3,)))
    >>> channel_map(nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 8, 1)), "1", (3, 8, 8), 1) is None
    True
    >>> pair = nn.Sequential(nn.Flatten(1, 2), nn.Conv2d(6, 8, 3))  # two RGB images stacked: 6 channels
    >>> m = channel_map(pair, "1", (2, 3, 8, 8), 1, axis=1)
    >>> m.before, m.after
    (((0, 1, 2), (3, 4, 5)), ((0,), (1,)))
    """
    params = {p.data_ptr() for p in model.parameters() if p.device.type != "meta" and not is_lazy(p) and p.numel()}

    def copied(t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "meta" or (t.numel() and t.data_ptr() in params):
            return meta_like(t)
        return t.detach().to("cpu", copy=True)

    copy_ = detached_copy(model, copied).eval()  # run until the layer only: its parameters are never read
    if not isinstance(copy_.get_submodule(layer), (nn.modules.conv._ConvNd, nn.Linear)):
        return None
    old = _groups(copy_, layer, image, axis)
    if old is None or not refit_in_place(copy_, others, channels):
        return None
    new = _groups(copy_, layer, recoloured(model, image, channels, axis=axis), axis)
    if new is None:
        return None
    (colours, before, kept), (got, after, then) = old, new
    if got != channels or set(before) != set(after) or len(kept) != len(then):
        return None
    order = list(before)
    return ChannelMap(
        colours, channels, tuple(before[p] for p in order), tuple(after[p] for p in order), tuple(zip(kept, then)), axis
    )


def channel_maps(
    model: nn.Module, names: Sequence[str], doubts: Sequence[str], channels: int, image: InputSpec | None
) -> tuple[InputSpec, dict[str, ChannelMap]] | None:
    """For a model whose layers ``doubts`` (of ``names``, those reading the input) read the input only after a
    rearrangement of its values (a space-to-depth stem, a pair of images stacked into one's channels) or joined with
    other channels (a ConvLSTM cell's state): the image they were found on (``image``, else one the model runs on
    now) and each one's :class:`ChannelMap` for ``channels``, its colours on the dim the others read as channels
    (:func:`~torchsurgeon.readers.colour_axis`), else the first found on the dim of each stacked image's colours
    (:func:`~torchsurgeon.readers.stacked_colours`), the first dim or one before the last two (the frames'
    colours); None when some layer reads the input otherwise (after a colour transform), or no image
    runs.

    Examples
    --------
    >>> class Pair(nn.Module):  # each image of a pair, and both stacked into 6 channels
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.frames, self.pair = nn.Conv2d(3, 8, 3), nn.Conv2d(6, 8, 3)
    ...     def forward(self, x):
    ...         return self.frames(x[:, 0]) + self.pair(x.flatten(1, 2))
    >>> image, maps = channel_maps(Pair(), ["frames", "pair"], ["pair"], 1, (2, 3, 8, 8))
    >>> maps["pair"].before, maps["pair"].axis
    (((0, 1, 2), (3, 4, 5)), 1)
    """
    if not doubts:
        return None
    image = image if image is not None else runnable_image(model)
    if image is None:
        return None
    shape = image_shape(model, image)
    plain = [name for name in names if name not in doubts]
    dims = len(shape) if isinstance(shape, tuple) else 1
    if plain and dims > 1:
        axes = [colour_axis(model, plain, shape)]
    else:  # each stacked image's colours first (early fusion), then the first dim and those before the last two
        first = colour_axis(model, doubts, shape) if dims > 1 else 0
        axes = [first, *(a for a in range(max(1, dims - 2)) if a != first)]
    for axis in axes:
        maps = {name: channel_map(model, name, image, channels, axis, plain) for name in doubts}
        found = {name: m for name, m in maps.items() if m is not None}
        if len(found) == len(maps):
            return image, found
    return None


def _groups(
    copy_: nn.Module, layer: str, image: InputSpec, axis: int
) -> tuple[int, dict[bytes, tuple[int, ...]], tuple[int, ...]] | None:
    """The input's channel count (its per-sample dim ``axis``); for each set of pixels (the values of the other
    dims) some of the layer's channels hold, those channels in the order of the colours they hold; and the channels
    that hold none of the input's values (what it is joined with).  None unless every other channel holds one
    colour and each set all of them, and every value the layer reads is one of the input's or does not depend on
    it."""
    example = ExampleInputs(copy_, image, 1)
    name = image_input(dict(example))
    if name is None:
        return None
    shape = tuple(example[name].shape)
    n = math.prod(shape)
    dtype = _exact_dtype(copy_, 2 * n)
    ids = torch.arange(1, n + 1, dtype=dtype).reshape(shape)  # where each value comes from, + 1
    noise = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(0)) + 1
    reached = [_reaching(copy_, layer, example, name, x) for x in (ids, ids + n, noise)]
    at, shifted, other = reached
    if at is None or shifted is None or other is None or not at.shape == shifted.shape == other.shape:
        return None
    read = shifted - at == n  # an input's value; else one made (a zero of padding, the state it is joined with)
    if not bool((read | (shifted == at)).all()):
        return None  # computed with the input's values
    index = torch.where(read, at.round().long() - 1, -1)
    if not torch.equal(torch.where(read, index.to(at.dtype) + 1, at), at) or index.max() >= n:
        return None  # not values of the input: something computed with them
    gathered = torch.where(read, noise.flatten().to(other.dtype)[index.clamp(min=0)], at)
    if not torch.equal(gathered, other) or len(shape) < axis + 2:
        return None
    colours, inner = shape[axis + 1], math.prod(shape[axis + 2 :])  # an index: (outer, colour, inner) in order
    groups: dict[bytes, dict[int, int]] = {}
    kept: list[int] = []
    for k, row in enumerate(index):
        if not bool(read[k].any()):  # none of the input's values: kept as it is
            kept.append(k)
            continue
        held = torch.unique(row[row >= 0] // inner % colours)
        if held.numel() != 1:
            return None  # no colour, or several mixed in one channel
        pixel = row // (inner * colours) * inner + row % inner  # the index with its colour taken out
        where = torch.where(row >= 0, pixel, -1).numpy().tobytes()
        group = groups.setdefault(where, {})
        if int(held) in group:
            return None
        group[int(held)] = k
    if not groups or any(len(g) != colours for g in groups.values()):
        return None
    return colours, {p: tuple(g[c] for c in range(colours)) for p, g in groups.items()}, tuple(kept)


def _exact_dtype(copy_: nn.Module, n: int) -> torch.dtype:
    """The floating dtype of the input that finds where ``n`` values go: the parameters' (parts of the forward run
    with them before the layer: ChangeViT's encoder reads the image pair before its stacked channels are read),
    when it holds every position exactly; else float64."""
    dtype = next((p.dtype for p in copy_.parameters() if p.is_floating_point()), torch.float64)
    exact = {torch.float32: 1 << 24, torch.float64: 1 << 53}.get(dtype, 0)
    return dtype if n < exact else torch.float64


class _MetaWins(TorchFunctionMode):
    """Calls given a ``meta`` tensor run on ``meta``, their CPU tensors moved there: the parts of a forward that
    compute with the copy's parameters (on ``meta``) beside the rearrangement followed on the CPU."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if any(t.is_meta for t in tensors) and not all(t.is_meta for t in tensors):
            joining = func in JOINING  # what the input is joined with: zeros, which no input changes

            def made(t: Any) -> Any:
                if not isinstance(t, torch.Tensor):
                    return t
                if joining:
                    return torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t
                return t if t.is_meta else t.to("meta")

            args, kwargs = tree_map(made, (args, kwargs))
        return func(*args, **kwargs)


def _reaching(
    copy_: nn.Module, layer: str, example: ExampleInputs, name: str, image: torch.Tensor
) -> torch.Tensor | None:
    """What reaches ``layer`` of ``copy_`` (a copy of the model with its parameters on ``meta``, its buffers as
    they are) given ``image`` as input ``name`` (the others zeros), channels first and the rest flattened; None when
    the copy does not reach it."""
    target = copy_.get_submodule(layer)
    values: Mapping[str, torch.Tensor] = {
        k: image if k == name else torch.zeros(v.shape, dtype=v.dtype) for k, v in example.items()
    }
    with torch.no_grad():
        try:
            args, kwargs = bind_inputs(copy_, values, example.paths)
        except Exception:  # the copy takes no such input: no rearrangement to find
            return None
        with _MetaWins():
            given = inputs_reaching(copy_, [layer], args, kwargs).get(layer)
    # not reached: the steps before it need parameters, or values the copy has on meta (no rearrangement)
    if not given or not isinstance(given[0], torch.Tensor):
        return None
    x = given[0]
    if x.device.type == "meta" or x.dim() < 2:
        return None
    # the batch of one image may hold its patches (timm's TNT: unfold, then (B * patches, C, 4, 4)): channels first,
    # the batch flattened with the rest
    x = x.movedim(1 if isinstance(target, nn.modules.conv._ConvNd) else -1, 0)
    return x.reshape(x.shape[0], -1)


def runnable_image(model: nn.Module) -> tuple[int, ...] | None:
    """An image a weightless copy of ``model`` runs on: its first convolution's channels, else 3; None if neither
    (a space-to-depth stem's convolution has 16 × the input's channels: an image of those is refused).

    Examples
    --------
    >>> runnable_image(nn.Sequential(nn.PixelUnshuffle(4), nn.Conv2d(48, 8, 3)))
    (3, 224, 224)
    """
    for image in dict.fromkeys(g for g in (guessed_input(model), (3, 224, 224)) if g):
        with contextlib.suppress(Exception):
            input_readers(model, image)
            return image
    return None


def rearranged_fold(
    original: nn.Module, name: str, old: torch.Tensor, new: torch.Tensor, input: InputSpec | None = None
) -> FoldMode | None:
    """The fold that made ``new`` of ``old``, the weight ``name`` of a layer reading the input through a
    rearrangement of its values (timm's TResNet: a space-to-depth before the stem; an image pair stacked into one's
    channels), as ``adapt_input_channels`` folds such a layer: each group of pixels' colours folded
    (:class:`ChannelMap`).  ``input``: the input the edited model takes, whose colours may be on another dim than
    the first (a pair ``(2, C, H, W)``).  None for a layer reading the input as it is (its fold is
    :func:`~torchsurgeon.fold.recognise_fold`'s).

    Examples
    --------
    >>> model = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 8, 3))
    >>> w = model[1].weight.detach()
    >>> rearranged_fold(model, "1.weight", w, w.reshape(8, 3, 4, 3, 3).sum(1))  # each pixel's 3 colours summed
    <FoldMode.SUM: 'sum'>
    """
    owner, _, local = name.rpartition(".")
    if local != "weight" or old.shape[1] == new.shape[1]:
        return None
    for image, axis, channels in _images_before(original, old.shape[1], new.shape[1], input):
        try:
            others = [r for r in input_readers(original, image) if r != owner]  # folded with it
            layout = channel_map(original, owner, image, channels, axis, others)
            if layout is not None and (len(layout.before) > 1 or layout.kept):  # one group alone: the plain fold
                return recognise_fold(old, new, fold=layout.fold)
        except Exception:  # the copy does not run as far as the layer, or the map is not this weight's
            continue
    return None


def _images_before(
    original: nn.Module, old: int, new: int, input: InputSpec | None
) -> list[tuple[InputSpec, int, int]]:
    """Inputs the original may take, with their colours' dim and the count the fold made of them, for a layer
    whose ``old`` input channels were folded to ``new`` in groups: an image it runs on (colours first), and, for each
    dim of the image of ``input`` (the edited model's), that input with the original's colours there (any count
    that the groups of colours, and the channels kept beside them, make ``old`` of)."""
    found: list[tuple[InputSpec, int, int]] = []
    image = runnable_image(original)
    colours = image[0] if image and type(image[0]) is int else 0
    groups = old // colours if colours and old % colours == 0 else 0
    if image is not None and groups >= 2 and new % groups == 0:  # one group: the plain fold, already compared
        found.append((image, 0, new // groups))
    if input is None:
        return found
    shape = image_shape(original, input)
    for axis, count in enumerate(shape if isinstance(shape, tuple) else ()):
        if type(count) is not int or count < 1:
            continue
        for groups in range(1, abs(old - new) + 1):  # old - new == groups * (colours - count)
            if (old - new) % groups == 0 and (colours := count + (old - new) // groups) >= 1 and colours != count:
                found.append((recoloured(original, input, colours, axis=axis), axis, count))
    return found
