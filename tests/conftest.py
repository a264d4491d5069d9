"""Shared pytest configuration: the pytester plugin, --overwrite-expected and the ``expected_file`` fixture."""

from __future__ import annotations

import sys
from collections.abc import Callable
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


@pytest.fixture
def expected_file(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``expected_file(name, text)``: assert ``text`` equals tests/expected/<name>; --overwrite-expected rewrites it."""

    def check(name: str, text: str) -> None:
        path = Path(__file__).parent / "expected" / name
        if request.config.getoption("--overwrite-expected"):
            path.write_text(text)
        assert text == path.read_text()

    return check
