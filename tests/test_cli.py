"""The command line: summary, errors and exit codes."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from torchsurgeon import ConfigError, InputError
from torchsurgeon.cli import load_model, main, parse_shape


def test_summary_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "torchvision.models:resnet18", "--input", "1,224,224"]) == 0
    out = capsys.readouterr().out
    assert "conv1 (Conv2d) expects in_channels=3, got 1" in out
    assert "Total params:          11,689,512" in out
    assert "Params for this input: 11,683,240" in out


def test_summary_json_with_batch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "torchvision.models:resnet18", "--input", "3x64x64", "--json", "--batch", "8"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["output_shape"] == [8, 1000] and d["invalid"] == []


@pytest.mark.parametrize("depth", ["1", "2", "-1"])
def test_summary_csv_at_a_depth_adds_up_to_the_model(depth: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A probe: --format csv --depth 1 left out layer1 … layer4 (blocks folded at that depth) and summed to 522,536."""
    import csv

    import torchvision

    assert main(["summary", "torchvision:resnet18", "--input", "3,64,64", "--format", "csv", "--depth", depth]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert sum(int(row["Params"]) for row in rows) == sum(p.numel() for p in torchvision.models.resnet18().parameters())
    names = {row["Layer"] for row in rows}
    assert not [(a, b) for a in names for b in names if b.startswith(f"{a}.")]  # never a block and its layers


def test_summary_notes_name_the_cli_options(capsys: pytest.CaptureFixture[str]) -> None:
    # a model as built is in training mode: at batch 1 its last batch norms average one value per channel
    assert main(["summary", "torchvision.models:resnet18", "--input", "3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "The batch is too small for 5 layers (layer4.0.bn1," in out
    assert "check it with batch=2; CLI: --batch 2" in out
    assert "report.table(depth=-1) (CLI: --depth -1) shows every layer" in out
    assert main(["summary", "torchvision.models:resnet18", "--input", "3,32,32", "--batch", "2"]) == 0
    assert "The batch is too small" not in capsys.readouterr().out  # the CLI option the note names works


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "torchvision.nope:resnet18", "--input", "3,8,8"], "cannot import 'torchvision.nope'"),
        (["summary", "torchvision.models:nope", "--input", "3,8,8"], "has no attribute 'nope'"),
        (["summary", "torchvision.models", "--input", "3,8,8"], "expected MODULE:CALLABLE"),
        (["summary", "torchvision.models:resnet18", "--input", "3,a,8"], "'a' is not an integer"),
        (["summary", "torchvision.models:resnet18", "--input", "3,0,8"], "dimension 1 is 0 — every dimension"),
        (["summary", "math:pi", "--input", "3"], "neither a callable nor an nn.Module"),
        (["summary", "builtins:dict", "--input", "3"], "returned dict, not an nn.Module"),
    ],
)
def test_errors_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary"]) == 2
    assert "required" in capsys.readouterr().err


def test_builder_that_raises() -> None:
    with pytest.raises(ConfigError, match=r"calling getcwd\(\) raised|returned str"):
        load_model("os:getcwd")


def test_parse_shape() -> None:
    assert parse_shape(" 1, 224 ,224") == (1, 224, 224)
    for text in ("3,,64,64", "3,64,64,", ",3,64,64", "3xx64x64"):  # a probe: they ran as (3, 64, 64)
        with pytest.raises(InputError, match="has an empty dimension"):
            parse_shape(text)


def test_version_and_two_outputs_asked_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """A probe: no --version, and --json --format csv printed JSON without a word."""
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("torchsurgeon ")
    assert main(["summary", "torch.nn:Identity", "--input", "3", "--json", "--format", "csv"]) == 2
    assert "--json and --format csv ask for two outputs" in capsys.readouterr().err


@pytest.mark.slow
def test_json_read_by_a_pipe_that_closes_early_exits_quietly(tmp_path: Path) -> None:
    """A probe's ``torchsurgeon summary ... --json | head`` ended with a BrokenPipeError traceback."""
    script = "import sys; from torchsurgeon.cli import main; sys.exit(main(sys.argv[1:]))"
    # resnet50's JSON (about 110 kB) is more than a pipe holds: the write meets the closed pipe
    command = [sys.executable, "-c", script, "summary", "torchvision:resnet50", "--input", "3,32,32", "--json"]
    run = subprocess.run(f"{shlex.join(command)} | head -1", shell=True, capture_output=True, text=True, check=False)
    assert run.stdout == "{\n" and "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr


def test_check_surgery_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check-surgery", "models:cifarnet_seeded", "models:cifarnet_grey_by_hand", "--input", "1,32,32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "conv1.weight" in out and "reinitialised" in out
    assert "fc3.0.weight (was fc3.weight)" in out
    assert out.rstrip().endswith(
        "Verdict: 1 layer re-initialised (conv1: pretrained weights lost — use adapt_input_channels(model, 1, "
        "layer='conv1')), 1 new (fc3.1), 0 invalid"
    )
    assert main([*argv, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["counts"] == {
        "kept": 8,
        "folded": 0,
        "resized": 0,
        "updated": 0,
        "reinitialised": 2,
        "new": 2,
        "removed": 0,
        "invalid": 0,
    }


def test_check_surgery_bad_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-surgery", "models:nope", "models:cifarnet_seeded", "--input", "1,32,32"]) == 2
    assert "has no attribute 'nope'" in capsys.readouterr().err


@pytest.mark.slow  # two resnet18 surgery checks: `make test` runs it, `make check` skips it
def test_a_misspelt_edited_kwargs_names_its_own_flag_with_text_that_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The edited model's misspelt argument: its fix names --edited-kwargs (the --kwargs it named set the
    original's), and that flag as written runs."""
    argv = ["check-surgery", "torchvision:resnet18", "torchvision:resnet18", "--input", "3,32,32", "--json"]
    assert main([*argv, "--edited-kwargs", "num_clases=10"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"edited model 'torchvision:resnet18': .* did you mean 'num_classes'\? --edited-kwargs ", err)
    assert main([*argv, *shlex.split(err.strip().rpartition("did you mean 'num_classes'? ")[2])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {p["name"]: p["shape_after"] for p in report["params"]}["fc.weight"] == [10, 512]


# --------------------------------------------------------------------------- models by name, --kwargs, typed --input


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Empty caches; torch.hub's download and urlopen raise: a download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    yield
    assert not list(tmp_path.rglob("*.*")), "nothing may be written to the caches"


def test_summary_timm_by_name(offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "timm:resnet18", "--input", "1,64,64"]) == 0
    out = capsys.readouterr().out
    assert "Total params:          11,689,512" in out  # resnet18's published count
    assert "conv1 (Conv2d) expects in_channels=3, got 1 — fold it with adapt_input_channels(model, 1)" in out
    assert "Output:                (1, 1000)" in out


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_summary_hf_model_type_with_config_fields_and_typed_input(
    offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    small = "num_hidden_layers=2,hidden_size=64,num_attention_heads=4"
    assert main(["summary", "hf:bert", "--kwargs", small, "--input", "input_ids=16:long", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    # embeddings 30,522×64 + 512×64 + 2×64 + LayerNorm 128 = 1,986,432; per layer: Q, K, V, O 4×(64×64+64) = 16,640,
    # LayerNorm 128, intermediate 64×3,072+3,072 = 199,680, output 3,072×64+64 = 196,672, LayerNorm 128 = 413,248;
    # pooler 64×64+64 = 4,160: 1,986,432 + 2 × 413,248 + 4,160 = 2,817,088 (intermediate_size is BERT's default 3,072)
    assert d["total"] == 2_817_088 and d["input_shapes"] == {"input_ids": [1, 16]}
    assert d["output_shape"] == {"last_hidden_state": [1, 16, 64], "pooler_output": [1, 64]}
    argv = ["summary", "hf:bert", "--kwargs", f"{small},intermediate_size=128", "--input", "input_ids=16:long"]
    assert main([*argv, "--input", "attention_mask=16:long", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    # per layer with intermediate 128: 16,640 + 128 + 8,320 + 8,256 + 128 = 33,472; 1,986,432 + 2 × 33,472 + 4,160
    assert d["total"] == 2_057_536 and d["input_shapes"] == {"input_ids": [1, 16], "attention_mask": [1, 16]}


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_summary_smp_with_kwargs(offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["summary", "segmentation_models_pytorch:Unet", "--input", "3,64,64", "--json"]
    kwargs = "encoder_name=resnet18,encoder_weights=None,classes=2"
    assert main([*argv, "--kwargs", kwargs]) == 0
    d = json.loads(capsys.readouterr().out)
    import segmentation_models_pytorch as smp

    unet = smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=2)
    assert d["total"] == sum(p.numel() for p in unet.parameters()) and d["output_shape"] == [1, 2, 64, 64]
    assert main(argv) == 2  # smp's default encoder_weights="imagenet" would download
    err = capsys.readouterr().err
    assert "tried to download (huggingface.co)" in err and "pass --kwargs encoder_weights=None" in err


def test_typed_inputs_give_the_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    # ByteView's output has the input's bytes: 4 elements of bf16 are 8 bytes, of float32 16, of long 32
    for dtype, size in (("bf16", 8), ("float", 16), ("long", 32)):
        assert main(["summary", "models:ByteView", "--input", f"4:{dtype}", "--batch", "2", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["output_shape"] == [2, size]
    assert main(["summary", "models:ByteView", "--input", "x=4:half", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output_shape"] == [1, 8]


def test_several_positional_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "models:TwoInputs", "--input", "3,8,8", "--input", "1,8,8", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input_shapes"] == {"image": [1, 3, 8, 8], "mask": [1, 1, 8, 8]} and d["output_shape"] == [1, 4, 8, 8]


def test_a_missing_input_names_every_input_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a probe: one unnamed --input for a two-input model suggested adding --input mask=..., which then
    failed with 'name every input or none'; the suggestion names them all, and runs as written."""
    assert main(["summary", "models:TwoInputs", "--input", "3,8,8"]) == 2
    hint = re.search(r"CLI: ((?:--input \S+ ?)+);", capsys.readouterr().err)
    assert hint is not None and hint.group(1) == "--input image=3,8,8 --input mask=3,224,224"
    assert main(["summary", "models:TwoInputs", *hint.group(1).split(), "--json"]) == 0  # runs (mask: an example)
    assert json.loads(capsys.readouterr().out)["input_shapes"] == {"image": [1, 3, 8, 8], "mask": [1, 3, 224, 224]}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "image=3,8,8", "--input", "1,8,8"], "name every input or none"),
        (["--input", "image=3,8,8", "--input", "image=3,8,8"], "--input image= is given twice"),
        (["--input", "image=3,8,8:complex"], "unknown dtype 'complex' — write one of long, int64"),
        (["--input", "image=3,8,8", "--kwargs", "x"], "'x' is not NAME=VALUE"),
        (["--input", "picture=3,8,8"], "input 'picture' is not an argument of forward"),
    ],
)
def test_input_and_kwargs_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "models:TwoInputs", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow  # two resnet18 surgery checks: `make test` runs it, `make check` skips it
def test_check_surgery_with_names_and_kwargs(offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    # a name is built after torch.manual_seed(0): the hand-edited copy, seeded alike, keeps every weight but the head
    argv = ["check-surgery", "torchvision:resnet18", "models:resnet18_10_classes", "--input", "3,32,32", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert {(p["name"], p["status"]) for p in d["params"] if p["status"] != "kept"} == {
        ("fc.weight", "reinitialised"),
        ("fc.bias", "reinitialised"),
    }
    argv = ["check-surgery", "torchvision:resnet18", "torchvision:resnet18", "--input", "3,32,32", "--json"]
    assert main([*argv, "--kwargs", "num_classes=10", "--edited-kwargs", "num_classes=10"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["counts"]["reinitialised"] == 0 and d["counts"]["kept"] == 62  # resnet18 has 62 parameter tensors
    assert main([*argv, "--kwargs", "num_classes=10"]) == 0  # only the original gets --kwargs: 10 → 1,000 classes
    d = json.loads(capsys.readouterr().out)
    assert d["counts"]["kept"] < 62 and d["counts"]["reinitialised"] > 0


# ---------------------------------------------------------------- --depth, --columns, --format


def test_summary_depth_and_columns(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["summary", "torchvision.models:resnet18", "--input", "3,64,64"]
    assert main([*argv, "--depth", "1", "--columns", "params,kernel"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["Layer", "Type", "Params", "Kernel"]
    layer1 = next(line for line in lines if line.startswith("layer1 "))
    assert layer1.split() == ["layer1", "Sequential", "147,968", "-"]  # 2 BasicBlocks of 2 convs (64→64, 3×3) + BNs
    assert not any(line.startswith("  layer1.0") for line in lines)  # depth 1: the blocks inside are folded


def test_summary_formats(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["summary", "models:CifarNet", "--input", "1,32,32"]
    assert main([*base, "--format", "csv", "--columns", "params"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["Layer,Type,Params", "conv1,Conv2d,456"] and out.endswith("fc3,Linear,850\n")
    assert main([*base, "--format", "markdown"]) == 0
    assert "| conv1   | Conv2d    | (1, 6, 28, 28)  | 456 → 156 |" in capsys.readouterr().out
    assert main([*base, "--format", "html"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<div>") and "#f4cccc" in out
    assert main([*base, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 62_006
    assert main([*base, "--json"]) == 0  # the older spelling
    assert json.loads(capsys.readouterr().out)["total"] == 62_006


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--columns", "params,flops"], "column='flops' — use one of 'input', 'output', 'params'"),
        (["--depth", "0"], "depth=0 — give a positive int"),
        (["--format", "xls"], "invalid choice: 'xls'"),
    ],
)
def test_summary_table_options_are_checked(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "models:CifarNet", "--input", "1,32,32", *extra]) == 2
    assert message in capsys.readouterr().err
