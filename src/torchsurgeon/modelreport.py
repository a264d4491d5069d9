"""The report of one analysis (:func:`torchsurgeon.paramcount`): totals, findings, the layer table and its
exports (JSON, DOT, GraphML), and whether the traced graph can be trusted."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .blocks import DEFAULT_DEPTH, FULL_DEPTH, BlockRow, group_layers
from .dot import to_dot, to_graphml
from .errors import no_such_name
from .graph import (
    index_of,
    model_of,
)
from .params import packed_weights
from .records import (
    CrossCheck,
    Finding,
    LayerReport,
    LayerStatus,
    ShapeSource,
    TableColumn,
    TableFormat,
    Trust,
)
from .report import compact_count, depth_table, format_count, format_shape, jsonable, report_document, table_format

__all__ = ("ModelReport",)


@dataclass(frozen=True)
class ModelReport:
    """What :func:`paramcount` found.  ``print(report)`` shows the table; a notebook shows it in colour.

    ``print(report)`` is :meth:`table` at the default depth
    (:data:`~torchsurgeon.blocks.DEFAULT_DEPTH`, 2: the model's blocks and
    the blocks inside them, repeated blocks collapsed); ``report.table(depth=-1)``
    shows every layer.

    Attributes
    ----------
    model_name : str
        Class name of the model.
    input_shapes : Mapping[str, tuple[int, ...]]
        Input shape per ``forward`` argument, batch included.
    total, trainable, frozen : int
        Unique parameters of the model as it stands.
    total_for_input : int
        Parameters once every invalid layer is resized to fit this input.
    buffers : int
        Unique buffer elements.
    bytes_by_dtype : Mapping[str, int]
        Parameter bytes per dtype.
    output_shape : tuple or nested tuples
        Output shape, batch included; nested for tuple/dict outputs.
    layers : Sequence[LayerReport]
        One per graph node (inputs and output excluded), in execution order;
        built on first use (a report asked only for its totals never builds them).
    findings : tuple[Finding, ...]
        Every mismatch, in order; an invalid layer may have several.
    graph : networkx.DiGraph
        The annotated graph (schema in :mod:`torchsurgeon.graph`).
    opaque : Mapping[str, str]
        Submodules analysed without tracing inside, with the reason.
    unused : tuple[str, ...]
        Parameters no node uses (still counted in ``total``).
    macs, flops : int
        Multiply-accumulates and FLOPs for this input (conventions in
        :mod:`torchsurgeon.flops`); per layer in ``layers``.  A lower bound
        when ``flops_uncounted`` is not empty (the summary prints ``≥``).
    flops_uncounted : tuple[str, ...]
        Layers whose FLOPs are not known from shapes (not in the totals).
    crosscheck : CrossCheck
        The traced graph compared with a real forward of the model on
        ``meta`` (:mod:`torchsurgeon.crosscheck`); see :attr:`trusted`.
    """

    model_name: str
    input_shapes: Mapping[str, tuple[int, ...]]
    total: int
    trainable: int
    frozen: int
    total_for_input: int
    buffers: int
    bytes_by_dtype: Mapping[str, int]
    output_shape: Any
    layers: Sequence[LayerReport]
    findings: tuple[Finding, ...]
    _graph: nx.DiGraph | Callable[[], nx.DiGraph] = field(repr=False, compare=False)
    opaque: Mapping[str, str] = field(default_factory=dict)
    unused: tuple[str, ...] = ()
    macs: int = 0
    flops: int = 0
    flops_uncounted: tuple[str, ...] = ()
    crosscheck: CrossCheck = field(default_factory=CrossCheck)
    lazy: tuple[str, ...] = ()

    @property
    def graph(self) -> nx.DiGraph:
        """The annotated graph: a report of a sweep makes its own on first use (from the records it kept)."""
        graph = self._graph
        if not isinstance(graph, nx.DiGraph):
            graph = graph()
            object.__setattr__(self, "_graph", graph)  # made once: the report is frozen otherwise
        return graph

    @property
    def trusted(self) -> bool:
        """False when the traced graph disagrees with a real forward (the report's numbers are then wrong), or when
        its output is unknown (propagation stopped at an op it cannot follow, such as ``.item()``) and no real
        forward verified it: the output and the counts past the unknown layers are missing."""
        return self.crosscheck.trusted and not self._output_unknown

    @property
    def _output_unknown(self) -> bool:
        """Whether the output is unknown, not verified by a real forward, past layers that could not be computed
        (a model may return None; past an invalid layer, the output is unknown as the input does not fit, and the
        report says so with its fix)."""
        return (
            self.output_shape is None
            and self.crosscheck.trust != Trust.VERIFIED
            and not self.invalid
            and any(layer.status == LayerStatus.UNKNOWN for layer in self.layers)
        )

    @property
    def invalid(self) -> list[LayerReport]:
        """The layers whose status is ``invalid``, each once: a module called at several places with the same
        mismatch (a stem run on two inputs, or on two crops) is one layer, the first call's row, whose message
        names each call's input shape when they differ."""
        return [_one_layer(rows) for rows in _invalid_calls(self.layers)]

    @property
    def batch_too_small(self) -> list[LayerReport]:
        """Layers that fit but whose real forward raises at this batch (batch norm in training mode at batch 1:
        the analysis runs at batch 1 unless told ``batch=``); each ``message`` says what to do."""
        return [layer for layer in self.layers if layer.status == LayerStatus.OK and layer.message]

    @property
    def shape_fallbacks(self) -> list[str]:
        """Layers whose shape came from running them on ``meta`` (no rule of :mod:`torchsurgeon.rules` applied)."""
        return [layer.name for layer in self.layers if layer.shape_source == ShapeSource.META]

    @property
    def param_bytes(self) -> int:
        """Bytes of all unique parameters."""
        return sum(self.bytes_by_dtype.values())

    def layer(self, name: str) -> LayerReport:
        """The first layer called ``name`` (module qualified name or node name).

        Raises
        ------
        KeyError
            With the closest names when there is no such layer; for a block (a module whose ``forward`` was
            traced through, ``layer1``), with how to list its layers.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        inside = sum(name in layer.path for layer in self.layers)
        if inside:  # a block whose forward was traced through: its layers are rows, the block is none
            raise KeyError(
                f"{name!r} in {self.model_name} is a block of {inside} layers, not one layer — its layers: "
                f"[l for l in r.layers if {name!r} in l.path]"
            )
        said = no_such_name(name, list(dict.fromkeys(layer.name for layer in self.layers)))
        raise KeyError(f"no layer {name!r} in {self.model_name} — {said}")

    def totals(self) -> list[tuple[str, str]]:
        """The totals printed under the table, as (label, value) pairs."""
        rows = [
            ("Input", ", ".join(f"{k} {format_shape(v)}" for k, v in self.input_shapes.items())),
            ("Output", format_shape(self.output_shape)),
            ("Total params", format_count(self.total)),
            ("Trainable params", format_count(self.trainable)),
            ("Frozen params", format_count(self.frozen)),
        ]
        if self.total_for_input != self.total:
            n = len(self.invalid)
            rows.append(
                (
                    "Params for this input",
                    f"{format_count(self.total_for_input)} (with {n} invalid layer{'s' * (n != 1)} resized to fit)",
                )
            )
        n = len(self.flops_uncounted)  # a lower bound: those layers' are not known from shapes
        at_least, partial = ("≥ ", f" — {n} layer{'s' * (n != 1)} not counted (see the notes)") if n else ("", "")
        rows += [
            ("Buffers", format_count(self.buffers)),
            ("Param size (MB)", f"{self.param_bytes / 1e6:.2f}"),
            ("MACs", f"{at_least}{format_count(self.macs)}{compact_count(self.macs)}{partial}"),
            ("FLOPs", f"{at_least}{format_count(self.flops)} (2 × MACs + norms){partial}"),
        ]
        return rows

    def notes(self) -> list[str]:
        """Lines under the totals: invalid layers and their fixes, opaque layers, unused params."""
        lines: list[str] = []
        check = self.crosscheck
        if check.trust == Trust.UNTRUSTED:
            lines.append(f"NOT TRUSTWORTHY: {check.message}")
        elif check.trust == Trust.UNVERIFIED:
            lines.append(f"Unverified ({check.reason}): {check.message}")
        if self._output_unknown:
            first = next(layer for layer in self.layers if layer.status == LayerStatus.UNKNOWN)
            lines.append(
                "NOT TRUSTED: the output is unknown and no real forward verified it — the layers past the first "
                f"unknown one ({first.label}: {first.message}) are not counted (report.trusted is False)"
            )
        elif check.trust == Trust.VERIFIED:
            lines.append(f"Verified ({check.reason}): {check.message}")
        if self.findings:
            calls = _invalid_calls(self.layers)
            lines.append(f"Invalid layers ({len(calls)}):")
            merged = {rows[0].message: _one_layer(rows).message for rows in calls}  # a module's calls in one line
            lines += [f"  {merged.get(m, m)}" for m in dict.fromkeys(f.message for f in self.findings)]
        else:
            lines.append("Invalid layers: none")
        cautions: dict[str, list[str]] = {}  # layers that fit but need more of the batch, by what they need
        for layer in self.batch_too_small:
            cautions.setdefault(layer.message, []).append(layer.name)
        for text, names in cautions.items():
            shown = ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")
            lines.append(f"The batch is too small for {len(names)} layer{'s' * (len(names) > 1)} ({shown}): {text}")
        for name, why in self.opaque.items():
            lines.append(f"Opaque: {name} was not traced inside ({why}); analysed as one node")
        if self.unused:
            lines.append(
                f"Unused by forward (still counted): {', '.join(self.unused[:8])}"
                + (" ..." if len(self.unused) > 8 else "")
            )
        if any(layer.shared for layer in self.layers):
            lines.append("(shared): parameters used by several layers, counted once, in the first row that uses them")
        if self.lazy:
            lines.append(
                f"Lazy: {', '.join(self.lazy[:6])}{' ...' if len(self.lazy) > 6 else ''} make their parameters in "
                "the first forward: counted as this input makes them (the model itself is left lazy)"
            )
        packed, weights = packed_weights(model_of(self.graph))
        if packed:
            lines.append(
                f"Quantized: {packed} layer{'s' * (packed != 1)} hold {weights:,} packed int8 weights (torch.ao), "
                "which are not parameters: the totals do not count them"
            )
        if self.flops_uncounted:
            shown = ", ".join(self.flops_uncounted[:8]) + (" ..." if len(self.flops_uncounted) > 8 else "")
            lines.append(f"FLOPs not counted (not known from shapes) for {len(self.flops_uncounted)} layers: {shown}")
        return lines

    def rows(self, depth: int = DEFAULT_DEPTH, *, collapse: bool = True) -> list[BlockRow]:
        """The rows of :meth:`table`: the top-level blocks and layers, each block with the rows under it.

        See :func:`torchsurgeon.blocks.group_layers`; block types are the modules' class names.
        Parameters that ``forward`` never uses (:attr:`unused`) get a last row of their own,
        so the top-level rows' parameters always add up to :attr:`total`.

        Examples
        --------
        >>> from torch import nn
        >>> from torchsurgeon import paramcount
        >>> r = paramcount(nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.ReLU())), (4,))
        >>> [(row.name, row.type, row.params, row.output_shape) for row in r.rows(1)]
        [('0', 'Linear', 40, (1, 8)), ('1', 'Sequential', 72, (1, 8))]
        >>> sum(row.params for row in r.rows(1)) == r.total
        True
        """
        modules = index_of(self.graph).modules if "index" in self.graph.graph else {}
        names = {name for layer in self.layers for name in layer.path}
        types = {name: type(modules[name]).__name__ for name in names if name in modules}
        layers = list(self.layers)
        if self.unused:
            used = sum(layer.counted for layer in layers)
            used_trainable = sum(layer.trainable - layer.seen_trainable for layer in layers)
            unused = self.total - used
            layers.append(
                LayerReport(
                    "(unused by forward)",
                    f"{len(self.unused)} parameter{'s' * (len(self.unused) != 1)}",
                    None,
                    None,
                    unused,
                    unused,
                    self.trainable - used_trainable,
                    LayerStatus.OK,
                    op="get_attr",
                )
            )
        return group_layers(layers, depth, collapse=collapse, types=types)

    def table(
        self,
        depth: int | None = None,
        columns: Sequence[TableColumn | str] | str | None = None,
        fmt: TableFormat | str = TableFormat.TEXT,
        *,
        collapse: bool | None = None,
    ) -> str:
        """The report as a table grouped by module depth, with block totals, totals and notes.

        Parameters
        ----------
        depth : int, optional
            Levels of blocks shown: 1 the model's direct children, 2 (the
            default, :data:`~torchsurgeon.blocks.DEFAULT_DEPTH`) the blocks
            inside them too; deeper layers are folded into their block, whose
            row carries their totals.  ``-1`` shows every layer.  ``None``:
            the default, or every layer for ``fmt="csv"``.  Containers
            without a ``forward`` (``nn.ModuleList``) are not a level.
        columns : sequence of str or TableColumn, or a comma-separated str, optional
            Columns after Layer and Type, from ``input``, ``output``,
            ``params``, ``trainable``, ``macs``, ``kernel``, ``percent``,
            ``status`` (torchinfo's names are accepted too); default
            ``output, params, macs, status``.
        fmt : {"text", "markdown", "csv", "html"}
            ``csv`` is one row per layer, or per block folded at ``depth``
            (no totals, nothing collapsed), for a spreadsheet; ``html`` colours rows by status (invalid red,
            folded orange, new green).
        collapse : bool, optional
            Collapse identical consecutive blocks (``encoder.layer.0 … 11``,
            ``×12 BertLayer``) into one row; default: yes, except at ``depth=-1``.

        Returns
        -------
        str
            Title, table, totals and notes (CSV: the table alone).

        Raises
        ------
        InputError
            For a ``depth`` that is neither a positive int nor -1, an unknown column or format.

        Examples
        --------
        >>> from torch import nn
        >>> from torchsurgeon import paramcount
        >>> def block():
        ...     return nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        >>> r = paramcount(nn.Sequential(nn.Linear(4, 8), block(), block(), block()), (4,))
        >>> print(r.table(depth=1, columns="output,params,percent"))
        Sequential
        Layer    Type           Output shape      Params    % params
        -------  -------------  --------------  --------  ----------
        0        Linear         (1, 8)                40      15.62%
        1 … 3    ×3 Sequential  (1, 8)               216      84.38%
        <BLANKLINE>
        Input:            input (1, 4)
        Output:           (1, 8)
        Total params:     256
        Trainable params: 256
        Frozen params:    0
        Buffers:          0
        Param size (MB):  0.00
        MACs:             224
        FLOPs:            448 (2 × MACs + norms)
        <BLANKLINE>
        ×N: identical consecutive blocks in one row, with their totals (the rows under it show the first)
        Depth 1: deeper layers are folded into their block; report.table(depth=-1) (CLI: --depth -1) shows every layer
        Invalid layers: none
        >>> print(r.table(fmt="csv", columns=["params"]), end="")
        Layer,Type,Params
        0,Linear,40
        1.0,Linear,72
        1.1,ReLU,0
        2.0,Linear,72
        2.1,ReLU,0
        3.0,Linear,72
        3.1,ReLU,0
        """
        fmt = table_format(fmt)
        if depth is None:
            depth = FULL_DEPTH if fmt == TableFormat.CSV else DEFAULT_DEPTH
        if collapse is None:
            collapse = depth != FULL_DEPTH and fmt != TableFormat.CSV
        rows = self.rows(depth, collapse=collapse)
        table = depth_table(rows, columns, fmt, total=self.total)
        every = [row for top in rows for row in top.walk()]
        legend = []
        if any(row.count > 1 for row in every):
            legend.append(_COLLAPSED_NOTE)
        if depth != FULL_DEPTH and any(row.folds_modules for row in every):
            legend.append(f"Depth {depth}: {_FOLDED_NOTE}")
        return report_document(self.model_name, table, self.totals(), legend + self.notes(), fmt)

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """The table in a notebook: rows coloured by status."""
        return self.table(fmt=TableFormat.HTML)

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        """IPython's plain-text view: the table (the dataclass ``repr`` lists every layer)."""
        printer.text(str(self))

    def to_dot(self, *, depth: int | None = None) -> str:
        """Graphviz DOT source of the graph: type, shape, params; invalid red, opaque grey.

        ``depth`` folds modules deeper than that into one box; see :func:`torchsurgeon.dot.to_dot`.
        """
        shapes = ", ".join(f"{k} {format_shape(v)}" for k, v in self.input_shapes.items())
        return to_dot(self.graph, depth=depth, title=f"{self.model_name}, input {shapes}")

    def to_graphml(self) -> str:
        """GraphML of the annotated graph (Gephi, yEd); see :func:`torchsurgeon.dot.to_graphml`."""
        return to_graphml(self.graph)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: totals, output shape, layers and findings."""
        return {
            "model": self.model_name,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "output_shape": jsonable(self.output_shape),
            "total": self.total,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "total_for_input": self.total_for_input,
            "buffers": self.buffers,
            "bytes_by_dtype": dict(self.bytes_by_dtype),
            "layers": [layer.to_dict() for layer in self.layers],
            "invalid": [
                {
                    "layer": f.layer,
                    "type": f.type,
                    "what": f.what,
                    "expected": jsonable(f.expected),
                    "got": jsonable(f.got),
                    "fix": f.fix,
                    "message": f.message,
                }
                for f in self.findings
            ],
            "opaque": dict(self.opaque),
            "unused": list(self.unused),
            "macs": self.macs,
            "flops": self.flops,
            "flops_uncounted": list(self.flops_uncounted),
            "trusted": self.trusted,
            "crosscheck": {
                "trust": str(self.crosscheck.trust),
                "reason": self.crosscheck.reason,
                "real_output": jsonable(self.crosscheck.real_output),
                "message": self.crosscheck.message,
            },
        }


_COLLAPSED_NOTE = "×N: identical consecutive blocks in one row, with their totals (the rows under it show the first)"
_FOLDED_NOTE = "deeper layers are folded into their block; report.table(depth=-1) (CLI: --depth -1) shows every layer"


def _invalid_calls(layers: Sequence[LayerReport]) -> list[list[LayerReport]]:
    """The invalid rows, those of one module's calls with the same mismatch together, in order."""
    calls: dict[tuple[str, str, str], list[LayerReport]] = {}
    for layer in layers:
        if layer.status == LayerStatus.INVALID:
            calls.setdefault((layer.op, layer.name, layer.message), []).append(layer)
    return list(calls.values())


def _one_layer(rows: list[LayerReport]) -> LayerReport:
    """The first of the invalid rows of one module's calls with one mismatch, its message naming each call's input
    shape when they differ: ``stem (Conv2d) expects in_channels=3, got 1 (at its 2 calls, on inputs (1, 1, 32, 32)
    and (1, 1, 16, 16)) — fold it ...``."""
    shapes = list(dict.fromkeys(format_shape(r.input_shape) for r in rows))
    if len(shapes) < 2:
        return rows[0]
    said, dash, fix = rows[0].message.partition(" — ")
    where = f" (at its {len(rows)} calls, on inputs {', '.join(shapes[:-1])} and {shapes[-1]})"
    return dataclasses.replace(rows[0], message=f"{said}{where}{dash}{fix}")
