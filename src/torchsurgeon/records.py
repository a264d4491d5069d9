"""Plain records shared by every module: enums, findings, layer reports, contract violations, lockfile diffs.

Nothing here knows about torch.fx or networkx; these are the values that flow
from the analyzers to the reports.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeGuard, TypeVar

__all__ = (
    "CrossCheck",
    "CrossCheckMode",
    "Finding",
    "FlopKind",
    "FoldMode",
    "LayerDiff",
    "LayerMemory",
    "LayerReport",
    "LayerStatus",
    "LockChange",
    "OptimizerKind",
    "OutputShape",
    "ParamChange",
    "ParamReport",
    "ShapeSource",
    "StrEnum",
    "TableColumn",
    "TableFormat",
    "Trust",
    "Violation",
    "from_fields",
    "is_shape",
    "layer_label",
)

_Record = TypeVar("_Record")


def from_fields(cls: type[_Record], values: Mapping[str, Any]) -> _Record:
    """An instance of the frozen dataclass ``cls`` from the values of *all* its fields, without its ``__init__``.

    A frozen ``__init__`` sets each field with its own ``object.__setattr__``; the analysis builds a
    few records per graph node for every input, and this is their fast path.  The caller gives every
    field (no defaults are filled in).

    Examples
    --------
    >>> values = {"trust": Trust.VERIFIED, "reason": "always", "real_output": (1, 2), "message": ""}
    >>> from_fields(CrossCheck, values) == CrossCheck(Trust.VERIFIED, "always", (1, 2), "")
    True
    """
    record: _Record = object.__new__(cls)
    record.__dict__.update(values)
    return record


if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    from enum import StrEnum
else:  # pragma: no cover - depends on the interpreter

    class StrEnum(str, Enum):
        """Backport of :class:`enum.StrEnum` for Python 3.10."""

        def __str__(self) -> str:
            return str(self.value)


class LayerStatus(StrEnum):
    """What torchsurgeon concluded about a layer for the input it was given."""

    OK = "ok"
    """The layer accepts its input."""
    INVALID = "invalid"
    """The layer does not fit the input it receives (expected vs got in the message)."""
    OPAQUE = "opaque"
    """The layer could not be traced inside; it was analysed by running it on ``meta``."""
    UNKNOWN = "unknown"
    """The shape could not be computed (an earlier node failed)."""


class ParamChange(StrEnum):
    """What a model edit did to one parameter (:func:`torchsurgeon.check_surgery`)."""

    KEPT = "kept"
    """Same shape and values as in the original model."""
    FOLDED = "folded"
    """Recognised as a fold of the original weights."""
    RESIZED = "resized"
    """Resized keeping the pretrained values: rows added or dropped (``resize_token_embeddings``, a head keeping
    some classes), or a ViT's position grid resampled to another image size."""
    UPDATED = "updated"
    """The pretrained values changed, not drawn again: fine-tuned, a merged LoRA, scaled or pruned (how, said)."""
    REINITIALISED = "reinitialised"
    """Same name, but the pretrained values are gone."""
    NEW = "new"
    """Did not exist in the original model."""
    REMOVED = "removed"
    """Existed in the original model only."""
    INVALID = "invalid"
    """Belongs to a layer that does not fit the input of the edited model."""
    SETTING = "setting"
    """Not a parameter: an attribute or config value guarding the input
    (``config.num_channels``, ``in_chans``), changed to match the edit."""


class ShapeSource(StrEnum):
    """How a node's output shape was obtained."""

    NONE = "-"
    """Not computed: inputs, parameters read from the model, unknown values."""
    RULE = "rule"
    """A closed-form rule of :mod:`torchsurgeon.rules` (built-in or registered)."""
    META = "meta"
    """Running the op on the ``meta`` device (or, for small opaque layers, on zeros on the CPU)."""


class Trust(StrEnum):
    """Whether a report's numbers can be trusted (:mod:`torchsurgeon.crosscheck`)."""

    VERIFIED = "verified"
    """The traced graph agrees with a real forward of the model on ``meta``."""
    NOT_RUN = "not run"
    """Nothing in the traced graph looked doubtful, so no real forward was run."""
    UNVERIFIED = "unverified"
    """The graph looked doubtful but the real model could not be run to check it (the reason says why)."""
    UNTRUSTED = "untrusted"
    """The traced graph disagrees with a real forward: the trace took another path, its numbers are wrong."""


class CrossCheckMode(StrEnum):
    """When :func:`torchsurgeon.paramcount` compares the traced graph with a real forward on ``meta``."""

    AUTO = "auto"
    """Only when the graph looks doubtful: invalid, opaque or unknown layers, or unused parameters."""
    ALWAYS = "always"
    """For every report (one meta forward of the model, about twice the cost of the analysis)."""
    NEVER = "never"
    """Never; the report's trust is ``not run``."""


@dataclass(frozen=True)
class CrossCheck:
    """The outcome of comparing a traced graph with a real forward of the model on ``meta``.

    ``trust`` is the verdict, ``reason`` why the check was (or was not) run,
    ``real_output`` the output shapes of the real forward (``None`` when it
    was not run or failed) and ``message`` one sentence for the report.
    """

    trust: Trust = Trust.NOT_RUN
    reason: str = ""
    real_output: Any = None
    message: str = ""

    @property
    def trusted(self) -> bool:
        """False only when the traced graph was shown to disagree with the real model."""
        return self.trust != Trust.UNTRUSTED


class TableColumn(StrEnum):
    """A column of the depth table (:meth:`torchsurgeon.ModelReport.table`); Layer and Type are always shown.

    The names torchinfo uses (``input_size``, ``output_size``, ``num_params``,
    ``kernel_size``, ``mult_adds``, ``params_percent``) are accepted too.

    Examples
    --------
    >>> TableColumn("macs"), TableColumn("num_params"), TableColumn("% of params")
    (<TableColumn.MACS: 'macs'>, <TableColumn.PARAMS: 'params'>, <TableColumn.PERCENT: 'percent'>)
    """

    INPUT = "input"
    """Input shape (of the block's first layer)."""
    OUTPUT = "output"
    """Output shape (of the block's last layer that has a tensor output)."""
    PARAMS = "params"
    """Parameters, each counted once, in the first row that uses it; ``before → resized`` for invalid layers."""
    TRAINABLE = "trainable"
    """The part of Params with ``requires_grad``."""
    MACS = "macs"
    """Multiply-accumulates for this input (:mod:`torchsurgeon.flops`)."""
    KERNEL = "kernel"
    """``kernel_size`` of convolutions and pooling layers."""
    PERCENT = "percent"
    """Params as a percentage of the model's total."""
    STATUS = "status"
    """ok, invalid, opaque, unknown, or what a surgery did (folded, new, reinitialised); a block shows the
    most alarming status inside it."""

    @classmethod
    def _missing_(cls, value: object) -> TableColumn | None:
        return _COLUMN_ALIASES.get(str(value).strip().lower().replace("-", "_"))


_COLUMN_ALIASES = {
    "input_size": TableColumn.INPUT,
    "input_shape": TableColumn.INPUT,
    "output_size": TableColumn.OUTPUT,
    "output_shape": TableColumn.OUTPUT,
    "num_params": TableColumn.PARAMS,
    "kernel_size": TableColumn.KERNEL,
    "mult_adds": TableColumn.MACS,
    "params_percent": TableColumn.PERCENT,
    "% of params": TableColumn.PERCENT,
    "%": TableColumn.PERCENT,
}


class TableFormat(StrEnum):
    """How :meth:`torchsurgeon.ModelReport.table` writes the table."""

    TEXT = "text"
    """Aligned columns for a terminal, totals and notes underneath."""
    MARKDOWN = "markdown"
    """A pipe table (GitHub, docs), totals and notes underneath."""
    CSV = "csv"
    """Comma-separated, one row per layer (no block rows, nothing collapsed), for a spreadsheet."""
    HTML = "html"
    """A self-contained ``<table>`` with inline styles, rows coloured by status (notebooks)."""


class FlopKind(StrEnum):
    """What a node's FLOPs are made of."""

    NONE = ""
    """No counted arithmetic (activations, pooling, reshapes...)."""
    CONV = "conv"
    """A convolution (or transposed convolution)."""
    LINEAR = "linear"
    """A linear layer or ``F.linear``."""
    MATMUL = "matmul"
    """``matmul``, ``@``, ``bmm``."""
    ATTENTION = "attention"
    """``scaled_dot_product_attention`` or ``nn.MultiheadAttention`` (projections included)."""
    RECURRENT = "recurrent"
    """The gate matrix products of ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` or one of their cells."""
    NORM = "norm"
    """Batch, layer, group, instance or RMS normalisation."""
    CUSTOM = "custom"
    """A rule registered with :func:`torchsurgeon.register_rule`."""


class FoldMode(StrEnum):
    """How pretrained RGB weights of a first layer are mapped to a new channel count."""

    SUM = "sum"
    """Sum over input channels, to 1 channel: exact on grey images."""
    SPREAD = "spread"
    """Every new channel gets ``W.sum(dim=1) / C``: exact on grey images replicated to C."""
    REPEAT = "repeat"
    """Tile the RGB weights to C channels and scale by ``3 / C`` (as timm does)."""
    ZERO_EXTRA = "zero_extra"
    """Keep the RGB weights, new channels start at zero: RGB + extra gives the RGB output."""
    RANDOM = "random"
    """Re-initialise the layer with PyTorch's default initialiser: pretrained weights lost."""


@dataclass(frozen=True)
class Finding:
    """A layer that does not fit the input it receives.

    ``expected`` and ``got`` are the values of ``what`` (for example
    ``in_channels``) the layer was built for and the one the input has.
    ``where`` is set for a function or tensor method named by its fx node
    name (``expand_1``, the report row's name): the module whose ``forward``
    calls it (``embeddings``), so that messages name a place in the code.
    """

    layer: str
    type: str
    what: str
    expected: Any
    got: Any
    fix: str
    where: str = ""

    @property
    def label(self) -> str:
        """The layer as messages name it: ``conv1 (Conv2d)``, ``expand_1 (.expand() in embeddings)``."""
        return layer_label(self.layer, self.type, self.where)

    @property
    def message(self) -> str:
        """One sentence: the layer, expected vs got, and the fix."""
        bound = isinstance(self.expected, str) and self.expected.startswith((">", "<", "a multiple of"))  # "size >= 7"
        expected = f"{self.what} {self.expected}" if bound else f"{self.what}={self.expected}"
        return f"{self.label} expects {expected}, got {self.got} — {self.fix}"


def layer_label(layer: str, type: str, where: str = "") -> str:
    """A layer as messages name it: its report row's name, its type and, for a function named by its fx node
    name, the module whose ``forward`` calls it (``where``), which the row's name alone does not show.

    Examples
    --------
    >>> layer_label("conv1", "Conv2d")
    'conv1 (Conv2d)'
    >>> layer_label("expand_1", ".expand()", "embeddings")
    'expand_1 (.expand() in embeddings)'
    """
    return f"{layer} ({type} in {where})" if where else f"{layer} ({type})"


@dataclass(frozen=True)
class LayerReport:
    """One row of a :func:`torchsurgeon.paramcount` report: a graph node.

    ``params`` counts the parameters the layer uses as the model stands;
    ``params_for_input`` counts them once the layer is resized to fit the input
    (equal to ``params`` for a layer that fits).  ``shared`` names the
    parameters the layer shares with other layers (counted once in totals).
    ``macs`` and ``flops`` are its multiply-accumulates and FLOPs for this
    input (see :mod:`torchsurgeon.flops`); ``shape_source`` says how its
    shape was obtained (a :class:`ShapeSource`: closed-form rule, ``meta``
    execution, or ``-``).

    ``path`` names the modules whose ``forward`` encloses the node, outermost
    first, ending with the layer's own module for a module call
    (``("layer1", "layer1.0", "layer1.0.conv1")``; containers without a
    ``forward`` such as ``nn.ModuleList`` are skipped); the depth table groups
    rows by it.  ``kernel`` is the module's ``kernel_size``.  ``change`` is
    what a surgery did to the layer's weights (:func:`torchsurgeon.check_surgery`).
    ``seen_params`` and ``seen_trainable`` count the parameters of this layer
    that an earlier layer already used (tied weights): a table counts each
    parameter once, in the first row that uses it (:attr:`counted`).
    """

    name: str
    type: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int
    params_for_input: int
    trainable: int
    status: LayerStatus
    message: str = ""
    op: str = "call_module"
    buffers: int = 0
    param_bytes: int = 0
    shared: tuple[str, ...] = field(default=())
    macs: int = 0
    flops: int = 0
    shape_source: ShapeSource = ShapeSource.NONE
    path: tuple[str, ...] = ()
    kernel: tuple[int, ...] | None = None
    change: ParamChange | None = None
    seen_params: int = 0
    seen_trainable: int = 0

    @property
    def frozen(self) -> int:
        """Parameters of this layer with ``requires_grad=False``."""
        return self.params - self.trainable

    @property
    def counted(self) -> int:
        """Parameters no earlier layer used: what this layer adds to the total."""
        return self.params - self.seen_params

    @property
    def counted_for_input(self) -> int:
        """:attr:`counted` once the layer is resized to fit the input: none when an earlier layer used all its
        parameters (a module's second call, resized in its first)."""
        return 0 if self.seen_params == self.params else self.params_for_input - self.seen_params

    @property
    def label(self) -> str:
        """The row as messages name it: ``conv1 (Conv2d)``; a function or method named by its fx node name with
        the module whose ``forward`` calls it, which the name alone does not show: ``item (.item() in encoder)``.

        Examples
        --------
        >>> from dataclasses import replace
        >>> row = LayerReport("item", ".item()", (), (), 0, 0, 0, LayerStatus.UNKNOWN, op="call_method")
        >>> row = replace(row, path=("encoder",))
        >>> row.label, replace(row, path=()).label
        ('item (.item() in encoder)', 'item (.item() in the model)')
        """
        where = ""
        if self.op in ("call_function", "call_method") and self.name not in self.path:
            where = self.path[-1] if self.path else "the model"
        return layer_label(self.name, self.type, where)

    @property
    def shown_status(self) -> str:
        """What a table says about the layer: the surgery's change when there is one, else the status."""
        return str(self.change) if self.change is not None else str(self.status)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form of the row."""
        return {
            "name": self.name,
            "type": self.type,
            "op": self.op,
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
            "output_shape": list(self.output_shape) if self.output_shape is not None else None,
            "params": self.params,
            "params_for_input": self.params_for_input,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "buffers": self.buffers,
            "param_bytes": self.param_bytes,
            "shared": list(self.shared),
            "status": str(self.status),
            "message": self.message,
            "macs": self.macs,
            "flops": self.flops,
            "shape_source": str(self.shape_source),
            "path": list(self.path),
            "kernel": list(self.kernel) if self.kernel is not None else None,
        }


class OptimizerKind(StrEnum):
    """The optimizers :func:`torchsurgeon.memory_plan` knows the state of (or give a ``torch.optim`` instance)."""

    SGD = "sgd"
    """Plain SGD: no state."""
    MOMENTUM = "sgd-momentum"
    """SGD with momentum 0.9: one momentum buffer per trainable parameter."""
    ADAM = "adam"
    """Adam: ``exp_avg``, ``exp_avg_sq`` and a scalar ``step`` per trainable parameter."""
    ADAMW = "adamw"
    """AdamW: the same state as Adam (weight decay 0.01, decoupled)."""


@dataclass(frozen=True)
class LayerMemory:
    """One row of a :func:`torchsurgeon.memory_plan`: a module that ran operations itself in the forward.

    ``saved`` is the bytes autograd keeps for backward from this module's
    operations (each storage counted once, where it was first saved;
    parameters and buffers excluded), ``saved_so_far`` the running total in
    forward order, ``transient`` the most memory in use beyond saved
    activations and gradients while this module ran (forward), all in bytes.
    """

    name: str
    type: str
    saved: int
    saved_so_far: int
    transient: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form of the row."""
        return {
            "name": self.name,
            "type": self.type,
            "saved": self.saved,
            "saved_so_far": self.saved_so_far,
            "transient": self.transient,
        }


@dataclass(frozen=True)
class ParamReport:
    """What happened to one parameter.

    ``name`` is the parameter's name in the edited model (in the original one
    for ``removed``); ``old_name`` is its name in the original when it moved.
    ``init`` names the initialiser of ``new`` and ``reinitialised`` parameters.
    """

    name: str
    status: ParamChange
    shape_before: tuple[int, ...] | None
    shape_after: tuple[int, ...] | None
    init: str = ""
    message: str = ""
    old_name: str = ""

    @property
    def layer(self) -> str:
        """The module the parameter belongs to (``fc.1`` for ``fc.1.weight``)."""
        return self.name.rpartition(".")[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "name": self.name,
            "status": str(self.status),
            "shape_before": list(self.shape_before) if self.shape_before is not None else None,
            "shape_after": list(self.shape_after) if self.shape_after is not None else None,
            "init": self.init,
            "message": self.message,
            "old_name": self.old_name,
        }


@dataclass(frozen=True)
class Violation:
    """One row of a broken contract: the field, what was expected, what the model has."""

    field: str
    expected: str
    got: str
    note: str = ""
    """A fix, printed under the table."""


class LockChange(StrEnum):
    """How a layer differs from its lockfile."""

    ADDED = "added"
    """In the model, not in the lockfile."""
    REMOVED = "removed"
    """In the lockfile, not in the model."""
    CHANGED = "changed"
    """In both, with a different type, output shape or parameter count."""


@dataclass(frozen=True)
class LayerDiff:
    """A layer that differs between a model and its lockfile.

    ``locked`` and ``now`` are lockfile rows (``name``, ``type``,
    ``output_shape``, ``params``, ``trainable``), ``None`` on the side where
    the layer is missing; ``fields`` names what changed.
    """

    layer: str
    change: LockChange
    locked: Mapping[str, Any] | None
    now: Mapping[str, Any] | None
    fields: tuple[str, ...] = ()


class OutputShape(tuple[int, ...]):
    """An output shape that remembers the layers of the report it comes from.

    It is the tuple (equal to, hashed and printed like ``(1, 10)``); ``layers``
    (the report's rows, in execution order) lets tools such as the pytest
    assertion hook explain which layers made the shape.

    Examples
    --------
    >>> row = LayerReport("fc", "Linear", (1, 4), (1, 9), 45, 45, 45, LayerStatus.OK)
    >>> shape = OutputShape((1, 9), [row])
    >>> shape == (1, 9), shape, [layer.name for layer in shape.shape_changes()]
    (True, (1, 9), ['fc'])
    """

    layers: Sequence[LayerReport]

    def __new__(cls, dims: Iterable[int], layers: Iterable[LayerReport] = ()) -> OutputShape:
        self = super().__new__(cls, dims)
        self.layers = layers if isinstance(layers, Sequence) else tuple(layers)  # a report's rows: built on first use
        return self

    def shape_changes(self, limit: int = 10) -> list[LayerReport]:
        """The last layers before the output whose output shape differs from their input shape.

        Walks back from the output and stops at the layer that gave the
        output its rank (``flatten`` before a classifier head) or after
        ``limit`` layers; returned in execution order.
        """
        picked: list[LayerReport] = []
        for layer in reversed(self.layers):
            ins, out = layer.input_shape, layer.output_shape
            if not (is_shape(ins) and is_shape(out)) or ins == out:
                continue
            picked.append(layer)
            if len(picked) >= limit or (len(out) == len(self) and len(ins) != len(self)):
                break
        return picked[::-1]


def is_shape(value: Any) -> TypeGuard[tuple[int, ...]]:
    """Whether ``value`` is a shape: a tuple of ints (not a nested shape, not None).

    Examples
    --------
    >>> is_shape((1, 3)), is_shape(((1, 3), (2,))), is_shape(None)
    (True, False, False)
    """
    return isinstance(value, tuple) and all(isinstance(d, int) for d in value)
