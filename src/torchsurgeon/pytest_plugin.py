"""pytest plugin (entry point ``pytest11``): shape contracts in tests.

Active as soon as torchsurgeon is installed; it imports only the public API,
and only when a hook needs it (so a pytest run that uses none of it does not
pay for importing torch here).

* ``@pytest.mark.shape_contract(input=(1, 224, 224), output=(10,), ...)`` on a
  test that returns a model, or that uses a fixture named ``model``: the
  :class:`~torchsurgeon.ShapeContract` is checked after the test body.
* the ``shape_contract`` fixture: ``shape_contract(model, input=..., output=...)``
  is :func:`~torchsurgeon.assert_contract`.
* ``assert paramcount(m, (1, 224, 224)).output_shape == (1, 10)``: a failure
  shows the last layers that changed the shape.
* ``pytest --torchsurgeon-update`` rewrites architecture lockfiles
  (:func:`~torchsurgeon.assert_matches_lock`, ``lock=``) instead of comparing.

A relative ``lock=`` path in the marker is relative to pytest's rootdir (the
folder of ``pyproject.toml``/``pytest.ini``, as ``lock`` in
``[tool.torchsurgeon]``), not to the folder pytest was started from: a run
from a subfolder reads and rewrites the same lockfile.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from torchsurgeon import ContractResult

__all__ = (
    "pytest_addoption",
    "pytest_assertrepr_compare",
    "pytest_configure",
    "pytest_pyfunc_call",
    "pytest_report_header",
    "pytest_unconfigure",
    "shape_contract",
)

_MARKER = "shape_contract"
_SAVED_ENV = pytest.StashKey[tuple[str, bool, str | None]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--torchsurgeon-update`` in its own group."""
    group = parser.getgroup("torchsurgeon", "torchsurgeon shape contracts")
    group.addoption(
        "--torchsurgeon-update",
        action="store_true",
        default=False,
        help="rewrite architecture lockfiles (assert_matches_lock, shape_contract lock=) from the models "
        "instead of comparing",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; with ``--torchsurgeon-update``, set ``TORCHSURGEON_UPDATE=1``."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(input, output=None, params=None, max_params=None, trainable=None, frozen=None, "
        "no_invalid=True, batch=1, lock=None): after the test body, check the model the test returns "
        "(or its `model` fixture) against a torchsurgeon ShapeContract; a relative lock= path is relative "
        "to the rootdir",
    )
    if config.getoption("torchsurgeon_update", default=False):
        from torchsurgeon import UPDATE_ENV

        config.stash[_SAVED_ENV] = (UPDATE_ENV, UPDATE_ENV in os.environ, os.environ.get(UPDATE_ENV))
        os.environ[UPDATE_ENV] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore ``TORCHSURGEON_UPDATE`` as it was before the run."""
    saved = config.stash.get(_SAVED_ENV, None)
    if saved is None:
        return
    name, was_set, value = saved
    if was_set and value is not None:
        os.environ[name] = value
    else:
        os.environ.pop(name, None)


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say so when lockfiles are being rewritten."""
    if config.getoption("torchsurgeon_update", default=False):
        return "torchsurgeon: --torchsurgeon-update: architecture lockfiles are rewritten, not compared"
    return None


@pytest.fixture
def shape_contract() -> Callable[..., ContractResult]:
    """``shape_contract(model, input=(1, 224, 224), output=(10,), ...)``: assert a shape contract."""
    from torchsurgeon import assert_contract

    return assert_contract


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a test marked ``shape_contract``, then check the model it returned or its ``model`` fixture."""
    marker = pyfuncitem.get_closest_marker(_MARKER)
    if marker is None:
        return None
    from torch import nn

    from torchsurgeon import ConfigError, InputError, ShapeContract, check_contract

    where = f"@pytest.mark.{_MARKER} on {pyfuncitem.name}"
    func = pyfuncitem.obj
    if inspect.iscoroutinefunction(func):
        pytest.fail(f"{where}: async tests are not supported — build the model in a sync test", pytrace=False)
    try:
        contract = ShapeContract(*marker.args, **marker.kwargs)
    except (TypeError, InputError) as exc:
        problem = f"{where}: {exc}"  # failed outside the except block: one message, no chained traceback
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)
    if contract.lock is not None and not Path(contract.lock).is_absolute():
        # the rootdir, not the cwd: a run from a subfolder must find (and rewrite) the same lockfile
        contract = dataclasses.replace(contract, lock=pyfuncitem.config.rootpath / contract.lock)
    funcargs = pyfuncitem.funcargs
    returned = func(**{name: funcargs[name] for name in inspect.signature(func).parameters if name in funcargs})
    model = returned if isinstance(returned, nn.Module) else funcargs.get("model")
    if not isinstance(model, nn.Module):
        pytest.fail(
            f"{where}: the test returned {type(returned).__name__} and has no `model` fixture — "
            "return the model from the test, or request a fixture named `model`",
            pytrace=False,
        )
    try:
        result = check_contract(model, contract)
    except ConfigError as exc:  # a missing or unreadable lockfile
        problem = f"{where}: {exc}"
    if problem:
        pytest.fail(problem, pytrace=False)
    if not result.ok:
        pytest.fail(result.table(), pytrace=False)
    return True


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """Explain ``report.output_shape == (...)`` failures with the layers that changed the shape."""
    # torchsurgeon not imported yet: no OutputShape can exist, and nothing is imported here
    output_shape = getattr(sys.modules.get("torchsurgeon"), "OutputShape", None)
    if op != "==" or output_shape is None or not (isinstance(left, output_shape) or isinstance(right, output_shape)):
        return None
    shape, other = (left, right) if isinstance(left, output_shape) else (right, left)
    if not isinstance(other, (tuple, list)):
        return None
    lines = [f"{left!r} == {right!r}"]
    if isinstance(other, list):
        lines.append("output_shape is a tuple: a tuple never equals a list — compare with a tuple")
    elif len(shape) != len(other):
        lines.append(f"output_shape has {len(shape)} dimensions, expected {len(other)}")
    else:
        i = next((i for i, (a, b) in enumerate(zip(shape, other)) if a != b), 0)
        lines.append(f"dimension {i} is {shape[i]!r}, expected {other[i]!r}")
    if shape.shape_changes():
        from torchsurgeon import explain_output_shape  # already imported: an OutputShape exists

        lines.append("Last layers that changed the shape:")
        lines += explain_output_shape(shape).splitlines()
    return lines
