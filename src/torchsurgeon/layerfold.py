"""One input layer folded to another channel count, in place: the weights, the settings, the guards of its width.

:func:`adapt_layer` is what :func:`~torchsurgeon.surgery.adapt_input_channels`
does to each layer it folds: a convolution (grouped, depthwise, transposed,
weight-normed) or a Linear gets the weight :func:`~torchsurgeon.fold.fold_weight`
makes for the mode, or new weights drawn as its class draws them, and a
report of each parameter it changed.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize, prune
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from .channelmap import ChannelMap
from .copies import model_copy
from .errors import SurgeryError
from .fold import fold_weight, is_exact_fold
from .foldcheck import checked_fold, computes_its_weight
from .initialisers import default_init
from .paramrelations import inexact_repeat_note
from .records import Finding, FoldMode, ParamChange, ParamReport
from .resize import (
    dense_weight,
    fitted_groups,
    resized_copy,
    weight_norm_dims,
)

__all__ = ("adapt_layer", "input_width", "plain_weight", "set_submodule", "weight_normed")


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` of ``model`` is (an attribute of its parent).

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    >>> set_submodule(net, "0", nn.Linear(4, 2))
    >>> net[0].out_features
    2
    """
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _fold_layer_weight(
    layer: nn.Module, weight: torch.Tensor, channels: int, groups: int, mode: FoldMode
) -> torch.Tensor:
    """Fold the input channels of a weight, group by group (the input channels are dim 0 of a transposed conv)."""
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        per_group = weight.reshape(groups, weight.shape[0] // groups, -1)  # (groups, in per group, rest)
        folded = fold_weight(per_group, channels // groups, mode)
        return folded.reshape(channels, *weight.shape[1:])
    return fold_weight(weight, channels // groups, mode)


def _sum_refused(name: str, layer: nn.Module, what: str, before: int, channels: int) -> str:
    """Why ``mode='sum'`` cannot fold the input layer ``name`` to ``channels``, in the layer's own numbers: it folds
    each group of input channels to one, so only 1 channel, or one per group, fit."""
    grouped = int(getattr(layer, "groups", 1))
    built = f"{what}={before}" + (f", groups={grouped}" if grouped > 1 else "")
    fit = "1 channel" + (f", or {grouped} (one per group)" if grouped > 1 else "")
    return (
        f"{name} ({type(layer).__name__}): built for {built}, mode='sum' folds it to {fit}, got channels={channels} — "
        f"use mode='spread' or mode='repeat' to fold it to {channels}"
    )


def _unparametrized(layer: nn.Module) -> None:
    """Remove the parametrization of ``layer.weight`` (weight_norm, orthogonal), leaving the weight it computes."""
    cls = type(layer)  # a copy shares its parametrized class with the original: removal edits a class of its own
    layer.__class__ = type(cls.__name__, cls.__bases__, {k: v for k, v in vars(cls).items() if k != "__dict__"})
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)


def plain_weight(layer: nn.Module, name: str) -> tuple[Mapping[str, int], Mapping[str, torch.Tensor], str]:
    """Make the weight of ``layer`` (named ``name``) a plain parameter holding what it computes now, to be set
    anew: a parametrization (``weight_norm``, ``orthogonal``) or a pruning / legacy hook of torch removed.  Returns
    the ``weight_norm`` to put back on the new weight (:func:`weight_normed`: its parameter and dim, and their
    values before), and the note saying what was removed.

    Examples
    --------
    >>> from torch.nn.utils import prune
    >>> layer = prune.l1_unstructured(nn.Linear(4, 2), "weight", amount=0.5)
    >>> plain_weight(layer, "fc")[2], type(layer.weight).__name__
    (' (its pruning removed: the pruned weight is folded; prune the edited model again to go on pruning)', 'Parameter')
    """
    normed = weight_norm_dims(layer)
    before = {n: layer.get_parameter(n).detach() for n in normed}
    parametrized = parametrize.is_parametrized(layer, "weight")
    if parametrized:
        _unparametrized(layer)
    note = _plain_weight(layer)
    if normed:
        note = " (weight_norm kept: the weight it makes is folded, then made again by weight_norm)"
    elif parametrized:
        note = " (its weight parametrization removed: the weight it computed is folded)" + note
    return normed, before, note


def _plain_weight(layer: nn.Module) -> str:
    """Make a weight that a forward pre-hook of torch computes (``torch.nn.utils.prune``, the legacy
    ``weight_norm`` and ``spectral_norm``) a plain parameter holding what it computes now, as their own
    ``remove`` does; what was removed, for the change's note ("" when nothing)."""
    for hook in list(layer._forward_pre_hooks.values()):
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == "weight":
            prune.remove(layer, "weight")  # type: ignore[no-untyped-call]
            return " (its pruning removed: the pruned weight is folded; prune the edited model again to go on pruning)"
        if isinstance(hook, (WeightNorm, SpectralNorm)) and hook.name == "weight":
            remove = nn.utils.remove_weight_norm if isinstance(hook, WeightNorm) else nn.utils.remove_spectral_norm
            remove(layer, "weight")
            return f" (its {type(hook).__name__} hook removed: the weight it computed is folded)"
    return ""


def adapt_layer(
    model: nn.Module, name: str, channels: int, mode: FoldMode, layout: ChannelMap | None = None
) -> list[ParamReport]:
    """Fold (or re-initialise) the weight of the input layer ``name``; its changes: the weight's, then any other
    parameter the fold set (the gain of a layer that standardises its weight).  ``layout``: the layer reads the
    input only after a rearrangement (a space-to-depth stem), whose groups of channels are folded each
    (:meth:`~torchsurgeon.channelmap.ChannelMap.fold`) to its :attr:`~torchsurgeon.channelmap.ChannelMap.width`.

    Examples
    --------
    >>> from torchsurgeon.records import FoldMode
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    >>> [(r.name, r.status.value) for r in adapt_layer(net, "0", 1, FoldMode.SUM)], net[0].in_channels
    ([('0.weight', 'folded')], 1)
    """
    layer = model.get_submodule(name)
    kind = type(layer).__name__
    what, before = input_width(model, name)
    assert isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear))  # input_width raised for anything else
    original_norms = {n: layer.get_parameter(n).detach() for n in weight_norm_dims(layer)}
    if layout is not None and (
        int(getattr(layer, "groups", 1)) != 1
        or isinstance(layer, nn.modules.conv._ConvTransposeNd)
        or computes_its_weight(layer)
        or weight_norm_dims(layer)
        or parametrize.is_parametrized(layer, "weight")
    ):
        raise SurgeryError(
            f"{name} ({kind}) reads the input after a rearrangement of its channels and is grouped, transposed or "
            "computes its weight: no fold of it is known to be exact — replace it (new weights) with "
            f"adapt_input_channels(model, {channels}, mode='random', layer={name!r})"
        )
    width = layout.width if layout is not None else channels  # the layer's own input channels once folded
    groups = fitted_groups(layer, channels) if isinstance(layer, nn.modules.conv._ConvNd) and layout is None else 1
    normed = weight_norm_dims(layer) if mode != FoldMode.RANDOM else {}  # kept on the folded weight
    unparametrized = mode != FoldMode.RANDOM and parametrize.is_parametrized(layer, "weight")
    if unparametrized:  # weight_norm & co: fold the weight they compute, which then becomes a plain parameter
        _unparametrized(layer)
    unhooked = _plain_weight(layer)
    old_weight = layer.get_parameter("weight") if "weight" in layer._parameters else layer.weight
    shape_before = tuple(old_weight.shape)
    if mode == FoldMode.RANDOM:
        fresh = resized_copy(layer, Finding(name, kind, what, before, width, ""), device=old_weight.device)
        assert fresh is not None
        if old_weight.device.type != "meta":
            fresh.reset_parameters()  # type: ignore[operator]
        frozen = [p for p in fresh.parameters(recurse=False) if not p.requires_grad]
        for p in frozen:  # weights drawn anew that never train stay noise: trainable, as a new head is
            p.requires_grad_(True)
        thawed = f"; made trainable: {name} was frozen (requires_grad=False), and new random weights must train"
        set_submodule(model, name, fresh)
        return [  # reset_parameters draws the bias too
            ParamReport(
                f"{name}.{local}",
                ParamChange.REINITIALISED,
                tuple(getattr(layer, local).shape),
                tuple(p.shape),
                default_init(fresh, local),
                "pretrained weights lost (mode='random')" + (thawed if frozen else ""),
            )
            for local, p in fresh.named_parameters(recurse=False)
        ]
    if mode == FoldMode.SUM and channels // groups != 1:  # the fold's own refusal would give a per-group count
        raise SurgeryError(_sum_refused(name, layer, what, before, channels))
    densified = isinstance(layer, nn.modules.conv._ConvNd) and groups != layer.groups
    original = model_copy(layer) if computes_its_weight(layer) and not old_weight.is_meta else None
    weight = dense_weight(layer, old_weight) if densified else old_weight.detach()  # type: ignore[arg-type]
    try:
        if layout is not None:
            folded = layout.fold(weight, mode)
        else:
            folded = _fold_layer_weight(layer, weight, channels, groups, mode)
    except SurgeryError as exc:
        raise SurgeryError(f"{name} ({kind}): {exc}") from exc
    layer.weight = nn.Parameter(folded, requires_grad=old_weight.requires_grad)
    if isinstance(layer, nn.Linear):
        layer.in_features = width
    else:
        assert isinstance(layer, nn.modules.conv._ConvNd)
        layer.in_channels, layer.groups = width, groups
    note = f"{mode} fold of {before} → {channels} channels"
    if layout is None and not is_exact_fold(mode, weight.shape[1], folded.shape[1]):  # 13 → 2: scaled, cut
        note += inexact_repeat_note(weight.shape[1], folded.shape[1], name)
    if layout is not None and len(layout.before) > 1:
        note = (
            f"{mode} fold of {layout.colours} → {channels} channels in each of the {len(layout.before)} groups of "
            f"pixels it reads after a rearrangement of the input (a space-to-depth, images stacked): {before} → {width}"
        )
    elif layout is not None:
        note = f"{mode} fold of {layout.colours} → {channels} channels: {before} → {width}"
    if layout is not None and layout.kept:
        note += f", the {len(layout.kept)} channels the input is joined with kept as they are"
    others: list[ParamReport] = []
    if original is not None:  # its forward computes the weight it uses: is the fold still exact?
        refold = lambda w: _fold_layer_weight(layer, w, channels, groups, mode)  # noqa: E731
        note += checked_fold(f"{name} ({kind})", original, layer, mode, before, channels, refold)
        for pname, p in layer.named_parameters(recurse=False):  # what else the fold set (the gain)
            before_p = original.get_parameter(pname)
            if pname != "weight" and (p.shape != before_p.shape or not torch.equal(p, before_p)):
                others.append(
                    ParamReport(
                        f"{name}.{pname}",
                        ParamChange.FOLDED,
                        tuple(before_p.shape),
                        tuple(p.shape),
                        "",
                        f"set by the fold of {name}.weight: its standardisation gives the folded weight back",
                    )
                )
    if getattr(layer, "weight_fake_quant", None) is not None:  # a QAT layer
        note += " (of the float weight: its fake quantisation calibrates to the folded weight as it trains)"
    if normed:
        note += " (weight_norm kept: the weight it makes is folded, then made again by weight_norm)"
    elif unparametrized:
        note += " (its weight parametrization removed: the weight it computed is folded)"
    note += "" if normed else unhooked
    if densified:
        note += " (grouped conv made dense: groups=1)"
    elif groups > 1:
        note += f" (folded within each of its {groups} groups)"
    weight_report = ParamReport(f"{name}.weight", ParamChange.FOLDED, shape_before, tuple(layer.weight.shape), "", note)
    if normed:
        return weight_normed(layer, name, normed, weight_report, original_norms)
    return [weight_report, *others]


def weight_normed(
    layer: nn.Module, name: str, dims: Mapping[str, int], folded: ParamReport, before: Mapping[str, torch.Tensor]
) -> list[ParamReport]:
    """Put ``weight_norm`` back on ``layer``'s folded (plain) weight, with its ``dim`` and API (the parametrization
    or the legacy hook, whose parameter names a state dict holds): ``v`` is the folded weight and ``g`` its norm,
    so the layer computes the folded weight exactly; the changes of both, named as the layer holds them."""
    ((g_name, dim),) = dims.items()
    if g_name == "weight_g":  # the legacy API the user's model uses, without its deprecation warning: the function
        inspect.unwrap(WeightNorm.apply)(layer, "weight", dim)  # under the decorator (no process-wide filter swapped)
    else:
        nn.utils.parametrizations.weight_norm(layer, "weight", dim)
    v_name = "weight_v" if g_name == "weight_g" else "parametrizations.weight.original1"
    g = layer.get_parameter(g_name)
    return [
        dataclasses.replace(folded, name=f"{name}.{v_name}"),
        ParamReport(
            f"{name}.{g_name}",
            ParamChange.FOLDED,
            tuple(before[g_name].shape),
            tuple(g.shape),
            "",
            f"weight_norm's magnitude of the folded {name}.weight (its norm; dim={dim})",
        ),
    ]


def input_width(model: nn.Module, name: str) -> tuple[str, int]:
    """``("in_channels", C)`` of a Conv or ``("in_features", F)`` of a Linear layer; else why it cannot be folded.

    Examples
    --------
    >>> input_width(nn.Sequential(nn.Conv2d(3, 8, 3)), "0")
    ('in_channels', 3)
    """
    layer = model.get_submodule(name)
    if isinstance(layer, nn.modules.conv._ConvNd):
        return "in_channels", layer.in_channels
    if isinstance(layer, nn.Linear):
        return "in_features", layer.in_features
    if not name:  # a probe's model: F.conv2d(x, self.w) in the top-level forward (the error named "")
        raise SurgeryError(
            f"{type(layer).__name__}'s own forward reads the input with a parameter of its own (as in "
            "F.conv2d(x, self.weight)), not with a Conv or Linear layer — adapt_input_channels folds the weights "
            "of such layers only: fold that parameter by hand (for mode='sum': its sum over dim 1, keepdim=True), "
            "or hold it in an nn.Conv2d"
        )
    if isinstance(layer, nn.Embedding):  # a text model: BERT's word embeddings
        raise SurgeryError(
            f"{name} (Embedding) reads the input: token ids, indices into its {layer.num_embeddings} rows, not "
            "channels — there are no input channels to adapt (adapt_input_channels folds the Conv or Linear layers "
            "that read an image's or a signal's channels)"
        )
    if any(True for _ in layer.children()):
        first = next((n for n, m in layer.named_modules() if n and any(True for _ in m.parameters(recurse=False))), "")
        text = isinstance(layer.get_submodule(first), nn.Embedding) if first else False
        if text and not any(isinstance(m, nn.modules.conv._ConvNd) for m in layer.modules()):
            raise SurgeryError(  # sentence-transformers' Transformer module around a BERT: no image to suggest
                f"{name} ({type(layer).__name__}) reads the input but could not be looked into: the first layer "
                f"with weights in it is {name}.{first} (Embedding), which reads token ids, and it holds no "
                "convolution — a text model's input has no channels to adapt (adapt_input_channels folds the Conv "
                "or Linear layers that read an image's or a signal's channels); if a Linear layer in it reads the "
                "input's features, name it with layer=..."
            )
        raise SurgeryError(
            f"{name} ({type(layer).__name__}) reads the input but could not be looked into — pass an input the "
            "model accepts now, e.g. input=(3, 224, 224), so adapt_input_channels can run it and find the layers "
            "inside, or name them with layer=..."
        )
    raise SurgeryError(
        f"{name} ({type(layer).__name__}) reads the input but is not a Conv or Linear layer — adapt it by hand; "
        "adapt_input_channels folds Conv/Linear weights only"
    )
