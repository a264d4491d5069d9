"""Tests of ModelReport's own methods (the tables are in test_report.py)."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from torchsurgeon import paramcount


@pytest.mark.parametrize(("name", "meant"), [("conv1x", "conv1"), ("layer1.0.conv3", "layer1.0.conv1")])
def test_layer_naming_no_layer_offers_the_names_meant(name: str, meant: str) -> None:
    """``report.layer`` of a misspelt name listed only the names holding it ("similar: []" for conv1x): now the
    closest names, each one a layer of the report."""
    report = paramcount(torchvision.models.resnet18(), (3, 32, 32))
    with pytest.raises(KeyError, match=rf"no layer '{re.escape(name)}' in ResNet — did you mean .*'{meant}'") as info:
        report.layer(name)
    offered = re.findall(r"'([\w.]+)'", str(info.value).partition("did you mean")[2])
    assert offered and all(report.layer(n).name == n for n in offered)


def test_layer_naming_nothing_like_a_layer_lists_the_first_layers() -> None:
    report = paramcount(torchvision.models.resnet18(), (3, 32, 32))
    with pytest.raises(KeyError, match=r"no layer 'zzz' in ResNet — the layers are conv1, bn1, relu, "):
        report.layer("zzz")


class _ScaledBlock(nn.Module):
    """A ConvNeXt-like block: a conv and a layer scale multiplied in its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.gamma = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.conv(x)


class _FunctionalConv(nn.Module):
    """A layer written with functions (timm's Conv2dSame): no submodules, its weights read by F.conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 1, 1))
        self.bias = nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (0, 0)), self.weight, self.bias)


class _PaddedConv(nn.Conv2d):
    """smp's efficientnet stem (Conv2dStaticSamePadding): a Conv2d holding its padding as a submodule without
    parameters, its forward ``F.conv2d(self.static_padding(x), self.weight, ...)``."""

    def __init__(self) -> None:
        super().__init__(3, 4, 3, stride=2, bias=False)
        self.static_padding = nn.ZeroPad2d((0, 1, 0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride)


def test_layer_of_a_block_is_not_one_step_of_its_forward() -> None:
    """``report.layer("block")`` returned the layer-scale ``mul()`` row, named after the block because it reads the
    block's ``gamma``: 0 parameters for a block holding 152 (torchvision's ConvNeXt ``features.1.0``, ViT's
    ``encoder``). The row is named ``mul`` now, and the block's name says it is a block and how to list its layers;
    a function reading the weights of a module without submodules is still that module's row."""
    model = nn.Sequential(OrderedDict(stem=_FunctionalConv(), block=_ScaledBlock()))
    report = paramcount(model, (3, 8, 8))
    assert "block" not in {layer.name for layer in report.layers}
    with pytest.raises(KeyError, match=r"'block' in Sequential is a block of \d+ layers, not one layer"):
        report.layer("block")
    inside = [layer for layer in report.layers if "block" in layer.path]
    assert sum(layer.counted for layer in inside) == sum(p.numel() for p in model.block.parameters())
    assert report.layer("stem").type == "conv2d()"
    assert report.layer("stem").output_shape == tuple(model(torch.zeros(1, 3, 8, 8)).shape)


def test_a_layer_holding_a_padding_module_is_still_named_for_its_weights() -> None:
    """A layer whose only submodule holds no parameters (smp's efficientnet stem and its padding module) is one
    layer: its ``conv2d()`` row keeps the layer's name, and on a grey image that name is the invalid layer, the one
    ``adapt_input_channels`` folds (it was reported as ``conv2d``, a name no fix can use)."""
    model = nn.Sequential(OrderedDict(stem=_PaddedConv(), head=nn.Conv2d(4, 2, 1)))
    report = paramcount(model, (1, 8, 8))
    assert [layer.name for layer in report.invalid] == ["stem"]
    assert report.layer("stem").type == "conv2d()"


class _OneStemTwoInputs(nn.Module):
    """One stem run on two inputs (a siamese network, or two crops of one image)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.pool, self.fc = nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Linear(16, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.pool(self.stem(a)), self.pool(self.stem(b))], 1).flatten(1))


@pytest.mark.parametrize("other", [(1, 16, 16), (1, 32, 32)])
def test_a_stem_called_twice_is_one_invalid_layer(other: tuple[int, ...]) -> None:
    """Found by a probe: a stem run on two inputs was listed twice in report.invalid and under "Invalid layers (2)",
    the summary said "2 invalid layers resized", and the second call's row showed "0 → -144" parameters (its
    parameters, counted in the first row, taken off again once resized).  It is one layer, listed once, its message
    naming both calls' inputs when they differ; the second row counts nothing."""
    model = _OneStemTwoInputs()
    report = paramcount(model, {"a": (1, 32, 32), "b": other})
    (stem,) = report.invalid
    assert stem.name == "stem" and sum(r.name == "stem" for r in report.layers) == 2
    both = "(at its 2 calls, on inputs (1, 1, 32, 32) and (1, 1, 16, 16)) — "
    assert (both in stem.message) == (other == (1, 16, 16))
    assert stem.message.endswith("— fold it with adapt_input_channels(model, 1)")
    text = str(report)
    assert "Invalid layers (1):" in text and "with 1 invalid layer resized" in text and "-144" not in text
    resized = sum(p.numel() for p in nn.Conv2d(1, 8, 3).parameters()) + sum(p.numel() for p in model.fc.parameters())
    assert report.total_for_input == resized
    assert sum(row.counted_for_input for row in report.layers) == resized
