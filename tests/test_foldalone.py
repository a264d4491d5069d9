"""The fold a report names when other layers read the input only rearranged (torchsurgeon.foldalone)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import TiledResidualStem, assert_same_state, model_state
from torchsurgeon import SurgeryError, adapt_input_channels, paramcount, paramcount_sweep


@pytest.mark.parametrize(("channels", "call"), [(1, "adapt_input_channels(model, 1, layer=['conv'])"), (4, None)])
def test_the_report_names_the_fold_of_the_stem_alone_and_it_runs_as_written(channels: int, call: str | None) -> None:
    """Found by a probe (MONAI VNet): the report named adapt_input_channels(model, 1), which refuses to fold the
    layers that read the input only tiled into the stem's residual; it names the fold of the stem alone, which runs
    as written, keeps the outputs on a grey image and gives the count the report promised."""
    torch.manual_seed(0)
    model = TiledResidualStem().double().eval()
    report = paramcount(model, (channels, 16, 16), batch=2)
    fix = next(f.fix for f in report.findings if f.layer == "conv")
    call = call or f"adapt_input_channels(model, {channels}, mode='spread', layer=['conv'])"
    assert fix == f"fold it with {call}"
    with pytest.raises(SurgeryError, match="read the input only after"):  # the plain fold, as before
        adapt_input_channels(model, channels, mode="spread")
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert paramcount(edited, (channels, 16, 16), batch=2).findings == ()
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    grey = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited(grey.expand(2, channels, 16, 16)), model(grey.expand(2, 2, 16, 16)))


def test_where_the_stem_alone_does_not_run_the_report_says_no_fold_runs() -> None:
    """8 channels tile from 1, 2, 4 or 8, not from 3: no fold runs, and the report names none."""
    model = TiledResidualStem()
    fix = next(f.fix for f in paramcount(model, (3, 16, 16), batch=2).findings if f.layer == "conv")
    assert fix.startswith("no fold runs: down read the input only after .repeat(), and with conv alone folded to 3")
    for layer in (None, ["conv"]):  # the truth: surgery refuses both
        with pytest.raises(SurgeryError):
            adapt_input_channels(model, 3, mode="spread", layer=layer)


class _SpaceToDepth(nn.Module):
    """timm's TResNet stem in small: each 2 × 2 block of pixels made channels (``view``, ``permute``), then a conv."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4 * channels, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).contiguous()
        return self.conv(x.view(n, c * 4, h // 2, w // 2))


@pytest.mark.parametrize(("channels", "mode"), [(1, "sum"), (4, "spread")])
def test_a_stem_after_a_space_to_depth_is_told_its_fold(channels: int, mode: str) -> None:
    """Noticed on timm's tresnet_m: at 1 channel the report said 'what comes before it gives 16: make that give 48,
    or replace the layer (new weights)', while adapt_input_channels folds the stem exactly through its channel map.
    The report names that fold now; it runs as written, gives ``total_for_input`` parameters and is exact."""
    torch.manual_seed(0)
    model = _SpaceToDepth().double().eval()
    before = model_state(model)
    report = paramcount(model, (channels, 8, 8), batch=2)
    spread = "" if mode == "sum" else ", mode='spread'"
    assert [(f.layer, f.fix) for f in report.findings] == [
        ("conv", f"fold it with adapt_input_channels(model, {channels}{spread})")
    ]
    assert report.layer("conv").message.endswith(f"fold it with adapt_input_channels(model, {channels}{spread})")
    edited = adapt_input_channels(model, channels, mode=mode).model
    assert_same_state(before, model_state(model))  # the report's channel map and the fold ran on copies
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    grey = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        got, want = edited(grey.expand(2, channels, 8, 8)), model(grey.expand(2, 3, 8, 8))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


class _JoinedPixelsThenKernel8(nn.Module):
    """ViTMatte's detail path (the pixels joined with the stem's features for a last conv), then a conv of kernel 8:
    the model runs from 8 × 8 pixels up."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fuse, self.down = nn.Conv2d(12, 2, 1), nn.Conv2d(2, 2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.bn(self.stem(x)))
        return self.down(self.fuse(torch.cat([x, features], dim=1)))


def test_a_sweep_names_at_each_size_the_fold_named_at_that_size_alone() -> None:
    """Found rereading fold_alone: whether the plain fold folds the joined layer through its channel map was kept
    per channel count, though it is found by running the model at the size given; a sweep whose first size the model
    cannot run at said 'no fold runs' at every size after it, where paramcount at that size names the plain fold."""
    model = _JoinedPixelsThenKernel8()
    alone = [(f.layer, f.fix) for f in paramcount(model, (1, 16, 16)).findings]
    assert alone[0] == ("stem", "fold it with adapt_input_channels(model, 1)")
    swept = paramcount_sweep(model, [(1, 4, 4), (1, 16, 16)])
    assert [(f.layer, f.fix) for f in swept[-1].findings] == alone


class _TwoClips(nn.Module):
    """pytorchvideo's SlowFast in small: a list of two clips, each read by its own stem."""

    def __init__(self) -> None:
        super().__init__()
        self.slow, self.fast = nn.Conv3d(3, 4, (1, 3, 3)), nn.Conv3d(3, 2, (3, 3, 3), padding=(1, 0, 0))

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        fast = self.fast(x[1])
        return self.slow(x[0]).mean((2, 3, 4)) + fast.mean((2, 3, 4)).repeat(1, 2)


def test_images_read_by_their_own_layers_all_made_grey_name_a_fold_of_them_all() -> None:
    """Found by a probe (pytorchvideo's SlowFast given two grey clips): each stem was told 'fold it with
    adapt_input_channels(model, 1)', which refuses (it asks which image changes); the report names the fold of every
    layer reading an image given those channels, which runs as written and is exact on grey clips replicated.  Given
    both clips in colour, the plain fold still asks which one (it folded the first alone, silently)."""
    torch.manual_seed(0)
    model = _TwoClips().double().eval()
    report = paramcount(model, {"x": [(1, 2, 8, 8), (1, 8, 8, 8)]})
    call = "adapt_input_channels(model, 1, layer=['slow', 'fast'])"
    assert [(f.layer, f.fix) for f in report.findings] == [
        ("fast", f"fold it with {call}"),
        ("slow", f"fold it with {call}"),
    ]
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    grey = [torch.randn(2, 1, 2, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, 8, dtype=torch.float64)]
    with torch.no_grad():
        got, want = edited(list(grey)), model([g.expand(2, 3, *g.shape[2:]) for g in grey])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(SurgeryError, match=r"takes 2 images \(x_0, x_1\).*or every image: layer=\['slow', 'fast'\]"):
        adapt_input_channels(model, 1, input={"x": [(3, 2, 8, 8), (3, 8, 8, 8)]})
