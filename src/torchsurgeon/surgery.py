"""Model surgery that keeps pretrained knowledge.

* :func:`adapt_input_channels` folds the pretrained weights of the layer(s) that read the input to a new
  channel count (found from the traced graph, not by name).
* :func:`~torchsurgeon.replace_head` and :func:`~torchsurgeon.append_head`
  (in :mod:`torchsurgeon.heads`) change the classifier found from the graph.
* :func:`~torchsurgeon.check_surgery` (in :mod:`torchsurgeon.surgery_check`)
  compares any edited model with its original.

Nothing here changes the model it is given unless ``inplace=True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from .ambient import in_plain_torch
from .arguments import layer_names, required_arguments, tensor_inputs
from .channelconstants import channel_constants, widen_channel_constants
from .channelmap import ChannelMap, channel_maps, runnable_image
from .configinput import configured_image, default_input, with_tower_hint
from .copies import model_copy
from .errors import SurgeryError, TraceError, check_count, check_flag, check_option, did_you_mean
from .failingpart import part_that_runs
from .fold import fold_normalization
from .graph import build_graph, opaque_of
from .graphreaders import distinct_images, graph_images, graph_readers, images_traced_as_none
from .guards import CHANNEL_GUARDS, update_guards
from .ignoredinputs import check_input_traced
from .initialisers import default_init
from .layerfold import adapt_layer, input_width, plain_weight, weight_normed
from .lazy import lazy_layers
from .readers import (
    guessed_input,
    image_shape,
    image_spec,
    input_readers,
    one_image,
    recoloured,
    refitted_note,
    refused_guess_hint,
    several_images,
    unmatched_channels,
)
from .records import Finding, FoldMode, ParamChange, ParamReport
from .report import changes_table
from .resize import rebuild_fix, resized_copy
from .shapes import meta_copy
from .shapespec import InputSpec
from .trace import trace
from .wrappers import from_peft, unwrap_model

__all__ = (
    "ParamReport",
    "SurgeryResult",
    "adapt_input_channels",
    "default_init",
    "fold_input_normalization",
    "input_layers",
)


@dataclass(frozen=True)
class SurgeryResult:
    """An edited model and what the edit did to each changed parameter."""

    model: nn.Module
    changes: tuple[ParamReport, ...]

    def __str__(self) -> str:
        return changes_table(self.changes)


# --------------------------------------------------------------------------- graph lookups


def input_layers(model: nn.Module, input: InputSpec | None = None) -> list[str]:
    """Qualified names of the layers with weights that read the model input.

    Without ``input``, found from the traced graph, following the data from
    every input through weight-free operations (and not through shape
    queries).  With ``input`` (an input the model accepts now), or for a
    Hugging Face vision model whose config gives one, found by running a
    weightless copy once (:func:`torchsurgeon.readers.input_readers`), which
    also sees inside opaque parts.  A model that cannot be traced without an
    input shape (``forward`` checks it, as segmentation_models_pytorch's
    do) is run on :func:`torchsurgeon.readers.guessed_input`, an image of its
    first convolution's channels; if it does not accept that either, the
    error asks for its input.

    Examples
    --------
    >>> from torch import nn
    >>> input_layers(nn.Sequential(nn.Identity(), nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)))
    ['1']
    """
    return _input_layers(model, input)[0]


_Doubts = dict[str, tuple[str, int | None, int]]
"""Layers whose channels are not the input's one to one: why, their width per input channel, other channels."""


def _input_layers(
    model: nn.Module,
    input: InputSpec | None,
    refitted: list[str] | None = None,
    call: str = "input_layers(model, {input})",
) -> tuple[list[str], InputSpec | None, bool, _Doubts]:
    """:func:`input_layers`, an image to try a fold on (from the graph: only if the input meets a tensor of the
    model's first, ``x - self.mean``, which may broadcast it to more channels), whether the model ran on it,
    and the layers the input reaches with its channels moved (see :func:`_rearranged`); ``refitted``: as for
    :func:`~torchsurgeon.readers.input_readers`; ``call``: the user's call, for the input an error asks of it
    (:func:`~torchsurgeon.readers.refused_guess_hint`)."""
    model = unwrap_model(model)
    given = input
    input = input if input is not None else default_input(model)
    if input is not None:
        joins: dict[str, int] = {}
        try:
            found = input_readers(model, input, joins=joins, refitted=refitted)
        except SurgeryError as exc:  # the input its config describes refused (LLaVA): its image tower may run
            raise exc if given is not None else with_tower_hint(exc, model, input, call) from exc.__cause__
        tensors = tensor_inputs(input)  # several (by name, positionally, a list's): one is the image, or layer=
        if (tensors if isinstance(tensors, int) else len(tuple(tensors or ()))) > 1:
            one_image(model, input, found)
        # the image to try the edit on: the one given, else the config's when its first dim is the channels
        image = image_spec(model, input)
        if (
            given is None
            and image is not None
            and found
            and image_shape(model, image)[0] != input_width(model, found[0])[1]
        ):
            image = None  # (frames, channels, H, W): not an image whose channels come first
        return found, image, True, unmatched_channels(model, found, input, joins)
    try:
        G = build_graph(trace(model))
    except TraceError as exc:
        image = guessed_input(model)  # Python on the input's shape in forward (smp's size check): run it instead
        names = required_arguments(model)  # RAFT's forward(image1, image2): an image for each, the same one
        guess: InputSpec | None = dict.fromkeys(names, image) if image is not None and len(names) > 1 else image
        tried, example = "", f"e.g. {call.format(input='input=(3, 224, 224)')}"
        if guess is not None:
            try:
                return input_readers(model, guess), guess, True, {}
            except Exception as run_exc:  # the model does not accept the guess: ask for the input it accepts
                tried = f"; it does not accept {guess} either ({str(run_exc).splitlines()[0][:200]})"
                example = refused_guess_hint(image, names, call)  # never the guess it has just refused
            for grey_or_rgb in _image_variants(image, names):  # kornia's KeyNet: a grey image, its first
                with contextlib.suppress(Exception):  # convolution reading 10 features computed from it
                    met: dict[str, int] = {}
                    readers = input_readers(model, grey_or_rgb, joins=met)
                    return readers, grey_or_rgb, True, unmatched_channels(model, readers, grey_or_rgb, met)
        raise SurgeryError(
            f"{type(model).__name__} cannot be traced without an input shape ({str(exc).splitlines()[0]}){tried} — "
            f"pass an input it accepts now so it can be run instead, {example}"
        ) from exc
    images = graph_images(G)
    if distinct_images(images):  # an image and a mask: the edit of both never runs
        raise several_images(model, images)
    found, mixed, rearranged = graph_readers(G)
    if (unread := images_traced_as_none(model, G, found, call)) is not None:
        raise unread  # BLIP's pixel_values traced as None: its token ids alone reach a layer
    behind_opaque = any(why.partition(" (")[0] in opaque_of(G) for why in rearranged.values())
    if behind_opaque or any(_opaque_part(model, name) for name in found):  # timm's FeatureHookNet: its body is
        # one node; a layer reading the input past a part traced as one opaque layer (kornia's GaussianBlur2d,
        # which fx traces only with an input shape): a run on an image of its first convolution's channels looks
        # inside both
        guess = guessed_input(model)  # run on an image of its first convolution's channels, which looks inside
        guess = guess if guess is not None else configured_image(model)  # none: timm's naflexvit, a Linear patch
        if guess is not None:  # embedding: the channels of the image its pretrained_cfg describes
            with contextlib.suppress(Exception):  # not accepted: the error asks for the input it accepts
                joined: dict[str, int] = {}
                readers = input_readers(model, guess, joins=joined)
                return readers, guess, True, unmatched_channels(model, readers, guess, joined)
    doubts: _Doubts = {name: (reason, None, 0) for name, reason in rearranged.items()}
    return found, guessed_input(model) if mixed else None, False, doubts


def _image_variants(image: tuple[int, ...] | None, names: Sequence[str]) -> list[InputSpec]:
    """A grey and an RGB image of ``image``'s sizes (the guess of a model refusing it), one per argument of
    ``names`` when there are several; none of ``image``'s own channels."""
    if image is None or len(image) < 2:
        return []
    shapes = [(c, *image[1:]) for c in (1, 3) if c != image[0]]
    return [dict.fromkeys(names, shape) if len(names) > 1 else shape for shape in shapes]


def _channels_of(model: nn.Module, image: InputSpec | None) -> int | None:
    """The channels of ``image``'s image (the first size of its per-sample shape), None when not known."""
    shape = image_shape(model, image) if image is not None else None
    return shape[0] if isinstance(shape, tuple) and shape and type(shape[0]) is int else None


def _opaque_part(model: nn.Module, name: str) -> bool:
    """Whether the layer ``name`` found reading the input is a part with layers inside (traced as one node), not
    a layer whose weights a fold edits."""
    layer = model.get_submodule(name)
    return not isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)) and any(True for _ in layer.children())


def _rearranged(
    model: nn.Module,
    why: _Doubts,
    channels: int,
    more: str = "",
    readers: Sequence[str] = (),
    mode: FoldMode = FoldMode.SUM,
    colours: int | None = None,
    image: InputSpec | None = None,
) -> SurgeryError:
    """A layer reads the input only after its channels are moved and computed with (csatv2's colour transform and
    DCT) or joined with others (a concatenation with features): no fold is known to be exact.  ``readers``: every
    layer that reads the input; the others are folded once that one is replaced.  ``colours``: the channels of
    an image the model runs on now, which a grey image can be expanded to.  ``image``: an input the model runs on
    now, on which the replacement proposed is tried first (with the others folded), so that a fix that does not
    run is not given."""
    name, (reason, per_channel, other) = next(iter(why.items()))
    layer = model.get_submodule(name)
    what = "in_channels" if isinstance(layer, nn.modules.conv._ConvNd) else "in_features"
    widths = ("in_channels", "in_features", "num_features", "num_parameters")  # a Conv's, Linear's, norm's, PReLU's
    held = next((w for a in widths if isinstance(w := getattr(layer, a, None), int)), None)
    width = "its" if held is None else f"its {held}"
    got = per_channel * channels + other if per_channel else 0
    fix = rebuild_fix(layer, name, what, got) if per_channel else None
    rest = [r for r in readers if r not in why]
    fails = _replaced_fails(model, name, what, got, rest, channels, mode, image) if fix else ""
    how = f"replace it (new weights) with {fix}" if fix else "fold its weight by hand"
    if fix and fails:
        how = (
            f"replacing it alone ({fix}) gives a model that fails on {channels} channel{'s' * (channels != 1)} "
            f"({fails}): what comes after it still expects {width} channels (as a residual add around it "
            f"does: fastai's DynamicUnet's last ResBlock) — rebuild the part that reads the concatenation for "
            f"{got} channels by hand (new weights)"
        )
    elif not fix and colours and channels == 1:  # what a sum fold would compute, as the model stands
        how = (
            f"feed it grey images as the {colours} equal channels it takes, model(x.expand(-1, {colours}, "
            "*x.shape[2:])) (what a fold to 1 channel would compute), or fold its weight by hand"
        )
    if rest and (fix or len(why) == 1):
        how += f", then fold the others: {_fold_of(channels, mode, rest)}"
    readers_named = f" (the input is read by {', '.join(readers)})" if rest else ""
    return SurgeryError(
        f"{name} ({type(layer).__name__}) reads the input only after {reason}: {width} input channels are not "
        f"the input's channels one to one, so folding its weight could give a model that does not run"
        f"{readers_named} — {how}, or name the layers that read the input's channels as they are with layer=...{more}"
    )


def _replaced_fails(
    model: nn.Module,
    name: str,
    what: str,
    got: int,
    rest: Sequence[str],
    channels: int,
    mode: FoldMode,
    image: InputSpec | None,
) -> str:
    """Why a weightless copy of ``model`` with ``name`` resized to ``got`` (the replacement :func:`_rearranged`
    proposes) and ``rest`` folded fails on ``image`` recoloured to ``channels``; empty when it runs, or when there is
    no image the model runs on now to try it on."""
    if image is None:
        return ""
    try:
        input_readers(model, image)  # a verdict only where the model runs on the image now
    except SurgeryError:
        return ""
    trial = meta_copy(model)
    layer = trial.get_submodule(name)
    resized = resized_copy(layer, Finding(name, type(layer).__name__, what, None, got, ""))
    if resized is None:
        return ""
    trial.set_submodule(name, resized)
    try:
        if rest:
            before = {n: input_width(trial, n)[1] for n in rest}
            _check_the_edit_runs(trial, list(rest), channels, mode, [image], before, True)
        else:  # the layer replaced was the only one reading the input
            input_readers(trial, recoloured(model, image, channels))
    except SurgeryError as exc:
        root: BaseException = exc
        while root.__cause__ is not None:  # torch's own words, not the wrappers around them
            root = root.__cause__
        text = (str(root).strip().splitlines() or [type(root).__name__])[0]
        return text if len(text) <= 160 else text[:159] + "…"
    return ""


def _fold_of(channels: int, mode: FoldMode, layers: Sequence[str]) -> str:
    """The ``adapt_input_channels`` call that folds ``layers`` alone, as the user writes it."""
    given = "" if mode == FoldMode.SUM else f", mode={mode.value!r}"
    return f"adapt_input_channels(model, {channels}{given}, layer={list(layers)!r})"


def _joined_after_the_stem(
    model: nn.Module,
    names: list[str],
    why: _Doubts,
    channels: int,
    mode: FoldMode,
    image: InputSpec | None,
    run_before: bool,
) -> SurgeryError | None:
    """The refusal when the layers that read the input as it is can be folded alone and the model still runs: the
    others read the input only tiled to the stem's width and joined to its output (MONAI VNet's ``x.repeat`` added
    to its first convolution's output), which no fold of their weights keeps, while the tiling follows the channel
    count the fold sets.  None when there is no such layer, no image to try it on, or the edit does not run."""
    rest = [name for name in names if name not in why]
    if not rest or image is None:
        return None
    try:
        if not run_before:  # a guessed image: a verdict only where the model runs on it now
            input_readers(model, image)
        _check_the_edit_runs(model, rest, channels, mode, [image], {n: input_width(model, n)[1] for n in rest}, True)
    except SurgeryError:
        return None
    reason = next(iter(why.values()))[0]
    others = ", ".join(why)
    return SurgeryError(
        f"{others} read the input only after {reason}, while {', '.join(rest)} read{'s' * (len(rest) == 1)} it as it "
        f"is: the input reaches them only rearranged and joined to what {rest[0]} makes of it (as MONAI's VNet tiles "
        "its input to its stem's width and adds it to the stem's output), not as channels of their own, so no fold "
        "of their weights keeps them — fold only the layers that read the input as it is: "
        f"{_fold_of(channels, mode, rest)} (the model so edited runs on {channels} "
        f"channel{'s' * (channels != 1)}: checked on {image} so recoloured), then compare its outputs with the "
        "original's"
    )


def _check_the_edit_runs(
    model: nn.Module,
    names: list[str],
    channels: int,
    mode: FoldMode,
    images: Sequence[InputSpec],
    before: Mapping[str, int],
    run_before: bool,
    *,
    chosen: bool = False,
    refitted: Sequence[str] = (),
    layouts: Mapping[str, ChannelMap] | None = None,
) -> None:
    """Raise before any edit when the edited model would not run on the new channel count: what comes before the
    layers reading the input may make more channels of a smaller input (torchvision's detection models normalise
    with one mean per RGB channel, broadcasting a grey image to three).  The edit is made once on a weightless copy,
    run on the first of ``images`` that gives a verdict, with the new channel count; ``run_before``: the model is
    known to run on them (else a guess the model does not run on now gives none, and the next is tried), with the
    layers ``refitted`` resized as they were for it (:func:`~torchsurgeon.readers.input_readers`); ``layouts``: as
    for :func:`_adapted`."""
    trial = meta_copy(model)
    _adapted(trial, names, channels, mode, before, layouts)
    last = isinstance(model.get_submodule(names[0]), nn.Linear)  # a Linear reads the input's last dim
    axis = next(iter(layouts.values())).axis if layouts else None  # a ConvLSTM's (T, C, H, W) frames
    for image in images:
        follow = _read_by(model, image, names[0]) if chosen else None
        new_input = recoloured(model, image, channels, before[names[0]], follow, last, axis)
        try:
            input_readers(trial, new_input, follow=follow, refitted=list(refitted) or None)
        except SurgeryError as exc:
            if not run_before:
                try:  # a guessed image: a verdict only where the model runs on it now
                    input_readers(model, image)
                except SurgeryError:
                    continue
            why = (str(exc.__cause__ or exc).strip().splitlines() or [""])[0][:200]
            try:
                input_readers(model, new_input)
            except SurgeryError:
                fix = (
                    _named_layers_fix(model, image, follow, names, before[names[0]], channels, mode)
                    if chosen
                    else "pass layer= to choose the layers to adapt, or, if that message is the model's own check "
                    "of the channel count, set the attribute it reads"
                    + part_that_runs(trial, names, channels, mode, new_input)
                )
            else:
                kept = channel_constants(model, before[names[0]]) if channels < before[names[0]] else []
                how = (
                    f"{' and '.join(kept)}, one value per channel, broadcast over it"
                    if kept
                    else "a normalisation with one mean per channel, a grey-to-RGB repeat"
                )
                fix = (
                    f"the model takes a {channels}-channel input as it is: what comes before {names[0]} makes "
                    f"{before[names[0]]} channels of it ({how}) — use it unchanged, or change that step before "
                    "adapting"
                )
            raise SurgeryError(
                f"{type(model).__name__}: with {', '.join(names)} adapted to {channels} "
                f"channel{'s' * (channels != 1)} the model does not run on input {new_input} ({why}) — {fix}"
            ) from exc
        return


def _read_by(model: nn.Module, image: InputSpec, layer: str) -> str | None:
    """The input, of several given by shape, that ``layer`` reads (a ControlNet's ``controlnet_cond``, not its
    ``sample``); None for one input, or when no other one is read by it."""
    if not isinstance(image, Mapping) or len(image) < 2:
        return None
    for name, spec in image.items():
        if isinstance(spec, (tuple, list)) and len(spec) >= 2:
            with contextlib.suppress(Exception):  # an input the model cannot follow: not this one
                if layer in input_readers(model, image, follow=name):
                    return name
    return None


def _named_layers_fix(
    model: nn.Module,
    image: InputSpec,
    follow: str | None,
    names: list[str],
    width: int,
    channels: int,
    mode: FoldMode,
) -> str:
    """What to do when the model does not run with the layers named by ``layer=`` adapted: name the others that read
    the input too (a stem and a shortcut both reading the image), when every layer named reads it on ``image``;
    else the layers named are not those that read the input's channels (``width``: what the first one reads)."""
    try:
        readers = input_readers(model, image, follow=follow)
    except SurgeryError:
        readers = []
    missing = [name for name in readers if name not in names] if set(names) <= set(readers) else []
    if not missing:
        return (
            f"the layers named do not read the input's channels as they are ({names[0]} reads {width}, the input has "
            f"{_input_channels_hint(model, image)}: a later layer, or a space-to-depth stem): leave layer= out to have "
            "them found, with what to do"
        )
    what = (
        "reads the input too and was not named, so it expects"
        if len(missing) == 1
        else ("read the input too and were not named, so they expect")
    )
    return (
        f"{', '.join(missing)} {what} the old channels still — name every layer that reads the input: "
        f"{_fold_of(channels, mode, [*names, *missing])}, or leave layer= out to have them found"
    )


def _input_channels_hint(model: nn.Module, image: InputSpec) -> str:
    """The input's channel count, as the image it was tried on has them ("3 input channels")."""
    shape = image_shape(model, image)
    return f"{shape[0]} input channels" if shape else "the input"


def _adapted(
    model: nn.Module,
    names: list[str],
    channels: int,
    mode: FoldMode,
    before: Mapping[str, int],
    layouts: Mapping[str, ChannelMap] | None = None,
) -> tuple[ParamReport, ...]:
    """Fold each named layer of ``model`` to ``channels``, then update the guards of the channel count (``before``:
    the input's channels each layer reads, those of the image for a layer in ``layouts``, which reads them after a
    rearrangement: :class:`~torchsurgeon.channelmap.ChannelMap`)."""
    layouts = layouts or {}
    changes = [change for name in names for change in adapt_layer(model, name, channels, mode, layouts.get(name))]
    for width in dict.fromkeys(before.values()):  # a normalisation's means and stds, one per channel
        changes += widen_channel_constants(model, width, channels)
    return _with_guards(model, changes, [(name, CHANNEL_GUARDS, before[name], channels) for name in names])


def _copy(model: nn.Module, inplace: bool, input: InputSpec | None = None) -> nn.Module:
    check_flag(inplace, "inplace", "True edits the model given, False a copy")
    inner = unwrap_model(model)
    _ = None if input is None else check_input_traced(inner, input)  # refused as paramcount refuses it, not ignored
    if inner is not model and from_peft(model):
        raise SurgeryError(
            f"{type(model).__name__} is a peft model: its adapters and trainable flags are built for the layers as "
            "they are, and the edit would give back its base model — edit the base model before get_peft_model(...) "
            "(list a new head in modules_to_save), or model.merge_and_unload() first"
        )
    return inner if inplace else model_copy(inner)


def no_such_layer(model: nn.Module, layer: str, call: Callable[[str], str], *, last: bool = False) -> SurgeryError:
    """The error for ``layer=`` naming no module of ``model``, with the Conv or Linear layer most like it or holding
    it (``fc`` for ``head.fc``; else the first, or with ``last`` the last one) and ``call(name)``, the call that
    names that layer instead.

    Examples
    --------
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    >>> print(no_such_layer(model, "3", lambda name: f"replace_head(model, 5, layer={name!r})", last=True))
    ... # doctest: +NORMALIZE_WHITESPACE
    layer='3': Sequential has no module '3' — its Conv and Linear layers are 0, 2:
    e.g. replace_head(model, 5, layer='2')
    """
    layers = [n for n, m in model.named_modules() if n and isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    where = f"layer={layer!r}: {type(model).__name__} has no module {layer!r}"
    if meant := did_you_mean(layer, layers, call, holding=True):
        return SurgeryError(f"{where} — {meant}")
    if not layers:
        return SurgeryError(f"{where}, and no Conv or Linear layer")
    shown = ", ".join(layers if len(layers) <= 6 else [*layers[:3], "...", *layers[-3:]])
    return SurgeryError(f"{where} — its Conv and Linear layers are {shown}: e.g. {call(layers[-1 if last else 0])}")


def _check_layers(model: nn.Module, names: list[str], channels: int, mode: FoldMode, input: InputSpec | None) -> None:
    """Raise :func:`no_such_layer` for the first of ``names`` (``layer=``) that is no module of ``model``."""
    modules = dict(model.named_modules())
    shown = f", input={input!r}" if isinstance(input, (tuple, dict)) else ""
    shown = f", mode={mode.value!r}{shown}" if mode is not FoldMode.SUM else shown
    for i, name in enumerate(names):
        if name in modules:
            continue

        def call(fixed: str, i: int = i) -> str:
            chosen: str | list[str] = fixed if len(names) == 1 else [*names[:i], fixed, *names[i + 1 :]]
            return f"adapt_input_channels(model, {channels}{shown}, layer={chosen!r})"

        raise no_such_layer(model, name, call)


# --------------------------------------------------------------------------- input channels


def _with_guards(
    model: nn.Module, changes: Iterable[ParamReport], guarded: Iterable[tuple[str, Sequence[str], int, int]]
) -> tuple[ParamReport, ...]:
    """``changes``, then each guard updated for ``(layer, attributes, before, after)``, each named once."""
    out = list(changes)
    for layer, attributes, before, after in guarded:
        seen = {c.name for c in out}
        out += [c for c in update_guards(model, layer, attributes, before, after) if c.name not in seen]
    return tuple(out)


@in_plain_torch
def adapt_input_channels(
    model: nn.Module,
    channels: int,
    mode: FoldMode | str = FoldMode.SUM,
    *,
    layer: str | Iterable[str] | None = None,
    input: InputSpec | None = None,
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
        (re-initialise: pretrained weights lost; the new weights are
        trainable even where the layer was frozen).
    layer : str or iterable of str, optional
        The layer(s) to adapt; by default those that read the input, found
        from the traced graph (several when the input feeds several layers).
    input : shape, tuple of shapes, or mapping, optional
        An input the model accepts now (before the edit), as for
        :func:`~torchsurgeon.paramcount`.  Given, the layers that read it are
        found by running a weightless copy of the model once, which also
        finds them inside parts fx cannot trace (an opaque embeddings
        module) and in models that trace only for a known input shape.
        Hugging Face vision models need none: their config gives one.
    inplace : bool
        Edit ``model`` itself instead of a copy.

    Returns
    -------
    SurgeryResult
        The edited model and one :class:`ParamReport` per changed weight,
        then one (``setting``) per attribute or config value that guards
        the channel count on a module holding an adapted layer
        (``config.num_channels``, ``in_chans``, ``_in_channels``), updated
        so the edited model's own checks accept the new input; for a wider
        input, the per-channel means and stds of a normalisation inside the
        model (torchvision detection's ``transform.image_mean``) too, tiled
        (:mod:`torchsurgeon.channelconstants`).

    Raises
    ------
    InputError
        For a non-positive channel count or an unknown mode.
    SurgeryError
        When no Conv/Linear layer reads the input, or the mode cannot be
        exact for the request (``sum`` to 4 channels: use ``spread``).
        Grouped convolutions keep their groups when they divide ``channels``
        (each group is folded on its own), else become dense (``groups=1``),
        as :mod:`torchsurgeon.resize` resizes them.

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
    channels = check_count(channels, "channels", "the new input channel count")
    lazy = lazy_layers(unwrap_model(model))
    refusal = SurgeryError(
        f"{type(model).__name__} has lazy layers ({', '.join(lazy[:4])}): they make their weights in the first "
        f"forward, for the channels it brings — nothing to adapt: the model takes a {channels}-channel input as "
        "it is (run one forward first to adapt pretrained weights once they are made)"
    )
    mode = check_option(mode, FoldMode, "mode")
    edited = _copy(model, inplace, input)
    image, run_before, refitted = None, False, list[str]()
    layouts: dict[str, ChannelMap] = {}
    if layer is None:
        try:
            asked = "" if mode == FoldMode.SUM else f", {str(mode)!r}"
            call = f"adapt_input_channels(model, {channels}{asked}, {{input}})"
            names, image, run_before, doubts = _input_layers(edited, input, refitted, call)
        except SurgeryError:
            if lazy:  # a lazy input layer cannot be traced before its first forward
                raise refusal from None
            raise
        if image is None and not run_before:  # found in the graph: the edit is still tried on a guessed image
            image = guessed_input(edited)
        mapped = channel_maps(edited, names, list(doubts), channels, image if run_before else None)
        if mapped is not None:  # a space-to-depth stem: each group of pixels it reads folded, tried on that image
            (image, layouts), doubts, run_before = mapped, {}, True
        if doubts and run_before and _channels_of(edited, image) == channels:
            # the model runs on ``channels`` channels now (kornia's KeyNet on a grey image, its first convolution
            # reading 10 features computed from it): the layers reading features need no edit, nor replacement
            names, doubts = [name for name in names if name not in doubts], {}
            if not names:
                return SurgeryResult(edited, ())
        if doubts:  # the layer's channels are not the input's, and not only moved: no fold is known to be exact
            tiled = _joined_after_the_stem(edited, names, doubts, channels, mode, image, run_before)
            if tiled is not None:
                raise tiled
            made = any(w in reason for reason, _, _ in doubts.values() for w in ("unsqueeze", "getitem"))  # no channels
            taken = runnable_image(edited) if not run_before else image_shape(edited, image) if image else None
            shown = taken or "(channels, height, width)"
            more = "" if run_before or made else f"; or pass the input the model takes now (input={shown}) to check"
            colours = taken[0] if isinstance(taken, tuple) and taken and type(taken[0]) is int else None
            raise _rearranged(edited, doubts, channels, more, names, mode, colours=colours, image=image)
    else:  # the layers chosen: the edit is still tried on the input given, or one the model runs on now
        names = layer_names(layer)
        _check_layers(edited, names, channels, mode, input)
        image, run_before = input, input is not None
    if set(names) & set(lazy):  # the layers reading the input are lazy: only those after it are not
        raise refusal
    if not names:
        raise SurgeryError(
            f"{type(edited).__name__}: no layer with weights reads the input — nothing to adapt; "
            "pass layer='name' to choose one"
        )
    before = {name: input_width(edited, name)[1] for name in names}  # every layer checked before any is edited
    before.update((name, m.colours) for name, m in layouts.items())  # the image's channels, not the stem's
    if layer is not None and image is None:  # chosen layers (a Linear too): tried on an input the model runs on now
        found = [g for g in (default_input(edited), guessed_input(edited), (3, 224, 224)) if g]
        guesses = [g for i, g in enumerate(found) if g not in found[:i]]  # a config's image is a dict: no hash
        _check_the_edit_runs(edited, names, channels, mode, guesses, before, False, chosen=True)
    elif image is not None:  # the edit is run once before it is made
        _check_the_edit_runs(
            edited,
            names,
            channels,
            mode,
            [image],
            before,
            run_before,
            chosen=layer is not None,
            refitted=refitted,
            layouts=layouts,
        )
    changes = _adapted(edited, names, channels, mode, before, layouts)
    return SurgeryResult(edited, refitted_note(changes, refitted, input))


@in_plain_torch
def fold_input_normalization(
    model: nn.Module,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layer: str | None = None,
    input: InputSpec | None = None,
    inplace: bool = False,
) -> SurgeryResult:
    """Fold ``(x - mean) / std`` into the first layer, so raw inputs can be fed.

    Exact when the layer has no zero padding; otherwise the border of the
    output differs and the change's message says so.

    Parameters
    ----------
    mean, std : sequence of float
        One value per input channel.
    layer, input, inplace
        As for :func:`adapt_input_channels` (``input``: for a model tracing only
        for a known input shape, the layers reading it are found by running it).

    Raises
    ------
    SurgeryError
        For a layer that is not a plain or ungrouped Conv/Linear, or a model normalising its input itself.

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
    edited = _copy(model, inplace, input)
    call = f"fold_input_normalization(model, {list(mean)!r}, {list(std)!r}, {{input}})"  # the input an error asks for
    if layer is None:
        names, image, run_before, _ = _input_layers(edited, input, call=call)
    else:
        names, image, run_before = layer_names(layer), None, True
    for name in [n for n in names if n not in dict(edited.named_modules())]:
        raise no_such_layer(edited, name, lambda n: f"fold_input_normalization(model, {mean!r}, {std!r}, layer={n!r})")
    if names and image is not None and not run_before:  # the graph found the input meets a tensor of the model's
        raise SurgeryError(
            f"{type(edited).__name__}: the input meets a tensor of the model's own before {names[0]} (a "
            "normalisation in forward, x - self.mean): folding (x - mean) / std into it too would normalise twice — "
            "remove that step first, or name the layer with layer=... if the two are meant to add up"
        )
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
        shape, trains = tuple(conv.weight.shape), conv.weight.requires_grad
        normed, norms, how = plain_weight(conv, name)  # pruned, weight_norm: the weight they compute is folded
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
        conv.weight = nn.Parameter(w, requires_grad=trains)
        had_bias = conv.bias is not None
        conv.bias = nn.Parameter(b, requires_grad=trains)
        folded = ParamReport(f"{name}.weight" if name else "weight", ParamChange.FOLDED, shape, shape, "", note + how)
        changes.extend(weight_normed(conv, name, normed, folded, norms) if normed else [folded])
        changes.append(
            ParamReport(
                f"{name}.bias" if name else "bias",
                ParamChange.FOLDED if had_bias else ParamChange.NEW,
                (conv.out_channels if isinstance(conv, nn.modules.conv._ConvNd) else conv.out_features,)
                if had_bias
                else None,
                tuple(b.shape),
                "",
                "bias absorbs -Σ W·mean/std",
            )
        )
    return SurgeryResult(edited, tuple(changes))
