"""Tensors made from sizes or from another tensor: ``zeros``, ``ones``, ``empty``, ``full``, ``arange``,
``linspace``, ``eye``, ``meshgrid``, ``x.new_ones(...)`` and the like, ``zeros_like(x)`` and the like,
``torch.tensor`` of Python numbers; the sine position embeddings of transformers' detection and segmentation
models, made from a size (or a mask) alone.

Attention masks and position ids are made this way (``torch.arange(seq_len)``,
``torch.ones(batch, length)``); the sizes are Python ints by the time a rule
sees them.  Contiguous outputs of the default (or given, or inferred) dtype;
anything else (``out=``, another layout or memory format, a device other than
``meta``, float ``arange`` bounds) runs on ``meta``.
"""

from __future__ import annotations

from typing import Any

import torch

from ._common import REQUIRED, Spec, bind, fn, is_int, new, preserved, size_args, transformers_copies, view
from .registry import FALLBACK, builtin

__all__: tuple[str, ...] = ()

_PLAIN_KWARGS = frozenset({"dtype", "device", "layout", "requires_grad", "pin_memory"})


def _plain(kwargs: dict[str, Any]) -> bool:
    """Only keyword arguments that do not change the result's layout, on meta (or no device)."""
    if not _PLAIN_KWARGS.issuperset(kwargs) or kwargs.get("layout") not in (None, torch.strided):
        return False
    device = kwargs.get("device")
    return device is None or torch.device(device).type == "meta"


def _size(args: tuple[Any, ...]) -> tuple[int, ...] | None:
    """A size given as ints or as one sequence of ints, all >= 0."""
    given = size_args(args)
    if not args or not all(is_int(d) and int(d) >= 0 for d in given):  # zeros() without a size raises
        return None
    return tuple(int(d) for d in given)


def _filled(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``zeros``/``ones``/``empty``, the size given by position or as ``size=`` (BEiT's ``torch.zeros(size=...)``)."""
    if not args and "size" in kwargs:
        kwargs = dict(kwargs)
        args = (kwargs.pop("size"),)
    size = _size(args)
    if size is None or not _plain(kwargs):
        return FALLBACK
    return new(size, kwargs.get("dtype") or torch.get_default_dtype())


def _random(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``rand``/``randn`` of a floating dtype (ViT-MAE's masking noise); torch refuses integer ones on the CPU,
    and a ``generator`` is left to meta."""
    dtype = kwargs.get("dtype") or torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        return FALLBACK
    return _filled(args, kwargs)


def _full(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    rest = dict(kwargs)
    size_arg, fill = (args[0], args[1]) if len(args) == 2 else (rest.pop("size", None), rest.pop("fill_value", None))
    if len(args) not in (0, 2) or size_arg is None or fill is None or not _plain(rest):
        return FALLBACK
    size = _size((size_arg,))
    dtype = rest.get("dtype")
    if dtype is None:  # inferred from the fill value
        kinds = {bool: torch.bool, int: torch.int64, float: torch.get_default_dtype()}
        dtype = kinds.get(type(fill))
    if size is None or dtype is None:
        return FALLBACK
    return new(size, dtype)


def _arange(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``arange(end)``, ``arange(start, end[, step])`` of ints: ``ceil((end - start) / step)`` elements."""
    rest = dict(kwargs)
    bounds = list(args)
    for name in ("start", "end", "step"):
        if name in rest:
            bounds.append(rest.pop(name))
    if not 1 <= len(bounds) <= 3 or not all(is_int(b) and not isinstance(b, bool) for b in bounds):
        return FALLBACK
    if not _plain(rest):
        return FALLBACK
    start, end, step = (0, bounds[0], 1) if len(bounds) == 1 else (*bounds, 1)[:3]
    start, end, step = int(start), int(end), int(step)
    if step == 0 or (step > 0 and end < start) or (step < 0 and end > start):
        return FALLBACK  # torch raises
    return new((-((start - end) // step),), rest.get("dtype") or torch.int64)


def _linspace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``linspace(start, end, steps)`` of Python numbers (reference points of a feature map): ``steps`` values of
    the default float dtype unless given; tensor bounds run on meta."""
    rest = dict(kwargs)
    given = list(args)
    for name in ("start", "end", "steps"):
        if name in rest:
            given.append(rest.pop(name))
    if len(given) != 3 or not _plain(rest):
        return FALLBACK
    start, end, steps = given
    if not all(type(v) in (int, float) for v in (start, end)) or not is_int(steps) or steps < 0:
        return FALLBACK  # torch raises on negative steps
    return new((int(steps),), rest.get("dtype") or torch.get_default_dtype())


def _eye(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``eye(n, m=n)``: an n × m matrix of the default float dtype unless given."""
    rest = dict(kwargs)
    given = list(args)
    for name in ("n", "m"):
        if name in rest:
            given.append(rest.pop(name))
    if not 1 <= len(given) <= 2 or not all(is_int(v) and v >= 0 for v in given) or not _plain(rest):
        return FALLBACK
    return new((given[0], given[-1]), rest.get("dtype") or torch.get_default_dtype())


def _meshgrid(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``meshgrid(*tensors, indexing="ij")`` of 0-dim or 1-dim tensors of one dtype: each output is its input
    viewed along its own dim and expanded (stride 0 elsewhere); ``"xy"`` swaps the first two dims."""
    tensors = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
    indexing = kwargs.get("indexing") or "ij"
    if not {"indexing"}.issuperset(kwargs) or indexing not in ("ij", "xy") or not tensors:
        return FALLBACK
    if not all(isinstance(t, torch.Tensor) and t.dim() <= 1 for t in tensors):
        return FALLBACK
    if len({t.dtype for t in tensors}) != 1:
        return FALLBACK  # torch raises
    sizes = [t.numel() for t in tensors]
    where = list(range(len(tensors)))  # the output dim along which each input varies
    if indexing == "xy" and len(tensors) > 1:
        sizes[0], sizes[1] = sizes[1], sizes[0]
        where[0], where[1] = 1, 0
    outputs = []
    for t, dim in zip(tensors, where):
        stride = [0] * len(sizes)
        stride[dim] = t.stride()[0] if t.dim() else 1
        outputs.append(view(sizes, stride, t.dtype))
    return tuple(outputs)


def _nested_shape(data: Any) -> tuple[tuple[int, ...], set[type]] | None:
    """The shape of a Python number or of nested lists/tuples of them, with the types of the numbers; None when
    ragged, empty, or holding anything else (a tensor, numpy)."""
    kind = type(data)
    if kind in (bool, int, float, complex):
        return (), {kind}
    if not isinstance(data, (list, tuple)) or not data:  # fx's immutable_list too
        return None
    parts = [_nested_shape(d) for d in data]
    if any(p is None for p in parts) or len({p[0] for p in parts if p is not None}) != 1:
        return None
    inner = parts[0]
    assert inner is not None
    return (len(data), *inner[0]), set().union(*(p[1] for p in parts if p is not None))


def python_data(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch.tensor(data)`` of Python numbers (DeBERTa's ``torch.tensor(mid - 1)``): their nesting is the shape,
    their types the dtype (bool, then int64, then the default float dtype, then complex) unless given."""
    if len(args) != 1 or not _plain(kwargs):
        return FALLBACK
    found = _nested_shape(args[0])
    if found is None:
        return FALLBACK
    shape, kinds = found
    dtype = kwargs.get("dtype")
    if dtype is None:
        default = torch.get_default_dtype()
        if complex in kinds:
            dtype = torch.complex128 if default == torch.float64 else torch.complex64
        elif float in kinds:
            dtype = default
        else:
            dtype = torch.int64 if int in kinds else torch.bool
    return new(shape, dtype)


builtin(torch.zeros, torch.ones, torch.empty, shape=fn(_filled))
builtin(torch.rand, torch.randn, shape=fn(_random))
builtin(torch.full, shape=fn(_full))
builtin(torch.arange, shape=fn(_arange))
builtin(torch.tensor, shape=fn(python_data))
builtin(torch.linspace, shape=fn(_linspace))
builtin(torch.eye, shape=fn(_eye))
builtin(torch.meshgrid, shape=fn(_meshgrid))


def _new_filled(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.new_zeros(size)``, ``x.new_ones(*size)``, ``x.new_empty(...)``: contiguous, x's dtype unless given."""
    if not args or not isinstance(args[0], torch.Tensor):
        return FALLBACK
    rest = dict(kwargs)
    size = _size(args[1:] if len(args) > 1 else ((rest.pop("size"),) if "size" in rest else ()))
    if size is None or not _plain(rest):
        return FALLBACK
    return new(size, rest.get("dtype") or args[0].dtype)


def _new_full(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.new_full(size, fill_value)``: contiguous, x's dtype unless given (not the fill value's)."""
    rest = dict(kwargs)
    given = list(args[1:])
    for name in ("size", "fill_value"):
        if name in rest:
            given.append(rest.pop(name))
    if not args or not isinstance(args[0], torch.Tensor) or len(given) != 2 or not _plain(rest):
        return FALLBACK
    size = _size((given[0],))
    return FALLBACK if size is None else new(size, rest.get("dtype") or args[0].dtype)


def _like(fill: bool) -> Any:
    """``zeros_like(x)``/``ones_like``/``empty_like`` (``full_like(x, value)``): x's strides when it is dense."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        rest = dict(kwargs)
        given = list(args)
        if fill and "fill_value" in rest:
            given.append(rest.pop("fill_value"))
        if "input" in rest:
            given.insert(0, rest.pop("input"))
        if len(given) != 1 + fill or not isinstance(given[0], torch.Tensor):
            return FALLBACK
        if rest.pop("memory_format", torch.preserve_format) is not torch.preserve_format or not _plain(rest):
            return FALLBACK
        if fill and not isinstance(given[1], (bool, int, float)):
            return FALLBACK
        return preserved(given[0], rest.get("dtype") or given[0].dtype)

    return rule


builtin("new_zeros", "new_ones", "new_empty", shape=fn(_new_filled))
builtin("new_full", shape=fn(_new_full))
builtin(torch.zeros_like, torch.ones_like, torch.empty_like, shape=fn(_like(fill=False)))
builtin(torch.full_like, shape=fn(_like(fill=True)))


_SINE_POSITIONS: Spec = (("shape", REQUIRED), ("device", REQUIRED), ("dtype", REQUIRED), ("mask", None))


def _sine_positions(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Any) -> Any:
    """transformers' ``SinePositionEmbedding`` of DETR's family (``forward(shape, device, dtype, mask=None)``): for
    each position of an (N, C, H, W) map, or of a mask's (N, H, W), the sines and cosines of its row and column at
    ``num_position_features`` frequencies: (N, 2 * num_position_features, H, W) in ``dtype``, the layout of the
    (N, H, W, 2F) map it permutes (channels-last).  41 nodes when traced through; an odd feature count (which its
    ``torch.stack`` refuses) or anything else runs on meta."""
    b = bind(args, kwargs, _SINE_POSITIONS)
    features: Any = getattr(module, "num_position_features", None)
    if b is None or not is_int(features) or features % 2 or not isinstance(b[2], torch.dtype):
        return FALLBACK
    shape, dtype, mask = b[0], b[2], b[3]
    if not dtype.is_floating_point or not isinstance(shape, (tuple, list)) or len(shape) != 4:
        return FALLBACK  # torch.Size is a tuple; its forward unpacks four sizes whether or not a mask is given
    sizes: tuple[Any, ...]
    if mask is None:
        sizes = (shape[0], shape[2], shape[3])
    elif isinstance(mask, torch.Tensor) and mask.dim() == 3:
        sizes = tuple(mask.shape)
    else:
        return FALLBACK
    if not all(is_int(d) and d >= 0 for d in (*shape, *sizes)):
        return FALLBACK
    return torch.empty((*sizes, 2 * features), dtype=dtype, device="meta").permute(0, 3, 1, 2)


builtin(  # one forward, copied into each model (Deformable DETR's positions start at 0.5: the same shapes)
    *transformers_copies(
        "SinePositionEmbedding",
        ("detr", "Detr"),
        ("conditional_detr", "ConditionalDetr"),
        ("deformable_detr", "DeformableDetr"),
        ("maskformer", "MaskFormer"),
        ("mask2former", "Mask2Former"),
        ("oneformer", "OneFormer"),
        ("sam2", "Sam2"),
        ("edgetam", "EdgeTam"),
        ("sam3", "Sam3"),
        ("sam3_lite_text", "Sam3LiteText"),
    ),
    shape=_sine_positions,
    leaf=True,
)
