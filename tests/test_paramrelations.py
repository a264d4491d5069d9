"""How an edited parameter is made of a pretrained one: the answers read from the first values (and from a sketch of
a change's rank) are those the whole tensor gives."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchsurgeon.paramrelations import derived, rows_kept, updated
from torchsurgeon.records import ParamChange


def _rank_named(note: str | None) -> int | None:
    """The rank a note of :func:`updated` names, if it names one."""
    if note is None or "rank-" not in note:
        return None
    return int(note.split("rank-")[1].split(" ")[0])


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(8, 96),
    cols=st.integers(8, 96),
    rank=st.integers(0, 40),
    noise=st.sampled_from([0.0, 1e-9, 1e-3]),
    seed=st.integers(0, 2**16),
)
def test_the_rank_of_a_change_is_named_as_every_singular_value_tells(
    rows: int, cols: int, rank: int, noise: float, seed: int
) -> None:
    """A merged LoRA (a change of low rank) is named with its rank; any other change is not. The rank is counted as
    torch.linalg.matrix_rank counts it at the same tolerance (singular values over 1e-6 times the largest)."""
    gen = torch.Generator().manual_seed(seed)
    old = torch.randn(rows, cols, dtype=torch.float64, generator=gen)
    rank = min(rank, rows, cols)
    change = torch.randn(rows, rank, dtype=torch.float64, generator=gen) @ torch.randn(
        rank, cols, dtype=torch.float64, generator=gen
    )
    change = 0.01 * change + noise * torch.randn(rows, cols, dtype=torch.float64, generator=gen)
    new = old + change
    delta = new - old  # as updated computes it
    true_rank = int(torch.linalg.matrix_rank(delta, rtol=1e-6)) if float(delta.abs().max()) > 0 else 0
    want = true_rank if 0 < true_rank <= min(rows, cols) // 4 else None
    assert _rank_named(updated(old, new)) == want


def test_a_wide_change_of_full_rank_is_not_named_and_a_low_one_is() -> None:
    torch.manual_seed(0)
    old = torch.randn(64, 2304)  # a 3×3 convolution's 256 inputs, flattened
    assert _rank_named(updated(old, old + 0.01 * torch.randn(64, 2304))) is None
    assert _rank_named(updated(old, old + 0.01 * torch.randn(64, 3) @ torch.randn(3, 2304))) == 3
    tall = torch.randn(2304, 64)
    assert _rank_named(updated(tall, tall + 0.01 * torch.randn(2304, 2) @ torch.randn(2, 64))) == 2


@pytest.mark.parametrize("where", [0, 100, 4095, 4096, 9999])
def test_a_scaled_weight_is_told_from_one_whose_values_differ_anywhere(where: int) -> None:
    """``w.mul_(0.5)`` is 'scaled'; the same with one value off, early or late in the tensor, is not."""
    torch.manual_seed(0)
    w = torch.randn(100, 100)
    assert derived("fc.weight", 0.5 * w, {"fc.weight": w})[:2] == (
        ParamChange.UPDATED,
        "scaled: 0.5 × the pretrained values",
    )
    off = 0.5 * w
    off.view(-1)[where] *= 1.01
    relation = derived("fc.weight", off, {"fc.weight": w})
    assert relation is None or not relation[1].startswith("scaled")


def test_a_scaled_weight_whose_first_values_are_zeros_is_told_by_the_rest() -> None:
    w = torch.randn(100, 100)
    w.view(-1)[:5000] = 0
    assert derived("fc.weight", 3 * w, {"fc.weight": w})[1] == "scaled: 3 × the pretrained values"
    off = 3 * w
    off.view(-1)[-1] += 1
    relation = derived("fc.weight", off, {"fc.weight": w})
    assert relation is None or not relation[1].startswith("scaled")


@pytest.mark.parametrize("size", [2, 4096, 5000])
def test_a_tensor_of_one_value_is_told_from_one_with_another_value_late(size: int) -> None:
    """A zeroed bias is nobody's copy by its values; one other value, at the end, makes it a copy of its original."""
    zeros = torch.zeros(size)
    assert derived("head.bias", zeros.clone(), {"head.bias": zeros, "fc.bias": zeros}) is None
    last = zeros.clone()
    last[-1] = 1.0
    assert derived("fc.bias", last.clone(), {"head.bias": last, "fc.bias": torch.randn(size)}) == (
        ParamChange.KEPT,
        "copied from head.bias",
        "head.bias",
    )


def test_rows_carried_over_are_found_among_rows_alike_in_their_first_value() -> None:
    """Rows are matched by every value: an old row with the same first value but another second is no match, a row
    equal to several old ones (zeros) is said to be one of them."""
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(10, 3, generator=gen)
    old[4, 0] = old[7, 0]
    new = old[[7, 4]].clone()
    new[0, 1] += 1  # alike old rows 4 and 7 in its first value only
    assert rows_kept(old, new) == "1 row(s) carried over: 1←4"
    old[[2, 5]] = 0
    assert rows_kept(old, torch.zeros(2, 3)) == "2 row(s) carried over: 0←one of 2 equal rows, 1←one of 2 equal rows"
    assert rows_kept(old, torch.randn(4, 3, generator=gen)) == ""
