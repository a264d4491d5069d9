"""The input a model takes, named in the fix of findings caused by the input's size; each answer is checked
against the real model: a forward at the input named runs, and one a size smaller fails."""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from models import assert_same_state, model_state
from torchsurgeon import paramcount
from torchsurgeon.errors import ShapeError
from torchsurgeon.graph import build_graph
from torchsurgeon.shapes import propagate_shapes
from torchsurgeon.trace import trace


class _UNet(nn.Module):
    """Four max-pools down, four transposed convolutions up, each concatenated with its skip: the sizes
    must be multiples of 16 (an odd size on the way down is one pixel short on the way up)."""

    def __init__(self, width: int = 4, depth: int = 4) -> None:
        super().__init__()
        self.inc = nn.Conv2d(3, width, 3, padding=1)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(width * 2**i, width * 2 ** (i + 1), 3, padding=1))
            for i in range(depth)
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(width * 2 ** (i + 1), width * 2**i, 2, stride=2) for i in reversed(range(depth))
        )
        self.convs = nn.ModuleList(
            nn.Conv2d(width * 2 ** (i + 1), width * 2**i, 3, padding=1) for i in reversed(range(depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inc(x)
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up, conv in zip(self.ups, self.convs):
            x = conv(torch.cat([up(x), skips.pop()], dim=1))
        return x


class _VideoStem(nn.Module):
    """A Conv3d stem over (frames, height, width), a temporal pool and a Conv3d: 8 frames at least."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 8, (3, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3))
        self.pool = nn.MaxPool3d(2)
        self.conv = nn.Conv3d(8, 16, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.pool(self.stem(x))))


def _named_inputs(fix: str) -> list[Any]:
    """The inputs of the ``paramcount(model, ...)`` calls a fix names, read back as Python values (not those of a
    call with other arguments: ``concrete_args=``, which makes the model take the input given)."""
    return [ast.literal_eval(text) for text in re.findall(r"paramcount\(model, ([^=]+?)\)(?: or |;|$)", fix)]


def _runs(model: nn.Module, shape: tuple[int, ...], batch: int = 1) -> bool:
    try:
        with torch.no_grad():
            model(torch.zeros(batch, *shape))
    except (RuntimeError, AssertionError):  # AssertionError: torch._assert in a forward
        return False
    return True


def _smaller(shape: tuple[int, ...], dim: int, by: int = 1) -> tuple[int, ...]:
    return (*shape[:dim], shape[dim] - by, *shape[dim + 1 :])


def test_a_classifier_too_small_for_its_pools_is_told_the_smallest_input_it_takes() -> None:
    model = torchvision.models.squeezenet1_1(weights=None).eval()
    r = paramcount(model, (3, 16, 16))
    assert not _runs(model, (3, 16, 16))
    assert r.findings and all("the smallest input it takes is (3, 17, 17)" in f.fix for f in r.findings)
    assert r.findings[0].message.startswith("features.8 (MaxPool2d) expects spatial size (dim 0) >= 2, got 1")
    ((shape),) = _named_inputs(r.findings[0].fix)
    assert shape == (3, 17, 17) and _runs(model, shape)
    assert not _runs(model, _smaller(shape, 1)) and not _runs(model, _smaller(shape, 2))
    assert paramcount(model, shape).invalid == []
    assert "paramcount(model, (3, 17, 17))" in r.layer("features.8").message  # the row's message too


def test_a_head_taking_a_window_of_sizes_is_told_the_smallest_input_it_takes() -> None:
    """Found by probing Cadene's pretrainedmodels' inceptionv3 at 224 × 224: its ``avg_pool2d(x, kernel_size=8)`` got
    5 × 5, and the fix named no input: the search tried 256 (6 × 6, still too small), then 1024 (a 3 × 3 pool, 9
    times the features its Linear takes).  Only a window of sizes fits; the pool's ratio (8 / 5) points into it."""
    model = nn.Sequential(nn.Conv2d(3, 4, 75, stride=32), nn.AvgPool2d(8), nn.Flatten(), nn.Linear(4, 10)).eval()
    fixes = {f.fix for f in paramcount(model, (3, 224, 224)).findings}
    assert fixes == {
        "use a larger input, or less downsampling before this layer; the smallest input it takes is (3, 299, 299): "
        "paramcount(model, (3, 299, 299))"
    }
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 299, 299)).shape == (1, 10)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, 298, 298))


def test_resnet18_takes_any_size_in_eval_mode_so_nothing_is_named() -> None:
    model = torchvision.models.resnet18(weights=None).eval()  # padded stride-2 layers give 1 pixel of 1
    assert paramcount(model, (3, 1, 1)).findings == () and _runs(model, (3, 1, 1))


def test_a_unet_at_an_odd_size_is_told_the_multiples_of_16_on_either_side() -> None:
    model = _UNet().eval()
    r = paramcount(model, (3, 100, 100))
    assert not _runs(model, (3, 100, 100))
    (finding,) = r.findings
    assert finding.layer.startswith("cat") and "Sizes of tensors must match" in finding.fix  # torch's words kept
    assert "it takes (3, 96, 96) and (3, 112, 112), the multiples of 16 on either side of this size" in finding.fix
    below, above = _named_inputs(finding.fix)
    assert (below, above) == ((3, 96, 96), (3, 112, 112))
    for shape in (below, above):
        assert _runs(model, shape)
        assert not _runs(model, _smaller(shape, 1)) and not _runs(model, _smaller(shape, 2))


def test_a_pixel_unshuffle_at_an_odd_height_is_told_the_even_heights_around_it() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.PixelUnshuffle(2), nn.Conv2d(16, 4, 1))
    r = paramcount(model, (3, 15, 16))
    assert not _runs(model, (3, 15, 16))
    (finding,) = r.findings
    assert finding.fix.startswith("use an input whose height and width, where this layer reads them, are multiples")
    below, above = _named_inputs(finding.fix)
    assert (below, above) == ((3, 14, 16), (3, 16, 16))  # the width fits already: kept
    assert _runs(model, below) and _runs(model, above) and not _runs(model, (3, 13, 16))


def test_a_video_stem_given_too_few_frames_is_told_how_many_it_takes_at_its_height_and_width() -> None:
    model = _VideoStem().eval()
    r = paramcount(model, (3, 2, 64, 64))
    assert not _runs(model, (3, 2, 64, 64))
    assert [f.layer for f in r.findings] == ["stem", "pool", "conv"]
    fix = "the smallest input it takes at this size or larger is (3, 8, 64, 64): paramcount(model, (3, 8, 64, 64))"
    assert all(f.fix.endswith(fix) for f in r.findings)
    ((shape),) = _named_inputs(r.findings[0].fix)
    assert _runs(model, shape) and not _runs(model, _smaller(shape, 1))


def test_the_answer_keeps_the_form_of_the_input_named_inputs_and_the_batch() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image, self.mask = nn.Conv2d(3, 4, 5), nn.Conv2d(1, 4, 5)

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.image(image) + self.mask(mask)

    model = Masked()
    r = paramcount(model, {"image": (3, 3, 3), "mask": (1, 3, 3)}, batch=2)
    call = "paramcount(model, {'image': (3, 5, 5), 'mask': (1, 5, 5)}, batch=2)"
    assert r.findings and all(f.fix.endswith(f"is image=(3, 5, 5), mask=(1, 5, 5): {call}") for f in r.findings)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 5, 5), torch.zeros(2, 1, 5, 5)).shape == (2, 4, 1, 1)
        with pytest.raises(RuntimeError):
            model(torch.zeros(2, 3, 4, 5), torch.zeros(2, 1, 4, 5))


def test_other_findings_are_kept_and_said_and_a_size_that_cannot_fix_keeps_the_fix() -> None:
    grey = paramcount(torchvision.models.squeezenet1_1(weights=None), (1, 16, 16))
    assert grey.findings[0].what == "in_channels"  # the channels' own fix, untouched
    assert "(1, 17, 17) once its other findings are fixed: paramcount(model, (1, 17, 17))" in grey.findings[1].fix
    # a size no search reaches keeps the fix it had
    odd = paramcount(nn.Sequential(nn.Conv2d(3, 6, 5), nn.Flatten(), nn.Linear(7, 10)), (3, 4, 4))
    assert odd.findings[0].fix == "use a larger input, or less downsampling before this layer"
    from torchsurgeon.inputsize import name_fitting_input  # here: the other tests run on versions without it

    G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 4, 3))))
    shapes = propagate_shapes(G, (1, 8, 8))  # no size-caused finding: returned as it is, nothing propagated
    assert name_fitting_input(G, (1, 8, 8), 1, shapes) is shapes


@pytest.mark.parametrize(
    "given",
    [(3, 64, 64), (3, 100, 100), (3, 64, 32), (3, 4, 4), (1, 64, 64)],
    ids=["twice", "larger", "not-square", "too-small-for-the-conv", "grey"],
)
def test_a_linear_after_flatten_is_told_the_one_size_it_takes_even_below_the_given_one(given: tuple[int, ...]) -> None:
    """Found by a probe: a Linear after a flatten (a LeNet, a small classifier built for 32 × 32) given another size
    was told to change what comes before it or replace the layer, never the size it was built for; the search went
    upwards only. Each named input now runs, where the given one does not."""
    model = nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 14 * 14, 10)
    ).eval()  # built for (3, 32, 32)
    r = paramcount(model, given)
    assert not _runs(model, given)
    (linear,) = [f for f in r.findings if f.layer == "4"]
    assert linear.what == "in_features" and "an input it takes is" in linear.fix
    ((shape),) = _named_inputs(linear.fix)
    assert shape[0] == given[0] and shape != given
    fixed = model if given[0] == 3 else nn.Sequential(nn.Conv2d(1, 6, 5), *list(model)[1:]).eval()
    assert _runs(fixed, shape)  # the grey input once its stem takes one channel (its own finding says how)
    if given[0] == 3:
        assert paramcount(model, shape).invalid == []


class _Positions(nn.Module):
    """Token and learned position embeddings: 16 positions, so 16 tokens at most."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos, self.fc = nn.Embedding(100, 8), nn.Embedding(16, 8), nn.Linear(8, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.tok(ids) + self.pos(torch.arange(ids.shape[1])))


class _Patches(nn.Module):
    """8 × 8 patches plus a learned position for each of 16: built for 32 × 32 images only."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.pos, self.fc = (
            nn.Conv2d(3, 8, 8, stride=8),
            nn.Parameter(torch.zeros(1, 16, 8)),
            nn.Linear(8, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.proj(x).flatten(2).transpose(1, 2) + self.pos)


@pytest.mark.parametrize(
    ("model", "given", "named"),
    [
        (_Positions(), (20,), (16,)),
        (_Positions(), (1000,), (16,)),
        (_Patches(), (3, 64, 64), (3, 32, 32)),
        (_Patches(), (3, 48, 40), (3, 32, 32)),
    ],
    ids=["tokens-past-positions", "far-past-positions", "twice-the-image", "not-square"],
)
def test_a_model_built_for_one_size_or_at_most_one_is_told_a_smaller_input_that_runs(
    model: nn.Module, given: tuple[int, ...], named: tuple[int, ...]
) -> None:
    """Found by a probe: more tokens than positions, or an image larger than the positions a patch model has, got
    "give an input the model was built for" or torch's broadcast words, naming none; the search went upwards only.
    The input named now runs in a real forward, where the given one raises."""
    model.eval()

    def runs(shape: tuple[int, ...]) -> bool:
        x = torch.zeros(1, *shape, dtype=torch.long) if len(shape) == 1 else torch.zeros(1, *shape)
        try:
            with torch.no_grad():
                model(x)
        except (RuntimeError, IndexError):
            return False
        return True

    r = paramcount(model, given)
    assert not runs(given) and r.findings
    assert all("an input it takes is" in f.fix for f in r.findings)
    ((shape),) = _named_inputs(r.findings[0].fix)
    assert shape == named and runs(shape) and paramcount(model, shape).invalid == []


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_a_graph_traced_for_its_shapes_only_is_searched_by_tracing_again() -> None:
    """Found by probes: transformers' ViT given another image size and GPT-2 given more tokens than its positions
    (forward's Python asks about the shapes, so the graph holds for the given input only) named no input; each try
    of the search now traces the model again (at most MAX_RETRACES), and the input named runs."""
    transformers = pytest.importorskip("transformers")
    vit = transformers.ViTModel(
        transformers.ViTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    with pytest.raises(ValueError, match="doesn't match model"):
        vit(torch.zeros(1, 3, 48, 40))
    before = model_state(vit)
    (named,) = {shape for f in paramcount(vit, (3, 48, 40)).findings for shape in _named_inputs(f.fix)}
    assert_same_state(before, model_state(vit))  # the traces the search made left the model as found
    assert named == (3, 32, 32) and vit(torch.zeros(1, *named)).last_hidden_state.shape == (1, 17, 16)
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=24)).eval()
    with pytest.raises(IndexError):
        gpt2(input_ids=torch.zeros(1, 30, dtype=torch.long))
    (named,) = {str(shape) for f in paramcount(gpt2, {"input_ids": (30,)}).findings for shape in _named_inputs(f.fix)}
    assert named == "{'input_ids': (24,)}"
    assert gpt2(input_ids=torch.zeros(1, 24, dtype=torch.long)).last_hidden_state.shape == (1, 24, 16)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "given", "named"),
    [
        ("FPN", (3, 90, 90), [(3, 64, 64), (3, 96, 96)]),
        ("DeepLabV3Plus", (3, 90, 90), [(3, 80, 80), (3, 96, 96)]),
        ("FPN", (3, 90, 120), [(3, 64, 96), (3, 96, 128)]),
    ],
)
def test_a_model_whose_own_check_refuses_the_size_is_told_the_sizes_it_runs_on(
    arch: str, given: tuple[int, ...], named: list[tuple[int, ...]]
) -> None:
    """Found by a user: segmentation_models_pytorch models check in forward that the height and width divide by
    their output stride, and raise with their own message; no trace gets past it, and paramcount's ShapeError
    quoted smp without naming an input, where other models are told one.  The sizes named now run in a real
    forward (one pixel less does not), as the given one does not, and paramcount takes them."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = getattr(smp, arch)(encoder_name="resnet18", encoder_weights=None, classes=2).eval()
    assert not _runs(model, given)
    with pytest.raises(ShapeError, match="divisible by") as info:
        paramcount(model, given)
    fix = str(info.value).split("fix: ", 1)[1]
    assert _named_inputs(fix) == named
    for shape in named:
        assert _runs(model, shape) and not _runs(model, _smaller(shape, 1)) and not _runs(model, _smaller(shape, 2))
        assert paramcount(model, shape).output_shape == (1, 2, *shape[1:])


@pytest.mark.slow
def test_the_search_budget_is_cpu_time_so_a_busy_machine_gets_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each try here waits 0.2 s without computing, as a try does on a machine busy with other work: a budget of
    wall time (0.3 s) would stop the search after two tries and name nothing; CPU time names the sizes."""
    import time

    import torchsurgeon.inputsize
    from torchsurgeon.inputsize import name_running_input

    monkeypatch.setattr(torchsurgeon.inputsize, "RETRACE_SECONDS", 0.3)
    tries: list[dict[str, Any]] = []

    def runs(spec: dict[str, Any]) -> bool:  # a model whose forward asks for sizes divisible by 32
        tries.append(spec)
        time.sleep(0.2)
        return all(s % 32 == 0 for s in spec["x"][1:])

    found = name_running_input((3, 250, 250), ["x"], 1, runs)
    assert len(tries) > 2
    assert "paramcount(model, (3, 224, 224)) or paramcount(model, (3, 256, 256))" in found


class _CheckedViT(nn.Module):
    """A ViT as timm and torchvision write theirs: the patch embedding asserts the image size it was built for, and a
    position table of one row per patch of that size (plus a class token) is added to the tokens."""

    def __init__(self, size: tuple[int, int] = (32, 48), patch: int = 8, dim: int = 8) -> None:
        super().__init__()
        self.size, self.patch = size, patch
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + (size[0] // patch) * (size[1] // patch), dim))
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        torch._assert(h == self.size[0], f"Input height ({h}) doesn't match model ({self.size[0]}).")
        torch._assert(w == self.size[1], f"Input width ({w}) doesn't match model ({self.size[1]}).")
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1) + self.pos
        return self.head(tokens[:, 0])


class _ResizableViT(_CheckedViT):
    """With timm's call to take another size: the table resampled, the check moved."""

    def set_input_size(self, img_size: tuple[int, int]) -> None:
        grid = (self.size[0] // self.patch, self.size[1] // self.patch)
        table = self.pos.data[:, 1:].reshape(1, *grid, -1).permute(0, 3, 1, 2)
        new = (img_size[0] // self.patch, img_size[1] // self.patch)
        table = nn.functional.interpolate(table, size=new, mode="bicubic").permute(0, 2, 3, 1).flatten(1, 2)
        self.pos = nn.Parameter(torch.cat([self.pos.data[:, :1], table], 1))
        self.size = img_size


def test_a_vit_checking_its_size_is_told_that_size_and_its_own_call_to_take_the_given_one() -> None:
    """Found by a probe: timm's and torchvision's ViTs at 320×320 (fine-tuning at a higher resolution) were reported
    with their asserts and a position-table broadcast as invalid, and no fix: no size was named (only one size fits,
    which the search's halving never tries), and timm's own ``set_input_size`` was not offered. The size forward
    compares the input's own to is tried first; a model with ``set_input_size`` is told to run it, once it ran on a
    meta copy."""
    r = paramcount(_CheckedViT().eval(), (3, 40, 40))  # no call of its own: the size only
    assert r.findings
    assert all(_named_inputs(f.fix) == [(3, 32, 48)] and "set_input_size" not in f.fix for f in r.findings)

    model = _ResizableViT().eval()
    assert not _runs(model, (3, 40, 40)) and _runs(model, (3, 32, 48))
    before = model_state(model)
    r = paramcount(model, (3, 40, 40))
    assert_same_state(before, model_state(model))
    assert r.findings and all(_named_inputs(f.fix) == [(3, 32, 48)] for f in r.findings)
    own = "first run the model's own resize (its position tables resampled): model.set_input_size(img_size=(40, 40))"
    assert all(f.fix.endswith(own) for f in r.findings)
    model.set_input_size(img_size=(40, 40))  # the fix, as written
    assert paramcount(model, (3, 40, 40)).invalid == [] and _runs(model, (3, 40, 40))

    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, depth=1).eval()
    assert not _runs(vit, (3, 320, 320))
    r = paramcount(vit, (3, 320, 320))
    assert {f.layer for f in r.findings} == {"_assert", "_assert_1", "add"}
    assert all(_named_inputs(f.fix) == [(3, 224, 224)] for f in r.findings)
    assert all(f.fix.endswith("model.set_input_size(img_size=(320, 320))") for f in r.findings)
    vit.set_input_size(img_size=(320, 320))
    with torch.no_grad():
        assert paramcount(vit, (3, 320, 320)).output_shape == tuple(vit(torch.zeros(1, 3, 320, 320)).shape)


def test_a_tower_whose_own_resize_takes_image_size_is_told_to_run_it() -> None:
    """Found by a probe: open_clip's image towers built on timm (``TimmModel``: SigLIP, PE, MobileCLIP) take another
    size with ``set_input_size(image_size=...)``, which passes it on to the timm trunk; only ``img_size=`` was looked
    for, so ViT-B-16-SigLIP's visual at 320×320 was told the 224×224 it takes and not its own call for 320."""

    class Tower(nn.Module):  # open_clip.timm_model.TimmModel's shape: a trunk and set_input_size(image_size)
        def __init__(self) -> None:
            super().__init__()
            self.trunk = _ResizableViT()

        def set_input_size(self, image_size: tuple[int, int]) -> None:
            self.trunk.set_input_size(image_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.trunk(x)

    model = Tower().eval()
    assert not _runs(model, (3, 40, 40))
    r = paramcount(model, (3, 40, 40))
    own = "first run the model's own resize (its position tables resampled): model.set_input_size(image_size=(40, 40))"
    assert r.findings and all(f.fix.endswith(own) for f in r.findings)
    model.set_input_size(image_size=(40, 40))  # the fix, as written
    assert paramcount(model, (3, 40, 40)).invalid == [] and _runs(model, (3, 40, 40))


class _UncheckedViT(nn.Module):
    """open_clip's VisionTransformer (and its ModifiedResNet's attention pool): no check of the image size, only a
    position table of 1 + grid × grid rows added to the tokens, so only sizes giving that grid run."""

    def __init__(self, size: int = 24, patch: int = 8, dim: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, dim, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(dim))
        self.positional_embedding = nn.Parameter(torch.randn(1 + (size // patch) ** 2, dim))
        self.proj = nn.Parameter(torch.randn(dim, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        return x[:, 0] @ self.proj


def test_a_position_table_without_a_size_check_is_told_the_size_it_was_built_for() -> None:
    """Found by a probe: open_clip's ViT-B-32 and RN50 image towers at 320×320 were reported with the position
    table's broadcast as invalid and torch's error as the only fix: with no size check to read, the search tried
    powers of two and 5/4, 3/2, 7/4 of them, and the one size that fits (224: 7 × 32) is none of them. The sizes
    scaled by the ratio of the table's rows to the tokens are tried now."""
    model = _UncheckedViT().eval()
    assert not _runs(model, (3, 40, 40)) and _runs(model, (3, 24, 24))
    r = paramcount(model, (3, 40, 40))
    assert [f.layer for f in r.findings] == ["add"]
    assert _named_inputs(r.findings[0].fix) == [(3, 24, 24)]
    assert paramcount(model, (3, 24, 24)).invalid == []  # the fix, as written


_RECIPE = "first build it at this size with torchvision's recipe (its position table resampled): "


def test_a_torchvision_vit_at_another_size_is_told_torchvisions_recipe_which_runs_as_written() -> None:
    """Found by a probe: torchvision's ``vit_b_16`` at 320×320 (fine-tuning at a higher resolution) was told only
    the 224×224 it takes; torchvision's way to take 320 (the model built at that size, loaded with
    ``interpolate_embeddings``) was not named. Now it is, with the model's own settings and its replaced head's
    classes; the statements run as written, keep every weight but the position table, which is what torchvision's
    own function makes of it, and the model they build analyses and runs at the size given."""
    from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=24)
    model.heads.head = nn.Linear(16, 5)  # a head replaced for 5 classes: the recipe keeps it
    model.eval()
    assert not _runs(model, (3, 48, 48))
    before = model_state(model)
    r = paramcount(model, (3, 48, 48))
    assert_same_state(before, model_state(model))
    assert r.findings and all(_named_inputs(f.fix)[0] == (3, 32, 32) for f in r.findings)
    assert all(_RECIPE in f.fix for f in r.findings)
    statements = r.findings[0].fix.partition(_RECIPE)[2]
    *run, analyse = statements.split("; ")
    assert analyse == "paramcount(resized, (3, 48, 48))"
    scope: dict[str, Any] = {"model": model, "paramcount": paramcount}
    exec("; ".join(run), scope)  # the fix, as written
    resized = scope["resized"].eval()
    old, new = model.state_dict(), resized.state_dict()
    assert old.keys() == new.keys()
    assert all(torch.equal(old[k], new[k]) for k in old if k != "encoder.pos_embedding")
    expected = interpolate_embeddings(48, 8, model.state_dict())["encoder.pos_embedding"]
    assert new["encoder.pos_embedding"].shape == (1, 37, 16) and torch.equal(new["encoder.pos_embedding"], expected)
    after = eval(analyse, scope)
    assert after.invalid == [] and after.total == sum(p.numel() for p in resized.parameters())
    with torch.no_grad():
        assert after.output_shape == tuple(resized(torch.zeros(1, 3, 48, 48)).shape) == (1, 5)

    # a size the recipe cannot build (not square: torchvision's ViT takes square images only): the size alone
    r = paramcount(model, (3, 48, 40))
    assert r.findings and not any(_RECIPE in f.fix for f in r.findings)


@pytest.mark.slow  # over 0.6 s in make check (make test runs it): builds two transformers models
def test_a_transformers_vit_at_another_size_is_told_to_interpolate_its_position_table() -> None:
    """Found by a probe: transformers' ViT at 320×320 (built for 224) was told "Input image size (320*320) doesn't
    match model (224*224)." and nothing else: its check sits in the embeddings, a layer the trace keeps whole at this
    size, so no size was found either. transformers resamples the position table in forward when asked; the fix
    names that argument in a call that runs as written, and that call analyses the model at 320 × 320, as a real
    forward with the argument runs it."""
    transformers = pytest.importorskip("transformers")
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
    for model in (
        transformers.ViTForImageClassification(transformers.ViTConfig(**small)).eval(),
        transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**small)).eval(),
    ):
        before = model_state(model)
        r = paramcount(model, (3, 320, 320))
        assert_same_state(before, model_state(model))
        call = "paramcount(model, (3, 320, 320), concrete_args={'interpolate_pos_encoding': True})"
        assert r.findings and r.findings[0].fix.endswith(
            f"interpolate_pos_encoding=True to its forward {_RESAMPLED}{call}"
        )
        after = eval(call, {"paramcount": paramcount, "model": model})
        with torch.no_grad():
            real = model(torch.zeros(1, 3, 320, 320), interpolate_pos_encoding=True)
        assert after.invalid == [] and str(after.crosscheck.trust) != "untrusted"
        assert after.output_shape[next(iter(after.output_shape))] == tuple(real[0].shape)


_RESAMPLED = "(its position table resampled), as "


class _SizeCheckedPooled(nn.Module):
    """smp's models in training mode, as they are built: the forward checks that the size divides by 32, and a
    batch norm after a global pooling (a PSP or FPA branch) averages one value per channel at batch 1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise RuntimeError("input size must be divisible by 32")
        y = self.stem(x)
        return y + self.pooled(y)


def test_a_training_model_whose_check_refuses_the_size_at_batch_1_is_told_the_sizes_it_runs_on() -> None:
    """Found by the smp probe: smp.UPerNet(...) as built (training mode) at (3, 100, 100), its size check refusing,
    gave the fix "give an input the model accepts" and no size: each size tried ran at batch 1, where the pooled
    branch's batch norm raises at every size.  The sizes its check accepts are named; at them the report says the
    batch is too small."""
    model = _SizeCheckedPooled()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(torch.zeros(1, 3, 96, 96))
    with pytest.raises(ShapeError, match="divisible by 32") as info:
        paramcount(model, (3, 100, 100))
    assert "paramcount(model, (3, 96, 96)) or paramcount(model, (3, 128, 128))" in str(info.value)
    model(torch.zeros(2, 3, 96, 96))  # the size runs at batch 2, and its report says so at batch 1
    report = paramcount(model, (3, 96, 96))
    assert [layer.name for layer in report.batch_too_small] == ["pooled.2"]
    assert model.training


def test_sizes_past_the_next_multiple_are_not_called_rounded_up() -> None:
    """Found by the smp probe: smp.PAN checks that the size divides by 16 and its pyramid pooling needs 128; at
    (3, 100, 100) (and at (3, 64, 64), already a multiple of 16) the fix said "it takes (3, 128, 128), its sizes
    rounded up to a multiple of 16", where 100 rounded up is 112, which fails.  It says what it showed now."""
    from torchsurgeon.inputsize import name_running_input

    def runs(spec: dict[str, Any]) -> bool:  # multiples of 16, from 128 up
        return all(s % 16 == 0 and s >= 128 for s in spec["x"][1:])

    for given in ((3, 100, 100), (3, 64, 64)):
        found = name_running_input(given, ["x"], 1, runs)
        assert "rounded up" not in found
        assert "it takes (3, 128, 128), multiples of 16 past this size (16 less fails)" in found
        assert runs({"x": (3, 128, 128)}) and not runs({"x": (3, 112, 128)}) and not runs({"x": (3, 128, 112)})
    found = name_running_input(
        (3, 100, 100), ["x"], 1, lambda spec: all(s % 16 == 0 and s >= 112 for s in spec["x"][1:])
    )
    assert "it takes (3, 112, 112), its sizes rounded up to a multiple of 16" in found  # where it is so


def test_an_open_clip_vit_at_another_size_is_told_open_clips_own_resample_which_runs_as_written() -> None:
    """Found by a probe: open_clip's ViT image towers have no ``set_input_size``; at 320×320 they were told only the
    224×224 they take. open_clip's way to take another size is ``resize_pos_embed``, which ``create_model(...,
    force_image_size=...)`` runs on the weights it loads; the fix now names it as statements that run on the tower."""
    transformer = pytest.importorskip("open_clip.transformer")
    torch.manual_seed(0)
    model = transformer.VisionTransformer(
        image_size=32, patch_size=8, width=16, layers=1, heads=2, mlp_ratio=2.0, output_dim=8
    ).eval()
    assert not _runs(model, (3, 48, 48))
    before = model_state(model)
    r = paramcount(model, (3, 48, 48))
    assert_same_state(before, model_state(model))
    assert r.findings and all(_named_inputs(f.fix) == [(3, 32, 32)] for f in r.findings)
    statements = r.findings[0].fix.split("does to the weights it loads): ")[1]
    assert statements.startswith("from open_clip.model import resize_pos_embed; model.grid_size = (6, 6)")
    table = model.positional_embedding.detach().clone()
    exec(statements, {"model": model, "nn": nn})  # the fix, as written
    assert model.positional_embedding.shape == (1 + 6 * 6, 16)
    assert torch.equal(model.positional_embedding[0], table[0])  # the class token's row kept
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 48, 48))
    after = paramcount(model, (3, 48, 48))
    assert after.invalid == [] and after.output_shape == tuple(out.shape)


class Spectrogram(nn.Module):
    """A (time, mel bins) input patched by a Conv2d after a transpose, as transformers' AST does: its first dim is
    time, not channels; a position table of one row per patch of 32 time steps."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, 4, kernel_size=16, stride=10)
        self.pos = nn.Parameter(torch.zeros(1, 2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.proj(x.unsqueeze(1).transpose(2, 3)).flatten(2).transpose(1, 2)
        return patches + self.pos


@pytest.mark.parametrize("time", [48, 64])
def test_a_spectrograms_time_steps_are_searched_for_an_input_it_takes(time: int) -> None:
    """Found by a probe: transformers' AST given 48 time steps (built for 32) was told torch's broadcast error and no
    fix; the search varied the mel bins only, taking the first dim for channels. It varies the time steps then."""
    model = Spectrogram()
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, time, 16))  # the real model refuses it
    r = paramcount(model, (time, 16))
    (finding,) = r.findings
    found = re.search(r"an input it takes is (\(\d+, \d+\)): paramcount\(model, \1\)", finding.fix)
    assert found is not None, finding.fix
    sizes = ast.literal_eval(found.group(1))
    assert sizes[1] == 16 and model(torch.zeros(1, *sizes)).shape == (1, 2, 4)  # the input named runs


class _PoolTwice(nn.Module):
    """One pool read twice: each branch too small for it alike."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) + self.pool(x.flip(-1))


def test_a_layer_called_twice_is_told_the_input_once() -> None:
    """A finding is listed once however many calls find it; naming the input that fits listed it again per call."""
    findings = paramcount(_PoolTwice(), (3, 2, 2)).findings
    assert [(f.layer, f.what) for f in findings] == [("pool", "spatial size (dim 0)"), ("pool", "spatial size (dim 1)")]
    assert all(
        f.fix.endswith("the smallest input it takes is (3, 4, 4): paramcount(model, (3, 4, 4))") for f in findings
    )
