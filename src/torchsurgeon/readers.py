"""Which layers read the model input, found by running the model once on ``meta``.

:func:`~torchsurgeon.graphreaders.graph_readers` follows the traced graph,
which cannot look inside an opaque leaf (Hugging Face's ViT embeddings,
MONAI's SwinUNETR) or trace a model at all without an input shape (smp's
FPN); :func:`input_readers` runs one forward of a ``meta`` copy under a
``TorchFunctionMode`` that follows the data: every floating-point input is *raw*; an op on raw
tensors that uses no parameter gives raw tensors; the first op that meets
raw data with a parameter (or a tensor computed from parameters only, such
as a weight-normalised weight) names the module holding that parameter.
Integer inputs (token ids) are not followed: an embedding lookup reads no
channels.

The model itself is never run or changed: the copy has no weights and none
of the user's hooks that only look.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

from .arguments import ExampleInputs, InputPaths
from .copies import _zeros_like, cannot_run_on_meta, detached_copy
from .errors import SurgeryError
from .frontend import bind_inputs
from .graphreaders import distinct_images
from .inputaxes import JOINING
from .records import Finding, ParamChange, ParamReport
from .resize import guessed_input, resized_copy
from .rules.on_meta import ruled_meta
from .shapes import meta_copy
from .shapespec import EXAMPLE_TOKENS, InputSpec

_MADE_UP_LIMIT = 1 << 24
"""How many values the tensors of an op that needs them may hold for :meth:`_FollowInput._made_up` to run it on
zeros (a detector's scores for every anchor: about 10**5)."""

_READERS_ZERO_RUN_LIMIT = 1 << 28
"""How many weights and input values a model may have to be run on zeros on the CPU when a ``meta`` copy cannot
answer its forward (a detector's ``torch.nonzero`` and ``nms``): about 1 GiB in float32, the size of the copy
:func:`~torchsurgeon.adapt_input_channels` makes anyway; 8 × ``copies._ZERO_RUN_LIMIT`` (an opaque layer's run
during an analysis), which refused torchvision's ResNet-50 detectors (34–59 M)."""

__all__ = (
    "colour_axis",
    "guessed_input",
    "image_input",
    "image_shape",
    "image_spec",
    "images_read_by_convolutions",
    "input_readers",
    "one_image",
    "recoloured",
    "refitted_note",
    "refused_guess_hint",
    "several_images",
    "stacked_colours",
    "unmatched_channels",
)


def unmatched_channels(
    model: nn.Module, names: Sequence[str], input: InputSpec, joins: Mapping[str, int] | None = None
) -> dict[str, tuple[str, int | None, int]]:
    """The layers among ``names`` whose input width (``in_channels``, ``in_features``) is no size of the floating-point
    input: the input reaches them with its channels moved (a space-to-depth stem makes 48 channels of 3); and those
    of ``joins`` (:func:`input_readers`), which read the input joined with other channels.

    For each, why, its width per channel of the input (on its :func:`colour_axis`: the first dim, else the one
    the other readers take as channels) when that divides it: 16 for the space-to-depth stem; and the channels that
    are not the input's: the layer fits ``per_channel * C + other`` channels for a ``C``-channel input.  A width of
    1 is taken as the input given a channel dimension (an audio model's ``x[:, None]``).

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 8, 3))
    >>> unmatched_channels(model, ["1"], (3, 32, 32))
    {'1': ('something that moves its channels (the input (3, 32, 32) has no size 12)', 4, 0)}
    >>> unmatched_channels(nn.Sequential(nn.Conv2d(3, 8, 3)), ["0"], (3, 32, 32))
    {}
    """
    values = [t for t in ExampleInputs(model, input, 1).values() if t.is_floating_point()]
    sizes = {int(d) for t in values for d in t.shape[1:]}
    shapes = ", ".join(str(tuple(t.shape[1:])) for t in values)
    axis = colour_axis(model, names, tuple(values[0].shape[1:])) if values else 0
    channels = int(values[0].shape[1 + axis]) if values and values[0].dim() > 1 + axis else 0
    out: dict[str, tuple[str, int | None, int]] = {}
    for name in names:
        layer = model.get_submodule(name)
        width = getattr(layer, "in_channels", getattr(layer, "in_features", None))
        if not isinstance(width, int):
            continue
        if joins and name in joins:
            other = joins[name]
            own = width - other
            per_channel = own // channels if channels and own > 0 and own % channels == 0 else None
            why = f"a concatenation with {other} other channels ({other} + the input's {own} = {width})"
            out[name] = (why, per_channel, other)
        elif width != 1 and width not in sizes:
            per_channel = width // channels if channels and width % channels == 0 else None
            why = f"something that moves its channels (the input {shapes} has no size {width})"
            out[name] = (why, per_channel, 0)
    return out


class _FollowInput(TorchFunctionMode):
    """Tags the tensors computed from the raw input, and records which parameters first meet them."""

    def __init__(self, owners: Mapping[int, str], raw: list[torch.Tensor]) -> None:
        super().__init__()
        self.owners = dict(owners)  # id of a parameter -> module
        self.raw = {id(t): t for t in raw}  # values keep the tensors alive, so ids stay unique
        self.computed: dict[int, tuple[str, weakref.ref[torch.Tensor]]] = {}  # from parameters only: module, tensor
        self.derived: dict[int, torch.Tensor] = {}  # computed from the input with parameters: neither raw nor theirs
        self.joined: dict[int, int] = {}  # raw tensors the input joined others in (torch.cat): their channels
        self.found: list[str] = []
        self.joins: dict[str, int] = {}  # readers of such a tensor: the channels of the others it holds
        self.open: list[tuple[str, Any]] = []  # the Linear and Conv layers running, innermost last, with their input
        self.made_up: Exception | None = None  # the first failure on values answered with zeros (_made_up)
        self.past = False  # the run is past the input (_Reach): a failure on values ends it, nothing is made up

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        raw = any(id(t) in self.raw for t in tensors)
        try:
            out = func(*args, **kwargs)
        except Exception as exc:
            out = self._made_up(func, args, kwargs, tensors, raw, exc)
        if not tensors:
            return out
        owner = next((o for o in map(self._owner, tensors) if o is not None), None)
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if raw and owner is not None:
            if owner not in self.found:
                self.found.append(owner)
            other = next((self.joined[id(t)] for t in tensors if id(t) in self.joined), None)
            if other is not None:
                self.joins.setdefault(owner, other)
            self.derived.update((id(t), t) for t in outputs)
        elif raw:
            self.raw.update((id(t), t) for t in outputs)
            other = self._joined(func, args, kwargs, tensors, out)
            if other is not None:
                self.joined.update((id(t), other) for t in outputs if t.dim() > 1)
        elif any(id(t) in self.derived for t in tensors):  # features (a batch norm after a stem): not its weights'
            self.derived.update((id(t), t) for t in outputs)
        elif owner is not None:
            self.computed.update((id(t), (owner, weakref.ref(t))) for t in outputs)
        return out

    def _made_up(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tensors: list[torch.Tensor],
        raw: bool,
        exc: Exception,
    ) -> Any:
        """What ``func`` gives on zeros, for an op on ``meta`` tensors that needs their values (a detector's
        ``nonzero`` on its scores), none of them the input's (whose values a zero run would read); tensors come
        back on ``meta``.  The first such failure is kept in :attr:`made_up`: a run on values made up is answered
        only once past the input (:class:`_Reach`, which then stops it).  Otherwise ``exc`` is raised."""
        if (
            raw
            or self.past
            or not tensors
            or not all(t.is_meta for t in tensors)
            or not cannot_run_on_meta(exc)
            or sum(t.numel() for t in tensors) > _MADE_UP_LIMIT
        ):
            raise exc
        zeros = {id(t): _zeros_like(t) for t in tensors}
        metas = {id(z): t for t, z in zip(tensors, zeros.values(), strict=True)}
        given = tree_map(lambda v: zeros[id(v)] if isinstance(v, torch.Tensor) else v, (args, kwargs))
        try:
            out = func(*given[0], **given[1])
        except Exception:
            raise exc from None
        if self.made_up is None:
            self.made_up = exc
        return tree_map(  # an op in place gives its own tensor back
            lambda v: metas.get(id(v), torch.empty_like(v, device="meta")) if isinstance(v, torch.Tensor) else v, out
        )

    def _owner(self, t: torch.Tensor) -> str | None:
        """The module whose parameters ``t`` is, or is computed from alone (a weight-normalised weight), else None.
        A computed tensor is held weakly: one that is gone cannot meet the input, and its id may be another's."""
        owner = self.owners.get(id(t))
        if owner is None and id(t) in self.computed:
            owner, ref = self.computed[id(t)]
            return owner if ref() is t else None
        return owner

    def weights_held(self) -> bool:
        """Whether a tensor computed from parameters alone is still held by the model's code (a positional
        embedding its caller may add to the input later)."""
        return any(ref() is not None for _, ref in self.computed.values())

    def _joined(
        self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], tensors: list[torch.Tensor], out: Any
    ) -> int | None:
        """For raw outputs of ``func``: the channels (dim 1) that are not the input's, when the input joins other
        tensors along its channels (``torch.cat([pixels, features], 1)``: ViTMatte's fusion) or when it is such a
        join handed on with as many channels (padded, resized); None otherwise."""
        if func in JOINING:
            parts = args[0] if args else kwargs.get("tensors", ())
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if not isinstance(parts, (list, tuple)) or not parts or not isinstance(dim, int):
                return None
            if not all(isinstance(t, torch.Tensor) and t.dim() > 1 for t in parts) or dim % parts[0].dim() != 1:
                return None
            others = [t for t in parts if id(t) not in self.raw or id(t) in self.joined]
            if not others:
                return None
            return sum(self.joined.get(id(t), int(t.shape[1])) for t in others)
        raw = [t for t in tensors if id(t) in self.raw]
        if len(raw) != 1 or id(raw[0]) not in self.joined:
            return None
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        kept = all(t.dim() > 1 and t.shape[1] == raw[0].shape[1] for t in outputs)
        return self.joined[id(raw[0])] if kept else None


class _PastTheInput(Exception):
    """Raised by :class:`_Reach` to stop a run where the input can reach no weights it has not reached yet."""


class _Reach:
    """Hooks on every module of the copy :func:`_follow` runs, which see where the run is *past the input*: it
    enters a part that takes nothing of the input unweighted in its arguments (:attr:`_FollowInput.raw`, searched
    in lists, dicts and objects' attributes: an ``ImageList``), holds every module with weights not entered yet,
    and runs inside no module with weights of its own (whose forward may still use them on the input it holds),
    while no tensor computed from weights alone is held (a positional embedding the caller adds to the input
    later).  No weights can meet the input for the first time after that, but for an input kept on a module's
    attribute or in a global, or a module that met features before meeting the input itself.  With ``stop``,
    the run stops there (:class:`_PastTheInput`)."""

    def __init__(self, copy_: nn.Module, tracker: _FollowInput, stop: bool) -> None:
        self.tracker, self.stop, self.passed = tracker, stop, False
        modules = list(copy_.modules())
        self.own = {id(m) for m in modules if any(p is not None for p in m._parameters.values())}
        self.pending = set(self.own)  # modules with weights of their own not entered yet
        self.inside = {id(m): frozenset(id(d) for d in m.modules() if id(d) in self.own) for m in modules}
        self.running: list[int] = []
        self.handles = [
            handle
            for m in modules
            for handle in (
                m.register_forward_pre_hook(self._enter, with_kwargs=True),
                m.register_forward_hook(self._leave, always_call=True),
            )
        ]

    def _enter(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self.passed:
            inside = self.inside[id(module)]
            self.passed = (
                len(self.pending) <= len(inside)
                and self.pending <= inside
                and not any(m in self.own for m in self.running)
                and not _holds((args, kwargs), self.tracker.raw)
                and not self.tracker.weights_held()
            )
            self.tracker.past = self.passed
        self.pending.discard(id(module))
        self.running.append(id(module))
        if self.passed and (self.stop or self.tracker.made_up is not None):
            raise _PastTheInput

    def _leave(self, *_: Any) -> None:
        if self.running:
            self.running.pop()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


_PLAIN = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size)


def _holds(value: Any, tensors: Mapping[int, torch.Tensor], depth: int = 0) -> bool:
    """Whether ``value`` holds one of ``tensors``, in containers and objects' attributes; a module, a function or
    anything nested deeper than 4 is taken as holding one (what it holds is not searched)."""
    if isinstance(value, torch.Tensor):
        return id(value) in tensors
    if isinstance(value, _PLAIN):
        return False
    if depth > 4 or isinstance(value, nn.Module) or callable(value):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds(v, tensors, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return any(_holds(v, tensors, depth + 1) for v in value.values())
    attributes = getattr(value, "__dict__", None)
    return attributes is None or _holds(list(attributes.values()), tensors, depth + 1)


def refused_guess_hint(
    guess: tuple[int, ...] | None, names: Sequence[str] = (), call: str = "paramcount(model, {input})"
) -> str:
    """The ``input=`` to ask of a model that refused its guessed image ``guess`` (:func:`guessed_input`), in the
    call the user made (``call``, its ``{input}`` where the input goes): its channels, at the sizes its own check
    asks for, never the guess itself; one such image for each of ``names`` when there are several (a forward of two
    images); for a model with no image guess (its first layer is no convolution), a text input or an image.

    Examples
    --------
    >>> refused_guess_hint((3, 224, 224), call="adapt_input_channels(model, 1, {input})")
    'adapt_input_channels(model, 1, input=(3, H, W)) at the sizes its message asks for (the input it takes now, \
with 3 channels)'
    >>> refused_guess_hint((3, 224, 224), ["image1", "image2"]).partition(" at")[0]
    "paramcount(model, input={'image1': (3, H, W), 'image2': (3, H, W)})"
    >>> refused_guess_hint(None, call="replace_head(model, 5, {input})")
    "e.g. replace_head(model, 5, input={'input_ids': (16,)}) or replace_head(model, 5, input=(3, 224, 224))"
    """
    if guess is None:
        text, image = f"input={{'input_ids': {EXAMPLE_TOKENS}}}", "input=(3, 224, 224)"
        return f"e.g. {call.format(input=text)} or {call.format(input=image)}"
    sizes = {3: "H, W", 4: "D, H, W"}.get(len(guess)) or ", ".join(f"S{i}" for i in range(1, len(guess)))
    one = f"({guess[0]}, {sizes})"
    given = "{" + ", ".join(f"{name!r}: {one}" for name in names) + "}" if len(names) > 1 else one
    channels = f"{guess[0]} channel{'s' * (guess[0] != 1)}"
    asked = "at the sizes its message asks for"
    return f"{call.format(input=f'input={given}')} {asked} (the input it takes now, with {channels})"


def input_readers(
    model: nn.Module,
    input: InputSpec,
    batch: int = 1,
    *,
    follow: str | None = None,
    joins: dict[str, int] | None = None,
    refitted: list[str] | None = None,
) -> list[str]:
    """Qualified names of the modules whose parameters first meet the floating-point input (of several, the
    :func:`image_input`: a UNet's ``timestep`` and ``encoder_hidden_states`` are not followed).

    Parameters
    ----------
    model : nn.Module
        Left untouched: a weightless ``meta`` copy is run (an op that needs the
        values of tensors computed from the input with weights, a detector's
        ``nonzero`` on its scores, is run on zeros alone, and the run stops once
        past the input); when its Python looks at the input's values, which
        ``meta`` cannot answer, and it is small, a CPU copy with zero weights is
        run on zero inputs, as :func:`torchsurgeon.copies.run_on_zeros` runs
        opaque leaves, stopped once past the input.
    input : shape, tuple of shapes, or mapping
        An input the model accepts as it is, as for :func:`torchsurgeon.paramcount`.
    batch : int
        Batch size prepended to every shape.
    follow : str, optional
        The input to follow, by name; by default the :func:`image_input`.
    joins : dict, optional
        Filled with, for each reader that meets the input joined with other
        tensors along its channels (ViTMatte's fusion convolution reads
        ``torch.cat([pixels, features], 1)``), how many of its channels the
        others give.
    refitted : list, optional
        Given, a Linear or Conv layer the input reaches only through the
        layers reading it, that does not take what reaches it (a head after
        a flatten, for another image size), is resized on the copy to fit,
        as a report's fix replaces it, and the run goes on; its name is
        appended.  Given with names (those resized for the model before an
        edit), only those are.  Not given, such a model does not run on the
        input.

    Raises
    ------
    SurgeryError
        When the model does not run on this input.

    Examples
    --------
    >>> from torch import nn
    >>> class TwoStems(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(8, 2, 1)
    ...     def forward(self, x):
    ...         x = x / 255
    ...         return self.head(torch.cat([self.a(x), self.b(x)], 1))
    >>> input_readers(TwoStems(), (3, 16, 16))
    ['a', 'b']
    """
    example = ExampleInputs(model, input, batch)
    values = dict(example)
    if not values:
        raise SurgeryError(
            f"{type(model).__name__}: input {input!r} does not fit forward's arguments — "
            "give an input the model accepts now, e.g. input=(3, 224, 224)"
        )
    try:
        return _follow(
            meta_copy(model).eval(), values, follow, example.paths, joins, refitted
        )  # eval: batch 1 must not trip training checks
    except Exception as exc:  # the model's own failure on this input
        failure: Exception = exc
    size = sum(t.numel() for t in itertools.chain(model.parameters(), model.buffers(), values.values()))
    on_values = cannot_run_on_meta(failure)
    if on_values and size <= _READERS_ZERO_RUN_LIMIT:  # Python looks at values: zeros on the CPU
        try:
            with torch.device("cpu"):
                zeros = {k: _zeros_like(v) for k, v in values.items()}
                copy_ = detached_copy(model, _zeros_like).eval()
                return _follow(copy_, zeros, follow, example.paths, joins, stop=True)
        except Exception as exc:
            failure, on_values = exc, False
    first = (str(failure).strip().splitlines() or [type(failure).__name__])[0]
    if on_values:  # not the input's fault: a weightless copy cannot answer the model's questions on values
        raise SurgeryError(
            f"{type(model).__name__} cannot be run to find the layers reading input {input!r}: its forward needs "
            f"tensor values ({first[:160]}), which a weightless meta copy does not have, and with {size:,} weights "
            f"and input values it is too large to run on zeros on the CPU (> {_READERS_ZERO_RUN_LIMIT:,}) — adapt a "
            "part of it that runs on meta (its backbone), then check the whole model on real data"
        ) from failure
    raise SurgeryError(
        f"{type(model).__name__} does not run on input {input!r} ({first}) — "
        "give an input the model accepts now, before the edit"
    ) from failure


def image_input(values: Mapping[str, torch.Tensor]) -> str | None:
    """The input whose channels :func:`input_readers` follows: the first floating-point one with channels (a
    dim besides the batch and them: ``sample`` of a diffusion UNet, not its ``timestep``; ``pixel_values``, not
    ``input_ids``), else the first floating-point one; None without any.

    Examples
    --------
    >>> meta = lambda *s: torch.empty(*s, device="meta")
    >>> image_input({"timestep": meta(1), "sample": meta(1, 4, 8, 8), "encoder_hidden_states": meta(1, 7, 32)})
    'sample'
    """
    floats = [name for name, t in values.items() if t.is_floating_point()]
    return next((name for name in floats if values[name].dim() >= 3), floats[0] if floats else None)


def _follow(
    copy_: nn.Module,
    values: Mapping[str, torch.Tensor],
    follow: str | None,
    paths: InputPaths,
    joins: dict[str, int] | None = None,
    refitted: list[str] | None = None,
    *,
    stop: bool = False,
) -> list[str]:
    """Run ``copy_`` once on ``values`` under :class:`_FollowInput`; the modules that first meet the input
    ``follow`` (by default the :func:`image_input`); ``joins`` gets :attr:`_FollowInput.joins`.  With ``refitted``,
    a layer after those that does not fit what reaches it is resized (:func:`_refit`) and the run made again.

    A run that fails on values (:func:`~torchsurgeon.copies.cannot_run_on_meta`: a detector's ``nonzero`` on
    ``meta``) after it is past the input (:class:`_Reach`) has found them all; with ``stop``, the run stops there
    (what fails after it, in code that meets no new weights, is not seen)."""
    allowed = tuple(refitted or ())
    for _ in range(_REFITS + 1):
        owners: dict[int, str] = {}
        for name, p in copy_.named_parameters(remove_duplicate=False):
            owners.setdefault(
                id(p),
                name.partition(".parametrizations.")[0] if ".parametrizations." in name else name.rpartition(".")[0],
            )
        image = follow if follow is not None else image_input(values)
        tracker = _FollowInput(owners, [values[image]] if image is not None else [])
        args, kwargs = bind_inputs(copy_, values, paths)
        opened = tracker.open
        hooks = [
            handle
            for name, m in copy_.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
            for handle in (
                m.register_forward_pre_hook(lambda _, a, name=name, o=opened: o.append((name, a[0] if a else None))),
                m.register_forward_hook(lambda *_, o=opened: (o.pop(), None)[1]),
            )
        ]
        reach = _Reach(copy_, tracker, stop)
        try:
            try:
                with torch.no_grad(), ruled_meta(), tracker:  # each op answered by its rule once the tracker saw it
                    copy_(*args, **kwargs)
            finally:
                reach.remove()
                for handle in hooks:  # before any layer is resized: its copy must not keep them
                    handle.remove()
        except Exception as exc:
            if reach.passed and (stop or tracker.made_up is not None or cannot_run_on_meta(exc)):
                break  # stopped past the input, or failed on values after it: no other reader to name
            if tracker.made_up is not None:  # what fails may be the values made up: the caller runs on zeros
                raise tracker.made_up from exc
            fitted = None if refitted is None else _refit(copy_, tracker)
            if fitted is None or (allowed and fitted not in allowed):
                raise
            if refitted is not None and not allowed:
                refitted.append(fitted)
            continue
        if tracker.made_up is not None and not reach.passed:  # ended on values made up, with weights not run
            raise tracker.made_up
        break
    else:
        raise SurgeryError(f"{type(copy_).__name__}: more than {_REFITS} layers do not fit what reaches them")
    if joins is not None:
        joins.update(tracker.joins)
    return tracker.found


def refitted_note(
    changes: Sequence[ParamReport], refitted: Sequence[str], input: InputSpec | None
) -> tuple[ParamReport, ...]:
    """``changes`` of a fold checked with ``refitted`` resized (:func:`input_readers`), the folded weights saying so."""
    if not refitted:
        return tuple(changes)
    them, are = ("them", "they are") if len(refitted) > 1 else ("it", "it is")
    note = (
        f"checked with {', '.join(map(repr, refitted))} resized to what reaches {them}: the model does not run on "
        f"input {input!r} until {are} replaced"
    )
    return tuple(
        replace(c, message=f"{c.message}; {note}" if c.message else note) if c.status is ParamChange.FOLDED else c
        for c in changes
    )


_REFITS = 8
"""Layers after the input's readers :func:`_follow` resizes at most, before it gives up."""


def _refit(copy_: nn.Module, tracker: _FollowInput) -> str | None:
    """The Linear or Conv layer ``copy_`` failed in, resized on it to what reached it, when only the outputs of the
    layers reading the input reached it (not the input itself) and it does not take their size; else None."""
    if not tracker.open:
        return None
    name, x = tracker.open[-1]
    if not isinstance(x, torch.Tensor) or id(x) not in tracker.derived or id(x) in tracker.raw:
        return None
    layer = copy_.get_submodule(name)
    if isinstance(layer, nn.Linear):
        what, before, got = "in_features", layer.in_features, int(x.shape[-1])
    else:
        assert isinstance(layer, nn.modules.conv._ConvNd)
        dims = len(layer.kernel_size) + 1
        what, before, got = "in_channels", layer.in_channels, int(x.shape[-dims]) if x.dim() >= dims else 0
    resized = resized_copy(layer, Finding(name, type(layer).__name__, what, before, got, "")) if got != before else None
    if resized is None:
        return None
    copy_.set_submodule(name, resized)
    return name


def image_spec(model: nn.Module, input: InputSpec) -> InputSpec | None:
    """``input`` when its image (:func:`image_input`, the one whose channels are adapted) is given as a shape;
    else None.

    Examples
    --------
    >>> image_spec(nn.Conv2d(3, 8, 3), (3, 32, 32)), image_spec(nn.Conv2d(3, 8, 3), torch.zeros(1, 3, 8, 8))
    ((3, 32, 32), None)
    """
    shape = image_shape(model, input)
    return input if isinstance(shape, tuple) and all(type(d) is int for d in shape) else None


def images_read_by_convolutions(
    model: nn.Module, input: InputSpec, known: Mapping[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """The floating-point inputs with channels that convolutions read (images), each with its
    :func:`input_readers`: a diffusion UNet's ``sample``, not its ``encoder_hidden_states`` (linear layers read
    them); a ControlNet's ``sample`` and ``controlnet_cond``.  ``known``: readers already found, by input (not
    followed again).

    Examples
    --------
    >>> class Guided(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.image, self.cond, self.text = nn.Conv2d(4, 8, 1), nn.Conv2d(3, 8, 1), nn.Linear(32, 8)
    ...     def forward(self, sample, cond, text):
    ...         return self.image(sample) + self.cond(cond) + self.text(text).mean()
    >>> images_read_by_convolutions(Guided(), {"sample": (4, 8, 8), "cond": (3, 8, 8), "text": (7, 32)})
    {'sample': ['image'], 'cond': ['cond']}
    """
    values = dict(ExampleInputs(model, input, 1))
    found = {}
    for name, t in values.items():
        if t.is_floating_point() and t.dim() >= 3:
            readers = known[name] if known and name in known else input_readers(model, input, follow=name)
            if readers and all(isinstance(model.get_submodule(r), nn.modules.conv._ConvNd) for r in readers):
                found[name] = readers
    return found


def image_shape(model: nn.Module, input: InputSpec) -> Any:
    """The spec of ``input``'s image: ``input`` itself, or its entry of a mapping (:func:`image_input`).

    Examples
    --------
    >>> class Unet(nn.Module):
    ...     def forward(self, sample, timestep):
    ...         return sample * timestep
    >>> image_shape(Unet(), {"sample": (4, 8, 8), "timestep": ()})
    (4, 8, 8)
    """
    if not isinstance(input, Mapping):
        return input
    if len(input) == 1:
        return next(iter(input.values()))
    name = image_input(dict(ExampleInputs(model, input, 1)))
    return input.get(name) if name is not None else None


def colour_axis(model: nn.Module, names: Sequence[str], shape: Sequence[int]) -> int:
    """The dim of an image of per-sample ``shape`` that holds its colours: the one dim whose size is the width
    (``in_channels``, ``in_features``) of some of the layers ``names`` reading it (as it is, or with its frames
    merged into the batch: ChangeViT's ``(T, C, H, W)`` image pairs), when the first dim is no such width; where
    no dim is, the last of the dims a convolution reads merged into its channels (:func:`stacked_colours`); else
    the first.

    Examples
    --------
    >>> model = nn.ModuleDict({"frames": nn.Conv2d(3, 8, 3), "stacked": nn.Conv2d(6, 8, 3)})
    >>> colour_axis(model, ["frames", "stacked"], (2, 3, 32, 32)), colour_axis(model, ["stacked"], (2, 3, 32, 32))
    (1, 1)
    >>> colour_axis(model, ["stacked"], (6, 32, 32))
    0
    """
    layers = [model.get_submodule(name) for name in names]
    widths = {getattr(m, "in_channels", getattr(m, "in_features", None)) for m in layers}
    at = [i for i, d in enumerate(shape) if d in widths]
    if len(at) == 1 and shape and shape[0] not in widths:
        return at[0]
    stacked = {stacked_colours(m, shape) for m in layers} - {None} if not at else set()
    return stacked.pop() if len(stacked) == 1 else 0  # type: ignore[return-value]


def stacked_colours(layer: nn.Module, shape: Sequence[int]) -> int | None:
    """For a convolution reading a per-sample ``shape`` with the dims before its spatial ones merged into its
    channels (images stacked, ``b t c h w -> b (t c) h w``: an early-fusion change detector's pair), the last of
    those dims, each image's colours; else None.

    Examples
    --------
    >>> stacked_colours(nn.Conv2d(6, 8, 3), (2, 3, 32, 32)), stacked_colours(nn.Conv2d(6, 8, 3), (6, 32, 32))
    (1, None)
    """
    kernel = getattr(layer, "kernel_size", None)
    width = getattr(layer, "in_channels", None)
    if not isinstance(kernel, tuple) or not isinstance(width, int):
        return None
    end = len(shape) - len(kernel)  # the dims from ``end`` on are the spatial ones
    start = next((i for i in range(end - 1) if math.prod(shape[i:end]) == width), None)
    return end - 1 if start is not None else None


def recoloured(
    model: nn.Module,
    image: InputSpec,
    channels: int,
    width: int | None = None,
    follow: str | None = None,
    last: bool = False,
    axis: int | None = None,
) -> InputSpec:
    """``image`` with ``channels`` channels in its image (:func:`image_shape`), the other inputs as they are.

    The channels are its first dim, or the one dim of the stem's input ``width`` when the first is not
    (a channels-last ``(H, W, C)`` image, ``(T, C, H, W)`` frames); with ``last`` (the stem is a Linear: it reads
    the last dim), the last dim when it has that width (Flux's ``(tokens, C)`` latents, even as many tokens as
    channels); ``axis``: that dim (:func:`colour_axis`).  ``follow``: the input to recolour, by name, instead of the
    :func:`image_input` (a ControlNet's ``controlnet_cond``).

    Examples
    --------
    >>> recoloured(nn.Conv2d(3, 8, 3), (3, 32, 32), 1), recoloured(nn.Conv2d(3, 8, 3), (32, 32, 3), 1, width=3)
    ((1, 32, 32), (32, 32, 1))
    """
    shape = image[follow] if follow is not None and isinstance(image, Mapping) else image_shape(model, image)
    at = 0  # channels first, unless only another dim has the width the stem reads ((H, W, C) permuted in forward)
    if axis is not None:
        at = axis
    elif last and width is not None and shape and shape[-1] == width:
        at = len(shape) - 1
    elif width is not None and shape and shape[0] != width and [d for d in shape if d == width] == [width]:
        at = shape.index(width)
    new = (*shape[:at], channels, *shape[at + 1 :])
    if not isinstance(image, Mapping):
        return new
    return {name: new if spec is shape else spec for name, spec in image.items()}


def one_image(model: nn.Module, input: InputSpec, readers: list[str]) -> None:
    """Raise unless the input whose channels are adapted (:func:`image_input`) is the only
    image of several inputs (:func:`images_read_by_convolutions`): a ControlNet takes a
    latent ``sample`` and a ``controlnet_cond`` image, and which one gets other channels is the user's to say.
    ``readers``: the :func:`input_readers` of that input, already found.

    Examples
    --------
    >>> class Sum(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = nn.Conv2d(4, 8, 1), nn.Conv2d(3, 8, 1)
    ...     def forward(self, x, y):
    ...         return self.a(x) + self.b(y)
    >>> one_image(Sum(), {"x": (4, 8, 8), "y": (3, 8, 8)}, ["a"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.SurgeryError: Sum takes 2 images (x, y): say which one ... x: layer='a'; y: layer='b'; or ...
    """
    chosen = image_input(dict(ExampleInputs(model, input, 1)))
    images = images_read_by_convolutions(model, input, {chosen: readers} if chosen is not None else None)
    if distinct_images(images) or (images and chosen not in images):
        raise several_images(model, images)


def several_images(model: nn.Module, images: Mapping[str, list[str]]) -> SurgeryError:
    """The error for a model whose inputs (``images``: each with the convolutions that read it) may each be the
    image whose channels change: the user says which, with ``layer=``."""
    choices = "; ".join(
        f"{name}: layer={readers if len(readers) > 1 else readers[0]!r}" for name, readers in images.items()
    )
    every = list(dict.fromkeys(r for readers in images.values() for r in readers))
    return SurgeryError(
        f"{type(model).__name__} takes {len(images)} image{'s' * (len(images) != 1)} ({', '.join(images)}): "
        f"say which one gets the new channel count by naming the layers that read it — {choices}; or every "
        f"image: layer={every!r}"
    )
