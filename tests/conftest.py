"""Shared pytest configuration: the pytester plugin and --overwrite-expected."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--overwrite-expected",
        action="store_true",
        default=False,
        help="rewrite the expected-output files in tests/expected/ instead of comparing",
    )
