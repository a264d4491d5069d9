"""What a layer's new weights are initialised to: PyTorch's default initialiser, named with its bound, and what the
values are now (:func:`torchsurgeon.check_surgery` names them for new and re-initialised weights)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ("default_init", "observed")


def _fan_in(module: nn.Module) -> int:
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        return int(weight.shape[1] * math.prod(weight.shape[2:]))
    return 0


_NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


def default_init(module: nn.Module, param: str) -> str:
    """The initialiser PyTorch uses by default for ``module.<param>``.

    Parameters
    ----------
    module : nn.Module
        The layer.
    param : str
        The parameter's local name (``weight``, ``bias``, ``in_proj_weight``).

    Returns
    -------
    str
        A readable description with the bound computed for this layer.

    Examples
    --------
    >>> from torch import nn
    >>> default_init(nn.Linear(1000, 10), "weight")
    'kaiming_uniform_(a=√5): U(-0.0316, 0.0316)'
    >>> default_init(nn.Linear(1000, 10), "bias")
    'uniform: U(-0.0316, 0.0316) (±1/√fan_in)'
    >>> default_init(nn.BatchNorm2d(64), "weight")
    'ones'
    """
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.Bilinear)):
        fan_in = _fan_in(module)
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            w = module.weight
            fan_in = int(w.shape[1] * math.prod(w.shape[2:]))  # PyTorch computes fan_in on dim 1
        bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
        if param == "weight":
            return f"kaiming_uniform_(a=√5): U(-{bound:.4f}, {bound:.4f})"
        if param == "bias":
            return f"uniform: U(-{bound:.4f}, {bound:.4f}) (±1/√fan_in)"
    if isinstance(module, _NORMS):
        return {"weight": "ones", "bias": "zeros"}.get(param, "PyTorch default")
    if isinstance(module, nn.Embedding) and param == "weight":
        return "normal_(0, 1)"
    if isinstance(module, nn.MultiheadAttention):
        if param.endswith("bias"):
            return "zeros"
        return "xavier_uniform_"
    if isinstance(module, nn.PReLU):
        return f"constant {module.init if hasattr(module, 'init') else 0.25}"
    return f"set by {type(module).__name__}.__init__ (not a torch.nn default)"


def observed(t: torch.Tensor) -> str:
    """What the values of ``t`` are now, for a surgery check's row: all zeros, all ones, or their statistics.

    Examples
    --------
    >>> observed(torch.zeros(3)), observed(torch.empty(3, device="meta"))
    ('observed: all zeros', '')
    """
    if t.device.type == "meta" or t.numel() == 0:
        return ""
    x = t.detach().double()
    if torch.all(x == 0):
        return "observed: all zeros"
    if torch.all(x == 1):
        return "observed: all ones"
    std = x.std().item() if x.numel() > 1 else 0.0
    return f"observed: mean {x.mean().item():.3g}, std {std:.3g}, max|w| {x.abs().max().item():.3g}"
