"""What a layer's new weights are initialised to: PyTorch's default initialiser, named with its bound, and what the
values are now (:func:`torchsurgeon.check_surgery` names them for new and re-initialised weights)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .errors import InputError, as_written, no_such_name

__all__ = ("default_init", "named_init", "observed")


def _fan_in(module: nn.Module) -> int:
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        return int(weight.shape[1] * math.prod(weight.shape[2:]))
    return 0


_NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


def _default(module: nn.Module, param: str) -> tuple[str, str, float]:
    """PyTorch's default initialiser of ``module.<param>``: its description, and its distribution as (kind, value):
    ``("uniform", bound)``, ``("normal", std)``, ``("constant", value)`` or ``("", 0.0)`` when unknown."""
    local = param.rpartition(".")[2]
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):  # every parameter, from the hidden size
        bound = 1 / math.sqrt(module.hidden_size) if module.hidden_size else 0.0
        return f"uniform: U(-{bound:.4f}, {bound:.4f}) (±1/√hidden_size)", "uniform", bound
    if isinstance(module, nn.Bilinear) and local in ("weight", "bias"):
        bound = 1 / math.sqrt(module.weight.shape[1])
        return f"uniform: U(-{bound:.4f}, {bound:.4f}) (±1/√in1_features)", "uniform", bound
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        fan_in = _fan_in(module)
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            w = module.weight
            fan_in = int(w.shape[1] * math.prod(w.shape[2:]))  # PyTorch computes fan_in on dim 1
        bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
        if local == "weight":
            return f"kaiming_uniform_(a=√5): U(-{bound:.4f}, {bound:.4f})", "uniform", bound
        if local == "bias":
            return f"uniform: U(-{bound:.4f}, {bound:.4f}) (±1/√fan_in)", "uniform", bound
    if isinstance(module, _NORMS):
        if local in ("weight", "bias"):
            return ("ones", "constant", 1.0) if local == "weight" else ("zeros", "constant", 0.0)
        return "PyTorch default", "", 0.0
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and local == "weight":
        padding = getattr(module, "padding_idx", None)
        return f"normal_(0, 1){f', row {padding} zeros' if padding is not None else ''}", "normal", 1.0
    if isinstance(module, nn.MultiheadAttention):
        if local in ("bias_k", "bias_v"):
            std = 1 / math.sqrt(module.embed_dim)
            return f"xavier_normal_: N(0, {std:.4f})", "normal", std
        if local.endswith("bias"):
            return "zeros", "constant", 0.0
        e = module.embed_dim
        bound = math.sqrt(6 / (e + 3 * e)) if local == "in_proj_weight" else math.sqrt(3 / e)
        return f"xavier_uniform_: U(-{bound:.4f}, {bound:.4f})", "uniform", bound
    if isinstance(module, nn.PReLU):
        value = float(module.init) if hasattr(module, "init") else 0.25
        return f"constant {value}", "constant", value
    return f"set by {type(module).__name__}.__init__ (not a torch.nn default)", "", 0.0


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

    Raises
    ------
    InputError
        When ``module`` is a class, not a layer, or has no parameter ``param``.
    """
    if not isinstance(module, nn.Module):
        got = f"the class {as_written(module)}" if isinstance(module, type) else repr(module)
        raise InputError(
            f"default_init takes a layer, got {got} — give a built one: default_init(nn.Linear(2, 2), {param!r})"
        )
    names = [n for n, _ in (*module.named_parameters(), *module.named_buffers())]
    if param not in names:
        hint = no_such_name(param, names, "parameters") if names else "it has none"
        raise InputError(f"{type(module).__name__} has no parameter {param!r} — {hint}")
    return _default(module, param)[0]


def named_init(module: nn.Module, param: str, t: torch.Tensor) -> str:
    """The initialiser of ``module.<param>`` as its values ``t`` show it: PyTorch's default when they fit it, else
    what they look like (a user's ``xavier_uniform_``, timm's ``trunc_normal_(std=.02)``, zeros), and the values.

    The default's distribution is checked against the values (a bound no value passes, a standard deviation
    within sampling error): a weight a user or a library re-initialised is never named as PyTorch's default.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) is not None
    True
    >>> layer = nn.Linear(256, 64)
    >>> named_init(layer, "weight", layer.weight).split(";")[0]
    'kaiming_uniform_(a=√5): U(-0.0625, 0.0625)'
    >>> _ = nn.init.xavier_uniform_(layer.weight)
    >>> print(named_init(layer, "weight", layer.weight).split(":")[0])
    not PyTorch's default (kaiming_uniform_(a=√5)
    >>> "like xavier_uniform_" in named_init(layer, "weight", layer.weight)
    True
    >>> _ = nn.init.zeros_(layer.bias)
    >>> print(named_init(layer, "bias", layer.bias))
    not PyTorch's default (uniform: U(-0.0625, 0.0625) (±1/√fan_in)): observed: all zeros (zeros_)
    """
    description, kind, value = _default(module, param)
    seen = observed(t)
    if not seen or not kind:
        return "; ".join(x for x in (description, seen) if x)
    x = t.detach().double().flatten()
    if _fits(x, kind, value):
        return f"{description}; {seen}"
    if bool(torch.all(x == x[0])):
        c = float(x[0])
        name = "zeros_" if c == 0 else "ones_" if c == 1 else f"constant_({c:.4g})"
        return f"not PyTorch's default ({description}): {seen} ({name})"
    guess = _looks_like(t, x)
    return f"not PyTorch's default ({description}): {seen}" + (f" — like {guess}" if guess else "")


def _fits(x: torch.Tensor, kind: str, value: float) -> bool:
    """Whether the values ``x`` (float64, flat) may come from the distribution ``(kind, value)``."""
    n = x.numel()
    if kind == "constant":
        return bool(torch.all(x == value))
    if n > 1 and bool(torch.all(x == x[0])):  # one value everywhere: no draw (a zeroed bias)
        return False
    std, top, tol = _spread(x)
    if kind == "uniform":
        if top > value * (1 + 1e-4) + 1e-12:
            return False
        return n < 20 or abs(std - value / math.sqrt(3)) <= tol * value / math.sqrt(3)
    if kind == "normal":
        return n < 20 or (abs(std - value) <= tol * value and (n < 100 or top / std > 2.0))
    return True


def _spread(x: torch.Tensor) -> tuple[float, float, float]:
    """The standard deviation and largest magnitude of the values ``x`` (float64, flat), and the relative
    tolerance a spread estimated from that many values gets."""
    n = x.numel()
    return (float(x.std()) if n > 1 else 0.0), float(x.abs().max()), max(0.1, 4 / math.sqrt(n))


def _looks_like(t: torch.Tensor, x: torch.Tensor) -> str:
    """The common initialiser the values of ``t`` fit best (from their spread and the tensor's fans), or "".

    Of the initialisers the values fit, the nearest is named; others are named beside it when they are closer
    to it than these values can tell apart (three standard errors of the spread estimated), as
    for a transposed convolution with few output channels, whose ``xavier_normal_`` and
    ``kaiming_normal_(mode='fan_out')`` differ by 1 %."""
    n = x.numel()
    if n < 20 or t.dim() < 2:
        return ""
    std, top, tol = _spread(x)
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(t)
    if top / std <= 1.8:  # a uniform draw: max|w| is its bound, short of it by about bound / n
        bounds = {
            "xavier_uniform_": math.sqrt(6 / (fan_in + fan_out)),
            "kaiming_uniform_(nonlinearity='relu')": math.sqrt(6 / fan_in),
            "kaiming_uniform_(mode='fan_out', nonlinearity='relu')": math.sqrt(6 / fan_out),
        }
        named = _nearest(bounds, top, tol, top / n, lambda b: f"U(-{b:.4f}, {b:.4f})")
        return named or f"a uniform draw U(-{top:.3g}, {top:.3g})"
    stds = {
        "xavier_normal_": math.sqrt(2 / (fan_in + fan_out)),
        "kaiming_normal_(nonlinearity='relu')": math.sqrt(2 / fan_in),
        "kaiming_normal_(mode='fan_out', nonlinearity='relu')": math.sqrt(2 / fan_out),
        "normal_/trunc_normal_(std=0.02)": 0.02,
        "normal_(std=0.01)": 0.01,
        "normal_(std=0.03)": 0.03,  # torchvision's SSDLite heads
        "normal_(std=0.001)": 0.001,
    }
    named = _nearest(stds, std, tol, std / math.sqrt(2 * n), lambda s: f"N(0, {s:.4g})")
    return named or f"a normal draw N(0, {std:.3g})"


def _nearest(candidates: dict[str, float], seen: float, tol: float, error: float, shown: Callable[[float], str]) -> str:
    """The candidate whose value is nearest ``seen`` within the relative tolerance ``tol``, named with
    ``shown(value)``, and after it, joined by "or", the others whose values differ from its by less than three
    times ``error`` (the standard error of ``seen``): the values cannot tell them apart.  "" when none is within
    ``tol``."""
    fits = sorted(
        ((abs(seen - value), name, value) for name, value in candidates.items() if abs(seen - value) <= tol * value),
        key=lambda fit: fit[0],
    )
    if not fits:
        return ""
    nearest = fits[0][2]
    return " or ".join(f"{name} {shown(value)}" for _, name, value in fits if abs(value - nearest) < 3 * error)


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
