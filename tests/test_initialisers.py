"""Naming a weight's initialiser: PyTorch's default only where the values fit it (a probe found every new weight
named as its layer type's default, whatever the user or the library had drawn)."""

from __future__ import annotations

import copy
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from torchsurgeon import ParamChange, check_surgery
from torchsurgeon.initialisers import default_init, named_init


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_a_default_draw_is_named_as_the_default() -> None:
    layer = nn.Conv2d(16, 32, 3)
    assert named_init(layer, "weight", layer.weight).startswith("kaiming_uniform_(a=√5): U(-0.0833, 0.0833); ")
    assert named_init(layer, "bias", layer.bias).startswith("uniform: U(-0.0833, 0.0833) (±1/√fan_in); ")


@pytest.mark.parametrize(
    ("init", "named"),
    [
        (lambda w: nn.init.xavier_uniform_(w), "like xavier_uniform_ U(-0.1179, 0.1179)"),
        (
            lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
            "like kaiming_normal_(mode='fan_out'",
        ),
        (lambda w: nn.init.trunc_normal_(w, std=0.02), "like normal_/trunc_normal_(std=0.02)"),
        (lambda w: nn.init.normal_(w, std=0.01), "like normal_(std=0.01)"),
        (lambda w: nn.init.constant_(w, 0.5), "(constant_(0.5))"),
        (lambda w: nn.init.zeros_(w), "observed: all zeros (zeros_)"),
    ],
)
def test_a_users_initialiser_is_never_named_as_the_default(init: object, named: str) -> None:
    layer = nn.Conv2d(16, 32, 3)
    with torch.no_grad():
        init(layer.weight)  # type: ignore[operator]
    text = named_init(layer, "weight", layer.weight)
    assert text.startswith("not PyTorch's default (kaiming_uniform_(a=√5): U(-0.0833, 0.0833)): observed: ")
    assert named in text


def test_torch_layers_with_defaults_of_their_own() -> None:
    lstm, bilinear = nn.LSTM(8, 8), nn.Bilinear(16, 16, 4)
    assert named_init(lstm, "weight_ih_l0", lstm.weight_ih_l0).startswith("uniform: U(-0.3536, 0.3536) (±1/√hidden")
    assert named_init(bilinear, "weight", bilinear.weight).startswith("uniform: U(-0.2500, 0.2500) (±1/√in1")
    attention = nn.MultiheadAttention(16, 2, add_bias_kv=True)
    assert default_init(attention, "bias_k") == f"xavier_normal_: N(0, {1 / math.sqrt(16):.4f})"
    transformer = nn.Transformer(16, 2, 1, 1, 32)  # draws every matrix with xavier_uniform_, not their default
    linear1 = transformer.encoder.layers[0].linear1
    assert "— like xavier_uniform_ U(-0.3536, 0.3536)" in named_init(linear1, "weight", linear1.weight)


def test_default_init_refuses_a_class_and_a_name_the_layer_does_not_have() -> None:
    """default_init(nn.Linear, 'weight') answered 'set by type.__init__' and default_init(nn.Linear(2, 2), 'weigth')
    'set by Linear.__init__': both were confident answers about nothing."""
    from torchsurgeon import InputError

    with pytest.raises(
        InputError, match=r"got the class nn.Linear — give a built one: default_init\(nn.Linear\(2, 2\)"
    ):
        default_init(nn.Linear, "weight")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"Linear has no parameter 'weigth' — did you mean 'weight'\?"):
        default_init(nn.Linear(2, 2), "weigth")
    with pytest.raises(InputError, match=r"ReLU has no parameter 'weight' — it has none"):
        default_init(nn.ReLU(), "weight")
    bound = 1 / math.sqrt(2)
    assert default_init(nn.Linear(2, 2), "weight") == f"kaiming_uniform_(a=√5): U(-{bound:.4f}, {bound:.4f})"


def _detection_heads() -> list[tuple[str, nn.Module, str]]:
    """The heads torchvision's detection fine-tuning recipes build, each with the initialiser its ``__init__``
    draws its weights with (torchvision/models/detection: keypoint_rcnn.py, ssdlite.py's ``_normal_init``, ssd.py's
    ``_xavier_init``, retinanet.py)."""
    import functools

    from torchvision.models.detection.keypoint_rcnn import KeypointRCNNPredictor
    from torchvision.models.detection.retinanet import RetinaNetClassificationHead
    from torchvision.models.detection.ssd import SSDClassificationHead
    from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

    channels = [672, 480, 512, 256, 256, 128]
    norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    return [
        ("keypoints", KeypointRCNNPredictor(512, 17), "kaiming_normal_(mode='fan_out', nonlinearity='relu')"),
        ("keypoints", KeypointRCNNPredictor(512, 7), "kaiming_normal_(mode='fan_out', nonlinearity='relu')"),
        ("ssdlite", SSDLiteClassificationHead(channels, [6] * 6, 5, norm), "normal_(std=0.03)"),
        ("ssd", SSDClassificationHead(channels, [4, 6, 6, 6, 4, 4], 5), "xavier_uniform_"),
        ("retinanet", RetinaNetClassificationHead(256, 9, 5), "normal_(std=0.01)"),
    ]


def test_the_initialisers_of_torchvisions_detection_heads_are_named() -> None:
    """Found by a probe: KeypointRCNNPredictor(512, K)'s transposed convolution, drawn by kaiming_normal_(fan_out),
    was named "like xavier_normal_", the first initialiser within 10 % of the values' spread (1.6 % apart for
    K=17), and SSDLite's heads (normal_(std=0.03)) "like xavier_normal_" or "a normal draw".  The nearest is
    named first, and beside it those the values cannot tell from it (SSDLite's depthwise 3 x 3 layers, whose
    xavier_normal_ and kaiming_normal_(fan_out) are within 2 % of 0.03)."""
    for kind, head, truth in _detection_heads():
        for name, p in head.named_parameters():
            if p.dim() < 2:
                continue
            owner, _, local = name.rpartition(".")
            like = named_init(head.get_submodule(owner), local, p).partition(" — like ")[2]
            named = [re.sub(r" [NU]\(.*", "", alternative) for alternative in like.split(" or ")]
            if len(named) == 1 or kind == "keypoints":
                assert named[0] == truth, (kind, name, like)
            else:  # the values cannot tell these apart: the truth is among them
                assert truth in named and kind == "ssdlite" and p.shape[1] == 1, (kind, name, like)


class _OwnInitialiser(nn.Module):
    """A model initialising its layers itself as transformers' models do: ``_init_weights(module)`` and a config."""

    config = None

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(16, 32)
        self.classifier = nn.Linear(32, 5)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def test_a_models_own_initialiser_is_read_without_touching_the_model() -> None:
    """own_inits runs the model's _init_weights on stand-ins: the weights and the random state are as they were."""
    from torchsurgeon.initialisers import own_inits

    model = _OwnInitialiser()
    weights, rng = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    inits = own_inits(model, ["classifier.weight", "classifier.bias"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert (inits["classifier.weight"].description, inits["classifier.bias"].description) == (
        "normal_(0, 0.02)",
        "zeros_",
    )
    model._init_weights(model.classifier)  # the truth: what it draws fits the name
    assert named_init(model.classifier, "weight", model.classifier.weight, inits["classifier.weight"]).startswith(
        "normal_(0, 0.02) (_OwnInitialiser._init_weights); observed"
    )
    model.classifier = nn.Linear(32, 5)  # a head the user built: PyTorch's default, not the model's
    bound = 1 / math.sqrt(32)
    named = named_init(model.classifier, "weight", model.classifier.weight, inits["classifier.weight"])
    assert named.startswith(f"kaiming_uniform_(a=√5): U(-{bound:.4f}, {bound:.4f}): PyTorch's default, not normal_")


@pytest.mark.slow
def test_transformers_stem_reinitialised_by_from_pretrained_is_named_as_its_init_weights_draws_it(
    tmp_path: Path,
) -> None:
    """Found by a probe: ResNetForImageClassification.from_pretrained(..., num_channels=1, ignore_mismatched_sizes=True)
    draws the new stem with ResNet's _init_weights (kaiming_normal_, fan_out, relu); check_surgery named it 'like
    xavier_normal_', an initialiser the model does not use (both stds are close on a 1-channel stem)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)
    transformers.ResNetForImageClassification(config).save_pretrained(tmp_path)
    original = transformers.ResNetForImageClassification.from_pretrained(tmp_path).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edited = transformers.ResNetForImageClassification.from_pretrained(
            tmp_path, num_channels=1, ignore_mismatched_sizes=True
        ).eval()
    stem = "resnet.embedder.embedder.convolution.weight"
    weight = edited.get_parameter(stem)
    std = math.sqrt(2 / (weight.shape[0] * weight.shape[2] * weight.shape[3]))  # kaiming_normal_: √(2 / fan_out)
    assert abs(float(weight.detach().std()) - std) < 0.15 * std  # what transformers drew: the truth
    report = check_surgery(original, edited, (1, 32, 32))
    assert report.status_of(stem) == ParamChange.REINITIALISED
    init = next(p.init for p in report.params if p.name == stem)
    assert init.startswith(f"kaiming_normal_(a=0, mode='fan_out', nonlinearity='relu'): N(0, {std:.4g}) (ResNetModel")
    assert "xavier" not in init


def test_transformers_head_from_a_base_checkpoint_is_named_as_its_init_weights_draws_it(tmp_path: Path) -> None:
    """Found by a probe: ModernBERT's _init_weights draws its classifier from trunc_normal_(std=hidden_size**-0.5,
    cut at ±2 std); check_surgery named it 'a normal draw', or 'like xavier_normal_' (not what the model uses)."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "ModernBertConfig"):
        pytest.skip("this transformers has no ModernBERT")
    config = transformers.ModernBertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=99, pad_token_id=0
    )
    transformers.ModernBertModel(config).save_pretrained(tmp_path)
    original = transformers.ModernBertModel.from_pretrained(tmp_path).eval()
    torch.manual_seed(2)
    edited = transformers.ModernBertForSequenceClassification.from_pretrained(tmp_path, num_labels=5).eval()
    std = config.hidden_size**-0.5
    assert float(edited.classifier.weight.abs().max()) <= 2 * std  # what transformers drew: cut at 2 std
    report = check_surgery(original, edited, (8,))
    assert report.status_of("classifier.weight") == ParamChange.NEW
    inits = {p.name: p.init for p in report.params if p.status == ParamChange.NEW}
    assert inits["classifier.weight"].startswith(
        f"trunc_normal_(0, {std:.4g}, a={-2 * std:.4g}, b={2 * std:.4g}) (ModernBertForSequenceClassification"
    )
    assert inits["classifier.bias"].startswith("zeros_ (ModernBertForSequenceClassification._init_weights)")
    assert not any("like" in init for init in inits.values())


@pytest.mark.parametrize("tied", [True, False])
def test_new_token_rows_drawn_at_the_pretrained_mean_are_named_so(tied: bool) -> None:
    """Found by a probe: resize_token_embeddings(len(tokenizer) + k) draws the new rows from N(mean of the old
    rows, 1e-9 × their covariance) (transformers' mean_resizing, its default); check_surgery named them 'like a
    normal draw N(0, 0.00177)', an initialiser nothing used.  Without mean_resizing: the model's normal_(0, 0.02)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        tie_word_embeddings=tied,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    tables = ["model.embed_tokens.weight"] + ([] if tied else ["lm_head.weight"])
    for mean_resizing, named in ((True, "the mean of the 99 pretrained rows"), (False, "normal_(0, 0.02) (Llama")):
        edited = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edited.resize_token_embeddings(104, mean_resizing=mean_resizing)
        report = check_surgery(model, edited, (8,))
        assert report.total_after == sum(p.numel() for p in edited.parameters())
        resized = {p.name: p for p in report.params if p.status != ParamChange.KEPT}
        assert set(resized) == set(tables)  # a tied head is the embedding: one parameter
        for name in tables:
            old, new = model.get_parameter(name), edited.get_parameter(name)
            assert torch.equal(new[:99], old[:99])  # the truth: the pretrained rows are there
            near_mean = bool(torch.all((new[99:] - old.mean(0)).abs() < 1e-3 * old.std(0)))
            assert near_mean == mean_resizing  # and the new ones are the old rows' mean, or not
            assert resized[name].status == ParamChange.RESIZED
            assert resized[name].message == "rows 0–98 pretrained, 5 new (99–103)"
            assert resized[name].init.startswith(named)
            assert "like" not in resized[name].init
        assert (edited.get_output_embeddings().weight is edited.get_input_embeddings().weight) == tied
