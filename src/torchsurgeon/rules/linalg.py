"""Matrix products and attention: matmul, bmm, mm, grouped mm, F.linear, F.embedding, scaled dot-product and
multi-head attention.

MACs count multiply-accumulates (``flops = 2 * macs``, as FlopCounterMode);
``einsum`` of two operands is counted as the batched product torch runs for it
(each index summed in one operand only is summed first, without MACs; without
a contracted index it is an element-wise product, no MACs); other
``einsum`` calls, ``tensordot`` and ``mv`` are listed as uncounted rather than
counted as zero.  ``einsum``'s output layout is its meta kernel's, asked once
per equation and operand layout.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..records import FlopKind
from ._common import (
    REQUIRED,
    OpRule,
    Spec,
    bind,
    broadcast,
    fit_fix,
    float_tensor,
    fn,
    fn_count,
    is_int,
    new,
    numel,
    same_float,
    view,
)
from .registry import FALLBACK, Call, builtin

__all__: tuple[str, ...] = ()


def _matmul(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("other", REQUIRED)))
    if b is None or not same_float(b[0], b[1]):
        return FALLBACK
    a, c = b[0], b[1]
    if a.dim() == 0 or c.dim() == 0:
        return FALLBACK
    if a.shape[-1] != c.shape[-2 if c.dim() > 1 else -1]:
        return FALLBACK
    if a.dim() == 1 and c.dim() == 1:
        return new((), a.dtype)
    if c.dim() == 1:
        return new(a.shape[:-1], a.dtype)
    if a.dim() == 1:
        return new((*c.shape[:-2], c.shape[-1]), a.dtype)
    batch = broadcast(a.shape[:-2], c.shape[:-2])
    if batch is None:
        return FALLBACK
    return new((*batch, a.shape[-2], c.shape[-1]), a.dtype)


def _bmm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("mat2", REQUIRED)))
    if b is None or not same_float(b[0], b[1]):
        return FALLBACK
    a, c = b[0], b[1]
    if a.dim() != 3 or c.dim() != 3 or a.shape[0] != c.shape[0] or a.shape[2] != c.shape[1]:
        return FALLBACK
    return new((a.shape[0], a.shape[1], c.shape[2]), a.dtype)


def _linear_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    b = bind(args, kwargs, (("input", REQUIRED), ("weight", REQUIRED), ("bias", None)))
    if b is None or not same_float(b[0], b[1]):
        return FALLBACK
    x, w, bias = b
    if x.dim() == 0 or w.dim() not in (1, 2) or x.shape[-1] != w.shape[-1]:
        return FALLBACK
    out = (w.shape[0],) if w.dim() == 2 else ()  # a 1-d weight (D-FINE's integral): a dot product per row
    if bias is not None and (w.dim() == 1 or not same_float(x, bias) or tuple(bias.shape) != out):
        return FALLBACK  # torch takes no bias with a 1-d weight
    return new((*x.shape[:-1], *out), x.dtype)


def _linear_fn_rule(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
    """``F.linear``: its output; an input whose features are not the weight's is a mismatch, and propagation goes on
    as if the weight were resized.

    The mismatch names the ``nn.Linear`` whose ``forward`` calls ``F.linear`` on its own weight (timm's ``Linear``,
    which torch.fx traces into), with that layer's fix, as an ``nn.Linear`` module's rule would.
    """
    out = _linear_fn(args, kwargs)
    b = bind(args, kwargs, (("input", REQUIRED), ("weight", REQUIRED), ("bias", None)))
    if out is not FALLBACK or b is None or not same_float(b[0], b[1]) or b[0].dim() == 0 or b[1].dim() != 2:
        return out
    x, w, bias = b
    expected, got = int(w.shape[1]), int(x.shape[-1])
    if got == expected or (bias is not None and (not same_float(x, bias) or tuple(bias.shape) != (w.shape[0],))):
        return FALLBACK
    owner = call.scope_module
    if isinstance(owner, nn.Linear) and tuple(owner.weight.shape) == tuple(w.shape):
        layer, kind = call.scope or call.layer, type(owner).__name__
        named = Call(
            layer,
            kind,
            call.from_input,
            pooled=call.pooled,
            fold_input=call.fold_input,
            fold_alone=call.fold_alone,
            whole_model=not call.scope,
        )
        call.mismatch(
            "in_features", expected, got, fit_fix(named, owner, "in_features", expected, got), layer=layer, type=kind
        )
    else:
        call.mismatch("in_features", expected, got, f"what comes before it gives {got}: make that give {expected}")
    return new((*x.shape[:-1], w.shape[0]), x.dtype)


def _embedding_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spec: Spec = (
        ("input", REQUIRED),
        ("weight", REQUIRED),
        ("padding_idx", None),
        ("max_norm", None),
        ("norm_type", 2.0),
        ("scale_grad_by_freq", False),
        ("sparse", False),
    )
    b = bind(args, kwargs, spec)
    if b is None or not isinstance(b[0], torch.Tensor) or not isinstance(b[1], torch.Tensor):
        return FALLBACK
    ids, w = b[0], b[1]
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or w.dim() != 2 or b[3] is not None:
        return FALLBACK
    return new((*ids.shape, w.shape[1]), w.dtype)


def _sdpa(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spec: Spec = (
        ("query", REQUIRED),
        ("key", REQUIRED),
        ("value", REQUIRED),
        ("attn_mask", None),
        ("dropout_p", 0.0),
        ("is_causal", False),
        ("scale", None),
        ("enable_gqa", False),
    )
    b = bind(args, kwargs, spec)
    if b is None:
        return FALLBACK
    q, k, v, mask, dropout_p, is_causal, scale, gqa = b
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)) or gqa is not False:
        return FALLBACK
    if mask is not None:  # a bool mask or an additive one of q's dtype, broadcast to (..., L, S)
        scores = (*q.shape[:-1], k.shape[-2])
        if not isinstance(mask, torch.Tensor) or is_causal is not False or mask.dtype not in (torch.bool, q.dtype):
            return FALLBACK
        if mask.dim() > len(scores) or broadcast(mask.shape, scores) != tuple(scores):
            return FALLBACK
    dtype = q.dtype
    if not dtype.is_floating_point or k.dtype != dtype or v.dtype != dtype:
        return FALLBACK
    if not isinstance(dropout_p, (int, float)) or not isinstance(is_causal, bool):
        return FALLBACK
    if scale is not None and not isinstance(scale, (int, float)):
        return FALLBACK
    if not q.dim() == k.dim() == v.dim() or q.dim() < 3:
        return FALLBACK
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        return FALLBACK
    return new((*q.shape[:-1], v.shape[-1]), dtype)


def _encoder_layer(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
    """nn.TransformerEncoderLayer given features of another width than its ``d_model``: a mismatch whose fix
    rebuilds it for that width, and the output as if it took them (its input's shape); else meta runs it."""
    assert isinstance(m, nn.TransformerEncoderLayer)
    x: Any = args[0] if args else kwargs.get("src")
    width = m.self_attn.embed_dim
    if not float_tensor(x) or x.dim() not in (2, 3) or x.shape[-1] == width:
        return FALLBACK
    got = int(x.shape[-1])
    call.mismatch("d_model", width, got, fit_fix(call, m, "d_model", width, got))
    return new(x.shape, x.dtype)


def _mha_module(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
    """nn.MultiheadAttention without masks: (output, averaged or per-head weights or None)."""
    assert isinstance(m, nn.MultiheadAttention)
    spec: Spec = (
        ("query", REQUIRED),
        ("key", REQUIRED),
        ("value", REQUIRED),
        ("key_padding_mask", None),
        ("need_weights", True),
        ("attn_mask", None),
        ("average_attn_weights", True),
        ("is_causal", False),
    )
    b = bind(args, kwargs, spec)
    if b is None:
        return FALLBACK
    q, k, v, key_padding_mask, need_weights, attn_mask, average, is_causal = b
    if key_padding_mask is not None or attn_mask is not None or is_causal is not False:
        return FALLBACK
    if not isinstance(need_weights, bool) or not isinstance(average, bool):
        return FALLBACK
    if not float_tensor(q) or not isinstance(k, torch.Tensor) or not isinstance(v, torch.Tensor):
        return FALLBACK
    weight = m.in_proj_weight if m.in_proj_weight is not None else m.q_proj_weight
    if k.dtype != q.dtype or v.dtype != q.dtype or weight is None or weight.dtype != q.dtype:
        return FALLBACK
    if m.bias_k is not None or m.add_zero_attn or q.dim() not in (2, 3) or not q.dim() == k.dim() == v.dim():
        return FALLBACK
    if q.shape[-1] != m.embed_dim or k.shape[-1] != m.kdim or v.shape[-1] != m.vdim:
        return FALLBACK
    e, heads = m.embed_dim, m.num_heads
    if q.dim() == 2:
        length, source = int(q.shape[0]), int(k.shape[0])
        if v.shape[0] != source:
            return FALLBACK
        out = new((length, e), q.dtype)
        lead: tuple[int, ...] = ()
    else:
        if m.batch_first:
            (n, length), (nk, source), (nv, sv) = q.shape[:2], k.shape[:2], v.shape[:2]
        else:
            (length, n), (source, nk), (sv, nv) = q.shape[:2], k.shape[:2], v.shape[:2]
        if nk != n or nv != n or sv != source:
            return FALLBACK
        # computed sequence-first, returned transposed when batch_first
        out = view((n, length, e), (e, n * e, 1), q.dtype) if m.batch_first else new((length, n, e), q.dtype)
        lead = (int(n),)
    return _with_weights(out, need_weights, average, lead, heads, length, source)


def _with_weights(
    out: torch.Tensor, need: bool, average: bool, lead: tuple[int, ...], heads: int, length: int, source: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head attention's (output, weights): the weights, (*lead, length, source) averaged over the heads or
    (*lead, heads, length, source) per head, or None when not wanted."""
    if not need:
        return (out, None)
    return (out, new((*lead, *(() if average else (heads,)), length, source), out.dtype))


def _matmul_shapes(a: Any, b: Any) -> int:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.dim() == 0 or b.dim() == 0:
        return 0
    a2 = (1, *a.shape) if a.dim() == 1 else tuple(a.shape)
    b2 = (*b.shape, 1) if b.dim() == 1 else tuple(b.shape)
    batch = broadcast(a2[:-2], b2[:-2]) or ()
    return numel(batch) * a2[-2] * a2[-1] * b2[-1]


def _matmul_macs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    values = [*args, *kwargs.values()]
    return _matmul_shapes(values[0], values[1]) if len(values) >= 2 else 0


def _linear_fn_macs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    b = bind(args, kwargs, (("input", REQUIRED), ("weight", REQUIRED), ("bias", None)))
    if b is None:
        return 0
    x, w = b[0].shape, b[1].shape
    return numel(x[:-1]) * int(x[-1]) * (int(w[0]) if len(w) == 2 else 1)


def _sdpa_macs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    named = [kwargs.get(name) for name in ("query", "key", "value")]
    tensors = [t for t in (*args[:3], *named) if isinstance(t, torch.Tensor)]
    if len(tensors) < 3:
        return 0
    q, k, v = (t.shape for t in tensors[:3])
    return numel(q[:-1]) * k[-2] * (q[-1] + v[-1])


def _mha_macs(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    named = [kwargs.get(name) for name in ("query", "key", "value")]
    tensors = [t for t in (*args[:3], *named) if isinstance(t, torch.Tensor)]
    if len(tensors) < 3:
        return 0
    q, k = tensors[0].shape, tensors[1].shape
    e = m.embed_dim
    if len(q) == 3 and m.batch_first:
        n, length, source = q[0], q[1], k[1]
    elif len(q) == 3:
        n, length, source = q[1], q[0], k[0]
    else:
        n, length, source = 1, q[0], k[0]
    kdim, vdim = int(m.kdim), int(m.vdim)
    projections = n * (length * e * e + source * kdim * e + source * vdim * e + length * e * e)
    return int(projections + n * length * source * e * 2)  # q @ k^T and weights @ v over all heads


def _added_product_macs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """``addmm``/``baddbmm``/``addbmm(input, a, b)`` (the method on ``input`` alike): the MACs of ``a @ b``."""
    a = args[1] if len(args) > 1 else kwargs.get("mat1", kwargs.get("batch1"))
    b = args[2] if len(args) > 2 else kwargs.get("mat2", kwargs.get("batch2"))
    return _matmul_shapes(a, b)


def _added_product(batched: bool, summed: bool = False) -> OpRule:
    """``addmm(input, mat1, mat2)``, ``baddbmm(input, batch1, batch2)``, ``addbmm`` (the method on ``input``
    alike): the product's shape (``addbmm`` sums the batch away), contiguous, for floats of one dtype and an
    ``input`` that broadcasts to it."""
    names = ("batch1", "batch2") if batched or summed else ("mat1", "mat2")
    spec: Spec = (("input", REQUIRED), (names[0], REQUIRED), (names[1], REQUIRED), ("beta", 1), ("alpha", 1))

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = bind(args, kwargs, spec)
        if b is None or not same_float(b[0], b[1], b[2]) or not all(isinstance(v, (int, float)) for v in b[3:]):
            return FALLBACK
        x, m1, m2 = b[0], b[1], b[2]
        rank = 3 if batched or summed else 2
        if m1.dim() != rank or m2.dim() != rank or m1.shape[-1] != m2.shape[-2]:
            return FALLBACK
        if rank == 3 and m1.shape[0] != m2.shape[0]:
            return FALLBACK
        shape = (*(m1.shape[:1] if batched else ()), m1.shape[-2], m2.shape[-1])
        if broadcast(x.shape, shape) != tuple(shape):
            return FALLBACK
        return new(shape, m1.dtype)

    return rule


def _outer(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch.outer(a, b)`` of two vectors (rotary position tables): ``(len(a), len(b))``, their promoted dtype
    (Flux's float32 positions times float64 frequencies: float64)."""
    b = bind(args, kwargs, (("input", REQUIRED), ("vec2", REQUIRED)))
    if b is None or not all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in b):
        return FALLBACK
    return new((b[0].shape[0], b[1].shape[0]), torch.result_type(b[0], b[1]))


_MHA_SPEC = (
    ("query", REQUIRED),
    ("key", REQUIRED),
    ("value", REQUIRED),
    ("embed_dim_to_check", REQUIRED),
    ("num_heads", REQUIRED),
    ("in_proj_weight", REQUIRED),
    ("in_proj_bias", REQUIRED),
    ("bias_k", REQUIRED),
    ("bias_v", REQUIRED),
    ("add_zero_attn", REQUIRED),
    ("dropout_p", REQUIRED),
    ("out_proj_weight", REQUIRED),
    ("out_proj_bias", REQUIRED),
    ("training", True),
    ("key_padding_mask", None),
    ("need_weights", True),
    ("attn_mask", None),
    ("use_separate_proj_weight", False),
    ("q_proj_weight", None),
    ("k_proj_weight", None),
    ("v_proj_weight", None),
    ("static_k", None),
    ("static_v", None),
    ("average_attn_weights", True),
    ("is_causal", False),
)


def _mha_fn_macs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """``F.multi_head_attention_forward`` (open_clip's attention pooling): projections and attention.

    Inputs are ``(L, N, E)`` or unbatched ``(L, E)``; the key and value
    projections map their own widths to ``E``; ``bias_k`` and
    ``add_zero_attn`` each add one key.  Precomputed keys (``static_k``)
    raise: the formula does not cover them and the FLOPs are listed as unknown.
    """
    b = bind(args, kwargs, _MHA_SPEC)
    if b is None or b[21] is not None or b[22] is not None:
        raise ValueError("multi_head_attention_forward arguments outside the MAC formula")
    q, k, v = b[0].shape, b[1].shape, b[2].shape
    e = int(q[-1])
    n = int(q[1]) if len(q) == 3 else 1
    length, source = int(q[0]), int(k[0]) + (b[7] is not None) + bool(b[9])
    out_weight = b[11].shape  # (output width, E): open_clip's attention pooling projects to another width
    inputs = length * e * e + int(k[0]) * int(k[-1]) * e + int(v[0]) * int(v[-1]) * e
    return n * (inputs + 2 * length * source * e + length * int(out_weight[1]) * int(out_weight[0]))


_GROUPED_SPEC: Spec = (("mat_a", REQUIRED), ("mat_b", REQUIRED), ("offs", None), ("bias", None), ("out_dtype", None))
_GROUPED_DTYPES = frozenset({torch.float32, torch.bfloat16, torch.float16})


def _mha_fn_sizes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """``F.multi_head_attention_forward`` without masks, added keys or static keys, sequence first:
    (length, source, batch or None, query width, key width, value width, output width, heads, need_weights,
    average, dtype); None for any other call."""
    b = bind(args, kwargs, _MHA_SPEC)
    if b is None:
        return None
    q, k, v, check, heads, in_w, _, bias_k, bias_v, zero, _, out_w, _, _, padding, need, mask, separate = b[:18]
    q_w, k_w, v_w, static_k, static_v, average, causal = b[18:]
    if any(t is not None for t in (bias_k, bias_v, padding, mask, static_k, static_v)) or zero or causal:
        return None
    if not float_tensor(q) or not all(isinstance(t, torch.Tensor) and t.dtype == q.dtype for t in (k, v, out_w)):
        return None
    if q.dim() not in (2, 3) or not q.dim() == k.dim() == v.dim() or k.shape[:-1] != v.shape[:-1] or out_w.dim() != 2:
        return None
    e, ek, ev = int(q.shape[-1]), int(k.shape[-1]), int(v.shape[-1])
    if check != e or not is_int(heads) or heads <= 0 or e % heads or out_w.shape[1] != e:
        return None
    if q.dim() == 3 and q.shape[1] != k.shape[1]:
        return None
    wanted: tuple[tuple[Any, tuple[int, int]], ...]
    if separate is True:
        wanted = ((q_w, (e, e)), (k_w, (e, ek)), (v_w, (e, ev)))
    elif separate is False and ek == e and ev == e:
        wanted = ((in_w, (3 * e, e)),)
    else:
        return None
    if not all(isinstance(w, torch.Tensor) and w.dtype == q.dtype and tuple(w.shape) == s for w, s in wanted):
        return None
    if not isinstance(need, bool) or not isinstance(average, bool):
        return None
    batch = int(q.shape[1]) if q.dim() == 3 else None
    return int(q.shape[0]), int(k.shape[0]), batch, e, ek, ev, int(out_w.shape[0]), heads, need, average, q.dtype


def _mha_fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """(output, averaged or per-head weights or None), as ``nn.MultiheadAttention`` gives them (open_clip's ResNet
    pools its map with this function)."""
    sizes = _mha_fn_sizes(args, kwargs)
    if sizes is None:
        return FALLBACK
    length, source, batch, _, _, _, width, heads, need, average, dtype = sizes
    lead = () if batch is None else (batch,)
    return _with_weights(new((length, *lead, width), dtype), need, average, lead, heads, length, source)


def _grouped_strides(mat: torch.Tensor) -> bool:
    """torch's layout check of a grouped-mm operand: row- or column-major last two dims, 16-byte aligned."""
    alignment = 16 // mat.element_size()
    stride, shape = mat.stride(), mat.shape
    if stride[-2] == 1 and stride[-1] >= max(1, shape[-2]):
        return stride[-1] % alignment == 0
    if stride[-1] == 1 and stride[-2] >= max(1, shape[-1]):
        return stride[-2] % alignment == 0
    return False


def _grouped_mm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch._grouped_mm`` / ``F.grouped_mm`` (Mixture-of-Experts layers: each token's rows times its expert's
    weight): the CPU kernel's checks and output.  torch's meta kernel accepts only the GPU's dtypes (bfloat16), so a
    float32 MoE model that runs on the CPU would fail on meta: this rule is what a real CPU forward does."""
    b = bind(args, kwargs, _GROUPED_SPEC)
    if b is None or b[3] is not None or not isinstance(b[0], torch.Tensor) or not isinstance(b[1], torch.Tensor):
        return FALLBACK
    a, c, offs, _, out_dtype = b
    if a.dtype not in _GROUPED_DTYPES or c.dtype != a.dtype or out_dtype not in (None, a.dtype):
        return FALLBACK
    if a.dim() not in (2, 3) or c.dim() not in (2, 3) or not (_grouped_strides(a) and _grouped_strides(c)):
        return FALLBACK
    if (a.dim() == 3 or c.dim() == 3) and a.shape[-1] != c.shape[-2]:
        return FALLBACK
    if a.dim() == 3 and c.dim() == 3:
        if offs is not None or a.shape[0] != c.shape[0]:
            return FALLBACK
        return _grouped_output((a.shape[0], a.shape[1], c.shape[-1]), a.dtype)
    if not isinstance(offs, torch.Tensor) or offs.dtype != torch.int32 or offs.dim() != 1 or offs.stride() != (1,):
        return FALLBACK
    groups = int(offs.shape[0])
    if a.dim() == 2 and c.dim() == 2:
        return _grouped_output((groups, a.shape[0], c.shape[1]), a.dtype)
    if groups != (c.shape[0] if a.dim() == 2 else a.shape[0]):
        return FALLBACK
    return _grouped_output((a.shape[0], c.shape[-1]) if a.dim() == 2 else (a.shape[1], c.shape[1]), a.dtype)


def _grouped_mm_macs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """Each row of the jagged operand times its group's matrix: as if the offsets cover every row, as the
    Mixture-of-Experts layers that call it pass them (rows past ``offs[-1]`` would be skipped)."""
    b = bind(args, kwargs, _GROUPED_SPEC)
    assert b is not None
    a, c = b[0], b[1]
    rows = numel(out.shape[1:]) if a.dim() == 2 and c.dim() == 2 else numel(out.shape)  # 2-d x 2-d: K is jagged
    return rows * int(a.shape[-1])


def _grouped_output(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The kernel's output: rows padded to 16 bytes."""
    alignment = 16 // dtype.itemsize
    padded = (int(shape[-1]) + alignment - 1) // alignment * alignment
    stride = (int(shape[1]) * padded, padded, 1) if len(shape) == 3 else (padded, 1)
    return view(shape, stride, dtype)


_MATMUL = fn_count(_matmul_macs)
_ADDED = fn_count(_added_product_macs)
builtin(torch.addmm, "addmm", shape=fn(_added_product(False)), macs=_ADDED, kind=FlopKind.MATMUL)
builtin(torch.baddbmm, "baddbmm", shape=fn(_added_product(True)), macs=_ADDED, kind=FlopKind.MATMUL)
builtin(torch.addbmm, "addbmm", shape=fn(_added_product(False, summed=True)), macs=_ADDED, kind=FlopKind.MATMUL)
builtin(F.multi_head_attention_forward, shape=fn(_mha_fn), macs=fn_count(_mha_fn_macs), kind=FlopKind.ATTENTION)


def _einsum_operands(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, tuple[torch.Tensor, ...]] | None:
    """``torch.einsum(equation, *operands)`` (or with the operands as one list); None for the sublist form."""
    if kwargs or len(args) < 2 or not isinstance(args[0], str):
        return None
    operands = args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands or not all(type(t) is torch.Tensor for t in operands):
        return None
    return args[0], tuple(operands)


@functools.lru_cache(maxsize=1024)
def _einsum_layout(
    equation: str, operands: tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...]
) -> tuple[tuple[int, ...], tuple[int, ...], torch.dtype] | None:
    """The shape, strides and dtype of einsum's output for these operand layouts, from its meta kernel (the
    strides follow the contraction torch picks); None when it raises."""
    given = [torch.empty_strided(size, stride, dtype=dtype, device="meta") for size, stride, dtype in operands]
    try:
        with torch._C.DisableTorchFunction():  # the kernel itself, not the rules around this call
            out = torch.einsum(equation, *given)
    except Exception:
        return None
    return tuple(out.shape), out.stride(), out.dtype


def _einsum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _einsum_operands(args, kwargs)
    if call is None:
        return FALLBACK
    equation, operands = call
    layout = _einsum_layout(equation, tuple((tuple(t.shape), t.stride(), t.dtype) for t in operands))
    return FALLBACK if layout is None else view(*layout)


def _einsum_macs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """Two operands, no ellipsis: the product of the sizes of every index but those one operand sums alone (none
    when no index is contracted: torch then multiplies element-wise, which FlopCounterMode does not count).

    An index of size 1 in one operand broadcasts: torch's ``sumproduct_pair`` sums it first in the other operand
    when it is contracted, so only an index above 1 in both operands is contracted by the product."""
    call = _einsum_operands(args, kwargs)
    if call is None or len(call[1]) != 2 or "." in call[0]:
        raise ValueError("einsum MACs are known for two operands without an ellipsis")
    equation, (a, b) = call[0].replace(" ", ""), call[1]
    inputs, _, output = equation.partition("->")
    left, right = inputs.split(",")
    if "->" not in equation:  # implicit output: the indices that appear once, sorted
        output = "".join(sorted(i for i in set(left + right) if (left + right).count(i) == 1))
    sizes: dict[str, int] = {}
    for indices, t in ((left, a), (right, b)):
        if len(indices) != t.dim():
            raise ValueError("the equation does not fit the operands")
        for i, n in zip(indices, t.shape):
            sizes[i] = max(sizes.get(i, 1), int(n))  # a size-1 index broadcasts
    # an index of size 1 in an operand is not in it for the product (it broadcasts, or is squeezed)
    left_, right_ = ({i for i, n in zip(ix, t.shape) if n != 1} for ix, t in ((left, a), (right, b)))
    if not (left_ & right_) - set(output):  # nothing contracted: torch multiplies element-wise
        return 0
    alone = (set(left) | set(right)) - set(output) - (left_ & right_)  # summed in one operand first
    return numel([n for i, n in sizes.items() if i not in alone])


builtin(torch.matmul, "matmul", shape=fn(_matmul), macs=_MATMUL, kind=FlopKind.MATMUL)
builtin(torch.bmm, "bmm", shape=fn(_bmm), macs=_MATMUL, kind=FlopKind.MATMUL)
builtin(torch.mm, "mm", macs=_MATMUL, kind=FlopKind.MATMUL)
builtin(torch.outer, "outer", torch.ger, "ger", shape=fn(_outer))
builtin(F.linear, shape=_linear_fn_rule, macs=fn_count(_linear_fn_macs), kind=FlopKind.LINEAR)
builtin(F.embedding, shape=fn(_embedding_fn))
_GROUPED = [f for f in (getattr(torch, "_grouped_mm", None), getattr(F, "grouped_mm", None)) if f is not None]
if _GROUPED:  # torch >= 2.8
    builtin(*_GROUPED, shape=fn(_grouped_mm), macs=fn_count(_grouped_mm_macs), kind=FlopKind.MATMUL)
builtin(F.scaled_dot_product_attention, shape=fn(_sdpa), macs=fn_count(_sdpa_macs), kind=FlopKind.ATTENTION)
builtin(nn.MultiheadAttention, shape=_mha_module, macs=_mha_macs, kind=FlopKind.ATTENTION)
builtin(nn.TransformerEncoderLayer, shape=_encoder_layer, uncounted=True)  # counted by the calls it makes
builtin(torch.einsum, shape=fn(_einsum), macs=fn_count(_einsum_macs), kind=FlopKind.MATMUL)
builtin(torch.tensordot, torch.mv, uncounted=True)
# products without a formula here: unknown, never zero (a torch function "does what its name says")
builtin(F.bilinear, torch.addmv, torch.inner, torch.dot, torch.vdot, torch.chain_matmul, uncounted=True)
builtin(torch.linalg.multi_dot, "addmv", "inner", "dot", "vdot", uncounted=True)
