"""Can a traced graph be trusted?  Compare it with one real forward of the model on ``meta``.

torch.fx runs ``forward`` on proxies, and Python code can take another path
on a proxy than on a tensor without any error: ``isinstance(x,
torch.Tensor)`` is False for a proxy, so a skip connection added only for
tensors vanishes from the trace.  Shape propagation on such a graph reports
layers as invalid that a real forward runs, and totals that are wrong.

:func:`crosscheck` runs the model itself once, on a ``meta`` copy (no
weight data, the user's hooks that only look neither copied nor run, the model left
exactly as found, in its own ``training`` mode) and compares:

* when the graph has invalid layers, the copy gets those layers resized to
  fit (as the analysis assumes, :mod:`torchsurgeon.resize`), so the real
  model accepts the input and its output shape must match the graph's.  If
  the resized copy fails, the original copy is run: if the real model
  accepts the input, the invalid layers are an artefact of the trace;
* otherwise the output shapes of the graph and of the real forward must be
  equal.

When they disagree the verdict is :attr:`~torchsurgeon.records.Trust.UNTRUSTED`
and the message names the first leaf layer whose input differs.  Cost and
when it runs (:class:`~torchsurgeon.records.CrossCheckMode`): docs/crosscheck.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import networkx as nx
import torch
from torch import nn

from .arguments import InputPaths, traced_paths
from .copies import cannot_run_on_meta, inputs_reaching, meta_only, run_on_zeros
from .errors import TraceError, check_option, first_line, source_line
from .frontend import bind_inputs
from .graph import graph_module_of, model_of, node_record, node_records, opaque_of, specialised_of
from .knowndata import COUNTED
from .metavalues import FAILED_NODE
from .records import CrossCheck, CrossCheckMode, LayerStatus, Trust, is_shape
from .report import format_names
from .resize import resized_copy, with_channels
from .rules.on_meta import answered_by_rules, ruled_meta
from .shapes import ShapeResult, meta_copy, shapes_of
from .switchedoff import switched_off

__all__ = ("crosscheck", "crosscheck_mode", "doubts", "forward_runs", "inputs_fed", "real_failure")


_GENERIC = " (Python code that behaves differently on fx proxies, such as isinstance(x, torch.Tensor))"


def crosscheck_mode(value: CrossCheckMode | str) -> CrossCheckMode:
    """``value`` as a :class:`~torchsurgeon.records.CrossCheckMode`.

    Raises
    ------
    InputError
        For anything but auto, always, never.

    Examples
    --------
    >>> crosscheck_mode("always")
    <CrossCheckMode.ALWAYS: 'always'>
    """
    return check_option(value, CrossCheckMode, "crosscheck")


def doubts(G: nx.DiGraph, shapes: ShapeResult, unused: tuple[str, ...] = ()) -> str:
    """Why the traced graph might not match a real forward; empty when nothing looks doubtful.

    Doubtful: invalid layers that get their input from other layers (a real
    forward may feed them something else), opaque layers, layers whose
    shape is unknown, and parameters no node uses (a branch the trace did
    not take).  A layer that does not fit the model's input itself (a
    3-channel stem given 1 channel) is explained by the input: not doubtful.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.graph import build_graph
    >>> from torchsurgeon.shapes import propagate_shapes
    >>> from torchsurgeon.trace import trace
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(5, 4, 3))))
    >>> doubts(G, propagate_shapes(G, (3, 8, 8))), doubts(G, propagate_shapes(G, (1, 8, 8)))
    ('1 invalid layer', '1 invalid layer')
    """
    layers: dict[LayerStatus, set[str]] = {status: set() for status in LayerStatus}  # a layer called twice: once
    for rec in shapes.nodes.values():
        if rec.status != LayerStatus.INVALID or not _fed_by_input(G, rec.name):
            layers[rec.status].add(rec.layer)
    counts = {status: len(names) for status, names in layers.items()}
    parts = []
    for status, what in ((LayerStatus.INVALID, "invalid"), (LayerStatus.UNKNOWN, "unknown")):
        if counts[status]:
            parts.append(f"{counts[status]} {what} layer{'s' * (counts[status] != 1)}")
    if opaque_of(G):
        parts.append(f"{len(opaque_of(G))} opaque")
    if unused:
        parts.append(f"{len(unused)} unused parameter{'s' * (len(unused) != 1)}")
    if not _gives_tensors(shapes.output_shape):  # timm's FeatureHookNet read its hooks' store by a proxy's device
        parts.append("no output tensor")
    return ", ".join(parts)


def _gives_tensors(shape: Any) -> bool:
    """Whether an output shape (as ``shapes_of`` gives it) holds the shape of at least one tensor."""
    if is_shape(shape):
        return True
    if isinstance(shape, Mapping):
        return any(_gives_tensors(v) for v in shape.values())
    return isinstance(shape, (list, tuple)) and any(_gives_tensors(v) for v in shape)


def _fed_by_input(G: nx.DiGraph, node: str) -> bool:
    preds = [node_record(G, p).op for p in G.predecessors(node)]
    return "placeholder" in preds and all(op in ("placeholder", "get_attr") for op in preds)


def crosscheck(
    G: nx.DiGraph,
    shapes: ShapeResult,
    *,
    mode: CrossCheckMode | str = CrossCheckMode.AUTO,
    unused: tuple[str, ...] = (),
) -> CrossCheck:
    """Compare the propagated graph ``G`` with a forward of the real model on ``meta``.

    One forward when the graph and the model agree; a second (diagnostic,
    with hooks on the copy to find the first layer fed differently) only
    when they do not.

    Parameters
    ----------
    G : networkx.DiGraph
        A graph annotated by :func:`torchsurgeon.shapes.propagate_shapes`.
    shapes : ShapeResult
        That propagation's result (input and output shapes, invalid layers).
    mode : CrossCheckMode or str
        ``"auto"``: only when :func:`doubts` finds something; ``"always"``;
        ``"never"``.
    unused : tuple[str, ...]
        Parameters no node uses (from :func:`torchsurgeon.params.count_params`); those the model's own settings
        switch off (:func:`torchsurgeon.switchedoff.switched_off`) are not doubtful.

    Returns
    -------
    CrossCheck
        The verdict (:class:`~torchsurgeon.records.Trust`), why it ran, the
        real output shapes and a sentence for the report.

    Raises
    ------
    InputError
        For a ``mode`` that is not one of auto, always, never.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torchsurgeon.graph import build_graph
    >>> from torchsurgeon.shapes import propagate_shapes
    >>> from torchsurgeon.trace import trace
    >>> class Skip(nn.Module):  # the skip connection vanishes on fx proxies
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.conv = nn.Conv2d(2, 2, 1), nn.Conv2d(4, 2, 1)
    ...     def forward(self, x):
    ...         x = self.stem(x)
    ...         if isinstance(x, torch.Tensor):
    ...             x = torch.cat([x, x], dim=1)
    ...         return self.conv(x)
    >>> G = build_graph(trace(Skip()))
    >>> check = crosscheck(G, propagate_shapes(G, (2, 8, 8)))
    >>> str(check.trust), check.real_output
    ('untrusted', (1, 2, 8, 8))
    """
    mode = crosscheck_mode(mode)
    off = set(switched_off(model_of(G), unused)) if unused and mode == CrossCheckMode.AUTO else set()
    reason = doubts(G, shapes, tuple(name for name in unused if name not in off))  # off: unused by any forward
    if mode == CrossCheckMode.NEVER:
        return CrossCheck(Trust.NOT_RUN, "crosscheck='never'")
    if mode == CrossCheckMode.AUTO and not reason:
        settings = f" ({len(off)} unused parameter{'s' * (len(off) != 1)} switched off by the model's settings)"
        return CrossCheck(Trust.NOT_RUN, "nothing doubtful in the traced graph" + (settings if off else ""))
    reason = reason or "crosscheck='always'"
    model = model_of(G)
    args, kwargs = _inputs(G, shapes)
    invalid = [rec for rec in shapes.nodes.values() if rec.status == LayerStatus.INVALID]
    traced = shapes.output_shape

    def diagnose(copy: Callable[[], nn.Module | None], otherwise: str = _GENERIC) -> str:
        seen: dict[str, Any] = {}
        made = copy()
        if made is not None:
            _run(made, args, kwargs, seen)
        return _first_difference(G, seen, otherwise)

    if not invalid:
        run = _run(meta_copy(model), args, kwargs)
        traced_kwargs = _as_traced(G, kwargs) if run.error or _plain(traced) != _plain(shapes_of(run.out)) else None
        if traced_kwargs is not None:  # the model's defaults take another path (a cache for generation): as traced
            fixed = _run(meta_copy(model), args, traced_kwargs[0])
            if not fixed.error and _plain(traced) == _plain(shapes_of(fixed.out)):
                return _compare(traced, fixed, reason, f" with {traced_kwargs[1]} (as traced)", lambda: "")
        if run.error:
            message = (
                f"a forward of the real model{run.where} failed ({run.error}); the traced graph could not be checked"
            )
            if any(rec.status == LayerStatus.OK and rec.message for rec in shapes.nodes.values()):
                # layers that fit but raise at this batch in training mode (the report's note): their shapes
                # are the same in eval mode, where the forward runs; an output that differs there proves nothing
                in_eval = _run(meta_copy(model).eval(), args, kwargs)
                if not in_eval.error and _plain(traced) == _plain(shapes_of(in_eval.out)):
                    how = " in eval mode (in training mode it raises at this batch, as the note says)"
                    return _compare(traced, in_eval, reason, how, lambda: "")
            return CrossCheck(Trust.UNVERIFIED, reason, None, message)
        return _compare(traced, run, reason, "", lambda: diagnose(lambda: meta_copy(model)))
    resized = _resized(model, invalid)
    resized_error = "some invalid layers cannot be resized" if resized is None else ""
    if resized is not None:
        fitted = _run(resized, args, kwargs)
        resized_error = fitted.error
        if not resized_error:
            how = " (invalid layers resized to fit)"
            return _compare(traced, fitted, reason, how, lambda: diagnose(lambda: _resized(model, invalid)))
    for refit in _as_folded(args, kwargs, invalid):  # input layers that check the channel count themselves
        folded = _run(meta_copy(model), *refit)
        if not folded.error:
            how = " at the channel count its input layers expect (the output once they are folded)"
            return _compare(traced, folded, reason, how, lambda: "")
    run = _run(meta_copy(model), args, kwargs)
    wrong = "the invalid layers, the output and the counts for this input are wrong"
    if not run.error and all(f.what == COUNTED for rec in invalid for f in rec.findings):
        return CrossCheck(
            Trust.UNVERIFIED,
            reason,
            None,
            f"a forward of the real model{run.where} runs, but it has no data: the invalid layers look up positions "
            "counted from the input's tokens, which only a forward with real tokens checks — the output and the "
            "counts for this input are not verified",
        )
    if not run.error:
        names = format_names([rec.layer for rec in invalid])
        return CrossCheck(
            Trust.UNTRUSTED,
            reason,
            shapes_of(run.out),
            f"the real model accepts this input (a forward{run.where} gives {shapes_of(run.out)}), but the traced "
            f"graph reports {len(invalid)} invalid layer{'s' * (len(invalid) != 1)} ({names}): the trace took "
            f"another path than a real forward{diagnose(lambda: meta_copy(model))} — {wrong}",
        )
    difference = diagnose(lambda: _resized(model, invalid), "") if resized is not None else ""
    if difference:  # before failing, the real forward fed a layer another input than the trace did
        return CrossCheck(
            Trust.UNTRUSTED,
            reason,
            None,
            f"a forward of the real model{run.where} with the invalid layers resized to fit fails "
            f"({resized_error}): the trace took another path than a real forward{difference} — {wrong}",
        )
    if not run.decided:  # neither on meta nor on the CPU: nobody knows whether the real model accepts this input
        return CrossCheck(
            Trust.UNVERIFIED,
            reason,
            None,
            f"a forward of the real model could not be run ({run.error}), so whether it accepts this input is not "
            f"known: the invalid layers may be the trace's own, and the output and the counts for this input are "
            f"not verified",
        )
    return CrossCheck(
        Trust.UNVERIFIED,
        reason,
        None,
        f"the real model fails at this input too ({run.error}{run.where}), as the invalid layers say; with them "
        f"resized it could not be run ({resized_error}), so the output and the counts for this input are not "
        f"verified",
    )


def real_failure(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], like: TraceError, paths: InputPaths | None = None
) -> tuple[str, str] | None:
    """``("TypeName: message", line)`` of what one forward of the real model (a ``meta`` copy: its weights are
    never touched; on zeros on the CPU where meta cannot run it) raises at ``inputs`` when it is ``like`` the error
    of a trace that failed in the model's own ``forward``: the same exception, raised at the same line of the
    model's code (an ``assert`` on a size, a ``ValueError`` of a checked setting), or raised by an op of the trace
    whose value Python asked about (``metavalues.FAILED_NODE``: the op the input does not fit). None when the real
    forward runs, or fails otherwise: then the trace failed, not the model.

    Examples
    --------
    >>> class Positions(nn.Module):
    ...     def forward(self, ids):
    ...         assert ids.shape[1] <= 16, "longer than the positions"
    ...         return ids
    >>> from torchsurgeon.trace import trace
    >>> try:
    ...     trace(Positions(), example_inputs={"ids": torch.empty(1, 20, device="meta")})
    ... except TraceError as exc:
    ...     print(real_failure(Positions(), {"ids": torch.empty(1, 20, device="meta")}, exc)[0])
    AssertionError: longer than the positions
    """
    cause = like.__cause__
    if cause is None or not inputs or meta_only(cause):  # what meta lacks: a forward on real tensors does not raise
        return None
    run = _run(meta_copy(model), *bind_inputs(model, inputs, paths))  # paths: inputs that are part of one argument
    failure = run.failure
    if failure is None or type(failure) is not type(cause):
        return None
    line = source_line(failure)
    if line != like.source and not hasattr(cause, FAILED_NODE):
        return None
    return f"{type(failure).__name__}: {run.error}", line


def inputs_fed(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], parts: Sequence[str], paths: InputPaths | None = None
) -> dict[str, Any]:
    """The shapes of what a real forward of ``model`` at ``inputs`` hands each of its submodules ``parts`` (its
    positional arguments, as :func:`~torchsurgeon.shapes.shapes_of` gives them), on a ``meta`` copy with pre-hooks
    on the copy's parts, stopped once every part got its input.  A part the forward does not reach before it
    stops or fails (a detector's heads after boxes are filtered by value) is missing.

    A model may change its input before a part sees it: torchvision's detection models resize the images (a
    Faster R-CNN's backbone gets 800 x 800 for a 128 x 128 image), so the part's shapes at the model's input are
    not its shapes in the model.

    Examples
    --------
    >>> class Upsampled(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body = nn.Conv2d(3, 8, 3)
    ...     def forward(self, x):
    ...         return self.body(nn.functional.interpolate(x, scale_factor=2.0))
    >>> inputs_fed(Upsampled(), {"x": torch.empty(1, 3, 16, 16, device="meta")}, ["body"])
    {'body': ((1, 3, 32, 32),)}
    """
    if not inputs:
        return {}
    copy_ = meta_copy(model)  # the hooks go on the copy's parts: never the user's model
    args, kwargs = bind_inputs(model, inputs, paths)
    with torch.no_grad(), torch.device("meta"), ruled_meta():
        seen = inputs_reaching(copy_, parts, args, kwargs)
    return {name: shapes_of(given) for name, given in seen.items()}


def forward_runs(model: nn.Module, inputs: Mapping[str, Any], paths: InputPaths | None = None) -> bool:
    """Whether one forward of the real model (a ``meta`` copy; on zeros on the CPU where meta cannot run it) runs
    at ``inputs``: the oracle of a search for the size a model's own checks accept.

    Examples
    --------
    >>> class Even(nn.Module):
    ...     def forward(self, x):
    ...         if x.shape[-1] % 2:
    ...             raise RuntimeError("an even width, please")
    ...         return x
    >>> forward_runs(Even(), {"x": torch.empty(1, 3, 8, 8)}), forward_runs(Even(), {"x": torch.empty(1, 3, 8, 7)})
    (True, False)
    """
    run = _run(meta_copy(model), *bind_inputs(model, inputs, paths))
    return run.failure is None and run.decided


def _compare(traced: Any, run: _Run, reason: str, how: str, difference: Callable[[], str]) -> CrossCheck:
    real = shapes_of(run.out)
    forward = f"a forward of the real model{run.where}{how}"
    if _plain(traced) == _plain(real):
        return CrossCheck(Trust.VERIFIED, reason, real, f"{forward} gives the same output")
    if traced is None:
        return CrossCheck(
            Trust.UNVERIFIED, reason, real, f"the traced graph could not compute the output; {forward} gives {real}"
        )
    return CrossCheck(
        Trust.UNTRUSTED,
        reason,
        real,
        f"the traced graph gives output {traced}, {forward} gives {real}: the trace "
        f"took another path than a real forward{difference()} — the report's numbers are wrong",
    )


def _plain(value: Any) -> Any:
    """Shapes without the container types (tuple vs list, OutputShape vs tuple) and without None entries.

    A Hugging Face ``ModelOutput`` keeps its None fields when a real forward
    returns it (``cache_params=None``) but not in the traced output: a key
    whose value is None is no difference.
    """
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def _first_difference(G: nx.DiGraph, seen: Mapping[str, Any], otherwise: str = _GENERIC) -> str:
    """``; first difference: <layer> gets X in a real forward, Y in the trace — <fix>``, else ``otherwise``."""
    leaves: dict[str, bool] = {}  # leaf layer -> its input matches the real forward's, in trace order
    first: tuple[str, str, Any] | None = None
    for rec in node_records(G):
        if rec.op != "call_module" or rec.layer in leaves or rec.layer not in seen:
            continue
        traced = rec.input_shapes[0] if rec.input_shapes else None
        leaves[rec.layer] = traced is None or _plain(traced) == _plain(seen[rec.layer])
        if first is None and not leaves[rec.layer]:
            first = (rec.layer, rec.module_type, traced)
    if first is None:
        return otherwise
    layer, kind, traced = first
    culprit = ""
    parts = layer.split(".")
    for depth in range(len(parts) - 1, 0, -1):  # the deepest module whose first leaf still agrees
        prefix = ".".join(parts[:depth])
        inside = next(name for name in leaves if name.startswith(prefix + "."))
        if leaves[inside]:
            culprit = prefix
            break
    fix = (
        f"make {culprit} a leaf, leaf_modules=[{culprit!r}] (or its class, for every instance): it then runs on meta "
        "as a whole"
        if culprit
        else "make the module that computes its input a leaf with leaf_modules=[...]"
    )
    return f"; first difference: {layer} ({kind}) gets {seen[layer]} in a real forward, {traced} in the trace — {fix}"


def _inputs(G: nx.DiGraph, shapes: ShapeResult) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The analysed inputs as meta tensors (those given with their data, a sequence's lengths: a copy of it), bound
    to ``forward``'s arguments."""
    dtypes = {rec.name: rec.dtype for rec in shapes.nodes.values()}
    data = shapes.input_data
    return bind_inputs(
        model_of(G),
        {
            name: data[name].clone()
            if name in data
            else torch.empty(shape, dtype=getattr(torch, dtypes.get(name) or "float32"), device="meta")
            for name, shape in shapes.input_shapes.items()
        },
        traced_paths(graph_module_of(G)),  # a dict's tensors, *args' entries: one argument each
    )


def _as_traced(G: nx.DiGraph, kwargs: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The keyword arguments with those the trace fixed (``use_cache=False``: the graph builds no cache, a real
    forward by default does), and how they read; None when the trace fixed none."""
    fixed = {k: v for k, v in specialised_of(G).items() if k not in kwargs}  # by name: a decorator may set them too
    shown = ", ".join(f"{k}={v!r}" for k, v in fixed.items() if v is not None)
    return ({**fixed, **kwargs}, shown) if shown else None


def _as_folded(
    args: list[torch.Tensor], kwargs: dict[str, Any], invalid: list[Any]
) -> list[tuple[list[torch.Tensor], dict[str, Any]]]:
    """The inputs with the channel count the invalid input layers expect, when every finding is such a fold: one
    candidate per input and dim that has the count the input layers got (dim 1 first; a video's channels may be
    dim 2), then all such inputs at once.

    A fold changes only those layers (and the settings guarding the channel
    count), so the real model at the expected channel count gives the output
    the folded model gives at this input.
    """
    findings = [f for rec in invalid for f in rec.findings]
    if not findings or any(f.what != "in_channels" or "adapt_input_channels" not in f.fix for f in findings):
        return []
    folds = {(f.expected, f.got) for f in findings}
    if len(folds) != 1:
        return []
    ((expected, got),) = folds
    candidates: list[tuple[list[torch.Tensor], dict[str, Any]]] = []
    slots = [*range(len(args)), *kwargs]  # one input at a time first (SAM's point prompts also have a dim 1 of 1)
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]  # not a dict of them
    for dim in range(1, max((t.dim() for t in tensors), default=0)):

        def refit(t: Any, slot: object, only: object, dim: int = dim) -> Any:
            fits = (only is None or slot == only) and isinstance(t, torch.Tensor) and t.is_floating_point()
            return with_channels(t, expected, dim) if fits and t.dim() > dim and t.shape[dim] == got else t

        for only in [*slots, None]:  # None: every input that has the count (several images)
            new_args = [refit(t, i, only) for i, t in enumerate(args)]
            new_kwargs = {k: refit(t, k, only) for k, t in kwargs.items()}
            changed = [a is not b for a, b in zip(new_args, args)] + [new_kwargs[k] is not kwargs[k] for k in kwargs]
            if any(changed) and (only is not None or sum(changed) > 1):
                candidates.append((new_args, new_kwargs))
    return candidates


def _resized(model: nn.Module, invalid: list[Any]) -> nn.Module | None:
    """A meta copy of ``model`` with every invalid layer resized to fit, or None if one cannot be."""
    copy_ = meta_copy(model)
    for rec in invalid:
        if len(rec.findings) != 1:
            return None
        # a function is resized through the layer its finding names: the module whose forward calls it (F.linear)
        target = str(rec.target) if rec.op == "call_module" else rec.findings[0].layer
        if rec.op != "call_module" and (not rec.scope or target != rec.scope):
            return None
        owner, _, leaf = target.rpartition(".")
        resized = resized_copy(copy_.get_submodule(target), rec.findings[0])
        if resized is None:
            return None
        setattr(copy_.get_submodule(owner) if owner else copy_, leaf, resized)
    return copy_


class _Run(NamedTuple):
    """One forward of a copy of the real model: its output, or the error's first line; and where it ran."""

    out: Any
    error: str
    where: str = " on meta"
    decided: bool = True  # False: it could run neither on meta nor on zeros, the error is not the model's
    failure: BaseException | None = None  # the error itself


def _run(
    copy_: nn.Module, args: list[torch.Tensor], kwargs: dict[str, torch.Tensor], seen: dict[str, Any] | None = None
) -> _Run:
    """``copy_(*args, **kwargs)`` on meta; when the model itself cannot run on ``meta`` (it reads a value:
    ``Tensor.item()``), once on zeros on the CPU if it is small enough (:func:`~torchsurgeon.copies.run_on_zeros`):
    a meta limit is not the real model failing at this input.  ``copy_`` is the cross-check's own copy: its
    tensors become zeros for that run.

    ``seen``, when given, receives the input shape of each submodule's first
    call (hooks on the copy, never on the user's model; they slow the
    forward down by half, so only diagnostic runs use them).
    """
    handles = []
    found: dict[str, Any] = seen if seen is not None else {}
    for name, module in copy_.named_modules() if seen is not None else ():  # no walk without diagnostic hooks
        if name and not isinstance(module, torch.jit.ScriptModule):  # which takes no hooks

            def hook(_m: nn.Module, inputs: tuple[Any, ...], name: str = name) -> None:
                if name not in found and inputs:
                    found[name] = shapes_of(inputs[0])

            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad(), torch.device("meta"), ruled_meta():
            return _Run(answered_by_rules(copy_)(*args, **kwargs), "")
    except Exception as exc:  # the real model's own failure: reported, not raised
        on_meta = first_line(exc, 200)
        if not cannot_run_on_meta(exc):
            return _Run(None, on_meta, failure=exc)
        failure = exc
    finally:
        for handle in handles:
            handle.remove()
    where = f" on zeros on the CPU (on meta: {on_meta})"
    try:
        return _Run(run_on_zeros(copy_, tuple(args), kwargs, failure, owned=True), "", where)
    except Exception as exc:  # too large for the CPU (its message gives the meta reason), or the real model's failure
        if exc is failure or exc.__cause__ is failure or "meta tensor" in str(exc):  # or a meta tensor it kept
            return _Run(None, first_line(exc, 200), decided=False)
        return _Run(None, first_line(exc, 200), where, failure=exc)
