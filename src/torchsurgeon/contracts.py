"""Shape and parameter contracts, and architecture lockfiles.

A :class:`ShapeContract` says what a model must be for one input: its output
shape, its parameter counts, no invalid layer, and optionally that its
layer-by-layer architecture matches a lockfile.  :func:`check_contract`
lists every violation; :func:`assert_contract` raises
:class:`~torchsurgeon.errors.ContractError` (an ``AssertionError``) with a
table of field, expected and got.

The pytest plugin, ``torchsurgeon check`` (contracts declared in
``[[tool.torchsurgeon.contracts]]`` of ``pyproject.toml``) and
``torchsurgeon lock`` are thin layers over this module.

Lockfiles are JSON with sorted keys and one layer per line, so a changed
layer is a one-line diff.  Setting the environment variable
``TORCHSURGEON_UPDATE=1`` (what ``pytest --torchsurgeon-update`` does) makes
:func:`assert_matches_lock` and contracts with ``lock=`` rewrite their
lockfile instead of comparing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate
from torch import nn

from .analysis import ModelReport, paramcount
from .errors import ConfigError, ContractError, InputError, ShapeError
from .records import LayerReport, OutputShape, StrEnum

if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    import tomllib
else:  # pragma: no cover - depends on the interpreter
    import tomli as tomllib

__all__ = (
    "LOCK_FORMAT",
    "UPDATE_ENV",
    "ContractEntry",
    "ContractResult",
    "LayerDiff",
    "LockChange",
    "ShapeContract",
    "Violation",
    "assert_contract",
    "assert_matches_lock",
    "check_contract",
    "diff_lock",
    "explain_output_shape",
    "find_pyproject",
    "read_contracts",
    "read_lock",
    "write_lock",
)

LOCK_FORMAT = 1
"""Version of the lockfile format this torchsurgeon writes and reads."""

UPDATE_ENV = "TORCHSURGEON_UPDATE"
"""Environment variable: when ``1``, lockfiles are rewritten instead of compared."""

_COUNTS = ("params", "max_params", "trainable", "frozen")
_LOCK_FIELDS = ("type", "output_shape", "params", "trainable")
_TABLE = "[[tool.torchsurgeon.contracts]]"


# --------------------------------------------------------------------------- values


def _shape_spec(value: Any, key: str, minimum: int) -> Any:
    """Normalise a shape, nested shapes or a mapping of shapes to tuples/dicts."""
    example = "e.g. (1, 224, 224)" if key == "input" else "e.g. (10,)"
    if isinstance(value, Mapping):
        if not value:
            raise InputError(f"{key}={value!r} is empty — give at least one shape, {example}")
        return {str(k): _shape_spec(v, f"{key}[{k!r}]", minimum) for k, v in value.items()}
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InputError(f"{key}={value!r} is not a shape — give a tuple of ints, {example} (batch excluded)")
    items = list(value)
    if not items:
        raise InputError(f"{key}={value!r} is empty — give the per-sample shape, {example}")
    if all(isinstance(d, Sequence) and not isinstance(d, (str, bytes)) for d in items):
        return tuple(_shape_spec(d, f"{key}[{i}]", minimum) for i, d in enumerate(items))
    for i, d in enumerate(items):
        if isinstance(d, bool) or not isinstance(d, int):
            raise InputError(f"{key}={value!r}: dimension {i} is {d!r} — dimensions are whole numbers, {example}")
        if d < minimum:
            bound = "positive" if minimum > 0 else "non-negative"
            raise InputError(f"{key}={value!r}: dimension {i} is {d} — every dimension must be {bound}, {example}")
    return tuple(items)


def _plain(value: Any) -> Any:
    """Shapes as plain tuples (lists too), mappings as dicts: comparable and hashable-free."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


def _with_batch(shape: Any, batch: int) -> Any:
    if isinstance(shape, Mapping):
        return {k: _with_batch(v, batch) for k, v in shape.items()}
    if shape and all(isinstance(d, int) for d in shape):
        return (batch, *shape)
    return tuple(_with_batch(s, batch) for s in shape)


def _fmt(value: Any) -> str:
    """Shapes as ``(1, 10)``, counts with thousands separators, ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        if all(isinstance(d, int) and not isinstance(d, bool) for d in value):
            return "(" + ", ".join(str(d) for d in value) + ")"
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _count(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{key}={value!r} — give a parameter count as a non-negative int, e.g. {key}=26_000_000")
    return value


def _show(path: Path | str | os.PathLike[str] | None) -> str:
    """A path relative to the working directory when it is inside it (shorter messages)."""
    p = Path(path or "")
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _updating(update: bool | None) -> bool:
    if update is not None:
        return update
    return os.environ.get(UPDATE_ENV, "").strip().lower() not in ("", "0", "false", "no")


# --------------------------------------------------------------------------- contract


@dataclasses.dataclass(frozen=True)
class ShapeContract:
    """What a model must be for one input.

    Parameters
    ----------
    input : shape, tuple of shapes, or mapping
        Per-sample input shape, batch excluded: ``(1, 224, 224)``; several
        inputs as in :func:`torchsurgeon.paramcount`.  Dimensions must be positive.
    output : shape, nested shapes, or mapping, optional
        Per-sample output shape, batch excluded: ``(10,)`` for 10 logits.
    params, trainable, frozen : int, optional
        Exact unique parameter counts of the model as it stands.
    max_params : int, optional
        Upper bound on the unique parameter count.
    no_invalid : bool
        No layer may be invalid for this input (default ``True``).
    batch : int
        Batch size prepended to the input and expected output shapes.
    lock : path, optional
        An architecture lockfile (:func:`write_lock`) the model must match.

    Raises
    ------
    InputError
        When a field is malformed (negative dimensions, a count below zero);
        the message names the field.

    Examples
    --------
    >>> ShapeContract(input=[1, 224, 224], output=[10]).expected_output
    (1, 10)
    >>> ShapeContract(input=(1, -224, 224))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: input=(1, -224, 224): dimension 1 is -224 — every dimension must be positive, ...
    """

    input: Any
    output: Any = None
    params: int | None = None
    max_params: int | None = None
    trainable: int | None = None
    frozen: int | None = None
    no_invalid: bool = True
    batch: int = 1
    lock: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "input", _shape_spec(self.input, "input", 1))
        if self.output is not None:
            set_(self, "output", _shape_spec(self.output, "output", 0))
        for key in _COUNTS:
            _count(getattr(self, key), key)
        if not isinstance(self.no_invalid, bool):
            raise InputError(f"no_invalid={self.no_invalid!r} — give true or false")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch <= 0:
            raise InputError(f"batch={self.batch!r} — the batch size must be a positive int")
        if self.lock is not None:
            if not isinstance(self.lock, (str, os.PathLike)):
                raise InputError(f"lock={self.lock!r} — give the path of a lockfile, e.g. 'tests/arch/model.lock.json'")
            set_(self, "lock", Path(self.lock))

    @property
    def expected_output(self) -> Any:
        """The output shape the model must have, batch included (``None``: any)."""
        return None if self.output is None else _with_batch(self.output, self.batch)


@dataclasses.dataclass(frozen=True)
class Violation:
    """One row of a broken contract: the field, what was expected, what the model has."""

    field: str
    expected: str
    got: str
    note: str = ""
    """A fix, printed under the table."""


class LockChange(StrEnum):
    """How a layer differs from its lockfile."""

    ADDED = "added"
    """In the model, not in the lockfile."""
    REMOVED = "removed"
    """In the lockfile, not in the model."""
    CHANGED = "changed"
    """In both, with a different type, output shape or parameter count."""


@dataclasses.dataclass(frozen=True)
class LayerDiff:
    """A layer that differs between a model and its lockfile.

    ``locked`` and ``now`` are lockfile rows (``name``, ``type``,
    ``output_shape``, ``params``, ``trainable``), ``None`` on the side where
    the layer is missing; ``fields`` names what changed.
    """

    layer: str
    change: LockChange
    locked: Mapping[str, Any] | None
    now: Mapping[str, Any] | None
    fields: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ContractResult:
    """What :func:`check_contract` found.  ``bool(result)`` is ``result.ok``; ``str()`` is the table."""

    name: str
    contract: ShapeContract
    report: ModelReport | None
    """``None`` when the model does not accept the input at all."""
    violations: tuple[Violation, ...]
    lock_diffs: tuple[LayerDiff, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the model meets every field of the contract and matches its lockfile."""
        return not self.violations and not self.lock_diffs

    def __bool__(self) -> bool:
        return self.ok

    def table(self) -> str:
        """The verdict: one line when the contract holds, otherwise the tables of what broke."""
        c = self.contract
        where = f"{self.name}, input {_fmt(c.input)}, batch {c.batch}"
        if self.ok:
            r = self.report
            assert r is not None
            return f"Shape contract holds: {where}: output {_fmt(r.output_shape)}, {_fmt(r.total)} params"
        lines = [f"Shape contract broken: {where}"]
        if self.violations:
            lines.append(_violations_table(self.violations))
            lines += [f"  {v.note}" for v in self.violations if v.note]
            out = self.report.output_shape if self.report is not None else None
            if any(v.field == "output" for v in self.violations) and isinstance(out, OutputShape):
                lines += ["", "Last layers that changed the shape:", explain_output_shape(out)]
        if self.lock_diffs:
            if self.violations:
                lines.append("")
            lines.append(_lock_title(c.lock, self.lock_diffs))
            lines.append(_diff_table(self.lock_diffs))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _violations_table(violations: Iterable[Violation]) -> str:
    return tabulate(
        [(v.field, v.expected, v.got) for v in violations],
        headers=("Field", "Expected", "Got"),
        disable_numparse=True,
    )


def explain_output_shape(shape: OutputShape, limit: int = 10) -> str:
    """Table of the last layers before the output that changed the shape.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon import paramcount
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 9))
    >>> print(explain_output_shape(paramcount(net, (1, 8, 8)).output_shape))
    Layer    Type     Input shape    Output shape      Params
    -------  -------  -------------  --------------  --------
    1        Flatten  (1, 4, 6, 6)   (1, 144)               0
    2        Linear   (1, 144)       (1, 9)             1,305
    """
    layers: list[LayerReport] = shape.shape_changes(limit)
    return tabulate(
        [(x.name, x.type, _fmt(x.input_shape), _fmt(x.output_shape), _fmt(x.params)) for x in layers],
        headers=("Layer", "Type", "Input shape", "Output shape", "Params"),
        colalign=("left", "left", "left", "left", "right"),
        disable_numparse=True,
    )


def _merge(contract: ShapeContract | None, fields: Mapping[str, Any]) -> ShapeContract:
    if contract is None:
        if "input" not in fields:
            raise InputError("a shape contract needs input=, e.g. input=(1, 224, 224)")
        try:
            return ShapeContract(**fields)
        except TypeError as exc:
            raise InputError(f"{exc} — the fields are {[f.name for f in dataclasses.fields(ShapeContract)]}") from None
    if not isinstance(contract, ShapeContract):
        raise InputError(f"contract={contract!r} is not a ShapeContract — pass ShapeContract(...) or keyword fields")
    return dataclasses.replace(contract, **fields) if fields else contract


def check_contract(
    model: nn.Module,
    contract: ShapeContract | None = None,
    /,
    *,
    name: str = "",
    update_lock: bool | None = None,
    **fields: Any,
) -> ContractResult:
    """Check ``model`` against a contract and list every violation.

    Parameters
    ----------
    model : nn.Module
        Analysed with :func:`torchsurgeon.paramcount`; never modified.
    contract : ShapeContract, optional
        The contract; keyword ``fields`` build one or override its fields.
    name : str
        How the model is named in the table (default: its class name).
    update_lock : bool, optional
        Rewrite ``contract.lock`` from the model instead of comparing;
        default: the environment variable ``TORCHSURGEON_UPDATE``.
    **fields
        :class:`ShapeContract` fields (``input=``, ``output=``, ...).

    Returns
    -------
    ContractResult
        ``ok``, ``violations`` (field, expected, got), ``lock_diffs``, ``report``.

    Raises
    ------
    InputError
        For a malformed contract.
    ConfigError
        When ``contract.lock`` is missing, not valid JSON or from a newer format.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 9))
    >>> result = check_contract(net, input=(1, 8, 8), output=(10,), max_params=1_000)
    >>> result.ok, [v.field for v in result.violations]
    (False, ['output', 'max_params', 'layer 0 (Conv2d)'])
    >>> print(result.violations[1])
    Violation(field='max_params', expected='≤ 1,000', got='1,417', note='')
    """
    __tracebackhide__ = True
    c = _merge(contract, fields)
    name = name or type(model).__name__
    try:
        report = paramcount(model, c.input, batch=c.batch)
    except ShapeError as exc:
        row = Violation("input", f"accepted: {_fmt(_with_batch(c.input, c.batch))}", str(exc))
        return ContractResult(name, c, None, (row,))
    violations = _violations(c, report)
    diffs: tuple[LayerDiff, ...] = ()
    if c.lock is not None:
        if _updating(update_lock):
            _write(Path(c.lock), _lock_data(report, c.input, c.batch))
        else:
            lock = read_lock(c.lock)
            if _plain(lock["input"]) == _plain(c.input) and lock["batch"] == c.batch:
                diffs = _diff(report, lock)
            else:
                diffs = _diff(paramcount(model, _lock_input(lock), batch=lock["batch"]), lock)
    return ContractResult(name, c, report, tuple(violations), diffs)


def _violations(c: ShapeContract, report: ModelReport) -> list[Violation]:
    rows: list[Violation] = []
    expected = c.expected_output
    if expected is not None and _plain(report.output_shape) != _plain(expected):
        rows.append(Violation("output", _fmt(expected), _fmt(report.output_shape)))
    for key, got in (("params", report.total), ("trainable", report.trainable), ("frozen", report.frozen)):
        want = getattr(c, key)
        if want is not None and got != want:
            rows.append(Violation(key, _fmt(want), _fmt(got)))
    if c.max_params is not None and report.total > c.max_params:
        rows.append(Violation("max_params", f"≤ {_fmt(c.max_params)}", _fmt(report.total)))
    if c.no_invalid:
        for f in report.findings:
            rows.append(
                Violation(
                    f"layer {f.layer} ({f.type})",
                    f"{f.what}={_fmt(f.expected)}",
                    f"{f.what}={_fmt(f.got)}",
                    note=f"{f.layer}: {f.fix}",
                )
            )
    return rows


def assert_contract(
    model: nn.Module,
    contract: ShapeContract | None = None,
    /,
    *,
    name: str = "",
    update_lock: bool | None = None,
    **fields: Any,
) -> ContractResult:
    """Like :func:`check_contract`, but raise when the contract is broken.

    Raises
    ------
    ContractError
        An ``AssertionError`` whose message is the table of field, expected
        and got (and of the layers that differ from the lockfile).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> assert_contract(net, input=(2, 2), output=(2,), params=10).ok
    True
    >>> assert_contract(net, input=(2, 2), output=(3,))
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.ContractError: Shape contract broken: Sequential, input (2, 2), batch 1
    Field    Expected    Got
    -------  ----------  ------
    output   (1, 3)      (1, 2)
    <BLANKLINE>
    Last layers that changed the shape:
    Layer    Type     Input shape    Output shape      Params
    -------  -------  -------------  --------------  --------
    0        Flatten  (1, 2, 2)      (1, 4)                 0
    1        Linear   (1, 4)         (1, 2)                10
    """
    __tracebackhide__ = True
    result = check_contract(model, contract, name=name, update_lock=update_lock, **fields)
    if not result.ok:
        raise ContractError(result.table())
    return result


# --------------------------------------------------------------------------- lockfile


def _locked(layer: LayerReport) -> bool:
    return layer.output_shape is not None or layer.params > 0


def _lock_row(layer: LayerReport) -> dict[str, Any]:
    return {
        "name": layer.name,
        "type": layer.type,
        "output_shape": _jsonable(layer.output_shape),
        "params": layer.params,
        "trainable": layer.trainable,
    }


def _lock_data(report: ModelReport, input: Any, batch: int) -> dict[str, Any]:
    return {
        "format": LOCK_FORMAT,
        "model": report.model_name,
        "input": _jsonable(input),
        "batch": batch,
        "output_shape": _jsonable(report.output_shape),
        "total": report.total,
        "trainable": report.trainable,
        "frozen": report.frozen,
        "layers": [_lock_row(layer) for layer in report.layers if _locked(layer)],
    }


def _dumps(data: Mapping[str, Any]) -> str:
    """Sorted keys, one layer per line: a changed layer is a one-line diff."""
    lines = ["{"]
    keys = sorted(data)
    for i, key in enumerate(keys):
        end = "," if i < len(keys) - 1 else ""
        value = data[key]
        if key == "layers":
            rows = [f"    {json.dumps(row, sort_keys=True)}" for row in value]
            lines.append(f"  {json.dumps(key)}: [")
            lines.append(",\n".join(rows))
            lines.append(f"  ]{end}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}{end}")
    lines.append("}")
    return "\n".join(line for line in lines if line) + "\n"


def _write(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically, and never over a lockfile from a newer torchsurgeon."""
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and isinstance(old.get("format"), int) and old["format"] > LOCK_FORMAT:
            raise ConfigError(
                f"lockfile {_show(path)} has format {old['format']}, newer than this torchsurgeon writes "
                f"({LOCK_FORMAT}) — not overwritten; upgrade torchsurgeon (pip install -U torchsurgeon)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(_dumps(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_lock(model: nn.Module, path: str | os.PathLike[str], input: Any, *, batch: int = 1) -> dict[str, Any]:
    """Write the architecture lockfile of ``model`` for ``input``; return what was written.

    Every layer's name, type, output shape, parameters and trainable
    parameters, plus the totals, the input and the format version; sorted
    keys, one layer per line.  The model is analysed before the file is
    opened, so a failure leaves an existing lockfile as it was.

    Raises
    ------
    InputError
        For a malformed input shape.
    ConfigError
        When ``path`` holds a lockfile from a newer torchsurgeon.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from torch import nn
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d, "linear.lock.json")
    ...     data = write_lock(nn.Sequential(nn.Linear(4, 2)), path, (4,))
    ...     print(path.read_text())
    {
      "batch": 1,
      "format": 1,
      "frozen": 0,
      "input": [4],
      "layers": [
        {"name": "0", "output_shape": [1, 2], "params": 10, "trainable": 10, "type": "Linear"}
      ],
      "model": "Sequential",
      "output_shape": [1, 2],
      "total": 10,
      "trainable": 10
    }
    """
    spec = _shape_spec(input, "input", 1)
    data = _lock_data(paramcount(model, spec, batch=batch), spec, batch)
    _write(Path(path), data)
    return data


def read_lock(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a lockfile written by :func:`write_lock`.

    Raises
    ------
    ConfigError
        When the file is missing, not valid JSON, from a newer format
        version, or lacks a key (the message names the file and the key).

    Examples
    --------
    >>> read_lock("no/such.lock.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.ConfigError: lockfile no/such.lock.json does not exist — create it with `torchsurgeon lock ...
    """
    __tracebackhide__ = True  # pytest: show the caller, not this frame
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"lockfile {_show(path)} does not exist — create it with "
            f"`torchsurgeon lock MODULE:CALLABLE --input C,H,W -o {_show(path)}` or `pytest --torchsurgeon-update`"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(
            f"lockfile {_show(path)} is not valid JSON ({exc}) — regenerate it with `torchsurgeon lock` "
            "(a merge conflict? take either side, then regenerate)"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"lockfile {_show(path)}: expected a JSON object, got {type(data).__name__}")
    version = data.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"lockfile {_show(path)}: key 'format' is {version!r}, expected a format version such as 1")
    if version > LOCK_FORMAT:
        raise ConfigError(
            f"lockfile {_show(path)} has format {version}, newer than this torchsurgeon reads ({LOCK_FORMAT}) "
            "— upgrade torchsurgeon (pip install -U torchsurgeon)"
        )
    for key, kind in (("input", (list, dict)), ("batch", int), ("layers", list)):
        if not isinstance(data.get(key), kind):
            raise ConfigError(
                f"lockfile {_show(path)}: key {key!r} is missing or malformed — regenerate it with `torchsurgeon lock`"
            )
    for i, row in enumerate(data["layers"]):
        if not isinstance(row, dict) or not {"name", *_LOCK_FIELDS} <= row.keys():
            raise ConfigError(
                f"lockfile {_show(path)}: layers[{i}] needs keys name, {', '.join(_LOCK_FIELDS)} — "
                "regenerate it with `torchsurgeon lock`"
            )
    try:
        _shape_spec(data["input"], "input", 1)
    except InputError as exc:
        raise ConfigError(f"lockfile {_show(path)}: key 'input': {exc}") from None
    return data


def _lock_input(lock: Mapping[str, Any]) -> Any:
    return _shape_spec(lock["input"], "input", 1)


def _keyed(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], Mapping[str, Any]]:
    """Rows by (name, occurrence): a module called twice has two rows with one name."""
    seen: dict[str, int] = {}
    out: dict[tuple[str, int], Mapping[str, Any]] = {}
    for row in rows:
        n = seen[row["name"]] = seen.get(row["name"], 0) + 1
        out[(row["name"], n)] = row
    return out


def _label(key: tuple[str, int]) -> str:
    return key[0] if key[1] == 1 else f"{key[0]} (call {key[1]})"


def _diff(report: ModelReport, lock: Mapping[str, Any]) -> tuple[LayerDiff, ...]:
    now = _keyed(_lock_row(layer) for layer in report.layers if _locked(layer))
    old = _keyed(lock["layers"])
    old_order = list(old)
    diffs: list[LayerDiff] = []
    done: set[tuple[str, int]] = set()

    def removed_before(stop: int) -> None:
        for key in old_order[:stop]:
            if key not in now and key not in done:
                done.add(key)
                diffs.append(LayerDiff(_label(key), LockChange.REMOVED, old[key], None))

    for key, row in now.items():
        if key not in old:
            diffs.append(LayerDiff(_label(key), LockChange.ADDED, None, row))
            continue
        removed_before(old_order.index(key))
        changed = tuple(f for f in _LOCK_FIELDS if _plain(old[key][f]) != _plain(row[f]))
        if changed:
            diffs.append(LayerDiff(_label(key), LockChange.CHANGED, old[key], row, changed))
    removed_before(len(old_order))
    if not diffs:
        totals = {"total": report.total, "trainable": report.trainable}
        changed = tuple(k for k, v in totals.items() if k in lock and lock[k] != v)
        if changed:
            locked = {k: lock[k] for k in totals if k in lock}
            diffs.append(LayerDiff("(model totals)", LockChange.CHANGED, locked, totals, changed))
    return tuple(diffs)


def _describe(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        if key == "type":
            parts.append(str(row["type"]))
        elif key == "output_shape":
            parts.append(f"output {_fmt(row['output_shape'])}")
        else:
            parts.append(f"{key} {_fmt(row[key])}")
    return ", ".join(parts)


def _shown_fields(d: LayerDiff) -> tuple[str, ...]:
    fields = d.fields
    if "trainable" in fields and "params" in fields and d.locked is not None and d.now is not None:
        if d.locked["params"] - d.locked["trainable"] == d.now["params"] - d.now["trainable"]:
            fields = tuple(f for f in fields if f != "trainable")  # same frozen count: implied by params
    return fields


def _diff_table(diffs: Iterable[LayerDiff]) -> str:
    rows = []
    for d in diffs:
        row = d.now if d.now is not None else d.locked
        assert row is not None
        kind = str(row.get("type", ""))
        if d.change == LockChange.CHANGED:
            keys = _shown_fields(d)
            assert d.locked is not None and d.now is not None
            locked, now = _describe(d.locked, keys), _describe(d.now, keys)
        else:
            full = ["output_shape", "params"] + (["trainable"] if row["trainable"] != row["params"] else [])
            text = _describe(row, full)
            locked, now = ("-", text) if d.change == LockChange.ADDED else (text, "-")
        rows.append((d.layer, kind, str(d.change), locked, now))
    return tabulate(rows, headers=("Layer", "Type", "Change", "Locked", "Now"), disable_numparse=True)


def _lock_title(path: str | os.PathLike[str] | None, diffs: Sequence[LayerDiff]) -> str:
    n = len(diffs)
    return (
        f"Lockfile {_show(path)}: {n} layer{'s' * (n != 1)} differ{'s' * (n == 1)} "
        "(if intended: `torchsurgeon lock ...` or `pytest --torchsurgeon-update`)"
    )


def diff_lock(model: nn.Module, path: str | os.PathLike[str]) -> tuple[LayerDiff, ...]:
    """The layers of ``model`` that differ from the lockfile at ``path`` (added, removed, changed).

    The model is analysed for the input and batch recorded in the lockfile.

    Raises
    ------
    ConfigError
        When the lockfile is missing, not valid JSON or from a newer format.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from torch import nn
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d, "net.lock.json")
    ...     _ = write_lock(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 10)), path, (4,))
    ...     diffs = diff_lock(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 9)), path)
    >>> [(d.layer, str(d.change), d.fields) for d in diffs]
    [('1', 'changed', ('output_shape', 'params', 'trainable'))]
    """
    lock = read_lock(path)
    return _diff(paramcount(model, _lock_input(lock), batch=lock["batch"]), lock)


def assert_matches_lock(
    model: nn.Module,
    path: str | os.PathLike[str],
    input: Any = None,
    *,
    batch: int | None = None,
    update: bool | None = None,
) -> None:
    """Raise unless ``model`` matches the lockfile at ``path`` layer by layer.

    Parameters
    ----------
    model : nn.Module
        The model; never modified.
    path : path
        The lockfile (:func:`write_lock`, ``torchsurgeon lock``).
    input : shape, optional
        Per-sample input shape; default: the one recorded in the lockfile.
        Needed to create a missing lockfile in update mode.
    batch : int, optional
        Default: the one recorded in the lockfile, else 1.
    update : bool, optional
        Rewrite the lockfile from the model instead of comparing; default:
        the environment variable ``TORCHSURGEON_UPDATE`` (set by
        ``pytest --torchsurgeon-update``).

    Raises
    ------
    ContractError
        With the table of the layers that differ (added, removed, changed).
    ConfigError
        When the lockfile is missing, not valid JSON or from a newer format.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from torch import nn
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d, "net.lock.json")
    ...     assert_matches_lock(nn.Sequential(nn.Linear(4, 8)), path, (4,), update=True)
    ...     assert_matches_lock(nn.Sequential(nn.Linear(4, 8)), path)
    ...     assert_matches_lock(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.ContractError: Lockfile .../net.lock.json: 1 layer differs (...)
    Layer    Type    Change    Locked    Now
    -------  ------  --------  --------  -----------------------
    1        ReLU    added     -         output (1, 8), params 0
    """
    __tracebackhide__ = True
    p = Path(path)
    if _updating(update):
        if input is None:
            if not p.exists():
                raise ConfigError(
                    f"lockfile {_show(p)} does not exist — pass input= to create it, e.g. input=(3, 224, 224)"
                )
            lock = read_lock(p)
            input, batch = _lock_input(lock), batch or lock["batch"]
        spec = _shape_spec(input, "input", 1)
        _write(p, _lock_data(paramcount(model, spec, batch=batch or 1), spec, batch or 1))
        return
    lock = read_lock(p)
    spec = _lock_input(lock) if input is None else _shape_spec(input, "input", 1)
    b = lock["batch"] if batch is None else batch
    if _plain(spec) != _plain(lock["input"]) or b != lock["batch"]:
        raise ContractError(
            f"lockfile {_show(p)} was written for input {_fmt(lock['input'])}, batch {lock['batch']}, not input "
            f"{_fmt(spec)}, batch {b} — rewrite it for this input with `pytest --torchsurgeon-update`"
        )
    diffs = _diff(paramcount(model, spec, batch=b), lock)
    if diffs:
        raise ContractError(_lock_title(p, diffs) + "\n" + _diff_table(diffs))


# --------------------------------------------------------------------------- pyproject


@dataclasses.dataclass(frozen=True)
class ContractEntry:
    """One ``[[tool.torchsurgeon.contracts]]`` table of a ``pyproject.toml``."""

    model: str
    """``MODULE:CALLABLE`` returning the model."""
    contract: ShapeContract
    source: Path
    """The ``pyproject.toml`` it was read from."""
    index: int
    """Position in the array, from 0."""
    pythonpath: tuple[Path, ...] = ()
    """Directories to put on ``sys.path`` before importing ``model``."""

    @property
    def where(self) -> str:
        """The file and table, for messages: ``pyproject.toml [[tool.torchsurgeon.contracts]] #1``."""
        return f"{_show(self.source)} {_TABLE} #{self.index + 1}"


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


_EXAMPLE = f"""
{_TABLE}
model = "mypkg.models:build_classifier"
input = [1, 224, 224]
output = [10]"""


def read_contracts(path: str | os.PathLike[str]) -> tuple[ContractEntry, ...]:
    """Read every ``[[tool.torchsurgeon.contracts]]`` table of a ``pyproject.toml``.

    Keys: ``model`` (``MODULE:CALLABLE``, required), ``input`` (required),
    and the other :class:`ShapeContract` fields.  ``lock`` is relative to
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
    ... ''')
    ...     [(e.model, e.contract.input, e.contract.max_params) for e in read_contracts(path)]
    [('torchvision.models:resnet50', (3, 224, 224), 26000000)]
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{_show(p)} does not exist — pass the path of your pyproject.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{_show(p)} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{_show(p)} is not valid TOML: {exc}") from exc
    tool = data.get("tool", {}).get("torchsurgeon")
    if not isinstance(tool, dict) or "contracts" not in tool:
        raise ConfigError(f"{_show(p)} has no {_TABLE} table — add one, e.g.:{_EXAMPLE}")
    tables = tool["contracts"]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(
            f"{_show(p)}: key 'tool.torchsurgeon.contracts' must be an array of tables {_TABLE}, e.g.:{_EXAMPLE}"
        )
    dirs = tool.get("pythonpath", ["."])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError(f"{p}: key 'tool.torchsurgeon.pythonpath' must be a list of folders, e.g. [\"src\"]")
    pythonpath = tuple((p.parent / d).resolve() for d in dirs)
    return tuple(_entry(p, i, table, pythonpath) for i, table in enumerate(tables))


def _entry(path: Path, index: int, table: Mapping[str, Any], pythonpath: tuple[Path, ...]) -> ContractEntry:
    where = f"{_show(path)} {_TABLE} #{index + 1}"
    known = ["model"] + [f.name for f in dataclasses.fields(ShapeContract)]
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" — did you mean {close[0]!r}?" if close else f" — the keys are {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    for key in ("model", "input"):
        if key not in table:
            raise ConfigError(f"{where}: key {key!r} is missing, e.g.:{_EXAMPLE}")
    model = table["model"]
    if not isinstance(model, str) or model.count(":") != 1 or not all(model.split(":")):
        raise ConfigError(f"{where}: key 'model' is {model!r} — expected 'MODULE:CALLABLE', e.g. 'mypkg.models:build'")
    fields = {k: v for k, v in table.items() if k != "model"}
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
            raise ConfigError(f"{where}: key {key!r}: {exc}") from None
    return ContractEntry(model, ShapeContract(**fields), path, index, pythonpath)
