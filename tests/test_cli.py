"""The command line: summary, errors and exit codes."""

from __future__ import annotations

import json

import pytest

from torchsurgeon import ConfigError
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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "torchvision.nope:resnet18", "--input", "3,8,8"], "cannot import 'torchvision.nope'"),
        (["summary", "torchvision.models:nope", "--input", "3,8,8"], "has no attribute 'nope'"),
        (["summary", "torchvision.models", "--input", "3,8,8"], "expected MODULE:CALLABLE"),
        (["summary", "torchvision.models:resnet18", "--input", "3,a,8"], "'a' is not an integer"),
        (["summary", "torchvision.models:resnet18", "--input", "3,0,8"], "dimension 0 must be positive"),
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
    assert d["counts"] == {"kept": 8, "folded": 0, "reinitialised": 2, "new": 2, "removed": 0, "invalid": 0}


def test_check_surgery_bad_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-surgery", "models:nope", "models:cifarnet_seeded", "--input", "1,32,32"]) == 2
    assert "has no attribute 'nope'" in capsys.readouterr().err


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
        (["--columns", "params,flops"], "column 'flops' — choose from input, output, params"),
        (["--depth", "0"], "depth=0 — give a positive int"),
        (["--format", "xls"], "invalid choice: 'xls'"),
    ],
)
def test_summary_table_options_are_checked(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "models:CifarNet", "--input", "1,32,32", *extra]) == 2
    assert message in capsys.readouterr().err
