"""torchvision zoo: every classification model, three segmentation models, the detection models and their backbones.

Each model is built with its weights on ``meta`` (no download, no memory) and
analysed at its natural input size with 3 channels and with 1 channel.  The
numbers are checked against independent computations: torchvision's
published parameter counts, a real forward on ``meta`` tensors for the
output shape, and, at 1 channel, the same model with its first layer rebuilt
for 1 channel (it must run, and its parameter count must equal
``total_for_input``).  Detection models take a list of images, which torch.fx
cannot trace; their backbones are analysed instead and the models are listed
with the reason in ``tests/expected/untraceable_torchvision.txt``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models import natural_size, on_meta, tensor_shapes
from torchsurgeon import ModelReport, TraceError, analyse_graph, build_graph, paramcount
from torchsurgeon.trace import trace

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

torchvision = pytest.importorskip("torchvision")

EXPECTED = Path(__file__).parent / "expected" / "untraceable_torchvision.txt"
CLASSIFICATION = tuple(torchvision.models.list_models(module=torchvision.models))
SEGMENTATION = ("deeplabv3_resnet50", "fcn_resnet50", "lraspp_mobilenet_v3_large")
DETECTION = tuple(torchvision.models.list_models(module=torchvision.models.detection))
ZOO = CLASSIFICATION + SEGMENTATION + DETECTION + tuple(f"{name}.backbone" for name in DETECTION)
SIZE = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320}
BATCH = 2  # a real forward in training mode needs more than one value per channel in batch norms
UNPUBLISHED_COUNT = {
    "googlenet": "torchvision publishes the count without the auxiliary heads",
    "vit_h_14": "the published weights are for 518x518 inputs (a larger position embedding)",
}


@dataclass
class _Result:
    name: str
    model: nn.Module
    size: int
    rgb: ModelReport | None = None
    grey: ModelReport | None = None
    error: TraceError | None = None


_CACHE: dict[str, _Result] = {}


def _build(name: str) -> nn.Module:
    kind, _, part = name.partition(".")
    kwargs: dict[str, Any] = {"weights": None}
    if kind not in CLASSIFICATION:
        kwargs["weights_backbone"] = None
    model = on_meta(torchvision.models.get_model, name=kind, **kwargs)
    if kind in DETECTION and not part:
        model.eval()  # in training mode forward asserts that targets are given; eval shows the real obstacle
    return model.get_submodule(part) if part else model


def _result(name: str) -> _Result:
    if name not in _CACHE:
        kind = name.partition(".")[0]
        model = _build(name)
        result = _Result(name, model, SIZE.get(kind, natural_size(kind)))
        try:
            G = build_graph(trace(model))
        except TraceError as exc:
            result.error = exc
        else:
            s = result.size
            result.rgb, _ = analyse_graph(G, (3, s, s), batch=BATCH)
            result.grey, _ = analyse_graph(G, (1, s, s), batch=BATCH)
        _CACHE[name] = result
    return _CACHE[name]


def _forward(model: nn.Module, channels: int, size: int) -> Any:
    with torch.no_grad():
        return tensor_shapes(model(torch.empty(BATCH, channels, size, size, device="meta")))


def _refit_forward(model: nn.Module, names: list[str], channels: int, size: int) -> tuple[Any, int]:
    """Output shapes and parameter count of ``model`` with the named convolutions rebuilt for ``channels``.

    The convolutions are swapped in place and put back afterwards (the model is the test's own, on meta).
    """
    old = {name: model.get_submodule(name) for name in names}
    for name, conv in old.items():
        assert type(conv) is nn.Conv2d, f"{name} is a {type(conv).__name__}, expected the first Conv2d"
        new = nn.Conv2d(
            channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            conv.groups,
            conv.bias is not None,
            device="meta",
        )
        model.set_submodule(name, new)
    try:
        return _forward(model, channels, size), sum(p.numel() for p in model.parameters())
    finally:
        for name, conv in old.items():
            model.set_submodule(name, conv)


def _untraceable_lines(names: tuple[str, ...]) -> list[str]:
    lines = []
    for name in names:
        r = _result(name)
        if r.error is not None:
            lines.append(f"{name}: {str(r.error).splitlines()[0].removeprefix('torch.fx cannot trace ')}")
        elif r.rgb is not None:
            lines += [f"{name}: opaque {sub}: {why}" for sub, why in r.rgb.opaque.items()]
    return lines


@pytest.mark.parametrize("name", ZOO)
def test_torchvision_model(name: str) -> None:
    r = _result(name)
    model = r.model
    if name.partition(".")[0] in DETECTION and "." not in name:
        assert r.error is not None, "detection models were untraceable; update the expected list"
        text = str(r.error)
        assert "forward (the top-level model): TraceError: Proxy object cannot be iterated." in text
        assert any(f"/detection/{src}.py:" in text for src in ("generalized_rcnn", "ssd", "retinanet", "fcos")), text
        assert "fix: pass concrete_args" in text
        return
    assert r.error is None, str(r.error)
    assert r.rgb is not None and r.grey is not None
    unique = sum(p.numel() for p in model.parameters())
    assert r.rgb.total == r.grey.total == unique
    if name in CLASSIFICATION and name not in UNPUBLISHED_COUNT:
        published = next(iter(torchvision.models.get_model_weights(name))).meta["num_params"]
        assert r.rgb.total == published
    assert r.rgb.invalid == [] and r.rgb.total_for_input == unique
    assert not [layer.name for layer in r.rgb.layers if layer.status == "unknown"]
    # 1 channel: the first convolution is invalid; rebuilt for 1 channel the model runs (a real forward on meta)
    # with total_for_input parameters and the output shape found at 3 channels
    invalid = [layer.name for layer in r.grey.invalid]
    assert len(invalid) == 1, invalid
    output, params = _refit_forward(model, invalid, 1, r.size)
    assert r.grey.total_for_input == params < unique
    assert r.grey.output_shape == output == r.rgb.output_shape


def test_torchvision_coverage_and_untraceable_list(expected_file: Callable[[str, str], None], capsys: Any) -> None:
    results = [_result(name) for name in ZOO]
    analysed = [r for r in results if r.error is None]
    lines = _untraceable_lines(ZOO)
    untraceable = len(results) - len(analysed)
    with capsys.disabled():
        print(
            f"\ntorchvision zoo: {len(analysed)}/{len(results)} models analysed, "
            f"{untraceable} untraceable with reason ({EXPECTED.name})"
        )
    text = (
        "# torchvision models torchsurgeon cannot trace (or traces with opaque parts), with the reason.\n"
        "# Written by tests/test_zoo_torchvision.py; regenerate with pytest --overwrite-expected.\n"
        + "".join(f"{line}\n" for line in lines)
    )
    expected_file(EXPECTED.name, text)
    assert len(results) == len(CLASSIFICATION) + len(SEGMENTATION) + 2 * len(DETECTION) >= 100
    assert len(CLASSIFICATION) >= 80


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "ssd300_vgg16"])
def test_a_detection_model_names_its_backbone_and_its_exact_total(name: str) -> None:
    """A detection model's own forward hands ImageLists between its parts and filters boxes by value: the
    error gives the model's exact total and a call that analyses its backbone at what the model hands it (its
    transform resizes the images: RetinaNet's backbone gets 800 x 800 at 320 x 320, SSD300's 300 x 300; at 320 x
    320 the backbone alone was named, with shapes the model never computes, and SSD300's none)."""
    model = _build(name)
    with pytest.raises(TraceError) as info:
        paramcount(model, (3, 320, 320), batch=BATCH)
    unique = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    transform = copy.deepcopy(model.transform).to("cpu")  # the oracle: torchvision's own transform, on CPU zeros
    fed = tuple(transform([torch.zeros(3, 320, 320)] * BATCH)[0].tensors.shape)
    where = (
        "which takes this input"
        if fed == (BATCH, 3, 320, 320)
        else f"which the model's own forward hands {fed} at this input (its forward changes the input first)"
    )
    assert str(info.value).endswith(
        f"the whole model holds {unique:,} parameters (each counted once); of them {backbone:,} are in backbone "
        f"({type(model.backbone).__name__}), {where}: paramcount(model.backbone, {fed[1:]}, batch={BATCH})"
    )
    assert name == "fasterrcnn_mobilenet_v3_large_320_fpn" or fed != (BATCH, 3, 320, 320)
    r = paramcount(model.backbone, fed[1:], batch=BATCH)
    assert r.total == backbone and r.invalid == []


def test_a_qat_mobilenet_v2_names_the_fold_of_its_stem() -> None:
    """Found by a probe: the fake quantisation between QuantStub and the stem made the message say "what comes before
    it gives 1"; the fix it names is the fold, which runs as written and is exact (on the float weights)."""
    import torch.ao.quantization as tq

    from torchsurgeon import adapt_input_channels

    torch.manual_seed(0)
    model = torchvision.models.quantization.mobilenet_v2(weights=None, quantize=False)
    model.fuse_model(is_qat=True)
    model.qconfig = tq.get_default_qat_qconfig("fbgemm")
    tq.prepare_qat(model.train(), inplace=True)
    report = paramcount(model, (1, 64, 64))
    (finding,) = report.findings
    assert finding.layer == "features.0.0" and finding.fix == "fold it with adapt_input_channels(model, 1)"
    model.apply(tq.disable_fake_quant).apply(tq.disable_observer).eval().double()
    call = finding.fix.removeprefix("fold it with ")
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    grey = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited(grey), model(grey.expand(2, 3, 64, 64)), rtol=1e-10, atol=1e-12)
