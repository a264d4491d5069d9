"""A check of any model edit: what happened to every parameter, and what no longer fits.

:func:`check_surgery` compares an edited model with its original, parameter
by parameter: kept, folded, re-initialised (with PyTorch's default
initialiser named), new, removed, invalid; the edited model's graph records
each layer's change (:class:`~torchsurgeon.records.ParamChange`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from torch import nn

from .analysis import paramcount
from .fold import recognise_fold
from .foldcheck import computes_its_weight, fold_difference, tolerance
from .graph import node_records, update_record
from .initialisers import named_init
from .modelreport import ModelReport
from .records import FoldMode, LayerReport, LayerStatus, ParamChange, ParamReport, TableColumn, TableFormat
from .report import changes_table, format_count, format_shape
from .resize import weight_norm_dims
from .shapespec import InputSpec
from .surgery import input_layers
from .wrappers import unwrap_model

__all__ = ("SurgeryReport", "check_surgery")


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
        :func:`~torchsurgeon.paramcount` of the original and the edited model;
        each layer of ``after`` carries its ``change`` (folded, new,
        reinitialised), so ``after.table()`` shows what the edit did where.
    graph : networkx.DiGraph
        The edited model's graph; each layer's record carries its ``change``.
    """

    params: list[ParamReport]
    invalid: list[LayerReport]
    verdict: str
    before: ModelReport = field(repr=False)
    after: ModelReport = field(repr=False)
    graph: nx.DiGraph = field(repr=False, compare=False)

    def by_status(self, status: ParamChange | str) -> list[ParamReport]:
        """The parameters with this status."""
        return [p for p in self.params if p.status == ParamChange(status)]

    def status_of(self, name: str) -> ParamChange:
        """Status of one parameter (its name in the edited model, or in the original if removed)."""
        for p in self.params:
            if p.name == name:
                return p.status
        raise KeyError(f"no parameter {name!r}; known: {[p.name for p in self.params][:8]} ...")

    def _changed(self) -> list[ParamReport]:
        return [p for p in self.params if p.status != ParamChange.KEPT or (p.old_name and p.old_name != p.name)]

    def _title(self) -> str:
        return (
            f"Surgery check: {self.before.model_name} → {self.after.model_name}, "
            f"input {', '.join(format_shape(s) for s in self.after.input_shapes.values())}"
        )

    def table(
        self,
        depth: int | None = None,
        columns: Sequence[TableColumn | str] | str | None = None,
        fmt: TableFormat | str = TableFormat.TEXT,
    ) -> str:
        """The edited model's depth table (:meth:`ModelReport.table`), each layer's status saying what the edit did.

        Examples
        --------
        >>> from torch import nn
        >>> from torchsurgeon import adapt_input_channels
        >>> before = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
        >>> after = adapt_input_channels(before, 1).model
        >>> print(check_surgery(before, after, (1, 8, 8)).table(columns="params,status").splitlines()[3])
        0        Conv2d         80  folded
        """
        return self.after.table(depth, columns, fmt)

    def _repr_html_(self) -> str:
        """In a notebook: the changed parameters, the verdict, and the edited model's table in colour."""
        changed = self._changed()
        return "\n".join(
            [
                "<div>",
                f'<p style="font-weight: bold;">{html.escape(self._title())}</p>',
                changes_table(changed, TableFormat.HTML) if changed else "<p>(no parameter changed)</p>",
                f"<p>Verdict: {html.escape(self.verdict)}</p>",
                self.after.table(fmt=TableFormat.HTML),
                "</div>",
            ]
        )

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        """IPython's plain-text view: the table."""
        printer.text(str(self))

    def __str__(self) -> str:
        changed = self._changed()
        kept = len(self.params) - len(changed)
        lines = [
            self._title(),
            changes_table(changed) if changed else "(no parameter changed)",
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


_SURGERY_STATUSES = (
    ParamChange.KEPT,
    ParamChange.FOLDED,
    ParamChange.REINITIALISED,
    ParamChange.NEW,
    ParamChange.REMOVED,
    ParamChange.INVALID,
)


def _module_and_local(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, local = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), local


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device.type == "meta" or b.device.type == "meta":
        return False
    return bool(torch.equal(a.detach(), b.detach().to(a.device)))


def _derived(name: str, p: torch.Tensor, orig: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """How ``p`` is made of the pretrained values, if it is (note, the original's name when another's): its own
    scaled (``w.mul_(0.5)``) or pruned (zeros where the rest is unchanged), or a copy of another parameter."""
    if p.is_meta or p.numel() < 2 or bool(torch.all(p == p.flatten()[0])):  # one value (a zeroed bias): no one's
        return None
    o = orig.get(name)
    if o is not None and o.shape == p.shape and o.dtype == p.dtype and not o.is_meta:
        a, b = o.detach().double().flatten(), p.detach().double().flatten()
        kept = b != 0
        if bool(kept.any()) and not bool(kept.all()) and torch.equal(a[kept], b[kept]) and bool((a[~kept] != 0).any()):
            return f"pruned: {float((~kept).double().mean()):.0%} of it zeroed, the rest pretrained", ""
        nonzero = a != 0
        if bool(nonzero.any()) and torch.equal(nonzero, b != 0):
            ratios = b[nonzero] / a[nonzero]
            k = float(ratios[0])
            if k not in (0.0, 1.0) and torch.allclose(ratios, torch.full_like(ratios, k), rtol=1e-6, atol=0):
                return f"scaled: {k:.4g} × the pretrained values", ""
    for other, t in orig.items():  # layers swapped or copied: another parameter's values
        if other != name and _same(t, p):
            return f"copied from {other}", other
    return None


def _aliases(model: nn.Module, unique: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """A shared parameter's other names, each with the name ``named_parameters()`` (``unique``) gives it."""
    first = {id(t): n for n, t in unique.items()}
    return {n: first[id(t)] for n, t in model.named_parameters(remove_duplicate=False) if n not in unique}


def _cast(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``b`` is ``a`` converted to ``b``'s other dtype (its values rounded as the conversion rounds them)."""
    if a.shape != b.shape or a.dtype == b.dtype or "meta" in (a.device.type, b.device.type):
        return False
    return bool(torch.equal(a.detach().to(b.device, b.dtype), b.detach()))


def _standardised_folds(original: nn.Module, edited: nn.Module) -> dict[str, FoldMode]:
    """The layers whose forward computes the weight it uses (a weight standardisation: timm's ScaledStdConv2d;
    ``weight_norm``, which surgery keeps on a folded weight) that were folded, with the fold: their weights are
    compared by running both layers on the inputs the fold relates
    (:func:`~torchsurgeon.foldcheck.fold_difference`), since such a fold also sets other parameters (the gain,
    weight_norm's magnitude) and the raw weight is not a fold of the original's."""
    found: dict[str, FoldMode] = {}
    before = dict(original.named_modules())
    for name, layer in edited.named_modules():
        old = before.get(name)
        if old is None or not (computes_its_weight(layer) or weight_norm_dims(layer)):
            continue
        if type(old) is not type(layer) and not (weight_norm_dims(old) and weight_norm_dims(layer)):
            continue
        w, v = getattr(old, "weight", None), getattr(layer, "weight", None)
        if not isinstance(w, torch.Tensor) or not isinstance(v, torch.Tensor) or w.is_meta or v.is_meta:
            continue
        if w.dim() < 2 or w.shape[0] != v.shape[0] or w.shape[1] == v.shape[1] or not w.is_floating_point():
            continue
        channels = getattr(layer, "in_channels", getattr(layer, "in_features", v.shape[1]))
        width = getattr(old, "in_channels", getattr(old, "in_features", w.shape[1]))
        grey = FoldMode.SUM if channels == 1 else FoldMode.SPREAD  # both exact on a grey image replicated
        for mode in (FoldMode.ZERO_EXTRA, FoldMode.REPEAT, grey):  # the relation that holds for most inputs first
            if (mode == FoldMode.REPEAT and channels % width) or (mode == FoldMode.ZERO_EXTRA and channels <= width):
                continue
            if fold_difference(old, layer, mode, width, channels) <= tolerance(w.dtype):
                found[name] = mode
                break
    return found


def _computed_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, tuple[str, ...], str]]:
    """The tensors a module computes from parameters of its own before using them, by qualified name, with the
    parameters they are made of and what makes them (``weight_norm``): a parametrization (``weight_norm``,
    ``spectral_norm``: computed on a copy in eval mode, which steps no power iteration), or a forward pre-hook's
    attribute (``torch.nn.utils.prune``'s ``weight`` from ``weight_orig``, the legacy ``weight_norm``'s from
    ``weight_g`` and ``weight_v``, computed again: the attribute is only as new as the last forward).  An edit
    that makes such a weight a plain parameter (folded, or kept) is recognised by it, and one that makes a plain
    weight such a tensor (:func:`_reparametrised`)."""
    found: dict[str, tuple[torch.Tensor, tuple[str, ...], str]] = {}
    for owner, module in model.named_modules():
        prefix = f"{owner}." if owner else ""
        chains = module._modules.get("parametrizations")
        for local, chain in chains.items() if isinstance(chains, nn.ModuleDict) else ():
            with torch.no_grad():
                value = copy.deepcopy(chain).eval()()
            made_of = tuple(f"{prefix}parametrizations.{local}.{n}" for n, _ in chain.named_parameters())
            kind = " and ".join(_snake(type(m).__name__) for m in chain.children())
            found[f"{prefix}{local}"] = (value, made_of, kind)
        for hook in module._forward_pre_hooks.values():
            attribute = getattr(hook, "_tensor_name", getattr(hook, "name", None))
            value = getattr(module, attribute, None) if isinstance(attribute, str) else None
            if isinstance(attribute, str) and isinstance(value, torch.Tensor) and attribute not in module._parameters:
                if type(hook).__name__ == "WeightNorm":  # the legacy weight_norm's: from g and v as they are now
                    with torch.no_grad():
                        value = hook.compute_weight(module)
                made_of = tuple(f"{prefix}{n}" for n in module._parameters if n.startswith(f"{attribute}_"))
                found[f"{prefix}{attribute}"] = (value.detach(), made_of, _snake(type(hook).__name__))
    return found


def _snake(name: str) -> str:
    """``weight_norm`` for torch's ``_WeightNorm`` (a parametrization) or ``WeightNorm`` (a hook)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.lstrip("_")).lower()


def _reparametrised(
    edited: nn.Module, orig: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor]
) -> dict[str, tuple[str, str]]:
    """The edited model's parameters that make a pretrained weight again, exactly: ``weight_norm``'s ``g`` and
    ``v`` of a layer whose ``g·v/‖v‖`` is its pretrained weight; each with a note and that weight's name.  A
    re-parametrised weight that is not the pretrained one (``v`` drawn again) is not theirs."""
    found: dict[str, tuple[str, str]] = {}
    for name, (value, parts, kind) in _computed_weights(edited).items():
        old = orig.get(name)
        if name in new or old is None or not parts or any(p not in new for p in parts):
            continue
        if old.is_meta or value.is_meta or old.shape != value.shape or not old.is_floating_point():
            continue
        a, b = old.detach().double(), value.detach().double().to(old.device)
        tol = tolerance(old.dtype)
        if torch.allclose(b, a, rtol=tol, atol=tol * float(a.abs().max())):
            note = f"re-parametrised by {kind}: the weight it makes is the pretrained {name}"
            found.update((part, (note, name)) for part in parts)
    return found


def _classify(original: nn.Module, edited: nn.Module) -> list[ParamReport]:
    orig: dict[str, torch.Tensor] = dict(original.named_parameters())
    new = dict(edited.named_parameters())
    aliases = _aliases(original, orig)  # a tied decoder's dec.weight is emb.weight: the edit may untie it
    orig.update((n, orig[first]) for n, first in aliases.items() if n in new)
    computed = {n: v for n, v in _computed_weights(original).items() if n in new and n not in orig}
    orig.update((n, value) for n, (value, _, _) in computed.items())  # matched as parameters; never listed as removed
    reports: dict[str, ParamReport] = {}
    claimed: set[str] = set(computed)  # original names accounted for
    standardised = _standardised_folds(original, edited)

    @functools.cache
    def readers() -> frozenset[str]:
        """The original's layers that read the model input (traced only when a hint may name one)."""
        try:
            return frozenset(input_layers(original))
        except Exception:  # untraceable without an input: any layer may
            return frozenset(n for n, _ in original.named_modules())

    def init_of(name: str, t: torch.Tensor) -> str:
        module, local = _module_and_local(edited, name)
        return named_init(module, local, t)

    unmatched: list[str] = []
    for name, p in new.items():
        if name in orig:
            o = orig[name]
            if _same(o, p):
                reports[name] = ParamReport(name, ParamChange.KEPT, tuple(o.shape), tuple(p.shape))
                claimed.add(name)
                continue
            if _cast(o, p):  # model.double(), model.half(): the pretrained values in another dtype
                note = f"cast {str(o.dtype).removeprefix('torch.')} → {str(p.dtype).removeprefix('torch.')}"
                reports[name] = ParamReport(name, ParamChange.KEPT, tuple(o.shape), tuple(p.shape), "", note)
                claimed.add(name)
                continue
            foldable = o.device.type != "meta" and o.dim() >= 2 and o.dim() == p.dim() and o.is_floating_point()
            owner = next((m for m in standardised if name.startswith(f"{m}.")), name.rpartition(".")[0])
            local = name.removeprefix(f"{owner}.")
            if owner in standardised:  # its weight, and what the fold set with it (the gain, weight_norm's g)
                which = "standardised " if computes_its_weight(edited.get_submodule(owner)) else ""
                note = (
                    f"{standardised[owner]} fold of its {which}weight (the layer "
                    "computes what the original does on the input the fold relates)"
                    if local in ("weight", "weight_v", "parametrizations.weight.original1")
                    else f"set by the fold of {owner}.weight"
                )
                reports[name] = ParamReport(name, ParamChange.FOLDED, tuple(o.shape), tuple(p.shape), "", note)
                claimed.add(name)
                continue
            mode = recognise_fold(o.detach(), p.detach()) if foldable else None
            if mode is not None:
                reports[name] = ParamReport(
                    name, ParamChange.FOLDED, tuple(o.shape), tuple(p.shape), "", f"{mode} fold of the original"
                )
                claimed.add(name)
                continue
        unmatched.append(name)

    reparametrised = {n: r for n, r in _reparametrised(edited, orig, new).items() if n in unmatched}
    for name, (note, source) in reparametrised.items():  # weight_norm of a pretrained weight: g and v
        if source not in claimed:
            shape = tuple(new[name].shape)
            reports[name] = ParamReport(name, ParamChange.KEPT, tuple(orig[source].shape), shape, "", note, source)
            unmatched.remove(name)
    claimed.update(source for _, source in reparametrised.values())

    # moved parameters: same values under another name (fc.weight -> fc.0.weight)
    free = [n for n in orig if n not in claimed and n not in new]
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for n in free:
        by_shape.setdefault(tuple(orig[n].shape), []).append(n)
    for name in list(unmatched):
        p = new[name]
        for cand in by_shape.get(tuple(p.shape), []):
            if cand not in claimed and _same(orig[cand], p):
                reports[name] = ParamReport(name, ParamChange.KEPT, tuple(p.shape), tuple(p.shape), "", "moved", cand)
                claimed.add(cand)
                unmatched.remove(name)
                break

    for name in list(unmatched):  # pretrained values changed, not drawn again: scaled, pruned, or another's
        derived = _derived(name, new[name], orig)
        if derived is not None:
            note, source = derived
            shape = tuple(new[name].shape)
            reports[name] = ParamReport(name, ParamChange.KEPT, shape, shape, "", note, source)
            claimed.add(name)
            unmatched.remove(name)

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
                if owner in readers():  # a layer inside the model: no fold keeps its weights
                    hint = f"pretrained weights lost — use adapt_input_channels(model, {p.shape[1]}, layer={owner!r})"
            reports[name] = ParamReport(
                name,
                ParamChange.REINITIALISED,
                tuple(o.shape),
                tuple(p.shape),
                init_of(name, p),
                "; ".join(x for x in (hint or "pretrained weights lost", note) if x),
            )
            claimed.add(name)
        else:
            reports[name] = ParamReport(name, ParamChange.NEW, None, tuple(p.shape), init_of(name, p))

    made_of = {part: name for name, (_, parts, _) in computed.items() for part in parts}
    tied_now = _aliases(edited, new)
    ordered = [reports[n] for n in new]
    for n in orig:
        if n in claimed or n in aliases:
            continue
        if n in tied_now:  # dec.weight = emb.weight: the name is there, its own pretrained values are not
            note = f"now shares {tied_now[n]} (tied): its own pretrained values are replaced"
            shape = tuple(orig[n].shape)
            ordered.append(ParamReport(n, ParamChange.REINITIALISED, shape, tuple(new[tied_now[n]].shape), "", note))
            continue
        why = f"{made_of[n]} is made of it: the edit made {made_of[n]} a plain parameter" if n in made_of else ""
        ordered.append(
            ParamReport(n, ParamChange.REMOVED, tuple(orig[n].shape), None, "", why or "not in the edited model")
        )
    for i, report in enumerate(ordered):  # an alias that is a parameter of its own now: the tie is broken
        if report.name in aliases and report.status is not ParamChange.NEW:
            untied = f"was shared with {aliases[report.name]}: no longer"
            ordered[i] = dataclasses.replace(report, message="; ".join(x for x in (report.message, untied) if x))
    return ordered


def _rows_kept(old: torch.Tensor, new: torch.Tensor) -> str:
    """For a resized 2-D head: how many new rows equal an old row."""
    if (
        old.dim() != new.dim()
        or old.dim() == 0
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
    kept = [(i, eq[i].nonzero()[:, 0].tolist()) for i in range(n.shape[0]) if eq[i].any()]
    if not kept:
        return ""
    return (  # a row equal to several old ones (zero biases) does not say which it came from
        f"{len(kept)} row(s) carried over: "
        + ", ".join(f"{i}←{js[0]}" if len(js) == 1 else f"{i}←one of {len(js)} equal rows" for i, js in kept[:10])
        + (" ..." if len(kept) > 10 else "")
    )


def _verdict(params: Sequence[ParamReport], invalid: Sequence[LayerReport]) -> str:
    def layers(status: ParamChange) -> list[str]:
        out: list[str] = []
        for p in params:
            if p.status == status and where(p) not in out:
                out.append(where(p))
        return out

    def where(p: ParamReport) -> str:
        return p.layer or p.name  # a parameter of the model itself (a class token): its own name

    parts = []
    reinit = layers(ParamChange.REINITIALISED)
    if reinit:
        details = []
        for layer in reinit:
            hint = next((p.message for p in params if where(p) == layer and "adapt_input_channels" in p.message), "")
            details.append(f"{layer}: {hint}" if hint else f"{layer}: pretrained weights lost")
        parts.append(f"{len(reinit)} layer{'s' * (len(reinit) != 1)} re-initialised ({'; '.join(details)})")
    folded = layers(ParamChange.FOLDED)
    if folded:
        parts.append(f"{len(folded)} folded ({', '.join(folded)})")
    new = layers(ParamChange.NEW)
    parts.append(f"{len(new)} new" + (f" ({', '.join(new)})" if new else ""))
    removed = layers(ParamChange.REMOVED)
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
    >>> from torchsurgeon import adapt_input_channels
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
            p.name, ParamChange.INVALID, p.shape_before, p.shape_after, p.init, findings.get(p.layer, ""), p.old_name
        )
        if p.layer in invalid_layers and p.status != ParamChange.REMOVED
        else p
        for p in params
    ]
    graph = after.graph
    change_by_layer: dict[str, ParamChange] = {}
    for p in params:
        if p.status in (ParamChange.FOLDED, ParamChange.NEW, ParamChange.REINITIALISED):
            change_by_layer.setdefault(p.layer, p.status)
    for rec in list(node_records(graph)):
        if rec.status == LayerStatus.OK and rec.layer in change_by_layer:
            update_record(graph, rec.name, change=change_by_layer[rec.layer])
    layers = [
        dataclasses.replace(layer, change=change_by_layer[layer.name])
        if layer.status == LayerStatus.OK and layer.name in change_by_layer
        else layer
        for layer in after.layers
    ]
    after = dataclasses.replace(after, layers=layers)
    return SurgeryReport(params, after.invalid, _verdict(params, after.invalid), before, after, graph)
