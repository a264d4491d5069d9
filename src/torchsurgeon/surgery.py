"""Model surgery that keeps pretrained knowledge, and a check of any edit.

* :func:`adapt_input_channels` folds the pretrained weights of the layer(s)
  that read the input to a new channel count (found from the traced graph,
  not by name).
* :func:`replace_head` and :func:`append_head` change the classifier found
  from the graph, carrying over rows of shared classes (``keep=``).
* :func:`check_surgery` compares an edited model with its original, parameter
  by parameter: kept, folded, re-initialised (with PyTorch's default
  initialiser named), new, removed, invalid.

Nothing here changes the model it is given unless ``inplace=True``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from torch import nn

from .analysis import ModelReport, paramcount
from .errors import InputError, SurgeryError
from .fold import fold_normalization, fold_weight, recognise_fold
from .graph import build_graph
from .records import FoldMode, LayerReport, Status
from .report import format_count, format_shape
from .shapes import InputSpec
from .trace import trace, unwrap_model

__all__ = (
    "ParamReport",
    "SurgeryReport",
    "SurgeryResult",
    "adapt_input_channels",
    "append_head",
    "check_surgery",
    "default_init",
    "fold_input_normalization",
    "head_layer",
    "input_layers",
    "replace_head",
)


@dataclass(frozen=True)
class ParamReport:
    """What happened to one parameter.

    ``name`` is the parameter's name in the edited model (in the original one
    for ``removed``); ``old_name`` is its name in the original when it moved.
    ``init`` names the initialiser of ``new`` and ``reinitialised`` parameters.
    """

    name: str
    status: Status
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


def _changes_table(rows: Sequence[ParamReport]) -> str:
    from tabulate import tabulate

    return tabulate(
        [
            (
                r.name + (f" (was {r.old_name})" if r.old_name and r.old_name != r.name else ""),
                str(r.status),
                format_shape(r.shape_before),
                format_shape(r.shape_after),
                "; ".join(x for x in (r.init, r.message) if x),
            )
            for r in rows
        ],
        headers=("Parameter", "Status", "Before", "After", "Initialiser / note"),
        disable_numparse=True,
    )


@dataclass(frozen=True)
class SurgeryResult:
    """An edited model and what the edit did to each changed parameter."""

    model: nn.Module
    changes: tuple[ParamReport, ...]

    def __str__(self) -> str:
        return _changes_table(self.changes)


# --------------------------------------------------------------------------- initialisers


def _fan_in(module: nn.Module) -> int:
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        return int(weight.shape[1] * math.prod(weight.shape[2:]))
    return 0


_NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


def default_init(module: nn.Module, param: str) -> str:
    """The initialiser PyTorch uses by default for ``module.<param>``.

    Parameters
    ----------
    module : nn.Module
        The layer.
    param : str
        The parameter's local name (``weight``, ``bias``, ``in_proj_weight``).

    Returns
    -------
    str
        A readable description with the bound computed for this layer.

    Examples
    --------
    >>> from torch import nn
    >>> default_init(nn.Linear(1000, 10), "weight")
    'kaiming_uniform_(a=√5): U(-0.0316, 0.0316)'
    >>> default_init(nn.Linear(1000, 10), "bias")
    'uniform: U(-0.0316, 0.0316) (±1/√fan_in)'
    >>> default_init(nn.BatchNorm2d(64), "weight")
    'ones'
    """
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.Bilinear)):
        fan_in = _fan_in(module)
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            w = module.weight
            fan_in = int(w.shape[1] * math.prod(w.shape[2:]))  # PyTorch computes fan_in on dim 1
        bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
        if param == "weight":
            return f"kaiming_uniform_(a=√5): U(-{bound:.4f}, {bound:.4f})"
        if param == "bias":
            return f"uniform: U(-{bound:.4f}, {bound:.4f}) (±1/√fan_in)"
    if isinstance(module, _NORMS):
        return {"weight": "ones", "bias": "zeros"}.get(param, "PyTorch default")
    if isinstance(module, nn.Embedding) and param == "weight":
        return "normal_(0, 1)"
    if isinstance(module, nn.MultiheadAttention):
        if param.endswith("bias"):
            return "zeros"
        return "xavier_uniform_"
    if isinstance(module, nn.PReLU):
        return f"constant {module.init if hasattr(module, 'init') else 0.25}"
    return f"set by {type(module).__name__}.__init__ (not a torch.nn default)"


def _observed(t: torch.Tensor) -> str:
    if t.device.type == "meta" or t.numel() == 0:
        return ""
    x = t.detach().double()
    if torch.all(x == 0):
        return "observed: all zeros"
    if torch.all(x == 1):
        return "observed: all ones"
    std = x.std().item() if x.numel() > 1 else 0.0
    return f"observed: mean {x.mean().item():.3g}, std {std:.3g}, max|w| {x.abs().max().item():.3g}"


# --------------------------------------------------------------------------- graph lookups


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _shape_only(G: nx.DiGraph, node: str) -> bool:
    data = G.nodes[node]
    return (data["op"] == "call_function" and data["target"] in ("getattr", "_assert", "len")) or (
        data["op"] == "call_method" and data["target"] in ("size", "dim")
    )


def _owner(G: nx.DiGraph, node: str) -> str | None:
    """The module owning the weights a node uses, or None for weight-free nodes."""
    data = G.nodes[node]
    if data["op"] == "call_module" and data["param_names"]:
        return str(data["target"])
    if data["op"] == "call_function":
        for src in G.predecessors(node):
            names = G.nodes[src]["param_names"] if G.nodes[src]["op"] == "get_attr" else ()
            if names:
                return str(names[0]).rpartition(".")[0]
    return None


def input_layers(model: nn.Module) -> list[str]:
    """Qualified names of the layers with weights that read the model input.

    Found from the traced graph, following the data from every input through
    weight-free operations (and not through shape queries).

    Examples
    --------
    >>> from torch import nn
    >>> input_layers(nn.Sequential(nn.Identity(), nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)))
    ['1']
    """
    G = build_graph(trace(unwrap_model(model)))
    found: list[str] = []
    frontier = [n for n, d in G.nodes(data=True) if d["op"] == "placeholder"]
    seen = set(frontier)
    while frontier:
        node = frontier.pop(0)
        for succ in G.successors(node):
            if succ in seen or _shape_only(G, succ):
                continue
            seen.add(succ)
            owner = _owner(G, succ)
            if owner is not None:
                if owner not in found:
                    found.append(owner)
            else:
                frontier.append(succ)
    return found


def head_layer(model: nn.Module) -> str:
    """Qualified name of the classifier: the last layer with weights before the output.

    Examples
    --------
    >>> from torch import nn
    >>> head_layer(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2), nn.Flatten()))
    '3'
    """
    G = build_graph(trace(unwrap_model(model)))
    out = next(n for n, d in G.nodes(data=True) if d["op"] == "output")
    frontier = list(G.predecessors(out))
    seen = set(frontier)
    while frontier:
        node = frontier.pop(0)
        owner = _owner(G, node)
        if owner is not None:
            return owner
        for pred in G.predecessors(node):
            if pred not in seen and G.nodes[pred]["op"] != "placeholder":
                seen.add(pred)
                frontier.append(pred)
    raise SurgeryError(
        f"{type(model).__name__}: no layer with weights produces the output — "
        "there is no classifier to replace; use append_head(model, ...) to add one"
    )


def _copy(model: nn.Module, inplace: bool) -> nn.Module:
    model = unwrap_model(model)
    return model if inplace else copy.deepcopy(model)


def _check_channels(channels: object) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise InputError(f"channels={channels!r} — the new input channel count must be a positive int")
    return channels


# --------------------------------------------------------------------------- input channels


def _densify(conv: nn.modules.conv._ConvNd) -> torch.Tensor:
    """Weight of a grouped conv as the equivalent dense (groups=1) weight."""
    w = conv.weight
    groups, per_group = conv.groups, conv.in_channels // conv.groups
    out_per_group = conv.out_channels // groups
    dense = torch.zeros((conv.out_channels, conv.in_channels, *w.shape[2:]), dtype=w.dtype, device=w.device)
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[rows, g * per_group : (g + 1) * per_group] = w[rows]
    return dense


def _adapt_layer(model: nn.Module, name: str, channels: int, mode: FoldMode) -> ParamReport:
    layer = model.get_submodule(name)
    kind = type(layer).__name__
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        raise SurgeryError(f"{name} ({kind}) is a transposed convolution: folding its input channels is not supported")
    if isinstance(layer, nn.modules.conv._ConvNd):
        before = layer.in_channels
        if layer.groups != 1 and layer.in_channels != layer.groups:
            raise SurgeryError(
                f"{name} ({kind}) is grouped with in_channels={layer.in_channels} != groups={layer.groups}: "
                "folding it is not supported — use mode='random' to re-initialise it"
            )
    elif isinstance(layer, nn.Linear):
        before = layer.in_features
    else:
        raise SurgeryError(
            f"{name} ({kind}) reads the input but is not a Conv or Linear layer — adapt it by hand; "
            "adapt_input_channels folds Conv/Linear weights only"
        )
    old_weight = layer.weight
    shape_before = tuple(old_weight.shape)
    if mode == FoldMode.RANDOM:
        fresh = _rebuilt(layer, channels)
        _set_submodule(model, name, fresh)
        return ParamReport(
            f"{name}.weight",
            Status.REINITIALISED,
            shape_before,
            tuple(fresh.get_parameter("weight").shape),
            default_init(fresh, "weight"),
            "pretrained weights lost (mode='random')",
        )
    weight = old_weight.detach()
    grouped = isinstance(layer, nn.modules.conv._ConvNd) and layer.groups != 1
    if grouped:
        assert isinstance(layer, nn.modules.conv._ConvNd)
        weight = _densify(layer)
    try:
        folded = fold_weight(weight, channels, mode)
    except SurgeryError as exc:
        raise SurgeryError(f"{name} ({kind}): {exc}") from exc
    layer.weight = nn.Parameter(folded, requires_grad=old_weight.requires_grad)
    if isinstance(layer, nn.Linear):
        layer.in_features = channels
    else:
        assert isinstance(layer, nn.modules.conv._ConvNd)
        layer.in_channels = channels
        if grouped:
            layer.groups = 1
    note = f"{mode} fold of {before} → {channels} channels"
    if grouped:
        note += " (depthwise conv made dense: groups=1)"
    return ParamReport(f"{name}.weight", Status.FOLDED, shape_before, tuple(folded.shape), "", note)


def _rebuilt(layer: nn.Module, channels: int) -> nn.Module:
    """A freshly initialised copy of ``layer`` taking ``channels`` inputs."""
    fresh = copy.deepcopy(layer)
    device = layer.get_parameter("weight").device
    if isinstance(fresh, nn.Linear):
        fresh.in_features = channels
        fresh.weight = nn.Parameter(torch.empty(fresh.out_features, channels, dtype=fresh.weight.dtype, device=device))
    else:
        assert isinstance(fresh, nn.modules.conv._ConvNd)
        fresh.in_channels, fresh.groups = channels, 1
        shape = (fresh.out_channels, channels, *fresh.kernel_size)
        fresh.weight = nn.Parameter(torch.empty(shape, dtype=fresh.weight.dtype, device=device))
    if device.type != "meta":
        fresh.reset_parameters()  # type: ignore[operator]
    return fresh


def adapt_input_channels(
    model: nn.Module,
    channels: int,
    mode: FoldMode | str = FoldMode.SUM,
    *,
    layer: str | Iterable[str] | None = None,
    inplace: bool = False,
) -> SurgeryResult:
    """Make ``model`` take ``channels`` input channels, keeping pretrained knowledge.

    Parameters
    ----------
    model : nn.Module
        The pretrained model; copied unless ``inplace``.
    channels : int
        The new number of input channels.
    mode : FoldMode or str
        ``"sum"`` (to 1 channel: exact on grey images), ``"spread"`` (exact on
        grey images replicated to C), ``"repeat"`` (as timm), ``"zero_extra"``
        (RGB + extra channels: exact on RGB with any extra), or ``"random"``
        (re-initialise: pretrained weights lost).
    layer : str or iterable of str, optional
        The layer(s) to adapt; by default those that read the input, found
        from the traced graph (several when the input feeds several layers).
    inplace : bool
        Edit ``model`` itself instead of a copy.

    Returns
    -------
    SurgeryResult
        The edited model and one :class:`ParamReport` per changed weight.

    Raises
    ------
    InputError
        For a non-positive channel count or an unknown mode.
    SurgeryError
        When no Conv/Linear layer reads the input, the layer layout cannot be
        folded (grouped, transposed), or the mode cannot be exact for the
        request (``sum`` to 4 channels).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> rgb = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    >>> grey = adapt_input_channels(rgb, 1).model
    >>> g = torch.randn(1, 1, 8, 8)
    >>> torch.allclose(grey(g), rgb(g.expand(1, 3, 8, 8)), atol=1e-6)
    True
    >>> print(adapt_input_channels(rgb, 4, "zero_extra"))
    Parameter    Status    Before        After         Initialiser / note
    -----------  --------  ------------  ------------  ---------------------------------
    0.weight     folded    (8, 3, 3, 3)  (8, 4, 3, 3)  zero_extra fold of 3 → 4 channels
    """
    channels = _check_channels(channels)
    mode = FoldMode(mode) if not isinstance(mode, FoldMode) and mode in FoldMode._value2member_map_ else mode
    if not isinstance(mode, FoldMode):
        raise InputError(f"mode={mode!r} — choose one of {[m.value for m in FoldMode]}")
    edited = _copy(model, inplace)
    names = [layer] if isinstance(layer, str) else list(layer) if layer is not None else input_layers(edited)
    if not names:
        raise SurgeryError(
            f"{type(edited).__name__}: no layer with weights reads the input — nothing to adapt; "
            "pass layer='name' to choose one"
        )
    changes = tuple(_adapt_layer(edited, name, channels, mode) for name in names)
    return SurgeryResult(edited, changes)


def fold_input_normalization(
    model: nn.Module,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layer: str | None = None,
    inplace: bool = False,
) -> SurgeryResult:
    """Fold ``(x - mean) / std`` into the first layer, so raw inputs can be fed.

    Exact when the layer has no zero padding; otherwise the border of the
    output differs and the change's message says so.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Conv2d(3, 4, 3)
    >>> r = fold_input_normalization(net, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    >>> x = torch.rand(1, 3, 8, 8)
    >>> norm = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    >>> torch.allclose(r.model(x), net(norm), atol=1e-5)
    True
    """
    edited = _copy(model, inplace)
    names = [layer] if layer is not None else input_layers(edited)
    changes: list[ParamReport] = []
    for name in names:
        conv = edited.get_submodule(name) if name else edited
        if not isinstance(conv, (nn.modules.conv._ConvNd, nn.Linear)) or isinstance(
            conv, nn.modules.conv._ConvTransposeNd
        ):
            raise SurgeryError(
                f"{name} ({type(conv).__name__}) is not a Conv/Linear layer: cannot fold a normalisation"
            )
        if isinstance(conv, nn.modules.conv._ConvNd) and conv.groups != 1:
            raise SurgeryError(f"{name} ({type(conv).__name__}) is grouped: cannot fold a normalisation")
        w, b = fold_normalization(conv.weight.detach(), None if conv.bias is None else conv.bias.detach(), mean, std)
        padded = isinstance(conv, nn.modules.conv._ConvNd) and (
            conv.padding == "same" or (not isinstance(conv.padding, str) and any(p != 0 for p in conv.padding))
        )
        note = "normalisation folded" + (
            f"; NOT exact at the border: {name} zero-pads (padding={conv.padding}), a zero of the raw input "
            "is not a zero of the normalised input"
            if padded and getattr(conv, "padding_mode", "zeros") == "zeros"
            else "; exact"
        )
        shape = tuple(conv.weight.shape)
        conv.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
        had_bias = conv.bias is not None
        conv.bias = nn.Parameter(b, requires_grad=conv.weight.requires_grad)
        changes.append(ParamReport(f"{name}.weight" if name else "weight", Status.FOLDED, shape, shape, "", note))
        changes.append(
            ParamReport(
                f"{name}.bias" if name else "bias",
                Status.FOLDED if had_bias else Status.NEW,
                (conv.out_channels if isinstance(conv, nn.modules.conv._ConvNd) else conv.out_features,)
                if had_bias
                else None,
                tuple(b.shape),
                "",
                "bias absorbs -Σ W·mean/std",
            )
        )
    return SurgeryResult(edited, tuple(changes))


# --------------------------------------------------------------------------- head


def replace_head(
    model: nn.Module,
    num_classes: int,
    *,
    keep: Mapping[int, int] | None = None,
    inplace: bool = False,
) -> SurgeryResult:
    """Replace the classifier with a fresh one for ``num_classes`` classes.

    The classifier is the last layer with weights before the output (found
    from the traced graph); its ``in_features`` are kept.  ``keep`` carries
    the pretrained rows of classes the new task shares with the old one.

    Parameters
    ----------
    model : nn.Module
        The pretrained model; copied unless ``inplace``.
    num_classes : int
        Outputs of the new classifier.
    keep : mapping of int to int, optional
        ``{new_class: old_class}``: rows copied from the old classifier
        (weight and bias) into the new one.

    Returns
    -------
    SurgeryResult
        The edited model; the changes name the initialiser of the new head.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 5))
    >>> r = replace_head(net, 3, keep={0: 4})
    >>> r.model[0]
    Linear(in_features=8, out_features=3, bias=True)
    >>> torch.equal(r.model[0].weight[0], net[0].weight[4])
    True
    """
    num_classes = _check_channels(num_classes)
    edited = _copy(model, inplace)
    name = head_layer(edited)
    old = edited.get_submodule(name)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        old_classes = old.out_features
    elif isinstance(old, nn.modules.conv._ConvNd) and not isinstance(old, nn.modules.conv._ConvTransposeNd):
        new = copy.deepcopy(old)
        assert isinstance(new, nn.modules.conv._ConvNd)
        new.out_channels = num_classes
        new.weight = nn.Parameter(torch.empty((num_classes, *old.weight.shape[1:])))
        if old.bias is not None:
            new.bias = nn.Parameter(torch.empty(num_classes))
        new.reset_parameters()
        old_classes = old.out_channels
    else:
        raise SurgeryError(
            f"{name} ({type(old).__name__}) is the head but not a Linear or Conv layer — replace it by hand"
        )
    device = old.weight.device  # type: ignore[union-attr]
    dtype = old.weight.dtype  # type: ignore[union-attr]
    new = new.to(device=device, dtype=dtype)
    keep = dict(keep or {})
    for new_i, old_i in keep.items():
        if not (0 <= new_i < num_classes) or not (0 <= old_i < old_classes):
            raise InputError(
                f"keep={{{new_i}: {old_i}}} is out of range — new classes are 0..{num_classes - 1}, "
                f"old classes of {name} are 0..{old_classes - 1}"
            )
    with torch.no_grad():
        for new_i, old_i in keep.items():
            new.get_parameter("weight")[new_i] = old.get_parameter("weight")[old_i]
            if getattr(new, "bias", None) is not None:
                new.get_parameter("bias")[new_i] = old.get_parameter("bias")[old_i]
    _set_submodule(edited, name, new)
    rows = f"; rows {sorted(keep)} carried over from classes {[keep[k] for k in sorted(keep)]}" if keep else ""
    changes = tuple(
        ParamReport(
            f"{name}.{pname}",
            Status.REINITIALISED,
            tuple(getattr(old, pname).shape),
            tuple(p.shape),
            default_init(new, pname),
            f"new head: {old_classes} → {num_classes} classes{rows}",
        )
        for pname, p in new.named_parameters()
    )
    return SurgeryResult(edited, changes)


def append_head(model: nn.Module, *modules: nn.Module, inplace: bool = False) -> SurgeryResult:
    """Add layers after the classifier: ``fc`` becomes ``Sequential(fc, *modules)``.

    The old classifier's weights are kept (their names move: ``fc.weight`` →
    ``fc.0.weight``); the new layers are reported with their initialiser.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 5))
    >>> r = append_head(net, nn.ReLU(), nn.Linear(5, 2))
    >>> [c.name for c in r.changes]
    ['0.0.weight', '0.0.bias', '0.2.weight', '0.2.bias']
    """
    if not modules:
        raise InputError(
            "append_head needs at least one module to append, e.g. append_head(model, nn.Linear(1000, 10))"
        )
    for m in modules:
        if not isinstance(m, nn.Module):
            raise InputError(f"append_head: {m!r} is not an nn.Module")
    edited = _copy(model, inplace)
    name = head_layer(edited)
    old = edited.get_submodule(name)
    _set_submodule(edited, name, nn.Sequential(old, *modules))
    changes: list[ParamReport] = [
        ParamReport(f"{name}.0.{p}", Status.KEPT, tuple(t.shape), tuple(t.shape), "", "", f"{name}.{p}")
        for p, t in old.named_parameters()
    ]
    for i, m in enumerate(modules, start=1):
        for p, t in m.named_parameters():
            owner = m.get_submodule(p.rpartition(".")[0]) if "." in p else m
            changes.append(
                ParamReport(
                    f"{name}.{i}.{p}", Status.NEW, None, tuple(t.shape), default_init(owner, p.rpartition(".")[2])
                )
            )
    return SurgeryResult(edited, tuple(changes))


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class SurgeryReport:
    """Result of :func:`check_surgery`; ``print()`` it for the table.

    Attributes
    ----------
    params : list[ParamReport]
        One per parameter of the edited model, plus the removed ones.
    invalid : list[LayerReport]
        Layers of the edited model that do not fit the input.
    verdict : str
        One line: what was lost, what is new, what does not fit.
    before, after : ModelReport
        :func:`~torchsurgeon.paramcount` of the original and the edited model.
    graph : networkx.DiGraph
        The edited model's graph; nodes carry the surgery status.
    """

    params: list[ParamReport]
    invalid: list[LayerReport]
    verdict: str
    before: ModelReport = field(repr=False)
    after: ModelReport = field(repr=False)
    graph: nx.DiGraph = field(repr=False, compare=False)

    def by_status(self, status: Status | str) -> list[ParamReport]:
        """The parameters with this status."""
        return [p for p in self.params if p.status == Status(status)]

    def status_of(self, name: str) -> Status:
        """Status of one parameter (its name in the edited model, or in the original if removed)."""
        for p in self.params:
            if p.name == name:
                return p.status
        raise KeyError(f"no parameter {name!r}; known: {[p.name for p in self.params][:8]} ...")

    def __str__(self) -> str:
        changed = [p for p in self.params if p.status != Status.KEPT or (p.old_name and p.old_name != p.name)]
        kept = len(self.params) - len(changed)
        lines = [
            f"Surgery check: {self.before.model_name} → {self.after.model_name}, "
            f"input {', '.join(format_shape(s) for s in self.after.input_shapes.values())}",
            _changes_table(changed) if changed else "(no parameter changed)",
            "",
            f"Other parameters kept unchanged: {kept}",
            f"Total params before: {format_count(self.before.total)}",
            f"Total params after:  {format_count(self.after.total)}",
            f"Output before: {format_shape(self.before.output_shape)}, after: {format_shape(self.after.output_shape)}",
        ]
        if self.invalid:
            lines.append(f"Invalid layers ({len(self.invalid)}):")
            lines += [f"  {layer.message}" for layer in self.invalid]
        lines.append(f"Verdict: {self.verdict}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "verdict": self.verdict,
            "params": [p.to_dict() for p in self.params],
            "invalid": [layer.to_dict() for layer in self.invalid],
            "total_before": self.before.total,
            "total_after": self.after.total,
            "output_before": self.before.to_dict()["output_shape"],
            "output_after": self.after.to_dict()["output_shape"],
            "counts": {str(s): len(self.by_status(s)) for s in _SURGERY_STATUSES},
        }


_SURGERY_STATUSES = (Status.KEPT, Status.FOLDED, Status.REINITIALISED, Status.NEW, Status.REMOVED, Status.INVALID)


def _module_and_local(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, local = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), local


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device.type == "meta" or b.device.type == "meta":
        return False
    return bool(torch.equal(a.detach(), b.detach().to(a.device)))


def _classify(original: nn.Module, edited: nn.Module) -> list[ParamReport]:
    orig = dict(original.named_parameters())
    new = dict(edited.named_parameters())
    reports: dict[str, ParamReport] = {}
    claimed: set[str] = set()  # original names accounted for

    def init_of(name: str, t: torch.Tensor) -> str:
        module, local = _module_and_local(edited, name)
        return "; ".join(x for x in (default_init(module, local), _observed(t)) if x)

    unmatched: list[str] = []
    for name, p in new.items():
        if name in orig:
            o = orig[name]
            if _same(o, p):
                reports[name] = ParamReport(name, Status.KEPT, tuple(o.shape), tuple(p.shape))
                claimed.add(name)
                continue
            foldable = o.device.type != "meta" and o.dim() >= 2 and o.dim() == p.dim() and o.is_floating_point()
            mode = recognise_fold(o.detach(), p.detach()) if foldable else None
            if mode is not None:
                reports[name] = ParamReport(
                    name, Status.FOLDED, tuple(o.shape), tuple(p.shape), "", f"{mode} fold of the original"
                )
                claimed.add(name)
                continue
        unmatched.append(name)

    # moved parameters: same values under another name (fc.weight -> fc.0.weight)
    free = [n for n in orig if n not in claimed and n not in new]
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for n in free:
        by_shape.setdefault(tuple(orig[n].shape), []).append(n)
    for name in list(unmatched):
        p = new[name]
        for cand in by_shape.get(tuple(p.shape), []):
            if cand not in claimed and _same(orig[cand], p):
                reports[name] = ParamReport(name, Status.KEPT, tuple(p.shape), tuple(p.shape), "", "moved", cand)
                claimed.add(cand)
                unmatched.remove(name)
                break

    for name in unmatched:
        p = new[name]
        if name in orig:
            o = orig[name]
            note = _rows_kept(o, p)
            hint = ""
            if (
                tuple(o.shape[:1]) == tuple(p.shape[:1])
                and o.dim() == p.dim()
                and o.dim() >= 2
                and o.shape[1] != p.shape[1]
            ):
                owner = name.rpartition(".")[0]
                hint = f"pretrained weights lost — use adapt_input_channels(model, {p.shape[1]}, layer={owner!r})"
            reports[name] = ParamReport(
                name,
                Status.REINITIALISED,
                tuple(o.shape),
                tuple(p.shape),
                init_of(name, p),
                "; ".join(x for x in (hint or "pretrained weights lost", note) if x),
            )
            claimed.add(name)
        else:
            reports[name] = ParamReport(name, Status.NEW, None, tuple(p.shape), init_of(name, p))

    ordered = [reports[n] for n in new]
    ordered += [
        ParamReport(n, Status.REMOVED, tuple(orig[n].shape), None, "", "not in the edited model")
        for n in orig
        if n not in claimed
    ]
    return ordered


def _rows_kept(old: torch.Tensor, new: torch.Tensor) -> str:
    """For a resized 2-D head: how many new rows equal an old row."""
    if (
        old.dim() != new.dim()
        or old.shape[1:] != new.shape[1:]
        or old.device.type == "meta"
        or new.device.type == "meta"
    ):
        return ""
    if old.shape[0] * new.shape[0] > 10_000_000:
        return ""
    o = old.detach().reshape(old.shape[0], -1)
    n = new.detach().reshape(new.shape[0], -1).to(old.device, old.dtype)
    eq = (n[:, None, :] == o[None, :, :]).all(-1) if o.numel() * n.shape[0] <= 50_000_000 else None
    if eq is None:
        return ""
    kept = [(i, int(eq[i].nonzero()[0])) for i in range(n.shape[0]) if eq[i].any()]
    if not kept:
        return ""
    return (
        f"{len(kept)} row(s) carried over: "
        + ", ".join(f"{i}←{j}" for i, j in kept[:10])
        + (" ..." if len(kept) > 10 else "")
    )


def _verdict(params: Sequence[ParamReport], invalid: Sequence[LayerReport]) -> str:
    def layers(status: Status) -> list[str]:
        out: list[str] = []
        for p in params:
            if p.status == status and p.layer not in out:
                out.append(p.layer)
        return out

    parts = []
    reinit = layers(Status.REINITIALISED)
    if reinit:
        details = []
        for layer in reinit:
            hint = next((p.message for p in params if p.layer == layer and "adapt_input_channels" in p.message), "")
            details.append(f"{layer}: {hint}" if hint else f"{layer}: pretrained weights lost")
        parts.append(f"{len(reinit)} layer{'s' * (len(reinit) != 1)} re-initialised ({'; '.join(details)})")
    folded = layers(Status.FOLDED)
    if folded:
        parts.append(f"{len(folded)} folded ({', '.join(folded)})")
    new = layers(Status.NEW)
    parts.append(f"{len(new)} new" + (f" ({', '.join(new)})" if new else ""))
    removed = layers(Status.REMOVED)
    if removed:
        parts.append(f"{len(removed)} removed ({', '.join(removed)})")
    names = sorted({layer.name for layer in invalid}, key=[x.name for x in invalid].index)
    parts.append(f"{len(names)} invalid" + (f" ({', '.join(names)})" if names else ""))
    return ", ".join(parts)


def check_surgery(original: nn.Module, edited: nn.Module, input: InputSpec, *, batch: int = 1) -> SurgeryReport:
    """Compare an edited model with its original, parameter by parameter.

    Parameters
    ----------
    original : nn.Module
        The model before the edit (its weights are "pretrained").
    edited : nn.Module
        The model after the edit (by hand or by torchsurgeon).
    input : shape, tensor, tuple of shapes, or mapping
        The input the edited model is meant for, e.g. ``(1, 224, 224)``.
    batch : int
        Batch size prepended to shapes.

    Returns
    -------
    SurgeryReport
        Per-parameter status (kept, folded, reinitialised, new, removed,
        invalid), invalid layers, and a one-line verdict.

    Examples
    --------
    >>> from torch import nn
    >>> before = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    >>> after = adapt_input_channels(before, 1).model
    >>> rep = check_surgery(before, after, (1, 8, 8))
    >>> [(p.name, str(p.status)) for p in rep.params][:3]
    [('0.weight', 'folded'), ('0.bias', 'kept'), ('2.weight', 'kept')]
    >>> rep.verdict
    '1 folded (0), 0 new, 0 invalid'
    """
    original, edited = unwrap_model(original), unwrap_model(edited)
    before = paramcount(original, input, batch=batch)
    after = paramcount(edited, input, batch=batch)
    params = _classify(original, edited)
    invalid_layers = {layer.name for layer in after.invalid}
    findings = {f.layer: f.message for f in after.findings}
    params = [
        ParamReport(
            p.name, Status.INVALID, p.shape_before, p.shape_after, p.init, findings.get(p.layer, ""), p.old_name
        )
        if p.layer in invalid_layers and p.status != Status.REMOVED
        else p
        for p in params
    ]
    graph = after.graph
    status_by_layer: dict[str, Status] = {}
    for p in params:
        if p.status in (Status.FOLDED, Status.NEW, Status.REINITIALISED) and p.layer not in status_by_layer:
            status_by_layer[p.layer] = p.status
    for node, data in graph.nodes(data=True):
        if data["status"] == Status.OK and data["layer"] in status_by_layer:
            graph.nodes[node]["status"] = status_by_layer[data["layer"]]
    return SurgeryReport(params, after.invalid, _verdict(params, after.invalid), before, after, graph)
