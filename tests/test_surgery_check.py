"""check_surgery of models whose own forward cannot be traced (torchvision's detection models, as the object
detection finetuning tutorial edits them): every parameter compared, exact totals, shapes of the part that takes
the images, and the report saying what it could not check; and of stems that read the input rearranged (a
space-to-depth), whose folds fold each group of pixels' colours."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from torchsurgeon import ParamChange, TraceError, adapt_input_channels, check_surgery, paramcount


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


class _UnshuffledStem(nn.Module):
    """A stem after ``pixel_unshuffle(x, 2)``: its channel ``4 * c + p`` holds colour ``c`` of pixel ``p`` of each
    2 × 2 block (the colour slowest)."""

    def __init__(self, colours: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4 * colours, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pixel_unshuffle(x, 2))


def _by_hand(original: _UnshuffledStem, channels: int, fold: str) -> _UnshuffledStem:
    """The stem for ``channels`` colours, its weight folded by hand per pixel of the block: the sum of the 3
    colours for a grey image, or spread, that sum over the new colours in each of them."""
    edited = _UnshuffledStem(channels).to(original.conv.weight.dtype)
    w = original.conv.weight.detach().reshape(8, 3, 4, 3, 3)  # (out, colour, pixel, kh, kw)
    summed = w.sum(1, keepdim=True)
    new = summed if fold == "sum" else (summed / channels).expand(-1, channels, -1, -1, -1)
    with torch.no_grad():
        edited.conv.weight.copy_(new.reshape(8, 4 * channels, 3, 3))
        edited.conv.bias.copy_(original.conv.bias)
    return edited


@pytest.mark.parametrize(("channels", "fold"), [(1, "sum"), (2, "spread"), (5, "spread")])
def test_a_fold_of_each_group_of_pixels_is_recognised_as_a_fold(channels: int, fold: str) -> None:
    torch.manual_seed(0)
    original = _UnshuffledStem(3).double()
    edited = _by_hand(original, channels, fold)
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)  # a grey image
    grey = x.expand(-1, channels, -1, -1)  # the oracle of the fold: both give the original's output on grey
    assert torch.allclose(edited(grey), original(x.expand(-1, 3, -1, -1)), atol=1e-12)
    report = check_surgery(original, edited, (channels, 8, 8))
    (weight,) = [p for p in report.params if p.name == "conv.weight"]
    assert weight.status == ParamChange.FOLDED, weight
    assert weight.message.startswith(f"{fold} fold of the original, each group of pixels' colours"), weight.message
    assert report.verdict.startswith("1 folded (conv)"), report.verdict


def test_a_new_weight_after_a_rearrangement_is_still_reinitialised() -> None:
    torch.manual_seed(0)
    original, edited = _UnshuffledStem(3), _UnshuffledStem(1)  # drawn anew: no fold of the original
    (weight,) = [p for p in check_surgery(original, edited, (1, 8, 8)).params if p.name == "conv.weight"]
    assert weight.status == ParamChange.REINITIALISED, weight


def _state(model: nn.Module) -> list[object]:
    """What an analysis must leave as it was: weights and buffers, hooks, modes and requires_grad."""
    hooks = [
        (len(m._forward_pre_hooks), len(m._forward_hooks), len(m._backward_hooks), m.training) for m in model.modules()
    ]
    return [{k: v.clone() for k, v in model.state_dict().items()}, hooks, [p.requires_grad for p in model.parameters()]]


def test_checking_an_untraceable_detector_leaves_both_models_as_found() -> None:
    """The partial check runs both models' forwards on copies with pre-hooks on their parts (copies.inputs_reaching):
    none of it may reach the user's models."""
    original, edited = _tutorial_edit()
    before = [_state(original), _state(edited)]
    check_surgery(original, edited, (3, 8, 8))
    after = [_state(original), _state(edited)]
    for was, now in zip(before, after):
        assert was[0].keys() == now[0].keys() and all(torch.equal(was[0][k], now[0][k]) for k in was[0])
        assert was[1:] == now[1:]


@pytest.mark.parametrize("channels", [2, 26])
def test_a_repeat_fold_to_a_width_not_a_multiple_says_it_is_not_exact(channels: int) -> None:
    """A 13-band stem folded to 2 channels with ``repeat`` keeps the first two bands' filters × 6.5, exact on no
    input; adapt_input_channels and check_surgery both called it "repeat fold", as they call the folds that give the
    original's output. Now both say it is not exact and name the fold that is; to 26 channels it is exact."""
    torch.manual_seed(0)
    original = nn.Sequential(nn.Conv2d(13, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    original(torch.zeros(1, 13, 6, 6))
    result = adapt_input_channels(original, channels, mode="repeat")
    report = check_surgery(original, result.model, (channels, 6, 6))
    notes = [result.changes[0].message, next(p.message for p in report.params if p.name == "0.weight")]
    if channels == 26:  # the input tiled twice gives the original's output: exact
        x = torch.randn(1, 13, 6, 6)
        torch.testing.assert_close(result.model(x.repeat(1, 2, 1, 1)), original(x))
        assert not any("not exact" in note for note in notes)
        return
    torch.testing.assert_close(result.model[0].weight, original[0].weight[:, :2] * 6.5)
    for note in notes:
        assert re.search(r"not exact — 2 is not a multiple of 13: the filters of the first 2 channels × 6\.5", note)
    assert "0: repeat fold of the original, not exact" in report.verdict
    call = re.search(r"adapt_input_channels\(.*\)", notes[1])
    assert call is not None
    exact = eval(call.group(0), {"adapt_input_channels": adapt_input_channels, "model": original}).model
    band = torch.randn(1, 1, 6, 6)
    torch.testing.assert_close(exact(band.expand(1, 2, 6, 6)), original(band.expand(1, 13, 6, 6)))
