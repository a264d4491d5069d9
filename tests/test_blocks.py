"""Rows grouped by module depth: block totals against the model's own parameters, roll-up, collapsing."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models import TiedLM, llama_7b_on_meta
from torchsurgeon import InputError, check_surgery, paramcount
from torchsurgeon.blocks import FULL_DEPTH, BlockRow, group_layers, repeat_runs, worst_status
from torchsurgeon.records import TableColumn


def unique_params(modules: list[nn.Module], *, trainable: bool = False) -> int:
    """Elements of the distinct parameter tensors of ``modules`` (each tensor once), computed from the model."""
    seen: dict[int, torch.Tensor] = {}
    for module in modules:
        for p in module.parameters():
            if not trainable or p.requires_grad:
                seen[id(p)] = p
    return sum(p.numel() for p in seen.values())


def every_row(rows: list[BlockRow]) -> list[BlockRow]:
    return [row for top in rows for row in top.walk()]


# ---------------------------------------------------------------- random nested models

WIDTH = 4


@st.composite
def nested_models(draw: st.DrawFn, level: int = 0) -> nn.Module:
    """A Sequential of Linear/ReLU layers and nested Sequentials (some repeated), some frozen."""
    children: list[nn.Module] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["linear", "relu", "block", "repeat"] if level < 2 else ["linear", "relu"]))
        if kind == "linear":
            layer = nn.Linear(WIDTH, WIDTH, bias=draw(st.booleans()))
            if draw(st.booleans()):
                layer.requires_grad_(False)
            children.append(layer)
        elif kind == "relu":
            children.append(nn.ReLU())
        elif kind == "block":
            children.append(draw(nested_models(level + 1)))
        else:
            template = draw(nested_models(level + 1))
            children += [copy.deepcopy(template) for _ in range(draw(st.integers(2, 4)))]
    return nn.Sequential(*children)


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
@settings(deadline=None, max_examples=25)
@given(model=nested_models(), depth=st.sampled_from([1, 2, 3, FULL_DEPTH]), tie=st.booleans())
def test_block_totals_add_up_to_the_models_parameters(model: nn.Module, depth: int, tie: bool) -> None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if tie and len(linears) >= 2:
        linears[-1].weight = linears[0].weight  # a tied weight: counted once, in the first row that uses it
    report = paramcount(model, (WIDTH,))
    rows = report.rows(depth)
    top = rows
    assert sum(r.params for r in top) == report.total == unique_params([model])
    assert sum(r.trainable for r in top) == unique_params([model], trainable=True)
    assert sum(r.macs for r in top) == report.macs
    for row in every_row(rows):
        if row.count == 1 and row.children:  # a block's total is the sum of the rows under it
            assert row.params == sum(c.params for c in row.children)
            assert row.macs == sum(c.macs for c in row.children)
        if not tie and not row.is_layer and row.count == 1:
            assert row.params == unique_params([model.get_submodule(row.name)])
        if row.count > 1:  # a collapsed row: the totals of consecutive blocks p.i … p.j
            prefix, _, first = row.name.partition(" … ")[0].rpartition(".")
            last = int(row.name.partition(" … ")[2])
            blocks = [model.get_submodule(f"{prefix}.{i}" if prefix else str(i)) for i in range(int(first), last + 1)]
            assert len(blocks) == row.count >= 2
            assert len({type(b) for b in blocks}) == 1 and row.type == f"×{row.count} {type(blocks[0]).__name__}"
            if not tie:
                assert row.params == unique_params(blocks)


def test_full_depth_has_a_row_for_every_module_call() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2))))
    rows = every_row(paramcount(model, (4,)).rows(FULL_DEPTH, collapse=False))
    assert [(r.name, r.level, r.is_layer) for r in rows] == [
        ("0", 0, True),
        ("1", 0, False),
        ("1.0", 1, True),
        ("1.1", 1, False),
        ("1.1.0", 2, True),
        ("1.1.1", 2, True),
    ]
    assert [r.output_shape for r in rows if not r.is_layer] == [(1, 2), (1, 2)]  # a block's output: its last layer's
    assert rows[1].input_shape == (1, 4)


def test_tied_weights_are_counted_in_the_first_row_and_marked_shared() -> None:
    model = TiedLM()
    report = paramcount(model, torch.zeros(1, 6, dtype=torch.long))
    rows = {r.name: r for r in every_row(report.rows(FULL_DEPTH))}
    assert rows["embed"].params == 50 * 8 and rows["embed"].shared
    assert rows["head"].params == 0 and rows["head"].shared  # its weight is the embedding's, counted there
    assert sum(r.params for r in report.rows(1)) == report.total == 50 * 8 + 16


def test_unused_parameters_get_a_row_so_the_column_adds_up() -> None:
    class WithSpareHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.spare = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    report = paramcount(WithSpareHead(), (4,))
    rows = report.rows()
    assert [(r.name, r.params) for r in rows] == [("fc", 10), ("(unused by forward)", 15)]
    assert rows[1].type == "2 parameters"


# ---------------------------------------------------------------- status roll-up


class _Stage(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 8, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def test_a_block_holding_an_invalid_layer_is_invalid() -> None:
    model = nn.Sequential(nn.Sequential(_Stage(3), _Stage(8)), nn.Flatten())
    report = paramcount(model, (1, 8, 8))
    top = report.rows(1)
    assert [(r.name, r.status) for r in top] == [("0", "invalid"), ("1", "ok")]
    assert "0.0.conv (Conv2d) expects in_channels=3, got 1" in top[0].message
    inner = report.rows(2)[0].children
    assert [(r.name, r.type, r.status) for r in inner] == [("0.0", "_Stage", "invalid"), ("0.1", "_Stage", "ok")]


def test_worst_status_order() -> None:
    assert worst_status(["ok", "new", "folded"]) == "folded"
    assert worst_status(["new", "kept", "ok"]) == "new"
    assert worst_status(["folded", "invalid"]) == "invalid"
    assert worst_status(["reinitialised", "folded"]) == "reinitialised"


# ---------------------------------------------------------------- collapsing


def _tower(n: int) -> nn.Sequential:
    return nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(n)])


def test_blocks_whose_status_differs_are_not_collapsed() -> None:
    before = _tower(5)
    after = copy.deepcopy(before)
    after[2][0] = nn.Linear(8, 8)  # same shape, new weights: reinitialised
    rows = check_surgery(before, after, (8,)).after.rows(1)
    assert [(r.name, r.type, r.status) for r in rows] == [
        ("0 … 1", "×2 Sequential", "ok"),
        ("2", "Sequential", "reinitialised"),
        ("3 … 4", "×2 Sequential", "ok"),
    ]
    assert [r.params for r in rows] == [144, 72, 144]


def test_blocks_whose_shapes_differ_are_not_collapsed() -> None:
    same = [nn.Sequential(nn.Linear(8, 8)) for _ in range(2)]
    model = nn.Sequential(*same, nn.Sequential(nn.Linear(8, 4)))
    rows = paramcount(model, (8,)).rows(1)
    assert [r.name for r in rows] == ["0 … 1", "2"]


def test_collapse_can_be_turned_off_and_is_off_at_full_depth() -> None:
    report = paramcount(_tower(3), (8,))
    assert [r.name for r in report.rows(1)] == ["0 … 2"]
    assert [r.name for r in report.rows(1, collapse=False)] == ["0", "1", "2"]
    assert "0 … 2" not in report.table(depth=-1) and "0 … 2" in report.table(depth=1)


def test_repeat_runs_needs_consecutive_numbers_and_the_same_parent() -> None:
    assert repeat_runs(["a.0", "b.1"], [1, 1]) == []
    assert repeat_runs(["a.0", "a.1", "a.2"], [1, 1, 2]) == [range(0, 2)]
    assert repeat_runs(["x", "y"], [1, 1]) == []


def test_depth_must_be_positive_or_minus_one() -> None:
    report = paramcount(_tower(2), (8,))
    for depth in (0, -2, True):
        with pytest.raises(InputError, match=r"depth=.* — give a positive int .* or -1 for every layer"):
            group_layers(report.layers, depth)
    with pytest.raises(InputError, match=r"depth=0"):
        report.table(depth=0)


def test_an_llm_on_meta_prints_on_one_screen() -> None:
    model = llama_7b_on_meta()
    report = paramcount(model, torch.zeros(1, 16, dtype=torch.long, device="meta"))
    rows = report.rows()
    assert len(report.layers) > 1000 and len(every_row(rows)) < 30
    blocks = next(r for r in rows if r.count > 1)
    assert (blocks.name, blocks.type) == ("layers.0 … 31", "×32 LlamaBlock")
    assert blocks.params == unique_params(list(model.layers))
    assert sum(r.params for r in rows) == unique_params([model]) == report.total


# ---------------------------------------------------------------- zoo: models nobody here wrote


def _torchvision(name: str) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name)


def _gpt2() -> nn.Module:  # tied weights: lm_head.weight is transformer.wte.weight
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=32, n_layer=4, n_head=2, vocab_size=100, n_positions=64)
    return transformers.GPT2LMHeadModel(config)


ZOO = {
    "resnet50": (lambda: _torchvision("resnet50"), (3, 224, 224)),
    "densenet121": (lambda: _torchvision("densenet121"), (1, 64, 64)),
    "mobilenet_v3_small": (lambda: _torchvision("mobilenet_v3_small"), (3, 96, 96)),
    "efficientnet_b0": (lambda: _torchvision("efficientnet_b0"), (3, 96, 96)),
    "vit_b_16": (lambda: _torchvision("vit_b_16"), (3, 224, 224)),
    "swin_t": (lambda: _torchvision("swin_t"), (3, 224, 224)),
    "convnext_tiny": (lambda: _torchvision("convnext_tiny"), (3, 64, 64)),
    "gpt2": (_gpt2, {"input_ids": (16,)}),
}


@pytest.mark.zoo
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_block_totals_equal_the_models_parameters(name: str) -> None:
    build, shape = ZOO[name]
    model = build()
    report = paramcount(model, shape)
    total = unique_params([model])
    for depth in (1, 2, 3, FULL_DEPTH):
        rows = report.rows(depth)
        assert sum(r.params for r in rows) == total == report.total, depth
        assert sum(r.trainable for r in rows) == unique_params([model], trainable=True)
        assert sum(r.macs for r in rows) == report.macs
        for row in every_row(rows):
            if row.count == 1 and row.children and not row.is_layer:
                assert row.params == sum(c.params for c in row.children), row.name
    for fmt in ("text", "markdown", "csv", "html"):
        assert report.table(columns=list(TableColumn), fmt=fmt)
    assert len(str(report).splitlines()) < 80, "the default depth keeps the model on a screen or two"
