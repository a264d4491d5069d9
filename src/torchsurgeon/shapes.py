"""Shape propagation for any input shape, past layers that do not fit.

Follows the torch.fx Interpreter pattern (torch/fx/passes/shape_prop.py):
one ``run_node`` override, one public entry, :func:`propagate_shapes`.
No real activation is allocated: values are tensors on the ``meta`` device.

What is known about each op lives in :mod:`torchsurgeon.rules`: a node whose
op has a rule gets its output (and its MACs) from the rule; a layer that
does not fit is marked ``invalid`` with a :class:`~torchsurgeon.records.Finding`
(expected vs got, and the fix) and propagation continues *as if the layer
had been resized to fit* (:mod:`torchsurgeon.resize`), so one call reports
every invalid layer, like a type checker.  Other nodes run on ``meta``
(parameter-free code directly, modules with weights through a meta copy; the
user's model is never touched).  Each node records which way its shape was
obtained (:class:`~torchsurgeon.records.ShapeSource`).

A node that cannot run is ``invalid`` (a shape error) or ``unknown`` (no meta kernel, data-dependent); nodes
after it are ``unknown``.  A :class:`~torchsurgeon.shapememo.ShapeMemo` lets a sweep over inputs reuse the nodes
whose inputs did not change, and twin nodes given the same values (:func:`~torchsurgeon.shapememo.twin_kinds`)
share one result.  What an input spec means is :func:`torchsurgeon.shapespec.normalize_input`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
import torch.fx
from torch import nn
from torch.fx.node import map_aggregate

from ._steps import Step, rules_of, steps_of
from .ambient import in_plain_torch
from .arguments import check_graph, placeholders
from .autocast import as_autocast_gives, op_name
from .clamped import clamped_slice_hint
from .copies import class_forward, container_edit, detached_copy, meta_like, run_on_zeros, thawed
from .errors import InputError, ShapeError, first_line, with_numbers
from .foldalone import fold_alone_at
from .fxbookkeeping import autocast_as
from .graph import (
    NodeRecord,
    findings_of,
    graph_module_of,
    model_dtype,
    model_of,
    opaque_of,
    records_now,
    set_records,
    shape_specific_of,
    update_record,
)
from .guards import stale_guards_fix
from .ignoredinputs import check_inputs_read, unread_inputs
from .inputaxes import FollowedAxes, fold_inputs
from .inputdtypes import placeholder_dtype
from .knowndata import KnownData, as_meta, given_as_data, packed_lengths
from .records import Finding, FlopKind, LayerStatus, ShapeSource
from .resize import as_folded_inputs, input_fix, resized_copy, width_expected_and_got
from .rules import FALLBACK, Call, Rule
from .rules._common import first_of, first_tensor, shared_outputs
from .rules.on_meta import FlopTally, ruled_meta
from .rules.registry import counted_without_formula
from .shapememo import ShapeMemo, reshapes_in_place, twin_kinds
from .shapespec import InputSpec, Shape, TypedShape, missing_input, normalize_input, per_sample_hint
from .traceerrors import data_fix

__all__ = (
    "ShapeResult",
    "meta_copy",
    "propagate_shapes",
    "shapes_of",
)


@dataclass(frozen=True)
class ShapeResult:
    """Result of :func:`propagate_shapes`: every node's record for this input."""

    nodes: Mapping[str, NodeRecord]
    output_shape: Any
    findings: tuple[Finding, ...]
    input_shapes: Mapping[str, Shape] = field(default_factory=dict)
    input_data: Mapping[str, torch.Tensor] = field(default_factory=dict)
    """The inputs given with their data (:func:`~torchsurgeon.knowndata.given_as_data`: a sequence's lengths)."""

    @property
    def invalid(self) -> tuple[NodeRecord, ...]:
        """Nodes whose status is ``invalid``."""
        return tuple(n for n in self.nodes.values() if n.status == LayerStatus.INVALID)


class _Unknown:
    """Value of a node whose output could not be computed."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def __repr__(self) -> str:
        return f"<unknown since {self.origin}>"


# --------------------------------------------------------------------------- values


def meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers live on ``meta``.

    No weight data is copied and the original is not touched.

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Linear(3, 2); c = meta_copy(m)
    >>> c.weight.device.type, m.weight.device.type, c.weight.requires_grad
    ('meta', 'cpu', True)
    """
    return detached_copy(module, meta_like)  # without hooks that only look; a scalar integer buffer keeps its value


def shapes_of(value: Any) -> Any:
    """Shapes of the tensors in ``value`` (nested like ``value``), else None: the form of
    :attr:`ShapeResult.output_shape` and of every node's ``output_shape``.

    Examples
    --------
    >>> import torch
    >>> shapes_of((torch.empty(2, 3), {"a": torch.empty(4)}, 7))
    ((2, 3), {'a': (4,)}, None)
    """
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)  # torch.Size holds ints
    if isinstance(value, (int, float, str, bool, torch.Size)) or value is None:
        return None
    if isinstance(value, (list, tuple)) and first_tensor(value) is not None:  # nested too: ((a, b), (c, d))
        return tuple(shapes_of(v) for v in value)
    if isinstance(value, dict) and first_tensor(value) is not None:
        return {k: shapes_of(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # model outputs as dataclasses
        return shapes_of({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return None


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    """``float32`` for ``torch.float32``."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


def _dtype_of(value: Any) -> str | None:
    t = value if isinstance(value, torch.Tensor) else first_tensor(value)
    return _dtype_name(t.dtype) if t is not None else None


# --------------------------------------------------------------------------- interpreter


def _call_function(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # a wrapped Python function reading tensor values: one run on zeros if small
        return run_on_zeros(fn, args, kwargs, exc)


def _scalar_settings(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the call's tensors are all CPU scalars (:func:`~torchsurgeon.copies.meta_like` keeps a model's scalar
    integer buffers as such), at least one: its value is computed, not its shape."""
    found = False
    for value in (*args, *kwargs.values()):
        for item in value if type(value) in (list, tuple) else (value,):
            if isinstance(item, torch.Tensor):
                if item.is_meta or item.dim() != 0:
                    return False
                found = True
    return found


def _python_method(args: tuple[Any, ...]) -> bool:
    """A method of a Python value (a torch.Size, a tuple) with no tensor argument: running it is exact."""
    return not isinstance(args[0], torch.Tensor) and first_tensor(args) is None


_REUSABLE_OUTPUTS = frozenset({torch.Tensor, int, float, bool, torch.Size})


def _reusable(n: torch.fx.Node, rule: Rule | None, rec: NodeRecord, out: Any, inputs: tuple[Any, ...]) -> bool:
    """Whether a twin node given the same inputs may take this node's result: a layer that fits (no finding, no
    caution), its output by a built-in rule or, for a function on tensors, by running it on ``meta``; an output
    that cannot be edited (a tensor, a number, a tuple of them)."""
    if rec.status is not LayerStatus.OK or rec.message or rec.findings:
        return False
    if rec.shape_source is ShapeSource.RULE:
        if rule is None or not rule.builtin:
            return False
    elif rec.shape_source is not ShapeSource.META or n.op != "call_function":
        return False
    elif not all(type(v) is torch.Tensor for v in inputs):  # a function on Python objects may edit them
        return False
    kind = type(out)
    return kind in _REUSABLE_OUTPUTS or (kind is tuple and _REUSABLE_OUTPUTS.issuperset(map(type, out)))


class _ShapeInterpreter(torch.fx.Interpreter):
    """Runs the graph on meta tensors, recording a NodeRecord per node."""

    def __init__(
        self,
        G: nx.DiGraph,
        inputs: Mapping[str, Shape | TypedShape | torch.Tensor],
        batch: int,
        memo: ShapeMemo | None = None,
    ) -> None:
        # torch.fx.Interpreter.__init__ walks the module tree and the graph's uses on every call, and its
        # run_node maps every argument through fx's generic map_arg: the plan, cached with the graph,
        # does both once (the graph does not change between propagations)
        gm = graph_module_of(G)
        self.module = gm
        self.graph = gm.graph
        self.env = {}
        self.name = "Interpreter"
        self.steps = steps_of(G)
        self.memo = memo if memo is not None and memo.enabled else None
        self.shared = not reshapes_in_place(G)  # rules' outputs of one shape are one meta tensor (shared_outputs)
        self.G = G
        self.base = records_now(G)
        self.rules = rules_of(G)
        self.model = model_of(G)
        self.model_dtype = model_dtype(G)
        self.opaque = opaque_of(G)
        self.inputs = inputs
        self.batch = batch
        self.records: dict[str, NodeRecord] = {}
        self.input_shapes: dict[str, Shape] = {}
        self._meta_copies: dict[str, nn.Module] = {}
        self._unknown_seen = False  # no node has failed yet: inputs need no scan for unknown values
        self._shapes_given = not any(isinstance(v, torch.Tensor) for v in inputs.values())  # batch added to all
        self._target_now: Any = None  # the fx target of the node being run
        self.scalars: dict[str, Any] = {}  # node name -> its Python number (a size), for messages
        # twins (shapememo.twin_kinds) given the very values of an earlier one reuse its result: values are shared
        self.twins = twin_kinds(G) if self.shared else {}
        self._twin_results: dict[tuple[int, tuple[int, ...]], tuple[tuple[Any, ...], Any, dict[str, Any]]] = {}
        self._stand_ins: dict[tuple[Any, ...], torch.Tensor] = {}  # model tensors' meta stand-ins, one per kind
        self.known = KnownData()  # small tensors made from sizes, computed beside the meta values (knowndata)
        self._reads_known = False  # whether the node being run reads some
        self._axes = FollowedAxes()  # nodes moving an input's axes: the input and its axes
        self._fold_input = fold_inputs(shape_specific_of(G), inputs, self.model)  # the fix's input=, by layer

    def run_graph(self) -> Any:
        """Run every node once; return the value of the output node."""
        result: Any = None
        env, memo = self.env, self.memo
        scalars = self.scalars
        known = self.known
        values, ranges = known.values, known.ranges  # edited in place: the same dicts throughout
        for node, step in self.steps.items():
            self._reads_known = reads = bool(values or ranges) and known.reads(step.inputs)
            if step.autocast:  # in the model's torch.autocast block: a product may mix dtypes there
                with autocast_as(step.autocast):
                    value = self.run_node(node) if memo is None else self._run_memoised(node, memo)
                value = env[node] = self._autocast_output(node, step, value)
            else:
                value = env[node] = self.run_node(node) if memo is None else self._run_memoised(node, memo)
            if type(value) in (int, float, bool):  # sizes: messages formatted during the trace name their nodes
                scalars[node.name] = value
            if reads or step.makes_known:
                known.follow(node, env, reads)
            if step.moves:
                self._axes.follow(node, step, value, self.env, self.steps)
            for to_delete in step.last_uses:
                del env[to_delete]
            if node.op == "output":
                result = env[node]
        return result

    def _autocast_output(self, n: torch.fx.Node, step: Step, value: Any) -> Any:
        """``value`` in the dtype autocast gives the node's output (meta tensors are not autocast's), its record too."""
        inputs = [v.dtype for a in step.inputs if isinstance(v := self.env.get(a), torch.Tensor)]
        cast = as_autocast_gives(op_name(n.op, n.target, step.module), inputs, step.autocast, value)
        if cast is value or n.name not in self.records:
            return value
        record = self.records[n.name]
        if record.status is not LayerStatus.UNKNOWN:
            self.records[n.name] = dataclasses.replace(record, dtype=_dtype_of(cast))
        return cast

    def _run_memoised(self, n: torch.fx.Node, memo: ShapeMemo) -> Any:
        if n.op == "output":
            return self.run_node(n)
        if n.op == "placeholder":
            return memo.canonical(n.name, self.run_node(n))
        if self._reads_known:  # what it gives depends on data: never from another input
            return self._run_node(n)
        env = self.env
        inputs = tuple([env[a] for a in self.steps[n].inputs])
        key = (n.name, tuple(map(id, inputs)))  # the inputs are kept alive in the memo: ids stay unique
        hit = memo.calls.get(key)
        if hit is not None:
            memo.hits += 1
            self.records[n.name] = hit[2]
            if hit[2].status not in (LayerStatus.OK, LayerStatus.OPAQUE):
                self._unknown_seen = True
            return hit[1]
        twin = self.twins.get(n)
        value = memo.canonical(n.name, self._run_node(n) if twin is None else self._run_twin(n, twin, inputs))
        record = self.records[n.name]
        if not record.message:  # a message may name this input's sizes (a torch._assert's f-string): never reused
            memo.calls[key] = (inputs, value, record)
        return value

    def _fresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Arguments for code we do not control: with a memo or shared outputs, new aliases, so in-place edits stay
        local.  Each alias keeps its tensor's strides, those of size-1 dims too (``view`` would rewrite them): they
        decide the memory format ``cat`` gives its output, and so whether a later ``.view()`` runs."""
        if self.memo is None and not self.shared:
            return args, kwargs
        fresh: tuple[Any, Any] = thawed(
            map_aggregate(
                (args, kwargs),
                lambda v: v.as_strided(v.shape, v.stride(), v.storage_offset()) if isinstance(v, torch.Tensor) else v,
            )
        )
        return fresh

    def _record(
        self,
        base: NodeRecord,
        ins: tuple[Any, ...],
        out: Any,
        status: LayerStatus,
        message: str = "",
        findings: tuple[Finding, ...] = (),
        source: ShapeSource = ShapeSource.NONE,
        counts: tuple[int, int, FlopKind, bool] = (0, 0, FlopKind.NONE, True),
    ) -> None:
        macs, flops, kind, known = counts
        dtype: str | None
        if isinstance(out, torch.Tensor):  # most nodes: shapes_of and _dtype_of for one tensor
            shape, dtype = tuple(out.shape), _dtype_name(out.dtype)
        else:
            shape, dtype = shapes_of(out), _dtype_of(out)
        self.records[base.name] = base.analysed(
            ins, shape, dtype, status, message, findings, source, macs, flops, kind, known
        )

    def run_node(self, n: torch.fx.Node) -> Any:
        twin = self.twins.get(n)
        if twin is None or self._reads_known:
            return self._run_node(n)
        env = self.env
        return self._run_twin(n, twin, tuple([env[a] for a in self.steps[n].inputs]))

    def _run_twin(self, n: torch.fx.Node, twin: int, inputs: tuple[Any, ...]) -> Any:
        """A node that has twins (:func:`twin_kinds`): the result of the first of them given the same inputs."""
        key = (twin, tuple(map(id, inputs)))  # the inputs are kept alive with the result: ids stay unique
        hit = self._twin_results.get(key)
        if hit is not None:
            self.records[n.name] = self.base[n.name].with_analysis(hit[2])
            return hit[1]
        out = self._run_node(n)
        rec = self.records[n.name]
        if _reusable(n, self.rules[n][0], rec, out, inputs):
            self._twin_results[key] = (inputs, out, rec.analysis)
        return out

    def _run_node(self, n: torch.fx.Node) -> Any:
        base = self.base[n.name]
        step = self.steps[n]
        op = n.op
        self._target_now = n.target
        if op == "placeholder":
            return self._placeholder(n, base)
        if op == "output":
            return step.fetch(self.env)[0][0]
        if op == "get_attr":
            value = self.fetch_attr(str(n.target))
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                if str(n.target).startswith("_tensor_constant") and given_as_data(value):  # torch.arange(8), made
                    self.known.values[n] = value.clone()  # while tracing: known data, as the factory's would be
                value = meta_like(value)  # a scalar integer buffer keeps its value (paddings computed from it)
                if self.shared and type(value) is torch.Tensor and value.is_meta:  # as rules' outputs (twins hit)
                    value = self._stand_ins.setdefault((value.shape, value.stride(), value.dtype), value)
            self._record(base, (), value, LayerStatus.OK)  # read from the model: no shape computed
            return value
        args, kwargs = step.fetch(self.env)
        edit = container_edit(n, args, kwargs) if op != "call_module" else None
        if edit is not None:  # a list or dict edited in place: the edited copy stands for it from here on
            self.env[n.args[0]] = edit[0]  # type: ignore[index]
            self._record(base, (), edit[1], LayerStatus.OK, counts=(0, 0, FlopKind.NONE, True), source=ShapeSource.RULE)
            return edit[1]
        if len(args) == 1 and type(args[0]) is torch.Tensor and not kwargs:  # most layers: one tensor
            ins: tuple[Any, ...] = (tuple(args[0].shape),)
        else:
            ins = tuple([d for a in args if (d := shapes_of(a)) is not None])
            if kwargs:
                ins += tuple([d for a in kwargs.values() if (d := shapes_of(a)) is not None])
        if self._unknown_seen:
            unknown = first_of((args, kwargs), _Unknown)
            if unknown is not None:
                self._record(base, ins, None, LayerStatus.UNKNOWN, f"input unknown (since {unknown.origin})")
                return unknown
        if self._reads_known:  # an index into a table by positions made from sizes: it may point past its end
            finding = self.known.past_the_end(n, self.env, step.module, base.layer, base.module_type, base.where)
            if finding is not None:
                self._record(base, ins, None, LayerStatus.INVALID, finding.message, (finding,), ShapeSource.RULE)
                self._unknown_seen = True
                return _Unknown(base.layer)
            args = self.known.with_masks_as_indices(n, args)  # x[known_mask]: the positions it selects
        if not ins and op == "call_function" and base.layer not in self.opaque:
            out = self._python_value(n, base, args, kwargs)
            if out is not FALLBACK:
                return out
        if op != "call_module" and base.layer not in self.opaque and _scalar_settings(args, kwargs):
            out = self._setting_value(n, base, ins, args, kwargs)
            if out is not FALLBACK:
                return out
        module = step.module
        rule, direct = self.rules[n]
        if rule is not None and op == "call_method" and _python_method(args):
            rule = None  # a method of a Python value (a torch.Size): run as it is
        if rule is not None and rule.shape is not None:
            moved = self._axes.moved_input(step) if step.reads_moved else None
            call = Call(
                base.layer,
                base.module_type,
                step.from_input or moved is not None,
                base.scope,
                step.scope_module,
                self._shapes_given and step.from_input,  # after a reshape, dim 0 is not the batch the user left out
                step.pooled,
                self.model_dtype,
                fold_input=self._fold_input(n, module, moved) if step.from_input or moved is not None else None,
                fold_layout=moved[2:] if moved is not None else (1, 0),
                fold_alone=functools.partial(fold_alone_at, self.G, self.input_shapes) if step.from_input else None,
                where=base.where,
                whole_model=module is self.model,
            )
            if direct:
                out = self._apply(rule, module, args, kwargs, call)
                if out is not FALLBACK:
                    return self._ruled(base, ins, out, call, rule, module, args, kwargs)
            elif rule.fits and module is not None:
                out = self._resized_forward(module, args, kwargs, call, rule)
                if out is not FALLBACK:
                    finding = call.findings[0]
                    counts = self._counts(rule, module, args, kwargs, out, base)
                    self._record(
                        base, ins, out, LayerStatus.INVALID, finding.message, (finding,), ShapeSource.META, counts
                    )
                    return out
        status = LayerStatus.OPAQUE if base.layer in self.opaque else LayerStatus.OK
        fresh_args, fresh_kwargs = self._fresh(args, kwargs)
        calling: Callable[[tuple[Any, ...], dict[str, Any]], Any]
        if n.op == "call_module":
            assert module is not None
            target = str(n.target)
            calling = lambda a, k: self._module_call(target, module, a, k)  # noqa: E731
        elif n.op == "call_function":
            fn = n.target
            assert callable(fn)
            calling = lambda a, k: _call_function(fn, a, k)  # noqa: E731
        else:
            method = str(n.target)
            calling = lambda a, k: getattr(a[0], method)(*a[1:], **k)  # noqa: E731
        run: Callable[[], Any] = lambda: calling(fresh_args, fresh_kwargs)  # noqa: E731
        if self._reads_known and op != "call_module":  # all its inputs known (BART's unique_consecutive): the CPU's
            self.known.follow(n, self.env, True)
            run = (lambda v=self.known.values[n]: v) if n in self.known.values else run  # type: ignore[misc]
        if self._reads_known and n not in self.known.values:  # an op refusing stand-ins: its inputs' known data
            run = self.known.or_with_data(n, self.env, run, calling)
        out = self._execute(n, base, ins, status, run, rule, module, args, kwargs, step.from_input)
        if isinstance(out, _Unknown) and step.from_input and module is not None:
            return self._as_folded(n, base, ins, module, args, kwargs, out)
        return out

    def _python_value(self, n: torch.fx.Node, base: NodeRecord, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A Python operator on Python values (``x.shape[2] // window``, ``Rule.python``): its value, recorded as
        its rule would record it (Swin-like models do hundreds; the general path costs several times more)."""
        rule = self.rules[n][0]
        if rule is None or not rule.python:  # rules disabled, the user's own, or not plain Python: the general path
            return FALLBACK
        try:
            out = n.target(*args, **kwargs)  # type: ignore[operator]
        except Exception:  # the general path records the error
            return FALLBACK
        if isinstance(out, torch.Tensor):
            return FALLBACK
        self._record(base, (), out, LayerStatus.OK, counts=(0, 0, rule.kind, True), source=ShapeSource.RULE)
        return out

    def _setting_value(
        self, n: torch.fx.Node, base: NodeRecord, ins: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """An op on the model's scalar settings only (Encodec's paddings from its ``stride`` buffer): run as it is,
        exact and one element; FALLBACK when it fails (the general path records why)."""
        try:
            if n.op == "call_function":
                out = n.target(*args, **kwargs)  # type: ignore[operator]
            else:
                out = getattr(args[0], str(n.target))(*args[1:], **kwargs)
        except Exception:
            return FALLBACK
        self._record(base, ins, out, LayerStatus.OK, counts=(0, 0, FlopKind.NONE, True), source=ShapeSource.RULE)
        return out

    def _as_folded(
        self,
        n: torch.fx.Node,
        base: NodeRecord,
        ins: tuple[Any, ...],
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        failed: _Unknown,
    ) -> Any:
        """An opaque layer reading the model input that refuses its channel count (a transformers patch
        embedding checks ``config.num_channels``): its output once its input convolution (or patch Linear) is folded.

        A fold changes only that convolution and the settings guarding the channel count, so the output
        is the layer's output on the channel count it expects; it is invalid, with the fold as its fix.
        """
        target = str(n.target)
        for candidate in as_folded_inputs(module, args):  # the channel dim it accepts
            try:
                with torch.device("meta"), ruled_meta():
                    out = as_meta(self._module_call(target, module, *self._fresh(candidate[0], kwargs)))
                break
            except Exception:  # not the channel dim, or it fails for another reason too
                continue
        else:  # the first error stands
            return failed
        fitting, name, conv, got = candidate
        layer = f"{target}.{name}" if name else target
        takes = next(tuple(a.shape[1:]) for a, b in zip(fitting, args, strict=True) if a is not b)
        what, width, gets = width_expected_and_got(conv, got, takes[0])
        now = repr(takes) if what == "in_features" and len(self.inputs) == 1 else ""  # a patch Linear's fold: on it
        finding = Finding(layer, type(conv).__name__, what, width, gets, input_fix(conv, got, now))
        message = f"{base.layer} ({base.module_type}): {finding.message}"
        unknown = (0, 0, FlopKind.NONE, False)
        self._record(base, ins, out, LayerStatus.INVALID, message, (finding,), ShapeSource.META, unknown)
        return out

    def _apply(self, rule: Rule, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
        """The rule's output, or FALLBACK; a user rule that raises marks the layer invalid."""
        assert rule.shape is not None
        if not rule.builtin:  # the user's code may change its tensors' shapes in place
            args, kwargs = self._fresh(args, kwargs)
        try:
            return rule.shape(module, args, kwargs, call)
        except Exception as exc:
            if rule.builtin:  # the op raises on these arguments: meta execution records torch's message
                return FALLBACK
            call.mismatch("input", "what its registered rule accepts", "an input it rejects", first_line(exc))
            return None

    def _ruled(
        self,
        base: NodeRecord,
        ins: tuple[Any, ...],
        out: Any,
        call: Call,
        rule: Rule,
        module: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if call.findings:
            findings = tuple(call.findings)
            status, message = LayerStatus.INVALID, "; ".join(f.message for f in findings)
            if out is None:  # no output (a rank mismatch): what follows is unknown
                self._record(base, ins, None, status, message, findings, ShapeSource.RULE, (0, 0, rule.kind, False))
                self._unknown_seen = True
                return _Unknown(base.layer)
        elif base.layer in self.opaque:
            findings, status, message = (), LayerStatus.OPAQUE, self.opaque[base.layer]
        else:  # a layer that fits may still need more of the batch (call.caution)
            findings, status, message = (), LayerStatus.OK, "; ".join(call.cautions) if call.cautions else ""
        counts = self._counts(rule, module, args, kwargs, out, base)
        if type(out) is torch.Tensor:  # most nodes: _record's work for one tensor
            self.records[base.name] = base.analysed(
                ins, tuple(out.shape), _dtype_name(out.dtype), status, message, findings, ShapeSource.RULE, *counts
            )
        else:
            self._record(base, ins, out, status, message, findings, ShapeSource.RULE, counts)
        return out

    def _counts(
        self, rule: Rule | None, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, base: NodeRecord
    ) -> tuple[int, int, FlopKind, bool]:
        """(macs, flops, kind, known) of a node whose output is known."""
        if rule is not None and rule.counts:
            try:
                macs = rule.macs(module, args, kwargs, out) if rule.macs is not None else 0
                extra = rule.flops(module, args, kwargs, out) if rule.flops is not None else 0
            except Exception:  # a formula that does not apply to these arguments
                return 0, 0, rule.kind, False
            return macs, 2 * macs + extra, rule.kind, True
        if base.layer in self.opaque:
            return 0, 0, FlopKind.NONE, False
        return 0, 0, FlopKind.NONE, counted_without_formula(base.op, self._target_now, module, rule)

    def _counted_by_its_calls(self, rule: Rule | None, module: Any, base: NodeRecord) -> bool:
        """A node without a formula that may compute (a user function recorded as one call, a layer with weights):
        its MACs are those of the torch calls it makes (:class:`~torchsurgeon.rules.on_meta.FlopTally`)."""
        if (rule is not None and rule.counts) or base.layer in self.opaque:
            return False
        return not counted_without_formula(base.op, self._target_now, module, rule)

    def _resized_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call, rule: Rule
    ) -> Any:
        """A subclass layer with its own forward that does not fit: its forward on a resized meta copy."""
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            return FALLBACK
        self._apply(rule, module, args, kwargs, call)  # only its findings matter
        if len(call.findings) != 1:
            call.findings.clear()
            return FALLBACK
        resized = resized_copy(module, call.findings[0])
        if resized is None:
            call.findings.clear()
            return FALLBACK
        (x,), _ = self._fresh(args, {})
        try:
            with torch.device("meta"), ruled_meta():
                out = type(resized).forward(resized.eval(), x)
        except Exception:  # the generic path reports torch's message
            call.findings.clear()
            return FALLBACK
        return out if isinstance(out, torch.Tensor) else FALLBACK

    def _module_call(self, key: str, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if key not in self._meta_copies:  # a copy in eval mode: batch=1 must not trip training-only checks
            self._meta_copies[key] = meta_copy(module).eval()
            for inner in self._meta_copies[key].modules():  # its fast path in eval makes nested tensors of a
                if isinstance(inner, nn.TransformerEncoder):  # padding mask, which meta cannot: the plain path
                    inner.use_nested_tensor = False
        copy_ = self._meta_copies[key]
        # bypass the leaf's own hooks: the trace recorded those that change values around its node
        try:
            return class_forward(copy_)(*args, **kwargs)
        except Exception as exc:  # Python code on tensor values: one run on zeros if small
            return run_on_zeros(module, args, kwargs, exc)

    def _execute(
        self,
        n: torch.fx.Node,
        base: NodeRecord,
        ins: tuple[Any, ...],
        status: LayerStatus,
        call: Callable[[], Any],
        rule: Rule | None,
        module: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        from_input: bool,
    ) -> Any:
        layer = base.layer
        # a value computed from known data on the CPU (self.known) makes no calls here: not counted, as before
        tally = FlopTally() if n not in self.known.values and self._counted_by_its_calls(rule, module, base) else None
        try:
            with torch.device("meta"), ruled_meta(counting=tally):  # tensors the op creates land on meta too
                out = as_meta(call())  # its ops by rule; known data made inside (positions) leaves as meta stand-ins
        except Exception as exc:
            # ``f"... got {h}"`` formatted while tracing reads ``Proxy(getitem_2)``: the number it stands for
            text = with_numbers(first_line(exc), self.scalars)
            if isinstance(exc, AssertionError) and base.op == "call_function":  # torch._assert in a forward
                text += f" (asserted by the forward of {base.scope or 'the model'})"
            unknown = (0, 0, FlopKind.NONE, False)
            if isinstance(exc, NotImplementedError) or "meta" in text.lower() or "data-dependent" in text.lower():
                text += self._data_hint(n)
                self._record(
                    base, ins, None, LayerStatus.UNKNOWN, f"cannot run on meta: {text}", (), ShapeSource.META, unknown
                )
            else:
                kind = base.module_type
                if "values to unpack" in text:  # unpacking an input's shape: was it given with its batch?
                    text += per_sample_hint(self.inputs, self.batch)
                text += clamped_slice_hint(n, self.fetch_attr, self.scalars)  # BERT's position_ids[:, :72]
                if from_input:  # a stem replaced by hand, config.num_channels not (what guards the model's input)
                    text += stale_guards_fix(self.model, layer, ins)
                finding = Finding(layer, kind, "input", "a compatible input", str(ins), text, base.where)
                message = f"{base.label} fails on {ins}: {text}"
                self._record(base, ins, None, LayerStatus.INVALID, message, (finding,), ShapeSource.META, unknown)
            self._unknown_seen = True
            return _Unknown(layer)
        counts = self._counts(rule, module, args, kwargs, out, base) if tally is None else tally.counts()
        self._record(base, ins, out, status, self.opaque.get(layer, ""), (), ShapeSource.META, counts)
        return out

    def _data_hint(self, n: torch.fx.Node) -> str:
        """What a node that meta cannot run needs, when the data of inputs given as shapes decides it (a sequence's
        lengths): the fix that gives them with their data; else nothing."""
        deciding = self.known.inputs_deciding(n, self.env)
        if not deciding:
            return ""
        names = {str(p.target).lstrip("*") for p in deciding}
        inputs = {
            name: (shape, self.records[p.name].dtype or "", name in names)
            for p in n.graph.nodes
            if p.op == "placeholder"
            and (name := str(p.target).lstrip("*")) in self.input_shapes
            and isinstance(shape := self.input_shapes[name], tuple)
        }
        for name in names & inputs.keys() if packed_lengths(n) is not None else ():  # one length a sequence: 1-D int64
            inputs[name] = (inputs[name][0][:1], "int64", True)
        return f" — {data_fix(inputs)}"

    def _placeholder(self, n: torch.fx.Node, base: NodeRecord) -> Any:
        name = str(n.target).lstrip("*")
        value: Any
        if name in self.inputs:
            spec = self.inputs[name]
            if isinstance(spec, torch.Tensor):
                value = spec if spec.is_meta else torch.empty_like(spec, device="meta")
                if given_as_data(spec):
                    self.known.values[n] = spec.clone()  # a small tensor given with its data: known, as in the trace
            elif isinstance(spec, TypedShape):
                value = spec.meta(self.batch)
            else:
                value = torch.empty((self.batch, *spec), dtype=placeholder_dtype(n, self.model), device="meta")
            self.input_shapes[name] = tuple(value.shape)
        elif n.args:
            value = n.args[0]  # the default value of the argument
        else:
            raise InputError(missing_input(name, self.inputs))
        self._record(base, (), value, LayerStatus.OK)
        return value


@in_plain_torch
def propagate_shapes(G: nx.DiGraph, input: InputSpec, *, batch: int = 1, memo: ShapeMemo | None = None) -> ShapeResult:
    """Propagate an input shape through the traced graph ``G`` and annotate its nodes.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`; each node's record gets
        its shapes, dtype, status, message, findings, shape source and MACs.
    input : shape, tensor, tuple of shapes, or mapping
        Per-sample shape(s), batch excluded: ``(1, 224, 224)``; see
        :func:`normalize_input`.  Any channel count and size.
    batch : int
        Batch size prepended to every shape.
    memo : ShapeMemo, optional
        Results of earlier propagations through ``G`` to reuse (a sweep over
        inputs); built with ``ShapeMemo(G)``.

    Returns
    -------
    ShapeResult
        Every node's shape and status, the model output shape and the findings.

    Raises
    ------
    InputError
        For malformed shapes or batch, or a memo made for another graph.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.trace import trace
    >>> from torchsurgeon.graph import build_graph
    >>> G = build_graph(trace(nn.Sequential(nn.Conv2d(3, 6, 5), nn.Flatten(), nn.Linear(6 * 28 * 28, 10))))
    >>> r = propagate_shapes(G, (1, 32, 32))
    >>> r.output_shape
    (1, 10)
    >>> [f.message for f in r.findings]
    ['0 (Conv2d) expects in_channels=3, got 1 — fold it with adapt_input_channels(model, 1)']
    """
    check_graph(G, "propagate_shapes", "propagate_shapes(build_graph(trace(model)), input)")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise InputError(f"batch={batch!r} — the batch size must be a positive int")
    inputs = normalize_input(input, list(placeholders(graph_module_of(G))))
    check_inputs_read(model_of(G), input, unread_inputs(graph_module_of(G)))  # one forward would silently ignore
    if memo is not None and memo.graph_module is not graph_module_of(G):
        raise InputError("this ShapeMemo was made for another graph — make one per graph: ShapeMemo(G)")
    interp = _ShapeInterpreter(G, inputs, batch, memo)
    try:
        with torch.no_grad(), shared_outputs(interp.shared):  # fallbacks run under torch.device("meta")
            out = interp.run_graph()
    except InputError:
        raise
    except Exception as exc:  # pragma: no cover - run_node catches per node
        raise ShapeError(f"shape propagation failed: {first_line(exc)}") from exc
    set_records(G, interp.records.values())
    findings = findings_of(interp.records.values())  # a layer called twice: what it finds, once
    output_shape = shapes_of(out)
    update_record(G, "output", output_shape=output_shape, dtype=_dtype_of(out))
    data = {k: v for k, v in interp.inputs.items() if isinstance(v, torch.Tensor) and given_as_data(v)}
    return ShapeResult(dict(interp.records), output_shape, findings, dict(interp.input_shapes), data)
