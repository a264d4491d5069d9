"""einops' rules (rearrange, repeat, reduce; Rearrange, Reduce) against einops itself: shape, dtype and strides."""

from __future__ import annotations

from typing import Any

import einops
import pytest
import torch
from einops import reduce, repeat
from einops.layers.torch import Rearrange, Reduce
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from models import assert_same_state, model_state
from torchsurgeon import paramcount
from torchsurgeon.rules import FALLBACK, Call, disabled_rules, function_rule, module_rule

# (pattern, axis lengths, the input shape as a function of three sizes a, b, c)
PATTERNS: list[tuple[str, dict[str, int], Any]] = [
    ("b c h w -> b (h w) c", {}, lambda a, b, c: (2, a, b, c)),
    ("b (h w) c -> b c h w", {"h": 3}, lambda a, b, c: (2, 3 * b, a)),
    ("b c d h w -> b d h w c", {}, lambda a, b, c: (1, a, b, c, 2)),
    ("b h w c -> b c h w", {}, lambda a, b, c: (a, b, c, 3)),
    ("b ... c -> b c ...", {}, lambda a, b, c: (2, a, b, c)),
    ("(b n) c -> b n c", {"n": 2}, lambda a, b, c: (2 * a, b)),
    ("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", {"p1": 2, "p2": 2}, lambda a, b, c: (1, a, 2 * b, 2 * c)),
    ("b n (h d) -> b h n d", {"h": 2}, lambda a, b, c: (a, b, 2 * c)),
    ("b h n d -> b n (h d)", {}, lambda a, b, c: (1, a, b, c)),
    ("b c h w -> b c h w", {}, lambda a, b, c: (1, a, b, c)),
]


def _signature(t: torch.Tensor) -> tuple[Any, ...]:
    """Shape, dtype and the strides of the dims larger than 1 (those of size-1 dims do not matter)."""
    strides = tuple((i, s) for i, (n, s) in enumerate(zip(t.shape, t.stride())) if n > 1)
    return tuple(t.shape), t.dtype, strides


def _layout(x: torch.Tensor, how: str) -> torch.Tensor:
    """``x`` (on meta or the CPU) as it is, with its dims stored in reverse order, or as every other element of a
    tensor twice as long in its last dim."""
    if how == "permuted" and x.dim() > 1:
        return x.transpose(0, -1).contiguous().transpose(0, -1)
    if how == "sliced":
        return torch.zeros((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype, device=x.device)[..., ::2]
    return x


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(range(len(PATTERNS))),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(["contiguous", "permuted", "sliced"]),
    st.sampled_from([torch.float32, torch.bfloat16]),
    st.booleans(),
)
def test_rearrange_rules_match_einops_on_meta(
    which: int, a: int, b: int, c: int, layout: str, dtype: torch.dtype, as_layer: bool
) -> None:
    pattern, lengths, shape = PATTERNS[which]
    x = _layout(torch.empty(shape(a, b, c), dtype=dtype, device="meta"), layout)
    if as_layer:
        layer = Rearrange(pattern, **lengths)
        found = module_rule(Rearrange)
        assert found is not None and found[0].shape is not None
        out = found[0].shape(layer, (x,), {}, Call("", "", False))
        want = layer(x)
    else:
        rule = function_rule(einops.rearrange)
        assert rule is not None and rule.shape is not None
        out = rule.shape(None, (x, pattern), dict(lengths), Call("", "", False))
        want = einops.rearrange(x, pattern, **lengths)
    assert out is not FALLBACK
    assert _signature(out) == _signature(want)


# repeat: (pattern, axis lengths, the input shape as a function of three sizes a, b, c)
REPEATS: list[tuple[str, dict[str, int], Any]] = [
    ("() n d -> b n d", {"b": 3}, lambda a, b, c: (1, a, b)),  # vit-pytorch's class token
    ("1 1 d -> b 1 d", {"b": 2}, lambda a, b, c: (1, 1, a)),
    ("n d -> b n d", {"b": 2}, lambda a, b, c: (a, b)),  # register tokens
    ("... d -> b ... d", {"b": 2}, lambda a, b, c: (a, 1, b)),
    ("b n d -> b n (d j)", {"j": 2}, lambda a, b, c: (a, b, c)),  # rotary embeddings
    ("b c h w -> b c (h 2) (w 3)", {}, lambda a, b, c: (1, a, b, c)),  # upsampling by repetition
    ("b c h w -> b c h w k", {"k": 2}, lambda a, b, c: (1, a, b, c)),
    ("b n -> b n d", {"d": 3}, lambda a, b, c: (a, b)),  # indices for a gather
    ("h w c -> (b h) w c", {"b": 2}, lambda a, b, c: (a, b, c)),
]

# reduce: (pattern, axis lengths, the input shape)
REDUCES: list[tuple[str, dict[str, int], Any]] = [
    ("b c h w -> b c", {}, lambda a, b, c: (2, a, b, c)),  # global pooling heads
    ("b n d -> b d", {}, lambda a, b, c: (a, b, c)),
    ("b c (h h2) (w w2) -> b c h w", {"h2": 2, "w2": 2}, lambda a, b, c: (1, a, 2 * b, 2 * c)),  # pooling
    ("b (h p) d -> b h d", {"p": 2}, lambda a, b, c: (a, 2 * b, c)),
    ("b c h w -> b c () ()", {}, lambda a, b, c: (1, a, b, c)),
    ("b c h w -> c", {}, lambda a, b, c: (a, b, c, 2)),
    ("b h w c -> b c h w", {}, lambda a, b, c: (1, a, b, c)),  # nothing reduced: a rearrangement
]


@settings(max_examples=50, deadline=None)
@given(
    st.booleans(),
    st.integers(0, 99),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from(["contiguous", "permuted", "sliced"]),
    st.sampled_from([torch.float32, torch.bfloat16, torch.int64]),
    st.sampled_from(["mean", "sum", "max", "min"]),
    st.booleans(),
)
def test_repeat_and_reduce_rules_match_einops_on_the_cpu(
    repeating: bool,
    which: int,
    a: int,
    b: int,
    c: int,
    layout: str,
    dtype: torch.dtype,
    reduction: str,
    as_layer: bool,
) -> None:
    """einops' ``repeat`` and ``reduce`` functions and its ``Reduce`` layer: the rules give what a real CPU call gives
    (shape, dtype, the strides of an expanded or reduced output); where they fall back (a reduction of integers
    that is not a sum), meta decides, as it does for a real call that fails."""
    table = REPEATS if repeating else REDUCES
    pattern, lengths, shape = table[which % len(table)]
    x = _layout(torch.zeros(shape(a, b, c), dtype=dtype), layout)
    meta = torch.empty_strided(x.shape, x.stride(), dtype=dtype, device="meta")  # .to("meta") of a slice: contiguous
    if repeating:
        rule = function_rule(einops.repeat)
        assert rule is not None and rule.shape is not None
        out = rule.shape(None, (meta, pattern), dict(lengths), Call("", "", False))
        want: Any = einops.repeat(x, pattern, **lengths)
    elif as_layer:
        layer = Reduce(pattern, reduction, **lengths)
        found = module_rule(Reduce)
        assert found is not None and found[0].shape is not None
        out = found[0].shape(layer, (meta,), {}, Call("", "", False))
        try:
            want = layer(x)
        except RuntimeError:  # torch's mean of integers
            want = None
    else:
        rule = function_rule(einops.reduce)
        assert rule is not None and rule.shape is not None
        out = rule.shape(None, (meta, pattern, reduction), dict(lengths), Call("", "", False))
        try:
            want = einops.reduce(x, pattern, reduction, **lengths)
        except (NotImplementedError, einops.EinopsError):  # einops' mean of integers
            want = None
    if out is FALLBACK:
        assert not repeating and dtype == torch.int64 and reduction != "sum" and "->" in pattern
        return
    assert want is not None and _signature(out) == _signature(want)


def test_reductions_einops_has_no_rule_for_run_on_meta() -> None:
    """``prod``, and a callable reduction, fall back to meta (einops' own call), as do lengths given as tensors."""
    rule = function_rule(einops.reduce)
    repeat = function_rule(einops.repeat)
    assert rule is not None and rule.shape is not None and repeat is not None and repeat.shape is not None
    x = torch.empty(2, 3, 4, device="meta")
    assert rule.shape(None, (x, "b n d -> b d", "prod"), {}, Call("", "", False)) is FALLBACK
    assert rule.shape(None, (x, "b n d -> b d", torch.var), {}, Call("", "", False)) is FALLBACK
    assert repeat.shape(None, (x, "b n d -> b n d k"), {"k": torch.tensor(2)}, Call("", "", False)) is FALLBACK
    assert rule.shape(None, (x, "b n d -> b d", "mean"), {}, Call("", "", False)) is not FALLBACK


def test_vit_pytorch_style_tokens_and_pooling_need_no_meta_fallback() -> None:
    """A ViT as vit-pytorch writes it (its class token repeated over the batch, a Reduce pooling head):
    every einops call has its rule, and the numbers are a real forward's."""

    class TinyViT(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_patches = Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=4, p2=4)
            self.embed = torch.nn.Linear(48, 16)
            self.cls_token = torch.nn.Parameter(torch.randn(1, 1, 16))
            self.block = torch.nn.Sequential(torch.nn.LayerNorm(16), torch.nn.Linear(16, 16), torch.nn.GELU())
            self.to_map = Rearrange("b (h w) d -> b d h w", h=4)
            self.pool = Reduce("b d h w -> b d", "max")
            self.head = torch.nn.Linear(32, 5)

        def forward(self, img: torch.Tensor) -> torch.Tensor:
            x = self.embed(self.to_patches(img))
            cls = repeat(self.cls_token, "() n d -> b n d", b=x.shape[0])  # as imported: fx wraps the call
            x = self.block(torch.cat((cls, x), dim=1))
            pooled = torch.cat((reduce(x, "b n d -> b d", "mean"), self.pool(self.to_map(x[:, 1:]))), -1)
            return self.head(pooled)

    model = TinyViT().eval()
    before = model_state(model)
    report = paramcount(model, (3, 16, 16), batch=2)
    assert_same_state(before, model_state(model))
    assert report.shape_fallbacks == []
    with torch.no_grad():
        assert report.output_shape == tuple(model(torch.zeros(2, 3, 16, 16)).shape) == (2, 5)
    assert report.total == sum(p.numel() for p in model.parameters())
    kinds = [layer.type for layer in report.layers]
    assert kinds.count("repeat()") == kinds.count("reduce()") == kinds.count("Reduce") == 1


def test_a_shape_einops_refuses_runs_on_meta_with_einops_message() -> None:
    rule = function_rule(einops.rearrange)
    assert rule is not None and rule.shape is not None
    x = torch.empty(2, 5, 4, device="meta")
    assert rule.shape(None, (x, "b (h w) c -> b c h w"), {"h": 2}, Call("", "", False)) is FALLBACK
    with pytest.raises(einops.EinopsError, match="Shape mismatch"):
        einops.rearrange(x, "b (h w) c -> b c h w", h=2)


@pytest.mark.slow  # a SwinUNETR analysed and run: `make test` runs it, `make check` skips it
def test_monai_swin_unetr_needs_no_meta_fallback() -> None:
    monai = pytest.importorskip("monai.networks.nets")
    model = monai.SwinUNETR(in_channels=3, out_channels=2, feature_size=12, spatial_dims=2).eval()
    report = paramcount(model, (3, 64, 64))
    assert not [name for name in report.shape_fallbacks if "rearrange" in name.lower()]
    with torch.no_grad():
        assert report.output_shape == tuple(model(torch.zeros(1, 3, 64, 64)).shape)


def test_the_layer_rule_reads_einops_own_recipe_cache() -> None:
    """The rule asks einops' cache of the recipe per input shape, as a real call does: a second layer of the same
    pattern at the same shape is a hit there (computing it again was a fifth of the rule's time)."""
    from einops.einops import _reconstruct_from_shape

    found = module_rule(Rearrange)
    assert found is not None and found[0].shape is not None
    layer = Rearrange("b h (qkv l d) -> qkv b l h d", qkv=3, l=4)
    x = torch.empty(2, 7, 3 * 4 * 5, device="meta")
    found[0].shape(layer, (x,), {}, Call("", "", False))
    before = _reconstruct_from_shape.cache_info().hits
    out = found[0].shape(layer, (x,), {}, Call("", "", False))
    assert _reconstruct_from_shape.cache_info().hits == before + 1
    assert _signature(out) == _signature(layer(x))


@pytest.mark.slow  # about 1 s in make check (make test runs it)
@settings(deadline=None, max_examples=40)
@given(
    spatial=st.integers(2, 3),
    batch=st.integers(1, 2),
    windows=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    window=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    extra=st.lists(st.integers(0, 1), min_size=3, max_size=3),
    channels=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_monai_swin_window_rules_match_the_cpu(
    spatial: int,
    batch: int,
    windows: list[int],
    window: list[int],
    extra: list[int],
    channels: int,
    dtype: torch.dtype,
) -> None:
    """MONAI Swin's ``window_partition``, ``window_reverse`` and ``compute_mask`` (kept as one call each: they ask
    the input's rank and unpack its shape): the rules give what a CPU call gives, shape, dtype and strides, for sizes
    the windows tile; sizes they do not tile (``extra``) fall back, and the CPU call fails or gives another
    shape there too."""
    swin = pytest.importorskip("monai.networks.nets.swin_unetr")
    ws = tuple(window[:spatial])
    sizes = tuple(n * w + e for n, w, e in zip(windows, ws, extra))
    tiled = all(s % w == 0 for s, w in zip(sizes, ws))
    x = torch.randn(batch, *sizes, channels, dtype=dtype)
    shift = tuple(w // 2 for w in ws)
    calls = [
        (swin.window_partition, (x, ws)),
        (swin.compute_mask, (list(sizes), ws, shift, torch.device("cpu"))),
    ]
    if tiled:
        parts = swin.window_partition(x, ws)
        calls.append((swin.window_reverse, (parts, ws, [batch, *sizes])))
    for function, args in calls:
        rule = function_rule(function)
        assert rule is not None and rule.shape is not None
        meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
        out = rule.shape(None, meta, {}, Call("", "", False))
        try:
            real = function(*args)
        except Exception:
            assert out is FALLBACK
            continue
        if tiled:
            assert out is not FALLBACK and _signature(out) == _signature(real), function.__name__
        else:
            assert out is FALLBACK, function.__name__


@pytest.mark.slow  # about 1.2 s in make check (make test runs it)
def test_monai_swin_windows_are_one_call_each() -> None:
    """SwinUNETR 2D: one row per window partition, reverse and mask (1,114 nodes -> 859 in the zoo's model);
    its numbers unchanged."""
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.SwinUNETR(in_channels=3, out_channels=2, feature_size=12, spatial_dims=2, depths=(1, 1, 1, 1)).eval()
    swin = pytest.importorskip("monai.networks.nets.swin_unetr")
    functions = (swin.window_partition, swin.window_reverse, swin.compute_mask)
    before = model_state(model)
    report = paramcount(model, (3, 64, 64))
    assert_same_state(before, model_state(model))
    assert (swin.window_partition, swin.window_reverse, swin.compute_mask) == functions  # fx's patches undone
    kinds = [layer.type for layer in report.layers]
    assert kinds.count("window_partition()") == kinds.count("window_reverse()") == 4
    assert kinds.count("compute_mask()") == 4 and report.shape_fallbacks == []
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        assert report.output_shape == tuple(model(torch.zeros(1, 3, 64, 64)).shape)
    assert report.macs == counter.get_total_flops() // 2
    assert report.total == sum(p.numel() for p in model.parameters())
    with disabled_rules():
        plain = paramcount(model, (3, 64, 64))
    assert "window_partition()" not in [layer.type for layer in plain.layers]
    assert (plain.total, plain.output_shape) == (report.total, report.output_shape)
