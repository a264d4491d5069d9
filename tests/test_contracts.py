"""Shape contracts: every violation listed, the verdict table, contracts with a lockfile."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models import CifarNet, grey_classifier
from torchsurgeon import (
    ContractError,
    InputError,
    OutputShape,
    ShapeContract,
    assert_contract,
    check_contract,
    explain_output_shape,
    paramcount,
    write_lock,
)


def _numel(module: nn.Module, *, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": (1, -224, 224)}, r"input=\(1, -224, 224\): dimension 1 is -224 — every dimension must be positive"),
        ({"input": (1, 0, 8)}, r"dimension 1 is 0 — every dimension must be positive"),
        ({"input": ()}, r"input=\(\) is empty"),
        ({"input": "1,224,224"}, r"input='1,224,224' is not a shape"),
        ({"input": (1, 2.5, 8)}, r"dimension 1 is 2.5 — dimensions are whole numbers"),
        (
            {"input": (1, 8), "output": (-1,)},
            r"output=\(-1,\): dimension 0 is -1 — every dimension must be non-negative",
        ),
        ({"input": (1, 8), "max_params": -5}, r"max_params=-5 — give a parameter count as a non-negative int"),
        ({"input": (1, 8), "params": 1.5}, r"params=1.5 — give a parameter count"),
        ({"input": (1, 8), "batch": 0}, r"batch=0 — the batch size must be a positive int"),
        ({"input": (1, 8), "no_invalid": "yes"}, r"no_invalid='yes' — give true or false"),
        ({"input": (1, 8), "lock": 3}, r"lock=3 — give the path of a lockfile"),
    ],
)
def test_malformed_contract_names_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        ShapeContract(**fields)


def test_contract_normalises_lists_and_adds_the_batch() -> None:
    c = ShapeContract(input=[1, 224, 224], output=[[10], [5]], batch=4, lock="a/b.json")
    assert c.input == (1, 224, 224)
    assert c.expected_output == ((4, 10), (4, 5))
    assert c.lock == Path("a/b.json")
    assert ShapeContract(input={"image": [3, 8, 8]}, output={"logits": [2]}).expected_output == {"logits": (1, 2)}


def test_every_violation_is_listed_against_independent_numbers() -> None:
    model = CifarNet()
    for p in model.conv1.parameters():
        p.requires_grad_(False)
    total, trainable = _numel(model), _numel(model, trainable=True)
    real_out = tuple(model(torch.zeros(1, 3, 32, 32)).shape)  # a real forward: (1, 10)
    result = check_contract(
        model,
        input=(1, 32, 32),
        output=(9,),
        params=total + 1,
        max_params=50_000,
        trainable=total,
        frozen=0,
    )
    assert not result.ok and not result
    rows = {v.field: (v.expected, v.got) for v in result.violations}
    assert rows == {
        "output": ("(1, 9)", f"({real_out[0]}, {real_out[1]})"),
        "params": (f"{total + 1:,}", f"{total:,}"),
        "trainable": (f"{total:,}", f"{trainable:,}"),
        "frozen": ("0", f"{total - trainable:,}"),
        "max_params": ("≤ 50,000", f"{total:,}"),
        "layer conv1 (Conv2d)": ("in_channels=3", "in_channels=1"),
    }
    assert total == 62_006 and total - trainable == 3 * 6 * 5 * 5 + 6


def test_a_contract_that_holds() -> None:
    model = CifarNet()
    result = assert_contract(model, input=(3, 32, 32), output=(10,), params=_numel(model), max_params=62_006)
    assert result.ok and result.violations == () and result.lock_diffs == ()
    assert str(result) == "Shape contract holds: CifarNet, input (3, 32, 32), batch 1: output (1, 10), 62,006 params"


def test_broken_contract_table_matches_expected_file(expected_file: Callable[[str, str], None]) -> None:
    result = check_contract(CifarNet(), ShapeContract(input=(1, 32, 32), output=(9,), max_params=50_000), name="cifar")
    expected_file("contract_cifarnet_broken.txt", result.table() + "\n")


def test_assert_contract_raises_an_assertion_error_with_the_table() -> None:
    with pytest.raises(ContractError, match=r"(?s)output +\(1, 10\) +\(1, 9\).*3 +Linear +\(1, 4\) +\(1, 9\)") as info:
        assert_contract(grey_classifier(9), input=(1, 8, 8), output=(10,))
    assert isinstance(info.value, AssertionError)


def test_contract_object_and_keyword_overrides() -> None:
    base = ShapeContract(input=(1, 8, 8), output=(10,))
    assert check_contract(grey_classifier(10), base).ok
    assert not check_contract(grey_classifier(10), base, output=(9,)).ok
    with pytest.raises(InputError, match="needs input="):
        check_contract(grey_classifier(10), output=(9,))
    with pytest.raises(InputError, match=r"unexpected keyword argument 'outptu'.*the fields are"):
        check_contract(grey_classifier(10), input=(1, 8, 8), outptu=(9,))


def test_an_input_of_the_wrong_rank_is_a_violation_not_a_crash() -> None:
    result = check_contract(nn.Sequential(nn.Conv2d(1, 4, 3)), input=(8,))
    assert result.report is None
    assert [v.field for v in result.violations] == ["input"]
    assert "accepted: (1, 8)" in result.violations[0].expected
    with pytest.raises(ContractError, match="Shape contract broken"):
        assert_contract(nn.Sequential(nn.Conv2d(1, 4, 3)), input=(8,))


def test_nested_outputs_are_compared_per_output() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 5)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.a(x), self.b(x)

    assert check_contract(TwoHeads(), input=(4,), output=((3,), (5,)), batch=2).ok
    bad = check_contract(TwoHeads(), input=(4,), output=[[3], [6]], batch=2)
    assert [(v.field, v.expected, v.got) for v in bad.violations] == [
        ("output", "[(2, 3), (2, 6)]", "[(2, 3), (2, 5)]")
    ]


def test_checking_never_changes_the_model(tmp_path: Path) -> None:
    model = CifarNet().eval()
    model.fc1.weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    check_contract(model, input=(1, 32, 32), output=(10,), lock=tmp_path / "m.lock.json", update_lock=True)
    check_contract(model, input=(1, 32, 32), output=(10,), lock=tmp_path / "m.lock.json", update_lock=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_contract_with_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "head.lock.json"
    c = ShapeContract(input=(1, 8, 8), output=(10,), lock=path)
    assert check_contract(grey_classifier(10), c, update_lock=True).ok
    result = check_contract(grey_classifier(9), c, update_lock=False)
    assert [v.field for v in result.violations] == ["output"]
    assert [(d.layer, d.fields) for d in result.lock_diffs] == [("3", ("output_shape", "params", "trainable"))]
    assert "Lockfile" in result.table() and "output (1, 10), params 50" in result.table()
    # a lock written for another input is compared at its own input
    write_lock(grey_classifier(10), path, (1, 16, 16))
    assert check_contract(grey_classifier(10), c, update_lock=False).ok


# ---------------------------------------------------------------- OutputShape


def test_output_shape_is_a_tuple_that_remembers_its_layers() -> None:
    shape = paramcount(grey_classifier(9), (1, 8, 8)).output_shape
    assert isinstance(shape, OutputShape) and isinstance(shape, tuple)
    assert shape == (1, 9) and (1, 9) == shape and hash(shape) == hash((1, 9)) and repr(shape) == "(1, 9)"
    assert [layer.name for layer in shape.shape_changes()] == ["2", "3"]
    again = pickle.loads(pickle.dumps(shape))
    assert again == (1, 9) and [x.name for x in again.layers] == [x.name for x in shape.layers]


def test_shape_changes_stop_at_the_limit() -> None:
    net = nn.Sequential(*[nn.Conv2d(1, 1, 2) for _ in range(6)])  # 16 -> 10: every layer changes the shape
    shape = paramcount(net, (1, 16, 16)).output_shape
    assert [x.name for x in shape.shape_changes()] == [str(i) for i in range(6)]
    assert [x.name for x in shape.shape_changes(limit=2)] == ["4", "5"]


def test_update_lock_takes_true_false_or_none(tmp_path: Path) -> None:
    """update_lock='no' (a true value to Python) rewrote the lockfile instead of comparing with it."""
    with pytest.raises(InputError, match=r"update_lock='no' — give True or False, or None \(True rewrites"):
        check_contract(grey_classifier(10), input=(1, 32, 32), lock=tmp_path / "m.lock.json", update_lock="no")
    assert not (tmp_path / "m.lock.json").exists()


def test_explain_output_shape_takes_a_reports_output_shape() -> None:
    """explain_output_shape((1, 5)) raised AttributeError: 'tuple' object has no attribute 'shape_changes'."""
    with pytest.raises(
        InputError,
        match=r"explain_output_shape takes a report's output shape, got \(1, 5\) — "
        r"explain_output_shape\(paramcount\(model, input\).output_shape\)",
    ):
        explain_output_shape((1, 5))  # type: ignore[arg-type]
    assert "Linear" in explain_output_shape(paramcount(nn.Sequential(nn.Linear(4, 5)), (4,)).output_shape)
