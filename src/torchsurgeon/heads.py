"""The classifier of a model, found from its traced graph: :func:`replace_head` and :func:`append_head`.

A model's heads are the Linear or convolution layers whose outputs make its
logits (its first output, ``logits`` of a Hugging Face classifier) through
no other layer with weights, all as wide as the closest one: one for most
models, two for a distilled one (DeiT's ``head`` and ``head_dist``, LeViT,
CrossViT average theirs).  A layer that gives another output as it is
(through dropout, flatten or views), as wide, is a head too: GoogLeNet's and
Inception-v3's auxiliary classifiers, which only a model in training mode
calls (a model in ``eval()`` is also traced in training mode to find them).
Hidden states and attentions a model also returns are not classifiers, nor is a
layer making an embedding (a two-tower model's, CLIP's: :func:`~torchsurgeon.headfinding.heads_and_others`).

Nothing here changes the model it is given unless ``inplace=True``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
from collections.abc import Mapping
from typing import Any

import networkx as nx
import torch
from torch import nn

from .ambient import in_plain_torch
from .analysis import paramcount
from .arguments import layer_names
from .errors import InputError, SurgeryError, TorchSurgeonError, as_written, check_count
from .graph import NodeRecord, fx_node, node_records
from .guards import guard_holders
from .headfinding import (
    BOX_COORDINATES,
    after_the_model,
    box_pair,
    head_graph,
    heads_and_others,
    heads_of,
    is_layer,
    module_record,
    not_a_layer,
    running_input,
    running_report,
    width_of,
)
from .headless import CLASS_COUNTS, is_normalisation, transformers_base
from .initialisers import default_init, named_init
from .layerfold import set_submodule
from .readers import guessed_input
from .records import ParamChange, ParamReport
from .resize import replacing_call
from .shapespec import InputSpec
from .surgery import SurgeryResult, _copy, _with_guards, no_such_layer
from .wrappers import from_peft, unwrap_model

__all__ = ("append_head", "head_layer", "head_layers", "replace_head")


def head_layer(model: nn.Module, input: InputSpec | None = None) -> str:
    """Qualified name of the classifier: the last layer with weights before the (first) output.

    ``""`` when the output comes from the model's own parameters (open_clip's
    ``x @ self.proj``); :func:`replace_head` then says what to do.  Of a model
    with several heads, the closest to the output (see :func:`head_layers`).

    Examples
    --------
    >>> from torch import nn
    >>> head_layer(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2), nn.Flatten()))
    '3'
    """
    return heads_of(model, input, "head_layer(model, {input})")[0][0]


@in_plain_torch
def head_layers(model: nn.Module, input: InputSpec | None = None) -> list[str]:
    """Qualified names of every classifier of ``model`` (module docstring): what :func:`replace_head` replaces.

    ``input`` (as in :func:`~torchsurgeon.paramcount`) for a model that cannot
    be traced without one.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Distilled(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body, self.head, self.head_dist = nn.Linear(8, 8), nn.Linear(8, 5), nn.Linear(8, 5)
    ...     def forward(self, x):
    ...         x = self.body(x)
    ...         return (self.head(x) + self.head_dist(x)) / 2
    >>> head_layers(Distilled())
    ['head', 'head_dist']
    """
    return [name for name, _ in heads_of(model, input)]


def _fresh(old: nn.Module, num_classes: int) -> nn.Module:
    """A new layer like ``old`` (a Linear or a convolution) with ``num_classes`` outputs, on its device and dtype,
    in its mode (a head put in a model in ``eval()`` is in ``eval()`` too)."""
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        assert isinstance(old, nn.modules.conv._ConvNd)
        conv = copy.deepcopy(old)
        conv.out_channels = num_classes
        conv.weight = nn.Parameter(torch.empty((num_classes, *old.weight.shape[1:])))
        if old.bias is not None:
            conv.bias = nn.Parameter(torch.empty(num_classes))
        conv.reset_parameters()
        new = conv
    return new.to(device=old.weight.device, dtype=old.weight.dtype).train(old.training)


@in_plain_torch
def replace_head(
    model: nn.Module,
    num_classes: int,
    *,
    keep: Mapping[int, int] | None = None,
    inplace: bool = False,
    input: InputSpec | None = None,
    layer: str | None = None,
) -> SurgeryResult:
    """Replace the classifier with a fresh one for ``num_classes`` classes.

    The classifier is the last layer with weights before the output (found
    from the traced graph); its ``in_features`` are kept.  Where a classifier
    was removed (an ``nn.Identity`` in its place: timm's ``num_classes=0``),
    a new ``nn.Linear`` goes there, as wide as the features it is given.  A model with
    several heads (a distilled DeiT's ``head`` and ``head_dist``,
    GoogLeNet's auxiliary classifiers: :func:`head_layers`) has each
    replaced.  ``keep`` carries the pretrained rows of classes the new task
    shares with the old one.

    Parameters
    ----------
    model : nn.Module
        The pretrained model; copied unless ``inplace``.
    num_classes : int
        Outputs of the new classifier.
    keep : mapping of int to int, optional
        ``{new_class: old_class}``: rows copied from the old classifier
        (weight and bias) into the new one, and the class's name in a
        Hugging Face config's ``id2label``.
    input : shape, tuple of shapes, or mapping, optional
        For a model that cannot be traced without an input (as in
        :func:`~torchsurgeon.paramcount`).
    layer : str, optional
        The Linear or convolution layer to replace, by qualified name.  A
        multi-task model whose outputs come from heads of other widths (an
        ``age`` regressor beside a ``gender`` classifier) must name one.

    Returns
    -------
    SurgeryResult
        The edited model; the changes name the initialiser of each new head,
        then (``setting``) each class count updated on a module holding the
        head or its config (``config.num_labels``, ``num_classes``, MONAI's ``out_channels``), so a
        Hugging Face classifier's loss reshapes its logits to the new width;
        its ``id2label`` and a ``problem_type`` the new count contradicts too;
        then a shape a weight-free module after the head makes of the logits
        (MONAI's ``Reshape(classes)``: ``reshape.shape``).

    Raises
    ------
    SurgeryError
        When the edited model no longer runs on the input given (or a vision
        model's own), which the original ran on: something after the head
        still holds the old class count; the error names where.

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
    if type(num_classes) is int and num_classes == 0:
        raise _no_classes(model, input, layer)
    num_classes = check_count(num_classes, "num_classes", "the new class count")
    _check_keep(keep)
    if layer is None:
        _check_task(model, num_classes)
        if (base := transformers_base(unwrap_model(model), num_classes, "replace")) is not None:
            raise base
    edited = _copy(model, inplace, input)
    if layer is not None:
        heads = _chosen_head(edited, layer_names(layer, several=False)[0], num_classes, keep)
    else:
        heads = _one_task(edited, input, num_classes)
    if name_of_removed := next((n for n, _ in heads if n and isinstance(edited.get_submodule(n), nn.Identity)), ""):
        return _fill_removed(edited, name_of_removed, num_classes, keep, input)
    for name, rec in heads:
        module = edited.get_submodule(name) if name else edited
        around = [(name, module, False), *(guard_holders(edited, name) if name else ())]  # a LoRA layer on the head
        for holder, wrapper, is_config in around:
            if not is_config and from_peft(wrapper):
                kind = f"{type(wrapper).__module__}.{type(wrapper).__name__}"
                raise SurgeryError(
                    f"{holder} ({kind}) is wrapped by peft: its adapter is built for the head as it is — replace the "
                    "head before get_peft_model(...), listing it in modules_to_save"
                )
        if not is_layer(module):
            ran_on, output = running_input(edited, input)
            raise not_a_layer(edited, name, rec, num_classes, output, ran_on=ran_on)
        grouped = _grouped_classes(edited, name, num_classes) or _boxes_per_class(edited, name, num_classes)
        if grouped is not None:
            raise grouped
    checked_on = running_input(edited, input)  # before the edit: an input it runs on now, to check it after
    first = edited.get_submodule(heads[0][0])
    width = width_of(first)
    assert width is not None
    extra = _no_object_rows(edited, heads[0][0], width)  # DETR's head: its classes and one "no object" row
    old_classes = width - extra
    keep = dict(keep or {})
    for new_i, old_i in keep.items():
        if not (0 <= new_i < num_classes) or not (0 <= old_i < old_classes):
            raise InputError(
                f"keep={{{new_i}: {old_i}}} is out of range — new classes are 0..{num_classes - 1}, "
                f"old classes of {heads[0][0]} are 0..{old_classes - 1}"
            )
    rows = f"; rows {sorted(keep)} carried over from classes {[keep[k] for k in sorted(keep)]}" if keep else ""
    if extra:
        rows += f"; its last row (no object, as num_labels + 1 = {width} rows say) carried over"
    names = _label_names(edited, heads[0][0], keep)
    carried = {**keep, **{num_classes + i: old_classes + i for i in range(extra)}}
    changes: list[ParamReport] = []
    for name, _ in heads:
        old = edited.get_submodule(name)
        new = _fresh(old, num_classes + extra)
        with torch.no_grad():
            for new_i, old_i in carried.items():
                new.get_parameter("weight")[new_i] = old.get_parameter("weight")[old_i]
                if getattr(new, "bias", None) is not None:
                    new.get_parameter("bias")[new_i] = old.get_parameter("bias")[old_i]
        set_submodule(edited, name, new)
        also = f" (one of {len(heads)} heads: {', '.join(n for n, _ in heads)})" if len(heads) > 1 else ""
        changes += [
            ParamReport(
                f"{name}.{pname}",
                ParamChange.RESIZED if carried else ParamChange.REINITIALISED,  # some pretrained rows kept
                tuple(getattr(old, pname).shape),
                tuple(p.shape),
                default_init(new, pname),
                f"new head: {old_classes} → {num_classes} classes{rows}{also}",
            )
            for pname, p in new.named_parameters()
        ]
    guarded = _with_guards(edited, changes, [(name, CLASS_COUNTS, old_classes, num_classes) for name, _ in heads])
    shapes = _shape_guards(edited, [n for n, _ in heads], input, old_classes + extra, num_classes + extra)
    result = SurgeryResult(edited, (*guarded, *shapes, *_labels_after(edited, heads[0][0], names, num_classes)))
    _check_it_runs(edited, heads[0][0], checked_on, (old_classes + extra, num_classes + extra), "replaced")
    return result


def _fill_removed(
    model: nn.Module, name: str, num_classes: int, keep: Mapping[int, int] | None, input: InputSpec | None
) -> SurgeryResult:
    """A new Linear for ``num_classes`` classes put in the place of ``name``, the ``nn.Identity`` left where a
    classifier was removed (:func:`~torchsurgeon.headfinding.heads_and_others`), as wide as the features it is
    given: what ``timm.create_model(..., num_classes=N)`` and ``model.reset_classifier(N)`` build there."""
    if keep:
        raise InputError(
            f"keep={dict(keep)!r}: {name} (Identity) stands where the classifier was removed — there are no old "
            f"classes to keep: replace_head(model, {num_classes})"
        )
    ran_on, report = running_report(model, input)
    checked_on = (ran_on, None if report is None else report.output_shape)
    shapes = [] if report is None else report.layers
    given = next((r.input_shape for r in shapes if r.op == "call_module" and r.path[-1:] == (name,)), None)
    if given is None:
        guess = guessed_input(model)
        channels = guess[0] if guess else "C"
        raise SurgeryError(
            f"{name} (Identity) stands where the classifier was removed, and the features it is given are unknown: "
            f"the model runs on no input torchsurgeon can guess — pass one it accepts, batch excluded: "
            f"replace_head(model, {num_classes}, input=({channels}, H, W)) at the size it is built for"
        )
    if len(given) != 2:
        layer = (
            f"nn.Conv{len(given) - 2}d({given[1]}, {num_classes}, kernel_size=1)"
            if len(given) in (4, 5)
            else f"nn.Linear({given[-1]}, {num_classes})"
        )
        raise SurgeryError(
            f"{name} (Identity) stands where the classifier was removed, and it is given shape {given}, not (batch, "
            f"features) — put the layer it needs there by hand, e.g. model.set_submodule({name!r}, {layer})"
        )
    like = next(model.parameters(), None)
    holder = model.get_submodule(name.rpartition(".")[0])  # its mode: an Identity put in after eval() is training
    new = nn.Linear(given[1], num_classes).train(holder.training)
    if like is not None:
        new = new.to(device=like.device, dtype=like.dtype)
    set_submodule(model, name, new)
    changes = [
        ParamReport(
            f"{name}.{pname}",
            ParamChange.NEW,
            None,
            tuple(p.shape),
            default_init(new, pname),
            f"new head in place of {name} (Identity): {given[1]} features → {num_classes} classes",
        )
        for pname, p in new.named_parameters()
    ]
    result = SurgeryResult(model, _with_guards(model, changes, [(name, CLASS_COUNTS, 0, num_classes)]))
    _check_it_runs(model, name, checked_on, (given[1], num_classes), "replaced")
    return result


_JOINS = frozenset({"add", "sub", "mul", "div", "cat", "concat", "stack", "where"})
"""Ops that join the logits with another branch element by element (a residual around the head)."""


def _check_it_runs(
    model: nn.Module, head: str, checked: tuple[InputSpec | None, Any], classes: tuple[int, int | None], did: str
) -> None:
    """Raise when the edited model does not run on the input ``checked`` names, which it ran on before (giving
    the output shape ``checked`` names too): something after the head still holds the old class count (a reshape
    to it, a residual around the head).  ``classes``: the head's width before and after; ``did``: what was done to
    the head ("replaced")."""
    input, output = checked
    if input is None:
        return
    invalid = paramcount(model, input, crosscheck="never").invalid
    if not invalid:
        return
    bad = invalid[0]
    conv = _conv_head_read_as_features(model, head, bad, classes[0]) if did == "extended" else ""
    if conv:
        raise SurgeryError(
            f"{type(model).__name__}: with {head} {did}, the model no longer runs on input {input}: {conv}"
            f"{after_the_model(output, classes[0], classes[1], '<the modules you appended>')}"
        )
    if bad.type.strip("_()").rstrip("_") in _JOINS:
        fix = (
            f"{bad.name} joins the head's output with another branch still {classes[0]} wide (a residual around the "
            f"head), which a new head does not change — rebuild the model for the new class count"
        )
    else:
        fix = (
            f"set what {bad.name} makes of the new logits to the new class count (a shape holding the old one), "
            f"then check with paramcount(model, {input!r})"
        )
    layers = None if did == "replaced" else "<the modules you appended>"
    raise SurgeryError(
        f"{type(model).__name__}: with {head} {did}, the model no longer runs on input {input}: {bad.message} — "
        f"{fix}{after_the_model(output, classes[0], classes[1], layers)}"
    )


def _conv_head_read_as_features(model: nn.Module, head: str, bad: Any, width: int) -> str:
    """Why a Linear appended after a convolution head (``head`` now ``Sequential(conv, *appended)``) does not fit, and
    the layers that do: the conv gives its ``width`` classes in dim 1, the Linear reads the last dim (a 1 of
    ``(1, 1000, 1, 1)``: the Linear's own fix, ``nn.Linear(1, 5)``, would run and give 5000 outputs); else ``""``."""
    conv = model.get_submodule(f"{head}.0")
    inside = bool(bad.path) and bad.path[-1].startswith(f"{head}.")
    shape = bad.input_shape
    if not (inside and bad.type == "Linear" and is_layer(conv) and not isinstance(conv, nn.Linear)):
        return ""
    if shape is None or len(shape) < 3 or shape[1] != width:
        return ""
    out = getattr(model.get_submodule(bad.path[-1]), "out_features", "...")
    flat = (
        "; or flatten them first: append_head(model, nn.Flatten(), <the modules you appended>)"
        if all(d == 1 for d in shape[2:])
        else ""
    )
    return (
        f"{bad.name} (Linear) reads the last dim of {shape}, but {head} ({type(conv).__name__}) gives its {width} "
        f"classes in dim 1 — append 1×1 convolutions instead of Linear layers, e.g. "
        f"nn.Conv{len(shape) - 2}d({width}, {out}, kernel_size=1) for nn.Linear({width}, {out}){flat}"
    )


_SHAPE_GUARDS = ("shape", "unflattened_size", "output_shape", "out_shape", "target_shape")
"""Attributes of a weight-free module after the head holding the shape it makes of the logits (MONAI's
``Reshape(classes)``, ``nn.Unflatten(1, (classes, 1, 1))``)."""


def _shape_guards(
    model: nn.Module, heads: list[str], input: InputSpec | None, before: int, after: int
) -> list[ParamReport]:
    """Set the class count in a shape a weight-free module after ``heads`` makes of their output (an int equal to
    ``before``, or the one item of a tuple that is): a reshape to the old count would fail on the new logits."""
    try:
        G = head_graph(model, input)
    except SurgeryError:  # not traceable without an input: the run check (when an input is known) says more
        return []
    starts = [rec.name for rec in node_records(G) if any(p.rpartition(".")[0] in heads for p in rec.param_names)]
    later: set[str] = set().union(*(nx.descendants(G, s) for s in starts)) if starts else set()
    changes: list[ParamReport] = []
    seen: set[str] = set()
    for rec in node_records(G):
        # the module called, or the one whose forward made the op (MONAI's Reshape: x.reshape(self.shape) traced)
        target = str(fx_node(G, rec.name).target) if rec.op == "call_module" else rec.scope
        if rec.name not in later or not target or target in seen or target in heads:
            continue
        seen.add(target)
        module = model.get_submodule(target)
        if any(True for _ in module.parameters()):
            continue
        for attr in _SHAPE_GUARDS:
            value = vars(module).get(attr)
            if type(value) is int and value == before:
                new: Any = after
            elif (
                isinstance(value, (tuple, list))
                and all(type(v) is int for v in value)
                and list(value).count(before) == 1
            ):
                new = type(value)(after if v == before else v for v in value)
            else:
                continue
            setattr(module, attr, new)
            changes.append(ParamReport(f"{target}.{attr}", ParamChange.SETTING, None, None, "", f"{value} → {new}"))
    return changes


def _no_object_rows(model: nn.Module, layer: str, width: int) -> int:
    """1 when a config holding the head says ``num_labels`` is one less than its width (DETR's and YOLOS's heads
    score a "no object" class after the labels), else 0."""
    labels = {getattr(config, "num_labels", None) for _, config in _configs(model, layer)}
    return 1 if width - 1 in labels and width not in labels else 0


def _one_task(model: nn.Module, input: InputSpec | None, num_classes: int) -> list[tuple[str, NodeRecord]]:
    """The heads of the model's first output; a multi-task model's, whose other outputs come from heads of other
    widths, is refused: which task gets new classes is the user's to say."""
    heads, others = heads_and_others(model, input, num_classes, f"replace_head(model, {num_classes}, {{input}})")
    if others:
        first = heads[0][0]
        widths = ", ".join(f"{n} ({w})" for n, w in [(first, width_of(model.get_submodule(first))), *others.items()])
        raise SurgeryError(
            f"{type(model).__name__} gives its outputs from heads of different widths: {widths} — say which one "
            f"to replace, e.g. replace_head(model, {num_classes}, layer={first!r})"
        )
    return heads


def _chosen_head(
    model: nn.Module, layer: str, num_classes: int, keep: Mapping[int, int] | None
) -> list[tuple[str, NodeRecord]]:
    """The head named with ``layer=``: a Linear or convolution layer of the model."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        kept = f", keep={dict(keep)!r}" if isinstance(keep, Mapping) and keep else ""
        raise no_such_layer(
            model, layer, lambda name: f"replace_head(model, {num_classes}{kept}, layer={name!r})", last=True
        ) from None
    if not is_layer(module):
        raise SurgeryError(f"layer={layer!r} is a {type(module).__name__}, not a Linear or convolution layer")
    return [(layer, module_record(layer, module))]


def _configs(model: nn.Module, layer: str) -> list[tuple[str, Any]]:
    """The configs (``config`` attributes) of the modules holding ``layer``, with their names."""
    found: list[tuple[str, Any]] = []
    for where, config, is_config in guard_holders(model, layer):
        if is_config and all(config is not c for _, c in found):
            found.append((where, config))
    return found


def _label_names(
    model: nn.Module, layer: str, keep: Mapping[int, int]
) -> dict[str, tuple[dict[Any, Any], dict[int, str]]]:
    """Per config holding ``layer``: its ``id2label`` and the names it gives the kept classes (before the edit)."""
    names = {}
    for where, config in _configs(model, layer):
        id2label = getattr(config, "id2label", None)
        if isinstance(id2label, Mapping):  # a default name (LABEL_1) says nothing: the new index's default
            kept = {new_i: str(id2label.get(old_i, f"LABEL_{new_i}")) for new_i, old_i in keep.items()}
            kept = {i: f"LABEL_{i}" if n == f"LABEL_{keep[i]}" else n for i, n in kept.items()}
            names[where] = (dict(id2label), kept)
    return names


def _labels_after(
    model: nn.Module, layer: str, before: Mapping[str, tuple[dict[Any, Any], dict[int, str]]], num_classes: int
) -> list[ParamReport]:
    """A Hugging Face config's labels for the new classes: kept classes keep their names, the others are
    ``LABEL_i`` (as transformers' ``num_labels`` setter names them all); a ``problem_type`` the new count
    contradicts (``regression`` with several outputs) is cleared, for transformers to infer it."""
    changes = []
    for where, config in _configs(model, layer):
        if where in before and getattr(config, "id2label", None) is not None:
            old, kept = before[where]
            id2label = {i: kept.get(i, f"LABEL_{i}") for i in range(num_classes)}
            if old != id2label:
                config.id2label = id2label
                config.label2id = {name: i for i, name in id2label.items()}
                shown = ", ".join(f"{i}: {n!r}" for i, n in list(id2label.items())[:4])
                more = ", ..." if num_classes > 4 else ""
                changes.append(
                    ParamReport(
                        f"{where}.id2label",
                        ParamChange.SETTING,
                        None,
                        None,
                        "",
                        f"{{{shown}{more}}}: name the new classes with model.config.id2label = {{0: 'cat', ...}}",
                    )
                )
        problem = getattr(config, "problem_type", None)
        if (problem == "regression" and num_classes > 1) or (
            problem in ("single_label_classification", "multi_label_classification") and num_classes == 1
        ):
            config.problem_type = None
            changes.append(
                ParamReport(
                    f"{where}.problem_type",
                    ParamChange.SETTING,
                    None,
                    None,
                    "",
                    f"{problem!r} → None: transformers infers it from num_labels and the labels' dtype",
                )
            )
    return changes


_NO_CLASSES = {
    "ForQuestionAnswering": "a start and an end logit per token, which its forward splits in two",
    "ForMultipleChoice": "one score per choice, which its forward reshapes to (batch, choices)",
}
"""transformers' task classes whose last layer's width is no class count (``num_labels`` does not change it)."""


def _check_task(model: nn.Module, num_classes: int) -> None:
    """Refuse a transformers question-answering or multiple-choice model: its head's width is fixed by the task."""
    kind = type(model)
    task = next((t for t in _NO_CLASSES if kind.__name__.endswith(t)), None)
    if task is None or not kind.__module__.startswith("transformers."):
        return
    raise SurgeryError(
        f"{kind.__name__} has no classes to change: its head gives {_NO_CLASSES[task]}, whatever num_labels says, "
        f"and another width breaks its forward — to classify with its weights, load them into the classifier "
        f"built from its config: new = transformers.AutoModelForSequenceClassification.from_config("
        f"type(model.config).from_dict({{**model.config.to_dict(), 'num_labels': {num_classes}}})); "
        f"new.base_model.load_state_dict(model.base_model.state_dict(), strict=False)"
    )


def _no_classes(model: nn.Module, input: InputSpec | None, layer: str | None) -> InputError:
    """``replace_head(model, 0)``: the error, with the call that removes the classifier (timm's ``num_classes=0``)."""
    try:
        names = [layer] if isinstance(layer, str) else head_layers(model, input)
    except TorchSurgeonError:
        names = []
    fix = "; ".join(f"model.set_submodule({name!r}, nn.Identity())" for name in names if name)
    return InputError(
        "num_classes=0 — the new class count must be a positive int; to remove the classifier and give the "
        "features, as timm's num_classes=0 does, put nn.Identity() in its place: "
        + (fix or "model.<head> = nn.Identity()")
    )


_COUNTS_PER_GROUP = ("num_classes", "n_classes", "num_labels", "num_columns")
"""Attributes of a module holding a head whose outputs are groups of classes (one group per anchor), read to
reshape them: torchvision's RetinaNet and SSD classification heads (``num_classes``, ``num_columns``)."""


def _grouped_classes(model: nn.Module, layer: str, num_classes: int) -> SurgeryError | None:
    """The refusal for a head whose outputs are several groups of the class count a module holding it keeps
    (RetinaNet's ``cls_logits``: 9 anchors x 91 classes, reshaped by ``num_classes``), with the edit that runs: each
    group ``num_classes`` wide, in that layer and in its siblings (SSD's one layer per feature map), and the count
    set; None for a head as wide as its classes."""
    width = width_of(model.get_submodule(layer))
    if width is None:
        return None
    for holder, module, is_config in reversed(guard_holders(model, layer)):
        counts = [(a, vars(module).get(a)) for a in _COUNTS_PER_GROUP] if not is_config else []
        found = next(((a, c) for a, c in counts if type(c) is int and 1 < c < width and width % c == 0), None)
        if found is None:
            continue
        attribute, count = found
        pattern = r"\.".join(r"\d+" if part.isdigit() else re.escape(part) for part in layer.split("."))
        fixes = []
        for name, other in model.named_modules():
            wide = width_of(other) if is_layer(other) else None
            if re.fullmatch(pattern, name) and wide is not None and wide % count == 0:
                fixes.append(replacing_call(name, _fresh(other, wide // count * num_classes)))
        where = f"model.get_submodule({holder!r})" if holder else "model"
        fixes.append(f"{where}.{attribute} = {num_classes}")
        kind = type(model.get_submodule(layer)).__name__
        owner = f"{holder} ({type(module).__name__})" if holder else f"the model ({type(module).__name__})"
        return SurgeryError(
            f"{layer} ({kind}) makes {width} outputs, {width // count} groups of the {count} classes {owner} keeps "
            f"in {attribute} (one group per anchor) and reshapes them by: a head of {num_classes} outputs would "
            f"give a model that fails — make each group {num_classes} classes wide, as written: {'; '.join(fixes)}"
        )
    return None


def _boxes_per_class(model: nn.Module, layer: str, num_classes: int) -> SurgeryError | None:
    """The refusal for a head that is a class score beside a box regressor, or that regressor
    (:func:`~torchsurgeon.headfinding.box_pair`: torchvision's ``FastRCNNPredictor``, whose post-processing reads
    the class count from the scores and splits the boxes by it), with the edit of both that runs; None for any
    other head."""
    pair = box_pair(model, layer)
    if pair is None:
        return None
    scores, boxes = pair
    score_layer, box_layer = model.get_submodule(scores), model.get_submodule(boxes)
    fixes = "; ".join(
        [
            replacing_call(scores, _fresh(score_layer, num_classes)),
            replacing_call(boxes, _fresh(box_layer, BOX_COORDINATES * num_classes)),
        ]
    )
    if layer == scores:
        return SurgeryError(
            f"{layer} (Linear) scores {score_layer.out_features} classes and {boxes} (Linear) regresses "
            f"{BOX_COORDINATES} box coordinates for each of them ({box_layer.out_features}) from the same "
            f"features: a head of {num_classes} classes beside {box_layer.out_features} box outputs would give a "
            f"model matching boxes to the wrong classes — replace both, as written: {fixes}"
        )
    return SurgeryError(
        f"{layer} (Linear) is no class score: it regresses {BOX_COORDINATES} box coordinates "
        f"({box_layer.out_features}) for each of the {score_layer.out_features} classes {scores} (Linear) scores "
        f"from the same features — for {num_classes} classes replace both, as written: {fixes}"
    )


def _check_keep(keep: Any) -> None:
    """Refuse a ``keep`` that is not ``{new class: old class}`` ints, with one built from the old classes given."""
    if keep is None or (isinstance(keep, Mapping) and all(type(i) is int for i in (*keep, *keep.values()))):
        return
    pairs = isinstance(keep, (list, tuple)) and all(
        isinstance(p, tuple) and len(p) == 2 and all(type(i) is int for i in p) for p in keep
    )
    if pairs and keep:  # [(0, 1), (2, 3)]: (new, old) pairs, as dict() reads them
        example, read = dict(keep), " (the pairs read as (new, old))"
    else:
        olds = (
            [o for o in (keep.values() if isinstance(keep, Mapping) else keep) if type(o) is int]
            if isinstance(keep, (list, tuple, Mapping))
            else []
        )
        example, read = dict(enumerate(olds)) or {0: 0}, ""
    raise InputError(
        f"keep={keep!r} — keep maps each new class to the old class whose row it carries, {{new: old}} in ints"
        f"{read}: e.g. keep={example}"
    )


@in_plain_torch
def append_head(
    model: nn.Module, *modules: nn.Module, inplace: bool = False, input: InputSpec | None = None
) -> SurgeryResult:
    """Add layers after the classifier: ``fc`` becomes ``Sequential(fc, *modules)``.

    The old classifier's weights are kept (their names move: ``fc.weight`` →
    ``fc.0.weight``); the new layers are reported with their initialiser.
    They are put in the classifier's mode: appended to a model in ``eval()``,
    a ``Dropout`` or ``BatchNorm1d`` among them is in ``eval()`` too.
    When the appended layers change the output's width, the class counts
    kept on the modules holding the head and their configs follow it
    (``config.num_labels``, ``num_classes``: ``setting`` changes), as in
    :func:`replace_head`.  A model with several heads (:func:`head_layers`)
    is refused: which of them to extend is the user's to say.

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
        if isinstance(m, type) and issubclass(m, nn.Module):  # nn.ReLU for nn.ReLU()
            args = (
                "()"
                if not any(p.default is p.empty for p in list(inspect.signature(m).parameters.values()))
                else "(...)"
            )
            raise InputError(
                f"append_head: {as_written(m)} is a class — pass a layer: append_head(model, {as_written(m)}{args})"
            )
        if not isinstance(m, nn.Module):
            raise InputError(f"append_head: {m!r} is not an nn.Module")
    after = next((w for w in map(width_of, reversed(modules)) if w is not None), None)
    if (base := transformers_base(unwrap_model(model), after, "append to")) is not None:
        raise base
    edited = _copy(model, inplace, input)
    heads = heads_of(edited, input, "append_head(model, ..., {input})")
    name, rec = heads[0]
    if not name:  # the model's own parameters make the output: nothing to wrap inside it
        ran_on, output = running_input(edited, input)  # several outputs: no nn.Sequential after it
        raise not_a_layer(edited, name, rec, None, output, "append to", ran_on=ran_on)
    if is_normalisation(edited.get_submodule(name)):  # a backbone's features: no classifier to extend
        ran_on, output = running_input(edited, input)
        raise not_a_layer(edited, name, rec, after, output, "append to", ran_on=ran_on)
    if len(heads) > 1:
        listed = ", ".join(n for n, _ in heads)
        raise SurgeryError(
            f"{type(edited).__name__} has {len(heads)} heads ({listed}): appending after one changes the width of "
            f"one of the outputs they make together — wrap each by hand, e.g. model.{heads[0][0]} = "
            f"nn.Sequential(model.{heads[0][0]}, ...), or replace them all with replace_head(model, num_classes)"
        )
    checked_on = running_input(edited, input)  # before the edit: an input it runs on now, to check it after
    old = edited.get_submodule(name)
    # in the mode of the layer they extend: a Dropout appended to a model in eval() must not drop in its evaluation
    set_submodule(edited, name, nn.Sequential(old, *modules).train(old.training))
    changes: list[ParamReport] = [
        ParamReport(f"{name}.0.{p}", ParamChange.KEPT, tuple(t.shape), tuple(t.shape), "", "", f"{name}.{p}")
        for p, t in old.named_parameters()
    ]
    for i, m in enumerate(modules, start=1):
        for p, t in m.named_parameters():
            owner = m.get_submodule(p.rpartition(".")[0]) if "." in p else m
            init = named_init(owner, p.rpartition(".")[2], t)  # the values the user's layer holds
            changes.append(ParamReport(f"{name}.{i}.{p}", ParamChange.NEW, None, tuple(t.shape), init))
    before = width_of(old)
    guards = [(name, CLASS_COUNTS, before, after)] if before is not None and after is not None else []
    rows = list(_with_guards(edited, changes, guards))
    for i, row in enumerate(rows):  # transformers rebuilds the classifier from the config: a plain layer
        if row.status is ParamChange.SETTING and row.name.endswith("config.num_labels"):
            rows[i] = dataclasses.replace(
                row,
                message=f"{row.message} (from_pretrained builds a plain classifier for it: the appended layers are "
                "not restored from save_pretrained — save the model with torch.save, or load its state_dict into "
                "this model)",
            )
    if before is not None:
        _check_it_runs(edited, name, checked_on, (before, after), "extended")
    return SurgeryResult(edited, tuple(rows))
