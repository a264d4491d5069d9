"""Shape and parameter contracts: what a model must be for one input.

A :class:`ShapeContract` holds an output shape, parameter counts, no invalid
layer, and optionally that the model's layer-by-layer architecture matches a
lockfile (:mod:`torchsurgeon.lockfile`).
:func:`check_contract` lists every violation; :func:`assert_contract` raises
:class:`~torchsurgeon.errors.ContractError` (an ``AssertionError``) with a
table of field, expected and got.

The pytest plugin, ``torchsurgeon check`` (contracts declared in
``[[tool.torchsurgeon.contracts]]`` of ``pyproject.toml``, read by
:mod:`torchsurgeon.config`) and ``torchsurgeon lock`` are thin layers over
this module and :mod:`torchsurgeon.lockfile`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .ambient import in_plain_torch
from .analysis import paramcount
from .errors import ContractError, InputError, ShapeError, check_flag
from .lockfile import check_lock
from .modelreport import ModelReport
from .records import LayerDiff, OutputShape, Trust, Violation
from .report import format_value, lock_diff_table, shape_changes_table, violations_table
from .shapespec import input_spec, plain, shape_spec, with_batch

__all__ = (
    "ContractResult",
    "ShapeContract",
    "assert_contract",
    "check_contract",
    "explain_output_shape",
)

_COUNTS = ("params", "max_params", "trainable", "frozen")


def _check_count(value: Any, key: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InputError(f"{key}={value!r} — give a parameter count as a non-negative int, e.g. {key}=26_000_000")


@dataclasses.dataclass(frozen=True)
class ShapeContract:
    """What a model must be for one input.

    Parameters
    ----------
    input : shape, tuple of shapes, or mapping
        Per-sample input shape, batch excluded: ``(1, 224, 224)``; several
        inputs as in :func:`torchsurgeon.paramcount`.  Dimensions must be
        positive.  An input may carry its dtype: ``{"input_ids": "16:long"}``
        (:class:`~torchsurgeon.shapespec.TypedShape`).
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
        An architecture lockfile (:func:`~torchsurgeon.lockfile.write_lock`) the model must match.

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
        set_(self, "input", input_spec(self.input))
        if self.output is not None:
            set_(self, "output", shape_spec(self.output, "output", 0))
        for key in _COUNTS:
            _check_count(getattr(self, key), key)
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
        return None if self.output is None else with_batch(self.output, self.batch)


@dataclasses.dataclass(frozen=True)
class ContractResult:
    """What :func:`check_contract` found.  ``bool(result)`` is ``result.ok``; ``str()`` is the table."""

    name: str
    contract: ShapeContract
    report: ModelReport | None
    """``None`` when the model does not accept the input at all."""
    violations: tuple[Violation, ...]
    lock_diffs: tuple[LayerDiff, ...] = ()
    lock_command: str = "torchsurgeon lock ..."
    """What rewrites the lockfile if its differences are intended (``torchsurgeon check`` names the command)."""

    @property
    def ok(self) -> bool:
        """True when the model meets every field of the contract and matches its lockfile."""
        return not self.violations and not self.lock_diffs

    def __bool__(self) -> bool:
        return self.ok

    def table(self) -> str:
        """The verdict: one line when the contract holds, otherwise the tables of what broke."""
        c = self.contract
        where = f"{self.name}, input {format_value(c.input)}, batch {c.batch}"
        if self.ok:
            r = self.report
            assert r is not None
            return (
                f"Shape contract holds: {where}: output {format_value(r.output_shape)}, {format_value(r.total)} params"
            )
        lines = [f"Shape contract broken: {where}"]
        if self.violations:
            lines.append(violations_table(self.violations))
            lines += [f"  {v.note}" for v in self.violations if v.note]
            out = self.report.output_shape if self.report is not None else None
            if any(v.field == "output" for v in self.violations) and isinstance(out, OutputShape):
                lines += ["", "Last layers that changed the shape:", explain_output_shape(out)]
        if self.lock_diffs:
            if self.violations:
                lines.append("")
            lines.append(lock_diff_table(c.lock, self.lock_diffs, self.lock_command))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


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
    if not isinstance(shape, OutputShape):  # a plain tuple has no layers to explain it with
        raise InputError(
            f"explain_output_shape takes a report's output shape, got {shape!r} — "
            "explain_output_shape(paramcount(model, input).output_shape)"
        )
    return shape_changes_table(shape.shape_changes(limit))


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


_UPDATE_MEANING = "True rewrites the lockfile, False compares with it, None: the variable TORCHSURGEON_UPDATE"


@in_plain_torch
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
    check_flag(update_lock, "update_lock", _UPDATE_MEANING, optional=True)
    c = _merge(contract, fields)
    name = name or type(model).__name__
    try:
        report = paramcount(model, c.input, batch=c.batch)
    except ShapeError as exc:
        row = Violation("input", f"accepted: {format_value(with_batch(c.input, c.batch))}", str(exc))
        return ContractResult(name, c, None, (row,))
    violations = _violations(c, report)
    diffs: tuple[LayerDiff, ...] = ()
    if c.lock is not None:
        diffs = check_lock(model, c.lock, report, c.input, c.batch, update=update_lock)
    return ContractResult(name, c, report, tuple(violations), diffs)


def _violations(c: ShapeContract, report: ModelReport) -> list[Violation]:
    rows: list[Violation] = []
    if not report.trusted:  # every other field of the report may be wrong
        verdict = "disagrees" if report.crosscheck.trust == Trust.UNTRUSTED else "output unknown, unverified"
        rows.append(Violation("trace", "agrees with a real forward", verdict, note=report.crosscheck.message))
    expected = c.expected_output
    if expected is not None and plain(report.output_shape) != plain(expected):
        rows.append(Violation("output", format_value(expected), format_value(report.output_shape)))
    for key, got in (("params", report.total), ("trainable", report.trainable), ("frozen", report.frozen)):
        want = getattr(c, key)
        if want is not None and got != want:
            rows.append(Violation(key, format_value(want), format_value(got)))
    if c.max_params is not None and report.total > c.max_params:
        rows.append(Violation("max_params", f"≤ {format_value(c.max_params)}", format_value(report.total)))
    if c.no_invalid:
        for f in report.findings:
            rows.append(
                Violation(
                    f"layer {f.label}",
                    f"{f.what}={format_value(f.expected)}",
                    f"{f.what}={format_value(f.got)}",
                    note=f"{f.layer}: {f.fix}",
                )
            )
    return rows


@in_plain_torch
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
