"""Architecture lockfiles: every layer's type, output shape and parameters, checked into the repository.

:func:`write_lock` records a model for one input; :func:`diff_lock` lists the
layers that differ from it (added, removed, changed); :func:`assert_matches_lock`
raises :class:`~torchsurgeon.errors.ContractError` with that table.  Shape
contracts with ``lock=`` (:mod:`torchsurgeon.contracts`) and ``torchsurgeon lock``
use this module.

Lockfiles are JSON with sorted keys and one layer per line, so a changed
layer is a one-line diff.  Setting the environment variable
``TORCHSURGEON_UPDATE=1`` (what ``pytest --torchsurgeon-update`` does) makes
:func:`assert_matches_lock` and contracts with ``lock=`` rewrite their
lockfile instead of comparing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .ambient import in_plain_torch
from .analysis import paramcount
from .errors import ConfigError, ContractError, InputError, check_flag
from .modelreport import ModelReport
from .records import LayerDiff, LayerReport, LockChange
from .report import format_path, format_value, jsonable, lock_diff_table
from .shapespec import input_spec, plain

__all__ = (
    "LOCK_FORMAT",
    "UPDATE_ENV",
    "assert_matches_lock",
    "check_lock",
    "diff_lock",
    "read_lock",
    "write_lock",
)

LOCK_FORMAT = 1
"""Version of the lockfile format this torchsurgeon writes and reads."""

UPDATE_ENV = "TORCHSURGEON_UPDATE"
"""Environment variable: when ``1``, lockfiles are rewritten instead of compared."""

_LOCK_FIELDS = ("type", "output_shape", "params", "trainable")


def _updating(update: bool | None) -> bool:
    check_flag(
        update,
        "update",
        "True rewrites the lockfile, False compares with it, None: $TORCHSURGEON_UPDATE",
        optional=True,
    )
    if update is not None:
        return update
    return os.environ.get(UPDATE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _locked(layer: LayerReport) -> bool:
    return layer.output_shape is not None or layer.params > 0


def _lock_row(layer: LayerReport) -> dict[str, Any]:
    return {
        "name": layer.name,
        "type": layer.type,
        "output_shape": jsonable(layer.output_shape),
        "params": layer.params,
        "trainable": layer.trainable,
    }


def _lock_data(report: ModelReport, input: Any, batch: int) -> dict[str, Any]:
    return {
        "format": LOCK_FORMAT,
        "model": report.model_name,
        "input": jsonable(input),
        "batch": batch,
        "output_shape": jsonable(report.output_shape),
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
                f"lockfile {format_path(path)} has format {old['format']}, newer than this torchsurgeon writes "
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


@in_plain_torch
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
    spec = input_spec(input)
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
        shown = format_path(path)
        raise ConfigError(
            f"lockfile {shown} does not exist — create it with "
            f"`torchsurgeon lock MODULE:CALLABLE --input C,H,W -o {shown}` or `pytest --torchsurgeon-update`"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(
            f"lockfile {format_path(path)} is not valid JSON ({exc}) — regenerate it with `torchsurgeon lock` "
            "(a merge conflict? take either side, then regenerate)"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"lockfile {format_path(path)}: expected a JSON object, got {type(data).__name__}")
    version = data.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(
            f"lockfile {format_path(path)}: key 'format' is {version!r}, expected a format version such as 1"
        )
    if version > LOCK_FORMAT:
        raise ConfigError(
            f"lockfile {format_path(path)} has format {version}, newer than this torchsurgeon reads ({LOCK_FORMAT}) "
            "— upgrade torchsurgeon (pip install -U torchsurgeon)"
        )
    for key, kind in (("input", (list, dict, str)), ("batch", int), ("layers", list)):
        if not isinstance(data.get(key), kind):
            raise ConfigError(
                f"lockfile {format_path(path)}: key {key!r} is missing or malformed — "
                "regenerate it with `torchsurgeon lock`"
            )
    for i, row in enumerate(data["layers"]):
        if not isinstance(row, dict) or not {"name", *_LOCK_FIELDS} <= row.keys():
            raise ConfigError(
                f"lockfile {format_path(path)}: layers[{i}] needs keys name, {', '.join(_LOCK_FIELDS)} — "
                "regenerate it with `torchsurgeon lock`"
            )
    try:
        input_spec(data["input"])
    except InputError as exc:
        raise ConfigError(f"lockfile {format_path(path)}: key 'input': {exc}") from None
    return data


def _lock_input(lock: Mapping[str, Any]) -> Any:
    return input_spec(lock["input"])


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
        changed = tuple(f for f in _LOCK_FIELDS if plain(old[key][f]) != plain(row[f]))
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


@in_plain_torch
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


def check_lock(
    model: nn.Module,
    path: str | os.PathLike[str],
    report: ModelReport,
    input: Any,
    batch: int,
    *,
    update: bool | None = None,
) -> tuple[LayerDiff, ...]:
    """:func:`diff_lock`, reusing ``report`` (``model`` analysed for ``input`` and ``batch``) where it can.

    The report is compared when the lockfile was written for the same input
    and batch, otherwise ``model`` is analysed for the lockfile's own.  In
    update mode (``update``, default: ``TORCHSURGEON_UPDATE``) the lockfile is
    rewritten from ``report`` instead, and nothing differs.

    Raises
    ------
    ConfigError
        When the lockfile is missing, not valid JSON or from a newer format.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from torch import nn
    >>> from torchsurgeon import paramcount
    >>> net = nn.Sequential(nn.Linear(4, 8))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d, "net.lock.json")
    ...     created = check_lock(net, path, paramcount(net, (4,)), (4,), 1, update=True)
    ...     compared = check_lock(net, path, paramcount(net, (4,), batch=2), (4,), 2, update=False)
    >>> created, compared
    ((), ())
    """
    if _updating(update):
        _write(Path(path), _lock_data(report, input, batch))
        return ()
    lock = read_lock(path)
    if plain(_lock_input(lock)) != plain(input) or lock["batch"] != batch:
        report = paramcount(model, _lock_input(lock), batch=lock["batch"])
    return _diff(report, lock)


@in_plain_torch
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
                    f"lockfile {format_path(p)} does not exist — pass input= to create it, e.g. input=(3, 224, 224)"
                )
            lock = read_lock(p)
            input, batch = _lock_input(lock), batch or lock["batch"]
        spec = input_spec(input)
        _write(p, _lock_data(paramcount(model, spec, batch=batch or 1), spec, batch or 1))
        return
    lock = read_lock(p)
    spec = _lock_input(lock) if input is None else input_spec(input)
    b = lock["batch"] if batch is None else batch
    if plain(spec) != plain(_lock_input(lock)) or b != lock["batch"]:
        raise ContractError(
            f"lockfile {format_path(p)} was written for input {format_value(lock['input'])}, batch {lock['batch']}, "
            f"not input {format_value(spec)}, batch {b} — rewrite it for this input with `pytest --torchsurgeon-update`"
        )
    diffs = _diff(paramcount(model, spec, batch=b), lock)
    if diffs:
        raise ContractError(lock_diff_table(p, diffs))
