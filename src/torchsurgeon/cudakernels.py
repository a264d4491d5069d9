"""Where a GPU's kernels save other tensors than the CPU's, in a simulated step on fake CPU tensors.

:mod:`torchsurgeon.fakestep` runs a training step on fake CPU tensors (fake
CUDA tensors cannot run a backward without a GPU).  Most kernels save the
same tensors on both devices; these do not, and :class:`CudaKernels`, a
:class:`~torch.overrides.TorchFunctionMode`, makes the CPU step do what CUDA
does:

* **Dropout** (``F.dropout`` and ``torch.dropout``, not in place) on a GPU is
  ``native_dropout``: it saves a 1-byte mask where the CPU saves a float
  noise tensor.
* **Attention** (``F.scaled_dot_product_attention``, also inside
  ``nn.MultiheadAttention``): a GPU runs a fused kernel that saves the output
  and a log-sum-exp per row, no attention matrix.  Flash or cuDNN attention
  in half precision without a mask (grouped-query attention included), the
  memory-efficient kernel otherwise (its log-sum-exp padded to 32 rows);
  grouped-query attention in float32 or with a mask, float64 and inputs that
  are not 4-D take the math path, as on the CPU when dropout is on.
* **Autocast**: CUDA autocast runs some ops in float32 that CPU autocast
  leaves in the lower precision (``autocast.CUDA_FLOAT32``: ``pow``, ``exp``,
  ``softmax``, ``layer_norm``, ``sum``, ``interpolate`` …) and leaves in the
  lower precision some that CPU autocast runs in float32 (``autocast.CPU_FLOAT32``:
  3-D pooling, reflection and replication padding).  A CUDA autocast region
  (a ``torch.autocast("cuda")`` in the model's forward, accelerate's
  ``prepare`` on a GPU) casts the step's CPU ops as on a GPU, also where this
  machine has no GPU (where torch would disable it); a block in it that
  ``torch.utils.checkpoint`` runs again in the backward runs again in it, as
  on a GPU (checkpoint takes the step's CPU tensors for CUDA ones).

Measured against a real training step on an NVIDIA H200 (torch 2.11):
``benchmarks/gpu_memory.py``, docs/memory.md.
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils import checkpoint

from .ambient import SetAside
from .autocast import CPU_FLOAT32, CPU_FLOAT32_PADS, CUDA_FLOAT32, HALF

__all__ = ("CudaKernels",)

_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class CudaKernels(TorchFunctionMode):
    """Make a fake CPU step save what the same step saves on a GPU (module docstring).

    Examples
    --------
    >>> import torch
    >>> saved = []
    >>> x = torch.randn(2, 8, requires_grad=True)
    >>> with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
    ...     with CudaKernels():
    ...         y = torch.nn.functional.dropout(x, 0.1)
    >>> saved  # a 1-byte mask, as CUDA's dropout keeps (the CPU keeps a float noise tensor)
    [torch.bool]
    """

    def __enter__(self) -> CudaKernels:
        self._gpu = _GPU_AUTOCAST.held()  # torch.autocast("cuda") made in the step is not disabled for want of a GPU
        self._gpu.__enter__()
        _IN_STEP.depth = getattr(_IN_STEP, "depth", 0) + 1
        super().__enter__()  # type: ignore[no-untyped-call]
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)  # type: ignore[no-untyped-call]
        finally:
            _IN_STEP.depth -= 1
            self._gpu.__exit__(None, None, None)

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        low = torch.get_autocast_dtype("cuda")
        if torch.is_autocast_enabled("cuda") and not (
            torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == low
        ):  # a GPU's autocast region: the fake CPU tensors get CPU autocast's casts (the CUDA region wins)
            with torch.autocast("cpu", dtype=low):
                return self.__torch_function__(func, types, args, kwargs)
        if func in (F.dropout, torch.dropout):
            return _dropout_as_cuda(func, *args, **kwargs)
        if func is F.scaled_dot_product_attention:
            return _attention_as_cuda(*args, **kwargs)
        if func is F.multi_head_attention_forward:
            return _MHA(*args, **kwargs)
        if torch.is_autocast_enabled("cpu"):
            name = str(getattr(func, "__name__", "")).removeprefix("__").removesuffix("__")  # in-place ops end in "_"
            if name in CUDA_FLOAT32:
                return func(*_float32(args), **_float32(kwargs))
            if name in CPU_FLOAT32 or (name == "pad" and _pad_mode(args, kwargs) in CPU_FLOAT32_PADS):
                with torch.autocast("cpu", enabled=False):
                    return func(*args, **kwargs)
        return func(*args, **kwargs)


_IN_STEP = threading.local()  # depth: this thread runs a step under CudaKernels


def _gpu_autocast_on() -> tuple[Any, Any, Any]:
    """Make ``torch.autocast("cuda", ...)``, made in a thread inside :class:`CudaKernels`, enabled as on a GPU, and
    ``torch.utils.checkpoint`` take the step's CPU tensors for the CUDA tensors they stand for (it keeps the
    autocast state of its inputs' device and runs the block again in it: a CUDA autocast around a checkpointed
    block, accelerate's ``prepare`` of a model with gradient checkpointing); other threads get torch's answers.
    The functions replaced."""
    common = torch.cuda.amp.common
    before: tuple[Any, Any, Any] = (
        common.amp_definitely_not_available,
        torch.cuda.is_bf16_supported,
        checkpoint._infer_device_type,
    )

    def not_available() -> bool:
        return False if getattr(_IN_STEP, "depth", 0) else bool(before[0]())

    def bf16_supported(*args: Any, **kwargs: Any) -> bool:
        in_step = getattr(_IN_STEP, "depth", 0) and not torch.cuda.is_available()
        return True if in_step else bool(before[1](*args, **kwargs))

    def device_type(*args: Any) -> str:
        found = str(before[2](*args))
        return "cuda" if found == "cpu" and getattr(_IN_STEP, "depth", 0) > 0 else found

    common.amp_definitely_not_available = not_available
    torch.cuda.is_bf16_supported = bf16_supported
    checkpoint._infer_device_type = device_type
    return before


def _gpu_autocast_back(before: tuple[Any, Any, Any]) -> None:
    common = torch.cuda.amp.common
    common.amp_definitely_not_available, torch.cuda.is_bf16_supported, checkpoint._infer_device_type = before


_GPU_AUTOCAST = SetAside(_gpu_autocast_on, _gpu_autocast_back)


def _float32(value: Any) -> Any:
    """``value`` with its half-precision tensors (also in tuples, lists and dicts) cast to float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in HALF else value
    if isinstance(value, (tuple, list)):
        return type(value)(_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _float32(v) for k, v in value.items()}
    return value


def _pad_mode(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    return str(kwargs.get("mode", args[2] if len(args) > 2 else "constant"))


def _native_dropout(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``native_dropout`` for a dropout CUDA fuses (training, not in place, 0 < p < 1), else None."""
    names = ("input", "p", "training", "inplace") if func is F.dropout else ("input", "p", "train")
    bound = dict(zip(names, args)) | kwargs
    x, p = bound["input"], bound.get("p", 0.5)
    training = bound.get("training", bound.get("train", True))
    if not (isinstance(x, torch.Tensor) and training and not bound.get("inplace", False) and 0 < p < 1 and x.numel()):
        return None
    return torch.native_dropout(x, float(p), True)[0]


def fused_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor | None:
    """What a fused CUDA attention kernel returns, saving what it saves; None where CUDA takes the math path.

    Examples
    --------
    >>> import torch
    >>> from torch._subclasses.fake_tensor import FakeTensorMode
    >>> with FakeTensorMode():  # CUDA's fused kernels have fake (shape-only) implementations, no CPU ones
    ...     q = torch.empty(1, 2, 5, 8)
    ...     print(fused_attention(q, q, q, dropout_p=0.1).shape)
    torch.Size([1, 2, 5, 8])
    """
    if query.dtype not in _FUSED_DTYPES or not query.dim() == key.dim() == value.dim() == 4:
        return None
    if torch.is_autocast_enabled("cpu"):  # CUDA autocast runs attention in the lower precision
        low = torch.get_autocast_dtype("cpu")
        query, key, value = (t.to(low) if t.is_floating_point() else t for t in (query, key, value))
    grouped = enable_gqa and key.shape[-3] != query.shape[-3]
    same_width = query.shape[-1] == key.shape[-1] == value.shape[-1]
    if attn_mask is None and query.dtype in HALF and same_width and query.shape[-1] <= 256:  # flash / cuDNN
        if grouped:  # the kernel reads each key-value head for its group: nothing expanded is saved
            return _grouped_flash(query, key, value, dropout_p, is_causal, scale)
        flash = torch.ops.aten._scaled_dot_product_flash_attention
        return _output(flash(query, key, value, dropout_p, is_causal, scale=scale))
    if grouped:  # the memory-efficient kernel has no grouped-query attention: the math path, as CUDA takes it
        math = torch.ops.aten._scaled_dot_product_attention_math
        return _output(math(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=True))
    if attn_mask is not None and attn_mask.dtype == torch.bool:  # as SDPA does before the memory-efficient kernel
        attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill_(attn_mask.logical_not(), -float("inf"))
    if attn_mask is not None:
        attn_mask = attn_mask.to(query.dtype).expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    efficient = torch.ops.aten._scaled_dot_product_efficient_attention
    return _output(efficient(query, key, value, attn_mask, torch.is_grad_enabled(), dropout_p, is_causal, scale=scale))


def _output(results: Any) -> torch.Tensor:
    """An attention kernel's output, the first of what it returns."""
    out: torch.Tensor = results[0]
    return out


class _GroupedFlash(torch.autograd.Function):
    """Flash attention over grouped key-value heads: saves q, k, v (unexpanded), the output and a log-sum-exp."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout_p: float, is_causal: bool,
        scale: float | None,
    ) -> torch.Tensor:  # fmt: skip
        repeat = query.shape[-3] // key.shape[-3]
        out = torch.ops.aten._scaled_dot_product_flash_attention(
            query, key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3), dropout_p, is_causal,
            scale=scale,
        )  # fmt: skip
        ctx.save_for_backward(query, key, value, out[0], out[1], out[6], out[7])  # + the random-number state
        return _output(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        query, key, value, *_ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), None, None, None


def _grouped_flash(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout_p: float, is_causal: bool, scale: float | None
) -> torch.Tensor:
    out: torch.Tensor = _GroupedFlash.apply(query, key, value, dropout_p, is_causal, scale)
    return out


def _multi_head_attention_forward() -> Any:
    """``F.multi_head_attention_forward`` calling this module's dropout and attention (a copy: torch is untouched)."""
    original = F.multi_head_attention_forward
    namespace = dict(original.__globals__)
    namespace.update(
        has_torch_function=lambda *a: False,
        scaled_dot_product_attention=_attention_as_cuda,
        dropout=functools.partial(_dropout_as_cuda, F.dropout),
    )
    copy = types.FunctionType(
        original.__code__, namespace, original.__name__, original.__defaults__, original.__closure__
    )
    copy.__kwdefaults__ = original.__kwdefaults__
    return copy


def _dropout_as_cuda(func: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``func`` (``F.dropout``, ``torch.dropout``) as CUDA runs it: fused where CUDA fuses it, else as given."""
    out = _native_dropout(func, args, dict(kwargs))
    return out if out is not None else func(*args, **kwargs)  # not fused on a GPU either


def _attention_as_cuda(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` as CUDA runs it: the fused kernel it picks, else the math path."""
    try:
        out = fused_attention(*args, **kwargs)
    except Exception:  # a call no fused kernel takes: the CPU's path, which fails or not as SDPA does
        out = None
    return out if out is not None else F.scaled_dot_product_attention(*args, **kwargs)


_MHA = _multi_head_attention_forward()
