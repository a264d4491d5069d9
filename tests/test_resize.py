"""One owner of "this layer resized to fit its input" (torchsurgeon.resize): counts, copies and fixes agree."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations

from torchsurgeon import paramcount
from torchsurgeon.records import Finding
from torchsurgeon.resize import fold_fix, plan_resize, rebuild_fix, resized_copy, resized_param_count


def _fresh_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@settings(deadline=None, max_examples=40)
@given(
    groups=st.integers(1, 4),
    per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 3),
    got=st.integers(1, 12),
    transposed=st.booleans(),
    bias=st.booleans(),
)
def test_resized_count_equals_a_layer_built_to_fit(
    groups: int, per_group: int, out_per_group: int, got: int, transposed: bool, bias: bool
) -> None:
    """The count equals that of a fresh layer built with the policy's groups (kept if they divide, else 1)."""
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = cls(groups * per_group, groups * out_per_group, 3, groups=groups, bias=bias)
    finding = Finding("c", cls.__name__, "in_channels", conv.in_channels, got, "")
    new_groups = groups if got % groups == 0 else 1
    fresh = cls(got, conv.out_channels, 3, groups=new_groups, bias=bias)
    assert resized_param_count(conv, finding) == _fresh_count(fresh)
    copy_ = resized_copy(conv, finding)
    assert copy_ is not None and copy_.groups == new_groups and copy_.in_channels == got
    assert copy_.weight.shape == fresh.weight.shape and copy_.weight.device.type == "meta"
    assert conv.in_channels == groups * per_group  # the layer itself is untouched


def test_linear_and_norms() -> None:
    assert resized_param_count(nn.Linear(400, 120), Finding("fc", "Linear", "in_features", 400, 2704, "")) == (
        2704 * 120 + 120
    )
    bn = nn.BatchNorm2d(64)
    copy_ = resized_copy(bn, Finding("bn", "BatchNorm2d", "num_features", 64, 32, ""))
    assert copy_ is not None and copy_.running_mean.shape == (32,) and copy_.weight.shape == (32,)
    assert resized_param_count(nn.GroupNorm(4, 8), Finding("g", "GroupNorm", "num_channels", 8, 12, "")) == 24
    assert resized_param_count(nn.LayerNorm(16), Finding("n", "LayerNorm", "normalized_shape", (16,), (8,), "")) == 16
    assert plan_resize(nn.Embedding(10, 4), "input dtype", "float32") is None


def test_weight_norm_keeps_its_magnitude() -> None:
    conv = parametrizations.weight_norm(nn.Conv2d(3, 8, 3))
    finding = Finding("c", "Conv2d", "in_channels", 3, 1, "")
    # g (8, 1, 1, 1) kept, v resized to (8, 1, 3, 3), bias kept
    assert resized_param_count(conv, finding) == 8 + 8 * 9 + 8
    copy_ = resized_copy(conv, finding)
    assert copy_ is not None and copy_.weight.shape == (8, 1, 3, 3)


@pytest.mark.parametrize(
    ("layer", "what", "got"),
    [
        (nn.Linear(400, 120), "in_features", 2704),
        (nn.Conv2d(64, 32, 3, padding=1, padding_mode="reflect", bias=False), "in_channels", 16),
        (nn.Conv2d(12, 12, 3, groups=12), "in_channels", 8),
        (nn.BatchNorm2d(64), "num_features", 32),
        (nn.LayerNorm((4, 8)), "normalized_shape", (4, 6)),
    ],
)
def test_rebuild_fix_runs_as_written_and_gives_the_promised_count(layer: nn.Module, what: str, got: object) -> None:
    model = nn.Sequential(nn.Identity(), layer)
    fix = rebuild_fix(layer, "1", what, got)
    assert fix is not None and fix.startswith("model.set_submodule('1', nn.")
    exec(fix, {"model": model, "nn": nn})  # as written
    assert _fresh_count(model[1]) == resized_param_count(layer, Finding("1", "", what, None, got, ""))


def test_fold_fix_names_a_mode_that_works() -> None:
    assert fold_fix(nn.Conv2d(3, 8, 3), 1) == "adapt_input_channels(model, 1)"
    assert fold_fix(nn.Conv2d(3, 8, 3), 4) == "adapt_input_channels(model, 4, mode='spread')"
    assert fold_fix(nn.Conv2d(3, 12, 3, groups=3), 3) == "adapt_input_channels(model, 3)"  # one per group


def test_messages_of_inner_layers_name_a_replacement_that_fits() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(16, 4, 3))
    r = paramcount(model, (3, 12, 12))
    (finding,) = r.findings
    assert finding.layer == "1"
    assert finding.fix.startswith("what comes before it gives 8: make that give 16, or replace the layer (new weights)")
    fix = finding.fix.rsplit("(new weights): ", 1)[1]
    exec(fix, {"model": model, "nn": nn})
    assert paramcount(model, (3, 12, 12)).findings == ()
    assert sum(p.numel() for p in model.parameters()) == r.total_for_input
    assert torch.is_tensor(model(torch.zeros(1, 3, 12, 12)))


def test_the_rebuild_fix_of_a_qat_layer_runs_as_written() -> None:
    """Found by probe 22: the fix built a QAT ConvBnReLU2d without its qconfig, and raised 'qconfig must be
    provided for QAT module'."""
    from torch.ao.nn.intrinsic.qat import ConvBnReLU2d

    qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    model = nn.Sequential(ConvBnReLU2d(3, 8, 3, bias=False, qconfig=qconfig))
    fix = rebuild_fix(model[0], "0", "in_channels", 1)
    assert fix is not None
    exec(fix, {"model": model, "torch": torch, "nn": nn})  # the fix, as written
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 8, 6, 6) and model[0].qconfig is qconfig
