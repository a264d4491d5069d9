"""Shape contracts declared in ``pyproject.toml``, for ``torchsurgeon check`` and its pre-commit hook.

Each ``[[tool.torchsurgeon.contracts]]`` table names a model (``MODULE:CALLABLE``,
or a name such as ``timm:resnet18`` or ``hf:bert``: :mod:`torchsurgeon.hub`),
its constructor arguments (``kwargs``) and the
:class:`~torchsurgeon.contracts.ShapeContract` fields it must meet;
``[tool.torchsurgeon] pythonpath`` lists the folders the models are imported from.
:func:`find_pyproject` finds the file, :func:`read_contracts` reads and checks
every table, naming the file, the table and the key at fault.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .contracts import ShapeContract
from .errors import ConfigError, InputError, did_you_mean
from .hub import parse_kwargs
from .report import format_path
from .shapespec import input_args

if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    import tomllib
else:  # pragma: no cover - depends on the interpreter
    import tomli as tomllib

__all__ = ("ContractEntry", "find_pyproject", "read_contracts")

_TABLE = "[[tool.torchsurgeon.contracts]]"

_EXAMPLE = f"""
{_TABLE}
model = "mypkg.models:build_classifier"
input = [1, 224, 224]
output = [10]"""


_TOOL_KEYS = ("contracts", "pythonpath")
"""The keys of ``[tool.torchsurgeon]``."""


def _hint(key: str, known: Sequence[str]) -> str:
    """What to say of an unknown ``key``: the known key most like it, else all of them."""
    return f" — {did_you_mean(key, known) or 'the keys are ' + ', '.join(known)}"


def _where(source: Path, index: int) -> str:
    return f"{format_path(source)} {_TABLE} #{index + 1}"


@dataclasses.dataclass(frozen=True)
class ContractEntry:
    """One ``[[tool.torchsurgeon.contracts]]`` table of a ``pyproject.toml``."""

    model: str
    """``MODULE:CALLABLE`` returning the model, or a name :func:`torchsurgeon.hub.load_model` reads."""
    contract: ShapeContract
    source: Path
    """The ``pyproject.toml`` it was read from."""
    index: int
    """Position in the array, from 0."""
    pythonpath: tuple[Path, ...] = ()
    """Directories to put on ``sys.path`` before importing ``model``."""
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Constructor arguments of ``model`` (configuration fields for ``hf:``)."""

    @property
    def where(self) -> str:
        """The file and table, for messages: ``pyproject.toml [[tool.torchsurgeon.contracts]] #1``."""
        return _where(self.source, self.index)

    @property
    def lock_command(self) -> str:
        """The ``torchsurgeon lock`` command that writes this contract's lockfile, as a shell runs it from the
        working directory; ``torchsurgeon lock ...`` when the command line cannot give its input.

        Examples
        --------
        >>> here = Path.cwd()
        >>> contract = ShapeContract(input={"input_ids": "16:long"}, lock=here / "bert.lock.json")
        >>> entry = ContractEntry("hf:bert", contract, here / "pyproject.toml", 0, (here,), {"num_hidden_layers": 2})
        >>> entry.lock_command
        'torchsurgeon lock hf:bert --kwargs num_hidden_layers=2 --input input_ids=16:long -o bert.lock.json'
        """
        inputs = input_args(self.contract.input)
        if self.contract.lock is None or inputs is None:
            return "torchsurgeon lock ..."
        words = ["torchsurgeon", "lock", self.model]
        if self.kwargs:
            words += ["--kwargs", ",".join(f"{k}={v!r}" for k, v in self.kwargs.items())]
        for text in inputs:
            words += ["--input", text]
        if self.contract.batch != 1:
            words += ["--batch", str(self.contract.batch)]
        words += ["-o", format_path(self.contract.lock)]
        command = shlex.join(words)
        cwd = Path.cwd().resolve()
        folders = [format_path(d) for d in self.pythonpath if Path(d).resolve() != cwd]
        return f"PYTHONPATH={shlex.quote(os.pathsep.join(folders))} {command}" if folders else command


def find_pyproject(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest ``pyproject.toml`` in ``start`` (default: the working directory) or its parents.

    Raises
    ------
    ConfigError
        When there is none up to the filesystem root.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = pathlib.Path(d, "pyproject.toml").write_text("")
    ...     (pathlib.Path(d, "src", "pkg")).mkdir(parents=True)
    ...     find_pyproject(pathlib.Path(d, "src", "pkg")) == pathlib.Path(d, "pyproject.toml").resolve()
    True
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no pyproject.toml in {here} or its parents — run from your project, or pass --config PATH")


def read_contracts(path: str | os.PathLike[str]) -> tuple[ContractEntry, ...]:
    """Read every ``[[tool.torchsurgeon.contracts]]`` table of a ``pyproject.toml``.

    Keys: ``model`` (``MODULE:CALLABLE`` or a name such as ``hf:bert``,
    required), ``kwargs`` (a table of constructor arguments, or the
    ``--kwargs`` text, which can say ``None``), ``input``
    (required; typed inputs as ``{input_ids = "16:long"}``), and the other
    :class:`~torchsurgeon.contracts.ShapeContract` fields.  ``lock`` is relative to
    the file.  ``[tool.torchsurgeon] pythonpath`` (default ``["."]``) lists
    the directories, relative to the file, from which ``model`` is imported.

    Raises
    ------
    ConfigError
        For a missing file, invalid TOML, no contracts, an unknown or
        malformed key; the message names the file, the table and the key.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d, "pyproject.toml")
    ...     _ = path.write_text('''
    ... [[tool.torchsurgeon.contracts]]
    ... model = "torchvision.models:resnet50"
    ... input = [3, 224, 224]
    ... output = [1000]
    ... max_params = 26_000_000
    ...
    ... [[tool.torchsurgeon.contracts]]
    ... model = "hf:bert"
    ... kwargs = {num_hidden_layers = 2}
    ... input = {input_ids = "16:long"}
    ... ''')
    ...     for e in read_contracts(path):
    ...         print(e.model, e.kwargs, e.contract.input)
    torchvision.models:resnet50 {} (3, 224, 224)
    hf:bert {'num_hidden_layers': 2} {'input_ids': TypedShape(shape=(16,), dtype=torch.int64)}
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{format_path(p)} does not exist — pass the path of your pyproject.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{format_path(p)} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{format_path(p)} is not valid TOML: {exc}") from exc
    tool = data.get("tool", {}).get("torchsurgeon")
    if not isinstance(tool, dict) or "contracts" not in tool:
        raise ConfigError(f"{format_path(p)} has no {_TABLE} table — add one, e.g.:{_EXAMPLE}")
    for key in tool:
        if key not in _TOOL_KEYS:
            raise ConfigError(f"{format_path(p)} [tool.torchsurgeon]: unknown key {key!r}{_hint(key, _TOOL_KEYS)}")
    tables = tool["contracts"]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(
            f"{format_path(p)}: key 'tool.torchsurgeon.contracts' must be an array of tables {_TABLE}, e.g.:{_EXAMPLE}"
        )
    dirs = tool.get("pythonpath", ["."])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError(f"{p}: key 'tool.torchsurgeon.pythonpath' must be a list of folders, e.g. [\"src\"]")
    pythonpath = tuple((p.parent / d).resolve() for d in dirs)
    return tuple(_entry(p, i, table, pythonpath) for i, table in enumerate(tables))


def _entry(path: Path, index: int, table: Mapping[str, Any], pythonpath: tuple[Path, ...]) -> ContractEntry:
    where = _where(path, index)
    known = ["model", "kwargs"] + [f.name for f in dataclasses.fields(ShapeContract)]
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{_hint(key, known)}")
    for key in ("model", "input"):
        if key not in table:
            raise ConfigError(f"{where}: key {key!r} is missing, e.g.:{_EXAMPLE}")
    model = table["model"]
    if not isinstance(model, str) or not all(model.partition(":")):
        raise ConfigError(
            f"{where}: key 'model' is {model!r} — expected 'MODULE:CALLABLE' or a name such as 'timm:resnet18', "
            "e.g. 'mypkg.models:build'"
        )
    kwargs = table.get("kwargs", {})
    if isinstance(kwargs, str):  # the --kwargs text: TOML has no None
        try:
            kwargs = parse_kwargs(kwargs)
        except InputError as exc:
            raise ConfigError(f"{where}: key 'kwargs': {exc}") from None
    if not isinstance(kwargs, dict):
        raise ConfigError(
            f"{where}: key 'kwargs' is {kwargs!r} — give a table, e.g. kwargs = {{num_classes = 10}}, "
            'or the --kwargs text, e.g. kwargs = "encoder_weights=None,classes=2"'
        )
    fields = {k: v for k, v in table.items() if k not in ("model", "kwargs")}
    lock = fields.get("lock")
    if lock is not None and not isinstance(lock, str):
        raise ConfigError(f"{where}: key 'lock' is {lock!r} — give a path relative to {path.name}")
    if isinstance(lock, str):
        fields["lock"] = path.parent / lock
    for key, value in fields.items():  # validate one key at a time, to name the one at fault
        probe = {"input": (1,), key: value} if key != "input" else {"input": value}
        try:
            ShapeContract(**probe)
        except InputError as exc:
            raise ConfigError(f"{where}: key {key!r}: {_in_toml(str(exc))}") from None
    return ContractEntry(model, ShapeContract(**fields), path, index, pythonpath, dict(kwargs))


_TOML_EXAMPLES = (
    ("a tuple of ints", "a list of ints"),
    ("e.g. (1, 224, 224)", "e.g. [1, 224, 224]"),
    ("e.g. (10,)", "e.g. [10]"),
)


def _in_toml(message: str) -> str:
    """A shape error's examples as pyproject.toml writes them (``[1, 224, 224]``, not a Python tuple)."""
    for python, toml in _TOML_EXAMPLES:
        message = message.replace(python, toml)
    return message
