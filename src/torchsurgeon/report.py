"""Rendering: tables (text, markdown, csv, html), shapes, counts, paths and JSON values as text.

Pure functions over records; they compute nothing about the model.  The depth
table of :meth:`torchsurgeon.ModelReport.table` is :func:`depth_table` over
the rows of :func:`torchsurgeon.blocks.group_layers`; :func:`html_table` is
the one HTML table writer (reports, surgery checks, memory plans).
"""

from __future__ import annotations

import csv
import html
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .blocks import BlockRow
from .errors import check_option
from .records import (
    LayerDiff,
    LayerMemory,
    LayerReport,
    LayerStatus,
    LockChange,
    ParamChange,
    ParamReport,
    TableColumn,
    TableFormat,
    Violation,
)

__all__ = (
    "DEFAULT_COLUMNS",
    "STATUS_COLOURS",
    "changes_table",
    "compact_count",
    "depth_table",
    "format_bytes",
    "format_count",
    "format_names",
    "format_path",
    "format_shape",
    "format_table",
    "format_value",
    "html_table",
    "jsonable",
    "lock_diff_table",
    "memory_table",
    "report_document",
    "shape_changes_table",
    "table_columns",
    "table_format",
    "violations_table",
)


STATUS_COLOURS: Mapping[str, tuple[str, str]] = {
    LayerStatus.OK: ("#ffffff", "#555555"),
    ParamChange.KEPT: ("#ffffff", "#555555"),
    LayerStatus.INVALID: ("#f4cccc", "#cc0000"),
    ParamChange.FOLDED: ("#fce5cd", "#e69138"),
    ParamChange.RESIZED: ("#cfe2f3", "#3d85c6"),
    ParamChange.UPDATED: ("#ead1dc", "#a64d79"),
    ParamChange.NEW: ("#d9ead3", "#38761d"),
    LayerStatus.OPAQUE: ("#d9d9d9", "#666666"),
    LayerStatus.UNKNOWN: ("#f3f3f3", "#999999"),
    ParamChange.REINITIALISED: ("#fff2cc", "#bf9000"),
    ParamChange.REMOVED: ("#eeeeee", "#999999"),
}
"""``(fill, border)`` colour per :class:`~torchsurgeon.records.LayerStatus` or
:class:`~torchsurgeon.records.ParamChange` value: invalid red, folded orange,
resized blue, updated purple, new green, opaque grey.  HTML rows and graph pictures use the same colours."""

DEFAULT_COLUMNS: tuple[TableColumn, ...] = (
    TableColumn.OUTPUT,
    TableColumn.PARAMS,
    TableColumn.MACS,
    TableColumn.STATUS,
)
"""Columns of ``print(report)``, after Layer and Type."""


def format_count(n: int) -> str:
    """Thousands-separated integer.

    Examples
    --------
    >>> format_count(25557032)
    '25,557,032'
    """
    return f"{n:,}"


def compact_count(n: int) -> str:
    """`` (4.09 G)`` for large counts, nothing below a thousand.

    Examples
    --------
    >>> compact_count(4_089_184_256), compact_count(999)
    (' (4.09 G)', '')
    """
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f" ({n / scale:.2f} {unit})"
    return ""


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


def format_names(names: Sequence[str], most: int = 4) -> str:
    """The first ``most`` names, then `` ...`` when there are more.

    Examples
    --------
    >>> format_names(["a", "b"]), format_names(["l1", "l2", "l3", "l4", "l5"])
    ('a, b', 'l1, l2, l3, l4 ...')
    """
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


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


def memory_table(
    title: str,
    layers: Sequence[LayerMemory],
    totals: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
    fmt: TableFormat | str = TableFormat.TEXT,
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
    headers = ("Layer", "Type", "Saved for backward", "Saved so far", "Transient")
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
    if table_format(fmt) == TableFormat.TEXT:
        table = tabulate(
            rows, headers=headers, colalign=("left", "left", "right", "right", "right"), disable_numparse=True
        )
    else:
        table = format_table(headers, rows, fmt)
    return report_document(title, table, totals, notes, fmt)


def changes_table(rows: Iterable[ParamReport], fmt: TableFormat | str = TableFormat.TEXT) -> str:
    """One row per changed parameter: name (and former name), change, shapes, initialiser or note.

    ``fmt="html"`` colours each row by its change (folded orange, new green, invalid red).

    Examples
    --------
    >>> from torchsurgeon.records import ParamChange, ParamReport
    >>> print(changes_table([ParamReport("fc.weight", ParamChange.NEW, None, (2, 4), "kaiming_uniform_")]))
    Parameter    Status    Before    After    Initialiser / note
    -----------  --------  --------  -------  --------------------
    fc.weight    new       -         (2, 4)   kaiming_uniform_
    """
    rows = list(rows)
    headers = ("Parameter", "Status", "Before", "After", "Initialiser / note")
    cells = [
        (
            r.name + (f" (was {r.old_name})" if r.old_name and r.old_name != r.name else ""),
            str(r.status),
            format_shape(r.shape_before),
            format_shape(r.shape_after),
            "; ".join(x for x in (r.init, r.message) if x),
        )
        for r in rows
    ]
    if table_format(fmt) != TableFormat.TEXT:
        return format_table(headers, cells, fmt, row_status=[str(r.status) for r in rows])
    return tabulate(cells, headers=headers, disable_numparse=True)


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


def lock_diff_table(
    path: str | os.PathLike[str] | None, diffs: Sequence[LayerDiff], command: str = "torchsurgeon lock ..."
) -> str:
    """How many layers differ from the lockfile at ``path`` and how to accept them (``command``, or
    ``pytest --torchsurgeon-update``), then one row per layer.

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
        f"(if intended: `{command}` or `pytest --torchsurgeon-update`)"
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


# ---------------------------------------------------------------- any table, in any format

_HEADERS = {
    TableColumn.INPUT: "Input shape",
    TableColumn.OUTPUT: "Output shape",
    TableColumn.PARAMS: "Params",
    TableColumn.TRAINABLE: "Trainable",
    TableColumn.MACS: "MACs",
    TableColumn.KERNEL: "Kernel",
    TableColumn.PERCENT: "% params",
    TableColumn.STATUS: "Status",
}
_RIGHT = {TableColumn.PARAMS, TableColumn.TRAINABLE, TableColumn.MACS, TableColumn.PERCENT}
_INDENT = {TableFormat.TEXT: "  ", TableFormat.MARKDOWN: "\u00a0\u00a0"}  # markdown would drop plain spaces


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    row_status: Sequence[str] | None = None,
    *,
    align: Sequence[str] | None = None,
    levels: Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
    caption: str = "",
) -> str:
    """A self-contained HTML ``<table>``: inline styles, no script, every text escaped.

    Parameters
    ----------
    headers : sequence of str
        Column titles.
    rows : sequence of sequences of str
        Cell texts, one sequence per row.
    row_status : sequence of str, optional
        A :class:`~torchsurgeon.records.LayerStatus` or
        :class:`~torchsurgeon.records.ParamChange` value per row; the row is
        filled with its colour in :data:`STATUS_COLOURS` (invalid red, folded
        orange, new green).
    align : sequence of str, optional
        ``"left"`` or ``"right"`` per column (default left).
    levels : sequence of int, optional
        Indentation of each row's first cell (a block's rows under it).
    titles : sequence of str, optional
        A tooltip per row (empty for none): the message of an invalid layer.
    caption : str
        Shown above the table.

    Returns
    -------
    str
        One ``<table>`` element.

    Examples
    --------
    >>> print(html_table(["Layer", "Status"], [["conv1 <x>", "invalid"]], ["invalid"]))  # doctest: +ELLIPSIS
    <table style="border-collapse: collapse; ...">
    <thead><tr><th style="...">Layer</th><th style="...">Status</th></tr></thead>
    <tbody>
    <tr style="background-color: #f4cccc; ..."><td style="...">conv1 &lt;x&gt;</td><td style="...">invalid</td></tr>
    </tbody>
    </table>
    """
    aligns = list(align or ()) + ["left"] * (len(headers) - len(align or ()))
    lines = [
        '<table style="border-collapse: collapse; font-family: monospace; font-size: 12px; '
        'white-space: nowrap; color: #000000; background-color: #ffffff;">',
    ]
    if caption:
        lines.append(f'<caption style="text-align: left; font-weight: bold;">{html.escape(caption)}</caption>')
    heads = "".join(
        f'<th style="padding: 2px 8px; text-align: {a}; border-bottom: 2px solid #555555;">{html.escape(h)}</th>'
        for h, a in zip(headers, aligns)
    )
    lines += [f"<thead><tr>{heads}</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        status = row_status[i] if row_status is not None else LayerStatus.OK
        fill, border = STATUS_COLOURS.get(status, STATUS_COLOURS[LayerStatus.OK])
        style = f"background-color: {fill}; border-left: 3px solid {border}; border-bottom: 1px solid #dddddd;"
        title = titles[i] if titles is not None else ""
        title_attr = f' title="{html.escape(title)}"' if title else ""
        cells = []
        for j, (text, a) in enumerate(zip(row, aligns)):
            pad = 1.5 * levels[i] if j == 0 and levels is not None else 0
            indent = f" padding-left: {8 + 16 * pad:g}px;" if pad else ""
            cells.append(f'<td style="padding: 2px 8px; text-align: {a};{indent}">{html.escape(str(text))}</td>')
        lines.append(f'<tr style="{style}"{title_attr}>{"".join(cells)}</tr>')
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    fmt: TableFormat | str = TableFormat.TEXT,
    *,
    align: Sequence[str] | None = None,
    levels: Sequence[int] | None = None,
    row_status: Sequence[str] | None = None,
) -> str:
    """Cells as an aligned text table, a markdown pipe table, CSV or an HTML table (:func:`html_table`).

    ``levels`` indents each row's first cell (two spaces per level in text,
    non-breaking spaces in markdown; CSV is not indented).

    Examples
    --------
    >>> rows = [["layer1", "215,808"], ["layer1.0", "75,008"]]
    >>> print(format_table(["Layer", "Params"], rows, "text", align=["left", "right"], levels=[0, 1]))
    Layer         Params
    ----------  --------
    layer1       215,808
      layer1.0    75,008
    >>> print(format_table(["Layer", "Params"], rows, "markdown", align=["left", "right"]))
    | Layer    |  Params |
    | :------- | ------: |
    | layer1   | 215,808 |
    | layer1.0 |  75,008 |
    >>> print(format_table(["Layer", "Params"], rows, "csv"), end="")
    Layer,Params
    layer1,"215,808"
    layer1.0,"75,008"
    """
    fmt = TableFormat(fmt)
    aligns = list(align or ()) + ["left"] * (len(headers) - len(align or ()))
    if fmt == TableFormat.HTML:
        return html_table(headers, rows, row_status, align=aligns, levels=levels)
    if fmt == TableFormat.CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return out.getvalue()
    indent = _INDENT[fmt]
    body = [
        [(indent * (levels[i] if levels else 0) + row[0]) if j == 0 else row[j] for j in range(len(headers))]
        for i, row in enumerate(rows)
    ]
    pad = 2 if fmt == TableFormat.TEXT else 0  # as tabulate's "simple" format: headers get two spare columns
    widths = [max([len(h) + pad] + [len(r[j]) for r in body]) for j, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> list[str]:
        return [c.rjust(w) if a == "right" else c.ljust(w) for c, w, a in zip(cells, widths, aligns)]

    if fmt == TableFormat.MARKDOWN:
        rule = [(":" + "-" * (w - 1) if a == "left" else "-" * (w - 1) + ":") for w, a in zip(widths, aligns)]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in [line(headers), rule, *map(line, body)])
    text = ["  ".join(line(headers)), "  ".join("-" * w for w in widths), *("  ".join(line(r)) for r in body)]
    return "\n".join(t.rstrip() for t in text)


def _cell(row: BlockRow, column: TableColumn, total: int, fmt: TableFormat) -> str:
    raw = fmt == TableFormat.CSV
    if column == TableColumn.INPUT:
        return format_shape(row.input_shape)
    if column == TableColumn.OUTPUT:
        return format_shape(row.output_shape)
    if column == TableColumn.PARAMS:
        if raw:
            return str(row.params)
        text = format_count(row.params)
        if row.params_for_input != row.params:
            text += f" → {format_count(row.params_for_input)}"
        return text + (" (shared)" if row.shared else "")
    if column == TableColumn.TRAINABLE:
        return str(row.trainable) if raw else format_count(row.trainable)
    if column == TableColumn.MACS:
        return str(row.macs) if raw else format_count(row.macs) if row.macs else "-"
    if column == TableColumn.KERNEL:
        return "×".join(str(k) for k in row.kernel) if row.kernel else ("" if raw else "-")
    if column == TableColumn.PERCENT:
        if not total:
            return "" if raw else "-"
        share = 100 * row.params / total
        return f"{share:.2f}" if raw else f"{share:.2f}%"
    return row.status


def depth_table(
    rows: Sequence[BlockRow],
    columns: Sequence[TableColumn | str] | None = None,
    fmt: TableFormat | str = TableFormat.TEXT,
    *,
    total: int = 0,
) -> str:
    """The depth table: block rows with their totals and the rows under them, indented.

    Parameters
    ----------
    rows : sequence of BlockRow
        Top-level rows from :func:`torchsurgeon.blocks.group_layers`.
    columns : sequence of TableColumn or str, optional
        Columns after Layer and Type (default :data:`DEFAULT_COLUMNS`).
    fmt : TableFormat or str
        ``text``, ``markdown``, ``csv`` (the rows with nothing under them:
        layers and folded blocks, so the columns add up; nothing indented)
        or ``html``.
    total : int
        The model's parameter total, for the ``percent`` column.

    Returns
    -------
    str
        The table alone (no title, totals or notes).

    Raises
    ------
    InputError
        For an unknown column or format (the message lists the known ones).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon import paramcount
    >>> from torchsurgeon.blocks import group_layers
    >>> r = paramcount(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sequential(nn.Flatten(), nn.Linear(16, 2))), (1, 4, 4))
    >>> rows = group_layers(r.layers, types={"1": "Sequential"})
    >>> print(depth_table(rows, ["kernel", "params", "percent"], total=r.total))
    Layer    Type        Kernel      Params    % params
    -------  ----------  --------  --------  ----------
    0        Conv2d      3×3             40      54.05%
    1        Sequential  -               34      45.95%
      1.0    Flatten     -                0       0.00%
      1.1    Linear      -               34      45.95%
    """
    fmt = table_format(fmt)
    chosen = table_columns(columns)
    flat = [r for top in rows for r in top.walk()]
    if fmt == TableFormat.CSV:  # the rows with nothing under them: layers, and blocks folded at this depth
        flat = [r for r in flat if not r.children]
    headers = ["Layer", "Type", *(_HEADERS[c] for c in chosen)]
    cells = [[r.name, r.type, *(_cell(r, c, total, fmt) for c in chosen)] for r in flat]
    align = ["left", "left", *("right" if c in _RIGHT else "left" for c in chosen)]
    if fmt == TableFormat.HTML:
        return html_table(
            headers,
            cells,
            [r.status for r in flat],
            align=align,
            levels=[r.level for r in flat],
            titles=[r.message for r in flat],
        )
    return format_table(headers, cells, fmt, align=align, levels=[r.level for r in flat])


def table_format(fmt: TableFormat | str) -> TableFormat:
    """``fmt`` as a :class:`~torchsurgeon.records.TableFormat`; an InputError naming the known formats otherwise.

    Examples
    --------
    >>> table_format("markdown")
    <TableFormat.MARKDOWN: 'markdown'>
    """
    return check_option(fmt, TableFormat, "fmt")


def table_columns(columns: Sequence[TableColumn | str] | str | None) -> list[TableColumn]:
    """The columns of a depth table, from names or a comma-separated string; the default for ``None``.

    Raises
    ------
    InputError
        For an unknown column (the message lists the known ones).

    Examples
    --------
    >>> [str(c) for c in table_columns("params, kernel_size")], len(table_columns(None))
    (['params', 'kernel'], 4)
    """
    if columns is None:
        return list(DEFAULT_COLUMNS)
    if isinstance(columns, str):
        columns = [c for c in columns.split(",") if c.strip()]
    chosen: list[TableColumn] = []
    for c in columns:
        column = check_option(c.strip() if isinstance(c, str) else c, TableColumn, "column")
        if column not in chosen:
            chosen.append(column)
    return chosen


def report_document(
    title: str,
    table: str,
    totals: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
    fmt: TableFormat | str = TableFormat.TEXT,
) -> str:
    """Title, table, totals and notes, in the table's format (CSV: the table alone).

    Examples
    --------
    >>> print(report_document("M", "<table></table>", [("Total params", "0")], ["Invalid layers: none"], "html"))
    <div>
    <p style="font-weight: bold;">M</p>
    <table></table>
    <table style="font-family: monospace; font-size: 12px;">
    <tr><td style="padding: 0 8px 0 0;">Total params</td><td>0</td></tr>
    </table>
    <pre style="font-size: 12px;">Invalid layers: none</pre>
    </div>
    """
    fmt = table_format(fmt)
    if fmt == TableFormat.CSV:
        return table
    if fmt == TableFormat.HTML:
        lines = ["<div>", f'<p style="font-weight: bold;">{html.escape(title)}</p>', table]
        lines.append('<table style="font-family: monospace; font-size: 12px;">')
        lines += [
            f'<tr><td style="padding: 0 8px 0 0;">{html.escape(k)}</td><td>{html.escape(v)}</td></tr>'
            for k, v in totals
        ]
        lines.append("</table>")
        if notes:
            lines.append(f'<pre style="font-size: 12px;">{html.escape(chr(10).join(notes))}</pre>')
        lines.append("</div>")
        return "\n".join(lines)
    if fmt == TableFormat.MARKDOWN:
        lines = [f"**{title}**", "", table, ""]
        lines += [f"- {k}: {v}" for k, v in totals]
        if notes:
            lines += ["", "```", *notes, "```"]
        return "\n".join(lines)
    width = max((len(k) for k, _ in totals), default=0)
    lines = [title, table, ""]
    lines += [f"{k + ':':<{width + 1}} {v}" for k, v in totals]
    if notes:
        lines.append("")
        lines += list(notes)
    return "\n".join(lines)
