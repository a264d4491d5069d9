"""Copies of modules: detached copies and the zero run for leaves that cannot run on meta."""

from __future__ import annotations

import pytest
import torch

from models import Gate
from torchsurgeon.copies import detached_copy, run_on_zeros


def test_detached_copy_and_run_on_zeros_leave_the_module_alone() -> None:
    model = Gate(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = detached_copy(model, lambda t: torch.zeros_like(t))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(not p.detach().any() for p in clone.parameters())
    x = torch.empty(2, 3, device="meta")
    out = run_on_zeros(model, (x,), {}, NotImplementedError("meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (2, 3)
    with pytest.raises(ValueError, match="a real shape error"):
        run_on_zeros(model, (x,), {}, ValueError("a real shape error"))


def test_run_on_zeros_refuses_huge_leaves() -> None:
    x = torch.empty(1, 2**26, device="meta")
    with pytest.raises(NotImplementedError, match=r"too large to run on zeros on the CPU \(67,108,\d+ elements"):
        run_on_zeros(Gate(1), (x,), {}, NotImplementedError("meta"))
