"""Which layers read the model input in the traced graph, and the layers a fold of the input names.

:func:`graph_readers` follows the data from every input of the graph through
weight-free operations to the first layers with weights; it cannot look inside
an opaque leaf (Hugging Face's ViT embeddings, MONAI's SwinUNETR), for which
:func:`torchsurgeon.readers.input_readers` runs the model once on ``meta``.
Shape propagation (the fix of an input layer that refuses its channel count)
and surgery (:func:`torchsurgeon.adapt_input_channels`) both ask it, so the
fold a report names is the one surgery makes.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
from torch import nn

from .errors import SurgeryError
from .graph import NodeRecord, fx_node, graph_cache, index_of, node_record, node_records, opaque_of, specialised_of
from .knowndata import DATA_FACTORIES
from .resize import hands_on_channels
from .shapespec import EXAMPLE_TOKENS

__all__ = (
    "distinct_images",
    "fold_layers",
    "graph_images",
    "graph_readers",
    "images_traced_as_none",
    "weights_owner",
)


_SHAPE_ONLY = frozenset(
    {
        ("call_function", "getattr"),
        ("call_function", "_assert"),
        ("call_function", "len"),
        ("call_method", "size"),
        ("call_method", "dim"),
    }
)
"""Nodes that read the input's shape, not its values."""

_REARRANGING = frozenset(
    {
        "view",
        "reshape",
        "permute",
        "transpose",
        "t",
        "flatten",
        "unflatten",
        "unsqueeze",
        "movedim",
        "moveaxis",
        "swapaxes",
        "swapdims",
        "unfold",
        "expand",
        "repeat",
        "cat",
        "concat",
        "concatenate",
        "stack",
        "einsum",
        "rearrange",
        "reduce",
        "Rearrange",  # einops' layers
        "Reduce",
        "EinMix",
        "pixel_shuffle",
        "pixel_unshuffle",
        "channel_shuffle",
        "PixelShuffle",
        "PixelUnshuffle",
        "ChannelShuffle",
        "Flatten",
        "Unflatten",
        "Unfold",
    }
)
"""Ops (call targets, module types) after which a tensor's channels may not be the input's one to one (``unsqueeze``:
a waveform ``(N, T)`` given one channel has none to adapt)."""


def weights_owner(G: nx.DiGraph, rec: NodeRecord) -> str | None:
    """The module owning the weights a node uses, or None for weight-free nodes.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU())))
    >>> weights_owner(G, node_record(G, "_0")), weights_owner(G, node_record(G, "_1"))
    ('0', None)
    """
    if rec.op == "call_module" and rec.param_names:
        return rec.target
    if rec.op == "call_function":
        if rec.layer != rec.name:  # the graph named it by the module whose weights it reads (F.conv2d(x, self.weight))
            return rec.layer
        for src in G.predecessors(rec.name):
            source = node_record(G, src)
            if source.op == "get_attr" and source.param_names:
                return source.param_names[0].rpartition(".")[0]
        if rec.target in _LAYER_FUNCTIONS and rec.scope:
            # a conv whose forward computes its weight (timm's StdConv2d standardises it): the weight comes from
            # the conv module whose forward made the call, through the ops that compute it
            scope = index_of(G).modules.get(rec.scope)
            if isinstance(scope, (nn.modules.conv._ConvNd, nn.Linear)):
                return rec.scope
    return None


_LAYER_FUNCTIONS = frozenset(
    {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear"}
)
"""The functions of conv and linear layers, as a record names its target."""


def graph_readers(G: nx.DiGraph) -> tuple[list[str], bool, dict[str, str]]:
    """The layers with weights that read the input in the traced graph ``G``, following the data from every
    input through weight-free operations (not through shape queries).

    Returns the layers' qualified names; whether the input meets a parameter or
    buffer before them (a normalisation, ``x - self.mean``, which may broadcast
    it to more channels); and, for each layer the input reaches only after an
    op that may move its channels (a view, permute or ``pixel_unshuffle``: a
    space-to-depth stem) or a part analysed as one opaque layer, that op.  An
    input that reaches layers only that way while another input reaches one
    as it is (a diffusion UNet's timestep, embedded by an opaque
    ``Timesteps``, beside its image) is not an image: its layers are left out.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> class SpaceToDepth(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Conv2d(12, 8, 3)
    ...     def forward(self, x):
    ...         return self.conv(nn.functional.pixel_unshuffle(x, 2))
    >>> graph_readers(build_graph(trace(SpaceToDepth())))
    (['conv'], False, {'conv': 'pixel_unshuffle()'})
    """
    opaque = opaque_of(G)
    per_input = [_reached(G, rec.name, opaque) for rec in node_records(G) if rec.op == "placeholder"]
    images = [r for r in per_input if any(name not in r[2] for name in r[0])] or per_input
    modules = index_of(G).modules
    convolved = [r for r in images if any(isinstance(modules.get(n), nn.modules.conv._ConvNd) for n in r[0])]
    images = convolved or images  # beside an image, a vector that Linear layers read (tabular features) is none
    found: list[str] = []
    rearranged: dict[str, str] = {}
    for layers, _, moved in images:
        found += [name for name in layers if name not in found]
        rearranged.update((name, why) for name, why in moved.items() if name not in rearranged)
    return found, any(mixed for _, mixed, _ in images), rearranged


def _reached(G: nx.DiGraph, start: str, opaque: Mapping[str, str]) -> tuple[list[str], bool, dict[str, str]]:
    """:func:`graph_readers` for the input node ``start``."""
    found: list[str] = []
    mixed = False
    rearranged: dict[str, str] = {}
    frontier = [(start, "")]
    seen = {start}
    while frontier:
        node, via = frontier.pop(0)
        for succ in G.successors(node):
            rec = node_record(G, succ)
            if succ in seen or (rec.op, rec.target) in _SHAPE_ONLY:
                continue
            seen.add(succ)
            owner = weights_owner(G, rec)
            if owner is not None:
                if owner not in found:
                    found.append(owner)
                if via:
                    rearranged.setdefault(owner, via)
                continue
            if rec.op == "call_module" and rec.layer in opaque and not _hands_on(G, rec):
                moves = f"{rec.layer} ({rec.module_type}, analysed as one opaque layer)"
            elif (rec.module_type if rec.op == "call_module" else rec.target) in _REARRANGING or _new_dims(G, rec):
                in_scope = f"{rec.module_type} in {rec.scope}".removesuffix(" in ")
                moves = f"{rec.layer} ({rec.module_type})" if rec.op == "call_module" else in_scope
            else:
                moves = ""
            frontier.append((succ, via or moves))
            mixed = mixed or any(_model_tensor(G, p, seen) for p in G.predecessors(succ))
    return found, mixed, rearranged


def _hands_on(G: nx.DiGraph, rec: NodeRecord) -> bool:
    """Whether the module ``rec`` calls, analysed as one opaque layer, hands its input on with its channels
    (:func:`~torchsurgeon.resize.hands_on_channels`: a QAT model's per-tensor ``FakeQuantize``)."""
    return hands_on_channels(rec.op, rec.target, index_of(G).modules.get(str(rec.target)))


def _new_dims(G: nx.DiGraph, rec: NodeRecord) -> bool:
    """Whether ``rec`` indexes with ``None`` (``x[:, None]``: a new dim, as ``unsqueeze`` makes one)."""
    if rec.op != "call_function" or rec.target != "getitem":
        return False
    args = fx_node(G, rec.name).args
    index = args[1] if len(args) > 1 else ()
    return index is None or (isinstance(index, tuple) and None in index)


_FACTORIES = frozenset({f.__name__ for f in DATA_FACTORIES} | {"as_tensor", "from_numpy", "linspace"})
"""Functions that make a tensor from Python values (by the names the graph's records give them): a forward's own
constants (a mean per channel)."""


def _model_tensor(G: nx.DiGraph, node: str, reached: set[str], depth: int = 4) -> bool:
    """Whether ``node``, not computed from the input, is a tensor of the model's or computed from one
    (Swin2SR's ``self.mean.to(dtype=x.dtype)``): what the input meets then is a normalisation that may
    broadcast it to more channels."""
    if node in reached:
        return False
    rec = node_record(G, node)
    if rec.op == "get_attr" or (rec.op == "call_function" and rec.target in _FACTORIES):
        return True  # a tensor of the model's, or one its forward makes (torch.tensor(self.mean).view(1, -1, 1, 1))
    if depth == 0 or rec.op not in ("call_function", "call_method") or (rec.op, rec.target) in _SHAPE_ONLY:
        return False
    return any(_model_tensor(G, p, reached, depth - 1) for p in G.predecessors(node))


def fold_layers(G: nx.DiGraph) -> tuple[str, ...]:
    """The layers a fold of the input of ``G`` names with ``layer=``: those reading the input as it is, when others
    read it only rearranged (MONAI's VNet tiles its input to its stem's width and adds it to the stem's output).
    :func:`~torchsurgeon.adapt_input_channels` refuses to fold those others, and names the fold of the first
    alone; ``()`` when no layer reads it rearranged, or none as it is (the plain fold, or none, is the fix).

    Examples
    --------
    >>> import torch
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> class TiledResidual(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.down = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 4, 2)
    ...     def forward(self, x):
    ...         return self.down(self.stem(x) + x.repeat(1, 4, 1, 1))
    >>> fold_layers(build_graph(trace(TiledResidual())))
    ('stem',)
    >>> fold_layers(build_graph(trace(nn.Sequential(nn.Conv2d(3, 8, 3)))))
    ()
    """

    def build() -> tuple[str, ...]:
        found, _, rearranged = graph_readers(G)
        return tuple(name for name in found if name not in rearranged) if rearranged else ()

    layers: tuple[str, ...] = graph_cache(G, "fold layers", build)
    return layers


def graph_images(G: nx.DiGraph) -> dict[str, list[str]]:
    """The model inputs that convolutions read as they are in the traced graph ``G``, each with those layers (an
    image and a mask: which one gets other channels is the user's to say).

    Examples
    --------
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> class Sum(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = nn.Conv2d(4, 8, 1), nn.Conv2d(1, 8, 1)
    ...     def forward(self, image, mask):
    ...         return self.a(image) + self.b(mask)
    >>> graph_images(build_graph(trace(Sum())))
    {'image': ['a'], 'mask': ['b']}
    """
    opaque, modules = opaque_of(G), index_of(G).modules
    found: dict[str, list[str]] = {}
    for rec in node_records(G):
        if rec.op == "placeholder":
            layers, _, moved = _reached(G, rec.name, opaque)
            convs = [n for n in layers if n not in moved and isinstance(modules.get(n), nn.modules.conv._ConvNd)]
            if convs:
                found[rec.target] = convs
    return found


def distinct_images(images: Mapping[str, list[str]]) -> bool:
    """Whether several inputs are images read by different layers (an image and a mask); inputs that one backbone
    reads (a siamese network) all take the channels its stem is adapted to: no choice.

    Examples
    --------
    >>> distinct_images({"a": ["backbone.0"], "b": ["backbone.0"]}), distinct_images({"x": ["a"], "y": ["b"]})
    (False, True)
    """
    return len({tuple(sorted(readers)) for readers in images.values()}) > 1


def images_traced_as_none(model: nn.Module, G: nx.DiGraph, found: list[str], call: str) -> SurgeryError | None:
    """The error when the layers ``found`` reading the inputs of ``G``, traced without an input, are no image's
    while ``forward``'s image arguments (``pixel_values``, ``images``) were traced as their default, None: BLIP's
    token ids alone reach a layer (an Embedding), and "no input channels to adapt" would be wrong.  None when a
    Conv or Linear layer reads an input, or no image argument was left out.  ``call``: the user's call.

    Examples
    --------
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> class Captioner(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.words, self.patches = nn.Embedding(10, 4), nn.Conv2d(3, 4, 2, 2)
    ...     def forward(self, input_ids, pixel_values=None):
    ...         x = self.words(input_ids)
    ...         return x if pixel_values is None else x + self.patches(pixel_values).mean((2, 3))[:, None]
    >>> model = Captioner()
    >>> error = images_traced_as_none(model, build_graph(trace(model)), ["words"], "f(model, {input})")
    >>> print(str(error).partition(" — ")[2])
    pass the input the model takes, e.g. f(model, input={'input_ids': (16,), 'pixel_values': (3, 224, 224)})
    """
    images = [k for k, v in specialised_of(G).items() if v is None and ("pixel" in k or "image" in k)]
    modules = index_of(G).modules
    if not images or any(isinstance(modules.get(n), (nn.modules.conv._ConvNd, nn.Linear)) for n in found):
        return None
    given = [rec.name for rec in node_records(G) if rec.op == "placeholder"]
    config = getattr(model, "config", None)
    size = getattr(getattr(config, "vision_config", None) or config, "image_size", None)  # BLIP's: no channels
    side = size if isinstance(size, int) else 224
    example = {**dict.fromkeys(given, EXAMPLE_TOKENS), **dict.fromkeys(images, (3, side, side))}
    readers = ", ".join(f"{n} ({type(modules.get(n)).__name__})" for n in found) or "no layer with weights"
    return SurgeryError(
        f"{type(model).__name__} traced without an input reads only {', '.join(given)}, with {readers}: its "
        f"forward's {', '.join(images)} was traced as None (its default), so the layers reading it are not known "
        f"— pass the input the model takes, e.g. {call.format(input=f'input={example}')}"
    )
