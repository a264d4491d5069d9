"""Shape contracts, architecture lockfiles and the pyproject contract tables."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models import CifarNet
from torchsurgeon import (
    ConfigError,
    ContractError,
    InputError,
    OutputShape,
    ShapeContract,
    assert_contract,
    assert_matches_lock,
    check_contract,
    diff_lock,
    paramcount,
    read_lock,
    write_lock,
)
from torchsurgeon.contracts import LOCK_FORMAT, UPDATE_ENV, LockChange, read_contracts


def _numel(module: nn.Module, *, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def _head(n: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n))


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
        assert_contract(_head(9), input=(1, 8, 8), output=(10,))
    assert isinstance(info.value, AssertionError)


def test_contract_object_and_keyword_overrides() -> None:
    base = ShapeContract(input=(1, 8, 8), output=(10,))
    assert check_contract(_head(10), base).ok
    assert not check_contract(_head(10), base, output=(9,)).ok
    with pytest.raises(InputError, match="needs input="):
        check_contract(_head(10), output=(9,))
    with pytest.raises(InputError, match=r"unexpected keyword argument 'outptu'.*the fields are"):
        check_contract(_head(10), input=(1, 8, 8), outptu=(9,))


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


# ---------------------------------------------------------------- OutputShape


def test_output_shape_is_a_tuple_that_remembers_its_layers() -> None:
    shape = paramcount(_head(9), (1, 8, 8)).output_shape
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


# ---------------------------------------------------------------- lockfiles


def _forward_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, list[list[int]]]:
    """Output shape of every call of every named submodule, from a real forward."""
    seen: dict[str, list[list[int]]] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, name=name: seen.setdefault(name, []).append(list(out.shape)))
        for name, m in model.named_modules()
        if name
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_lockfile_matches_expected_file_and_real_forward(
    tmp_path: Path, expected_file: Callable[[str, str], None]
) -> None:
    model = CifarNet()
    path = tmp_path / "cifarnet.lock.json"
    data = write_lock(model, path, (3, 32, 32))
    text = path.read_text()
    expected_file("cifarnet.lock.json", text)
    assert json.loads(text) == data
    # every module row against torch: own parameters and the real output shape of each call
    modules = dict(model.named_modules())
    real = _forward_shapes(model, torch.zeros(1, 3, 32, 32))
    calls: dict[str, int] = {}
    for row in data["layers"]:
        if row["name"] in modules:
            n = calls[row["name"]] = calls.get(row["name"], 0) + 1
            assert row["params"] == sum(p.numel() for p in modules[row["name"]].parameters(recurse=False))
            assert row["output_shape"] == real[row["name"]][n - 1]
    assert calls["pool"] == 2 and data["total"] == _numel(model) == sum(r["params"] for r in data["layers"])
    assert data["format"] == LOCK_FORMAT and data["output_shape"] == [1, 10]
    # one layer per line, keys sorted everywhere: a changed layer is a one-line diff
    assert sum(1 for line in text.splitlines() if line.startswith('    {"name": ')) == len(data["layers"])
    parsed = json.loads(text)  # keeps the order of the file
    assert list(parsed) == sorted(parsed) and all(list(r) == sorted(r) for r in parsed["layers"])


def test_matching_lock_passes_and_changes_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "cifar.lock.json"
    write_lock(CifarNet(), path, (3, 32, 32))
    assert_matches_lock(CifarNet(), path)
    assert diff_lock(CifarNet(), path) == ()

    edited = CifarNet()
    edited.fc3 = nn.Linear(84, 9)
    edited.fc2.requires_grad_(False)
    diffs = diff_lock(edited, path)
    assert [(d.layer, d.change, d.fields) for d in diffs] == [
        ("fc2", LockChange.CHANGED, ("trainable",)),
        ("fc3", LockChange.CHANGED, ("output_shape", "params", "trainable")),
    ]
    assert diffs[1].now is not None and diffs[1].now["params"] == 84 * 9 + 9
    with pytest.raises(ContractError, match=r"(?s)2 layers differ.*fc3 +Linear +changed +output \(1, 10\), params 850"):
        assert_matches_lock(edited, path)


def test_added_removed_and_repeated_layers(tmp_path: Path) -> None:
    path = tmp_path / "seq.lock.json"
    write_lock(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), path, (4,))
    diffs = diff_lock(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2), nn.Tanh()), path)
    assert [(d.layer, str(d.change), d.fields) for d in diffs] == [
        ("1", "changed", ("type", "output_shape", "params", "trainable")),  # ReLU (1, 8) -> Linear (1, 2), 18 params
        ("2", "changed", ("type", "params", "trainable")),  # Linear (1, 2), 18 params -> Tanh (1, 2)
    ]

    class Twice(nn.Module):
        def __init__(self, times: int) -> None:
            super().__init__()
            self.fc, self.times = nn.Linear(4, 4), times

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(self.times):
                x = self.fc(x)
            return x

    path = tmp_path / "twice.lock.json"
    write_lock(Twice(2), path, (4,))
    assert [(d.layer, d.change) for d in diff_lock(Twice(3), path)] == [("fc (call 3)", LockChange.ADDED)]
    assert [(d.layer, d.change) for d in diff_lock(Twice(1), path)] == [("fc (call 2)", LockChange.REMOVED)]


def test_removed_layers_are_listed_where_they_were(tmp_path: Path) -> None:
    class Net(nn.Module):
        def __init__(self, with_mid: bool) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.mid = nn.Linear(4, 4) if with_mid else None
            self.z = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.a(x)
            if self.mid is not None:
                x = self.mid(x)
            return self.z(x)

    path = tmp_path / "net.lock.json"
    write_lock(Net(True), path, (4,))
    new = Net(False)
    new.z = nn.Linear(4, 5)
    assert [(d.layer, str(d.change)) for d in diff_lock(new, path)] == [("mid", "removed"), ("z", "changed")]


@settings(deadline=None, max_examples=25)
@given(
    widths=st.lists(st.integers(1, 6), min_size=3, max_size=5),
    k=st.integers(1, 4),
    new=st.integers(1, 6),
    data=st.data(),
)
def test_diff_names_exactly_the_layers_whose_width_changed(
    tmp_path_factory: pytest.TempPathFactory, widths: list[int], k: int, new: int, data: st.DataObject
) -> None:
    k = min(k, len(widths) - 1)
    edited = [*widths[:k], new, *widths[k + 1 :]]

    def mlp(w: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(len(w) - 1):
            layers += [nn.Linear(w[i], w[i + 1]), nn.ReLU()]
        return nn.Sequential(*layers)

    def rows(w: list[int]) -> dict[str, tuple[int, int]]:  # by hand: name -> (output width, params)
        out = {}
        for i in range(len(w) - 1):
            out[str(2 * i)] = (w[i + 1], w[i] * w[i + 1] + w[i + 1])
            out[str(2 * i + 1)] = (w[i + 1], 0)
        return out

    path = tmp_path_factory.mktemp("lock") / "mlp.lock.json"
    write_lock(mlp(widths), path, (widths[0],))
    old, now = rows(widths), rows(edited)
    expected = [name for name in old if old[name] != now[name]]
    assert [d.layer for d in diff_lock(mlp(edited), path)] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"is not valid JSON \(Expecting property name"),
        ("[1, 2]", r"expected a JSON object, got list"),
        ('{"format": 99, "input": [4], "batch": 1, "layers": []}', r"has format 99, newer than this torchsurgeon"),
        ('{"format": "one", "input": [4], "batch": 1, "layers": []}', r"key 'format' is 'one'"),
        ('{"format": 1, "batch": 1, "layers": []}', r"key 'input' is missing or malformed"),
        ('{"format": 1, "input": [4, -1], "batch": 1, "layers": []}', r"key 'input': input=\[4, -1\]: dimension 1"),
        ('{"format": 1, "input": [4], "batch": 1, "layers": [{"name": "0"}]}', r"layers\[0\] needs keys name, type"),
    ],
)
def test_bad_lockfiles_are_config_errors_and_left_alone(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.lock.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_lock(path)
    with pytest.raises(ConfigError, match=message):
        assert_matches_lock(nn.Sequential(nn.Linear(4, 2)), path)
    with pytest.raises(ConfigError, match=message):
        check_contract(nn.Sequential(nn.Linear(4, 2)), input=(4,), lock=path, update_lock=False)
    assert path.read_text() == text


def test_missing_lockfile_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist — create it with `torchsurgeon lock"):
        assert_matches_lock(nn.Sequential(nn.Linear(4, 2)), tmp_path / "none.lock.json", update=False)


def test_a_newer_lockfile_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "new.lock.json"
    text = '{"format": 2, "input": [4], "batch": 1, "layers": []}'
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"has format 2, newer than this torchsurgeon writes .* not overwritten"):
        write_lock(nn.Sequential(nn.Linear(4, 2)), path, (4,))
    with pytest.raises(ConfigError, match="has format 2"):
        assert_matches_lock(nn.Sequential(nn.Linear(4, 2)), path, (4,), update=True)
    assert path.read_text() == text


def test_a_failing_model_leaves_the_lockfile_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "ok.lock.json"
    write_lock(nn.Sequential(nn.Linear(4, 2)), path, (4,))
    before = path.read_text()
    with pytest.raises(InputError, match="dimension 0 is -4"):
        write_lock(nn.Sequential(nn.Linear(4, 3)), path, (-4,))
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ok.lock.json"]


def test_update_mode_rewrites_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "arch" / "m.lock.json"
    monkeypatch.setenv(UPDATE_ENV, "1")
    with pytest.raises(ConfigError, match="pass input= to create it"):
        assert_matches_lock(_head(10), path)
    assert_matches_lock(_head(10), path, (1, 8, 8))  # creates it, folder included
    assert_matches_lock(_head(9), path)  # rewrites it, for the input recorded in it
    assert read_lock(path)["output_shape"] == [1, 9]
    monkeypatch.setenv(UPDATE_ENV, "0")
    assert_matches_lock(_head(9), path)
    with pytest.raises(ContractError, match="1 layer differs"):
        assert_matches_lock(_head(10), path)
    with pytest.raises(ContractError, match=r"written for input \(1, 8, 8\), batch 1, not input \(1, 9, 9\)"):
        assert_matches_lock(_head(9), path, (1, 9, 9))


def test_contract_with_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "head.lock.json"
    c = ShapeContract(input=(1, 8, 8), output=(10,), lock=path)
    assert check_contract(_head(10), c, update_lock=True).ok
    result = check_contract(_head(9), c, update_lock=False)
    assert [v.field for v in result.violations] == ["output"]
    assert [(d.layer, d.fields) for d in result.lock_diffs] == [("3", ("output_shape", "params", "trainable"))]
    assert "Lockfile" in result.table() and "output (1, 10), params 50" in result.table()
    # a lock written for another input is compared at its own input
    write_lock(_head(10), path, (1, 16, 16))
    assert check_contract(_head(10), c, update_lock=False).ok


# ---------------------------------------------------------------- pyproject tables


def _pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(body)
    return path


def test_read_contracts(tmp_path: Path) -> None:
    path = _pyproject(
        tmp_path,
        """
[tool.torchsurgeon]
pythonpath = ["src"]

[[tool.torchsurgeon.contracts]]
model = "mypkg.models:build_classifier"
input = [1, 224, 224]
output = [10]
max_params = 26_000_000
lock = "tests/arch/classifier.lock.json"

[[tool.torchsurgeon.contracts]]
model = "mypkg.models:build_two"
input = {image = [3, 64, 64], mask = [1, 64, 64]}
no_invalid = false
batch = 2
""",
    )
    first, second = read_contracts(path)
    assert first.model == "mypkg.models:build_classifier" and first.index == 0
    assert first.contract == ShapeContract(
        input=(1, 224, 224), output=(10,), max_params=26_000_000, lock=tmp_path / "tests/arch/classifier.lock.json"
    )
    assert first.pythonpath == ((tmp_path / "src").resolve(),)
    assert second.contract == ShapeContract(
        input={"image": (3, 64, 64), "mask": (1, 64, 64)}, no_invalid=False, batch=2
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[tool.other]\n", r"has no \[\[tool.torchsurgeon.contracts\]\] table — add one"),
        ("[tool.torchsurgeon\n", r"is not valid TOML"),
        ("[tool.torchsurgeon]\ncontracts = 3\n", r"key 'tool.torchsurgeon.contracts' must be an array of tables"),
        (
            '[tool.torchsurgeon]\npythonpath = "src"\n[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\n',
            r"key 'tool.torchsurgeon.pythonpath' must be a list",
        ),
        ("[[tool.torchsurgeon.contracts]]\ninput = [1]\n", r"#1: key 'model' is missing"),
        ('[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\n', r"#1: key 'input' is missing"),
        (
            '[[tool.torchsurgeon.contracts]]\nmodel = "a.b"\ninput = [1]\n',
            r"key 'model' is 'a.b' — expected 'MODULE:CALLABLE'",
        ),
        (
            '[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\nmax_param = 5\n',
            r"#1: unknown key 'max_param' — did you mean 'max_params'\?",
        ),
        (
            '[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\n[[tool.torchsurgeon.contracts]]\n'
            'model = "a:b"\ninput = [1, -224, 224]\n',
            r"#2: key 'input': input=\[1, -224, 224\]: dimension 1 is -224 — every dimension must be positive",
        ),
        ('[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\nbatch = 0\n', r"key 'batch': batch=0"),
        ('[[tool.torchsurgeon.contracts]]\nmodel = "a:b"\ninput = [1]\nlock = 1\n', r"key 'lock' is 1"),
    ],
)
def test_malformed_tables_name_the_file_and_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = _pyproject(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as info:
        read_contracts(path)
    assert "pyproject.toml" in str(info.value)


def test_missing_pyproject(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist — pass the path of your pyproject.toml"):
        read_contracts(tmp_path / "pyproject.toml")
