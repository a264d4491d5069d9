"""Shape propagation for any input shape, past layers that do not fit.

Follows the torch.fx Interpreter pattern (torch/fx/passes/shape_prop.py):
one ``run_node`` override, one public entry, :func:`propagate_shapes`.
No real activation is allocated: values are tensors on the ``meta`` device.

Layers whose fit depends on the input (convolutions, linear layers, norms,
embeddings) have closed-form rules.  When such a layer does not fit, it is
marked ``invalid`` with a :class:`~torchsurgeon.records.Finding` (expected vs
got, and the fix) and propagation continues *as if the layer had been resized
to fit*, so one call reports every invalid layer, like a type checker.
Everything else runs on ``meta``: parameter-free modules and functions
directly, modules with weights through a meta copy (the user's model is
never touched).  A node that cannot run is ``invalid`` (a shape error) or
``unknown`` (no meta kernel, data-dependent); nodes after it are ``unknown``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import networkx as nx
import torch
import torch.fx
from torch import nn
from torch.fx.node import map_aggregate

from .errors import InputError, ShapeError
from .graph import annotate, fx_nodes
from .records import Finding, Status

__all__ = ("InputSpec", "NodeShape", "ShapeResult", "normalize_input", "propagate_shapes")

Shape = tuple[int, ...]
InputSpec = Union[Sequence[int], torch.Size, torch.Tensor, Sequence[Any], Mapping[str, Any]]


@dataclass(frozen=True)
class NodeShape:
    """The propagated shape of one graph node."""

    node: str
    input_shapes: tuple[Any, ...]
    output_shape: Any
    dtype: str | None
    status: Status
    message: str = ""
    finding: Finding | None = None
    rule: str = "-"


@dataclass(frozen=True)
class ShapeResult:
    """Result of :func:`propagate_shapes`."""

    nodes: Mapping[str, NodeShape]
    output_shape: Any
    findings: tuple[Finding, ...]
    input_shapes: Mapping[str, Shape] = field(default_factory=dict)

    @property
    def invalid(self) -> tuple[NodeShape, ...]:
        """Nodes whose status is ``invalid``."""
        return tuple(n for n in self.nodes.values() if n.status == Status.INVALID)


class _Unknown:
    """Value of a node whose output could not be computed."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def __repr__(self) -> str:
        return f"<unknown since {self.origin}>"


# --------------------------------------------------------------------------- input


def _check_shape(shape: Any, where: str) -> Shape:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise InputError(
            f"{where}: expected a shape such as (3, 224, 224), got {shape!r} — "
            "give the per-sample shape as a tuple of positive ints; the batch is added (batch=1)"
        )
    dims = tuple(shape)
    if not dims:
        raise InputError(f"{where}: the shape is empty — give the per-sample shape, e.g. (3, 224, 224)")
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int):
            if isinstance(d, float) and d.is_integer():
                hint = f"use {int(d)}"
            else:
                hint = "dimensions are whole numbers"
            raise InputError(f"{where}: dimension {i} is {d!r} ({type(d).__name__}) in shape {dims!r} — {hint}")
        if d <= 0:
            raise InputError(
                f"{where}: dimension {i} is {d} in shape {dims!r} — every dimension must be a positive int"
            )
    return dims


def normalize_input(spec: InputSpec, placeholders: Sequence[str]) -> dict[str, Shape | torch.Tensor]:
    """Map an input spec to ``{placeholder name: per-sample shape or tensor}``.

    Parameters
    ----------
    spec : shape, tensor, tuple of shapes, or mapping
        ``(3, 224, 224)`` for one input; ``((3, 224, 224), (1, 224, 224))``
        for several positional inputs; ``{"image": (3, 224, 224)}`` by name;
        a tensor (real or ``meta``) is used as it is, batch included.
    placeholders : sequence of str
        The names of ``forward``'s inputs, in order.

    Returns
    -------
    dict
        Per-sample shapes (batch not yet added) or tensors, by input name.

    Raises
    ------
    InputError
        For malformed shapes (zero, negative, non-integer dims) or names
        that are not inputs of the model.

    Examples
    --------
    >>> normalize_input((3, 32, 32), ["x"])
    {'x': (3, 32, 32)}
    >>> normalize_input({"mask": [1, 8, 8]}, ["image", "mask"])
    {'mask': (1, 8, 8)}
    """
    if not placeholders:
        raise InputError("the model's forward takes no inputs — nothing to propagate")
    if isinstance(spec, torch.Tensor):
        return {placeholders[0]: spec}
    if isinstance(spec, Mapping):
        out: dict[str, Shape | torch.Tensor] = {}
        for name, value in spec.items():
            if name not in placeholders:
                raise InputError(f"input {name!r} is not an argument of forward — the inputs are {list(placeholders)}")
            out[name] = value if isinstance(value, torch.Tensor) else _check_shape(value, f"input {name!r}")
        return out
    if (
        isinstance(spec, (list, tuple))
        and spec
        and all(isinstance(s, (list, tuple, torch.Size, torch.Tensor)) for s in spec)
    ):
        if len(spec) > len(placeholders):
            raise InputError(
                f"{len(spec)} input shapes given, but forward takes {len(placeholders)} "
                f"inputs ({list(placeholders)}) — give one shape per input"
            )
        return {
            name: s if isinstance(s, torch.Tensor) else _check_shape(s, f"input {name!r}")
            for name, s in zip(placeholders, spec)
        }
    return {placeholders[0]: _check_shape(spec, "input shape")}


def _input_dtype(G: nx.DiGraph, node: torch.fx.Node, model: nn.Module) -> torch.dtype:
    """Integer inputs for embeddings, else the model's floating dtype."""
    for user in node.users:
        if user.op == "call_module" and isinstance(model.get_submodule(str(user.target)), nn.Embedding):
            return torch.long
        if user.op == "call_function" and user.target is torch.nn.functional.embedding:
            return torch.long
    for p in itertools.chain(model.parameters(), model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


# --------------------------------------------------------------------------- rules


def _meta(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device="meta")


@dataclass
class _Ctx:
    layer: str
    type: str
    from_input: bool
    findings: list[Finding] = field(default_factory=list)

    def mismatch(self, what: str, expected: Any, got: Any, fix: str) -> None:
        self.findings.append(Finding(self.layer, self.type, what, expected, got, fix))


def _rank(ctx: _Ctx, x: torch.Tensor, ranks: tuple[int, ...], layout: str) -> bool:
    if x.dim() in ranks:
        return True
    ctx.mismatch(
        "input rank",
        " or ".join(str(r) for r in ranks) + f" {layout}",
        f"{x.dim()} {tuple(x.shape)}",
        "give the per-sample shape without the batch dimension (batch= adds it)"
        if ctx.from_input
        else "the previous layer gives a tensor of another rank: reshape before this layer",
    )
    return False


def _channel_fix(ctx: _Ctx, got: int, rebuild: str) -> str:
    if ctx.from_input:
        return f"fold it with adapt_input_channels(model, {got})"
    return f"the layer before gives {got}: make it give the expected value, or rebuild as {rebuild} (new weights)"


def _conv_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, (nn.modules.conv._ConvNd))
    nsp = len(m.kernel_size)
    if not _rank(ctx, x, (nsp + 2, nsp + 1), "(N, C, *spatial) or (C, *spatial)"):
        return None
    batched = x.dim() == nsp + 2
    c = int(x.shape[1 if batched else 0])
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    if c != m.in_channels:
        args = f"{c}, {m.out_channels}, kernel_size={tuple(m.kernel_size)}"
        ctx.mismatch("in_channels", m.in_channels, c, _channel_fix(ctx, c, f"{type(m).__name__}({args})"))
        if c % m.groups:
            ctx.mismatch(
                "in_channels % groups", 0, f"{c} % {m.groups}", f"use a channel count divisible by groups={m.groups}"
            )
    out_sp = []
    for i, size in enumerate(x.shape[-nsp:]):
        k, s, d = m.kernel_size[i], m.stride[i], m.dilation[i]
        if transposed:
            assert isinstance(m, nn.modules.conv._ConvTransposeNd)
            p = m.padding[i]  # type: ignore[index]
            o = (size - 1) * s - 2 * int(p) + d * (k - 1) + m.output_padding[i] + 1
        elif isinstance(m.padding, str):
            o = size if m.padding == "same" else (size - d * (k - 1) - 1) // s + 1
        else:
            o = (size + 2 * int(m.padding[i]) - d * (k - 1) - 1) // s + 1
        if o <= 0:
            need = d * (k - 1) + 1 - (0 if isinstance(m.padding, str) else 2 * int(m.padding[i]))  # type: ignore[index]
            ctx.mismatch(
                f"spatial size (dim {i})",
                f">= {need}",
                size,
                "use a larger input, or less downsampling before this layer",
            )
            o = 1
        out_sp.append(o)
    lead = (x.shape[0],) if batched else ()
    return _meta((*lead, m.out_channels, *out_sp), x)


def _linear_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.Linear)
    if not _rank(ctx, x, tuple(range(1, 9)), "(..., in_features)"):
        return None
    got = int(x.shape[-1])
    if got != m.in_features:
        fix = (
            f"rebuild as nn.Linear({got}, {m.out_features}) (new weights), or feed an input that gives "
            f"{m.in_features} features (an nn.AdaptiveAvgPool before flatten makes it size-independent)"
        )
        ctx.mismatch("in_features", m.in_features, got, fix)
    return _meta((*x.shape[:-1], m.out_features), x)


_NORM_RANKS: dict[type[nn.Module], tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3),
    nn.BatchNorm2d: (4,),
    nn.BatchNorm3d: (5,),
    nn.InstanceNorm1d: (2, 3),
    nn.InstanceNorm2d: (3, 4),
    nn.InstanceNorm3d: (4, 5),
}


def _batchnorm_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.modules.batchnorm._NormBase)
    ranks = _NORM_RANKS.get(type(m), (2, 3, 4, 5))
    if not _rank(ctx, x, ranks, "(N, C, ...)"):
        return None
    channel_dim = 0 if isinstance(m, nn.modules.instancenorm._InstanceNorm) and x.dim() == min(ranks) else 1
    got = int(x.shape[channel_dim])
    checks = m.affine or m.track_running_stats or not isinstance(m, nn.modules.instancenorm._InstanceNorm)
    if checks and got != m.num_features:
        ctx.mismatch("num_features", m.num_features, got, _channel_fix(ctx, got, f"{type(m).__name__}({got})"))
    return _meta(x.shape, x)


def _groupnorm_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.GroupNorm)
    if not _rank(ctx, x, tuple(range(2, 9)), "(N, C, ...)"):
        return None
    got = int(x.shape[1])
    if got != m.num_channels:
        rebuild = f"GroupNorm({m.num_groups}, {got})"
        ctx.mismatch("num_channels", m.num_channels, got, _channel_fix(ctx, got, rebuild))
    if got % m.num_groups:
        ctx.mismatch(
            "channels % num_groups", 0, f"{got} % {m.num_groups}", "use a channel count divisible by num_groups"
        )
    return _meta(x.shape, x)


def _layernorm_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.LayerNorm)
    n = len(m.normalized_shape)
    got = tuple(int(d) for d in x.shape[-n:]) if x.dim() >= n else tuple(x.shape)
    if got != tuple(m.normalized_shape):
        rebuild = f"LayerNorm({got if n > 1 else got[-1] if got else ()})"
        ctx.mismatch(
            "normalized_shape", tuple(m.normalized_shape), got, _channel_fix(ctx, got[-1] if got else 0, rebuild)
        )
    return _meta(x.shape, x)


def _embedding_rule(m: nn.Module, ctx: _Ctx, x: torch.Tensor) -> torch.Tensor | None:
    assert isinstance(m, nn.Embedding)
    if x.is_floating_point():
        ctx.mismatch("input dtype", "an integer dtype (token ids)", str(x.dtype), "pass a torch.long tensor as input")
    return torch.empty((*x.shape, m.embedding_dim), dtype=m.weight.dtype, device="meta")


_Rule = Callable[[nn.Module, _Ctx, torch.Tensor], Union[torch.Tensor, None]]

_MODULE_RULES: dict[type[nn.Module], _Rule] = {
    **{
        t: _conv_rule
        for t in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    },
    nn.Linear: _linear_rule,
    **{
        t: _batchnorm_rule
        for t in (
            nn.BatchNorm1d,
            nn.BatchNorm2d,
            nn.BatchNorm3d,
            nn.SyncBatchNorm,
            nn.InstanceNorm1d,
            nn.InstanceNorm2d,
            nn.InstanceNorm3d,
        )
    },
    nn.GroupNorm: _groupnorm_rule,
    nn.LayerNorm: _layernorm_rule,
    nn.Embedding: _embedding_rule,
}


def has_rule(module: nn.Module) -> bool:
    """Whether ``module`` has a closed-form shape rule (exact type match)."""
    return type(module) in _MODULE_RULES


# --------------------------------------------------------------------------- interpreter


def _on_meta(module: nn.Module) -> bool:
    return all(t.device.type == "meta" for t in itertools.chain(module.parameters(), module.buffers()))


def meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers live on ``meta``.

    No weight data is copied and the original is not touched.

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Linear(3, 2)
    >>> c = meta_copy(m)
    >>> c.weight.device.type, m.weight.device.type, c.weight.requires_grad
    ('meta', 'cpu', True)
    """
    memo: dict[int, Any] = {}
    for p in module.parameters(recurse=True):
        if id(p) not in memo:
            memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in module.buffers(recurse=True):
        if id(b) not in memo:
            memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.device.type != "meta":
        return torch.empty_like(value, device="meta")
    return value


def _describe(value: Any) -> Any:
    """Shapes of the tensors in ``value`` (nested like ``value``), else None."""
    if isinstance(value, torch.Tensor):
        return tuple(int(d) for d in value.shape)
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return tuple(_describe(v) for v in value)
    if isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values()):
        return {k: _describe(v) for k, v in value.items()}
    return None


def _first_tensor(value: Any) -> torch.Tensor | None:
    found: list[torch.Tensor] = []
    map_aggregate(value, lambda v: found.append(v) if isinstance(v, torch.Tensor) else None)
    return found[0] if found else None


def _dtype_of(value: Any) -> str | None:
    t = _first_tensor(value)
    return str(t.dtype).replace("torch.", "") if t is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class _ShapeInterpreter(torch.fx.Interpreter):
    """Runs the graph on meta tensors, recording a NodeShape per node."""

    def __init__(self, G: nx.DiGraph, inputs: Mapping[str, Shape | torch.Tensor], batch: int) -> None:
        super().__init__(G.graph["graph_module"], garbage_collect_values=True)
        self.G = G
        self.model: nn.Module = G.graph["model"]
        self.inputs = inputs
        self.batch = batch
        self.records: dict[str, NodeShape] = {}
        self.input_shapes: dict[str, Shape] = {}
        self._meta_copies: dict[str, nn.Module] = {}

    def run_graph(self) -> Any:
        """Run every node once; return the value of the output node."""
        result: Any = None
        for node in self.graph.nodes:
            self.env[node] = self.run_node(node)
            for to_delete in self.user_to_last_uses.get(node, []):
                del self.env[to_delete]
            if node.op == "output":
                result = self.env[node]
        return result

    def _record(
        self,
        n: torch.fx.Node,
        ins: tuple[Any, ...],
        out: Any,
        status: Status,
        message: str = "",
        finding: Finding | None = None,
        rule: str = "-",
    ) -> None:
        self.records[n.name] = NodeShape(n.name, ins, _describe(out), _dtype_of(out), status, message, finding, rule)

    def _module_call(self, n: torch.fx.Node, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not _on_meta(module):
            key = str(n.target)
            if key not in self._meta_copies:
                self._meta_copies[key] = meta_copy(module)
            module = self._meta_copies[key]
        # bypass hooks: the user's hooks must never see our meta tensors
        return type(module).forward(module, *args, **kwargs)

    def run_node(self, n: torch.fx.Node) -> Any:
        if n.op == "placeholder":
            return self._placeholder(n)
        if n.op == "output":
            args, _ = self.fetch_args_kwargs_from_env(n)
            return args[0]
        if n.op == "get_attr":
            value = _to_meta(self.fetch_attr(str(n.target)))
            self._record(n, (), value, Status.OK, rule="meta")
            return value
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        ins = tuple(d for d in (_describe(a) for a in itertools.chain(args, kwargs.values())) if d is not None)
        unknown: list[_Unknown] = []
        map_aggregate((args, kwargs), lambda v: unknown.append(v) if isinstance(v, _Unknown) else None)
        if unknown:
            self._record(n, ins, None, Status.UNKNOWN, f"input unknown (since {unknown[0].origin})")
            return unknown[0]
        data = self.G.nodes[n.name]
        if n.op == "call_module":
            module = self.model.get_submodule(str(n.target))
            rule = _MODULE_RULES.get(type(module))
            x = args[0] if args else None
            if rule is not None and isinstance(x, torch.Tensor) and len(args) == 1 and not kwargs:
                from_input = any(a.op == "placeholder" for a in n.all_input_nodes)
                ctx = _Ctx(data["layer"], data["module_type"], from_input)
                out = rule(module, ctx, x)
                finding = ctx.findings[0] if ctx.findings else None
                status = Status.INVALID if finding else Status.OK
                message = "; ".join(f.message for f in ctx.findings)
                if out is None:
                    self._record(n, ins, None, status, message, finding, rule="rule")
                    return _Unknown(data["layer"])
                self._record(n, ins, out, status, message, finding, rule="rule")
                return out
            status = Status.OPAQUE if data["layer"] in self.G.graph["opaque"] else Status.OK
            return self._execute(n, ins, status, lambda: self._module_call(n, module, args, kwargs))
        if n.op == "call_function":
            fn = n.target
            assert callable(fn)
            return self._execute(n, ins, Status.OK, lambda: fn(*args, **kwargs))
        # call_method
        obj, *rest = args
        return self._execute(n, ins, Status.OK, lambda: getattr(obj, str(n.target))(*rest, **kwargs))

    def _execute(self, n: torch.fx.Node, ins: tuple[Any, ...], status: Status, call: Callable[[], Any]) -> Any:
        layer = self.G.nodes[n.name]["layer"]
        try:
            out = call()
        except Exception as exc:
            text = _first_line(exc)
            if isinstance(exc, NotImplementedError) or "meta" in text.lower() or "data-dependent" in text.lower():
                self._record(n, ins, None, Status.UNKNOWN, f"cannot run on meta: {text}", rule="meta")
            else:
                kind = self.G.nodes[n.name]["module_type"]
                finding = Finding(layer, kind, "input", "a compatible input", str(ins), text)
                self._record(n, ins, None, Status.INVALID, f"{layer} ({kind}) fails on {ins}: {text}", finding, "meta")
            return _Unknown(layer)
        self._record(n, ins, out, status, self.G.graph["opaque"].get(layer, ""), rule="meta")
        return out

    def _placeholder(self, n: torch.fx.Node) -> Any:
        name = str(n.target).lstrip("*")
        if name in self.inputs:
            spec = self.inputs[name]
            if isinstance(spec, torch.Tensor):
                value = _to_meta(spec)
            else:
                value = torch.empty((self.batch, *spec), dtype=_input_dtype(self.G, n, self.model), device="meta")
            self.input_shapes[name] = tuple(value.shape)
        elif n.args:
            value = n.args[0]  # the default value of the argument
        else:
            raise InputError(
                f"forward needs input {name!r} but no shape was given for it — "
                f"pass a mapping such as {{{name!r}: (3, 224, 224)}} or a tuple of shapes"
            )
        self._record(n, (), value, Status.OK)
        return value


def propagate_shapes(G: nx.DiGraph, input: InputSpec, *, batch: int = 1) -> ShapeResult:
    """Propagate an input shape through the traced graph ``G`` and annotate its nodes.

    Parameters
    ----------
    G : networkx.DiGraph
        From :func:`torchsurgeon.graph.build_graph`; its nodes get
        ``input_shapes``, ``output_shape``, ``dtype``, ``status``, ``message``.
    input : shape, tensor, tuple of shapes, or mapping
        Per-sample shape(s), batch excluded: ``(1, 224, 224)``; see
        :func:`normalize_input`.  Any channel count and size.
    batch : int
        Batch size prepended to every shape.

    Returns
    -------
    ShapeResult
        Every node's shape and status, the model output shape and the findings.

    Raises
    ------
    InputError
        For malformed shapes or batch.

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
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise InputError(f"batch={batch!r} — the batch size must be a positive int")
    placeholders = [str(n.target).lstrip("*") for n in fx_nodes(G) if n.op == "placeholder"]
    inputs = normalize_input(input, placeholders)
    interp = _ShapeInterpreter(G, inputs, batch)
    try:
        with torch.no_grad(), torch.device("meta"):
            out = interp.run_graph()
    except InputError:
        raise
    except Exception as exc:  # pragma: no cover - run_node catches per node
        raise ShapeError(f"shape propagation failed: {_first_line(exc)}") from exc
    findings: list[Finding] = []
    for name, rec in interp.records.items():
        annotate(
            G,
            name,
            input_shapes=rec.input_shapes,
            output_shape=rec.output_shape,
            dtype=rec.dtype,
            status=rec.status,
            message=rec.message,
            finding=rec.finding,
            rule=rec.rule,
        )
        if rec.finding is not None:
            findings.append(rec.finding)
    output_shape = _describe(out)
    annotate(G, "output", output_shape=output_shape, dtype=_dtype_of(out))
    return ShapeResult(dict(interp.records), output_shape, tuple(findings), dict(interp.input_shapes))
