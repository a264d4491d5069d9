"""torchsurgeon.bounds: an index of known data outside a tensor is found as the real CPU op finds it."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchsurgeon import paramcount
from torchsurgeon.bounds import checked, ids_past, index_past, out_of_bounds
from torchsurgeon.knowndata import on_one_device

# op -> how to call it on (x, dim, index): the index along dim, as each op takes it
_ALONG: dict[str, Callable[[torch.Tensor, int, torch.Tensor], tuple[Callable[..., Any], tuple[Any, ...]]]] = {
    "index_select": lambda x, d, i: (torch.index_select, (x, d, i.flatten())),
    "gather": lambda x, d, i: (torch.gather, (x, d, i)),
    "gather method": lambda x, d, i: (torch.Tensor.gather, (x, d, i)),
    "scatter": lambda x, d, i: (torch.Tensor.scatter, (x, d, i, 1.0)),
    "scatter_add_": lambda x, d, i: (torch.Tensor.scatter_add_, (x, d, i, torch.ones(i.shape))),
    "index_add": lambda x, d, i: (torch.index_add, (x, d, i.flatten(), torch.ones(_rows(x, d, i.numel())))),
    "index_copy": lambda x, d, i: (torch.Tensor.index_copy, (x, d, i.flatten(), torch.ones(_rows(x, d, i.numel())))),
    "index_fill": lambda x, d, i: (torch.Tensor.index_fill, (x, d, i.flatten(), 1.0)),
    "take": lambda x, d, i: (torch.take, (x, i)),
    "getitem": lambda x, d, i: (operator.getitem, (x, (slice(None),) * d + (i,))),
    "setitem": lambda x, d, i: (operator.setitem, (x, (slice(None),) * d + (i,), 0.0)),
    "index_put": lambda x, d, i: (torch.Tensor.index_put, (x, (i.flatten(),), torch.tensor(1.0))),
    "embedding": lambda x, d, i: (F.embedding, (i, x.reshape(x.shape[0], -1))),
    "one_hot": lambda x, d, i: (F.one_hot, (i, x.shape[0])),
}


def _rows(x: torch.Tensor, dim: int, n: int) -> tuple[int, ...]:
    shape = list(x.shape)
    shape[dim] = n
    return tuple(shape)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(sorted(_ALONG)),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    dim=st.integers(0, 2),
    values=st.lists(st.integers(-8, 8), min_size=1, max_size=4),
)
@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_an_index_is_outside_exactly_when_the_cpu_op_raises(
    op: str, shape: list[int], dim: int, values: list[int]
) -> None:
    """Outside exactly when the real op raises, for an index it holds: never a false alarm, never a miss."""
    dim = min(dim, len(shape) - 1)
    x = torch.zeros(shape)
    index = torch.tensor(values)
    if op.startswith(("gather", "scatter")):  # as many dims as x: the values along dim, the rest as x's
        along = [len(values) if d == dim else 1 for d in range(len(shape))]
        index = index.reshape(along).expand([len(values) if d == dim else n for d, n in enumerate(shape)])
    func, args = _ALONG[op](x, dim, index)
    try:
        func(*args)
        raised: type[Exception] | None = None
    except (IndexError, RuntimeError) as exc:
        raised = type(exc)
    meta_args = tuple(a.to("meta") if a is args[0] and op not in ("embedding", "one_hot") else a for a in args)
    found = index_past(func, meta_args, {})  # the tensor read on meta, its indices known on the CPU
    assert checked(func)
    assert (found is None) == (raised is None), (op, shape, dim, values, found)  # torch's error types vary by path
    if found is not None:
        assert found.position in values


class _Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self) -> None: ...


def test_keyword_arguments_and_other_calls() -> None:
    table = torch.empty(4, 3, device="meta")
    found = index_past(torch.index_select, (table,), {"dim": 1, "index": torch.tensor([0, 3])})
    assert found is not None and (found.position, found.size, found.error) == (3, 3, IndexError)
    assert index_past(torch.add, (table, 1), {}) is None and not checked(torch.add)
    assert index_past(torch.index_select, (table, 0, torch.empty(2, dtype=torch.long, device="meta")), {}) is None
    assert index_past(torch.index_select, (table, 5, torch.tensor([9])), {}) is None  # a wrong dim: meta says it
    assert not checked(_Unhashable()) and index_past(_Unhashable(), (), {}) is None
    assert ids_past(torch.tensor([1.0]), 1) is None and out_of_bounds((2,), torch.tensor([True, False])) is None


def test_known_data_meeting_a_parameter_on_meta_gets_a_stand_in() -> None:
    """A model built on meta: its parameters are meta, and a CPU tensor of positions meeting them is a stand-in."""
    weight = nn.Parameter(torch.empty(4, 2, device="meta"))
    args, _ = on_one_device((weight, torch.arange(3)), {}, module=False)
    assert [a.device.type for a in args] == ["meta", "meta"]


class TablePositions(nn.Module):
    """Learned positions read with torch.index_select of positions made from the input's length."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(16, 4))
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1])
        return self.proj(x + torch.index_select(self.table, 0, positions))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_index_select_past_a_table_makes_the_layer_invalid(device: str) -> None:
    """Found by reading: it was reported as fitting and trusted while the real forward raises IndexError."""
    with torch.device(device):
        model = TablePositions()
    if device == "cpu":
        with torch.no_grad(), pytest.raises(IndexError, match="index out of range in self"):
            model(torch.zeros(1, 20, 4))
    assert not paramcount(model, (16, 4)).invalid
    r = paramcount(model, (20, 4))
    assert [rec.name for rec in r.invalid] == ["index_select"] and r.output_shape is None
    assert "expects index < 16, got 16 — a real forward raises IndexError" in r.invalid[0].message
    assert "the real model fails at this input too (index 16 is out of bounds" in r.crosscheck.message
