"""A check of any model edit: what happened to every parameter, and what no longer fits.

:func:`check_surgery` compares an edited model with its original, parameter
by parameter: kept, folded, re-initialised (with the initialiser named: the
model's own, a Hugging Face model's ``_init_weights``, or PyTorch's default),
new, removed, invalid; the edited model's graph records each layer's change
(:class:`~torchsurgeon.records.ParamChange`).
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

from .ambient import in_plain_torch
from .analysis import input_part, paramcount
from .channelmap import rearranged_fold
from .errors import TraceError, first_line
from .fold import is_exact_fold, recognise_fold, recognise_scaled_fold
from .foldcheck import computes_its_weight, fold_difference, tolerance
from .graph import node_records, update_record
from .initialisers import OwnInit, from_mean, named_init, own_inits
from .modelreport import ModelReport
from .paramrelations import (
    cast,
    derived,
    folded_then_updated,
    from_zeros,
    inexact_repeat_note,
    kept_pairs,
    resampled,
    resized_as,
    resized_rows,
    rows_kept,
    same,
    scaled_note,
    updated,
    updated_beside,
)
from .records import FoldMode, LayerReport, LayerStatus, ParamChange, ParamReport, TableColumn, TableFormat
from .report import changes_table, format_count, format_shape
from .resize import input_rows, weight_norm_dims
from .shapespec import InputSpec
from .surgery import input_layers
from .wrappers import unwrap_model

__all__ = ("PartChecked", "SurgeryReport", "check_surgery")


@dataclass(frozen=True)
class PartChecked:
    """What :func:`check_surgery` could check of models whose own ``forward`` cannot be traced (torchvision's
    detection models hand ``ImageList`` values between their parts and filter boxes by value).

    Every parameter is still compared (kept, new with its initialiser, removed: no trace is needed for that) and
    the totals are exact; shapes are checked in one part only, the one that takes the images.

    Attributes
    ----------
    name : str
        The part whose shapes were checked; :attr:`SurgeryReport.before` and ``after`` are its reports.
    input : tuple[int, ...]
        What the edited model's own forward hands the part at the input, batch included (a detection model
        resizes its images first).
    reason : str
        Why the whole model was not analysed (the first line of the TraceError).
    not_analysed : tuple[str, ...]
        The edited model's other parts with parameters, whose layers' shapes were not checked.
    models : tuple[str, str]
        The class names of the original and the edited model.
    given : str
        The input as given, formatted.
    total_before, total_after, frozen_after : int
        Unique parameters of the whole original and edited model, and the edited model's frozen ones.
    """

    name: str
    input: tuple[int, ...]
    reason: str
    not_analysed: tuple[str, ...]
    models: tuple[str, str]
    given: str
    total_before: int
    total_after: int
    frozen_after: int

    def note(self) -> str:
        """One line for the report: what was checked and what was not."""
        rest = ", ".join(self.not_analysed) or "the rest"
        return (
            f"NOT FULLY CHECKED: {self.models[1]}'s own forward cannot be traced ({self.reason}); every parameter "
            f"is compared and the totals are exact, but shapes are checked in {self.name} only (which the model "
            f"hands {format_shape(self.input)} at this input): {rest} not analysed"
        )


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
    part : PartChecked or None
        None when the whole models were analysed.  When their own ``forward`` cannot be traced (torchvision's
        detection models), what was checked: every parameter, the exact totals (:attr:`total_before`,
        :attr:`total_after`), and the shapes of one part, whose reports ``before``, ``after`` and ``graph``
        are; the report says ``NOT FULLY CHECKED`` and :attr:`complete` is False.
    """

    params: list[ParamReport]
    invalid: list[LayerReport]
    verdict: str
    before: ModelReport = field(repr=False)
    after: ModelReport = field(repr=False)
    graph: nx.DiGraph = field(repr=False, compare=False)
    part: PartChecked | None = None

    @property
    def complete(self) -> bool:
        """Whether the whole models were analysed (False: shapes were checked in :attr:`part` only)."""
        return self.part is None

    @property
    def total_before(self) -> int:
        """Unique parameters of the whole original model."""
        return self.before.total if self.part is None else self.part.total_before

    @property
    def total_after(self) -> int:
        """Unique parameters of the whole edited model."""
        return self.after.total if self.part is None else self.part.total_after

    @property
    def frozen_after(self) -> int:
        """Parameters of the whole edited model that do not require grad (``trainable_backbone_layers``)."""
        return self.after.frozen if self.part is None else self.part.frozen_after

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
        if self.part is not None:
            return f"Surgery check: {self.part.models[0]} → {self.part.models[1]}, input {self.part.given}"
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
            f"Total params before: {format_count(self.total_before)}",
            f"Total params after:  {format_count(self.total_after)}",
        ]
        if self.frozen_after:
            lines.append(f"Frozen params after: {format_count(self.frozen_after)} (requires_grad=False)")
        if self.part is None:
            before, after = format_shape(self.before.output_shape), format_shape(self.after.output_shape)
            lines.append(f"Output before: {before}, after: {after}")
        else:
            before, after = format_shape(self.before.output_shape), format_shape(self.after.output_shape)
            lines += [f"Output of {self.part.name} before: {before}, after: {after}", self.part.note()]
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
            "total_before": self.total_before,
            "total_after": self.total_after,
            "frozen_after": self.frozen_after,
            "complete": self.complete,
            "part": None if self.part is None else dataclasses.asdict(self.part),
            "output_before": self.before.to_dict()["output_shape"] if self.part is None else None,  # not analysed
            "output_after": self.after.to_dict()["output_shape"] if self.part is None else None,
            "counts": {str(s): len(self.by_status(s)) for s in _SURGERY_STATUSES},
        }


_SURGERY_STATUSES = (
    ParamChange.KEPT,
    ParamChange.FOLDED,
    ParamChange.RESIZED,
    ParamChange.UPDATED,
    ParamChange.REINITIALISED,
    ParamChange.NEW,
    ParamChange.REMOVED,
    ParamChange.INVALID,
)


def _module_and_local(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, local = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), local


def _aliases(model: nn.Module, unique: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """A shared parameter's other names, each with the name ``named_parameters()`` (``unique``) gives it."""
    first = {id(t): n for n, t in unique.items()}
    return {n: first[id(t)] for n, t in model.named_parameters(remove_duplicate=False) if n not in unique}


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


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
        channels = getattr(layer, "in_channels", getattr(layer, "in_features", v.shape[1]))
        width = getattr(old, "in_channels", getattr(old, "in_features", w.shape[1]))
        outputs = [getattr(m, "out_channels", getattr(m, "out_features", None)) for m in (old, layer)]
        if w.dim() < 2 or outputs[0] != outputs[1] or channels == width or not w.is_floating_point():
            continue  # (a transposed conv's weight holds its input channels in dim 0)
        grey = FoldMode.SUM if channels == 1 else FoldMode.SPREAD  # both exact on a grey image replicated
        for mode in (FoldMode.ZERO_EXTRA, FoldMode.REPEAT, grey):  # the relation that holds for most inputs first
            if (mode == FoldMode.REPEAT and channels % width) or (mode == FoldMode.ZERO_EXTRA and channels <= width):
                continue
            if fold_difference(old, layer, mode, width, channels) <= tolerance(w.dtype):
                found[name] = mode
                break
    return found


def _as_folded(
    original: nn.Module, edited: nn.Module, name: str, old: torch.Tensor, new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights ``name`` of the two models as a fold reads them (:func:`~torchsurgeon.resize.input_rows`): one
    row per output channel over its group's input channels, whatever the layer's layout (a transposed convolution
    holds its input channels in dim 0) and with the edited layer's groups (a grouped convolution folded dense is
    compared dense); other parameters as they are."""
    owner, _, local = name.rpartition(".")
    try:
        before, after = original.get_submodule(owner), edited.get_submodule(owner)
    except AttributeError:
        return old, new
    conv = nn.modules.conv._ConvNd
    if local != "weight" or not isinstance(before, conv) or not isinstance(after, conv):
        return old, new
    if before.transposed != after.transposed or after.groups not in (1, before.groups):
        return old, new
    if old.shape != before.weight.shape or new.shape != after.weight.shape:  # not the layers' own weights
        return old, new
    return input_rows(before, old, after.groups), input_rows(after, new, after.groups)


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
) -> dict[str, tuple[ParamChange, str, str]]:
    """The edited model's parameters that make a pretrained weight again: ``weight_norm``'s ``g`` and ``v`` of a
    layer whose ``g·v/‖v‖`` is its pretrained weight (kept), a pruned layer's ``weight_orig`` whose masked weight
    is its pretrained one pruned (updated: :func:`derived`); each with its status, a note and that weight's
    name.  A re-parametrised weight that is not made of the pretrained one (``v`` drawn again) is not theirs."""
    found: dict[str, tuple[ParamChange, str, str]] = {}
    for name, (value, parts, kind) in _computed_weights(edited).items():
        old = orig.get(name)
        if name in new or old is None or not parts or any(p not in new for p in parts):
            continue
        if old.is_meta or value.is_meta or old.shape != value.shape or not old.is_floating_point():
            continue
        a, b = old.detach().double(), value.detach().double().to(old.device)
        tol = tolerance(old.dtype)
        note = f"re-parametrised by {kind}: the weight it makes is the pretrained {name}"
        if torch.allclose(b, a, rtol=tol, atol=tol * float(a.abs().max())):
            found.update((part, (ParamChange.KEPT, note, name)) for part in parts)
            continue
        relation = derived(name, value.to(old.dtype), {name: old})  # pruned by a hook (torch.nn.utils.prune)
        if relation is not None and relation[0] == ParamChange.UPDATED:
            found.update((part, (ParamChange.UPDATED, f"{note}, {relation[1]}", name)) for part in parts)
    return found


def _classify(original: nn.Module, edited: nn.Module, input: InputSpec) -> list[ParamReport]:
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

    @functools.cache
    def own() -> dict[str, OwnInit]:
        """What the edited model's own initialiser (transformers' ``_init_weights``) draws for the unmatched ones."""
        return own_inits(edited, unmatched)

    def init_of(name: str, t: torch.Tensor, old: torch.Tensor | None = None) -> str:
        """How ``t`` (new values of ``name``; the new rows of the pretrained ``old`` when given) was set."""
        module, local = _module_and_local(edited, name)
        return (from_mean(old, t) if old is not None else "") or named_init(module, local, t, own().get(name))

    unmatched: list[str] = []
    for name, p in new.items():
        if name in orig:
            o = orig[name]
            if same(o, p):
                reports[name] = ParamReport(name, ParamChange.KEPT, tuple(o.shape), tuple(p.shape))
                claimed.add(name)
                continue
            if cast(o, p):  # model.double(), model.half(): the pretrained values in another dtype
                note = f"cast {_dtype(o)} → {_dtype(p)}"
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
            folds = _as_folded(original, edited, name, o.detach(), p.detach()) if foldable else None
            mode = recognise_fold(*folds) if folds is not None else None
            grouped = mode is None and folds is not None and rearranged_fold(original, name, *folds, input)
            if mode is not None or grouped:
                folded = f"{mode} fold of the original" if mode is not None else f"{grouped} fold of the original, "
                widths = (folds[0].shape[1], folds[1].shape[1]) if folds is not None else (1, 1)
                if mode is not None and not is_exact_fold(mode, *widths):  # 13 → 2 channels: scaled, cut
                    folded += inexact_repeat_note(*widths, name.rpartition(".")[0])
                if grouped:  # the layer reads the input moved around: each group of pixels' colours folded
                    folded += "each group of pixels' colours (the input rearranged: space-to-depth, images stacked)"
                reports[name] = ParamReport(name, ParamChange.FOLDED, tuple(o.shape), tuple(p.shape), "", folded)
                claimed.add(name)
                continue
            scaled = recognise_scaled_fold(*folds) if folds is not None and folds[0].shape != folds[1].shape else None
            if scaled is not None and folds is not None:  # folded by hand with a mean: the filters, not the output
                note = scaled_note(*scaled, folds[0].shape[1], folds[1].shape[1], name.rpartition(".")[0])
                reports[name] = ParamReport(name, ParamChange.FOLDED, tuple(o.shape), tuple(p.shape), "", note)
                claimed.add(name)
                continue
        unmatched.append(name)

    reparametrised = {n: r for n, r in _reparametrised(edited, orig, new).items() if n in unmatched}
    for name, (status, note, source) in reparametrised.items():  # weight_norm's g and v, a pruned weight_orig
        if source not in claimed:
            shape = tuple(new[name].shape)
            reports[name] = ParamReport(name, status, tuple(orig[source].shape), shape, "", note, source)
            unmatched.remove(name)
    claimed.update(source for _, _, source in reparametrised.values())

    # moved parameters: same values under another name (fc.weight -> fc.0.weight)
    free = [n for n in orig if n not in claimed and n not in new]
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for n in free:
        by_shape.setdefault(tuple(orig[n].shape), []).append(n)
    for name in list(unmatched):
        p = new[name]
        for cand in by_shape.get(tuple(p.shape), []):
            if cand not in claimed and (same(orig[cand], p) or cast(orig[cand], p)):
                o = orig[cand]
                note = "moved" + (f", cast {_dtype(o)} → {_dtype(p)}" if o.dtype != p.dtype else "")
                reports[name] = ParamReport(name, ParamChange.KEPT, tuple(p.shape), tuple(p.shape), "", note, cand)
                claimed.add(cand)
                unmatched.remove(name)
                break

    moved_from: dict[str, str] = {}  # layers moved then fine-tuned: new name -> old name
    for name in list(unmatched):  # moved, then fine-tuned (append_head's fc.0.weight, trained): the closest update
        p = new[name]
        if name in orig:
            continue
        free_now = [c for c in by_shape.get(tuple(p.shape), []) if c not in claimed and not orig[c].is_meta]
        if p.is_meta or not p.is_floating_point() or not free_now:
            continue
        owner, _, local = name.rpartition(".")
        beside = f"{moved_from[owner]}.{local}" if owner in moved_from else None
        if beside in free_now:  # the bias of a layer whose weight moved: moved with it
            assert beside is not None
            cand, how = beside, updated(orig[beside], p) or updated_beside(orig[beside], p, owner)
        else:
            cand = min(free_now, key=lambda c: float((p.detach().double() - orig[c].detach().double()).norm()))
            how = updated(orig[cand], p)
        if how is not None:
            moved_from.setdefault(owner, cand.rpartition(".")[0])
            shape = tuple(p.shape)
            reports[name] = ParamReport(name, ParamChange.UPDATED, shape, shape, "", f"moved; {how}", cand)
            claimed.add(cand)
            unmatched.remove(name)

    for name in list(unmatched):  # pretrained values changed, not drawn again: scaled, pruned, or another's
        relation = derived(name, new[name], orig)
        if relation is not None:
            status, note, source = relation
            shape = tuple(new[name].shape)
            reports[name] = ParamReport(name, status, shape, shape, "", note, source)
            claimed.add(name)
            unmatched.remove(name)

    resizes: set[tuple[int, int]] = set()  # (rows before, rows after) of the tables resized so far
    kept_rows: dict[str, list[tuple[int, int]]] = {}  # a resized layer's rows (new, old) that are pretrained
    updated_layers = {r.layer for r in reports.values() if r.status is ParamChange.UPDATED}
    for name in unmatched:
        p = new[name]
        if name in orig:
            o = orig[name]
            owner = name.rpartition(".")[0]
            if from_zeros(o, p) and owner in updated_layers:
                note = f"updated from the pretrained zeros, as {owner or 'the model'}'s other parameters were"
                reports[name] = ParamReport(name, ParamChange.UPDATED, tuple(o.shape), tuple(p.shape), "", note)
                claimed.add(name)
                continue
            small = updated_beside(o, p, owner) if owner in updated_layers and o.numel() <= 16 else None
            if small is not None:  # a bias too small to tell on its own, beside a weight fine-tuned
                reports[name] = ParamReport(name, ParamChange.UPDATED, tuple(o.shape), tuple(p.shape), "", small)
                claimed.add(name)
                continue
            grid = resampled(o, p)
            if grid is not None:  # a ViT's positions for another image size: the pretrained grid interpolated
                reports[name] = ParamReport(name, ParamChange.RESIZED, tuple(o.shape), tuple(p.shape), "", grid)
                claimed.add(name)
                continue
            alike = o.dim() > 0 and p.dim() > 0 and (o.shape[0], p.shape[0]) in resizes
            resized = resized_rows(o, p, alike=alike) or resized_as(o, p, kept_rows.get(owner, ()))
            if resized is not None:  # an embedding or a head resized: its pretrained rows are there
                note, fresh = resized
                init = init_of(name, p[fresh], o) if fresh else ""
                reports[name] = ParamReport(name, ParamChange.RESIZED, tuple(o.shape), tuple(p.shape), init, note)
                resizes.add((o.shape[0], p.shape[0]))
                kept_rows.setdefault(owner, kept_pairs(o, p))
                claimed.add(name)
                continue
            rows, cols = _as_folded(original, edited, name, o.detach(), p.detach())
            trained = folded_then_updated(rows, cols)
            if trained is not None:  # an adapted stem fine-tuned since: pretrained, not lost
                reports[name] = ParamReport(name, ParamChange.UPDATED, tuple(o.shape), tuple(p.shape), "", trained)
                claimed.add(name)
                updated_layers.add(owner)
                continue
            note = rows_kept(o, p)
            hint = ""
            if (
                tuple(rows.shape[:1]) == tuple(cols.shape[:1])
                and rows.dim() == cols.dim()
                and rows.dim() >= 2
                and rows.shape[1] != cols.shape[1]
            ):
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
            hint = next(
                (
                    p.message
                    for p in params
                    if where(p) == layer
                    and p.status == ParamChange.REINITIALISED
                    and "adapt_input_channels" in p.message
                ),
                "",
            )
            details.append(f"{layer}: {hint}" if hint else f"{layer}: pretrained weights lost")
        parts.append(f"{len(reinit)} layer{'s' * (len(reinit) != 1)} re-initialised ({'; '.join(details)})")
    folded = layers(ParamChange.FOLDED)
    if folded:
        inexact = {
            where(p): p.message.partition(" — ")[0]
            for p in params
            if p.status == ParamChange.FOLDED and "not exact" in p.message
        }
        parts.append(f"{len(folded)} folded ({', '.join(f'{x}: {inexact[x]}' if x in inexact else x for x in folded)})")
    updated = layers(ParamChange.UPDATED)
    if updated:
        parts.append(f"{len(updated)} updated ({', '.join(updated)})")
    resized = layers(ParamChange.RESIZED)
    if resized:
        notes = [next(p.message for p in params if where(p) == x and p.status == ParamChange.RESIZED) for x in resized]
        parts.append(f"{len(resized)} resized ({'; '.join(f'{x}: {note}' for x, note in zip(resized, notes))})")
    new = layers(ParamChange.NEW)
    parts.append(f"{len(new)} new" + (f" ({', '.join(new)})" if new else ""))
    removed = layers(ParamChange.REMOVED)
    if removed:
        parts.append(f"{len(removed)} removed ({', '.join(removed)})")
    names = sorted({layer.name for layer in invalid}, key=[x.name for x in invalid].index)
    parts.append(f"{len(names)} invalid" + (f" ({', '.join(names)})" if names else ""))
    return ", ".join(parts)


@in_plain_torch
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

    Raises
    ------
    TraceError
        When a model cannot be traced and no part of it takes the input.

    Notes
    -----
    A model whose own ``forward`` cannot be traced (torchvision's detection models) is still checked parameter by
    parameter, with exact totals; shapes are checked in the part that takes the images, at what the model hands
    it, and the report says what was not analysed (:attr:`SurgeryReport.part`, ``complete`` False).

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
    part: PartChecked | None = None
    try:
        before = paramcount(original, input, batch=batch)
        after = paramcount(edited, input, batch=batch)
    except TraceError as exc:
        if not exc.whole_model:
            raise
        before, after, part = _parts_checked(original, edited, input, batch, exc)
    prefix = f"{part.name}." if part is not None else ""  # the part's layer names, in the model's names
    params = _classify(original, edited, input)
    invalid = [dataclasses.replace(layer, name=f"{prefix}{layer.name}") for layer in after.invalid]
    invalid_layers = {layer.name for layer in invalid}
    findings = {f"{prefix}{f.layer}": f.message for f in after.findings}
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
        if p.status in (
            ParamChange.FOLDED,
            ParamChange.RESIZED,
            ParamChange.UPDATED,
            ParamChange.NEW,
            ParamChange.REINITIALISED,
        ):
            change_by_layer.setdefault(p.layer, p.status)
    in_part = {layer.removeprefix(prefix): c for layer, c in change_by_layer.items() if layer.startswith(prefix)}
    for rec in list(node_records(graph)):
        if rec.status == LayerStatus.OK and rec.layer in in_part:
            update_record(graph, rec.name, change=in_part[rec.layer])
    layers = [
        dataclasses.replace(layer, change=in_part[layer.name])
        if layer.status == LayerStatus.OK and layer.name in in_part
        else layer
        for layer in after.layers
    ]
    after = dataclasses.replace(after, layers=layers)
    verdict = _verdict(params, invalid)
    if part is not None:
        verdict += f"; shapes checked in {part.name} only ({', '.join(part.not_analysed) or 'the rest'} not analysed)"
    return SurgeryReport(params, invalid, verdict, before, after, graph, part)


def _parts_checked(
    original: nn.Module, edited: nn.Module, input: InputSpec, batch: int, exc: TraceError
) -> tuple[ModelReport, ModelReport, PartChecked]:
    """The reports of the part of each model that takes the images (:func:`~torchsurgeon.analysis.input_part`,
    at what each model's own forward hands it), for models whose own forward cannot be traced; ``exc`` is raised
    again when no part of both can be analysed."""
    found = input_part(original, input, batch), input_part(edited, input, batch)
    if found[0] is None or found[1] is None or found[0].name != found[1].name:
        raise exc
    name = found[1].name
    before = paramcount(original.get_submodule(name), found[0].input, batch=found[0].batch)
    after = paramcount(edited.get_submodule(name), found[1].input, batch=found[1].batch)
    rest = tuple(n for n, m in edited.named_children() if n != name and any(True for _ in m.parameters()))
    assert isinstance(input, tuple)  # input_part analyses a part for a plain shape only
    part = PartChecked(
        name,
        (found[1].batch, *found[1].input),
        first_line(exc, 200),
        rest,
        (type(original).__name__, type(edited).__name__),
        format_shape((batch, *input)),
        sum(p.numel() for p in original.parameters()),  # parameters() gives a tied one once
        sum(p.numel() for p in edited.parameters()),
        sum(p.numel() for p in edited.parameters() if not p.requires_grad),
    )
    return before, after, part
