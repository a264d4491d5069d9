"""The optimizer's state and step temporaries, for :func:`torchsurgeon.memory_plan`: known from its algorithm.

The state is what ``torch.optim`` allocates at the first step (SGD's momentum
buffers; Adam's and AdamW's ``exp_avg``, ``exp_avg_sq`` and ``step``), the
temporaries those of the step torch runs on the device (``foreach`` or one
parameter at a time); a sparse gradient (``nn.Embedding(sparse=True)``) as
torch's optimizers treat it.  Measured on torch 2.14's steps
(``tests/test_memory.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import InputError, check_option
from .records import OptimizerKind

__all__ = ("optimizer_bytes",)


_DEFAULTS: dict[OptimizerKind, dict[str, Any]] = {
    OptimizerKind.SGD: {"momentum": 0.0, "weight_decay": 0.0},
    OptimizerKind.MOMENTUM: {"momentum": 0.9, "weight_decay": 0.0},
    OptimizerKind.ADAM: {"weight_decay": 0.0, "amsgrad": False},
    OptimizerKind.ADAMW: {"weight_decay": 0.01, "amsgrad": False},
}


def _optimizer_kind(optimizer: Any) -> tuple[OptimizerKind, Callable[[nn.Parameter], Mapping[str, Any] | None]]:
    """The optimizer's kind and, per parameter, its options (None for a parameter it does not hold)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        kinds: tuple[tuple[type[torch.optim.Optimizer], OptimizerKind], ...] = (
            (torch.optim.AdamW, OptimizerKind.ADAMW),
            (torch.optim.Adam, OptimizerKind.ADAM),
            (torch.optim.SGD, OptimizerKind.SGD),
        )
        kind = next((k for cls, k in kinds if isinstance(optimizer, cls)), None)
        if kind is None:
            raise InputError(
                f"optimizer={type(optimizer).__name__}: its state is not known to memory_plan — give an SGD, Adam or "
                f"AdamW instance, or one of {[str(k) for k in OptimizerKind]}"
            )
        groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
        return kind, lambda p: groups.get(id(p))
    kind = check_option(optimizer, OptimizerKind, "optimizer", also=", or a torch.optim.SGD, Adam or AdamW instance")
    defaults = _DEFAULTS[kind]
    return kind, lambda p: defaults


def optimizer_bytes(
    optimizer: Any,
    params: list[tuple[nn.Parameter, int]],
    device: str,
    sparse: Mapping[int, tuple[str, int]] | None = None,
) -> tuple[str, int, int, str]:
    """(name, state bytes, step temporaries, what the notes say of sparse gradients) for the parameters that get a
    gradient, with their bytes; ``sparse``: by ``id`` of a parameter with a sparse gradient, its layer and the
    gradient's bytes.

    The state is what ``torch.optim`` allocates at the first step: SGD a
    momentum buffer per parameter when momentum is not 0; Adam and AdamW
    ``exp_avg`` and ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad) in
    the parameter's dtype and a scalar ``step`` tensor.  The temporaries are
    those of the step torch runs on ``device``: ``foreach`` when the optimizer
    says so, or says nothing on a GPU (``foreach=None``: torch's
    ``_default_to_fused_or_foreach`` picks it on CUDA, not on a CPU), each a list the size
    of the parameters: Adam's ``sqrt(exp_avg_sq)`` (its negated or decayed
    gradients, ``maximize`` or coupled weight decay, are freed before it);
    SGD's negated or decayed gradients.  With ``foreach=False``, one parameter
    at a time, in the order of its group: Adam's ``sqrt`` and its quotient,
    beside the gradient copy and the previous parameter's quotient (a local
    of the loop, freed when the next one is assigned); SGD's chain of
    gradient copies (``maximize``, weight decay, ``nesterov``), two at a
    time, ``maximize`` negating beside the previous parameter's copy.  None
    when ``fused``.  Measured on torch 2.14's steps.

    A sparse gradient (``nn.Embedding(sparse=True)``): SGD's momentum buffer is
    a clone of it at the first step (torch then adds each step's gradient
    uncoalesced: it grows), ``maximize`` negates it and ``nesterov`` adds the
    buffer (twice its size); Adam and AdamW refuse it, so by name its state is
    ``torch.optim.SparseAdam``'s (dense ``exp_avg`` and ``exp_avg_sq``, an int
    ``step``; its step holds about 4 gradients), given as an instance they
    raise, as SGD with weight decay does.

    Examples
    --------
    >>> w = nn.Parameter(torch.zeros(10, 10))  # 400 bytes
    >>> optimizer_bytes("adamw", [(w, 400)], "cuda")  # exp_avg, exp_avg_sq, a 4-byte step; foreach's sqrt list
    ('adamw', 804, 400, '')
    >>> optimizer_bytes("sgd", [(w, 400)], "cpu")  # no momentum: no state, no temporaries
    ('sgd', 0, 0, '')
    """
    kind, options = _optimizer_kind(optimizer)
    name = str(kind) if isinstance(optimizer, str) else type(optimizer).__name__
    scalar = torch.empty((), dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32)
    state = temporaries = 0
    lists = 0  # temporary lists the foreach step allocates, each the size of the parameters
    one_at_a_time = 0  # the most the one-at-a-time step holds at once
    previous: dict[int, int] = {}  # per group: the bytes of the parameter stepped last (its loop's locals live on)
    sparse_steps = [0]  # temporaries of the steps over sparse gradients
    said = ""
    if isinstance(optimizer, torch.optim.Optimizer):  # torch steps each group's parameters in its order
        order = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
        params = sorted(params, key=lambda item: order.get(id(item[0]), -1))
    for p, nbytes in params:
        group = options(p)
        if group is None:
            continue
        decay = bool(group.get("weight_decay", 0.0))
        maximize = bool(group.get("maximize", False))
        layer, grad = (sparse or {}).get(id(p), ("", 0))
        sgd = kind in (OptimizerKind.SGD, OptimizerKind.MOMENTUM)
        if layer:  # by name, Adam is SparseAdam for it; an Adam instance, or SGD with weight decay, would raise
            _check_sparse(name, layer, not decay if sgd else isinstance(optimizer, str))
            if sgd:
                momentum = bool(group.get("momentum", 0.0))
                state += grad if momentum else 0
                sparse_steps.append(grad * (int(maximize) + 2 * int(momentum and bool(group.get("nesterov")))))
                said = said or (_SPARSE_MOMENTUM if momentum else "")
            else:
                state += 2 * nbytes
                sparse_steps.append(4 * grad)
                said = _SPARSE_ADAM
            continue
        before, previous[id(group)] = previous.get(id(group), 0), nbytes
        if sgd:
            state += nbytes if group.get("momentum", 0.0) else 0
            lists = max(lists, int(decay or maximize))
            copies = min(2, int(maximize) + int(decay) + int(bool(group.get("nesterov"))))
            held = max(copies * nbytes, nbytes + before if maximize else 0)  # -grad made beside the last one's copy
        else:
            state += (3 if group.get("amsgrad") else 2) * nbytes + scalar.element_size()
            decoupled = kind == OptimizerKind.ADAMW or bool(group.get("decoupled_weight_decay", False))
            lists = max(lists, 1)
            held = (2 + int(maximize or (decay and not decoupled))) * nbytes + before  # + the last one's denom
        if group.get("fused"):
            continue
        temporaries += nbytes
        one_at_a_time = max(one_at_a_time, held)
    groups = optimizer.param_groups if isinstance(optimizer, torch.optim.Optimizer) else [_DEFAULTS[kind]]
    foreach = all(
        g["foreach"] if g.get("foreach") is not None else device == "cuda" and not g.get("differentiable")
        for g in groups
    )
    if foreach and kind in (OptimizerKind.SGD, OptimizerKind.MOMENTUM):  # one step over every list, sparse included
        return name, state, lists * temporaries + sum(sparse_steps), said
    return name, state, max(lists * temporaries if foreach else one_at_a_time, *sparse_steps), said


_SPARSE_MOMENTUM = (
    "SGD's momentum buffer for them is planned after the first step: torch adds each step's gradient to it "
    "uncoalesced, so it grows by about one gradient a step (past the dense weight's size in time)"
)
_SPARSE_ADAM = (
    "Adam and AdamW refuse sparse gradients: their state is planned as torch.optim.SparseAdam's "
    "(dense exp_avg and exp_avg_sq)"
)


def _check_sparse(optimizer: str, layer: str, accepted: bool) -> None:
    """Raise when the optimizer refuses the sparse gradient of ``layer``, as its real step would."""
    if not accepted:
        raise InputError(
            f"optimizer={optimizer}: {layer} (sparse=True) gets a sparse gradient, which its step refuses (Adam and "
            f"AdamW do, SGD with weight_decay does) — plan optimizer='adam' (SparseAdam's state for {layer}) or "
            f"'sgd-momentum', or set model.{layer}.sparse = False"
        )
