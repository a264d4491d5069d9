"""Surgery: folding the input layer, replacing the head, and checking any edit."""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

from models import (
    CifarNet,
    HandWrittenConv,
    SizeChecked,
    TiedLM,
    TiledResidualStem,
    TwoInputs,
    assert_same_state,
    model_state,
    on_meta,
    sentence_transformer,
)
from torchsurgeon import (
    InputError,
    ParamChange,
    SurgeryError,
    TraceError,
    TypedShape,
    adapt_input_channels,
    append_head,
    check_surgery,
    fold_input_normalization,
    memory_plan,
    paramcount,
    replace_head,
)
from torchsurgeon.copies import model_copy
from torchsurgeon.surgery import input_layers
from torchsurgeon.trace import trace


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50()


# ---------------------------------------------------------------- the seed scenario, edited by hand


def test_seed_scenario_by_hand(resnet50: nn.Module) -> None:
    edited = copy.deepcopy(resnet50)
    edited.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    edited.fc = nn.Sequential(edited.fc, nn.Linear(1000, 10))
    rep = check_surgery(resnet50, edited, (1, 224, 224))

    assert rep.status_of("conv1.weight") == ParamChange.REINITIALISED
    assert rep.status_of("fc.1.weight") == ParamChange.NEW
    assert rep.status_of("fc.1.bias") == ParamChange.NEW
    fc1 = next(p for p in rep.params if p.name == "fc.1.weight")
    assert fc1.init.startswith("kaiming_uniform_(a=√5): U(-0.0316, 0.0316)")  # 1/sqrt(1000)
    moved = next(p for p in rep.params if p.name == "fc.0.weight")
    assert (moved.status, moved.old_name) == (ParamChange.KEPT, "fc.weight")
    changed = {p.name for p in rep.params if p.status != ParamChange.KEPT}
    assert changed == {"conv1.weight", "fc.1.weight", "fc.1.bias"}
    assert rep.invalid == []
    assert (rep.before.total, rep.after.total) == (25_557_032, 25_557_032 - 9_408 + 3_136 + 10_010)
    assert rep.after.output_shape == (1, 10)
    assert rep.verdict == (
        "1 layer re-initialised (conv1: pretrained weights lost — use adapt_input_channels(model, 1, "
        "layer='conv1')), 1 new (fc.1), 0 invalid"
    )
    text = str(rep)
    assert "fc.0.weight (was fc.weight)" in text and "Other parameters kept unchanged: 158" in text


def test_conv1_with_32_out_channels_makes_three_layers_invalid(resnet50: nn.Module) -> None:
    edited = copy.deepcopy(resnet50)
    edited.conv1 = nn.Conv2d(3, 32, 7, 2, 3, bias=False)
    rep = check_surgery(resnet50, edited, (3, 224, 224))
    assert [layer.name for layer in rep.invalid] == ["bn1", "layer1.0.conv1", "layer1.0.downsample.0"]
    assert {p.name for p in rep.by_status(ParamChange.INVALID)} == {
        "bn1.weight",
        "bn1.bias",
        "layer1.0.conv1.weight",
        "layer1.0.downsample.0.weight",
    }
    assert rep.status_of("conv1.weight") == ParamChange.REINITIALISED
    assert rep.verdict.endswith("3 invalid (bn1, layer1.0.conv1, layer1.0.downsample.0)")


def test_folded_alternative_is_recognised(resnet50: nn.Module) -> None:
    folded = adapt_input_channels(resnet50, 1).model
    rep = check_surgery(resnet50, folded, (1, 224, 224))
    assert rep.status_of("conv1.weight") == ParamChange.FOLDED
    assert all(p.status == ParamChange.KEPT for p in rep.params if p.name != "conv1.weight")
    assert rep.verdict == "1 folded (conv1), 0 new, 0 invalid"
    assert json.loads(json.dumps(rep.to_dict()))["counts"]["folded"] == 1


def test_moved_by_value_and_removed() -> None:
    before = CifarNet()
    rep = check_surgery(before, nn.Sequential(copy.deepcopy(before.conv1)), (3, 32, 32))
    assert rep.status_of("0.weight") == ParamChange.KEPT  # moved from conv1.weight, matched by value
    assert next(p for p in rep.params if p.name == "0.weight").old_name == "conv1.weight"
    assert rep.status_of("fc3.weight") == ParamChange.REMOVED
    assert "4 removed (conv2, fc1, fc2, fc3)" in rep.verdict


def test_same_name_same_shape_new_values_is_reinitialised() -> None:
    before = CifarNet()
    after = copy.deepcopy(before)
    after.fc2 = nn.Linear(120, 84)
    rep = check_surgery(before, after, (3, 32, 32))
    assert rep.status_of("fc2.weight") == ParamChange.REINITIALISED
    assert rep.status_of("fc3.weight") == ParamChange.KEPT


@pytest.mark.parametrize("head", [nn.Linear(8, 3), nn.Conv2d(8, 3, 1)])
@pytest.mark.parametrize("keep", [{0: 2, 1: 0, 2: 1}, {0: 2, 1: 0}])
def test_a_head_as_wide_as_before_keeping_rows_is_resized(head: nn.Module, keep: dict[int, int]) -> None:
    flat = [nn.Flatten()] if isinstance(head, nn.Linear) else []
    before = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), *flat, head)
    after = copy.deepcopy(before)
    after[-1] = type(head)(8, 3, *([1] if isinstance(head, nn.Conv2d) else []))
    with torch.no_grad():  # the rows of the classes the new task shares, by hand as replace_head(keep=...) does
        for new, old in keep.items():
            after[-1].weight[new], after[-1].bias[new] = before[-1].weight[old], before[-1].bias[old]
    rep = check_surgery(before, after, (3, 8, 8))
    last = len(before) - 1
    for name in (f"{last}.weight", f"{last}.bias"):
        assert rep.status_of(name) == ParamChange.RESIZED
        row = next(p for p in rep.params if p.name == name)
        assert f"{len(keep)} of 3 pretrained rows kept" in row.message
        assert "lost" not in row.message
    assert "lost" not in rep.verdict


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_head_resized_or_moved_then_cast_keeps_its_pretrained_rows(dtype: torch.dtype) -> None:
    before = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    resized = copy.deepcopy(before)  # replace_head(before, 3, keep={0: 4}) by hand, then model.half()
    resized[3] = nn.Linear(8, 3)
    with torch.no_grad():
        resized[3].weight[0], resized[3].bias[0] = before[3].weight[4], before[3].bias[4]
    rep = check_surgery(before, resized.to(dtype), (3, 8, 8))
    assert [rep.status_of(n) for n in ("3.weight", "3.bias")] == [ParamChange.RESIZED] * 2
    assert "1 of 5 pretrained rows kept: 0←4; 2 new" in next(p.message for p in rep.params if p.name == "3.weight")
    moved = copy.deepcopy(before)  # append_head(before, nn.Linear(5, 2)) by hand, then model.half()
    moved[3] = nn.Sequential(moved[3], nn.Linear(5, 2))
    rep = check_surgery(before, moved.to(dtype), (3, 8, 8))
    kept = next(p for p in rep.params if p.name == "3.0.weight")
    assert (kept.status, kept.old_name) == (ParamChange.KEPT, "3.weight")
    assert not rep.by_status(ParamChange.REMOVED)
    assert rep.status_of("3.1.weight") == ParamChange.NEW


# ---------------------------------------------------------------- adapt_input_channels


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", ["conv1"]),
        ("densenet121", ["features.conv0"]),
        ("efficientnet_b0", ["features.0.0"]),
        ("convnext_tiny", ["features.0.0"]),
        ("vit_b_16", ["conv_proj"]),
        ("swin_t", ["features.0.0"]),
        ("inception_v3", ["Conv2d_1a_3x3.conv"]),
    ],
)
def test_input_layers_found_from_the_graph(name: str, expected: list[str]) -> None:
    assert input_layers(on_meta(torchvision.models.get_model, name=name)) == expected


def test_a_model_checking_its_input_size_is_adapted_without_an_input() -> None:
    model = SizeChecked().double().eval()
    with pytest.raises(TraceError):  # the trace alone cannot answer the check
        trace(model)
    assert input_layers(model) == ["stem"]  # it is run on a (3, 224, 224) image instead
    grey = adapt_input_channels(model, 1).model
    g = torch.randn(1, 1, 32, 64, dtype=torch.float64)
    torch.testing.assert_close(grey(g), model(g.expand(1, 3, 32, 64)))


def test_a_model_refusing_the_guessed_input_asks_for_its_own() -> None:
    with pytest.raises(SurgeryError, match=r"does not accept \(3, 224, 224\) either .*divisible by 48.* input=\(") as e:
        adapt_input_channels(SizeChecked(divisor=48), 1)
    assert "e.g. input=(3, 224, 224)" not in str(e.value)  # never the input it has just said the model refuses
    # the call made, with the input it takes now (said "the input paramcount was given", a call not made)
    assert "adapt_input_channels(model, 1, input=(3, H, W)) at the sizes its message asks for" in str(e.value)
    assert "(the input it takes now, with 3 channels)" in str(e.value) and "paramcount" not in str(e.value)
    with pytest.raises(SurgeryError, match=r"replace_head\(model, 5, input=\(3, H, W\)\) at the sizes") as h:
        replace_head(SizeChecked(divisor=48), 5)
    assert "paramcount" not in str(h.value)
    assert adapt_input_channels(SizeChecked(divisor=48), 1, input=(3, 48, 96)).changes[0].name == "stem.weight"


class _ShapeTracedHead(nn.Module):
    """A transposed-conv stem, a view round trip on the input's own sizes (fx traces it only for one shape), a
    flatten and a Linear sized for one image size: the fuzzer's minimal model."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.head = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1), nn.Linear(4 * 9 * 17, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        s = x.shape
        return self.head(x.view(s[0], s[1], -1).softmax(-1).view(*s).flatten(1))


@pytest.mark.parametrize("order", [1, -1])
def test_the_fixes_a_report_lists_run_as_written_in_either_order(order: int) -> None:
    """Analysed at an input where both the stem (its channels) and the head (a Linear after a flatten, its size)
    do not fit, the report names the fold with input= and the head's replacement; run first, as listed, the fold
    refused: the model does not run on that input (the head does not fit it either).  The head after the layers
    folded is now resized on the weightless copy the fold is found and checked on, and the fold says so."""
    model = _ShapeTracedHead().eval()
    report = paramcount(model, (1, 3, 4))
    fixes = [f.fix for f in report.findings]
    call = r"\((?:[^()]|\([^()]*\))*\)"
    fold = re.search(rf"adapt_input_channels{call}", fixes[0])
    head = re.search(rf"model\.set_submodule{call}", fixes[1])
    assert fold is not None and "input=" in fold.group() and head is not None
    names = {"model": copy.deepcopy(model), "nn": nn, "adapt_input_channels": adapt_input_channels}
    for code in [f"result = {fold.group()}; model = result.model", head.group()][::order]:
        exec(code, names)  # each as written
    edited = names["model"]
    assert edited(torch.randn(2, 1, 3, 4)).shape == (2, 5)
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    folded = names["result"].changes[0]
    assert folded.name == "stem.weight" and folded.status is ParamChange.FOLDED
    assert ("'head' resized" in folded.message) == (order == 1)  # said only where the model did not run yet
    with pytest.raises(SurgeryError, match=r"does not run on input \(3, 3, 4\)"):
        input_layers(model, (3, 3, 4))  # asked which layers read it, the model is still refused there


@pytest.mark.parametrize("input", [None, (2, 16, 16)])
def test_a_stem_whose_input_is_tiled_into_a_residual_is_refused_with_a_fold_that_runs(input: Any) -> None:
    """The layer after VNet's stem reads the input only tiled into a residual: the refusal suggested an input of
    the wrong channel count, (3, 224, 224), or (given the right one) a new layer of the wrong width.  It now says
    why, and the fold it names (the stem alone) runs as written and keeps the model's outputs."""
    model = TiledResidualStem().double().eval()
    with pytest.raises(SurgeryError, match=r"down .*read the input only after .* joined to what conv makes") as e:
        adapt_input_channels(model, 1, input=input)
    assert "(3, 224, 224)" not in str(e.value) and "set_submodule" not in str(e.value)
    call = re.search(r"adapt_input_channels\(model, 1, layer=\[[^]]*\]\)", str(e.value))
    assert call is not None and call.group() == "adapt_input_channels(model, 1, layer=['conv'])"
    grey = eval(call.group(), {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), model(x.expand(2, 2, 16, 16)))


class _SpaceToDepthStem(nn.Module):
    """TResNet's stem (timm ``SpaceToDepth``): each 4 × 4 block of pixels becomes 16 × C channels, then a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(48, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.size()
        x = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).contiguous()
        return self.conv(x.view(n, c * 16, h // 4, w // 4))


class _PixelUnshuffleStem(nn.Module):
    """A stem after ``pixel_unshuffle``: its 12 channels are 3 colours × 4 pixels, the colour slowest (as
    ``SpaceToDepth`` has it fastest)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(12, 8, 3, padding=1, bias=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(nn.functional.pixel_unshuffle(x, 2)).relu().mean((2, 3)))


@pytest.mark.parametrize("stem", [_SpaceToDepthStem, _PixelUnshuffleStem])
@pytest.mark.parametrize(("channels", "mode"), [(1, "sum"), (1, "spread"), (2, "spread"), (5, "zero_extra")])
def test_a_stem_after_a_space_to_depth_step_is_folded_group_by_group_and_the_fold_is_exact(
    stem: type[nn.Module], channels: int, mode: str
) -> None:
    """Found by a user (timm's tresnet_m): a stem reading the input after space-to-depth (48 channels = 16 pixels ×
    3 colours) was refused.  Each group of channels holding the same pixels is folded now, as a plain stem's
    channels are: the edited model runs on the new channels, and gives the original's output on the input the mode
    relates, in float64."""
    torch.manual_seed(0)
    model = stem().double().eval()
    before = model_state(model)
    result = adapt_input_channels(model, channels, mode)
    assert_same_state(before, model_state(model))  # the probes ran on copies
    (change,) = [c for c in result.changes if c.status is ParamChange.FOLDED]
    per_group = model.conv.in_channels // 3
    assert change.name == "conv.weight" and change.shape_after[1] == per_group * channels
    assert f"{mode} fold of 3 → {channels} channels in each of the {per_group} groups of pixels" in change.message
    x = torch.randn(2, channels, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        got = result.model(x)
        if mode == "zero_extra":  # RGB + anything gives the RGB output
            want = model(x[:, :3])
        else:  # sum: grey as RGB; spread: grey replicated to C channels, as RGB
            grey = x[:, :1]
            got = result.model(grey.expand(2, channels, 16, 16))
            want = model(grey.expand(2, 3, 16, 16))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_space_to_depth_stem_named_with_layer_is_sent_to_the_fold_that_finds_it() -> None:
    """Named with layer=, the stem's 48 channels were folded as if they were the input's, and the model failed on
    grey images: tried first, refused, and the way out (leave layer= out) runs as written."""
    with pytest.raises(SurgeryError, match=r"does not run on input \(1, 224, 224\).* leave layer= out"):
        adapt_input_channels(_SpaceToDepthStem(), 1, layer="conv")
    grey = adapt_input_channels(_SpaceToDepthStem(), 1).model
    assert grey(torch.randn(2, 1, 32, 32)).shape == (2, 8, 8, 8)


class _ScaledSpaceToDepthStem(_SpaceToDepthStem):
    """Space-to-depth, then the values scaled: the stem reads values computed from the input's, not only moved
    (here a fold would be exact, but the probe that finds a rearrangement cannot tell a scale from a colour
    transform, so it refuses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.size()
        x = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).contiguous()
        return self.conv(x.view(n, c * 16, h // 4, w // 4) * 0.5)


def test_a_stem_reading_values_computed_after_space_to_depth_is_not_folded_and_the_fix_runs() -> None:
    """The channels of a stem that reads scaled space-to-depth channels are no rearrangement of the input's: no
    fold is known to be exact, and the replacement the refusal names runs."""
    model = _ScaledSpaceToDepthStem().eval()
    assert paramcount(model, (1, 32, 32)).invalid[0].message.startswith("conv (Conv2d) expects in_channels=48, got 16")
    with pytest.raises(SurgeryError, match=r"^conv \(Conv2d\) reads the input only after \.view\(\): its 48 "):
        adapt_input_channels(model, 1)
    with pytest.raises(SurgeryError, match=r"the input \(3, 32, 32\) has no size 48\).* replace it") as caught:
        adapt_input_channels(model, 1, input=(3, 32, 32))
    fix = str(caught.value).split("replace it (new weights) with ")[1].split(", or name")[0]
    exec(fix, {"model": model, "nn": nn})  # the fix runs as written
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 8, 8, 8)


class _PReLUOnAConcatenation(nn.Module):
    """The input and features of it concatenated, then a PReLU (MONAI's Quicknat's dense blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.out = nn.Conv2d(1, 4, 3, padding=1), nn.PReLU(5), nn.Conv2d(5, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(torch.cat([x, self.conv(x)], 1)))


def test_a_prelu_reading_the_input_after_a_concatenation_is_refused_with_its_width() -> None:
    """Found by a probe of MONAI's Quicknat: the refusal said "its ? input channels" of a PReLU, which has no
    in_channels; it gives the PReLU's own width (num_parameters)."""
    with pytest.raises(SurgeryError, match=r"^act \(PReLU\) reads the input only after cat\(\): its 5 input channels "):
        adapt_input_channels(_PReLUOnAConcatenation(), 2, "spread")


class _CrossConnection(nn.Module):
    """fastai's DynamicUnet in small (``last_cross=True``): the input joined to the last features, then a ResBlock
    whose identity path adds what it reads to what its conv makes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Conv2d(11, 11, 3, padding=1)
        self.head = nn.Conv2d(11, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.stem(x)), x], 1)
        return self.head(y + self.block(y))


def test_a_replacement_of_a_joined_layer_that_does_not_run_is_not_proposed() -> None:
    """Found by a probe of fastai's DynamicUnet at 1 channel: the fix proposed, ``Conv2d(9, 11)`` in place of the
    ResBlock's conv, gave a model that failed (9 channels added to 11), and the fold it named then ran without a
    word on that broken model.  The replacement is tried first; the message says it fails, and why."""
    model = _CrossConnection().eval()
    with pytest.raises(SurgeryError, match=r"^block \(Conv2d\) reads the input only after a concatenation") as caught:
        adapt_input_channels(model, 1, input=(3, 16, 16))
    message = str(caught.value)
    assert "replace it (new weights) with" not in message
    assert "replacing it alone (model.set_submodule('block', nn.Conv2d(9, 11," in message
    assert "gives a model that fails on 1 channel (" in message and "still expects its 11 channels" in message
    replaced = copy.deepcopy(model)  # and it does fail, as said
    replaced.set_submodule("block", nn.Conv2d(9, 11, 3, padding=1))
    replaced.set_submodule("stem", nn.Conv2d(1, 8, 3, padding=1))
    with pytest.raises(RuntimeError, match="size"):
        replaced(torch.randn(1, 1, 16, 16))


class _TimeProjection(nn.Module):
    """diffusers' Timesteps: its assert on the input's rank makes it an opaque leaf when traced without a shape."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        assert len(t.shape) == 1, "Timesteps should be a 1d-array"
        e = t[:, None] * torch.exp(-torch.arange(8) / 8.0)[None]
        return torch.cat([e.sin(), e.cos()], dim=-1)


class _ImageAndTimestep(nn.Module):
    """diffusers' UNet2DModel in small: an image and a timestep."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in, self.time_proj, self.time_mlp = nn.Conv2d(3, 8, 3, padding=1), _TimeProjection(), nn.Linear(16, 8)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.conv_in(sample) + self.time_mlp(self.time_proj(timestep))[:, :, None, None]


def test_only_the_image_input_is_adapted_beside_a_timestep() -> None:
    """The timestep's embedding layer was folded too (16 features to 1), and the edited UNet failed."""
    model = _ImageAndTimestep().double().eval()
    result = adapt_input_channels(model, 1)
    assert [(c.name, c.shape_after) for c in result.changes] == [("conv_in.weight", (8, 1, 3, 3))]
    grey, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3.0, 7.0], dtype=torch.float64)
    torch.testing.assert_close(result.model(grey, t), model(grey.expand(2, 3, 8, 8), t))


def test_a_number_per_sample_is_given_as_an_empty_shape() -> None:
    """``{"timestep": ()}``: one timestep per sample, a tensor of shape (batch,) (was "the shape is empty")."""
    model = _ImageAndTimestep().eval()
    report = paramcount(model, {"sample": (3, 8, 8), "timestep": ()}, batch=2)
    assert report.input_shapes == {"sample": (2, 3, 8, 8), "timestep": (2,)}
    assert report.output_shape == tuple(model(torch.randn(2, 3, 8, 8), torch.tensor([1.0, 2.0])).shape)
    assert report.opaque == {} and report.invalid == []
    with pytest.raises(InputError, match="the shape is empty"):  # a whole input as () stays a mistake
        paramcount(nn.Linear(2, 2), ())


def test_input_feeding_two_convs() -> None:
    class Stem(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(torch.relu(x))

    model = Stem().double().eval()
    assert input_layers(model) == ["a", "b"]
    result = adapt_input_channels(model, 1)
    assert [c.name for c in result.changes] == ["a.weight", "b.weight"]
    g = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(result.model(g), model(g.expand(2, 3, 6, 6)))


@pytest.mark.parametrize("channels", [2, 4, 5])
def test_spread_is_exact_on_grey_replicated_to_c(channels: int) -> None:
    model = torchvision.models.resnet18().double().eval()
    adapted = adapt_input_channels(model, channels, "spread").model
    g = torch.randn(1, 1, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(adapted(g.expand(1, channels, 64, 64)), model(g.expand(1, 3, 64, 64)))


def test_zero_extra_keeps_rgb_behaviour_for_any_depth_channel() -> None:
    model = torchvision.models.resnet18().double().eval()
    rgbd = adapt_input_channels(model, 4, "zero_extra").model
    rgb = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    depth = 100 * torch.randn(1, 1, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(rgbd(torch.cat([rgb, depth], 1)), model(rgb))
    assert paramcount(rgbd, (4, 64, 64)).invalid == []


def test_repeat_then_random_modes() -> None:
    model = CifarNet()
    repeated = adapt_input_channels(model, 6, "repeat")
    assert repeated.changes[0].status == ParamChange.FOLDED
    torch.testing.assert_close(repeated.model.conv1.weight, model.conv1.weight.repeat(1, 2, 1, 1) * 0.5)
    rand = adapt_input_channels(model, 2, mode="random")
    assert rand.changes[0].status == ParamChange.REINITIALISED
    assert rand.changes[0].init == "kaiming_uniform_(a=√5): U(-0.1414, 0.1414)"  # 1/sqrt(2*5*5)
    assert rand.model.conv1.weight.shape == (6, 2, 5, 5)
    rep = check_surgery(model, rand.model, (2, 32, 32))
    assert rep.status_of("conv1.weight") == ParamChange.REINITIALISED


def test_a_frozen_stem_drawn_anew_is_trainable_and_said_so() -> None:
    model = CifarNet().requires_grad_(False)  # a frozen backbone, as when only the head is fine-tuned
    folded = adapt_input_channels(model, 1).model
    assert not folded.conv1.weight.requires_grad  # pretrained weights folded: frozen as they were
    rand = adapt_input_channels(model, 13, "random")
    assert rand.model.conv1.weight.requires_grad and rand.model.conv1.bias.requires_grad
    rand.model(torch.randn(2, 13, 32, 32)).sum().backward()
    assert rand.model.conv1.weight.grad is not None
    assert all("made trainable: conv1 was frozen" in c.message for c in rand.changes if c.name.startswith("conv1."))
    assert not any(p.requires_grad for p in model.parameters())  # the original stays frozen


@pytest.mark.parametrize(("channels", "mode"), [(1, "sum"), (2, "spread"), (4, "zero_extra"), (5, "repeat")])
def test_an_adapted_model_fine_tuned_since_is_updated_not_lost(channels: int, mode: str) -> None:
    torch.manual_seed(0)
    model = CifarNet()
    edited = append_head(adapt_input_channels(model, channels, mode).model, nn.Linear(10, 4)).model
    sgd = torch.optim.SGD(edited.parameters(), lr=1e-3)
    for _ in range(3):  # a few steps of fine-tuning, as after any surgery
        sgd.zero_grad()
        edited(torch.randn(4, channels, 32, 32)).pow(2).mean().backward()
        sgd.step()
    rep = check_surgery(model, edited, (channels, 32, 32))
    stem = next(p for p in rep.params if p.name == "conv1.weight")
    assert stem.status == ParamChange.UPDATED and stem.message.startswith(f"{mode} fold of the original, then updated")
    moved = next(p for p in rep.params if p.name == "fc3.0.weight")
    assert (moved.status, moved.old_name) == (ParamChange.UPDATED, "fc3.weight")
    assert not rep.by_status(ParamChange.REMOVED) and not rep.by_status(ParamChange.REINITIALISED)
    assert [p.name for p in rep.by_status(ParamChange.NEW)] == ["fc3.1.weight", "fc3.1.bias"]


def _fine_tuned(model: nn.Module, steps: int = 3) -> nn.Module:
    """``model`` after a few SGD steps of its head ``fc`` on random images and labels, as after any surgery."""
    sgd = torch.optim.SGD(model.fc.parameters(), lr=0.01)  # the body as it was: a quick check
    model.train()
    for _ in range(steps):
        sgd.zero_grad()
        out = model(torch.randn(4, 3, 64, 64))
        nn.functional.cross_entropy(out, torch.randint(0, out.shape[1], (4,))).backward()
        sgd.step()
    return model.eval()


@pytest.mark.slow  # resnet18 trained three times, three check_surgery: `make test` runs it, `make check` skips it
def test_a_kept_head_fine_tuned_since_is_resized_and_updated_a_fresh_one_not() -> None:
    """replace_head(model, 10, keep={0: 1, 3: 7}), then a few SGD steps: the head was "reinitialised: pretrained
    weights lost" (its rows no longer equal any pretrained row).  Each row near one pretrained row by the test
    `updated` uses is now kept, then updated; a fresh head of the same width, trained the same, stays lost."""
    torch.manual_seed(0)
    pretrained = torchvision.models.resnet18(weights=None).eval()
    edited = _fine_tuned(replace_head(pretrained, 10, keep={0: 1, 3: 7}).model)
    with torch.no_grad():
        moved = [float((edited.fc.weight[i] - pretrained.fc.weight[j]).norm()) for i, j in ((0, 1), (3, 7))]
        assert all(0 < m < 0.5 * float(pretrained.fc.weight[1].norm()) for m in moved)  # trained, and still close
    rep = {p.name: p for p in check_surgery(pretrained, edited, (3, 64, 64)).params}
    for name in ("fc.weight", "fc.bias"):
        assert rep[name].status == ParamChange.RESIZED, rep[name]
        pattern = r"2 of 1000 pretrained rows kept, then updated \(changed by [\d.]+% of their norm\): 0←1, 3←7"
        assert re.match(pattern, rep[name].message) and rep[name].message.endswith("; 8 new"), rep[name].message
    for width in (10, 1000):  # the same width, drawn anew: as wide as the kept head, and as the pretrained one
        fresh = copy.deepcopy(pretrained)
        fresh.fc = nn.Linear(512, width)
        rep = {p.name: p for p in check_surgery(pretrained, _fine_tuned(fresh), (3, 64, 64)).params}
        for name in ("fc.weight", "fc.bias"):
            assert rep[name].status == ParamChange.REINITIALISED, rep[name]
            assert "pretrained weights lost" in rep[name].message and "kept" not in rep[name].message


def test_depthwise_first_conv_is_made_dense_and_exact() -> None:
    model = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3), nn.ReLU()).double()
    result = adapt_input_channels(model, 1)
    assert result.model[0].groups == 1 and "made dense" in result.changes[0].message
    g = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(result.model(g), model(g.expand(1, 3, 8, 8)))


def test_normalisation_fold_exact_without_padding_and_says_so_with() -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    plain = nn.Sequential(nn.Conv2d(3, 4, 3)).double()
    r = fold_input_normalization(plain, mean, std)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    m, s = (
        torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1),
        torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1),
    )
    torch.testing.assert_close(r.model(x), plain((x - m) / s))
    assert r.changes[0].message.endswith("exact")
    padded = fold_input_normalization(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), mean, std)
    assert "NOT exact at the border" in padded.changes[0].message


class _ChecksItsWidth(nn.Module):
    """Refuses any width but 100 in Python on the input's shape: fx cannot trace it without an input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 100:
            raise ValueError(f"wants 100 wide, got {x.shape[-1]}")
        return self.conv(x)


def test_normalisation_fold_of_a_model_traced_only_with_an_input_asks_for_it_in_its_own_call() -> None:
    """Found by a probe: a model that traces only for a known input shape was told to pass one to
    ``input_layers(model, input=...)``, a call that does not fold anything, because fold_input_normalization took no
    input. It takes one now, as adapt_input_channels does, and the error names it; given, the fold is exact."""
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    model = _ChecksItsWidth().double()
    with pytest.raises(
        SurgeryError, match=re.escape(f"fold_input_normalization(model, {mean}, {std}, input=(3, H, W))")
    ):
        fold_input_normalization(model, mean, std)
    r = fold_input_normalization(model, mean, std, input=(3, 100, 100))
    assert [c.name for c in r.changes] == ["conv.weight", "conv.bias"]
    x = torch.rand(1, 3, 100, 100, dtype=torch.float64)
    m, s = (
        torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1),
        torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1),
    )
    torch.testing.assert_close(r.model(x), model((x - m) / s))


def test_original_is_never_changed_by_non_inplace_calls() -> None:
    model = CifarNet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    adapt_input_channels(model, 1)
    replace_head(model, 3, keep={0: 1})
    append_head(model, nn.Linear(10, 2))
    fold_input_normalization(model, [0.5] * 3, [0.2] * 3)
    assert model.conv1.in_channels == 3 and model.fc3.out_features == 10
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    same = adapt_input_channels(model, 1, inplace=True).model
    assert same is model and model.conv1.in_channels == 1


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: adapt_input_channels(CifarNet(), 0), InputError, r"channels=0 .* positive int"),
        (lambda: adapt_input_channels(CifarNet(), -2), InputError, r"channels=-2"),
        (lambda: adapt_input_channels(CifarNet(), 4, "sum"), SurgeryError, r"conv1 \(Conv2d\): .*sum.*spread"),
        (lambda: adapt_input_channels(CifarNet(), 2, "zero_extra"), SurgeryError, r"conv1 \(Conv2d\): .*zero_extra"),
        (lambda: adapt_input_channels(CifarNet(), 1, "average"), InputError, r"mode='average' — use one of 'sum'"),
        (
            lambda: adapt_input_channels(nn.Sequential(nn.ReLU(), nn.Flatten()), 1),
            SurgeryError,
            r"no layer with weights reads the input",
        ),
        (
            lambda: adapt_input_channels(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)), 1),
            SurgeryError,
            r"0 \(BatchNorm2d\) reads the input but is not a Conv or Linear",
        ),
        (  # the convolution's weight reaches it through a product: the graph names the call by its module
            lambda: adapt_input_channels(nn.Sequential(HandWrittenConv()), 1),
            SurgeryError,
            r"0 \(HandWrittenConv\) reads the input but is not a Conv or Linear",
        ),
        (
            lambda: adapt_input_channels(nn.Sequential(nn.Conv2d(3, 12, 3, groups=3)), 6),
            SurgeryError,
            r"0 \(Conv2d\): built for in_channels=3, groups=3, mode='sum' folds it to 1 channel, or 3 \(one per "
            r"group\), got channels=6 — use mode='spread'",
        ),
        (lambda: replace_head(CifarNet(), 5, keep={7: 0}), InputError, r"keep=\{7: 0\} is out of range"),
        (lambda: append_head(CifarNet()), InputError, r"at least one module"),
    ],
)
def test_bad_requests(call: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()  # type: ignore[operator]


@pytest.mark.parametrize("channels", [3, 4, 8])
def test_a_sum_fold_refused_for_a_grouped_transposed_stem_names_its_channels_and_counts_that_fold(
    channels: int,
) -> None:
    """Found by a probe: ConvTranspose2d(6, 8, 3, groups=2) asked for 4 channels was refused with 'sum folds to 1
    channel, got channels=2': the per-group count, neither the layer's 6 nor the 4 asked for."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.ConvTranspose2d(6, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 4, 3))

    with pytest.raises(RuntimeError, match=r"expected input.* to have 6 channels"):  # what the layer takes
        build()(torch.zeros(1, channels, 8, 8))
    message = (
        "0 (ConvTranspose2d): built for in_channels=6, groups=2, mode='sum' folds it to 1 channel, or 2 (one per "
        f"group), got channels={channels} — use mode='spread' or mode='repeat' to fold it to {channels}"
    )
    with pytest.raises(SurgeryError, match=re.escape(message)):
        adapt_input_channels(build(), channels)
    for model in (
        adapt_input_channels(build(), channels, mode="spread").model,
        adapt_input_channels(build(), channels, mode="repeat").model,
        *(adapt_input_channels(build(), c).model for c in (1, 2)),
    ):
        c = model[0].in_channels
        assert model(torch.zeros(1, c, 8, 8)).shape == build()(torch.zeros(1, 6, 8, 8)).shape
    assert [adapt_input_channels(build(), c).model[0].in_channels for c in (1, 2)] == [1, 2]


def test_two_input_model_asks_which_input_to_adapt_as_with_input_given() -> None:
    """It folded both stems (the 1-channel mask's "folded" to 1, unchanged): with input= it asked which, and at 4
    channels the mask's stem was widened too (test_a_model_reading_an_image_and_a_mask_asks_which_to_adapt)."""
    with pytest.raises(SurgeryError, match=r"takes 2 images \(image, mask\)"):
        adapt_input_channels(TwoInputs(), 1)
    result = adapt_input_channels(TwoInputs(), 1, layer="image")
    assert [c.name for c in result.changes] == ["image.weight"]


@pytest.mark.parametrize(
    ("layer", "channels"),
    [
        (nn.Conv2d(3, 12, 3, groups=3), 6),  # groups divide the channels: kept, each group folded
        (nn.Conv2d(3, 12, 3, groups=3), 1),  # they do not: made dense
        (nn.Conv2d(6, 4, 3, groups=2), 4),
        (nn.Conv2d(6, 4, 3, groups=2), 3),
        (nn.ConvTranspose2d(3, 4, 3, stride=2), 1),
        (nn.ConvTranspose2d(4, 6, 3, groups=2), 2),
    ],
    ids=["depthwise-6", "depthwise-1", "grouped-4", "grouped-3", "transposed-1", "transposed-grouped-2"],
)
def test_the_fix_a_report_names_runs_and_gives_its_count(layer: nn.Module, channels: int) -> None:
    """Report, message and surgery agree: the named fix runs as written and gives total_for_input."""
    model = nn.Sequential(layer, nn.ReLU())
    report = paramcount(model, (channels, 9, 9))
    (finding,) = report.findings
    call = finding.fix.removeprefix("fold it with ")
    assert call.startswith("adapt_input_channels(model, ")
    model.double()  # fold in float64, so the identity below is not float32 rounding
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    after = paramcount(edited, (channels, 9, 9))
    assert after.findings == () and after.output_shape == report.output_shape
    # the fold is exact on an input whose channels replicate the original input's (grey here);
    # 'sum' and 'spread' alike: the edited layer on grey at the new channel count
    grey = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(edited(grey.expand(2, channels, 9, 9)), model(grey.expand(2, layer.in_channels, 9, 9)))


@pytest.mark.parametrize(
    ("layer", "channels", "mode"),
    [
        (nn.ConvTranspose2d(3, 8, 3), 1, "sum"),  # input channels in dim 0 of its weight
        (nn.ConvTranspose1d(3, 8, 3), 1, "spread"),
        (nn.ConvTranspose3d(3, 8, 3), 1, "repeat"),
        (nn.ConvTranspose2d(3, 8, 3, stride=2), 6, "repeat"),
        (nn.ConvTranspose2d(3, 8, 3), 5, "zero_extra"),
        (nn.ConvTranspose2d(6, 8, 3, groups=2), 4, "spread"),  # groups kept: each group folded
        (nn.ConvTranspose2d(6, 8, 3, groups=2), 1, "sum"),  # made dense
        (nn.Conv2d(6, 8, 3, groups=2), 3, "repeat"),  # made dense (repeat to 3 of 6: exact on no input)
    ],
    ids=["transposed", "transposed-1d", "transposed-3d", "transposed-6", "transposed-5", "grouped", "dense", "conv"],
)
def test_check_surgery_calls_the_fold_of_any_conv_folded(layer: nn.Module, channels: int, mode: str) -> None:
    """A transposed conv's weight is (in, out / groups, *kernel): check_surgery took its fold for weights drawn
    again, as it did a grouped conv's folded dense; both are folded, as a plain Conv2d's fold is, and exact."""
    torch.manual_seed(0)
    model = nn.Sequential(layer, nn.ReLU()).double()
    edited = adapt_input_channels(model, channels, mode=mode).model
    spatial = (5,) * (layer.weight.dim() - 2)
    report = check_surgery(model, edited, (channels, *spatial))
    assert report.status_of("0.weight") == ParamChange.FOLDED
    exact = mode != "repeat" or channels % layer.in_channels == 0 or channels == 1
    inexact = ": repeat fold of the original, not exact"  # repeat to 3 of 6 channels: exact on no input
    assert report.verdict == f"1 folded (0{'' if exact else inexact}), 0 new, 0 invalid"
    width = layer.in_channels
    grey = torch.randn(2, 1, *spatial, dtype=torch.float64)
    x = torch.randn(2, width, *spatial, dtype=torch.float64)
    if mode in ("sum", "spread") or channels == 1:  # the inputs each fold relates (repeat to 1 channel: the sum)
        before, after = grey.expand(2, width, *spatial), grey.expand(2, channels, *spatial)
    elif mode == "repeat":
        before, after = x, x.repeat(1, channels // width, *(1 for _ in spatial))
    else:
        before, after = x, torch.cat([x, torch.randn(2, channels - width, *spatial, dtype=x.dtype)], 1)
    if mode != "repeat" or channels % width == 0:
        torch.testing.assert_close(edited(after), model(before), rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # weights of the folded shape drawn again: not a fold
        edited[0].weight.normal_()
    assert check_surgery(model, edited, (channels, *spatial)).status_of("0.weight") == ParamChange.REINITIALISED


@pytest.mark.parametrize("weight_norm", [nn.utils.parametrizations.weight_norm, nn.utils.weight_norm])
def test_check_surgery_calls_the_fold_of_a_weight_normed_transposed_conv_folded(weight_norm: Any) -> None:
    """weight_norm's weight of a transposed conv, folded in dim 0 and normed again, is folded, as a Conv2d's is."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the legacy weight_norm is deprecated
        model = nn.Sequential(weight_norm(nn.ConvTranspose2d(3, 8, 3)), nn.ReLU()).double()
    edited = adapt_input_channels(model, 1).model
    report = check_surgery(model, edited, (1, 5, 5))
    assert {p.name: p.status for p in report.params if p.name != "0.bias"} == {
        n: ParamChange.FOLDED for n, _ in edited.named_parameters() if n != "0.bias"
    }
    grey = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited(grey), model(grey.expand(2, 3, 5, 5)), rtol=1e-12, atol=1e-12)


def test_grouped_conv_report_message_and_surgery_agree() -> None:
    """The case of issue 9: nn.Conv2d(3, 12, 3, groups=3) fed 6 channels."""
    model = nn.Sequential(nn.Conv2d(3, 12, 3, groups=3))
    report = paramcount(model, (6, 8, 8))
    assert report.total_for_input == 12 * 2 * 9 + 12 == 228
    assert report.findings[0].fix == "fold it with adapt_input_channels(model, 6, mode='spread')"
    edited = adapt_input_channels(model, 6, mode="spread").model
    assert sum(p.numel() for p in edited.parameters()) == 228
    assert edited[0].groups == 3


class _NormalisedRGB(nn.Module):
    """Subtracts one mean per RGB channel before its stem (torchvision's detection transform): a grey image
    broadcasts to three channels, so the model takes it as it is, and a folded stem could not run."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1))
        self.stem = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x - self.mean)


class _NormalisedInItsDtype(_NormalisedRGB):
    """The mean converted to the input's dtype first (transformers' Swin2SR): the input meets it through a ``.to``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x - self.mean.to(dtype=x.dtype))


@pytest.mark.parametrize("given", [None, (3, 16, 16)])
@pytest.mark.parametrize("kind", [_NormalisedRGB, _NormalisedInItsDtype])
def test_a_fold_the_model_could_not_run_is_refused_before_any_edit(
    given: tuple[int, ...] | None, kind: type[nn.Module]
) -> None:
    model = kind()
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 4, 14, 14)  # grey as it is
    with pytest.raises(
        SurgeryError,
        # the constants named: found by a probe of torchvision's detectors (transform.image_mean and image_std)
        match=r"takes a 1-channel input as it is: what comes before stem makes 3 channels of it \(mean, one value per "
        r"channel, broadcast over it\)",
    ):
        adapt_input_channels(model, 1, input=given, inplace=True)
    assert model.stem.in_channels == 3 and model.stem.weight.shape == (4, 3, 3, 3)  # untouched
    with pytest.raises(SurgeryError, match=r"takes a 1-channel input as it is"):  # asked by name: tried first too
        adapt_input_channels(model, 1, layer="stem")


@pytest.mark.slow  # a whole detector, edited and run twice in float64
def test_a_detection_model_taking_rgb_and_depth_gets_a_mean_and_std_per_channel() -> None:
    """Found by a probe: a torchvision detection model normalises inside (``transform.image_mean``, 3 values), so
    a 4-channel fold was refused with the advice to adapt ``model.backbone`` alone ("what comes after it still
    expects the old channels"), which gives back no detector.  The means and stds now follow the channels, each in
    a ``setting`` row, and the zero_extra fold is exact on RGB with any depth channel."""
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0
    )
    model = model.eval().double()
    result = adapt_input_channels(model, 4, "zero_extra")
    rows = {row.name: row for row in result.changes if row.status == ParamChange.SETTING}
    assert set(rows) == {"transform.image_mean", "transform.image_std"}
    assert result.model.transform.image_mean == [0.485, 0.456, 0.406, 0.485]
    assert model.transform.image_mean == [0.485, 0.456, 0.406]  # the original is untouched
    rgbd = torch.rand(4, 160, 160, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = result.model([rgbd])[0]
        want = model([rgbd[:3]])[0]
    assert got["boxes"].shape == want["boxes"].shape == (100, 4)
    torch.testing.assert_close(got["boxes"], want["boxes"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got["scores"], want["scores"], rtol=1e-10, atol=1e-12)


class _Denoiser(nn.Module):
    """A diffusion UNet's inputs: a latent image, a float timestep (through a linear embedding), text states (read
    by linear layers) and, with ``cond``, a ControlNet's conditioning image."""

    def __init__(self, cond: bool = False) -> None:
        super().__init__()
        self.conv_in, self.time, self.text = nn.Conv2d(4, 8, 3, padding=1), nn.Linear(1, 8), nn.Linear(32, 8)
        self.cond_in = nn.Conv2d(3, 8, 3, padding=1) if cond else None

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.conv_in(sample) + self.time(timestep[:, None])[:, :, None, None]
        x = x + self.text(states).mean(1)[:, :, None, None]
        return x + self.cond_in(cond) if self.cond_in is not None and cond is not None else x


def test_only_the_image_of_several_inputs_is_adapted() -> None:
    """The float timestep and the text states were followed as the image too: linear layers reading them were
    folded to one feature and the edited model did not run (found on diffusers' UNet2DModel)."""
    model = _Denoiser()
    spec = {"sample": (4, 8, 8), "timestep": (), "states": (7, 32)}
    result = adapt_input_channels(model, 1, input=spec)
    assert [c.name for c in result.changes] == ["conv_in.weight"]
    with torch.no_grad():
        out = result.model(torch.randn(1, 1, 8, 8), torch.tensor([3.0]), torch.randn(1, 7, 32))
    assert out.shape == (1, 8, 8, 8) and model.conv_in.in_channels == 4 and model.time.in_features == 1


def test_two_images_ask_which_one_is_adapted() -> None:
    """A ControlNet's latent and conditioning image: the latent's conv was folded, which nobody asked for."""
    model = _Denoiser(cond=True)
    spec = {"sample": (4, 8, 8), "timestep": (), "states": (7, 32), "cond": (3, 8, 8)}
    with pytest.raises(
        SurgeryError,
        match="_Denoiser takes 2 images \\(sample, cond\\): say which one gets the new channel count by naming the "
        "layers that read it — sample: layer='conv_in'; cond: layer='cond_in'",
    ):
        adapt_input_channels(model, 1, input=spec)
    result = adapt_input_channels(model, 1, layer="cond_in")  # the fix, as written
    with torch.no_grad():
        assert result.model(
            torch.randn(1, 4, 8, 8), torch.tensor([3.0]), torch.randn(1, 7, 32), torch.randn(1, 1, 8, 8)
        ).shape == (1, 8, 8, 8)


def test_a_layer_named_in_a_model_whose_config_describes_its_image_is_adapted() -> None:
    """The input a transformers config describes is a mapping: trying the edit on it raised TypeError (unhashable)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=32, patch_size=8
    )
    model = transformers.ViTForImageClassification(config).eval()
    result = adapt_input_channels(model, 1, layer="vit.embeddings.patch_embeddings.projection")
    assert result.changes[0].name == "vit.embeddings.patch_embeddings.projection.weight"
    assert result.model(torch.zeros(1, 1, 32, 32)).logits.shape == (1, 2)


def _pruned(model: nn.Module) -> None:
    prune.l1_unstructured(model[0], "weight", amount=0.5)


def _legacy_weight_norm(model: nn.Module) -> None:
    with pytest.warns(FutureWarning):
        nn.utils.weight_norm(model[0])


def _parametrized_weight_norm(model: nn.Module) -> None:
    nn.utils.parametrizations.weight_norm(model[0])


@pytest.mark.parametrize("reparametrize", [_pruned, _legacy_weight_norm, _parametrized_weight_norm])
@pytest.mark.parametrize("inplace", [False, True])
def test_a_stem_whose_weight_is_computed_is_folded_and_checked_as_folded(
    reparametrize: Callable[[nn.Module], None], inplace: bool
) -> None:
    """Found by a probe: deep copies of a pruned model (or one with the legacy weight_norm) raised torch's raw
    RuntimeError; inplace=True folded the pruned conv next to weight_orig and left a model that never ran; and
    check_surgery called a parametrized stem's exact fold 'new' (its weight had another name before)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).double().eval()
    model(torch.randn(1, 3, 8, 8, dtype=torch.float64))  # the lazy head takes its size
    reparametrize(model)
    original = model_copy(model) if inplace else model  # copy.deepcopy raises on a weight autograd made
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = adapt_input_channels(model, 1, inplace=inplace)
    assert (result.model is model) == inplace
    if not inplace:
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    grey = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        difference = (result.model(grey) - original(grey.repeat(1, 3, 1, 1))).abs().max()
    assert float(difference) < 1e-12
    names = dict(result.model[0].named_parameters()).keys()
    if reparametrize is _pruned:
        (change,) = result.changes
        assert change.name == "0.weight" and change.status == ParamChange.FOLDED and names == {"weight", "bias"}
    else:  # weight_norm is kept: its v and g (see test_weight_norm_is_kept_on_the_fold_the_report_counts)
        assert names == dict(original[0].named_parameters()).keys() and len(result.changes) == 2
    checked = check_surgery(original, result.model, (1, 8, 8))
    assert all(checked.status_of(f"0.{n}") == ParamChange.FOLDED for n in names if n != "bias")
    assert checked.by_status(ParamChange.NEW) == []


@pytest.mark.parametrize("reparametrize", [_legacy_weight_norm, _parametrized_weight_norm])
@pytest.mark.parametrize("dim", [0, 1])
def test_weight_norm_is_kept_on_the_fold_the_report_counts(reparametrize: Callable[..., None], dim: int) -> None:
    """Found by probe 22: paramcount of a weight_norm'ed stem given a grey input promised total_for_input=88
    (g kept), but its fix adapt_input_channels(model, 1) removed weight_norm and gave 80 parameters.  The fold
    now keeps weight_norm (v folded, g its norm), exact, with the count the report promises."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if reparametrize is _legacy_weight_norm:
            nn.utils.weight_norm(model[0], dim=dim)
        else:
            nn.utils.parametrizations.weight_norm(model[0], dim=dim)
    with torch.no_grad():  # a trained g: not the norm of v
        for p in model[0].parameters():
            p.mul_(torch.rand_like(p) + 0.5)
    names = set(dict(model[0].named_parameters()))
    promised = paramcount(model, (1, 8, 8)).total_for_input
    result = adapt_input_channels(model, 1)  # the fix the report names
    edited = result.model
    assert sum(p.numel() for p in edited.parameters()) == promised
    assert set(dict(edited[0].named_parameters())) == names  # weight_norm kept, as the user built it
    grey = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(edited(grey), model(grey.repeat(1, 3, 1, 1)), rtol=0, atol=1e-12)
    assert {c.name for c in result.changes} == {f"0.{n}" for n in names if n != "bias"}


def test_memory_plan_of_a_pruned_model_matches_a_real_step() -> None:
    from models import measure_training_step

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 4))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    plan = memory_plan(model, (3, 16, 16), batch=2, device="cpu")
    real = measure_training_step(model, torch.randn(2, 3, 16, 16))
    assert plan.activations == real.saved and plan.gradients == real.gradients


class _ImageAndMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head((self.a(image) + self.b(mask)).mean((2, 3)))


def test_a_model_reading_an_image_and_a_mask_asks_which_to_adapt() -> None:
    """Found by a probe: without input= both stems were widened, and the edited model ran on no input."""
    model = _ImageAndMask()
    with pytest.raises(SurgeryError, match=r"takes 2 images \(image, mask\): .* image: layer='a'; mask: layer='b'"):
        adapt_input_channels(model, 4, "zero_extra")
    edited = adapt_input_channels(model, 4, "zero_extra", layer="a").model  # the fix, as written
    assert edited(torch.randn(1, 4, 8, 8), torch.randn(1, 1, 8, 8)).shape == (1, 4)


class _Waveform(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.head = nn.Conv1d(1, 8, 9, 4), nn.Linear(8, 3)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(wav.unsqueeze(1)).mean(-1))


def test_a_stem_whose_channel_dim_the_forward_makes_is_not_adapted() -> None:
    """Found by a probe: a (N, T) waveform unsqueezed to one channel had its stem widened to 2, and the edited
    model ran on no input."""
    with pytest.raises(SurgeryError, match=r"stem \(Conv1d\) reads the input only after .unsqueeze\(\)") as caught:
        adapt_input_channels(_Waveform(), 2, "spread")
    assert "input=(3, 224, 224)" not in str(caught.value)


class _FunctionalStem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w, self.head = nn.Parameter(torch.randn(8, 3, 3, 3)), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.nn.functional.conv2d(x, self.w, padding=1).mean((2, 3)))


def test_a_top_level_functional_stem_is_named_and_not_sent_to_input() -> None:
    """Found by a probe: the error named an empty layer and asked for input=, which gave the same error."""
    for given in ({}, {"input": (3, 8, 8)}):
        with pytest.raises(SurgeryError, match=r"^_FunctionalStem's own forward reads the input") as caught:
            adapt_input_channels(_FunctionalStem(), 1, **given)  # type: ignore[arg-type]
        assert "input=" not in str(caught.value)


# --------------------------------------------------------------------------- a probe of hand-written models
# Each of these was adapted without a word into a model that did not run (probe 13).


class _EinopsPatches(nn.Module):
    """A ViT stem as users write it with einops: patches rearranged, then a Linear over (p1 p2 c)."""

    def __init__(self) -> None:
        super().__init__()
        from einops.layers.torch import Rearrange

        patches = Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=4, p2=4)
        self.to_patch = nn.Sequential(patches, nn.Linear(48, 16))
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.to_patch(x).mean(1))


class _ImageAndTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(10, 16), nn.ReLU())
        self.fc = nn.Linear(24, 2)

    def forward(self, image: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.cnn(image), self.mlp(table)], 1))


class _MeanInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mean, self.std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        self.stem = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return self.stem((x - mean) / std)


class _ChannelsLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, H, W, C)
        return self.stem(x.permute(0, 3, 1, 2))


class _Siamese(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.backbone(a) - self.backbone(b)).abs()


def test_an_einops_patch_stem_read_by_a_linear_is_folded_patch_pixel_by_patch_pixel() -> None:
    """A Linear over ``(p1 p2 c)`` patches was refused (its 48 features are 16 pixels × 3 colours); each pixel's
    colours are folded now, and the edited model on grey patches gives the original's on grey as RGB."""
    pytest.importorskip("einops")
    torch.manual_seed(0)
    model = _EinopsPatches().double().eval()
    result = adapt_input_channels(model, 1)
    assert [(c.name, c.shape_after) for c in result.changes] == [("to_patch.1.weight", (16, 16))]
    grey = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(grey), model(grey.expand(2, 3, 16, 16)), rtol=1e-12, atol=1e-12)


def test_beside_an_image_a_table_of_features_read_by_linear_layers_keeps_its_width() -> None:
    model = _ImageAndTable().eval()
    result = adapt_input_channels(model, 1)
    assert [c.name for c in result.changes] == ["cnn.0.weight"]
    grey, table = torch.randn(2, 1, 12, 12, dtype=torch.float64), torch.randn(2, 10, dtype=torch.float64)
    expected = copy.deepcopy(model).double()(grey.expand(2, 3, 12, 12), table)
    torch.testing.assert_close(result.model.double()(grey, table), expected)


def test_a_mean_per_channel_made_in_forward_is_seen_before_the_stem_is_folded() -> None:
    model = _MeanInForward().eval()
    model(torch.randn(1, 1, 16, 16))  # it takes grey images as it is: the mean broadcasts them to 3 channels
    with pytest.raises(SurgeryError, match="the model takes a 1-channel input as it is"):
        adapt_input_channels(model, 1)


def test_the_check_of_the_edit_finds_the_channels_of_a_channels_last_input() -> None:
    model = _ChannelsLast().eval()
    result = adapt_input_channels(model, 1, input=(16, 16, 3))
    grey = torch.randn(1, 16, 16, 1, dtype=torch.float64)
    expected = copy.deepcopy(model).double()(grey.expand(1, 16, 16, 3))
    torch.testing.assert_close(result.model.double()(grey), expected)


def test_inputs_that_one_backbone_reads_need_no_choice() -> None:
    model = _Siamese().eval()
    result = adapt_input_channels(model, 1)
    a, b = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    expected = copy.deepcopy(model).double()(a.expand(2, 3, 8, 8), b.expand(2, 3, 8, 8))
    torch.testing.assert_close(result.model.double()(a, b), expected)


def test_check_surgery_knows_a_shared_weights_other_name() -> None:
    """Found by a probe: the tied name of a shared weight (head.weight is embed.weight) was missing from the
    original's names, so an edit that unties it or replaces the head called it *new*."""
    model = TiedLM().eval()
    untied = copy.deepcopy(model)
    untied.head.weight = nn.Parameter(untied.head.weight.detach().clone())  # the same values, no longer shared
    report = check_surgery(model, untied, {"ids": TypedShape((5,), "long")})
    (head,) = [p for p in report.params if p.name == "head.weight"]
    assert head.status == ParamChange.KEPT and head.message == "was shared with embed.weight: no longer"
    assert "new" not in {str(p.status) for p in report.params}

    result = replace_head(model, 10, input={"ids": TypedShape((5,), "long")})
    checked = check_surgery(model, result.model, {"ids": TypedShape((5,), "long")})
    assert {p.name: p.status for p in checked.params if p.status != ParamChange.KEPT} == {
        c.name: c.status for c in result.changes
    }
    assert check_surgery(model, copy.deepcopy(model), {"ids": TypedShape((5,), "long")}).params[-1].status == (
        ParamChange.KEPT
    )


def test_a_holders_in_features_guarding_the_channels_is_updated() -> None:
    """Found by a probe: kornia's DISK U-Net checks the input against its own ``in_features``."""

    class Guarded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.in_features = 3
            self.stem = nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] != self.in_features:
                raise ValueError(f"Expected {self.in_features} feature channels in input, got {x.shape[1]}")
            return self.stem(x)

    result = adapt_input_channels(Guarded().eval(), 1)
    settings = [(c.name, c.message) for c in result.changes if c.status == ParamChange.SETTING]
    assert settings == [("in_features", "3 → 1")]
    assert result.model(torch.randn(1, 1, 8, 8)).shape == (1, 8, 6, 6)


def test_folding_a_normalisation_into_a_model_that_normalises_in_forward_is_refused() -> None:
    """Found by a probe: the model's own ``x - self.mean`` and the folded one would both apply."""

    class Normalises(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.stem = nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.stem(x - self.mean)

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    with pytest.raises(SurgeryError, match=r"Normalises: the input meets a tensor of the model's own before stem"):
        fold_input_normalization(Normalises(), mean, std)
    assert fold_input_normalization(Normalises(), mean, std, layer="stem").changes[0].status == ParamChange.FOLDED


def test_a_linear_named_with_layer_is_tried_before_it_is_folded() -> None:
    """Found by a probe: ``layer="fc"`` of a resnet18 was folded 512 → 1 without a word (only convolutions were
    tried), and the edited model ran on no input."""
    with pytest.raises(SurgeryError, match=r"the layers named do not read the input's channels as they are \(fc"):
        adapt_input_channels(torchvision.models.resnet18().eval(), 1, layer="fc")


def test_a_stem_reading_the_input_after_indexing_with_none_is_not_folded() -> None:
    """Found by a probe: Wav2Vec2 reads ``input_values[:, None]``; its stem was folded 1 → 2 without ``input=``."""

    class Waveform(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 8, 10, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T)
            return self.conv(x[:, None])

    with pytest.raises(SurgeryError, match=r"conv \(Conv1d\) reads the input only after getitem\(\)"):
        adapt_input_channels(Waveform().eval(), 2, "spread")


def test_smps_hub_config_follows_the_input_channels() -> None:
    smp = pytest.importorskip("segmentation_models_pytorch")
    result = adapt_input_channels(smp.Unet("resnet18", encoder_weights=None).eval(), 1)
    assert result.model._hub_mixin_config["in_channels"] == 1


def test_repeat_to_one_channel_of_a_same_padded_conv_is_the_sum_fold() -> None:
    """Found by a probe: timm's Conv2dSame stem refused ``repeat`` to 1 channel (the check repeated 3 channels
    zero times); repeat to 1 is timm's sum."""
    from timm.layers import Conv2dSame

    model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.ReLU()).eval().double()
    result = adapt_input_channels(model, 1, "repeat")
    grey = torch.randn(1, 1, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(result.model(grey), model(grey.expand(1, 3, 9, 9)))


def test_check_surgery_of_a_cast_model_keeps_every_weight() -> None:
    """Found by a probe: ``copy.deepcopy(model).double()`` was reported as every layer re-initialised."""
    model = CifarNet().eval()
    for cast, dtype in ((torch.float64, "float64"), (torch.float16, "float16")):
        report = check_surgery(model, copy.deepcopy(model).to(cast), (3, 32, 32))
        assert {p.status for p in report.params} == {ParamChange.KEPT}
        assert report.params[0].message == f"cast float32 → {dtype}"


def test_check_surgery_names_a_new_tie_and_the_models_own_parameters() -> None:
    """Found by a probe: tying dec.weight to emb.weight listed dec.weight as removed; a parameter of the model itself
    was named '' in the verdict."""

    class Untied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.dec = nn.Embedding(20, 8), nn.Linear(8, 20, bias=False)
            self.scale = nn.Parameter(torch.ones(8))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.dec(self.emb(ids) * self.scale)

    model = Untied().eval()
    tied = copy.deepcopy(model)
    tied.dec.weight = tied.emb.weight
    with torch.no_grad():
        tied.scale.mul_(2)
    report = check_surgery(model, tied, {"ids": TypedShape((4,), "long")})
    (dec,) = [p for p in report.params if p.name == "dec.weight"]
    assert dec.status == ParamChange.REINITIALISED and dec.message.startswith("now shares emb.weight (tied)")
    assert "removed" not in report.verdict and "(scale: pretrained weights lost" in report.verdict


def test_the_random_mode_lists_the_bias_it_draws_again() -> None:
    result = adapt_input_channels(nn.Sequential(nn.Conv2d(3, 8, 3)).eval(), 1, "random")
    assert [(c.name, c.status) for c in result.changes] == [
        ("0.weight", ParamChange.REINITIALISED),
        ("0.bias", ParamChange.REINITIALISED),
    ]


def test_an_appended_layer_is_named_by_its_values() -> None:
    head = nn.Linear(10, 3)
    nn.init.zeros_(head.weight)
    result = append_head(nn.Sequential(nn.Linear(4, 10)).eval(), nn.ReLU(), head)
    (weight,) = [c for c in result.changes if c.name == "0.2.weight"]
    assert weight.init.endswith("observed: all zeros (zeros_)")


def test_weights_made_of_pretrained_values_are_kept_and_said_how() -> None:
    """Found by a probe: a scaled, pruned, copied or swapped pretrained weight was 're-initialised: pretrained
    weights lost', with PyTorch's default initialiser named."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))

    def check(edit: Callable[[nn.Module], None]) -> dict[str, tuple[ParamChange, str]]:
        edited = copy.deepcopy(model)
        with torch.no_grad():
            edit(edited)
        report = check_surgery(model, edited, (12,))
        return {p.name: (p.status, p.message) for p in report.params if p.message}

    assert check(lambda m: m[3].weight.mul_(0.5)) == {
        "3.weight": (ParamChange.UPDATED, "scaled: 0.5 × the pretrained values")
    }
    assert check(lambda m: m[5].weight.copy_(model[3].weight)) == {
        "5.weight": (ParamChange.KEPT, "copied from 3.weight")
    }

    def pruned(m: nn.Module) -> None:
        prune.l1_unstructured(m[3], "weight", amount=0.5)
        prune.remove(m[3], "weight")

    assert check(pruned) == {"3.weight": (ParamChange.UPDATED, "pruned: 50% of it zeroed, the rest pretrained")}
    assert check(lambda m: m[5].bias.zero_())["5.bias"][0] == ParamChange.REINITIALISED  # a constant: no one's


class _SavedCopy(nn.Module):
    """What peft's ModulesToSaveWrapper makes of a layer listed in ``modules_to_save``: the layer kept as
    ``original_module`` and a trainable copy per adapter under ``modules_to_save``, the copy used."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.original_module = layer
        self.modules_to_save = nn.ModuleDict({"default": copy.deepcopy(layer)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules_to_save["default"](x)


def _zero_bias_head() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 3))
    nn.init.zeros_(model[2].bias)  # zeros, as transformers initialises a classifier's bias
    nn.init.zeros_(model[4].bias)  # another zero bias of the same size: the values alone cannot tell whose
    return model.eval()


def test_a_zero_bias_copied_into_modules_to_save_is_kept_as_a_copy() -> None:
    """Found by a probe: peft's copy of a zero bias (modules_to_save.default.bias) was 'new', its weight 'kept'."""
    model = _zero_bias_head()
    edited = copy.deepcopy(model)
    edited[2] = _SavedCopy(edited[2])
    assert torch.equal(edited(torch.ones(1, 8)), model(torch.ones(1, 8)))
    changes = {p.name: (p.status, p.message, p.old_name) for p in check_surgery(model, edited, (8,)).params}
    assert changes["2.modules_to_save.default.bias"] == (ParamChange.KEPT, "copied from 2.bias", "2.bias")
    assert changes["2.modules_to_save.default.weight"][:2] == (ParamChange.KEPT, "copied from 2.weight")

    appended = copy.deepcopy(model)  # a new zero bias, no name saying whose copy it is: equal values say nothing
    appended.append(nn.Linear(3, 3))
    nn.init.zeros_(appended[5].bias)
    changes = {p.name: (p.status, p.old_name) for p in check_surgery(model, appended, (8,)).params}
    assert changes["5.bias"] == (ParamChange.NEW, "")


def test_peft_modules_to_save_copies_a_zero_bias_kept() -> None:
    peft = pytest.importorskip("peft")
    model = _zero_bias_head()
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(target_modules=["0"], modules_to_save=["2"]))
    report = check_surgery(model, wrapped, (8,))
    saved = [p for p in report.params if ".modules_to_save." in p.name]
    assert [(p.name, p.status, p.old_name) for p in saved] == [
        ("2.modules_to_save.default.weight", ParamChange.KEPT, "2.weight"),
        ("2.modules_to_save.default.bias", ParamChange.KEPT, "2.bias"),
    ]


@pytest.mark.parametrize(
    ("reparametrize", "g"),
    [(_legacy_weight_norm, "weight_g"), (_parametrized_weight_norm, "parametrizations.weight.original0")],
)
def test_weight_norm_of_a_pretrained_weight_is_kept_only_when_it_makes_that_weight(
    reparametrize: Callable[[nn.Module], None], g: str
) -> None:
    """Found by a probe: weight_norm applied to a pretrained layer had its g (the norm of each pretrained row)
    reported 'new', 'not a torch.nn default', though g·v/‖v‖ is the pretrained weight."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))
    edited = copy.deepcopy(model)
    reparametrize(edited)

    def weight(layer: nn.Module) -> torch.Tensor:  # what the layer computes with: read from a real forward
        with torch.no_grad():
            return (layer(torch.eye(12)) - layer.bias).T

    assert torch.allclose(weight(edited[0]), model[0].weight, atol=1e-6)
    report = check_surgery(model, edited, (12,))
    note = "re-parametrised by weight_norm: the weight it makes is the pretrained 0.weight"
    assert {p.name: (p.status, p.old_name, p.message) for p in report.params if p.old_name or p.message} == {
        f"0.{name}": (ParamChange.KEPT, "0.weight", note) for name, _ in edited[0].named_parameters() if name != "bias"
    }
    assert report.verdict == "0 new, 0 invalid"
    with torch.no_grad():
        edited[0].get_parameter(g).mul_(2)  # no forward since: the legacy hook's weight attribute is the old one
    report = check_surgery(model, edited, (12,))
    assert torch.allclose(weight(edited[0]), 2 * model[0].weight, atol=1e-6)  # what it computes with now
    assert report.status_of(f"0.{g}") == ParamChange.UPDATED  # made of the pretrained weight, not a new draw
    (row,) = [p for p in report.params if p.name == f"0.{g}"]
    assert row.message == f"{note}, scaled: 2 × the pretrained values"


def test_a_chosen_layer_is_tried_on_the_input_it_reads() -> None:
    """Found by a probe: ControlNet's cond stem named with layer= and input= was tried with the *sample* made one
    channel, and refused; without input= it folded exactly."""

    class Conditioned(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 8, 3), nn.Conv2d(3, 8, 3)

        def forward(self, sample: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return self.a(sample) + self.b(cond)

    model = Conditioned().eval().double()
    result = adapt_input_channels(model, 1, layer="b", input={"sample": (4, 8, 8), "cond": (3, 8, 8)})
    sample, grey = torch.randn(1, 4, 8, 8, dtype=torch.float64), torch.randn(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(result.model(sample, grey), model(sample, grey.expand(1, 3, 8, 8)))


class _Body(nn.Module):
    """A backbone whose forward looks at tensor values (fx cannot trace it: one opaque node), as timm's
    FeatureHookNet's body is with its feature hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x if x.sum() > 0 else -x
        return self.conv2(x)


class _HookedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Body()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.body(x).mean((2, 3))]


def test_a_model_whose_input_reaches_an_opaque_part_is_adapted_without_an_input() -> None:
    """timm's features_only=True, feature_cls='hook': the traced graph reaches only its opaque body, and
    adapt_input_channels asked for input=, though an image of its first convolution's channels runs it."""
    torch.manual_seed(0)
    model = _HookedNet().double().eval()
    result = adapt_input_channels(model, 1)
    assert [(c.name, c.shape_after) for c in result.changes] == [("body.conv1.weight", (8, 1, 3, 3))]
    grey = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(grey)[0], model(grey.expand(2, 3, 16, 16))[0])


class _GuardedBlur(nn.Module):
    """kornia's GaussianBlur2d: a type guard on its input (traced only with an input shape, so one opaque node in
    a trace without one), then a depthwise blur of as many channels as the input has."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a tensor, got {type(x)}")
        kernel = torch.full((x.shape[1], 1, 3, 3), 1 / 9, dtype=x.dtype)
        return nn.functional.conv2d(x, kernel, padding=1, groups=x.shape[1])


def test_a_stem_behind_a_weightless_part_traced_as_opaque_is_adapted_without_an_input() -> None:
    """A small CNN with kornia's GaussianBlur2d first: adapt_input_channels(model, 1) refused ("conv reads the input
    only after blur (analysed as one opaque layer)"), though an image of its first convolution's channels runs it
    and shows the blur hands the channels on."""
    torch.manual_seed(0)
    model = nn.Sequential(_GuardedBlur(), nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).double().eval()
    before = copy.deepcopy(model.state_dict())
    result = adapt_input_channels(model, 1)
    assert [(c.name, c.shape_after) for c in result.changes] == [("1.weight", (8, 1, 3, 3))]
    grey = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(grey), model(grey.expand(2, 3, 16, 16)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class _Handcrafted(nn.Module):
    """kornia's KeyNet: a check of the input's rank and channels (``len(x.shape)``: no trace without an input
    shape), then weightless features of the grey image (10 of them) that its first convolution reads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(10, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x.shape) != 4 or x.shape[1] != 1:
            raise ValueError("Invalid channel dimensions")
        features = torch.cat([x * k for k in range(1, 11)], dim=1)
        return self.conv(features)


@pytest.mark.parametrize("input", [None, (1, 16, 16)])
def test_a_model_taking_the_channels_asked_is_left_as_it_is(input: tuple[int, ...] | None) -> None:
    """kornia's KeyNet takes grey images, its first convolution reading 10 features of them: adapt_input_channels
    to 1 channel asked for input=(10, H, W) (its convolution's channels, which it refuses), and given the grey
    input it runs on, proposed replacing that convolution with new weights."""
    torch.manual_seed(0)
    model = _Handcrafted().double().eval()
    before = copy.deepcopy(model.state_dict())
    result = adapt_input_channels(model, 1, input=input)
    assert result.changes == ()
    grey = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(grey), model(grey))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class _QatStem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.conv, self.bn, self.relu = nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dequant(self.relu(self.bn(self.conv(self.quant(x))))).mean((2, 3)))


def _qat_stem() -> nn.Module:
    """A QAT-prepared model whose stem is a fused ConvBnReLU2d, as torchvision's quantizable models are prepared."""
    torch.manual_seed(0)
    model = torch.ao.quantization.fuse_modules_qat(_QatStem().train(), [["conv", "bn", "relu"]])
    model.qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare_qat(model, inplace=True)
    model(torch.randn(4, 3, 8, 8))  # trained a step: observers and running statistics set
    return model


def test_a_qat_conv_bn_stem_is_folded() -> None:
    """Found by probe 22: a QAT-prepared quantizable mobilenet_v2's fused ConvBnReLU2d stem was refused ("a weight
    standardisation?"): the fold was compared with fake quantisation on.  The float weight is folded, exactly."""
    model = _qat_stem()
    edited = adapt_input_channels(model, 1).model
    assert edited.conv.weight.shape == (8, 1, 3, 3)
    for m in (model.eval(), edited.eval()):  # the float model: what the fold keeps
        m.apply(torch.ao.quantization.disable_fake_quant)
        m.apply(torch.ao.quantization.disable_observer)
    grey = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(edited(grey), model(grey.repeat(1, 3, 1, 1)), atol=1e-6)
    edited.train().apply(torch.ao.quantization.enable_fake_quant)
    assert edited(grey).shape == (2, 4)  # and it trains on, quantised


def test_resized_embeddings_keep_their_pretrained_rows() -> None:
    """Found by a probe: ``resize_token_embeddings`` (transformers) was 're-initialised: pretrained weights lost',
    though every pretrained row is still there; the new rows' initialiser is described on those rows alone."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # a pretrained head's bias is not zeros
    for size, note in ((110, "rows 0–99 pretrained, 10 new (100–109)"), (90, "rows 0–89 pretrained, 10 dropped")):
        edited = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edited.resize_token_embeddings(size)
        old, new = model.bert.embeddings.word_embeddings.weight, edited.bert.embeddings.word_embeddings.weight
        assert torch.equal(new[: min(size, 100)], old[: min(size, 100)])  # what transformers does: the truth
        report = check_surgery(model, edited, {"input_ids": (16,)})
        changed = {p.name: p for p in report.params if p.status != ParamChange.KEPT}
        assert set(changed) == {"bert.embeddings.word_embeddings.weight", "cls.predictions.bias"}
        assert {p.status for p in changed.values()} == {ParamChange.RESIZED}
        assert all(p.message.startswith(note) for p in changed.values())
        assert "pretrained weights lost" not in report.verdict
        assert report.verdict.startswith(f"2 resized (bert.embeddings.word_embeddings: {note}")


def test_a_head_keeping_some_classes_rows_is_resized() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 20))
    edited = copy.deepcopy(model)
    head = nn.Linear(12, 3)
    with torch.no_grad():
        head.weight[:2] = model[1].weight[[7, 3]]
        head.bias[:2] = model[1].bias[[7, 3]]
    edited[1] = head
    report = check_surgery(model, edited, (12,))
    weight = next(p for p in report.params if p.name == "1.weight")
    assert weight.status == ParamChange.RESIZED
    assert weight.message == "2 of 20 pretrained rows kept: 0←7, 1←3; 1 new"
    assert weight.init.startswith("kaiming_uniform_(a=√5)")  # the one new row, as nn.Linear drew it
    replaced = copy.deepcopy(model)
    replaced[1] = nn.Linear(12, 3)
    assert {p.status for p in check_surgery(model, replaced, (12,)).params if p.layer == "1"} == {
        ParamChange.REINITIALISED
    }


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_a_fold_by_mean_is_folded_but_said_not_exact(channels: int) -> None:
    """Found by a probe: the by-hand fold many tutorials use (the mean of the RGB filters) was 're-initialised:
    pretrained weights lost'.  It keeps the filters, not the output: the factor the note gives is measured on a
    real forward of both layers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1)).double()
    edited = copy.deepcopy(model)
    edited[0] = nn.Conv2d(channels, 8, 3).double()
    with torch.no_grad():
        edited[0].weight.copy_(model[0].weight.mean(1, keepdim=True).expand(-1, channels, -1, -1))
        edited[0].bias.zero_()
        model[0].bias.zero_()
    grey = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    factor = edited[0](grey.expand(-1, channels, -1, -1)) / model[0](grey.expand(-1, 3, -1, -1))
    assert torch.allclose(factor, torch.full_like(factor, channels / 3))
    report = check_surgery(model, edited, (channels, 8, 8))
    weight = next(p for p in report.params if p.name == "0.weight")
    assert weight.status == ParamChange.FOLDED
    assert weight.message.startswith("the mean of the pretrained channels")
    assert f"gives {channels / 3:.4g} × the original's output" in weight.message
    assert "not exact" in report.verdict
    exact = re.search(r"exact: (adapt_input_channels\(.*\))$", weight.message)
    assert exact is not None
    fixed = eval(exact.group(1), {"adapt_input_channels": adapt_input_channels, "model": model}).model  # runs
    assert check_surgery(model, fixed, (channels, 8, 8)).verdict == "1 folded (0), 0 new, 0 invalid"


def test_a_head_with_a_zero_bias_keeping_some_rows_is_resized_as_its_weight() -> None:
    """Found by a probe: a head whose bias starts at zeros (transformers and timm initialise heads so; DETR's,
    YOLOS's and Mask2Former's class heads) replaced keeping some rows had its weight 'resized' and its bias
    're-initialised: pretrained weights lost', the verdict naming the same layer both ways, though the bias rows
    carried over are the pretrained ones, as the weight's are."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    with torch.no_grad():
        model[1].bias.zero_()
    edited = copy.deepcopy(model)
    head = nn.Linear(12, 4)
    with torch.no_grad():  # what replace_head(model, 4, keep={0: 2, 3: 4}) does, by hand
        head.weight[[0, 3]] = model[1].weight[[2, 4]]
        head.bias[[0, 3]] = model[1].bias[[2, 4]]
    edited[1] = head
    report = check_surgery(model, edited, (12,))
    rows = {p.name: p for p in report.params if p.layer == "1"}
    assert {name: p.status for name, p in rows.items()} == {
        "1.weight": ParamChange.RESIZED,
        "1.bias": ParamChange.RESIZED,
    }
    assert rows["1.bias"].message.startswith("2 of 5 pretrained rows kept: 0←2, 3←4")
    assert "re-initialised" not in report.verdict
    replaced = copy.deepcopy(model)  # a head drawn again, zero bias and all, is still re-initialised
    replaced[1] = nn.Linear(12, 4)
    with torch.no_grad():
        replaced[1].bias.zero_()
    assert {p.status for p in check_surgery(model, replaced, (12,)).params if p.layer == "1"} == {
        ParamChange.REINITIALISED
    }


@pytest.mark.slow  # five ViTs built and compared: `make test` runs it, `make check` skips it
def test_position_embeddings_resampled_to_another_size_are_resized() -> None:
    """Found by a probe: a ViT fine-tuned at another image size (timm loads its checkpoint through
    ``resample_abs_pos_embed``; torchvision through ``interpolate_embeddings``) had its position embedding
    're-initialised: pretrained weights lost'."""
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import checkpoint_filter_fn
    from torchvision.models.vision_transformer import interpolate_embeddings

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    for size, grid in ((384, "24×24"), ((224, 320), "14×20")):
        edited = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=size)
        edited.load_state_dict(checkpoint_filter_fn(model.state_dict(), edited))  # timm's own resampling
        shape = (3, size, size) if isinstance(size, int) else (3, *size)
        report = check_surgery(model, edited, shape)
        changed = [p for p in report.params if p.status != ParamChange.KEPT]
        assert [(p.name, p.status) for p in changed] == [("pos_embed", ParamChange.RESIZED)]
        assert changed[0].message == (
            f"resampled: the pretrained 14×14 position grid interpolated (bicubic, antialiased) to {grid}; "
            "1 prefix token kept"
        )
    drawn = copy.deepcopy(edited)
    with torch.no_grad():
        drawn.pos_embed.normal_(std=0.02)  # a table drawn again: the pretrained one is lost
    assert check_surgery(model, drawn, shape).status_of("pos_embed") == ParamChange.REINITIALISED

    vit = torchvision.models.vit_b_16(image_size=64)
    state = interpolate_embeddings(96, 16, vit.state_dict())
    bigger = torchvision.models.vit_b_16(image_size=96)
    bigger.load_state_dict(state)
    report = check_surgery(vit, bigger, (3, 96, 96))
    assert report.status_of("encoder.pos_embedding") == ParamChange.RESIZED
    assert report.verdict.startswith("1 resized (encoder: resampled: the pretrained 4×4 position grid interpolated ")


@pytest.mark.slow  # resnet18 trained, compared twice: `make test` runs it, `make check` skips it
def test_fine_tuned_or_merged_weights_are_updated_not_reinitialised() -> None:
    """Found by a probe: a model compared with itself after two SGD steps had all 41 layers 're-initialised:
    pretrained weights lost', their values 'like xavier_normal_'; a merged LoRA likewise."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    tuned = copy.deepcopy(model)
    optimizer = torch.optim.SGD(tuned.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):  # a real training step: the truth is that every value started from the pretrained one
        loss = tuned(torch.randn(4, 3, 64, 64)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    report = check_surgery(model, tuned, (3, 64, 64))
    assert {p.status for p in report.params} == {ParamChange.UPDATED}
    assert report.verdict.startswith("41 updated (conv1, bn1, layer1.0.conv1,")
    assert "re-initialised" not in report.verdict

    linear = nn.Sequential(nn.Linear(64, 32))
    merged = copy.deepcopy(linear)
    with torch.no_grad():
        merged[0].weight += 0.01 * torch.randn(32, 4) @ torch.randn(4, 64)  # what peft's merge_and_unload adds
    (weight,) = [p for p in check_surgery(linear, merged, (64,)).params if p.status != ParamChange.KEPT]
    assert weight.status == ParamChange.UPDATED and weight.message.endswith("a rank-4 change (a merged LoRA?)")

    drawn = copy.deepcopy(model)
    with torch.no_grad():
        for layer in drawn.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                layer.reset_parameters()  # drawn again: lost, whatever their statistics look like
    statuses = {p.status for p in check_surgery(model, drawn, (3, 64, 64)).params}
    assert statuses == {ParamChange.REINITIALISED, ParamChange.KEPT}  # BatchNorm's ones and zeros stay as they were


def test_a_layer_pruned_by_its_hook_is_updated() -> None:
    """Found by a probe: ``prune.l1_unstructured`` left in place (``weight_orig`` and a mask) was checked as
    nothing changed: ``weight_orig`` was 'moved', though the layer computes with half its weights zeroed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8))
    edited = copy.deepcopy(model)
    prune.l1_unstructured(edited[1], "weight", amount=0.5)
    assert float((edited[1].weight == 0).double().mean()) == 0.5  # the truth: what the layer computes with
    report = check_surgery(model, edited, (12,))
    (row,) = [p for p in report.params if p.status != ParamChange.KEPT]
    assert (row.name, row.status, row.old_name) == ("1.weight_orig", ParamChange.UPDATED, "1.weight")
    assert row.message.endswith("the pretrained 1.weight, pruned: 50% of it zeroed, the rest pretrained")
    assert report.verdict == "1 updated (1), 0 new, 0 invalid"


def test_the_input_a_space_to_depth_refusal_names_is_one_the_model_takes() -> None:
    """Found by a probe (timm's tresnet_m): the refusal asked for input=(48, 224, 224), the stem convolution's
    channels, which the model refuses (its input has 3)."""
    model = _ScaledSpaceToDepthStem().eval()
    with pytest.raises(SurgeryError, match=r"pass the input the model takes now \(input=") as caught:
        adapt_input_channels(model, 1)
    shown = eval(str(caught.value).split("(input=")[1].split(") to check")[0])
    with torch.no_grad():
        assert model(torch.zeros(1, *shown)).shape == (1, 8, shown[1] // 4, shown[2] // 4)  # the model takes it


def test_a_model_whose_decoder_rebuilds_the_channels_names_the_part_to_adapt() -> None:
    """Found by a probe: transformers' ``ViTMAEForPreTraining`` rebuilds 3-channel patches, so folding its stem
    to 1 channel is refused; the refusal said "pass layer= ... or set the attribute it reads", neither of which
    runs.  It names the part that reads the input and runs on 1 channel alone, as a call that runs as written."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTMAEConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32,
        patch_size=8, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=20,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ViTMAEForPreTraining(config).double().eval()
    with pytest.raises(SurgeryError, match="does not run on input") as err:
        adapt_input_channels(model, 1)
    call = re.search(r"adapt_input_channels\(model\.get_submodule\('vit'\), 1\)\.model$", str(err.value))
    assert call is not None, str(err.value)
    encoder = eval(call.group(0), {"adapt_input_channels": adapt_input_channels, "model": model})  # as written
    grey = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    noise = torch.rand(2, 16, dtype=torch.float64)  # the same patches masked in both
    with torch.no_grad():
        got = encoder(pixel_values=grey, noise=noise).last_hidden_state
        want = model.vit(pixel_values=grey.expand(2, 3, 32, 32), noise=noise).last_hidden_state
    assert (got - want).abs().max().item() <= 1e-10 * want.abs().max().item()


class _ChannelNormalize(nn.Module):
    """kornia's ``enhance.Normalize``: one mean and std per RGB channel, and a check of the channel count."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"mean length and number of channels do not match: {self.mean.shape} and {x.shape}")
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


def test_a_normalisation_before_the_part_to_adapt_is_not_blamed_on_what_comes_after() -> None:
    """Found by a probe of kornia's Normalize before a resnet: the refusal said "what comes after 1 still expects
    the old channels (a decoder rebuilding them)" and to adapt ``model.get_submodule('1')`` alone, while what fails
    comes before it; the model so edited failed as before."""
    model = nn.Sequential(_ChannelNormalize(), nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())).eval()
    with pytest.raises(SurgeryError, match=r"does not run on input \(1, 8, 8\)") as caught:
        adapt_input_channels(model, 1, input=(3, 8, 8))
    message = str(caught.value)
    assert "what comes after" not in message and "get_submodule('1')" not in message
    assert "what fails comes before 1, which runs on 1 channel alone" in message
    edited = copy.deepcopy(model)  # and adapting 1 alone does not help: the check before it fails all the same
    edited[1] = adapt_input_channels(model[1], 1).model
    with pytest.raises(ValueError, match="mean length"):
        edited(torch.randn(1, 1, 8, 8))


@pytest.mark.slow  # resnet18 edited, checked and planned: `make test` runs it, `make check` skips it
def test_surgery_its_check_and_the_memory_plan_leave_both_models_as_found() -> None:
    """Weights, buffers, requires_grad, training mode and hooks of the original and of the edited model, through
    every call that reads them (the relations check_surgery computes, the plan's fake step)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().train()
    model.layer2.requires_grad_(False)
    calls: list[str] = []
    model.fc.register_forward_hook(lambda *_: calls.append("hook"))
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.001 * torch.randn_like(p))  # updated, not drawn again
    prune.l1_unstructured(tuned.fc, "weight", amount=0.5)
    before, before_tuned = model_state(model), model_state(tuned)
    grey = adapt_input_channels(model, 1).model
    replace_head(model, 3, keep={0: 1})
    append_head(model, nn.Linear(1000, 2))
    check_surgery(model, tuned, (3, 32, 32))
    check_surgery(model, grey, (1, 32, 32))
    memory_plan(model, (3, 32, 32), batch=2, optimizer="adamw", device="cpu")
    assert_same_state(before, model_state(model))
    assert_same_state(before_tuned, model_state(tuned))
    assert calls == []  # the user's hook never saw our tensors


@pytest.mark.parametrize(
    ("layer", "mode", "fixed"),
    [("conv", "sum", "'conv1'"), (["cnv1"], "sum", "'conv1'"), ("stem", "spread", "'conv1'")],
)
def test_adapt_layer_naming_no_module_says_the_layer_meant_with_a_call_that_runs(
    layer: str | list[str], mode: str, fixed: str
) -> None:
    """A misspelt ``layer=`` gave torch's raw AttributeError ("ResNet has no attribute `conv`"): now a
    SurgeryError naming the argument and the layer meant, with the call that names it, which runs."""
    model = torchvision.models.resnet18()
    channels = 1 if mode == "sum" else 4
    bad = layer if isinstance(layer, str) else layer[0]
    with pytest.raises(SurgeryError, match=rf"layer='{bad}': ResNet has no module '{bad}' .* layer={fixed}\)$") as info:
        adapt_input_channels(model, channels, mode, layer=layer)
    call = str(info.value)[str(info.value).index("adapt_input_channels(") :]
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model
    assert edited.conv1.in_channels == channels
    assert edited.eval()(torch.randn(1, channels, 32, 32)).shape == (1, 1000)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("bad input", r"input shape: expected a shape such as \(3, 224, 224\), got 'bad input'"),
        ((3, -32, 32), r"input shape: dimension 1 is -32 in shape \(3, -32, 32\) — every dimension must be a positive"),
        ({"inptu": (3, 32, 32)}, r"input 'inptu' is not an argument of forward — did you mean 'input'\?"),
    ],
)
def test_adapt_input_channels_refuses_a_malformed_input_as_paramcount_does(bad: object, message: str) -> None:
    """Found by a probe: adapt_input_channels(model, 1, input="bad input") raised a SurgeryError ("does not fit
    forward's arguments") and a misspelt name one from the real call, where paramcount raises InputError naming the
    bad value; with layer= given the bad input was shown as (1, 'a', 'd'). It now raises paramcount's InputError."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    with pytest.raises(InputError, match=message) as counted:
        paramcount(net, bad)  # type: ignore[arg-type]
    for layer in (None, "0"):
        with pytest.raises(InputError, match=message) as refused:
            adapt_input_channels(net, 1, input=bad, layer=layer)  # type: ignore[arg-type]
        assert str(refused.value) == str(counted.value)


def test_the_legacy_weight_norm_is_put_back_without_swapping_the_process_wide_warning_filters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The weight_norm branch of adapt_input_channels silenced the legacy API's FutureWarning with
    warnings.catch_warnings, which swaps the process-wide filter list: a filter another thread added meanwhile was
    lost when the block ended. The function under the deprecation decorator is called instead: no warning, no swap.
    Here the 'other thread' adds its filter from inside the call (deterministically); the fold stays exact."""
    import sys

    legacy = sys.modules["torch.nn.utils.weight_norm"]  # the module: torch.nn.utils.weight_norm is its function
    marker = "torchsurgeon test: a filter another thread added"
    original_norm = legacy.norm_except_dim

    def norm_and_add_a_filter(*args: Any) -> torch.Tensor:
        warnings.filterwarnings("ignore", message=marker)
        return original_norm(*args)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3)).double()
    with pytest.warns(FutureWarning):
        nn.utils.weight_norm(model[0])
    with warnings.catch_warnings(record=True) as caught:  # this test's own: restores the filters after it
        warnings.simplefilter("always")
        monkeypatch.setattr(legacy, "norm_except_dim", norm_and_add_a_filter)
        grey = adapt_input_channels(model, 1).model
        monkeypatch.undo()
        assert any(f[1] is not None and f[1].pattern == marker for f in warnings.filters)
    assert [str(w.message) for w in caught] == []
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert float((grey(x) - model(x.repeat(1, 3, 1, 1))).abs().max()) < 1e-12
    assert dict(grey[0].named_parameters()).keys() == {"bias", "weight_g", "weight_v"}


@pytest.mark.parametrize("flag", ["no", 1, None])
def test_inplace_takes_true_or_false_only(flag: Any) -> None:
    """inplace='no' (a true value to Python) edited the user's model in place; a bool is asked for now, and the model
    is left as it was."""
    model = CifarNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match=rf"inplace={re.escape(repr(flag))} — give True or False \(True edits"):
        adapt_input_channels(model, 1, inplace=flag)
    with pytest.raises(InputError, match=rf"inplace={re.escape(repr(flag))} — give True or False"):
        fold_input_normalization(model, [0.5] * 3, [0.2] * 3, inplace=flag)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.conv1.in_channels == 3


def test_adapt_input_channels_layer_takes_ints_and_each_layer_once() -> None:
    """adapt_input_channels(model, 1, layer=0) raised a raw TypeError, layer=[] blamed the model ('no layer reads the
    input') and layer=['0', '0'] folded the layer twice; an int is a Sequential's layer, each layer is named once."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    grey = adapt_input_channels(model, 1, layer=0).model
    x = torch.randn(1, 1, 8, 8)
    assert torch.allclose(grey(x), model(x.expand(1, 3, 8, 8)), atol=1e-6)
    with pytest.raises(InputError, match=r"layer=\['0', '0'\] names a layer twice — name each once: layer=\['0'\]"):
        adapt_input_channels(model, 1, layer=["0", "0"])
    with pytest.raises(InputError, match=r"layer=\[\] names no layer — name one, or leave layer=None"):
        adapt_input_channels(model, 1, layer=[])


def test_fold_input_normalization_names_the_layer_meant() -> None:
    """fold_input_normalization(model, ..., layer='nope') raised torch's bare AttributeError; it is refused as
    adapt_input_channels refuses a layer the model does not have, with the call that names the layer meant."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(
        SurgeryError,
        match=r"layer='nope': Sequential has no module 'nope' — its Conv and Linear layers are 0: "
        r"e.g. fold_input_normalization\(model, \[0.5, 0.4, 0.3\], \[0.2, 0.2, 0.2\], layer='0'\)",
    ):
        fold_input_normalization(model, [0.5, 0.4, 0.3], [0.2, 0.2, 0.2], layer="nope")
    folded = fold_input_normalization(model, [0.5, 0.4, 0.3], [0.2, 0.2, 0.2], layer="0").model
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(folded(x), model((x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2), atol=1e-5)


_COMPUTED_WEIGHTS: dict[str, Callable[[nn.Module], object]] = {
    "prune": lambda conv: prune.l1_unstructured(conv, "weight", amount=0.3),
    "weight_norm": lambda conv: nn.utils.parametrizations.weight_norm(conv),
    "legacy weight_norm": lambda conv: nn.utils.weight_norm(conv),
    "orthogonal": lambda conv: nn.utils.parametrizations.orthogonal(conv),
    "spectral_norm": lambda conv: nn.utils.spectral_norm(conv),
}


@pytest.mark.filterwarnings("ignore:.*weight_norm is deprecated:FutureWarning")
@pytest.mark.parametrize("how", list(_COMPUTED_WEIGHTS))
def test_fold_input_normalization_into_a_weight_torch_computes(how: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2)).eval()
    _COMPUTED_WEIGHTS[how](net[0])
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = torch.rand(2, 3, 8, 8)
    normalized = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net(normalized)
    # was TypeError (cannot assign 'torch.FloatTensor' as parameter 'weight') for a pruned layer, KeyError
    # ("attribute 'weight' already exists") under a parametrization
    result = fold_input_normalization(net, mean, std)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), expected, rtol=1e-4, atol=1e-5)  # no padding: exact
        torch.testing.assert_close(net(normalized), expected)  # the original is untouched
    assert "exact" in result.changes[0].message


@pytest.mark.slow  # two transformers models built and run in float64: `make test` runs it, `make check` skips it
@pytest.mark.parametrize("kind", ["CLIP", "Siglip"])
def test_an_image_and_text_model_is_adapted_without_an_input(kind: str) -> None:
    """Found by a probe: adapt_input_channels(CLIPModel, 1) ran the image its config describes alone and was
    refused ('You have to specify input_ids' — give an input the model accepts); its forward asks for token ids
    too, which the input it is run on now has. The patch embedding is folded and the fold is exact."""
    transformers = pytest.importorskip("transformers")
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = getattr(transformers, f"{kind}Config")(
        text_config={**tower, "vocab_size": 99}, vision_config={**tower, "image_size": 32, "patch_size": 8}
    )
    model = getattr(transformers, f"{kind}Model")(config).eval().double()
    result = adapt_input_channels(model, 1)
    assert [c.name for c in result.changes] == [
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.config.num_channels",
    ]
    ids, grey = torch.randint(0, 99, (1, 16)), torch.randn(1, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        folded = result.model(input_ids=ids, pixel_values=grey).logits_per_image
        original = model(input_ids=ids, pixel_values=grey.expand(1, 3, 32, 32)).logits_per_image
    torch.testing.assert_close(folded, original, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # two transformers models built and run in float64: `make test` runs it, `make check` skips it
@pytest.mark.parametrize("kind", ["Vilt", "Git", "LayoutLMv3"])
def test_a_single_stream_image_and_text_model_is_adapted_without_an_input(kind: str) -> None:
    """Found by a probe: ViLT, GIT and LayoutLMv3 keep their text's settings on their own config (no text_config),
    so they were run on the image alone and refused ('You have to specify either input_ids or inputs_embeds' — give
    an input the model accepts); LayoutLMv3 was also run at 224 x 224, as its config names its image size
    input_size.  Given token ids too, at the config's size, the patch embedding is folded and the fold is exact
    (ViLT samples its patches at random: both forwards from one seed)."""
    transformers = pytest.importorskip("transformers")
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    if kind == "Vilt":
        config = transformers.ViltConfig(**tower, vocab_size=99, image_size=32, patch_size=8)
        weight = "embeddings.patch_embeddings.projection.weight"
    elif kind == "LayoutLMv3":  # its text's hidden size is 4 coordinates and 2 sizes of the box embeddings
        layout = {**tower, "hidden_size": 48, "coordinate_size": 8, "shape_size": 8, "max_2d_position_embeddings": 64}
        config = transformers.LayoutLMv3Config(**layout, vocab_size=99, input_size=32, patch_size=8)
        weight = "patch_embed.proj.weight"
    else:
        config = transformers.GitConfig(
            **tower, vocab_size=99, vision_config={**tower, "image_size": 32, "patch_size": 8}
        )
        weight = "image_encoder.vision_model.embeddings.patch_embedding.weight"
    model = getattr(transformers, f"{kind}Model")(config).eval().double()
    result = adapt_input_channels(model, 1)
    assert result.changes[0].name == weight and result.changes[0].status == ParamChange.FOLDED
    ids, grey = torch.randint(0, 99, (1, 16)), torch.randn(1, 1, 32, 32, dtype=torch.float64)
    outputs = []
    for net, image in ((result.model, grey), (model, grey.expand(1, 3, 32, 32))):
        torch.manual_seed(0)
        with torch.no_grad():
            outputs.append(net(input_ids=ids, pixel_values=image).last_hidden_state)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # two transformers models built and run in float64: `make test` runs it, `make check` skips it
@pytest.mark.parametrize("kind", ["TrOCR", "Donut"])
def test_an_image_encoder_with_a_text_decoder_is_adapted_without_an_input(kind: str) -> None:
    """Found by a probe: VisionEncoderDecoderModel (TrOCR: ViT and a TrOCR decoder; Donut: DonutSwin and MBart), the
    usual model for reading grey scans, was refused without an input and told to pass input=(3, 224, 224), which it
    refuses too; its config's encoder gives the image and its decoder the token ids now, and the fold is exact."""
    transformers = pytest.importorskip("transformers")
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    if kind == "TrOCR":
        encoder: Any = transformers.ViTConfig(**tower, image_size=32, patch_size=8)
        decoder: Any = transformers.TrOCRConfig(
            d_model=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=37, vocab_size=99
        )
    else:
        encoder = transformers.DonutSwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4
        )
        sizes = {"d_model": 32, "decoder_ffn_dim": 37, "encoder_ffn_dim": 37, "vocab_size": 99}
        decoder = transformers.MBartConfig(
            **sizes, decoder_layers=1, encoder_layers=1, decoder_attention_heads=2, encoder_attention_heads=2
        )
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    model = transformers.VisionEncoderDecoderModel(config).eval().double()
    result = adapt_input_channels(model, 1)
    assert result.changes[0].name == "encoder.embeddings.patch_embeddings.projection.weight"
    assert result.changes[0].status == ParamChange.FOLDED
    ids, grey = torch.randint(0, 99, (1, 8)), torch.randn(1, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        folded = result.model(pixel_values=grey, decoder_input_ids=ids).logits
        original = model(pixel_values=grey.expand(1, 3, 32, 32), decoder_input_ids=ids).logits
    torch.testing.assert_close(folded, original, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # RAFT run twice: `make test` runs it, `make check` skips it
def test_an_optical_flow_model_taking_two_images_is_folded_in_both_encoders() -> None:
    """Found by a probe: ``adapt_input_channels(raft_small, 1)`` guessed one image for a forward of two (RAFT checks
    the sizes, so it is run, not traced) and asked for ``input=(3, H, W)``, which could not help; an image for each
    required argument is tried now, both encoders reading the images are folded, and the fold holds (to float32)."""
    model = torchvision.models.optical_flow.raft_small(weights=None).eval()
    result = adapt_input_channels(model, 1)
    edited = result.model  # RAFT runs in float32 only (its coordinate grids): compared to 1e-4
    assert [c.name for c in result.changes] == [
        "feature_encoder.convnormrelu.0.weight",
        "context_encoder.convnormrelu.0.weight",
    ]
    a, b = torch.randn(1, 1, 128, 128), torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        folded = edited(a, b, num_flow_updates=2)[-1]
        original = model(a.expand(1, 3, 128, 128), b.expand(1, 3, 128, 128), num_flow_updates=2)[-1]
    torch.testing.assert_close(folded, original, rtol=1e-4, atol=1e-4)


class _TwoImagesOfSizesIn100s(nn.Module):
    """Two required images whose sizes its forward checks (so it is run, not traced): multiples of 100 only."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape[-1] % 100 or b.shape[-1] % 100:
            raise ValueError("image sizes must be multiples of 100")
        return self.encode(a) - self.encode(b)


def test_two_required_images_refusing_the_guess_are_asked_for_by_name() -> None:
    asked = r"adapt_input_channels\(model, 1, input=\{'a': \(3, H, W\), 'b': \(3, H, W\)\}\) at the sizes"
    with pytest.raises(SurgeryError, match=asked) as e:
        adapt_input_channels(_TwoImagesOfSizesIn100s(), 1)
    assert "multiples of 100" in str(e.value)
    given = {"a": (3, 100, 100), "b": (3, 100, 100)}  # the fix as it reads, at the sizes the message asks for
    result = adapt_input_channels(_TwoImagesOfSizesIn100s(), 1, input=given)
    assert result.model.encode.in_channels == 1


class _StemAndShortcut(nn.Module):
    """Two layers read the image: a stem and a 1×1 shortcut, added."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.skip = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.stem(x) + self.skip(x)).mean((2, 3)))


def test_layers_named_leaving_out_one_that_reads_the_input_name_it() -> None:
    """``layer=['stem']`` of a model whose shortcut reads the image too said the layers named "do not read the
    input's channels as they are (stem reads 3, the input has 3 input channels: a later layer...)", untrue of the
    stem; now it names the shortcut left out and the call naming both, which runs and is exact on grey images."""
    torch.manual_seed(0)
    model = _StemAndShortcut().eval()
    with pytest.raises(SurgeryError, match=r"— skip reads the input too and was not named") as info:
        adapt_input_channels(model, 1, layer=["stem"])
    assert model.stem.in_channels == model.skip.in_channels == 3  # the model given is left as it was
    call = re.search(r"adapt_input_channels\(model, 1, layer=\['stem', 'skip'\]\)", str(info.value))
    assert call is not None
    edited = eval(call.group(0), {"adapt_input_channels": adapt_input_channels, "model": model}).model
    grey = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(edited(grey), model(grey.expand(2, 3, 8, 8)))


def test_a_text_model_has_no_input_channels_to_adapt() -> None:
    """Found by a probe: adapt_input_channels of sentence-transformers' SentenceTransformer (its Transformer module
    opaque) asked for input=(3, 224, 224), an image for a text model; an Embedding reading the input was to be
    'adapted by hand'. Both say the input is token ids, with no channels to adapt."""
    reads = r"the first layer with weights in it is 0.embeddings \(Embedding\), which reads token ids, and it holds "
    with pytest.raises(SurgeryError, match=reads + r"no convolution — a text model's input has no channels") as e:
        adapt_input_channels(sentence_transformer(), 1)
    assert "224" not in str(e.value)
    with pytest.raises(
        SurgeryError,
        match=r"^0 \(Embedding\) reads the input: token ids, indices into its 50 rows, "
        r"not channels — there are no input channels to adapt",
    ):
        adapt_input_channels(nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 2)), 1)


class _Captioner(nn.Module):
    """transformers' BlipModel: ``forward(input_ids, pixel_values=None)``, the image optional; its vision config
    has no ``num_channels`` (the patch embedding is built for 3), so no image is known from the config."""

    def __init__(self) -> None:
        super().__init__()
        self.words, self.patches = nn.Embedding(50, 4), nn.Conv2d(3, 4, 4, 4)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        x = self.words(input_ids)
        return x if pixel_values is None else x + self.patches(pixel_values).mean((2, 3))[:, None]


def test_a_model_whose_image_is_optional_is_not_called_a_text_model() -> None:
    """Found by a probe: adapt_input_channels(BlipModel, 1) traced it with pixel_values=None (its default) and said
    its Embedding "reads the input: token ids ... there are no input channels to adapt"; it names the image
    argument left out and the input to pass, and that call folds the image's convolution."""
    torch.manual_seed(0)
    model = _Captioner().double().eval()
    with pytest.raises(SurgeryError, match=r"pixel_values was traced as None \(its default\)") as e:
        adapt_input_channels(model, 1)
    assert "no input channels" not in str(e.value)
    example = "input={'input_ids': (16,), 'pixel_values': (3, 224, 224)}"
    assert str(e.value).endswith(f"e.g. adapt_input_channels(model, 1, {example})")
    result = adapt_input_channels(model, 1, input={"input_ids": (16,), "pixel_values": (3, 224, 224)})
    assert [(c.name, c.shape_after) for c in result.changes] == [("patches.weight", (4, 1, 4, 4))]
    ids, grey = torch.randint(0, 50, (2, 5)), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(ids, grey), model(ids, grey.expand(2, 3, 8, 8)), rtol=0, atol=1e-12)


class _LinearPatchEmbed(nn.Module):
    """timm's NaFlexEmbeds: (B, C, H, W) cut into 4 x 4 patches flattened channels last (P-P-C) and read by a
    Linear, with Python on the input's sizes (the grid for its position table) that fx traces only with an input
    shape: one opaque node in a trace without one."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4 * 4 * 3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        grid = (int(h) // 4, int(w) // 4)
        x = x.reshape(b, c, grid[0], 4, grid[1], 4).permute(0, 2, 4, 3, 5, 1).reshape(b, grid[0] * grid[1], -1)
        return self.proj(x)


class _NaFlexNet(nn.Module):
    """timm's naflexvit: the Linear patch embedding above, a head; timm's pretrained_cfg, no convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.pretrained_cfg = {"input_size": (3, 32, 32)}
        self.embeds, self.head = _LinearPatchEmbed(), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embeds(x).mean(1))


def test_a_linear_patch_embedding_traced_as_opaque_is_adapted_without_an_input() -> None:
    """timm's naflexvit_base_patch16_parfac_gap: adapt_input_channels(model, 1) refused ("embeds (NaFlexEmbeds)
    reads the input but could not be looked into — pass an input"): the image it runs to look inside was that of
    the model's first convolution, and it has none; a timm model's pretrained_cfg gives the channels."""
    torch.manual_seed(0)
    model = _NaFlexNet().double().eval()
    before = copy.deepcopy(model.state_dict())
    result = adapt_input_channels(model, 1)
    assert [(c.name, c.shape_after) for c in result.changes] == [("embeds.proj.weight", (8, 16))]
    grey = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(grey), model(grey.expand(2, 3, 16, 16)), rtol=1e-12, atol=1e-12)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
