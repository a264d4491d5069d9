"""One walk of a model: its modules, parameters and buffers by qualified name.

:func:`torchsurgeon.trace.trace` walks the model's modules anyway; it makes
the index from that walk and hands it on with the trace, so that building
the graph (:func:`torchsurgeon.graph.build_graph`) and every analyzer after
it read one walk instead of making their own.

Examples
--------
>>> from torch import nn
>>> index = model_index(nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2)))
>>> list(index.params), list(index.buffers)
(['0.weight', '0.bias', '1.weight', '1.bias'], ['1.running_mean', '1.running_var', '1.num_batches_tracked'])
>>> index.held_by({"0", "1"})["1"]
(('1.weight', '1.bias'), ('1.running_mean', '1.running_var', '1.num_batches_tracked'))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ("ModelIndex", "model_index")


@dataclass(frozen=True)
class ModelIndex:
    """One walk of the model: its modules, parameters and buffers by qualified name.

    Names and order are those of ``named_modules`` / ``named_parameters`` /
    ``named_buffers`` with ``remove_duplicate=False`` (a shared module or tied
    weight appears under each of its names).  Made once per trace and read by
    every analyzer, instead of one walk each.
    """

    modules: Mapping[str, nn.Module]
    params: Mapping[str, nn.Parameter]
    buffers: Mapping[str, torch.Tensor]

    def held_by(self, paths: Iterable[str]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """``{module path: (parameter names, buffer names)}`` of each module and its submodules, in walk order."""
        out: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        nested: set[str] = set()
        own_params, own_buffers = _by_owner(self.params), _by_owner(self.buffers)
        for path in paths:
            module = self.modules.get(path)
            if module is None or module._modules:  # held by submodules too: collected below in one pass over the names
                nested.add(path)
                continue
            out[path] = (own_params.get(path, ()), own_buffers.get(path, ()))
        if nested:
            params, buffers = _by_holder(self.params, nested), _by_holder(self.buffers, nested)
            for path in nested:
                out[path] = (params[path], buffers[path])
        return out


def model_index(model: nn.Module, modules: Mapping[str, nn.Module] | None = None) -> ModelIndex:
    """The index of ``model``; ``modules`` is its ``named_modules(remove_duplicate=False)`` when already walked.

    Examples
    --------
    >>> from torch import nn
    >>> lin = nn.Linear(2, 2)
    >>> list(model_index(nn.Sequential(lin, lin)).params)  # a shared layer under each of its names
    ['0.weight', '0.bias', '1.weight', '1.bias']
    """
    if modules is None:
        modules = dict(model.named_modules(remove_duplicate=False))
    params: dict[str, nn.Parameter] = {}
    buffers: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        dot = prefix + "." if prefix else ""
        for name, p in module._parameters.items():
            if p is not None:
                params[dot + name] = p
        for name, b in module._buffers.items():
            if b is not None:
                buffers[dot + name] = b
    return ModelIndex(modules, params, buffers)


def _by_owner(named: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """``{module path: qualified names of its own parameters (or buffers)}``, in walk order: one pass over the
    names (reading each module's ``_parameters`` costs more)."""
    out: dict[str, list[str]] = {}
    for name in named:
        owner = name.rpartition(".")[0]
        held = out.get(owner)
        if held is None:
            out[owner] = [name]
        else:
            held.append(name)
    return {k: tuple(v) for k, v in out.items()}


def _by_holder(named: Mapping[str, object], paths: set[str]) -> dict[str, tuple[str, ...]]:
    """``{module path: qualified names held by it or its submodules}``, in walk order."""
    out: dict[str, list[str]] = {t: [] for t in paths}
    holders: dict[str, list[str]] = {}  # module path -> the paths at or above it
    for name in named:
        owner = name.rpartition(".")[0]
        above = holders.get(owner)
        if above is None:
            above = []
            path = owner
            while True:
                if path in paths:
                    above.append(path)
                if not path:
                    break
                path = path.rpartition(".")[0]
            holders[owner] = above
        for held in above:
            out[held].append(name)
    return {k: tuple(v) for k, v in out.items()}
