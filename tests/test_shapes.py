"""Shape propagation agrees with a real forward; invalid layers are found and skipped over."""

from __future__ import annotations

import operator
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from einops import rearrange
from einops.layers.torch import Rearrange
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models import HandWrittenConv, SizeChecked, on_meta
from torchsurgeon import (
    adapt_input_channels,
    build_graph,
    check_contract,
    paramcount,
    paramcount_sweep,
    propagate_shapes,
    register_rule,
    unregister_rule,
)
from torchsurgeon.graph import node_records
from torchsurgeon.trace import trace


@st.composite
def conv_stacks(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...]]:
    """A random small Conv/BN/pool stack ending in flatten + Linear, and a fitting input."""
    dims = draw(st.sampled_from([1, 2]))
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    bn = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    pool = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
    channels = draw(st.integers(1, 4))
    size = draw(st.integers(8, 20))
    layers: list[nn.Module] = []
    c = channels
    length = size
    for _ in range(draw(st.integers(1, 3))):
        out, k = draw(st.integers(1, 6)), draw(st.integers(1, 3))
        s, p, d = draw(st.integers(1, 2)), draw(st.integers(0, 1)), draw(st.integers(1, 2))
        after = (length + 2 * p - d * (k - 1) - 1) // s + 1
        if after < 2:
            break
        layers.append(conv(c, out, k, stride=s, padding=p, dilation=d, bias=draw(st.booleans())))
        length, c = after, out
        if draw(st.booleans()):
            layers.append(bn(out))
        if length >= 4 and draw(st.booleans()):
            ceil = draw(st.booleans())
            layers.append(pool(2, ceil_mode=ceil))
            length = -(-length // 2) if ceil else length // 2
    layers.append(nn.Flatten())
    shape = (channels, *([size] * dims))
    with torch.no_grad():
        features = nn.Sequential(*layers).eval()(torch.zeros(1, *shape)).shape[-1]
    layers.append(nn.Linear(features, draw(st.integers(1, 5))))
    return nn.Sequential(*layers).eval(), shape


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
@settings(deadline=None, max_examples=30)
@given(conv_stacks(), st.integers(1, 3))
def test_propagated_shapes_equal_a_real_forward(stack: tuple[nn.Module, tuple[int, ...]], batch: int) -> None:
    model, shape = stack
    G = build_graph(trace(model))
    result = propagate_shapes(G, shape, batch=batch)
    real: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, name=name: real.__setitem__(name, tuple(o.shape)))
        for name, m in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            out = model(torch.randn(batch, *shape))
    finally:
        for h in hooks:
            h.remove()
    assert result.output_shape == tuple(out.shape)
    assert result.findings == ()
    for rec in node_records(G):
        if rec.op == "call_module":
            assert rec.output_shape == real[rec.layer], rec.name


@settings(deadline=None, max_examples=20)
@given(conv_stacks(), st.integers(1, 6))
def test_any_channel_count_flags_only_the_first_conv(stack: tuple[nn.Module, tuple[int, ...]], c: int) -> None:
    model, shape = stack
    r = paramcount(model, (c, *shape[1:]))
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))
    expected = [] if c == first.in_channels else ["0"]
    assert [layer.name for layer in r.invalid] == expected
    real = model(torch.zeros(1, *shape)).shape
    assert r.output_shape == tuple(real)  # continued as if conv 0 took c channels


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "mobilenet_v3_small",
        "efficientnet_b0",
        # 3-6 s each at 224 x 224: `make test` runs them, `make check` skips them
        *(pytest.param(n, marks=pytest.mark.slow) for n in ("vit_b_16", "swin_t", "densenet121", "convnext_tiny")),
    ],
)
def test_output_shape_equals_a_real_cpu_forward(name: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    with torch.no_grad():
        real = model(torch.randn(1, 3, 224, 224)).shape
    assert paramcount(model, (3, 224, 224)).output_shape == tuple(real)


def test_meta_model_is_analysed_without_weights() -> None:
    model = on_meta(torchvision.models.resnet50)
    assert next(model.parameters()).device.type == "meta"
    r = paramcount(model, (1, 224, 224), batch=256)
    assert (r.total, r.total_for_input, r.output_shape) == (25_557_032, 25_550_760, (256, 1000))


def test_huge_input_allocates_nothing() -> None:
    r = paramcount(torchvision.models.resnet18(), (3, 100_000, 100_000), batch=1024)
    assert r.output_shape == (1024, 1000)
    assert r.layer("conv1").output_shape == (1024, 64, 50_000, 50_000)


def test_too_small_input_is_invalid_with_the_minimum_size() -> None:
    r = paramcount(nn.Sequential(nn.Conv2d(3, 4, 5), nn.Conv2d(4, 4, 5)), (3, 6, 6))
    assert [layer.name for layer in r.invalid] == ["1"]
    assert "spatial size (dim 0) >= 5, got 2" in r.invalid[0].message


def test_a_layer_reading_the_input_through_padding_is_folded() -> None:
    """efficientnet-pytorch pads before its stem convolution: the fix is still a fold of the input layer."""
    r = paramcount(nn.Sequential(nn.ZeroPad2d(1), nn.Dropout(), nn.Conv2d(3, 8, 3)), (1, 8, 8))
    assert [f.fix for f in r.findings] == ["fold it with adapt_input_channels(model, 1)"]
    r = paramcount(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ZeroPad2d(1), nn.Conv2d(8, 8, 3)), (3, 8, 8))
    assert r.findings[0].fix.startswith("what comes before it gives 3")  # padding after a layer: that layer's output


def _scaled(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A model's own function, kept as one call by fx (timm's CrossViT resizes its image in ``scale_image``)."""
    return F.interpolate(x, size=size, mode="bilinear") if tuple(x.shape[-2:]) != size else x


torch.fx.wrap("_scaled")


def _with_rank(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A model's own function giving the input and its rank (torchvision's MViT reads ``_unsqueeze(x, 5, 2)[0]``)."""
    return F.interpolate(x, size=(16, 16), mode="bilinear"), x.dim()


torch.fx.wrap("_with_rank")


@pytest.mark.parametrize("resize", ["module", "function", "own function", "item of an own function"])
def test_a_layer_reading_the_input_through_a_resize_is_folded(resize: str) -> None:
    """A model that resizes its input to its stem's size first: the stem still reads the input; the fix runs and
    gives the model ``total_for_input`` counted."""

    class Resized(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.resize, self.stem = nn.Upsample(size=(16, 16)), nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if resize == "module":
                x = self.resize(x)
            elif resize == "function":
                x = F.interpolate(x, size=(16, 16), mode="bilinear")
            elif resize == "item of an own function":  # found by a probe: "what comes before it gives 1" for MViT
                x = _with_rank(x)[0]
            else:
                x = _scaled(x, (16, 16))
            return self.stem(x)

    model = Resized()
    r = paramcount(model, (1, 12, 12))
    assert [f.fix for f in r.findings] == ["fold it with adapt_input_channels(model, 1)"]
    folded = adapt_input_channels(model, 1).model
    with torch.no_grad():
        assert folded(torch.randn(1, 1, 12, 12)).shape == (1, 8, 14, 14)
    assert r.total_for_input == sum(p.numel() for p in folded.parameters()) == 8 * 9 + 8


class _Cropped(nn.Module):
    """A stem reading a crop of the image (or two crops of it, each read by the same stem), or some of its channels."""

    def __init__(self, crop: str) -> None:
        super().__init__()
        self.crop, self.stem, self.fc = crop, nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop == "two crops":
            return self.fc(self.stem(x[..., :10]).mean((2, 3)) + self.stem(x[..., 10:]).mean((2, 3)))
        if self.crop == "index":
            x = x[:, :, 1:11, 2:12]
        elif self.crop == "narrow":
            x = x.narrow(3, 0, 10)
        elif self.crop == "channels":
            x = x[:, 1:]
        return self.fc(self.stem(x).mean((2, 3)))


@pytest.mark.parametrize("crop", ["two crops", "index", "narrow"])
def test_a_stem_reading_a_crop_of_the_input_is_told_to_fold_and_the_fold_is_exact(crop: str) -> None:
    """Found by a probe: a stem given a crop of the image (``x[..., :10]``, two crops read by one stem,
    ``x[:, :, 1:11, 2:12]``, ``x.narrow(3, 0, 10)``) at 1 channel was told "what comes before it gives 1: make that
    give 3, or replace the layer (new weights)", when adapt_input_channels folds it, keeping its weights; the fold
    is the fix now, and it is exact: the folded model on a grey image equals the original on it repeated."""
    torch.manual_seed(0)
    model = _Cropped(crop).double().eval()
    r = paramcount(model, (1, 12, 20))
    assert {f.fix for f in r.findings} == {"fold it with adapt_input_channels(model, 1)"}  # one per call of the stem
    assert [layer.name for layer in r.invalid] == ["stem"]
    folded = adapt_input_channels(model, 1).model
    assert r.total_for_input == sum(p.numel() for p in folded.parameters()) == 4 * 9 + 4 + 10
    x = torch.rand(2, 1, 12, 20, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x.expand(2, 3, 12, 20)))
    assert paramcount(folded, (1, 12, 20)).invalid == []


def test_a_stem_reading_some_of_the_input_channels_is_not_told_to_fold() -> None:
    """``x[:, 1:]`` selects channels: 1 channel gives none, and no fold of the stem gives it 3 again."""
    r = paramcount(_Cropped("channels"), (1, 12, 20))
    assert [f.fix for f in r.findings] == ["what comes before it gives 0: make that give 3"]


class _Frames(nn.Module):
    """A video model that runs its stem on every frame, as TimeSformer and ViViT do: the frames of
    ``(N, T, C, H, W)`` merged into the batch (``reshape``, ``flatten``, einops' ``rearrange``: torchgeo's
    ChangeStar) or the channels moved before them (``permute`` for a 3-d stem)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.merge = Rearrange("b t c h w -> (b t) c h w")
        self.stem = nn.Conv3d(3, 8, (1, 4, 4), stride=(1, 4, 4)) if how == "permute" else nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = x.shape
        if self.how == "reshape":
            x = x.reshape(n * t, c, h, w)
        elif self.how == "flatten":
            x = x.flatten(0, 1).contiguous()
        elif self.how == "rearrange":
            x = rearrange(x, "b t ... -> (b t) ...")
        elif self.how == "Rearrange":
            x = self.merge(x)
        else:
            x = x.permute(0, 2, 1, 3, 4)
        return self.stem(x).flatten(1).mean(-1)


@pytest.mark.parametrize("how", ["reshape", "flatten", "permute", "rearrange", "Rearrange"])
def test_a_stem_reading_frames_merged_into_the_batch_is_folded(how: str) -> None:
    """The stem reads the input's channels, only with its frames merged into the batch: the fix named was to
    change what comes before it or to replace it with new weights, while the fold is exact.  The fold is named
    with the input the model takes now (without it, the graph alone cannot show the reshape keeps the channels).
    einops' ``rearrange`` was taken for a function of the model's own that hands the input on as it is: the fold
    was named without the input, which adapt_input_channels refuses; its ``Rearrange`` layer was not followed."""
    model = _Frames(how).double().eval()
    r = paramcount(model, (2, 1, 16, 16))
    assert [f.fix for f in r.findings] == ["fold it with adapt_input_channels(model, 1, input=(2, 3, 16, 16))"]
    call = r.findings[0].fix.removeprefix("fold it with ")
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    grey = torch.randn(2, 2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited(grey), model(grey.expand(2, 2, 3, 16, 16)))


class _Siamese(nn.Module):
    """A change detector that runs one encoder on each of its two frames, ``x[:, 0]`` and ``x[:, 1]`` of
    ``(N, 2, C, H, W)``, as torchgeo's FCSiamDiff does."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x[:, 1, ...]) - self.stem(x[:, 0])


def test_a_stem_reading_one_frame_of_the_input_is_folded() -> None:
    """The stem reads the input's channels, one frame at a time: the fix named was to change what comes before it
    or to replace it with new weights, while the fold is exact.  It is now the fold, with the input the model
    takes now, named once (the same finding for each frame read)."""
    model = _Siamese().double().eval()
    r = paramcount(model, (2, 1, 16, 16))
    fold = "fold it with adapt_input_channels(model, 1, input=(2, 3, 16, 16))"
    assert [f.fix for f in r.findings] == [fold]
    edited = eval(fold.removeprefix("fold it with "), {"adapt_input_channels": adapt_input_channels, "model": model})
    grey = torch.randn(2, 2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited.model(grey), model(grey.expand(2, 2, 3, 16, 16)))
    assert r.total_for_input == sum(p.numel() for p in edited.model.parameters())


def test_the_fold_of_a_model_checking_its_input_size_names_the_input_it_accepts() -> None:
    """The model traces only for the input's size (a size check in forward) and refuses the fold's own guess of an
    image, (3, 224, 224): the fix named ran into that refusal.  It now names the input analysed, with the stem's
    channels, and runs as written; where the model takes the guess, the fix needs no input=."""
    model = SizeChecked(divisor=48).double().eval()
    r = paramcount(model, (1, 48, 96))
    assert [f.fix for f in r.findings] == ["fold it with adapt_input_channels(model, 1, input=(3, 48, 96))"]
    call = r.findings[0].fix.removeprefix("fold it with ")
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    grey = torch.randn(2, 1, 48, 96, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited(grey), model(grey.expand(2, 3, 48, 96)))
    takes_the_guess = paramcount(SizeChecked(), (1, 64, 64)).findings
    assert [f.fix for f in takes_the_guess] == ["fold it with adapt_input_channels(model, 1)"]
    assert adapt_input_channels(SizeChecked(), 1).changes[0].name == "stem.weight"


class _Derived(nn.Module):
    """Convolutions whose channels are not the input's: a waveform given a channel dim, a space-to-depth stem."""

    def __init__(self) -> None:
        super().__init__()
        self.wave, self.space = nn.Conv1d(2, 4, 3), nn.Conv2d(8, 4, 1)

    def forward(self, wave: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = image.shape
        blocks = image.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, h // 2, w // 2)
        return self.wave(wave.view(wave.shape[0], 1, -1)), self.space(blocks)


def test_a_stem_reading_channels_made_by_a_reshape_is_not_folded() -> None:
    """A reshape that makes the channels (a new dim of 1, channels and pixels mixed) is no input handed on."""
    r = paramcount(_Derived(), {"wave": (16,), "image": (3, 8, 8)})
    assert [(f.layer, f.got) for f in r.findings] == [("wave", 1), ("space", 12)]
    assert all(f.fix.startswith("what comes before it gives") for f in r.findings)


class _ChecksItsChannels(nn.Module):
    """A patch embedding that checks the channel count itself, as transformers' do (so it is traced opaque)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_channels = 3
        self.proj = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match the configuration")
        return self.proj(x).flatten(2).transpose(1, 2)


class _PatchModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = _ChecksItsChannels()
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embeddings(x)
        if tokens.shape[1] > 1:  # a question about the embeddings' output: answered as if folded
            tokens = tokens.mean(1)
        return self.head(tokens)


def test_a_layer_refusing_the_input_channels_is_analysed_as_folded() -> None:
    model = _PatchModel().eval()
    r = paramcount(model, (1, 16, 16))
    assert list(r.opaque) == ["embeddings"]  # it raises on one channel: analysed as one node
    assert [f.message for f in r.findings] == [
        "embeddings.proj (Conv2d) expects in_channels=3, got 1 — fold it with adapt_input_channels(model, 1)"
    ]
    folded = adapt_input_channels(model, 1).model  # the fix, run as written (num_channels updated too)
    assert folded.embeddings.num_channels == 1
    with torch.no_grad():
        assert r.output_shape == tuple(folded(torch.zeros(1, 1, 16, 16)).shape) == (1, 2)
    assert r.total_for_input == sum(p.numel() for p in folded.parameters()) == r.total - 2 * 8 * 16
    assert r.trusted and paramcount(model, (1, 16, 16), crosscheck="always").crosscheck.trust == "verified"
    with pytest.raises(ValueError, match="channel dimension"):  # what the real model says
        model(torch.zeros(1, 1, 16, 16))


def test_an_input_too_small_for_a_pooling_window_names_the_size_that_fits_and_propagation_goes_on() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2))
    r = paramcount(model, (3, 3, 8))  # 1 × 6 after the conv: too short for the 2 × 2 window in height only
    assert [layer.name for layer in r.invalid] == ["1", "3"]
    assert r.invalid[0].message == (
        "1 (MaxPool2d) expects spatial size (dim 0) >= 2, got 1 — use a larger input, or less downsampling "
        "before this layer; an input it takes is (3, 4, 4): paramcount(model, (3, 4, 4))"
    )  # the Linear after the flatten takes the features of (3, 4, 4) only: no larger size fits
    assert r.layer("1").output_shape == (1, 4, 1, 3) and r.output_shape == (1, 2)  # continued as if it fit
    with pytest.raises(RuntimeError, match="too small"):  # what torch says: no size, no fix
        model(torch.zeros(1, 3, 3, 8))
    assert paramcount(model, (3, 4, 4)).invalid == []  # the smallest input it names does fit


class _Positions(nn.Module):
    """Adds positions built for 4 steps, then pools over the steps (the add and the pool are functions)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pos", torch.zeros(1, 4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool1d((x + self.pos).transpose(1, 2), 3)


class _Table(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[torch.arange(x.shape[1])]


def test_a_function_is_named_in_messages_with_the_module_whose_forward_calls_it() -> None:
    # a function's row is its fx node name ("add"), nested under its module; a message shows no nesting, so it
    # says which forward makes the call: a name to find in the code, next to the row's name
    model = nn.Sequential()
    model.add_module("block", _Positions())
    with pytest.raises(RuntimeError, match="must match the size"):  # the real forward fails at the add
        model(torch.zeros(1, 6, 8))
    r = paramcount(model, (6, 8))
    assert [(layer.name, layer.path) for layer in r.invalid] == [("add", ("block",))]
    assert r.findings[0].layer == "add"  # the row's name, as in the JSON
    assert r.findings[0].message.startswith("add (add() in block) expects input=a compatible input, got ")
    assert r.invalid[0].message.startswith("add (add() in block) fails on ")
    assert "layer add (add() in block)" in check_contract(model, input=(6, 8)).table()

    table = _Table()  # at the top level, an index past the end (found from the positions, not by running it)
    with pytest.raises(IndexError, match="index 4 is out of bounds"):
        table(torch.zeros(1, 6, 8))
    (finding,) = paramcount(table, (6, 8)).findings
    assert finding.message.startswith("getitem_1 (getitem() in the model) expects index < 4, got 4 — ")
    conv = nn.Sequential(nn.Conv2d(3, 4, 3))  # a module: its qualified name is a name in the code already
    assert paramcount(conv, (1, 8, 8)).findings[0].message.startswith("0 (Conv2d) expects in_channels=3, got 1")


def test_vit_at_the_wrong_resolution_is_invalid_at_the_assert() -> None:
    r = paramcount(on_meta(torchvision.models.vit_b_16), (3, 200, 200))
    assert r.invalid and "Wrong image height" in r.invalid[0].message


class PadSame(nn.Conv2d):
    """A Conv2d subclass with its own forward (like timm's Conv2dSame): the Conv2d rule must not compute its shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.nn.functional.pad(x, (1, 2, 1, 2)))


def test_conv_subclass_with_own_forward_is_checked_and_resized() -> None:
    model = nn.Sequential(PadSame(3, 8, 4, stride=2), nn.ReLU())
    r = paramcount(model, (1, 17, 17), leaf_modules=[PadSame])  # as timm registers Conv2dSame
    assert [layer.name for layer in r.invalid] == ["0"]
    assert "expects in_channels=3, got 1" in r.invalid[0].message
    assert (r.layer("0").params, r.layer("0").params_for_input) == (8 * 3 * 16 + 8, 8 * 1 * 16 + 8)
    real = PadSame(1, 8, 4, stride=2)(torch.zeros(1, 1, 17, 17)).shape
    assert r.output_shape == tuple(real)


class StdConv(nn.Conv2d):
    """Weight standardisation in forward, as timm's ScaledStdConv2d: a functional conv on a computed weight."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return torch.nn.functional.conv2d(x, w * self.gain, self.bias, self.stride, self.padding)


def test_functional_conv_on_a_computed_weight_is_checked_and_resized() -> None:
    model = nn.Sequential(StdConv(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    r = paramcount(model, (1, 16, 16))
    assert [layer.message for layer in r.invalid] == [
        "0 (StdConv) expects in_channels=3, got 1 — fold it with adapt_input_channels(model, 1)"
    ]
    assert r.total_for_input == r.total - 8 * 3 * 9 + 8 * 1 * 9  # the weight shrinks; gain and bias stay
    assert (r.layer("0.weight").params, r.layer("0.weight").params_for_input) == (216, 72)
    assert r.output_shape == (1, 4, 16, 16)  # propagation went on, as if resized


class StandardisedConv(nn.Conv2d):
    """timm's StdConv2d (BiT's stem): the weight reaches F.conv2d only through the steps standardising it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, eps=1e-6)
        return F.conv2d(x, flat.reshape_as(self.weight), None, self.stride, self.padding)


@pytest.mark.parametrize("layer", [StandardisedConv(3, 8, 3, bias=False), HandWrittenConv()], ids=["std", "hand"])
def test_a_conv_on_a_weight_computed_in_its_forward_is_named_by_its_module(layer: nn.Module) -> None:
    """Found by a probe: timm's resnetv2_50x1_bit at 1 channel had its invalid row named ``conv2d`` (the fx node),
    not ``stem.conv``; the steps computing the weight read the parameter, the convolution did not."""
    model = nn.Sequential(nn.Identity(), nn.Sequential(layer), nn.ReLU())
    r = paramcount(model, (1, 16, 16))
    assert [(row.name, row.type) for row in r.invalid] == [("1.0", "conv2d()")]
    assert r.layer("1.0").output_shape == (1, 8, 14, 14)  # the row report.layer finds is the convolution
    steps = [row.name for row in r.layers if row.path[-1:] == ("1.0",) and row.type not in ("Parameter", "conv2d()")]
    assert steps and "1.0" not in steps  # the steps computing the weight keep their node names
    assert r.findings[0].layer == "1.0" and "what comes before it" not in r.findings[0].fix  # the input gives 1


def clip_window(window: list[int], size: list[int]) -> list[int]:
    """Shrinks ``window`` in place to the input size, as torchvision's video Swin does."""
    for i in range(2):
        if size[i] <= window[i]:
            window[i] = size[i]
    return window


torch.fx.wrap("clip_window")  # one node in the graph, called with the lists it edits


class _Windows(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.window = [4, 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = clip_window(list(self.window), [x.shape[2], x.shape[3]])
        if window[0] == x.shape[2]:  # Python asks about the edited list while tracing
            x = x + 1
        return nn.functional.avg_pool2d(x, window)


def test_a_wrapped_function_may_edit_its_list_arguments() -> None:
    """fx keeps a node's lists immutable; a real call gets lists it may edit, and so do the trace's questions
    and propagation (each call a new one: the graph's constants, and the model, stay as they were)."""
    model = _Windows()
    with torch.no_grad():
        expected = [tuple(model(torch.randn(1, 3, h, w)).shape) for h, w in ((2, 8), (8, 8))]
    reports = [paramcount(model, (3, h, w)) for h, w in ((2, 8), (8, 8))]
    assert [r.output_shape for r in reports] == expected == [(1, 3, 1, 2), (1, 3, 2, 2)]
    assert all(r.invalid == [] and r.trusted for r in reports)
    swept = paramcount_sweep(model, [(3, 2, 8), (3, 8, 8), (3, 2, 8)])
    assert [r.output_shape for r in swept] == [*expected, expected[0]]
    assert model.window == [4, 4]


class _SqueezesInPlace(nn.Module):
    """Changes its input's shape in place; a leaf, so propagation runs it on meta."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.resize_((1, *x.shape))  # no rule answers resize_: it runs on the tensor itself
        return x.sum(0)


class _TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.squeeze = _SqueezesInPlace()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(x)  # the same shape as b: propagation shares one meta tensor for both
        b = torch.sigmoid(x)
        return self.conv(b) + self.squeeze(a)


def test_a_fallback_changing_a_shape_in_place_leaves_the_shared_values_of_other_nodes_alone() -> None:
    model = _TwoBranches().eval()
    with torch.no_grad():
        expected = tuple(model(torch.randn(2, 4, 5, 5)).shape)
    report = paramcount(model, (4, 5, 5), batch=2, leaf_modules=[_SqueezesInPlace])
    assert report.output_shape == expected == (2, 4, 5, 5)
    assert report.invalid == [] and report.trusted


class _Halves(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1] // 2, 2, x.shape[2])


def test_python_operators_on_sizes_are_exact_and_a_users_rule_still_wins() -> None:
    """``x.shape[1] // 2`` is computed as Python computes it, recorded as its rule records it; a rule the user
    registers for the operator is called instead."""
    r = paramcount(_Halves(), (6, 5))
    floordiv = next(layer for layer in r.layers if layer.name == "floordiv")
    assert r.output_shape == (1, 3, 2, 5) and floordiv.shape_source == "rule" and floordiv.macs == 0
    seen: list[tuple[object, ...]] = []
    register_rule(operator.floordiv, shape=lambda m, a, b: seen.append((a, b)) or a // b)
    try:
        assert paramcount(_Halves(), (6, 5)).output_shape == (1, 3, 2, 5) and seen == [(6, 2)]
    finally:
        unregister_rule(operator.floordiv)


def test_a_convolution_with_another_padding_mode_pads_by_its_own_list() -> None:
    """Found by a differential probe: reflect/replicate/circular padding pads by ``_reversed_padding_repeated_twice``
    (``padding`` edited after construction does not change it), and reflect needs the input larger than the pad."""
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    conv.padding = (0, 0)  # edited in place: the real forward still pads by 1
    real = tuple(conv(torch.randn(1, 3, 16, 16)).shape)
    assert paramcount(conv, (3, 16, 16)).output_shape == real == (1, 4, 16, 16)
    small = nn.Sequential(nn.Conv2d(3, 4, 1, padding=3, padding_mode="reflect"))
    with pytest.raises(RuntimeError, match="Padding size should be less than"):
        small(torch.randn(1, 3, 2, 2))
    (bad,) = paramcount(small, (3, 2, 2)).invalid
    assert "padding_mode='reflect'" in bad.message
    replicate = nn.Conv2d(3, 4, 3, padding=2, padding_mode="replicate")
    assert paramcount(replicate, (3, 5, 7)).output_shape == tuple(replicate(torch.randn(1, 3, 5, 7)).shape)


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_a_stem_replaced_by_hand_names_the_settings_still_guarding_the_old_channels(kind: str) -> None:
    """Found by a probe: a Hugging Face model whose stem was replaced by a 1-channel conv, ``config.num_channels``
    left at 3, was reported failing with transformers' own message and no fix; the fix now sets what still says 3,
    and runs as written: the real model then runs, and the report has no invalid layer."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "vit":
        config = transformers.ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
        model = transformers.ViTForImageClassification(config).eval()
        model.vit.embeddings.patch_embeddings.projection = nn.Conv2d(1, 32, 8, 8)
    else:
        config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
        model = transformers.ResNetForImageClassification(config).eval()
        model.resnet.embedder.embedder.convolution = nn.Conv2d(1, 8, 7, 2, 3, bias=False)
    grey = torch.randn(1, 1, 32, 32)
    with pytest.raises(ValueError, match="channel dimension of the pixel values"):
        model(grey)  # the truth: the edit alone does not run
    (finding,) = paramcount(model, (1, 32, 32)).findings
    fix = re.search(r"still says? 3: (.*)$", finding.message)
    assert fix is not None, finding.message
    exec(fix.group(1), {"model": model})  # runs as written
    assert model(grey).logits.shape == (1, 2)
    report = paramcount(model, (1, 32, 32))
    assert not report.invalid and report.total == sum(p.numel() for p in model.parameters())


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_a_layer_inside_failing_for_its_size_is_not_told_to_change_the_models_input_channels() -> None:
    """Found by fuzzer probe 45: MONAI's RegUNet refuses an odd size in its first downsampling block, which takes
    the stem's 4 channels; the fix said "encode_pools.0.layer.conv takes 4 channels but in_channels still says 3:
    model.in_channels = 4", a setting of the model's input (3 channels, as given) that changes nothing.  Only a
    layer reading the model's input is told about what guards its channels."""
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.RegUNet(spatial_dims=2, in_channels=3, num_channel_initial=4, depth=2, out_channels=2, pooling=False)
    with pytest.raises(ValueError, match="spatial dimensions be even"):
        model(torch.zeros(2, 3, 17, 17))
    (finding,) = paramcount(model, (3, 17, 17), batch=2).findings
    assert finding.layer == "encode_pools.0" and "in_channels" not in finding.fix, finding.fix
    assert "paramcount(model, (3, 16, 16), batch=2)" in finding.fix
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 2, 16, 16)


class _ChannelsLastSplitView(nn.Module):
    """einsum gives a channels-last output; split and cat keep it (the slice of 1 channel too); .view() then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bcxy,oc->boxy", x, self.w)
        a, b = y.split([1, 3], dim=1)
        z = torch.cat([b, a], dim=1)
        return z.view(z.size(0), -1)


def test_a_slice_of_one_channel_keeps_its_strides_and_cat_its_memory_format() -> None:
    """Found by fuzzer probe 30: the cat of a channels-last slice of 1 channel was run on an alias made with
    ``.view()``, which rewrote the size-1 dim's stride: cat's output became contiguous, and the ``.view()`` after it,
    which fails in a real forward, was reported fitting (trusted)."""
    model = _ChannelsLastSplitView()
    with pytest.raises(RuntimeError, match="view size is not compatible") as real:
        model(torch.randn(2, 3, 5, 6))
    report = paramcount(model, (3, 5, 6), batch=2)
    assert [layer.name for layer in report.invalid] == ["view"]
    assert str(real.value).split(". Use")[0] in report.invalid[0].message


class _LinearPatches(nn.Module):
    """timm's ``NaFlexEmbeds`` (a leaf timm keeps from torch.fx): the image cut into 4 × 4 patches of ``in_chans``
    channels, each patch's values read by one Linear; no convolution."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Linear(in_chans * 16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape  # patches of 4 × 4 pixels, each (pixel row, pixel column, channel): timm's order
        patches = x.reshape(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, 16 * c)
        return self.proj(patches)


@pytest.mark.parametrize("channels", [1, 4])
def test_a_leaf_reading_the_input_through_a_patch_linear_is_told_its_fold_and_counted_folded(channels: int) -> None:
    """Found by a probe of timm's families: paramcount(naflexvit_base_patch16_map, (1, 384, 384)) said "embeds
    (NaFlexEmbeds) fails on ((1, 1, 384, 384),): a and b must have same reduction dim", with no fix, and counted
    ``total_for_input`` as the 3-channel model's (its patch Linear of 768 inputs unchanged).  Now the Linear is
    named with the fold that runs as written (on the image the model takes: the fold needs one to look into the
    leaf), and the count and output are those of the model built for the channels."""
    model = nn.Sequential(_LinearPatches(), nn.Flatten(), nn.Linear(16 * 8, 5))
    report = paramcount(model, (channels, 16, 16), leaf_modules=[_LinearPatches])
    assert [layer.name for layer in report.invalid] == ["0"]
    mode = "" if channels == 1 else ", mode='spread'"
    assert report.invalid[0].message.endswith(
        f"0.proj (Linear) expects in_features=48, got {16 * channels} — fold it with "
        f"adapt_input_channels(model, {channels}{mode}, input=(3, 16, 16))"  # no convolution says its channels
    )
    built = nn.Sequential(_LinearPatches(channels), nn.Flatten(), nn.Linear(16 * 8, 5))
    assert report.total_for_input == sum(p.numel() for p in built.parameters())
    assert report.output_shape == tuple(built(torch.randn(1, channels, 16, 16)).shape)
    fix = re.search(r"adapt_input_channels\(model, .*\)$", report.invalid[0].message)
    assert fix is not None
    edited = eval(fix.group(0), {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    assert edited(torch.randn(2, channels, 16, 16)).shape == (2, 5)
