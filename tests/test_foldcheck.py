"""Folds of layers whose forward computes their weight: exact (a per-channel gain set), or refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import Conv2dSame, ScaledStdConv2d, StdConv2d
from torch import nn

from torchsurgeon import ParamChange, SurgeryError, adapt_input_channels, check_surgery
from torchsurgeon.foldcheck import computes_its_weight


def _net(stem: nn.Module) -> nn.Module:
    return nn.Sequential(stem, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).double().eval()


def _inputs(mode: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(RGB input of the original, input of the folded model) that the fold relates."""
    torch.manual_seed(1)
    if mode in ("sum", "spread"):
        grey = torch.randn(2, 1, 13, 11, dtype=torch.float64)
        return grey.expand(2, 3, 13, 11), grey.expand(2, channels, 13, 11)
    rgb = torch.randn(2, 3, 13, 11, dtype=torch.float64)
    if mode == "repeat":
        return rgb, rgb.repeat(1, channels // 3, 1, 1)
    return rgb, torch.cat([rgb, torch.randn(2, channels - 3, 13, 11, dtype=torch.float64)], dim=1)


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(
    mode_channels=st.sampled_from([("sum", 1), ("spread", 2), ("spread", 4), ("repeat", 6), ("zero_extra", 5)]),
    kernel=st.integers(2, 3),  # a 1x1 standardised kernel on replicated channels gives zeros either way
    gamma=st.floats(0.5, 2.0),
    gains=st.lists(st.floats(0.1, 3.0), min_size=8, max_size=8),
)
def test_a_scaled_standardised_stem_is_folded_exactly(
    mode_channels: tuple[str, int], kernel: int, gamma: float, gains: list[float]
) -> None:
    mode, channels = mode_channels
    stem = ScaledStdConv2d(3, 8, kernel, gamma=gamma)
    with torch.no_grad():
        stem.gain.copy_(torch.tensor(gains).reshape(8, 1, 1, 1))
    model = _net(stem)
    result = adapt_input_channels(model, channels, mode=mode)
    weight, gain = [c for c in result.changes if c.status == ParamChange.FOLDED]
    assert weight.name == "0.weight" and "gain set" in weight.message and gain.name == "0.gain"
    x_rgb, x_new = _inputs(mode, channels)
    with torch.no_grad():
        want, got = model(x_rgb), result.model(x_new)
    assert (got - want).abs().max().item() <= 1e-10 * want.abs().max().item()
    # check_surgery says so too (it called the fold re-initialised, with adapt_input_channels as the fix)
    report = check_surgery(model, result.model, (channels, 13, 11))
    statuses = {p.name: p.status for p in report.params if p.name.startswith("0.")}
    assert statuses == {"0.weight": ParamChange.FOLDED, "0.bias": ParamChange.KEPT, "0.gain": ParamChange.FOLDED}
    assert report.verdict.startswith("1 folded (0)") and f"{mode} fold of its standardised weight" in str(report)


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
@pytest.mark.parametrize("stem", [StdConv2d(3, 8, 3), "transformers"], ids=["timm StdConv2d", "transformers BiT"])
def test_a_standardised_stem_without_a_gain_is_refused_with_the_ways_out(stem: nn.Module | str) -> None:
    if stem == "transformers":
        pytest.importorskip("transformers")
        from transformers.models.bit.modeling_bit import WeightStandardizedConv2d

        stem = WeightStandardizedConv2d(3, 8, 3)
    assert isinstance(stem, nn.Module) and computes_its_weight(stem)
    model = _net(stem)
    with pytest.raises(SurgeryError, match=r"0 \(\w+\) computes the weight it uses .*relative difference 0\.\d+"):
        adapt_input_channels(model, 1)
    replaced = adapt_input_channels(model, 1, mode="random").model  # the way out the message names
    assert replaced(torch.randn(1, 1, 9, 9, dtype=torch.float64)).shape == (1, 2)


def test_a_conv_with_its_own_forward_that_keeps_its_weight_folds_as_before() -> None:
    model = _net(Conv2dSame(3, 8, 3, stride=2))  # pads in its forward, convolves with its weight as it is
    result = adapt_input_channels(model, 1)
    (folded,) = [c for c in result.changes if c.status == ParamChange.FOLDED]
    assert folded.message == "sum fold of 3 → 1 channels"
    x_rgb, x_grey = _inputs("sum", 1)
    with torch.no_grad():
        assert torch.allclose(result.model(x_grey), model(x_rgb), rtol=0, atol=1e-12)


@pytest.mark.zoo
def test_nfnet_is_folded_exactly() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("nfnet_l0", pretrained=False).double().eval()
    result = adapt_input_channels(model, 1)
    grey = torch.randn(1, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        want, got = model(grey.expand(1, 3, 64, 64)), result.model(grey)
    assert (got - want).abs().max().item() <= 1e-10 * want.abs().max().item()


def test_the_fix_an_invalid_standardised_stem_names_runs() -> None:
    from torchsurgeon import paramcount

    model = _net(StdConv2d(3, 8, 3)).float()
    (finding,) = paramcount(model, (1, 16, 16)).findings
    assert finding.layer == "0" and "no fold keeps its outputs" in finding.fix
    call = finding.fix[finding.fix.index("adapt_input_channels(") :]
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert edited(torch.randn(1, 1, 16, 16)).shape == (1, 2)
    nfnet_stem = _net(ScaledStdConv2d(3, 8, 3)).float()
    assert paramcount(nfnet_stem, (1, 16, 16)).findings[0].fix == "fold it with adapt_input_channels(model, 1)"


def test_a_layer_that_runs_in_its_own_dtype_only_is_compared_in_it() -> None:
    """Found by a probe: a QAT layer's fake quantisation refuses float64, and adapt_input_channels raised torch's
    raw error instead of its own."""
    import torch.ao.quantization as tq

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).train()
    model.qconfig = tq.get_default_qat_qconfig("x86")
    model = tq.prepare_qat(tq.fuse_modules_qat(model, [["0", "1", "2"]]))
    model(torch.randn(2, 3, 8, 8))  # observers see data
    edited = adapt_input_channels(model.eval(), 1).model  # compared with its fake quantisation off: exact
    assert edited(torch.randn(2, 1, 8, 8)).shape == (2, 8, 6, 6)
