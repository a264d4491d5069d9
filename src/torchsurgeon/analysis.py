"""``paramcount``: trace, graph, shapes and parameters of a model for one input.

This is the public entry of the analysis pipeline
(trace → graph → shapes → params), returning a :class:`ModelReport`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from torch import nn

from .arguments import ExampleInputs, tensor_inputs
from .blocks import DEFAULT_DEPTH, FULL_DEPTH, BlockRow, group_layers
from .crosscheck import crosscheck as run_crosscheck
from .crosscheck import crosscheck_mode, real_failure
from .dot import to_dot, to_graphml
from .errors import InputError, ShapeError, TraceError
from .flops import count_flops
from .gcpause import paused_gc
from .graph import (
    build_graph,
    graph_copy,
    index_of,
    model_of,
    node_record,
    opaque_of,
    records_now,
)
from .lazy import lazy_layers, materialized
from .metavalues import FAILED_NODE
from .params import ParamSummary, count_params, packed_weights
from .records import (
    CrossCheck,
    CrossCheckMode,
    Finding,
    LayerReport,
    LayerStatus,
    OutputShape,
    ShapeSource,
    TableColumn,
    TableFormat,
    Trust,
)
from .report import compact_count, depth_table, format_count, format_shape, jsonable, report_document, table_format
from .rows import layer_rows
from .shapememo import ShapeMemo
from .shapes import ShapeResult, propagate_shapes
from .shapespec import InputSpec, per_sample_hint
from .trace import Traced, trace
from .wrappers import unwrap_model

__all__ = ("ModelReport", "analyse_graph", "paramcount", "paramcount_sweep")


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
        """The layers whose status is ``invalid``."""
        return [layer for layer in self.layers if layer.status == LayerStatus.INVALID]

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
            With the closest names when there is no such layer.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        close = [layer.name for layer in self.layers if name in layer.name][:5]
        raise KeyError(f"no layer {name!r} in {self.model_name}; similar: {close}")

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
            lines.append(
                "NOT TRUSTED: the output is unknown and no real forward verified it — the layers past the first "
                "unknown one are not counted (report.trusted is False)"
            )
        elif check.trust == Trust.VERIFIED:
            lines.append(f"Verified ({check.reason}): {check.message}")
        if self.findings:
            lines.append(f"Invalid layers ({len(self.invalid)}):")
            lines += [f"  {f.message}" for f in self.findings]
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
            ``csv`` is the layers' rows alone (no block rows, no totals),
            for a spreadsheet; ``html`` colours rows by status (invalid red,
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
        rows = self.rows(depth, collapse=depth != FULL_DEPTH if collapse is None else collapse)
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


def analyse_graph(
    G: nx.DiGraph,
    input: InputSpec,
    *,
    batch: int = 1,
    name: str = "",
    crosscheck: CrossCheckMode | str = CrossCheckMode.AUTO,
) -> tuple[ModelReport, ShapeResult]:
    """Propagate ``input`` through an already-built graph and count parameters.

    Use it to analyse one trace for several inputs; :func:`paramcount` is
    trace + build + this.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`; annotated in place.
    input : shape, tensor, tuple of shapes, or mapping
        As in :func:`paramcount`.
    batch : int
        Batch size prepended to shapes.
    name : str
        Title of the report (default: the model's class name).
    crosscheck : CrossCheckMode or str
        When to compare the graph with a real forward on ``meta``, as in
        :func:`paramcount`.

    Returns
    -------
    tuple[ModelReport, ShapeResult]
        The report (its ``graph`` is a copy of ``G``) and the raw shape result.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU())))
    >>> [analyse_graph(G, (c, 32, 32))[0].total_for_input for c in (1, 3)]
    [156, 456]
    """
    with paused_gc():  # as in paramcount
        return _analyse(G, input, batch, name, None, crosscheck_mode(crosscheck), copy_graph=True)


@dataclass
class _SweepCache:
    """What the inputs of one sweep share: earlier shape results, parameter counts per set of findings."""

    memo: ShapeMemo
    params: dict[tuple[tuple[str, str], ...], ParamSummary] = field(default_factory=dict)


def _analyse(
    G: nx.DiGraph,
    input: InputSpec,
    batch: int,
    name: str,
    cache: _SweepCache | None,
    mode: CrossCheckMode,
    *,
    copy_graph: bool,
) -> tuple[ModelReport, ShapeResult]:
    """analyse_graph with the sweep's shared results; ``copy_graph=False`` when nobody else holds ``G``."""
    model = model_of(G)
    shapes = propagate_shapes(G, input, batch=batch, memo=cache.memo if cache is not None else None)
    for rec in shapes.nodes.values():
        f = rec.finding
        if (
            f is not None
            and f.what == "input rank"
            and any(node_record(G, src).op == "placeholder" for src in G.predecessors(rec.name))
        ):
            raise ShapeError(f"{rec.message} (input shapes {dict(shapes.input_shapes)})")
    if cache is None:
        summary = count_params(G)
    else:  # parameter counts depend on the input only through the invalid layers
        key = tuple(
            (rec.name, repr(rec.findings)) for rec in shapes.nodes.values() if rec.status == LayerStatus.INVALID
        )
        summary = cache.params.get(key) or cache.params.setdefault(key, count_params(G))
    flops = count_flops(G, per_layer=False)  # each row reads its node's own
    layers = layer_rows(G, summary)
    output_shape = shapes.output_shape
    if isinstance(output_shape, tuple) and all(isinstance(d, int) for d in output_shape):
        output_shape = OutputShape(output_shape, layers)  # remembers its layers for assertion messages
    report = ModelReport(
        model_name=name or type(model).__name__,
        input_shapes=dict(shapes.input_shapes),
        total=summary.total,
        trainable=summary.trainable,
        frozen=summary.frozen,
        total_for_input=summary.total_for_input,
        buffers=summary.buffers,
        bytes_by_dtype=summary.bytes_by_dtype,
        output_shape=output_shape,
        layers=layers,
        findings=shapes.findings,
        _graph=_copy_later(G) if copy_graph else G,
        opaque=dict(opaque_of(G)),
        unused=summary.unused,
        macs=flops.macs,
        flops=flops.flops,
        flops_uncounted=flops.uncounted,
        crosscheck=run_crosscheck(G, shapes, mode=mode, unused=summary.unused),
    )
    return report, shapes


def _copy_later(G: nx.DiGraph) -> Callable[[], nx.DiGraph]:
    """A copy of ``G`` as it is now, made when called: the records are kept, the graph is not copied yet (a sweep's
    reports are often read only for their totals, and eight copies of a graph are garbage to collect)."""
    records = records_now(G)
    return lambda: graph_copy(G, records)


def paramcount(
    model: nn.Module,
    input: InputSpec,
    *,
    batch: int = 1,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    concrete_args: Mapping[str, Any] | None = None,
    autowrap_functions: Iterable[Callable[..., Any]] = (),
    crosscheck: CrossCheckMode | str = CrossCheckMode.AUTO,
) -> ModelReport:
    """Parameters, shapes and invalid layers of ``model`` for an input shape.

    Parameters
    ----------
    model : nn.Module
        Any model torch.fx can trace (submodules it cannot are analysed as
        opaque leaves).  It is never modified: no hooks, same weights,
        ``training`` and ``requires_grad`` untouched.  Models on ``meta`` work.
    input : shape, tensor, tuple of shapes, or mapping
        Per-sample shape, batch excluded, any channel count and size:
        ``(1, 224, 224)``.  Several inputs: a tuple of shapes or
        ``{"image": (3, 224, 224), "mask": (1, 224, 224)}``.  A tensor is
        used as it is (batch included; only its shape and dtype matter); a
        :class:`~torchsurgeon.shapespec.TypedShape` (``TypedShape((128,),
        "long")``) is a shape with the dtype of its tensor.
    batch : int
        Batch size prepended to every shape.
    leaf_modules, concrete_args, autowrap_functions
        Passed to :func:`torchsurgeon.trace.trace`.
    crosscheck : CrossCheckMode or str
        When to compare the traced graph with one forward of a ``meta`` copy
        of the model (:mod:`torchsurgeon.crosscheck`): ``"auto"`` (default)
        when the graph has invalid, opaque or unknown layers or unused
        parameters; ``"always"``; ``"never"``.  ``report.trusted`` is False
        when they disagree, and the table says so.

    Returns
    -------
    ModelReport
        ``total``, ``trainable``, ``total_for_input``, ``output_shape``,
        ``layers``, ``invalid``, ``macs``, ``flops``, ``shape_fallbacks``,
        ``graph``; ``print()`` it for a table.

    Raises
    ------
    InputError
        If ``model`` is not an ``nn.Module`` or the shape is malformed.
    TraceError
        If the model cannot be traced (the message says where and how to fix it).
    ShapeError
        If the input has the wrong rank for the first layer.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 28 * 28, 10))
    >>> r = paramcount(net, (1, 32, 32))
    >>> r.total, r.total_for_input, r.output_shape
    (47506, 47206, (1, 10))
    >>> [layer.name for layer in r.invalid]
    ['0']
    """
    mode = crosscheck_mode(crosscheck)
    model = unwrap_model(model)
    options = {
        "leaf_modules": leaf_modules,
        "concrete_args": concrete_args,
        "autowrap_functions": autowrap_functions,
        "inputs": tensor_inputs(input),  # other forward arguments are traced with their defaults
    }
    lazy = lazy_layers(model)
    if lazy:  # their parameters are made by the first forward: on a copy, at this input
        model = materialized(model, input, batch)
    with paused_gc():  # no full collection of the whole process in the middle (torchsurgeon.gcpause)
        traced = _trace_explained(model, input, batch, options)
        report, _ = _analyse(build_graph(traced), input, batch, "", None, mode, copy_graph=False)  # the report's
    return dataclasses.replace(report, lazy=lazy) if lazy else report


def _trace_explained(model: nn.Module, input: InputSpec, batch: int, options: Mapping[str, Any]) -> Traced:
    """``trace(model, **options)`` for ``input`` (Python on shapes answered for it); when the model's own forward
    cannot be traced, the error says why in the user's terms: the input's rank, or a part that can be analysed."""
    try:
        return trace(model, **options, example_inputs=ExampleInputs(model, input, batch))
    except TraceError as exc:
        if not exc.whole_model:
            raise
        hint = per_sample_hint(input if isinstance(input, Mapping) else {"": input}, batch)
        example = ExampleInputs(model, input, batch)
        rejected = real_failure(model, example, exc, example.paths)
        if rejected is not None:  # the model's own check of its input, or an op it does not fit: no trace gets past
            shapes = {name: tuple(t.shape) for name, t in example.items()}
            failed = getattr(exc.__cause__, FAILED_NODE, "")
            raise ShapeError(
                f"{type(model).__name__} does not take this input {shapes}"
                f"{f' (the trace fails in {failed})' if failed else ''}: a real forward raises {rejected[0]}\n"
                f"  at {rejected[1]}\n  fix: give an input the model accepts (what its code at that line asks)"
                f"{hint}"
            ) from exc
        if hint and "values to unpack" in str(exc):  # the input's rank, not the model: no part to suggest
            raise TraceError(f"{exc}{hint}", whole_model=True) from exc
        raise TraceError(f"{exc}{_parts_to_analyse(model, input, batch)}", whole_model=True) from exc


def _parts_to_analyse(model: nn.Module, input: InputSpec, batch: int) -> str:
    """For a model whose own forward cannot be traced: its exact total, and a part analysed at this input.

    The parts with parameters are tried largest first (a detection model's backbone takes the images; its
    heads take what the backbone gives and fail); the first that is analysed without an error is named
    with the call that analyses it.
    """
    total = sum(p.numel() for p in model.parameters())  # parameters() gives a tied one once
    lines = f"\n  the whole model holds {total:,} parameters (each counted once)"
    if not (isinstance(input, tuple) and all(isinstance(d, int) for d in input)):
        return lines
    parts = []
    for name, part in model.named_children():
        size = sum(p.numel() for p in part.parameters())
        if size:
            parts.append((size, name, part))
    for size, name, part in sorted(parts, key=lambda p: -p[0])[:3]:
        try:  # paramcount's own steps: a part failing the same way is not searched in turn
            traced = trace(part, inputs=1, example_inputs=ExampleInputs(part, input, batch))
            part_graph = build_graph(traced)
            part_report, _ = _analyse(part_graph, input, batch, "", None, CrossCheckMode.NEVER, copy_graph=False)
        except Exception:  # a probe: whatever fails, this part does not take the model's input
            continue
        if part_report.invalid:  # it runs, but not on this input (the forward made it grey first)
            continue
        where = f"model.{name}" if name.isidentifier() else f"model.get_submodule({name!r})"
        at = f"{input}" + (f", batch={batch}" if batch != 1 else "")
        return (
            f"{lines}; of them {size:,} are in {name} ({type(part).__name__}), which takes this input: "
            f"paramcount({where}, {at})"
        )
    return lines


def paramcount_sweep(
    model: nn.Module,
    inputs: Iterable[InputSpec],
    *,
    batch: int = 1,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    concrete_args: Mapping[str, Any] | None = None,
    autowrap_functions: Iterable[Callable[..., Any]] = (),
    crosscheck: CrossCheckMode | str = CrossCheckMode.AUTO,
) -> list[ModelReport]:
    """:func:`paramcount` for several inputs: the model is traced once, then only re-propagated.

    Parameters
    ----------
    model : nn.Module
        As in :func:`paramcount`; never modified.
    inputs : iterable of input specs
        One per report, each as :func:`paramcount`'s ``input``:
        ``[(1, 224, 224), (3, 224, 224), (3, 512, 512)]``.  All of them
        must give tensors to the same ``forward`` arguments.
    batch : int
        Batch size prepended to every shape.
    leaf_modules, concrete_args, autowrap_functions
        Passed to :func:`torchsurgeon.trace.trace`.
    crosscheck : CrossCheckMode or str
        As in :func:`paramcount`, for each report.

    Returns
    -------
    list[ModelReport]
        One report per input, in order; each has its own annotated graph.

    Raises
    ------
    InputError
        If ``inputs`` is empty, a spec is malformed, or the specs name
        different ``forward`` arguments.
    TraceError
        If the model cannot be traced.
    ShapeError
        If an input has the wrong rank for the first layer.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    >>> [(r.total_for_input, r.output_shape) for r in paramcount_sweep(net, [(1, 32, 32), (3, 64, 64)])]
    [(98, (1, 2)), (242, (1, 2))]
    """
    specs = list(inputs)
    if not specs:
        raise InputError("paramcount_sweep needs at least one input shape, e.g. [(1, 224, 224), (3, 224, 224)]")
    names = {tensor_inputs(spec) for spec in specs}
    if len(names) > 1:
        raise InputError(
            f"the input specs give tensors to different forward arguments ({sorted(map(str, names))}) — "
            "sweep one input layout at a time"
        )
    mode = crosscheck_mode(crosscheck)
    model = unwrap_model(model)
    options: dict[str, Any] = {
        "leaf_modules": tuple(leaf_modules),
        "concrete_args": concrete_args,
        "autowrap_functions": tuple(autowrap_functions),
        "inputs": names.pop(),
    }
    if lazy_layers(model):  # each input makes other parameters: analysed one by one
        one = functools.partial(paramcount, model, batch=batch, crosscheck=mode, leaf_modules=leaf_modules)
        return [one(spec, concrete_args=concrete_args, autowrap_functions=autowrap_functions) for spec in specs]
    with paused_gc():  # no full collection of the whole process in the middle (torchsurgeon.gcpause)
        return _sweep(model, specs, batch, mode, options)


def _sweep(
    model: nn.Module, specs: list[InputSpec], batch: int, mode: CrossCheckMode, options: dict[str, Any]
) -> list[ModelReport]:
    """paramcount_sweep once its arguments are checked: one trace, re-propagated for each input."""
    traced = _trace_explained(model, specs[0], batch, options)
    ranks = traced.input_ranks  # forward unpacked an input's shape: an input of another rank is traced on its own
    other_rank = ranks and any(
        t.dim() != ranks.get(name, t.dim())
        for spec in specs[1:]
        for name, t in ExampleInputs(model, spec, batch).items()
    )
    # forward's Python answered questions about the first input's shapes, or a part failed to trace at them (BERT
    # given more tokens than its positions: its attention made opaque, which the next input would not need)
    if traced.shape_specific or other_rank or traced.opaque:
        reports = [_analyse(build_graph(traced), specs[0], batch, "", None, mode, copy_graph=False)[0]]
        for spec in specs[1:]:
            again = _trace_explained(model, spec, batch, options)
            reports.append(_analyse(build_graph(again), spec, batch, "", None, mode, copy_graph=False)[0])
        return reports
    G = build_graph(traced)
    cache = _SweepCache(ShapeMemo(G))  # the model cannot change during the sweep: results are reused
    last = len(specs) - 1  # the last report can have the sweep's graph itself
    return [_analyse(G, spec, batch, "", cache, mode, copy_graph=i < last)[0] for i, spec in enumerate(specs)]
