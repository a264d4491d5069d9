"""What guards a model's input channel count besides its layers' weights: settings and configs.

Libraries check the channel count an input has against a setting (transformers'
``config.num_channels``, timm's ``in_chans``, smp's ``_in_channels``) or save
it for rebuilding the model (diffusers' ``config.in_channels``, smp's and
Lightning's constructor arguments).  :func:`update_guards` makes them follow a
layer that surgery resized (:func:`torchsurgeon.adapt_input_channels` lists
each in ``SurgeryResult.changes``); :func:`stale_guards_fix` names the
statements that do it by hand for a layer replaced by hand.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from .records import ParamChange, ParamReport

__all__ = ("CHANNEL_GUARDS", "CONSTRUCTOR_ARGUMENTS", "guard_holders", "stale_guards_fix", "update_guards")


CHANNEL_GUARDS = (
    "num_channels",
    "in_chans",
    "in_chs",
    "in_channels",
    "_in_channels",
    "input_channels",
    "in_features",
    "num_mel_bins",
    "stem_num_channels",
    "conditioning_channels",
)
"""Attributes libraries check the input's channel count against (transformers' ``num_channels``,
timm's ``in_chans``, smp's ``_in_channels``, kornia's ``in_features``, Whisper's ``num_mel_bins``) or build layers
from (the ``in_chs`` of timm's stem blocks: fastvit's MobileOneBlock makes its reparameterised conv with it;
transformers' TextNet builds its stem from ``config.stem_num_channels``; diffusers' ControlNet its conditioning image's
stem from ``config.conditioning_channels``), on the modules holding the stem; the entries
of their :data:`CONSTRUCTOR_ARGUMENTS` too."""


CONSTRUCTOR_ARGUMENTS = ("_hub_mixin_config", "_hparams")
"""The dicts of constructor arguments a library rebuilds a saved model from, on the modules holding a layer: smp's
``_hub_mixin_config`` (``from_pretrained``), Lightning's ``_hparams`` (``save_hyperparameters()``; checkpoints save it
and ``load_from_checkpoint`` builds the model from it)."""


def update_guards(
    model: nn.Module, layer: str, attributes: Sequence[str], before: int, after: int
) -> list[ParamReport]:
    """Set ``attributes`` equal to ``before`` on ``layer``'s ancestors and their configs to ``after``.

    Instance attributes of modules only (never a class's); on a ``config``
    object, properties too (transformers' ``num_labels`` also resizes
    ``id2label``).
    """
    changes: list[ParamReport] = []
    note = f"{before} → {after}"
    for where, holder, is_config in guard_holders(model, layer):
        name = where.removesuffix("config").removesuffix(".")
        owner = model.get_submodule(name) if is_config else None
        equal = [a for a in attributes if type(v := _guard_value(holder, a, is_config)) is int and v == before]
        if len(equal) > 1 and owner is not None:  # a ControlNet's in_channels and conditioning_channels, both 3
            equal = _building(owner, layer.removeprefix(name).lstrip("."), equal, after)
        for attr in equal:
            if owner is not None and _registers_config(owner):  # diffusers: a new frozen dict, as saved
                cast(Any, owner).register_to_config(**{attr: after})
                holder = owner.config
            else:
                setattr(holder, attr, after)
            changes.append(ParamReport(f"{where}.{attr}".lstrip("."), ParamChange.SETTING, None, None, "", note))
        for store in () if is_config else CONSTRUCTOR_ARGUMENTS:
            hub = vars(holder).get(store)
            if not isinstance(hub, dict):
                continue
            # smp's auxiliary classifier (classification_head) is built from the nested aux_params, not from classes
            aux = hub.get("aux_params")
            ours = layer.startswith(f"{where}.classification_head.".lstrip(".")) and isinstance(aux, dict)
            for config, key in ((aux, "['aux_params']"),) if ours else ((hub, ""),):
                assert isinstance(config, dict)
                for attr in attributes:
                    if type(config.get(attr)) is int and config[attr] == before:
                        config[attr] = after
                        name = f"{where}.{store}{key}[{attr!r}]".lstrip(".")
                        changes.append(ParamReport(name, ParamChange.SETTING, None, None, "", note))
    return changes


def _building(owner: nn.Module, layer: str, attributes: list[str], after: int) -> list[str]:
    """Of several settings of ``owner``'s config equal to the channel count ``layer`` (under ``owner``) had, all but
    those that build another layer instead (a ControlNet's ``in_channels``, its latents' ``conv_in``, beside the
    condition's ``conditioning_channels``): each set alone to ``after`` in a rebuild of ``owner`` from its config
    on ``meta``, where ``layer`` keeps its width and another changes.  A setting only checked against the input
    builds nothing and stays; all stay where the model is not rebuilt so."""
    widths = _widths(owner)
    kept = []
    for attr in attributes:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if _registers_config(owner):  # diffusers (which builds what _use_default_values lists by default)
                    config = {k: v for k, v in cast(Any, owner).config.items() if k != "_use_default_values"}
                    rebuilt = cast(Any, type(owner)).from_config({**config, attr: after})
                else:  # transformers: the model class called with its config
                    config = copy.deepcopy(cast(Any, owner).config)
                    setattr(config, attr, after)
                    rebuilt = type(owner)(config)
        except Exception:  # not rebuilt from its config alone
            return attributes
        rebuilt_widths = _widths(rebuilt)
        others = any(widths.get(name) != width for name, width in rebuilt_widths.items() if name != layer)
        if rebuilt_widths.get(layer) == after or not others:  # ``owner`` has ``layer`` resized already
            kept.append(attr)
    return kept or attributes


def _widths(model: nn.Module) -> dict[str, int]:
    """The input width of each convolution and Linear of ``model``, by name."""
    return {
        name: m.in_channels if isinstance(m, nn.modules.conv._ConvNd) else m.in_features
        for name, m in model.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    }


def stale_guards_fix(model: nn.Module, layer: str, inputs: Sequence[Any]) -> str:
    """For a module that fails on its input because a setting still guards the old channel count (a Hugging Face
    stem replaced by hand, ``config.num_channels`` left as it was): the statements that make the settings follow
    the layer inside it that already takes the input's channels, as a fix (``" — set model....num_channels = 1;
    ..."``); ``""`` when there is no such layer or setting.  Asked only for a module that reads the model's input:
    these settings guard the input's channels, not those of a feature map deeper in (MONAI's ``in_channels``).

    Examples
    --------
    >>> class Stem(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.num_channels, self.conv = 3, nn.Conv2d(1, 8, 3)  # replaced by hand, num_channels not
    >>> model = nn.Sequential(Stem())
    >>> stale_guards_fix(model, "0", [(2, 1, 32, 32)])
    " — 0.conv takes 1 channel but 0.num_channels still says 3: model.get_submodule('0').num_channels = 1"
    """
    shape = next((s for s in inputs if isinstance(s, tuple) and len(s) >= 3), None)
    if shape is None or not layer:
        return ""
    got = shape[1]
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        return ""
    reader = next(
        (
            f"{layer}.{name}"
            for name, m in module.named_modules()
            if name and getattr(m, "in_channels", None) == got and isinstance(m, nn.modules.conv._ConvNd)
        ),
        None,
    )
    if reader is None:
        return ""
    holders = {id(h): (where, h, is_config) for where, h, is_config in reversed(guard_holders(model, reader))}
    stale = [  # a config shared by the model and its backbone (transformers) once, under its shortest name
        (where, attr, value, is_config)
        for where, holder, is_config in reversed(holders.values())
        for attr in CHANNEL_GUARDS
        if type(value := _guard_value(holder, attr, is_config)) is int and value != got and attr != "in_features"
    ]
    if not stale:
        return ""

    def statement(where: str, attr: str, is_config: bool) -> str:  # Python that sets it, reached from the model
        owner = where.removesuffix("config").removesuffix(".") if is_config else where
        reach = f"model.get_submodule({owner!r})" if owner else "model"
        if is_config and _registers_config(model.get_submodule(owner)):
            return f"{reach}.register_to_config({attr}={got})"
        return f"{reach}.config.{attr} = {got}" if is_config else f"{reach}.{attr} = {got}"

    said = ", ".join(f"{where}.{attr}".lstrip(".") for where, attr, _, _ in stale)
    statements = "; ".join(statement(where, attr, is_config) for where, attr, _, is_config in stale)
    verb = "says" if len(stale) == 1 else "say"
    return f" — {reader} takes {got} channel{'s' * (got != 1)} but {said} still {verb} {stale[0][2]}: {statements}"


def _guard_value(holder: Any, attr: str, is_config: bool) -> Any:
    """A guard's value on one of :func:`guard_holders`: a config's attribute (properties too), a module's own
    instance attribute (never its class's)."""
    return getattr(holder, attr, None) if is_config else vars(holder).get(attr)


def guard_holders(model: nn.Module, layer: str) -> list[tuple[str, Any, bool]]:
    """The modules holding ``layer`` ("", "a", "a.b": not the layer itself), each followed by its ``config`` when
    it has one (a transformers config; a diffusers model's frozen dict, set with ``register_to_config``): (name,
    object, whether it is a config)."""
    found: list[tuple[str, Any, bool]] = []
    parts = layer.split(".")
    for name in (".".join(parts[:i]) for i in range(len(parts))):
        module = model.get_submodule(name)
        found.append((name, module, False))
        config = vars(module).get("config")
        if config is None and _registers_config(module):
            config = module._internal_dict
        if config is not None:
            found.append((f"{name}.config".lstrip("."), config, True))
    return found


def _registers_config(module: nn.Module) -> bool:
    """Whether ``module`` keeps its settings as diffusers' ``ConfigMixin`` does: a frozen dict behind the ``config``
    property, changed by ``register_to_config(**settings)`` (what ``save_pretrained`` writes; setting an attribute
    of the frozen dict leaves its items as they were)."""
    return isinstance(vars(module).get("_internal_dict"), dict) and callable(
        getattr(module, "register_to_config", None)
    )
