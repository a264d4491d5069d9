"""Models by name (torchvision:, timm:, smp:, hf:, monai:, open_clip:, MODULE:CALLABLE) with --kwargs, never
downloaded."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchsurgeon import ConfigError, InputError
from torchsurgeon.hub import load_model, parse_kwargs


@pytest.fixture(autouse=True)
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Empty caches, offline Hub; every download function records the call and raises (a test can fail on it)."""
    calls: list[str] = []
    for var, sub in (("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub")):
        monkeypatch.setenv(var, str(tmp_path / sub))

    def refuse(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise ConnectionRefusedError(f"test: {name} called")

        return call

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("torch.hub.download_url_to_file"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urllib.request.urlopen"))
    yield calls
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "something was written to the caches"


def test_parse_kwargs_reads_python_literals_and_plain_strings() -> None:
    text = "encoder_weights=None,classes=2,encoder_name=resnet18,strides=(2, [3, 4]),name='a,b',scale=1e-3,flag=True"
    assert parse_kwargs(text) == {
        "encoder_weights": None,
        "classes": 2,
        "encoder_name": "resnet18",
        "strides": (2, [3, 4]),
        "name": "a,b",
        "scale": 0.001,
        "flag": True,
    }
    assert parse_kwargs(" a = 1 , ") == {"a": 1} and parse_kwargs("path=/tmp/x.pt") == {"path": "/tmp/x.pt"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("classes", r"'classes' is not NAME=VALUE — e.g. --kwargs encoder_weights=None,classes=2"),
        ("2=3", r"'2=3' is not NAME=VALUE"),
        ("a=1,a=2", r"a is given twice"),
    ],
)
def test_parse_kwargs_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_kwargs(text)


def test_torchvision_and_timm_by_name_without_weights(no_network: list[str]) -> None:
    resnet = load_model("torchvision:resnet18", {"num_classes": 3})
    assert type(resnet).__module__ == "torchvision.models.resnet" and resnet.fc.out_features == 3
    vit = load_model("timm:vit_tiny_patch16_224", {"num_classes": 5, "img_size": 32})
    assert type(vit).__module__.startswith("timm.") and vit.head.out_features == 5
    assert load_model("torchvision.models:resnet18").fc.out_features == 1000  # MODULE:CALLABLE still works
    assert no_network == []


def test_smp_by_name_and_by_module_path(no_network: list[str]) -> None:
    unet = load_model("smp:Unet", {"encoder_name": "resnet18", "classes": 2})  # smp: defaults to no weights
    assert type(unet).__name__ == "Unet" and unet.segmentation_head[0].out_channels == 2
    same = load_model(
        "segmentation_models_pytorch:Unet", parse_kwargs("encoder_name=resnet18,encoder_weights=None,classes=2")
    )
    assert sum(p.numel() for p in same.parameters()) == sum(p.numel() for p in unet.parameters())
    assert no_network == []


@pytest.mark.slow  # over 0.6 s in make check (make test runs it): importing monai and open_clip
def test_monai_and_open_clip_by_name(no_network: list[str]) -> None:
    """Found by a probe of the command line: ``monai:BasicUNet`` failed, "monai has no attribute 'BasicUNet'" (its
    networks are in monai.networks.nets), and ``open_clip:RN50`` too; both libraries have their prefix now, and
    ``open_clip:create_model`` (an attribute of the library, no model name) is still a MODULE:CALLABLE."""
    import monai.networks.nets as nets
    import open_clip

    unet = load_model("monai:BasicUNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2})
    assert type(unet) is nets.BasicUNet and unet.conv_0.conv_0.conv.in_channels == 1
    clip = load_model("open_clip:RN50")
    assert type(clip) is type(open_clip.create_model("RN50", pretrained=None))
    same = load_model("open_clip:create_model", {"model_name": "RN50"})
    assert sum(p.numel() for p in clip.parameters()) == sum(p.numel() for p in same.parameters()) == 102_007_137
    assert no_network == []


def test_a_builder_that_would_download_fails_at_once_naming_the_fix(no_network: list[str]) -> None:
    hub = r"tried to download \(huggingface\.co\) — torchsurgeon never downloads weights: pass --kwargs"
    with pytest.raises(ConfigError, match=rf"{hub} encoder_weights=None"):
        load_model("segmentation_models_pytorch:Unet", {"encoder_name": "resnet18"})  # smp's default: imagenet
    with pytest.raises(ConfigError, match=rf"{hub} pretrained=False"):
        load_model("timm:resnet18", {"pretrained": True})  # not in the (empty) cache
    with pytest.raises(ConfigError, match=r"tried to download .* pass --kwargs weights=None"):
        load_model("torchvision:resnet18", {"weights": "DEFAULT"})
    assert no_network == []  # refused by load_model itself, before the test's download functions


def test_the_network_is_refused_while_building_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real urlopen and download functions
    connected: list[Any] = []
    real_connect = socket.socket.connect

    def spy(sock: socket.socket, address: Any) -> None:
        connected.append(address)
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    getaddrinfo = socket.getaddrinfo
    with pytest.raises(
        ConfigError, match=r"model 'models:downloads_weights' tried to download \(download\.example\.com\)"
    ):
        load_model("models:downloads_weights")
    assert connected == [] and socket.socket.connect is spy and socket.getaddrinfo is getaddrinfo


def test_hf_model_type_with_configuration_fields(no_network: list[str]) -> None:
    fields = parse_kwargs("num_hidden_layers=2,hidden_size=64,num_attention_heads=4,intermediate_size=128")
    bert = load_model("hf:bert", fields)
    assert type(bert).__name__ == "BertModel" and len(bert.encoder.layer) == 2
    assert bert.encoder.layer[0].intermediate.dense.out_features == 128
    mlm = load_model("hf:BertForMaskedLM", {"num_hidden_layers": 1, "vocab_size": 100})
    assert type(mlm).__name__ == "BertForMaskedLM" and mlm.cls.predictions.decoder.out_features == 100
    assert no_network == []


def test_hf_local_folder_builds_its_architecture_without_weights(tmp_path: Path, no_network: list[str]) -> None:
    import transformers

    folder = tmp_path / "tiny-bert"
    config = transformers.BertConfig(
        num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=50
    )
    config.architectures = ["BertForSequenceClassification"]
    config.save_pretrained(folder)
    model = load_model(f"hf:{folder}", {"num_labels": 3})
    assert type(model).__name__ == "BertForSequenceClassification" and model.classifier.out_features == 3
    assert len(model.bert.encoder.layer) == 1 and model.bert.embeddings.word_embeddings.num_embeddings == 50
    for path in folder.iterdir():
        path.unlink()  # the fixture checks that nothing else was written
    folder.rmdir()
    assert no_network == []


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("hf:bertt", {}, r"'bertt' is neither a transformers model type nor a model class — did you mean 'bert'"),
        (
            "hf:bert",
            {"num_hiden_layers": 2},
            r"BertConfig has no field 'num_hiden_layers' — did you mean 'num_hidden_layers'",
        ),
        ("hf:google-bert/bert-base-uncased", {}, r"does not download from the Hub — save its config\.json"),
        ("timm:resnt18", {}, r"timm has no model 'resnt18' — did you mean 'resnet18'"),
        ("torchvision:resnet5", {}, r"torchvision has no model 'resnet5' — did you mean 'resnet50'"),
        ("smp:Unett", {}, r"segmentation_models_pytorch has no model 'Unett' — did you mean 'Unet'"),
        pytest.param(
            "monai:BasicUNett",
            {},
            r"monai.networks.nets has no network 'BasicUNett' — did you mean 'BasicUNet'",
            marks=pytest.mark.slow,  # importing monai
        ),
        pytest.param(
            "open_clip:RN5", {}, r"open_clip has no model 'RN5' — did you mean 'RN50'", marks=pytest.mark.slow
        ),
        pytest.param(
            "monai:UNet",
            {},
            r"missing 5 required positional arguments.* — give the arguments it needs with --kwargs",
            marks=pytest.mark.slow,
        ),
        (
            "transformers:BertModel",
            {},
            r"missing 1 required positional argument: 'config' — build it from its default configuration with "
            r"hf:BertModel",
        ),
        ("torch.nn:Linear", {}, r"required positional arguments.* — give the arguments it needs with --kwargs"),
        ("models:CifarNet", {"nope": 1}, r"unexpected keyword argument 'nope'"),
        ("torch.nn:Identity", {}, None),
        ("torchvision", {}, r"expected MODULE:CALLABLE or torchvision:NAME, timm:NAME"),
    ],
)
def test_errors_name_the_fix(spec: str, kwargs: dict[str, Any], message: str | None) -> None:
    if message is None:
        assert isinstance(load_model(spec, kwargs), nn.Identity)
        return
    with pytest.raises(ConfigError, match=message):
        load_model(spec, kwargs)


def test_a_model_object_takes_no_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    import models

    monkeypatch.setattr(models, "MODEL", nn.Linear(2, 2), raising=False)
    assert isinstance(load_model("models:MODEL"), nn.Linear)
    with pytest.raises(ConfigError, match=r"is a model object, not a builder — drop --kwargs"):
        load_model("models:MODEL", {"in_features": 3})


_LITERALS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3),
    max_leaves=6,
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True), _LITERALS, max_size=4))
def test_parse_kwargs_reads_back_any_python_literal(kwargs: dict[str, Any]) -> None:
    assert parse_kwargs(",".join(f"{name}={value!r}" for name, value in kwargs.items())) == kwargs


def test_weights_already_in_the_cache_load_without_the_network(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    state = torchvision.models.resnet18().state_dict()
    state["fc.bias"].fill_(7.0)  # a marker: these are the cached weights, not a fresh init
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / Path(weights.url).name)
    model = load_model("torchvision:resnet18", parse_kwargs("weights='DEFAULT'"))
    assert torch.equal(model.fc.bias, torch.full((1000,), 7.0)) and no_network == []


def test_a_module_drawing_random_numbers_at_import_does_not_shift_the_seeded_weights(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: the user's module was imported after the seed, so an ``nn.Linear`` made at import took
    the random numbers the first build should get, and check-surgery called 21 kept layers re-initialised."""
    where = tmp_path_factory.mktemp("user_modules")  # not tmp_path: the caches' check reads it
    (where / "drawing_at_import.py").write_text(
        "from torch import nn\nSCRATCH = nn.Linear(50, 50)\n\ndef build():\n    return nn.Linear(3, 2)\n"
    )
    monkeypatch.syspath_prepend(str(where))
    first = load_model("drawing_at_import:build")  # imports the module
    again = load_model("drawing_at_import:build")  # already imported
    torch.manual_seed(0)
    assert torch.equal(first.weight, again.weight) and torch.equal(first.weight, nn.Linear(3, 2).weight)


@pytest.mark.parametrize(
    ("spec", "kwargs", "meant"),
    [
        ("torchvision:resnet18", {"num_clases": 10}, "num_classes"),
        ("timm:resnet18", {"num_clases": 10, "in_chans": 1}, "num_classes"),
        ("models:grey_classifier", {"clases": 10}, "classes"),
        ("torchvision:resnet18", {"wieghts": None}, "weights"),
    ],
)
def test_a_misspelt_argument_names_the_one_meant_with_kwargs_that_build(
    spec: str, kwargs: dict[str, Any], meant: str
) -> None:
    """A misspelt keyword gave the library's bare TypeError: now the argument meant, from the signature of the
    class that refused it and of the builder, and --kwargs text that builds the model."""
    with pytest.raises(
        ConfigError, match=rf"unexpected keyword argument .* — did you mean '{meant}'\? --kwargs "
    ) as info:
        load_model(spec, kwargs)
    fixed = parse_kwargs(str(info.value).rpartition("--kwargs ")[2])
    model = load_model(spec, fixed)
    if "num_classes" in fixed or "classes" in fixed:
        out = model.eval()(torch.randn(2, fixed.get("in_chans", 1 if "classes" in fixed else 3), 32, 32))
        assert out.shape == (2, 10)


def test_an_argument_no_signature_is_close_to_lists_the_arguments() -> None:
    with pytest.raises(ConfigError, match=r"unexpected keyword argument 'zzz' — CifarNet takes \w"):
        load_model("models:CifarNet", {"zzz": 1})


def test_a_misspelt_builder_name_names_the_one_meant() -> None:
    """``MODULE:CALLABLE`` with a misspelt callable said only "has no attribute": now the name meant, which builds."""
    with pytest.raises(ConfigError, match=r"models has no attribute 'CifarNett' — did you mean 'CifarNet'") as info:
        load_model("models:CifarNett")
    meant = str(info.value).rpartition("did you mean ")[2].split(",")[0].rstrip("?").strip("'")
    assert type(load_model(f"models:{meant}")).__name__ == "CifarNet"


@pytest.mark.parametrize(
    ("spec", "kwargs", "meant"),
    [
        ("smp:Unet", {"encoder_nme": "resnet18"}, "encoder_name"),
        ("segmentation_models_pytorch:Unet", {"encoder_nme": "resnet18", "encoder_weights": None}, "encoder_name"),
        ("timm:regnetx_002", {"num_clases": 10}, "num_classes"),
    ],
)
def test_a_misspelt_argument_a_builder_would_swallow_is_refused_with_the_one_meant(
    spec: str, kwargs: dict[str, Any], meant: str
) -> None:
    """Found by a probe: ``Unet(**kwargs)`` took ``encoder_nme=resnet18`` without a word and built resnet34. A key
    close to a named parameter of a builder taking ``**kwargs`` is now refused, with --kwargs that build the model
    meant."""
    import segmentation_models_pytorch as smp

    with pytest.raises(
        ConfigError,
        match=rf"has no argument '\w+' and would take it into its \*\*kwargs .* — did you mean '{meant}'\? --kwargs ",
    ) as info:
        load_model(spec, kwargs)
    model = load_model(spec, parse_kwargs(str(info.value).rpartition("--kwargs ")[2]))
    if "encoder_nme" in kwargs:
        real = smp.Unet(encoder_name="resnet18", encoder_weights=None)
        assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in real.parameters())
    else:
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    ("spec", "kwargs"),
    [
        ("timm:resnet18", {"drop_rate": 0.1}),  # create_model's **kwargs reach ResNet, which takes it
        ("timm:regnetx_002", {"drop_rate": 0.1, "num_classes": 4}),
        ("smp:Unet", {"encoder_name": "resnet18", "classes": 2}),
        ("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", {"fixed_size": (320, 320), "weights_backbone": None}),
    ],
)
def test_arguments_meant_for_a_deeper_constructor_still_pass(spec: str, kwargs: dict[str, Any]) -> None:
    model = load_model(spec, kwargs)
    assert isinstance(model, nn.Module)
    if "drop_rate" in kwargs:
        assert any(getattr(m, "drop_rate", None) == 0.1 for m in model.modules())
