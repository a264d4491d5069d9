"""Tests for torchsurgeon.fold: exactness of each fold on real layer outputs, timm parity, errors."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from torchsurgeon.errors import InputError, SurgeryError
from torchsurgeon.fold import (
    fold_normalization,
    fold_repeat,
    fold_spread,
    fold_sum,
    fold_weight,
    fold_zero_extra,
    is_exact_fold,
    recognise_fold,
)
from torchsurgeon.records import FoldMode

PROPERTY = settings(deadline=None, max_examples=25)

_CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class Layer:
    """A random Linear (``dims == 0``) or Conv1d/2d/3d layer, run with the functional API."""

    dims: int
    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    spatial: tuple[int, ...]
    batch: int
    seed: int

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    def run(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Output of the layer on ``x``, with ``weight``/``bias`` replacing the layer's own."""
        w = self.weight if weight is None else weight
        b = self.bias if bias is None else bias
        if self.dims == 0:
            return F.linear(x, w, b)
        return _CONVS[self.dims](x, w, b, self.stride, self.padding, self.dilation)

    def inputs(self, channels: int, salt: int = 0) -> torch.Tensor:
        """A random input of ``channels`` channels for this layer."""
        gen = torch.Generator().manual_seed(self.seed + 7919 * (salt + 1))
        shape = (self.batch, channels, *self.spatial)
        return torch.randn(shape, generator=gen, dtype=self.weight.dtype)


@st.composite
def layers(
    draw: st.DrawFn,
    in_channels: st.SearchStrategy[int],
    padding: bool = True,
) -> Layer:
    """Random Linear / Conv1d / Conv2d / Conv3d layers with small shapes."""
    dims = draw(st.integers(0, 3))
    in_ch = draw(in_channels)
    out_ch = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    batch = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31 - 1))
    max_k = 3 if dims < 3 else 2
    kernel = tuple(draw(st.integers(1, max_k)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    pad = tuple(draw(st.integers(0, 2 if padding else 0)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    spatial = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 3)) for k, p, d in zip(kernel, pad, dilation))
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn((out_ch, in_ch, *kernel), generator=gen, dtype=dtype)
    bias = torch.randn(out_ch, generator=gen, dtype=dtype) if draw(st.booleans()) else None
    return Layer(dims, weight, bias, stride, pad, dilation, spatial, batch, seed)


def _assert_same_output(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Two ways of computing the same layer output agree (up to float rounding)."""
    tol = 1e-9 if expected.dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def _replicate(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A 1-channel input replicated to ``channels`` channels (a materialised copy)."""
    return x.expand(x.shape[0], channels, *x.shape[2:]).contiguous()


# --- exactness on real layer outputs -------------------------------------------------------


@PROPERTY
@given(layer=layers(in_channels=st.integers(1, 5)))
def test_sum_is_exact_on_grey_input(layer: Layer) -> None:
    grey = layer.inputs(1)
    expected = layer.run(_replicate(grey, layer.in_channels))
    folded = fold_sum(layer.weight)
    assert folded.shape == (layer.weight.shape[0], 1, *layer.weight.shape[2:])
    _assert_same_output(layer.run(grey, folded), expected)


@PROPERTY
@given(layer=layers(in_channels=st.integers(1, 5)), channels=st.integers(1, 6))
def test_spread_is_exact_on_grey_replicated_to_new_channels(layer: Layer, channels: int) -> None:
    grey = layer.inputs(1)
    expected = layer.run(_replicate(grey, layer.in_channels))
    folded = fold_spread(layer.weight, channels)
    assert folded.shape[1] == channels
    got = layer.run(_replicate(grey, channels), folded)
    _assert_same_output(got, expected)


@PROPERTY
@given(layer=layers(in_channels=st.integers(1, 4)), tiles=st.integers(1, 3))
def test_repeat_is_exact_on_input_tiled_alike(layer: Layer, tiles: int) -> None:
    x = layer.inputs(layer.in_channels)
    expected = layer.run(x)
    channels = tiles * layer.in_channels
    folded = fold_repeat(layer.weight, channels)
    tiled = x.repeat(1, tiles, *([1] * len(layer.spatial)))
    _assert_same_output(layer.run(tiled, folded), expected)


@PROPERTY
@given(layer=layers(in_channels=st.integers(1, 4)), extra=st.integers(1, 3))
def test_zero_extra_is_exact_whatever_the_extra_channels(layer: Layer, extra: int) -> None:
    x = layer.inputs(layer.in_channels)
    expected = layer.run(x)
    folded = fold_zero_extra(layer.weight, layer.in_channels + extra)
    with_extra = torch.cat([x, 100.0 * layer.inputs(extra, salt=1)], dim=1)
    _assert_same_output(layer.run(with_extra, folded), expected)


@PROPERTY
@given(layer=layers(in_channels=st.integers(1, 4)), channels=st.integers(2, 8))
def test_repeat_matches_a_channel_by_channel_construction(layer: Layer, channels: int) -> None:
    w, in_ch = layer.weight, layer.in_channels
    expected = torch.stack([w[:, c % in_ch] * (in_ch / channels) for c in range(channels)], dim=1)
    torch.testing.assert_close(fold_repeat(w, channels), expected, rtol=0, atol=0)


@PROPERTY
@given(layer=layers(in_channels=st.integers(1, 4), padding=False), data=st.data())
def test_normalization_fold_is_exact_without_padding(layer: Layer, data: st.DataObject) -> None:
    in_ch, dtype = layer.in_channels, layer.weight.dtype
    floats = st.floats(-2.0, 2.0, allow_nan=False)
    mean = data.draw(st.lists(floats, min_size=in_ch, max_size=in_ch))
    std = data.draw(st.lists(st.floats(0.1, 3.0), min_size=in_ch, max_size=in_ch))
    x = layer.inputs(in_ch)
    view = (1, in_ch) + (1,) * len(layer.spatial)
    normalised = (x - torch.tensor(mean, dtype=dtype).view(view)) / torch.tensor(std, dtype=dtype).view(view)
    expected = layer.run(normalised)
    weight, bias = fold_normalization(layer.weight, layer.bias, mean, std)
    _assert_same_output(layer.run(x, weight, bias), expected)


def test_normalization_fold_is_not_exact_with_zero_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = torch.rand(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    expected = F.conv2d((x - m) / s, weight, bias, padding=1)
    w2, b2 = fold_normalization(weight, bias, mean, std)
    got = F.conv2d(x, w2, b2, padding=1)
    # the interior never sees the padding: exact there
    torch.testing.assert_close(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])
    # the border does: padded zeros mean different things before and after the fold
    border = (got - expected).abs()
    border[..., 1:-1, 1:-1] = 0
    assert border.max() > 0.1


def test_normalization_accepts_tensors_and_keeps_bias_dtype() -> None:
    weight = torch.randn(2, 3, 1, 1)
    mean = torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)
    std = torch.tensor([2.0, 1.0, 0.5])
    bias = torch.tensor([1.0, -1.0], dtype=torch.float16)
    w2, b2 = fold_normalization(weight, bias, mean, std)
    assert w2.dtype == torch.float32 and b2.dtype == torch.float16
    expected_b = bias.double() - (weight.double().flatten(1) * torch.tensor([0.25, 0.25, 0.0])).sum(1)
    torch.testing.assert_close(b2, expected_b.half())
    _, b_none = fold_normalization(weight, None, mean, std)
    assert b_none.shape == (2,) and b_none.dtype == torch.float32


# --- timm parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", range(1, 9))
def test_repeat_is_identical_to_timm(channels: int, dtype: torch.dtype) -> None:
    timm_models = pytest.importorskip("timm.models")
    weight = torch.randn(16, 3, 7, 7, generator=torch.Generator().manual_seed(channels)).to(dtype)
    expected = timm_models.adapt_input_conv(channels, weight.clone())
    got = fold_repeat(weight, channels)
    assert got.dtype == expected.dtype == dtype
    assert got.shape == expected.shape == (16, channels, 7, 7)
    assert torch.equal(got, expected)


def test_repeat_float64_differs_from_timm_only_by_float32_rounding() -> None:
    timm_models = pytest.importorskip("timm.models")
    weight = torch.randn(16, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = timm_models.adapt_input_conv(5, weight)
    got = fold_repeat(weight, 5)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    # timm computes in float32: the float64 result is the more precise one
    exact = weight.repeat(1, 2, 1, 1)[:, :5] * 0.6
    assert (got - exact).abs().max() < 1e-15 < (expected - exact).abs().max()
    assert recognise_fold(weight, expected) is FoldMode.REPEAT


def test_repeat_to_same_channels_returns_a_copy_not_the_input() -> None:
    weight = torch.randn(4, 3, 3, 3)
    out = fold_repeat(weight, 3)
    assert torch.equal(out, weight)
    out.add_(1.0)
    assert not torch.equal(out, weight)


# --- purity: dtype, device, inputs untouched -------------------------------------------------

_FOLDS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": fold_sum,
    "spread": lambda w: fold_spread(w, 4),
    "repeat": lambda w: fold_repeat(w, 5),
    "repeat_same": lambda w: fold_repeat(w, 3),
    "repeat_one": lambda w: fold_repeat(w, 1),
    "zero_extra": lambda w: fold_zero_extra(w, 5),
    "fold_weight": lambda w: fold_weight(w, 2, "spread"),
    "normalization": lambda w: fold_normalization(w, None, [0.1, 0.2, 0.3], [1.0, 2.0, 3.0])[0],
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(_FOLDS))
def test_folds_keep_dtype_and_device_and_leave_input_alone(name: str, dtype: torch.dtype) -> None:
    weight = torch.randn(4, 3, 3, 3).to(dtype)
    before = weight.clone()
    out = _FOLDS[name](weight)
    assert out.dtype == dtype
    assert out.device == weight.device
    assert out.is_contiguous()
    assert torch.equal(weight, before)
    assert out.untyped_storage().data_ptr() != weight.untyped_storage().data_ptr()


@pytest.mark.parametrize("name", sorted(_FOLDS))
def test_folds_work_on_meta_weights(name: str) -> None:
    out = _FOLDS[name](torch.empty(4, 3, 3, 3, device="meta"))
    assert out.device.type == "meta"


def test_normalization_leaves_bias_mean_std_alone() -> None:
    weight, bias = torch.randn(4, 3, 3, 3), torch.randn(4)
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 2.0, 3.0])
    copies = [t.clone() for t in (weight, bias, mean, std)]
    fold_normalization(weight, bias, mean, std)
    for t, c in zip((weight, bias, mean, std), copies):
        assert torch.equal(t, c)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_folds_are_computed_in_float32(dtype: torch.dtype) -> None:
    weight = torch.randn(8, 3, 5, 5).to(dtype)
    assert torch.equal(fold_sum(weight), weight.float().sum(1, keepdim=True).to(dtype))
    spread = (weight.float().sum(1, keepdim=True) / 7).to(dtype).expand(8, 7, 5, 5)
    assert torch.equal(fold_spread(weight, 7), spread)


def test_parameter_input_gives_a_plain_tensor_and_stays_unchanged() -> None:
    conv = torch.nn.Conv2d(3, 8, 3)
    before = conv.weight.detach().clone()
    out = fold_repeat(conv.weight, 4)
    assert not out.requires_grad and not isinstance(out, torch.nn.Parameter)
    assert torch.equal(conv.weight.detach(), before)


# --- fold_weight dispatch ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "channels", "direct"),
    [
        ("sum", 1, lambda w, c: fold_sum(w)),
        (FoldMode.SUM, 1, lambda w, c: fold_sum(w)),
        ("spread", 5, fold_spread),
        ("Spread", 2, fold_spread),
        (FoldMode.REPEAT, 4, fold_repeat),
        ("repeat", 1, fold_repeat),
        ("zero_extra", 6, fold_zero_extra),
        (FoldMode.ZERO_EXTRA, 4, fold_zero_extra),
    ],
)
def test_fold_weight_dispatches_on_mode(
    mode: FoldMode | str, channels: int, direct: Callable[[torch.Tensor, int], torch.Tensor]
) -> None:
    weight = torch.randn(4, 3, 3, 3)
    out = fold_weight(weight, channels, mode)
    assert out.shape == (4, channels, 3, 3)
    assert torch.equal(out, direct(weight, channels))


# --- recognise_fold ----------------------------------------------------------------------------

_SHAPES = [(8, 3), (8, 3, 5), (8, 3, 3, 3), (4, 3, 2, 2, 2), (6, 4, 3, 3)]
_ROUND_TRIPS = [
    (FoldMode.SUM, 1),
    (FoldMode.SPREAD, 2),
    (FoldMode.SPREAD, 3),
    (FoldMode.SPREAD, 7),
    (FoldMode.REPEAT, 2),
    (FoldMode.REPEAT, 5),
    (FoldMode.REPEAT, 8),
    (FoldMode.ZERO_EXTRA, 5),
    (FoldMode.ZERO_EXTRA, 9),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", _SHAPES, ids=str)
@pytest.mark.parametrize(("mode", "channels"), _ROUND_TRIPS, ids=str)
def test_recognise_fold_round_trips(mode: FoldMode, channels: int, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(len(shape) * 100 + channels)
    original = torch.randn(shape, generator=gen).to(dtype)
    edited = fold_weight(original, channels, mode)
    assert recognise_fold(original, edited) is mode


@pytest.mark.parametrize("mode", [FoldMode.SPREAD, FoldMode.REPEAT])
def test_recognise_fold_calls_every_one_channel_fold_sum(mode: FoldMode) -> None:
    original = torch.randn(8, 3, 3, 3)
    assert recognise_fold(original, fold_weight(original, 1, mode)) is FoldMode.SUM


def test_recognise_fold_returns_none_when_no_fold_matches() -> None:
    gen = torch.Generator().manual_seed(3)
    original = torch.randn(8, 3, 3, 3, generator=gen)
    for channels in (1, 2, 3, 4, 6):
        random = torch.randn(8, channels, 3, 3, generator=gen)
        assert recognise_fold(original, random) is None
    # identical weights are kept, not folded
    assert recognise_fold(original, original.clone()) is None
    # a fold then fine-tuned a little is no longer that fold
    nudged = fold_spread(original, 4)
    nudged[0, 0, 0, 0] += 1e-2
    assert recognise_fold(original, nudged) is None
    # other output channels or kernel: not a fold of this weight
    assert recognise_fold(original, fold_sum(original)[:4]) is None
    assert recognise_fold(original, fold_sum(original)[..., :2]) is None
    assert recognise_fold(original, fold_sum(original).flatten(2)) is None


@pytest.mark.parametrize(("mode", "channels"), _ROUND_TRIPS, ids=str)
def test_recognise_fold_tells_a_fold_of_many_filters_from_one_changed_in_a_late_filter(
    mode: FoldMode, channels: int
) -> None:
    """recognise_fold compares the first filters first: a weight of 64 filters folded is recognised, and the same
    with one value of filter 40 changed is no fold (nor a kept weight)."""
    gen = torch.Generator().manual_seed(channels)
    original = torch.randn(64, 3, 3, 3, generator=gen)
    edited = fold_weight(original, channels, mode)
    assert recognise_fold(original, edited) is mode
    edited[40, 0, 1, 1] += 0.5
    assert recognise_fold(original, edited) is None
    kept = original.clone()
    kept[40, 2, 0, 0] += 0.5
    assert recognise_fold(original, kept) is None


def test_recognise_fold_accepts_mixed_dtypes() -> None:
    original = torch.randn(8, 3, 3, 3, dtype=torch.float64)
    assert recognise_fold(original, fold_repeat(original, 4).half()) is FoldMode.REPEAT
    assert recognise_fold(original.half(), fold_spread(original, 2)) is FoldMode.SPREAD


# --- errors ----------------------------------------------------------------------------------

_CHANNEL_FOLDS: list[Callable[[torch.Tensor, int], object]] = [
    fold_spread,
    fold_repeat,
    fold_zero_extra,
    lambda w, c: fold_weight(w, c, "spread"),
]


@pytest.mark.parametrize("fold", _CHANNEL_FOLDS)
@pytest.mark.parametrize("channels", [0, -1])
def test_non_positive_channels_are_rejected(fold: Callable[[torch.Tensor, int], object], channels: int) -> None:
    with pytest.raises(InputError, match=rf"positive int, got channels={channels}$"):
        fold(torch.randn(4, 3, 3, 3), channels)


@pytest.mark.parametrize("channels", [2.0, True, "3", None])
def test_non_int_channels_are_rejected(channels: object) -> None:
    with pytest.raises(InputError, match=r"channels must be a positive int, got channels="):
        fold_weight(torch.randn(4, 3, 3, 3), channels, "repeat")  # type: ignore[arg-type]


def test_sum_to_more_than_one_channel_is_rejected() -> None:
    with pytest.raises(
        SurgeryError,
        match=r"sum folds to 1 channel, got channels=4 — use mode='spread' or mode='repeat'",
    ):
        fold_weight(torch.randn(4, 3, 3, 3), 4, "sum")


@pytest.mark.parametrize("channels", [1, 2])
def test_zero_extra_cannot_reduce_channels(channels: int) -> None:
    with pytest.raises(SurgeryError, match=rf"channels > 3 .* got channels={channels} — .*'spread'"):
        fold_weight(torch.randn(4, 3, 3, 3), channels, FoldMode.ZERO_EXTRA)


@pytest.mark.parametrize("mode", ["random", FoldMode.RANDOM])
def test_random_is_not_a_fold(mode: FoldMode | str) -> None:
    with pytest.raises(SurgeryError, match=r"mode='random' is not a fold.*re-initialise"):
        fold_weight(torch.randn(4, 3, 3, 3), 4, mode)


@pytest.mark.parametrize("mode", ["avg", "", "zero-extra"])
def test_unknown_mode_string_lists_valid_modes(mode: str) -> None:
    match = rf"mode='{mode}' — (did you mean .*; )?use one of 'sum', 'spread', 'repeat', 'zero_extra'$"
    with pytest.raises(InputError, match=match):
        fold_weight(torch.randn(4, 3, 3, 3), 4, mode)


@pytest.mark.parametrize("mode", ["randm", "rando", "Random "])
def test_unknown_mode_never_offers_random(mode: str) -> None:
    """A typo of 'random' was answered "did you mean 'random'? mode='random'", a call fold_weight refuses."""
    with pytest.raises(InputError) as info:
        fold_weight(torch.randn(4, 3, 3, 3), 1, mode)
    assert "random" not in str(info.value).replace(repr(mode), "")
    for offered in re.findall(r"'(\w+)'", str(info.value).replace(repr(mode), "")):  # each one offered runs
        assert fold_weight(torch.randn(4, 3, 3, 3), 6 if offered != "sum" else 1, offered).shape[1] in (1, 6)


def test_is_exact_fold_refuses_random() -> None:
    with pytest.raises(SurgeryError, match=r"mode='random' is not a fold"):
        is_exact_fold("random", 3, 1)


def test_mode_of_wrong_type_is_rejected() -> None:
    with pytest.raises(InputError, match=r"mode=3 — use one of 'sum', 'spread'"):
        fold_weight(torch.randn(4, 3, 3, 3), 4, 3)  # type: ignore[arg-type]


_ALL_CALLS: dict[str, Callable[[torch.Tensor], object]] = {
    "sum": fold_sum,
    "spread": lambda w: fold_spread(w, 2),
    "repeat": lambda w: fold_repeat(w, 2),
    "zero_extra": lambda w: fold_zero_extra(w, 4),
    "fold_weight": lambda w: fold_weight(w, 1, "sum"),
    "normalization": lambda w: fold_normalization(w, None, [0.0], [1.0]),
    "recognise_original": lambda w: recognise_fold(w, torch.randn(4, 1, 3)),
    "recognise_edited": lambda w: recognise_fold(torch.randn(4, 1, 3), w),
}


@pytest.mark.parametrize("name", sorted(_ALL_CALLS))
def test_one_dimensional_weight_is_rejected(name: str) -> None:
    with pytest.raises(SurgeryError, match=r"of shape \(5,\) is not a conv or linear weight"):
        _ALL_CALLS[name](torch.randn(5))


@pytest.mark.parametrize("name", sorted(_ALL_CALLS))
def test_non_float_weight_is_rejected(name: str) -> None:
    with pytest.raises(InputError, match=r"dtype torch.int64, only floating-point"):
        _ALL_CALLS[name](torch.ones(4, 1, 3, dtype=torch.int64))


def test_non_tensor_weight_is_rejected() -> None:
    with pytest.raises(InputError, match=r"weight must be a torch.Tensor, got list"):
        fold_sum([[1.0, 2.0]])  # type: ignore[arg-type]


def test_zero_input_channels_are_rejected() -> None:
    with pytest.raises(SurgeryError, match=r"shape \(4, 0, 3\) has 0 input channels"):
        fold_repeat(torch.randn(4, 0, 3), 3)


@pytest.mark.parametrize(
    ("mean", "std", "error", "match"),
    [
        ([0.1, 0.2], [1.0, 1.0, 1.0], SurgeryError, r"mean has 2 values but the weight has 3 input"),
        ([0.1, 0.2, 0.3], [1.0] * 4, SurgeryError, r"std has 4 values but the weight has 3 input"),
        ([0.1, 0.2, 0.3], [1.0, 0.0, 1.0], InputError, r"std must be > 0 .*std=\[1\.0, 0\.0, 1\.0\]"),
        ([0.1, 0.2, 0.3], [1.0, -2.0, 1.0], InputError, r"std must be > 0 .*-2\.0"),
        ([0.1, math.nan, 0.3], [1.0] * 3, InputError, r"mean must be finite, got mean=\[0\.1"),
        ("abc", [1.0] * 3, InputError, r"mean must be a sequence of floats or a tensor, got 'abc'"),
    ],
)
def test_bad_normalization_values_are_rejected(mean: object, std: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        fold_normalization(torch.randn(4, 3, 3, 3), None, mean, std)  # type: ignore[arg-type]


def test_normalization_bias_of_wrong_shape_is_rejected() -> None:
    with pytest.raises(SurgeryError, match=r"bias of shape \(3,\) does not match .* expected \(4,\)"):
        fold_normalization(torch.randn(4, 3, 3, 3), torch.zeros(3), [0.0] * 3, [1.0] * 3)


@pytest.mark.parametrize("channels", [1, 2])
def test_zero_extra_to_fewer_channels_names_the_one_mode_that_folds_to_that_count(channels: int) -> None:
    """zero_extra to fewer channels told to use mode='sum' for 2 channels too, which refuses them (sum folds to
    1): the mode named now folds the weight to that count."""
    weight = torch.randn(8, 3, 3, 3)
    with pytest.raises(SurgeryError, match=rf"got channels={channels} — use mode='(\w+)'.* to reduce") as info:
        fold_weight(weight, channels, "zero_extra")
    for mode in re.findall(r"mode='(\w+)'", str(info.value).partition(" — ")[2]):
        assert fold_weight(weight, channels, mode).shape == (8, channels, 3, 3)
    with pytest.raises(SurgeryError, match=r"got channels=3 — it takes them already: nothing to fold"):
        fold_weight(weight, 3, "zero_extra")
