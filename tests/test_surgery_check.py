"""check_surgery of models whose own forward cannot be traced (torchvision's detection models, as the object
detection finetuning tutorial edits them): every parameter compared, exact totals, shapes of the part that takes
the images, and the report saying what it could not check."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchsurgeon import ParamChange, TraceError, check_surgery, paramcount


class _Images:
    """What a detection model hands its heads (torchvision's ImageList): a value torch.fx cannot record."""

    def __init__(self, tensors: torch.Tensor) -> None:
        self.tensors = tensors


class _BoxHead(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.predictor = nn.Linear(16, classes)

    def forward(self, images: _Images, features: torch.Tensor) -> torch.Tensor:
        x = self.fc(features.mean((2, 3)))
        if bool((x > 0).any()):  # on values: the head is a leaf, and the model hands it an _Images
            x = x.relu()
        return self.predictor(x)


class _TinyDetector(nn.Module):
    """A detection model in miniature: it resizes its images before the backbone (GeneralizedRCNNTransform)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.head = _BoxHead(5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        resized = _Images(nn.functional.interpolate(images, size=(16, 16), mode="bilinear"))
        return self.head(resized, self.backbone(resized.tensors))


def _tutorial_edit() -> tuple[nn.Module, nn.Module]:
    """The original (its first conv frozen, as trainable_backbone_layers does) and the model with a new predictor."""
    torch.manual_seed(0)
    original = _TinyDetector().eval()
    original.backbone[0].requires_grad_(False)
    edited = copy.deepcopy(original)
    edited.head.predictor = nn.Linear(16, 2)
    return original, edited


def test_a_predictor_replaced_in_an_untraceable_detector_is_checked_parameter_by_parameter() -> None:
    """check_surgery raised paramcount's TraceError: no parameter could be compared. Now every one is (kept by
    value, the new predictor's initialiser named), the totals are the whole models', and the shapes are those of
    the backbone at what the model hands it, with the report saying the rest was not analysed."""
    original, edited = _tutorial_edit()
    with pytest.raises(TraceError):
        paramcount(edited, (3, 8, 8))
    rep = check_surgery(original, edited, (3, 8, 8))
    before, after = original.state_dict(), edited.state_dict()
    for name, _ in edited.named_parameters():
        kept = name in before and before[name].shape == after[name].shape and torch.equal(before[name], after[name])
        assert (rep.status_of(name) == ParamChange.KEPT) == kept, name
    assert rep.status_of("head.predictor.weight") == ParamChange.REINITIALISED
    (weight,) = [p for p in rep.params if p.name == "head.predictor.weight"]
    assert weight.init.startswith("kaiming_uniform_(a=√5)")
    assert rep.total_before == sum(p.numel() for p in original.parameters())
    assert rep.total_after == sum(p.numel() for p in edited.parameters())
    assert rep.frozen_after == sum(p.numel() for p in edited.backbone[0].parameters())
    fed: list[tuple[int, ...]] = []  # the oracle: a real forward, with a hook on the backbone
    given: list[tuple[int, ...]] = []

    def look(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        fed.append(tuple(args[0].shape))
        given.append(tuple(out.shape))

    handle = edited.backbone.register_forward_hook(look)
    with torch.no_grad():
        edited(torch.zeros(1, 3, 8, 8))
    handle.remove()
    assert not rep.complete and rep.part is not None
    assert (rep.part.name, rep.part.input, rep.part.not_analysed) == ("backbone", fed[0], ("head",))
    assert rep.after.output_shape == given[0] == (1, 8, 14, 14)
    text = str(rep)
    assert "Total params after:  " + f"{rep.total_after:,}" in text
    assert f"Frozen params after: {rep.frozen_after:,} (requires_grad=False)" in text
    assert "NOT FULLY CHECKED: _TinyDetector's own forward cannot be traced (" in text
    assert "shapes are checked in backbone only (which the model hands (1, 3, 16, 16) at this input): head" in text
    assert rep.verdict.endswith("0 invalid; shapes checked in backbone only (head not analysed)")
    assert rep.to_dict()["complete"] is False and rep.to_dict()["output_after"] is None


def test_a_layer_that_no_longer_fits_inside_the_checked_part_is_invalid_under_its_model_name() -> None:
    original, edited = _tutorial_edit()
    edited.backbone[1] = nn.BatchNorm2d(4)
    rep = check_surgery(original, edited, (3, 8, 8))
    assert [layer.name for layer in rep.invalid] == ["backbone.1"]
    assert rep.status_of("backbone.1.weight") == ParamChange.INVALID
    with pytest.raises(RuntimeError, match="running_mean should contain 8 elements not 4"):
        edited(torch.zeros(1, 3, 8, 8))  # the oracle: the real model refuses it too
