"""Rules for ``var``/``std``/``var_mean``/``std_mean`` and ``F.unfold``/``nn.Unfold`` against real CPU calls.

vit_pytorch's CvT and NesT normalise with ``torch.var(x, dim=1, unbiased=False, keepdim=True)`` in their own
LayerNorm, T2T-ViT and PiT cut images into windows with ``nn.Unfold``: each call ran on ``meta`` before.  Whenever a
rule answers, a CPU call of the same layout gives the same shape, dtype and strides (of dims larger than 1); every
form torch documents is answered, and what torch refuses falls back (meta then raises torch's own error).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from test_rules import _answer, _signature, _signatures, tensors
from torchsurgeon import paramcount
from torchsurgeon.rules import FALLBACK, function_rule, method_rule, module_rule

DTYPES = [torch.float32, torch.bfloat16, torch.float64]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """A variance over one element warns about its degrees of freedom: not what these tests look at."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _cpu(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return call(), None
    except Exception as exc:
        return None, exc


# --------------------------------------------------------------------------- var, std, var_mean, std_mean

VARIANCES: list[tuple[str, Callable[..., Any]]] = [
    ("function", torch.var),
    ("function", torch.std),
    ("method", torch.Tensor.var),
    ("method", torch.Tensor.std),
    ("function", torch.var_mean),
    ("function", torch.std_mean),
]
FORMS = ["unbiased", "unbiased=", "legacy", "legacy keywords", "correction", "plain"]


def _variance_rule(kind: str, op: Callable[..., Any]) -> Any:
    return function_rule(op) if kind == "function" else method_rule(op.__name__)


@st.composite
def _dims(draw: st.DrawFn, rank: int) -> Any:
    """None, one dim or several distinct ones (negative too), as a tuple or a list."""
    if draw(st.integers(0, 4)) == 0:
        return None
    r = max(rank, 1)
    dims = draw(st.lists(st.integers(-r, r - 1), min_size=1, max_size=r, unique_by=lambda d: d % r))
    if len(dims) == 1 and draw(st.booleans()):
        return dims[0]
    return tuple(dims) if draw(st.booleans()) else list(dims)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    which=st.sampled_from(range(len(VARIANCES))),
    form=st.sampled_from(FORMS),
    dtype=st.sampled_from(DTYPES),
    unbiased=st.booleans(),
    keepdim=st.booleans(),
    correction=st.sampled_from([None, 0, 1, 2, 0.5]),
)
def test_variance_rules_match_the_cpu(
    data: st.DataObject, which: int, form: str, dtype: torch.dtype, unbiased: bool, keepdim: bool, correction: Any
) -> None:
    """Each form torch documents, for any layout (contiguous, permuted, sliced, expanded, channels-last): the rule
    answers, and a CPU call gives its shape, dtype and strides."""
    kind, op = VARIANCES[which]
    x, build = data.draw(tensors(min_rank=0, max_rank=4, dtype=dtype))
    dim = data.draw(_dims(x.dim()))
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = {}
    if form == "unbiased":  # var(input, unbiased)
        args = (x, unbiased)
    elif form == "unbiased=":
        args, kwargs = (x,), {"unbiased": unbiased}
    elif form == "legacy":  # var(input, dim, unbiased, keepdim)
        args = (x, dim, unbiased, keepdim) if data.draw(st.booleans()) else (x, dim, unbiased)
        kwargs = {"keepdim": keepdim} if len(args) == 3 and keepdim else {}
    elif form == "legacy keywords":  # CvT's LayerNorm
        args, kwargs = (x,), {"dim": dim, "unbiased": unbiased, "keepdim": keepdim}
    elif form == "correction":  # var(input, dim=None, *, correction=1, keepdim=False)
        args, kwargs = (x, dim), {"correction": correction, "keepdim": keepdim}
    else:
        args = (x,) if dim is None else (x, dim)
    out = _answer(_variance_rule(kind, op), args, kwargs)
    real, error = _cpu(lambda: op(build("cpu"), *args[1:], **kwargs))
    assert error is None, error
    assert out is not FALLBACK, (args[1:], kwargs)
    assert all(t.device.type == "meta" for t in (out if isinstance(out, tuple) else (out,)))
    assert _signatures(out) == _signatures(real)


def _refused_variance_calls() -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    x = torch.empty(2, 3, 4, device="meta")
    return [
        ("dim out of range", (x, 3), {}),
        ("dim twice", (x, (1, -2)), {}),
        ("dim by name", (x, "c"), {}),
        ("unbiased and correction", (x, 1), {"unbiased": False, "correction": 0}),
        ("unbiased not a bool", (x, 1, 0), {}),
        ("keepdim not a bool", (x, 1), {"keepdim": 1}),
        ("keepdim without dim", (x,), {"unbiased": False, "keepdim": True}),
        ("keepdim after the bool form", (x, True), {"keepdim": True}),
        ("a float dim", (x, 0.5), {}),
        ("dtype=", (x, 1), {"dtype": torch.float64}),
    ]


@pytest.mark.parametrize(
    ("why", "args", "kwargs"), _refused_variance_calls(), ids=lambda v: v if isinstance(v, str) else ""
)
@pytest.mark.parametrize("op", [torch.var, torch.std, torch.var_mean, torch.std_mean])
def test_variance_calls_torch_refuses_fall_back(
    op: Callable[..., Any], why: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Meta then raises torch's own error; the CPU refuses these calls too."""
    assert _answer(function_rule(op), args, kwargs) is FALLBACK, why
    with pytest.raises((TypeError, RuntimeError, IndexError)):
        op(torch.zeros(2, 3, 4), *args[1:], **kwargs)


@pytest.mark.parametrize(
    ("why", "x", "args", "kwargs"),
    [
        ("integers: torch raises", torch.empty(2, 3, dtype=torch.int64, device="meta"), (1,), {}),
        ("complex: a real output", torch.empty(2, 3, dtype=torch.complex64, device="meta"), (1,), {}),
        ("out=", torch.empty(2, 3, device="meta"), (1,), {"out": torch.empty(2, device="meta")}),
        ("a bool correction", torch.empty(2, 3, device="meta"), (1,), {"correction": True}),
    ],
)
def test_unusual_variance_calls_fall_back(why: str, x: torch.Tensor, args: tuple[Any, ...], kwargs: Any) -> None:
    for rule in (function_rule(torch.var), method_rule("std"), function_rule(torch.var_mean)):
        assert _answer(rule, (x, *args), kwargs) is FALLBACK, why


# --------------------------------------------------------------------------- F.unfold, nn.Unfold

_PAIR = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    batched=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    kernel=_PAIR,
    dilation=_PAIR,
    padding=st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))),
    stride=_PAIR,
    how=st.sampled_from(["module", "positional", "keywords", "list"]),
)
def test_unfold_rules_match_the_cpu(
    data: st.DataObject,
    batched: bool,
    dtype: torch.dtype,
    kernel: Any,
    dilation: Any,
    padding: Any,
    stride: Any,
    how: str,
) -> None:
    """Any layout (channels-last, permuted, sliced...), batched or not: where the CPU gives an output, the rule
    answers with its shape, dtype and strides (contiguous); where the CPU raises (the window does not fit), the rule
    falls back."""
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=2, max_size=2))
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), *sizes)[0 if batched else 1 :]
    x, build = data.draw(tensors(shape=shape, dtype=dtype))
    if how == "module":
        layer = nn.Unfold(kernel, dilation, padding, stride)
        found = module_rule(nn.Unfold)
        assert found is not None
        out = _answer(found[0], (x,), {}, layer)
        real, error = _cpu(lambda: layer(build("cpu")))
    else:
        if how == "list":
            kernel = [kernel] * 2 if isinstance(kernel, int) else list(kernel)
        kwargs: dict[str, Any] = {"kernel_size": kernel, "dilation": dilation, "padding": padding, "stride": stride}
        args: tuple[Any, ...] = (x,)
        if how != "keywords":
            args, kwargs = (x, kernel, dilation, padding, stride), {}
        out = _answer(function_rule(F.unfold), args, kwargs)
        real, error = _cpu(lambda: F.unfold(build("cpu"), *args[1:], **kwargs))
    if error is not None:
        assert out is FALLBACK, f"the rule answered {out!r} but the CPU raises {error!r}"
        return
    assert out is not FALLBACK and out.device.type == "meta"
    assert _signature(out) == _signature(real)


def test_unfold_of_a_permuted_input_is_contiguous_as_on_the_cpu() -> None:
    """A 1 x 1 window without padding: the CPU kernel gives a new contiguous tensor for any input layout (meta's
    decomposition answers a permuted view here: the rule follows the CPU)."""
    cpu = torch.zeros(6, 5, 3, 2).permute(3, 2, 1, 0)  # (2, 3, 5, 6), no dim contiguous
    x = torch.empty_strided(cpu.shape, cpu.stride(), device="meta")
    out = _answer(function_rule(F.unfold), (x, 1), {"stride": (2, 1)})
    real = F.unfold(cpu, 1, stride=(2, 1))
    assert real.is_contiguous() and _signature(out) == _signature(real) == (
        (2, 3, 18),
        torch.float32,
        ((0, 54), (1, 18), (2, 1)),
    )


@pytest.mark.parametrize(
    ("why", "x", "args", "raises"),
    [
        ("window larger than the image", torch.empty(1, 2, 4, 4), (5,), True),
        ("kernel 0", torch.empty(1, 2, 4, 4), (0,), True),
        ("stride 0", torch.empty(1, 2, 4, 4), (2, 1, 0, 0), True),
        ("dilation 0", torch.empty(1, 2, 4, 4), (2, 0), True),
        ("negative padding (meta lets it through)", torch.empty(1, 2, 4, 4), (2, 1, -1), True),
        ("a 2-d input", torch.empty(4, 4), (2,), True),
        ("a 5-d input", torch.empty(1, 2, 3, 4, 4), (2,), True),
        ("no channels", torch.empty(1, 0, 4, 4), (2,), True),
        ("a bool kernel", torch.empty(1, 2, 4, 4), (True,), True),
        ("three kernel sizes", torch.empty(1, 2, 4, 4), ((2, 2, 2),), False),
        ("one kernel size in a tuple", torch.empty(1, 2, 4, 4), ((2,),), False),
        ("integers", torch.empty(1, 2, 4, 4, dtype=torch.int64), (2,), True),
        ("complex", torch.empty(1, 2, 4, 4, dtype=torch.complex64), (2,), False),
    ],
)
def test_unusual_unfold_calls_fall_back(why: str, x: torch.Tensor, args: tuple[Any, ...], raises: bool) -> None:
    assert _answer(function_rule(F.unfold), (x.to("meta"), *args), {}) is FALLBACK, why
    found = module_rule(nn.Unfold)
    assert found is not None
    assert _answer(found[0], (x.to("meta"),), {}, nn.Unfold(*args)) is FALLBACK, why
    if raises:
        with pytest.raises((TypeError, RuntimeError, IndexError)):
            F.unfold(torch.zeros(x.shape, dtype=x.dtype), *args)


# --------------------------------------------------------------------------- a whole model


class _StatsAndPatches(nn.Module):
    """CvT's LayerNorm over channels, then T2T-ViT's soft split, with the other variance forms in between."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.unfold = nn.Unfold(kernel_size=4, stride=4)
        self.proj = nn.Linear(8 * 16 + 1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        x = (x - x.mean(dim=1, keepdim=True)) / (var + 1e-5).sqrt()
        patches = self.unfold(x).transpose(1, 2)  # (N, 16, 128)
        scale = patches.std(-1)  # (N, 16)
        v, m = torch.var_mean(patches, dim=-1, keepdim=True)
        patches = (patches - m) * torch.rsqrt(v + 1e-5)
        coarse = F.unfold(x, 2, stride=2).std(1, keepdim=True)  # (N, 1, 64)
        out: torch.Tensor = self.proj(torch.cat([patches, scale.unsqueeze(-1)], -1))
        return out + coarse[..., :16].transpose(1, 2)


def test_a_model_with_variances_and_unfold_needs_no_meta_fallback() -> None:
    model = _StatsAndPatches().eval()
    report = paramcount(model, (3, 16, 16))
    assert report.shape_fallbacks == []
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        assert report.output_shape == tuple(model(torch.zeros(1, 3, 16, 16)).shape) == (1, 16, 10)
    assert report.macs == counter.get_total_flops() // 2
