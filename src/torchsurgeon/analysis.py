"""``paramcount``: trace, graph, shapes and parameters of a model for one input.

This is the public entry of the analysis pipeline
(trace → graph → shapes → params), returning a :class:`ModelReport`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from torch import nn

from .ambient import in_plain_torch
from .arguments import (
    ExampleInputs,
    check_input_names,
    forward_parameters,
    one_or_more,
    placeholders,
    tensor_inputs,
)
from .crosscheck import crosscheck as run_crosscheck
from .crosscheck import crosscheck_mode, forward_runs, inputs_fed, real_failure
from .errors import InputError, ShapeError, TraceError
from .flops import count_flops
from .foldalone import name_mapped_folds
from .gcpause import paused_gc
from .graph import (
    build_graph,
    graph_copy,
    graph_module_of,
    model_of,
    node_record,
    opaque_of,
    records_now,
)
from .inputsize import name_fitting_input, name_running_input
from .lazy import lazy_layers, materialized
from .metavalues import FAILED_NODE
from .modelreport import ModelReport
from .params import ParamSummary, count_params
from .records import (
    CrossCheckMode,
    LayerStatus,
    OutputShape,
)
from .report import format_shape
from .rows import layer_rows
from .shapememo import ShapeMemo, sharing_inputs
from .shapes import ShapeResult, propagate_shapes
from .shapespec import InputSpec, normalize_input, per_sample_hint, python_values, without_leading_ones
from .trace import Traced, trace
from .wrappers import unwrap_model

__all__ = ("InputPart", "analyse_graph", "input_part", "paramcount", "paramcount_sweep", "refusal")


@in_plain_torch
def analyse_graph(
    G: nx.DiGraph,
    input: InputSpec,
    *,
    batch: int = 1,
    name: str = "",
    crosscheck: CrossCheckMode | str = CrossCheckMode.AUTO,
) -> tuple[ModelReport, ShapeResult]:
    """Propagate ``input`` through an already-built graph and count parameters.

    Use it to analyse one trace for several inputs; :func:`paramcount` is
    trace + build + this.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`; annotated in place.
    input : shape, tensor, tuple of shapes, or mapping
        As in :func:`paramcount`.
    batch : int
        Batch size prepended to shapes.
    name : str
        Title of the report (default: the model's class name).
    crosscheck : CrossCheckMode or str
        When to compare the graph with a real forward on ``meta``, as in
        :func:`paramcount`.

    Returns
    -------
    tuple[ModelReport, ShapeResult]
        The report (its ``graph`` is a copy of ``G``) and the raw shape result.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU())))
    >>> [analyse_graph(G, (c, 32, 32))[0].total_for_input for c in (1, 3)]
    [156, 456]
    """
    with paused_gc():  # as in paramcount
        return _analyse(G, input, batch, name, None, crosscheck_mode(crosscheck), copy_graph=True)


@dataclass
class _SweepCache:
    """What the inputs of one sweep share: earlier shape results, parameter counts per set of findings."""

    memo: ShapeMemo
    params: dict[tuple[tuple[str, str], ...], ParamSummary] = field(default_factory=dict)


def _analyse(
    G: nx.DiGraph,
    input: InputSpec,
    batch: int,
    name: str,
    cache: _SweepCache | None,
    mode: CrossCheckMode,
    *,
    copy_graph: bool,
    retrace: Callable[[InputSpec], ShapeResult] | None = None,
    memo: bool = True,
) -> tuple[ModelReport, ShapeResult]:
    """analyse_graph with the sweep's shared results; ``copy_graph=False`` when nobody else holds ``G``;
    ``retrace``: the model's shapes at another input, for a graph traced for this one's only; ``memo=False``: the
    sweep's shape memo is not worth its bookkeeping for this input (:func:`~torchsurgeon.shapememo.sharing_inputs`)."""
    model = model_of(G)
    shapes = propagate_shapes(G, input, batch=batch, memo=cache.memo if cache is not None and memo else None)
    for rec in shapes.nodes.values():
        f = rec.finding
        if (
            f is not None
            and f.what == "input rank"
            and any(node_record(G, src).op == "placeholder" for src in G.predecessors(rec.name))
        ):
            raise ShapeError(f"{rec.message} (input shapes {dict(shapes.input_shapes)})")
    # "use a larger input": which one (no cost without)
    shapes = name_fitting_input(G, input, batch, shapes, retrace, model)
    shapes = name_mapped_folds(G, shapes)  # a space-to-depth stem: its fold, not a new layer
    if cache is None:
        summary = count_params(G)
    else:  # parameter counts depend on the input only through the invalid layers
        key = tuple(
            (rec.name, repr(rec.findings)) for rec in shapes.nodes.values() if rec.status == LayerStatus.INVALID
        )
        summary = cache.params.get(key) or cache.params.setdefault(key, count_params(G))
    flops = count_flops(G, per_layer=False)  # each row reads its node's own
    layers = layer_rows(G, summary)
    output_shape = shapes.output_shape
    if isinstance(output_shape, tuple) and all(isinstance(d, int) for d in output_shape):
        output_shape = OutputShape(output_shape, layers)  # remembers its layers for assertion messages
    report = ModelReport(
        model_name=name or type(model).__name__,
        input_shapes=dict(shapes.input_shapes),
        total=summary.total,
        trainable=summary.trainable,
        frozen=summary.frozen,
        total_for_input=summary.total_for_input,
        buffers=summary.buffers,
        bytes_by_dtype=summary.bytes_by_dtype,
        output_shape=output_shape,
        layers=layers,
        findings=shapes.findings,
        _graph=_copy_later(G) if copy_graph else G,
        opaque=dict(opaque_of(G)),
        unused=summary.unused,
        macs=flops.macs,
        flops=flops.flops,
        flops_uncounted=flops.uncounted,
        crosscheck=run_crosscheck(G, shapes, mode=mode, unused=summary.unused),
    )
    return report, shapes


def _with_constants(values: Mapping[str, Any], concrete_args: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The user's ``concrete_args`` with the Python values given by name in the input spec (the user's win)."""
    return {**values, **concrete_args} if values and concrete_args else values or concrete_args


def _copy_later(G: nx.DiGraph) -> Callable[[], nx.DiGraph]:
    """A copy of ``G`` as it is now, made when called: the records are kept, the graph is not copied yet (a sweep's
    reports are often read only for their totals, and eight copies of a graph are garbage to collect)."""
    records = records_now(G)
    return lambda: graph_copy(G, records)


@in_plain_torch
def paramcount(
    model: nn.Module,
    input: InputSpec,
    *,
    batch: int = 1,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    concrete_args: Mapping[str, Any] | None = None,
    autowrap_functions: Iterable[Callable[..., Any]] = (),
    crosscheck: CrossCheckMode | str = CrossCheckMode.AUTO,
) -> ModelReport:
    """Parameters, shapes and invalid layers of ``model`` for an input shape.

    Parameters
    ----------
    model : nn.Module
        Any model torch.fx can trace (submodules it cannot are analysed as
        opaque leaves).  It is never modified: no hooks, same weights,
        ``training`` and ``requires_grad`` untouched.  Models on ``meta`` work.
    input : shape, tensor, tuple of shapes, or mapping
        Per-sample shape, batch excluded, any channel count and size:
        ``(1, 224, 224)``.  Several inputs: a tuple of shapes or
        ``{"image": (3, 224, 224), "mask": (1, 224, 224)}``.  A tensor is
        used as it is (batch included; only its shape and dtype matter); a
        :class:`~torchsurgeon.shapespec.TypedShape` (``TypedShape((128,),
        "long")``) is a shape with the dtype of its tensor.  A Python value
        given by name (a flag: ``{"multimask_output": False}``) is passed as
        it is, a constant of the trace (as ``concrete_args``).
    batch : int
        Batch size prepended to every shape.
    leaf_modules, concrete_args, autowrap_functions
        Passed to :func:`torchsurgeon.trace.trace`.
    crosscheck : CrossCheckMode or str
        When to compare the traced graph with one forward of a ``meta`` copy
        of the model (:mod:`torchsurgeon.crosscheck`): ``"auto"`` (default)
        when the graph has invalid, opaque or unknown layers or unused
        parameters; ``"always"``; ``"never"``.  ``report.trusted`` is False
        when they disagree, and the table says so.

    Returns
    -------
    ModelReport
        ``total``, ``trainable``, ``total_for_input``, ``output_shape``,
        ``layers``, ``invalid``, ``macs``, ``flops``, ``shape_fallbacks``,
        ``graph``; ``print()`` it for a table.

    Raises
    ------
    InputError
        If ``model`` is not an ``nn.Module`` or the shape is malformed.
    TraceError
        If the model cannot be traced (the message says where and how to fix it).
    ShapeError
        If the input has the wrong rank for the first layer.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 28 * 28, 10))
    >>> r = paramcount(net, (1, 32, 32))
    >>> r.total, r.total_for_input, r.output_shape
    (47506, 47206, (1, 10))
    >>> [layer.name for layer in r.invalid]
    ['0']
    """
    mode = crosscheck_mode(crosscheck)
    model = unwrap_model(model)
    check_input_names(model, input)
    input, values = python_values(input)  # a flag given by name (multimask_output=False): a constant of the trace
    concrete_args = _with_constants(values, concrete_args)
    options = {
        "leaf_modules": leaf_modules,
        "concrete_args": concrete_args,
        "autowrap_functions": autowrap_functions,
        "inputs": tensor_inputs(input),  # other forward arguments are traced with their defaults
    }
    lazy = lazy_layers(model)
    if lazy:  # their parameters are made by the first forward: on a copy, at this input
        model = materialized(model, input, batch)
    with paused_gc():  # no full collection of the whole process in the middle (torchsurgeon.gcpause)
        traced = _trace_explained(model, input, batch, options)
        again = functools.partial(_retraced, model, batch, options)
        report, _ = _analyse(build_graph(traced), input, batch, "", None, mode, copy_graph=False, retrace=again)
    return dataclasses.replace(report, lazy=lazy) if lazy else report


def refusal(model: nn.Module, input: InputSpec, batch: int) -> ShapeError | None:
    """:func:`paramcount`'s ShapeError for ``input``, when it refuses it (its rank, a shape the model's own checks
    reject), else None: what another analyzer that failed on the input raises instead, the same answer to the same
    mistake.

    Examples
    --------
    >>> from torch import nn
    >>> print(refusal(nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 32), 1))  # doctest: +ELLIPSIS
    0 (Conv2d) expects input rank=4 (N, C, H, W), got 3 (1, 3, 32) — the per-sample shape (3, 32) has no channel...
    >>> refusal(nn.Conv2d(3, 4, 3), (3, 32, 32), 1) is None
    True
    """
    try:
        paramcount(model, input, batch=batch)
    except ShapeError as exc:
        return exc
    except Exception:  # refused otherwise (the trace, the input's names): the caller's own error says it
        return None
    return None


def _retraced(model: nn.Module, batch: int, options: Mapping[str, Any], input: InputSpec) -> ShapeResult:
    """The shapes of ``model`` at ``input``, traced again for it (a search for the input a model takes, when its
    graph was traced for another input's shapes only)."""
    return propagate_shapes(
        build_graph(trace(model, **options, example_inputs=ExampleInputs(model, input, batch))), input, batch=batch
    )


def _trace_explained(model: nn.Module, input: InputSpec, batch: int, options: Mapping[str, Any]) -> Traced:
    """``trace(model, **options)`` for ``input`` (Python on shapes answered for it); when the model's own forward
    cannot be traced, the error says why in the user's terms: the input's rank, or a part that can be analysed."""
    try:
        return trace(model, **options, example_inputs=ExampleInputs(model, input, batch))
    except TraceError as exc:
        if not exc.whole_model:
            raise
        hint = per_sample_hint(input if isinstance(input, Mapping) else {"": input}, batch)
        example = ExampleInputs(model, input, batch)
        rejected = real_failure(model, example, exc, example.paths)
        if rejected is not None:  # the model's own check of its input, or an op it does not fit: no trace gets past
            per_sample = ExampleInputs(model, without_leading_ones(input), batch)
            if hint and real_failure(model, per_sample, exc, per_sample.paths) is not None:
                hint = ""  # refused the same way without the leading 1: a grey image (1, 40, 50) of a size it refuses
            shapes = {name: tuple(t.shape) for name, t in example.items()}
            failed = getattr(exc.__cause__, FAILED_NODE, "")
            missing = _missing_argument(model, shapes, rejected[0])
            if missing:  # a detector in training mode without its targets: no shape gets past, a part may
                hint += (
                    f"\n  its forward asks for {missing!r}, which was not given (no shape stands for it: a "
                    "detector's targets in training mode, which model.eval() does without)"
                    + _parts_to_analyse(model, input, batch)
                )
            sizes = "" if missing else _running_input(model, input, batch, list(example))
            raise ShapeError(
                f"{type(model).__name__} does not take this input {shapes}"
                f"{f' (the trace fails in {failed})' if failed else ''}: a real forward raises {rejected[0]}\n"
                f"  at {rejected[1]}\n  fix: give an input the model accepts (what its code at that line asks)"
                f"{f'; {sizes}' if sizes else ''}{hint}"
            ) from exc
        if hint and "values to unpack" in str(exc):  # the input's rank, not the model: no part to suggest
            raise TraceError(f"{exc}{hint}", whole_model=True) from exc
        raise TraceError(f"{exc}{_parts_to_analyse(model, input, batch)}", whole_model=True) from exc


def _running_input(model: nn.Module, input: InputSpec, batch: int, names: list[str]) -> str:
    """The input sizes ``model`` runs on near ``input``, which its own forward refused (smp's check that the height
    and width divide by its output stride), as the fix says them (:func:`~torchsurgeon.inputsize.name_running_input`,
    each try a forward of a meta copy); ``""`` when none is found.

    A model in training mode at batch 1 (as smp's models are built) whose batch norm averages one value per
    channel raises at every size: a size is then tried at batch 2 too, so the fix names the sizes the model's
    own check accepts; the report at that size says the batch is too small."""
    training = batch == 1 and any(m.training for m in model.modules())

    def runs(spec: dict[str, Any]) -> bool:
        for size in (batch, 2) if training else (batch,):
            example = ExampleInputs(model, spec, size)
            if forward_runs(model, dict(example), example.paths):
                return True
        return False

    return name_running_input(input, names, batch, runs)


def _missing_argument(model: nn.Module, given: Mapping[str, Any], error: str) -> str:
    """The argument of ``model``'s forward, not given, that the real forward's ``error`` names (``targets should not
    be none when in training mode``), else ``""``."""
    for p in forward_parameters(model):
        if p.name not in given and len(p.name) > 2 and re.search(rf"\b{re.escape(p.name)}\b", error):
            return p.name
    return ""


@dataclass(frozen=True)
class InputPart:
    """A part of a model whose own ``forward`` cannot be traced, that can be analysed on its own
    (:func:`input_part`): a detection model's backbone.

    ``input`` and ``batch`` are what the model's own forward hands the part at the model's input; ``changed``
    when that is not the model's input itself (torchvision's detection models resize the images first).
    """

    name: str
    params: int
    input: tuple[int, ...]
    batch: int
    changed: bool

    def call(self) -> str:
        """The call that analyses the part, as the user writes it."""
        where = f"model.{self.name}" if self.name.isidentifier() else f"model.get_submodule({self.name!r})"
        return f"paramcount({where}, {self.input}" + (f", batch={self.batch})" if self.batch != 1 else ")")


def input_part(model: nn.Module, input: InputSpec, batch: int) -> InputPart | None:
    """The largest of ``model``'s children with parameters (of its 3 largest) that is analysed without an error,
    at what the model's own forward hands it at ``input`` (a real forward of a meta copy, stopped there:
    :func:`~torchsurgeon.crosscheck.inputs_fed`; its layers may then be invalid, the model's own findings), else
    at ``input`` itself when the forward does not reach it (and then only a part that fits it).

    For a model whose own forward cannot be traced: a detection model's backbone takes the images (resized by
    the model first); its heads take what the backbone gives and fail.  None when no part takes one tensor.

    Examples
    --------
    >>> from torch import nn
    >>> class Looped(nn.Module):  # iterates over its input: fx cannot trace it
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body = nn.Conv2d(3, 8, 3)
    ...     def forward(self, images):
    ...         return [self.body(nn.functional.interpolate(x[None], size=(20, 20))) for x in images]
    >>> input_part(Looped(), (3, 10, 10), 1)
    InputPart(name='body', params=224, input=(3, 20, 20), batch=1, changed=True)
    """
    if not (isinstance(input, tuple) and all(isinstance(d, int) for d in input)):
        return None
    parts = []
    for name, part in model.named_children():
        size = sum(p.numel() for p in part.parameters())
        if size:
            parts.append((size, name, part))
    candidates = sorted(parts, key=lambda p: -p[0])[:3]
    example = ExampleInputs(model, input, batch)
    fed = inputs_fed(model, example, [name for _, name, _ in candidates], example.paths) if candidates else {}
    for size, name, part in candidates:
        given = fed.get(name)
        if given is None:  # not reached before the forward stopped: the model's input, as it is
            at, at_batch = input, batch
        elif len(given) == 1 and isinstance(given[0], tuple) and all(isinstance(d, int) for d in given[0]):
            at, at_batch = given[0][1:], given[0][0]
        else:  # more than one tensor, or other values (an ImageList): not a part to analyse at one shape
            continue
        try:  # paramcount's own steps: a part failing the same way is not searched in turn
            traced = trace(part, inputs=1, example_inputs=ExampleInputs(part, at, at_batch))
            graph = build_graph(traced)
            part_report, _ = _analyse(graph, at, at_batch, "", None, CrossCheckMode.NEVER, copy_graph=False)
        except Exception:  # a probe: whatever fails, this part does not take that input
            continue
        if part_report.invalid and given is None:  # a guess it does not fit (the forward made it grey first); what
            continue  # the forward does hand a part, it is named with, invalid or not: its findings are the model's
        return InputPart(name, size, at, at_batch, (at, at_batch) != (input, batch))
    return None


def _parts_to_analyse(model: nn.Module, input: InputSpec, batch: int) -> str:
    """For a model whose own forward cannot be traced: its exact totals, and a part analysed at what the model
    hands it at this input (:func:`input_part`), with the call that analyses it."""
    total = sum(p.numel() for p in model.parameters())  # parameters() gives a tied one once
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    split = f"; {total - frozen:,} trainable, {frozen:,} frozen" if frozen else ""
    lines = f"\n  the whole model holds {total:,} parameters (each counted once{split})"
    part = input_part(model, input, batch)
    if part is None:
        return lines
    kind = type(model.get_submodule(part.name)).__name__
    if not part.changed:
        return f"{lines}; of them {part.params:,} are in {part.name} ({kind}), which takes this input: {part.call()}"
    return (
        f"{lines}; of them {part.params:,} are in {part.name} ({kind}), which the model's own forward hands "
        f"{format_shape((part.batch, *part.input))} at this input (its forward changes the input first): {part.call()}"
    )


@in_plain_torch
def paramcount_sweep(
    model: nn.Module,
    inputs: Iterable[InputSpec],
    *,
    batch: int = 1,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    concrete_args: Mapping[str, Any] | None = None,
    autowrap_functions: Iterable[Callable[..., Any]] = (),
    crosscheck: CrossCheckMode | str = CrossCheckMode.AUTO,
) -> list[ModelReport]:
    """:func:`paramcount` for several inputs: the model is traced once, then only re-propagated.

    Parameters
    ----------
    model : nn.Module
        As in :func:`paramcount`; never modified.
    inputs : iterable of input specs
        One per report, each as :func:`paramcount`'s ``input``:
        ``[(1, 224, 224), (3, 224, 224), (3, 512, 512)]``.  All of them
        must give tensors to the same ``forward`` arguments.
    batch : int
        Batch size prepended to every shape.
    leaf_modules, concrete_args, autowrap_functions
        Passed to :func:`torchsurgeon.trace.trace`.
    crosscheck : CrossCheckMode or str
        As in :func:`paramcount`, for each report.

    Returns
    -------
    list[ModelReport]
        One report per input, in order; each has its own annotated graph.

    Raises
    ------
    InputError
        If ``inputs`` is empty, a spec is malformed, or the specs name
        different ``forward`` arguments.
    TraceError
        If the model cannot be traced.
    ShapeError
        If an input has the wrong rank for the first layer.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    >>> [(r.total_for_input, r.output_shape) for r in paramcount_sweep(net, [(1, 32, 32), (3, 64, 64)])]
    [(98, (1, 2)), (242, (1, 2))]
    """
    specs = list(inputs)
    if not specs:
        raise InputError("paramcount_sweep needs at least one input shape, e.g. [(1, 224, 224), (3, 224, 224)]")
    split = [python_values(spec) for spec in specs]  # Python values given by name: constants of the one trace
    if any(values != split[0][1] for _, values in split):
        raise InputError("the input specs give different Python values (constants of the trace) — sweep them apart")
    specs, values = [spec for spec, _ in split], split[0][1]
    concrete_args = _with_constants(values, concrete_args)
    names = {tensor_inputs(spec) for spec in specs}
    if len(names) > 1:
        raise InputError(
            f"the input specs give tensors to different forward arguments ({sorted(map(str, names))}) — "
            "sweep one input layout at a time"
        )
    mode = crosscheck_mode(crosscheck)
    model = unwrap_model(model)
    options: dict[str, Any] = {
        "leaf_modules": one_or_more(leaf_modules),
        "concrete_args": concrete_args,
        "autowrap_functions": one_or_more(autowrap_functions),
        "inputs": names.pop(),
    }
    if lazy_layers(model):  # each input makes other parameters: analysed one by one
        one = functools.partial(paramcount, model, batch=batch, crosscheck=mode, leaf_modules=leaf_modules)
        return [one(spec, concrete_args=concrete_args, autowrap_functions=autowrap_functions) for spec in specs]
    with paused_gc():  # no full collection of the whole process in the middle (torchsurgeon.gcpause)
        return _sweep(model, specs, batch, mode, options)


def _sweep(
    model: nn.Module, specs: list[InputSpec], batch: int, mode: CrossCheckMode, options: dict[str, Any]
) -> list[ModelReport]:
    """paramcount_sweep once its arguments are checked: one trace, re-propagated for each input."""
    traced = _trace_explained(model, specs[0], batch, options)
    ranks = traced.input_ranks  # forward unpacked an input's shape: an input of another rank is traced on its own
    other_rank = ranks and any(
        t.dim() != ranks.get(name, t.dim())
        for spec in specs[1:]
        for name, t in ExampleInputs(model, spec, batch).items()
    )
    # forward's Python answered questions about the first input's shapes, or a part failed to trace at them (BERT
    # given more tokens than its positions: its attention made opaque, which the next input would not need)
    if traced.shape_specific or other_rank or traced.opaque:
        retrace = functools.partial(_retraced, model, batch, options)
        reports = [_analyse(build_graph(traced), specs[0], batch, "", None, mode, copy_graph=False, retrace=retrace)[0]]
        for spec in specs[1:]:
            again = _trace_explained(model, spec, batch, options)
            reports.append(
                _analyse(build_graph(again), spec, batch, "", None, mode, copy_graph=False, retrace=retrace)[0]
            )
        return reports
    G = build_graph(traced)
    cache = _SweepCache(ShapeMemo(G))  # the model cannot change during the sweep: results are reused
    names = list(placeholders(graph_module_of(G)))
    sharing = sharing_inputs([normalize_input(spec, names) for spec in specs])  # a new size: no node to reuse
    last = len(specs) - 1  # the last report can have the sweep's graph itself
    return [
        _analyse(G, spec, batch, "", cache, mode, copy_graph=i < last, memo=sharing[i])[0]
        for i, spec in enumerate(specs)
    ]
