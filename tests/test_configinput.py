"""The input a model's config describes (Hugging Face configs: a vision tower's, a backbone's or an image encoder's
image, with its text's token ids where the forward asks for both) and the image tower run alone when the model
refuses it."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from torchsurgeon.configinput import default_input, image_tower_readers
from torchsurgeon.errors import SurgeryError


def test_default_input_reads_a_vision_config() -> None:
    class Vision(nn.Module):
        def __init__(self, **config: object) -> None:
            super().__init__()
            self.config = types.SimpleNamespace(**config)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return pixel_values

    assert default_input(Vision(num_channels=3, image_size=32)) == {"pixel_values": (3, 32, 32)}
    assert default_input(Vision(num_channels=1, image_size=[30, 40])) == {"pixel_values": (1, 30, 40)}
    assert default_input(Vision(num_channels=3)) == {"pixel_values": (3, 224, 224)}
    assert default_input(Vision(image_size=32)) is None


def test_default_input_of_an_image_and_text_model_gives_its_token_ids_too() -> None:
    """CLIP's forward asks for both (``You have to specify input_ids``): the config's image and 16 token ids, fewer
    where the text has fewer positions; a model without a text config, or whose forward takes no token ids, gets
    the image alone."""

    class Dual(nn.Module):
        def __init__(self, positions: int | None) -> None:
            super().__init__()
            text = types.SimpleNamespace(max_position_embeddings=positions) if positions else types.SimpleNamespace()
            vision = types.SimpleNamespace(num_channels=3, image_size=32)
            self.config = types.SimpleNamespace(vision_config=vision, text_config=text)

        def forward(self, input_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None) -> None:
            return None

    class ImageOnly(Dual):
        def forward(self, pixel_values: torch.Tensor | None = None) -> None:  # type: ignore[override]
            return None

    assert default_input(Dual(77)) == {"pixel_values": (3, 32, 32), "input_ids": (16,)}
    assert default_input(Dual(8)) == {"pixel_values": (3, 32, 32), "input_ids": (8,)}
    assert default_input(Dual(None)) == {"pixel_values": (3, 32, 32), "input_ids": (16,)}
    assert default_input(ImageOnly(77)) == {"pixel_values": (3, 32, 32)}


def test_default_input_reads_the_text_settings_on_a_single_stream_models_own_config() -> None:
    """ViLT and GIT keep their text's settings (``vocab_size``, ``max_position_embeddings``) on the model's own
    config, no ``text_config``: their forward asks for token ids too, as many as the text has positions; a config
    without ``vocab_size`` describes no text, and its model gets the image alone."""

    class SingleStream(nn.Module):
        def __init__(self, **text: int) -> None:
            super().__init__()
            self.config = types.SimpleNamespace(num_channels=3, image_size=32, **text)

        def forward(self, input_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None) -> None:
            return None

    assert default_input(SingleStream(vocab_size=99, max_position_embeddings=40)) == {
        "pixel_values": (3, 32, 32),
        "input_ids": (16,),
    }
    assert default_input(SingleStream(vocab_size=99, max_position_embeddings=11)) == {
        "pixel_values": (3, 32, 32),
        "input_ids": (11,),
    }
    assert default_input(SingleStream(max_position_embeddings=40)) == {"pixel_values": (3, 32, 32)}


def test_default_input_of_an_image_encoder_and_a_text_decoder_gives_the_decoders_token_ids() -> None:
    """VisionEncoderDecoderModel (TrOCR, Donut) keeps its image's settings in ``config.encoder`` and its text's in
    ``config.decoder``, and its forward takes ``pixel_values`` and ``decoder_input_ids``: it was given no input
    (no channels of its own) and ``adapt_input_channels`` asked for ``input=(3, 224, 224)``, which it refuses."""

    class EncoderDecoder(nn.Module):
        def __init__(self, decoder: types.SimpleNamespace) -> None:
            super().__init__()
            encoder = types.SimpleNamespace(num_channels=3, image_size=32)
            self.config = types.SimpleNamespace(encoder=encoder, decoder=decoder)

        def forward(
            self, pixel_values: torch.Tensor | None = None, decoder_input_ids: torch.Tensor | None = None
        ) -> None:
            return None

    text = types.SimpleNamespace(vocab_size=99, max_position_embeddings=10)
    assert default_input(EncoderDecoder(text)) == {"pixel_values": (3, 32, 32), "decoder_input_ids": (10,)}
    assert default_input(EncoderDecoder(types.SimpleNamespace())) == {"pixel_values": (3, 32, 32)}  # no text


def test_default_input_reads_layoutlmv3s_image_size_named_input_size() -> None:
    """LayoutLMv3's config names its image's size ``input_size``: read as ``image_size`` (it was run at 224)."""

    class Layout(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = types.SimpleNamespace(num_channels=3, input_size=32)

        def forward(self, pixel_values: torch.Tensor | None = None) -> None:
            return None

    assert default_input(Layout()) == {"pixel_values": (3, 32, 32)}


class _Tower(nn.Module):
    def __init__(self, config: types.SimpleNamespace) -> None:
        super().__init__()
        self.config, self.patch = config, nn.Conv2d(3, 8, 4, 4)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.patch(pixel_values).flatten(2).transpose(1, 2)


class _Chat(nn.Module):
    """LLaVA in small: a text model that reads the image's features only where its ids hold image tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(vision_config=types.SimpleNamespace(), image_token=7)
        self.tower, self.embed = _Tower(self.config.vision_config), nn.Embedding(10, 8)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        if int((input_ids == self.config.image_token).sum()) != 16:
            raise ValueError("Image features and image tokens do not match")
        return self.embed(input_ids) + self.tower(pixel_values)


def test_the_image_tower_of_a_model_refusing_its_config_input_is_run_alone() -> None:
    """A model whose forward matches image tokens in its ids (LLaVA) refuses random ids: its tower, the module
    built from ``config.vision_config``, runs on the image alone and names the layer reading it; no tower, or a
    tower refusing the image, gives None."""
    assert image_tower_readers(_Chat(), {"pixel_values": (3, 16, 16), "input_ids": (16,)}) == (
        "tower",
        ["tower.patch"],
    )
    assert image_tower_readers(_Chat(), {"pixel_values": (5, 16, 16)}) is None  # the tower refuses 5 channels
    assert image_tower_readers(nn.Conv2d(3, 8, 3), {"pixel_values": (3, 16, 16)}) is None
    assert image_tower_readers(_Chat(), (3, 16, 16)) is None  # no image by name


def test_adapt_input_channels_names_the_towers_layer_when_the_model_refuses_its_config_input() -> None:
    """The refusal of the config's input keeps its cause and names the call that folds the tower's layer."""
    from torchsurgeon import adapt_input_channels

    model = _Chat()
    model.config.vision_config.num_channels, model.config.vision_config.image_size = 3, 16
    model.config.vocab_size = 10  # its text's: default_input gives 16 token ids beside the image
    before = model.tower.patch.weight.detach().clone()
    with pytest.raises(
        SurgeryError, match=r"image tower tower \(_Tower\) runs on the image alone, and tower\.patch"
    ) as info:
        adapt_input_channels(model, 1)
    assert "adapt_input_channels(model, 1, layer='tower.patch')" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    # the tower was run on a meta copy: the model keeps its weights, devices and hooks
    assert model.tower.patch.weight.device.type == "cpu" and torch.equal(model.tower.patch.weight, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
