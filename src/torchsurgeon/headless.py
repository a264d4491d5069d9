"""Models with no classification head, and the calls that give them one.

:func:`~torchsurgeon.heads.replace_head` and :func:`~torchsurgeon.heads.append_head`
edit a classifier.  A model that gives hidden states or features has none:
transformers' base models (``BertModel``, ``ViTModel``, ``GPT2Model``: the
model registered for their ``model_type``, which its task classes hold as
``base_model``), and a backbone whose output is made by a normalisation (a
torchvision ResNet cut before its pooling).  A layer put in the place of that
normalisation would change what the rest of the model reads from it (BertModel's
pooler reads the last hidden state).  These refusals name what runs instead:
the classifier transformers builds for the model's config, with the model's own
weights loaded into it; a pooling and a Linear after the whole model.

A classifier removed by an ``nn.Identity`` in its place (timm's
``num_classes=0``, ``model.fc = nn.Identity()``) is no such model: the new head
goes there (:func:`~torchsurgeon.heads.replace_head`).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch
from torch import nn

from .errors import SurgeryError

__all__ = ("CLASS_COUNTS", "features_only", "is_normalisation", "transformers_base")

_TASKS = {
    "input_ids": ("SEQUENCE", "IMAGE", "AUDIO", "VIDEO"),
    "pixel_values": ("IMAGE", "VIDEO", "SEQUENCE", "AUDIO"),
    "input_values": ("AUDIO", "SEQUENCE", "IMAGE", "VIDEO"),
    "input_features": ("AUDIO", "SEQUENCE", "IMAGE", "VIDEO"),
}
"""transformers' classification mappings (``MODEL_FOR_<TASK>_CLASSIFICATION_MAPPING_NAMES``) in the order tried,
by the model's ``main_input_name``."""


CLASS_COUNTS = ("num_labels", "num_classes", "n_classes", "classes", "out_channels", "out_features")
"""Attributes in which a model, a module holding its head or their config keep the class count they are built for
(MONAI's ``out_channels``; ``out_features``: of a module around its Linear, as sentence-transformers' ``Dense``,
which saves it to rebuild the layer)."""


def transformers_base(model: nn.Module, num_classes: int | None, did: str) -> SurgeryError | None:
    """The refusal of a transformers base model (the class registered for its ``model_type``, ``BertModel``), with
    the classifier transformers builds for it and the load of its weights, as a call that runs; None for any other
    model.  ``did``: what was asked (``"replace"``, ``"append to"``).

    Examples
    --------
    >>> from torch import nn
    >>> transformers_base(nn.Linear(4, 2), 5, "replace") is None
    True
    """
    kind = type(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not kind.__module__.startswith("transformers.") or not isinstance(model_type, str):
        return None
    auto = sys.modules.get("transformers.models.auto.modeling_auto")
    if auto is None:
        return None
    registered = auto.MODEL_MAPPING_NAMES.get(model_type)
    if kind.__name__ not in ((registered,) if isinstance(registered, str) else tuple(registered or ())):
        return None
    classes = num_classes if num_classes is not None else 2
    main = str(getattr(model, "main_input_name", ""))
    order = _TASKS.get(main, _TASKS["input_ids"])
    task = next(
        (
            name
            for t in order
            if isinstance(name := getattr(auto, f"MODEL_FOR_{t}_CLASSIFICATION_MAPPING_NAMES", {}).get(model_type), str)
            and hasattr(sys.modules["transformers"], name)
        ),
        None,
    )
    said = (
        f"{kind.__name__} is transformers' base model for {model_type!r}: it gives hidden states, not class scores "
        f"— there is no classification head to {did}"
    )
    if task is None:
        return SurgeryError(
            f"{said}, and transformers has no classification model for {model_type!r}: put a layer making the class "
            f"scores on its last_hidden_state in a module of your own (nn.Linear(model.config.hidden_size, {classes}) "
            "on the pooled or last token's state)"
        )
    strict, note = _load(model, getattr(sys.modules["transformers"], task), classes)
    fix = (
        f"config = copy.deepcopy(model.config); config.num_labels = {classes}; "
        f"new = transformers.{task}(config); new.base_model.load_state_dict(model.state_dict(){strict})"
    )
    path = str(getattr(config, "_name_or_path", "") or "")
    pretrained = (
        f" (with the checkpoint's weights: transformers.{task}.from_pretrained({path!r}, num_labels={classes}))"
        if path
        else ""
    )
    # the code last, so that all after "runs as written: " runs
    return SurgeryError(
        f"{said}. Build the classifier transformers makes for it, {task}{pretrained}, from its config and load this "
        f"model's weights into it{note}, which runs as written: {fix}"
    )


def _load(model: nn.Module, task: Any, classes: int) -> tuple[str, str]:
    """How ``load_state_dict`` loads ``model``'s weights into ``task``'s base model: ``("", "")`` (strict) when both
    hold the same weights, else ``", strict=False"`` and a note of the modules left out (ViTModel's pooler, which
    ViTForImageClassification does not build) or new."""
    try:
        config: Any = copy.deepcopy(model.config)
        config.num_labels = classes
        with torch.device("meta"):  # only its parameters' names are read
            built = task(config)
        theirs = set(built.base_model.state_dict())
    except Exception:  # a class that cannot be built here: the user checks the keys load_state_dict reports
        return ", strict=False", " (then check the keys it reports)"
    mine = set(model.state_dict())
    unused = sorted({k.rpartition(".")[0] or k for k in mine - theirs})  # the root's own: CLIP's logit_scale
    new = sorted({k.rpartition(".")[0] or k for k in theirs - mine})
    notes = [f"{', '.join(unused[:4])}, which {task.__name__} does not build, left out"] if unused else []
    notes += [f"{', '.join(new[:4])}, which this model lacks, new"] if new else []
    return (", strict=False", f" ({'; '.join(notes)})") if notes else ("", "")


def is_normalisation(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer (batch, layer, group, instance or RMS norm, a library's own).

    Examples
    --------
    >>> from torch import nn
    >>> is_normalisation(nn.LayerNorm(8)), is_normalisation(nn.Linear(8, 2))
    (True, False)
    """
    kinds = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)
    return isinstance(module, kinds) or "norm" in type(module).__name__.lower()


def features_only(
    model: nn.Module, name: str, output: Any, num_classes: int | None, did: str, ran_on: Any = None
) -> SurgeryError | None:
    """The refusal of a model whose output is made by the normalisation ``name`` (a backbone giving features),
    with a classifier after the whole model that runs as written when its ``output`` shape allows one; None when
    ``name`` is no normalisation, or its output is a dense prediction: its width is the class count the model says
    (``out_channels``), or its sizes are those of the image it ran on, ``ran_on`` (MONAI's HighResNet ends in conv,
    norm, activation).  ``did``: what was asked (``"replace"``, ``"append to"``).

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    >>> str(features_only(model, "1", (1, 8, 6, 6), 5, "replace")).split(": ")[-1]
    'nn.Sequential(model, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))'
    """
    module = model.get_submodule(name) if name else model
    if not name or not is_normalisation(module):
        return None
    classes = num_classes if num_classes is not None else "num_classes"
    shape = output if isinstance(output, tuple) and all(type(d) is int for d in output) else None
    image = ran_on if isinstance(ran_on, tuple) and all(type(d) is int for d in ran_on) else None
    if shape is not None and len(shape) > 1 and any(getattr(model, a, None) == shape[1] for a in CLASS_COUNTS):
        return None  # its classes, normalised: a classifier
    if shape is not None and image is not None and len(shape) > 2 and tuple(shape[2:]) == tuple(image[1:]):
        return None  # a class map per pixel at the image's size: a segmentation model's
    said = (
        f"{type(model).__name__} has no classification head to {did}: its output"
        f"{f' {shape}' if shape else ''} is made by {name} ({type(module).__name__}), a normalisation of its "
        "features, not a layer making class scores"
    )
    if shape is None or len(shape) not in (2, 4, 5):
        return SurgeryError(f"{said} — add a classifier reading its output after the whole model")
    pool = f"nn.AdaptiveAvgPool{len(shape) - 2}d(1), nn.Flatten(), " if len(shape) > 2 else ""
    return SurgeryError(
        f"{said} — add a classifier after the whole model, which runs as written: "
        f"nn.Sequential(model, {pool}nn.Linear({shape[1]}, {classes}))"
    )
