"""Contracts declared in pyproject.toml: the tables, and messages that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchsurgeon import ConfigError, ShapeContract
from torchsurgeon.config import find_pyproject, read_contracts


def _pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(body)
    return path


def test_read_contracts(tmp_path: Path) -> None:
    path = _pyproject(
        tmp_path,
        """
[tool.torchsurgeon]
pythonpath = ["src"]

[[tool.torchsurgeon.contracts]]
model = "mypkg.models:build_classifier"
input = [1, 224, 224]
output = [10]
max_params = 26_000_000
lock = "tests/arch/classifier.lock.json"

[[tool.torchsurgeon.contracts]]
model = "mypkg.models:build_two"
input = {image = [3, 64, 64], mask = [1, 64, 64]}
no_invalid = false
batch = 2
""",
    )
    first, second = read_contracts(path)
    assert first.model == "mypkg.models:build_classifier" and first.index == 0
    assert first.contract == ShapeContract(
        input=(1, 224, 224), output=(10,), max_params=26_000_000, lock=tmp_path / "tests/arch/classifier.lock.json"
    )
    assert first.pythonpath == ((tmp_path / "src").resolve(),)
    assert second.contract == ShapeContract(
        input={"image": (3, 64, 64), "mask": (1, 64, 64)}, no_invalid=False, batch=2
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[tool.other]\n", r"has no \[\[tool.torchsurgeon.contracts\]\] table — add one"),
        ("[tool.torchsurgeon\n", r"is not valid TOML"),
        ("[tool.torchsurgeon]\ncontracts = 3\n", r"key 'tool.torchsurgeon.contracts' must be an array of tables"),
        (
            '[tool.torchsurgeon]\npythonpath = "src"\n[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\n',
            r"key 'tool.torchsurgeon.pythonpath' must be a list",
        ),
        ("[[tool.torchsurgeon.contracts]]\ninput = [1]\n", r"#1: key 'model' is missing"),
        ('[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\n', r"#1: key 'input' is missing"),
        (
            '[[tool.torchsurgeon.contracts]]\nmodel = "a.b"\ninput = [1]\n',
            r"key 'model' is 'a.b' — expected 'MODULE:CALLABLE'",
        ),
        (
            '[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\nmax_param = 5\n',
            r"#1: unknown key 'max_param' — did you mean 'max_params'\?",
        ),
        (
            '[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\n[[tool.torchsurgeon.contracts]]\n'
            'model = "a:b"\ninput = [1, -224, 224]\n',
            r"#2: key 'input': input=\[1, -224, 224\]: dimension 1 is -224 — every dimension must be positive",
        ),
        ('[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\nbatch = 0\n', r"key 'batch': batch=0"),
        ('[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\nlock = 1\n', r"key 'lock' is 1"),
        (  # the example is written as TOML writes it (a probe: "(1, 224, 224)" is not TOML)
            '[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = {image = [3, 8, 8], mask = "1,8,8"}\n',
            r"input\['mask'\]='1,8,8' is not a shape — give a list of ints, e.g. \[1, 224, 224\]",
        ),
    ],
)
def test_malformed_tables_name_the_file_and_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = _pyproject(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as info:
        read_contracts(path)
    assert "pyproject.toml" in str(info.value)


def test_missing_pyproject(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist — pass the path of your pyproject.toml"):
        read_contracts(tmp_path / "pyproject.toml")


def test_find_pyproject_takes_the_nearest(tmp_path: Path) -> None:
    _pyproject(tmp_path, "")
    (tmp_path / "sub" / "pkg").mkdir(parents=True)
    inner = _pyproject(tmp_path / "sub", "")
    assert find_pyproject(tmp_path / "sub" / "pkg") == inner.resolve()
    assert find_pyproject(tmp_path) == (tmp_path / "pyproject.toml").resolve()


def test_a_misspelt_tool_key_is_refused(tmp_path: Path) -> None:
    """[tool.torchsurgeon] pythonpth = ["src"] was ignored: the models were imported from the project's root."""
    body = '[tool.torchsurgeon]\npythonpth = ["src"]\n[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\n'
    with pytest.raises(
        ConfigError, match=r"\[tool.torchsurgeon\]: unknown key 'pythonpth' — did you mean 'pythonpath'\?"
    ):
        read_contracts(_pyproject(tmp_path, body))
    with pytest.raises(ConfigError, match=r"unknown key 'models' — the keys are contracts, pythonpath"):
        read_contracts(_pyproject(tmp_path, body.replace("pythonpth", "models")))
