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
