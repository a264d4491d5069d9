"""Finding the layers that read the input by running the model once: inside opaque parts, through
computed weights, past integer inputs; and the channel guards adapt_input_channels updates."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from torchsurgeon import ParamChange, SurgeryError, adapt_input_channels
from torchsurgeon.readers import input_readers
from torchsurgeon.surgery import input_layers


class Embeddings(nn.Module):
    """Data-dependent control flow (opaque to torch.fx) around the stem, and a channel check like transformers'."""

    def __init__(self, config: types.SimpleNamespace) -> None:
        super().__init__()
        self.config, self.num_channels = config, config.num_channels
        self.stem = nn.utils.parametrizations.weight_norm(nn.Conv2d(config.num_channels, 8, 3, padding=1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[1] != self.num_channels:
            raise ValueError("channel dimension does not match the configuration")
        x = self.stem(pixels * 2 - 1)
        return x if x.sum() > 0 else -x  # a tensor value: fx cannot trace this module


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = types.SimpleNamespace(num_channels=3)
        self.config = config
        self.embeddings = Embeddings(config)
        self.ids = nn.Embedding(10, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embeddings(pixels) + self.ids(ids).mean(1)[:, :, None, None])


INPUT = {"pixels": (3, 8, 8), "ids": (8,)}


def test_it_finds_the_stem_inside_an_opaque_module_through_a_computed_weight_and_not_the_token_embedding() -> None:
    model = Model()
    assert input_readers(model, INPUT) == ["embeddings.stem"]
    assert input_layers(model, INPUT) == ["embeddings.stem"]


def test_the_fold_updates_the_guards_and_the_edited_model_runs_and_equals_the_original_on_grey() -> None:
    torch.manual_seed(0)
    model = Model().double().eval()
    result = adapt_input_channels(model, 1, input=INPUT)
    settings = {c.name: c.message for c in result.changes if c.status == ParamChange.SETTING}
    assert settings == {"config.num_channels": "3 → 1", "embeddings.num_channels": "3 → 1"}
    assert model.config.num_channels == 3 and model.embeddings.num_channels == 3  # the original is untouched
    grey = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    ids = torch.randint(0, 10, (2, 8))
    with torch.no_grad():
        want = model(grey.expand(2, 3, 8, 8), ids)
        got = result.model(grey, ids)
    assert torch.allclose(got, want, atol=1e-12)


def test_an_opaque_part_found_by_the_trace_asks_for_an_input() -> None:
    with pytest.raises(SurgeryError, match=r"embeddings \(Embeddings\) reads the input .* input=\(3, 224, 224\)"):
        adapt_input_channels(Model(), 1)


def test_a_model_that_does_not_run_on_the_input_says_so() -> None:
    with pytest.raises(SurgeryError, match=r"does not run on input .*\(channel dimension does not match"):
        input_readers(Model(), {"pixels": (4, 8, 8), "ids": (8,)})


def test_the_model_is_left_as_found() -> None:
    model = Model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    input_readers(model, INPUT)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.embeddings.stem.parametrizations.weight.original1.device.type == "cpu"


class _Fusion(nn.Module):
    """ViTMatte's detail path: a stem, its batch norm, then the pixels joined with those features for a last conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn, self.fuse = (
            nn.Conv2d(4, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.Conv2d(12, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.bn(self.stem(x)))
        return self.fuse(torch.cat([x, features], dim=1))


def test_features_computed_from_the_input_are_not_taken_for_the_weights_of_a_layer() -> None:
    """The batch norm after the stem was taken for a layer reading the input (the features it made were tagged
    as computed from its weights only, so the pixels joined with them "met" them), and the conv that reads the
    pixels joined with features was missed."""
    assert input_readers(_Fusion(), (4, 16, 16)) == ["stem", "fuse"]
    joins: dict[str, int] = {}
    input_readers(_Fusion(), (4, 16, 16), joins=joins)
    assert joins == {"fuse": 8}  # 8 of its 12 channels are the features'


def test_a_layer_reading_the_input_joined_with_features_is_folded_with_the_stem() -> None:
    """adapt_input_channels named the batch norm as the layer reading the input (ViTMatte); then it refused the fold of
    the layer reading the pixels joined with the features.  Now both fold: the stem as a plain stem, and the joined
    layer's pixel columns, its feature columns kept (the features of the folded stem on grey are the original's on
    grey replicated): exact in float64."""
    torch.manual_seed(0)
    model = _Fusion().double().eval()
    result = adapt_input_channels(model, 1, input=(4, 16, 16))
    assert (result.model.stem.in_channels, result.model.fuse.in_channels) == (1, 9)
    assert [c.name for c in result.changes if c.status is ParamChange.FOLDED] == ["stem.weight", "fuse.weight"]
    grey = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(grey), model(grey.expand(2, 4, 16, 16)), rtol=1e-12, atol=1e-12)


def _detector(name: str) -> nn.Module:
    import torchvision

    from models import on_meta

    sizes = {"min_size": 64, "max_size": 64}
    return on_meta(torchvision.models.get_model, name=name, weights=None, weights_backbone=None, **sizes)


def test_a_resnet50_detector_whose_boxes_meta_cannot_filter_is_answered() -> None:
    """Found by a probe: torchvision's ResNet-50 detectors (34–59 M parameters) filter boxes with ``nonzero`` and
    ``nms``, which ``meta`` cannot run, and were over the zero-run limit, so every edit of them was refused with
    "does not run on input (3, 64, 64) — give an input the model accepts", an input a real forward accepts (they
    are now answered on ``meta``: the filter comes after every layer the input reaches)."""
    model = _detector("retinanet_resnet50_fpn").eval()
    assert sum(p.numel() for p in model.parameters()) > 1 << 25
    assert input_readers(model, (3, 64, 64)) == ["backbone.body.conv1"]


class _Rescaled(nn.Module):
    """Rescales its input when its values look like 0-255 bytes: ``meta`` cannot say."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x / 255 if x.amax() > 1 else x)


def test_a_model_too_large_to_run_on_zeros_is_not_said_to_refuse_its_input(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchsurgeon.readers

    monkeypatch.setattr(torchsurgeon.readers, "_READERS_ZERO_RUN_LIMIT", 1000)
    with pytest.raises(SurgeryError, match=r"_Rescaled cannot be run to find .* its forward needs tensor values") as e:
        input_readers(_Rescaled(), (3, 64, 64))
    assert "too large to run on zeros on the CPU (> 1,000) — adapt a part of it that runs on meta" in str(e.value)
    assert "give an input the model accepts" not in str(e.value)


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_a_detector_filtering_its_proposals_before_its_heads_is_answered_on_meta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was refused over the zero-run limit, and run on zeros on the CPU under it (KeypointRCNN: its ResNet-50 at
    800 x 800, 10 s): the region proposals are filtered (``nonzero`` on scores, not on the input) before the
    heads.  Such an op is run on zeros alone, and the run stops once past the input."""
    import torchsurgeon.readers

    monkeypatch.setattr(torchsurgeon.readers, "_READERS_ZERO_RUN_LIMIT", 1000)
    model = _detector("fasterrcnn_mobilenet_v3_large_320_fpn").eval()
    assert input_readers(model, (3, 64, 64)) == ["backbone.body.0.0"]


_RUNS: list[str] = []  # the devices _Scored's head ran on, in the copies input_readers makes
_MODEL_RUNS: list[str] = []  # the devices _Scored itself ran on


class _Holder:
    def __init__(self, image: torch.Tensor) -> None:
        self.image = image


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scores, self.image = nn.Conv2d(8, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, features: torch.Tensor, holder: _Holder | None) -> torch.Tensor:
        _RUNS.append(features.device.type)
        scores = self.scores(features)
        return scores if holder is None else scores + self.image(holder.image)


class _Position(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self) -> torch.Tensor:
        return self.weight * 1


class _Scored(nn.Module):
    """A detector's shape: the image normalised, a stem, a head on the features; ``keep`` filters with a
    boolean mask (``nonzero``, which ``meta`` cannot run) before the head ("first"), after it ("after") or not
    at all (None: it runs on ``meta``, the oracle).  ``late``: how the input still meets weights once the head is
    entered: a conv of the head reading the image the head gets in an object's attribute ("holder"), the model's
    own weight ("own"), a tensor computed from weights alone before the head ("computed")."""

    def __init__(self, keep: str | None, late: str | None = None) -> None:
        super().__init__()
        self.keep, self.late = keep, late
        self.stem, self.head = nn.Conv2d(3, 8, 3, padding=1), _Head()
        self.scale = nn.Parameter(torch.ones(4, 1, 1)) if late == "own" else None
        self.position = _Position() if late == "computed" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _MODEL_RUNS.append(x.device.type)
        x = (x - 0.5) / 0.25
        features = self.stem(x)
        if self.keep == "first":
            features = features[:, (features.mean((0, 2, 3)) > -1).nonzero()[:, 0]]
        computed = self.position() if self.position is not None else None
        scores = self.head(features, _Holder(x) if self.late == "holder" else None)
        if self.scale is not None:
            scores = scores + x[:, :1] * self.scale
        elif computed is not None:
            scores = scores + x[:, :1] * computed
        return scores[scores > 0] if self.keep == "after" else scores


def test_a_detector_filtering_after_its_head_is_answered_on_meta() -> None:
    """Was: ``nonzero`` on ``meta`` in the post-processing made the whole model run again on zeros on the CPU
    (torchvision's RetinaNet: 60-70 s, three times per adapt_input_channels); every layer the input can reach was
    passed before it, so the meta run answers."""
    _RUNS.clear()
    assert input_readers(_Scored("after"), (3, 8, 8)) == ["stem"]
    assert _RUNS == ["meta"]


def test_the_zero_run_of_a_detector_filtering_before_its_head_stops_at_the_head() -> None:
    """Was: the zero run went on through the heads (KeypointRCNN's keypoint head on 100 boxes, 5 min); the head
    takes none of the input, and holds every layer with weights not run yet: the run stops there."""
    _RUNS.clear()
    assert input_readers(_Scored("first"), (3, 8, 8)) == ["stem"]
    assert "cpu" not in _RUNS


@pytest.mark.parametrize("keep", ["first", "after"])
@pytest.mark.parametrize("late", ["holder", "own", "computed"])
def test_a_run_is_not_stopped_while_the_input_can_still_meet_weights(keep: str, late: str) -> None:
    """The same readers as a model that runs on meta to its end (the oracle), where the input meets weights after
    the head is entered: through an object holding it, the model's own weight, a tensor computed from weights."""
    want = input_readers(_Scored(None, late), (3, 8, 8))
    assert len(want) == 2
    assert input_readers(_Scored(keep, late), (3, 8, 8)) == want


def test_a_detector_filtering_before_its_head_is_answered_on_meta() -> None:
    """Was: run again on zeros on the CPU; the filter reads the features' values, not the input's, so it is run
    on zeros alone and the meta run goes on, to stop at the head."""
    _MODEL_RUNS.clear()
    assert input_readers(_Scored("first"), (3, 8, 8)) == ["stem"]
    assert _MODEL_RUNS == ["meta"]


class _Cascade(nn.Module):
    """A second stage reading the image, run when a score passes a threshold: zero weights give scores of 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.score, self.refine = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 1, 1), nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.score(self.stem(x)))
        return self.refine(x) if (scores > 0.25).any() else scores


def test_values_made_up_that_skip_a_layer_reading_the_input_are_not_the_answer() -> None:
    """Made up, the scores are zeros and the second stage is skipped: a run that ends with layers not run is not
    answered so; the zero run (weights of zero, as before) takes the branch and names it."""
    assert input_readers(_Cascade(), (3, 8, 8)) == ["stem", "refine"]


@pytest.mark.slow  # imports transformers (2 s in a fresh process)
def test_textnets_stem_setting_is_updated_and_a_model_rebuilt_from_its_config_loads_the_fold() -> None:
    """Found by a probe: transformers' TextNet builds its stem from ``config.stem_num_channels``, which the fold
    left at 3: the model rebuilt from the saved config had a 3-channel stem again and refused the folded weights."""
    transformers = pytest.importorskip("transformers")
    config = transformers.TextNetConfig(
        hidden_sizes=[16] * 5,
        stem_out_channels=16,
        conv_layer_kernel_sizes=[[[3, 3]]] * 4,
        conv_layer_strides=[[1], [2], [2], [2]],
        num_labels=3,
    )
    torch.manual_seed(0)
    model = transformers.TextNetForImageClassification(config).double().eval()
    result = adapt_input_channels(model, 1)
    settings = {c.name: c.message for c in result.changes if c.status == ParamChange.SETTING}
    assert settings == {"config.stem_num_channels": "3 → 1"}
    assert model.config.stem_num_channels == 3  # the original is untouched
    rebuilt = type(model)(result.model.config).double().eval()
    rebuilt.load_state_dict(result.model.state_dict())
    grey = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        want = model(pixel_values=grey.expand(2, 3, 32, 32)).logits
        got = rebuilt(pixel_values=grey).logits
    assert torch.allclose(got, want, atol=1e-10)
