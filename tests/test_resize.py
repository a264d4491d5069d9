"""One owner of "this layer resized to fit its input" (torchsurgeon.resize): counts, copies and fixes agree."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations

from torchsurgeon import adapt_input_channels, paramcount, replace_head
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
        (nn.Conv2d(3, 2, 2, padding="same", dilation=2, padding_mode="reflect"), "in_channels", 6),  # was padding=same
        (nn.Conv1d(3, 2, 3, padding="valid"), "in_channels", 4),
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


class _QuantStubStem(nn.Module):
    """torchvision's quantizable models' shape: QuantStub, then the stem (fused with its norm for QAT)."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.stem(self.quant(x)))


@pytest.mark.parametrize(
    ("qat", "version", "stem"),
    [(True, 1, "stem.0"), (True, 0, "stem.0"), (False, 0, "stem.0.0")],
    ids=["qat-fused-fake-quant", "qat-FakeQuantize", "prepared-observer"],
)
def test_a_quantizable_models_observed_input_is_folded_as_it_is(qat: bool, version: int, stem: str) -> None:
    """Found by a probe (QAT mobilenet_v2): the fake quantisation (or, prepared for calibration, the observer) that
    QuantStub puts between the input and the stem was taken for a layer changing the channels ("what comes before
    it gives 1"): one scale for every channel hands the input on as it is, and the fix is the fold, which runs as
    written and is exact."""
    import torch.ao.quantization as tq

    torch.manual_seed(0)
    model = _QuantStubStem().train(qat)
    (tq.fuse_modules_qat if qat else tq.fuse_modules)(model, [["stem.0", "stem.1", "stem.2"]], inplace=True)
    model.qconfig = tq.get_default_qat_qconfig("fbgemm", version) if qat else tq.get_default_qconfig("fbgemm")
    (tq.prepare_qat if qat else tq.prepare)(model, inplace=True)
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))  # observers and batch norm see data
    report = paramcount(model, (1, 8, 8))
    (finding,) = report.findings
    assert finding.layer == stem and finding.fix == "fold it with adapt_input_channels(model, 1)"
    model.apply(tq.disable_fake_quant).apply(tq.disable_observer).eval().double()  # the fold (of the float weight)
    call = finding.fix.removeprefix("fold it with ")
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert paramcount(edited, (1, 8, 8)).findings == ()
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    grey = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited(grey), model(grey.expand(2, 3, 8, 8)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (nn.LSTM(8, 16, batch_first=True), (5, 6)),
        (nn.LayerNorm(8), (5, 6)),
        (nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), (5, 6)),
    ],
)
def test_a_model_that_is_one_layer_is_replaced_whole_by_its_fix(model: nn.Module, shape: tuple[int, ...]) -> None:
    """A model that is one layer (an nn.LSTM) was told model.set_submodule('LSTM', ...), which names no submodule;
    the fix replaces the model itself, runs as written and gives the promised count."""
    with pytest.raises((RuntimeError, AssertionError)):  # the real forward refuses the width, as the report says
        model(torch.randn(1, *shape))
    report = paramcount(model, shape)
    (bad,) = report.invalid
    fix = bad.message.split("(new weights): ")[-1]
    assert fix.startswith("model = nn.")
    scope: dict[str, object] = {"nn": nn, "model": model}
    exec(fix, scope)
    fixed = scope["model"]
    assert isinstance(fixed, nn.Module) and fixed is not model
    fixed(torch.randn(1, *shape))  # runs at the input analysed
    assert sum(p.numel() for p in fixed.parameters()) == report.total_for_input


class _SavesHyperparameters(nn.Module):
    """Lightning's ``save_hyperparameters()``: the constructor's arguments in ``self._hparams`` (a dict), which a
    checkpoint saves and ``load_from_checkpoint`` builds the model from, ``type(model)(**hparams)``."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self._hparams = {"in_chans": in_chans, "num_classes": num_classes, "width": width}
        self.backbone = nn.Sequential(nn.Conv2d(in_chans, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


@pytest.mark.parametrize("edit", ["channels", "classes"])
def test_a_lightning_modules_saved_hyperparameters_follow_the_surgery(edit: str) -> None:
    """Found by a probe (a LightningModule wrapping a timm backbone, ``save_hyperparameters()``):
    ``adapt_input_channels(lit, 1)`` and ``replace_head(lit, 5)`` left ``hparams['in_chans']`` at 3 and
    ``hparams['num_classes']`` at 10, so the checkpoint of the edited model could not be loaded back
    (``load_from_checkpoint``: size mismatch for the stem or the head); they follow now, as smp's
    ``_hub_mixin_config`` does, and the model rebuilt from them loads the edited weights strictly."""
    model = _SavesHyperparameters().eval()
    if edit == "channels":
        result = adapt_input_channels(model, 1)
        key, note = "in_chans", "3 → 1"
    else:
        result = replace_head(model, 5)
        key, note = "num_classes", "10 → 5"
    edited = result.model
    rebuilt = type(model)(**edited._hparams)
    rebuilt.load_state_dict(edited.state_dict())  # strict: every shape as the edit made it
    assert (f"_hparams[{key!r}]", note) in [(c.name, c.message) for c in result.changes]
    assert model._hparams == {"in_chans": 3, "num_classes": 10, "width": 8}  # the model given is untouched
