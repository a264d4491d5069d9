"""paramcount: the seed numbers, invalid layers, the table, JSON, and never changing the model."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from models import CifarNet, TiedLM, TwoInputs, assert_same_state, model_state
from torchsurgeon import InputError, ShapeError, TraceError, paramcount, paramcount_sweep


def unique_numel(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ---------------------------------------------------------------- seed scenario


def test_resnet50_seed_numbers_at_3_and_1_channels() -> None:
    model = torchvision.models.resnet50()
    rgb = paramcount(model, (3, 224, 224))
    grey = paramcount(model, (1, 224, 224))
    assert rgb.total == grey.total == 25_557_032
    assert rgb.total_for_input == 25_557_032
    assert grey.total_for_input == 25_550_760
    assert rgb.invalid == []
    assert [layer.name for layer in grey.invalid] == ["conv1"]
    conv1 = grey.layer("conv1")
    assert (conv1.params, conv1.params_for_input) == (9_408, 3_136)
    assert "expects in_channels=3, got 1" in conv1.message
    assert "adapt_input_channels(model, 1)" in conv1.message
    assert grey.output_shape == rgb.output_shape == (1, 1000)


def test_cifar_tutorial_seed_numbers() -> None:
    rgb = paramcount(CifarNet(), (3, 32, 32))
    grey = paramcount(CifarNet(), (1, 32, 32))
    assert rgb.total == grey.total == 62_006
    assert grey.total_for_input == 61_706
    conv1 = grey.layer("conv1")
    assert (conv1.params, conv1.params_for_input) == (456, 156)
    assert [layer.name for layer in grey.invalid] == ["conv1"]


# ---------------------------------------------------------------- invalid layers, all of them


def test_spatial_change_breaks_the_linear_after_flatten() -> None:
    r = paramcount(CifarNet(), (3, 64, 64))
    assert [layer.name for layer in r.invalid] == ["fc1"]
    fc1 = r.layer("fc1")
    # 64 -> conv5 60 -> pool 30 -> conv5 26 -> pool 13: 16*13*13 features
    assert "in_features=400, got 2704" in fc1.message
    assert "(an nn.AdaptiveAvgPool before flatten gives 400 features for any input size)" in fc1.message
    assert fc1.params_for_input == 120 * 2704 + 120
    assert r.output_shape == (1, 10)  # propagation went on past fc1


def test_a_head_whose_features_cannot_follow_the_input_size_gets_no_pooling_hint() -> None:
    """Found by a probe: a classifier given the wrong width (a transformer's pooled token, an MLP head, timm's
    head of pool, LayerNorm2d and flatten) was told an AdaptiveAvgPool would give its features for any input size;
    no pooling changes a channel count."""
    timm = pytest.importorskip("timm")
    convnext = timm.create_model("convnext_atto", pretrained=False)
    convnext.head.fc = nn.Linear(100, 5)  # features are 320 channels, already pooled
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(32, 3))
    for model, shape, layer in ((convnext, (3, 64, 64), "head.fc"), (mlp, (12,), "3")):
        (found,) = paramcount(model, shape).invalid
        assert found.name == layer and "AdaptiveAvgPool" not in found.message
        assert "replace the layer (new weights): model.set_submodule(" in found.message


class _PoolsByFunction(torchvision.models.ResNet):
    """Older code's head: F.adaptive_avg_pool2d, then x.view(x.size(0), -1)."""

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1))


@pytest.mark.parametrize("functional", [False, True])
def test_a_linear_after_an_adaptive_pool_is_not_told_to_add_one(functional: bool) -> None:
    """Its features are the channels before the pool whatever the size: the pool hint misled (a narrowed resnet)."""
    block = torchvision.models.resnet.BasicBlock
    model = _PoolsByFunction(block, [2, 2, 2, 2]) if functional else torchvision.models.resnet18()
    model.layer4[1].conv2 = nn.Conv2d(512, 256, 3, padding=1)
    model.layer4[1].bn2 = nn.BatchNorm2d(256)
    model.layer4[1].downsample = nn.Conv2d(512, 256, 1)  # the residual sum is 256 wide: fc gets 256 features
    fc = paramcount(model, (3, 64, 64)).layer("fc")
    assert "in_features=512, got 256" in fc.message and "AdaptiveAvgPool" not in fc.message


def test_a_linear_over_tokens_gets_no_pooling_hint() -> None:
    """Features per token (a patch embedding, a transformer's MLP) do not follow the input size: no pooling hint."""
    (layer,) = paramcount(nn.Sequential(nn.Linear(8, 4), nn.Linear(5, 2)), (3, 8)).invalid
    assert "in_features=5, got 4" in layer.message and "AdaptiveAvgPool" not in layer.message


def test_every_invalid_layer_is_listed_not_just_the_first() -> None:
    r = paramcount(CifarNet(), (1, 64, 64))
    assert [layer.name for layer in r.invalid] == ["conv1", "fc1"]
    assert r.total_for_input == 62_006 - 456 + 156 - 48_120 + (120 * 2704 + 120)


def test_batchnorm_after_a_conv_whose_out_channels_changed() -> None:
    model = torchvision.models.resnet50()
    model.conv1 = nn.Conv2d(3, 32, 7, 2, 3, bias=False)
    r = paramcount(model, (3, 224, 224))
    assert [layer.name for layer in r.invalid] == ["bn1", "layer1.0.conv1", "layer1.0.downsample.0"]
    bn1 = r.layer("bn1")
    assert "num_features=64, got 32" in bn1.message
    assert (bn1.params, bn1.params_for_input) == (128, 64)
    down = r.layer("layer1.0.downsample.0")
    assert (down.params, down.params_for_input) == (64 * 256, 32 * 256)
    assert r.output_shape == (1, 1000)
    assert r.total == unique_numel(model)


@pytest.mark.parametrize(
    ("norm", "train", "says"),
    [
        (nn.BatchNorm1d(8), True, "a training-mode forward raises (batch norm averages each channel over 1 value)"),
        (nn.BatchNorm1d(8, track_running_stats=False), False, "batch norm without running statistics"),
        (nn.GroupNorm(8, 8), False, "group norm averages each group over 1 value"),
    ],
)
def test_a_norm_averaging_one_value_at_this_batch_is_cautioned_not_invalid(
    norm: nn.Module, train: bool, says: str
) -> None:
    """torch refuses to average a channel (or group) over one value; at batch 1 the layer still fits, the batch
    does not: the report says so, and says nothing at batch 2, where the real model runs."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), norm, nn.Linear(8, 2)).train(train)
    with pytest.raises(ValueError, match="Expected more than 1 value per"):
        model(torch.randn(1, 3, 2, 2))
    r = paramcount(model, (3, 2, 2))
    assert r.invalid == [] and r.layer("2").status == "ok"
    assert [line for line in r.notes() if line.startswith("The batch is too small for 1 layer (2): ")] == [
        next(line for line in r.notes() if says in line)
    ]
    model(torch.randn(2, 3, 2, 2))
    assert not any("batch is too small" in line for line in paramcount(model, (3, 2, 2), batch=2).notes())


def test_instance_norm_over_one_spatial_element_does_not_fit() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4))
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        model(torch.randn(2, 3, 3, 3))
    (layer,) = paramcount(model, (3, 3, 3), batch=2).invalid
    assert layer.name == "1" and "expects spatial elements when training > 1, got 1" in layer.message
    assert paramcount(model, (3, 4, 4), batch=2).invalid == []


class _Boxes:
    """What a detection model hands its heads (torchvision's ImageList): a value torch.fx cannot record."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 100)

    def forward(self, boxes: _Boxes) -> torch.Tensor:
        x = boxes.features.flatten(2).transpose(1, 2)
        if bool((x > 0).any()):  # on values: it becomes an opaque leaf, called with a _Boxes
            x = x.relu()
        return self.fc(x)


class _Detector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.head = _Head()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(_Boxes(self.backbone(images)))


def test_a_model_whose_own_forward_cannot_be_traced_names_a_part_that_can() -> None:
    """No leaf gets past the model's own forward (torchvision's detection models): the error gives the exact
    total and a call that analyses the largest part taking the input (the head is larger, and fails)."""
    model = _Detector()
    with pytest.raises(TraceError, match="the model's own forward calls the leaf 'head'") as info:
        paramcount(model, (3, 8, 8), batch=2)
    assert info.value.whole_model
    assert str(info.value).endswith(
        "the whole model holds 1,124 parameters (each counted once); of them 224 are in backbone (Sequential), "
        "which takes this input: paramcount(model.backbone, (3, 8, 8), batch=2)"
    )
    assert paramcount(model.backbone, (3, 8, 8), batch=2).output_shape == (2, 8, 6, 6)


class _ResizingDetector(_Detector):
    """torchvision's detection models resize the images before their backbone (GeneralizedRCNNTransform)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        resized = nn.functional.interpolate(images, size=(12, 12), mode="bilinear")
        return self.head(_Boxes(self.backbone(resized)))


def test_a_part_is_named_with_what_the_model_hands_it_not_the_model_input() -> None:
    """Found on torchvision's Faster R-CNN: at a 128 x 128 image the error named paramcount(model.backbone, (3, 128,
    128)), while the model hands its backbone 800 x 800 (its transform resizes the images): the backbone's shapes
    at that call are none the model computes. Now the call is at what a real forward hands the part; the totals
    say how many parameters are frozen."""
    model = _ResizingDetector()
    model.backbone.requires_grad_(False)
    fed: list[tuple[int, ...]] = []
    handle = model.backbone.register_forward_pre_hook(lambda _m, args: fed.append(tuple(args[0].shape)))
    model(torch.zeros(2, 3, 8, 8))  # the oracle: a real forward
    handle.remove()
    assert fed == [(2, 3, 12, 12)]
    frozen = sum(p.numel() for p in model.backbone.parameters())
    unique = sum(p.numel() for p in model.parameters())
    with pytest.raises(TraceError) as info:
        paramcount(model, (3, 8, 8), batch=2)
    assert str(info.value).endswith(
        f"the whole model holds {unique:,} parameters (each counted once; {unique - frozen:,} trainable, {frozen:,} "
        f"frozen); of them {frozen:,} are in backbone (Sequential), which the model's own forward hands "
        "(2, 3, 12, 12) at this input (its forward changes the input first): "
        "paramcount(model.backbone, (3, 12, 12), batch=2)"
    )
    assert model.backbone._forward_pre_hooks == {}  # the probe's hooks were on a copy


class _BlockSized(nn.Module):
    """nanoGPT's check of its sequence length, in its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.block_size, self.wte, self.wpe = 16, nn.Embedding(50, 8), nn.Embedding(16, 8)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _, t = idx.size()
        assert t <= self.block_size, f"Cannot forward sequence of length {t}, block size is only {self.block_size}"
        return self.wte(idx) + self.wpe(torch.arange(0, t, dtype=torch.long, device=idx.device))


def test_a_model_whose_own_forward_refuses_the_input_says_so_in_its_words() -> None:
    """It said: torch.fx cannot trace GPT.forward … length Proxy(getitem_1) … fix: pass concrete_args={...}."""
    model = _BlockSized()
    with pytest.raises(AssertionError, match="Cannot forward sequence of length 20, block size is only 16"):
        model(torch.zeros(1, 20, dtype=torch.long))
    expected = (
        "_BlockSized does not take this input {'idx': (1, 20)}: a real forward raises AssertionError: Cannot forward "
        "sequence of length 20, block size is only 16\n  at "
    )
    with pytest.raises(ShapeError, match=re.escape(expected)) as info:
        paramcount(model, (20,))
    assert "assert t <= self.block_size" in str(info.value) and "concrete_args" not in str(info.value)
    assert paramcount(model, (16,)).output_shape == (1, 16, 8)


@pytest.mark.slow
def test_a_grey_image_its_model_refuses_for_its_size_is_not_told_to_drop_its_channel() -> None:
    """Found by fuzzer probe 45: smp's models refuse a size their encoder cannot divide; given a 1-channel image
    (1, 40, 50), the fix said "input shapes are per sample (batch=2 is added): (1, 40, 50) — give (40, 50)", which
    does not run.  The hint is kept where it runs: a shape given with its batch."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.PAN("mobileone_s0", encoder_weights=None, in_channels=1, encoder_depth=3, decoder_channels=16)
    with pytest.raises(RuntimeError, match="divisible by 8"):
        model(torch.zeros(2, 1, 40, 50))
    with pytest.raises(ShapeError, match="divisible by 8") as info:
        paramcount(model, (1, 40, 50), batch=2)
    assert "give (40, 50)" not in str(info.value)
    with pytest.raises(RuntimeError, match="divisible by 8"):
        model(torch.zeros(2, 40, 50))  # what it said to give
    with pytest.raises(ShapeError, match=re.escape("— give (12,)")):  # a shape given with its batch: told, and it runs
        paramcount(_BlockSized(), (1, 12))
    assert paramcount(_BlockSized(), (12,)).output_shape == (1, 12, 8)


class _Anchors(nn.Module):
    """torchvision's anchor generator: it keeps its anchors moved to the input's device, as a plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.cells = [torch.arange(4.0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cells = [c.to(dtype=x.dtype, device=x.device) for c in self.cells]
        return self.cells[0]


class _ThresholdDetector(nn.Module):
    """A detector in eval: scores kept where they pass a threshold (nonzero), then the top 10 of them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.anchors = nn.Conv2d(3, 4, 3, padding=1), _Anchors()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.conv(x).flatten(2).sigmoid()
        anchors = self.anchors(x)
        kept = scores[0, 0, torch.where(scores[0, 0] > 0.05)[0]]
        return kept.topk(min(10, kept.size(0)))[0], anchors


def test_a_detector_that_takes_the_input_is_never_said_to_refuse_it() -> None:
    """torchvision's FCOS in eval: 'FCOS does not take this input … a real forward raises NotImplementedError: Cannot
    copy out of meta tensor' — the meta run had left meta anchors in the copy that the run on zeros then used."""
    model = _ThresholdDetector().eval()
    assert model(torch.randn(1, 3, 8, 8))[0].shape == (10,)  # the real model takes it
    with pytest.raises(TraceError) as info:
        paramcount(model, (3, 8, 8))
    assert not isinstance(info.value, ShapeError) and "does not take this input" not in str(info.value)
    assert "nonzero" in str(info.value) and "paramcount(model.conv, (3, 8, 8))" in str(info.value)
    assert model.anchors.cells[0].device.type == "cpu"  # left as found


class _SlicedPositions(nn.Module):
    """BERT-like embeddings: a slice of 8 positions, whatever the length, added to the token embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.words, self.positions = nn.Embedding(20, 4), nn.Embedding(8, 4)
        self.register_buffer("position_ids", torch.arange(8)[None], persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.words(ids) + self.positions(self.position_ids[:, : ids.shape[1]])


class _AsksAfterEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = _SlicedPositions()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        return x * 2 if x.shape[1] > 4 else x  # Python asks about a value the failing add makes


def test_an_op_the_input_does_not_fit_before_a_question_is_named_with_the_real_line() -> None:
    """Eight Hugging Face models at more tokens than their positions: it said torch.fx cannot trace the model at an
    unrelated line of masking_utils, with a control-flow fix (found by a fifth probe)."""
    model = _AsksAfterEmbedding()
    with pytest.raises(RuntimeError, match="must match"):
        model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(
        ShapeError, match=re.escape("(the trace fails in embeddings (add)): a real forward raises ")
    ) as info:
        paramcount(model, (10,))
    assert "return self.words(ids) + self.positions" in str(info.value) and "concrete_args" not in str(info.value)
    assert paramcount(model, (8,)).output_shape == (1, 8, 4)


def test_several_inputs_by_name_and_by_position() -> None:
    by_name = paramcount(TwoInputs(), {"image": (3, 16, 16), "mask": (2, 16, 16)})
    assert [layer.name for layer in by_name.invalid] == ["mask"]
    by_position = paramcount(TwoInputs(), ((3, 16, 16), (1, 16, 16)))
    assert by_position.invalid == [] and by_position.output_shape == (1, 4, 16, 16)


def test_token_inputs_get_an_integer_dtype_and_tied_weights_count_once() -> None:
    model = TiedLM(vocab=50, dim=8)
    r = paramcount(model, (7,))
    assert r.output_shape == (1, 7, 50)
    assert r.total == 50 * 8 + 2 * 8 == unique_numel(model)
    assert r.layer("embed").shared == ("embed.weight",)
    assert r.layer("head").shared == ("head.weight",)


def test_frozen_parameters_and_buffers() -> None:
    model = torchvision.models.resnet18()
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    r = paramcount(model, (3, 64, 64), batch=4)
    frozen = sum(p.numel() for p in model.layer1.parameters())
    assert (r.frozen, r.trainable) == (frozen, 11_689_512 - frozen)
    assert r.buffers == sum(b.numel() for b in model.buffers())
    assert r.output_shape == (4, 1000)
    assert r.bytes_by_dtype == {"float32": 11_689_512 * 4}


# ---------------------------------------------------------------- the table and JSON


def test_table_matches_expected_file(expected_file: Callable[[str, str], None]) -> None:
    expected_file("cifarnet_1ch.txt", str(paramcount(CifarNet(), (1, 32, 32))) + "\n")


def test_table_params_column_sums_to_printed_total() -> None:
    r = paramcount(CifarNet(), (3, 32, 32))
    rows = [line for line in str(r).splitlines() if line.endswith(("ok", "invalid"))]
    column = sum(int(line.split()[-3].replace(",", "")) for line in rows)  # Params, MACs, Status
    printed = next(line for line in str(r).splitlines() if line.startswith("Total params:"))
    assert column == int(printed.split()[-1].replace(",", "")) == 62_006


def test_to_dict_is_json_and_carries_the_findings() -> None:
    d = json.loads(json.dumps(paramcount(CifarNet(), (1, 32, 32)).to_dict()))
    assert d["total"] == 62_006 and d["total_for_input"] == 61_706
    assert d["output_shape"] == [1, 10]
    assert d["invalid"][0]["layer"] == "conv1" and d["invalid"][0]["expected"] == 3
    assert d["layers"][0]["name"] == "conv1" and d["layers"][0]["params_for_input"] == 156


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((0, 32, 32), r"dimension 0 is 0 .* positive int"),
        ((3, -1, 32), r"dimension 1 is -1"),
        ((3, 32.0, 32), r"dimension 1 is 32\.0 \(float\) .* use 32"),
        ((3, "32", 32), r"dimension 1 is '32' \(str\)"),
        ((), r"shape is empty"),
        ("3,32,32", r"expected a shape such as \(3, 224, 224\)"),
    ],
)
def test_malformed_shapes_are_input_errors(shape: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        paramcount(CifarNet(), shape)  # type: ignore[arg-type]


def test_wrong_rank_names_the_layer_and_the_fix() -> None:
    with pytest.raises(ShapeError, match=r"conv1 \(Conv2d\) expects input rank=4 .* got 5 .* without the batch"):
        paramcount(CifarNet(), (1, 3, 32, 32))


def test_a_shape_without_channels_is_a_rank_error_not_a_fold() -> None:
    """(32, 32) per sample is (1, 32, 32) with the batch: torch would take it as one unbatched image whose
    channel is the batch, and the report said 'fold it with adapt_input_channels(model, 1)'."""
    with pytest.raises(
        ShapeError, match=re.escape("the per-sample shape (32, 32) has no channel dimension: give (C, H, W)")
    ):
        paramcount(CifarNet(), (32, 32))
    with pytest.raises(ShapeError, match=re.escape("expects input rank=4 (N, C, H, W), got 3 (4, 32, 32)")):
        paramcount(CifarNet(), (32, 32), batch=4)
    unbatched = paramcount(nn.Conv2d(1, 2, 3), torch.empty(1, 8, 8))  # a tensor is taken as given: unbatched works
    assert unbatched.findings == () and unbatched.output_shape == (2, 6, 6)


def test_a_channels_last_shape_gets_the_channels_first_shape_as_a_second_fix() -> None:
    r = paramcount(CifarNet(), (32, 32, 3))
    assert r.findings[0].fix == (
        "fold it with adapt_input_channels(model, 32, mode='spread'); "
        "if the input is channels-last, give its shape as (3, 32, 32)"
    )
    assert paramcount(CifarNet(), (3, 32, 32)).findings == ()  # the second fix, run as written


class AssertsItsSize(nn.Module):
    """torchvision's ViT: ``torch._assert(h == self.image_size, f"... got {h}!")``, the message formatted while
    tracing, where ``h`` is a proxy."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        torch._assert(h == 8, f"Wrong image height! Expected 8 but got {h}!")
        return self.conv(x)


def test_an_assert_in_forward_names_the_size_it_got() -> None:
    with pytest.raises(AssertionError, match="got 10"):
        AssertsItsSize()(torch.zeros(1, 3, 10, 10))
    r = paramcount(AssertsItsSize(), (3, 10, 10))
    assert r.findings[0].fix == (
        "Wrong image height! Expected 8 but got 10! (asserted by the forward of the model); "
        "an input it takes is (3, 8, 10): paramcount(model, (3, 8, 10))"  # only the height is checked
    )
    assert paramcount(AssertsItsSize(), (3, 8, 10)).findings == ()
    AssertsItsSize()(torch.zeros(1, 3, 8, 10))  # the input named runs


def test_not_a_module() -> None:
    with pytest.raises(InputError, match=r"expected a torch.nn.Module, got function"):
        paramcount(lambda x: x, (3, 32, 32))  # type: ignore[arg-type]


def test_bad_batch() -> None:
    with pytest.raises(InputError, match=r"batch=0 .* positive int"):
        paramcount(CifarNet(), (3, 32, 32), batch=0)


def test_unknown_input_name() -> None:
    with pytest.raises(InputError, match=r"input 'depth' is not an argument of forward .* \['image', 'mask'\]"):
        paramcount(TwoInputs(), {"image": (3, 8, 8), "depth": (1, 8, 8)})


# ---------------------------------------------------------------- never changes the model


@pytest.mark.parametrize("train", [True, False])
def test_analysis_never_changes_the_model(train: bool) -> None:
    model = torchvision.models.resnet18()
    model.train(train)
    model.layer2.requires_grad_(False)
    calls: list[str] = []
    model.fc.register_forward_hook(lambda *_: calls.append("hook"))
    before = model_state(model)
    paramcount(model, (1, 64, 64))
    paramcount(model, (3, 32, 32), batch=3)
    paramcount(model, (3, 32, 32), batch=2, crosscheck="always")  # a forward of a copy, ops answered by rules
    assert_same_state(before, model_state(model))
    assert calls == []  # the user's hooks never saw our meta tensors
    # and the model still runs as before
    model.eval()
    model(torch.randn(1, 3, 32, 32))
    assert calls == ["hook"]


def _small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    ).eval()


def test_hooks_that_change_a_layers_input_or_output_run_as_in_a_real_forward() -> None:
    """Found by a probe: every hook of the user's was skipped, and three models were analysed wrongly, trusted."""
    sliced = _small_net()
    sliced[5].register_forward_hook(lambda module, inputs, output: output[:, :5])  # keep 5 logits
    assert paramcount(sliced, (3, 16, 16)).output_shape == tuple(sliced(torch.randn(1, 3, 16, 16)).shape) == (1, 5)

    grey = _small_net()
    grey.register_forward_pre_hook(lambda module, args: (args[0].expand(-1, 3, -1, -1),))  # the root's own
    report = paramcount(grey, (1, 16, 16))
    assert report.invalid == [] and report.output_shape == tuple(grey(torch.randn(1, 1, 16, 16)).shape)

    doubled = _small_net()
    doubled[3].register_forward_hook(lambda module, inputs, output: torch.cat([output, output], 1))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        doubled(torch.randn(1, 3, 16, 16))
    (bad,) = paramcount(doubled, (3, 16, 16)).invalid
    assert bad.name == "5" and "expects in_features=8, got 16" in bad.message


def test_hooks_that_only_look_never_see_torchsurgeons_values() -> None:
    model = _small_net()
    seen: list[Any] = []
    shapes: dict[str, Any] = {}
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output))
    model[2].register_forward_hook(lambda module, inputs, output: shapes.__setitem__("conv", output.shape))

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        seen.append(output)

    model[5].register_forward_hook(record)
    for crosscheck in ("auto", "always"):
        paramcount(model, (3, 16, 16), crosscheck=crosscheck)
    assert seen == [] and shapes == {}
    model(torch.randn(1, 3, 16, 16))
    assert len(seen) == 2 and shapes["conv"] == (1, 8, 12, 12)


_RECORDED: list[Any] = []


class _Recorder:
    def __init__(self) -> None:
        self.outputs: dict[str, Any] = {}

    def keep_five(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        self.outputs["logits"] = output
        return output[:, :5]


def test_hooks_that_record_and_return_a_value_run_but_leave_nothing_in_the_users_containers() -> None:
    """Found by rereading: a hook that records and returns ran in the trace and the copies, and left torch.fx's
    proxies and fake tensors in the user's list, dict and closure (analysis changed the user's state)."""
    from torchsurgeon import memory_plan

    model = _small_net()
    closure: list[Any] = []

    def double_and_record(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        closure.append(output)
        _RECORDED.append(output)
        return output * 2

    recorder = _Recorder()
    model[1].register_forward_hook(double_and_record)
    model[5].register_forward_hook(recorder.keep_five)
    for crosscheck in ("auto", "always"):
        assert paramcount(model, (3, 16, 16), crosscheck=crosscheck).output_shape == (1, 5)  # the hooks ran
    paramcount_sweep(model, [(3, 16, 16), (3, 20, 20)])
    memory_plan(model, (3, 16, 16), batch=2, device="cpu")
    assert closure == [] and _RECORDED == [] and recorder.outputs == {}
    model(torch.randn(1, 3, 16, 16))  # a real forward records as before
    assert len(closure) == len(_RECORDED) == 1 and recorder.outputs["logits"].shape == (1, 10)
    _RECORDED.clear()


def test_analysis_never_steps_a_spectral_norm_in_training_mode() -> None:
    """Found by a probe: rules read ``m.weight``, which computes a parametrization, and spectral_norm in training
    mode steps its power iteration on each read (``_u``, ``_v`` changed by paramcount)."""
    from torch.nn.utils.parametrizations import spectral_norm

    model = _small_net().train()
    for i in (0, 5):
        spectral_norm(model[i])
    model.insert(0, spectral_norm(nn.PReLU(3)))  # PReLU's rule reads its weight's dtype too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    paramcount(model, (3, 16, 16), batch=2)
    paramcount_sweep(model, [(3, 16, 16), (3, 20, 20)], batch=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("legacy", [False, True])
def test_analysis_never_runs_the_pre_hook_of_a_pruned_layer(legacy: bool) -> None:
    """Found while fixing a probe's finding: in a model whose class is torch's (nn.Sequential) the hook of
    torch.nn.utils.prune counted as the model's own, ran in the trace and left a proxy as the layer's weight."""
    import torch.nn.utils.prune as prune

    model = _small_net()
    if legacy:
        with pytest.warns(FutureWarning):
            nn.utils.weight_norm(model[0])
    else:
        prune.l1_unstructured(model[0], "weight", amount=0.5)
    report = paramcount(model, (3, 16, 16), crosscheck="always")
    assert type(model[0].weight) is torch.Tensor and report.total == sum(p.numel() for p in model.parameters())
    assert report.output_shape == tuple(model(torch.randn(1, 3, 16, 16)).shape)


def test_layers_whose_forward_needs_a_larger_batch_are_listed() -> None:
    """A probe asked for it: batch norm in training mode at batch 1 fits, but a real forward raises; only the
    notes said so, and code reading ``invalid``, ``findings`` or ``trusted`` could not see it."""
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.randn(1, 8))
    one = paramcount(model, (8,))
    assert [layer.name for layer in one.batch_too_small] == ["1"] and one.invalid == []
    assert "batch=2" in one.batch_too_small[0].message
    model(torch.randn(2, 8))  # runs
    assert paramcount(model, (8,), batch=2).batch_too_small == []


def test_an_input_of_too_few_dimensions_is_told_the_shape_it_needs() -> None:
    """A probe: (224,) was told to drop a batch dimension it did not have."""
    with pytest.raises(ShapeError, match=r"got 2 \(1, 224\) — give the per-sample shape \(C, H, W\)"):
        paramcount(_small_net(), (224,))


def test_bit_identical_copy_gives_identical_report() -> None:
    model = CifarNet()
    twin = copy.deepcopy(model)
    assert paramcount(model, (1, 32, 32)).to_dict() == paramcount(twin, (1, 32, 32)).to_dict()


class _StaticSamePadding(nn.Conv2d):
    """smp's efficientnet stem: a Conv2d subclass whose forward calls ``F.conv2d`` with its own weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, [1, 1, 1, 1]), self.weight, self.bias, self.stride)


def test_a_functional_call_on_a_module_weights_is_named_by_the_module() -> None:
    net = nn.Sequential(nn.Identity(), _StaticSamePadding(3, 4, 3))
    r = paramcount(net, (1, 8, 8))
    assert [layer.name for layer in r.invalid] == ["1"]
    assert [f.layer for f in r.findings] == ["1"]
    assert "pad" in [layer.name for layer in r.layers]  # weight-free calls keep their node names


def test_a_tensor_made_on_a_layer_weight_device_is_not_named_by_the_layer() -> None:
    """Found by probing torchgeo's ConvLSTM: its first state, ``torch.zeros(b, 8, h, w,
    device=self.conv.weight.device)``, had the row ``cell_list.0.conv  zeros()``, read as the conv itself."""

    class Cell(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3 + 8, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, _, h, w = x.shape
            state = torch.zeros(b, 8, h, w, device=self.conv.weight.device, dtype=self.conv.weight.dtype)
            return self.conv(torch.cat([x, state], dim=1))

    r = paramcount(Cell(), (3, 8, 8))
    assert [(layer.name, layer.type) for layer in r.layers if layer.type in ("zeros()", "Conv2d")] == [
        ("zeros", "zeros()"),
        ("conv", "Conv2d"),
    ]


def test_a_transformer_encoder_given_a_padding_mask_is_propagated() -> None:
    """Found by a probe: in eval, torch's encoder made nested tensors of the mask, which meta cannot: output
    None, the encoder unknown, trusted."""
    from torchsurgeon import TypedShape

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 16)
            layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.fc(self.enc(self.emb(ids), src_key_padding_mask=mask))

    model = Encoder().eval()
    spec = {"ids": TypedShape((6,), "long"), "mask": TypedShape((6,), "bool")}
    report = paramcount(model, spec)
    assert report.output_shape == (1, 6, 3) and report.layer("enc").status == "ok"


def test_macs_with_layers_not_counted_are_printed_as_a_lower_bound() -> None:
    class Opaque(nn.Module):  # a leaf with weights, no formula, and a call whose MACs are not known
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bi,ij,jk->bk", x, self.w, self.w)  # three operands: the path is torch's choice

    model = nn.Sequential(nn.Linear(4, 4), Opaque())
    report = paramcount(model, (4,), leaf_modules=[Opaque])
    assert report.flops_uncounted == ("1",)
    assert "MACs:             ≥ 16" in str(report) and "1 layer not counted (see the notes)" in str(report)
    assert "≥" not in str(paramcount(nn.Linear(4, 4), (4,)))


def test_a_part_that_runs_but_does_not_fit_the_input_is_not_suggested() -> None:
    """Found by a probe: a model that makes its input grey before a 1-channel conv, untraceable, was told to
    analyse that conv at the model's RGB input, where it is invalid; it is named at what the model hands it."""

    class Grey(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(1, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if type(x) is not torch.Tensor:  # a type check no trace passes (isinstance is answered)
                raise TypeError(f"expected Tensor, got {type(x)}")
            return self.c(x.mean(1, keepdim=True))

    with pytest.raises(TraceError) as caught:
        paramcount(Grey(), (3, 16, 16))
    assert "paramcount(model.c, (3, 16, 16))" not in str(caught.value)
    assert str(caught.value).endswith(
        "hands (1, 1, 16, 16) at this input (its forward changes the input first): paramcount(model.c, (1, 16, 16))"
    )


class _ScaledByItem(nn.Module):
    """Python reads a tensor's value (``.item()``): shape propagation on meta stops there."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(h / h.abs().max().item())


@pytest.mark.parametrize("crosscheck", ["auto", "never"])
def test_a_report_whose_output_is_unknown_is_not_trusted(crosscheck: str) -> None:
    """Reformer: .item() ended propagation, the output was None and 300 layers unknown, yet report.trusted was True."""
    model = _ScaledByItem()
    with torch.no_grad():
        real = tuple(model(torch.randn(1, 8)).shape)
    report = paramcount(model, (8,), crosscheck=crosscheck)
    assert report.output_shape is None and real == (1, 4)  # the report does not know what a forward gives
    assert not report.trusted and not report.to_dict()["trusted"]
    assert "NOT TRUSTED: the output is unknown" in str(report)


def test_a_model_returning_nothing_is_still_trusted() -> None:
    class Nothing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> None:
            self.a(x)

    report = paramcount(Nothing(), (8,))
    assert report.output_shape is None and Nothing()(torch.randn(1, 8)) is None
    assert report.trusted


class _NeedsTargetsInTraining(nn.Module):
    """A detector's contract: in training mode its forward asserts that targets were given."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, images: torch.Tensor, targets: Any = None) -> torch.Tensor:
        if self.training:
            torch._assert(targets is not None, "targets should not be none when in training mode")
        return self.head(self.backbone(images))


def test_a_forward_asking_for_an_argument_not_given_names_it_and_a_part_that_runs() -> None:
    """Found by a probe: paramcount and memory_plan of a torchvision detector in training mode said only "give an
    input the model accepts", which no shape can be (it asks for its targets); the error names the argument and a
    part that takes the input alone, whose call runs."""
    model = _NeedsTargetsInTraining()
    with pytest.raises(AssertionError, match="targets should not be none"):
        model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ShapeError, match=r"its forward asks for 'targets', which was not given") as e:
        paramcount(model, (3, 16, 16))
    call = re.search(r"paramcount\(model\.backbone, \(3, 16, 16\)\)", str(e.value))
    assert call is not None
    assert eval(call.group(0), {"paramcount": paramcount, "model": model}).total == 224
    assert paramcount(model.eval(), (3, 16, 16)).output_shape == (1, 4, 14, 14)  # eval() does without them
