"""segmentation_models_pytorch zoo: architectures × encoders, built as users build them (``encoder_weights=None``).

Per model: exact total, output shape of a real CPU forward, no false invalid
layer (or a report that says it cannot be trusted), and an exact 1-channel
fold in float64.  Untraceable models are listed with the reason in
``tests/expected/untraceable_smp.txt``: the list shrinks as the tracer improves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from zoo_checks import ZooResult, analyse, check, coverage, fold_is_exact, grey_input_is_reported

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

smp = pytest.importorskip("segmentation_models_pytorch")

FILE = "untraceable_smp.txt"
ARCHITECTURES = ("Unet", "FPN", "DeepLabV3Plus")
ENCODERS = ("resnet18", "efficientnet-b0", "timm-efficientnet-b0", "mobilenet_v2", "mit_b0")
# smp's other architectures, each with one encoder: all 12 architectures x 6 encoders were probed by hand on
# 2026-12-01 (a real forward, the fold exact in float64; CHANGELOG); PAN needs 128 x 128 and DPT a timm encoder
OTHER_ARCHITECTURES = ("UnetPlusPlus", "MAnet", "Linknet", "PSPNet", "DeepLabV3", "UPerNet", "Segformer")
MODELS = tuple(f"{arch}/{encoder}" for arch in ARCHITECTURES for encoder in ENCODERS) + tuple(
    f"{arch}/resnet18" for arch in OTHER_ARCHITECTURES
)
SHAPE = (3, 64, 64)
_CACHE: dict[str, ZooResult] = {}


def _result(name: str) -> ZooResult:
    if name not in _CACHE:
        arch, encoder = name.split("/")
        build = getattr(smp, arch)
        _CACHE[name] = analyse(name, lambda: build(encoder_name=encoder, encoder_weights=None, classes=2), SHAPE)
    return _CACHE[name]


@pytest.mark.parametrize("name", MODELS)
def test_smp_model(name: str) -> None:
    check(_result(name), FILE)


@pytest.mark.parametrize("name", MODELS)
def test_smp_one_channel_fold_is_exact(name: str) -> None:
    # float32: the encoders' depthwise convolutions take minutes in float64 on the CPU (a per-group loop)
    fold_is_exact(_result(name), torch.float32)


# the input layer is the encoder's: one architecture per encoder, and DeepLabV3+ (its pooling branch
# rejects a batch of one in training mode, which finding the input layers must not trip on)
GREY = (*(f"Unet/{encoder}" for encoder in ENCODERS), "DeepLabV3Plus/resnet18")


@pytest.mark.parametrize("name", GREY)
def test_smp_rgb_model_on_a_grey_input(name: str) -> None:
    grey_input_is_reported(_result(name))


def test_smp_coverage_and_untraceable_list(expected_file: Callable[[str, str], None], capsys: Any) -> None:
    text, summary = coverage("smp", smp.__version__, [_result(name) for name in MODELS], FILE)
    with capsys.disabled():
        print(summary)
    expected_file(FILE, text)
    assert len(ARCHITECTURES) >= 3 and len(ENCODERS) >= 3


def test_smp_new_heads_are_rebuilt_by_the_config_from_pretrained_reads() -> None:
    """Found by a probe: replace_head of an smp model with an auxiliary classifier of the same width replaced both
    heads but left ``_hub_mixin_config['aux_params']['classes']`` at the old count, so the model smp's
    ``from_pretrained`` rebuilds from that config could not load the saved weights; both counts follow now."""
    from torchsurgeon import replace_head

    model = smp.Unet("resnet18", encoder_weights=None, classes=2, aux_params={"classes": 2}).eval()
    result = replace_head(model, 5)
    config = result.model._hub_mixin_config
    assert config["classes"] == 5 and config["aux_params"] == {"classes": 5}
    assert model._hub_mixin_config["aux_params"] == {"classes": 2}  # the original is untouched
    rebuilt = type(model)(**config)  # what from_pretrained does with the saved config
    rebuilt.load_state_dict(result.model.state_dict(), strict=True)
    mask, labels = rebuilt.eval()(torch.zeros(1, 3, 64, 64))
    assert mask.shape == (1, 5, 64, 64) and labels.shape == (1, 5)


def test_the_efficientnet_smp_vendors_as_its_users_build_it() -> None:
    """smp vendors efficientnet_pytorch, whose own EfficientNet users build by name: its same-padded convolutions
    are one row each there too (their rule), with the model's total, output, MACs and a 1-channel fold exact."""
    efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
    result = analyse("efficientnet-b0", lambda: efficientnet_pytorch.EfficientNet.from_name("efficientnet-b0"), SHAPE)
    check(result, FILE)
    assert result.report is not None and result.report.layer("_conv_stem").type == "Conv2dStaticSamePadding"
    fold_is_exact(result, torch.float32)
