"""MONAI zoo: 2D and 3D networks with small feature sizes, built as MONAI's users build them.

Per model: exact total, output shape of a real CPU forward, no false invalid
layer (or a report that says it cannot be trusted: BasicUNet's skip
connections vanish from an fx trace, see docs/crosscheck.md), and an exact
1-channel fold in float64 for the RGB (``in_channels=3``) ones.  Untraceable
models are listed with the reason in ``tests/expected/untraceable_monai.txt``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from zoo_checks import ZooResult, analyse, check, coverage, fold_is_exact, grey_input_is_reported

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

monai = pytest.importorskip("monai")
from monai.networks import nets  # noqa: E402

from torchsurgeon import ParamChange, replace_head  # noqa: E402

FILE = "untraceable_monai.txt"
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "BasicUNet 2D": (lambda: nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=2), (1, 32, 32)),
    "BasicUNet 2D RGB": (
        lambda: nets.BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=(4, 4, 8, 16, 32, 4)),
        (3, 32, 32),
    ),
    "HighResNet 2D": (lambda: nets.HighResNet(spatial_dims=2, in_channels=1, out_channels=2), (1, 32, 32)),
    "UNet 3D": (
        lambda: nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2)),
        (1, 16, 16, 16),
    ),
    "UNet 2D RGB": (
        lambda: nets.UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(4, 8, 16), strides=(2, 2)),
        (3, 32, 32),
    ),
    "SegResNet 3D": (
        lambda: nets.SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8),
        (1, 16, 16, 16),
    ),
    "DynUNet 2D RGB": (
        lambda: nets.DynUNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=2,
            kernel_size=[3, 3, 3],
            strides=[1, 2, 2],
            upsample_kernel_size=[2, 2],
        ),
        (3, 32, 32),
    ),
    "SwinUNETR 3D": (
        lambda: nets.SwinUNETR(in_channels=1, out_channels=2, feature_size=12, spatial_dims=3),
        (1, 64, 64, 64),  # 2**5 divides each side, and the deepest stage keeps more than one element
    ),
    "SwinUNETR 2D RGB": (  # its input feeds three convs: the patch embedding and two skip encoders
        lambda: nets.SwinUNETR(in_channels=3, out_channels=2, feature_size=12, spatial_dims=2),
        (3, 64, 64),  # 2**5 divides each side, and the deepest stage keeps more than one element
    ),
    "UNETR 2D RGB": (
        lambda: nets.UNETR(
            in_channels=3,
            out_channels=2,
            img_size=(32, 32),
            feature_size=8,
            hidden_size=48,
            mlp_dim=96,
            num_heads=4,
            spatial_dims=2,
        ),
        (3, 32, 32),
    ),
    "DenseNet121 2D RGB": (lambda: nets.DenseNet121(spatial_dims=2, in_channels=3, out_channels=2), (3, 32, 32)),
    "AttentionUnet 2D RGB": (
        lambda: nets.AttentionUnet(spatial_dims=2, in_channels=3, out_channels=2, channels=(4, 8, 16), strides=(2, 2)),
        (3, 32, 32),
    ),
    # probed by hand on 2026-12-01 with 22 other MONAI networks (a real forward; folds run exact in float64; CHANGELOG)
    "SegResNetDS 2D RGB": (
        lambda: nets.SegResNetDS(spatial_dims=2, in_channels=3, out_channels=2, init_filters=8),
        (3, 32, 32),
    ),
    "FlexibleUNet 2D RGB": (
        lambda: nets.FlexibleUNet(3, 2, backbone="efficientnet-b0", spatial_dims=2, pretrained=False),
        (3, 64, 64),
    ),
    "MedNeXt 2D RGB": (
        lambda: nets.MedNeXt(
            spatial_dims=2,
            in_channels=3,
            out_channels=2,
            init_filters=8,
            blocks_down=(1, 1, 1, 1),
            blocks_bottleneck=1,
            blocks_up=(1, 1, 1, 1),
        ),
        (3, 32, 32),
    ),
    "ViT 2D RGB": (
        lambda: nets.ViT(
            in_channels=3,
            img_size=(32, 32),
            patch_size=(8, 8),
            hidden_size=48,
            mlp_dim=96,
            num_layers=2,
            num_heads=4,
            spatial_dims=2,
            classification=True,
            num_classes=2,
        ),
        (3, 32, 32),
    ),
    "GlobalNet 2D": (  # its head sets a plain tensor attribute to a traced value in forward
        lambda: nets.GlobalNet(image_size=(32, 32), spatial_dims=2, in_channels=2, num_channel_initial=4, depth=2),
        (2, 32, 32),
    ),
}
RGB = tuple(name for name in MODELS if name.endswith("RGB"))
_CACHE: dict[str, ZooResult] = {}


def _result(name: str) -> ZooResult:
    if name not in _CACHE:
        build, shape = MODELS[name]
        _CACHE[name] = analyse(name, build, shape)
    return _CACHE[name]


@pytest.mark.parametrize("name", list(MODELS))
def test_monai_model(name: str) -> None:
    check(_result(name), FILE)


@pytest.mark.parametrize("name", RGB)
def test_monai_one_channel_fold_is_exact(name: str) -> None:
    fold_is_exact(_result(name))


@pytest.mark.parametrize("name", RGB)
def test_monai_rgb_model_on_a_grey_input(name: str) -> None:
    grey_input_is_reported(_result(name))


def test_monai_coverage_and_untraceable_list(expected_file: Callable[[str, str], None], capsys: Any) -> None:
    text, summary = coverage("monai", monai.__version__, [_result(name) for name in MODELS], FILE)
    with capsys.disabled():
        print(summary)
    expected_file(FILE, text)
    assert len(MODELS) >= 5 and any(len(shape) == 4 for _, shape in MODELS.values())


@pytest.mark.parametrize(("spatial_dims", "in_channels", "shape"), [(3, 1, (2, 16, 16, 16)), (2, 2, (1, 32, 32))])
def test_monai_vnet_names_the_fold_that_runs(spatial_dims: int, in_channels: int, shape: tuple[int, ...]) -> None:
    """Found by a probe: VNet's report named adapt_input_channels(model, C), which refuses (the input is tiled into
    the stem's residual, which the next layers read); it names the stem's fold alone, which runs as written and is
    exact on a grey image replicated."""
    import torch

    from torchsurgeon import adapt_input_channels, paramcount

    torch.manual_seed(0)
    model = nets.VNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=2).double().eval()
    report = paramcount(model, shape, batch=2)
    stem = next(f for f in report.findings if f.layer == "in_tr.conv_block.conv")
    call = stem.fix.removeprefix("fold it with ")
    assert call.startswith(f"adapt_input_channels(model, {shape[0]}") and "layer=['in_tr.conv_block.conv']" in call
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert paramcount(edited, shape, batch=2).findings == ()
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    grey = torch.randn(2, 1, *shape[1:], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited(grey.expand(2, *shape)), model(grey.expand(2, in_channels, *shape[1:])))


def test_monai_new_head_sets_the_out_channels_the_network_keeps() -> None:
    """Found by a probe: replace_head on MONAI's AttentionUnet and DynUNet made a 5-class head but left the network's
    own ``out_channels`` (and that of the block holding the head) at 2; they follow the head now, as num_classes
    does elsewhere, and the model built with out_channels=5 holds the same state_dict."""
    settings = {"spatial_dims": 2, "in_channels": 1, "channels": (4, 8, 16), "strides": (2, 2)}
    model = nets.AttentionUnet(out_channels=2, **settings).eval()
    result = replace_head(model, 5)
    assert result.model.out_channels == 5 and model.out_channels == 2
    assert {c.name for c in result.changes if c.status is ParamChange.SETTING} == {
        "out_channels",
        "model.2.out_channels",
    }
    built = nets.AttentionUnet(out_channels=5, **settings)
    built.load_state_dict(result.model.state_dict(), strict=True)
    assert result.model(torch.zeros(1, 1, 32, 32)).shape == (1, 5, 32, 32)
