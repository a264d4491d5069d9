"""Architecture lockfiles: the file format, diffs against real forwards, bad files, update mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models import CifarNet, grey_classifier
from torchsurgeon import (
    UPDATE_ENV,
    ConfigError,
    ContractError,
    InputError,
    assert_matches_lock,
    check_contract,
    diff_lock,
    read_lock,
    write_lock,
)
from torchsurgeon.lockfile import LOCK_FORMAT
from torchsurgeon.records import LockChange


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
    total = sum(p.numel() for p in model.parameters())
    assert calls["pool"] == 2 and data["total"] == total == sum(r["params"] for r in data["layers"])
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
@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
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
        assert_matches_lock(grey_classifier(10), path)
    assert_matches_lock(grey_classifier(10), path, (1, 8, 8))  # creates it, folder included
    assert_matches_lock(grey_classifier(9), path)  # rewrites it, for the input recorded in it
    assert read_lock(path)["output_shape"] == [1, 9]
    monkeypatch.setenv(UPDATE_ENV, "0")
    assert_matches_lock(grey_classifier(9), path)
    with pytest.raises(ContractError, match="1 layer differs"):
        assert_matches_lock(grey_classifier(10), path)
    with pytest.raises(ContractError, match=r"written for input \(1, 8, 8\), batch 1, not input \(1, 9, 9\)"):
        assert_matches_lock(grey_classifier(9), path, (1, 9, 9))


def test_update_takes_true_false_or_none(tmp_path: Path) -> None:
    """assert_matches_lock(..., update='no') wrote the lockfile (a true value to Python)."""
    with pytest.raises(InputError, match=r"update='no' — give True or False, or None"):
        assert_matches_lock(nn.Sequential(nn.Linear(4, 2)), tmp_path / "m.lock.json", (4,), update="no")  # type: ignore[arg-type]
    assert not (tmp_path / "m.lock.json").exists()
