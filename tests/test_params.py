"""Parameter accounting: unique totals, shared and reused weights, attributes, resizing."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from models import TiedLM, on_meta
from torchsurgeon import Finding, build_graph, count_params, paramcount
from torchsurgeon.params import resized_param_count
from torchsurgeon.trace import trace


class Reuse(nn.Module):
    """One Linear called twice, a parameter used directly, and a module forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))
        self.unused = nn.Linear(4, 100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x)) * self.scale


def test_reused_module_counted_once_and_marked_shared() -> None:
    r = paramcount(Reuse(), (4,))
    assert r.total == 20 + 4 + 500
    fc_rows = [layer for layer in r.layers if layer.name == "fc"]
    assert len(fc_rows) == 2 and all(row.shared == ("fc.weight", "fc.bias") for row in fc_rows)
    assert r.layer("scale").params == 4 and r.layer("scale").type == "Parameter"
    assert r.unused == ("unused.weight", "unused.bias")
    assert "Unused by forward (still counted): unused.weight, unused.bias" in str(r)


def test_tied_weights_once_in_totals() -> None:
    s = count_params(build_graph(trace(TiedLM(vocab=10, dim=4))))
    assert s.total == 10 * 4 + 2 * 4
    assert s.layers["embed"].shared == ("embed.weight",)


def test_vit_class_token_and_position_embedding_are_layers() -> None:
    model = on_meta(torchvision.models.vit_b_16)
    r = paramcount(model, (3, 224, 224))
    assert r.layer("class_token").params == 768
    assert r.layer("encoder.pos_embedding").params == 197 * 768
    assert r.total == sum(p.numel() for p in model.parameters()) == 86_567_656


def test_bytes_by_dtype_mixed_precision() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2).to(torch.float64))
    s = count_params(build_graph(trace(model)))
    assert s.bytes_by_dtype == {"float32": 20 * 4, "float64": 10 * 8}


@pytest.mark.parametrize(
    ("module", "what", "got", "expected"),
    [
        (nn.Conv2d(3, 6, 5), "in_channels", 1, 6 * 1 * 25 + 6),
        (nn.Conv2d(4, 8, 3, groups=2, bias=False), "in_channels", 6, 8 * 3 * 9),
        (nn.ConvTranspose2d(3, 6, 2), "in_channels", 1, 1 * 6 * 4 + 6),
        (nn.Linear(400, 120), "in_features", 256, 256 * 120 + 120),
        (nn.BatchNorm2d(64), "num_features", 32, 64),
        (nn.GroupNorm(4, 64), "num_channels", 32, 64),
        (nn.LayerNorm(8), "normalized_shape", (6,), 12),
        (nn.LayerNorm(8, bias=False), "normalized_shape", (6,), 6),
    ],
)
def test_resized_param_count(module: nn.Module, what: str, got: object, expected: int) -> None:
    assert resized_param_count(module, Finding("l", type(module).__name__, what, None, got, "")) == expected


def test_weight_norm_conv_resized_like_a_new_one() -> None:
    from torch.nn.utils.parametrizations import weight_norm

    r = paramcount(nn.Sequential(weight_norm(nn.Conv2d(3, 8, 3))), (1, 8, 8))
    fresh = weight_norm(nn.Conv2d(1, 8, 3))
    assert [layer.name for layer in r.invalid] == ["0"]
    assert r.total_for_input == sum(p.numel() for p in fresh.parameters()) == 8 * 9 + 8 + 8  # v, g, bias


class _ReadsDtypeFirst(nn.Module):
    """Reads its stem's weight dtype before the stem runs, as transformers' ``ViTModel.forward`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.Flatten())
        self.head = nn.Linear(8 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.stem[0].weight.dtype)
        return self.head(self.stem(x))


@pytest.mark.parametrize("channels", [3, 1])
def test_a_weight_read_for_its_dtype_counts_in_the_layer_that_uses_it(channels: int) -> None:
    model = _ReadsDtypeFirst()
    rows = {row.name: row for row in paramcount(model, (channels, 16, 16)).rows(1)}
    assert rows["stem"].params == sum(p.numel() for p in model.stem.parameters())  # 392, not the bias alone
    assert rows["stem.0.weight"].params == 0
    folded = 8 * channels * 4 * 4 + 8  # the stem's conv once it takes `channels` channels
    assert rows["stem"].params_for_input == folded
    assert all(row.params_for_input >= 0 for row in rows.values())


def test_vit_model_embeddings_row_holds_the_patch_projection() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, image_size=64
    )
    model = transformers.ViTModel(config)
    rows = {row.name: row for row in paramcount(model, {"pixel_values": (1, 64, 64)}).rows(1)}
    assert rows["embeddings"].params == sum(p.numel() for p in model.embeddings.parameters())
    assert rows["embeddings"].params_for_input == rows["embeddings"].params - 32 * 2 * 16 * 16  # 3 -> 1 channel


@pytest.mark.parametrize("size", [(320, 320), (320, 256)])
def test_a_position_table_added_to_more_positions_counts_at_the_datas_size(size: tuple[int, int]) -> None:
    """Found by a probe: timm's and torchvision's ViT-B/16 at 320×320 had ``total_for_input`` 86,567,656 (the table
    of 197 positions it holds), while the fix their findings name (timm's ``set_input_size``, torchvision's recipe)
    gives 86,724,328: a table of 401. The table counts at the data's size now."""
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, num_classes=3)
    r = paramcount(vit, (3, *size))
    assert any(f.fix.endswith(f"model.set_input_size(img_size={size})") for f in r.findings)
    vit.set_input_size(img_size=size)  # the fix, as written
    assert r.total_for_input == sum(p.numel() for p in vit.parameters()) != r.total
    assert (r.layer("pos_embed").params, r.layer("pos_embed").params_for_input) == (197 * 192, vit.pos_embed.numel())


def test_a_torchvision_vit_at_another_size_and_channel_count_counts_its_table_and_its_fold() -> None:
    from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

    from torchsurgeon import adapt_input_channels

    sizes = {"patch_size": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 24}
    model = VisionTransformer(image_size=32, **sizes)
    r = paramcount(model, (1, 48, 48))
    resized = VisionTransformer(image_size=48, **sizes)  # torchvision's recipe, then the fold
    resized.load_state_dict(interpolate_embeddings(48, 8, model.state_dict()))
    folded = adapt_input_channels(resized, 1).model
    assert r.total_for_input == sum(p.numel() for p in folded.parameters()) == r.total + 16 * (37 - 17) - 16 * 2 * 64


class ResampledTable(nn.Module):
    """A position table for 32×32 images that its forward resamples when asked, as transformers' Hiera does."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 8, 8)
        self.pos = nn.Parameter(torch.zeros(1, 16, 4))

    def forward(self, x: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        patches = self.proj(x).flatten(2).transpose(1, 2)
        pos = self.pos
        if interpolate_pos_encoding:
            grid = pos.reshape(1, 4, 4, 4).permute(0, 3, 1, 2)
            size = (x.shape[2] // 8, x.shape[3] // 8)
            pos = nn.functional.interpolate(grid, size=size, mode="bicubic").flatten(2).transpose(1, 2)
        return patches + pos


def test_a_table_its_forward_resamples_counts_at_its_own_size() -> None:
    """Found by a probe: transformers' Hiera at 96×96 (built for 64×64) had ``total_for_input`` 67,514, its table
    counted at 576 positions, while the fix its finding names, ``interpolate_pos_encoding=True``, resamples the
    table of 256 in ``forward``: 64,954 parameters, the model's own."""
    model = ResampledTable()
    r = paramcount(model, (3, 48, 48))
    assert any("concrete_args={'interpolate_pos_encoding': True}" in f.fix for f in r.findings)
    assert model(torch.zeros(1, 3, 48, 48), interpolate_pos_encoding=True).shape == (1, 36, 4)  # the fix runs
    assert r.total_for_input == sum(p.numel() for p in model.parameters()) == r.total
