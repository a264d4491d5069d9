"""Hugging Face transformers zoo: architectures built the way their users build them.

Each model is ``AutoModel`` (or ``AutoModelForXxx``) ``.from_config`` of a
tiny configuration (no weights are downloaded) and analysed with
``paramcount(model, input)`` exactly as documented, without any wrapper.
Independent checks: ``total`` is the unique parameter count of the model,
the output shape equals a real forward on the CPU with the same tiny input,
and no layer is invalid at an input the model accepts.  Opaque parts and
failures are listed with the reason in ``tests/expected/untraceable_transformers.txt``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import measure_training_step, tensor_shapes
from torchsurgeon import (
    ModelReport,
    ParamChange,
    SurgeryError,
    TorchSurgeonError,
    adapt_input_channels,
    memory_plan,
    paramcount,
    replace_head,
)
from zoo_checks import counted_macs, macs_agree

pytestmark = pytest.mark.zoo  # the whole-zoo tier: `make test` runs it, `make check` skips it

transformers = pytest.importorskip("transformers")

EXPECTED = Path(__file__).parent / "expected" / "untraceable_transformers.txt"
TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1}
TEXT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "vocab_size": 99,
    **TOKENS,
}
DECODER = {**TEXT, "num_key_value_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0}
SEQ = 8
IMAGE = (3, 32, 32)
AUDIO = (1600,)
SPEECH = {
    **TEXT,
    "conv_dim": [8, 8],
    "conv_stride": [5, 2],
    "conv_kernel": [10, 3],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}

DETR = {
    "use_pretrained_backbone": False,
    "backbone": "resnet18",
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 37,
    "decoder_ffn_dim": 37,
    "num_queries": 10,
}

# name: (auto class, config, input)
ZOO: dict[str, tuple[str, dict[str, Any], Any]] = {
    # text encoders
    "bert": ("AutoModel", TEXT, (SEQ,)),
    "roberta": ("AutoModel", TEXT, (SEQ,)),
    "distilbert": ("AutoModel", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 37, "vocab_size": 99}, (SEQ,)),
    "albert": ("AutoModel", {**TEXT, "embedding_size": 16}, (SEQ,)),
    "electra": ("AutoModel", {**TEXT, "embedding_size": 16}, (SEQ,)),
    "deberta-v2": ("AutoModel", TEXT, (SEQ,)),
    "big_bird": (  # block-sparse attention from 64 tokens: unsqueeze_ in place, then questions about the result
        "AutoModel",
        {**TEXT, "block_size": 4, "num_random_blocks": 2, "max_position_embeddings": 128},
        (64,),
    ),
    "bert-classifier": ("AutoModelForSequenceClassification", {**TEXT, "model_type": "bert"}, (SEQ,)),
    # landmark attention that cannot take a mask: the real forward skips the all-ones mask it builds, so must the trace
    "nystromformer": ("AutoModel", {**TEXT, "segment_means_seq_len": SEQ, "num_landmarks": 4}, (SEQ,)),
    # its token ids are `inputs` (a float by name: the trace finds the embedding reading them), np.prod on a shape
    "perceiver": (
        "AutoModelForMaskedLM",
        {
            "d_latents": 32,
            "d_model": 32,
            "num_latents": 8,
            "num_blocks": 1,
            "num_self_attends_per_block": 1,
            "num_self_attention_heads": 2,
            "num_cross_attention_heads": 1,
            "vocab_size": 99,
            "max_position_embeddings": 64,
        },
        (SEQ,),
    ),
    # decoders
    "gpt2": ("AutoModelForCausalLM", {"n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 99}, (SEQ,)),
    "llama": ("AutoModelForCausalLM", DECODER, (SEQ,)),
    "mistral": ("AutoModel", DECODER, (SEQ,)),
    "qwen2": ("AutoModel", DECODER, (SEQ,)),
    "phi": ("AutoModel", DECODER, (SEQ,)),
    "gemma": ("AutoModel", {**DECODER, "head_dim": 16}, (SEQ,)),
    "opt": ("AutoModel", {**TEXT, "ffn_dim": 37, "word_embed_proj_dim": 32, "pad_token_id": 0}, (SEQ,)),
    "gpt_neox": ("AutoModel", TEXT, (SEQ,)),
    # stores its positions, moved to the input's device, back into its own buffer during the forward
    "ctrl": ("AutoModel", {"n_embd": 32, "n_layer": 2, "n_head": 2, "dff": 37, "vocab_size": 99}, (SEQ,)),
    # rotary tables moved to the device of the position ids (known data in a trace): no opaque attention
    "gptj": (
        "AutoModelForCausalLM",
        {"n_embd": 32, "n_layer": 2, "n_head": 2, "rotary_dim": 8, "vocab_size": 99},
        (SEQ,),
    ),
    "bloom": ("AutoModel", {"hidden_size": 32, "n_layer": 2, "n_head": 2, "vocab_size": 99}, (SEQ,)),  # finfo(dtype)
    "mamba": ("AutoModel", {"hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 99, "state_size": 4}, (SEQ,)),
    # Mixture of Experts: torch._grouped_mm, whose meta kernel accepts bfloat16 only (its rule: what the CPU does)
    "mixtral": ("AutoModelForCausalLM", {**DECODER, "intermediate_size": 48, "num_local_experts": 4}, (SEQ,)),
    "qwen2_moe": (
        "AutoModel",
        {**DECODER, "num_experts": 4, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16},
        (SEQ,),
    ),
    # encoder-decoders
    "t5": (
        "AutoModel",
        {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 2, "vocab_size": 99},
        {"input_ids": (SEQ,), "decoder_input_ids": (SEQ,)},
    ),
    "longt5": (  # pads from a list edited in place (pad[dim] = ...): opaque stacks before
        "AutoModel",
        {
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 37,
            "num_layers": 2,
            "num_heads": 2,
            "vocab_size": 99,
            "local_radius": 2,
            "global_block_size": 4,
        },
        {"input_ids": (16,), "decoder_input_ids": (SEQ,)},
    ),
    "bart": (
        "AutoModel",
        {
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 37,
            "decoder_ffn_dim": 37,
            "vocab_size": 99,
        },
        (SEQ,),
    ),
    "whisper": (
        "AutoModel",
        {
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 37,
            "decoder_ffn_dim": 37,
            "vocab_size": 99,
            "num_mel_bins": 8,
            "max_source_positions": 16,
        },
        {"input_features": (8, 32), "decoder_input_ids": (SEQ,)},
    ),
    # vision
    "vit": ("AutoModel", {**TEXT, "image_size": 32, "patch_size": 8}, IMAGE),
    "deit": ("AutoModel", {**TEXT, "image_size": 32, "patch_size": 8}, IMAGE),
    "dinov2": ("AutoModel", {**TEXT, "image_size": 32, "patch_size": 8}, IMAGE),
    "swin": (
        "AutoModel",
        {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "image_size": 32, "patch_size": 4, "window_size": 4},
        IMAGE,
    ),
    "convnext": ("AutoModel", {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2}, IMAGE),
    "resnet": (
        "AutoModelForImageClassification",
        {"hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8},
        IMAGE,
    ),
    "segformer": (
        "AutoModelForSemanticSegmentation",
        {
            "num_encoder_blocks": 2,
            "depths": [1, 1],
            "sr_ratios": [2, 1],
            "hidden_sizes": [8, 16],
            "num_attention_heads": [1, 2],
            "decoder_hidden_size": 16,
        },
        IMAGE,
    ),
    "beit": (
        "AutoModelForImageClassification",
        {**TEXT, "image_size": 32, "patch_size": 8, "use_relative_position_bias": True},
        IMAGE,
    ),
    "data2vec-vision": ("AutoModel", {**TEXT, "image_size": 32, "patch_size": 8}, IMAGE),
    "vit_mae": ("AutoModel", {**TEXT, "image_size": 32, "patch_size": 8}, IMAGE),
    "vit_msn": ("AutoModel", {**TEXT, "image_size": 32, "patch_size": 8}, IMAGE),
    "ijepa": ("AutoModel", {**TEXT, "image_size": 32, "patch_size": 8}, IMAGE),
    "siglip_vision_model": ("AutoModel", {**TEXT, "image_size": 32, "patch_size": 8}, IMAGE),
    "convnextv2": ("AutoModel", {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2}, IMAGE),
    "regnet": (
        "AutoModelForImageClassification",
        {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "groups_width": 8},
        IMAGE,
    ),
    "poolformer": ("AutoModelForImageClassification", {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}, IMAGE),
    "efficientnet": (
        "AutoModelForImageClassification",
        {"image_size": 32, "width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 320},
        IMAGE,
    ),
    "mobilenet_v1": ("AutoModelForImageClassification", {"image_size": 32, "depth_multiplier": 0.25}, IMAGE),
    "focalnet": ("AutoModel", {"embed_dim": 16, "depths": [1, 1], "image_size": 32, "patch_size": 4}, IMAGE),
    "swinv2": (
        "AutoModel",
        {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "image_size": 32, "patch_size": 4, "window_size": 4},
        IMAGE,
    ),
    "levit": (
        "AutoModel",
        {
            "image_size": 64,
            "hidden_sizes": [16, 32, 48],
            "num_attention_heads": [1, 2, 3],
            "depths": [1, 1, 1],
            "key_dim": [8, 8, 8],
        },
        (3, 64, 64),
    ),
    "pvt_v2": (
        "AutoModel",
        {
            "num_encoder_blocks": 2,
            "depths": [1, 1],
            "sr_ratios": [2, 1],
            "hidden_sizes": [8, 16],
            "num_attention_heads": [1, 2],
            "patch_sizes": [7, 3],
            "strides": [4, 2],
            "mlp_ratios": [2, 2],
        },
        IMAGE,
    ),
    "hiera": (
        "AutoModel",
        {
            "embed_dim": 8,
            "image_size": [64, 64],
            "patch_size": [7, 7],
            "patch_stride": [4, 4],
            "depths": [1, 1],
            "num_heads": [1, 2],
            "query_stride": [2, 2],
            "masked_unit_size": [8, 8],
            "num_query_pool": 1,
        },
        (3, 64, 64),
    ),
    "textnet": ("AutoModel", {}, IMAGE),
    "yolos": (
        "AutoModelForObjectDetection",
        {**TEXT, "image_size": [32, 32], "patch_size": 8, "num_detection_tokens": 5},
        IMAGE,
    ),
    "detr": ("AutoModel", DETR, (3, 64, 64)),  # a timm resnet18 backbone, built without weights
    # torch_compilable_check (torch._check of traced sizes) in its deformable attention: opaque before
    "deformable_detr": ("AutoModel", {**DETR, "encoder_n_points": 2, "decoder_n_points": 2}, (3, 128, 128)),
    # its box conversions ask transformers' is_torch_tensor about a traced tensor: a false invalid decoder before
    "d_fine": (
        "AutoModelForObjectDetection",
        {"encoder_layers": 1, "decoder_layers": 2, "num_queries": 20},
        (3, 128, 128),
    ),
    # audio: the same tiny feature encoder for both
    "wav2vec2": (
        "AutoModel",
        SPEECH,
        AUDIO,
    ),
    "hubert": (
        "AutoModel",
        SPEECH,
        AUDIO,
    ),
    # multimodal
    "clip": (
        "AutoModel",
        {"text_config": TEXT, "vision_config": {**TEXT, "image_size": 32, "patch_size": 8}, "projection_dim": 16},
        {"input_ids": (SEQ,), "pixel_values": IMAGE},
    ),
}


@dataclass
class _Result:
    name: str
    report: ModelReport | None = None
    error: str = ""
    real: Any = None  # output shapes of a real forward on the CPU
    unique: int = 0  # unique parameters of the model
    counted_macs: int | None = None  # FlopCounterMode on a meta copy, FLOPs / 2
    left_as_found: bool = False  # hooks and attributes after paramcount as before it


_CACHE: dict[str, _Result] = {}


def _build(name: str) -> torch.nn.Module:
    auto, options, _ = ZOO[name]
    options = dict(options)
    model_type = options.pop("model_type", name)
    config = transformers.AutoConfig.for_model(model_type, **{**TOKENS, **options})
    torch.manual_seed(0)
    return getattr(transformers, auto).from_config(config).eval()


def _real_input(spec: Any, name: str = "") -> Any:
    """A CPU tensor for a per-sample shape, as a user would feed it (token ids: integers)."""
    if isinstance(spec, dict):
        return {k: _real_input(v, k) for k, v in spec.items()}
    if name.endswith("_ids") or (not name and len(spec) == 1 and spec != AUDIO):
        return torch.randint(1, 99, (1, *spec))
    return torch.randn(1, *spec)


def _on_meta(x: Any) -> Any:
    return {k: _on_meta(v) for k, v in x.items()} if isinstance(x, dict) else x.to("meta")


def _state(model: torch.nn.Module) -> dict[str, Any]:
    """Every module's forward hooks and attributes (names and values, by identity: Swin sets ``window_size``)."""
    return {
        n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), [(k, id(v)) for k, v in vars(m).items()])
        for n, m in model.named_modules()
    }


def _result(name: str) -> _Result:
    if name not in _CACHE:
        model = _build(name)
        result = _Result(name)
        spec = ZOO[name][2]
        before = _state(model)
        try:
            result.report = paramcount(model, spec)
        except TorchSurgeonError as exc:
            result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        else:
            result.left_as_found = _state(model) == before  # the hooks and flags its forward installs are gone
            x = _real_input(spec)
            with torch.no_grad():
                out = model(**x) if isinstance(x, dict) else model(x)
            result.real = tensor_shapes({k: v for k, v in out.items() if isinstance(v, torch.Tensor)})
            result.unique = sum(p.numel() for p in model.parameters())
            meta_x = _on_meta(x)
            result.counted_macs = counted_macs(model, lambda m: m(**meta_x) if isinstance(meta_x, dict) else m(meta_x))
        _CACHE[name] = result
    return _CACHE[name]


@pytest.mark.parametrize("name", list(ZOO))
def test_transformers_model(name: str) -> None:
    r = _result(name)
    assert r.report is not None, r.error
    assert r.report.total == r.unique
    assert r.left_as_found
    assert r.report.invalid == [], [f.message for f in r.report.findings]
    assert r.report.trusted, r.report.crosscheck.message
    got = r.report.output_shape
    assert isinstance(got, dict), got
    assert {k: v for k, v in got.items() if k in r.real} == r.real
    macs_agree(r.report, r.counted_macs)


def test_transformers_coverage_and_untraceable_list(expected_file: Callable[[str, str], None], capsys: Any) -> None:
    results = [_result(name) for name in ZOO]
    analysed = [r for r in results if r.report is not None]
    lines: list[str] = []
    for r in results:
        if r.report is None:
            lines.append(f"{r.name}: {r.error.removeprefix('TraceError: torch.fx cannot trace ')}")
        else:
            lines += [f"{r.name}: opaque {sub}: {why}" for sub, why in r.report.opaque.items()]
    with capsys.disabled():
        print(
            f"\ntransformers zoo: {len(analysed)}/{len(results)} models analysed, "
            f"{sum(1 for r in analysed if r.report and r.report.opaque)} with opaque parts ({EXPECTED.name}); "
            f"transformers {transformers.__version__}"
        )
    text = (
        "# transformers models torchsurgeon cannot trace (or traces with opaque parts), with the reason.\n"
        "# Written by tests/test_zoo_transformers.py; regenerate with pytest --overwrite-expected.\n"
        + "".join(f"{line}\n" for line in lines)
    )
    expected_file(EXPECTED.name, text)
    assert len(ZOO) >= 25


VISION = ["vit", "deit", "dinov2", "swin", "convnext", "resnet", "segformer", "detr", "clip"]
VISION += ["beit", "data2vec-vision", "vit_msn", "ijepa", "siglip_vision_model", "convnextv2", "regnet", "poolformer"]
VISION += ["focalnet", "swinv2", "levit", "pvt_v2", "hiera"]  # vit_mae masks at random; TextNet: stem_num_channels


@pytest.mark.parametrize("name", VISION)
def test_transformers_one_channel_fold_runs_and_is_exact(name: str) -> None:
    """``adapt_input_channels(model, 1)`` as written finds the stem inside the embeddings, updates the
    config's channel check, and the edited model on grey equals the original on grey replicated to RGB."""
    original = _build(name).double()
    spec = ZOO[name][2]
    text = {k: v for k, v in _real_input(spec).items() if k != "pixel_values"} if isinstance(spec, dict) else {}
    result = adapt_input_channels(original, 1, input=spec if text else None)  # CLIP: give both inputs
    folded = [c for c in result.changes if c.status == ParamChange.FOLDED]
    assert len(folded) == 1 and folded[0].shape_before[1] == 3 and folded[0].shape_after[1] == 1
    settings = {c.name for c in result.changes if c.status == ParamChange.SETTING}
    assert any(s.endswith("num_channels") for s in settings), settings
    config = original.config.vision_config if name == "clip" else original.config
    assert config.num_channels == 3  # the original is untouched
    size = (spec["pixel_values"] if isinstance(spec, dict) else spec)[1:]
    grey = torch.randn(2, 1, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = original(pixel_values=grey.expand(2, 3, *size), **text)
        got = result.model(pixel_values=grey, **text)
    for key, value in want.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            scale = value.abs().max().item() or 1.0
            assert (got[key] - value).abs().max().item() <= 1e-10 * scale, key


@pytest.mark.parametrize("name", VISION)
def test_transformers_vision_model_on_a_grey_input(name: str) -> None:
    """The transfer-learning question on an RGB vision model: a grey input is reported with the fold as the
    fix (also where the embeddings check the channel count themselves and raise), ``total_for_input`` is
    the folded model's size, and the reported output is the folded model's real output."""
    model = _build(name)
    spec = ZOO[name][2]
    grey_spec = {**spec, "pixel_values": (1, *spec["pixel_values"][1:])} if isinstance(spec, dict) else (1, *spec[1:])
    report = paramcount(model, grey_spec)
    given = f", input={spec!r}" if isinstance(spec, dict) else ""  # CLIP: its text too, which no guess gives
    (fix,) = {f.fix for f in report.findings}
    assert fix == f"fold it with adapt_input_channels(model, 1{given})"
    assert report.trusted and report.crosscheck.trust != "untrusted", report.crosscheck.message
    assert not any("Proxy(" in why for why in report.opaque.values()), report.opaque  # numbers, not fx's names
    result = eval(fix.removeprefix("fold it with "), {"adapt_input_channels": adapt_input_channels, "model": model})
    assert report.total_for_input == sum(p.numel() for p in result.model.parameters())
    real = _real_input(grey_spec)
    with torch.no_grad():
        out = result.model(**real) if isinstance(real, dict) else result.model(real)
    assert report.output_shape == tensor_shapes(out)


def test_llama_7b_config_on_meta() -> None:
    """transformers' own LlamaForCausalLM at the 7B config, built on meta, analysed without a weight in memory."""
    config = transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    report = paramcount(model, {"input_ids": (4096,)})
    # embeddings 32,000×4,096 + 32 × (attention 4 × 4,096² + MLP 3 × 4,096 × 11,008 + 2 norms × 4,096) + norm 4,096
    # + untied head 4,096 × 32,000
    per_block = 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096
    assert report.total == 2 * 32000 * 4096 + 32 * per_block + 4096 == 6_738_415_616
    assert report.output_shape["logits"] == (1, 4096, 32000)
    assert report.opaque == {} and report.trusted


@pytest.mark.parametrize("name", ["bert-classifier", "resnet", "vit-classifier"])
def test_transformers_replace_head_trains_with_the_new_labels(name: str) -> None:
    """The new head is found in the classifier, and num_labels follows it: the model's own loss runs on 5 classes."""
    if name == "vit-classifier":
        config = transformers.AutoConfig.for_model("vit", **{**TEXT, "image_size": 32, "patch_size": 8})
        original, spec = transformers.AutoModelForImageClassification.from_config(config), IMAGE
    else:
        original, spec = _build(name), ZOO[name][2]
    result = replace_head(original, 5)
    settings = {c.name: c.message for c in result.changes if c.status == ParamChange.SETTING}
    assert settings["config.num_labels"] == f"{original.config.num_labels} → 5"
    assert original.config.num_labels != 5  # the original is untouched
    x = _real_input(spec) if name != "bert-classifier" else {"input_ids": torch.randint(1, 99, (1, SEQ))}
    x = x if isinstance(x, dict) else {"pixel_values": x}
    out = result.model(**x, labels=torch.tensor([4]))
    assert out.logits.shape == (1, 5) and torch.isfinite(out.loss)
    assert result.model.config.id2label.keys() == set(range(5))


def _own_hooks_models() -> dict[str, Callable[[], torch.nn.Module]]:
    """Models whose heads read hidden states that transformers collects with forward hooks it installs on
    the backbone (UperNet at construction; DPT on its first forward)."""
    T = transformers

    def upernet() -> torch.nn.Module:
        stages = ["stage1", "stage2", "stage3", "stage4"]
        backbone = T.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1] * 4, out_features=stages)
        config = T.UperNetConfig(
            backbone_config=backbone, hidden_size=16, auxiliary_in_channels=24, auxiliary_channels=8, num_labels=4
        )
        return T.UperNetForSemanticSegmentation(config)

    def dpt() -> torch.nn.Module:
        config = T.DPTConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=37,
            image_size=32,
            patch_size=8,
            backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=16,
            head_hidden_size=8,
        )
        return T.DPTForDepthEstimation(config)

    return {"upernet": upernet, "dpt": dpt}


@pytest.mark.parametrize("name", ["upernet", "dpt"])
def test_models_with_their_own_output_hooks_keep_them_in_torchsurgeons_copies(name: str) -> None:
    """The weightless copies adapt_input_channels and the cross-check run kept none of the model's hooks:
    UperNet 'does not run' ('NoneType' object is not subscriptable), and DPT, once it had run a forward,
    was reported unverified and could not be adapted."""
    torch.manual_seed(0)
    model = _own_hooks_models()[name]().double().eval()
    size = (3, 64, 64) if name == "upernet" else (3, 32, 32)
    rgb = torch.randn(2, *size, dtype=torch.float64)
    with torch.no_grad():
        model(pixel_values=rgb)  # an ordinary forward first: DPT installs its hooks then
    report = paramcount(model, {"pixel_values": size})
    assert report.trusted and str(report.crosscheck.trust) in ("verified", "not run"), report.crosscheck.message
    result = adapt_input_channels(model, 1, input={"pixel_values": size})
    folded = [c for c in result.changes if c.status == ParamChange.FOLDED]
    assert len(folded) == 1 and folded[0].shape_after[1] == 1
    grey = rgb[:, :1]
    output = "predicted_depth" if name == "dpt" else "logits"
    with torch.no_grad():
        want = model(pixel_values=grey.expand(2, *size))[output]
        got = result.model(pixel_values=grey)[output]
    assert (got - want).abs().max().item() <= 1e-10 * (want.abs().max().item() or 1.0)


def _tiny_videomae() -> torch.nn.Module:
    """A VideoMAE classifier of 4 frames of 32 × 32 (tubelets of 2 frames, patches of 8), 5 labels."""
    config = transformers.VideoMAEConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        num_labels=5,
    )
    return transformers.VideoMAEForVideoClassification(config)


def test_a_video_model_is_adapted_without_an_input() -> None:
    """VideoMAE takes (frames, channels, H, W): the input built from its config was (3, 32, 32), which it refuses
    ("not enough values to unpack"), so adapt_input_channels needed input=."""
    torch.manual_seed(0)
    model = _tiny_videomae().double().eval()
    result = adapt_input_channels(model, 1)
    folded = [c for c in result.changes if c.status == ParamChange.FOLDED]
    assert [(c.shape_before, c.shape_after) for c in folded] == [((32, 3, 2, 8, 8), (32, 1, 2, 8, 8))]
    grey = torch.randn(2, 4, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        want = model(pixel_values=grey.expand(2, 4, 3, 32, 32)).logits
        got = result.model(pixel_values=grey).logits
    assert (got - want).abs().max().item() <= 1e-10 * (want.abs().max().item() or 1.0)


def test_a_video_model_on_grey_frames_names_its_input_layer_and_the_fix_runs() -> None:
    """VideoMAE's channels are dim 2 of (batch, frames, channels, H, W): its patch embedding refuses 1 channel,
    and with the fold tried on dim 1 only, everything after it was unknown and the finding had no fix."""
    model = _tiny_videomae().eval()
    report = paramcount(model, (4, 1, 32, 32))
    (finding,) = report.findings
    assert (finding.layer, finding.expected, finding.got) == ("videomae.embeddings.patch_embeddings.projection", 3, 1)
    assert finding.fix == "fold it with adapt_input_channels(model, 1)"
    assert report.output_shape == {"logits": (1, 5)}
    assert report.trusted and str(report.crosscheck.trust) == "verified"
    assert not [row.layer for row in report.layers if row.status == "unknown"]
    edited = adapt_input_channels(model, 1).model  # the fix, as written
    unique = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input == unique - 32 * 2 * 2 * 8 * 8
    with torch.no_grad():
        assert edited(pixel_values=torch.randn(1, 4, 1, 32, 32)).logits.shape == (1, 5)


def _tiny_frame_model(name: str) -> torch.nn.Module:
    """TimeSformer (its patch convolution on each frame: frames reshaped into the batch) or ViViT (its tubelet
    convolution after a permute) of 2 frames of 32 × 32, 3 labels."""
    common = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
    common |= {"image_size": 32, "num_frames": 2, "num_labels": 3}
    if name == "timesformer":
        return transformers.TimesformerForVideoClassification(transformers.TimesformerConfig(patch_size=8, **common))
    return transformers.VivitForVideoClassification(transformers.VivitConfig(tubelet_size=[1, 8, 8], **common))


@pytest.mark.parametrize("name", ["timesformer", "vivit"])
def test_a_video_model_reading_frames_moved_is_folded_as_the_report_says(name: str) -> None:
    """The input reaches the patch convolution through a reshape or permute: the fix named was a new layer
    (pretrained weights lost), while the fold it names now runs as written and is exact."""
    torch.manual_seed(0)
    model = _tiny_frame_model(name).double().eval()
    report = paramcount(model, {"pixel_values": (2, 1, 32, 32)})
    (finding,) = report.findings
    assert finding.fix == "fold it with adapt_input_channels(model, 1, input=(2, 3, 32, 32))"
    call = finding.fix.removeprefix("fold it with ")
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model
    grey = torch.randn(2, 2, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        want = model(pixel_values=grey.expand(2, 2, 3, 32, 32)).logits
        got = edited(pixel_values=grey).logits
    assert (got - want).abs().max().item() <= 1e-10 * (want.abs().max().item() or 1.0)
    assert adapt_input_channels(model, 1).model(pixel_values=grey).logits.shape == (2, 3)  # its config: no input=


def test_vitmatte_folds_every_layer_reading_its_input_exactly() -> None:
    """ViTMatte's 4-channel input feeds the ViTDet stem, the ConvStream's first conv and, joined with features,
    the last fusion conv: adapt_input_channels named the ConvStream's batch norm as the layer reading it, then
    refused the fusion conv ('reads the input only after a concatenation'), and the report's fix for the ConvStream
    conv, ``adapt_input_channels(model, 1, layer=['backbone.embeddings', ...])``, raised.  All three fold now, the
    fusion conv's columns of the features kept, with the fix each names: exact in float64 on a 1-channel input
    replicated."""
    backbone = {"model_type": "vitdet", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    backbone |= {"intermediate_size": 37, "image_size": 32, "patch_size": 16, "num_channels": 4}
    backbone |= {"pretrain_image_size": 32, "out_features": ["stage2"]}
    config = transformers.VitMatteConfig(
        backbone_config=backbone,
        hidden_size=32,
        convstream_hidden_sizes=[8, 16, 16],
        fusion_hidden_sizes=[16, 16, 8, 8],
    )
    torch.manual_seed(0)
    model = transformers.VitMatteForImageMatting(config).eval().double()
    fusion = "decoder.fusion_blocks.3.conv.conv"
    assert model.get_submodule(fusion).in_channels == 8 + 4
    report = paramcount(model, (1, 32, 32))  # each layer's fix folds all three (the first two named layer=...)
    fixes = {f.layer: f.fix for f in report.findings}
    assert fixes["backbone.embeddings.projection"] == "fold it with adapt_input_channels(model, 1)"
    assert fixes["decoder.convstream.convs.0.conv"] == "fold it with adapt_input_channels(model, 1)"
    assert fixes[fusion] == "fold it with adapt_input_channels(model, 1, input=(4, 32, 32))"
    for fix in set(fixes.values()):  # as written
        edited = eval(fix.removeprefix("fold it with "), {"adapt_input_channels": adapt_input_channels, "model": model})
        assert sum(p.numel() for p in edited.model.parameters()) == report.total_for_input
    result = adapt_input_channels(model, 1)
    folded = [c.name.removesuffix(".weight") for c in result.changes if c.status is ParamChange.FOLDED]
    assert folded == ["backbone.embeddings.projection", "decoder.convstream.convs.0.conv", fusion]
    assert result.model.get_submodule(fusion).in_channels == 8 + 1
    grey = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        got, want = result.model(grey).alphas, model(grey.expand(1, 4, 32, 32)).alphas
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_levit_is_left_as_found_and_analysed_again() -> None:
    """LeViT caches its attention biases in eval mode, keyed by the input's device: the trace left a proxy
    there, and every later paramcount failed ("Argument 'getitem_7' of Node 'add' does not belong to this Graph")."""
    config = transformers.LevitConfig(
        image_size=64, hidden_sizes=[32, 48, 64], num_attention_heads=[1, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8]
    )
    model = transformers.LevitModel(config).eval()
    caches = [m.attention_bias_cache for m in model.modules() if hasattr(m, "attention_bias_cache")]
    reports = [paramcount(model, (3, 64, 64)) for _ in range(2)]
    assert all(r.output_shape == {"last_hidden_state": (1, 1, 64), "pooler_output": (1, 64)} for r in reports)
    assert caches and all(cache == {} for cache in caches)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).last_hidden_state.shape == (1, 1, 64)


def test_swin2sr_takes_grey_images_as_it_is_and_its_stem_is_not_folded() -> None:
    """Swin2SR subtracts one mean per RGB channel before its first convolution: a grey image broadcasts to three
    channels. adapt_input_channels folded the convolution anyway, and the edited model failed on grey images."""
    config = transformers.Swin2SRConfig(
        image_size=32, patch_size=1, embed_dim=16, depths=[1], num_heads=[2], window_size=8
    )
    model = transformers.Swin2SRModel(config).eval()
    grey = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(grey).last_hidden_state, model(grey.expand(1, 3, 32, 32)).last_hidden_state)
    assert paramcount(model, (1, 32, 32)).findings == ()
    with pytest.raises(SurgeryError, match=r"takes a 1-channel input as it is: what comes before first_convolution"):
        adapt_input_channels(model, 1)


def test_encodec_paddings_from_its_scalar_buffers_are_traced_and_exact() -> None:
    """Encodec computes its convolutions' paddings from 0-dim int64 buffers (stride, kernel size), and
    ``max(left, right)`` of those needs their values: on meta stand-ins the whole model failed to trace."""
    config = transformers.EncodecConfig(
        sampling_rate=800, num_filters=4, hidden_size=16, codebook_size=16, upsampling_ratios=[4, 2]
    )
    torch.manual_seed(0)
    model = transformers.EncodecModel(config).eval()
    before, buffers = _state(model), {n: b.clone() for n, b in model.named_buffers()}
    r = paramcount(model, (1, 200))
    assert _state(model) == before and all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    x = torch.randn(1, 1, 200)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(x)
    assert r.output_shape == {k: tuple(v.shape) for k, v in out.items() if isinstance(v, torch.Tensor)}
    assert r.opaque == {} and r.invalid == [] and r.trusted
    assert r.total == sum(p.numel() for p in model.parameters())
    # FlopCounterMode has no formula for LSTMs: theirs by hand, 4 gates × hidden × (input + hidden) per step and
    # layer (input = hidden here, so every layer alike)
    frames = out.audio_codes.shape[-1]
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    lstm_macs = sum(4 * m.hidden_size * (m.input_size + m.hidden_size) * frames * m.num_layers for m in lstms)
    assert lstms and r.macs == counter.get_total_flops() // 2 + lstm_macs


@pytest.mark.parametrize("name", ["gpt2", "opt"])
def test_a_sequence_longer_than_the_position_table_is_invalid_as_the_real_model_raises(name: str) -> None:
    """The shapes of a decoder at more tokens than its position table all fit; its position ids (made with
    ``torch.arange``) index past the table and the real forward raises IndexError: it was reported as fitting."""
    auto, options, _ = ZOO[name]
    positions = {"gpt2": "n_positions", "opt": "max_position_embeddings"}[name]
    config = transformers.AutoConfig.for_model(name, **{**TOKENS, **options, positions: 16})
    model = getattr(transformers, auto).from_config(config).eval()
    with torch.no_grad():
        model(torch.randint(1, 99, (1, 16)))
        with pytest.raises(IndexError):
            model(torch.randint(1, 99, (1, 24)))
    assert paramcount(model, (16,)).invalid == []
    r = paramcount(model, (24,))
    assert [layer.name for layer in r.invalid] == ["transformer.wpe" if name == "gpt2" else "decoder.embed_positions"]
    assert "IndexError" in r.invalid[0].message and r.output_shape is None
    assert "the real model fails at this input too" in r.crosscheck.message


def test_roberta_positions_counted_from_its_tokens_past_the_table_are_invalid() -> None:
    """RoBERTa counts positions from its tokens (``cumsum(input_ids != pad) + pad``, from 2 on): at 63 tokens, below
    its 64 positions, a real forward raises, and it was reported as fitting, trusted (found by a fifth probe)."""
    config = transformers.AutoConfig.for_model("roberta", **{**TEXT, "max_position_embeddings": 64, "pad_token_id": 1})
    model = transformers.AutoModel.from_config(config).eval()
    with torch.no_grad():
        model(torch.randint(3, 99, (1, 62)))
        with pytest.raises((IndexError, RuntimeError), match="out of"):
            model(torch.randint(3, 99, (1, 63)))
    assert paramcount(model, (62,)).invalid == []
    r = paramcount(model, (63,))
    assert [layer.name for layer in r.invalid] == ["embeddings.position_embeddings"] and r.output_shape is None
    assert "expects position < 64, got 64" in r.invalid[0].message and r.trusted


def test_a_model_whose_backbone_config_holds_the_image_is_adapted_without_an_input() -> None:
    """Depth Anything keeps its channels and size in ``backbone_config``: adapt_input_channels asked for an input
    (found by a fifth probe)."""
    backbone = {"model_type": "dinov2", **TEXT, "num_hidden_layers": 4, "image_size": 32, "patch_size": 8}
    config = transformers.AutoConfig.for_model(
        "depth_anything",
        backbone_config={**backbone, "out_indices": [1, 2, 3, 4], "reshape_hidden_states": False},
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        reassemble_hidden_size=32,
        patch_size=8,
    )
    model = transformers.AutoModelForDepthEstimation.from_config(config).eval()
    result = adapt_input_channels(model, 1)
    assert result.changes[0].name == "backbone.embeddings.patch_embeddings.projection.weight"
    with torch.no_grad():
        assert result.model(torch.randn(1, 1, 32, 32)).predicted_depth.shape == (1, 32, 32)


def test_a_model_taking_use_cache_through_kwargs_builds_no_cache() -> None:
    """Found by a probe: Llava (and BLIP-2) take ``use_cache`` through ``**kwargs``; the trace built a
    DynamicCache and failed with a generic message, although ``concrete_args={"use_cache": False}`` was exact."""
    text = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
    config = transformers.LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **text, "image_size": 32, "patch_size": 8},
        text_config={"model_type": "llama", **text, "vocab_size": 99, "max_position_embeddings": 64},
        image_token_index=5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    model = transformers.LlavaForConditionalGeneration(config).eval()
    ids = torch.cat([torch.full((1, 2), 7), torch.full((1, 17), 5), torch.full((1, 3), 8)], 1)
    report = paramcount(model, {"input_ids": ids, "pixel_values": (3, 32, 32)})
    with torch.no_grad():
        real = model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32))
    assert report.output_shape["logits"] == tuple(real.logits.shape) and report.trusted
    assert report.total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["bert", "llama", "vit"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["default", "reentrant"])
def test_gradient_checkpointing_is_planned_for_a_gpu_as_a_real_step_saves(name: str, reentrant: bool) -> None:
    """Found by a probe: with ``gradient_checkpointing_enable()`` (non-reentrant, transformers' default), every
    plan for ``device="cuda"`` (the default) failed: the backward's recomputation of each layer ran the CPU's attention
    where the forward had run CUDA's fused kernel, and torch's CheckpointError was reported as what a real step
    raises.  What the step keeps is the layers' inputs, as a real step (without dropout, the CPU's and CUDA's
    kernels keep the same there); the model's flags are left as found."""
    config = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "attention_dropout": 0.0}
    build = {
        "bert": (lambda: transformers.BertModel(transformers.BertConfig(**TEXT, **config)), "input_ids", (SEQ,)),
        "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**DECODER)), "input_ids", (SEQ,)),
        "vit": (lambda: transformers.ViTModel(transformers.ViTConfig(**TEXT, **config, image_size=32, patch_size=8)),
                "pixel_values", IMAGE),
    }[name]  # fmt: skip
    torch.manual_seed(0)
    model = build[0]().train()
    plain = memory_plan(model, {build[1]: build[2]}, batch=2, optimizer="sgd")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    flags = {n: (m.training, getattr(m, "gradient_checkpointing", None)) for n, m in model.named_modules()}
    plan = memory_plan(model, {build[1]: build[2]}, batch=2, optimizer="sgd")
    x = torch.randint(0, 99, (2, SEQ)) if build[1] == "input_ids" else torch.randn(2, *IMAGE)
    real = measure_training_step(model, {build[1]: x})
    assert (plan.activations, plan.gradients) == (real.saved, real.gradients)
    assert plan.activations < plain.activations / 2 and plan.peak_at.startswith("backward")
    assert flags == {n: (m.training, getattr(m, "gradient_checkpointing", None)) for n, m in model.named_modules()}
