"""Whole-model proof over the torchvision zoo: a sum-folded model on a grey image equals the original
on the grey image replicated to RGB, and check_surgery calls the first conv folded and everything else kept."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from models import LARGEST_TORCHVISION, materialize, on_meta
from torchsurgeon import ParamChange, adapt_input_channels, check_surgery

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

NAMES = torchvision.models.list_models(module=torchvision.models)
BIG = 100_000_000  # over it, in float32 (and in tests/conftest.py's group of the largest models: LARGEST_TORCHVISION)
# over 600 M parameters: 2.4 GiB each in float32, and their worker 3.5 GiB, most of make test's peak memory; their
# weights over a million elements take their own rows + row length - 1 normals (materialize's lean_above): 1.1 GiB
LEAN, LEAN_ABOVE = ("regnet_y_128gf", "vit_h_14"), 1_000_000


def _size(name: str) -> int:
    """The image size the fold is proved at: 224 for MaxViT (its partitions), 4 × 4 patches for a ViT (built for it,
    as torchvision's ``image_size=`` builds one for another resolution), else small (a fold does not depend on it)."""
    if name.startswith("vit_"):
        return 4 * int(name.rsplit("_", 1)[1])
    return 224 if name.startswith("maxvit") else 96 if "inception" in name else 64


def _kwargs(name: str) -> dict[str, int]:
    return {"image_size": _size(name)} if name.startswith("vit_") else {}


@pytest.mark.parametrize("name", NAMES)
def test_sum_fold_is_exact_and_recognised(name: str) -> None:
    model = on_meta(torchvision.models.get_model, name=name, buffers=False, **_kwargs(name))
    big = sum(p.numel() for p in model.parameters()) > BIG
    assert big == (name in LARGEST_TORCHVISION), f"{name}: LARGEST_TORCHVISION lists the models over {BIG:,} parameters"
    # float64 for a tight tolerance, except where memory does not allow it, or where grouped convolutions
    # take a per-group loop in float64 on the CPU (minutes for efficientnet_v2_m); tests/test_surgery.py
    # proves grouped and depthwise folds exact in float64
    grouped = any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    dtype = torch.float32 if big or grouped else torch.float64
    original = materialize(model, dtype, lean_above=LEAN_ABOVE if name in LEAN else None)
    # the edit works on a twin that shares every tensor (one copy of vit_h_14 in memory, not two);
    # adapt_input_channels gives the folded layer a new weight, the original keeps its own
    twin = copy.deepcopy(original, {id(t): t for t in (*original.parameters(), *original.buffers())})
    folded = adapt_input_channels(twin, 1, inplace=True).model
    size = _size(name)
    grey = torch.randn(1, 1, size, size, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = original(grey.expand(1, 3, size, size))
        got = folded(grey)
    if isinstance(want, tuple):  # googlenet / inception in training layout
        want, got = want[0], got[0]
    scale = want.abs().max().item()
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    assert (got - want).abs().max().item() <= rtol * scale

    rep = check_surgery(original, folded, (1, size, size))
    statuses = {p.name: p.status for p in rep.params}
    folded_names = [n for n, s in statuses.items() if s == ParamChange.FOLDED]
    assert len(folded_names) == 1 and folded_names[0].endswith("weight")
    assert all(s == ParamChange.KEPT for n, s in statuses.items() if n not in folded_names)
    assert rep.invalid == []
    assert original.get_parameter(folded_names[0]).shape[1] == 3  # the original's input layer is untouched


def test_the_detection_finetuning_tutorial_edit_is_checked_parameter_by_parameter() -> None:
    """torchvision's object detection finetuning tutorial: a Mask R-CNN gets a new box and mask predictor for 2
    classes, its backbone's first layers frozen (what trainable_backbone_layers=3 does). check_surgery raised the
    model's TraceError; now every parameter is compared, the totals are exact, and the backbone's shapes are the
    ones a real forward gives at the size the model resizes the images to."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    torch.manual_seed(0)
    original = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    for name, p in original.backbone.body.named_parameters():  # as torchvision's _resnet_fpn_extractor does
        p.requires_grad_(name.startswith(("layer2", "layer3", "layer4")))
    edited = copy.deepcopy(original)
    edited.roi_heads.box_predictor = FastRCNNPredictor(edited.roi_heads.box_predictor.cls_score.in_features, 2)
    edited.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, 2)
    rep = check_surgery(original, edited, (3, 128, 128))

    before, after = original.state_dict(), edited.state_dict()
    for name, _ in edited.named_parameters():
        kept = name in before and before[name].shape == after[name].shape and torch.equal(before[name], after[name])
        assert (rep.status_of(name) == ParamChange.KEPT) == kept, name
    changed = {p.layer for p in rep.params if p.status != ParamChange.KEPT}
    assert changed == {
        "roi_heads.box_predictor.cls_score",
        "roi_heads.box_predictor.bbox_pred",
        "roi_heads.mask_predictor.conv5_mask",
        "roi_heads.mask_predictor.mask_fcn_logits",
    }
    (logits,) = [p for p in rep.params if p.name == "roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert "like kaiming_normal_(mode='fan_out', nonlinearity='relu')" in logits.init  # what torchvision draws
    assert rep.total_before == sum(p.numel() for p in original.parameters())
    assert rep.total_after == sum(p.numel() for p in edited.parameters())
    assert rep.frozen_after == sum(p.numel() for p in edited.parameters() if not p.requires_grad) > 0

    seen: dict[str, Any] = {}  # the oracle: a real forward of the edited model on an image list, in eval mode

    def look(_m: nn.Module, args: tuple[torch.Tensor, ...], out: dict[str, torch.Tensor]) -> None:
        seen.update(input=tuple(args[0].shape), output={k: tuple(v.shape) for k, v in out.items()})

    handle = edited.backbone.register_forward_hook(look)
    with torch.no_grad():
        (detections,) = edited([torch.rand(3, 128, 128)])
    handle.remove()
    assert detections["masks"].shape[1:] == (1, 128, 128) and set(detections["labels"].tolist()) <= {1}
    assert rep.part is not None and not rep.complete
    assert (rep.part.name, rep.part.input, rep.part.not_analysed) == ("backbone", seen["input"], ("rpn", "roi_heads"))
    assert rep.after.output_shape == seen["output"] and rep.invalid == []
    assert "NOT FULLY CHECKED: MaskRCNN's own forward cannot be traced" in str(rep)


def test_replace_head_of_ssdlite_names_the_edit_of_its_one_classifier_per_feature_map() -> None:
    """SSDLite makes each feature map's classes with its own convolution, 6 anchors x 91 classes wide, reshaped by
    the head's num_columns: replace_head(model, 5, layer=...) returned a model whose forward raised. The refusal's
    edit runs as written, and check_surgery calls exactly those layers re-initialised."""
    from torchsurgeon import SurgeryError, replace_head

    torch.manual_seed(0)
    original = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    with pytest.raises(SurgeryError, match=r"makes 546 outputs, 6 groups of the 91 classes") as info:
        replace_head(original, 5, layer="head.classification_head.module_list.0.1")
    edited = copy.deepcopy(original)
    exec(str(info.value).partition("as written: ")[2], {"model": edited, "nn": nn})
    with torch.no_grad():
        (detections,) = edited([torch.rand(3, 96, 96)])
    assert set(detections["labels"].tolist()) <= {1, 2, 3, 4}  # the oracle: a real forward, 5 classes
    rep = check_surgery(original, edited, (3, 96, 96))
    changed = {p.layer for p in rep.params if p.status != ParamChange.KEPT}
    assert changed == {f"head.classification_head.module_list.{i}.1" for i in range(6)}
    assert rep.total_after == sum(p.numel() for p in edited.parameters())
