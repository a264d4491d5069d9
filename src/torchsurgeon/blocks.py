"""The layers of a report grouped by module depth, with block totals and repeated blocks collapsed.

A *block* is a module whose ``forward`` ran (``layer1``, ``encoder.layer.0``).
Each :class:`~torchsurgeon.records.LayerReport` names the blocks around it in
``path``; :func:`group_layers` turns the layers, in execution order, into the
rows of the depth table (:meth:`torchsurgeon.ModelReport.table`):

* a block at most ``depth`` levels below the model is a row; the layers and
  blocks deeper than that are folded into it;
* a block row carries the totals of everything inside it: parameters (each
  counted once, in the first row that uses it: ``sum`` over the top-level
  rows is the model's total), trainable parameters, MACs; its input shape is
  its first layer's, its output shape its last layer's; its status is the
  most alarming one inside (:data:`STATUS_PRIORITY`: a block holding an
  invalid layer is invalid);
* consecutive sibling blocks numbered ``name.0``, ``name.1``... that are the
  same (type, parameters, MACs, shapes, status, and the same layers inside)
  become one row ``name.0 … 11`` of type ``×12 BertLayer`` whose numbers are
  the totals of the twelve (:func:`repeat_runs`, also used by
  :func:`torchsurgeon.dot.picture_graph`).

Nothing here formats text: :mod:`torchsurgeon.report` renders the rows.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .records import LayerReport, LayerStatus, ParamChange

__all__ = (
    "DEFAULT_DEPTH",
    "FULL_DEPTH",
    "STATUS_PRIORITY",
    "BlockRow",
    "collapsed_name",
    "group_layers",
    "repeat_runs",
    "worst_status",
)

DEFAULT_DEPTH = 2
"""Depth of ``print(report)``: the model's blocks and the blocks inside them
(``layer1``, then ``layer1.0``, ``layer1.1 … 2``): resnet50 fits one screen."""

FULL_DEPTH = -1
"""``depth=FULL_DEPTH`` (``-1``) shows every layer: one row per graph node, nothing folded."""

STATUS_PRIORITY: tuple[str, ...] = (
    LayerStatus.INVALID,
    LayerStatus.UNKNOWN,
    ParamChange.REINITIALISED,
    LayerStatus.OPAQUE,
    ParamChange.FOLDED,
    ParamChange.RESIZED,
    ParamChange.UPDATED,
    ParamChange.NEW,
    ParamChange.REMOVED,
    ParamChange.KEPT,
    LayerStatus.OK,
)
"""Layer statuses and surgery changes, most alarming first: a block shows the first one found inside it."""


def worst_status(statuses: Iterable[str]) -> str:
    """The most alarming of ``statuses`` (see :data:`STATUS_PRIORITY`); ``ok`` when there are none.

    Examples
    --------
    >>> worst_status(["ok", "folded", "invalid"]), worst_status(["ok", "new"]), worst_status([])
    ('invalid', 'new', 'ok')
    """
    present = {str(s) for s in statuses}
    return next((str(s) for s in STATUS_PRIORITY if s in present), str(LayerStatus.OK))


@dataclass
class BlockRow:
    """One row of the depth table: a layer, or a block with the totals of what it holds.

    Attributes
    ----------
    name : str
        Qualified module name (``layer1.0``), a layer's name, or
        ``encoder.layer.0 … 11`` for collapsed blocks.
    type : str
        Class name; ``×12 BertLayer`` for collapsed blocks.
    level : int
        0 for the model's own blocks and layers, 1 inside them...
    layers : list[LayerReport]
        Every layer inside, in execution order (the layer itself for a layer row).
    children : list[BlockRow]
        The rows under this one (empty when folded, or for a layer).
    count : int
        How many identical blocks the row stands for.
    is_layer : bool
        True for one layer (a graph node), False for a block.
    """

    name: str
    type: str
    level: int
    layers: list[LayerReport] = field(default_factory=list)
    children: list[BlockRow] = field(default_factory=list)
    count: int = 1
    is_layer: bool = False

    @property
    def params(self) -> int:
        """Parameters counted in this row (each parameter in the first row that uses it)."""
        return sum(layer.counted for layer in self.layers)

    @property
    def params_for_input(self) -> int:
        """:attr:`params` once every invalid layer inside is resized to fit the input."""
        return sum(layer.counted_for_input for layer in self.layers)

    @property
    def trainable(self) -> int:
        """The part of :attr:`params` with ``requires_grad``."""
        return sum(layer.trainable - layer.seen_trainable for layer in self.layers)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of every layer inside."""
        return sum(layer.macs for layer in self.layers)

    @property
    def shared(self) -> bool:
        """Whether a layer inside uses parameters that another layer uses too (tied weights)."""
        return any(layer.shared for layer in self.layers)

    @property
    def input_shape(self) -> Any:
        """The first layer's input shape."""
        return next((layer.input_shape for layer in self.layers if layer.input_shape is not None), None)

    @property
    def output_shape(self) -> Any:
        """The output shape of the last layer that has one."""
        return next((layer.output_shape for layer in reversed(self.layers) if layer.output_shape is not None), None)

    @property
    def kernel(self) -> tuple[int, ...] | None:
        """A layer's ``kernel_size``; ``None`` for blocks."""
        return self.layers[0].kernel if self.is_layer and self.layers else None

    @property
    def status(self) -> str:
        """The most alarming status inside (:func:`worst_status`)."""
        return worst_status(layer.shown_status for layer in self.layers)

    @property
    def message(self) -> str:
        """The first message of a layer that is not ok (expected vs got and the fix)."""
        return next((layer.message for layer in self.layers if layer.message and layer.status != LayerStatus.OK), "")

    @property
    def folds_modules(self) -> bool:
        """Whether layers of modules inside this block have no row of their own (the depth folded them)."""
        return not self.is_layer and not self.children and any(layer.op == "call_module" for layer in self.layers)

    def walk(self) -> Iterable[BlockRow]:
        """This row, then the rows under it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth == 0 or depth < FULL_DEPTH:
        raise InputError(
            f"depth={depth!r} — give a positive int (1 shows the model's direct children, "
            f"{DEFAULT_DEPTH} is the default) or {FULL_DEPTH} for every layer"
        )
    return depth


def _notable(layer: LayerReport) -> bool:
    """A function or attribute worth a row inside a block even at a limited depth: it holds parameters or is not ok."""
    return layer.params > 0 or layer.status != LayerStatus.OK or layer.change is not None


def _shown(layer: LayerReport) -> bool:
    """Whether a layer gets a row of its own: it carries a tensor, owns a parameter, or is not ok."""
    return (
        layer.output_shape is not None or layer.params > 0 or layer.status != LayerStatus.OK or layer.change is not None
    )


def group_layers(
    layers: Sequence[LayerReport],
    depth: int = DEFAULT_DEPTH,
    *,
    collapse: bool = True,
    types: Mapping[str, str] | None = None,
) -> list[BlockRow]:
    """The rows of the depth table: blocks down to ``depth`` with their totals, then layers.

    Parameters
    ----------
    layers : sequence of LayerReport
        A report's layers, in execution order (``ModelReport.layers``).
    depth : int
        How many levels of blocks to show: 1 shows the model's own blocks
        and layers; ``-1`` (:data:`FULL_DEPTH`) every layer.
    collapse : bool
        Collapse runs of identical sibling blocks (and layers) into one row.
    types : mapping, optional
        Class name of each block, by qualified name (``"block"`` when missing).

    Returns
    -------
    list[BlockRow]
        The top-level rows; each block row holds the rows under it in
        ``children``.  A layer that carries no tensor, owns no parameter and
        is fine (``size()``) has no row of its own but still counts in its
        block.  Below the model's own level, functions, methods and
        parameter reads (``add``, ``x.view()``, a buffer read) have a row
        only at ``depth=-1`` or when they hold parameters or are not ok:
        the other rows are modules, as in torchinfo.

    Raises
    ------
    InputError
        If ``depth`` is not a positive int or ``-1``.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon import paramcount
    >>> def block():
    ...     return nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    >>> r = paramcount(nn.Sequential(nn.Linear(4, 8), block(), block(), block()), (4,))
    >>> types = {"1": "Sequential", "2": "Sequential", "3": "Sequential"}
    >>> [(row.name, row.type, row.params) for row in group_layers(r.layers, 1, types=types)]
    [('0', 'Linear', 40), ('1 … 3', '×3 Sequential', 216)]
    >>> [(row.name, row.level) for top in group_layers(r.layers, 2, collapse=False) for row in top.walk()][:4]
    [('0', 0), ('1', 0), ('1.0', 1), ('1.1', 1)]
    """
    depth = _check_depth(depth)
    top: list[BlockRow] = []
    open_blocks: list[BlockRow] = []  # the blocks around the current layer, outermost first
    for layer in layers:
        own = layer.op == "call_module" and bool(layer.path)
        ancestors = layer.path[:-1] if own else layer.path
        chain = len(layer.path) if own else len(layer.path) + 1
        blocks = ancestors if depth == FULL_DEPTH or chain <= depth else layer.path[:depth]
        keep = 0
        while keep < min(len(open_blocks), len(blocks)) and open_blocks[keep].name == blocks[keep]:
            keep += 1
        del open_blocks[keep:]
        for name in blocks[keep:]:
            siblings = open_blocks[-1].children if open_blocks else top
            row = BlockRow(name, types.get(name, "block") if types else "block", len(open_blocks))
            siblings.append(row)
            open_blocks.append(row)
        for block in open_blocks:
            block.layers.append(layer)
        folded = depth != FULL_DEPTH and (chain > depth or (bool(blocks) and not own and not _notable(layer)))
        if not folded and _shown(layer):  # a row of its own
            siblings = open_blocks[-1].children if open_blocks else top
            siblings.append(BlockRow(layer.name, layer.type, len(open_blocks), [layer], is_layer=True))
    if collapse:
        top = _collapse(top)
    return top


def repeat_runs(names: Sequence[str], signatures: Sequence[Hashable]) -> list[range]:
    """Runs of consecutive siblings ``p.0, p.1, ...`` with equal signatures, as index ranges (length ≥ 2).

    Siblings are names that differ only by a trailing number, one more each
    time: ``layer.0``, ``layer.1`` or ``encoder_layer_0``, ``encoder_layer_1``.

    Examples
    --------
    >>> repeat_runs(["stem", "layer.0", "layer.1", "layer.2", "head"], ["a", "b", "b", "b", "c"])
    [range(1, 4)]
    >>> repeat_runs(["layer.0", "layer.1", "layer.3"], ["b", "b", "b"])  # 1 → 3 is not consecutive
    [range(0, 2)]
    """
    runs: list[range] = []
    start = 0
    while start < len(names):
        end = start + 1
        while end < len(names) and _next_sibling(names[end - 1], names[end]) and signatures[end] == signatures[start]:
            end += 1
        if end - start > 1:
            runs.append(range(start, end))
        start = end
    return runs


def _numbered(name: str) -> tuple[str, int] | None:
    """``("encoder.layer.", 11)`` for ``encoder.layer.11`` (or ``encoder_layer_11``); None without a number."""
    match = _NUMBERED.match(name)
    return (match.group(1), int(match.group(2))) if match else None


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _next_sibling(a: str, b: str) -> bool:
    na, nb = _numbered(a), _numbered(b)
    return na is not None and nb is not None and na[0] == nb[0] and nb[1] == na[1] + 1


def collapsed_name(first: str, last: str) -> str:
    """The name of a row of collapsed blocks ``first`` to ``last``.

    Examples
    --------
    >>> collapsed_name("encoder.layer.0", "encoder.layer.11"), collapsed_name("blocks_2", "blocks_5")
    ('encoder.layer.0 … 11', 'blocks_2 … 5')
    """
    numbered = _numbered(last)
    return f"{first} … {numbered[1] if numbered else last}"


def _signature(row: BlockRow) -> Hashable:
    """What must be equal for two blocks to be "the same": type, totals, shapes, status and the layers inside."""
    prefix = row.name + "."
    inside = tuple(
        (
            layer.op,
            layer.type,
            layer.name.removeprefix(prefix) if layer.op == "call_module" else "",
            tuple(p.removeprefix(prefix) for p in layer.path if p.startswith(prefix)),
            layer.counted,
            layer.macs,
            repr(layer.input_shape),
            repr(layer.output_shape),
            layer.shown_status,
        )
        for layer in row.layers
    )
    return (row.type, row.is_layer, row.params, row.trainable, row.macs, row.status, inside)


def _collapse(rows: list[BlockRow]) -> list[BlockRow]:
    for row in rows:
        row.children = _collapse(row.children)
    runs = repeat_runs([r.name for r in rows], [_signature(r) for r in rows])
    if not runs:
        return rows
    out: list[BlockRow] = []
    i = 0
    for run in runs:
        out += rows[i : run.start]
        first, last = rows[run.start], rows[run.stop - 1]
        merged = BlockRow(
            collapsed_name(first.name, last.name),
            f"×{len(run)} {first.type}",
            first.level,
            [layer for r in rows[run.start : run.stop] for layer in r.layers],
            first.children,  # the rows under a collapsed block show its first instance
            count=len(run),
        )
        out.append(merged)
        i = run.stop
    out += rows[i:]
    return out
