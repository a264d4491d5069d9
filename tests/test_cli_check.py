"""``torchsurgeon lock`` and ``torchsurgeon check``: output, exit codes 0/1/2, nothing written over on error."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from torchsurgeon import UPDATE_ENV, read_lock
from torchsurgeon.cli import main

MODELS = """
from torch import nn

N_CLASSES = 10


def build_classifier():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, N_CLASSES)
    )


def boom():
    raise RuntimeError("weights file not found")
"""

CONTRACT = """
[project]
name = "demo"

[[tool.torchsurgeon.contracts]]
model = "{pkg}.models:build_classifier"
input = [1, 32, 32]
output = [10]
max_params = 1_000
lock = "tests/arch/classifier.lock.json"
"""


class Project:
    """A throw-away project: a model package (unique name), a pyproject.toml contract and a lockfile."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pkg = f"demo_{uuid.uuid4().hex[:10]}"  # unique: sys.modules caches imported packages
        (root / self.pkg).mkdir(parents=True)
        (root / self.pkg / "__init__.py").write_text("")
        self.models = root / self.pkg / "models.py"
        self.models.write_text(MODELS)
        self.pyproject = root / "pyproject.toml"
        self.pyproject.write_text(CONTRACT.format(pkg=self.pkg))
        self.lock = root / "tests" / "arch" / "classifier.lock.json"

    def set_classes(self, n: int) -> None:
        self.models.write_text(MODELS.replace("N_CLASSES = 10", f"N_CLASSES = {n}"))
        sys.modules.pop(f"{self.pkg}.models", None)

    def add(self, table: str) -> None:
        self.pyproject.write_text(self.pyproject.read_text() + table.format(pkg=self.pkg))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setattr(sys, "path", list(sys.path))  # check and lock add the project folder
    monkeypatch.delenv(UPDATE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    proj = Project(tmp_path)
    assert main(["lock", f"{proj.pkg}.models:build_classifier", "--input", "1,32,32", "-o", str(proj.lock)]) == 0
    return proj


def test_lock_writes_the_lockfile(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.lock.unlink()
    assert main(["lock", f"{project.pkg}.models:build_classifier", "--input", "1,32,32", "-o", str(project.lock)]) == 0
    out = capsys.readouterr().out
    data = read_lock(project.lock)
    conv, linear = 1 * 8 * 9 + 8, 8 * 10 + 10
    assert out == f"wrote {project.lock}: 5 layers, {conv + linear} params, output [1, 10]\n"
    assert [(r["name"], r["params"]) for r in data["layers"]] == [
        ("0", conv),
        ("1", 0),
        ("2", 0),
        ("3", 0),
        ("4", linear),
    ]
    assert data["input"] == [1, 32, 32] and data["batch"] == 1


def test_check_passes(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"Shape contract holds: {project.pkg}.models:build_classifier, input (1, 32, 32), batch 1: "
        "output (1, 10), 170 params  ["
    )


def test_check_finds_the_nearest_pyproject(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    deeper = project.root / "src" / "deeper"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    assert main(["check"]) == 0
    (deeper / "pyproject.toml").write_text("[project]\nname = 'inner'\n")
    assert main(["check"]) == 2  # the nearest one has no contracts
    assert main(["check", "--config", str(project.pyproject)]) == 0


def test_a_broken_contract_exits_1_with_the_table(
    project: Project, capsys: pytest.CaptureFixture[str], expected_file: Callable[[str, str], None]
) -> None:
    project.set_classes(9)
    capsys.readouterr()
    assert main(["check"]) == 1
    expected_file("cli_check_broken.txt", capsys.readouterr().out.replace(project.pkg, "demo"))


def test_check_never_rewrites_the_lock(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    before = project.lock.read_text()
    project.set_classes(9)
    monkeypatch.setenv(UPDATE_ENV, "1")
    assert main(["check"]) == 1
    assert project.lock.read_text() == before


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ('model = "{pkg}.nope:build"\ninput = [1, 32, 32]\n', "model", "cannot import '{pkg}.nope'"),
        ('model = "{pkg}.models:nope"\ninput = [1, 32, 32]\n', "model", "has no attribute 'nope'"),
        ('model = "{pkg}.models:boom"\ninput = [1, 32, 32]\n', "model", "raised RuntimeError: weights file not found"),
        (
            'model = "{pkg}.models:build_classifier"\ninput = [1, 32, 32]\nlock = "missing.lock.json"\n',
            "lock",
            "lockfile missing.lock.json does not exist",
        ),
    ],
)
def test_configuration_errors_exit_2_naming_key_and_file(
    project: Project, capsys: pytest.CaptureFixture[str], table: str, key: str, message: str
) -> None:
    project.add("\n[[tool.torchsurgeon.contracts]]\n" + table)
    capsys.readouterr()
    assert main(["check"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("Shape contract holds:")  # the other contract is still checked
    assert err.startswith(f"torchsurgeon: error: pyproject.toml [[tool.torchsurgeon.contracts]] #2, key '{key}': ")
    assert message.format(pkg=project.pkg) in err


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("input = [1, -224, 224]\n", "#2: key 'input': input=[1, -224, 224]: dimension 1 is -224"),
        ("max_param = 5\n", "#2: unknown key 'max_param' — did you mean 'max_params'?"),
        ('output = "10"\n', "#2: key 'output': output='10' is not a shape"),
    ],
)
def test_malformed_tables_exit_2_before_any_model_runs(
    project: Project, capsys: pytest.CaptureFixture[str], table: str, message: str
) -> None:
    shape = "" if table.startswith("input") else "input = [1, 32, 32]\n"
    project.add('\n[[tool.torchsurgeon.contracts]]\nmodel = "{pkg}.models:build_classifier"\n' + shape + table)
    capsys.readouterr()
    assert main(["check"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("torchsurgeon: error: pyproject.toml [[tool.torchsurgeon.contracts]] ")
    assert message in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": 1, "input": [1, 32, 32], "batch": 1, "layers": [\n<<<<<<< HEAD\n', "is not valid JSON"),
        ('{"format": 7, "input": [1, 32, 32], "batch": 1, "layers": []}', "has format 7, newer than this torchsurgeon"),
    ],
)
def test_bad_lockfiles_exit_2_and_are_not_written_over(
    project: Project, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    project.lock.write_text(text)
    capsys.readouterr()
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "key 'lock': lockfile tests/arch/classifier.lock.json" in err and message in err
    assert project.lock.read_text() == text
    if "format 7" in text:  # `lock` refuses to downgrade it too
        assert (
            main(["lock", f"{project.pkg}.models:build_classifier", "--input", "1,32,32", "-o", str(project.lock)]) == 2
        )
        assert "not overwritten" in capsys.readouterr().err
        assert project.lock.read_text() == text


def test_lock_errors_write_nothing(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    before = project.lock.read_text()
    spec = f"{project.pkg}.models"
    assert main(["lock", f"{spec}:boom", "--input", "1,32,32", "-o", str(project.lock)]) == 2
    assert main(["lock", f"{spec}:build_classifier", "--input", "1,-32,32", "-o", str(project.lock)]) == 2
    assert main(["lock", f"{spec}:boom", "--input", "1,32,32", "-o", "new.lock.json"]) == 2
    err = capsys.readouterr().err
    assert "calling boom() raised RuntimeError" in err and "dimension 1 is -32 — every dimension" in err
    assert project.lock.read_text() == before and not (project.root / "new.lock.json").exists()


def test_missing_or_invalid_pyproject(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(tmp_path / "pyproject.toml")]) == 2
    (tmp_path / "pyproject.toml").write_text("[tool.torchsurgeon\n")
    assert main(["check", "--config", str(tmp_path / "pyproject.toml")]) == 2
    err = capsys.readouterr().err
    assert "pyproject.toml does not exist" in err and "is not valid TOML" in err


def test_pythonpath_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    proj = Project(tmp_path / "src")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.torchsurgeon]\npythonpath = ["src"]\n\n'
        f'[[tool.torchsurgeon.contracts]]\nmodel = "{proj.pkg}.models:build_classifier"\n'
        "input = [1, 8, 8]\noutput = [10]\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    assert json.dumps(str(tmp_path / "src")) in json.dumps(sys.path)


NAMED = """
[[tool.torchsurgeon.contracts]]
model = "hf:bert"
kwargs = {{num_hidden_layers = 1, hidden_size = 32, num_attention_heads = 2, intermediate_size = 64, vocab_size = 100}}
input = {{input_ids = "16:long", attention_mask = "16:long"}}
output = {{last_hidden_state = [16, 32], pooler_output = [32]}}

[[tool.torchsurgeon.contracts]]
model = "torch.nn:Linear"
kwargs = "in_features=4,out_features=2,bias=False,device=None"
input = [4]
params = 8

[[tool.torchsurgeon.contracts]]
model = "models:ByteView"
input = "4:bf16"
output = [8]
lock = "tests/arch/bytes.lock.json"
"""


@pytest.mark.slow
def test_contracts_with_model_names_kwargs_and_typed_inputs(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lock = project.root / "tests" / "arch" / "bytes.lock.json"
    assert main(["lock", "models:ByteView", "--input", "4:bf16", "-o", str(lock)]) == 0
    assert json.loads(lock.read_text())["input"] == "4:bf16"  # the dtype is recorded, and read back below
    project.add(NAMED)
    capsys.readouterr()
    assert main(["check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(
        "Shape contract holds: hf:bert, input {input_ids: 16:long, attention_mask: 16:long}, batch 1: "
        "output {last_hidden_state: (1, 16, 32), pooler_output: (1, 32)}"
    )
    assert lines[2].startswith("Shape contract holds: torch.nn:Linear, input (4), batch 1: output (1, 2), 8 params")
    assert lines[3].startswith("Shape contract holds: models:ByteView, input 4:bf16, batch 1: output (1, 8), 0 params")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kwargs = "in_features"\n', "#2: key 'kwargs': --kwargs 'in_features': 'in_features' is not NAME=VALUE"),
        ("kwargs = [1, 2]\n", "#2: key 'kwargs' is [1, 2] — give a table, e.g. kwargs = {num_classes = 10}"),
        ('input = {{input_ids = "16:lng"}}\n', "#2: key 'input': '16:lng': unknown dtype 'lng'"),
    ],
)
def test_malformed_kwargs_and_typed_inputs(
    project: Project, capsys: pytest.CaptureFixture[str], table: str, message: str
) -> None:
    shape = "" if table.startswith("input") else "input = [1, 32, 32]\n"
    project.add('\n[[tool.torchsurgeon.contracts]]\nmodel = "hf:bert"\n' + shape + table)
    capsys.readouterr()
    assert main(["check"]) == 2
    assert message in capsys.readouterr().err


def _named_command(text: str) -> list[str]:
    """The `torchsurgeon ...` command between backticks in a message, as argv for main()."""
    import re
    import shlex

    command = re.search(r"`(torchsurgeon lock [^`]*)`", text)
    assert command is not None, text
    return shlex.split(command.group(1))[1:]


def test_the_lock_commands_check_names_run_as_written(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """A probe: check said `torchsurgeon lock MODULE:CALLABLE --input C,H,W -o ...` for a missing lockfile and
    `torchsurgeon lock ...` for one that differs, though it knows the contract's model, kwargs and input."""
    project.add(
        '\n[[tool.torchsurgeon.contracts]]\nmodel = "{pkg}.models:build_classifier"\n'
        'input = {{input = "1,16,16:float"}}\nbatch = 2\nlock = "tests/arch/other.lock.json"\n'
    )
    capsys.readouterr()
    assert main(["check"]) == 2
    assert main(_named_command(capsys.readouterr().err)) == 0  # creates the missing lockfile
    capsys.readouterr()
    assert main(["check"]) == 0
    project.set_classes(9)
    capsys.readouterr()
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    for part in out.split("Lockfile ")[1:]:  # each differing lockfile names its own command
        assert main(_named_command(part)) == 0
    project.pyproject.write_text(project.pyproject.read_text().replace("output = [10]\n", ""))
    capsys.readouterr()
    assert main(["check"]) == 0, capsys.readouterr().out
