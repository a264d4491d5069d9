"""Whole-model proof over the torchvision zoo: a sum-folded model on a grey image equals the original
on the grey image replicated to RGB, and check_surgery calls the first conv folded and everything else kept."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from models import materialize, on_meta
from torchsurgeon import ParamChange, adapt_input_channels, check_surgery

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

NAMES = torchvision.models.list_models(module=torchvision.models)
FIXED_224 = ("vit", "maxvit", "swin")  # patch/window sizes tie these to 224


def _size(name: str) -> int:
    return 224 if name.startswith(FIXED_224) else 96 if "inception" in name else 64


@pytest.mark.parametrize("name", NAMES)
def test_sum_fold_is_exact_and_recognised(name: str) -> None:
    model = on_meta(torchvision.models.get_model, name=name, buffers=False)
    big = sum(p.numel() for p in model.parameters()) > 100_000_000
    # float64 for a tight tolerance, except where memory does not allow it, or where grouped convolutions
    # take a per-group loop in float64 on the CPU (minutes for efficientnet_v2_m); tests/test_surgery.py
    # proves grouped and depthwise folds exact in float64
    grouped = any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    dtype = torch.float32 if big or grouped else torch.float64
    original = materialize(model, dtype)
    # the edit works on a twin that shares every tensor (one copy of vit_h_14 in memory, not two);
    # adapt_input_channels gives the folded layer a new weight, the original keeps its own
    twin = copy.deepcopy(original, {id(t): t for t in (*original.parameters(), *original.buffers())})
    folded = adapt_input_channels(twin, 1, inplace=True).model
    size = _size(name)
    grey = torch.randn(1, 1, size, size, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = original(grey.expand(1, 3, size, size))
        got = folded(grey)
    if isinstance(want, tuple):  # googlenet / inception in training layout
        want, got = want[0], got[0]
    scale = want.abs().max().item()
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    assert (got - want).abs().max().item() <= rtol * scale

    rep = check_surgery(original, folded, (1, size, size))
    statuses = {p.name: p.status for p in rep.params}
    folded_names = [n for n, s in statuses.items() if s == ParamChange.FOLDED]
    assert len(folded_names) == 1 and folded_names[0].endswith("weight")
    assert all(s == ParamChange.KEPT for n, s in statuses.items() if n not in folded_names)
    assert rep.invalid == []
    assert original.get_parameter(folded_names[0]).shape[1] == 3  # the original's input layer is untouched
