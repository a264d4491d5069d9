"""Built-in rules that keep layers of other libraries whole (one row), where torch.fx would trace through them.

DETR's family (transformers): frozen batch norms (rules/layers.py), multi-scale deformable attention
(rules/pooling.py) and sine position embeddings (rules/creation.py).  Each is checked against what the layer
does: a real forward's output (shape, dtype, strides), the arithmetic of the torch layer it stands for, a call
its forward refuses, and the rows it gives when rules are disabled (traced through).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from models import assert_same_state, model_state
from test_rules import SETTINGS, _signature
from torchsurgeon import paramcount
from torchsurgeon.rules import FALLBACK, Call, disabled_rules, module_rule


def _frozen_batchnorms() -> list[type[nn.Module]]:
    """torchvision's frozen batch norm and the copy in transformers' DETR (all 14 of its copies share one forward)."""
    misc = pytest.importorskip("torchvision.ops.misc")
    detr = pytest.importorskip("transformers.models.detr.modeling_detr")
    return [misc.FrozenBatchNorm2d, detr.DetrFrozenBatchNorm2d]


class _Permuted(nn.Module):
    """Channels-last input (N, H, W, C) permuted to (N, C, H, W), normed, then ``view(n, -1)``: a real forward
    fails there, as the product of a channels-last map keeps that layout."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x.permute(0, 3, 1, 2))
        return y.view(y.shape[0], -1)


def _randomised(norm: nn.Module) -> nn.Module:
    """Statistics and affine values that are not the identity (the rule must not depend on them)."""
    generator = torch.Generator().manual_seed(0)
    for name in ("weight", "bias", "running_mean"):
        getattr(norm, name).copy_(torch.randn(getattr(norm, name).shape, generator=generator))
    norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) + 0.5)
    return norm.eval()


@pytest.mark.parametrize("index", [0, 1], ids=["torchvision", "transformers-detr"])
def test_frozen_batch_norm_is_one_row_counted_as_batch_norm(index: int) -> None:
    """DETR-family backbones (and torchvision's detection models) norm with a module whose statistics and affine
    values are buffers: 11 nodes each when traced through (DETR: 220 of 610).  Its rule makes one row: the output of
    a real forward, the FLOPs of ``nn.BatchNorm2d`` in eval mode (the same arithmetic), no MACs (FlopCounterMode
    counts none for it), and no meta fallback."""
    norm = _randomised(_frozen_batchnorms()[index](8))
    for shape in ((8, 5, 7), (8, 1, 33)):
        report = paramcount(norm, shape, batch=2)
        assert report.output_shape == tuple(norm(torch.zeros(2, *shape)).shape)
        assert len(report.layers) == 1 and report.shape_fallbacks == [] and report.macs == 0
        batch_norm = paramcount(nn.BatchNorm2d(8).eval(), shape, batch=2)
        assert report.flops == batch_norm.flops == 2 * 2 * 8 * shape[1] * shape[2]
        assert report.buffers == sum(b.numel() for b in norm.buffers()) == 32
        with disabled_rules():
            assert len(paramcount(norm, shape).layers) > 10  # traced through without its rule


@pytest.mark.parametrize("index", [0, 1], ids=["torchvision", "transformers-detr"])
def test_frozen_batch_norm_refuses_what_a_forward_refuses(index: int) -> None:
    """Another channel count fails, named at the layer with torch's own message; a channels-last input gives a
    channels-last output, so a ``.view`` after it fails where a real forward fails, and only there."""
    norm = _randomised(_frozen_batchnorms()[index](8))
    with pytest.raises(RuntimeError, match="must match"):
        norm(torch.zeros(1, 6, 5, 7))
    (wrong,) = paramcount(norm, (6, 5, 7)).invalid
    assert wrong.name == type(norm).__name__ and "broadcast" in wrong.message
    permuted = _Permuted(norm).eval()
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        permuted(torch.zeros(1, 5, 7, 8))
    assert [layer.name for layer in paramcount(permuted, (5, 7, 8)).invalid] == ["view"]
    assert paramcount(permuted, (5, 7, 8)).layers[1].name == "norm"


def _rule_of(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The built-in rule of ``module``'s class on these arguments (their tensors on meta), as propagation calls it."""
    found = module_rule(type(module))
    assert found is not None and found[0].shape is not None, type(module)
    meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
    kw = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return found[0].shape(module, meta, kw, Call("", "", False))


def _forward_or_error(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        with torch.no_grad():
            return module(*args, **kwargs)
    except Exception as exc:
        return exc


@SETTINGS
@given(
    n=st.integers(1, 2),
    heads=st.integers(1, 3),
    d=st.integers(1, 4),
    levels=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3),
    queries=st.integers(1, 5),
    points=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    wrong=st.sampled_from([None, "keys", "levels", "weights"]),
)
def test_deformable_attention_rule_matches_a_real_forward(
    n: int,
    heads: int,
    d: int,
    levels: list[tuple[int, int]],
    queries: int,
    points: int,
    dtype: torch.dtype,
    wrong: str | None,
) -> None:
    """transformers' ``MultiScaleDeformableAttention`` (ten detection models share its forward): the rule gives the
    output of a real CPU forward, shape, dtype and strides; a call its forward refuses (keys that are not the sum of
    the levels' sizes, sampling locations for another number of levels, weights of another shape) falls back."""
    attention_module = pytest.importorskip("transformers.models.deformable_detr.modeling_deformable_detr")
    attention = attention_module.MultiScaleDeformableAttention()
    keys = sum(h * w for h, w in levels) + (wrong == "keys")
    value = torch.randn(n, keys, heads, d, dtype=dtype)
    locations = torch.rand(n, queries, heads, len(levels) + (wrong == "levels"), points, 2, dtype=dtype)
    weights = torch.rand(n, queries, heads, len(levels), points + (wrong == "weights"), dtype=dtype)
    shapes = torch.tensor(levels)
    starts = torch.cat((shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]))
    args = (value, shapes, list(levels), starts, locations, weights, 64)
    out = _rule_of(attention, args, {})
    real = _forward_or_error(attention, args, {})
    if wrong is None:
        assert isinstance(real, torch.Tensor) and out is not FALLBACK
        assert _signature(out) == _signature(real) and real.shape == (n, queries, heads * d)
    else:
        assert out is FALLBACK


def test_deformable_attention_is_one_row_each() -> None:
    """Deformable DETR's encoder and decoder sample with it: one row each (67 nodes each, traced through)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.DeformableDetrConfig(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=8,
        use_timm_backbone=True,
        backbone="resnet18",
        use_pretrained_backbone=False,
    )
    model = transformers.DeformableDetrModel(config).eval()
    before = model_state(model)
    report = paramcount(model, (3, 128, 128))
    assert_same_state(before, model_state(model))  # its layers kept whole, the model left as found
    assert report.shape_fallbacks == []
    kinds = [layer.type for layer in report.layers]
    assert kinds.count("MultiScaleDeformableAttention") == 2
    assert kinds.count("DeformableDetrSinePositionEmbedding") >= 1
    assert kinds.count("DeformableDetrFrozenBatchNorm2d") == 20
    assert report.total == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        real = model(torch.zeros(1, 3, 128, 128))
    assert report.output_shape["last_hidden_state"] == tuple(real.last_hidden_state.shape)


def _sine_embeddings() -> list[type[nn.Module]]:
    """DETR's sine position embedding and Deformable DETR's (its positions start at 0.5)."""
    detr = pytest.importorskip("transformers.models.detr.modeling_detr")
    deformable = pytest.importorskip("transformers.models.deformable_detr.modeling_deformable_detr")
    return [detr.DetrSinePositionEmbedding, deformable.DeformableDetrSinePositionEmbedding]


@SETTINGS
@given(
    index=st.integers(0, 1),
    features=st.integers(1, 6),
    normalize=st.booleans(),
    size=st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
    masked=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_sine_position_embedding_rule_matches_a_real_forward(
    index: int,
    features: int,
    normalize: bool,
    size: tuple[int, int, int, int],
    masked: bool,
    dtype: torch.dtype,
) -> None:
    """(N, 2F, H, W) in the given dtype, with the channels-last strides of the map it permutes, from the size or
    from the mask; an odd feature count, which its ``torch.stack`` refuses, falls back."""
    embedding = _sine_embeddings()[index](features, normalize=normalize)
    n, _, h, w = size
    mask = torch.ones(n, h + 1, w, dtype=torch.bool) if masked else None  # a mask decides the size, not ``shape``
    kwargs = {"shape": torch.Size(size), "device": torch.device("cpu"), "dtype": dtype, "mask": mask}
    out = _rule_of(embedding, (), kwargs)
    real = _forward_or_error(embedding, (), kwargs)
    if features % 2:
        assert out is FALLBACK and isinstance(real, RuntimeError)
        return
    assert isinstance(real, torch.Tensor) and out is not FALLBACK
    assert _signature(out) == _signature(real) and out.stride() == real.stride()
    assert real.shape == (n, 2 * features, h + masked, w)
