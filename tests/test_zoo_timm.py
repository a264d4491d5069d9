"""timm zoo: architectures across families, with timm's own torch.fx leaf registrations.

Each model is built with ``pretrained=False`` and its weights on ``meta`` and
analysed at its pretrained configuration's input size with 3 channels and
with 1 channel.  Independent checks: ``total`` is the unique parameter count
of the model, and at 1 channel ``total_for_input`` equals the parameter count
of ``timm.create_model(name, in_chans=1)``, whose real forward on ``meta``
gives the same output shape.  Untraceable models (and opaque parts) are
listed with the reason in ``tests/expected/untraceable_timm.txt``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models import measure_training_step, on_meta, tensor_shapes
from torchsurgeon import (
    ModelReport,
    TraceError,
    adapt_input_channels,
    analyse_graph,
    build_graph,
    memory_plan,
    paramcount,
    replace_head,
)
from torchsurgeon.errors import SurgeryError
from torchsurgeon.trace import trace

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

timm = pytest.importorskip("timm")

EXPECTED = Path(__file__).parent / "expected" / "untraceable_timm.txt"
FAMILIES: dict[str, tuple[str, ...]] = {
    "resnet": ("resnet18", "resnet50d", "resnet26t", "seresnext26d_32x4d", "resnetv2_50", "resnest14d", "nfnet_l0"),
    "efficientnet": (
        "efficientnet_b0",
        "efficientnet_lite0",
        "tinynet_e",
        "mixnet_s",
        "test_efficientnet",
        "tf_efficientnet_b0",
    ),
    "convnext": ("convnext_atto", "convnextv2_atto", "test_convnext"),
    "vit": ("vit_tiny_patch16_224", "vit_relpos_small_patch16_224", "eva02_tiny_patch14_224", "test_vit"),
    "deit": ("deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "deit3_small_patch16_224"),
    "swin": ("swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256"),
    "regnet": ("regnetx_002", "regnety_002", "regnetz_005"),
    "mobilenetv3": ("mobilenetv3_small_050", "mobilenetv3_large_100", "mobilenetv4_conv_small"),
    "densenet": ("densenet121",),
    "inception": ("inception_v3", "inception_next_atto"),
    "xception": ("xception41", "legacy_xception"),
    "coat/levit": ("coat_lite_tiny", "levit_128s", "levit_conv_128s"),
    "attention mixes": (
        "maxvit_nano_rw_256",
        "coatnet_nano_rw_224",
        "efficientformer_l1",
        "efficientformerv2_s0",
        "mobilevit_xxs",
        "tiny_vit_5m_224",
        "pvt_v2_b0",
        "twins_svt_small",
        "cait_xxs24_224",
        "efficientvit_m0",
        "fastvit_t8",
        "hiera_tiny_224",
        "volo_d1_224",
        "xcit_nano_12_p16_224",
    ),
    "mlp and others": (
        "mixer_s16_224",
        "resmlp_12_224",
        "poolformer_s12",
        "ghostnet_100",
        "rexnet_100",
        "dla34",
        "hrnet_w18_small",
        "repvgg_a0",
        "hgnetv2_b0",
        "darknet17",
        "mambaout_femto",
        "repvit_m0_9",
        "vgg11",
    ),
    # families the zoo did not hold, among 107 probed by hand on 2026-12-01 (real forward, 1-channel fold exact in
    # float64; CHANGELOG): two patch embeddings, bottleneck attention, dual paths, a NaFlex ViT, meta-formers
    "probed": (
        "crossvit_tiny_240",
        "botnet26t_256",
        "dpn48b",
        "davit_tiny",
        "edgenext_xx_small",
        "caformer_s18",
        "naflexvit_base_patch16_gap",
        "convmixer_768_32",
    ),
}
MODELS = tuple(name for names in FAMILIES.values() for name in names)
BATCH = 2  # batch norms in training mode need more than one value per channel in a real forward


@dataclass
class _Result:
    name: str
    model: nn.Module
    size: tuple[int, ...]
    rgb: ModelReport | None = None
    grey: ModelReport | None = None
    error: TraceError | None = None


_CACHE: dict[str, _Result] = {}


def _result(name: str) -> _Result:
    if name not in _CACHE:
        model = on_meta(timm.create_model, model_name=name, pretrained=False)
        size = tuple(model.pretrained_cfg["input_size"][1:])
        result = _Result(name, model, size)
        try:
            G = build_graph(trace(model))
        except TraceError as exc:
            result.error = exc
        else:
            result.rgb, _ = analyse_graph(G, (3, *size), batch=BATCH)
            result.grey, _ = analyse_graph(G, (1, *size), batch=BATCH)
        _CACHE[name] = result
    return _CACHE[name]


def _one_channel_reference(name: str, size: tuple[int, ...]) -> tuple[int, Any]:
    """Parameter count and real output shapes of timm's own 1-channel model."""
    model = on_meta(timm.create_model, model_name=name, pretrained=False, in_chans=1)
    with torch.no_grad():
        out = model(torch.empty(BATCH, 1, *size, device="meta"))
    return sum(p.numel() for p in model.parameters()), tensor_shapes(out)


@pytest.mark.parametrize("name", MODELS)
def test_timm_model(name: str) -> None:
    r = _result(name)
    assert r.error is None, str(r.error)
    assert r.rgb is not None and r.grey is not None
    unique = sum(p.numel() for p in r.model.parameters())
    assert r.rgb.total == r.grey.total == unique
    assert r.rgb.invalid == [] and r.rgb.total_for_input == unique
    assert not [layer.name for layer in r.rgb.layers if layer.status == "unknown"]
    assert r.grey.invalid, "a 3-channel model must have an invalid first layer at 1 channel"
    params, output = _one_channel_reference(name, r.size)
    assert r.grey.total_for_input == params
    assert r.grey.output_shape == output == r.rgb.output_shape


def test_timm_coverage_and_untraceable_list(expected_file: Callable[[str, str], None], capsys: Any) -> None:
    results = [_result(name) for name in MODELS]
    analysed = [r for r in results if r.error is None]
    lines: list[str] = []
    for r in results:
        if r.error is not None:
            lines.append(f"{r.name}: {str(r.error).splitlines()[0].removeprefix('torch.fx cannot trace ')}")
        elif r.rgb is not None:
            lines += [f"{r.name}: opaque {sub}: {why}" for sub, why in r.rgb.opaque.items()]
    with capsys.disabled():
        print(
            f"\ntimm zoo: {len(analysed)}/{len(results)} models analysed, "
            f"{len(results) - len(analysed)} untraceable with reason ({EXPECTED.name}); "
            f"{len(FAMILIES)} families, timm {timm.__version__}"
        )
    text = (
        "# timm models torchsurgeon cannot trace (or traces with opaque parts), with the reason.\n"
        "# Written by tests/test_zoo_timm.py; regenerate with pytest --overwrite-expected.\n"
        + "".join(f"{line}\n" for line in lines)
    )
    expected_file(EXPECTED.name, text)
    assert len(MODELS) >= 40 and len(set(MODELS)) == len(MODELS)


def test_a_hooked_feature_extractor_is_adapted_without_an_input() -> None:
    """features_only=True, feature_cls='hook' (FeatureHookNet): its hooked body traces as one opaque node, and
    adapt_input_channels asked for input= although an image of its stem's channels runs it."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, features_only=True, feature_cls="hook").eval().double()
    result = adapt_input_channels(model, 1)
    grey = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        got, want = result.model(grey), model(grey.expand(2, 3, 64, 64))
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    for g, w in zip(got, want):
        assert (g - w).abs().max().item() <= 1e-10 * (w.abs().max().item() or 1.0)


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "resnet18", "convnext_atto"])
def test_a_head_put_back_into_a_num_classes_0_model_loads_into_timms(name: str) -> None:
    """timm.create_model(name, num_classes=0) (a feature extractor) given a head with replace_head: the head goes
    where timm's num_classes=N model has it, keeping the features (mobilenetv3's conv_head was replaced)."""
    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    edited = replace_head(model, 7, input=(3, 64, 64)).model
    reference = timm.create_model(name, pretrained=False, num_classes=7)
    reference.load_state_dict(edited.state_dict(), strict=True)
    assert sum(p.numel() for p in edited.parameters()) == sum(p.numel() for p in reference.parameters())
    with torch.no_grad():
        assert edited(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert edited.num_classes == 7


@pytest.mark.parametrize(("channels", "mode"), [(1, "sum"), (4, "repeat"), (4, "zero_extra")])
def test_tresnets_space_to_depth_stem_is_folded_as_timm_folds_it_and_loads_into_timms(channels: int, mode: str) -> None:
    """Found by a user: tresnet_m (SpaceToDepth: 3 colours × 16 pixels make the stem's 48 channels) was refused,
    where timm's ``create_model(..., in_chans=C)`` with pretrained weights keeps them.  Its weights ("pretrained":
    saved before the surgery) are folded now: the state dict loads strictly into timm's in_chans=C model; the
    weight is timm's ``adapt_input_conv`` of the weight (for one channel, as timm's pretrained loading calls it;
    for more, applied to each pixel's 3 colours, where timm's loading gives up and draws new weights); the edited
    model runs on C channels and gives, in float64, the original's output on the input the mode relates."""
    from timm.models import adapt_input_conv

    torch.manual_seed(0)
    model = timm.create_model("tresnet_m", pretrained=False).eval()
    pretrained = model.body.conv1.conv.weight.detach().clone()
    result = adapt_input_channels(model, channels, mode)
    edited = result.model
    assert model.body.conv1.conv.weight.shape == (64, 48, 3, 3)  # the original as found
    reference = timm.create_model("tresnet_m", pretrained=False, in_chans=channels)
    reference.load_state_dict(edited.state_dict(), strict=True)
    assert edited.in_chans == channels
    folded = edited.body.conv1.conv.weight.detach()
    per_pixel = pretrained.reshape(64, 16, 3, 3, 3)  # (out, pixel, colour, kh, kw): SpaceToDepth's colour is fastest
    if mode == "zero_extra":
        expected = torch.cat([per_pixel, per_pixel.new_zeros(64, 16, channels - 3, 3, 3)], 2)
    else:
        expected = torch.stack([adapt_input_conv(channels, per_pixel[:, p]) for p in range(16)], 1)
    torch.testing.assert_close(folded, expected.reshape(64, 16 * channels, 3, 3), rtol=0, atol=0)
    if channels == 1:
        torch.testing.assert_close(folded, adapt_input_conv(1, pretrained), rtol=0, atol=0)  # timm's own loading
    x = torch.randn(2, channels, 64, 64, dtype=torch.float64)
    if mode == "repeat":  # timm's fold: exact on no input, but the edited model runs on 4 channels
        with torch.no_grad():
            assert edited(x.float()).shape == (2, 1000)
        return
    model = model.double()  # folded in float64, so that the weights' sums are not rounded to float32
    with torch.no_grad():
        got = adapt_input_channels(model, channels, mode).model(x)
        want = model(x.expand(2, 3, 64, 64) if channels == 1 else x[:, :3])
    assert (got - want).abs().max().item() <= 1e-10 * want.abs().max().item()


def test_csatv2s_colour_transform_stem_is_refused_with_a_fix_that_runs() -> None:
    """csatv2's stem turns RGB into YCbCr and each plane into its DCT before three convolutions read them: their
    channels are frequencies of colour planes the stem computes, no fold of their weights keeps them (and the
    stem's Python takes 3 channels).  The refusal names the stem and a way that runs as written."""
    model = timm.create_model("csatv2", pretrained=False).eval()
    with pytest.raises(SurgeryError, match=r"^stem_dct\.conv_y \(Conv2d\) reads the input only after") as caught:
        adapt_input_channels(model, 1)
    fix = re.search(r"model\(x\.expand\(-1, 3, \*x\.shape\[2:\]\)\)", str(caught.value))
    assert fix is not None, str(caught.value)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert eval(fix.group(0), {"model": model, "x": x}).shape == (2, 1000)  # as written, on grey images


@pytest.mark.parametrize("name", ["fastvit_t8"])
def test_a_folded_reparameterisable_stem_keeps_the_settings_timm_builds_from(name: str) -> None:
    """Found by a probe of timm's families: adapt_input_channels(fastvit_t8, 1) left the stem's MobileOneBlock
    with ``in_chs=3``; timm's ``reparameterize_model`` (how fastvit is deployed) builds its fused conv from it, so the
    deployed model held a ``Conv2d(3, 48)`` with a 1-channel weight, which paramcount called invalid.  Now every
    ``in_chans`` / ``in_chs`` is the one of timm's ``in_chans=1`` model, the deployed model's state dict loads strictly
    into timm's deployed ``in_chans=1`` model, and it is valid and gives the edited model's output."""
    from timm.utils.model import reparameterize_model

    torch.manual_seed(0)
    edited = adapt_input_channels(timm.create_model(name, pretrained=False).eval(), 1).model
    reference = timm.create_model(name, pretrained=False, in_chans=1).eval()
    for where, module in reference.named_modules():
        for attr in ("in_chans", "in_chs"):
            if type(vars(module).get(attr)) is int:
                assert getattr(edited.get_submodule(where), attr) == getattr(module, attr), f"{where}.{attr}"
    deployed = reparameterize_model(edited)
    reparameterize_model(reference, inplace=True).load_state_dict(deployed.state_dict(), strict=True)
    assert paramcount(deployed, (1, 64, 64)).invalid == []
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), edited(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "resnet50"])
def test_set_grad_checkpointing_is_planned_for_a_gpu_as_a_real_step_saves(name: str) -> None:
    """Found by a probe: with ``set_grad_checkpointing(True)`` (timm's non-reentrant checkpoints), the plan of a ViT
    for ``device="cuda"`` (the default) failed with torch's CheckpointError, reported as what a real step raises: the
    backward's recomputation of each block ran the CPU's attention where the forward had run CUDA's fused kernel."""
    torch.manual_seed(0)
    model = (
        timm.create_model(name, pretrained=False, img_size=64) if name.startswith("vit") else timm.create_model(name)
    )
    model.train().set_grad_checkpointing(True)
    plan = memory_plan(model, (3, 64, 64), batch=2, optimizer="sgd")
    real = measure_training_step(model, torch.randn(2, 3, 64, 64))
    assert (plan.activations, plan.gradients) == (real.saved, real.gradients) and plan.peak_at.startswith("backward")
    assert all(m.grad_checkpointing for m in model.modules() if hasattr(m, "grad_checkpointing")) and model.training
