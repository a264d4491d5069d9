"""Tests of ModelReport's own methods (the tables are in test_report.py)."""

from __future__ import annotations

import re

import pytest
import torchvision

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
