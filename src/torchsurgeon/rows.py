"""The rows of a report: one :class:`~torchsurgeon.records.LayerReport` per graph node, built on first use.

A row joins a node's record (shapes, status, MACs of one propagation) with
its parameter counts (:func:`torchsurgeon.params.count_params`) and the
fields that depend on the graph alone (the modules around the node, the
kernel size), which are computed once per graph.  Most callers of
:func:`torchsurgeon.paramcount` read totals only: the rows are made when
first read, from the records as they were when the report was made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

import networkx as nx
from torch import nn

from .graph import NodeRecord, graph_cache, index_of, node_records
from .params import LayerParams, ParamSummary
from .records import LayerReport, from_fields, is_shape

__all__ = ("LayerRows", "layer_rows", "module_path")


class LayerRows(Sequence[LayerReport]):
    """A report's rows, built on first use from the records of one propagation.

    The records are taken when the report is made (a later propagation through the same graph does
    not change them); most callers read the totals only, and a row per node is a good part of the
    analysis.  Compares equal to a list of the same rows.
    """

    def __init__(
        self,
        records: list[NodeRecord],
        params: Mapping[str, LayerParams],
        statics: Callable[[], Mapping[str, Mapping[str, Any]]],
    ) -> None:
        self._records = records
        self._params = params
        self._statics = statics

    @functools.cached_property
    def _rows(self) -> list[LayerReport]:
        statics = self._statics()
        return [_row(rec, statics[rec.name], self._params[rec.name]) for rec in self._records]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its rows (the builder of the rows reads the graph)."""
        return {"_rows": self._rows, "_records": self._records, "_params": self._params, "_statics": None}

    @overload
    def __getitem__(self, index: int) -> LayerReport: ...

    @overload
    def __getitem__(self, index: slice) -> list[LayerReport]: ...

    def __getitem__(self, index: int | slice) -> LayerReport | list[LayerReport]:
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[LayerReport]:
        return iter(self._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return self._rows == list(other)

    __hash__ = None  # type: ignore[assignment]  # like a list

    def __repr__(self) -> str:
        return repr(self._rows)


def layer_rows(G: nx.DiGraph, summary: ParamSummary) -> LayerRows:
    """The report's rows: one per node but the inputs and the output, in execution order."""
    records = [rec for rec in node_records(G) if rec.op not in ("placeholder", "output")]
    return LayerRows(records, summary.layers, lambda: graph_cache(G, "report_rows", lambda: _row_statics(G)))


def _row(rec: NodeRecord, static: Mapping[str, Any], p: LayerParams) -> LayerReport:
    ins = rec.input_shapes
    known = rec.flops_known
    values = {
        "input_shape": ins[0] if ins and is_shape(ins[0]) else None,
        "output_shape": rec.output_shape,
        "params": p.params,
        "params_for_input": p.params_for_input,
        "trainable": p.trainable,
        "status": rec.status,
        "message": rec.message,
        "buffers": p.buffers,
        "param_bytes": p.param_bytes,
        "shared": p.shared,
        "macs": rec.macs if known else 0,
        "flops": rec.flops if known else 0,
        "shape_source": rec.shape_source,
        "seen_params": p.seen_params,
        "seen_trainable": p.seen_trainable,
    }
    values.update(static)
    return from_fields(LayerReport, values)


def _row_statics(G: nx.DiGraph) -> dict[str, dict[str, Any]]:
    """Per node (but inputs and output), the fields of its row that do not depend on the input."""
    modules = index_of(G).modules
    paths: dict[str, tuple[str, ...]] = {}
    rows = {}
    for rec in node_records(G):
        if rec.op in ("placeholder", "output"):
            continue
        kernel = _kernel(modules.get(rec.target)) if rec.op == "call_module" else None
        static: dict[str, Any] = {"name": rec.layer, "type": rec.module_type, "op": rec.op, "change": None}
        static.update(path=module_path(rec, modules, paths), kernel=kernel)
        rows[rec.name] = static
    return rows


def module_path(
    rec: NodeRecord, modules: Mapping[str, nn.Module], cache: dict[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """The modules around a node whose ``forward`` ran, outermost first (the module itself for a module call):
    the levels of the depth table and of the picture; containers never called (``nn.ModuleList``) are none.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.graph import build_graph, node_record, index_of
    >>> from torchsurgeon.trace import trace
    >>> class Stack(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layers = nn.ModuleList([nn.Sequential(nn.Linear(2, 2))])
    ...     def forward(self, x):
    ...         return self.layers[0](x)
    >>> G = build_graph(trace(Stack()))
    >>> module_path(node_record(G, "layers_0_0"), index_of(G).modules, {})
    ('layers.0', 'layers.0.0')
    """
    owner = rec.target if rec.op == "call_module" else rec.scope
    if not owner:
        return ()
    if owner not in cache:
        parts = owner.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        cache[owner] = tuple(p for p in prefixes if p == owner or _has_forward(modules.get(p)))
    return cache[owner]


def _has_forward(module: nn.Module | None) -> bool:
    """False for containers that are never called (``nn.ModuleList``, ``nn.ModuleDict``): not a level of the table."""
    return module is None or type(module).forward is not nn.Module.forward


def _kernel(module: nn.Module | None) -> tuple[int, ...] | None:
    # an instance attribute (the torch layers), else a class attribute or property: never a failing
    # getattr, which goes through nn.Module.__getattr__ and an AttributeError
    size = vars(module).get("kernel_size") if module is not None else None
    if size is None and hasattr(type(module), "kernel_size"):
        size = getattr(module, "kernel_size", None)
    if isinstance(size, int):  # nn.MaxPool2d(3): 3×3, as a convolution's (3, 3) shows
        return (size,) * {"1d": 1, "2d": 2, "3d": 3}.get(type(module).__name__[-2:].lower(), 1)
    if isinstance(size, tuple) and all(isinstance(k, int) for k in size):
        return size
    return None
