"""Lazy package exports (PEP 562) read from the package's ``__init__.pyi``.

The Scientific Python SPEC 1 ``attach_stub`` pattern, without the lazy_loader
dependency: the stub is the one place where the public names are written,
one ``from .module import Name as Name`` line each.  Type checkers read the
stub; at import, :func:`attach_stub` reads the same lines with :mod:`ast`
and returns the package's ``__getattr__`` and ``__dir__``, which import a
submodule the first time one of its names is used.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ("attach_stub", "stub_exports")


def stub_exports(text: str) -> dict[str, str]:
    """``{public name: submodule}`` from the ``from .module import Name as Name`` lines of a stub.

    Other statements (``__version__: str``, absolute imports) export nothing.

    Raises
    ------
    ImportError
        For a relative import that does not re-export under the same name
        (``from .module import Name``, ``... as Other``, ``*``): type checkers
        would not see the name the package exports.  Also for a name written twice.

    Examples
    --------
    >>> stub_exports("from .analysis import paramcount as paramcount\\n__version__: str\\n")
    {'paramcount': 'analysis'}
    >>> stub_exports("from .analysis import paramcount\\n")
    Traceback (most recent call last):
    ...
    ImportError: line 1: write `from .analysis import paramcount as paramcount` to export paramcount
    """
    exports: dict[str, str] = {}
    for node in ast.parse(text).body:
        if not (isinstance(node, ast.ImportFrom) and node.level == 1 and node.module):
            continue
        for alias in node.names:
            if alias.asname != alias.name:
                raise ImportError(
                    f"line {node.lineno}: write `from .{node.module} import {alias.name} as {alias.name}` "
                    f"to export {alias.name}"
                )
            if alias.name in exports:
                raise ImportError(
                    f"line {node.lineno}: {alias.name} is already exported from .{exports[alias.name]} — "
                    "write each public name once"
                )
            exports[alias.name] = node.module
    return exports


def attach_stub(package: str, init_file: str) -> tuple[dict[str, str], Callable[[str], Any], Callable[[], list[str]]]:
    """Lazy exports of ``package``, listed in the ``.pyi`` stub beside its ``__init__.py``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    init_file : str
        Its ``__file__``.

    Returns
    -------
    exports : dict
        Public name -> the submodule that defines it.
    __getattr__, __dir__ : callable
        For the package's namespace: a name is imported from its submodule on
        first use, then kept in the package.

    Raises
    ------
    ImportError
        When the stub is missing or malformed (see :func:`stub_exports`).

    Examples
    --------
    >>> import torchsurgeon
    >>> exports, getattr_, dir_ = attach_stub("torchsurgeon", torchsurgeon.__file__)
    >>> exports["paramcount"], getattr_("paramcount") is torchsurgeon.paramcount, "paramcount" in dir_()
    ('analysis', True, True)
    """
    stub = Path(init_file).with_suffix(".pyi")
    try:
        text = stub.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportError(
            f"{package}: cannot read {stub}, the list of its public names ({exc}) — reinstall {package}"
        ) from exc
    try:
        exports = stub_exports(text)
    except ImportError as exc:
        raise ImportError(f"{stub}, {exc}") from None

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return exports, __getattr__, __dir__
