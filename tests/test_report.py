"""The depth table in every format: expected files, column sums, HTML colours and escaping."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
import torch
import torchvision
from torch import nn

from models import CifarNet
from torchsurgeon import InputError, adapt_input_channels, analyse_graph, check_surgery, paramcount, replace_head
from torchsurgeon.graph import build_graph
from torchsurgeon.records import TableColumn
from torchsurgeon.report import html_table
from torchsurgeon.trace import trace

RED, ORANGE, GREEN = "#f4cccc", "#fce5cd", "#d9ead3"


class _Rows(HTMLParser):
    """Each ``<tr>`` of an HTML table as (background colour, cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        style = dict(attrs).get("style") or ""
        if tag == "tr":
            colour = next((p.split(":")[1].strip() for p in style.split(";") if "background-color" in p), "")
            self.rows.append((colour, []))
        elif tag in ("td", "th"):
            self._in_cell = True
            self.rows[-1][1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1][1][-1] += data


def html_rows(text: str) -> list[tuple[str, list[str]]]:
    parser = _Rows()
    parser.feed(text)
    return parser.rows


# ---------------------------------------------------------------- expected files (read them when they change)


def test_resnet50_at_the_default_depth(expected_file: Callable[[str, str], None]) -> None:
    report = paramcount(torchvision.models.resnet50(), (1, 224, 224))
    text = str(report)
    expected_file("resnet50_1ch.txt", text + "\n")
    assert len(text.splitlines()) < 60  # one screen
    assert "conv1 (Conv2d) expects in_channels=3, got 1 — fold it with adapt_input_channels(model, 1)" in text


def test_bert_layers_collapse(expected_file: Callable[[str, str], None]) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=12, num_attention_heads=4, intermediate_size=128)
    model = transformers.BertModel(config)
    report = paramcount(model, {"input_ids": (16,)})
    text = str(report)
    expected_file("bert_12_layers.txt", text + "\n")
    row = next(line for line in text.splitlines() if "×12 BertLayer" in line)
    assert row.split()[:4] == ["encoder.layer.0", "…", "11", "×12"]
    layers = sum(p.numel() for p in model.encoder.layer.parameters())
    assert f"{layers:,}" in row.split()  # the twelve layers' parameters, counted from the model


def test_cifarnet_in_markdown_csv_and_html(expected_file: Callable[[str, str], None]) -> None:
    report = paramcount(CifarNet(), (1, 32, 32))
    columns = ["input", "output", "params", "trainable", "kernel", "percent", "macs", "status"]
    expected_file("cifarnet_1ch.md", report.table(columns=columns, fmt="markdown") + "\n")
    expected_file("cifarnet_1ch.csv", report.table(columns=columns, fmt="csv"))
    expected_file("cifarnet_1ch.html", report.table(fmt="html") + "\n")


# ---------------------------------------------------------------- independent checks


def test_csv_is_one_row_per_layer_and_its_columns_add_up() -> None:
    model = torchvision.models.resnet18()
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    report = paramcount(model, (3, 64, 64))
    rows = list(csv.DictReader(io.StringIO(report.table(fmt="csv", columns="params,trainable,macs,kernel"))))
    modules = [name for name, m in model.named_modules() if not list(m.children())]
    assert [r["Layer"] for r in rows if r["Type"] == "Conv2d"] == [
        name for name in modules if isinstance(model.get_submodule(name), nn.Conv2d)
    ]
    assert sum(int(r["Params"]) for r in rows) == sum(p.numel() for p in model.parameters())
    assert sum(int(r["Trainable"]) for r in rows) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert next(r for r in rows if r["Layer"] == "conv1")["Kernel"] == "7×7"
    conv = model.conv1
    assert int(next(r for r in rows if r["Layer"] == "conv1")["MACs"]) == conv.weight.numel() * 32 * 32


def test_text_column_sums_at_every_depth() -> None:
    model = torchvision.models.resnet18()
    report = paramcount(model, (3, 64, 64))
    for depth in (1, 2, 3, -1):
        lines = report.table(depth=depth, columns="params,status").splitlines()
        top = [line for line in lines[3:] if line.endswith(" ok") and not line.startswith(" ")]
        assert sum(int(line.split()[-2].replace(",", "")) for line in top) == sum(p.numel() for p in model.parameters())


def test_columns_are_chosen_by_name_or_torchinfo_name() -> None:
    report = paramcount(CifarNet(), (3, 32, 32))
    header = report.table(columns=["input_size", "num_params", "kernel_size", "mult_adds"]).splitlines()[1]
    assert header.split() == ["Layer", "Type", "Input", "shape", "Params", "Kernel", "MACs"]
    assert report.table(columns="percent").splitlines()[1].split() == ["Layer", "Type", "%", "params"]
    assert TableColumn("params_percent") is TableColumn.PERCENT
    with pytest.raises(InputError, match=r"column='flops' — use one of 'input', 'output', 'params'"):
        report.table(columns="params,flops")
    with pytest.raises(InputError, match=r"fmt='xls' — use one of 'text', 'markdown', 'csv', 'html'"):
        report.table(fmt="xls")


def test_percent_column_against_the_models_parameters() -> None:
    model = CifarNet()
    report = paramcount(model, (3, 32, 32))
    row = next(line for line in report.table(columns="percent").splitlines() if line.startswith("fc1 "))
    assert row.split()[-1] == f"{100 * model.fc1.weight.numel() / 62_006 + 100 * 120 / 62_006:.2f}%"


def test_html_rows_are_coloured_by_status() -> None:
    report = paramcount(torchvision.models.resnet18(), (1, 64, 64))
    rows = html_rows(report._repr_html_())
    by_name = {cells[0]: colour for colour, cells in rows if cells}
    assert by_name["conv1"] == RED and by_name["bn1"] == "#ffffff" and by_name["layer1"] == "#ffffff"


def test_seed_surgery_html_shows_the_fold_and_the_new_head() -> None:
    original = torchvision.models.resnet18()
    edited = adapt_input_channels(original, 1).model
    edited.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, 5))  # a new head, as users write it
    surgery = check_surgery(original, edited, (1, 64, 64))
    rows = html_rows(surgery._repr_html_())
    colours = {cells[0]: colour for colour, cells in rows if cells}
    assert colours["conv1.weight"] == ORANGE and colours["fc.1.weight"] == GREEN  # the parameters' table
    assert colours["conv1"] == ORANGE and colours["fc.1"] == GREEN  # the edited model's table
    assert colours["fc"] == GREEN and colours["layer1"] == colours["fc.0"] == "#ffffff"  # a block: rolled up
    text = surgery.table(depth=1, columns="status")
    assert next(line for line in text.splitlines() if line.startswith("conv1 ")).split()[-1] == "folded"
    assert next(line for line in text.splitlines() if line.startswith("fc ")).split()[-1] == "new"


def test_replaced_head_is_reinitialised_in_yellow() -> None:
    original = torchvision.models.resnet18()
    surgery = check_surgery(original, replace_head(original, 5).model, (3, 64, 64))
    colours = {cells[0]: colour for colour, cells in html_rows(surgery._repr_html_()) if cells}
    assert colours["fc"] == colours["fc.weight"] == "#fff2cc"


def test_html_escapes_names_and_needs_no_script_or_stylesheet() -> None:
    G = build_graph(trace(nn.Sequential(nn.Linear(4, 2))))
    report, _ = analyse_graph(G, (4,), name="<script>alert('x')</script>")
    text = report._repr_html_()
    assert "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<link" not in text and "<style" not in text and "class=" not in text
    table = html_table(["a&b"], [["<i>"]], ["new"])
    assert "a&amp;b" in table and "&lt;i&gt;" in table and GREEN in table


def test_functional_weights_count_in_their_block() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, self.weight) + 1

    model = nn.Sequential(Scaled(), nn.ReLU())
    rows = paramcount(model, (3,)).rows(1)
    assert [(r.name, r.type, r.params) for r in rows] == [("0", "Scaled", 9), ("1", "ReLU", 0)]
