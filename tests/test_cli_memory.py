"""``torchsurgeon memory``: the plan, the largest batch for a budget, and errors."""

from __future__ import annotations

import json

import pytest

from models import cifarnet_seeded
from torchsurgeon import memory_plan
from torchsurgeon.cli import main


def test_memory_table_and_budget(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["memory", "models:cifarnet_seeded", "--input", "3,32,32", "--batch", "4", "--optimizer", "sgd"]
    assert main([*argv, "--budget", "2MiB"]) == 0
    out = capsys.readouterr().out
    plan = memory_plan(cifarnet_seeded(), (3, 32, 32), batch=4, optimizer="sgd")
    assert "CifarNet memory plan" in out and "Peak (training step)" in out
    assert f"Largest batch whose peak fits in 2MiB: {plan.max_batch(2 * 2**20)}" in out


def test_memory_json_with_amp(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["memory", "models:cifarnet_seeded", "--input", "3,32,32", "--amp", "bf16", "--json", "--budget", "1GiB"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["amp"] == "bfloat16" and d["optimizer"] == "adamw" and d["budget"] == 2**30 and d["max_batch"] > 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "lots"], "budget 'lots' is not a size"),
        (["--optimizer", "lion"], "optimizer='lion' — use one of"),
    ],
)
def test_memory_errors_exit_2(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "models:cifarnet_seeded", "--input", "3,32,32", *extra]) == 2
    assert message in capsys.readouterr().err
