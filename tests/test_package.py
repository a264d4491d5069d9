"""The package namespace: public names written once in __init__.pyi, exported lazily from their modules."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import torchsurgeon
from torchsurgeon._lazy import attach_stub, stub_exports

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

_STUB = Path(torchsurgeon.__file__).with_suffix(".pyi")


def test_every_public_name_resolves_to_its_module() -> None:
    assert set(torchsurgeon.__all__) == set(torchsurgeon._LAZY) | {"__version__"}
    for name, module in torchsurgeon._LAZY.items():
        assert getattr(torchsurgeon, name) is getattr(importlib.import_module(f"torchsurgeon.{module}"), name)
    assert set(torchsurgeon.__all__) <= set(dir(torchsurgeon))


def test_the_stub_is_the_list_of_public_names() -> None:
    text = _STUB.read_text()
    assert torchsurgeon._LAZY == stub_exports(text)
    for name in torchsurgeon._LAZY:
        assert text.count(f"import {name} as {name}\n") == 1
    assert "paramcount" in torchsurgeon._LAZY and "TensorMeta" not in torchsurgeon._LAZY


def test_the_stub_ships_with_the_package() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "*.pyi" in pyproject["tool"]["setuptools"]["package-data"]["torchsurgeon"]


@pytest.mark.parametrize(
    ("stub", "message"),
    [
        ("from .analysis import paramcount\n", r"write `from .analysis import paramcount as paramcount`"),
        ("from .analysis import paramcount as count\n", r"line 1: write `from .analysis import paramcount as"),
        (
            "from .analysis import paramcount as paramcount\nfrom .params import paramcount as paramcount\n",
            r"line 2: paramcount is already exported from .analysis — write each public name once",
        ),
    ],
)
def test_a_malformed_stub_says_which_line_to_fix(tmp_path: Path, stub: str, message: str) -> None:
    (tmp_path / "__init__.pyi").write_text(stub)
    with pytest.raises(ImportError, match=message):
        attach_stub("pkg", str(tmp_path / "__init__.py"))


def test_a_missing_stub_is_an_import_error(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"pkg: cannot read .*__init__.pyi, the list of its public names"):
        attach_stub("pkg", str(tmp_path / "__init__.py"))


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match=r"module 'torchsurgeon' has no attribute 'paramcounts'"):
        torchsurgeon.paramcounts  # noqa: B018


@pytest.mark.slow
def test_import_is_cheap_until_used() -> None:
    code = (
        "import sys, torchsurgeon\n"
        "before = 'torch' in sys.modules\n"
        "torchsurgeon.paramcount\n"
        "print(before, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr
