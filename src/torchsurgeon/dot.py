"""Pictures of the traced graph: Graphviz DOT, GraphML, and rendering with ``dot``.

Nodes are labelled with the layer name, its type, its output shape and its
parameters, and coloured by ``status``: invalid red, folded orange, new
green, opaque grey (see :data:`STATUS_COLOURS`).  Nodes that carry no tensor
and own no parameter (``size()``, ``getitem`` on shapes) and the parameter
reads of functional layers are left out, their edges kept.  ``depth`` folds
every node into its ancestor module ``depth`` levels down from the model
(``depth=1``: ``layer1``, ``layer2``, ...), and consecutive identical folded
blocks (``encoder.layer.0`` to ``encoder.layer.11``) become one box
``encoder.layer.0 … 11``, ``×12 BertLayer``, as in the depth table
(:func:`torchsurgeon.blocks.repeat_runs`).  The colours are
:data:`torchsurgeon.report.STATUS_COLOURS`, also the HTML tables'.
Pure functions over the annotated graph; they compute nothing about the model.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import networkx as nx
from torch import nn

from .blocks import collapsed_name, repeat_runs, worst_status
from .errors import ConfigError, InputError
from .graph import NodeRecord, graph_module_of, index_of, model_of, node_record, node_records
from .records import LayerStatus, ParamChange
from .report import STATUS_COLOURS, format_shape
from .rows import module_path

__all__ = ("RENDER_FORMATS", "STATUS_COLOURS", "picture_graph", "render", "to_dot", "to_graphml")

RENDER_FORMATS = ("svg", "png", "pdf")
"""Formats :func:`render` asks Graphviz for; ``.dot`` and ``.graphml`` need no Graphviz."""


@dataclass
class _Box:
    """One box of the picture: a graph node, or the nodes folded into one module."""

    key: str
    name: str
    type: str
    output_shape: Any = None
    statuses: list[str] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)
    message: str = ""
    count: int = 0
    macs: int = 0
    folded: bool = False
    blocks: int = 1

    @property
    def status(self) -> str:
        return worst_status(self.statuses)


def _numels(G: nx.DiGraph) -> dict[str, int]:
    return {name: p.numel() for name, p in index_of(G).params.items()}


def _shown_status(rec: NodeRecord) -> str:
    """What a box says: the layer's change after a surgery, else its status."""
    return str(rec.change) if rec.change is not None else str(rec.status)


def _hidden(rec: NodeRecord) -> bool:
    if rec.op == "get_attr":
        return True
    return (
        rec.op in ("call_function", "call_method")
        and rec.output_shape is None
        and not rec.param_names
        and rec.status == LayerStatus.OK
        and rec.change is None
    )


def _levels(rec: NodeRecord, modules: Mapping[str, nn.Module], cache: dict[str, tuple[str, ...]]) -> list[str]:
    """A node's levels as the depth table counts them (:func:`~torchsurgeon.rows.module_path`: an ``nn.ModuleList``
    is no level), each a qualified name; a function's or an input's own name last."""
    if rec.op in ("placeholder", "output"):
        return [rec.name]
    levels = list(module_path(rec, modules, cache))
    if rec.op == "call_module":
        return levels or [rec.name]
    return [*levels, rec.name]


def picture_graph(G: nx.DiGraph, *, depth: int | None = None, collapse: bool = True) -> nx.DiGraph:
    """The graph as drawn: hidden nodes contracted, modules below ``depth`` folded, repeated blocks collapsed.

    Parameters
    ----------
    G : networkx.DiGraph
        An annotated graph (``ModelReport.graph``, or the output of
        :func:`torchsurgeon.shapes.propagate_shapes`).
    depth : int, optional
        Fold every node into its ancestor module ``depth`` levels below the
        model; ``None`` draws every node.
    collapse : bool
        With ``depth``, draw consecutive identical folded blocks
        (``block.0``, ``block.1``... of the same type, parameters, MACs,
        output shape, status and node count) as one box ``block.0 … 11``.

    Returns
    -------
    networkx.DiGraph
        One node per box with ``name``, ``type``, ``output_shape``,
        ``status``, ``params``, ``message``, ``count`` (nodes folded in) and
        ``blocks`` (identical blocks collapsed into it).

    Raises
    ------
    InputError
        If ``depth`` is not a positive int.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon import paramcount
    >>> def block():
    ...     return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    >>> r = paramcount(nn.Sequential(nn.Conv2d(3, 8, 3), block(), block()), (1, 16, 16))
    >>> P = picture_graph(r.graph, depth=1, collapse=False)
    >>> [(P.nodes[n]["name"], P.nodes[n]["type"], P.nodes[n]["status"], P.nodes[n]["params"]) for n in P]
    [('input_1', 'input', 'ok', 0), ('0', 'Conv2d', 'invalid', 224),
     ('1', 'Sequential (2 nodes)', 'ok', 584), ('2', 'Sequential (2 nodes)', 'ok', 584),
     ('output', 'output', 'ok', 0)]
    >>> P = picture_graph(r.graph, depth=1)
    >>> [(P.nodes[n]["name"], P.nodes[n]["type"], P.nodes[n]["params"]) for n in P][1:3]
    [('0', 'Conv2d', 224), ('1 … 2', '×2 Sequential (4 nodes)', 1168)]
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise InputError(f"depth={depth!r} — give a positive int (1 draws the model's direct children) or None")
    numel = _numels(G)
    model = model_of(G)
    shown = [rec.name for rec in node_records(G) if not _hidden(rec)]
    # each hidden node hands its edges (and a functional layer's parameter reads) to its neighbours
    H = nx.DiGraph(G.subgraph(shown))
    extra_params: dict[str, set[str]] = {}
    for rec in node_records(G):
        if rec.name in H:
            continue
        preds = _visible(G, rec.name, H, "pred")
        succs = _visible(G, rec.name, H, "succ")
        H.add_edges_from((p, s) for p in preds for s in succs if p != s)
        for s in succs:
            extra_params.setdefault(s, set()).update(rec.param_names)
    calls = _module_calls(G)
    boxes: dict[str, _Box] = {}
    owner: dict[str, str] = {}
    modules, cache = index_of(G).modules, dict[str, tuple[str, ...]]()
    for node in H:
        rec = node_record(G, node)
        path = _levels(rec, modules, cache)
        folded = depth is not None and len(path) > depth
        prefix = path[depth - 1] if folded and depth else ""
        # a module called twice (a shared block) gives two boxes, "block" and "block@1", not a cycle
        key = next((k for k in calls.get(node, ()) if k.split("@")[0] == prefix), prefix) if folded else node
        if key not in boxes:
            if folded:
                module = _submodule(model, prefix)
                kind = type(module).__name__ if module is not None else "block"
                name = prefix if key == prefix else f"{prefix} (call {int(key.split('@')[1]) + 1})"
                boxes[key] = _Box(key, name, kind, folded=True)
            else:
                boxes[key] = _Box(key, rec.layer, rec.module_type)
        box = boxes[key]
        owner[node] = key
        box.count += 1
        box.output_shape = rec.output_shape  # nodes come in execution order: the last one wins
        box.statuses.append(_shown_status(rec))
        for name in (*rec.param_names, *sorted(extra_params.get(node, ()))):
            box.params[name] = numel.get(name, 0)
        box.macs += rec.macs
        if rec.status != LayerStatus.OK and rec.message and not box.message:
            box.message = rec.message
    if depth is not None and collapse:
        boxes = _collapse(boxes, owner, model)
    P = nx.DiGraph()
    for key, box in boxes.items():
        P.add_node(
            key,
            name=box.name,
            type=(f"×{box.blocks} " if box.blocks > 1 else "")
            + (box.type if box.count == 1 else f"{box.type} ({box.count} nodes)"),
            output_shape=box.output_shape,
            status=box.status,
            params=_unique_total(model, box.params),
            message=box.message,
            count=box.count,
            blocks=box.blocks,
        )
    for u, v in H.edges:
        a, b = owner[u], owner[v]
        if a != b:
            P.add_edge(a, b)
    return P


def _collapse(boxes: dict[str, _Box], owner: dict[str, str], model: Any) -> dict[str, _Box]:
    """Runs of identical consecutive folded blocks merged into their first box (``owner`` is updated)."""
    items = list(boxes.values())
    signatures = [
        (b.type, b.count, _unique_total(model, b.params), b.macs, repr(b.output_shape), b.status) if b.folded else id(b)
        for b in items
    ]
    runs = repeat_runs([b.name for b in items], signatures)
    if not runs:
        return boxes
    merged_into: dict[str, str] = {}
    for run in runs:
        first, last = items[run.start], items[run.stop - 1]
        for b in items[run.start + 1 : run.stop]:
            merged_into[b.key] = first.key
            first.count += b.count
            first.params.update(b.params)
            first.macs += b.macs
            first.statuses += b.statuses
        first.output_shape = last.output_shape
        first.blocks = len(run)
        first.name = collapsed_name(first.name, last.name)
    for node, key in owner.items():
        owner[node] = merged_into.get(key, key)
    return {k: b for k, b in boxes.items() if k not in merged_into}


def _module_calls(G: nx.DiGraph) -> dict[str, list[str]]:
    """Per node, the fx module-stack keys of its enclosing module calls (``path`` or ``path@n``)."""
    gm = graph_module_of(G)
    return {n.name: [str(k) for k in (n.meta.get("nn_module_stack") or {})] for n in gm.graph.nodes}


def _visible(G: nx.DiGraph, node: str, H: nx.DiGraph, direction: str) -> set[str]:
    """Nearest nodes of ``H`` before (``pred``) or after (``succ``) ``node`` in ``G``."""
    step = G.predecessors if direction == "pred" else G.successors
    found: set[str] = set()
    seen = {node}
    todo = list(step(node))
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in H:
            found.add(n)
        else:
            todo.extend(step(n))
    return found


def _submodule(model: Any, path: str) -> nn.Module | None:
    if not isinstance(model, nn.Module):
        return None
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _unique_total(model: Any, params: Mapping[str, int]) -> int:
    """Sum of ``params`` counting a tied parameter (one tensor, several names) once."""
    if not isinstance(model, nn.Module):
        return sum(params.values())
    tensors = dict(model.named_parameters(remove_duplicate=False))
    seen: dict[int, int] = {}
    for name, n in params.items():
        seen[id(tensors[name]) if name in tensors else hash(name)] = n
    return sum(seen.values())


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(data: Mapping[str, Any]) -> str:
    lines = [str(data["name"]), str(data["type"]), format_shape(data["output_shape"])]
    if data["params"]:
        lines.append(f"{data['params']:,} params")
    if data["status"] not in (LayerStatus.OK, ParamChange.KEPT):
        lines.append(str(data["status"]))
    if data["status"] == LayerStatus.INVALID and data["message"]:
        lines.append(_wrap(str(data["message"]).split(" — ")[0], 48))
    return "\n".join(lines)


def _wrap(text: str, width: int) -> str:
    out: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    out.append(line)
    return "\n".join(out)


def to_dot(G: nx.DiGraph, *, depth: int | None = None, title: str | None = None) -> str:
    r"""The annotated graph as Graphviz DOT source.

    Parameters
    ----------
    G : networkx.DiGraph
        An annotated graph (``ModelReport.graph``).
    depth : int, optional
        Fold modules below this depth into one box (see :func:`picture_graph`).
    title : str, optional
        Graph label, drawn on top.

    Returns
    -------
    str
        DOT source; each node's id is its fx node name (or the module path of
        a folded box) and its colours follow :data:`STATUS_COLOURS`.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon import paramcount
    >>> r = paramcount(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (1, 8, 8))
    >>> src = to_dot(r.graph)
    >>> src.splitlines()[0]
    'digraph torchsurgeon {'
    >>> print(next(line for line in src.splitlines() if line.startswith('  "_0"')))  # doctest: +ELLIPSIS
      "_0" [label="0\nConv2d\n(1, 8, 6, 6)\n224 params\ninvalid\n0 (Conv2d) expects in_channels=3, got 1",
      fillcolor="#f4cccc", color="#cc0000", ...];
    """
    P = picture_graph(G, depth=depth)
    lines = [
        "digraph torchsurgeon {",
        "  rankdir=TB;",
        '  graph [fontname="Helvetica", fontsize=12, nodesep=0.25, ranksep=0.3];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [color="#777777", arrowsize=0.6];',
    ]
    if title:
        lines.append(f"  labelloc=t; label={_quote(title)};")
    for key, data in P.nodes(data=True):
        fill, border = STATUS_COLOURS.get(data["status"], STATUS_COLOURS[LayerStatus.OK])
        width = ", penwidth=2" if data["status"] not in (LayerStatus.OK, ParamChange.KEPT) else ""
        tooltip = data["message"] or data["type"]
        lines.append(
            f"  {_quote(key)} [label={_quote(_label(data))}, fillcolor={_quote(fill)}, color={_quote(border)}"
            f"{width}, tooltip={_quote(tooltip)}];"
        )
    for u, v in P.edges:
        lines.append(f"  {_quote(u)} -> {_quote(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (bool, int, float, str)):
        return str(value) if isinstance(value, Enum) else value
    if value is None:
        return ""
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return format_shape(value) if isinstance(value, (tuple, list, dict)) else str(value)


def to_graphml(G: nx.DiGraph) -> str:
    """The annotated graph as GraphML, for Gephi, yEd or Cytoscape.

    Every node keeps the schema attributes of :mod:`torchsurgeon.graph` as
    strings or numbers (shapes as ``(1, 64, 112, 112)``, parameter names
    comma-separated), plus ``params`` (unique parameter count) and the
    ``fill`` colour of its status.  Graph-level links to torch are dropped.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon import paramcount
    >>> xml = to_graphml(paramcount(nn.Sequential(nn.Linear(4, 2)), (4,)).graph)
    >>> xml.startswith("<?xml") and 'attr.name="output_shape"' in xml and ">(1, 2)<" in xml
    True
    """
    numel = _numels(G)
    model = model_of(G)
    H = nx.DiGraph()
    for rec in node_records(G):
        attrs = {f.name: _scalar(getattr(rec, f.name)) for f in dataclasses.fields(rec) if f.name != "findings"}
        attrs["finding"] = "; ".join(f.message for f in rec.findings)
        attrs["params"] = _unique_total(model, {n: numel.get(n, 0) for n in rec.param_names})
        attrs["fill"] = STATUS_COLOURS.get(_shown_status(rec), STATUS_COLOURS[LayerStatus.OK])[0]
        H.add_node(rec.name, **attrs)
    H.add_edges_from(G.edges)
    return "<?xml version='1.0' encoding='utf-8'?>\n" + "\n".join(nx.generate_graphml(H)) + "\n"


def render(source: str, path: str | os.PathLike[str], *, format: str | None = None) -> Path:
    """Render DOT ``source`` to ``path`` with Graphviz's ``dot`` (format from the suffix).

    Parameters
    ----------
    source : str
        DOT source, from :func:`to_dot`.
    path : path-like
        Where to write; ``.svg``, ``.png`` or ``.pdf`` (or ``format``).
    format : str, optional
        Overrides the suffix.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ConfigError
        If Graphviz's ``dot`` is not installed or fails.
    InputError
        For a format other than svg, png or pdf.

    Examples
    --------
    >>> import pathlib, shutil, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "g.svg"
    >>> if shutil.which("dot"):  # Graphviz installed
    ...     boxes = render("digraph { a -> b }", out).read_text().count('class="node"')
    ... else:
    ...     boxes = 2
    >>> boxes
    2
    """
    target = Path(path)
    fmt = (format or target.suffix.lstrip(".")).lower()
    if fmt not in RENDER_FORMATS:
        raise InputError(
            f"cannot render {target.name!r} as {fmt or 'nothing'!r} — use one of {', '.join(RENDER_FORMATS)} "
            "(or write .dot / .graphml, which need no Graphviz)"
        )
    exe = shutil.which("dot")
    if exe is None:
        raise ConfigError(
            "Graphviz's `dot` is not installed — install it (apt-get install graphviz, brew install graphviz) "
            "or write the .dot source instead and render it elsewhere"
        )
    done = subprocess.run(
        [exe, f"-T{fmt}", "-o", str(target)], input=source.encode(), capture_output=True, check=False, timeout=300
    )
    if done.returncode != 0:
        raise ConfigError(f"dot failed on {target.name} (exit {done.returncode}): {done.stderr.decode()[:500]}")
    return target
