"""The fold a report names with ``layer=``: the layers reading the input as it is, alone, when other layers read
it only rearranged; the layers reading the one image whose channel count changed, of a model taking several.

MONAI's VNet tiles its input to its stem's width (a count computed from its
``in_channels``) and adds it to the stem's output, which the next layers read:
:func:`~torchsurgeon.adapt_input_channels` refuses to fold those, and the fix
that runs folds the stem alone (``layer=[...]``, the settings guarding the
channel count updated, so the tiling follows).  Whether it runs depends on the
model's code (16 channels tile from 1, 2 or 4, not from 3), so the edit is run
once, on a ``meta`` copy with the layers resized and the settings updated, on
the input analysed.  A model taking two images (diffusers' ControlNet: the latents and a conditioning image) is
refused a fold without ``layer=`` (which image gets the new channel count?); given another channel count for one of
them, its fix names that image's layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch
from torch import nn

from .arguments import placeholders, traced_paths
from .copies import cannot_run_on_meta, detached_copy, meta_like
from .errors import first_line
from .frontend import bind_inputs
from .graph import graph_cache, graph_module_of, index_of, is_probing, model_of, shape_specific_of
from .graphreaders import distinct_images, fold_layers, graph_images, graph_readers
from .inputdtypes import placeholder_dtype
from .resize import input_fix, refit_in_place
from .rules.on_meta import ruled_meta

if TYPE_CHECKING:  # shapes imports this module
    from .shapes import ShapeResult

__all__ = ("fold_alone", "fold_alone_at", "name_mapped_folds")


def fold_alone(G: nx.DiGraph, inputs: Mapping[str, Any], channels: int) -> tuple[tuple[str, ...], str]:
    """The layers a fold of the input of ``G`` to ``channels`` names with ``layer=``
    (:func:`~torchsurgeon.graphreaders.fold_layers`), and ``""``; or, when the model with those alone folded does
    not run on ``inputs`` (meta tensors by input name, the channel count changed), those layers and why no fold
    runs.  ``((), "")`` when the fold needs no ``layer=``.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> class TiledResidual(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.in_channels = 2
    ...         self.stem, self.down = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 4, 2)
    ...     def forward(self, x):
    ...         return self.down(self.stem(x) + x.repeat(1, 8 // self.in_channels, 1, 1))
    >>> G = build_graph(trace(TiledResidual()))
    >>> fold_alone(G, {"x": torch.empty(1, 1, 8, 8, device="meta")}, 1)
    (('stem',), '')
    >>> layers, why = fold_alone(G, {"x": torch.empty(1, 3, 8, 8, device="meta")}, 3)
    >>> why.split(" (")[0]
    'no fold runs: down read the input only after .repeat(), and with stem alone folded to 3 channels the model fails'
    """
    layers = fold_layers(G)
    if not layers:
        return _changed_image(G, inputs, channels), ""
    sizes = sorted((k, tuple(v.shape)) for k, v in inputs.items() if hasattr(v, "shape"))  # what the verdicts read
    if graph_cache(G, f"folded through maps {channels} {sizes}", lambda: _folded_through_maps(G, inputs, channels)):
        return (), ""  # the plain fold folds the others through their channel maps (ViTMatte's joined pixels)
    key = f"fold alone {channels} {sizes}"
    verdict: tuple[tuple[str, ...], str] = graph_cache(G, key, lambda: (layers, _why_not(G, layers, inputs, channels)))
    return verdict


def _folded_through_maps(G: nx.DiGraph, inputs: Mapping[str, Any], channels: int) -> bool:
    """Whether :func:`~torchsurgeon.adapt_input_channels` folds every layer reading the one input of ``G``, those
    reading it rearranged or joined with other channels (ViTMatte's fusion conv reads its pixels joined with
    features) through their :class:`~torchsurgeon.channelmap.ChannelMap`: found on the input given with the
    channels of the first convolution reading it, as the fold finds them."""
    if len(inputs) != 1 or (x := next(iter(inputs.values()))).dim() < 3:
        return False
    modules = index_of(G).modules
    found, _, _ = graph_readers(G)
    convs = (m for name in found if name in modules for m in modules[name].modules() if isinstance(m, nn.Conv2d))
    first = next(convs, None)
    return first is not None and _maps(model_of(G), (first.in_channels, *x.shape[2:]), channels) is not None


def _maps(model: nn.Module, image: tuple[int, ...], channels: int) -> dict[str, Any] | None:
    """The :class:`~torchsurgeon.channelmap.ChannelMap` of each layer reading ``image`` (an input the model takes now)
    not as it is, through which :func:`~torchsurgeon.adapt_input_channels` folds it to ``channels``; None when every
    layer reads it as it is, one has no map, or the model does not run on it."""
    from .channelmap import channel_maps  # channelmap runs the model: readers, shapes (which imports this module)
    from .readers import input_readers, unmatched_channels

    try:
        joins: dict[str, int] = {}
        readers = input_readers(model, image, joins=joins)
        doubts = unmatched_channels(model, readers, image, joins)
        mapped = channel_maps(model, readers, list(doubts), channels, image) if doubts else None
    except Exception:  # the model does not run on that image
        return None
    return mapped[1] if mapped is not None else None


def _changed_image(G: nx.DiGraph, inputs: Mapping[str, Any], channels: int) -> tuple[str, ...]:
    """Of a model taking several images read by different layers (:func:`~torchsurgeon.graphreaders.distinct_images`),
    the layers reading those given ``channels`` channels, which they do not take (both pathways of SlowFast given
    grey clips: a fold of all of them runs, where a plain fold asks which image changes); ``()`` for a model of one
    image, or of several that one backbone reads, or when no image changed."""
    images = graph_images(G)
    if not distinct_images(images):  # one image, or one backbone reading each (a siamese network): the plain fold
        return ()
    modules = index_of(G).modules
    changed = [
        readers
        for name, readers in images.items()
        if (x := inputs.get(name)) is not None
        and x.dim() >= 2
        and x.shape[1] == channels
        and any(getattr(modules.get(r), "in_channels", None) != channels for r in readers)
    ]
    return tuple(dict.fromkeys(r for readers in changed for r in readers))


def fold_alone_at(G: nx.DiGraph, shapes: Mapping[str, tuple[int, ...]], channels: int) -> tuple[tuple[str, ...], str]:
    """:func:`fold_alone` on inputs of these ``shapes`` (batch included, by input name), each of the dtype its
    argument takes (:func:`~torchsurgeon.inputdtypes.placeholder_dtype`); inputs without a shape are left out.
    ``((), "")`` while a search tries sizes (:func:`~torchsurgeon.graph.probing`): it reads findings, not fixes, and
    the model run at each size it tries (up to 4096 × 4096) cost seconds and GiBs."""
    if is_probing(G):
        return (), ""
    model = model_of(G)
    inputs = {
        name: torch.empty(shape, dtype=placeholder_dtype(n, model), device="meta")
        for name, n in placeholders(graph_module_of(G)).items()
        if (shape := shapes.get(name)) is not None
    }
    return fold_alone(G, inputs, channels)


def _why_not(G: nx.DiGraph, layers: tuple[str, ...], inputs: Mapping[str, Any], channels: int) -> str:
    """Why the model of ``G`` with ``layers`` folded to ``channels`` does not run on ``inputs``; "" when it runs, or
    when meta cannot tell (:func:`~torchsurgeon.adapt_input_channels` checks the edit again before making it)."""
    model = model_of(G)
    edited = detached_copy(model, meta_like)
    if not refit_in_place(edited, layers, channels):
        return ""
    args, kwargs = bind_inputs(model, dict(inputs), traced_paths(graph_module_of(G)))
    try:
        with torch.no_grad(), torch.device("meta"), ruled_meta():
            edited(*args, **kwargs)
    except Exception as exc:  # the edited model's own failure, or a meta limit (undecided)
        if cannot_run_on_meta(exc):
            return ""
        _, _, rearranged = graph_readers(G)
        others = ", ".join(rearranged)
        reason = next(iter(rearranged.values()))
        return (
            f"no fold runs: {others} read the input only after {reason}, and with {', '.join(layers)} alone folded "
            f"to {channels} channel{'s' * (channels != 1)} the model fails ({first_line(exc, 200)}) — give it an "
            f"input whose channel count it can take, or fold by hand"
        )
    return ""


def name_mapped_folds(G: nx.DiGraph, shapes: ShapeResult) -> ShapeResult:
    """``shapes`` and ``G``'s records with the fold named for each layer that reads the input only rearranged (timm's
    TResNet: a space-to-depth makes its stem's 48 channels of 16 pixels × 3 colours) and that
    :func:`~torchsurgeon.adapt_input_channels` folds through its :class:`~torchsurgeon.channelmap.ChannelMap`: it was
    told to replace the layer (new weights).  Nothing is run without such a finding.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> from torchsurgeon.shapes import propagate_shapes
    >>> G = build_graph(trace(nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 8, 3))))
    >>> name_mapped_folds(G, propagate_shapes(G, (1, 8, 8))).findings[0].fix
    'fold it with adapt_input_channels(model, 1)'
    """
    widths = ("in_channels", "in_features")
    found = [f for f in shapes.findings if f.what in widths and not f.fix.startswith("fold it")]
    if not found or len(shapes.input_shapes) != 1:
        return shapes
    _, _, rearranged = graph_readers(G)
    found = [f for f in found if f.layer in rearranged and isinstance(f.got, int) and isinstance(f.expected, int)]
    shape = next(iter(shapes.input_shapes.values()))[1:]
    if not found or len(shape) < 2 or found[0].got % shape[0] or found[0].expected % (found[0].got // shape[0]):
        return shapes
    model = model_of(G)
    channels = shape[0]
    image = (found[0].expected // (found[0].got // channels), *shape[1:])  # the colours each group held
    mapped = _maps(model, image, channels)
    if mapped is None or any(f.layer not in mapped for f in found):
        return shapes
    fixes = {
        f.layer: input_fix(model.get_submodule(f.layer), channels, repr(image) if shape_specific_of(G) else "")
        for f in found
    }
    from .inputsize import with_fixes  # inputsize imports shapes, which imports this module

    return with_fixes(G, shapes, lambda f: fixes[f.layer] if f in found else f.fix)
