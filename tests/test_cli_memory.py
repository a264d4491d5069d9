"""``torchsurgeon memory``: the plan, the largest batch for a budget, and errors."""

from __future__ import annotations

import json

import pytest
import torch

from models import cifarnet_seeded
from torchsurgeon import memory_plan
from torchsurgeon.cli import main


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_memory_table_and_budget(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["memory", "models:cifarnet_seeded", "--input", "3,32,32", "--batch", "4", "--optimizer", "sgd"]
    assert main([*argv, "--budget", "66MiB"]) == 0
    out = capsys.readouterr().out
    plan = memory_plan(cifarnet_seeded(), (3, 32, 32), batch=4, optimizer="sgd")
    assert "CifarNet memory plan" in out and "Peak (training step)" in out and "cuBLAS workspaces:" in out
    best = plan.max_batch(66 * 2**20)
    assert best > 1 and f"Largest batch whose peak fits in 66MiB: {best}" in out  # 2 MiB beside the workspaces


@pytest.mark.slow
def test_a_budget_without_a_unit_is_refused_with_the_size_meant(capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a probe: ``--budget 24`` was read as 24 bytes and printed a largest batch of 0 without a word."""
    argv = ["memory", "models:cifarnet_seeded", "--input", "3,32,32", "--optimizer", "sgd", "--budget", "24"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "budget '24' has no unit" in err and "write 24GiB (or 24B if you mean bytes)" in err
    assert main([*argv[:-1], "24GiB"]) == 0 and "fits in 24GiB: " in capsys.readouterr().out  # the fix runs
    assert memory_plan(cifarnet_seeded(), (3, 32, 32), optimizer="sgd").max_batch(str(2**31)) > 0  # bytes as text


@pytest.mark.slow
def test_memory_json_with_amp(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["memory", "models:cifarnet_seeded", "--input", "3,32,32", "--amp", "bf16", "--json", "--budget", "1GiB"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["amp"] == "bfloat16" and d["optimizer"] == "adamw" and d["budget"] == 2**30 and d["max_batch"] > 1


@pytest.mark.slow
def test_memory_for_the_cpu_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["memory", "models:cifarnet_seeded", "--input", "3,32,32", "--device", "cpu", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    plan = memory_plan(cifarnet_seeded(), (3, 32, 32), optimizer="adamw", device="cpu")
    assert d["device"] == "cpu" and d["workspace"] == 0 and d["peak"] == plan.peak
    model = cifarnet_seeded()
    foreach = torch.optim.AdamW(model.parameters(), foreach=True)  # by name, each device plans its own default step
    on_cpu = memory_plan(model, (3, 32, 32), optimizer=foreach, device="cpu")
    assert on_cpu.peak == memory_plan(model, (3, 32, 32), optimizer=foreach).peak - 2 * 32 * 2**20  # no dropout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "lots"], "budget 'lots' is not a size"),
        (["--optimizer", "lion"], "optimizer='lion' — use one of"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_memory_errors_exit_2(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "models:cifarnet_seeded", "--input", "3,32,32", *extra]) == 2
    assert message in capsys.readouterr().err
