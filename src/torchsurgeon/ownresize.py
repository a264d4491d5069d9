"""A model's own call that makes it take another image size, for the fix of a finding the input's size causes.

A ViT built for 224×224 images holds position tables with one row per patch of that size, and its patch
embedding asserts the size; fine-tuning at 320×320 is common, and the search of :mod:`~torchsurgeon.inputsize`
can only name the size the model takes now. Models that know how to resample their own tables say so with a
method: timm's ``set_input_size(img_size=...)`` (its ViTs, DeiT, BEiT, EVA, Swin, FlexiViT; open_clip's image towers
built on timm pass ``set_input_size(image_size=...)`` on to it) interpolates the
position tables the way timm loads a checkpoint at another size and updates the patch embedding's checks.
torchvision's ``VisionTransformer`` is built for one ``image_size``; torchvision's recipe for another is a model
built at that size loaded with ``interpolate_embeddings(image_size, patch_size, model.state_dict())``.
open_clip's own ViT tower has no such method: ``create_model(..., force_image_size=...)`` sets its grid and resamples
its table with ``resize_pos_embed`` as it loads the weights.  transformers' vision models resample their table in
``forward`` when asked: ``interpolate_pos_encoding=True``.
:func:`own_resize_fix` names that call, that recipe or that argument, once it has run on a ``meta`` copy of the
model and the result's forward took the input; the model itself is not touched.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from .crosscheck import forward_runs
from .shapes import meta_copy

__all__ = ("RESAMPLED_IN_FORWARD", "own_resize_fix")

RESAMPLED_IN_FORWARD = "pass interpolate_pos_encoding=True to its forward"
"""The start of the fix :func:`own_resize_fix` names for transformers' models: the position table resampled in
``forward`` for each image, its parameters left as they are (``params`` counts the table at its own size then)."""


def own_resize_fix(model: nn.Module | None, inputs: Mapping[str, Any], batch: int = 1) -> str:
    """What makes ``model`` take ``inputs`` (one image, by forward's name: a per-sample shape ``(C, H, W)``), as the
    end of a fix: its own ``set_input_size(img_size=(H, W))`` (timm), torchvision's recipe for a
    ``VisionTransformer`` (:func:`_torchvision_vit`) or transformers' ``interpolate_pos_encoding=True``
    (:func:`_interpolated`); ``""`` when there is none, or when it fails on a ``meta``
    copy of the model or the result's forward fails at the input
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
    "first run the model's own resize (its position tables resampled): model.set_input_size(img_size=(48, 64))"
    >>> own_resize_fix(nn.Conv2d(3, 4, 8), {"input": (3, 48, 64)})  # no call of its own
    ''
    """
    if model is None or len(inputs) != 1:
        return ""
    ((name, input),) = inputs.items()
    if not isinstance(input, tuple) or len(input) != 3 or not all(type(s) is int and s > 0 for s in input):
        return ""
    x = {name: torch.empty(batch, *input, device="meta")}
    own = _set_input_size(model, input[1:], x)
    return own or _torchvision_vit(model, input, x) or _open_clip_vit(model, input, x) or _interpolated(model, input, x)


def _set_input_size(model: nn.Module, size: tuple[int, ...], x: Mapping[str, torch.Tensor]) -> str:
    """timm's ``model.set_input_size(img_size=size)`` (open_clip's ``TimmModel`` image tower names it
    ``image_size``), when it and a forward at ``x`` run on a meta copy."""
    method = getattr(model, "set_input_size", None)
    if not callable(method):
        return ""
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return ""
    keyword = next((k for k in ("img_size", "image_size") if k in parameters), None)
    if keyword is None:
        return ""
    try:
        copy_ = meta_copy(model).eval()
        cast(Any, copy_).set_input_size(**{keyword: size})
    except Exception:  # the model's own call refuses this size: not a fix
        return ""
    if not forward_runs(copy_, x):
        return ""
    return f"first run the model's own resize (its position tables resampled): model.set_input_size({keyword}={size})"


def _interpolated(model: nn.Module, input: tuple[int, ...], x: Mapping[str, torch.Tensor]) -> str:
    """transformers' ``interpolate_pos_encoding=True`` (ViT, DeiT, CLIP's vision tower...: the position table
    resampled to the image in ``forward``), passed to the analysis as a concrete argument, when ``forward`` takes it
    and a forward at ``x`` with it runs on a meta copy."""
    try:
        if "interpolate_pos_encoding" not in inspect.signature(model.forward).parameters:
            return ""
    except (TypeError, ValueError):
        return ""
    if not forward_runs(model, {**x, "interpolate_pos_encoding": True}):
        return ""
    return (
        f"{RESAMPLED_IN_FORWARD} (its position table resampled), as "
        f"paramcount(model, {input}, concrete_args={{'interpolate_pos_encoding': True}})"
    )


def _torchvision_vit(model: nn.Module, input: tuple[int, ...], x: Mapping[str, torch.Tensor]) -> str:
    """torchvision's ``VisionTransformer`` built at the input's (square) size with the model's settings and loaded
    with ``interpolate_embeddings`` (its position table resampled), as statements that run; done first on ``meta``,
    with a forward at ``x``. A head replaced by another Linear keeps its class count; a convolutional stem, another
    norm or an input of other than 3 channels: "" (torchvision's constructor cannot say them)."""
    vision_transformer = sys.modules.get("torchvision.models.vision_transformer")
    if vision_transformer is None or type(model) is not vision_transformer.VisionTransformer:
        return ""
    vit: Any = model  # its settings are plain attributes
    size, head, norm = input[1], getattr(vit.heads, "head", None), vit.encoder.ln
    if input[2] != size or not isinstance(vit.conv_proj, nn.Conv2d) or not isinstance(head, nn.Linear):
        return ""
    if type(norm) is not nn.LayerNorm or norm.eps != 1e-6:
        return ""
    settings: dict[str, Any] = {
        "image_size": size,
        "patch_size": model.patch_size,
        "num_layers": len(vit.encoder.layers),
        "num_heads": vit.encoder.layers[0].num_heads,
        "hidden_dim": model.hidden_dim,
        "mlp_dim": model.mlp_dim,
    }
    optional = {"dropout": 0.0, "attention_dropout": 0.0, "representation_size": None}
    settings |= {k: getattr(model, k) for k, default in optional.items() if getattr(model, k) != default}
    if head.out_features != 1000:
        settings["num_classes"] = head.out_features
    try:
        with torch.device("meta"):
            resized = vision_transformer.VisionTransformer(**settings).eval()
        state = vision_transformer.interpolate_embeddings(size, model.patch_size, meta_copy(model).state_dict())
        resized.load_state_dict(state)
    except Exception:  # sizes it cannot build or a state it does not load (an edited model): not a fix
        return ""
    if not forward_runs(resized, x):
        return ""
    built = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    return (
        "first build it at this size with torchvision's recipe (its position table resampled): "
        "from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings; "
        f"resized = VisionTransformer({built}); "
        f"resized.load_state_dict(interpolate_embeddings({size}, {model.patch_size}, model.state_dict())); "
        f"paramcount(resized, {input})"
    )


def _open_clip_vit(model: nn.Module, input: tuple[int, ...], x: Mapping[str, torch.Tensor]) -> str:
    """open_clip's ``VisionTransformer`` (the image tower of ViT-B-32 and the like) with its grid set for the input
    and its position table resampled by open_clip's own ``resize_pos_embed`` (what ``create_model(...,
    force_image_size=...)`` does to a checkpoint it loads), as statements that run; done first on a ``meta`` copy,
    with a forward at ``x``. A table of other than one row per patch and a class token: "" (open_clip's function
    assumes that layout)."""
    transformer, clip = sys.modules.get("open_clip.transformer"), sys.modules.get("open_clip.model")
    if transformer is None or clip is None or type(model) is not getattr(transformer, "VisionTransformer", None):
        return ""
    vit: Any = model
    table = getattr(vit, "positional_embedding", None)
    patch = getattr(vit, "patch_size", None)
    if not isinstance(table, nn.Parameter) or table.dim() != 2 or not isinstance(patch, tuple) or len(patch) != 2:
        return ""
    grid = (input[1] // patch[0], input[2] // patch[1])
    old = math.isqrt(table.shape[0] - 1)
    if old * old != table.shape[0] - 1 or 0 in grid:
        return ""
    steps = (
        f"model.grid_size = {grid}; model.image_size = {tuple(input[1:])}; "
        "state = {'visual.positional_embedding': model.positional_embedding.data}; "
        "resize_pos_embed(state, nn.ModuleDict({'visual': model})); "
        "model.positional_embedding = nn.Parameter(state['visual.positional_embedding'])"
    )
    try:
        copy_: Any = meta_copy(model).eval()
        state = {"visual.positional_embedding": copy_.positional_embedding.data}
        copy_.grid_size, copy_.image_size = grid, tuple(input[1:])
        clip.resize_pos_embed(state, nn.ModuleDict({"visual": copy_}))
        copy_.positional_embedding = nn.Parameter(state["visual.positional_embedding"])
    except Exception:  # a version of open_clip whose function differs: not a fix
        return ""
    if not forward_runs(copy_, x):
        return ""
    return (
        "first resample its position table with open_clip's own function (as create_model(..., force_image_size=...) "
        f"does to the weights it loads): from open_clip.model import resize_pos_embed; {steps}"
    )
