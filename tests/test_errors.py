"""Tests for errors.py: the wording every message shares."""

from __future__ import annotations

import difflib
from typing import Any

import pytest

from torchsurgeon.errors import close_names, did_you_mean, no_such_name

NAMES = ["conv1", "bn1", "layer1.0.conv1", "layer1.0.conv2", "fc"]


@pytest.mark.parametrize(("typo", "meant"), [("conv", "conv1"), ("cnv1", "conv1"), ("fc1", "fc"), ("pool", None)])
def test_did_you_mean_names_the_closest_with_the_fix_for_it(typo: str, meant: str | None) -> None:
    """The closest name as Python writes it, then the fix for that name; nothing when no name is close (difflib's
    own answer is the oracle)."""
    oracle = difflib.get_close_matches(typo, NAMES, n=1, cutoff=0.6)
    assert oracle == ([meant] if meant else [])
    said = did_you_mean(typo, NAMES, lambda name: f"give layer={name!r}")
    assert said == (f"did you mean {meant!r}? give layer={meant!r}" if meant else "")


def test_did_you_mean_gives_at_most_most_names_and_the_fix_for_the_first() -> None:
    said = did_you_mean("layer1.0.conv", NAMES, lambda name: f"layer={name!r}", most=2)
    assert said == "did you mean 'layer1.0.conv2', 'layer1.0.conv1'? layer='layer1.0.conv2'"  # ties: difflib's order


def test_holding_adds_the_names_holding_a_layer_named_without_its_parent() -> None:
    """``fc`` is too short to be close to ``head.fc`` by difflib: with ``holding`` the names holding it come after
    the close ones."""
    names = ["backbone.conv", "head.fc", "head.fc_aux"]
    assert did_you_mean("fc", names) == ""
    assert did_you_mean("fc", names, most=5, holding=True) == "did you mean 'head.fc', 'head.fc_aux'?"
    assert did_you_mean("fc", names, holding=True) == "did you mean 'head.fc'?"


def test_the_cutoff_decides_how_close_is_close() -> None:
    """0.8 lets one or two letters in ten differ: ``pixel_value`` is close to ``pixel_values``, ``mask`` to
    ``masks`` is not at 0.9 (difflib's ratio, 0.89)."""
    assert close_names("pixel_value", ["pixel_values"], cutoff=0.8) == ["pixel_values"]
    assert close_names("mask", ["masks"], cutoff=0.9) == []
    assert difflib.SequenceMatcher(None, "mask", "masks").ratio() < 0.9


def test_no_such_name_lists_the_names_when_none_is_close() -> None:
    assert no_such_name("conv1x", NAMES) == "did you mean 'conv1'?"
    many = [f"block{i}" for i in range(10)]
    assert no_such_name("head", many, "parameters") == f"the parameters are {', '.join(many[:8])}, ..."


def _option_calls() -> dict[str, Any]:
    """Each public function taking an option, called with ``value`` for it."""
    import torch
    from torch import nn

    from models import CifarNet
    from torchsurgeon import adapt_input_channels, memory_plan, paramcount
    from torchsurgeon.fold import fold_weight

    net = nn.Sequential(nn.Linear(4, 2))
    return {
        "mode": lambda v: adapt_input_channels(CifarNet(), 1, v),
        "fold mode": lambda v: fold_weight(torch.randn(4, 3, 3, 3), 1, v),
        "crosscheck": lambda v: paramcount(net, (4,), crosscheck=v),
        "optimizer": lambda v: memory_plan(net, (4,), optimizer=v, device="cpu"),
        "fmt": lambda v: paramcount(net, (4,)).table(fmt=v),
        "column": lambda v: paramcount(net, (4,)).table(columns=[v]),
    }


@pytest.mark.parametrize(
    ("option", "upper", "typo", "message"),
    [
        ("mode", "SUM", "sume", "mode='sume' — did you mean 'sum'? mode='sum'; use one of 'sum', 'spread'"),
        ("fold mode", "SUM", "sume", "mode='sume' — did you mean 'sum'? mode='sum'; use one of 'sum', 'spread'"),
        ("crosscheck", "ALWAYS", "alway", "crosscheck='alway' — did you mean 'always'? crosscheck='always'; use one"),
        ("optimizer", "AdamW", "adamm", "optimizer='adamm' — did you mean 'adam'? optimizer='adam'; use one of 'sgd'"),
        ("fmt", "Markdown", "markdwn", "fmt='markdwn' — did you mean 'markdown'? fmt='markdown'; use one of 'text'"),
        ("column", "PARAMS", "parms", "column='parms' — did you mean 'params'? column='params'; use one of 'input'"),
    ],
)
def test_every_option_is_read_by_one_rule_with_one_message(option: str, upper: str, typo: str, message: str) -> None:
    """Found by a colleague: fold's mode parser lowercased ("SUM" taken) where adapt_input_channels refused "SUM",
    and crosscheck, report, memory and fold each wrote their own refusal ("use one of", "choose one of", "choose
    from", a list or a string). errors.check_option reads them all: any case, one message naming the closest."""
    from torchsurgeon import InputError

    call = _option_calls()[option]
    assert call(upper) is not None  # any case, everywhere
    with pytest.raises(InputError) as got:
        call(typo)
    assert str(got.value).startswith(message)
