"""One owner of "this layer, resized to fit the input it gets".

Parameter accounting (``total_for_input``), shape propagation (a subclass
layer with its own ``forward`` runs resized on ``meta``) and surgery
(:func:`torchsurgeon.adapt_input_channels`, the fixes named in messages) all
ask this module, so the count a report promises is the count the named fix
gives.

The policy, for a layer that gets ``C`` input channels/features:

* convolutions (grouped, depthwise, transposed, subclassed, with a
  parametrized weight such as ``weight_norm``) keep ``groups`` when ``C`` is
  divisible by it, else become dense (``groups=1``); every parameter shaped
  like the weight (a parametrization's ``original1`` too) gets the new input
  channels, ``weight_norm``'s magnitude ``g`` the norm's shape of the new
  weight (unchanged for its default ``dim=0`` of a convolution: one per output
  channel), others (bias, gain) are unchanged;
* ``nn.Linear``: ``in_features = C``;
* batch, instance and group norms: ``num_features``/``num_channels = C``
  (affine parameters and running statistics of size ``C``); layer and RMS
  norms: ``normalized_shape`` = the input's trailing dims;
* ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``: ``input_size = C`` (the first layer's
  input weights, both directions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import _WeightNorm
from torch.nn.utils.weight_norm import WeightNorm

from .copies import detached_copy, meta_like
from .foldcheck import fold_is_exact, no_exact_fold
from .guards import CHANNEL_GUARDS, update_guards
from .records import Finding, FoldMode

__all__ = (
    "Resize",
    "call_name",
    "dense_weight",
    "fitted_groups",
    "fold_fix",
    "guessed_input",
    "input_rows",
    "magnitudes",
    "plan_resize",
    "rebuild_fix",
    "refit_in_place",
    "replacing_call",
    "resized_copy",
    "resized_param_count",
    "weight_norm_dims",
)

_CONV = nn.modules.conv._ConvNd
_TRANSPOSED = nn.modules.conv._ConvTransposeNd
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm)


@dataclass(frozen=True)
class Resize:
    """How one layer changes to fit its input.

    Attributes
    ----------
    attrs : Mapping[str, Any]
        Constructor attributes to set (``in_channels``, ``groups``...).
    params : Mapping[str, tuple[int, ...]]
        New shapes of the layer's parameters that change, by name inside the
        layer (``weight``, ``parametrizations.weight.original1``).
    buffers : Mapping[str, tuple[int, ...]]
        New shapes of the buffers that change (running statistics).
    """

    attrs: Mapping[str, Any]
    params: Mapping[str, tuple[int, ...]]
    buffers: Mapping[str, tuple[int, ...]]


def fitted_groups(conv: nn.Module, channels: int) -> int:
    """``groups`` of a convolution resized to ``channels`` inputs: kept when it divides them, else 1.

    Examples
    --------
    >>> from torch import nn
    >>> fitted_groups(nn.Conv2d(3, 12, 3, groups=3), 6), fitted_groups(nn.Conv2d(3, 12, 3, groups=3), 1)
    (3, 1)
    """
    groups = int(getattr(conv, "groups", 1))
    return groups if channels % groups == 0 else 1


def dense_weight(conv: nn.modules.conv._ConvNd, weight: torch.Tensor) -> torch.Tensor:
    """``weight``, of the grouped convolution ``conv``, as the equivalent dense (``groups=1``) weight: zeros
    between the groups.

    Examples
    --------
    >>> conv = nn.Conv1d(4, 2, 1, groups=2, bias=False)
    >>> conv.weight.data = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])
    >>> dense_weight(conv, conv.weight).flatten(1).tolist()
    [[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]]
    """
    w = weight.detach()
    groups = conv.groups
    shape = (
        (conv.in_channels, conv.out_channels)
        if isinstance(conv, _TRANSPOSED)
        else (conv.out_channels, conv.in_channels)
    )
    dense = torch.zeros((*shape, *w.shape[2:]), dtype=w.dtype, device=w.device)
    rows, cols = shape[0] // groups, shape[1] // groups
    for g in range(groups):
        dense[g * rows : (g + 1) * rows, g * cols : (g + 1) * cols] = w[g * rows : (g + 1) * rows]
    return dense


def input_rows(conv: nn.Module, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``weight`` of the convolution or linear layer ``conv`` as :mod:`torchsurgeon.fold` folds it when ``conv``
    gets ``groups`` groups: ``(out, in // groups, *kernel)``, a row per output channel over the input channels of
    its group.  A grouped weight folded dense (``groups=1``) is made dense first (:func:`dense_weight`); a
    transposed convolution's ``(in, out // groups, *kernel)``, which holds the input channels in dim 0, is
    regrouped.

    Examples
    --------
    >>> conv = nn.ConvTranspose2d(6, 4, 3, groups=2)
    >>> tuple(conv.weight.shape), tuple(input_rows(conv, conv.weight, 2).shape)
    ((6, 2, 3, 3), (4, 3, 3, 3))
    >>> tuple(input_rows(conv, conv.weight, 1).shape)
    (4, 6, 3, 3)
    """
    if isinstance(conv, _CONV) and conv.groups != groups:
        weight = dense_weight(conv, weight)
    if not isinstance(conv, _TRANSPOSED):
        return weight
    per_group = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])  # (groups, in/g, out/g, *k)
    return per_group.transpose(1, 2).reshape(-1, weight.shape[0] // groups, *weight.shape[2:])


def _weight_shape(conv: nn.Module) -> tuple[int, ...]:
    assert isinstance(conv, _CONV)
    return (
        (conv.out_channels, conv.in_channels // conv.groups, *conv.kernel_size)
        if not isinstance(conv, _TRANSPOSED)
        else (conv.in_channels, conv.out_channels // conv.groups, *conv.kernel_size)
    )


def plan_resize(module: nn.Module, what: str, got: Any) -> Resize | None:
    """The change that makes ``module`` accept ``got`` for ``what``; ``None`` when it has no such change.

    Parameters
    ----------
    module : nn.Module
        The layer that does not fit.
    what : str
        The mismatch, as in a :class:`~torchsurgeon.records.Finding`:
        ``in_channels``, ``in_features``, ``num_features``,
        ``num_channels``, ``normalized_shape`` or ``input_size``.
    got : int or tuple
        What the input gives.

    Examples
    --------
    >>> from torch import nn
    >>> plan = plan_resize(nn.Conv2d(3, 12, 3, groups=3), "in_channels", 6)
    >>> dict(plan.attrs), dict(plan.params)
    ({'in_channels': 6, 'groups': 3}, {'weight': (12, 2, 3, 3)})
    """
    if what == "in_channels" and isinstance(module, _CONV) and isinstance(got, int) and got > 0:
        groups = fitted_groups(module, got)
        if isinstance(module, _TRANSPOSED):
            new = (got, module.out_channels // groups, *module.kernel_size)
        else:
            new = (module.out_channels, got // groups, *module.kernel_size)
        params = {**_like(module, _weight_shape(module), new), **magnitudes(module, new)}
        return Resize({"in_channels": got, "groups": groups}, params, {})
    if what == "in_features" and isinstance(module, nn.Linear) and isinstance(got, int) and got > 0:
        new = (module.out_features, got)
        params = {**_like(module, (module.out_features, module.in_features), new), **magnitudes(module, new)}
        return Resize({"in_features": got}, params, {})
    if what in ("num_features", "num_channels") and isinstance(module, _NORMS) and isinstance(got, int) and got > 0:
        old = (module.num_features,) if isinstance(module, nn.modules.batchnorm._NormBase) else (module.num_channels,)
        buffers = {n: (got,) for n, b in module.named_buffers() if tuple(b.shape) == old}
        return Resize({what: got}, _like(module, old, (got,)), buffers)
    if what == "input_size" and isinstance(module, nn.RNNBase) and isinstance(got, int) and got > 0:
        first = ("weight_ih_l0", "weight_ih_l0_reverse")  # only the first layer reads the input
        params = {n: (p.shape[0], got) for n, p in module.named_parameters() if n in first}
        return Resize({"input_size": got}, params, {})
    if what == "normalized_shape" and isinstance(module, (nn.LayerNorm, nn.RMSNorm)) and isinstance(got, tuple):
        normalized: tuple[int, ...] = tuple(module.normalized_shape)
        return Resize({"normalized_shape": got}, _like(module, normalized, got), {})
    return None


def _like(module: nn.Module, old: tuple[int, ...], new: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """New shapes for every parameter of ``module`` shaped ``old`` (the weight and its parametrizations)."""
    return {name: new for name, p in module.named_parameters() if tuple(p.shape) == old}


def weight_norm_dims(module: nn.Module) -> dict[str, int]:
    """``weight_norm``'s magnitude ``g`` of ``module``'s weight, by name inside the layer, with its ``dim``: the
    parametrization's ``parametrizations.weight.original0`` (when it is the weight's only one) or the legacy
    hook's ``weight_g``.  Surgery keeps it on a folded layer (:func:`torchsurgeon.adapt_input_channels`).

    Examples
    --------
    >>> from torch import nn
    >>> weight_norm_dims(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3)))
    {'parametrizations.weight.original0': 0}
    """
    found: dict[str, int] = {}
    chains = module._modules.get("parametrizations")
    chain = list(chains["weight"].children()) if isinstance(chains, nn.ModuleDict) and "weight" in chains else []
    if len(chain) == 1 and isinstance(chain[0], _WeightNorm):
        found["parametrizations.weight.original0"] = int(chain[0].dim)
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm) and hook.name == "weight":
            found["weight_g"] = int(hook.dim)
    return found


def magnitudes(module: nn.Module, weight: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """New shapes of ``module``'s ``weight_norm`` magnitudes once its weight is shaped ``weight`` (the norm's
    shape: one per output channel for a convolution's default ``dim=0``).

    Examples
    --------
    >>> from torch import nn
    >>> magnitudes(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3), dim=1), (8, 1, 3, 3))
    {'parametrizations.weight.original0': (1, 1, 1, 1)}
    """
    empty = torch.empty(weight, device="meta")
    return {name: tuple(torch.norm_except_dim(empty, 2, dim).shape) for name, dim in weight_norm_dims(module).items()}


def resized_param_count(module: nn.Module, finding: Finding) -> int:
    """Parameters of ``module`` once resized to take the input it got.

    Parameters
    ----------
    module : nn.Module
        The layer that does not fit.
    finding : Finding
        What does not fit (``in_channels``, ``in_features``...).

    Returns
    -------
    int
        The parameter count after resizing; the current count when the
        mismatch has no resizing (see :func:`plan_resize`).

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.records import Finding
    >>> resized_param_count(nn.Conv2d(3, 6, 5), Finding("conv1", "Conv2d", "in_channels", 3, 1, ""))
    156
    >>> resized_param_count(nn.Conv2d(3, 12, 3, groups=3), Finding("c", "Conv2d", "in_channels", 3, 6, ""))
    228
    """
    if finding.what == "d_model" and isinstance(module, nn.TransformerEncoderLayer):
        args = _encoder_layer(module, finding.got)
        if args is not None:  # rebuilt as its fix says
            with torch.device("meta"):
                return sum(p.numel() for p in nn.TransformerEncoderLayer(**args).parameters())
    plan = plan_resize(module, finding.what, finding.got)
    params = dict(module.named_parameters())
    if plan is None:
        return sum(p.numel() for p in params.values())
    return sum(math.prod(plan.params[n]) if n in plan.params else p.numel() for n, p in params.items())


def refit_in_place(model: nn.Module, names: Sequence[str], channels: int) -> bool:
    """Put in ``model`` (a weightless copy) each layer of ``names`` resized to take ``channels`` input channels, and set
    the settings guarding its channel count as a fold does: what the model looks like once they are folded.  False
    (some left as they were) when a layer is no Conv or Linear, or cannot be resized.

    Examples
    --------
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3))
    >>> refit_in_place(model, ["0"], 1), model[0].in_channels
    (True, 1)
    """
    for name in names:
        layer = model.get_submodule(name)
        what = "in_channels" if isinstance(layer, _CONV) else "in_features"
        before = getattr(layer, what, None)
        if not isinstance(before, int):
            return False
        resized = resized_copy(layer, Finding(name, type(layer).__name__, what, before, channels, ""))
        if resized is None:
            return False
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, leaf, resized)
        update_guards(model, name, CHANNEL_GUARDS, before, channels)
    return True


def resized_copy(module: nn.Module, finding: Finding, *, device: str | torch.device = "meta") -> nn.Module | None:
    """A copy of ``module`` resized to the input it got, or ``None`` when there is no resizing.

    Changed parameters and buffers are new, uninitialised tensors on
    ``device`` (``meta`` by default: nothing is allocated); the others are
    copies (on ``meta``: shape-only).  ``module`` itself is not touched and
    its hooks are not copied.

    Examples
    --------
    >>> from torch import nn
    >>> from torchsurgeon.records import Finding
    >>> c = resized_copy(nn.Conv2d(3, 8, 3, groups=1), Finding("c", "Conv2d", "in_channels", 3, 1, ""))
    >>> c, c.weight.shape, c.weight.device.type
    (Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1)), torch.Size([8, 1, 3, 3]), 'meta')
    """
    plan = plan_resize(module, finding.what, finding.got)
    if plan is None:
        return None
    target = torch.device(device)
    if target.type == "meta":
        copy_ = detached_copy(module, meta_like)
    else:
        copy_ = detached_copy(module, lambda t: t.detach().clone().to(target))
    for name, shape in plan.params.items():
        old = copy_.get_parameter(name)
        owner, _, leaf = name.rpartition(".")
        fresh = nn.Parameter(torch.empty(shape, dtype=old.dtype, device=target), requires_grad=old.requires_grad)
        setattr(copy_.get_submodule(owner), leaf, fresh)
    for name, shape in plan.buffers.items():
        owner, _, leaf = name.rpartition(".")
        old_buffer = copy_.get_buffer(name)
        setattr(copy_.get_submodule(owner), leaf, torch.empty(shape, dtype=old_buffer.dtype, device=target))
    for attr, value in plan.attrs.items():
        setattr(copy_, attr, value)
    return copy_


def _constructor(module: nn.Module) -> str:
    """Python that builds a layer like ``module``: ``nn.Conv2d(6, 12, kernel_size=(3, 3), ...)``."""
    kind = type(module)
    prefix = "nn." if kind.__module__.startswith("torch.nn") else f"{kind.__module__}."
    text = module.extra_repr()
    if "padding_mode=" in text:  # extra_repr leaves the string unquoted
        mode = getattr(module, "padding_mode", "")
        text = text.replace(f"padding_mode={mode}", f"padding_mode={mode!r}")
    padding = getattr(module, "padding", None)
    if isinstance(padding, str):  # padding='same' or 'valid', unquoted too
        text = text.replace(f"padding={padding}", f"padding={padding!r}")
    if isinstance(module, _CONV) and module.bias is None and "bias=False" not in text:
        text += ", bias=False"
    return f"{prefix}{kind.__name__}({text})"


def _encoder_layer(module: nn.TransformerEncoderLayer, width: Any) -> dict[str, Any] | None:
    """The arguments that build ``module`` again for ``width`` features (``d_model``), with its heads, feed-forward
    width, dropout and layout (not its activation, which has no weights); None when ``width`` is not a multiple
    of its heads."""
    heads = module.self_attn.num_heads
    if not isinstance(width, int) or width <= 0 or width % heads:
        return None
    return {
        "d_model": width,
        "nhead": heads,
        "dim_feedforward": module.linear1.out_features,
        "dropout": module.dropout.p,
        "layer_norm_eps": module.norm1.eps,
        "batch_first": module.self_attn.batch_first,
        "norm_first": module.norm_first,
        "bias": module.linear1.bias is not None,
    }


def _encoder_layer_fix(module: nn.TransformerEncoderLayer, layer: str, width: Any) -> str | None:
    """Python that builds ``module`` again for ``width`` features: :func:`_encoder_layer`, and its activation."""
    args = _encoder_layer(module, width)
    if args is None:
        return None
    activation = {1: "'relu'", 2: "'gelu'"}.get(
        int(getattr(module, "activation_relu_or_gelu", 0)), f"model.get_submodule({layer!r}).activation"
    )
    written = ", ".join(f"{k}={v!r}" for k, v in args.items() if k not in ("d_model", "nhead"))
    return f"nn.TransformerEncoderLayer({width}, {args['nhead']}, {written}, activation={activation})"


def rebuild_fix(module: nn.Module, layer: str, what: str, got: Any, *, whole_model: bool = False) -> str | None:
    """Python that replaces ``layer`` by a fresh layer that fits (new weights), or ``None``.

    ``what`` is the mismatch, as for :func:`plan_resize`; besides those, a
    recurrent layer's ``input_size`` and a transformer encoder layer's
    ``d_model`` (rebuilt for that width: its output has that width too).
    ``whole_model``: the layer is the model itself (``model = nn.LSTM(...)``).

    Examples
    --------
    >>> from torch import nn
    >>> rebuild_fix(nn.Linear(400, 120), "fc1", "in_features", 2704)
    "model.set_submodule('fc1', nn.Linear(in_features=2704, out_features=120, bias=True))"
    >>> rebuild_fix(nn.LSTM(8, 16), "LSTM", "input_size", 6, whole_model=True)
    'model = nn.LSTM(6, 16)'
    """
    if what == "d_model" and isinstance(module, nn.TransformerEncoderLayer):
        built = _encoder_layer_fix(module, layer, got)
        return None if built is None else _replacing(layer, built, whole_model)
    copy_ = resized_copy(module, Finding(layer, type(module).__name__, what, None, got, ""))
    if copy_ is None:
        return None
    built = _constructor(copy_)
    if getattr(module, "qconfig", None) is not None and getattr(module, "weight_fake_quant", None) is not None:
        qconfig = "model.qconfig" if whole_model else f"model.get_submodule({layer!r}).qconfig"
        built = f"{built[:-1]}, qconfig={qconfig})"  # a QAT layer needs its qconfig
    return _replacing(layer, built, whole_model)


def replacing_call(layer: str, module: nn.Module) -> str:
    """The statement that puts a layer built like ``module`` in place of ``layer``, as the user writes it.

    Examples
    --------
    >>> from torch import nn
    >>> replacing_call("fc", nn.Linear(8, 3))
    "model.set_submodule('fc', nn.Linear(in_features=8, out_features=3, bias=True))"
    """
    return _replacing(layer, _constructor(module), False)


def _replacing(layer: str, built: str, whole_model: bool) -> str:
    """The statement that puts the layer ``built`` in place of ``layer``, or of the whole model."""
    return f"model = {built}" if whole_model else f"model.set_submodule({layer!r}, {built})"


def input_conv(module: nn.Module) -> tuple[str, nn.modules.conv._ConvNd] | None:
    """The first (not transposed) convolution of ``module`` in module order, with its name: the layer a fold
    of the input resizes when ``module`` reads the model input (a patch or stem embedding).

    Examples
    --------
    >>> from torch import nn
    >>> input_conv(nn.Sequential(nn.Identity(), nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)))[0]
    '1'
    """
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            return name, m
    return None


def guessed_input(model: nn.Module) -> tuple[int, ...] | None:
    """An image input for a model whose first convolution (in module order) is 2-d or 3-d, else None.

    ``(C, 224, 224)`` or ``(C, 96, 96, 96)`` with ``C`` that convolution's
    input channels: sizes that segmentation networks' checks accept (they
    divide by 32).  Tried when a model cannot be traced without an input
    shape; a model that does not accept it is asked for one.

    Examples
    --------
    >>> from torch import nn
    >>> guessed_input(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)))
    (3, 224, 224)
    >>> guessed_input(nn.Linear(4, 2)) is None
    True
    """
    found = input_conv(model)
    sizes = {2: (224, 224), 3: (96, 96, 96)}.get(len(found[1].kernel_size)) if found is not None else None
    return None if found is None or sizes is None else (found[1].in_channels, *sizes)


def as_folded_inputs(module: nn.Module, args: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], str, nn.Module, int]]:
    """``module``'s arguments with the channel count its input convolution expects, one per possible channel dim.

    For a layer reading the model input (a patch embedding that checks the
    channel count itself): its output once that convolution is folded to the
    input's channels is its output on these arguments.  Each candidate gives
    the arguments, the convolution's name and module, and the channel count
    the input has.  The channels are dim 1 (``(N, C, H, W)``), tried first;
    a video model's may be another (``(N, T, C, H, W)``): the caller runs
    each candidate in turn and keeps the first its layer accepts.  Empty
    without a floating input, or when its dim 1 has the expected count (the
    layer refuses it for another reason).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> [(tuple(args[0].shape), name, got) for args, name, _, got in
    ...  as_folded_inputs(nn.Sequential(nn.Conv2d(3, 8, 2)), (torch.empty(2, 1, 4, 4),))]
    [((2, 3, 4, 4), '0', 1), ((2, 1, 3, 4), '0', 4), ((2, 1, 4, 3), '0', 4)]
    """
    found = input_conv(module)
    x = next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() >= 2), None)
    if found is None and x is not None and (patches := _linear_patches(module)) is not None:
        name, linear, expected = patches  # the input's channels are dim 1, as the module's own count says
        if int(x.shape[1]) == expected:
            return []
        return [(tuple(with_channels(x, expected) if a is x else a for a in args), name, linear, int(x.shape[1]))]
    if found is None or x is None or int(x.shape[1]) == found[1].in_channels:
        return []
    name, conv = found
    expected = conv.in_channels
    return [
        (tuple(with_channels(x, expected, dim) if a is x else a for a in args), name, conv, int(x.shape[dim]))
        for dim in range(1, x.dim())
        if int(x.shape[dim]) != expected
    ]


_OWN_CHANNELS = ("in_chans", "in_channels", "num_channels")
"""The settings in which a patch embedding without a convolution keeps the channels of the image it reads."""


def _linear_patches(module: nn.Module) -> tuple[str, nn.Linear, int] | None:
    """For a patch embedding without a convolution (timm's ``NaFlexEmbeds``: the image cut into patches, each
    ``in_chans`` × 16 × 16 values, read by one Linear): its first Linear, with its name, and the image's channels
    the module keeps (``in_chans``), which divide the Linear's ``in_features``; else None."""
    channels = next((c for a in _OWN_CHANNELS if type(c := vars(module).get(a)) is int and c > 0), None)
    linear = next(((n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)), None)
    if channels is None or linear is None or linear[1].in_features % channels:
        return None
    return linear[0], linear[1], channels


def width_expected_and_got(layer: nn.Module, channels: int, expected: int) -> tuple[str, int, int]:
    """What an input layer found by :func:`as_folded_inputs` reads, and how much of it it expects and gets when
    the model's input has ``channels`` where it takes ``expected``: a convolution's ``in_channels``, a patch
    Linear's ``in_features`` (each patch's values: ``in_features // expected`` per channel).

    Examples
    --------
    >>> from torch import nn
    >>> width_expected_and_got(nn.Linear(768, 64), 1, 3), width_expected_and_got(nn.Conv2d(3, 8, 3), 1, 3)
    (('in_features', 768, 256), ('in_channels', 3, 1))
    """
    if isinstance(layer, nn.Linear):
        return "in_features", layer.in_features, layer.in_features // expected * channels
    return "in_channels", int(getattr(layer, "in_channels", expected)), channels


def with_channels(x: torch.Tensor, channels: int, dim: int = 1) -> torch.Tensor:
    """A meta tensor like the batched input ``x`` with ``channels`` in ``dim``: the input a folded layer takes.

    Examples
    --------
    >>> import torch
    >>> x = torch.empty(2, 4, 1, 4)
    >>> tuple(with_channels(x, 3).shape), tuple(with_channels(x, 3, dim=2).shape)
    ((2, 3, 1, 4), (2, 4, 3, 4))
    """
    shape = list(x.shape)
    shape[dim] = channels
    return torch.empty(shape, dtype=x.dtype, device="meta")


_HANDING_ON_MODULES = (
    nn.Identity,
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.modules.padding._CircularPadNd,
    nn.modules.dropout._DropoutNd,
    nn.Upsample,
)
_HANDING_ON_FUNCTIONS = (
    torch.nn.functional.pad,
    torch.nn.functional.dropout,
    torch.nn.functional.interpolate,
    torch.nn.functional.upsample,
    torch.nn.functional.upsample_bilinear,
    torch.nn.functional.upsample_nearest,
    torch.fake_quantize_per_tensor_affine,  # a QAT model's fake quantisation of its input (QuantStub's)
    torch._fake_quantize_learnable_per_tensor_affine,
    torch.fused_moving_avg_obs_fake_quant,  # per tensor, or per row of dim 0 (the batch) only
)
_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_QUANTISING = (torch.ao.quantization.FakeQuantizeBase, torch.ao.quantization.ObserverBase)
_HANDING_ON_METHODS = frozenset({"to", "float", "half", "double", "bfloat16", "type", "type_as", "contiguous", "clone"})


def hands_on_channels(op: str, target: Any, module: nn.Module | None) -> bool:
    """Whether a graph node hands its input on with its channels: padding, dropout, identity, a dtype conversion,
    a resize (interpolation), a fake quantisation or an observer with one scale for all channels (``QuantStub``'s in
    a model prepared for quantization).

    A layer after such nodes still reads the model input (efficientnet-pytorch
    pads before its stem; CLIP casts its pixels to the patch convolution's
    dtype; a model may resize its input to the size its stem was trained at),
    so its fix is a fold of the input layer.

    Examples
    --------
    >>> from torch import nn
    >>> hands_on_channels("call_module", "pad", nn.ZeroPad2d(1)), hands_on_channels("call_method", "view", None)
    (True, False)
    """
    if op == "call_module":
        if isinstance(module, _QUANTISING):  # one scale for every channel: an observer returns its input as it is
            return getattr(module, "qscheme", None) in _PER_TENSOR
        return isinstance(module, _HANDING_ON_MODULES)
    if op == "call_function":
        return any(target is f for f in _HANDING_ON_FUNCTIONS)
    return op == "call_method" and target in _HANDING_ON_METHODS


_FLATTENING = frozenset({"flatten", "view", "reshape", "squeeze", "contiguous"})


def call_name(op: str, target: Any) -> str:
    """The name a ``call_method`` or ``call_function`` node calls (``"reshape"``, ``"flatten"``); "" for other nodes.

    Examples
    --------
    >>> import torch
    >>> call_name("call_method", "view"), call_name("call_function", torch.flatten), call_name("call_module", "fc")
    ('view', 'flatten', '')
    """
    return target if op == "call_method" else getattr(target, "__name__", "") if op == "call_function" else ""


def hands_on_features(op: str, target: Any, module: nn.Module | None) -> bool:
    """Whether a graph node hands its input's features on, maybe flattened: :func:`hands_on_channels`, or a flatten,
    view, reshape or squeeze (torchvision's ResNet: ``avgpool``, ``torch.flatten``, ``fc``).

    Examples
    --------
    >>> from torch import nn
    >>> hands_on_features("call_method", "view", None), hands_on_features("call_module", "f", nn.Flatten())
    (True, True)
    >>> hands_on_features("call_method", "sum", None)
    False
    """
    name = call_name(op, target)
    return hands_on_channels(op, target, module) or isinstance(module, nn.Flatten) or name in _FLATTENING


def input_fix(module: nn.Module, channels: int, input: str = "", layers: Sequence[str] = ()) -> str:
    """The fix of an input layer that does not take ``channels``: its fold (:func:`fold_fix`, given ``input=``
    ``input`` when not empty and ``layer=`` ``layers`` when not empty), or, for a layer no fold keeps exact (a
    convolution that standardises its weight in its forward), the ways out that are.

    Examples
    --------
    >>> from torch import nn
    >>> input_fix(nn.Conv2d(3, 8, 3), 1)
    'fold it with adapt_input_channels(model, 1)'
    """
    call = fold_fix(module, channels, input, layers)
    mode = FoldMode.SPREAD if "mode='spread'" in call else FoldMode.SUM
    before = getattr(module, "in_channels", getattr(module, "in_features", channels))
    if fold_is_exact(module, channels, mode):
        return f"fold it with {call}"
    return f"its forward standardises its weight, so no fold keeps its outputs: {no_exact_fold(before, channels)}"


def fold_fix(module: nn.Module, channels: int, input: str = "", layers: Sequence[str] = ()) -> str:
    """The :func:`~torchsurgeon.adapt_input_channels` call that makes an input layer take ``channels``.

    The default mode (``sum``) folds to one channel per group; otherwise the
    call names ``mode='spread'``, which folds to any count.  ``input``, when
    not empty, is passed as ``input=`` (Python for an input the model takes
    now: the layer reads the input with its axes moved, which the traced graph
    alone does not show to keep its channels); ``layers``, when not empty, as
    ``layer=`` (the layers to fold alone: others read the input only
    rearranged, :func:`~torchsurgeon.graphreaders.fold_layers`).

    Examples
    --------
    >>> from torch import nn
    >>> fold_fix(nn.Conv2d(3, 8, 3), 1), fold_fix(nn.Conv2d(3, 12, 3, groups=3), 6)
    ('adapt_input_channels(model, 1)', "adapt_input_channels(model, 6, mode='spread')")
    >>> fold_fix(nn.Conv2d(2, 8, 3), 1, layers=["stem"])
    "adapt_input_channels(model, 1, layer=['stem'])"
    """
    per_group = channels // fitted_groups(module, channels) if isinstance(module, _CONV) else channels
    given = f", input={input}" if input else ""
    given += f", layer={list(layers)!r}" if layers else ""
    if per_group == 1:
        return f"adapt_input_channels(model, {channels}{given})"
    return f"adapt_input_channels(model, {channels}, mode='spread'{given})"
