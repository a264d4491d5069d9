"""The input size a model takes, named in the fix of every finding the input's size causes.

A layer too small for its input (a kernel, a pooling window, an interpolation to an empty size) or
given a size it does not divide (a ``PixelUnshuffle``, a skip connection concatenating an upsampled
map with one of an odd size) is reported with a fix; "use a larger input" is not one a user can run.
:func:`name_fitting_input` searches the input that makes every such finding go away, re-propagating
the same graph (no new trace): the batch and the channel counts stay as given, only the sizes change
(every dim after the channels; the length of a sequence of token ids), upwards from the given ones, in
at most :data:`MAX_PROPAGATIONS` propagations.  What it finds is written in the form the user gave
(a mapping keeps its names), as a call that runs: ``paramcount(model, (3, 32, 32))``; "the smallest"
only where propagation showed that one less fails.

First, the sizes ``forward`` compares the input's own sizes to (a ViT's patch embedding asserting ``H == 224``,
one size only, which no step below reaches): each size compared set to its number.

The search, on the sizes ``s`` of the dims it varies:

1. a size that fits at all: every size raised to 64, 256, 1024, 4096 (a multiple of 64), the first that fits;
2. the multiple ``m`` the sizes need: the least of 1, 2, 4, ... 64 (times the factors a finding names)
   with which the sizes just past that one, rounded up to a multiple of ``m``, fit;
3. the least ``t`` with which ``s`` raised to ``t`` and rounded up to ``m`` fits (bisection);
4. each size on its own, as low as it fits (bisection): a video's frames, not its height and width;
5. what is claimed: one less fails in each raised size, or the multiple below the given size fits too.

A ``Linear`` after a flatten takes one size only, often smaller than the one given
(:func:`features_caused`): its features scale with the input's area, so the sizes tried are the given ones
scaled by the ratio of the features it expects to those it got, then every size equal (the square input the
model was built for), each within two of the estimate; none of them is claimed as the smallest.

Where no larger size fits (a ViT built for one image size, a decoder given more tokens than it has
positions: an index past an embedding, :func:`index_caused`), the sizes are halved in their proportions
until they fit, then raised as far as they still fit (bisection): "an input it takes".
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import networkx as nx
import torch
from torch import nn

from .arguments import placeholders
from .graph import findings_of, graph_module_of, probing, records_now, set_records, shape_specific_of
from .knowndata import COUNTED
from .ownresize import own_resize_fix
from .records import Finding, LayerStatus
from .shapes import ShapeResult, propagate_shapes
from .shapespec import InputSpec, TypedShape, normalize_input, written_input, written_inputs

__all__ = (
    "MAX_PROPAGATIONS",
    "MAX_RETRACES",
    "RETRACE_SECONDS",
    "features_caused",
    "index_caused",
    "name_fitting_input",
    "name_running_input",
    "size_caused",
    "with_fixes",
)

MAX_PROPAGATIONS = 64
"""The most propagations one search makes; past them the findings keep the fix they had."""

MAX_RETRACES = 16
"""The most traces a search makes for a graph traced for the given shapes only (each try traces the model again)."""

RETRACE_SECONDS = 3.0
"""Nor does it start a trace after this much CPU time of the searching thread (a large model's traces are slow):
CPU time, not wall time, so that a busy machine, or other threads analysing other models, does not cut the search
short and change the answer."""

_FITS_FROM = (64, 256, 1024, 4096)  # step 1: sizes tried to find one that fits at all
_POWERS = 7  # step 2: multiples 1, 2, 4, ... 64 (times the factors findings name)
_MULTIPLE = re.compile(r"a multiple of (\d+)")
_AT_LEAST = re.compile(r">= (\d+)$")
_ESTIMATES = 6  # features_caused: estimates of the sizes, each from the features the last one gave


def size_caused(finding: Finding) -> bool:
    """Whether the input's size may cause ``finding``: a spatial, temporal or sequence size a layer refuses
    (``spatial size (dim 0) >= 3``, ``a multiple of 2``), or torch refusing the shapes a node was given
    (a concatenation of sizes that differ); :func:`name_fitting_input` finds out whether a size fixes it.

    Examples
    --------
    >>> size_caused(Finding("stem", "Conv3d", "spatial size (dim 0)", ">= 3", 2, "use a larger input"))
    True
    >>> size_caused(Finding("conv1", "Conv2d", "in_channels", 3, 1, "adapt_input_channels(model, 1)"))
    False
    """
    return finding.what.startswith("spatial") or finding.what == "input"


def features_caused(finding: Finding) -> bool:
    """Whether ``finding`` is a layer given another number of features than it takes (a ``Linear`` after a
    flatten), which one input size may fix; :func:`name_fitting_input` finds out whether one does.

    Examples
    --------
    >>> features_caused(Finding("fc", "Linear", "in_features", 2048, 8192, "replace the layer"))
    True
    >>> features_caused(Finding("conv1", "Conv2d", "in_channels", 3, 1, "adapt_input_channels(model, 1)"))
    False
    """
    return (
        finding.what == "in_features"
        and type(finding.expected) is int
        and type(finding.got) is int
        and 0 < finding.expected != finding.got > 0
    )


def index_caused(finding: Finding) -> bool:
    """Whether ``finding`` is an index past an embedding or a gather that comes from the input's size (positions,
    relative distances), which a smaller input may fix.

    Examples
    --------
    >>> index_caused(Finding("wpe", "Embedding", "index", "< 64", 64, "give an input the model was built for"))
    True
    """
    return finding.what in ("index", COUNTED)


class _OutOfPropagations(Exception):
    """The search used its :class:`_Budget`."""


@dataclasses.dataclass
class _Budget:
    """What the searches of one finding may still spend: propagations (or traces), and until when (the thread's
    CPU time, :func:`time.thread_time`)."""

    left: int
    until: float = math.inf

    def spend(self) -> None:
        """Count one propagation, or raise :class:`_OutOfPropagations` when none is left."""
        if self.left <= 0 or time.thread_time() > self.until:
            raise _OutOfPropagations
        self.left -= 1


def _up(size: int, m: int) -> int:
    return -(-size // m) * m


class _Search:
    """The sizes of the varied dims (``axes``: input name, dim of the per-sample shape) and what each tried fits."""

    def __init__(
        self,
        given: dict[str, Any],
        batch: int,
        axes: list[tuple[str, int]],
        kept: frozenset[Any],
        propagate: Callable[[dict[str, Any]], ShapeResult],
        budget: _Budget,
    ) -> None:
        self.given, self.batch, self.axes, self.kept = given, batch, axes, kept
        self.propagate, self.budget = propagate, budget
        self.start = tuple(_per_sample(given[name])[dim] for name, dim in axes)
        self.tried: dict[tuple[int, ...], bool] = {}
        self.features: dict[tuple[int, ...], dict[str, int]] = {}  # what each layer of features_caused got

    def spec(self, sizes: tuple[int, ...]) -> dict[str, Any]:
        """The inputs with these sizes, in the form each was given."""
        shapes = {name: list(_per_sample(value)) for name, value in self.given.items()}
        for (name, dim), size in zip(self.axes, sizes):
            shapes[name][dim] = size
        return {
            name: value if tuple(shapes[name]) == _per_sample(value) else _resized(value, tuple(shapes[name]))
            for name, value in self.given.items()
        }

    def fits(self, sizes: tuple[int, ...]) -> bool:
        """Whether every size-caused finding is gone at these sizes and no other finding came."""
        if sizes not in self.tried:
            self.budget.spend()
            try:
                result = self.propagate(self.spec(sizes))
            except Exception:  # an input the model refuses outright
                self.tried[sizes] = False
            else:
                self.features[sizes] = {f.layer: f.got for f in result.findings if features_caused(f)}
                self.tried[sizes] = all(
                    rec.status in (LayerStatus.OK, LayerStatus.OPAQUE)
                    or (
                        rec.status is LayerStatus.INVALID
                        and bool(rec.findings)
                        and all(_key(f) in self.kept for f in rec.findings)
                    )
                    for rec in result.nodes.values()
                )
        return self.tried[sizes]

    def at(self, t: int, m: int) -> tuple[int, ...]:
        """Every size raised to ``t`` and rounded up to a multiple of ``m``."""
        return tuple(_up(max(s, t), m) for s in self.start)

    def lowest(self, values: list[int], fits: Any) -> int:
        """The first of ``values`` (ascending, the last known to fit) that fits, by bisection."""
        lo, hi = -1, len(values) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(values[mid]):
                hi = mid
            else:
                lo = mid
        return values[hi]

    def run(self, factor: int, scale: float = 1.0) -> tuple[tuple[int, ...], int] | None:
        """The sizes found and the multiple they need, or None; ``scale``: how much larger the sizes seem to need to
        be (:func:`_scale_needed`), tried first."""
        step = factor * 2 ** (_POWERS - 1)  # the largest multiple tried
        top = max(self.start)
        estimate = (math.ceil(top * scale),) if scale > 1 else ()  # a window of sizes fits (a pool, then a Linear)
        tops = sorted({_up(max(t, top), step) for t in (*estimate, *_FITS_FROM) if t >= top} or {_up(top, step)})
        fitting = next((t for t in tops if self.fits(self.at(t, step))), None)
        if fitting is None:  # 1. nothing fits: not the size, or not one this search reaches
            return None
        ladder = [factor * 2**k for k in range(_POWERS)]  # 2. each divides the next
        m = self.lowest(ladder, lambda m: self.fits(self.at(fitting + 1, m)))
        if not self.fits(self.at(fitting + 1, m)):
            return None
        ts = list(range(_up(min(self.start), m), fitting + m + 1, m))  # 3. raised to t, the last fits
        best = self.at(self.lowest(ts, lambda t: self.fits(self.at(t, m))), m)
        for i, s in enumerate(self.start):  # 4. each size on its own, the others as found
            if best[i] == s:
                continue
            if self.fits(_with(best, i, s)):  # a size that does not matter keeps its value
                best = _with(best, i, s)
                continue
            values = [v for v in range(_up(s, m), best[i] + 1, m) if v != s]
            best = _with(best, i, self.lowest(values, functools.partial(self._fits_with, best, i)))
        return best, m

    def run_exact(self, layer: str, expected: int, got: int) -> tuple[tuple[int, ...], int] | None:
        """Sizes with which ``layer`` gets the ``expected`` features it takes (``got`` at the given sizes), or None.

        Each estimate scales the sizes by the ratio of the features expected to those got there (the
        input's shape kept, then every size equal), until the layer gets what it takes; then the sizes
        within two of the last estimate.
        """
        for equal in (False, True):
            sizes, last = self.start, got
            for _ in range(_ESTIMATES):
                sizes = _scaled(sizes, expected / last, equal)
                if self.fits(sizes):
                    return sizes, 1
                now = self.features.get(sizes, {}).get(layer)
                if now == got:  # a global pool before it: no size changes what it gets
                    return None
                if now is None or now == expected:  # another finding now, or the layer no longer refuses
                    break
                last = now
            for d in (1, -1, 2, -2):
                near = tuple(max(1, v + d) for v in sizes)
                if self.fits(near):
                    return near, 1
        return None

    def run_ratio(self, a: int, b: int) -> tuple[tuple[int, ...], int] | None:
        """Sizes scaled so that a count growing with their product (tokens, one per patch) goes from ``a`` to ``b``
        or from ``b`` to ``a``, then within two of that (multiples of the highest power of two first), or None.

        A position table built for 224×224 images holds 1 + 7 × 7 rows; at 320×320 the tokens are 1 + 10 × 10:
        the sizes scaled by (50 / 101) ** (1 / 2) are 225, and 224 fits too.
        """
        for ratio in (a / b, b / a):
            estimate = _scaled(self.start, ratio, equal=False)
            offsets = sorted(range(-2, 3), key=lambda d: (-min(_low_bit(max(1, v + d)) for v in estimate), abs(d)))
            for d in offsets:
                if self.fits(near := tuple(max(1, v + d) for v in estimate)):
                    return near, 1
        return None

    def run_down(self) -> tuple[tuple[int, ...], int] | None:
        """Sizes below the given ones that fit, the largest bisection finds, or None: for a sequence, its length;
        for an image or a volume, every size equal (the shape the model was built for)."""
        if max(self.start) <= 1:
            return None
        if len(self.start) > 1:
            return self._square_down()
        k = 2
        while not self.fits(self._part(64, 64 * k)):  # halved until they fit
            if max(self._part(64, 64 * k)) == 1:
                return None
            k *= 2
        lo, hi = 64, 128  # fits at start / k, not at start / (k / 2)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.fits(self._part(mid, 64 * k)) else (lo, mid)
        return self._part(lo, 64 * k), 1

    def _square_down(self) -> tuple[tuple[int, ...], int] | None:
        """The largest of p, 5p/4, 3p/2, 7p/4 (every size equal) that fits, ``p`` the largest power of two that
        does, below the largest given size."""
        p, n = 1 << (max(self.start) - 1).bit_length() - 1, len(self.start)
        while not self.fits((p,) * n):
            if p == 1:
                return None
            p //= 2
        values = sorted({p + i * p // 4 for i in range(4)} - {max(self.start)})
        lo, hi = 0, len(values)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.fits((values[mid],) * n) else (lo, mid)
        return (values[lo],) * n, 1

    def _part(self, q: int, d: int) -> tuple[int, ...]:
        """The given sizes times ``q / d``."""
        return tuple(max(1, s * q // d) for s in self.start)

    def _fits_with(self, sizes: tuple[int, ...], i: int, v: int) -> bool:
        return self.fits(_with(sizes, i, v))


def _low_bit(n: int) -> int:
    """The highest power of two dividing ``n`` (``n`` > 0)."""
    return n & -n


def _mismatched_counts(shapes: ShapeResult) -> tuple[int, int] | None:
    """The two sizes of the one dim in which the two operands of a node refused for its input differ, neither 1
    (``(1, 101, 768) + (50, 768)``: tokens at this size and the rows of a position table): ``(101, 50)``; None when
    no finding is such a broadcast.

    Examples
    --------
    >>> from torchsurgeon.graph import NodeRecord
    >>> rec = NodeRecord("add", "call_function", "add", "add", "add", input_shapes=((1, 101, 8), (50, 8)))
    >>> rec = dataclasses.replace(rec, findings=(Finding("add", "add", "input", "a compatible input", "", ""),))
    >>> _mismatched_counts(ShapeResult(nodes={"add": rec}, output_shape=None, findings=rec.findings))
    (101, 50)
    """
    for rec in shapes.nodes.values():
        if not any(size_caused(f) and f.what == "input" for f in rec.findings):
            continue
        operands = [s for s in rec.input_shapes if isinstance(s, tuple) and all(type(d) is int for d in s)]
        if len(operands) != 2:
            continue
        a, b = operands
        differ = [(x, y) for x, y in zip(reversed(a), reversed(b)) if x != y and 1 not in (x, y)]
        if len(differ) == 1 and min(differ[0]) > 0:
            return differ[0]
    return None


def _scaled(sizes: tuple[int, ...], ratio: float, equal: bool) -> tuple[int, ...]:
    """``sizes`` whose product is ``ratio`` times theirs: each scaled alike, or all equal."""
    if equal:
        return (max(1, round((math.prod(sizes) * ratio) ** (1 / len(sizes)))),) * len(sizes)
    return tuple(max(1, round(s * ratio ** (1 / len(sizes)))) for s in sizes)


def _with(sizes: tuple[int, ...], i: int, v: int) -> tuple[int, ...]:
    """``sizes`` with the ``i``-th one ``v``."""
    return (*sizes[:i], v, *sizes[i + 1 :])


def _per_sample(value: Any) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape[1:])
    if isinstance(value, TypedShape):
        return value.shape
    return tuple(value)


def _resized(value: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty((value.shape[0], *shape), dtype=value.dtype, device="meta")
    if isinstance(value, TypedShape):
        return TypedShape(shape, value.dtype)
    return shape


def _key(f: Finding) -> tuple[str, str, str, str]:
    return f.layer, f.what, repr(f.expected), repr(f.got)


def _axes(given: Mapping[str, Any], shapes: ShapeResult | None, user: InputSpec) -> list[tuple[str, int]]:
    """The dims a size search varies: those after the channels, or a sequence of token ids' length (not those of
    an input given inside a dict, which the answer could not write as it was given); without ``shapes`` (a model
    that refused the input outright), a sequence only when it was given with an integer dtype."""
    axes = []
    for name, value in given.items():
        if not isinstance(value, (tuple, TypedShape, torch.Tensor)) or (isinstance(user, Mapping) and name not in user):
            continue
        shape = _per_sample(value)
        if len(shape) >= 2:
            axes += [(name, dim) for dim in range(1, len(shape))]
        elif len(shape) == 1 and shapes is None:  # a token ids' length, given with its dtype
            if isinstance(value, (TypedShape, torch.Tensor)) and not value.dtype.is_floating_point:
                axes.append((name, 0))
        elif len(shape) == 1 and shapes is not None:
            dtypes = [rec.dtype for rec in shapes.nodes.values() if rec.op == "placeholder" and rec.target == name]
            if dtypes and dtypes[0] is not None and dtypes[0].startswith(("int", "uint")):
                axes.append((name, 0))
    return axes


def _call(user: InputSpec, given: dict[str, Any], spec: dict[str, Any], batch: int) -> str:
    """``paramcount(model, ...)`` with ``spec`` written in the form of ``user``'s input."""
    changed = {name: spec[name] for name in spec if spec[name] is not given[name]}
    if isinstance(user, Mapping):
        text = written_inputs({k: changed.get(k, v) for k, v in user.items()})
    elif len(given) == 1 and not (isinstance(user, (list, tuple)) and user and isinstance(user[0], (list, tuple))):
        text = written_input(next(iter(spec.values())))
    else:
        text = "(" + ", ".join(written_input(spec[name]) for name in given) + ("," if len(given) == 1 else "") + ")"
    return f"paramcount(model, {text}{f', batch={batch}' if batch != 1 else ''})"


def _answer(
    search: _Search, user: InputSpec, given: dict[str, Any], found: tuple[int, ...], m: int, smallest: bool = True
) -> str:
    """What the fix says: the input found, as much as propagation showed of it (``smallest``: whether to try
    showing that it is the smallest), and the call."""
    start = search.start
    raised = [i for i, (s, v) in enumerate(zip(start, found)) if v != s]
    spec = search.spec(found)
    call = _call(user, given, spec, search.batch)
    shown = _shown(spec, given)
    if search.kept:  # the channels it was given do not fit either: said, not hidden
        shown += " once its other findings are fixed"
    if m == 1 and not smallest:
        return f"an input it takes is {shown}: {call}"
    if m == 1:
        one_less = [_with(found, i, found[i] - 1) for i in raised]
        if all(found[i] - 1 >= start[i] and not search.fits(less) for i, less in zip(raised, one_less)):
            where = "" if len(raised) == len(start) else " at this size or larger"
            return f"the smallest input it takes{where} is {shown}: {call}"
        return f"an input it takes is {shown}: {call}"
    below = tuple(v - m if v - s < m and s % m and v - m >= m else v for s, v in zip(start, found))
    if below != found and search.fits(below):
        spec_below = search.spec(below)
        return (
            f"it takes {_shown(spec_below, given)} and {shown}, the multiples of {m} on either side of this size: "
            f"{_call(user, given, spec_below, search.batch)} or {call}"
        )
    if found == tuple(_up(s, m) for s in start):
        return f"it takes {shown}, its sizes rounded up to a multiple of {m}: {call}"
    # past the next multiple (an encoder's pooling needs 128 where the check asks for a multiple of 16): said so,
    # and "m less fails" only where propagation showed it
    less = [_with(found, i, found[i] - m) for i in raised]
    shown_less = all(found[i] - m >= start[i] and not search.fits(lower) for i, lower in zip(raised, less))
    return f"it takes {shown}, multiples of {m} past this size{f' ({m} less fails)' if shown_less else ''}: {call}"


def _shown(spec: dict[str, Any], given: dict[str, Any]) -> str:
    """The inputs a search changed, as shapes: ``(3, 32, 32)``, ``image=(3, 32, 32)``."""
    changed = [(name, _per_sample(value)) for name, value in spec.items() if value is not given[name]]
    if len(given) == 1:
        return str(changed[0][1])
    return ", ".join(f"{name}={shape}" for name, shape in changed)


def name_fitting_input(
    G: nx.DiGraph,
    input: InputSpec,
    batch: int,
    shapes: ShapeResult,
    retrace: Callable[[InputSpec], ShapeResult] | None = None,
    model: nn.Module | None = None,
) -> ShapeResult:
    """``shapes`` with the input that fits named in the fix of every finding the input's size causes.

    Nothing is done (and nothing propagated) without such a finding (:func:`size_caused`), or when the
    search finds nothing in :data:`MAX_PROPAGATIONS`; ``G``'s records are those of ``input`` again
    afterwards, with the new fixes.  A graph traced for the given shapes only (forward's Python asked about
    them) is searched with ``retrace`` (the model traced and propagated at another input), at most
    :data:`MAX_RETRACES` times, and not at all without it.

    Parameters
    ----------
    G : networkx.DiGraph
        The graph ``shapes`` was propagated through.
    input : shape, tensor, tuple of shapes, or mapping
        The input as the user gave it (the answer keeps its form).
    batch : int
        Batch size, kept.
    shapes : ShapeResult
        :func:`~torchsurgeon.shapes.propagate_shapes`'s result for ``input``.
    retrace : callable, optional
        For a graph traced for the given shapes only: the shapes of the model at another input.
    model : nn.Module, optional
        The model traced: where it has its own call to take the given size (timm's ``set_input_size``, torchvision's
        ViT recipe), the fix names it too (:func:`~torchsurgeon.ownresize.own_resize_fix`).

    Returns
    -------
    ShapeResult
        ``shapes``, its size-caused findings' fixes naming the input found.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 4, 5), nn.MaxPool2d(2))))
    >>> r = name_fitting_input(G, (3, 4, 8), 1, propagate_shapes(G, (3, 4, 8)))
    >>> print(r.findings[0].fix)
    use a larger input, or less downsampling before this layer; the smallest input it takes at this size or \
larger is (3, 6, 8): paramcount(model, (3, 6, 8))
    """
    features = [f for f in shapes.findings if features_caused(f)]
    specific = shape_specific_of(G)
    if not (features or any(_shrinkable(f) for f in shapes.findings)) or (specific and retrace is None):
        return shapes
    given = normalize_input(input, list(placeholders(graph_module_of(G))))
    axes = _axes(given, shapes, input)
    if not axes:
        return shapes
    records = records_now(G)
    answer = ""
    targets: Callable[[Finding], bool] = size_caused  # what the answer fixes
    # shared by the searches below
    budget = _Budget(MAX_RETRACES, time.thread_time() + RETRACE_SECONDS) if specific else _Budget(MAX_PROPAGATIONS)
    propagate: Callable[[dict[str, Any]], ShapeResult] = (
        retrace if specific and retrace is not None else functools.partial(_propagated, G, batch)
    )

    def search(varied: list[tuple[str, int]], found_by: Callable[[Finding], bool]) -> _Search:
        kept = frozenset(_key(f) for f in shapes.findings if not found_by(f))
        return _Search(given, batch, varied, kept, propagate, budget)

    try:
        with probing(G):  # sizes the user did not give: no fold that runs is looked for at each
            answer, targets = _searched(G, shapes, input, given, functools.partial(search, axes), features)
            first = _with_first_dims(given, axes) if not answer else []  # (time, mel bins): the first dim's no channel
            if first:
                answer, targets = _searched(G, shapes, input, given, functools.partial(search, first), features)
    except _OutOfPropagations:
        answer = ""
    finally:
        set_records(G, records.values())  # the given input's records again
    own = own_resize_fix(model, given, batch) if answer or any(size_caused(f) for f in shapes.findings) else ""
    if own:  # no size found (a check inside an opaque layer, transformers' ViT embeddings): the model's own call
        answer = f"{answer}; to analyse this size itself, {own}" if answer else f"to analyse this size, {own}"
    if not answer:
        return shapes
    return with_fixes(
        G, shapes, lambda f: (f"{f.fix.removesuffix('.')}; {answer}" if f.fix else answer) if targets(f) else f.fix
    )


def _searched(
    G: nx.DiGraph,
    shapes: ShapeResult,
    input: InputSpec,
    given: dict[str, Any],
    search: Callable[[Callable[[Finding], bool]], _Search],
    features: list[Finding],
) -> tuple[str, Callable[[Finding], bool]]:
    """The searches of :func:`name_fitting_input` in turn, over the dims ``search`` varies: the answer (the input
    found, as a call) and which findings it fixes; ``""`` when none finds one."""
    answer = ""
    targets: Callable[[Finding], bool] = size_caused
    if any(size_caused(f) for f in shapes.findings):  # the sizes forward compares the input's own to
        checked = search(size_caused)
        compared = next((s for s in _compared_sizes(G, checked.axes, checked.start) if checked.fits(s)), None)
        if compared is not None:
            answer = _answer(checked, input, given, compared, 1, smallest=False)
    if not answer and features:  # one size, often smaller than the given one
        exact = search(_either)
        found = exact.run_exact(features[0].layer, features[0].expected, features[0].got)
        if found is not None:
            answer, targets = _answer(exact, input, given, *found, smallest=False), _either
    if not answer and any(size_caused(f) for f in shapes.findings):
        up = search(size_caused)
        texts = [f.expected for f in shapes.findings if isinstance(f.expected, str)]
        named = [int(n) for text in texts for n in _MULTIPLE.findall(text)]
        odd = math.lcm(1, *(n // (n & -n) for n in named if n > 0))  # powers of two are on the ladder already
        found = up.run(odd, _scale_needed(shapes.findings))
        answer = _answer(up, input, given, *found) if found is not None else ""
    counts = _mismatched_counts(shapes) if not answer else None
    if counts is not None:  # a position table of one row per patch: the size it was built for, estimated
        scaled = search(size_caused)
        found = scaled.run_ratio(*counts)
        answer = _answer(scaled, input, given, *found, smallest=False) if found is not None else ""
    if not answer and any(_shrinkable(f) for f in shapes.findings):  # no larger size fits: a smaller one
        down = search(_shrinkable)
        found = down.run_down()
        if found is not None:
            answer, targets = _answer(down, input, given, *found, smallest=False), _shrinkable
    return answer, targets


def _scale_needed(findings: Iterable[Finding]) -> float:
    """How many times larger the sizes seem to need to be: the largest ratio of the size a layer takes at least
    (``>= 8``) to the one it got (5: Inception's ``avg_pool2d(x, kernel_size=8)`` at 224 × 224, where 299 fits,
    and 1024, the next size a search tries, gives its Linear 9 times the features it takes)."""
    ratios = [
        int(m.group(1)) / f.got
        for f in findings
        if isinstance(f.expected, str) and type(f.got) is int and f.got > 0 and (m := _AT_LEAST.search(f.expected))
    ]
    return max(ratios, default=1.0)


def _with_first_dims(given: Mapping[str, Any], axes: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The first dim of each 2-D per-sample input the search varied, the others kept as given (a spectrogram's time
    steps: transformers' AST takes ``(time, mel bins)``); [] when there is none. A first dim that is a channel count
    cannot make a size search succeed: a layer given other channels is a finding the answer may not add."""
    return sorted({(name, 0) for name, _ in axes if len(_per_sample(given[name])) == 2})


def _compared_sizes(G: nx.DiGraph, axes: list[tuple[str, int]], start: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The sizes ``forward`` compares the input's own sizes to (``H == 224``, asserted by a ViT's patch embedding,
    the one size its position tables fit): each size compared set to its number, the others as given; then
    every size at each number a size of another tensor is compared to (at most three)."""
    named: dict[tuple[str, int], int] = {}
    loose: list[int] = []
    for n in graph_module_of(G).graph.nodes:
        if n.op != "call_function" or n.target not in (operator.eq, operator.ne) or len(n.args) != 2:
            continue
        a, b = n.args
        node, number = (a, b) if isinstance(a, torch.fx.Node) else (b, a)
        if not isinstance(node, torch.fx.Node) or type(number) is not int or number < 2:
            continue
        axis = _size_of(node)
        if axis is None:
            continue
        if axis in axes:
            named.setdefault(axis, number)
        elif number not in loose:
            loose.append(number)
    tries = [tuple(named.get(axis, s) for axis, s in zip(axes, start))] if named else []
    tries += [(number,) * len(axes) for number in loose[:3]]
    return [t for t in dict.fromkeys(tries) if t != start]


def _size_of(node: torch.fx.Node) -> tuple[str, int] | None:
    """The input and per-sample dim ``node`` is the size of (``x.shape[2]``: ``("x", 1)``); ``("", -1)`` for a size
    of another tensor; None for anything else."""
    if node.target is not operator.getitem or len(node.args) != 2:
        return None
    shape, dim = node.args
    if not isinstance(shape, torch.fx.Node) or type(dim) is not int:
        return None
    if shape.op == "call_function" and shape.target is getattr and shape.args[1:] == ("shape",):
        tensor = shape.args[0]
    elif shape.op == "call_method" and shape.target == "size" and len(shape.args) == 1:
        tensor = shape.args[0]
    else:
        return None
    if isinstance(tensor, torch.fx.Node) and tensor.op == "placeholder" and dim >= 1:
        return str(tensor.target).lstrip("*"), dim - 1
    return "", -1


def name_running_input(input: InputSpec, names: list[str], batch: int, runs: Callable[[dict[str, Any]], bool]) -> str:
    """The input a model whose own ``forward`` refuses ``input`` outright (a check of its size in Python, as
    segmentation_models_pytorch's ``check_input_shape``: no trace gets past it) runs on, as a fix says it: the
    multiples on either side of the given size, or the smallest size, with the call (:func:`name_fitting_input`'s
    search, each try ``runs(spec)``: a forward of the model at ``spec``, an input in the form the user gave).
    ``names``: forward's inputs, in order.  ``""`` when the search finds none in :data:`MAX_RETRACES` forwards
    and :data:`RETRACE_SECONDS`.

    Examples
    --------
    >>> def runs(spec):  # a model whose forward asks for sizes divisible by 32
    ...     return all(s % 32 == 0 for s in spec["x"][1:])
    >>> print(name_running_input((3, 250, 250), ["x"], 1, runs))  # doctest: +NORMALIZE_WHITESPACE
    it takes (3, 224, 224) and (3, 256, 256), the multiples of 32 on either side of this size:
    paramcount(model, (3, 224, 224)) or paramcount(model, (3, 256, 256))
    """
    given = normalize_input(input, names)
    axes = _axes(given, None, input)
    if not axes:
        return ""
    ran = ShapeResult({}, None, ())  # a forward that ran: nothing invalid

    def forward(spec: dict[str, Any]) -> ShapeResult:
        if not runs(spec):
            raise ValueError("the model refuses this input")
        return ran

    budget = _Budget(MAX_RETRACES, time.thread_time() + RETRACE_SECONDS)
    search = _Search(given, batch, axes, frozenset(), forward, budget)
    try:
        found = search.run(1)
        return _answer(search, input, given, *found) if found is not None else ""
    except _OutOfPropagations:
        return ""


def _propagated(G: nx.DiGraph, batch: int, spec: dict[str, Any]) -> ShapeResult:
    return propagate_shapes(G, spec, batch=batch)


def _either(finding: Finding) -> bool:
    return size_caused(finding) or features_caused(finding)


def _shrinkable(finding: Finding) -> bool:
    return size_caused(finding) or index_caused(finding)


def with_fixes(G: nx.DiGraph, shapes: ShapeResult, fixed: Callable[[Finding], str]) -> ShapeResult:
    """``shapes`` and ``G``'s records with each finding's fix made ``fixed(finding)`` (its own fix: left as it is),
    in its record's message too (a fix the message did not name yet is added after it).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 4, 3))))
    >>> r = with_fixes(G, propagate_shapes(G, (1, 8, 8)), lambda f: "look again")
    >>> r.findings[0].fix, r.nodes["_0"].message.endswith("look again")
    ('look again', True)
    """
    nodes = dict(shapes.nodes)
    for name, rec in shapes.nodes.items():
        findings = tuple(dataclasses.replace(f, fix=fix) if (fix := fixed(f)) != f.fix else f for f in rec.findings)
        if findings == rec.findings:
            continue
        message = rec.message
        changed = {was.fix: now.fix for was, now in zip(rec.findings, findings, strict=True) if now is not was}
        for old, new in changed.items():
            message = message.replace(old, new) if old else f"{message} — {new}"
        nodes[name] = dataclasses.replace(rec, findings=findings, message=message)
    set_records(G, [nodes[name] for name in nodes if nodes[name] is not shapes.nodes[name]])
    return dataclasses.replace(shapes, nodes=nodes, findings=findings_of(nodes.values()))
