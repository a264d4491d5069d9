"""The package namespace: lazy exports that resolve to the defining modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import torchsurgeon


def test_every_public_name_resolves_to_its_module() -> None:
    assert set(torchsurgeon.__all__) == set(torchsurgeon._LAZY) | {"__version__"}
    for name, module in torchsurgeon._LAZY.items():
        assert getattr(torchsurgeon, name) is getattr(importlib.import_module(f"torchsurgeon.{module}"), name)
    assert set(torchsurgeon.__all__) <= set(dir(torchsurgeon))


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match=r"module 'torchsurgeon' has no attribute 'paramcounts'"):
        torchsurgeon.paramcounts  # noqa: B018


def test_import_is_cheap_until_used() -> None:
    code = (
        "import sys, torchsurgeon\n"
        "before = 'torch' in sys.modules\n"
        "torchsurgeon.paramcount\n"
        "print(before, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr
