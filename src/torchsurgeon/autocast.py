"""What ``torch.autocast`` makes of an op's output dtype: one home for the ops it casts.

Autocast applies to CPU and CUDA tensors, not to ``meta`` ones: shape
propagation runs a node of the model's own ``with torch.autocast(...)``
block in that block (:func:`torchsurgeon.fxbookkeeping.autocast_as`), which
keeps a product of two dtypes from being invalid, but its output would keep
its input's dtype.  :func:`autocast_dtype` gives the dtype a real forward
gives it instead: a ``Linear`` inside a bfloat16 block gives bfloat16, and a
float32 ``Linear`` after the block then gets bfloat16 activations (a real
forward raises there).

* ``LOWER_PRECISION``: products (convolutions, ``linear``, ``matmul``,
  ``bmm``, attention...) run in the block's dtype on both devices.
* ``CUDA_FLOAT32``: ops CUDA autocast runs in float32 and CPU autocast does
  not cast (``softmax``, ``layer_norm``, ``exp``...); ``CPU_FLOAT32`` the
  other way (3-D pooling; reflection and replication padding).

The memory planner's simulated step uses the same lists
(:mod:`torchsurgeon.cudakernels`); ``tests/test_autocast.py`` and
``tests/test_cudakernels.py`` check them against torch's own autocast on fake
tensors.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = (
    "CPU_FLOAT32",
    "CPU_FLOAT32_PADS",
    "CUDA_FLOAT32",
    "HALF",
    "LOWER_PRECISION",
    "Autocast",
    "ProductPrecision",
    "as_autocast_gives",
    "autocast_dtype",
    "autocast_now",
    "autocast_on_cpu",
    "op_name",
    "step_precision",
)

Autocast = tuple[tuple[str, torch.dtype], ...]
"""Autocast regions: (device type, dtype) of each enabled one."""
_DEVICES = ("cpu", "cuda", "xpu", "mps")

LOWER_PRECISION = frozenset(
    {
        "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear",
        "matmul", "mm", "bmm", "baddbmm", "addmm", "addbmm", "prelu", "scaled_dot_product_attention",
        "multi_head_attention_forward",
    }
)  # fmt: skip
"""Torch functions (by name) that autocast runs in its lower precision on the CPU and on CUDA."""

# torch functions (by name, leading and trailing underscores off) that CUDA autocast runs in float32 and CPU
# autocast does not cast: their aten ops have an AutocastCUDA kernel and no AutocastCPU kernel
CUDA_FLOAT32 = frozenset(
    {
        "pow", "rpow", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "acos", "asin",
        "cosh", "sinh", "tan", "erfinv", "softplus", "layer_norm", "group_norm", "rms_norm", "softmax",
        "log_softmax", "logsumexp", "cumsum", "cumprod", "sum", "norm", "normalize", "cosine_similarity", "dist",
        "pdist", "renorm", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
    }
)  # fmt: skip
CPU_FLOAT32 = frozenset({"max_pool3d", "avg_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d"})
"""Torch functions that CPU autocast runs in float32 and CUDA autocast leaves alone."""
CPU_FLOAT32_PADS = frozenset({"reflect", "replicate"})
"""Padding modes ``F.pad`` runs in float32 under CPU autocast."""

_MODULES: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "linear"),
    (nn.Conv1d, "conv1d"),
    (nn.Conv2d, "conv2d"),
    (nn.Conv3d, "conv3d"),
    (nn.ConvTranspose1d, "conv_transpose1d"),
    (nn.ConvTranspose2d, "conv_transpose2d"),
    (nn.ConvTranspose3d, "conv_transpose3d"),
    (nn.MultiheadAttention, "multi_head_attention_forward"),
    (nn.PReLU, "prelu"),
    (nn.LayerNorm, "layer_norm"),
    (nn.GroupNorm, "group_norm"),
    (nn.RMSNorm, "rms_norm"),
    (nn.Softmax, "softmax"),
    (nn.LogSoftmax, "log_softmax"),
    (nn.MaxPool3d, "max_pool3d"),
    (nn.AvgPool3d, "avg_pool3d"),
    (nn.AdaptiveAvgPool3d, "adaptive_avg_pool3d"),
    (nn.AdaptiveMaxPool3d, "adaptive_max_pool3d"),
)
HALF = (torch.float16, torch.bfloat16)
"""The 16-bit float dtypes (autocast's lower precisions; kernels that compute them in float32)."""
_CAST = (torch.float32, *HALF)  # the dtypes autocast casts (float64 and integers run as they are)


def op_name(op: str, target: Any, module: nn.Module | None = None) -> str:
    """The name autocast's lists know an fx node's op by: a function's or method's name (leading and trailing
    underscores off), a torch.nn layer's function; "" for anything else.

    Examples
    --------
    >>> import operator
    >>> op_name("call_function", torch.nn.functional.linear), op_name("call_method", "softmax")
    ('linear', 'softmax')
    >>> op_name("call_function", operator.matmul), op_name("call_module", "fc", nn.Linear(2, 2))
    ('matmul', 'linear')
    """
    if op == "call_module":
        return next((name for kind, name in _MODULES if isinstance(module, kind)), "")
    name = target if isinstance(target, str) else str(getattr(target, "__name__", ""))
    return name.removeprefix("__").removesuffix("__")


def autocast_now() -> Autocast:
    """The autocast regions enabled now, () outside any.

    Examples
    --------
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     autocast_now()
    (('cpu', torch.bfloat16),)
    >>> autocast_now()
    ()
    """
    if not torch._C._is_any_autocast_enabled():
        return ()
    return tuple((d, torch.get_autocast_dtype(d)) for d in _DEVICES if torch.is_autocast_enabled(d))


def as_autocast_gives(name: str, dtypes: Iterable[torch.dtype], regions: Autocast, out: Any) -> Any:
    """``out``, the output of op ``name`` on inputs of ``dtypes`` computed on ``meta``, with its floating tensors in
    the dtype a real forward in the autocast ``regions`` gives them (:func:`autocast_dtype`).

    Examples
    --------
    >>> out = torch.empty(2, 3, device="meta")
    >>> as_autocast_gives("linear", [torch.float32], (("cpu", torch.bfloat16),), out).dtype
    torch.bfloat16
    """
    dtype = autocast_dtype(name, dtypes, regions)
    if dtype is None:
        return out
    if isinstance(out, torch.Tensor):
        return out.to(dtype) if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(as_autocast_gives(name, dtypes, regions, v) for v in out)
    return out


def autocast_dtype(name: str, dtypes: Iterable[torch.dtype], regions: Autocast) -> Any:
    """The dtype a real forward gives the output of op ``name`` in the autocast ``regions``, for inputs of
    ``dtypes``; None when autocast leaves it to the inputs (the op is in no list, or an input is float64).

    The CUDA region wins when there are both (the model is written for a GPU).

    Examples
    --------
    >>> bf16 = (("cpu", torch.bfloat16),)
    >>> autocast_dtype("linear", [torch.float32], bf16), autocast_dtype("relu", [torch.float32], bf16)
    (torch.bfloat16, None)
    >>> autocast_dtype("softmax", [torch.bfloat16], (("cuda", torch.bfloat16),))
    torch.float32
    """
    if not regions:
        return None
    device, low = next((r for r in regions if r[0] == "cuda"), regions[0])
    floats = [d for d in dtypes if d.is_floating_point]
    if not floats or any(d not in _CAST for d in floats):
        return None
    if name in LOWER_PRECISION:
        return low
    float32 = CUDA_FLOAT32 if device == "cuda" else CPU_FLOAT32
    return torch.float32 if name in float32 and any(d in HALF for d in floats) else None


class ProductPrecision(TorchFunctionMode):
    """Count the products (``LOWER_PRECISION``: convolutions, ``linear``, ``matmul``...) called under it, by the
    dtype CPU autocast runs them in (None outside autocast): the precision a simulated step ran in, whatever put
    the autocast there (``memory_plan(amp=...)``, a ``torch.autocast`` in or around the model's forward).

    Examples
    --------
    >>> seen = ProductPrecision()
    >>> x = torch.randn(2, 4)
    >>> with seen:
    ...     _ = x @ x.T
    ...     with torch.autocast("cpu", dtype=torch.bfloat16):
    ...         _ = torch.nn.functional.linear(x, x)
    >>> seen.counts
    {None: 1, torch.bfloat16: 1}
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[torch.dtype | None, int] = {}

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if op_name("call_function", func) in LOWER_PRECISION and any(
            isinstance(t, torch.Tensor) and t.dtype in _CAST for t in pytree.tree_leaves((args, kwargs))
        ):
            dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
            self.counts[dtype] = self.counts.get(dtype, 0) + 1
        return func(*args, **kwargs)


def step_precision(asked: torch.dtype | None, counts: Mapping[torch.dtype | None, int]) -> tuple[str | None, str]:
    """The autocast dtype(s) a step's products ran in (:class:`ProductPrecision`), as a plan labels them, and a
    note when that is not ``asked`` (``memory_plan``'s ``amp``) for every product; ``asked``'s name and "" when
    there was no product.

    Examples
    --------
    >>> step_precision(None, {torch.bfloat16: 21})[0]
    'bfloat16'
    >>> step_precision(torch.bfloat16, {torch.bfloat16: 21})
    ('bfloat16', '')
    >>> print(step_precision(None, {None: 20, torch.float16: 1})[1])  # doctest: +ELLIPSIS
    Autocast as the forward runs it: of its 21 products (...), 20 outside autocast, 1 in float16 — amp=None: ...
    """

    def name(dt: torch.dtype | None) -> str:
        return str(dt).removeprefix("torch.") if dt is not None else "outside autocast"

    if not counts:
        return (name(asked) if asked is not None else None), ""
    label = ", ".join(name(dt) for dt in counts if dt is not None) or None
    if list(counts) == [asked]:
        return label, ""
    total = sum(counts.values())
    parts = [f"{n} {'in ' if dt is not None else ''}{name(dt)}" for dt, n in counts.items()]
    said = (
        f"all {total} products (convolutions, linear, matmul) {parts[0].partition(' ')[2]}"
        if len(parts) == 1
        else f"of its {total} products (convolutions, linear, matmul), {', '.join(parts)}"
    )
    why = (
        "amp=None: the autocast is the model's own (a torch.autocast in or around its forward, as accelerate's "
        "prepare puts there)"
        if asked is None
        else f"amp={name(asked)} for the step; the model's own torch.autocast blocks decide the rest"
    )
    return label, f"Autocast as the forward runs it: {said} — {why}"


_PATCH_LOCK = threading.Lock()
_PATCH_DEPTH = [0]  # analyses inside autocast_on_cpu, in all threads: the last one out puts torch's back
_REAL_INIT = torch.amp.autocast_mode.autocast.__init__


def _init(self: Any, device_type: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(device_type, torch.fx.Proxy) or device_type == "meta":  # a device autocast rejects: the CPU's
        device_type = "cpu"
    _REAL_INIT(self, device_type, *args, **kwargs)


@contextlib.contextmanager
def autocast_on_cpu() -> Iterator[None]:
    """In this block, ``torch.autocast(x.device.type, ...)`` of a traced tensor (a proxy of its device type) or of a
    ``meta`` tensor (``"meta"``, which autocast rejects: "unsupported scalarType") is the CPU's, where an analysis
    runs the model: x-transformers' rotary embeddings disable autocast on their input's device, and its attention
    became opaque in a trace, then "failed" on ``meta`` in the cross-check, which blamed the real model.

    Process-wide while any analysis is inside (as torch.fx's own patches), and only for those two device types,
    which raise otherwise; any other is torch's.

    Examples
    --------
    >>> with autocast_on_cpu(), torch.autocast("meta", enabled=False):
    ...     torch.is_autocast_enabled("cpu")
    False
    """
    autocast = torch.amp.autocast_mode.autocast
    with _PATCH_LOCK:
        _PATCH_DEPTH[0] += 1
        if _PATCH_DEPTH[0] == 1:
            autocast.__init__ = _init  # type: ignore[method-assign]
    try:
        yield
    finally:
        with _PATCH_LOCK:
            _PATCH_DEPTH[0] -= 1
            if _PATCH_DEPTH[0] == 0:
                autocast.__init__ = _REAL_INIT  # type: ignore[method-assign]
