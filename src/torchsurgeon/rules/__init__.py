"""Op rules: what torchsurgeon knows about each op, in one registry that users can extend.

For every op it knows, a rule gives the output from the call's arguments
(``meta`` tensors) without running the op, and its MACs and FLOPs.  Rules
never guess: outside the cases they compute exactly, the op runs on
``meta``.  Built-in rules are grouped by op family, one module each:

==================  =========================================================
``layers``          conv, linear, norms, embedding (they check the fit)
``activations``     activations, dropout, softmax, identity
``arithmetic``      operators, Python values, sizes, dtype conversions, clamp
``views``           flatten, view/reshape, permute, indexing, cat, pad, detach
``splits``          chunk, split, tensor_split, unbind
``reductions``      sum, prod, mean, var, std, amax, amin, max, min
``linalg``          matmul, bmm, F.linear, attention
``pooling``         max, average and adaptive pooling, interpolate/Upsample, grid_sample, unfold, deformable attention
``recurrent``       LSTM, GRU, RNN (shapes and MACs) and their cells (MACs; shapes run on meta)
``rearrange``       einops' ``rearrange``, ``repeat``, ``reduce``, ``Rearrange``, ``Reduce``; MONAI's Swin windows
``creation``        zeros, ones, empty, full, arange, linspace, meshgrid (masks, positions)
==================  =========================================================

Users add rules with :func:`register_rule` (they win over the built-ins and
over ``meta`` execution) and turn the built-ins off with
:func:`disabled_rules`.
"""

from __future__ import annotations

from . import (
    activations,
    arithmetic,
    creation,
    layers,
    linalg,
    pooling,
    rearrange,
    recurrent,
    reductions,
    splits,
    views,
)
from .registry import (
    FALLBACK,
    Call,
    Rule,
    disabled_rules,
    function_rule,
    method_rule,
    module_rule,
    register_rule,
    registered_rules,
    unregister_rule,
)

__all__ = (
    "FALLBACK",
    "Call",
    "Rule",
    "activations",
    "arithmetic",
    "creation",
    "disabled_rules",
    "function_rule",
    "layers",
    "linalg",
    "method_rule",
    "module_rule",
    "pooling",
    "rearrange",
    "recurrent",
    "reductions",
    "register_rule",
    "registered_rules",
    "splits",
    "unregister_rule",
    "views",
)
