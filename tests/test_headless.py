"""Models with no classification head (torchsurgeon.headless): refused by replace_head and append_head, with a call
that gives them one, run as written here."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from torchsurgeon import SurgeryError, append_head, replace_head

_SMALL: dict[str, tuple[str, dict[str, Any], str]] = {
    "BertModel": ("BertConfig", {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "intermediate_size": 16, "vocab_size": 50}, "input_ids"),
    "ViTModel": ("ViTConfig", {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                               "intermediate_size": 16, "image_size": 32, "patch_size": 8}, "pixel_values"),
    "ResNetModel": ("ResNetConfig", {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}, "pixel_values"),
    "GPT2Model": ("GPT2Config", {"n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 50, "bos_token_id": 0,
                                 "eos_token_id": 0}, "input_ids"),
}  # fmt: skip


def _fix(message: str) -> str:
    """The code a refusal says runs as written: all after it says so."""
    found = re.search(r"which runs as written: (.*)$", message)
    assert found is not None, message
    return found.group(1)


@pytest.mark.parametrize("kind", list(_SMALL))
@pytest.mark.parametrize("edit", ["replace", "append"])
def test_a_transformers_base_model_has_no_head_and_the_classifier_named_runs(kind: str, edit: str) -> None:
    """Found by a probe: replace_head(BertModel(config), 5) said "encoder.layer.1.output.LayerNorm (LayerNorm) is
    the head but not a Linear or Conv layer — replace it by hand" (ViTModel: its layernorm; ResNetModel: a shortcut's
    BatchNorm2d; GPT2Model asked for an input), and append_head(BertModel(config), nn.Linear(16, 5)) put the Linear
    after that LayerNorm, inside the encoder, where the pooler then read 5 features.  Both say the model is the base
    model and name the classifier transformers builds for it, with these weights loaded; it runs, holds them, and
    gives 5 class scores."""
    transformers = pytest.importorskip("transformers")
    config_class, sizes, main = _SMALL[kind]
    model = getattr(transformers, kind)(getattr(transformers, config_class)(**sizes)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    do: Callable[[], Any] = (
        (lambda: replace_head(model, 5)) if edit == "replace" else (lambda: append_head(model, nn.Linear(16, 5)))
    )
    did = "replace" if edit == "replace" else "append to"
    with pytest.raises(SurgeryError, match=rf"{kind} is transformers' base model .* no classification head to {did}"):
        do()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # left as found
    with pytest.raises(SurgeryError) as info:
        do()
    namespace: dict[str, Any] = {"copy": copy, "transformers": transformers, "model": model}
    exec(_fix(str(info.value)), namespace)  # as written
    new = namespace["new"].eval()
    loaded = new.base_model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items() if k in loaded)
    assert sum(k in loaded for k in model.state_dict()) >= len(model.state_dict()) - 2  # ViTModel's pooler only
    x = torch.randint(0, 50, (1, 6)) if main == "input_ids" else torch.randn(1, 3, 32, 32)
    assert new(**{main: x}).logits.shape == (1, 5)


def test_a_base_model_whose_weights_do_not_all_load_names_them_and_all_after_runs_as_written_runs() -> None:
    """Found by a probe: the refusal of CLIPModel, ViTModel, RoBERTa and 16 other base models put a note after the code
    said to run as written ("... strict=False) (pooler.dense, which ViTForImageClassification does not build, left
    out)", then "; or, with the checkpoint's weights: ..." for a model from a checkpoint): copied whole, a SyntaxError;
    and CLIP's own parameters (logit_scale, at the root) were named as an empty name ("(, text_model...")."""
    transformers = pytest.importorskip("transformers")
    sizes = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
    config = transformers.CLIPConfig(
        text_config={**sizes, "vocab_size": 50}, vision_config={**sizes, "image_size": 32, "patch_size": 8}
    )
    model = transformers.CLIPModel(config).eval()
    model.config._name_or_path = "someone/clip-tiny"  # as from_pretrained leaves it
    with pytest.raises(SurgeryError) as info:
        replace_head(model, 5)
    message = str(info.value)
    assert "logit_scale, " in message and "(, " not in message
    assert "from_pretrained('someone/clip-tiny', num_labels=5)" in message
    namespace: dict[str, Any] = {"copy": copy, "transformers": transformers, "model": model}
    exec(message.split("which runs as written: ", 1)[1], namespace)  # all of it, as a user copies it
    new = namespace["new"].eval()
    assert new(pixel_values=torch.randn(1, 3, 32, 32)).logits.shape == (1, 5)


@pytest.mark.parametrize("edit", ["replace", "append"])
def test_a_backbone_giving_features_has_no_head_and_the_classifier_named_runs(edit: str) -> None:
    """Found by a probe: a torchvision ResNet cut before its pooling, ``nn.Sequential(*children[:-2])``: replace_head
    called its last BatchNorm2d the head and proposed a 1x1 convolution, and append_head wrapped that BatchNorm2d
    with the Linear, returning a model that failed at its first forward (the Linear read the 7 columns)."""
    model = nn.Sequential(*list(torchvision.models.resnet18().children())[:-2]).eval()
    with pytest.raises(SurgeryError, match=r"no classification head .* made by 7\.1\.bn2 \(BatchNorm2d\)") as info:
        replace_head(model, 5) if edit == "replace" else append_head(model, nn.Linear(512, 5))
    assert isinstance(model[7][1].bn2, nn.BatchNorm2d)  # left as found
    fixed = eval(_fix(str(info.value)), {"nn": nn, "model": model})  # as written
    assert fixed(torch.randn(2, 3, 64, 64)).shape == (2, 5)
