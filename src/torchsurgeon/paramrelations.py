"""How an edited parameter is made of a pretrained one, told by their values alone.

:func:`~torchsurgeon.surgery_check.check_surgery` asks these of a parameter
that is not the pretrained one as it was: a table with rows kept
(:func:`resized_rows`, ``resize_token_embeddings``, a ``keep=`` head, fine-tuned
since or not), a position grid resampled to another image size
(:func:`resampled`), a weight updated from the pretrained one
(:func:`derived`: fine-tuned, a merged LoRA, scaled, pruned, or another
parameter's copy) rather than drawn again, or a fold of one fine-tuned since
(:func:`folded_then_updated`).  A tensor of one value (a zero bias) says
nothing by its values: it is a copy only where the names say so
(:func:`copied_by_name`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .errors import TorchSurgeonError
from .fold import fold_weight
from .records import FoldMode, ParamChange

__all__ = (
    "cast",
    "copied_by_name",
    "derived",
    "folded_then_updated",
    "from_zeros",
    "inexact_repeat_note",
    "kept_pairs",
    "resampled",
    "resized_as",
    "resized_rows",
    "rows_kept",
    "same",
    "scaled_note",
    "updated",
    "updated_beside",
)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same values in the same shape and dtype (never for ``meta`` tensors).

    Examples
    --------
    >>> import torch
    >>> same(torch.ones(2), torch.ones(2)), same(torch.ones(2), torch.ones(2, dtype=torch.float64))
    (True, False)
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device.type == "meta" or b.device.type == "meta":
        return False
    return bool(torch.equal(a.detach(), b.detach().to(a.device)))


def cast(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``b`` is ``a`` converted to ``b``'s other dtype (its values rounded as the conversion rounds them:
    ``model.half()``, ``.to(torch.bfloat16)`` after an edit).

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(4, 3)
    >>> cast(w, w.half()), cast(w, w.double()), cast(w, w), cast(w, torch.randn(4, 3).half())
    (True, True, False, False)
    """
    if a.shape != b.shape or a.dtype == b.dtype or "meta" in (a.device.type, b.device.type):
        return False
    return bool(torch.equal(a.detach().to(b.device, b.dtype), b.detach()))


def _as_new(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``old`` detached, in ``new``'s dtype (as a model moved to another dtype after its edit rounds it), on its own
    device: the pretrained values a row of ``new`` equals exactly when it is one of them."""
    return old.detach().to(new.dtype)


def derived(name: str, p: torch.Tensor, orig: dict[str, torch.Tensor]) -> tuple[ParamChange, str, str] | None:
    """How ``p`` is made of the pretrained values, if it is (status, note, the original's name when another's): its
    own updated (fine-tuned, a merged LoRA: :func:`updated`), scaled (``w.mul_(0.5)``) or pruned (zeros where the
    rest is unchanged), or a copy of another parameter.

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(8, 4)
    >>> derived("fc.weight", 0.5 * w, {"fc.weight": w})
    (<ParamChange.UPDATED: 'updated'>, 'scaled: 0.5 × the pretrained values', '')
    >>> derived("head.weight", w.clone(), {"fc.weight": w, "head.weight": torch.randn(8, 4)})[1:]
    ('copied from fc.weight', 'fc.weight')
    """
    if p.is_meta or p.numel() < 2 or _one_value(p.detach()):  # one value (a zeroed bias): no one's
        source = copied_by_name(name, orig)  # unless the names say whose copy it is
        if source is not None and same(orig[source], p):
            return ParamChange.KEPT, f"copied from {source}", source
        return None
    o = orig.get(name)
    if o is not None and o.shape == p.shape and o.dtype == p.dtype and not o.is_meta:
        a, b = o.detach().double().flatten(), p.detach().double().flatten()
        kept = b != 0
        if bool(kept.any()) and not bool(kept.all()) and torch.equal(a[kept], b[kept]) and bool((a[~kept] != 0).any()):
            return (
                ParamChange.UPDATED,
                f"pruned: {float((~kept).double().mean()):.0%} of it zeroed, the rest pretrained",
                "",
            )
        nonzero = a != 0
        if bool(nonzero.any()) and torch.equal(nonzero, b != 0):
            k = _scale(a, b, nonzero)
            if k is not None:
                return ParamChange.UPDATED, f"scaled: {k:.4g} × the pretrained values", ""
    for other, t in orig.items():  # layers swapped or copied: another parameter's values
        if other != name and same(t, p):
            return ParamChange.KEPT, f"copied from {other}", other
    update = updated(o, p) if o is not None else None
    return (ParamChange.UPDATED, update, "") if update is not None else None


_FIRST = 4096
"""Values :func:`_one_value` and :func:`_scale` read first: a weight they do not describe (a fine-tuned one) already
differs there, and the whole tensor is read only when the first values agree."""


def _one_value(p: torch.Tensor) -> bool:
    """Whether every value of ``p`` (two or more) is its first."""
    flat = p.flatten()
    return (len(flat) <= _FIRST or bool(torch.all(flat[:_FIRST] == flat[0]))) and bool(torch.all(flat == flat[0]))


def _scale(a: torch.Tensor, b: torch.Tensor, nonzero: torch.Tensor) -> float | None:
    """The ``k`` (neither 0 nor 1) with ``b == k * a`` to a relative 1e-6 where ``a`` is nonzero (flat tensors of one
    shape, zero in the same places), else None; told by the first values when they already disagree (a first value
    that is nonzero is the whole tensor's first, so its ratio is the whole tensor's ``k``)."""
    head = nonzero[:_FIRST]
    if len(a) > _FIRST and bool(head.any()) and _ratio(a[:_FIRST], b[:_FIRST], head) is None:
        return None
    return _ratio(a, b, nonzero)


def _ratio(a: torch.Tensor, b: torch.Tensor, nonzero: torch.Tensor) -> float | None:
    """The ratio ``k`` (neither 0 nor 1) of ``b`` to ``a`` at their first nonzero value, if every nonzero value
    has it to a relative 1e-6; else None."""
    ratios = b[nonzero] / a[nonzero]
    k = float(ratios[0])
    if k in (0.0, 1.0) or not torch.allclose(ratios, torch.full_like(ratios, k), rtol=1e-6, atol=0):
        return None
    return k


_SAVED_COPY = re.compile(r"(?:(?P<owner>.+)\.)?modules_to_save\.[^.]+\.(?P<local>.+)")


def copied_by_name(name: str, orig: Mapping[str, torch.Tensor]) -> str | None:
    """The original parameter that ``name`` is a copy of by its name alone, if the original has it: peft's
    ``modules_to_save`` copies the module it wraps (``head.bias``, or ``head.original_module.bias`` in an original
    that is a peft model already) to ``head.modules_to_save.<adapter>.bias``.

    Values equal to another parameter's say it is a copy only when they are not all one value: a zero bias
    equals every zero bias of its size.

    Examples
    --------
    >>> import torch
    >>> orig = {"head.bias": torch.zeros(3), "body.bias": torch.zeros(3)}
    >>> copied_by_name("head.modules_to_save.default.bias", orig)
    'head.bias'
    >>> copied_by_name("classifier.modules_to_save.default.bias", orig) is None
    True
    """
    found = _SAVED_COPY.fullmatch(name)
    if found is None:
        return None
    owner, local = found["owner"], found["local"]
    wrapped = f"{owner}.original_module" if owner else "original_module"  # the original a peft model already
    return next((s for s in (f"{owner}.{local}" if owner else local, f"{wrapped}.{local}") if s in orig), None)


def _percent(change: float) -> str:
    """A relative change as the notes write it: ``12%``, ``0.95%``."""
    return f"{change:.0%}" if change >= 0.1 else f"{change * 100:.2g}%"


def updated(old: torch.Tensor, new: torch.Tensor) -> str | None:
    """How far ``new`` moved from the pretrained ``old`` when it is ``old`` changed, not a new draw: fine-tuned
    weights stay close to where they started, or keep their pattern (correlation), while a weight drawn again is
    as far from the pretrained one as both are large, and uncorrelated with it.  A change of low rank in a
    matrix (a merged LoRA) is named.  ``None`` for tensors too small to tell (16 values or fewer).

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> w = torch.randn(64, 32)
    >>> updated(w, w + 0.01 * torch.randn(64, 32))
    'updated: changed by 0.95% of its norm (correlation 1.0000 with the pretrained values)'
    >>> updated(w, w + torch.randn(64, 4) @ torch.randn(4, 32) * 0.1).split(", ")[-1]
    'a rank-4 change (a merged LoRA?)'
    >>> updated(w, torch.randn(64, 32)) is None
    True
    """
    if old.shape != new.shape or old.numel() <= 16 or not old.is_floating_point() or old.is_meta or new.is_meta:
        return None
    a, b = old.detach().double().flatten(), new.detach().double().flatten().to(old.device)
    norm = float(a.norm())
    if norm == 0 or float(b.std()) == 0:  # from zeros, or to a constant (a BatchNorm's ones): what a new draw gives
        return None
    diff = b - a
    change = float(diff.norm()) / norm
    # the correlation of two independent draws is within 5 standard errors of 0; a constant has none (ones, trained)
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if float(a.std()) > 0 else None
    if not (change < 0.5 or (r is not None and r >= max(0.5, 5 / math.sqrt(a.numel())))):
        return None
    note = f"updated: changed by {_percent(change)} of its norm" + (
        f" (correlation {r:.4f} with the pretrained values)" if r else ""
    )
    if old.dim() >= 2 and old.numel() <= 1_000_000:
        delta = diff.reshape(old.shape[0], -1)
        low = min(delta.shape) // 4  # the ranks named
        if low > 0 and not _rank_above(delta, low):
            values = torch.linalg.svdvals(delta)
            rank = int((values > values[0] * 1e-6).sum()) if float(values[0]) > 0 else 0
            if 0 < rank <= low:
                note += f", a rank-{rank} change (a merged LoRA?)"
    return note


def _rank_above(delta: torch.Tensor, k: int) -> bool:
    """Whether the matrix ``delta`` surely has more than ``k`` singular values over 1e-6 times its largest, told
    from a sketch: for a Gaussian ``g`` of ``k + 1`` columns, ``σ[k](delta @ g) <= σ[k](delta) * ‖g‖`` and
    ``σ[0](delta) <= ‖delta‖_F``, so a sketch whose last singular value is above ``2e-6 * ‖delta‖_F * ‖g‖_F``
    proves it (a fine-tuned weight's change, of full rank) at a fraction of the cost of every singular value.
    False when the sketch does not prove it (a change of low rank): the full decomposition decides."""
    wide = delta if delta.shape[1] >= delta.shape[0] else delta.T
    g = torch.randn(wide.shape[1], k + 1, dtype=delta.dtype, generator=torch.Generator().manual_seed(0))
    last = float(torch.linalg.svdvals(wide @ g.to(wide.device))[-1])
    return last > 2e-6 * float(torch.linalg.matrix_norm(wide)) * float(torch.linalg.matrix_norm(g))


def updated_beside(old: torch.Tensor, new: torch.Tensor, layer: str) -> str | None:
    """How far ``new`` moved from ``old`` when the tensor is too small for :func:`updated` to tell (a bias of a few
    values) but the weight beside it, in ``layer``, was updated: changed by under half its norm; else ``None``.

    Examples
    --------
    >>> import torch
    >>> b = torch.tensor([0.1, -0.2, 0.3])
    >>> updated_beside(b, b + 0.001, "fc")
    'updated: changed by 0.46% of its norm, as fc.weight beside it'
    >>> updated_beside(b, torch.tensor([0.3, 0.1, -0.2]), "fc") is None
    True
    """
    if old.shape != new.shape or not old.is_floating_point() or "meta" in (old.device.type, new.device.type):
        return None
    a, b = old.detach().double(), new.detach().double().to(old.device)
    norm = float(a.norm())
    change = float((b - a).norm()) / norm if norm else math.inf
    if change >= 0.5:
        return None
    return f"updated: changed by {_percent(change)} of its norm, as {layer}.weight beside it"


def folded_then_updated(old: torch.Tensor, new: torch.Tensor) -> str | None:
    """How ``new``, of another input width than ``old`` (``(out, in, *kernel)``, rows as a fold reads them), is a
    fold of it trained since (an adapted stem fine-tuned): the fold it is closest to, and how far it moved from it
    (:func:`updated`); ``None`` when it is no fold's update (a weight drawn again).

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> w = torch.randn(16, 3, 3, 3)
    >>> folded_then_updated(w, w.sum(1, keepdim=True) + 0.01 * torch.randn(16, 1, 3, 3)).split(" (")[0]
    'sum fold of the original, then updated: changed by 0.67% of its norm'
    >>> folded_then_updated(w, torch.randn(16, 1, 3, 3)) is None
    True
    """
    if old.dim() < 2 or old.shape[0] != new.shape[0] or old.shape[2:] != new.shape[2:] or old.shape[1] == new.shape[1]:
        return None
    if not (old.is_floating_point() and new.is_floating_point()) or "meta" in (old.device.type, new.device.type):
        return None
    found: list[tuple[float, FoldMode, str]] = []
    for mode in (FoldMode.SUM, FoldMode.SPREAD, FoldMode.REPEAT, FoldMode.ZERO_EXTRA):
        try:
            folded = fold_weight(old.detach().double(), new.shape[1], mode)
        except TorchSurgeonError:  # not a fold to this width (sum to 1 only, zero_extra adds channels)
            continue
        note = updated(folded, new.detach().double().to(old.device))
        if note is not None:
            distance = float((new.detach().double().to(old.device) - folded).norm())
            found.append((distance, mode, note))
    if not found:
        return None
    _, mode, note = min(found, key=lambda f: f[0])
    return f"{mode} fold of the original, then {note}"


def inexact_repeat_note(before: int, channels: int, layer: str) -> str:
    """What a ``repeat`` fold to a channel count that is not a multiple of the original's keeps
    (:func:`~torchsurgeon.fold.is_exact_fold`), and the fold that is exact.

    Examples
    --------
    >>> inexact_repeat_note(13, 2, "conv1")  # doctest: +NORMALIZE_WHITESPACE
    ", not exact — 2 is not a multiple of 13: the filters of the first 2 channels × 6.5, so no input gives the
    original's output; exact on one band replicated: adapt_input_channels(model, 2, 'spread', layer='conv1')"
    """
    kept = f"the first {channels} channels" if channels < before else f"the channels tiled to {channels}"
    return (
        f", not exact — {channels} is not a multiple of {before}: the filters of {kept} × {before / channels:.4g}, "
        f"so no input gives the original's output; exact on one band replicated: "
        f"adapt_input_channels(model, {channels}, 'spread', layer={layer!r})"
    )


def scaled_note(mode: FoldMode, k: float, width: int, channels: int, layer: str) -> str:
    """What a scaled fold (:func:`~torchsurgeon.fold.recognise_scaled_fold`) keeps and what it does not.

    Examples
    --------
    >>> scaled_note(FoldMode.SUM, 1 / 3, 3, 1, "conv1")  # doctest: +NORMALIZE_WHITESPACE
    "the mean of the pretrained channels (the sum fold × 0.3333): not exact — on the input the fold relates this
    layer gives 0.3333 × the original's output; exact: adapt_input_channels(model, 1, 'sum', layer='conv1')"
    """
    what = (
        "the mean of the pretrained channels"
        if abs(k * (width if mode == FoldMode.SUM else width / channels) - 1) < 1e-6
        else "pretrained, scaled"
    )
    return (
        f"{what} (the {mode} fold × {k:.4g}): not exact — on the input the fold relates this layer gives "
        f"{k:.4g} × the original's output; exact: adapt_input_channels(model, {channels}, '{mode}', layer={layer!r})"
    )


def _row_matches(old: torch.Tensor, new: torch.Tensor) -> list[tuple[int, list[int]]] | None:
    """For tensors of the same shape but the first dim (an embedding, a head): each new row equal to old rows, with
    those rows' positions; ``None`` when the shapes do not allow it or the comparison would be too big."""
    if (
        old.dim() != new.dim()
        or old.dim() == 0
        or old.shape[1:] != new.shape[1:]
        or old.device.type == "meta"
        or new.device.type == "meta"
        or old.shape[0] * new.shape[0] > 10_000_000
    ):
        return None
    o = _as_new(old, new).reshape(old.shape[0], -1)
    n = new.detach().reshape(new.shape[0], -1).to(old.device)
    if o.numel() * n.shape[0] > 50_000_000:
        return None
    pairs = (n[:, None, 0] == o[None, :, 0]).nonzero()  # rows equal in their first value, by new row then old
    pairs = pairs[(n[pairs[:, 0]] == o[pairs[:, 1]]).all(-1)]  # of them, those equal in every value
    matches: dict[int, list[int]] = {}
    for i, j in pairs.tolist():
        matches.setdefault(i, []).append(j)
    return list(matches.items())


def rows_kept(old: torch.Tensor, new: torch.Tensor) -> str:
    """For a resized 2-D head: how many new rows equal an old row.

    Examples
    --------
    >>> import torch
    >>> old = torch.randn(5, 4)
    >>> rows_kept(old, torch.stack([old[3], torch.randn(4)]))
    '1 row(s) carried over: 0←3'
    """
    kept = _row_matches(old, new)
    if not kept:
        return ""
    return (  # a row equal to several old ones (zero biases) does not say which it came from
        f"{len(kept)} row(s) carried over: "
        + ", ".join(f"{i}←{js[0]}" if len(js) == 1 else f"{i}←one of {len(js)} equal rows" for i, js in kept[:10])
        + (" ..." if len(kept) > 10 else "")
    )


def from_zeros(old: torch.Tensor, new: torch.Tensor) -> bool:
    """Whether ``old`` is all zeros (a bias as initialised) and ``new`` the same shape, not all alike.

    Examples
    --------
    >>> import torch
    >>> from_zeros(torch.zeros(3), torch.tensor([0.1, 0.0, -0.2])), from_zeros(torch.zeros(3), torch.ones(3))
    (True, False)
    """
    if old.shape != new.shape or old.is_meta or new.is_meta or new.numel() < 2:
        return False
    flat = new.detach().flatten()
    return not bool(old.detach().any()) and not bool(torch.all(flat == flat[0]))


def resampled(old: torch.Tensor, new: torch.Tensor) -> str | None:
    """How a position table was resampled to another image size, if it was: the pretrained grid interpolated as
    timm's ``resample_abs_pos_embed`` (bicubic, antialiased, by default) or ``F.interpolate`` does it, the prefix
    tokens (class, distillation, registers) kept.  ``old`` and ``new``: ``(1, tokens, dim)`` or ``(tokens, dim)``.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> old = torch.randn(1, 1 + 14 * 14, 8)
    >>> grid = old[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    >>> grid = F.interpolate(grid, size=(24, 24), mode="bicubic", antialias=True).permute(0, 2, 3, 1)
    >>> resampled(old, torch.cat([old[:, :1], grid.reshape(1, -1, 8)], dim=1))
    'resampled: the pretrained 14×14 position grid interpolated (bicubic, antialiased) to 24×24; 1 prefix token kept'
    >>> resampled(old, torch.randn(1, 1 + 24 * 24, 8)) is None
    True
    """
    if old.dim() not in (2, 3) or old.dim() != new.dim() or not old.is_floating_point() or old.dtype != new.dtype:
        return None
    if "meta" in (old.device.type, new.device.type) or old.shape[-1] != new.shape[-1]:
        return None
    o, n = old.detach().reshape(-1, old.shape[-2], old.shape[-1]), new.detach().reshape(-1, *new.shape[-2:])
    if o.shape[0] != 1 or n.shape[0] != 1 or o.shape[1] == n.shape[1] or max(o.numel(), n.numel()) > 50_000_000:
        return None  # a vocabulary is no grid: the tables compared here are a few thousand positions
    n = n.to(o.device)
    equal = 0  # leading rows kept: the prefix tokens, and a grid's corner where the interpolation keeps it
    while equal < min(16, o.shape[1], n.shape[1]) and torch.equal(o[0, equal], n[0, equal]):
        equal += 1
    for prefix in range(equal, -1, -1):
        found = _grid_resampled(o, n, prefix)
        if found is not None:
            tokens = f"; {prefix} prefix token{'s' * (prefix != 1)} kept" if prefix else ""
            return f"resampled: the pretrained {found}{tokens}"
    return None


def _grid_resampled(old: torch.Tensor, new: torch.Tensor, prefix: int) -> str | None:
    """:func:`resampled` for one count of prefix tokens: the grid and how it was interpolated, if it was."""
    side = math.isqrt(old.shape[1] - prefix)
    if side * side != old.shape[1] - prefix or side < 2:
        return None
    cells = new.shape[1] - prefix
    grid = old[:, prefix:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    target = new[:, prefix:].double()
    scale = float(target.abs().max()) or 1.0
    for h in (h for h in range(1, cells + 1) if cells % h == 0 and 8 * h * h >= cells and h * h <= 8 * cells):
        w = cells // h
        for mode, antialias in (("bicubic", True), ("bicubic", False), ("bilinear", True), ("bilinear", False)):
            for corners in (False, True):
                out = F.interpolate(grid, size=(h, w), mode=mode, align_corners=corners, antialias=antialias)
                out = out.permute(0, 2, 3, 1).reshape(1, -1, old.shape[-1]).to(old.dtype).double()
                if torch.allclose(out, target, rtol=1e-4, atol=1e-5 * scale):
                    how = ", ".join([mode, *(["antialiased"] if antialias else []), *(["corners"] if corners else [])])
                    return f"{side}×{side} position grid interpolated ({how}) to {h}×{w}"
    return None


def resized_rows(old: torch.Tensor, new: torch.Tensor, *, alike: bool = False) -> tuple[str, list[int]] | None:
    """How a table of rows was resized (``resize_token_embeddings`` keeps the first rows and adds or drops the
    rest; a head may keep some classes' rows): a note, and the positions of the rows that are not pretrained.
    ``None`` when no row is the pretrained one.  Rows of one value (a zero bias) say nothing on their own:
    ``alike=True`` accepts them where the weight beside them was resized the same way.

    Examples
    --------
    >>> import torch
    >>> old = torch.randn(100, 8)
    >>> resized_rows(old, torch.cat([old, torch.randn(10, 8)]))
    ('rows 0–99 pretrained, 10 new (100–109)', [100, 101, 102, 103, 104, 105, 106, 107, 108, 109])
    >>> resized_rows(old, old[:90].clone())
    ('rows 0–89 pretrained, 10 dropped (90–99)', [])
    >>> resized_rows(old, old[[7, 3]].clone())
    ('2 of 100 pretrained rows kept: 0←7, 1←3', [])
    >>> resized_rows(old, torch.randn(10, 8)) is None
    True

    As many rows as before, some of them pretrained ones moved (``replace_head(model, 3, keep={0: 2, 1: 0})``):

    >>> head = torch.randn(3, 8)
    >>> resized_rows(head, torch.stack([head[2], head[0], torch.randn(8)]))
    ('2 of 3 pretrained rows kept: 0←2, 1←0; 1 new', [2])

    Such a head fine-tuned since: each row of over 16 values near one pretrained row (as :func:`updated` tells):

    >>> head = torch.randn(100, 32)
    >>> resized_rows(head, torch.stack([head[7] + 0.01 * torch.randn(32), torch.randn(32)]))[0].split(" (")[0]
    '1 of 100 pretrained rows kept, then updated'
    """
    if old.dim() == 0 or old.shape[1:] != new.shape[1:] or (old.shape[0] == new.shape[0] and old.dim() == 1):
        return None  # a number of the same table equal to a pretrained one is no evidence (a dead unit's bias)
    if "meta" in (old.device.type, new.device.type) or old.numel() == 0:
        return None
    if old.dtype != new.dtype and not (old.is_floating_point() and new.is_floating_point()):
        return None
    rows, k = new.shape[0], min(old.shape[0], new.shape[0])
    flat = old.detach().flatten()
    if not alike and bool(torch.all(flat == flat[0])):
        return None
    if torch.equal(_as_new(old, new)[:k], new.detach()[:k].to(old.device)):  # resize_token_embeddings, a head grown
        if rows == old.shape[0]:  # the same table: not resized
            return None
        if rows > k:
            return f"rows 0–{k - 1} pretrained, {rows - k} new ({k}–{rows - 1})", list(range(k, rows))
        return f"rows 0–{k - 1} pretrained, {old.shape[0] - k} dropped ({k}–{old.shape[0] - 1})", []
    matches = _row_matches(old, new)
    kept = [(i, js[0]) for i, js in matches or () if len(js) == 1]  # rows of one old row each: evidence
    since = ""
    if not kept:  # a keep= head fine-tuned since: each kept row close to one pretrained row
        kept = _updated_pairs(old, new)
        matches = [(i, [j]) for i, j in kept]
        since = f", then updated ({_change(old, new, kept)})" if kept else ""
    if not kept:
        return None
    fresh = sorted(set(range(rows)) - {i for i, _ in matches or ()})
    pairs = ", ".join(f"{i}←{j}" for i, j in kept[:10]) + (" ..." if len(kept) > 10 else "")
    note = f"{len(kept)} of {old.shape[0]} pretrained rows kept{since}: {pairs}"
    return (note + (f"; {len(fresh)} new" if fresh else ""), fresh)


_CHANCE = 1e-6
"""How likely :func:`_updated_pairs` may be to take a row drawn at random for an updated pretrained one."""


def _updated_pairs(old: torch.Tensor, new: torch.Tensor) -> list[tuple[int, int]]:
    """The rows ``(new, old)`` of a table with rows of over 16 values where each new row is one pretrained row
    updated (:func:`updated`'s test, row by row, on the nearest pretrained row): changed by under half its norm or
    correlated with it, and more correlated than any of the ``new × old`` pairs of random rows is once in a million
    (a fresh head is never such).  Empty where the comparison would be too big: over 4M pairs of rows, or over
    1G multiplications (a vocabulary of token embeddings)."""
    if old.dim() < 2 or old.shape[1:] != new.shape[1:] or "meta" in (old.device.type, new.device.type):
        return []
    width, pairs = math.prod(old.shape[1:]), old.shape[0] * new.shape[0]
    if width <= 16 or pairs > 4_000_000 or pairs * width > 1_000_000_000 or not new.is_floating_point():
        return []
    o = old.detach().double().reshape(old.shape[0], width)
    n = new.detach().double().to(old.device).reshape(new.shape[0], width)
    if not old.is_floating_point():
        return []
    nearest = torch.cdist(n, o).argmin(1)
    a, b = o[nearest], n
    ac, bc = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    scale = ac.norm(dim=1) * bc.norm(dim=1)
    r = torch.where(scale > 0, (ac * bc).sum(1) / scale.clamp_min(1e-300), torch.zeros_like(scale)).clamp(-1, 1)
    change = (b - a).norm(dim=1) / a.norm(dim=1)
    # a random row's correlation with one other is r or more with odds under (1 - r²)^((width - 3) / 2)
    odds = math.log(pairs) + (width - 3) / 2 * torch.log1p(-(r**2).clamp(max=1 - 1e-16))
    close = ((change < 0.5) | (r >= 0.5)) & (r > 0) & (odds < math.log(_CHANCE))
    return [(i, int(nearest[i])) for i in range(new.shape[0]) if bool(close[i])]


def _change(old: torch.Tensor, new: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> str:
    """How far the rows ``pairs`` ``(new, old)`` of ``new`` moved from their pretrained rows: "changed by 4.7% of
    their norm"."""
    rows, olds = [i for i, _ in pairs], [j for _, j in pairs]
    a = old.detach().double()[olds]
    change = float((new.detach().double().to(old.device)[rows] - a).norm() / a.norm())
    return f"changed by {_percent(change)} of their norm"


def kept_pairs(old: torch.Tensor, new: torch.Tensor) -> list[tuple[int, int]]:
    """The rows ``(new, old)`` of a resized table that are one pretrained row each.

    Examples
    --------
    >>> import torch
    >>> old = torch.randn(5, 3)
    >>> kept_pairs(old, torch.stack([old[2], torch.randn(3)]))
    [(0, 2)]
    """
    return [(i, js[0]) for i, js in _row_matches(old, new) or () if len(js) == 1] or _updated_pairs(old, new)


def resized_as(old: torch.Tensor, new: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> tuple[str, list[int]] | None:
    """:func:`resized_rows` for a parameter whose rows say nothing on their own (a bias of zeros, as transformers and
    timm start a head), beside a weight resized keeping the rows ``pairs`` ``(new, old)``: resized the same way
    when each of those rows holds its old value.  ``None`` without such rows, or when one differs.

    Examples
    --------
    >>> import torch
    >>> resized_as(torch.zeros(5), torch.tensor([0.0, 0.3, -0.2, 0.0]), [(0, 2), (3, 4)])
    ('2 of 5 pretrained rows kept: 0←2, 3←4, as the weight beside it; 2 new', [1, 2])
    >>> resized_as(torch.zeros(5), torch.tensor([0.1, 0.3, -0.2, 0.0]), [(0, 2), (3, 4)]) is None
    True
    """
    if not pairs or old.dim() == 0 or old.shape[1:] != new.shape[1:] or "meta" in (old.device.type, new.device.type):
        return None
    if any(i >= new.shape[0] or j >= old.shape[0] for i, j in pairs):
        return None
    since = ""
    if not all(torch.equal(new.detach()[i].to(old.device), _as_new(old, new)[j]) for i, j in pairs):
        kept = old.detach().double()[[j for _, j in pairs]]  # fine-tuned since, as the weight: under half its norm
        moved = new.detach().double().to(old.device)[[i for i, _ in pairs]] - kept
        if not old.is_floating_point() or float(kept.norm()) == 0 or float(moved.norm() / kept.norm()) >= 0.5:
            return None
        since = f", then updated ({_change(old, new, pairs)})"
    fresh = sorted(set(range(new.shape[0])) - {i for i, _ in pairs})
    shown = ", ".join(f"{i}←{j}" for i, j in pairs[:10]) + (" ..." if len(pairs) > 10 else "")
    note = f"{len(pairs)} of {old.shape[0]} pretrained rows kept{since}: {shown}, as the weight beside it"
    return (note + (f"; {len(fresh)} new" if fresh else ""), fresh)
