"""The dtype of each model input given by shape: token ids are integers, the rest the model's floating dtype.

What ``forward`` does with an input decides when the trace shows it
(:func:`integers_needed`: an embedding reads it, a Linear multiplies it);
else its name (:func:`input_dtype_for`).  :func:`placeholder_dtype` asks both
for a traced input.
"""

from __future__ import annotations

import itertools
import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = ("input_dtype_for", "integers_needed", "placeholder_dtype")


# ``*_ids`` that are no token ids: diffusers passes them as floats (SDXL's time_ids, the image sizes and crop corner
# it conditions on; Flux's img_ids and txt_ids, positions for its rotary embedding)
_FLOAT_IDS = ("time_ids", "img_ids", "txt_ids")


def input_dtype_for(name: str, model: nn.Module, *, integers: bool | None = None) -> torch.dtype:
    """The dtype of an input given by shape: ``torch.long`` for token ids, else the model's floating dtype.

    What ``forward`` does with the input decides when it is known
    (``integers``: an embedding reads it, or a layer multiplies it by its
    float weight).  Else the name does: token ids are the arguments named
    ``ids`` or ``*_ids`` (``input_ids``, ``decoder_input_ids``,
    ``token_type_ids``), the names Hugging Face models use, so they stay
    integers even when the embedding that reads them sits inside an opaque
    layer; class indices, ``labels`` (a Hugging Face model's loss reads them
    with ``gather``), too.  diffusers' ``time_ids`` (SDXL), ``img_ids`` and
    ``txt_ids`` (Flux) are float values, not token ids.  Give a
    :class:`~torchsurgeon.shapespec.TypedShape` (``"128:long"``) or a tensor
    instead of a shape to choose any other dtype.

    Parameters
    ----------
    name : str
        The input's name (a dict's entry is ``argument_key``).
    model : nn.Module
        The model; its first floating parameter or buffer gives the floating dtype.
    integers : bool, optional
        True when ``forward`` needs integers there, False when it needs
        floats, None (the default) when nothing says: the name decides.

    Returns
    -------
    torch.dtype

    Examples
    --------
    >>> from torch import nn
    >>> input_dtype_for("input_ids", nn.Linear(2, 2)), input_dtype_for("pixel_values", nn.Linear(2, 2).half())
    (torch.int64, torch.float16)
    >>> input_dtype_for("labels", nn.Linear(2, 2)), input_dtype_for("added_cond_kwargs_time_ids", nn.Linear(2, 2))
    (torch.int64, torch.float32)
    >>> input_dtype_for("cond_ids", nn.Linear(2, 2), integers=False)  # forward feeds it to a Linear
    torch.float32
    """
    if integers is None:
        integers = (name in ("ids", "labels") or name.endswith(("_ids", "_labels"))) and not any(
            name == kind or name.endswith(f"_{kind}") for kind in _FLOAT_IDS
        )
    if integers:
        return torch.long
    for p in itertools.chain(model.parameters(), model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


# ops that hand an input's values on unchanged, dtype included: what reads their output reads the input
_SAME_VALUES = frozenset(
    {
        *("flatten", "view", "reshape", "unsqueeze", "squeeze", "permute", "transpose", "contiguous", "expand"),
        *(operator.getitem, torch.flatten, torch.reshape, torch.unsqueeze, torch.squeeze, torch.permute),
        torch.transpose,
    }
)
_INTEGER_LAYERS = (nn.Embedding, nn.EmbeddingBag)  # a lookup by index
_INTEGER_FUNCTIONS = frozenset({F.embedding, F.embedding_bag, F.one_hot})  # the indices first
_FLOAT_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)  # a product with a float weight: no integer input
_FLOAT_FUNCTIONS = frozenset(
    {F.linear, F.conv1d, F.conv2d, F.conv3d, torch.matmul, operator.matmul, torch.mm, torch.bmm}
)


def integers_needed(node: torch.fx.Node, model: nn.Module) -> bool | None:
    """Whether ``forward`` needs integers in the traced input ``node``: True when an embedding looks it up, False
    when a layer multiplies it by its float weight, None when nothing it does says (the name decides then).

    Views and indexing in between (``ids.flatten()``, ``x[:, None]``) hand the values on; a cast
    (``t.float()``, diffusers' timestep embedding) says nothing.

    Parameters
    ----------
    node : torch.fx.Node
        A ``placeholder`` of a traced graph.
    model : nn.Module
        The module whose submodules the graph's ``call_module`` targets name.

    Returns
    -------
    bool or None

    Examples
    --------
    >>> from torch import nn
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(6, 4)))
    >>> integers_needed(next(iter(gm.graph.nodes)), gm)
    False
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Embedding(10, 4)))
    >>> integers_needed(next(iter(gm.graph.nodes)), gm)
    True
    """
    seen: set[torch.fx.Node] = set()
    todo, floats = [node], False
    while todo:
        current = todo.pop()
        for user in current.users:
            if user in seen:
                continue
            seen.add(user)
            first = user.args[:1] == (current,) or user.kwargs.get("input") is current
            if user.op == "call_module":
                layer = model.get_submodule(str(user.target))
                if isinstance(layer, _INTEGER_LAYERS):
                    return True
                floats = floats or (first and isinstance(layer, _FLOAT_LAYERS))
            elif user.op in ("call_function", "call_method"):
                if user.target in _INTEGER_FUNCTIONS and first:
                    return True
                if user.target in _FLOAT_FUNCTIONS and current in user.args[:2]:
                    floats = True
                elif user.target in _SAME_VALUES and first:
                    todo.append(user)
    return False if floats else None


def placeholder_dtype(node: torch.fx.Node, model: nn.Module) -> torch.dtype:
    """The dtype of the traced input ``node`` (a ``placeholder``): :func:`input_dtype_for` its name, told by what
    ``forward`` does with it first (:func:`integers_needed`: an embedding, a Linear), else by the name.

    Examples
    --------
    >>> from torch import nn
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Embedding(10, 4)))
    >>> placeholder_dtype(next(iter(gm.graph.nodes)), gm)
    torch.int64
    """
    return input_dtype_for(str(node.target).lstrip("*"), model, integers=integers_needed(node, model))
