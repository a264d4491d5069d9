"""Heads: the classifiers found from the graph, replaced or extended (torchsurgeon.heads)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from models import SentenceDense, SizeChecked, on_meta, sentence_transformer
from torchsurgeon import (
    InputError,
    ParamChange,
    SurgeryError,
    adapt_input_channels,
    append_head,
    check_surgery,
    head_layers,
    paramcount,
    replace_head,
)
from torchsurgeon.heads import head_layer


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("resnet18", "fc"),
        ("vit_b_16", "heads.head"),
        ("efficientnet_b0", "classifier.1"),
        ("convnext_tiny", "classifier.2"),
        ("squeezenet1_1", "classifier.1"),
        ("densenet121", "classifier"),
    ],
)
def test_head_found_from_the_graph(name: str, head: str) -> None:
    assert head_layer(on_meta(torchvision.models.get_model, name=name)) == head


def test_replace_head_keeps_shared_classes() -> None:
    model = torchvision.models.resnet18()
    result = replace_head(model, 5, keep={0: 207, 3: 1})
    fc = result.model.fc
    assert (fc.in_features, fc.out_features) == (512, 5)
    assert torch.equal(fc.weight[0], model.fc.weight[207]) and torch.equal(fc.bias[3], model.fc.bias[1])
    assert {c.name: c.status for c in result.changes if c.name.startswith("fc.")} == {
        "fc.weight": ParamChange.RESIZED,
        "fc.bias": ParamChange.RESIZED,
    }
    rep = check_surgery(model, result.model, (3, 64, 64))
    weight = next(p for p in rep.params if p.name == "fc.weight")
    assert weight.status == ParamChange.RESIZED
    assert weight.message == "2 of 1000 pretrained rows kept: 0←207, 3←1; 3 new"
    assert rep.after.output_shape == (1, 5)


def test_replace_conv_head() -> None:
    model = on_meta(torchvision.models.squeezenet1_1)
    assert paramcount(replace_head(model, 7).model, (3, 224, 224)).output_shape == (1, 7)


def test_append_head_records_initialisers() -> None:
    result = append_head(torchvision.models.resnet18(), nn.ReLU(), nn.Linear(1000, 10))
    statuses = {c.name: (c.status, c.old_name) for c in result.changes}
    assert statuses["fc.0.weight"] == (ParamChange.KEPT, "fc.weight")
    assert statuses["fc.2.weight"][0] == ParamChange.NEW
    assert paramcount(result.model, (3, 64, 64)).output_shape == (1, 10)


def test_the_layers_put_in_a_model_in_eval_mode_evaluate() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(4, 3, 8, 8)
    appended = append_head(net, nn.Dropout(0.5), nn.BatchNorm1d(5), nn.Linear(5, 2)).model
    assert not any(m.training for m in appended.modules())
    assert torch.equal(appended(x), appended(x))  # no dropout in the evaluation
    assert appended(x[:1]).shape == (1, 2)  # BatchNorm1d in eval(): a batch of one runs
    assert not any(m.training for m in replace_head(net, 3).model.modules())
    assert all(m.training for m in replace_head(net.train(), 3).model.modules())


class _BareProjection(nn.Module):
    """open_clip's VisionTransformer ending: ``x @ self.proj`` with a bare parameter, no Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.proj = nn.Parameter(torch.randn(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3)) @ self.proj


def test_a_bare_parameter_head_is_named_with_what_to_do() -> None:
    with pytest.raises(
        SurgeryError,
        match=r"computed by matmul\(\) from the bare parameter proj \(8, 5\) of the model itself \(_BareProjection\)"
        r".* add a classifier after it instead: nn.Sequential\(model, nn.Linear\(5, 3\)\)",
    ):
        replace_head(_BareProjection(), 3)
    with pytest.raises(SurgeryError, match=r"bare parameter proj"):
        append_head(_BareProjection(), nn.Linear(5, 3))


def test_a_square_bare_projection_is_the_head_not_a_comparison() -> None:
    """Found by a probe: open_clip's ViT-S-32 tower is 384 wide with a (384, 384) ``proj``; replace_head took the
    head's own ``x @ proj`` for two 384-wide embeddings compared and said to edit the tower by hand."""

    class Square(_BareProjection):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Parameter(torch.randn(8, 8))

    with pytest.raises(
        SurgeryError,
        match=r"computed by matmul\(\) from the bare parameter proj \(8, 8\) of the model itself \(Square\)"
        r".* add a classifier after it instead: nn.Sequential\(model, nn.Linear\(8, 3\)\)",
    ):
        replace_head(Square(), 3)
    fixed = nn.Sequential(Square(), nn.Linear(8, 3))  # the fix as written gives 3 scores
    assert fixed(torch.zeros(1, 3, 8, 8)).shape == (1, 3)


def test_a_bare_projection_of_a_model_with_several_outputs_is_not_told_to_wrap_it() -> None:
    """Found by a probe: open_clip's CoCa image tower returns (pooled @ proj, tokens); replace_head said to add
    nn.Sequential(model, nn.Linear(512, 5)), which fails on the tuple (linear(): argument 'input' must be Tensor)."""

    class PooledAndTokens(_BareProjection):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            tokens = self.conv(x).flatten(2).transpose(1, 2)
            return tokens.mean(1) @ self.proj, tokens

    model = PooledAndTokens()
    with pytest.raises(TypeError):  # what the old advice did
        nn.Sequential(model, nn.Linear(5, 3))(torch.zeros(1, 3, 8, 8))
    with pytest.raises(
        SurgeryError,
        match=r"bare parameter proj \(8, 5\) of the model itself .* the model returns \(\(1, 5\), \(1, 4, 8\)\), "
        r"several tensors, .* apply nn.Linear\(5, 3\) to output \[0\] in a forward of your own$",
    ):
        replace_head(model, 3, input=(3, 8, 8))
    with pytest.raises(SurgeryError, match=r"several tensors, .* to output \[0\] in a forward of your own$"):
        append_head(model, nn.Linear(5, 3))
    assert nn.Linear(5, 3)(model(torch.zeros(1, 3, 8, 8))[0]).shape == (1, 3)  # the advice, as it reads


def test_replace_head_updates_the_class_count_the_model_keeps() -> None:
    class Classifier(nn.Module):  # as timm's: the width of the head in an attribute
        def __init__(self) -> None:
            super().__init__()
            self.num_classes, self.features, self.fc = 10, nn.Linear(4, 8), nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x))

    original = Classifier()
    result = replace_head(original, 3)
    assert [(c.name, str(c.status), c.message) for c in result.changes][2:] == [("num_classes", "setting", "10 → 3")]
    assert result.model.num_classes == 3 and original.num_classes == 10


def test_append_head_updates_the_class_count_to_the_new_width() -> None:
    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_classes, self.fc = 10, nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    original = Classifier()
    widened = append_head(original, nn.ReLU(), nn.Linear(10, 3))
    assert [(c.name, c.message) for c in widened.changes if c.status == ParamChange.SETTING] == [
        ("num_classes", "10 → 3")
    ]
    assert widened.model.num_classes == 3 and original.num_classes == 10
    same = append_head(original, nn.ReLU())  # the width does not change: nothing to update
    assert all(c.status != ParamChange.SETTING for c in same.changes) and same.model.num_classes == 10


class _Distilled(nn.Module):
    """DeiT's distilled classifier: two heads whose logits are averaged, and its hidden states."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.norm = nn.Linear(8, 6), nn.LayerNorm(6)
        self.head, self.head_dist = nn.Linear(6, 5), nn.Linear(6, 5)
        self.num_classes = 5

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.norm(self.body(x))
        return {"logits": (self.head(h) + self.head_dist(h)) / 2, "hidden_states": h}


def test_every_head_of_a_distilled_model_is_replaced() -> None:
    """One of two was replaced: the forward then failed (7 + 5 classes), or trained 5-way in training mode."""
    model = _Distilled()
    assert head_layers(model) == ["head", "head_dist"] and head_layer(model) == "head"
    result = replace_head(model, 7, keep={0: 2})
    assert [c.name for c in result.changes] == [
        "head.weight",
        "head.bias",
        "head_dist.weight",
        "head_dist.bias",
        "num_classes",
    ]
    assert result.model(torch.zeros(1, 8))["logits"].shape == (1, 7)
    assert torch.equal(result.model.head_dist.weight[0], model.head_dist.weight[2])
    assert "one of 2 heads: head, head_dist" in result.changes[0].message
    with pytest.raises(SurgeryError, match=r"has 2 heads \(head, head_dist\).* replace_head\(model, num_classes\)"):
        append_head(model, nn.Linear(5, 3))


def test_auxiliary_classifiers_of_a_model_in_eval_mode_are_replaced_too() -> None:
    """GoogLeNet calls its auxiliary classifiers in training mode only: they kept 1000 classes."""
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).eval()
    result = replace_head(model, 7)
    assert [c.name for c in result.changes if c.name.endswith("weight")] == [
        "fc.weight",
        "aux2.fc2.weight",
        "aux1.fc2.weight",
    ]
    edited = result.model.train()
    assert [tuple(t.shape) for t in edited(torch.zeros(2, 3, 64, 64))] == [(2, 7)] * 3
    assert not model.training  # the original's mode, and every module's, as it was
    assert all(not m.training for m in model.modules())


class _LogitsAndHiddenStates(nn.Module):
    """XLM's way: hidden states come out of the backbone, the logits through dropout and identities after it."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(8, 6)
        self.summary = nn.Sequential(nn.Identity(), nn.Linear(6, 5), nn.Identity(), nn.Dropout())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return self.summary(h), h


def test_the_head_is_found_from_the_logits_not_from_the_hidden_states() -> None:
    """The closest weights to any output were taken: the backbone, reached from the hidden states."""
    assert head_layers(_LogitsAndHiddenStates()) == ["summary.1"]


@pytest.fixture(scope="module")
def transformers_bert() -> object:
    return pytest.importorskip("transformers")


def _bert(transformers: object, **settings: object) -> nn.Module:
    config = transformers.BertConfig(  # type: ignore[attr-defined]
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=50, **settings
    )
    return transformers.BertForSequenceClassification(config).eval()  # type: ignore[attr-defined,no-any-return]


def test_label_names_and_a_contradicted_problem_type_follow_the_new_head(transformers_bert: object) -> None:
    """transformers' num_labels setter renamed every class LABEL_i; a regression problem_type stayed."""
    model = _bert(
        transformers_bert, id2label={0: "neg", 1: "neu", 2: "pos"}, problem_type="single_label_classification"
    )
    result = replace_head(model, 4, keep={0: 0, 2: 2})
    assert result.model.config.id2label == {0: "neg", 1: "LABEL_1", 2: "pos", 3: "LABEL_3"}
    assert result.model.config.label2id["pos"] == 2 and model.config.id2label[1] == "neu"
    assert any(c.name == "config.id2label" for c in result.changes)
    regression = replace_head(_bert(transformers_bert, num_labels=1, problem_type="regression"), 7)
    assert regression.model.config.problem_type is None
    (setting,) = [c for c in regression.changes if c.name == "config.problem_type"]
    assert setting.message.startswith("'regression' → None")
    out = regression.model(torch.zeros(2, 5, dtype=torch.long), labels=torch.tensor([1, 6]))
    assert out.logits.shape == (2, 7) and out.loss.ndim == 0  # cross-entropy, not a broadcast regression


@pytest.mark.parametrize("model_type", ["vit", "convnext"])
def test_an_empty_classifier_gets_the_head_the_model_built_for_the_classes_has(
    transformers_bert: object, model_type: str
) -> None:
    """A classifier built with num_labels=0 (nn.Identity where the classifier goes, a feature extractor) was told
    "layernorm (LayerNorm) is the head but not a Linear or Conv layer — replace it by hand"; now the slot gets the
    Linear of the same class built with num_labels=5: same size, its state_dict loads strictly, its loss runs."""
    transformers = transformers_bert
    sizes = {"vit": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
                     "image_size": 32, "patch_size": 8},
             "convnext": {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2}}[model_type]  # fmt: skip
    build = transformers.AutoModelForImageClassification.from_config  # type: ignore[attr-defined]
    config = transformers.AutoConfig.for_model  # type: ignore[attr-defined]
    headless = build(config(model_type, **sizes, num_labels=0)).eval()
    built = build(config(model_type, **sizes, num_labels=5)).eval()
    result = replace_head(headless, 5)
    assert sum(p.numel() for p in result.model.parameters()) == sum(p.numel() for p in built.parameters())
    built.load_state_dict(result.model.state_dict(), strict=True)
    assert result.model.config.num_labels == 5 and headless.config.num_labels == 0
    assert isinstance(headless.classifier, nn.Identity)  # the original is untouched
    out = result.model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 4]))
    assert out.logits.shape == built(pixel_values=torch.randn(2, 3, 32, 32)).logits.shape == (2, 5)
    assert out.loss.ndim == 0
    assert {c.name: c.status for c in result.changes}["classifier.weight"] == ParamChange.NEW


@pytest.mark.parametrize("num_labels", [2, 32])
def test_hidden_states_made_by_a_linear_are_no_other_head(transformers_bert: object, num_labels: int) -> None:
    """Swin built with output_hidden_states=True returns its patch merging's Linear output as a hidden state: it was
    taken for another task's head (refused with 2 labels; with 32, as wide as it, replaced too, breaking the
    model).  Only the classifier is replaced now, as in the model built for 5 labels."""
    transformers = transformers_bert
    sizes = {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "image_size": 32, "patch_size": 4}
    config = transformers.SwinConfig  # type: ignore[attr-defined]
    build = transformers.SwinForImageClassification  # type: ignore[attr-defined]
    model = build(config(**sizes, window_size=4, num_labels=num_labels, output_hidden_states=True)).eval()
    built = build(config(**sizes, window_size=4, num_labels=5, output_hidden_states=True)).eval()
    result = replace_head(model, 5)
    assert {c.name.rpartition(".")[0] for c in result.changes if c.status != ParamChange.SETTING} == {"classifier"}
    built.load_state_dict(result.model.state_dict(), strict=True)
    out = result.model(pixel_values=torch.randn(1, 3, 32, 32))
    assert out.logits.shape == (1, 5) and len(out.hidden_states) == len(built(torch.randn(1, 3, 32, 32)).hidden_states)


def test_a_torchvision_model_with_its_fc_emptied_gets_a_new_one() -> None:
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    result = replace_head(model, 7)
    built = torchvision.models.resnet18(num_classes=7)
    built.load_state_dict(result.model.state_dict(), strict=True)
    assert result.model(torch.zeros(1, 3, 64, 64)).shape == (1, 7) and isinstance(model.fc, nn.Identity)


class _NeedsAnInput(nn.Module):
    """OpenAI-GPT's way: Python on the input's size, which a trace without an input cannot answer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.score = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[0] != 1:
            raise ValueError("one sequence at a time")
        return self.score(self.embed(input_ids)[:, -1])


def test_a_model_traced_only_with_an_input_takes_it() -> None:
    with pytest.raises(
        SurgeryError,
        match=r"cannot be traced without an input .* pass one it accepts, e.g. replace_head\(model, 5, input=",
    ):
        replace_head(_NeedsAnInput(), 5)
    result = replace_head(_NeedsAnInput(), 5, input={"input_ids": (6,)})
    assert result.model.score.out_features == 5 and head_layers(_NeedsAnInput(), {"input_ids": (6,)}) == ["score"]


def test_an_image_model_checking_its_input_size_is_traced_on_an_image() -> None:
    """An image model whose forward checks its input's size (smp's DeepLabV3, MONAI's SegResNetDS) was refused
    without an input, with a text model's input as the hint; it is traced on an image of its first convolution's
    channels, as paramcount traces it from a shape.  One refusing that image too is asked for an image."""
    model = SizeChecked().double().eval()
    edited = replace_head(model, 5).model
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert edited(x).shape == (2, 5, 64, 64) and model(x).shape == (2, 2, 64, 64)
    assert edited.head.out_channels == 5 and edited.stem.weight.equal(model.stem.weight)
    with pytest.raises(SurgeryError, match=r"nor for \(3, 224, 224\).*divisible by 48.* input=\(3, H, W\)") as e:
        replace_head(SizeChecked(divisor=48), 5)
    assert "input_ids" not in str(e.value)
    assert replace_head(SizeChecked(divisor=48), 5, input=(3, 48, 96)).model.head.out_channels == 5


def test_no_classes_names_the_call_that_removes_the_classifier() -> None:
    """Found by a probe: ``replace_head(model, 0)`` (timm's ``num_classes=0``: a feature extractor) was told only that
    the count must be positive; it now names the call that puts ``nn.Identity()`` in the classifier's place, which
    runs and gives the 512 features."""
    model = torchvision.models.resnet18().eval()
    with pytest.raises(
        InputError, match=r"num_classes=0 — .* nn\.Identity\(\) in its place: (model\.set_submodule.*)$"
    ) as e:
        replace_head(model, 0)
    fix = str(e.value).rpartition("in its place: ")[2]
    exec(fix, {"model": model, "nn": nn})
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 512)


@pytest.mark.parametrize("task", ["QuestionAnswering", "MultipleChoice"])
def test_a_question_answering_or_multiple_choice_head_is_refused_with_a_classifier_that_runs(
    transformers_bert: object, task: str
) -> None:
    """Found by a probe: replace_head(BertForQuestionAnswering, 3) gave a model whose forward raised (its 3 outputs
    split into a start and an end), and BertForMultipleChoice one whose logits had the wrong shape, without a word;
    their head's width is the task's. The refusal names the classifier built from the config, which runs."""
    transformers: Any = transformers_bert
    config = transformers.BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=50
    )
    model = getattr(transformers, f"BertFor{task}")(config).eval()
    with pytest.raises(SurgeryError, match=rf"BertFor{task} has no classes to change: .* new = ") as e:
        replace_head(model, 3)
    exec(str(e.value).partition("config: ")[2], scope := {"model": model, "transformers": transformers})
    new = scope["new"].eval()
    assert new.config.num_labels == 3 and new(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3)
    assert torch.equal(
        new.base_model.embeddings.word_embeddings.weight, model.base_model.embeddings.word_embeddings.weight
    )


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_append_head_on_a_text_classifier_checks_the_edit_on_token_ids(transformers_bert: object) -> None:
    """Found by a probe: ``append_head`` on a BERT classifier returned, without a word, a model whose forward raised
    (a Linear of the wrong width or dtype appended): no input was tried for a model without a convolution. 16 token
    ids are tried now, as for an image model its image."""
    model = _bert(transformers_bert)
    with pytest.raises(SurgeryError, match=r"no longer runs on input \{'input_ids': \(16,\)\}: .*in_features=5, got 2"):
        append_head(model, nn.Linear(5, 3))
    with pytest.raises(SurgeryError, match=r"expects input dtype=torch\.float64 \(its weight's\), got torch\.float32"):
        append_head(model, nn.Linear(2, 3).double())
    ids = torch.tensor([[1, 2, 3]])
    assert append_head(model, nn.ReLU(), nn.Linear(2, 3)).model(input_ids=ids).logits.shape == (1, 3)


@pytest.mark.parametrize("bad", [0, -1, "7", 7.0, True])
def test_a_bad_class_count_is_named_as_such(bad: object) -> None:
    with pytest.raises(InputError, match=rf"num_classes={bad!r} — the new class count must be a positive int"):
        replace_head(nn.Sequential(nn.Linear(4, 2)), bad)  # type: ignore[arg-type]


def test_a_kept_row_equal_to_several_old_rows_is_not_given_one_of_them() -> None:
    """Zero biases: the bias of new class 0 (old class 2) was reported as carried over from old class 0; its rows
    say nothing on their own, so they are read with the weight's (resized, not re-initialised)."""
    model = nn.Sequential(nn.Linear(4, 5))
    nn.init.zeros_(model[0].bias)
    edited = replace_head(model, 7, keep={0: 2}).model
    report = check_surgery(model, edited, (4,))
    messages = {p.name: p.message for p in report.params}
    assert "0←2" in messages["0.weight"] and "0←2, as the weight beside it" in messages["0.bias"]
    assert "0←0" not in messages["0.bias"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("build", "heads"),
    [
        (
            lambda: torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
                weights=None, weights_backbone=None, aux_loss=True, num_classes=21
            ),
            ["classifier.4", "aux_classifier.4"],  # the auxiliary output, through its interpolation
        ),
        (
            lambda: torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None),
            ["classifier.low_classifier", "classifier.high_classifier"],  # summed
        ),
    ],
    ids=["deeplabv3 aux", "lraspp"],
)
def test_segmentation_heads_are_all_replaced(build: object, heads: list[str]) -> None:
    model = build().eval()  # type: ignore[operator]
    assert head_layers(model) == heads
    with torch.no_grad():
        out = replace_head(model, 5).model(torch.zeros(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (1, 5, 64, 64) for k in out}


class _TwoTasks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.heads = nn.ModuleDict({"age": nn.Linear(8, 1), "gender": nn.Linear(8, 2)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.stem(x).mean((2, 3))
        return {name: head(features) for name, head in self.heads.items()}


def test_a_multi_task_model_is_asked_which_head_to_replace() -> None:
    """Found by a probe: the first task's head (a 1-output age regressor) was replaced, without a word."""
    with pytest.raises(SurgeryError, match=r"heads.age \(1\), heads.gender \(2\) — say which one to replace"):
        replace_head(_TwoTasks(), 7)
    model = _TwoTasks()
    result = replace_head(model, 7, layer="heads.gender")
    assert [c.name for c in result.changes] == ["heads.gender.weight", "heads.gender.bias"]
    out = result.model(torch.randn(1, 3, 16, 16))
    assert out["gender"].shape == (1, 7) and torch.equal(result.model.heads.age.weight, model.heads.age.weight)
    with pytest.raises(SurgeryError, match=r"layer='heads' is a ModuleDict, not a Linear"):
        replace_head(model, 7, layer="heads")


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_a_detection_heads_no_object_row_is_kept_and_counted() -> None:
    """Found by a probe: DETR's and YOLOS's heads score num_labels + 1 classes; replace_head(m, 3) made 3 rows and
    num_labels 3, and from_pretrained of the saved model failed."""
    transformers = pytest.importorskip("transformers")
    config = transformers.YolosConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=[32, 32],
        patch_size=8,
        num_detection_tokens=5,
        num_labels=5,
    )
    model = transformers.YolosForObjectDetection(config).eval()
    result = replace_head(model, 3, keep={0: 4}, input=(3, 32, 32))
    head = result.model.class_labels_classifier.layers[-1]
    old = model.class_labels_classifier.layers[-1]
    assert head.out_features == 4 and result.model.config.num_labels == 3  # 3 classes and "no object"
    assert torch.equal(head.weight[3], old.weight[5]) and torch.equal(head.weight[0], old.weight[4])
    assert "its last row (no object, as num_labels + 1 = 6 rows say) carried over" in result.changes[0].message


def test_an_auxiliary_head_only_the_loss_reads_is_replaced_too() -> None:
    """Found by a probe: UperNet's auxiliary_head.classifier kept 5 classes while num_labels became 3."""
    transformers = pytest.importorskip("transformers")
    backbone = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    config = transformers.UperNetConfig(
        backbone_config=backbone, hidden_size=16, auxiliary_in_channels=24, num_labels=5
    )
    model = transformers.UperNetForSemanticSegmentation(config).eval()
    result = replace_head(model, 3)
    assert result.model.decode_head.classifier.out_channels == result.model.auxiliary_head.classifier.out_channels == 3
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    assert result.model(torch.randn(1, 3, 32, 32), labels=labels).loss is not None  # the auxiliary loss runs


def test_kept_classes_with_default_names_keep_the_labels_one_to_one() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8
    )
    config.num_labels = 2
    model = transformers.ViTForImageClassification(config).eval()
    edited = replace_head(model, 3, keep={0: 1}).model.config
    assert edited.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert all(edited.label2id[name] == i for i, name in edited.id2label.items())


def test_appending_to_a_hugging_face_classifier_says_what_from_pretrained_rebuilds() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8
    )
    config.num_labels = 5
    result = append_head(transformers.ViTForImageClassification(config).eval(), nn.ReLU(), nn.Linear(5, 3))
    (row,) = [c for c in result.changes if c.name == "config.num_labels"]
    assert row.message.startswith("5 → 3 (from_pretrained builds a plain classifier for it")


def test_smps_hub_config_follows_the_head() -> None:
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.Unet("resnet18", encoder_weights=None, classes=2)
    result = replace_head(model, 5)
    assert result.model._hub_mixin_config["classes"] == 5
    assert ("_hub_mixin_config['classes']", "2 → 5") in [(c.name, c.message) for c in result.changes]


class _PeftLike(nn.Module):
    """What peft's PeftModel looks like to torchsurgeon: ``forward(*args, **kwargs)`` calling its base model."""

    __module__ = "peft.peft_model"

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base_model = base

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.base_model(*args, **kwargs)


class _LoraLike(nn.Module):
    """A LoRA layer around a Linear, as peft injects one."""

    __module__ = "peft.tuners.lora.layer"

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A, self.lora_B = nn.Linear(base.in_features, 2, bias=False), nn.Linear(2, base.out_features, False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x))


def test_surgery_on_a_peft_model_says_to_edit_the_base_model_first() -> None:
    """Found by a probe: replace_head of a PeftModel gave back its bare base model with frozen layers made trainable,
    and the LoRA around a head was redrawn (no longer a no-op)."""
    wrapped = _PeftLike(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5)))
    for edit in (lambda m: replace_head(m, 3), lambda m: adapt_input_channels(m, 2, "zero_extra")):
        with pytest.raises(SurgeryError, match=r"is a peft model: .* edit the base model before get_peft_model"):
            edit(wrapped)
    injected = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), _LoraLike(nn.Linear(8, 5)))
    with pytest.raises(SurgeryError, match=r"2 \(peft.tuners.lora.layer._LoraLike\) is wrapped by peft"):
        replace_head(injected, 3, input=(4,))


class _TwoTowers(nn.Module):
    """open_clip's CLIP, small: an image tower ending in a Linear projection, a text tower in a bare ``x @ proj``,
    their normalised embeddings returned (``compare=False``) or compared (``compare=True``, as transformers'
    CLIPModel gives its logits)."""

    def __init__(self, compare: bool = False) -> None:
        super().__init__()
        self.visual = nn.Sequential(
            nn.Conv2d(3, 4, 4, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6)
        )
        self.embed = nn.Embedding(10, 5)
        self.text_projection = nn.Parameter(torch.randn(5, 6))
        self.compare = compare

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image_features = nn.functional.normalize(self.visual(image), dim=-1)
        text_features = nn.functional.normalize(self.embed(text).mean(1) @ self.text_projection, dim=-1)
        if self.compare:
            return (image_features @ text_features.T,)
        return image_features, text_features


_TOWERS_INPUT = {"image": (3, 8, 8), "text": torch.zeros(1, 3, dtype=torch.long)}


def test_a_two_tower_models_embedding_is_not_taken_for_a_classifier() -> None:
    """Found by a probe: replace_head on a whole open_clip CLIP RN50 made its image features 10 wide, its text
    features stayed 1024 wide, and image @ text.T failed; transformers' CLIPModel had both projections replaced."""
    model = _TwoTowers()
    with pytest.raises(
        SurgeryError,
        match=r"visual.3 \(Linear\) makes a 6-wide embedding, not class scores — output 1 of the model is the "
        r"embedding made by text_projection \(a bare parameter\) from the input text, "
        r".* replace_head\(model.visual, 3\)",
    ):
        replace_head(model, 3, input=_TOWERS_INPUT)
    with pytest.raises(SurgeryError, match=r"multiplied by matmul\(\) with the output of text_projection"):
        replace_head(_TwoTowers(compare=True), 3, input=_TOWERS_INPUT)
    with pytest.raises(SurgeryError, match=r"makes a 6-wide embedding"):
        append_head(model, nn.Linear(6, 3), input=_TOWERS_INPUT)
    image, text = torch.randn(2, 3, 8, 8), torch.zeros(4, 3, dtype=torch.long)
    model.visual = replace_head(model.visual, 3, input=(3, 8, 8)).model  # the fix the message names
    assert model.visual(image).shape == (2, 3)
    named = replace_head(_TwoTowers(), 3, input=_TOWERS_INPUT, layer="visual.3").model  # named: the user's call
    assert named(image, text)[0].shape == (2, 3)


def test_late_fusion_heads_of_two_inputs_are_still_replaced_together() -> None:
    """Two classifiers on two inputs whose logits are added are heads, not embeddings: both replaced."""

    class LateFusion(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image_head, self.table_head = nn.Linear(4, 5), nn.Linear(3, 5)

        def forward(self, image: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
            return self.image_head(image) + self.table_head(table)

    result = replace_head(LateFusion(), 2, input={"image": (4,), "table": (3,)})
    assert result.model(torch.randn(1, 4), torch.randn(1, 3)).shape == (1, 2)
    assert {c.name for c in result.changes} >= {"image_head.weight", "table_head.weight"}


def test_a_reshape_to_the_class_count_after_the_head_is_updated() -> None:
    """Found by probe 22: replace_head(monai Classifier, 7) left its final Reshape(3), and the model it returned
    failed at its first forward, with no word from replace_head."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.networks.nets import Classifier

        model = Classifier(in_shape=(1, 32, 32), classes=3, channels=(4, 8), strides=(2, 2))
    result = replace_head(model, 7)
    assert result.model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)  # the original untouched
    assert [(c.name, c.status) for c in result.changes][-1] == ("reshape.shape", ParamChange.SETTING)


class _HardCodedClasses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).view(-1, 3, 1)


def test_an_edited_model_that_no_longer_runs_is_refused() -> None:
    """A class count written into forward: the edited model cannot run, and replace_head says where."""
    model = _HardCodedClasses()
    by_hand = _HardCodedClasses()
    by_hand.fc = nn.Linear(8, 5)
    with pytest.raises(RuntimeError, match="invalid for input"):  # the real edited model fails
        by_hand(torch.randn(2, 8))
    with pytest.raises(SurgeryError, match=r"with fc replaced, the model no longer runs on input \(8,\): view"):
        replace_head(model, 5, input=(8,))


@pytest.mark.parametrize("edit", ["replace", "append"])
def test_a_head_inside_a_residual_is_refused_without_an_input(edit: str) -> None:
    """Found by a probe: MONAI's UNet (``num_res_units=1``) ends in a residual unit, its last convolution's output
    added to that unit's input.  Without ``input=``, ``replace_head(model, 7)`` and ``append_head`` returned a model
    whose forward fails ("The size of tensor a (7) must match the size of tensor b (3)"); they now try the edit on
    an image of the first convolution's channels, refuse it, and name a model that runs as written."""
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.UNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    with pytest.raises(SurgeryError, match=r"joins the head's output with another branch still 3 wide") as err:
        replace_head(model, 7) if edit == "replace" else append_head(model, nn.Conv2d(3, 7, 1))
    assert model.model[2][1].conv.unit0.conv.out_channels == 3  # the model given is untouched
    if edit == "replace":
        call = re.search(r"nn\.Sequential\(model, .*\)$", str(err.value))
        assert call is not None
        fixed = eval(call.group(0), {"nn": nn, "model": model})  # as written
        assert fixed(torch.randn(2, 1, 32, 32)).shape == (2, 7, 32, 32)


def test_a_transposed_convolution_head_is_refused_with_a_call_that_runs() -> None:
    """Found by a probe: MONAI's UNet without residual units ends in a ConvTranspose2d; replace_head said it was
    "the head but not a Linear or Conv layer — replace it by hand".  It says what the layer is and names a model
    that runs as written."""
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.UNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=0).eval()
    with pytest.raises(SurgeryError, match=r"model\.2\.conv \(ConvTranspose2d\) makes the output: a transposed") as err:
        replace_head(model, 7)
    call = re.search(r"nn\.Sequential\(model, .*\)$", str(err.value))
    assert call is not None
    fixed = eval(call.group(0), {"nn": nn, "model": model})  # as written
    assert fixed(torch.randn(2, 1, 32, 32)).shape == (2, 7, 32, 32)


def test_the_multi_task_refusal_names_a_call_that_runs() -> None:
    """Found by a probe (transformers' MaskFormer and Mask2Former: class_predictor beside mask_projection): the
    refusal's example was ``replace_head(model, num_classes, layer=...)``, a name the user has not defined; it
    gives the class count asked for."""
    model = _TwoTasks()
    with pytest.raises(SurgeryError, match="say which one to replace") as err:
        replace_head(model, 7)
    call = re.search(r"replace_head\(model, .*\)$", str(err.value))
    assert call is not None
    edited = eval(call.group(0), {"replace_head": replace_head, "model": model}).model  # as written
    assert edited(torch.randn(1, 3, 16, 16))["age"].shape == (1, 7)


@pytest.mark.parametrize(("layer", "fixed"), [("fc1", "fc"), ("head", "fc")])
def test_replace_head_layer_naming_no_module_gives_a_call_that_runs(layer: str, fixed: str) -> None:
    """``layer=`` naming no module said only "has no such module": now the layer meant (or the last Linear or
    convolution layer) and the replace_head call that names it, which runs."""
    model = torchvision.models.resnet18()
    said = rf"layer='{layer}': ResNet has no module '{layer}' .*layer='{fixed}'\)$"
    with pytest.raises(SurgeryError, match=said) as info:
        replace_head(model, 10, keep={0: 1}, layer=layer)
    call = str(info.value)[str(info.value).index("replace_head(") :]
    edited = eval(call, {"replace_head": replace_head, "model": model}).model
    assert edited.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert torch.equal(edited.fc.weight[0], model.fc.weight[1])


def test_replace_head_layer_named_without_its_parent_gives_the_layer_holding_it() -> None:
    """``layer='fc'`` of a model whose head is ``heads.cls.fc`` proposed its last Linear layer (the auxiliary head),
    as a misspelt layer did; a layer named without its parent is now proposed as no_such_name does for a report's
    layers (the names holding it), with the call that edits that head."""

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.heads = nn.ModuleDict({"cls": nn.ModuleDict({"fc": nn.Linear(8, 10)}), "aux": nn.Linear(8, 4)})

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = self.backbone(x)
            return self.heads["cls"]["fc"](f), self.heads["aux"](f)

    model = TwoHeads()
    with pytest.raises(
        SurgeryError, match=r"did you mean 'heads.cls.fc'\? replace_head\(model, 5, layer='heads.cls.fc'\)$"
    ) as info:
        replace_head(model, 5, layer="fc")
    call = str(info.value)[str(info.value).index("replace_head(") :]
    cls, aux = eval(call, {"replace_head": replace_head, "model": model}).model(torch.randn(1, 3, 8, 8))
    assert (cls.shape, aux.shape) == ((1, 5), (1, 4))


def test_keep_of_the_wrong_type_names_what_keep_takes_with_one_that_runs() -> None:
    """Found by a probe: ``keep=[1, 2]`` raised dict()'s bare TypeError; the error now says what keep takes, with a
    mapping built from the classes given, which runs."""
    net = nn.Sequential(nn.Linear(4, 5))
    with pytest.raises(InputError, match=r"keep=\[1, 2\] — keep maps each new class to the old class") as info:
        replace_head(net, 3, keep=[1, 2])  # type: ignore[arg-type]
    keep = eval(str(info.value).rpartition("e.g. keep=")[2])
    r = replace_head(net, 3, keep=keep)
    assert torch.equal(r.model[0].weight[:2], net[0].weight[1:3])  # old classes 1 and 2 carried to 0 and 1


def test_keep_given_as_pairs_suggests_the_mapping_of_those_pairs() -> None:
    """Found by a probe: ``keep=[(0, 1)]`` was told ``e.g. keep={0: 0}``, a mapping the user never meant; the pairs are
    now read as (new, old), as ``dict()`` reads them, and the suggestion runs."""
    net = nn.Sequential(nn.Linear(4, 5))
    with pytest.raises(InputError, match=r"read as \(new, old\)\): e\.g\. keep=\{0: 1, 2: 3\}$") as info:
        replace_head(net, 3, keep=[(0, 1), (2, 3)])  # type: ignore[arg-type]
    keep = eval(str(info.value).rpartition("e.g. keep=")[2])
    r = replace_head(net, 3, keep=keep)
    assert torch.equal(r.model[0].weight[0], net[0].weight[1]) and torch.equal(r.model[0].weight[2], net[0].weight[3])


def test_append_head_given_a_class_says_to_pass_a_layer() -> None:
    """Found by a probe: ``append_head(model, nn.ReLU)`` said ``<class 'torch.nn....ReLU'> is not an nn.Module``."""
    net = nn.Sequential(nn.Linear(4, 5))
    with pytest.raises(
        InputError, match=r"nn\.ReLU is a class — pass a layer: append_head\(model, nn\.ReLU\(\)\)$"
    ) as info:
        append_head(net, nn.ReLU)  # type: ignore[arg-type]
    fixed = eval(str(info.value).rpartition("pass a layer: ")[2], {"append_head": append_head, "model": net, "nn": nn})
    assert isinstance(fixed.model[0][1], nn.ReLU)


_BAD_INPUTS = [
    ("bad input", r"input shape: expected a shape such as \(3, 224, 224\), got 'bad input'"),
    ((3.0, 32, 32), r"input shape: dimension 0 is 3.0 \(float\) in shape \(3.0, 32, 32\) — use 3"),
    ({"inptu": (3, 32, 32)}, r"input 'inptu' is not an argument of forward — did you mean 'input'\?"),
]


@pytest.mark.parametrize(("bad", "message"), _BAD_INPUTS)
def test_a_malformed_input_is_refused_as_paramcount_refuses_it(bad: object, message: str) -> None:
    """Found by a probe: replace_head(model, 7, input="bad input") succeeded, the input silently ignored (an
    input that does not fit made no example tensors and the graph was traced without); append_head and head_layers
    too, also with layer= given. Each now raises paramcount's own InputError, naming the input and the fix."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with pytest.raises(InputError, match=message) as counted:
        paramcount(net, bad)  # type: ignore[arg-type]
    calls = [
        lambda: replace_head(net, 7, input=bad),
        lambda: replace_head(net, 7, layer="4", input=bad),
        lambda: append_head(net, nn.Linear(5, 2), input=bad),
        lambda: head_layers(net, input=bad),
    ]
    for call in calls:
        with pytest.raises(InputError, match=message) as refused:
            call()
        assert str(refused.value) == str(counted.value)
    assert net[4].out_features == 5  # nothing edited


def test_replace_head_inplace_takes_true_or_false_only() -> None:
    """replace_head(model, 7, inplace='no') replaced the user's own head (a true value to Python)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    with pytest.raises(InputError, match=r"inplace='no' — give True or False \(True edits the model given"):
        replace_head(model, 7, inplace="no")
    with pytest.raises(InputError, match=r"inplace=1 — give True or False"):
        append_head(model, nn.Linear(5, 2), inplace=1)  # type: ignore[arg-type]
    assert model[1].out_features == 5 and len(model) == 2


def test_replace_head_layer_takes_an_int_index_of_a_sequential() -> None:
    """replace_head(model, 7, layer=3) raised a raw TypeError ('int' object is not iterable); an int is the name of a
    Sequential's layer, a list (one head is replaced) is refused naming the name to give."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    edited = replace_head(model, 7, layer=3).model
    assert edited(torch.randn(2, 3, 8, 8)).shape == (2, 7) and model[3].out_features == 5
    with pytest.raises(
        InputError, match=r"layer=\['3'\] — give one layer's name as model.named_modules\(\) gives it, "
    ):
        replace_head(model, 7, layer=["3"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"layer=3.0 — give one layer's name"):
        replace_head(model, 7, layer=3.0)  # type: ignore[arg-type]


class _TakesKwargs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_an_input_forward_never_reads_is_refused_as_paramcount_refuses_it() -> None:
    """replace_head(model, 7, input={"x": ..., "nope": ...}) with forward(x, **kwargs): the trace dropped 'nope'
    and the edit went on; every surgery gives paramcount's InputError."""
    spec = {"x": (3, 8, 8), "nope": (3,)}
    with pytest.raises(InputError) as given:
        paramcount(_TakesKwargs(), spec)
    message = re.escape(str(given.value))
    assert "input 'nope' is never read: _TakesKwargs.forward takes it through **kwargs" in str(given.value)
    with pytest.raises(InputError, match=message):
        replace_head(_TakesKwargs(), 7, input=spec)
    with pytest.raises(InputError, match=message):
        head_layers(_TakesKwargs(), input=spec)
    with pytest.raises(InputError, match=message):
        append_head(_TakesKwargs(), nn.Linear(5, 2), input=spec)
    with pytest.raises(InputError, match=message):
        adapt_input_channels(_TakesKwargs(), 1, input=spec)
    assert replace_head(_TakesKwargs(), 7, input={"x": (3, 8, 8)}).model(torch.randn(2, 3, 8, 8)).shape == (2, 7)


def test_replace_head_fills_the_place_of_a_removed_classifier() -> None:
    """A feature extractor made by ``model.classifier[3] = nn.Identity()`` (timm's ``num_classes=0``): the new head
    goes where the classifier was, not on classifier.0, whose 1024 pretrained features it would throw away."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small().eval()
    model.classifier[3] = nn.Identity()
    result = replace_head(model, 5)
    edited = result.model
    assert torch.equal(edited.classifier[0].weight, model.classifier[0].weight)
    head = edited.classifier[3]
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (1024, 5)
    assert not head.training
    with torch.no_grad():
        assert edited(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert [(c.name, c.status) for c in result.changes] == [
        ("classifier.3.weight", ParamChange.NEW),
        ("classifier.3.bias", ParamChange.NEW),
    ]
    assert head_layers(model, (3, 64, 64)) == ["classifier.3"]
    rep = check_surgery(model, edited, (3, 64, 64))
    assert {p.name: p.status for p in rep.params if p.status != ParamChange.KEPT} == {
        "classifier.3.weight": ParamChange.NEW,
        "classifier.3.bias": ParamChange.NEW,
    }


def test_replace_head_in_a_removed_classifier_refuses_what_it_cannot_fill() -> None:
    resnet = torchvision.models.resnet18()
    resnet.fc = nn.Identity()
    assert replace_head(resnet, 10).model.fc.in_features == 512  # was: "layer4.1.bn2 ... replace it by hand"
    with pytest.raises(InputError, match=r"fc \(Identity\) stands where the classifier was removed .* no old classes"):
        replace_head(resnet, 10, keep={0: 1})
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Identity())
    with pytest.raises(SurgeryError, match=r"given shape \(1, 8, 6, 6\), not \(batch, features\)") as info:
        replace_head(model, 5, input=(3, 8, 8))
    fix = str(info.value).split("e.g. ")[-1]
    assert fix == "model.set_submodule('2', nn.Conv2d(8, 5, kernel_size=1))"
    exec(fix, {"model": model, "nn": nn})  # the fix runs as written
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 5, 6, 6)
    assert replace_head(nn.Sequential(nn.Linear(8, 4), nn.Identity()), 2).model[0].out_features == 2  # a layer, then


def test_append_head_after_a_convolution_head_says_where_its_classes_are() -> None:
    """A Linear appended after a 1×1 convolution head (timm's ResNetV2, DPN) reads the last dim, a 1 of
    (1, 4, 1, 1): the Linear's own fix, nn.Linear(1, 2), ran and gave 8 outputs, not 2 classes."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.Flatten()).eval()
    with pytest.raises(SurgeryError, match=r"2 \(Conv2d\) gives its 4 classes in dim 1") as info:
        append_head(model, nn.ReLU(), nn.Linear(4, 2), input=(3, 8, 8))
    message = str(info.value)
    assert "set_submodule" not in message and "nn.Conv2d(4, 2, kernel_size=1) for nn.Linear(4, 2)" in message
    x = torch.randn(1, 3, 8, 8)
    for fixed in ((nn.ReLU(), nn.Conv2d(4, 2, kernel_size=1)), (nn.Flatten(), nn.ReLU(), nn.Linear(4, 2))):
        assert append_head(model, *fixed, input=(3, 8, 8)).model(x).shape == (1, 2)  # the fixes it names run


def test_a_head_that_is_a_norm_is_refused_with_a_layer_after_the_model_that_runs() -> None:
    """Found by fuzzer probe 45: MONAI's HighResNet ends in conv, batch norm, activation; its last layer with
    weights is the norm, and replace_head said only "replace it by hand".  It now names a layer after the whole
    model, which runs as written and gives the classes asked for."""
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.HighResNet(spatial_dims=2, in_channels=3, out_channels=2).eval()
    with pytest.raises(SurgeryError, match="BatchNorm2d") as info:
        replace_head(model, 5)
    fix = re.search(r"runs as written: (nn\.Sequential\(model, .*\))$", str(info.value))
    assert fix is not None, str(info.value)
    edited = eval(fix.group(1), {"model": model, "nn": nn})
    assert edited(torch.zeros(2, 3, 32, 32)).shape == (2, 5, 32, 32)


class _AnchorHead(nn.Module):
    """A classification head making one group of classes per anchor, reshaped by the class count it keeps
    (torchvision's RetinaNetClassificationHead: ``cls_logits.view(N, -1, self.num_classes, H, W)``)."""

    def __init__(self, anchors: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.num_classes = classes
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.cls_logits = nn.Conv2d(8, anchors * classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cls_logits(self.conv(x))
        n, _, h, w = out.shape
        return out.view(n, -1, self.num_classes, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.num_classes)


def test_a_head_with_a_group_of_classes_per_anchor_is_refused_with_the_edit_that_runs() -> None:
    """Found by a probe: replace_head(retinanet, 5, layer='head.classification_head.cls_logits') made a Conv2d of
    5 outputs (819 = 9 anchors x 91 classes taken for 819 classes) and returned a model whose forward raised
    ("shape '[1, -1, 91, 16, 16]' is invalid"), without a word; the refusal names the groups and the edit that
    runs, each group as wide as the new classes."""
    model = nn.Sequential(nn.Conv2d(3, 8, 1), _AnchorHead(anchors=3, classes=4))
    with pytest.raises(SurgeryError, match=r"makes 12 outputs, 3 groups of the 4 classes 1 \(_AnchorHead\)") as info:
        replace_head(model, 5, layer="1.cls_logits")
    fix = str(info.value).partition("as written: ")[2]
    assert fix == (
        "model.set_submodule('1.cls_logits', nn.Conv2d(8, 15, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))); "
        "model.get_submodule('1').num_classes = 5"
    )
    exec(fix, {"model": model, "nn": nn})  # as written
    assert model(torch.randn(2, 3, 6, 6)).shape == (2, 6 * 6 * 3, 5)  # the oracle: a real forward, 5 per anchor


def test_a_sentence_transformer_is_refused_with_the_edits_that_make_a_classifier() -> None:
    """Found by a probe: of sentence-transformers' SentenceTransformer (Transformer, Pooling, Dense), replace_head
    said '0 (Transformer) is the head', head_layers named it, and append_head wrapped it, giving a model that fails.
    Its output is the sentence embedding: refused, with a Dense appended (sentence-transformers' own) or its last
    Dense named, a call that runs as written and whose Dense is rebuilt as sentence-transformers loads it."""
    features = {"input_ids": torch.randint(0, 50, (2, 5)), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    model = sentence_transformer(6)
    appended = r"model\.append\(sentence_transformers\.\S+\.Dense\(6, 5, activation_function=None\)\)"
    for edit in (lambda m: replace_head(m, 5), lambda m: append_head(m, nn.Linear(6, 5))):
        with pytest.raises(SurgeryError, match=r"makes sentence embeddings, not class scores") as caught:
            edit(model)
    with pytest.raises(
        SurgeryError,
        match=appended + r".*or, if 2 \(SentenceDense\) is your classifier, replace its "
        r"layer: replace_head\(model, 5, layer='2.linear'\)$",
    ):
        replace_head(model, 5)
    with pytest.raises(SurgeryError, match=r"makes sentence embeddings"):
        head_layers(model)
    assert "append(" in str(caught.value)
    edited = replace_head(model, 5, layer="2.linear").model  # the fix named, as written
    assert edited(dict(features))["sentence_embedding"].shape == (2, 5)
    dense = edited.get_submodule("2")
    SentenceDense(dense.in_features, dense.out_features).load_state_dict(dense.state_dict())  # as it is loaded
    without = sentence_transformer(None)  # Transformer and Pooling: no Dense to name
    with pytest.raises(
        SurgeryError,
        match=r"Dense\(8, 5, activation_function=None\)\), whose scores are then its "
        r"output's 'sentence_embedding'$",
    ):
        replace_head(without, 5)


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("cls_score", r"regresses 4 box coordinates for each of them \(364\)"),
        # found by a probe: bbox_pred was replaced as a head of 5 classes ("new head: 364 → 5 classes")
        ("bbox_pred", r"bbox_pred \(Linear\) is no class score: it regresses 4 box coordinates \(364\) for each"),
    ],
)
def test_a_class_score_beside_its_per_class_boxes_is_refused_with_the_edit_of_both(layer: str, message: str) -> None:
    """torchvision's fine-tuning of Faster R-CNN: ``replace_head(model, 5, layer='...cls_score')`` returned a model
    with 5 scores beside ``bbox_pred``'s 364 = 4 x 91 box outputs, which runs and pairs boxes with the wrong
    classes (its post-processing splits the boxes by the scores' class count); ``layer='...bbox_pred'`` made the
    box regressor 5 wide, a model that fails."""
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None
    ).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SurgeryError, match=message) as refused:
        replace_head(model, 5, layer=f"roi_heads.box_predictor.{layer}")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for statement in str(refused.value).split("as written: ")[1].split("; "):
        exec(statement, {"model": model, "nn": nn})
    predictor = model.roi_heads.box_predictor
    assert (predictor.cls_score.out_features, predictor.bbox_pred.out_features) == (5, 20)  # FastRCNNPredictor(_, 5)
    with torch.no_grad():
        detections = model([torch.rand(3, 128, 128)])[0]
    assert detections["boxes"].shape[0] == detections["labels"].shape[0]
    assert all(int(label) < 5 for label in detections["labels"])


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_a_head_not_found_by_a_trace_is_named_with_a_call_that_runs() -> None:
    """Found by a probe: ``replace_head(fasterrcnn, 5)`` (no trace for any input) asked for an input,
    ``replace_head(model, 5, input=(3, H, W))``, which fails as well; the refusal also names the head, its class
    score, in a call that tells the edit of the score and its boxes."""
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None
    ).eval()
    with pytest.raises(SurgeryError, match=r"cannot be traced") as refused:
        replace_head(model, 5)
    named = re.search(r"or name the head, (replace_head\(model, 5, layer='[\w.]+'\))$", str(refused.value))
    assert named is not None and named.group(1) == "replace_head(model, 5, layer='roi_heads.box_predictor.cls_score')"
    with pytest.raises(SurgeryError, match=r"replace both, as written"):
        eval(named.group(1), {"replace_head": replace_head, "model": model})


class _AttentionPool(nn.Module):
    """CLIP's ResNet head (timm's ``AttentionPool2d``): the mean token attends over the feature map through ``q``,
    ``k`` and ``v`` (each ``width`` wide) and ``proj`` gives the ``width // 4`` outputs."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.proj = nn.Linear(width, width // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        x = torch.cat([x.mean(1, keepdim=True), x], 1)
        attention = (self.q(x[:, :1]) @ self.k(x).transpose(1, 2)).softmax(-1)
        return self.proj((attention @ self.v(x))[:, 0])


def test_an_attention_pools_projections_are_not_taken_for_box_regressors() -> None:
    """Found by a probe of timm's families: replace_head(resnet50x4_clip, 5) was refused with "head.proj (Linear)
    scores 640 classes and head.q (Linear) regresses 4 box coordinates for each of them (2560)", and a fix that
    replaced the attention's query with a 20-wide layer: CLIP's attention pool is 4 x as wide as its outputs (as are
    resnet101_clip's, resnet50x16_clip's and resnet50x64_clip's).  ``q``, ``k`` and ``v`` have twins of their shape,
    which no box regressor beside its classifier has: the head is replaced, the attention kept."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, stride=2), _AttentionPool(64)).eval()
    result = replace_head(model, 5)
    pool = result.model[1]
    assert (pool.proj.in_features, pool.proj.out_features) == (64, 5)
    for name in ("q", "k", "v"):
        assert torch.equal(getattr(pool, name).weight, getattr(model[1], name).weight)
    with torch.no_grad():
        assert result.model(torch.randn(2, 3, 16, 16)).shape == (2, 5)


class _OneSizeViT(nn.Module):
    """A ViT built for one image size, as timm's are (DINOv2 at 518, SigLIP at 256): its position embedding has
    the tokens of a 64 × 64 image, which ``pretrained_cfg`` describes; its classifier removed (``num_classes=0``)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 8, stride=8)
        self.pos = nn.Parameter(torch.zeros(1, 64, 16))
        self.head = nn.Identity()
        self.pretrained_cfg = {"input_size": (3, 64, 64)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.proj(x).flatten(2).transpose(1, 2) + self.pos).mean(1))


def test_a_removed_classifier_is_put_back_in_a_model_built_for_one_image_size() -> None:
    """Found by a probe of timm's families: replace_head(timm.create_model("vit_small_patch14_reg4_dinov2"), 5) (and
    SigLIP's, TIPS's, RADIO's, PE's: built with num_classes=0) was refused, "the model runs on no input torchsurgeon
    can guess", having tried 224 × 224 alone; the image its pretrained_cfg describes is tried too."""
    model = _OneSizeViT().eval()
    result = replace_head(model, 5)
    assert isinstance(result.model.head, nn.Linear) and (
        result.model.head.in_features,
        result.model.head.out_features,
    ) == (16, 5)
    assert isinstance(model.head, nn.Identity)
    with torch.no_grad():
        assert result.model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
