"""Tests for torchsurgeon.crosscheck: a traced graph that took another path than a real forward is never trusted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import CifarNet
from torchsurgeon import InputError, ShapeError, TraceError, paramcount, paramcount_sweep
from torchsurgeon.contracts import ShapeContract, check_contract
from torchsurgeon.records import Trust


class SkipByType(nn.Module):
    """The skip connection is concatenated only if ``type(skip) is torch.Tensor``: False for an fx proxy (a model's
    own ``isinstance`` is answered for a traced tensor, its type is not)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.up = Up()
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        return self.head(self.up(F.max_pool2d(skip, 2), skip))


class Up(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2)
        self.conv = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.upsample(x)
        if type(skip) is torch.Tensor:  # False for an fx proxy: the skip vanishes from the trace
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class PoolIfTensor(nn.Module):
    """Another path on proxies without any invalid layer: ``type(x) is torch.Tensor`` is False for a proxy."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is torch.Tensor:
            x = F.avg_pool2d(x, 2)
        return self.conv(x)


class Gate(nn.Module):
    """Python on tensor values: untraceable (opaque) and unable to run on meta."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() >= 0 else -x


class GatedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.conv(x))


def _real_shape(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(model(torch.zeros(1, *shape)).shape)


def test_skip_connection_lost_by_the_trace_is_not_trusted() -> None:
    model = SkipByType()
    r = paramcount(model, (1, 16, 16))
    assert r.invalid, "the trace without the skip sees 8 channels where the conv expects 16"
    assert r.trusted is False and r.crosscheck.trust == Trust.UNTRUSTED
    assert r.crosscheck.real_output == _real_shape(model, (1, 16, 16)) == (1, 2, 16, 16)
    message = r.crosscheck.message
    assert "real model accepts this input" in message
    assert "up.conv (Conv2d) gets (1, 16, 16, 16) in a real forward, (1, 8, 16, 16) in the trace" in message
    assert "leaf_modules=['up']" in message
    text = str(r)
    assert "NOT TRUSTWORTHY" in text and text.index("NOT TRUSTWORTHY") < text.index("Invalid layers")
    assert r.to_dict()["trusted"] is False and r.to_dict()["crosscheck"]["trust"] == "untrusted"


def test_the_named_fix_gives_a_trusted_exact_report() -> None:
    model = SkipByType()
    r = paramcount(model, (1, 16, 16), leaf_modules=["up"], crosscheck="always")
    assert r.trusted and r.crosscheck.trust == Trust.VERIFIED and r.invalid == []
    assert r.total_for_input == r.total == sum(p.numel() for p in model.parameters())
    assert r.output_shape == _real_shape(model, (1, 16, 16))


def test_another_path_without_invalid_layers_is_found_when_asked() -> None:
    model = PoolIfTensor()
    auto = paramcount(model, (3, 16, 16))
    assert auto.crosscheck.trust == Trust.NOT_RUN and auto.trusted  # nothing doubtful: not run (docs/crosscheck.md)
    r = paramcount(model, (3, 16, 16), crosscheck="always")
    assert r.trusted is False
    assert r.crosscheck.real_output == _real_shape(model, (3, 16, 16)) == (1, 4, 6, 6)
    assert r.output_shape == (1, 4, 14, 14)
    assert "gives output (1, 4, 14, 14)" in r.crosscheck.message


def test_a_real_invalid_layer_is_verified_with_the_layer_resized() -> None:
    model = CifarNet()
    with pytest.raises(RuntimeError):  # the real model does refuse one channel
        model(torch.zeros(1, 1, 32, 32))
    assert paramcount(model, (1, 32, 32)).crosscheck.trust == Trust.NOT_RUN  # explained by the input: not doubtful
    r = paramcount(model, (1, 32, 32), crosscheck="always")
    assert r.crosscheck.trust == Trust.VERIFIED and r.trusted
    assert r.crosscheck.real_output == _real_shape(CifarNet(in_channels=1), (1, 32, 32))
    assert "invalid layers resized to fit" in r.crosscheck.message
    assert r.crosscheck.reason == "crosscheck='always'"
    assert "Verified (crosscheck='always')" in str(r)


class _SharedInvalid(nn.Module):
    """One convolution applied twice, both times to something it does not fit."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.shared = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(5, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.stem(x)) + self.shared(self.stem(x))


def test_a_layer_called_twice_is_one_invalid_layer_of_the_check() -> None:
    """Found by probing torchgeo's ChangeViT, whose encoder reads each image of a pair: the table listed 2 invalid
    layers and the check said it verified 3, one per call; ``report.findings`` listed the same finding twice."""
    r = paramcount(_SharedInvalid(), (3, 8, 8))
    assert [layer.name for layer in r.invalid] == [f.layer for f in r.findings] == ["shared"]
    assert r.crosscheck.reason == "1 invalid layer" and "Verified (1 invalid layer)" in str(r)


def test_a_model_that_cannot_run_on_meta_is_checked_on_zeros_on_the_cpu() -> None:
    model = GatedNet()
    r = paramcount(model, (3, 8, 8))
    assert r.opaque and r.crosscheck.trust == Trust.VERIFIED and r.trusted
    assert r.crosscheck.real_output == _real_shape(model, (3, 8, 8)) == (1, 4, 6, 6)
    assert "on zeros on the CPU (on meta: " in r.crosscheck.message


class CheckedSizes(nn.Module):
    """Checks tensor values as transformers' detectors do (``torch_compilable_check`` of its feature map sizes);
    a layer used only in training mode, behind a test that also reads the input (not only the module's settings:
    see test_switchedoff.py), leaves unused parameters, so the cross-check runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.denoising = nn.Linear(4, 4)  # training only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        sizes = torch.empty((1, 2), dtype=torch.long, device=x.device)
        sizes[0, 0], sizes[0, 1] = x.shape[-2:]
        torch._check_tensor_all((sizes[:, 0] * sizes[:, 1]).sum() == x.shape[-2] * x.shape[-1])
        return self.denoising(x.flatten(2).transpose(1, 2)) if self.training and x.dim() == 4 else x


def test_a_check_of_tensor_values_is_run_past_on_meta_as_in_the_trace() -> None:
    model = CheckedSizes().eval()
    r = paramcount(model, (3, 8, 8))
    assert r.unused and r.crosscheck.trust == Trust.VERIFIED and r.trusted
    assert r.crosscheck.real_output == _real_shape(model, (3, 8, 8)) == (1, 4, 6, 6)
    assert r.crosscheck.message.startswith("a forward of the real model on meta gives")  # not again on zeros


def test_a_model_too_large_for_zeros_that_cannot_run_on_meta_is_unverified_not_trusted_blindly() -> None:
    with torch.device("meta"):
        model = GatedNet()
        model.table = nn.Embedding(2**25, 2)  # more than run_on_zeros takes: 2**26 elements; never used
    r = paramcount(model, (3, 8, 8))
    assert r.opaque and r.crosscheck.trust == Trust.UNVERIFIED
    assert r.trusted  # not shown wrong, but the table says it could not be checked
    assert "Unverified (1 opaque" in str(r)
    assert "too large to run on zeros" in r.crosscheck.message


class SkipThenGate(SkipByType):
    """The trace loses the skip connection (a false invalid layer) and the real model cannot run on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.gate(self.down(x))
        return self.head(self.up(F.max_pool2d(skip, 2), skip))


def test_a_false_invalid_layer_is_not_blamed_on_the_real_model_when_meta_cannot_run_it() -> None:
    model = SkipThenGate()
    r = paramcount(model, (1, 16, 16))
    assert [layer.name for layer in r.invalid] == ["up.conv"]  # the trace without the skip: 8 channels, not 16
    assert r.trusted is False and r.crosscheck.trust == Trust.UNTRUSTED
    assert r.crosscheck.real_output == _real_shape(model, (1, 16, 16)) == (1, 2, 16, 16)
    assert "the real model accepts this input (a forward on zeros on the CPU" in r.crosscheck.message
    assert "fails at this input too" not in r.crosscheck.message


class PooledHead(nn.Module):
    """Batch norm after global pooling: at batch 1 a training-mode forward raises; in training it adds an aux output."""

    def __init__(self, aux: bool) -> None:
        super().__init__()
        self.conv, self.norm, self.aux = nn.Conv2d(3, 8, 3), nn.BatchNorm1d(8), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        y = self.norm(self.conv(x).mean((2, 3)))
        return (y, y[:, :2]) if self.aux and self.training else y


def test_a_model_raising_at_this_batch_in_training_mode_is_checked_in_eval_mode() -> None:
    model = PooledHead(aux=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = paramcount(model, (3, 8, 8), crosscheck="always")
    assert model.training and all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # a copy ran
    assert report.crosscheck.trust == Trust.VERIFIED, report.crosscheck
    assert "in eval mode (in training mode it raises at this batch" in report.crosscheck.message
    assert any(line.startswith("The batch is too small for 1 layer (norm)") for line in report.notes())
    # an output that differs in eval mode proves nothing: the check stays unverified, with the training error
    other = paramcount(PooledHead(aux=True), (3, 8, 8), crosscheck="always")
    assert other.crosscheck.trust == Trust.UNVERIFIED
    assert "Expected more than 1 value per channel when training" in other.crosscheck.message
    assert paramcount(PooledHead(aux=True), (3, 8, 8), batch=2, crosscheck="always").crosscheck.trust == Trust.VERIFIED


class StatefulByDefault(nn.Module):
    """Returns its recurrent state too unless ``use_cache=False`` (transformers' RWKV): the trace fixes it to False."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, use_cache: bool | None = None) -> Any:
        y = self.proj(x)
        return (y, y.mean(-1)) if use_cache is not False else y


def test_the_real_forward_gets_the_arguments_the_trace_fixed() -> None:
    model = StatefulByDefault()
    report = paramcount(model, (4,), crosscheck="always")
    assert not model.proj._forward_hooks and model.proj.weight.device.type == "cpu"  # the copies ran, not the model
    assert report.output_shape == (1, 4)
    assert report.crosscheck.trust == Trust.VERIFIED, report.crosscheck.message
    assert report.crosscheck.message.endswith("on meta with use_cache=False (as traced) gives the same output")


def test_never_and_sweep() -> None:
    model = SkipByType()
    assert paramcount(model, (1, 16, 16), crosscheck="never").crosscheck.trust == Trust.NOT_RUN
    reports = paramcount_sweep(model, [(1, 16, 16), (3, 16, 16)])
    assert [r.trusted for r in reports] == [False, False]


def test_bad_mode_names_the_choices() -> None:
    with pytest.raises(InputError, match=r"crosscheck='sometimes' — use one of 'auto', 'always', 'never'"):
        paramcount(CifarNet(), (3, 32, 32), crosscheck="sometimes")


@pytest.mark.parametrize("make", [SkipByType, SkipThenGate], ids=["on meta", "on zeros on the CPU"])
def test_the_model_is_left_as_found(make: Callable[[], SkipByType]) -> None:
    model = make().train()
    calls: list[str] = []
    model.up.register_forward_hook(lambda *a: calls.append("hook"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    paramcount(model, (1, 16, 16), crosscheck="always")
    assert calls == [] and model.training and model.down.weight.device.type == "cpu"
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert len(model.up._forward_hooks) == 1 and not any(m._forward_pre_hooks for m in model.modules())


def test_a_contract_on_an_untrusted_report_is_broken() -> None:
    result = check_contract(SkipByType(), ShapeContract(input=(1, 16, 16), no_invalid=False))
    assert [v.field for v in result.violations] == ["trace"]
    assert "real model accepts this input" in result.violations[0].note


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_monai_basic_unet_is_traced_with_its_skip_connections() -> None:
    """MONAI's UpCat concatenates its skip only ``if torch.jit.isinstance(x_e, torch.Tensor)``: answered from meta."""
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)
    r = paramcount(model, (1, 64, 64))
    assert r.trusted and r.invalid == [] and r.findings == ()
    assert r.total_for_input == sum(p.numel() for p in model.parameters()) == 1_978_466
    assert r.output_shape == _real_shape(model, (1, 64, 64))
    checked = paramcount(model, (1, 64, 64), crosscheck="always")
    assert checked.crosscheck.trust == Trust.VERIFIED


class _Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)[0]


def test_a_run_on_zeros_keeps_the_data_given_with_an_input() -> None:
    """Found by a probe: the real forward of a packed sequence was run on zero lengths and its failure ("Length of
    all samples has to be greater than 0") reported as the model refusing the input, which it takes."""
    lengths = torch.tensor([6, 3, 2])
    assert _Packed()(torch.randn(3, 6, 4), lengths).shape == (3, 6, 5)
    r = paramcount(_Packed(), {"x": (6, 4), "lengths": lengths}, batch=3, crosscheck="always")
    assert r.output_shape == (3, 6, 5) and r.crosscheck.trust == Trust.VERIFIED  # the lengths' data, not zeros


def test_only_the_image_gets_the_channels_its_stem_expects() -> None:
    """Found by a probe: SAM's point prompts also have a dim 1 of 1; the cross-check widened them with the grey
    image, got 3 point batches, and called a right report wrong."""

    class Embed(nn.Module):  # checks the channel count itself, as transformers' patch embeddings do
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            if image.shape[1] != self.stem.in_channels:
                raise ValueError(f"expected {self.stem.in_channels} channels, got {image.shape[1]}")
            return self.stem(image)

    class Prompted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = Embed()
            self.points = nn.Linear(2, 4)

        def forward(self, image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            features = self.embed(image).mean((2, 3))  # (N, 4)
            return features[:, None, :] + self.points(points)  # (N, point batches, 4)

    report = paramcount(Prompted().eval(), {"image": (1, 8, 8), "points": (1, 2)}, crosscheck="always")
    assert [layer.name for layer in report.invalid] == ["embed"]  # the stem inside a layer that checks
    assert report.trusted and report.crosscheck.real_output == (1, 1, 4) == report.output_shape


class _StemChecksItsChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:  # a resized copy still raises: only the input at the count it expects runs
            raise ValueError("the channel dimension of the pixel values must match the configuration")
        return self.conv(x)


class _ConditionedOnADict(nn.Module):
    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.stem, self.cond = stem, nn.Linear(2, 4)

    def forward(self, x: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.stem(x) + self.cond(cond["embeds"])[:, :, None, None]


def test_inputs_inside_a_dict_are_passed_to_the_real_model_inside_it() -> None:
    """Found by a probe (SDXL's added_cond_kwargs): the real forward got one keyword argument per tensor of the
    dict, and the search for the channel count the stem expects looked for channels in the dict."""
    model = _ConditionedOnADict(_StemChecksItsChannels())
    r = paramcount(model, {"x": (1, 8, 8), "cond": {"embeds": (2,)}}, crosscheck="always")
    assert [layer.name for layer in r.invalid] == ["stem"] and r.crosscheck.trust == Trust.VERIFIED
    with torch.no_grad():
        real = model(torch.zeros(1, 3, 8, 8), {"embeds": torch.zeros(1, 2)})  # at the channel count it expects
    assert r.crosscheck.real_output == tuple(real.shape) == r.output_shape
    assert "at the channel count its input layers expect" in r.crosscheck.message


def test_a_forward_refusing_an_input_given_inside_a_dict_says_what_the_real_model_raises() -> None:
    class Checks(_ConditionedOnADict):
        def forward(self, x: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
            if cond["embeds"].shape[-1] != 2:
                raise ValueError("embeds must have 2 features")
            return super().forward(x, cond)

    model = Checks(nn.Conv2d(3, 4, 3))
    with torch.no_grad(), pytest.raises(ValueError, match="embeds must have 2 features"):
        model(torch.zeros(1, 3, 8, 8), {"embeds": torch.zeros(1, 3)})
    with pytest.raises(ShapeError, match=r"a real forward raises ValueError: embeds must have 2 features"):
        paramcount(model, {"x": (3, 8, 8), "cond": {"embeds": (3,)}})


_DEVICES: list[str] = []  # where _Filtered ran, in the copies paramcount makes


class _Filtered(nn.Module):
    """A detector's shape: a stem, then as many channels as pass a threshold (Python on the size ``nonzero`` gives,
    which ``meta`` cannot: no trace gets past it, whatever the input)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _DEVICES.append(x.device.type)
        features = self.stem(x)
        kept = min(8, (features.mean((0, 2, 3)) > -1).nonzero().size(0))  # torchvision's topk of the boxes kept
        return self.head(features[:, :kept])


def test_a_trace_stopped_by_what_meta_lacks_is_not_checked_on_zeros_on_the_cpu() -> None:
    """Was: the real model ran again on meta, failed the same way, then ran on zeros on the CPU (torchvision's FCOS:
    its ResNet-50 at 800 x 800 and its heads, 9 s of a 9.5 s paramcount) to see whether it fails like the trace, which
    a forward on real tensors never does: the error is meta's own.  Same error."""
    _DEVICES.clear()
    with pytest.raises(TraceError, match=r"cannot trace _Filtered.forward .*nonzero.*\n.*\n  fix: its own code needs"):
        paramcount(_Filtered(), (3, 16, 16))
    assert "cpu" not in _DEVICES
