"""Which axes of a model input a tensor is made of, followed through permutes and reshapes: a stem reading a
video's frames merged into the batch reads the input's channels as they are, and its fix is a fold.

Shape propagation (:mod:`torchsurgeon.shapes`) follows the nodes that may move an input's axes
(:func:`moves_axes`); a layer reading the input with its axes moved but its channels kept
(:func:`keeps_channels`) is told the fold, with the input the model takes now (:func:`fold_input`); so is a layer
reading one of several inputs (:func:`fold_several`), which adapt_input_channels cannot guess.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
from torch import nn

from .arguments import ExampleInputs, tensor_inputs
from .copies import torch_or_python
from .errors import TorchSurgeonError
from .fxbookkeeping import reads_metadata
from .resize import call_name, guessed_input, hands_on_channels
from .shapespec import TypedShape, written_inputs
from .trace import trace

if TYPE_CHECKING:  # _steps imports this module
    from ._steps import Step

__all__ = (
    "JOINING",
    "FollowedAxes",
    "InputAxes",
    "einops_name",
    "einops_pattern",
    "fold_input",
    "fold_inputs",
    "fold_several",
    "joins_parts",
    "keeps_channels",
    "moved_axes",
    "moves_axes",
)


InputAxes = tuple[tuple[int, ...], ...]
"""For each dim of a tensor made from a model input by moving its axes, the input's axes it is made of, in order."""

_PERMUTING = frozenset({"permute", "transpose", "movedim", "moveaxis", "swapaxes", "swapdims", "t"})
_RESHAPING = frozenset({"view", "reshape", "flatten"})


def moves_axes(op: str, target: Any, module: nn.Module | None) -> bool:
    """Whether a graph node may hand a model input on with its axes moved or merged: a permute, transpose,
    view, reshape or flatten, einops' ``rearrange`` (torchgeo's ChangeStar merges its frames into the batch with
    it), or an index (``x[:, 0]``: a Siamese model's first frame, torchgeo's FCSiamDiff) (:func:`moved_axes` says,
    for a given input, whether it does).

    Examples
    --------
    >>> from torch import nn
    >>> moves_axes("call_method", "reshape", None), moves_axes("call_module", "f", nn.Flatten())
    (True, True)
    >>> moves_axes("call_method", "sum", None)
    False
    """
    if op == "call_module":
        return isinstance(module, nn.Flatten) or einops_pattern(op, target, module, (), {}) is not None
    if op == "call_function" and einops_name(target) == "rearrange":
        return True
    if op == "call_function" and not torch_or_python(target):
        return False
    if op == "call_function" and target is operator.getitem:
        return True
    name = call_name(op, target)
    return name in _PERMUTING or name in _RESHAPING


JOINING = frozenset({torch.cat, torch.concat, torch.concatenate})
"""The functions that join tensors (``torch.cat([x, state], 1)``)."""


def joins_parts(op: str, target: Any, first: Any) -> bool:
    """Whether a graph node joins a list of tensors (``torch.cat([x, state], 1)``): one of them may be the input, its
    channels joined with others (:meth:`FollowedAxes.follow`).

    Examples
    --------
    >>> joins_parts("call_function", torch.cat, []), joins_parts("call_function", torch.add, [])
    (True, False)
    """
    return op == "call_function" and target in JOINING and isinstance(first, (list, tuple))


def moved_axes(
    op: str,
    target: Any,
    module: nn.Module | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    axes: InputAxes,
    out: torch.Tensor,
) -> InputAxes | None:
    """The input axes of ``out``, given by a node (:func:`moves_axes` or :func:`hands_on_channels`) on ``args``,
    whose first is a tensor of input axes ``axes``; None when a dim of ``out`` is no whole input axis (a split,
    a new dim) and is not the batch merged with the dims after it.

    A reshape is followed when it merges adjacent dims into one and keeps the others as they are: a video's frames
    into the batch (``(N, T, C, H, W)`` to ``(N * T, C, H, W)``), a pair of images into one's channels
    (``x.flatten(1, 2)``: ``(N, 2 * C, H, W)``).

    Examples
    --------
    >>> import torch
    >>> x = torch.empty(1, 2, 3, 8, 8, device="meta")
    >>> identity = ((0,), (1,), (2,), (3,), (4,))
    >>> moved_axes("call_method", "reshape", None, (x, 2, 3, 8, 8), {}, identity, x.reshape(2, 3, 8, 8))
    ((0, 1), (2,), (3,), (4,))
    >>> moved_axes("call_method", "permute", None, (x, 0, 2, 1, 3, 4), {}, identity, x.permute(0, 2, 1, 3, 4))
    ((0,), (2,), (1,), (3,), (4,))
    >>> moved_axes("call_method", "view", None, (x, 1, 6, 8, 8), {}, identity, x.view(1, 6, 8, 8))
    ((0,), (1, 2), (3,), (4,))
    >>> moved_axes("call_method", "view", None, (x, 1, 2, 3, 4, 16), {}, identity, x.view(1, 2, 3, 4, 16)) is None
    True
    """
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dim() != len(axes):
        return None
    if hands_on_channels(op, target, module):
        return axes if out.dim() == x.dim() else None
    name = call_name(op, target)
    if name in _PERMUTING:  # which dim goes where: the same call on a tensor whose dims all differ in size
        probe = torch.empty(tuple(range(2, 2 + x.dim())), device="meta")
        try:
            moved = (
                getattr(probe, name)(*args[1:], **kwargs) if op == "call_method" else target(probe, *args[1:], **kwargs)
            )
        except Exception:
            return None
        return tuple(axes[size - 2] for size in moved.shape)
    if op == "call_function" and target is operator.getitem:
        return _indexed_axes(args[1] if len(args) > 1 else (), axes, out)
    pattern = einops_pattern(op, target, module, args, kwargs)
    if pattern is not None:
        return _rearranged_axes(pattern, axes, out)
    if name in _RESHAPING or isinstance(module, nn.Flatten):
        before, after = tuple(x.shape), tuple(out.shape)
        k = len(before) - len(after)  # how many dims merged away
        for i in range(len(after) if k >= 0 else 0):  # dims i .. i + k of the input merged into dim i
            if before[:i] == after[:i] and before[i + k + 1 :] == after[i + 1 :]:
                if after[i] == math.prod(before[i : i + k + 1]):
                    return (*axes[:i], tuple(a for dim in axes[i : i + k + 1] for a in dim), *axes[i + k + 1 :])
    return None


def einops_name(target: Any) -> str:
    """The name of einops' function ``target`` is (``"rearrange"``); "" for any other.

    Examples
    --------
    >>> import einops, torch
    >>> einops_name(einops.rearrange), einops_name(torch.reshape)
    ('rearrange', '')
    """
    module = str(getattr(target, "__module__", None) or "")
    return str(getattr(target, "__name__", "")) if module.split(".")[0] == "einops" else ""


def einops_pattern(
    op: str, target: Any, module: nn.Module | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> str | None:
    """The pattern of an einops ``rearrange`` call (the function, ``args`` its arguments) or ``Rearrange`` layer
    (``module``); None for any other node."""
    if op == "call_module":
        kind = type(module)
        is_layer = kind.__name__ == "Rearrange" and kind.__module__.split(".")[0] == "einops"
        pattern = getattr(module, "pattern", None) if is_layer else None
    elif op == "call_function" and einops_name(target) == "rearrange":
        pattern = args[1] if len(args) > 1 else kwargs.get("pattern")
    else:
        return None
    return pattern if isinstance(pattern, str) else None


_TOKEN = re.compile(r"\([^()]*\)|[^\s()]+")


def _rearranged_axes(pattern: str, axes: InputAxes, out: torch.Tensor) -> InputAxes | None:
    """The input axes of ``out``, made by einops' ``rearrange`` with ``pattern`` from a tensor of input axes
    ``axes``; None when its left side splits a dim (``(h p)``) or its right side makes a new one (``1``, ``()``).

    Examples
    --------
    >>> import torch
    >>> identity = ((0,), (1,), (2,), (3,), (4,))
    >>> out = torch.empty(2, 3, 8, 8, device="meta")
    >>> _rearranged_axes("b t c h w -> (b t) c h w", identity, out)
    ((0, 1), (2,), (3,), (4,))
    >>> _rearranged_axes("b t ... -> (b t) ...", identity, out)
    ((0, 1), (2,), (3,), (4,))
    >>> _rearranged_axes("b c (h p) w -> b (c p) h w", identity[:4], out) is None
    True
    """
    left, arrow, right = pattern.partition("->")
    names = left.split()
    if not arrow or not all(n.isidentifier() or n == "..." for n in names) or names.count("...") > 1:
        return None
    spread = len(axes) - len(names) + 1  # the dims "..." stands for
    if spread < 0 or ("..." not in names and spread != 1):
        return None
    held: dict[str, InputAxes] = {}
    i = 0
    for name in names:
        width = spread if name == "..." else 1
        held[name] = axes[i : i + width]
        i += width
    made: list[tuple[int, ...]] = []
    for token in _TOKEN.findall(right):
        group = token.startswith("(")
        members = token.strip("()").split()
        if any(m not in held for m in members) or (group and not members):
            return None  # a new dim: a literal 1, ()
        merged = [dim for m in members for dim in held[m]]
        if group:
            made.append(tuple(a for dim in merged for a in dim))
        else:
            made += merged
    return tuple(made) if len(made) == out.dim() else None


def _indexed_axes(index: Any, axes: InputAxes, out: torch.Tensor) -> InputAxes | None:
    """The input axes of ``out``, a tensor of input axes ``axes`` indexed with ``index``: a dim given an int is
    gone (``x[:, 0]``, a frame), one given ``:`` or ``...`` kept; None for any other index (a slice of a dim, a
    tensor, a new dim).

    Examples
    --------
    >>> import torch
    >>> identity = ((0,), (1,), (2,), (3,), (4,))
    >>> _indexed_axes((slice(None), 0), identity, torch.empty(2, 3, 8, 8, device="meta"))
    ((0,), (2,), (3,), (4,))
    >>> _indexed_axes((slice(None), slice(0, 1)), identity, torch.empty(2, 1, 3, 8, 8, device="meta")) is None
    True
    """
    index = index if isinstance(index, tuple) else (index,)
    ellipses = [i for i, ix in enumerate(index) if ix is Ellipsis]
    if len(ellipses) > 1:
        return None
    if ellipses:
        at = ellipses[0]
        index = (*index[:at], *(slice(None),) * (len(axes) - len(index) + 1), *index[at + 1 :])
    if len(index) > len(axes):
        return None
    index = (*index, *(slice(None),) * (len(axes) - len(index)))
    kept: list[tuple[int, ...]] = []
    for ix, dim in zip(index, axes):
        if type(ix) is slice and ix == slice(None):
            kept.append(dim)
        elif type(ix) is not int:
            return None
    return tuple(kept) if len(kept) == out.dim() else None


def keeps_channels(axes: InputAxes) -> bool:
    """Whether a tensor of input axes ``axes`` is the input with its axes moved, not mixed: its first dim holds
    the batch (maybe with frames merged into it), each other dim is one input axis (not the batch).  A layer
    reading it reads the input's channels as they are: its fix is a fold of that layer.

    Examples
    --------
    >>> keeps_channels(((0, 1), (2,), (3,), (4,))), keeps_channels(((0,), (1, 2), (3,)))
    (True, False)
    """
    return bool(axes) and 0 in axes[0] and all(len(a) == 1 and a[0] != 0 for a in axes[1:])


_MADE = frozenset(
    {"zeros", "ones", "empty", "full", "arange", "linspace", "zeros_like", "ones_like", "empty_like", "full_like"}
    | {"new_zeros", "new_ones", "new_empty", "new_full"}
)
"""Calls whose values are made, not computed from the values of what they are given (only its size)."""


def _input_values(node: torch.fx.Node, steps: Mapping[torch.fx.Node, Step], limit: int = 64) -> bool:
    """Whether ``node``'s value may be computed from a model input's values with no layer of weights between (the
    input's mean, an edge filter of buffers): joined with the input, no fold keeps its channels.  A value computed by
    a layer with weights (a recurrent state, features), made (zeros of the input's size) or read from the model is
    not; past ``limit`` nodes, undecided: it may be."""
    todo, seen = [node], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "placeholder" or len(seen) > limit:
            return True
        step = steps.get(current)
        module = step.module if step is not None else None
        weighted = module is not None and next(module.parameters(), None) is not None
        made = reads_metadata(current) or call_name(current.op, current.target) in _MADE
        if current.op == "get_attr" or weighted or made:
            continue
        todo.extend(current.all_input_nodes)
    return False


def _stacked(axes: InputAxes) -> bool:
    """Whether dim 1 of a tensor of input axes ``axes`` merges input dims in a row, those before the input's last
    ones, which each of its other dims is in order: images stacked into channels, read by a convolution.

    Examples
    --------
    >>> _stacked(((0,), (1, 2), (3,), (4,))), _stacked(((0,), (1, 2, 3)))  # a pair stacked; an image flattened
    (True, False)
    """
    if len(axes) < 3 or len(axes[1]) < 2:
        return False
    merged = axes[1]
    after = range(merged[0], merged[0] + len(merged) + len(axes) - 2)
    return tuple(merged) + tuple(a[0] if len(a) == 1 else -1 for a in axes[2:]) == tuple(after)


class FollowedAxes:
    """For each node that moves a model input's axes (a :attr:`~torchsurgeon._steps.Step.moves` node), the input its
    value is made of and which of that input's axes its dims are; None where it is not made of whole axes.  For each
    input read with its channels kept (:meth:`moved_input`), the axis read as its channels, and its sizes."""

    def __init__(self) -> None:
        self.axes: dict[torch.fx.Node, tuple[str, InputAxes] | None] = {}
        self.channels: dict[str, int] = {}  # input -> its axis a layer reads as channels (a video's frames merged)
        self.sizes: dict[str, tuple[int, ...]] = {}  # input -> its shape
        self.joined: dict[torch.fx.Node, int] = {}  # node -> the channels (dim 1) joined to the input's (torch.cat)

    def follow(
        self,
        n: torch.fx.Node,
        step: Step,
        value: Any,
        env: Mapping[torch.fx.Node, Any],
        steps: Mapping[torch.fx.Node, Step],
    ) -> None:
        """Record what ``n`` gave, ``value``, from the values ``env`` of the nodes before it (:func:`moved_axes`); for
        a join of the input with other tensors along dim 1 (``torch.cat([x, state], 1)``), the input's axes and the
        channels joined to them."""
        self.axes[n] = None
        source = n.args[0]
        if not isinstance(source, torch.fx.Node):
            self._join(n, source, value, env, steps)
            return
        x = env.get(source)
        if not isinstance(x, torch.Tensor) or not isinstance(value, torch.Tensor):
            return
        if steps[source].moves:
            followed = self.axes.get(source)
            if followed is None:
                return
            name, axes = followed
        else:  # the input, or what hands it on as it is (padding, conversions): its own axes
            first: Any = source
            while isinstance(first, torch.fx.Node) and first.op != "placeholder":
                first = first.args[0] if first.args else None
            if not isinstance(first, torch.fx.Node):
                return
            name, axes = self._own_axes(first, x)
        args, kwargs = step.fetch(env)
        moved = moved_axes(n.op, n.target, step.module, args, kwargs, axes, value)
        self.axes[n] = (name, moved) if moved is not None else None
        if source in self.joined and moved is not None and moved[:2] == axes[:2]:  # dim 1 handed on (padded)
            self.joined[n] = self.joined[source]

    def _own_axes(self, placeholder: torch.fx.Node, x: torch.Tensor) -> tuple[str, InputAxes]:
        """The input ``placeholder`` is, and its own axes (``x``, its value, is as it is); its sizes noted."""
        name = str(placeholder.target).lstrip("*")
        self.sizes[name] = tuple(x.shape)
        return name, tuple((d,) for d in range(x.dim()))

    def _join(
        self,
        n: torch.fx.Node,
        parts: Any,
        value: Any,
        env: Mapping[torch.fx.Node, Any],
        steps: Mapping[torch.fx.Node, Step],
    ) -> None:
        """``n`` joins ``parts`` (:func:`joins_parts`): where one of them is the input, its axes moved but its
        channels kept, and the join is along dim 1, the others' channels (what a layer reading it gets beside the
        input's)."""
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        if not isinstance(value, torch.Tensor) or type(dim) is not int or dim % value.dim() != 1:
            return
        found: list[tuple[torch.fx.Node, tuple[str, InputAxes]]] = []
        for part in parts:
            if not isinstance(part, torch.fx.Node) or not isinstance(x := env.get(part), torch.Tensor):
                continue
            if part.op == "placeholder":
                found.append((part, self._own_axes(part, x)))
            elif steps[part].moves and (followed := self.axes.get(part)) is not None and part not in self.joined:
                found.append((part, followed))
        if len(found) == 1 and keeps_channels(found[0][1][1]):
            part, followed = found[0]
            others = [p for p in parts if isinstance(p, torch.fx.Node) and p is not part]
            if not any(_input_values(p, steps) for p in others):  # x with x.mean(1): no fold keeps that exact
                self.axes[n] = followed
                self.joined[n] = int(value.shape[1]) - int(env[part].shape[1])

    def moved_input(self, step: Step) -> tuple[str, int, int, int] | None:
        """The input the node of ``step`` reads with its axes moved but its channels kept (a video's frames merged
        into the batch, :func:`keeps_channels`), its axis the node's dim 1 is, 1 and the channels joined to the
        input's (``torch.cat([x, state], 1)``: a ConvLSTM cell's state); or, where the node's dim 1 is that axis
        merged with others (ChangeViT stacks an image pair's channels, ``b t c h w -> b (t c) h w``, after its
        encoder read each image's), that axis, how many groups of channels the merge makes (2) and 0."""
        if not step.reads_moved:
            return None
        for a in step.inputs:
            followed = self.axes.get(a)
            if followed is None or len(followed[1]) < 2:
                continue
            name, axes = followed
            if keeps_channels(axes):
                self.channels.setdefault(name, axes[1][0])
                return name, axes[1][0], 1, self.joined.get(a, 0)
            merged, axis = axes[1], self.channels.get(name)
            if axis is None and _stacked(axes):  # no layer reads the images one by one (early fusion)
                axis = merged[-1]  # each one's colours: ``b t c h w -> b (t c) h w`` (readers.stacked_colours)
            if axis in merged and keeps_channels((axes[0], (axis,), *axes[2:])) and name in self.sizes:
                return name, axis, math.prod(self.sizes[name][d] for d in merged if d != axis), 0
        return None


def fold_input(inputs: Mapping[str, Any], name: str, axis: int) -> Callable[[int], str] | None:
    """The ``input=`` of a fold of a layer reading input ``name`` with its axes moved, dim 1 being ``axis``: the
    ``inputs`` given, with the count the layer expects on that axis (Python; None unless all given as shapes).

    Examples
    --------
    >>> fold_input({"pixel_values": (2, 1, 32, 32)}, "pixel_values", 2)(3)
    '(2, 3, 32, 32)'
    """
    if type(inputs.get(name)) is not tuple:
        return None

    def given(expected: int) -> str:
        shape = list(inputs[name])
        shape[axis - 1] = expected  # per-sample: the batch is axis 0
        return repr(tuple(shape)) if len(inputs) == 1 else written_inputs({**inputs, name: tuple(shape)})

    return given


def _read_input(node: torch.fx.Node) -> str | None:
    """The model input ``node`` reads, directly or through calls that hand it on as it is (``.to(dtype)``)."""
    todo, seen = list(node.all_input_nodes), set()
    while todo:
        a = todo.pop()
        if a in seen:
            continue
        seen.add(a)
        if a.op == "placeholder":
            return str(a.target).lstrip("*")
        if a.op != "call_module" and hands_on_channels(a.op, a.target, None):
            todo.extend(a.all_input_nodes)
    return None


def _with_channels(value: Any, count: int, last: bool) -> Any:
    """An input as given (a per-sample shape, a typed shape or a batched tensor) with ``count`` channels: dim 1 of
    the batched tensor, or the last dim (``last``: a Linear reads it)."""
    if isinstance(value, torch.Tensor):
        shape = list(value.shape)
        shape[-1 if last else 1] = count
        return torch.empty(shape, dtype=value.dtype, device="meta")
    dims = list(value.shape if isinstance(value, TypedShape) else value)
    dims[-1 if last else 0] = count
    return TypedShape(tuple(dims), value.dtype) if isinstance(value, TypedShape) else tuple(dims)


def fold_several(
    inputs: Mapping[str, Any], node: torch.fx.Node, layer: nn.Module | None
) -> Callable[[int], str] | None:
    """The ``input=`` of the fold of ``layer`` (``node``'s) reading one of several inputs as it is: every input as
    given (:func:`~torchsurgeon.shapespec.written_inputs`), the one it reads with the count it expects on its
    channel axis (dim 1; the last for a ``Linear``: Flux's packed latents).  adapt_input_channels guesses one image,
    which a model of several inputs (a diffusion UNet's latents, timestep and text) does not take.  None for one
    input; the input read is looked for when the fix is written.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> g = torch.fx.Graph()
    >>> x, t = g.placeholder("x"), g.placeholder("t")
    >>> stem = g.call_module("stem", (g.call_method("to", (x, torch.float32)),))
    >>> fold_several({"x": (6, 8, 8), "t": torch.tensor([1])}, stem, nn.Conv2d(3, 4, 3))(3)
    "{'x': (3, 8, 8), 't': torch.zeros((1,), dtype=torch.int64)}"
    """
    if len(inputs) < 2:
        return None

    def given(expected: int) -> str:
        name = _read_input(node)
        if name is None or name not in inputs:
            return ""
        return written_inputs({**inputs, name: _with_channels(inputs[name], expected, isinstance(layer, nn.Linear))})

    return given


def fold_inputs(
    shape_specific: Sequence[str], inputs: Mapping[str, Any], model: nn.Module
) -> Callable[[torch.fx.Node, nn.Module | None, tuple[str, int, int, int] | None], Callable[[int], str] | None]:
    """For one propagation of a graph (``shape_specific``: what its trace answered about the input's shapes) at
    ``inputs``: the ``input=`` of the fold of a layer reading a model input, given its node, the layer and
    ``moved`` (the input it reads with its axes moved, the axis dim 1 is, the groups of channels it makes and the
    channels joined to them, :meth:`FollowedAxes.moved_input`; :func:`fold_input`): else the one
    input at its size for a model traced for one shape (:func:`fold_input_at_size`, decided once), or, for a model
    of several inputs that traced only for their shapes, all of them (:func:`fold_several`): adapt_input_channels
    traces a model without shapes, or else on one guessed image.  None where it needs no ``input=``.

    Examples
    --------
    >>> from torch import nn
    >>> of = fold_inputs((), {"x": (1, 2, 8, 8)}, nn.Conv3d(2, 4, 3))
    >>> of(None, None, ("x", 2, 1, 0))(3)  # frames merged into the batch
    '(1, 3, 8, 8)'
    """
    at_size = fold_input_at_size(shape_specific, inputs, model)

    def of(
        node: torch.fx.Node, layer: nn.Module | None, moved: tuple[str, int, int, int] | None
    ) -> Callable[[int], str] | None:
        if moved is not None:
            return fold_input(inputs, moved[0], moved[1])
        if at_size is not None or not shape_specific:
            return at_size
        return fold_several(inputs, node, layer)

    return of


def fold_input_at_size(shape_specific: Any, inputs: Mapping[str, Any], model: nn.Module) -> Callable[[int], str] | None:
    """The ``input=`` of the fold of a layer reading the input as it is, when the model traced only for inputs of
    the given shape (``shape_specific``: a size check in its forward): without one, the fold runs on its own guessed
    image (:func:`~torchsurgeon.resize.guessed_input`), which such a model may refuse, so the fix names the input
    given, with the channels the layer expects; "" where the model traces on the guess, None when the graph holds
    for any input or the input is not one shape.

    Examples
    --------
    >>> from torch import nn
    >>> fold_input_at_size((), {"x": (1, 32, 32)}, nn.Conv2d(3, 8, 3)) is None  # the graph holds for any input
    True
    """
    if not shape_specific or len(inputs) != 1:
        return None
    given = fold_input(inputs, next(iter(inputs)), 1)
    if given is None:
        return None
    guess = guessed_input(model)
    runs: list[bool] = []  # whether the model traces on the guess: tried once, when a fix asks

    def at_size(expected: int) -> str:
        if guess is None or repr(guess) == given(expected):
            return "" if guess is not None else given(expected)
        if not runs:
            try:
                trace(model, inputs=tensor_inputs(guess), example_inputs=ExampleInputs(model, guess, 1))
                runs.append(True)
            except TorchSurgeonError:  # refused (its size check): the fold needs the input analysed
                runs.append(False)
        return "" if runs[0] else given(expected)

    return at_size
