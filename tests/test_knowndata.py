"""Tests for torchsurgeon.knowndata: Python on known data (sizes, settings, masks of ones) takes the real path."""

from __future__ import annotations

import operator
from typing import Any

import pytest
import torch
import torch.fx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchsurgeon import TraceError, TypedShape, paramcount, paramcount_sweep
from torchsurgeon.graph import build_graph
from torchsurgeon.knowndata import KnownData, as_meta, masks_as_indices, on_one_device, retried_with_data
from torchsurgeon.records import Trust
from torchsurgeon.shapes import propagate_shapes
from torchsurgeon.trace import trace


class FirstTokenIfNoPadding(nn.Module):
    """Builds a mask of ones from the input's size and decides by its data, as transformers' mask helpers do."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[:2], device=x.device)
        if mask.sum() == mask.numel():  # no padding: one token stands for all
            x = x[:, :1]
        return self.proj(x)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = FirstTokenIfNoPadding()
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))


@pytest.mark.parametrize("length", [3, 7])
def test_a_decision_on_a_mask_of_ones_takes_the_real_path(length: int) -> None:
    model = Model()
    r = paramcount(model, (length, 4))
    with torch.no_grad():
        want = tuple(model(torch.randn(1, length, 4)).shape)
    assert want == (1, 1, 2)
    assert r.opaque == {} and r.output_shape == want and r.trusted
    assert r.macs == 1 * (4 * 6 + 6 * 2)  # one token through both layers, not `length`


class LargeMask(FirstTokenIfNoPadding):
    """A mask too large to keep on the CPU (more than DATA_LIMIT elements): its data is not known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[0], x.shape[1], 300, 300, device=x.device)
        if mask.sum() == mask.numel():
            x = x[:, :1]
        return self.proj(x)


def test_a_large_tensor_of_known_data_stays_data_dependent() -> None:
    r = paramcount(nn.Sequential(LargeMask()), (2, 4))
    assert list(r.opaque) == ["0"] and r.output_shape == (1, 1, 6)  # the opaque layer run on meta says so


class StepsAsTensor(nn.Module):
    """A factory given a traced tensor (diffusers' ``torch.tensor([timestep], device=sample.device)``): not known
    data; its shape is answered on meta, as before known data."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.tensor([x.mean()], device=x.device)
        if len(steps) == 1:  # a question about its shape only
            x = x * steps
        return self.lin(x)


def test_a_factory_of_traced_data_is_answered_on_meta() -> None:
    r = paramcount(StepsAsTensor(), (8, 4))
    assert r.opaque == {} and r.output_shape == (1, 8, 4) and r.trusted


# --------------------------------------------------------------- positions past the end of a table


class LearnedPositions(nn.Module):
    """Adds a learned position embedding to each token, as GPT-2 does: positions made with ``torch.arange``."""

    def __init__(self, positions: int = 8) -> None:
        super().__init__()
        self.tokens = nn.Linear(4, 6)
        self.positions = nn.Embedding(positions, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        return self.tokens(x) + self.positions(ids)


@torch.fx.wrap
def relative_bias(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """timm MViTv2's ``cal_rel_pos_type`` in short: distances made from sizes index a table (a leaf function)."""
    n = q.shape[1]
    dist = torch.arange(n, device=q.device)[:, None] - torch.arange(n, device=q.device)[None, :] + n - 1
    return q + table[dist.long()].sum(-1)[None]


class RelativePositions(nn.Module):
    def __init__(self, size: int = 5) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(2 * size - 1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relative_bias(x, self.table)


@pytest.mark.parametrize(
    ("model", "fits", "longer", "layer", "error"),
    [
        (LearnedPositions(), (8, 4), (10, 4), "positions", "index out of range in self"),
        pytest.param(
            RelativePositions(),
            (5, 5),
            (6, 6),
            "relative_bias",
            "index 9 is out of bounds for dimension 0 with size 9",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["embedding in the graph", "table in a leaf function"],
)
def test_positions_past_the_end_of_a_table_make_the_layer_invalid(
    model: nn.Module, fits: tuple[int, ...], longer: tuple[int, ...], layer: str, error: str
) -> None:
    """An input longer than the model was built for: its shapes all fit, but the real forward raises IndexError."""
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, *fits)).shape) == (1, *fits[:1], 6 if layer == "positions" else fits[1])
        with pytest.raises(IndexError, match=error):
            model(torch.zeros(1, *longer))
    ok = paramcount(model, fits)
    assert not ok.invalid and ok.trusted and ok.output_shape == (1, *fits[:1], 6 if layer == "positions" else fits[1])
    r = paramcount(model, longer, crosscheck="always")  # GPT-2's is checked anyway: its invalid layer is not the first
    assert [rec.name for rec in r.invalid] == [layer] and error in r.invalid[0].message
    assert r.output_shape is None  # it has none: the real forward raises
    assert f"the real model fails at this input too ({error} on meta)" in r.crosscheck.message
    before, mode = {k: v.clone() for k, v in model.state_dict().items()}, model.training
    paramcount(model, longer, crosscheck="always")  # the model is left as found: weights, mode, grads, hooks
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.training == mode
    assert all(p.requires_grad for p in model.parameters()) and not any(m._forward_hooks for m in model.modules())


def test_positions_past_the_end_are_found_in_a_sweep_too() -> None:
    reports = paramcount_sweep(LearnedPositions(), [(8, 4), (10, 4), (8, 4)])
    assert [[rec.name for rec in r.invalid] for r in reports] == [[], ["positions"], []]


def test_known_data_follows_factories_and_ops_on_them_only() -> None:
    g = torch.fx.Graph()
    x = g.placeholder("x")
    n = g.call_method("size", (x, 1))
    ids = g.call_function(torch.arange, (n,))
    shifted = g.call_function(operator.add, (ids, 3))
    noise = g.call_function(torch.rand, (n,))
    mixed = g.call_function(operator.add, (shifted, x))
    dropped = g.call_function(torch.nn.functional.dropout, (shifted,))
    env = {x: torch.empty(2, 5, device="meta"), n: 5}
    known = KnownData()
    for node, value in ((ids, None), (shifted, None), (mixed, None)):
        env[node] = torch.empty(5, device="meta") if value is None else value
        known.follow(node, env)
    assert known.values[shifted].tolist() == [3, 4, 5, 6, 7] and mixed not in known.values  # x has no data
    known.follow(noise, env)
    assert noise not in known.values and shifted in known.values  # random, but it reads no known data
    known.follow(dropped, env)
    assert not known.values  # random data made from known data: nothing known is trusted past it


def test_as_meta_leaves_scalar_settings_on_the_cpu() -> None:
    out = as_meta((torch.arange(3), [torch.tensor(2)], torch.empty(2, device="meta")))
    assert [t.device.type for t in (out[0], out[1][0], out[2])] == ["meta", "cpu", "meta"]


CALLS: list[int] = []


@torch.fx.wrap
def counted_offsets(ids: torch.Tensor) -> torch.Tensor:
    """A model's own function of known data, with a side effect: shape propagation runs it, known data does not."""
    CALLS.append(1)
    return ids + 1


class CountedOffsets(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.positions = nn.Embedding(9, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.positions(counted_offsets(torch.arange(x.shape[1], device=x.device)))


def test_a_models_own_function_of_known_data_is_run_once_per_propagation() -> None:
    model = CountedOffsets()
    traced = build_graph(trace(model))
    CALLS.clear()
    propagate_shapes(traced, (8, 2))
    assert len(CALLS) == 1


class CountedPositions(nn.Module):
    """RoBERTa's positions: a cumsum of the tokens that are not padding, from ``padding_idx + 1`` on."""

    def __init__(self) -> None:
        super().__init__()
        self.words, self.positions = nn.Embedding(10, 4, padding_idx=1), nn.Embedding(8, 4, padding_idx=1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids.ne(1).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) + 0) * mask
        return self.words(input_ids) + self.positions(positions.long() + 1)


class PaddedCountedPositions(CountedPositions):
    """Longformer pads its tokens to its attention window with the padding token before counting positions."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(input_ids, (0, (4 - input_ids.shape[1] % 4) % 4), value=1)
        return super().forward(padded)


@pytest.mark.parametrize(
    ("model", "out"), [(CountedPositions(), 6), (PaddedCountedPositions(), 8)], ids=["RoBERTa", "Longformer"]
)
def test_positions_counted_from_the_input_ids_past_the_table_make_the_layer_invalid(model: nn.Module, out: int) -> None:
    """14 Hugging Face models (XLM-R, ESM, MPNet, LUKE, RoBERTa below max_position_embeddings, Longformer …) were
    reported as fitting, trusted, at more tokens than their position table holds: the ids are data, never
    bound-checked.  Longformer pads its tokens first: counting the padding too would make an input that fits
    invalid (6 tokens, padded to 8: positions reach 7, not 9)."""
    with torch.no_grad():
        assert model(torch.randint(2, 10, (1, 6))).shape == (1, out, 4)
        with pytest.raises(IndexError, match="index out of range in self"):
            model(torch.randint(2, 10, (1, 7)))
    assert not paramcount(model, (6,)).invalid
    r = paramcount(model, (7,))
    assert [rec.name for rec in r.invalid] == ["positions"] and r.output_shape is None
    assert r.invalid[0].message.startswith("positions (Embedding) expects position < 8, got 8 — the positions are")
    assert r.trusted and "only a forward with real tokens checks" in r.crosscheck.message
    assert [[rec.name for rec in s.invalid] for s in paramcount_sweep(model, [(6,), (7,), (6,)])] == [
        [],
        ["positions"],
        [],
    ]


class ShiftedPositions(nn.Module):
    """Positions from the input's size, shifted back in place by an amount computed from the input's values."""

    def __init__(self, edit: str) -> None:
        super().__init__()
        self.table = nn.Embedding(10, 4)
        self.edit = edit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device) + 20  # known data: 20, 21, ... (past the table)
        shift = (x.sum() * 0 + 20).long()  # 20, from the values: not known
        if self.edit == "method":
            positions.sub_(shift)
        else:
            positions[:] = positions - shift
        return self.table(positions)


class Holder(nn.Module):
    def __init__(self, edit: str) -> None:
        super().__init__()
        self.inner = ShiftedPositions(edit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.mark.parametrize("edit", ["method", "setitem"])
@pytest.mark.parametrize("leaf", [False, True])
def test_known_data_edited_in_place_by_unknown_values_is_not_read_stale(edit: str, leaf: bool) -> None:
    model = Holder(edit)
    assert tuple(model(torch.zeros(1, 3)).shape) == (3, 4)  # the real forward looks rows 0, 1, 2 up
    r = paramcount(model, (3,), leaf_modules=["inner"] if leaf else ())
    assert r.invalid == [] and r.output_shape == (3, 4)  # before: the stale 20, 21, 22 made the table invalid


class EosPooling(nn.Module):
    """BART's classifier: the hidden state at each <eos> token, picked by a boolean mask of the token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        eos = input_ids.eq(2)
        torch._check(torch.unique_consecutive(eos.sum(1)).numel() == 1)  # meta has no kernel for it
        return self.head(h[eos, :].view(h.shape[0], -1, h.shape[-1])[:, -1, :])  # meta has no nonzero


def test_a_boolean_mask_of_given_token_ids_selects_rows_on_meta() -> None:
    """paramcount of BART's sequence classifier raised TraceError even with the token ids given."""
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 2, 6, 7, 2]])
    model = EosPooling()
    r = paramcount(model, {"input_ids": ids})
    assert r.output_shape == tuple(model(ids).shape) == (2, 3) and not r.invalid
    with pytest.raises(TraceError, match=r"the values of 'input_ids' decide what the forward does here"):
        paramcount(model, {"input_ids": (5,)})  # values not given: they decide the shape


def _bart_classifier(num_labels: int, **sizes: int) -> Any:
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        vocab_size=40,
        num_labels=num_labels,
        **sizes,
    )
    return transformers.BartForSequenceClassification(config).eval()


def test_bart_sequence_classification_with_its_token_ids() -> None:
    model = _bart_classifier(5, max_position_embeddings=32)
    config = model.config
    ids = torch.tensor([[7, 8, 9, 10, config.eos_token_id]])
    r = paramcount(model, {"input_ids": ids})
    assert r.output_shape["logits"] == tuple(model(input_ids=ids).logits.shape) == (1, 5)
    assert r.total == sum(p.numel() for p in model.parameters()) and not r.invalid


def test_bart_sequence_classification_given_as_shapes_names_its_token_ids_as_the_fix() -> None:
    """BART moves its <eos> mask to ``hidden_states.device`` (a device, no data): the mask is still the token ids'
    alone, so the error names them and its fix runs; before, it said no input could help ("analyse its parts")."""
    model = _bart_classifier(4)
    config = model.config
    with pytest.raises(TraceError, match=r"the values of 'input_ids' decide what the forward does here") as caught:
        paramcount(model, {"input_ids": (6,)})
    assert "paramcount(model, {'input_ids': input_ids}) with input_ids your (1, 6) int64 tensor" in str(caught.value)
    input_ids = torch.tensor([[7, 8, 9, 10, 11, config.eos_token_id]])  # the fix as written, with a user's ids
    r = paramcount(model, {"input_ids": input_ids})
    assert r.output_shape["logits"] == tuple(model(input_ids=input_ids).logits.shape) == (1, 4)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    lead=st.integers(0, 1),
    mask_dims=st.integers(1, 2),
    off=st.integers(0, 1),
    seed=st.integers(0, 1000),
)
def test_a_known_mask_selects_what_the_cpu_selects_or_is_left_to_the_op(
    shape: list[int], lead: int, mask_dims: int, off: int, seed: int
) -> None:
    """x[mask] on meta by the mask's positions: the CPU's result shape where the mask fits, the op's own error
    (args unchanged) where it does not."""
    x = torch.zeros(shape)
    mask_shape = [d + off for d in shape[lead : lead + mask_dims]] or [1]
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    index = (slice(None),) * lead + (mask,)
    args = masks_as_indices(operator.getitem, (x.to("meta"), index))
    try:
        want = tuple(x[index].shape)
    except (IndexError, RuntimeError):
        assert args[1] is index  # not converted: the op raises as the CPU does
        return
    got = operator.getitem(*on_one_device(args, {}, module=False)[0])
    assert tuple(got.shape) == want


class EditsPositionsTwiceOver(nn.Module):
    """Known positions edited in place by a method without a shape rule (neg_)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device) - 4  # -4, -3, -2
        positions.neg_()  # 4, 3, 2 (negated twice: -4, -3, -2 again)
        return self.table(positions + 2)  # rows 6, 5, 4 fit (-2, -1, 0 would not)


def test_an_in_place_edit_of_known_data_is_applied_once() -> None:
    """Propagation computed a node's known data before running it and again after: neg_ ran twice."""
    model = EditsPositionsTwiceOver()
    assert model(torch.zeros(1, 3)).shape == (3, 4)
    r = paramcount(model, (3,))
    assert r.invalid == [] and r.output_shape == (3, 4)


def test_positions_made_from_a_constant_and_the_length_are_checked_against_the_table() -> None:
    """Found by a differential probe: ``torch.arange(8)`` is evaluated while tracing into a tensor constant, which
    was not known data, so positions offset by the input's length went past the embedding unseen."""

    class Offset(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.tok = nn.Embedding(40, 4), nn.Embedding(100, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(8) + ids.shape[1]
            return self.tok(ids)[:, :8] + self.emb(positions)

    model = Offset()
    with pytest.raises(IndexError):
        model(torch.zeros(1, 35, dtype=torch.long))
    assert [layer.name for layer in paramcount(model, TypedShape((35,), "long")).invalid] == ["emb"]
    assert paramcount(model, TypedShape((32,), "long")).invalid == []  # 32..39 fit


def test_the_retry_with_data_keeps_integer_data_on_the_cpu_and_makes_floats_stand_ins() -> None:
    """The shapes pass retried an op refusing meta values (pack_padded_sequence of meta lengths) on every known
    tensor as it was, floats on the CPU too, where the ops run on known data beside meta (stand_ins_or_data) made
    floats stand-ins: what a CPU float meets next is a weight on meta.  One retry now: integers on the CPU, floats
    as stand-ins, what it gives handed to ``kept``, and the first failure raised when both fail."""
    from torch.nn.utils.rnn import pack_padded_sequence

    x, lengths = torch.ones(2, 5, 3), torch.tensor([5, 2])
    real = pack_padded_sequence(x, lengths, batch_first=True)  # the oracle: a real call on the CPU
    kept: list[Any] = []
    pack = lambda a, k: pack_padded_sequence(*a, **k)  # noqa: E731
    on_meta = ((x.to("meta"), lengths.to("meta")), {"batch_first": True})
    packed = retried_with_data(lambda: pack(*on_meta), pack, ((x, lengths), {"batch_first": True}), kept.append)
    assert packed.data.is_meta and packed.data.shape == real.data.shape
    assert torch.equal(packed.batch_sizes, real.batch_sizes) and kept == [packed]

    def refuse(*_: Any) -> Any:
        raise RuntimeError("refused on the data too")

    with pytest.raises(ValueError, match="the meta values' failure"):
        retried_with_data(lambda: (_ for _ in ()).throw(ValueError("the meta values' failure")), refuse, ((), {}))
    assert retried_with_data(lambda: 1, refuse, ((), {}), kept.append) == 1 and len(kept) == 1


class _PackedTagger(nn.Module):
    """The classic NLP model: embedding, a packed sequence through a recurrent layer, padded back, a linear head."""

    def __init__(self, kind: str, bidirectional: bool, batch_first: bool, enforce_sorted: bool, total: int | None):
        super().__init__()
        self.batch_first, self.enforce_sorted, self.total = batch_first, enforce_sorted, total
        self.emb = nn.Embedding(100, 16)
        rnn = nn.LSTM if kind == "LSTM" else nn.GRU
        self.rnn = rnn(16, 32, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
        self.fc = nn.Linear(64 if bidirectional else 32, 5)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            self.emb(x), lengths.cpu(), batch_first=self.batch_first, enforce_sorted=self.enforce_sorted
        )
        out, _ = self.rnn(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=self.batch_first, total_length=self.total)
        return self.fc(padded)


@pytest.mark.parametrize(
    ("kind", "bidirectional", "batch_first", "enforce_sorted", "total"),
    [("LSTM", True, True, False, None), ("GRU", False, False, True, 9), ("LSTM", False, False, False, 8)],
)
def test_a_packed_sequence_is_analysed_from_the_lengths_given_with_their_data(
    kind: str, bidirectional: bool, batch_first: bool, enforce_sorted: bool, total: int | None
) -> None:
    """Found by a user: pack_padded_sequence(e, lengths.cpu()) failed to trace ('lengths' argument should be a 1D
    CPU int64 tensor, but got 1D meta Long tensor): the lengths given with their data met meta tensors as stand-ins,
    and enforce_sorted=True left a proxy where a real forward has None.  Now each packed-sequence function is one
    call run on the values, the op reads the lengths' data, and the LSTM is counted by the tokens it packs."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _PackedTagger(kind, bidirectional, batch_first, enforce_sorted, total).eval()
    lengths = torch.tensor([7, 4, 2]) if enforce_sorted else torch.tensor([4, 7, 2])
    x = torch.randint(0, 100, (3, 7) if batch_first else (7, 3))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        real = model(x, lengths)
    r = paramcount(model, {"x": x, "lengths": lengths}, crosscheck="always")
    assert r.output_shape == tuple(real.shape)
    assert r.total == sum(p.numel() for p in model.parameters())
    assert r.macs == counter.get_total_flops() // 2  # the CPU's packed recurrent layer runs its gates by addmm
    assert r.trusted and r.crosscheck.trust == Trust.VERIFIED


def test_lengths_given_as_a_shape_are_named_with_the_fix_that_runs() -> None:
    """The packing depends on the lengths' values: given only as a shape (a meta tensor), the report is not trusted,
    says so and names the call that gives them with their data, which runs."""
    model = _PackedTagger("LSTM", True, True, False, None).eval()
    x, lengths = torch.randint(0, 100, (2, 7)), torch.tensor([4, 7])
    r = paramcount(model, {"x": x, "lengths": torch.empty(2, dtype=torch.long, device="meta")})
    assert not r.trusted and r.output_shape is None
    note = next(line for line in r.notes() if line.startswith("NOT TRUSTED"))
    assert "pack_padded_sequence" in note and "the values of 'lengths' decide" in note
    assert "paramcount(model, {'x': x, 'lengths': lengths}) with x your (2, 7) int64 tensor; lengths your (2,)" in note
    fixed = paramcount(model, {"x": x, "lengths": lengths})  # the fix, as written
    assert fixed.trusted and fixed.output_shape == tuple(model(x, lengths).shape)


@pytest.mark.parametrize("given", [(1,), ()])
def test_lengths_given_as_a_plain_shape_are_named_with_the_fix_that_runs(given: tuple[int, ...]) -> None:
    """Lengths given as a plain shape (float32, a per-sample ``(1,)`` made ``(1, 1)`` by the batch) gave no hint at
    all: the float stand-in was not taken for data, though pack_padded_sequence reads it as int64 data. Now the note
    names the call with data and the lengths as that call needs them: one int64 length per sequence."""
    model = _PackedTagger("LSTM", False, True, False, None).eval()
    x = torch.randint(0, 100, (1, 7))
    r = paramcount(model, {"x": x, "lengths": given})
    assert not r.trusted
    note = next(line for line in r.notes() if line.startswith("NOT TRUSTED"))
    assert (
        "paramcount(model, {'x': x, 'lengths': lengths}) with x your (1, 7) int64 tensor; lengths your (1,) int64"
        in note
    )
    lengths = torch.tensor([5])  # a (1,) int64 tensor, as the note says
    fixed = paramcount(model, {"x": x, "lengths": lengths})
    assert fixed.trusted and fixed.output_shape == tuple(model(x, lengths).shape)


class _GlobalAttention(nn.Module):
    """Longformer's self-attention: a branch on a flag its encoder computed from the mask (not traced inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.local, self.wide = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, h: torch.Tensor, is_global: bool) -> torch.Tensor:
        return self.wide(h) if is_global else self.local(h)


class _MaskedEncoder(nn.Module):
    """Longformer's encoder: ``is_global_attn = (mask > 0).flatten().any().item()`` on a mask made with
    ``torch.finfo(h.dtype)`` of the embeddings' output (a read of its dtype, none of its data)."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = _GlobalAttention()

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        is_global = (mask > 0).flatten().any().item()
        return self.attention(h, is_global)


class _Longformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.encoder = nn.Embedding(10, 4), _MaskedEncoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        extended = (attention_mask.to(h.dtype) - 1.0) * torch.finfo(h.dtype).max  # 0 attends, -max is masked
        extended[attention_mask == 2] = torch.finfo(h.dtype).max  # global attention
        return self.encoder(h, extended)


def test_a_flag_read_from_a_mask_given_as_a_shape_names_the_mask_as_the_fix() -> None:
    """Found by a probe: transformers' LongformerModel with an attention_mask given as a shape was not trusted, and
    the note named the ``item`` node alone, no fix: the mask's path back to the input went through ``h.dtype``, a
    read of the embeddings' output, and a layer's output was taken for data the mask depends on."""
    model = _Longformer()
    report = paramcount(model, {"input_ids": (6,), "attention_mask": (6,)})
    assert not report.trusted
    (note,) = [line for line in report.notes() if line.startswith("NOT TRUSTED")]
    assert "(item (.item() in encoder): cannot run on meta" in note
    fix = "paramcount(model, {'input_ids': input_ids, 'attention_mask': attention_mask})"
    assert fix in note and "the values of 'attention_mask' decide" in note
    input_ids, attention_mask = torch.zeros(1, 6, dtype=torch.int64), torch.ones(1, 6)  # the fix, as written
    r = eval(fix, {"paramcount": paramcount, "model": model, "input_ids": input_ids, "attention_mask": attention_mask})
    assert r.trusted and r.output_shape == tuple(model(input_ids, attention_mask).shape) == (1, 6, 4)
    assert r.total_for_input == sum(p.numel() for p in model.parameters())
