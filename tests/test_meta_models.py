"""Models whose weights live on ``meta``: analysed without materialising anything."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

from models import LlamaDecoder, llama_7b_on_meta, on_meta
from torchsurgeon import paramcount

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

LLAMA_7B_PARAMS = 6_738_415_616  # LLaMA-7B: embeddings + 32 blocks + norm + untied head


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _all_on_meta(model: nn.Module) -> bool:
    return all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read the resident set size")
def test_llama_7b_on_meta_without_materialising_weights() -> None:
    model = llama_7b_on_meta()
    assert _all_on_meta(model)
    before = _resident_bytes()
    report = paramcount(model, (2048,))
    grown = _resident_bytes() - before
    assert grown < 512 * 2**20, f"analysis grew the process by {grown / 2**20:.0f} MiB: weights were materialised"
    assert _all_on_meta(model)
    assert report.total == report.trainable == LLAMA_7B_PARAMS
    assert report.output_shape == (1, 2048, 32000)
    assert report.input_shapes == {"ids": (1, 2048)}
    assert report.findings == () and report.opaque == {}
    assert report.bytes_by_dtype == {"float32": 4 * LLAMA_7B_PARAMS}
    dim, hidden, seq, vocab = 4096, 11008, 2048, 32000
    per_layer = seq * (4 * dim * dim + 3 * dim * hidden) + seq * seq * dim * 2
    assert report.macs == 32 * per_layer + seq * dim * vocab
    assert report.shape_fallbacks == []  # every op has a rule, the rotary tables' too


def test_small_llama_on_meta_matches_a_real_forward() -> None:
    config = {"vocab": 40, "dim": 24, "layers": 2, "heads": 3, "hidden": 40}
    real = LlamaDecoder(**config)
    with torch.device("meta"):
        meta = LlamaDecoder(**config)
    r_real, r_meta = paramcount(real, (11,), batch=3), paramcount(meta, (11,), batch=3)
    assert r_meta.to_dict()["layers"] == r_real.to_dict()["layers"]
    assert r_meta.total == sum(p.numel() for p in real.parameters())
    with torch.no_grad():
        assert r_meta.output_shape == tuple(real(torch.randint(0, 40, (3, 11))).shape)


@pytest.mark.parametrize("name", ["resnet50", "vit_b_16", "convnext_tiny", "efficientnet_b0"])
def test_torchvision_models_on_meta(name: str) -> None:
    model = on_meta(torchvision.models.get_model, name=name)
    report = paramcount(model, (1, 224, 224), batch=8)
    assert _all_on_meta(model)
    assert report.output_shape == (8, 1000)
    assert report.total == sum(p.numel() for p in model.parameters())
    assert len(report.invalid) == 1  # the RGB stem, given one channel
    assert report.macs > 0 and report.flops_uncounted == ()
