"""Parameter accounting over the traced graph.

Totals count every parameter object once (shared or tied weights too), so
``total == sum(p.numel() for p in model.parameters())``.  Each layer reports
the parameters it uses; a parameter used by several layers is marked
``shared`` on each of them.  For a layer that does not fit its input (see
:mod:`torchsurgeon.shapes`), ``params_for_input`` is the count once the layer
is resized to fit, as :mod:`torchsurgeon.resize` resizes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import networkx as nx
import torch
from torch import nn

from .arguments import check_graph
from .fxbookkeeping import reads_metadata
from .graph import NodeRecord, ParamFact, fx_node, graph_cache, index_of, node_record, node_records, param_facts
from .ownresize import RESAMPLED_IN_FORWARD
from .records import Finding, LayerStatus, from_fields
from .resize import plan_resize, resized_param_count

__all__ = ("LayerParams", "ParamSummary", "count_params", "packed_weights")


@dataclass(frozen=True)
class LayerParams:
    """Parameter counts of one graph node.

    ``seen_params`` and ``seen_trainable`` count the node's parameters that an
    earlier node (in execution order) already uses: summing ``params -
    seen_params`` over the nodes counts every used parameter once.
    """

    node: str
    params: int
    trainable: int
    buffers: int
    param_bytes: int
    params_for_input: int
    shared: tuple[str, ...] = ()
    seen_params: int = 0
    seen_trainable: int = 0


@dataclass(frozen=True)
class ParamSummary:
    """Result of :func:`count_params`.

    Attributes
    ----------
    total, trainable, frozen : int
        Unique parameters of the model as it stands (shared counted once).
    buffers : int
        Unique buffer elements (running statistics and the like).
    bytes_by_dtype : Mapping[str, int]
        Parameter bytes per dtype.
    total_for_input : int
        ``total`` with every invalid layer resized to fit the input.
    layers : Mapping[str, LayerParams]
        Per graph node.
    unused : tuple[str, ...]
        Parameters no graph node uses (for example an auxiliary head that
        ``forward`` skips); they are still in ``total``.
    """

    total: int
    trainable: int
    frozen: int
    buffers: int
    bytes_by_dtype: Mapping[str, int]
    total_for_input: int
    layers: Mapping[str, LayerParams]
    unused: tuple[str, ...] = ()


def _functional_weights(G: nx.DiGraph, modules: Mapping[str, nn.Module]) -> dict[str, int]:
    """Resized weight counts of layers whose forward calls ``F.convNd`` on a computed weight.

    The invalid functional node names the layer (its scope); the weight parameter's ``get_attr``
    node carries the change, so ``weight: before → after`` reads right in the table.
    """
    out: dict[str, int] = {}
    for rec in node_records(G):
        finding = rec.finding
        if rec.op != "call_function" or finding is None or not rec.scope or finding.layer != rec.scope:
            continue
        module = modules.get(rec.scope)
        if module is None or not isinstance(getattr(module, "weight", None), nn.Parameter):
            continue
        plan = plan_resize(module, finding.what, finding.got)
        if plan is not None and "weight" in plan.params:
            out[f"{rec.scope}.weight"] = math.prod(plan.params["weight"])
    return out


_BROADCASTING = frozenset({"add", "sub", "mul", "iadd", "isub", "imul"})


def _tables_for_input(G: nx.DiGraph) -> dict[str, int]:
    """Resized counts of parameters an invalid elementwise op combines with data of another size, a position table
    (``x + self.pos_embedding`` at 320×320 holds 197 positions, the data 401): the table at the data's size, as the
    model's own resize makes it (timm's ``set_input_size``, torchvision's ``interpolate_embeddings``).  Not where the
    fix named resamples the table in ``forward`` (transformers' ``interpolate_pos_encoding=True``: the same parameters
    at every size)."""
    out: dict[str, int] = {}
    for rec in node_records(G):
        if rec.op != "call_function" or rec.status != LayerStatus.INVALID or rec.target not in _BROADCASTING:
            continue
        if rec.finding is not None and RESAMPLED_IN_FORWARD in rec.finding.fix:
            continue
        tables = [t for p in G.predecessors(rec.name) if (t := node_record(G, p)).op == "get_attr" and t.param_names]
        shapes = [tuple(s) for s in rec.input_shapes if isinstance(s, tuple)]
        if len(tables) != 1 or len(shapes) != 2 or not isinstance(tables[0].output_shape, tuple):
            continue
        table = tuple(tables[0].output_shape)
        data = shapes[1] if shapes[0] == table else shapes[0]
        if len(data) != len(table) or table not in shapes:
            continue
        out[tables[0].param_names[0]] = math.prod(t if t == 1 else d for t, d in zip(table, data))
    return out


def _resized_node(modules: Mapping[str, nn.Module], rec: NodeRecord, finding: Finding) -> int:
    """A layer's parameters once what does not fit is resized: the layer itself, or the input convolution
    inside an opaque layer (a transformers patch embedding, see ``ShapeInterpreter._as_folded``)."""
    module = modules[rec.target]
    inner = modules.get(finding.layer) if finding.layer.startswith(f"{rec.target}.") else None
    if inner is None:
        return resized_param_count(module, finding)
    return rec.params - sum(p.numel() for p in inner.parameters()) + resized_param_count(inner, finding)


def _reads_metadata_only(G: nx.DiGraph, rec: NodeRecord) -> bool:
    """Whether every user of a parameter's ``get_attr`` node reads only its metadata (``weight.dtype``,
    ``weight.size()``): transformers' ``ViTModel.forward`` reads ``patch_embeddings.projection.weight.dtype``
    before the projection runs; the weight belongs to the projection's row, not to that read."""
    users = [fx_node(G, name) for name in G.successors(rec.name)]
    return bool(users) and all(reads_metadata(u) for u in users)


def _layer_params(
    records: list[NodeRecord],
    params: Mapping[str, nn.Parameter],
    for_input: Mapping[str, int],
    metadata_only: frozenset[str] = frozenset(),
) -> dict[str, LayerParams]:
    """Each node's counts; a tied weight counts in the first node (execution order) that uses it, a node
    that reads only its metadata (``metadata_only``) coming after those that use its values."""
    layers: dict[str, LayerParams] = {}
    owner: dict[int, str] = {}  # parameter id -> the node it counts in
    for rec in sorted((r for r in records if r.shared), key=lambda r: r.name in metadata_only):
        for n in rec.param_names:
            owner.setdefault(id(params[n]), rec.name)  # sorted() is stable: execution order otherwise
    for rec in records:
        values = {  # one per node and input: the fast path of a frozen record (the rest keep their defaults)
            "node": rec.name,
            "params": rec.params,
            "trainable": rec.trainable,
            "buffers": rec.buffers,
            "param_bytes": rec.param_bytes,
            "params_for_input": for_input.get(rec.name, rec.params),
        }
        if rec.param_names:
            if rec.shared:
                seen = seen_trainable = 0
                mine = {id(params[n]): params[n] for n in rec.param_names}
                for pid, p in mine.items():
                    if owner.get(pid, rec.name) != rec.name:
                        seen += p.numel()
                        seen_trainable += p.numel() if p.requires_grad else 0
                values.update(shared=rec.shared, seen_params=seen, seen_trainable=seen_trainable)
        layers[rec.name] = from_fields(LayerParams, values)
    return layers


class _LayerCounts(Mapping[str, LayerParams]):
    """``ParamSummary.layers``: the per-node counts, made when first read (a total needs none of them)."""

    def __init__(self, make: Callable[[], dict[str, LayerParams]]) -> None:
        self._make: Callable[[], dict[str, LayerParams]] | None = make
        self._layers: dict[str, LayerParams] = {}

    def _all(self) -> dict[str, LayerParams]:
        if self._make is not None:
            self._layers, self._make = self._make(), None
        return self._layers

    def __getitem__(self, node: str) -> LayerParams:
        return self._all()[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def count_params(G: nx.DiGraph) -> ParamSummary:
    """Count parameters per layer and in total, shared weights once.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`; if shapes were propagated
        (:func:`torchsurgeon.shapes.propagate_shapes`), invalid layers also
        get ``params_for_input`` (from :mod:`torchsurgeon.resize`).

    Returns
    -------
    ParamSummary
        Totals and per-layer counts.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    >>> _ = m[1].requires_grad_(False)
    >>> s = count_params(build_graph(trace(m)))
    >>> s.total, s.trainable, s.frozen, s.buffers
    (21, 15, 6, 7)
    """
    check_graph(G, "count_params", "count_params(build_graph(trace(model)))")
    index = index_of(G)
    params = index.params
    records = list(node_records(G))
    for_input: dict[str, int] = {}  # node whose parameter count changes for this input -> the new count
    resized = 0  # parameters the replaced ones become (a weight used by several nodes: by the first)
    replaced: set[int] = set()
    invalid = any(rec.status == LayerStatus.INVALID for rec in records)
    if invalid:
        weight_for_input = _tables_for_input(G) | _functional_weights(G, index.modules)
        for rec in records:
            if not rec.param_names:
                continue
            count = rec.params
            finding = rec.finding
            if rec.op == "get_attr" and rec.param_names[0] in weight_for_input:
                count = weight_for_input[rec.param_names[0]]
            elif finding is not None and rec.op == "call_module":
                count = _resized_node(index.modules, rec, finding)
            if count == rec.params:
                continue
            for_input[rec.name] = count
            ids = {id(params[n]) for n in rec.param_names}
            if not replaced & ids:
                replaced |= ids
                resized += count
    fixed = _fixed_counts(G)
    unique = fixed.unique
    resized -= sum(unique[pid][1][1] for pid in replaced)
    return ParamSummary(
        total=fixed.total,
        trainable=fixed.trainable,
        frozen=fixed.total - fixed.trainable,
        buffers=fixed.buffers,
        bytes_by_dtype=dict(fixed.bytes_by_dtype),
        total_for_input=fixed.total + resized,
        layers=_LayerCounts(lambda: _layer_params(records, params, for_input, fixed.metadata_only)),
        unused=fixed.unused,
    )


@dataclass(frozen=True)
class _Fixed:
    """What :func:`count_params` gives whatever the input: each parameter once (by id: its first name and
    :data:`~torchsurgeon.graph.ParamFact`), the totals, the unused parameters, the buffers."""

    unique: Mapping[int, tuple[str, ParamFact]]
    total: int
    trainable: int
    bytes_by_dtype: Mapping[str, int]
    unused: tuple[str, ...]
    buffers: int
    metadata_only: frozenset[str]


def _fixed_counts(G: nx.DiGraph) -> _Fixed:
    """The counts that do not depend on the input, read once per graph (a sweep counts each input's)."""

    def count() -> _Fixed:
        records = list(node_records(G))
        facts = param_facts(G)  # one read of each parameter, shared with build_graph
        metadata_only = frozenset(
            rec.name for rec in records if rec.op == "get_attr" and rec.shared and _reads_metadata_only(G, rec)
        )
        used = {facts[n][0] for rec in records for n in rec.param_names}
        unique: dict[int, tuple[str, ParamFact]] = {}
        for name, fact in facts.items():
            unique.setdefault(fact[0], (name, fact))
        total = trainable = 0
        by_dtype: dict[torch.dtype, int] = {}
        for _, (_, n, grad, _, dtype) in unique.values():
            total += n
            if grad:
                trainable += n
            by_dtype[dtype] = by_dtype.get(dtype, 0) + n
        bytes_by_dtype = {str(dtype).replace("torch.", ""): n * dtype.itemsize for dtype, n in by_dtype.items()}
        unused = tuple(name for pid, (name, _) in unique.items() if pid not in used)
        buffers = sum(b.numel() for b in {id(b): b for b in index_of(G).buffers.values()}.values())
        return _Fixed(unique, total, trainable, bytes_by_dtype, unused, buffers, metadata_only)

    fixed: _Fixed = graph_cache(G, "param counts", count)
    return fixed


def packed_weights(model: nn.Module) -> tuple[int, int]:
    """(layers, weights) of the quantized layers of ``model`` whose weights are packed (``torch.ao``'s int8
    convolutions and linear layers): they are not parameters, so no total counts them.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     q = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(4, 3)), {nn.Linear}, dtype=torch.qint8)
    >>> packed_weights(q), sum(p.numel() for p in q.parameters())
    ((1, 12), 0)
    """
    layers = weights = 0
    for m in model.modules():
        kind = type(m)
        if not kind.__module__.startswith("torch.ao.nn.") or ".quantized" not in kind.__module__:
            continue
        weight = getattr(m, "weight", None)
        if callable(weight) and not isinstance(weight, torch.Tensor):  # a method: the packed weight, unpacked
            try:
                weights += weight().numel()
            except Exception:  # a packed format without an unpacked view: counted as a layer only
                pass
            layers += 1
    return layers, weights
