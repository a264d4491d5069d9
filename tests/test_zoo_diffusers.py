"""diffusers zoo: UNets (DDPM, Stable Diffusion 1.x and XL, ControlNet, video), transformers (DiT, SD3, Flux) and
autoencoders (KL, TAESD), built small from their configs.

Per model: exact total, the output of a real CPU forward, no invalid layer at its own inputs, MACs equal to
FlopCounterMode's on a meta copy.  And the surgery people do to these models: the conditional UNet's ``conv_in``
widened from 4 to 9 channels for inpainting (the image latents, a mask and the masked image's latents: new weights
zero, as diffusers' inpainting training starts), the VAE folded to grey images; the edited model's config says its new
channel count (``save_pretrained`` writes it, ``from_pretrained`` rebuilds the model from it).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models import assert_same_state, model_state, tensor_shapes
from torchsurgeon import ParamChange, adapt_input_channels, paramcount
from zoo_checks import counted_macs, macs_agree

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

diffusers = pytest.importorskip("diffusers")


_SMALL = {"layers_per_block": 1, "block_out_channels": (32, 64), "norm_num_groups": 8}
"""The sizes every UNet and VAE here is built with: two levels, one block each, 32 and 64 channels."""


def _ddpm_unet() -> nn.Module:
    return diffusers.UNet2DModel(
        **_SMALL,
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )


def _sd_unet() -> nn.Module:
    return diffusers.UNet2DConditionModel(
        **_SMALL,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )


def _vae() -> nn.Module:
    return diffusers.AutoencoderKL(
        **_SMALL,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=32,
    )


def _vae_tiny() -> nn.Module:
    """TAESD: latents quantised to bytes in its forward (``x.mul_(255).round_().byte()``, then ``/ 255.0``)."""
    return diffusers.AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )


def _sdxl_unet() -> nn.Module:
    return diffusers.UNet2DConditionModel(
        **_SMALL,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 32,
        transformer_layers_per_block=(1, 2),
    )


def _controlnet(in_channels: int = 4) -> nn.Module:
    return diffusers.ControlNetModel(
        **_SMALL,
        in_channels=in_channels,
        conditioning_channels=3,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        conditioning_embedding_out_channels=(8, 16),
    )


def _dit() -> nn.Module:
    return diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=2, sample_size=8, patch_size=2
    )


def _sd3() -> nn.Module:
    return diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=8,
        out_channels=4,
        pos_embed_max_size=16,
    )


def _flux() -> nn.Module:
    return diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        axes_dims_rope=(2, 2, 4),
    )


def _video_unet() -> nn.Module:
    return diffusers.UNet3DConditionModel(
        **_SMALL,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )


def _inputs(name: str, channels: int | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """Real inputs as the model's users call it (the timestep a CPU tensor, as the pipelines give it)."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype).to(device)

    c = channels if channels is not None else MODELS[name][1]
    size = {"sd_unet": 16, "sdxl_unet": 16, "controlnet": 16, "dit": 8, "sd3": 8, "video_unet": 8}.get(name, 32)
    step = torch.tensor([10], device=device)  # on meta too for FlopCounterMode's forward of a meta copy
    text = {"encoder_hidden_states": r(1, 7, 32)}
    inputs: dict[str, dict[str, Any]] = {
        "ddpm_unet": {"sample": r(1, c, size, size), "timestep": step},
        "sd_unet": {"sample": r(1, c, size, size), "timestep": step, **text},
        "vae": {"sample": r(1, c, size, size)},
        "vae_tiny": {"sample": r(1, c, size, size)},
        "sdxl_unet": {
            "sample": r(1, c, size, size),
            "timestep": step,
            **text,
            "added_cond_kwargs": {"text_embeds": r(1, 32), "time_ids": r(1, 6)},
        },
        "controlnet": {"sample": r(1, c, size, size), "timestep": step, **text, "controlnet_cond": r(1, 3, 32, 32)},
        "dit": {"hidden_states": r(1, c, size, size), "timestep": step, "class_labels": step // 10},
        "sd3": {
            "hidden_states": r(1, c, size, size),
            "encoder_hidden_states": r(1, 5, 16),
            "pooled_projections": r(1, 8),
            "timestep": step,
        },
        "flux": {
            "hidden_states": r(1, 16, c),
            "encoder_hidden_states": r(1, 5, 16),
            "pooled_projections": r(1, 8),
            "timestep": torch.tensor([1.0], device=device),
            "img_ids": torch.zeros(16, 3, device=device),
            "txt_ids": torch.zeros(5, 3, device=device),
        },
        "video_unet": {"sample": r(1, c, 2, size, size), "timestep": step, **text},
    }
    return inputs[name]


_AS_GIVEN = ("timestep", "class_labels", "img_ids", "txt_ids", "added_cond_kwargs")
"""Inputs given as tensors (their data, or no batch dim: Flux's position ids), not as per-sample shapes."""


def _spec(inputs: dict[str, Any]) -> dict[str, Any]:
    """paramcount's input: per-sample shapes of the batched tensors, the others as given."""
    return {k: v if k in _AS_GIVEN else tuple(v.shape[1:]) for k, v in inputs.items()}


MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "ddpm_unet": (_ddpm_unet, 3),
    "sd_unet": (_sd_unet, 4),
    "vae": (_vae, 3),
    "vae_tiny": (_vae_tiny, 3),
    "sdxl_unet": (_sdxl_unet, 4),
    "controlnet": (_controlnet, 4),
    "dit": (_dit, 4),
    "sd3": (_sd3, 4),
    "flux": (_flux, 16),
    "video_unet": (_video_unet, 4),
}
_CACHE: dict[str, nn.Module] = {}  # each model built once, shared by the tests (never edited: surgery copies)


def _model(name: str) -> nn.Module:
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = MODELS[name][0]().eval()
    return _CACHE[name]


def _sample(output: Any) -> torch.Tensor:
    return output.sample if hasattr(output, "sample") else output[0]


@pytest.mark.parametrize("name", list(MODELS))
def test_diffusers_model(name: str) -> None:
    """No op of these models runs on meta any more (diffusers' transformers: ``unflatten``, ``split_with_sizes``,
    ``reshape(shape=...)``, ``repeat_interleave(..., output_size=...)``, ``outer`` of two dtypes)."""
    model = _model(name)
    inputs = _inputs(name)
    before, config = model_state(model), dict(model.config)
    report = paramcount(model, _spec(inputs))
    assert_same_state(before, model_state(model))  # weights, buffers, hooks, training, requires_grad
    assert dict(model.config) == config
    assert report.total == sum(p.numel() for p in model.parameters())
    assert report.trusted and report.invalid == [] and report.shape_fallbacks == []
    with torch.no_grad():
        assert report.output_shape == tensor_shapes(model(**inputs))
    counted = counted_macs(model, lambda m: m(**_inputs(name, device="meta")))
    assert counted is not None
    macs_agree(report, counted)


def test_inpainting_unet_conv_in_widened_to_nine_channels(tmp_path: Path) -> None:
    """The report names conv_in and its fix; ``adapt_input_channels(unet, 9, mode="zero_extra")`` widens it with
    zero weights for the 5 new channels (the edited model on latents + anything equals the original on the latents,
    in float64), sets ``config.in_channels`` to 9 with ``register_to_config`` (listed in the changes; a plain
    attribute of diffusers' frozen config would leave what ``save_pretrained`` writes at 4), and the saved model
    loads back; the original is left as it was."""
    unet = _model("sd_unet")
    before, config = model_state(unet), dict(unet.config)
    spec = _spec(_inputs("sd_unet", 4))
    nine = dict(spec, sample=(9, 16, 16))
    report = paramcount(unet, nine)
    assert [layer.name for layer in report.invalid] == ["conv_in"]
    assert "conv_in (Conv2d) expects in_channels=4, got 9" in report.invalid[0].message
    result = adapt_input_channels(unet, 9, mode="zero_extra", input=spec)
    edited = result.model
    changes = {c.name: (c.status, c.message) for c in result.changes}
    assert changes == {
        "conv_in.weight": (ParamChange.FOLDED, "zero_extra fold of 4 → 9 channels"),
        "config.in_channels": (ParamChange.SETTING, "4 → 9"),
    }
    assert edited.config.in_channels == edited.config["in_channels"] == 9
    assert_same_state(before, model_state(unet))  # the edit was made on a copy
    assert dict(unet.config) == config and unet.config.in_channels == 4
    assert report.total_for_input == sum(p.numel() for p in edited.parameters())
    assert paramcount(edited, nine).invalid == []
    original, widened = copy.deepcopy(unet).double(), copy.deepcopy(edited).double()
    latents = _inputs("sd_unet", 4, dtype=torch.float64)
    extra = torch.randn(1, 5, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = _sample(original(**latents))
        got = _sample(widened(**dict(latents, sample=torch.cat([latents["sample"], extra], 1))))
    assert (got - want).abs().max().item() <= 1e-12 * want.abs().max().item()
    edited.save_pretrained(tmp_path)
    reloaded = diffusers.UNet2DConditionModel.from_pretrained(tmp_path).eval()
    assert reloaded.conv_in.weight.shape == (32, 9, 3, 3) and torch.equal(
        reloaded.conv_in.weight, edited.conv_in.weight
    )


def test_vae_folded_to_grey_images_is_exact() -> None:
    """The VAE's encoder.conv_in folded to 1 channel (in float64: a sum of float32 weights rounds): exact against the
    original on grey replicated to RGB, and its config says 1 (the decoder still makes 3 channels)."""
    original = copy.deepcopy(_model("vae")).double()
    result = adapt_input_channels(original, 1, input=_spec(_inputs("vae", 3, dtype=torch.float64)))
    assert {c.name for c in result.changes} == {"encoder.conv_in.weight", "config.in_channels"}
    assert (result.model.config.in_channels, result.model.config.out_channels) == (1, 3)
    assert original.config.in_channels == 3
    folded = result.model
    grey = torch.randn(1, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _sample(original(grey.expand(1, 3, 32, 32)))
        got = _sample(folded(grey))
    assert tuple(got.shape) == (1, 3, 32, 32)
    assert (got - want).abs().max().item() <= 1e-10 * want.abs().max().item()


def test_controlnet_conditioning_image_folded_to_one_channel(tmp_path: Path) -> None:
    """A ControlNet for 1-channel conditions (depth maps, edges): the report names the conditioning image's stem with
    a fix naming that layer (the model takes two images: without ``layer=`` the fold is refused, asking which), and
    the fix, run as written, is exact in float64 against the original on the condition replicated to RGB; its
    config's ``conditioning_channels`` says 1, the latents' ``in_channels`` still 4, and the saved model loads back."""
    controlnet = _model("controlnet")
    inputs = _inputs("controlnet")
    before, config = model_state(controlnet), dict(controlnet.config)
    report = paramcount(controlnet, dict(_spec(inputs), controlnet_cond=(1, 32, 32)))
    (layer,) = report.invalid
    assert layer.name == "controlnet_cond_embedding.conv_in"
    fix = layer.message.split("fold it with ")[1]
    assert fix == "adapt_input_channels(model, 1, layer=['controlnet_cond_embedding.conv_in'])"
    original = copy.deepcopy(controlnet).double()
    result = eval(fix, {"adapt_input_channels": adapt_input_channels, "model": original})  # as written
    assert {c.name: c.message for c in result.changes} == {
        "controlnet_cond_embedding.conv_in.weight": "sum fold of 3 → 1 channels",
        "config.conditioning_channels": "3 → 1",
    }
    assert (result.model.config.conditioning_channels, result.model.config.in_channels) == (1, 4)
    assert_same_state(before, model_state(controlnet))  # analysed and copied, never edited
    assert dict(controlnet.config) == config and controlnet.config.conditioning_channels == 3
    latents = _inputs("controlnet", dtype=torch.float64)
    grey = torch.randn(1, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = original(**dict(latents, controlnet_cond=grey.expand(1, 3, 32, 32))).mid_block_res_sample
        got = result.model(**dict(latents, controlnet_cond=grey)).mid_block_res_sample
    assert (got - want).abs().max().item() <= 1e-10 * want.abs().max().item()
    result.model.save_pretrained(tmp_path)
    reloaded = diffusers.ControlNetModel.from_pretrained(tmp_path)
    assert reloaded.controlnet_cond_embedding.conv_in.weight.shape[1] == 1


def test_flux_x_embedder_widened_as_for_fill_and_depth_models() -> None:
    """FLUX.1 Fill and Depth widen the ``x_embedder`` Linear that reads the packed latents (tokens, channels last)
    for the extra conditioning channels: ``adapt_input_channels(flux, 32, mode="zero_extra", input=...)`` widens
    its last dim (the channels of a Linear's input, here as many as the tokens: the first dim was widened before,
    and the check of the edit failed), sets ``config.in_channels``, and the edited model on latents + anything
    equals the original on the latents."""
    flux = _model("flux")
    inputs = _inputs("flux")
    result = adapt_input_channels(flux, 32, mode="zero_extra", input=_spec(inputs))
    assert {c.name: c.message for c in result.changes} == {
        "x_embedder.weight": "zero_extra fold of 16 → 32 channels",
        "config.in_channels": "16 → 32",
    }
    latents = inputs["hidden_states"]
    extra = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = flux(**inputs).sample
        got = result.model(**dict(inputs, hidden_states=torch.cat([latents, extra], -1))).sample
    assert torch.equal(got, want)


@pytest.mark.parametrize(("name", "channels"), [("sd_unet", 9), ("video_unet", 8), ("flux", 32)])
def test_widened_latents_name_a_fold_that_runs_as_written(name: str, channels: int) -> None:
    """A model of several inputs given widened latents (SD inpainting's 9 channels, a video UNet's 8 with its frames
    merged into the batch, FLUX.1 Fill's 32 on a Linear): its input layer is invalid, and the fold its fix names
    passes ``input=`` with every input as given, the latents at the channels the layer takes now.
    adapt_input_channels cannot guess a timestep and a text; without ``input=`` the fix raised SurgeryError."""
    model = _model(name)
    widened = _spec(_inputs(name, channels=channels))
    (layer,) = paramcount(model, widened).invalid
    found = re.search(r"fold it with (adapt_input_channels\(.*?\))(?:;|$)", layer.message)
    assert found is not None and ", input={" in found[1], layer.message
    result = eval(found[1], {"adapt_input_channels": adapt_input_channels, "model": model, "torch": torch})
    report = paramcount(result.model, widened)
    assert report.invalid == [] and report.total == sum(p.numel() for p in result.model.parameters())
    assert result.model.config.in_channels == channels and model.config.in_channels == MODELS[name][1]


def test_a_setting_equal_to_another_is_changed_only_where_it_builds_the_layer(tmp_path: Path) -> None:
    """A ControlNet on 3-channel latents (pixel space) with a 3-channel condition: folding the condition's stem to
    grey changed ``config.in_channels`` too (both said 3), and the saved model could not be loaded (its ``conv_in``
    rebuilt for 1 channel).  Of the settings equal to the old count, only those the layer is built from change:
    ``conditioning_channels``, found by rebuilding the model from its config on meta."""
    torch.manual_seed(0)
    controlnet = _controlnet(in_channels=3).eval()
    before, config = model_state(controlnet), dict(controlnet.config)
    result = adapt_input_channels(controlnet, 1, layer=["controlnet_cond_embedding.conv_in"])
    assert_same_state(before, model_state(controlnet))  # the rebuilds from its config leave it as found
    assert dict(controlnet.config) == config
    assert {c.name: c.message for c in result.changes} == {
        "controlnet_cond_embedding.conv_in.weight": "sum fold of 3 → 1 channels",
        "config.conditioning_channels": "3 → 1",
    }
    assert (result.model.config.in_channels, result.model.config.conditioning_channels) == (3, 1)
    result.model.save_pretrained(tmp_path)
    reloaded = diffusers.ControlNetModel.from_pretrained(tmp_path)
    assert (reloaded.conv_in.in_channels, reloaded.controlnet_cond_embedding.conv_in.in_channels) == (3, 1)
