"""Rendering: tables (tabulate), shapes and counts as text.

Pure functions over records; they compute nothing about the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tabulate import tabulate

from .records import LayerReport, LayerStatus, ParamReport

__all__ = ("changes_table", "format_count", "format_shape", "layers_table", "model_table")


def format_count(n: int) -> str:
    """Thousands-separated integer.

    Examples
    --------
    >>> format_count(25557032)
    '25,557,032'
    """
    return f"{n:,}"


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
