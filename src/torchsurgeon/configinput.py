"""The input a model's own configuration describes: what analysers and surgery run a model on when not given one.

A Hugging Face model's config names its image's channels and size (in a vision
tower's, a backbone's or an image encoder's part), and its text's settings
where its forward asks for token ids too (:func:`default_input`); a timm
model's ``pretrained_cfg`` names the image it was made for
(:func:`configured_input`).  When a model of an image and a text refuses the
input its config describes (LLaVA reads image tokens in its ids),
:func:`image_tower_readers` runs its image tower alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from .errors import SurgeryError
from .readers import input_readers
from .shapespec import EXAMPLE_TOKENS

__all__ = ("configured_image", "configured_input", "default_input", "image_tower_readers", "with_tower_hint")


def default_input(model: nn.Module) -> dict[str, tuple[int, ...]] | None:
    """The image input a Hugging Face vision model's config describes, or None.

    ``{"pixel_values": (num_channels, H, W)}`` from ``config.num_channels`` and
    ``config.image_size`` (LayoutLMv3's ``input_size``; or those of the
    ``vision_config``, the ``backbone_config`` or the ``encoder`` when the
    config has no channels of its own; 224 × 224 when it has no size, as for
    convolutional networks) when ``forward`` takes ``pixel_values``;
    ``(num_frames, num_channels, H, W)`` for a video model's config
    (VideoMAE, TimeSformer, ViViT).  With 16 token ids (``input_ids``, fewer
    if the text has fewer positions) for a model of an image and a text whose
    ``forward`` takes both (CLIP, SigLIP; ViLT, GIT and LayoutLMv3, whose text
    settings are on the model's own config), and 16 ``decoder_input_ids`` for
    an image encoder and a text decoder (``VisionEncoderDecoderModel``: TrOCR,
    Donut).

    Examples
    --------
    >>> from torch import nn
    >>> default_input(nn.Conv2d(3, 8, 3)) is None
    True
    """
    config = top = getattr(model, "config", None)
    if getattr(config, "num_channels", None) is None:
        config = _image_config(config)
    else:
        config = getattr(config, "vision_config", None) or config
    channels, size = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if size is None:  # LayoutLMv3 names its image's size input_size
        size = getattr(config, "input_size", None)
    try:
        parameters = set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        parameters = set()
    if "pixel_values" not in parameters or not isinstance(channels, int):
        return None
    size = 224 if size is None else size
    h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
    frames = getattr(config, "num_frames", None)
    if isinstance(frames, int) and not isinstance(frames, bool):  # videos: (batch, frames, channels, H, W)
        return {"pixel_values": (frames, channels, int(h), int(w))}
    # an image and text model (CLIP, SigLIP; ViLT and GIT with their text's settings on the model's own config), or
    # an image encoder and a text decoder (TrOCR, Donut): its forward asks for both; the image is the input followed
    text = getattr(top, "text_config", None) or (top if isinstance(getattr(top, "vocab_size", None), int) else None)
    ids = "input_ids"
    if "input_ids" not in parameters and "decoder_input_ids" in parameters:
        decoder = getattr(top, "decoder", None)
        ids, text = "decoder_input_ids", decoder if isinstance(getattr(decoder, "vocab_size", None), int) else None
    if text is None or ids not in parameters:
        return {"pixel_values": (channels, int(h), int(w))}
    positions = getattr(text, "max_position_embeddings", None)
    tokens = (min(EXAMPLE_TOKENS[0], positions),) if isinstance(positions, int) and positions > 0 else EXAMPLE_TOKENS
    return {"pixel_values": (channels, int(h), int(w)), ids: tokens}


def _image_config(config: Any) -> Any:
    """The part of a Hugging Face config without channels of its own that describes its image model: a vision
    tower's, a backbone's (Depth Anything, DPT hybrids, UperNet) or an image encoder's (VisionEncoderDecoderModel:
    TrOCR, Donut); the config itself when none has channels."""
    for key in ("vision_config", "backbone_config", "encoder"):
        part = getattr(config, key, None)
        if isinstance(getattr(part, "num_channels", None), int):
            return part
    return config


def configured_image(model: nn.Module) -> tuple[int, int, int] | None:
    """``(C, 224, 224)`` with ``C`` the channels of the image a timm model's ``pretrained_cfg`` describes
    (its ``input_size``), or None: the image to run a model on to look inside the part that reads its input when
    it has no convolution to take them from (:func:`~torchsurgeon.readers.guessed_input`), as naflexvit's Linear
    patch embedding.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Linear(48, 8)
    >>> model.pretrained_cfg = {"input_size": (3, 384, 384)}
    >>> configured_image(model)
    (3, 224, 224)
    >>> configured_image(nn.Linear(48, 8)) is None
    True
    """
    image = configured_input(model)
    return None if image is None else (image[0], 224, 224)


def configured_input(model: nn.Module) -> tuple[int, int, int] | None:
    """The image a timm model's ``pretrained_cfg`` describes (its ``input_size``: channels, height, width), or None:
    the size a ViT built for one image size (DINOv2's 518, SigLIP's 256) takes, where 224 × 224 is refused.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Linear(48, 8)
    >>> model.pretrained_cfg = {"input_size": (3, 518, 518)}
    >>> configured_input(model)
    (3, 518, 518)
    >>> configured_input(nn.Linear(48, 8)) is None
    True
    """
    config = getattr(model, "pretrained_cfg", None)
    size = config.get("input_size") if isinstance(config, Mapping) else None
    if not isinstance(size, (tuple, list)) or len(size) != 3 or not all(type(d) is int and d > 0 for d in size):
        return None
    return (size[0], size[1], size[2])


def image_tower_readers(model: nn.Module, input: Any) -> tuple[str, list[str]] | None:
    """The image tower of a Hugging Face model of an image and a text (its module built from ``config.vision_config``)
    and the layers reading the image there, found by running the tower alone on ``input``'s ``pixel_values``; None
    when the model has none, or it does not run on the image alone.

    A model that refuses the input its config describes (LLaVA's forward matches image tokens in its ids with the
    image's features) cannot be run to find the layers reading its image; its tower can.

    Examples
    --------
    >>> import types
    >>> from torch import nn
    >>> class Tower(nn.Module):
    ...     def __init__(self, config):
    ...         super().__init__()
    ...         self.config, self.patch = config, nn.Conv2d(3, 8, 4, 4)
    ...     def forward(self, pixel_values):
    ...         return self.patch(pixel_values)
    >>> class Chat(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.config = types.SimpleNamespace(vision_config=types.SimpleNamespace())
    ...         self.tower = Tower(self.config.vision_config)
    >>> image_tower_readers(Chat(), {"pixel_values": (3, 16, 16), "input_ids": (16,)})
    ('tower', ['tower.patch'])
    """
    vision = getattr(getattr(model, "config", None), "vision_config", None)
    if vision is None or not isinstance(input, Mapping) or "pixel_values" not in input:
        return None
    tower = next((name for name, m in model.named_modules() if name and getattr(m, "config", None) is vision), None)
    if tower is None:
        return None
    try:
        found = input_readers(model.get_submodule(tower), {"pixel_values": input["pixel_values"]})
    except Exception:  # the tower does not run on the image alone either
        return None
    return (tower, [f"{tower}.{name}" for name in found]) if found else None


def with_tower_hint(error: SurgeryError, model: nn.Module, input: Any, call: str) -> SurgeryError:
    """``error`` (the model refused the input its config describes) with, where its image tower runs on the image
    alone (:func:`image_tower_readers`), the layers reading the image there and the user's ``call`` naming them
    with ``layer=`` (a call without ``layer=``, ``input_layers``, names them only).

    Examples
    --------
    >>> from torch import nn
    >>> print(with_tower_hint(SurgeryError("refused"), nn.Linear(2, 2), None, "f(model, {input})"))
    refused
    """
    found = image_tower_readers(model, input)
    if found is None:
        return error
    tower, layers = found
    layer = layers[0] if len(layers) == 1 else layers
    named = f"{', '.join(layers)} read{'s' * (len(layers) == 1)} it there"
    fix = "" if call.startswith("input_layers(") else f"; if the model hands its tower the image as it is: {call}"
    return SurgeryError(
        f"{error}; its image tower {tower} ({type(model.get_submodule(tower)).__name__}) runs on the image alone, "
        f"and {named}{fix.format(input=f'layer={layer!r}')}"
    )
