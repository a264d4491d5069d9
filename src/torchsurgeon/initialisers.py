"""What a layer's new weights are initialised to: PyTorch's default initialiser, named with its bound, the model's own
(a Hugging Face model's ``_init_weights``, which ``from_pretrained`` runs on the weights a checkpoint lacks), and what
the values are now (:func:`torchsurgeon.check_surgery` names them for new and re-initialised weights)."""

from __future__ import annotations

import copy
import functools
import inspect
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import InputError, as_written, no_such_name

__all__ = ("OwnInit", "default_init", "from_mean", "named_init", "observed", "own_inits")


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


def named_init(module: nn.Module, param: str, t: torch.Tensor, own: OwnInit | None = None) -> str:
    """The initialiser of ``module.<param>`` as its values ``t`` show it: the model's own (``own``, from
    :func:`own_inits`) or PyTorch's default when they fit it, else what they look like (a user's
    ``xavier_uniform_``, timm's ``trunc_normal_(std=.02)``, zeros), and the values.

    Each initialiser's distribution is checked against the values (a bound no value passes, a standard deviation
    within sampling error): a weight a user or a library re-initialised is never named as the default.

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

    A Hugging Face model's head, as ``from_pretrained`` draws it (``normal_(0, initializer_range)``):

    >>> own = OwnInit("normal_(0, 0.02)", "BertForSequenceClassification._init_weights", "normal", 0.0, 0.02)
    >>> _ = nn.init.normal_(layer.weight, std=0.02)
    >>> named_init(layer, "weight", layer.weight, own).split(";")[0]
    'normal_(0, 0.02) (BertForSequenceClassification._init_weights)'
    """
    description, kind, value = _default(module, param)
    seen = observed(t)
    if own is not None:
        theirs = f"{own.description} ({own.by})"
        if not seen or not own.kind:
            return "; ".join(x for x in (theirs, seen) if x)
        x = t.detach().double().flatten()
        if _fits_own(x, own, t.dtype):
            return f"{theirs}; {seen}"
        if kind and _fits(x, kind, value):
            return f"{description}: PyTorch's default, not {own.description} ({own.by}); {seen}"
    elif not seen or not kind:
        return "; ".join(x for x in (description, seen) if x)
    else:
        x = t.detach().double().flatten()
        if _fits(x, kind, value):
            return f"{description}; {seen}"
    head = f"not PyTorch's default ({description})"
    if own is not None:
        theirs = f"{own.description} ({own.by})"
        head = f"neither {theirs} nor PyTorch's default ({description})" if kind else f"not {theirs}"
    if bool(torch.all(x == x[0])):
        c = float(x[0])
        name = "zeros_" if c == 0 else "ones_" if c == 1 else f"constant_({c:.4g})"
        return f"{head}: {seen} ({name})"
    guess = _looks_like(t, x)
    return f"{head}: {seen}" + (f" — like {guess}" if guess else "")


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


@dataclass(frozen=True)
class OwnInit:
    """What a model's own initialiser (a Hugging Face model's ``_init_weights``) draws for one parameter.

    Attributes
    ----------
    description : str
        The draw as code writes it: ``normal_(0, 0.02)``, ``trunc_normal_(0, 0.02, a=-2, b=2)``, ``zeros_``.
    by : str
        Whose initialiser: ``ViTForImageClassification._init_weights``.
    kind : str
        ``normal``, ``trunc_normal``, ``uniform``, ``constant``, or ``""`` when its values cannot be checked
        (copied from values the initialiser computes).
    mean, std, low, high : float
        The distribution: a normal's mean and standard deviation (before truncation), the bounds of a truncated
        normal or a uniform draw; a constant's value is ``mean``.
    """

    description: str
    by: str
    kind: str
    mean: float = 0.0
    std: float = 0.0
    low: float = -math.inf
    high: float = math.inf


_PUBLIC = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)
_INIT_CODES = {getattr(nn.init, n).__code__: n for n in _PUBLIC}
"""torch.nn.init's initialisers by their code: a write inside one of them is named by it and its arguments."""

_Op = tuple[str, bool, dict[str, Any]]
"""One write to a parameter: the initialiser (or the tensor method) that made it, whether it covers the whole
parameter, and its arguments (with the parameter's fans, and whose ``_init_weights`` ran it)."""


class _Recorder(TorchFunctionMode):
    """Records the writes an initialiser makes to the stand-ins of some parameters, and skips them: each stand-in is
    a zero expanded to its parameter's shape (no memory), whose single storage tells any alias of it (``.data``, a
    row) from other tensors.  A write inside a ``torch.nn.init`` function is recorded as that function with its
    arguments; other writes (``weight.data.normal_(0, 0.02)``) as the tensor method."""

    def __init__(self, stand_ins: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.shapes = {t.untyped_storage().data_ptr(): (name, t) for name, t in stand_ins.items()}
        self.ops: dict[str, list[_Op]] = {}
        self.by = ""  # whose initialiser runs now
        self.calls: list[FrameType] = []  # the torch.nn.init calls recorded (one call writes several times)

    def _target(self, t: object) -> tuple[str, torch.Tensor, bool] | None:
        """The parameter ``t`` is a stand-in of or a part of, its stand-in, and whether ``t`` is the whole of it."""
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return None
        found = self.shapes.get(t.untyped_storage().data_ptr())
        return None if found is None else (found[0], found[1], t.shape == found[1].shape)

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        public = getattr(func, "__module__", "") == "torch.nn.init"
        writes = public or name in ("__setitem__", "__set__") or (name.endswith("_") and not name.startswith("__"))
        first = args[0] if args else kwargs.get("tensor")
        target = self._target(first) if writes else None
        if target is None:
            return func(*args, **kwargs)
        param, stand_in, whole = target
        frame: FrameType | None = sys._getframe(1)
        call: FrameType | None = None
        for _ in range(12):  # the outermost torch.nn.init function this write is made in, with its arguments
            if frame is None:
                break
            if frame.f_code in _INIT_CODES:
                call = frame
            frame = frame.f_back
        if public:  # a torch.nn.init function that hands itself to the mode: its arguments as given
            found: dict[str, Any] = dict(zip(_arguments(func), args)) | kwargs
        elif call is not None:
            name, found = _INIT_CODES[call.f_code], dict(call.f_locals)
            if any(call is seen for seen in self.calls):
                return first
            self.calls.append(call)
        else:
            found = {"args": args[1:], **kwargs}
        found |= {"by": self.by, "fans": nn.init._calculate_fan_in_and_fan_out(stand_in) if stand_in.dim() > 1 else ()}
        self.ops.setdefault(param, []).append((name if public or call is not None else f"Tensor.{name}", whole, found))
        return first


@functools.cache
def _arguments(func: Callable[..., Any]) -> tuple[str, ...]:
    """The names of a ``torch.nn.init`` function's arguments, in order."""
    return tuple(inspect.signature(func).parameters)


def _draw(ops: Sequence[_Op]) -> OwnInit | None:
    """What the recorded writes to one parameter leave in it: the last one over the whole of it."""
    found: OwnInit | None = None
    for op, whole, a in ops:
        if not whole:
            continue  # a row (an embedding's padding row zeroed): the rest is as drawn
        by, given = a["by"], a.get("args", ())
        if op in ("normal_", "Tensor.normal_"):
            mean, std = (
                float(a.get("mean", given[0] if given else 0.0)),
                float(a.get("std", given[1] if len(given) > 1 else 1.0)),
            )
            found = OwnInit(f"normal_({mean:g}, {std:.4g})", by, "normal", mean, std)
        elif op == "trunc_normal_":
            mean, std, low, high = (float(a[k]) for k in ("mean", "std", "a", "b"))
            found = OwnInit(
                f"trunc_normal_({mean:g}, {std:.4g}, a={low:.4g}, b={high:.4g})",
                by,
                "trunc_normal",
                mean,
                std,
                low,
                high,
            )
        elif op in ("uniform_", "Tensor.uniform_"):
            low = float(a.get("a", a.get("from", given[0] if given else 0.0)))
            high = float(a.get("b", a.get("to", given[1] if len(given) > 1 else 1.0)))
            found = OwnInit(f"uniform_({low:.4g}, {high:.4g})", by, "uniform", low=low, high=high)
        elif op in ("kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_") and a["fans"]:
            fan_in, fan_out = a["fans"]
            if op.startswith("kaiming"):
                slope, mode, nonlinearity = (
                    float(a.get("a", 0)),
                    a.get("mode", "fan_in"),
                    a.get("nonlinearity", "leaky_relu"),
                )
                std = nn.init.calculate_gain(nonlinearity, slope) / math.sqrt(fan_in if mode == "fan_in" else fan_out)
                how = f"a={slope:.4g}, mode={mode!r}, nonlinearity={nonlinearity!r}"
            else:
                std = float(a.get("gain", 1.0)) * math.sqrt(2.0 / (fan_in + fan_out))
                how = f"gain={float(a.get('gain', 1.0)):g}"
            if op.endswith("uniform_"):
                bound = math.sqrt(3.0) * std
                found = OwnInit(f"{op}({how}): U(-{bound:.4f}, {bound:.4f})", by, "uniform", low=-bound, high=bound)
            else:
                found = OwnInit(f"{op}({how}): N(0, {std:.4g})", by, "normal", 0.0, std)
        elif op in ("zeros_", "ones_", "constant_", "Tensor.zero_", "Tensor.fill_"):
            value = {"zeros_": 0.0, "ones_": 1.0, "Tensor.zero_": 0.0}.get(op)
            value = float(a.get("val", a.get("value", given[0] if given else 0.0))) if value is None else value
            name = "zeros_" if value == 0 else "ones_" if value == 1 else f"constant_({value:g})"
            found = OwnInit(name, by, "constant", value)
        else:  # orthogonal_, eye_, a copy of values it computes: not a draw whose values are checked here
            found = OwnInit(f"set by {op}", by, "")
    return found


def _initialiser_of(model: nn.Module, name: str) -> nn.Module | None:
    """The module whose ``_init_weights`` initialises the module ``name`` of ``model``: the nearest one above it or
    it (a Hugging Face model's sub-model initialises its own layers), None when none has one."""
    while True:
        module = model.get_submodule(name)
        if callable(getattr(type(module), "_init_weights", None)) and hasattr(module, "config"):
            return module
        if not name:
            return None
        name = name.rpartition(".")[0]


def own_inits(model: nn.Module, names: Iterable[str]) -> dict[str, OwnInit]:
    """What the model's own initialiser draws for the parameters ``names``: a Hugging Face model's ``_init_weights``,
    run as ``from_pretrained`` runs it for the weights a checkpoint lacks (each layer, then the layers holding it).

    It runs on a copy whose parameters are stand-ins on which nothing is drawn: ``model`` is left as found, no
    memory is taken for the weights, and the random state is not advanced.

    Parameters
    ----------
    model : nn.Module
        The model (its layers with an ``_init_weights`` method and a ``config``: transformers' ``PreTrainedModel``).
    names : iterable of str
        Parameters of ``model``, as ``named_parameters()`` names them.

    Returns
    -------
    dict[str, OwnInit]
        The parameters the initialiser sets, each with what it draws; none for a model without one, or whose
        initialiser cannot run on stand-ins.

    Examples
    --------
    A model initialising its layers as transformers' models do (``ViTPreTrainedModel._init_weights``):

    >>> from torch import nn
    >>> class Tiny(nn.Module):
    ...     config = None
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.classifier = nn.Linear(32, 5)
    ...     def _init_weights(self, module):
    ...         if isinstance(module, nn.Linear):
    ...             nn.init.trunc_normal_(module.weight, std=0.02)
    ...             nn.init.zeros_(module.bias)
    >>> inits = own_inits(Tiny(), ["classifier.weight", "classifier.bias"])
    >>> inits["classifier.weight"].description, inits["classifier.bias"].description
    ('trunc_normal_(0, 0.02, a=-2, b=2)', 'zeros_')
    >>> inits["classifier.weight"].by
    'Tiny._init_weights'

    A model without its own initialiser:

    >>> own_inits(nn.Linear(2, 2), ["weight"])
    {}
    """
    params = dict(model.named_parameters())
    wanted = [n for n in dict.fromkeys(names) if n in params and params[n].is_floating_point()]
    owners = {n.rpartition(".")[0] for n in wanted}
    if not wanted or all(_initialiser_of(model, owner) is None for owner in owners):
        return {}
    memo: dict[int, Any] = {}
    stand_ins: dict[str, torch.Tensor] = {}
    for n, p in model.named_parameters():
        if n in wanted:
            stand_in = torch.zeros((), dtype=p.dtype).expand(p.shape)
            stand_ins[n] = stand_in
        else:
            stand_in = torch.empty_like(p, device="meta")
        memo[id(p)] = nn.Parameter(stand_in, requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    chains: set[str] = set()
    for owner in owners:
        while True:
            chains.add(owner)
            if not owner:
                break
            owner = owner.rpartition(".")[0]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            copied = copy.deepcopy(model, memo)
            stand_ins = {n: copied.get_parameter(n) for n in stand_ins}
            recorder = _Recorder(stand_ins)
            with recorder:
                for owner in sorted(chains, key=lambda m: -m.count(".") - bool(m)):  # each layer before its holders
                    by = _initialiser_of(copied, owner)
                    if by is not None:
                        recorder.by = f"{type(by).__name__}._init_weights"
                        initialise: Callable[[nn.Module], None] = by._init_weights  # type: ignore[assignment]
                        initialise(copied.get_submodule(owner))
    except Exception:  # an initialiser reading values stand-ins do not have: say nothing rather than guess
        return {}
    recorder.calls.clear()  # the frames, and the stand-ins their locals hold
    found = {n: _draw(ops) for n, ops in recorder.ops.items()}
    return {n: d for n, d in found.items() if d is not None}


def _fits_own(x: torch.Tensor, own: OwnInit, dtype: torch.dtype) -> bool:
    """Whether the values ``x`` (float64, flat, of a tensor of ``dtype``) may come from ``own``'s draw."""
    n = x.numel()
    if own.kind == "constant":
        return bool(torch.all(x == float(torch.tensor(own.mean, dtype=dtype))))
    if n > 1 and bool(torch.all(x == x[0])):
        return False
    slack = float(torch.finfo(dtype).eps) * max(abs(own.low), abs(own.high), 1.0) if dtype.is_floating_point else 0
    if float(x.min()) < own.low - slack or float(x.max()) > own.high + slack:
        return False
    if n < 20:
        return True
    if own.kind == "uniform":
        mean, std = (own.low + own.high) / 2, (own.high - own.low) / math.sqrt(12)
    elif own.kind == "trunc_normal":
        mean, std = _truncated(own)
    else:
        mean, std = own.mean, own.std
    spread, _, tol = _spread(x)
    if std == 0:
        return False
    return abs(spread - std) <= tol * std and abs(float(x.mean()) - mean) <= 5 * std / math.sqrt(n) + slack


def _truncated(own: OwnInit) -> tuple[float, float]:
    """The mean and standard deviation of ``own``'s normal truncated to ``[low, high]``."""

    def pdf(z: float) -> float:
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi) if math.isfinite(z) else 0.0

    def cdf(z: float) -> float:
        return (1 + math.erf(z / math.sqrt(2))) / 2

    a, b = (own.low - own.mean) / own.std, (own.high - own.mean) / own.std
    mass = cdf(b) - cdf(a)
    if mass <= 0:
        return own.mean, 0.0
    shift = (pdf(a) - pdf(b)) / mass
    za = a * pdf(a) if math.isfinite(a) else 0.0
    zb = b * pdf(b) if math.isfinite(b) else 0.0
    variance = own.std**2 * (1 + (za - zb) / mass - shift**2)
    return own.mean + own.std * shift, math.sqrt(max(variance, 0.0))


def from_mean(old: torch.Tensor, rows: torch.Tensor) -> str:
    """How the new ``rows`` of a resized table were set when they are the pretrained rows' mean (transformers'
    ``resize_token_embeddings(mean_resizing=True)`` draws them from ``N(mean, 1e-9 × covariance)``), else "".

    Examples
    --------
    >>> import torch
    >>> old = torch.randn(50, 4)
    >>> print(from_mean(old, old.mean(0).expand(3, 4)).split(";")[0])
    the mean of the 50 pretrained rows (as transformers' mean_resizing sets them: N(mean, 1e-9·covariance))
    >>> from_mean(old, torch.randn(3, 4))
    ''
    """
    if old.dim() == 0 or old.shape[1:] != rows.shape[1:] or old.shape[0] < 2 or rows.numel() == 0:
        return ""
    if "meta" in (old.device.type, rows.device.type) or not old.is_floating_point() or not rows.is_floating_point():
        return ""
    o = old.detach().double()
    if bool(torch.all(o == o.flatten()[0])):  # rows of one value: any constant is their mean
        return ""
    mean, spread = o.mean(0), o.std(0)
    r = rows.detach().double().to(o.device)
    eps = float(torch.finfo(rows.dtype).eps)
    off = (r - mean).abs()
    if not bool(torch.all(off <= 1e-3 * spread + 2 * eps * mean.abs() + 1e-12)):
        return ""
    return (
        f"the mean of the {old.shape[0]} pretrained rows (as transformers' mean_resizing sets them: "
        f"N(mean, 1e-9·covariance)); observed: max|row − mean| {float(off.max()):.3g}"
    )
