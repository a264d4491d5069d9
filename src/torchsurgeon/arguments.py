"""The arguments of a model's ``forward``: which ones an input spec gives tensors, and what the others are traced with.

:class:`ExampleInputs` are the tensors an input spec stands for, by argument
name (:func:`input_dtype_for` gives inputs given by shape their dtype).

:func:`torchsurgeon.trace.trace` traces ``forward`` with a tensor for each
argument the input spec fills and fixes the others at their defaults
(``mask=None``; ``*args`` and ``**kwargs`` empty; ``use_cache=False``), which
is what calling ``model(x)`` does.  A ``forward`` argument given a dict of
tensors (``{"added_cond_kwargs": {"text_embeds": (16,)}}``) and each tensor
given through ``*args`` (more shapes than positional arguments) are inputs of
their own (:func:`input_paths`), named by
:func:`~torchsurgeon.shapespec.input_name`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Union

import networkx as nx
import torch
import torch.fx
from torch import nn

from .errors import InputError, TraceError, close_names
from .inputdtypes import input_dtype_for
from .shapespec import (
    InputSpec,
    TypedShape,
    check_shape,
    input_name,
    is_tensor_list,
    nested_inputs,
    normalize_input,
    not_an_input,
)
from .wrappers import instance_forward

__all__ = (
    "INPUT_PATH",
    "NO_CACHE",
    "SIMPLE_DEFAULTS",
    "ExampleInputs",
    "InputNames",
    "InputPaths",
    "check_graph",
    "check_input",
    "check_input_names",
    "forward_inputs",
    "forward_parameters",
    "fx_name",
    "grouped_inputs",
    "input_paths",
    "into_var_keyword",
    "keyword_inputs",
    "layer_names",
    "one_or_more",
    "own_arguments",
    "placeholders",
    "required_arguments",
    "simple_value",
    "specialisation",
    "tensor_inputs",
    "trace_options",
    "traced_paths",
    "without_caches",
)

InputNames = Union[int, Iterable[Union[str, tuple[str, Union[str, int]]]], None]
"""Which ``forward`` arguments get tensors: the first N positional ones (``*args`` past them), these names (a
``(name, key)`` pair for each tensor of an argument given a dict, ``(name, index)`` of one given a list), or
(``None``) the first."""

InputPaths = Mapping[str, tuple[str, Union[str, int]]]
"""Inputs that are part of one ``forward`` argument, by input name: ``(argument, key)`` for a tensor of a dict,
``(argument, index)`` for one of ``*argument``."""

INPUT_PATH = "torchsurgeon_input_path"
"""The ``node.meta`` key of a traced input that is part of one argument: its ``(argument, key or index)``."""

SIMPLE_DEFAULTS = (type(None), bool, int, float, str)
"""Default values a trace fixes an argument at (fx records no assertion for them)."""

NO_CACHE = {"use_cache": False}
"""transformers' forward argument that builds a key/value cache object: a cache for generation is not a layer."""


def simple_value(value: object) -> bool:
    """Whether a concrete argument, or a default, is fixed in the trace as it is: a bool, number, string or None, or
    a list, tuple or dict of them (torchgeo's DOFA takes its ``wavelengths`` as a list of floats; torch.fx would make
    an input and an assertion of each item; x-transformers' ``token_emb_kwargs = dict()``, handed on as
    ``**token_emb_kwargs``, was made an input, which fx cannot unpack).

    Examples
    --------
    >>> simple_value([0.665, 0.56, 0.49]), simple_value((1, None, "a")), simple_value([torch.ones(1)])
    (True, True, False)
    >>> simple_value({}), simple_value({"scale": 2.0}), simple_value({"mask": torch.ones(1)})
    (True, True, False)
    """
    if type(value) in (list, tuple):
        return all(simple_value(v) for v in value)  # type: ignore[attr-defined]
    if type(value) is dict:
        return all(type(k) is str and simple_value(v) for k, v in value.items())  # type: ignore[attr-defined]
    return type(value) in SIMPLE_DEFAULTS


def _is_cache(value: Any) -> bool:
    """Whether ``value`` is a transformers key/value cache (``DynamicCache``, ``EncoderDecoderCache``...)."""
    return any(k.__name__ == "Cache" and k.__module__ == "transformers.cache_utils" for k in type(value).__mro__)


def without_caches(output: Any) -> Any:
    """A ``forward``'s output without the transformers cache objects it holds: None in a tuple's place, no key in a
    mapping (a ``ModelOutput`` becomes a dict, as torch.fx records it).

    A model given a cache it did not build returns it even with ``use_cache=False`` (peft's prefix tuning passes
    its prefix as a ``DynamicCache``): its keys and values are in the graph where attention reads them, the object
    itself is no output torch.fx can record, and a cache for generation is not a layer.

    Examples
    --------
    >>> without_caches((1, {"logits": 2}))
    (1, {'logits': 2})
    """
    if isinstance(output, dict) and any(_is_cache(v) for v in output.values()):
        return {k: v for k, v in output.items() if not _is_cache(v)}
    if type(output) in (tuple, list) and any(_is_cache(v) for v in output):
        return type(output)(None if _is_cache(v) else v for v in output)
    return output


def tensor_inputs(spec: Any) -> InputNames:
    """The ``forward`` arguments an input spec gives tensors to, for :func:`trace`'s ``inputs``.

    A mapping names them (a ``(name, key)`` pair for each tensor of an
    argument given a dict); a tuple of shapes (or tensors) gives one per
    leading positional argument, then per entry of ``*args``; anything else
    is one input.

    Examples
    --------
    >>> tensor_inputs((3, 224, 224)), tensor_inputs(((3, 8, 8), (1, 8, 8))), tensor_inputs({"mask": (1, 8, 8)})
    (1, 2, ('mask',))
    >>> tensor_inputs({"sample": (4, 8, 8), "added_cond_kwargs": {"text_embeds": (16,)}})
    ('sample', ('added_cond_kwargs', 'text_embeds'))
    """
    if isinstance(spec, Mapping):
        return _named_inputs(spec)
    if (
        isinstance(spec, (list, tuple))
        and spec
        and all(isinstance(s, (list, tuple, torch.Size, torch.Tensor, TypedShape)) for s in spec)
    ):
        return len(spec)
    return 1


def _named_inputs(spec: Mapping[Any, Any]) -> tuple[str | tuple[str, str | int], ...]:
    """:func:`tensor_inputs` of a mapping, its shapes checked (a list of tensors: InputError before tracing)."""
    names: list[str | tuple[str, str | int]] = []
    for name, value in spec.items():
        listed = is_tensor_list(value)  # a list of tensors (SlowFast's pathways): one input per entry
        nested = isinstance(value, Mapping) or listed
        for flat, item in (nested_inputs(str(name), value) if nested else {str(name): value}).items():
            if isinstance(item, (list, tuple)):
                check_shape(item, f"input {flat!r}", scalar=True)
        keys: list[str | int] = list(range(len(value))) if listed else [str(key) for key in value] if nested else []
        names.extend([(str(name), key) for key in keys] if nested else [str(name)])
    return tuple(names)


def check_input(model: nn.Module, spec: Any) -> dict[str, Any]:
    """The input spec checked as :func:`~torchsurgeon.paramcount` checks it: its names
    (:func:`check_input_names`), then its shapes (:func:`~torchsurgeon.shapespec.normalize_input`); returns the
    normalised spec by input name.  Every entry point taking an ``input`` calls it first.

    Raises
    ------
    InputError
        Naming the input, the bad value and what it takes.

    Examples
    --------
    >>> from torch import nn
    >>> check_input(nn.Linear(2, 2), [2])
    {'input': (2,)}
    >>> check_input(nn.Linear(2, 2), "2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: input shape: expected a shape such as (3, 224, 224), got '2' — ...
    """
    check_input_names(model, spec)
    return normalize_input(spec, forward_inputs(model, spec))


def check_graph(value: Any, function: str, call: str) -> None:
    """Refuse what an analyzer over the graph was given in its place (a model, a trace, a shape): ``function`` takes
    a graph of :func:`~torchsurgeon.graph.build_graph` (``build_graph`` itself a trace); ``call`` is the call that
    makes it from a model.

    Raises
    ------
    InputError
        Naming what was given and the call that makes what the function takes.

    Examples
    --------
    >>> from torch import nn
    >>> check_graph(nn.Linear(2, 2), "count_params", "count_params(build_graph(trace(model)))")
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: count_params takes the graph of a traced model, got the model Linear — \
count_params(build_graph(trace(model))), with from torchsurgeon.trace import trace; or paramcount(model, input)
    """
    traced = function == "build_graph"
    if isinstance(value, nx.DiGraph) != traced and traced == hasattr(value, "graph_module"):
        return
    got = (
        f"the model {type(value).__name__}"
        if isinstance(value, nn.Module)
        else "a graph already built"
        if isinstance(value, nx.DiGraph)
        else "a trace, not its graph"
        if hasattr(value, "graph_module")
        else repr(value)[:80]
        if isinstance(value, (tuple, list, str, int, float))
        else f"a {type(value).__name__}"
    )
    raise InputError(
        f"{function} takes {'the trace of a model' if traced else 'the graph of a traced model'}, got {got} — "
        f"{call}, with from torchsurgeon.trace import trace; or paramcount(model, input)"
    )


def check_input_names(model: nn.Module, spec: Any) -> None:
    """Refuse an input spec's name that is no argument of ``model.forward`` (a typo: ``pixel_value``), or more shapes
    given in order than ``forward`` takes.

    A name ``forward`` would pass to its ``**kwargs`` is refused only when it
    is close to one of its own arguments (``forward(pixel_values=None, **kwargs)``
    given ``pixel_value``), since ``**kwargs`` may read any name.

    Raises
    ------
    InputError
        Naming the arguments, the closest one and the spec with it.

    Examples
    --------
    >>> from torch import nn
    >>> check_input_names(nn.Linear(2, 2), {"inputs": (2,)})
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: input 'inputs' is not an argument of forward — did you mean 'input'? \
give {'input': (2,)}; the inputs are ['input']
    """
    if not isinstance(spec, Mapping):
        if isinstance(count := tensor_inputs(spec), int) and count > 1:  # more shapes than forward takes: refused
            normalize_input(spec, forward_inputs(model, spec))  # before a trace fails on them (a list's entries)
        return
    params = forward_parameters(model)
    if not params:  # no signature to read
        return
    own = own_arguments(params)
    var = {p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    anything = any(p.kind == p.VAR_KEYWORD for p in params)
    for name, value in spec.items():
        name = str(name)
        if name in own or name.lstrip("*") in var:
            continue
        if not anything or close_names(name, [n for n in own if n not in spec], cutoff=0.8):
            raise not_an_input(name, value, own)


def one_or_more(value: Any) -> tuple[Any, ...]:
    """The entries of an argument that takes a list (``leaf_modules``, ``autowrap_functions``), given one entry
    alone or several: a string or a class is one entry, not the letters or whatever iterating it gives.

    Examples
    --------
    >>> from torch import nn
    >>> one_or_more("conv"), one_or_more(nn.Conv2d), one_or_more(["conv", nn.Conv2d]), one_or_more(())
    (('conv',), (<class 'torch.nn.modules.conv.Conv2d'>,), ('conv', <class 'torch.nn.modules.conv.Conv2d'>), ())
    """
    if isinstance(value, (str, type)) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


def layer_names(layer: Any, *, several: bool = True) -> list[str]:
    """The layers a surgery's ``layer=`` names: a qualified name as ``model.named_modules()`` gives it
    (``'layer1.0.conv1'``), an int standing for the name of a Sequential's layer (``4`` is ``'4'``), or (with
    ``several``) a list of them, each once.  Whether the model has them is the surgery's to say
    (:func:`~torchsurgeon.surgery.no_such_layer`).

    Raises
    ------
    InputError
        Naming the value and what ``layer`` takes.

    Examples
    --------
    >>> layer_names("fc"), layer_names(4), layer_names(["0", 3])
    (['fc'], ['4'], ['0', '3'])
    >>> layer_names(["4"], several=False)
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: layer=['4'] — give one layer's name as model.named_modules() gives it, e.g. \
layer='4'
    """
    items = [layer] if isinstance(layer, (str, int)) else list(layer) if isinstance(layer, (list, tuple)) else None
    names = [str(x) for x in items or () if isinstance(x, (str, int)) and not isinstance(x, bool)]
    if items is not None and len(names) == len(items) and names and (several or isinstance(layer, (str, int))):
        if len(set(names)) == len(names):
            return names
        raise InputError(f"layer={layer!r} names a layer twice — name each once: layer={list(dict.fromkeys(names))!r}")
    if several and items == []:
        raise InputError(
            "layer=[] names no layer — name one, or leave layer=None to find the layers that read the input"
        )
    one = "one layer's name" if not several else "a layer's name (or a list of names)"
    example = repr(names[0]) if names else "'4'"
    raise InputError(f"layer={layer!r} — give {one} as model.named_modules() gives it, e.g. layer={example}")


def forward_inputs(model: nn.Module, spec: Any) -> list[str]:
    """The names of the inputs an input spec can fill, in order (see :func:`tensor_inputs`).

    ``forward``'s positional arguments, then one per entry of its ``*args``
    that the spec gives; each tensor of an argument given a dict by its
    :func:`~torchsurgeon.shapespec.input_name`.

    Examples
    --------
    >>> from torch import nn
    >>> forward_inputs(nn.Linear(2, 2), (2,)), forward_inputs(nn.Linear(2, 2), {"mask": (1,)})
    (['input'], ['mask'])
    >>> forward_inputs(nn.Linear(2, 2), {"cond": {"time_ids": (6,)}})
    ['cond_time_ids']
    """
    if isinstance(spec, Mapping):
        return [name if isinstance(name, str) else input_name(*name) for name in _named_inputs(spec)]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in forward_parameters(model) if p.kind in kinds] + list(
        input_paths(model, tensor_inputs(spec))
    )


def input_paths(model: nn.Module, inputs: InputNames) -> dict[str, tuple[str, str | int]]:
    """The inputs that are part of one ``forward`` argument: ``(argument, key)`` for a tensor of an argument given a
    dict, ``(argument, index)`` for an entry of ``*argument`` (``inputs`` past the positional arguments).

    Examples
    --------
    >>> from torch import nn
    >>> class Sum(nn.Module):
    ...     def forward(self, x, *rest):
    ...         return x + sum(rest)
    >>> input_paths(Sum(), 3), input_paths(Sum(), ("x", ("cond", "time_ids")))
    ({'rest_0': ('rest', 0), 'rest_1': ('rest', 1)}, {'cond_time_ids': ('cond', 'time_ids')})
    """
    if inputs is not None and not isinstance(inputs, int):
        return {input_name(*name): name for name in inputs if not isinstance(name, str)}
    params = forward_parameters(model)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
    extra = (1 if inputs is None else inputs) - len(positional)
    return {input_name(var, i): (var, i) for i in range(extra)} if var is not None else {}


def grouped_inputs(values: Mapping[str, Any], paths: InputPaths) -> dict[str, Any]:
    """Values by input name regrouped by ``forward`` argument (see :func:`input_paths`): a dict for an argument
    given one, a list for an argument given a list, or for ``*args``; the other values as they are.

    Examples
    --------
    >>> grouped_inputs({"x": 1, "rest_0": 2, "cond_t": 3}, {"rest_0": ("rest", 0), "cond_t": ("cond", "t")})
    {'x': 1, 'rest': [2], 'cond': {'t': 3}}
    """
    out: dict[str, Any] = {}
    entries: dict[str, dict[int, Any]] = {}
    for name, value in values.items():
        argument, key = paths.get(name, (name, None))
        if isinstance(key, int):
            entries.setdefault(argument, {})[key] = value
            out.setdefault(argument, [])
        elif key is not None:
            out.setdefault(argument, {})[key] = value
        else:
            out[name] = value
    for argument, by_index in entries.items():
        out[argument] = [by_index[i] for i in sorted(by_index)]
    return out


def traced_paths(graph_module: torch.fx.GraphModule) -> dict[str, tuple[str, str | int]]:
    """The traced inputs that are part of one ``forward`` argument (:data:`INPUT_PATH`), by input name.

    Examples
    --------
    >>> import torch
    >>> g = torch.fx.Graph()
    >>> t = g.placeholder("cond_t")
    >>> t.meta[INPUT_PATH] = ("cond", "t")
    >>> _ = g.output(t)
    >>> traced_paths(torch.fx.GraphModule(torch.nn.Module(), g))
    {'cond_t': ('cond', 't')}
    """
    nodes = graph_module.graph.nodes
    return {str(n.target): n.meta[INPUT_PATH] for n in nodes if n.op == "placeholder" and INPUT_PATH in n.meta}


def trace_options(
    model: nn.Module,
    submodules: Mapping[str, nn.Module],
    leaf_modules: Iterable[str | type[nn.Module]],
    autowrap_functions: Iterable[Callable[..., Any]],
    concrete_args: Any,
    inputs: InputNames,
) -> tuple[set[str], list[type[nn.Module]], tuple[Callable[..., Any], ...]]:
    """Check what :func:`torchsurgeon.trace.trace` is given: the leaf modules' names and classes, the functions
    to wrap; and that the model's ``forward`` is one fx can trace (:func:`instance_forward`).

    Raises
    ------
    InputError
        If a leaf names no submodule of ``submodules`` (the model's, by name), or an option has the wrong type.
    TraceError
        If the model's ``forward`` is set on it to something that is no method of it.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> trace_options(net, dict(net.named_modules()), ["0", nn.ReLU], (), None, None)
    ({'0'}, [<class 'torch.nn.modules.activation.ReLU'>], ())
    """
    names: set[str] = set()
    types_: list[type[nn.Module]] = []
    for leaf in one_or_more(leaf_modules):
        if isinstance(leaf, str):
            if leaf not in submodules:
                raise InputError(
                    f"leaf_modules names {leaf!r}, which is not a submodule of {type(model).__name__} — "
                    f"use a qualified name such as {next(iter(n for n in submodules if n), 'layer1.0')!r}"
                )
            names.add(leaf)
        elif isinstance(leaf, type) and issubclass(leaf, nn.Module):
            types_.append(leaf)
        else:
            raise InputError(
                f"leaf_modules entries must be names or nn.Module classes, got {leaf!r} — "
                "e.g. leaf_modules=['layer1.0', nn.MultiheadAttention]"
            )
    wrapped = one_or_more(autowrap_functions)
    for function in wrapped:
        if not callable(function):
            raise InputError(
                f"autowrap_functions entries must be functions forward calls, got {function!r} — "
                "e.g. autowrap_functions=[torch.flatten]"
            )
    if concrete_args is not None and not isinstance(concrete_args, Mapping):
        raise InputError(f"concrete_args must be a mapping of argument name to value, got {concrete_args!r}")
    if isinstance(inputs, bool) or (isinstance(inputs, int) and inputs < 0):
        raise InputError(f"inputs={inputs!r} — give the number of tensor inputs or their names")
    instance_forward(model, type(model).forward)  # a forward set on the model: one fx can trace
    return names, types_, wrapped


def forward_parameters(model: nn.Module) -> list[inspect.Parameter]:
    """The parameters of the ``forward`` that ``model(x)`` runs (:func:`instance_forward`) after ``self``, seen
    through decorators (``__wrapped__``).

    transformers 5 wraps ``forward`` in decorators taking ``(*args, **kwargs)``:
    the names that matter are the inner function's.  Empty when there is no
    signature to read.

    Examples
    --------
    >>> from torch import nn
    >>> [p.name for p in forward_parameters(nn.MultiheadAttention(4, 1))][:3]
    ['query', 'key', 'value']
    """
    try:
        sig = inspect.signature(inspect.unwrap(instance_forward(model, type(model).forward)))
    except (TypeError, ValueError, TraceError):
        return []
    return list(sig.parameters.values())[1:]  # drop self


def own_arguments(params: Iterable[inspect.Parameter]) -> list[str]:
    """The names of the arguments ``forward`` (its ``params``, :func:`forward_parameters`) takes as its own, in
    order: not ``*args`` or ``**kwargs``.

    Examples
    --------
    >>> own_arguments(inspect.signature(lambda x, *args, mask=None, **kwargs: 0).parameters.values())
    ['x', 'mask']
    """
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def required_arguments(model: nn.Module) -> list[str]:
    """The arguments ``model``'s forward requires, up to the first with a default (two images for an optical flow
    model); empty when its signature cannot be read.

    Examples
    --------
    >>> from torch import nn
    >>> class Flow(nn.Module):
    ...     def forward(self, image1, image2, num_flow_updates=12):
    ...         return image1 - image2
    >>> required_arguments(Flow()), required_arguments(nn.Linear(2, 2))
    (['image1', 'image2'], ['input'])
    """
    names = []
    for p in forward_parameters(model):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.default is not p.empty:
            break
        names.append(p.name)
    return names


def fx_name(p: inspect.Parameter) -> str:
    """fx's placeholder name of an argument: ``x``, ``*args``, ``**kwargs``.

    Examples
    --------
    >>> import inspect
    >>> [fx_name(p) for p in inspect.signature(lambda x, *args, **kwargs: 0).parameters.values()]
    ['x', '*args', '**kwargs']
    """
    if p.kind == inspect.Parameter.VAR_POSITIONAL:
        return f"*{p.name}"
    if p.kind == inspect.Parameter.VAR_KEYWORD:
        return f"**{p.name}"
    return p.name


def specialisation(model: nn.Module, inputs: InputNames, concrete_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fixed values for the ``forward`` arguments that receive no tensor.

    Keys follow fx's placeholder names: ``"mask"``, ``"*args"``, ``"**kwargs"``.
    Arguments named in ``concrete_args`` are left to the caller; a default
    that is not a plain value (a module, a tensor) is left to the trace.

    Parameters
    ----------
    model : nn.Module
        Whose ``forward`` is traced.
    inputs : InputNames
        The arguments that get tensors (see :func:`tensor_inputs`).
    concrete_args : mapping, optional
        Values the caller fixes.

    Returns
    -------
    dict[str, Any]
        The fixed value of every other argument with a plain default.

    Examples
    --------
    >>> from torch import nn
    >>> specialisation(nn.MultiheadAttention(4, 1), 3, None)["need_weights"]
    True
    """
    params = forward_parameters(model)
    given: set[str] = set()
    if inputs is None or isinstance(inputs, int):
        count = 1 if inputs is None else inputs
        positional = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        given.update(positional[:count])
        if count > len(positional):
            given.update(p.name for p in params if p.kind == p.VAR_POSITIONAL)
    else:
        given.update(name if isinstance(name, str) else name[0] for name in inputs)
    fixed = set(concrete_args or ())
    out: dict[str, Any] = {}
    for p in params:
        if p.name in given or p.name in fixed:
            continue
        if p.kind == p.VAR_KEYWORD and f"**{p.name}" not in fixed:
            # a transformers model taking use_cache through **kwargs (Llava, BLIP-2): no cache built either, unless
            # forward passes it itself beside **kwargs (Mimi's encoder: `use_cache=use_streaming, **kwargs`)
            named = any(q.name in NO_CACHE for q in params) or _passes_keyword(model, *NO_CACHE)
            config: Any = getattr(model, "config", None)
            text = config.get_text_config() if hasattr(config, "get_text_config") else config  # Llava's text model
            cached = not named and getattr(text, "use_cache", None) is not None
            out[f"**{p.name}"] = dict(NO_CACHE) if cached else {}
        elif p.kind == p.VAR_POSITIONAL and f"*{p.name}" not in fixed:
            out[f"*{p.name}"] = ()
        elif p.name in NO_CACHE:  # a cache of keys and values for generation is not a layer: none is built
            out[p.name] = NO_CACHE[p.name]
        elif p.default is not p.empty and simple_value(p.default):
            out[p.name] = p.default
    return out


def _passes_keyword(model: nn.Module, name: str) -> bool:
    """Whether its ``forward`` (:func:`instance_forward`, seen through decorators) names ``name`` itself: the
    keyword names of its calls are among its code's constants (a tuple of them, or one string beside ``**kwargs``)."""
    try:
        code = getattr(inspect.unwrap(instance_forward(model, type(model).forward)), "__code__", None)
    except TraceError:
        return False
    return code is not None and any(c == name or (isinstance(c, tuple) and name in c) for c in code.co_consts)


class ExampleInputs(Mapping[str, torch.Tensor]):
    """``meta`` tensors for ``input`` by ``forward`` argument name (empty when the spec does not fit).

    Built on first use: only a forward that asks Python questions about
    shapes needs them (a plain torchvision or timm model never does).  A
    spec that does not fit is reported later, by shape propagation, with its
    own message.  Inputs given by shape get :func:`input_dtype_for` their name.

    Examples
    --------
    >>> from torch import nn
    >>> x = ExampleInputs(nn.Conv2d(3, 8, 3), (3, 32, 32), batch=2)["input"]
    >>> tuple(x.shape), x.dtype, x.device.type
    ((2, 3, 32, 32), torch.float32, 'meta')
    """

    def __init__(self, model: nn.Module, input: InputSpec, batch: int, ids: frozenset[str] = frozenset()) -> None:
        self._spec = (model, input, batch)
        self._ids = ids

    def as_ids(self, name: str) -> ExampleInputs:
        """These inputs with ``name`` as token ids (``torch.long``): an embedding read it (``trace`` tries again)."""
        return ExampleInputs(*self._spec, self._ids | {name})

    @functools.cached_property
    def _specs(self) -> dict[str, Any]:  # by name (normalize_input); empty when the spec does not fit
        model, input, _ = self._spec
        try:
            return normalize_input(input, forward_inputs(model, input))
        except (InputError, RuntimeError, TypeError, ValueError):
            return {}

    @functools.cached_property
    def by_name(self) -> frozenset[str]:
        """The inputs given by shape alone (no tensor, no ``TypedShape``): :func:`input_dtype_for` their name."""
        return frozenset(name for name, spec in self._specs.items() if not isinstance(spec, (torch.Tensor, TypedShape)))

    @functools.cached_property
    def _tensors(self) -> dict[str, torch.Tensor]:
        model, _, batch = self._spec
        try:
            return {
                name: spec
                if isinstance(spec, torch.Tensor)
                else spec.meta(batch)
                if isinstance(spec, TypedShape)
                else torch.empty(
                    (batch, *spec),
                    dtype=torch.long if name in self._ids else input_dtype_for(name, model),
                    device="meta",
                )
                for name, spec in self._specs.items()
            }
        except (InputError, RuntimeError, TypeError, ValueError):
            return {}

    @functools.cached_property
    def paths(self) -> dict[str, tuple[str, str | int]]:
        """The inputs that are part of one ``forward`` argument (:func:`input_paths`), for :func:`grouped_inputs`."""
        model, input, _ = self._spec
        try:
            return input_paths(model, tensor_inputs(input))
        except InputError:
            return {}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def keyword_inputs(params: list[inspect.Parameter], inputs: InputNames) -> tuple[str, ...]:
    """The arguments among ``inputs`` that ``forward`` (its ``params``) takes through its ``**kwargs``, as
    ``model(x, mask=m)`` passes them: a trace gives them there, so ``kwargs.get("mask")`` reads the input.

    Examples
    --------
    >>> params = list(inspect.signature(lambda x, **kwargs: 0).parameters.values())
    >>> keyword_inputs(params, ("x", "mask", ("cond", "t"), ("cond", "s"))), keyword_inputs(params[:1], ("x", "mask"))
    (('mask', 'cond'), ())
    """
    if isinstance(inputs, int) or inputs is None or not any(p.kind == p.VAR_KEYWORD for p in params):
        return ()
    own = set(own_arguments(params))
    given = (name if isinstance(name, str) else name[0] for name in inputs)
    return tuple(dict.fromkeys(name for name in given if name not in own))


def into_var_keyword(given: dict[str, Any], params: list[inspect.Parameter]) -> dict[str, Any]:
    """``concrete_args`` with the values for a ``forward(..., **kwargs)`` gathered under ``"**kwargs"``: names that
    are no argument of its own (transformers 5 takes ``output_hidden_states`` through ``**kwargs``), and a mapping
    given as ``kwargs`` or ``**kwargs``.

    Examples
    --------
    >>> import inspect
    >>> params = list(inspect.signature(lambda x, **kwargs: 0).parameters.values())
    >>> into_var_keyword({"output_hidden_states": True}, params)
    {'**kwargs': {'output_hidden_states': True}}
    """
    var = next((p.name for p in params if p.kind == p.VAR_KEYWORD), None)
    if var is None or not given:
        return given
    names = {p.name for p in params if p.kind != p.VAR_KEYWORD}
    gathered: dict[str, Any] = {}
    for key in (var, f"**{var}"):
        if isinstance(given.get(key), Mapping):
            gathered.update(given.pop(key))
    gathered.update((k, given.pop(k)) for k in [k for k in given if k not in names and not k.startswith("*")])
    if gathered:
        given[f"**{var}"] = gathered
    return given


def placeholders(graph_module: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
    """The placeholders of a traced graph by the name of the model input each stands for (``*args`` entries
    without their star), in order.

    Examples
    --------
    >>> from torch import nn
    >>> list(placeholders(torch.fx.symbolic_trace(nn.Linear(2, 2))))
    ['input']
    """
    return {str(n.target).lstrip("*"): n for n in graph_module.graph.nodes if n.op == "placeholder"}
