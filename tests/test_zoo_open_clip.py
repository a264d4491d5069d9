"""open_clip zoo: the visual towers of ``open_clip.create_model(name, pretrained=None)``, as users build them.

Per model: exact total, output shape of a real CPU forward, no false invalid
layer (or a report that says it cannot be trusted), and an exact 1-channel
fold in float64.  Untraceable models are listed with the reason in
``tests/expected/untraceable_open_clip.txt``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from zoo_checks import ZooResult, analyse, check, coverage, fold_is_exact

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

open_clip = pytest.importorskip("open_clip")

FILE = "untraceable_open_clip.txt"
MODELS = ("RN50", "ViT-B-32")
SHAPE = (3, 224, 224)  # attention pooling and position embeddings are built for 224
_CACHE: dict[str, ZooResult] = {}


def _result(name: str) -> ZooResult:
    if name not in _CACHE:
        logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded": asked for
        _CACHE[name] = analyse(name, lambda: open_clip.create_model(name, pretrained=None).visual, SHAPE)
    return _CACHE[name]


@pytest.mark.parametrize("name", MODELS)
def test_open_clip_visual(name: str) -> None:
    check(_result(name), FILE)


@pytest.mark.parametrize("name", MODELS)
def test_open_clip_one_channel_fold_is_exact(name: str) -> None:
    fold_is_exact(_result(name))


def test_open_clip_coverage_and_untraceable_list(expected_file: Callable[[str, str], None], capsys: Any) -> None:
    text, summary = coverage("open_clip", open_clip.__version__, [_result(name) for name in MODELS], FILE)
    with capsys.disabled():
        print(summary)
    expected_file(FILE, text)


def test_open_clip_replace_head_names_the_head_or_says_what_to_do() -> None:
    from torchsurgeon import SurgeryError, replace_head

    rn50 = _result("RN50").model
    changed = {c.name: c.shape_after for c in replace_head(rn50, 10).changes}
    assert changed == {"attnpool.c_proj.weight": (10, 2048), "attnpool.c_proj.bias": (10,)}
    vit = _result("ViT-B-32").model
    with pytest.raises(SurgeryError, match=r"bare parameter proj \(768, 512\) of the model itself") as err:
        replace_head(vit, 10)
    assert not str(err.value).startswith(" ") and "nn.Sequential(model, nn.Linear(512, 10))" in str(err.value)


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("RN50", r"visual.attnpool.c_proj \(Linear\) makes a 1024-wide embedding.* replace_head\(model.visual, 10\);"),
        ("ViT-B-32", r"visual.proj \(a bare parameter\) makes a 512-wide embedding.* nn.Linear\(512, 10\)\)$"),
    ],
)
def test_open_clip_whole_model_head_is_an_embedding_not_a_classifier(name: str, refusal: str) -> None:
    """Found by a probe: replace_head on a whole RN50 CLIP made its image features 10 wide (text features 1024:
    image @ text.T failed); the whole ViT-B-32 was told to wrap the model, whose output is a tuple, in a Linear."""
    import torch

    from torchsurgeon import SurgeryError, replace_head

    logging.getLogger().setLevel(logging.ERROR)
    model = open_clip.create_model(name, pretrained=None).eval()
    with pytest.raises(SurgeryError, match=refusal):
        replace_head(model, 10, input={"image": SHAPE, "text": torch.zeros(1, 77, dtype=torch.long)})
    image_features, text_features, _ = model(torch.randn(1, *SHAPE), torch.zeros(1, 77, dtype=torch.long))
    assert image_features.shape == text_features.shape  # the pair the refusal keeps comparable
