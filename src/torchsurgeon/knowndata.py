"""The values a trace knows at its input: a model's scalar settings, and small tensors of known data.

A trace answers Python's questions about a proxy from its value on ``meta``
(:class:`torchsurgeon.metavalues.MetaValues`), which has shapes but no data.
Some data is known all the same, and a real forward decides by it:

* a model's 0-dim integer or bool buffers are settings, not data
  (:func:`~torchsurgeon.copies.meta_like` keeps their values): transformers'
  Encodec computes its paddings from its ``stride`` buffers;
* a tensor made from sizes and constants (:data:`DATA_FACTORIES`):
  transformers builds ``torch.ones(batch, length)`` as the attention mask of
  an input given without one, and skips the mask when it is all ones.

Such values are computed on the CPU (small ones only), and Python may read
them (:func:`settled`); anything random, uninitialised or computed by a
leaf module stays data-dependent.  An op mixing them with ``meta`` tensors
gets ``meta`` stand-ins (:func:`on_one_device`); the few ops that take a CPU
integer tensor beside tensors on any device, and refuse a stand-in
(``pack_padded_sequence``'s lengths, an LSTM's ``batch_sizes``), get the data
itself (:func:`stand_ins_or_data`), as a real forward gives it.  Known data
moved to the input's device (``lengths.to(x.device)``) stays where it is
(:func:`~torchsurgeon.datamoves.kept_in_place`): the input's device is ``meta`` only in a trace.

Shape propagation computes the same known data beside its ``meta`` values
(:class:`KnownData`) to check what only data decides: an index into a table
(``rel_pos[dist.long()]`` of positions made with ``torch.arange``, an
embedding of position ids) that points past its end raises ``IndexError`` in
a real forward at an input longer or larger than the model was built for,
while its shapes all fit.  Data of the input itself is not known, but a mask
of it is 0 or 1 whatever it holds: the positions RoBERTa counts from its
tokens (``cumsum(input_ids != pad) * mask + pad``) have a known range
(:attr:`KnownData.ranges`), whose top an input without padding reaches.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .bounds import Past, checked, ids_past, index_past
from .copies import torch_or_python
from .fxbookkeeping import reads_metadata
from .records import Finding

__all__ = (
    "COUNTED",
    "DATA_FACTORIES",
    "DATA_LIMIT",
    "PLAIN_TENSORS",
    "KnownData",
    "as_meta",
    "data_and_meta",
    "edits_values",
    "from_known_data",
    "given_as_data",
    "holds_known_data",
    "makes_known_data",
    "masks_as_indices",
    "masks_input",
    "off_meta",
    "on_one_device",
    "packed_lengths",
    "pads_input",
    "retried_with_data",
    "settled",
    "stand_ins",
    "stand_ins_or_data",
    "unsettled",
)

DATA_FACTORIES = frozenset({torch.ones, torch.zeros, torch.full, torch.arange, torch.eye, torch.tensor})
"""Factories of known data: made on the CPU in a trace's values when asked for on ``meta``."""

PLAIN_TENSORS = (torch.Tensor, nn.Parameter)
"""The tensor types whose device decides where a call runs (a subclass, a fake tensor, keeps its own ways)."""

COUNTED = "position"
"""The ``what`` of a finding on positions counted from the input's data: a ``meta`` forward cannot check it."""

_COMPARISONS = frozenset(
    {"ne", "eq", "gt", "ge", "lt", "le", "__ne__", "__eq__", "__gt__", "__ge__", "__lt__", "__le__"}
)
_UNEQUAL = frozenset({"ne", "__ne__"})
_CONVERSIONS = frozenset({"int", "long", "short", "to", "type_as", "type", "clone", "contiguous"})
_SUMS = frozenset({"add", "sub", "mul", "__add__", "__radd__", "__sub__", "__mul__", "__rmul__"})

DATA_LIMIT = 1 << 16
"""Elements of the largest tensor of known data kept on the CPU; a larger one is a ``meta`` stand-in."""


def given_as_data(value: Any) -> bool:
    """Whether an input given as a tensor is read as data (a sequence's lengths, a timestep): a plain CPU tensor of
    at most :data:`DATA_LIMIT` elements; a larger one (an image) gives only its shape and dtype.

    Examples
    --------
    >>> given_as_data(torch.tensor([6, 3, 2])), given_as_data(torch.empty(1, 3, 224, 224))
    (True, False)
    """
    return type(value) is torch.Tensor and value.device.type == "cpu" and value.numel() <= DATA_LIMIT


_UNSETTLED = frozenset(
    (
        *("rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "multinomial", "poisson"),
        *("normal", "normal_", "bernoulli", "bernoulli_", "uniform_", "exponential_", "geometric_", "cauchy_"),
        *("log_normal_", "random_", "empty", "empty_like", "new_empty", "empty_strided", "rrelu", "rrelu_"),
        *("dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d"),
    )
)
"""The torch functions and methods whose values differ between forwards (random, uninitialised)."""


def packed_lengths(node: torch.fx.Node) -> torch.fx.Node | None:
    """The node giving ``pack_padded_sequence`` its ``lengths`` (one per sequence, read as 1-D int64 CPU data, even
    from a float tensor); None for any other node.

    Examples
    --------
    >>> from torch import nn
    >>> class Packs(nn.Module):
    ...     def forward(self, x, lengths):
    ...         return nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
    >>> from torchsurgeon.trace import trace
    >>> graph = trace(Packs()).graph_module.graph
    >>> [str(packed_lengths(n)) for n in graph.nodes if n.op == "call_function"]
    ['lengths']
    """
    if node.op != "call_function" or node.target is not nn.utils.rnn.pack_padded_sequence:
        return None
    lengths = node.args[1] if len(node.args) > 1 else node.kwargs.get("lengths")
    return lengths if isinstance(lengths, torch.fx.Node) else None


def unsettled(target: Any) -> bool:
    """Whether a torch function, method (by name) or op gives other values on every call (random, uninitialised).

    Examples
    --------
    >>> unsettled(torch.rand), unsettled("uniform_"), unsettled(torch.arange)
    (True, True, False)
    """
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return name in _UNSETTLED


_IN_PLACE_OPERATORS = frozenset(
    f"__i{name}__" for name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor")
) | {"__setitem__"}


def edits_values(op: str, target: Any) -> bool:
    """Whether a call edits its first argument's values in place (``lengths.add_(1)``, ``mask[0] = 1``, ``x += 1``);
    ``op`` and ``target`` as in an fx node (a torch function mode sees a tensor method as ``("call_method", func)``).

    Examples
    --------
    >>> import operator
    >>> edits_values("call_method", "add_"), edits_values("call_method", torch.Tensor.__iadd__)
    (True, True)
    >>> edits_values("call_function", operator.setitem), edits_values("call_method", "add")
    (True, False)
    """
    if op == "call_function":
        return target is operator.setitem
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return op == "call_method" and ((name.endswith("_") and not name.startswith("__")) or name in _IN_PLACE_OPERATORS)


def masks_input(node: torch.fx.Node) -> bool:
    """Whether ``node`` compares a model input with something (``input_ids.ne(padding_idx)``): a mask of 0 and 1
    whatever the input holds, from which models count positions (RoBERTa's ``cumsum`` of it).

    Examples
    --------
    >>> g = torch.fx.Graph()
    >>> ids = g.placeholder("input_ids")
    >>> masks_input(g.call_method("ne", (ids, 1))), masks_input(g.call_method("cumsum", (ids, 1)))
    (True, False)
    """
    args = node.args
    first = args[0] if args else None
    if type(first) is not torch.fx.Node or (first.op != "placeholder" and first.target is not F.pad):  # most: no
        return False
    if first.op != "placeholder" and not pads_input(first):
        return False
    if node.op not in ("call_method", "call_function"):
        return False
    return (node.target if node.op == "call_method" else getattr(node.target, "__name__", "")) in _COMPARISONS


def pads_input(node: torch.fx.Node) -> bool:
    """Whether ``node`` pads a model input with a constant (Longformer pads its tokens to its attention window
    with the padding token): a mask of it, ``!= value``, holds as many ones as the input had at most.

    Examples
    --------
    >>> g = torch.fx.Graph()
    >>> ids = g.placeholder("input_ids")
    >>> pads_input(g.call_function(F.pad, (ids, (0, 3)), {"value": 1}))
    True
    """
    first = node.args[0] if node.args else None
    return (
        node.op == "call_function"
        and node.target is F.pad
        and type(first) is torch.fx.Node
        and first.op == "placeholder"
        and bool(node.kwargs.get("mode", "constant") == "constant")
    )


def makes_known_data(node: torch.fx.Node) -> bool:
    """Whether ``node`` makes known data, or a known range, from none: a factory of known data
    (:data:`DATA_FACTORIES`) or a mask of an input (:func:`masks_input`); shape propagation follows it.

    Examples
    --------
    >>> g = torch.fx.Graph()
    >>> makes_known_data(g.call_function(torch.arange, (4,)))
    True
    """
    if node.op == "call_function" and (node.target in DATA_FACTORIES or (node.target is F.pad and pads_input(node))):
        return True
    return masks_input(node)


def settled(node: torch.fx.Node, values: Mapping[torch.fx.Node, Any]) -> bool:
    """Whether ``node``'s value (in ``values``) is the same in every forward at this input.

    Sizes, Python numbers and ``meta`` tensors (whose data never flows into
    a known value) are settled; a CPU tensor is when it was computed from
    settled values by an op that is neither random nor uninitialised, and
    not by a leaf module.

    Examples
    --------
    >>> g = torch.fx.Graph()
    >>> ones, noise = g.call_function(torch.ones, (3,)), g.call_function(torch.rand, (3,))
    >>> total = g.call_method("sum", (ones,))
    >>> values = {ones: torch.ones(3), noise: torch.rand(3), total: torch.tensor(3.0)}
    >>> settled(total, values), settled(noise, values)
    (True, False)
    """
    value = values.get(node)
    if not isinstance(value, torch.Tensor) or value.device.type == "meta":
        return True
    if node.op == "call_module":
        return False
    if node.op in ("call_function", "call_method"):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name in _UNSETTLED:
            return False
    return all(settled(a, values) for a in node.all_input_nodes)


def from_known_data(value: Any) -> bool:
    """Whether ``value`` (a call's arguments, nested in tuples, lists and dicts) holds no ``meta`` tensor: a factory
    given only sizes, constants and known tensors makes known data; one given a ``meta`` tensor (a fill value, a
    traced tensor's data) does not.

    Examples
    --------
    >>> from_known_data(((2, 3), {"dtype": torch.float32})), from_known_data(((2,), torch.empty((), device="meta")))
    (True, False)
    """
    if isinstance(value, torch.Tensor):
        return not value.is_meta
    if isinstance(value, (tuple, list)):
        return all(from_known_data(v) for v in value)
    if isinstance(value, dict):
        return all(from_known_data(v) for v in value.values())
    return True


def off_meta(value: Any, device: torch.device) -> Any:
    """``value`` (nested in tuples, lists and dicts) with each ``meta`` device in it replaced by ``device``.

    Examples
    --------
    >>> off_meta(((2, 3), {"device": torch.device("meta")}), torch.device("cpu"))
    ((2, 3), {'device': device(type='cpu')})
    """
    if isinstance(value, (tuple, list)):
        return type(value)(off_meta(v, device) for v in value)
    if isinstance(value, dict):
        return {k: off_meta(v, device) for k, v in value.items()}
    if (isinstance(value, torch.device) and value.type == "meta") or (isinstance(value, str) and value == "meta"):
        return device
    return value


def as_meta(value: Any) -> Any:
    """``value`` (nested in tuples, lists, dicts and model outputs) with each CPU tensor of known data (more than
    0-dim: a scalar setting stays) as a ``meta`` stand-in: what leaves a forward run on ``meta``.  A packed
    sequence keeps its ``batch_sizes``, on the CPU whatever the device in torch (``PackedSequence`` refuses others).

    Examples
    --------
    >>> out = as_meta({"ids": torch.arange(3), "scale": torch.tensor(2.0)})
    >>> out["ids"].device.type, out["scale"].device.type
    ('meta', 'cpu')
    """
    if not any(map(_cpu_data, pytree.tree_leaves(value))):
        return value
    return pytree.tree_map(_as_meta, value, is_leaf=lambda v: type(v) is PackedSequence)


def _as_meta(value: Any) -> Any:
    """A leaf of :func:`as_meta`'s value as a stand-in; a packed sequence's parts but its batch sizes."""
    if type(value) is not PackedSequence:
        return stand_ins(value)
    return value._replace(  # as torch's own code does: no check of the batch sizes' device
        data=stand_ins(value.data),
        sorted_indices=stand_ins(value.sorted_indices),
        unsorted_indices=stand_ins(value.unsorted_indices),
    )


def on_one_device(
    args: tuple[Any, ...], kwargs: dict[str, Any], module: bool
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with every CPU tensor of known data as a ``meta`` stand-in when it meets ``meta``
    tensors (or a module, whose weights are on ``meta``); CPU scalars stay (torch lets them meet any device).

    Examples
    --------
    >>> x, mask = torch.empty(2, 3, device="meta"), torch.ones(2, 3)
    >>> [a.device.type for a in on_one_device((x, mask), {}, module=False)[0]]
    ['meta', 'meta']
    >>> [a.device.type for a in on_one_device((mask, 1), {}, module=False)[0][:1]]
    ['cpu']
    """
    data, on_meta = data_and_meta(args, kwargs)
    on_meta = on_meta or module  # a module's weights are on meta
    if not (data and on_meta):
        return args, kwargs

    return stand_ins(args), {k: stand_ins(v) for k, v in kwargs.items()}


def stand_ins_or_data(
    call: Callable[..., Any],
    given: tuple[tuple[Any, ...], Mapping[str, Any]],
    converted: tuple[tuple[Any, ...], Mapping[str, Any]],
) -> Any:
    """``call(args, kwargs)`` on the arguments with ``meta`` stand-ins for known data (``converted``, from
    :func:`on_one_device`); when that fails, on the arguments ``given`` with their known integer tensors left on the
    CPU (others as stand-ins).

    A few ops take a CPU integer tensor beside tensors on any device and refuse
    a stand-in: ``pack_padded_sequence`` its ``lengths``, an LSTM or
    ``pad_packed_sequence`` a packed sequence's ``batch_sizes``; they read the
    data, as in a real forward, and give data computed from it (the batch
    sizes).  An LSTM's initial state of zeros, known data too, is a stand-in
    still: it must meet the weights on their device.  When both calls fail,
    the first failure is raised (a shape that does not fit fails either way).

    Examples
    --------
    >>> from torch.nn.utils.rnn import pack_padded_sequence
    >>> x, lengths = torch.empty(2, 5, 3, device="meta"), torch.tensor([5, 2])
    >>> given = ((x, lengths, True), {})
    >>> packed = stand_ins_or_data(lambda a, k: torch._VF._pack_padded_sequence(*a, **k), given,
    ...                            on_one_device(*given, module=False))
    >>> tuple(packed[0].shape), packed[1]
    ((7, 3), tensor([2, 2, 1, 1, 1]))
    """
    if converted[0] is given[0] and converted[1] is given[1]:  # no known data met meta: nothing to retry
        return call(*given)
    return retried_with_data(lambda: call(*converted), call, given)


def retried_with_data(
    first: Callable[[], Any],
    call: Callable[..., Any],
    given: tuple[tuple[Any, ...], Mapping[str, Any]],
    kept: Callable[[Any], None] | None = None,
) -> Any:
    """``first()`` (a call on ``meta`` values), and when it fails, ``call(args, kwargs)`` on the arguments ``given``
    with their known integer tensors left on the CPU (others as stand-ins, which meet ``meta`` tensors); ``kept``
    sees what that retry gives.  When both fail, ``first``'s failure is raised: it says why (a shape that does not
    fit fails either way).  The one retry of :func:`stand_ins_or_data` and of :meth:`KnownData.or_with_data`.

    Examples
    --------
    >>> from torch.nn.utils.rnn import pack_padded_sequence
    >>> x, lengths = torch.ones(2, 5, 3), torch.tensor([5, 2])  # both known data
    >>> pack = lambda a, k: pack_padded_sequence(*a, **k)
    >>> packed = retried_with_data(lambda: pack((x.to("meta"), lengths.to("meta"), True), {}), pack,
    ...                            ((x, lengths), {"batch_first": True}))
    >>> packed.data.device.type, packed.batch_sizes
    ('meta', tensor([2, 2, 1, 1, 1]))
    """
    try:
        return first()
    except Exception as exc:
        failure = exc
    args, kwargs = given
    try:
        out = call(
            stand_ins(args, keep_integers=True), {k: stand_ins(v, keep_integers=True) for k, v in kwargs.items()}
        )
    except Exception:  # refused either way: the meta values' failure says why
        pass
    else:
        if kept is not None:
            kept(out)
        return out
    raise failure


def holds_known_data(value: Any) -> bool:
    """Whether ``value`` (a tensor, or tensors nested in tuples, lists, dicts and named tuples: a packed sequence)
    holds known data: small CPU tensors, at least one of more than 0 dims, beside ``meta`` tensors only.

    Examples
    --------
    >>> from torch.nn.utils.rnn import PackedSequence
    >>> holds_known_data(PackedSequence(torch.empty(7, 3, device="meta"), torch.tensor([2, 2, 1, 1, 1])))
    True
    >>> holds_known_data((torch.empty(2, device="meta"), torch.tensor(1)))
    False
    """
    leaves = [t for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]
    if not any(map(_cpu_data, leaves)):
        return False
    return all(type(t) is torch.Tensor and (t.is_meta or t.numel() <= DATA_LIMIT) for t in leaves)


_QUERIES_ONLY = torch._C.DisableTorchFunction


def data_and_meta(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[bool, bool]:
    """Whether a call's arguments (also inside a list or tuple) hold a CPU tensor of known data (a plain tensor of
    more than 0 dims), and whether they hold a ``meta`` tensor (also a parameter of a model built on meta).

    Examples
    --------
    >>> data_and_meta((torch.arange(3), torch.empty(2, device="meta")), {}), data_and_meta((torch.tensor(1),), {})
    ((True, True), (False, False))
    """
    data = meta = False
    with _QUERIES_ONLY():  # in a torch function mode (ruled_meta), the questions below are not sent to it
        for value in (*args, *kwargs.values()) if kwargs else args:
            for t in value if type(value) in (list, tuple) else (value,):
                kind = type(t)
                if kind is torch.Tensor or kind is nn.Parameter:  # PLAIN_TENSORS
                    if t.is_meta:
                        meta = True
                    elif kind is torch.Tensor and t.dim():
                        data = True
    return data, meta


_GETITEM = (operator.getitem, torch.Tensor.__getitem__)


def masks_as_indices(target: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``x[mask, ...]`` with ``mask`` a boolean tensor of known data: the index as the positions it selects
    (``mask.nonzero(as_tuple=True)``), which select the same elements in the same order and, unlike the mask,
    can meet a ``meta`` tensor (meta has no ``nonzero``: BART's classifier reads ``hidden[eos_mask, :]``).
    Other calls and indices are given back as they are.

    Examples
    --------
    >>> x, mask = torch.empty(2, 5, 4, device="meta"), torch.tensor([[0, 1, 0, 0, 1], [0, 0, 0, 1, 1]]).bool()
    >>> args = masks_as_indices(operator.getitem, (x, (mask, slice(None))))
    >>> tuple(operator.getitem(*on_one_device(args, {}, module=False)[0]).shape)
    (4, 4)
    """
    if target not in _GETITEM or len(args) != 2 or not isinstance(args[0], torch.Tensor):
        return args
    index = args[1]
    parts = index if type(index) is tuple else (index,)
    if not any(_cpu_data(p) and p.dtype == torch.bool for p in parts):
        return args
    converted: list[Any] = []
    dim = 0  # the dim of x the part indexes
    for p in parts:
        if _cpu_data(p) and p.dtype == torch.bool:
            if tuple(p.shape) != tuple(args[0].shape[dim : dim + p.dim()]):
                return args  # a mask that does not fit: the op itself says what a real forward says
            converted += list(p.nonzero(as_tuple=True))
            dim += p.dim()
        elif p is None or p is Ellipsis or isinstance(p, torch.Tensor):
            return args  # only masks after slices and numbers: where they index is known without more rules
        else:
            converted.append(p)
            dim += 1
    return (args[0], tuple(converted))


def stand_ins(value: Any, keep_integers: bool = False) -> Any:
    """``value`` (a tensor, or a list or tuple of them) with each CPU tensor of known data, 0-dim ones aside (and
    integer ones with ``keep_integers``), as a ``meta`` stand-in.

    Examples
    --------
    >>> [t.device.type for t in stand_ins((torch.arange(2), torch.tensor(1)))]
    ['meta', 'cpu']
    >>> [t.device.type for t in stand_ins((torch.arange(2), torch.ones(2)), keep_integers=True)]
    ['cpu', 'meta']
    """
    if type(value) in (list, tuple):
        return type(value)(stand_ins(v, keep_integers) for v in value)
    if not _cpu_data(value) or (keep_integers and not (value.is_floating_point() or value.is_complex())):
        return value
    return torch.empty_like(value, device="meta")


def _cpu_data(value: Any) -> bool:
    """A plain tensor off ``meta`` of more than 0 dims: known data (a 0-dim one is a setting, which stays)."""
    return type(value) is torch.Tensor and not value.is_meta and value.dim() > 0


def _tensors_of(value: Any) -> list[torch.Tensor]:
    """The CPU tensors of a known value (a tensor, or tensors nested in containers); its ``meta`` ones hold none."""
    return [t for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor) and not t.is_meta]


class KnownData:
    """The known data of a shape propagation's nodes, computed on the CPU beside their ``meta`` values.

    A node has known data when it is a factory of it (:data:`DATA_FACTORIES`
    given sizes and constants: OPT counts its positions with ``cumsum`` of a
    mask of ones) or a torch function, operator or tensor method whose
    tensor inputs all have known data; its result is kept when it is a small
    tensor (or a tuple of them).
    A random or uninitialised op on known data makes all of it unknown
    (nothing is trusted past it); an in-place edit of known data by values
    that are not known (:func:`edits_values`) makes it, and all known data
    sharing its memory, unknown.  Shape propagation asks
    :meth:`past_the_end` before an index or an embedding lookup reads it.

    Examples
    --------
    >>> import operator
    >>> g = torch.fx.Graph()
    >>> ids = g.call_function(torch.arange, (6,))
    >>> table = g.placeholder("table")
    >>> row = g.call_function(operator.getitem, (table, ids))
    >>> known = KnownData()
    >>> known.follow(ids, {})
    >>> env = {table: torch.empty(4, 2, device="meta"), ids: torch.empty(6, device="meta")}
    >>> print(known.past_the_end(row, env, None, "rel_pos", "getitem()").message)  # doctest: +NORMALIZE_WHITESPACE
    rel_pos (getitem()) expects index < 4, got 4 — a real forward raises IndexError (index 4 is out of bounds
    for dimension 0 with size 4): the indices come from the input's size (positions, relative distances) and
    only 4 fit — give an input the model was built for
    """

    def __init__(self) -> None:
        self.values: dict[torch.fx.Node, Any] = {}
        self.ranges: dict[torch.fx.Node, tuple[int, int]] = {}
        """Nodes whose data comes from the input, with the range of its values (from a :func:`masks_input`)."""
        self.padded: dict[torch.fx.Node, tuple[Any, int]] = {}  # an input padded with a number: (it, the length)
        self.ones: dict[torch.fx.Node, int] = {}  # a mask of a padded input: at most this many ones on its last dim

    def reads(self, inputs: Sequence[torch.fx.Node]) -> bool:
        """Whether a node of these input nodes reads known data or a known range (its result may depend on values,
        not only on shapes)."""
        values, ranges = self.values, self.ranges
        return any(a in values or a in ranges for a in inputs) if values or ranges else False

    def follow(self, node: torch.fx.Node, env: Mapping[torch.fx.Node, Any], reads: bool | None = None) -> None:
        """Compute ``node``'s known data, if it has some, from its inputs' (``env``: their ``meta`` values);
        ``reads``: :meth:`reads` of its inputs, when already asked.  Once per node: shape propagation may ask
        before running it (an op meta cannot run), and an in-place edit must not be applied twice."""
        if node in self.values:
            return
        op, target = node.op, node.target
        factory = op == "call_function" and target in DATA_FACTORIES
        if pads_input(node):
            self._follow_padding(node, env)
            return
        if masks_input(node) and node.args[0] not in self.values:  # an input given as a shape: its range only
            self.ranges[node] = (0, 1)
            padded = self.padded.get(node.args[0])  # type: ignore[arg-type]
            other = node.args[1] if len(node.args) > 1 else None
            name = target if isinstance(target, str) else getattr(target, "__name__", "")
            if padded is not None and name in _UNEQUAL and type(other) in (int, float) and other == padded[0]:
                self.ones[node] = padded[1]  # the padding gives zeros: at most as many ones as the input had
            return
        if reads is None:
            reads = self.reads(node.all_input_nodes)
        if reads and self.ranges:
            self._follow_range(node, env)
        if not factory and (op not in ("call_function", "call_method") or not reads):
            return
        if op == "call_function" and not torch_or_python(target):
            return  # a function of the model's own (fx.wrap): run once, by shape propagation, not twice
        if unsettled(target):  # random or uninitialised: what it touches is no longer known
            self.values.clear()
            return
        edited = node.args[0] if node.args and edits_values(op, target) else None
        if isinstance(edited, torch.fx.Node) and edited in self.ranges:  # data of the input's, edited: range unknown
            self.ranges.pop(edited)
            self.ones.pop(edited, None)
        args = self._arguments((node.args, node.kwargs), env)
        if args is None or (factory and not from_known_data(args)):
            self._forget(edited)
            return
        (call_args, kwargs), cpu = args, torch.device("cpu")
        try:
            with torch.no_grad():
                if op == "call_function":
                    out = target(*off_meta(call_args, cpu), **off_meta(kwargs, cpu))  # type: ignore[operator]
                else:
                    out = getattr(call_args[0], str(target))(*off_meta(call_args[1:], cpu), **off_meta(kwargs, cpu))
        except Exception:  # not computable here: not known
            self._forget(edited)
            return
        parts = out if type(out) in (tuple, list) else (out,)
        if parts and all(type(t) is torch.Tensor and not t.is_meta and t.numel() <= DATA_LIMIT for t in parts):
            self.values[node] = out
        elif holds_known_data(out):  # known data beside meta tensors (a packed sequence's batch sizes)
            self.values[node] = out

    def or_with_data(
        self, node: torch.fx.Node, env: Mapping[torch.fx.Node, Any], run: Callable[[], Any], call: Callable[..., Any]
    ) -> Callable[[], Any]:
        """``run`` (``node`` on its ``meta`` values), and when it fails, ``call(args, kwargs)`` on its arguments with
        their known data where they have some (:func:`retried_with_data`: ``pack_padded_sequence`` reads its
        lengths, an LSTM its packed input's batch sizes); what that gives is ``node``'s known data when it holds
        some."""
        given = self._arguments((node.args, node.kwargs), env, partial=True)

        def keep(out: Any) -> None:
            if holds_known_data(out):
                self.values[node] = out

        return lambda: retried_with_data(run, call, given, keep)

    def inputs_deciding(self, node: torch.fx.Node, env: Mapping[torch.fx.Node, Any]) -> list[torch.fx.Node]:
        """The inputs given as shapes whose data the integer and bool tensors ``node`` reads are computed from
        (through functions and methods; none when a leaf module or a weight computes them too): given with their
        data, the op would read it (``pack_padded_sequence`` of lengths given as a shape)."""
        lengths = packed_lengths(node)  # read as int64 data whatever its dtype
        todo = [
            a
            for a in node.all_input_nodes
            if isinstance(v := env.get(a), torch.Tensor)
            and (a is lengths or not (v.is_floating_point() or v.is_complex()))
        ]
        seen: set[torch.fx.Node] = set()
        while todo:
            current = todo.pop()
            if current in seen or current in self.values:
                continue
            seen.add(current)
            if current.op in ("call_module", "get_attr"):
                return []
            if reads_metadata(current):  # x.dtype, x.shape: no data of x (transformers' finfo(x.dtype).min)
                continue
            todo.extend(current.all_input_nodes)
        return [n for n in node.graph.nodes if n.op == "placeholder" and n in seen]

    def _forget(self, edited: Any) -> None:
        """Known data edited in place by what is not known (``pos.add_(x.sum())``, ``ids[0] = x``): it, and all
        known data sharing its memory (views of it), is no longer known; a stale value would answer for it."""
        if not isinstance(edited, torch.fx.Node) or edited not in self.values:
            return
        memory = {t.untyped_storage().data_ptr() for t in _tensors_of(self.values[edited])}
        for node in [
            n for n, v in self.values.items() if any(t.untyped_storage().data_ptr() in memory for t in _tensors_of(v))
        ]:
            del self.values[node]

    def _follow_padding(self, node: torch.fx.Node, env: Mapping[torch.fx.Node, Any]) -> None:
        """Record what an input padded at the end of its last dim with a number holds: (the number, its length)."""
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
        x = env.get(node.args[0])  # type: ignore[arg-type]
        if isinstance(pad, (tuple, list)) and len(pad) == 2 and pad[0] == 0 and isinstance(x, torch.Tensor):
            self.padded[node] = (0 if value is None else value, int(x.shape[-1]))

    def _follow_range(self, node: torch.fx.Node, env: Mapping[torch.fx.Node, Any]) -> None:
        """The range of ``node``'s values from its inputs' ranges, for the ops positions are counted with
        (conversions, ``cumsum``, ``+``, ``-``, ``*`` by a number or by a 0/1 mask); none for any other op."""
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        ranges = self.ranges
        args = node.args

        def range_of(a: Any) -> tuple[int, int] | None:
            if isinstance(a, torch.fx.Node):
                return ranges.get(a)
            return (a, a) if type(a) is int else None

        first = range_of(args[0]) if args else None
        ones = self.ones.get(args[0]) if args and isinstance(args[0], torch.fx.Node) else None
        if name in _CONVERSIONS and first is not None:
            ranges[node] = first
            if ones is not None:
                self.ones[node] = ones
        elif name == "cumsum" and first is not None:
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
            x = env.get(args[0]) if isinstance(args[0], torch.fx.Node) else None
            if isinstance(x, torch.Tensor) and type(dim) is int and -x.dim() <= dim < x.dim():
                n = int(x.shape[dim])
                lo, hi = first
                if ones is not None and first == (0, 1) and dim % x.dim() == x.dim() - 1:
                    n = min(n, ones)  # a mask of a padded input: its ones come from the input alone
                ranges[node] = (min(lo, lo * n), max(hi, hi * n))
        elif name in _SUMS and len(args) == 2 and not node.kwargs:
            second = range_of(args[1])
            if first is None or second is None:
                return
            (a, b), (c, d) = first, second
            if name in ("add", "__add__", "__radd__"):
                ranges[node] = (a + c, b + d)
            elif name in ("sub", "__sub__"):
                ranges[node] = (a - d, b - c)
            elif first == (0, 1) or second == (0, 1) or a == b or c == d:  # by a mask or a number: exact ends
                ends = (a * c, a * d, b * c, b * d)
                ranges[node] = (min(ends), max(ends))

    def with_masks_as_indices(self, node: torch.fx.Node, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """``args`` (``node``'s ``meta`` values) of ``x[mask, ...]`` with a boolean ``mask`` of known data as the
        positions it selects (:func:`masks_as_indices`), each a ``meta`` stand-in; else ``args``."""
        if node.target is not operator.getitem or len(node.args) != 2 or len(args) != 2:
            return args
        written, given = node.args[1], args[1]
        nodes = written if type(written) is tuple else (written,)
        values = given if type(given) is tuple else (given,)
        if len(nodes) != len(values):
            return args
        index = tuple(
            self.values[a] if isinstance(a, torch.fx.Node) and a in self.values else v for a, v in zip(nodes, values)
        )
        converted = masks_as_indices(operator.getitem, (args[0], index))
        return args if converted[1] is index else (args[0], stand_ins(converted[1]))

    def past_the_end(
        self,
        node: torch.fx.Node,
        env: Mapping[torch.fx.Node, Any],
        module: Any,
        layer: str,
        kind: str,
        where: str = "",
    ) -> Finding | None:
        """The finding of ``node`` when an index of known data points outside what it reads or writes
        (:func:`~torchsurgeon.bounds.index_past`: ``x[index]``, ``index_select``, ``gather``, ``F.embedding`` …,
        an ``nn.Embedding`` ``module``), as the real forward raises; None otherwise (also for the forms it does
        not check).  ``where`` is the finding's (:class:`~torchsurgeon.records.Finding`)."""
        found: Past | None = None
        rows = module.num_embeddings if isinstance(module, nn.Embedding) else None
        if node.op == "call_function" and node.target is F.embedding and len(node.args) >= 2:
            weight = env.get(node.args[1]) if isinstance(node.args[1], torch.fx.Node) else None
            rows = int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None
        ids = node.args[0] if node.args else None
        counted = self.ranges.get(ids) if isinstance(ids, torch.fx.Node) else None
        if rows is not None and counted is not None and counted[1] >= rows:  # the top: an input without padding
            top = counted[1]
            fix = (
                f"the positions are counted from the input (a cumsum of a mask of its tokens) and reach {top} when "
                f"it holds no padding: a real forward raises IndexError (index out of range in self) — give fewer "
                "tokens, as many as the model was built for"
            )
            return Finding(layer, kind, COUNTED, f"< {rows}", top, fix, where)
        if isinstance(module, nn.Embedding) and node.args:
            found = ids_past(self.values.get(ids) if isinstance(ids, torch.fx.Node) else None, module.num_embeddings)
        elif node.op in ("call_function", "call_method"):
            fn = node.target if node.op == "call_function" else getattr(torch.Tensor, str(node.target), None)
            if checked(fn):
                args, kwargs = self._arguments((node.args, node.kwargs), env, partial=True)
                found = index_past(fn, args, kwargs)
        if found is None:
            return None
        fix = (
            f"a real forward raises {found.error.__name__} ({found.message}): the indices come from the input's "
            f"size (positions, relative distances) and only {found.size} fit — give an input the model was built for"
        )
        return Finding(layer, kind, "index", f"< {found.size}", found.position, fix, where)

    def _arguments(self, args: Any, env: Mapping[torch.fx.Node, Any], partial: bool = False) -> Any:
        """``args`` with each node's known data, else its value; None when a tensor input has no known data
        (``partial``: its ``meta`` value then stands)."""
        values, unknown = self.values, False

        def value(a: torch.fx.Node) -> Any:
            nonlocal unknown
            if a in values:
                return values[a]
            v = env[a]
            parts = v if type(v) in (tuple, list) else (v,)
            if any(isinstance(t, torch.Tensor) for t in parts):
                unknown = True
            return v

        mapped = torch.fx.node.map_arg(args, value)
        return None if unknown and not partial else mapped
