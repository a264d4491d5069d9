"""Channel maps: where each input channel of a layer comes from, when only a rearrangement of the input precedes it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import assert_same_state, model_state
from torchsurgeon import ParamChange, SurgeryError, adapt_input_channels, check_surgery, paramcount
from torchsurgeon.channelmap import channel_map


class _PixelPatches(nn.Module):
    """timm's TNT ``PixelEmbed`` in small: the image cut into 4 × 4 patches by ``nn.Unfold``, the patches put in the
    batch (``(B * 16, C, 4, 4)``, each channel still one colour), then a conv over each patch."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.unfold = nn.Unfold(kernel_size=4, stride=4)
        self.proj = nn.Conv2d(channels, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        patches = self.unfold(x).transpose(1, 2).reshape(-1, c, 4, 4)
        return self.head(self.proj(patches).reshape(b, -1, 8, 16).mean((1, 3)))


def test_channels_read_from_patches_held_in_the_batch_are_mapped_to_the_input_colours() -> None:
    """The batch of one image holds its 16 patches when the conv reads them: the map looked at batch item 0 only
    (and refused any other batch), so the conv's channels were no rearrangement of the input's."""
    found = channel_map(_PixelPatches(), "proj", (3, 16, 16), 1)
    assert found is not None and (found.before, found.after) == (((0, 1, 2),), ((0,),))


@pytest.mark.parametrize(("channels", "mode"), [(1, "sum"), (2, "spread"), (5, "zero_extra")])
def test_a_conv_over_patches_put_in_the_batch_is_folded_and_the_fold_is_exact(channels: int, mode: str) -> None:
    """Found by probing timm's tnt_s_patch16_224 against timm's in_chans: adapt_input_channels refused it ('reads the
    input only after unfold (Unfold)'), though its patches keep one colour per channel and timm builds it for any
    in_chans.  Folded now: the edit loads into the model built for the new channels, and gives the original's output
    on the input the mode relates, in float64; the original is left as found."""
    torch.manual_seed(0)
    model = _PixelPatches().double().eval()
    before = model_state(model)
    result = adapt_input_channels(model, channels, mode)
    assert_same_state(before, model_state(model))
    (change,) = [c for c in result.changes if c.status is ParamChange.FOLDED]
    assert change.name == "proj.weight" and change.shape_after == (8, channels, 3, 3)
    _PixelPatches(channels).double().load_state_dict(result.model.state_dict())  # strict: the same keys and shapes
    x = torch.randn(2, channels, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        if mode == "zero_extra":  # RGB + anything gives the RGB output
            got, want = result.model(x), model(x[:, :3])
        else:  # sum: grey as RGB; spread: grey replicated to C channels, as RGB
            grey = x[:, :1]
            got, want = result.model(grey.expand(2, channels, 16, 16)), model(grey.expand(2, 3, 16, 16))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


class _ImagePair(nn.Module):
    """torchgeo's ChangeViT in small: a pair of images ``(B, 2, C, H, W)``, each read by one encoder, and the pair
    stacked into ``2 * C`` channels for a detail branch (``b t c h w -> b (t c) h w``)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(channels, 8, 3, padding=1)
        self.detail = nn.Conv2d(2 * channels, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x[:, 0]) - self.encoder(x[:, 1]) + self.detail(x.flatten(1, 2))


def test_a_pair_of_images_stacked_into_channels_is_mapped_on_the_colour_dim() -> None:
    """The colours of a pair of images are its second per-sample dim: each of the 6 stacked channels holds one
    colour of one image (the map took the first dim, the pair, for the colours)."""
    found = channel_map(_ImagePair(), "detail", (2, 3, 16, 16), 1, axis=1, others=["encoder"])
    assert found is not None and (found.before, found.after) == (((0, 1, 2), (3, 4, 5)), ((0,), (1,)))


class _EarlyFusion(nn.Module):
    """A change detector with early fusion, as torchgeo's ``ChangeDetectionTask`` feeds a segmentation model: the
    image pair ``(B, 2, C, H, W)`` stacked into ``2 * C`` channels (``b t c h w -> b (t c) h w``) before the first
    conv, no layer reading either image alone."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2 * channels, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x.flatten(1, 2))))


@pytest.mark.parametrize(("kind", "folded"), [(_ImagePair, ["encoder", "detail"]), (_EarlyFusion, ["stem"])])
@pytest.mark.parametrize(("channels", "mode"), [(1, "sum"), (4, "spread")])
def test_an_image_pair_stacked_into_channels_has_one_fold_that_runs_as_written(
    kind: type[nn.Module], folded: list[str], channels: int, mode: str
) -> None:
    """Found by probing torchgeo's ChangeViT at 1 channel: the report named the encoder's fold, and for the detail
    branch ``adapt_input_channels(model, 2, mode='spread', input=(6, 1, 64, 64))`` (the pair's 2 taken for the
    colours); the encoder's fold raised, the detail conv 'reads the input only after something that moves its
    channels'.  Early fusion (an smp Unet fed the stacked pair, no layer reading either image alone) was told 'make
    that give 6, or replace the layer (new weights)', and ``adapt_input_channels(model, 1, input=(2, 3, 16, 16))``
    folded the pair's dim (R1 + R2, G1 + G2, B1 + B2: a model of one RGB image, which a grey pair then failed to
    run).  Now each names the one fold, which runs as written: ``total_for_input`` parameters, the reported output,
    exact in float64 (each image's colours folded in its group of the stacked channels)."""
    torch.manual_seed(0)
    model = kind().double().eval()
    before = model_state(model)
    report = paramcount(model, (2, channels, 16, 16), batch=2)
    spread = "" if mode == "sum" else ", mode='spread'"
    fix = f"fold it with adapt_input_channels(model, {channels}{spread}, input=(2, 3, 16, 16))"
    assert [(f.layer, f.fix) for f in report.findings] == [(name, fix) for name in folded]  # one per layer
    result = eval(fix.removeprefix("fold it with "), {"adapt_input_channels": adapt_input_channels, "model": model})
    assert_same_state(before, model_state(model))
    assert report.total_for_input == sum(p.numel() for p in result.model.parameters())
    kind(channels).double().load_state_dict(result.model.state_dict())  # strict: the same keys and shapes
    grey = torch.randn(2, 2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        got, want = result.model(grey.expand(2, 2, channels, 16, 16)), model(grey.expand(2, 2, 3, 16, 16))
    assert tuple(got.shape) == report.output_shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    checked = check_surgery(model, result.model, (2, channels, 16, 16))  # was: the detail conv 'updated' (by 101 %)
    assert [(c.name, c.status) for c in checked.params if c.status is not ParamChange.KEPT] == [
        (f"{name}.weight", ParamChange.FOLDED) for name in folded
    ]


class _StateCell(nn.Module):
    """torchgeo's ConvLSTM in small: each frame of ``(B, T, C, H, W)`` joined with the cell's state along the
    channels, ``torch.cat([x, h], 1)``, then one conv over both (its state made on the conv's weight device)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels + 4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.size()
        state = torch.zeros(b, 4, h, w, device=self.conv.weight.device, dtype=self.conv.weight.dtype)
        for i in range(t):
            state = torch.tanh(self.conv(torch.cat([x[:, i], state], dim=1)))
        return state


class _CoordConv(nn.Module):
    """CoordConv: the image joined with two channels of its pixels' coordinates, made in the forward."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels + 2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        return self.conv(torch.cat([ys, x, xs], dim=1))


@pytest.mark.parametrize(("kind", "shape"), [(_StateCell, (3, 3, 16, 16)), (_CoordConv, (3, 16, 16))])
@pytest.mark.parametrize(("channels", "mode"), [(1, "sum"), (4, "spread")])
def test_the_input_joined_with_other_channels_is_folded_and_the_others_kept(
    kind: type[nn.Module], shape: tuple[int, ...], channels: int, mode: str
) -> None:
    """Found by probing torchgeo's ConvLSTM at 1 channel: the report said 'what comes before it gives 9: make that
    give 11, or replace the layer (new weights)' and adapt_input_channels refused ('reads the input only after a
    concatenation with 8 other channels').  The input's columns of the conv's weight fold, those of what it is joined
    with (a state, coordinates) stay: the report names the fold, which runs as written, gives ``total_for_input``
    parameters and the original's output on grey replicated, in float64; check_surgery calls it folded."""
    torch.manual_seed(0)
    model = kind().double().eval()
    before = model_state(model)
    at = len(shape) - 3  # the colours: before the two spatial dims
    new = (*shape[:at], channels, *shape[at + 1 :])
    report = paramcount(model, new, batch=2)
    spread = "" if mode == "sum" else ", mode='spread'"
    fix = f"fold it with adapt_input_channels(model, {channels}{spread}, input={shape})"  # sizes asked in forward
    assert {f.fix for f in report.findings} == {fix}
    result = eval(fix.removeprefix("fold it with "), {"adapt_input_channels": adapt_input_channels, "model": model})
    assert_same_state(before, model_state(model))
    assert report.total_for_input == sum(p.numel() for p in result.model.parameters())
    kind(channels).double().load_state_dict(result.model.state_dict())  # strict: the same keys and shapes
    grey = torch.randn(2, *shape[:at], 1, *shape[at + 1 :], dtype=torch.float64)
    with torch.no_grad():
        got = result.model(grey.expand(2, *new))
        want = model(grey.expand(2, *shape))
    assert tuple(got.shape) == report.output_shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    checked = check_surgery(model, result.model, new)
    assert [(c.name, c.status) for c in checked.params if c.status is not ParamChange.KEPT] == [
        ("conv.weight", ParamChange.FOLDED)
    ]


class _WithItsMean(nn.Module):
    """The image joined with its own mean over the colours: values computed from the input, no layer between."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, x.mean(1, keepdim=True)], dim=1))


def test_the_input_joined_with_values_computed_from_it_is_not_folded() -> None:
    """A fold keeps what the input is joined with only when no input value reaches it but through a layer: the mean
    of grey replicated is not the mean the folded model sees.  The report names no fold, and the fold is refused."""
    report = paramcount(_WithItsMean(), (1, 8, 8))
    assert [f.layer for f in report.findings] == ["conv"] and "fold it" not in report.findings[0].fix
    with pytest.raises(SurgeryError, match=r"^conv \(Conv2d\) reads the input only after "):
        adapt_input_channels(_WithItsMean(), 1)
