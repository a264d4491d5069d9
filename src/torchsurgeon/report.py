"""Rendering: tables (tabulate), shapes, counts, paths and JSON values as text.

Pure functions over records; they compute nothing about the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .records import LayerDiff, LayerMemory, LayerReport, LayerStatus, LockChange, ParamReport, Violation

__all__ = (
    "changes_table",
    "format_bytes",
    "format_count",
    "format_path",
    "format_shape",
    "format_value",
    "jsonable",
    "layers_table",
    "lock_diff_table",
    "memory_table",
    "model_table",
    "shape_changes_table",
    "violations_table",
)


def format_count(n: int) -> str:
    """Thousands-separated integer.

    Examples
    --------
    >>> format_count(25557032)
    '25,557,032'
    """
    return f"{n:,}"


def format_bytes(n: int) -> str:
    """A size in bytes with binary units: B, KiB, MiB, GiB, TiB.

    Examples
    --------
    >>> format_bytes(512), format_bytes(3 * 2**20), format_bytes(int(24.5 * 2**30))
    ('512 B', '3.00 MiB', '24.50 GiB')
    """
    if abs(n) < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if abs(value) < 1024 or unit == "TiB":
            break
    return f"{value:.2f} {unit}"


def format_shape(shape: Any) -> str:
    """A shape, or nested shapes, as text; ``-`` when unknown.

    Examples
    --------
    >>> format_shape((1, 64, 112, 112)), format_shape(((1, 10), (1, 10))), format_shape(None)
    ('(1, 64, 112, 112)', '[(1, 10), (1, 10)]', '-')
    """
    if shape is None:
        return "-"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {format_shape(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        return "(" + ", ".join(str(d) for d in shape) + ")"
    if isinstance(shape, (tuple, list)):
        return "[" + ", ".join(format_shape(s) for s in shape) + "]"
    return str(shape)


def format_value(value: Any) -> str:
    """A value in a contract or lockfile message: shapes as ``(1, 10)`` (lists too), counts
    with thousands separators, ``true``/``false``, ``-`` for None.

    Examples
    --------
    >>> format_value([1, 224, 224]), format_value(26_000_000), format_value(None), format_value(False)
    ('(1, 224, 224)', '26,000,000', '-', 'false')
    >>> format_value({"logits": [1, 10]}), format_value([[1, 3], [1, 5]])
    ('{logits: (1, 10)}', '[(1, 3), (1, 5)]')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return format_count(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        if all(isinstance(d, int) and not isinstance(d, bool) for d in value):
            return format_shape(tuple(value))
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def format_path(path: str | os.PathLike[str] | None) -> str:
    """A path relative to the working directory when it is inside it (shorter messages).

    Examples
    --------
    >>> from pathlib import Path
    >>> format_path(Path.cwd() / "tests" / "model.lock.json") == str(Path("tests", "model.lock.json"))
    True
    """
    p = Path(path or "")
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def jsonable(value: Any) -> Any:
    """Shapes as lists, mapping keys as strings, other objects as their text: ready for ``json.dumps``.

    Examples
    --------
    >>> jsonable({"image": (1, 3, 8, 8), 2: None})
    {'image': [1, 3, 8, 8], '2': None}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


def _params_cell(layer: LayerReport) -> str:
    text = format_count(layer.params)
    if layer.params_for_input != layer.params:
        text += f" → {format_count(layer.params_for_input)}"
    if layer.shared:
        text += " (shared)"
    return text


def _shown(layer: LayerReport) -> bool:
    return layer.output_shape is not None or layer.params > 0 or layer.status != LayerStatus.OK


def layers_table(layers: Iterable[LayerReport]) -> str:
    """The per-layer table: layer, type, output shape, params, MACs, status.

    Nodes that carry no tensor, own no parameter and are fine (``size()``,
    ``getitem`` on shapes) are left out.  Params of an invalid layer read
    ``before → once resized``.  MACs read ``-`` for layers without
    multiply-accumulates (activations, norms, reshapes).

    Examples
    --------
    >>> from torchsurgeon.records import LayerReport, LayerStatus
    >>> row = LayerReport("fc", "Linear", (1, 4), (1, 2), 10, 10, 10, LayerStatus.OK, macs=8, flops=16)
    >>> print(layers_table([row]))
    Layer    Type    Output shape      Params    MACs  Status
    -------  ------  --------------  --------  ------  --------
    fc       Linear  (1, 2)                10       8  ok
    """
    rows = [
        (
            layer.name,
            layer.type,
            format_shape(layer.output_shape),
            _params_cell(layer),
            format_count(layer.macs) if layer.macs else "-",
            str(layer.status),
        )
        for layer in layers
        if _shown(layer)
    ]
    return tabulate(
        rows,
        headers=("Layer", "Type", "Output shape", "Params", "MACs", "Status"),
        colalign=("left", "left", "left", "right", "right", "left"),
        disable_numparse=True,
    )


def model_table(
    title: str,
    layers: Sequence[LayerReport],
    totals: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
) -> str:
    """Title, layer table, totals underneath, then notes (one per line).

    Examples
    --------
    >>> print(model_table("M", [], [("Total params", "0")]))
    M
    Layer    Type    Output shape    Params    MACs    Status
    -------  ------  --------------  --------  ------  --------
    <BLANKLINE>
    Total params: 0
    """
    width = max((len(k) for k, _ in totals), default=0)
    lines = [title, layers_table(layers), ""]
    lines += [f"{k + ':':<{width + 1}} {v}" for k, v in totals]
    if notes:
        lines.append("")
        lines += list(notes)
    return "\n".join(lines)


def memory_table(
    title: str,
    layers: Sequence[LayerMemory],
    totals: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
) -> str:
    """A memory plan: per-module saved bytes, then the totals and notes (:func:`torchsurgeon.memory_plan`).

    Examples
    --------
    >>> from torchsurgeon.records import LayerMemory
    >>> rows = [LayerMemory("0", "Linear", 0, 0), LayerMemory("1", "ReLU", 2048, 2048, 4096)]
    >>> print(memory_table("M", rows, [("Peak", "6.00 KiB")]))
    M
    Layer    Type    Saved for backward    Saved so far    Transient
    -------  ------  --------------------  --------------  -----------
    0        Linear  -                     -               -
    1        ReLU    2.00 KiB              2.00 KiB        4.00 KiB
    <BLANKLINE>
    Peak: 6.00 KiB
    """
    rows = [
        (
            layer.name,
            layer.type,
            format_bytes(layer.saved) if layer.saved else "-",
            format_bytes(layer.saved_so_far) if layer.saved_so_far else "-",
            format_bytes(layer.transient) if layer.transient else "-",
        )
        for layer in layers
    ]
    table = tabulate(
        rows,
        headers=("Layer", "Type", "Saved for backward", "Saved so far", "Transient"),
        colalign=("left", "left", "right", "right", "right"),
        disable_numparse=True,
    )
    width = max((len(k) for k, _ in totals), default=0)
    lines = [title, table, ""]
    lines += [f"{k + ':':<{width + 1}} {v}" for k, v in totals]
    if notes:
        lines.append("")
        lines += list(notes)
    return "\n".join(lines)


def changes_table(rows: Iterable[ParamReport]) -> str:
    """One row per changed parameter: name (and former name), change, shapes, initialiser or note.

    Examples
    --------
    >>> from torchsurgeon.records import ParamChange, ParamReport
    >>> print(changes_table([ParamReport("fc.weight", ParamChange.NEW, None, (2, 4), "kaiming_uniform_")]))
    Parameter    Status    Before    After    Initialiser / note
    -----------  --------  --------  -------  --------------------
    fc.weight    new       -         (2, 4)   kaiming_uniform_
    """
    return tabulate(
        [
            (
                r.name + (f" (was {r.old_name})" if r.old_name and r.old_name != r.name else ""),
                str(r.status),
                format_shape(r.shape_before),
                format_shape(r.shape_after),
                "; ".join(x for x in (r.init, r.message) if x),
            )
            for r in rows
        ],
        headers=("Parameter", "Status", "Before", "After", "Initialiser / note"),
        disable_numparse=True,
    )


def shape_changes_table(layers: Iterable[LayerReport]) -> str:
    """Layer, type, input and output shape, params: the layers that changed the output's shape.

    Examples
    --------
    >>> from torchsurgeon.records import LayerReport, LayerStatus
    >>> print(shape_changes_table([LayerReport("fc", "Linear", (1, 4), (1, 9), 45, 45, 45, LayerStatus.OK)]))
    Layer    Type    Input shape    Output shape      Params
    -------  ------  -------------  --------------  --------
    fc       Linear  (1, 4)         (1, 9)                45
    """
    return tabulate(
        [
            (x.name, x.type, format_value(x.input_shape), format_value(x.output_shape), format_value(x.params))
            for x in layers
        ],
        headers=("Layer", "Type", "Input shape", "Output shape", "Params"),
        colalign=("left", "left", "left", "left", "right"),
        disable_numparse=True,
    )


def violations_table(violations: Iterable[Violation]) -> str:
    """Field, expected, got: one row per broken field of a shape contract.

    Examples
    --------
    >>> from torchsurgeon.records import Violation
    >>> print(violations_table([Violation("max_params", "≤ 1,000", "1,417")]))
    Field       Expected    Got
    ----------  ----------  -----
    max_params  ≤ 1,000     1,417
    """
    return tabulate(
        [(v.field, v.expected, v.got) for v in violations],
        headers=("Field", "Expected", "Got"),
        disable_numparse=True,
    )


def lock_diff_table(path: str | os.PathLike[str] | None, diffs: Sequence[LayerDiff]) -> str:
    """How many layers differ from the lockfile at ``path`` and how to accept them, then one row per layer.

    Examples
    --------
    >>> from torchsurgeon.records import LayerDiff, LockChange
    >>> row = {"name": "1", "type": "ReLU", "output_shape": [1, 8], "params": 0, "trainable": 0}
    >>> print(lock_diff_table("net.lock.json", [LayerDiff("1", LockChange.ADDED, None, row)]))
    Lockfile net.lock.json: 1 layer differs (if intended: `torchsurgeon lock ...` or `pytest --torchsurgeon-update`)
    Layer    Type    Change    Locked    Now
    -------  ------  --------  --------  -----------------------
    1        ReLU    added     -         output (1, 8), params 0
    """
    n = len(diffs)
    title = (
        f"Lockfile {format_path(path)}: {n} layer{'s' * (n != 1)} differ{'s' * (n == 1)} "
        "(if intended: `torchsurgeon lock ...` or `pytest --torchsurgeon-update`)"
    )
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
    table = tabulate(rows, headers=("Layer", "Type", "Change", "Locked", "Now"), disable_numparse=True)
    return f"{title}\n{table}"


def _describe(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        if key == "type":
            parts.append(str(row["type"]))
        elif key == "output_shape":
            parts.append(f"output {format_value(row['output_shape'])}")
        else:
            parts.append(f"{key} {format_value(row[key])}")
    return ", ".join(parts)


def _shown_fields(d: LayerDiff) -> tuple[str, ...]:
    fields = d.fields
    if "trainable" in fields and "params" in fields and d.locked is not None and d.now is not None:
        if d.locked["params"] - d.locked["trainable"] == d.now["params"] - d.now["trainable"]:
            fields = tuple(f for f in fields if f != "trainable")  # same frozen count: implied by params
    return fields
