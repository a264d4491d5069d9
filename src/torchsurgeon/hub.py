"""Models by name, for the command line and ``pyproject.toml`` contracts: built without weights, never downloaded.

A model spec is one of:

==============================  =====================================================================
``torchvision:NAME``            ``torchvision.models.get_model(NAME, weights=None, **kwargs)``
``timm:NAME``                   ``timm.create_model(NAME, pretrained=False, **kwargs)``
``smp:NAME``                    ``segmentation_models_pytorch.NAME(encoder_weights=None, **kwargs)``
``hf:MODEL_TYPE``               ``AutoModel.from_config(AutoConfig.for_model(MODEL_TYPE, **kwargs))``
``hf:CLASS``                    ``CLASS(CLASS.config_class(**kwargs))``, e.g. ``hf:BertForMaskedLM``
``hf:DIR``                      the class in ``DIR/config.json`` (``architectures``), from that config
``monai:NAME``                  ``monai.networks.nets.NAME(**kwargs)``, e.g. ``monai:BasicUNet``
``open_clip:NAME``              ``open_clip.create_model(NAME, pretrained=None, **kwargs)``, e.g. ``open_clip:RN50``
``MODULE:CALLABLE``             ``CALLABLE(**kwargs)`` (or ``MODULE:OBJECT``, a model object as it is)
==============================  =====================================================================

The prefixes win over ``MODULE:CALLABLE`` (no module ``torchvision``
attribute is a model anyway); ``monai:`` and ``open_clip:`` give way to it
for a name that is no model there but an attribute of the library
(``open_clip:create_model --kwargs model_name=RN50`` as before).  For ``hf:``, ``kwargs`` are fields of the
configuration (``num_hidden_layers=2``), checked against the
configuration's own fields; the model is built from the configuration, so
no weights are loaded even when ``DIR`` holds some.

No weights are ever downloaded: every model is built with the network
blocked (sockets refuse to connect while the constructor runs).  Weights
already in the local cache still load when asked for (``--kwargs
pretrained=True``, ``weights="DEFAULT"``); a constructor that would
download instead fails at once with an error naming the argument that
turns weights off.  Models are built after ``torch.manual_seed(0)`` (the
caller's random state is left as it was), so one name and its kwargs give
the same initial weights every time, as ``check-surgery`` needs.
:func:`parse_kwargs` reads ``--kwargs`` text.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.hub
from torch import nn

from .errors import ConfigError, InputError, did_you_mean, failure_reason

__all__ = ("PREFIXES", "load_model", "parse_kwargs")

PREFIXES = ("torchvision", "timm", "smp", "hf", "monai", "open_clip")
"""The model-name prefixes: ``torchvision:resnet50``, ``timm:resnet18``, ``smp:Unet``, ``hf:bert``,
``monai:BasicUNet``, ``open_clip:RN50``."""

_NO_WEIGHTS = {
    "torchvision": "weights=None",
    "timm": "pretrained=False",
    "smp": "encoder_weights=None",
    "segmentation_models_pytorch": "encoder_weights=None",
    "open_clip": "pretrained=None",
}


def parse_kwargs(text: str) -> dict[str, Any]:
    """Read ``--kwargs`` text: ``NAME=VALUE`` pairs separated by commas.

    Values are Python literals (``None``, ``True``, ints, floats, quoted
    strings, tuples, lists, dicts); anything else is a plain string
    (``encoder_name=resnet18``).  Commas inside brackets or quotes do not
    split (``stride=(2, 2)``).

    Raises
    ------
    InputError
        For a pair without ``=``, a name that is not an identifier, or a name given twice.

    Examples
    --------
    >>> parse_kwargs("encoder_weights=None,classes=2,encoder_name=resnet18,strides=(2, 2),scale=0.5")
    {'encoder_weights': None, 'classes': 2, 'encoder_name': 'resnet18', 'strides': (2, 2), 'scale': 0.5}
    >>> parse_kwargs("")
    {}
    """
    out: dict[str, Any] = {}
    for pair in _split(text):
        name, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not name.isidentifier():
            raise InputError(
                f"--kwargs {text!r}: {pair.strip()!r} is not NAME=VALUE — e.g. --kwargs encoder_weights=None,classes=2"
            )
        if name in out:
            raise InputError(f"--kwargs {text!r}: {name} is given twice — give each argument once")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            out[name] = value
    return out


def _split(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes; empty pieces dropped."""
    pieces, depth, quote, start, escaped = [], 0, "", 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quote:
            escaped = ch == "\\"
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return [p for p in pieces if p.strip()]


def load_model(spec: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the model a spec names (see the module docstring), without weights and without the network.

    Parameters
    ----------
    spec : str
        ``torchvision:NAME``, ``timm:NAME``, ``smp:NAME``, ``hf:MODEL_TYPE``,
        ``hf:CLASS``, ``hf:DIR``, ``monai:NAME``, ``open_clip:NAME`` or
        ``MODULE:CALLABLE``.
    kwargs : mapping, optional
        Constructor arguments (configuration fields for ``hf:``); they win
        over the no-weights defaults.

    Returns
    -------
    nn.Module

    Raises
    ------
    ConfigError
        If the name is unknown (with the closest names), the module or
        attribute does not exist, the constructor raises (a missing argument,
        a download it tried), or the result is not an ``nn.Module``; the
        message says what to write instead.

    Examples
    --------
    >>> load_model("torch.nn:Identity")
    Identity()
    >>> load_model("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    Linear(in_features=4, out_features=2, bias=True)
    >>> type(load_model("torchvision:resnet18", {"num_classes": 3})).__name__
    'ResNet'
    """
    kwargs = dict(kwargs or {})
    prefix, sep, name = spec.partition(":")
    if not sep or not prefix or not name:
        raise ConfigError(
            f"model {spec!r}: expected MODULE:CALLABLE or {', '.join(p + ':NAME' for p in PREFIXES)}, "
            "e.g. torchvision:resnet50 or torchvision.models:resnet50"
        )
    builders: dict[str, Callable[[str, str, dict[str, Any]], Any]] = {
        "torchvision": _torchvision,
        "timm": _timm,
        "smp": _smp,
        "hf": _hf,
        "monai": _monai,
        "open_clip": _open_clip,
    }
    build = builders.get(prefix, _callable)
    with _offline() as attempts, torch.random.fork_rng(devices=[]):
        try:
            if build is _callable:  # imported first: what the module draws at import must not shift the weights
                _module_of(spec)
            torch.manual_seed(0)  # the same name gives the same weights (check-surgery compares them)
            model = build(spec, name, kwargs)
        except Exception as exc:
            where = attempts[0] if attempts else _hub_refusal(exc)
            if where:
                fix = _NO_WEIGHTS.get(prefix.split(".")[0], "pretrained=False, weights=None or encoder_weights=None")
                raise ConfigError(
                    f"model {spec!r} tried to download ({where}) — torchsurgeon never downloads weights: "
                    f"pass --kwargs {fix} (weights already in the local cache load without the network)"
                ) from exc
            if isinstance(exc, ConfigError):
                raise
            hint = _hint(exc, _builder(prefix, name), kwargs)
            raise ConfigError(f"model {spec!r}: building it raised {failure_reason(exc)}{hint}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {spec!r} is {type(model).__name__}, not an nn.Module — name a model or its builder")
    return model


def _hint(exc: Exception, builder: Any, kwargs: Mapping[str, Any]) -> str:
    """The fix for a constructor that raised: the argument meant for a misspelt one, ``hf:`` for a transformers
    class, else the missing arguments."""
    if isinstance(exc, TypeError) and (unexpected := _UNEXPECTED.match(str(exc))):
        return _misspelt(exc, unexpected["callee"], unexpected["key"], builder, kwargs)
    if not isinstance(exc, TypeError) or "required" not in str(exc):
        return ""
    if (
        isinstance(builder, type)
        and builder.__module__.startswith("transformers.")
        and hasattr(builder, "config_class")
    ):
        return (
            f" — build it from its default configuration with hf:{builder.__name__} "
            "(--kwargs then sets configuration fields, e.g. num_hidden_layers=2)"
        )
    return " — give the arguments it needs with --kwargs NAME=VALUE,NAME=VALUE"


_UNEXPECTED = re.compile(r"(?P<callee>[\w.]+)\(\) got an unexpected keyword argument '(?P<key>\w+)'")


def _misspelt(exc: Exception, callee: str, key: str, builder: Any, kwargs: Mapping[str, Any]) -> str:
    """The fix for ``key``, an argument ``callee`` (``ResNet.__init__``, as the TypeError names it) does not take:
    the one meant among the parameters of ``callee`` and of ``builder`` (what the model name calls), with the
    ``--kwargs`` that gives it; ``""`` when neither signature can be read."""
    names = _parameters(_called(exc, callee)) | _parameters(builder)
    if not names:
        return ""
    return (
        _meant(key, names, kwargs, cutoff=0.6)
        or f" — {callee.removesuffix('.__init__')} takes {', '.join(sorted(names))}"
    )


def _meant(key: str, names: set[str], kwargs: Mapping[str, Any], cutoff: float) -> str:
    """`` — did you mean NAME? --kwargs ...`` for ``key``, with ``kwargs`` rewritten to give NAME, the closest of
    ``names`` not given already; ``""`` when none is that close."""
    meant = did_you_mean(key, sorted(names - set(kwargs)), lambda close: _kwargs(close, key, kwargs), cutoff=cutoff)
    return f" — {meant}" if meant else ""


def _kwargs(close: str, key: str, kwargs: Mapping[str, Any]) -> str:
    """``--kwargs`` giving ``kwargs`` with ``key`` renamed ``close``."""
    return f"--kwargs {','.join(_pair(close if k == key else k, v) for k, v in kwargs.items())}"


def _refuse_misspelt(spec: str, chain: list[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse a key close to, but not, a parameter of ``chain`` (a builder, then what it builds) when the last of
    them takes ``**kwargs``: it would take the misspelt key without a word and build the default instead.

    Keys close to no parameter pass (they may be meant for a constructor further down), and so does everything
    when the last signature cannot be read.  Closeness is stricter than for a constructor that already refused
    the key (0.8, one or two letters off), since a key refused here never reaches the model.
    """
    chain = [c for c in chain if c is not None]
    try:
        swallows = bool(chain) and any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(chain[-1]).parameters.values()
        )
    except (TypeError, ValueError):
        return
    if not swallows:
        return  # the last one refuses unknown keys itself; _misspelt then names the one meant
    names = set().union(*(_parameters(c) for c in chain))
    for key in kwargs:
        if key not in names and (fix := _meant(key, names, kwargs, cutoff=0.8)):
            where = getattr(chain[-1], "__qualname__", type(chain[-1]).__name__)
            raise ConfigError(
                f"model {spec!r}: {where}() has no argument {key!r} and would take it into its **kwargs "
                f"without a word (building its default){fix}"
            )


def _made_by(builder: Any) -> Any:
    """The model class a builder function returns, from its return annotation; None if it names none."""
    if builder is None or isinstance(builder, type):
        return None
    try:
        made = inspect.signature(builder, eval_str=True).return_annotation
    except Exception:  # an annotation that does not evaluate: no class to read
        return None
    return made if isinstance(made, type) and issubclass(made, nn.Module) else None


def _called(exc: Exception, callee: str) -> Any:
    """The callable a TypeError's message names (``ResNet.__init__``), found where it was called: the innermost
    frame's locals (``model_cls(**kwargs)``) or globals (``ResNet(block, layers, **kwargs)``); None if neither."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return None
    first, *rest = callee.split(".")
    frame = tb.tb_frame
    found = [v for v in frame.f_locals.values() if getattr(v, "__qualname__", None) == first]
    obj = found[0] if found else frame.f_locals.get(first, frame.f_globals.get(first))
    for part in rest:
        obj = getattr(obj, part, None)
    return obj


def _parameters(obj: Any) -> set[str]:
    """The names ``obj`` takes as keywords (``self`` aside), where its signature can be read."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in kinds and p.name != "self"}


def _pair(name: str, value: Any) -> str:
    """``NAME=VALUE`` that :func:`parse_kwargs` reads back as ``value``: as written for plain words and
    literals, else its repr."""
    plain = f"{name}={value}"
    return plain if parse_kwargs(plain) == {name: value} else f"{name}={value!r}"


def _builder(prefix: str, name: str) -> Any:
    """What a library model name calls, for its signature: None where it cannot be found."""
    try:
        if prefix == "torchvision":
            import torchvision

            return torchvision.models.get_model_builder(name)
        if prefix == "timm":
            return importlib.import_module("timm").create_model
        if prefix == "smp":
            return getattr(importlib.import_module("segmentation_models_pytorch"), name, None)
        if prefix == "monai":
            return getattr(importlib.import_module("monai.networks.nets"), name, None)
        if prefix == "open_clip":
            return importlib.import_module("open_clip").create_model
    except (ImportError, ValueError):
        pass
    return None


def _close(name: str, names: list[str]) -> str:
    meant = did_you_mean(name, names, most=3)
    return f" — {meant}" if meant else ""


def _torchvision(spec: str, name: str, kwargs: dict[str, Any]) -> Any:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ConfigError(
            f"model {spec!r}: torchvision has no model {name!r}{_close(name, torchvision.models.list_models())}"
        )
    builder = torchvision.models.get_model_builder(name)
    _refuse_misspelt(spec, [builder, _made_by(builder)], kwargs)
    return torchvision.models.get_model(name, **{"weights": None, **kwargs})


def _timm(spec: str, name: str, kwargs: dict[str, Any]) -> Any:
    timm = _library("timm", spec)
    if not timm.is_model(name):
        raise ConfigError(f"model {spec!r}: timm has no model {name!r}{_close(name, timm.list_models())}")
    entrypoint = importlib.import_module("timm.models._registry").model_entrypoint(name)
    if (made := _made_by(entrypoint)) is not None:  # else the keys' last taker is unknown: no check
        _refuse_misspelt(spec, [timm.create_model, entrypoint, made], kwargs)
    return timm.create_model(name, **{"pretrained": False, **kwargs})


def _smp(spec: str, name: str, kwargs: dict[str, Any]) -> Any:
    smp = _library("segmentation_models_pytorch", spec)
    builder = getattr(smp, name, None)
    if not isinstance(builder, type) or not issubclass(builder, nn.Module):
        raise ConfigError(
            f"model {spec!r}: segmentation_models_pytorch has no model {name!r}{_close(name, _models(smp))}"
        )
    _refuse_misspelt(spec, [builder], kwargs)
    return builder(**{"encoder_weights": None, **kwargs})


def _models(library: Any) -> list[str]:
    """The names of the ``nn.Module`` classes a library module holds."""
    return [n for n in dir(library) if isinstance(v := getattr(library, n), type) and issubclass(v, nn.Module)]


def _monai(spec: str, name: str, kwargs: dict[str, Any]) -> Any:
    nets = _library("monai.networks.nets", spec)
    builder = getattr(nets, name, None)
    if not isinstance(builder, type) or not issubclass(builder, nn.Module):
        if name in dir(_library("monai", spec)):  # monai:ATTRIBUTE, a MODULE:CALLABLE
            return _callable(spec, name, kwargs)
        raise ConfigError(f"model {spec!r}: monai.networks.nets has no network {name!r}{_close(name, _models(nets))}")
    _refuse_misspelt(spec, [builder], kwargs)
    return builder(**kwargs)


def _open_clip(spec: str, name: str, kwargs: dict[str, Any]) -> Any:
    open_clip = _library("open_clip", spec)
    models = open_clip.list_models()
    if name not in models:
        if name in dir(open_clip):  # open_clip:create_model --kwargs model_name=RN50, a MODULE:CALLABLE
            return _callable(spec, name, kwargs)
        raise ConfigError(f"model {spec!r}: open_clip has no model {name!r}{_close(name, models)}")
    return open_clip.create_model(name, **{"pretrained": None, **kwargs})


def _hf(spec: str, name: str, kwargs: dict[str, Any]) -> Any:
    transformers = _library("transformers", spec)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES  # type: ignore[attr-defined]

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model {spec!r}: {path} has no config.json — give a folder saved with save_pretrained")
        _check_fields(spec, transformers.AutoConfig.from_pretrained(str(path), local_files_only=True), kwargs)
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True, **kwargs)
        cls = next((c for c in (getattr(transformers, a, None) for a in config.architectures or ()) if c), None)
        return cls(config) if cls is not None else transformers.AutoModel.from_config(config)
    if name in CONFIG_MAPPING_NAMES:
        _check_fields(spec, transformers.AutoConfig.for_model(name), kwargs)
        return transformers.AutoModel.from_config(transformers.AutoConfig.for_model(name, **kwargs))
    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if isinstance(cls, type) and issubclass(cls, nn.Module) and hasattr(cls, "config_class"):
        _check_fields(spec, cls.config_class(), kwargs)
        return cls(cls.config_class(**kwargs))
    if "/" in name or name.startswith("."):
        raise ConfigError(
            f"model {spec!r}: no folder {name} here, and torchsurgeon does not download from the Hub — "
            "save its config.json into a folder and give hf:FOLDER, or name the architecture, e.g. hf:bert"
        )
    raise ConfigError(
        f"model {spec!r}: {name!r} is neither a transformers model type nor a model class"
        f"{_close(name, list(CONFIG_MAPPING_NAMES)) or ' — e.g. hf:bert, hf:BertForMaskedLM'}"
    )


def _check_fields(spec: str, config: Any, kwargs: Mapping[str, Any]) -> None:
    """Refuse configuration fields the configuration does not have: transformers would keep a typo silently."""
    known = [*config.to_dict(), *getattr(config, "attribute_map", {})]
    for key in kwargs:
        if key not in known and not hasattr(config, key):  # num_labels is a property
            raise ConfigError(
                f"model {spec!r}: {type(config).__name__} has no field {key!r}"
                f"{_close(key, known) or ' — the fields are ' + ', '.join(sorted(config.to_dict())[:12]) + ', ...'}"
            )


def _library(module: str, spec: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"model {spec!r} needs {module}: pip install {module.replace('_', '-')} ({exc})") from exc


def _module_of(spec: str) -> Any:
    """The module ``MODULE:CALLABLE`` names, imported."""
    module_name = spec.partition(":")[0]
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model {spec!r}: cannot import {module_name!r} ({exc}) — check the module path and that it is installed"
        ) from exc


def _callable(spec: str, _: str, kwargs: dict[str, Any]) -> Any:
    """``MODULE:CALLABLE`` (or ``MODULE:OBJECT``): import it and call it with ``kwargs``."""
    module_name, _, attr = spec.partition(":")
    obj: Any = _module_of(spec)
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        found = [n for n in dir(_module_of(spec)) if not n.startswith("_")]
        raise ConfigError(f"model {spec!r}: {module_name} has no attribute {attr!r}{_close(attr, found)}") from None
    if isinstance(obj, nn.Module):
        if kwargs:
            raise ConfigError(f"model {spec!r} is a model object, not a builder — drop --kwargs, or name its builder")
        return obj
    if not callable(obj):
        raise ConfigError(f"model {spec!r}: {attr} is neither a callable nor an nn.Module")
    _refuse_misspelt(spec, [obj, _made_by(obj)], kwargs)
    try:
        built = obj(**kwargs)
    except Exception as exc:
        hint = _hint(exc, obj, kwargs)
        raise ConfigError(f"model {spec!r}: calling {attr}() raised {failure_reason(exc)}{hint}") from exc
    if not isinstance(built, nn.Module):
        raise ConfigError(f"model {spec!r}: {attr}() returned {type(built).__name__}, not an nn.Module")
    return built


class _Blocked(ConnectionRefusedError):
    """A connection torchsurgeon refused while a model was being built."""


_HUB_OFFLINE_ERRORS = ("OfflineModeIsEnabled", "LocalEntryNotFoundError")


def _hub_refusal(exc: BaseException | None) -> str:
    """``"huggingface.co"`` when ``exc`` (or what caused it) is the Hub's offline mode refusing a download."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in _HUB_OFFLINE_ERRORS:
            return "huggingface.co"
        exc = exc.__cause__ or exc.__context__
    return ""


@contextlib.contextmanager
def _offline() -> Iterator[list[str]]:
    """Refuse every network connection in this block; yield the list of hosts something tried to reach.

    Sockets and ``torch.hub.download_url_to_file`` refuse to connect (a
    ``ConnectionRefusedError``: libraries then look in their local cache, as
    they do offline) and the Hugging Face Hub client is put in its offline
    mode, so that it does not retry.
    """
    attempts: list[str] = []
    connect, create_connection, getaddrinfo = socket.socket.connect, socket.create_connection, socket.getaddrinfo

    def refuse(where: Any) -> None:
        attempts.append(str(where[0] if isinstance(where, tuple) and where else where))
        raise _Blocked(f"torchsurgeon blocks the network while building a model: {attempts[-1]}")

    def blocked_connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        connect(sock, address)

    def blocked_getaddrinfo(host: Any, *_: Any, **__: Any) -> Any:
        refuse((host,))

    def blocked_create_connection(address: Any, *_: Any, **__: Any) -> Any:
        refuse(address)

    def blocked_download(url: str, *_: Any, **__: Any) -> None:
        refuse((urllib.parse.urlsplit(str(url)).hostname or url,))

    hub: Any
    try:
        from huggingface_hub import constants as hub
    except ImportError:  # pragma: no cover - huggingface_hub comes with timm and transformers
        hub = None
    hub_offline = getattr(hub, "HF_HUB_OFFLINE", False)
    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(dict.fromkeys(env, "1"))  # for libraries that read it when they are imported
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    download = torch.hub.download_url_to_file
    torch.hub.download_url_to_file = blocked_download
    socket.socket.connect = blocked_connect  # type: ignore[method-assign,assignment]
    socket.create_connection = blocked_create_connection  # type: ignore[assignment]
    socket.getaddrinfo = blocked_getaddrinfo  # type: ignore[assignment]
    try:
        yield attempts
    finally:
        torch.hub.download_url_to_file = download
        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.create_connection = create_connection
        socket.getaddrinfo = getaddrinfo
        if hub is not None:
            hub.HF_HUB_OFFLINE = hub_offline
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
