"""Pictures of the graph: DOT, GraphML, SVG/PNG through Graphviz, and the ``graph`` command."""

from __future__ import annotations

import io
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import CifarNet, TiedLM, WithGate, on_meta
from torchsurgeon import ConfigError, InputError, LayerStatus, ParamChange, paramcount
from torchsurgeon.cli import main
from torchsurgeon.dot import STATUS_COLOURS, picture_graph, render, to_dot, to_graphml
from torchsurgeon.graph import update_record

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` is not installed")
DOCS_PNG = Path(__file__).parent.parent / "docs" / "resnet50_1ch.png"
SVG = "{http://www.w3.org/2000/svg}"


def _svg_boxes(svg: str) -> dict[str, tuple[str, str]]:
    """``{node title: (fill, stroke)}`` of the boxes Graphviz drew."""
    root = ET.parse(io.StringIO(svg)).getroot()
    boxes = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") != "node":
            continue
        title = g.find(f"{SVG}title")
        shape = next(e for e in g.iter() if e.tag in (f"{SVG}path", f"{SVG}polygon"))
        assert title is not None
        boxes[str(title.text)] = (str(shape.get("fill")), str(shape.get("stroke")))
    return boxes


def _resnet50() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    return on_meta(torchvision.models.resnet50)


@needs_dot
def test_resnet50_at_one_channel_draws_conv1_red(tmp_path: Path) -> None:
    r = paramcount(_resnet50(), (1, 224, 224))
    out = render(r.to_dot(), tmp_path / "resnet50.svg")
    boxes = _svg_boxes(out.read_text())
    red, ok = STATUS_COLOURS[LayerStatus.INVALID], STATUS_COLOURS[LayerStatus.OK]
    assert boxes["conv1"] == red == ("#f4cccc", "#cc0000")
    assert [name for name, colours in boxes.items() if colours == red] == ["conv1"]
    assert boxes["bn1"] == boxes["layer1_0_conv1"] == boxes["fc"] == ok
    modules = [layer for layer in r.layers if layer.op == "call_module"]
    assert len(boxes) == len(modules) + 2 + 16 + 1  # + input and output, 16 residual adds, flatten


@needs_dot
def test_graph_command_folds_blocks_by_depth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchvision")
    out = tmp_path / "resnet50.svg"
    code = main(["graph", "torchvision.models:resnet50", "--input", "1,224,224", "-o", str(out), "--depth", "1"])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (ResNet, 1 invalid: conv1)"
    boxes = _svg_boxes(out.read_text())
    assert list(boxes) == [
        "x",
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "flatten",
        "fc",
        "output",
    ]
    assert boxes["conv1"] == STATUS_COLOURS[LayerStatus.INVALID] and boxes["layer1"] == STATUS_COLOURS[LayerStatus.OK]


def test_folded_boxes_add_up_to_the_model() -> None:
    model = _resnet50()
    r = paramcount(model, (3, 224, 224))
    for depth in (1, 2, 3):
        P = picture_graph(r.graph, depth=depth)
        assert sum(P.nodes[n]["params"] for n in P) == r.total
        assert nx.is_directed_acyclic_graph(P) and nx.is_weakly_connected(P)
    P = picture_graph(r.graph, depth=1)
    layer3 = P.nodes["layer3"]
    assert layer3["type"] == "Sequential (62 nodes)" and layer3["output_shape"] == (1, 1024, 14, 14)
    assert layer3["params"] == sum(p.numel() for p in model.layer3.parameters())
    assert list(P.successors("layer2")) == ["layer3"]


def test_depth_must_be_positive() -> None:
    r = paramcount(CifarNet(), (3, 32, 32))
    for depth in (0, -1, True, 1.5):
        with pytest.raises(InputError, match=r"depth=.* — give a positive int"):
            r.to_dot(depth=depth)  # type: ignore[arg-type]


def test_statuses_have_their_colours() -> None:
    r = paramcount(WithGate(), (6,))
    G = r.graph.copy()
    update_record(G, "inp", change=ParamChange.FOLDED)  # surgery's changes, set by another part of the library
    update_record(G, "out", change=ParamChange.NEW)
    dot = to_dot(G)
    for node, status in (("inp", ParamChange.FOLDED), ("gate", LayerStatus.OPAQUE), ("out", ParamChange.NEW)):
        fill, border = STATUS_COLOURS[status]
        line = next(line for line in dot.splitlines() if line.startswith(f'  "{node}" ['))
        assert f'fillcolor="{fill}", color="{border}"' in line
    assert STATUS_COLOURS[ParamChange.FOLDED][0] == "#fce5cd"  # orange
    assert STATUS_COLOURS[ParamChange.NEW][0] == "#d9ead3"  # green
    assert STATUS_COLOURS[LayerStatus.OPAQUE][0] == "#d9d9d9"  # grey


def test_labels_name_type_shape_params_and_the_reason() -> None:
    dot = paramcount(CifarNet(), (1, 32, 32)).to_dot()
    assert dot.startswith("digraph torchsurgeon {\n") and dot.endswith("}\n")
    assert 'label="CifarNet, input x (1, 1, 32, 32)"' in dot
    conv1 = next(line for line in dot.splitlines() if line.startswith('  "conv1" ['))
    assert 'label="conv1\\nConv2d\\n(1, 6, 28, 28)\\n456 params\\ninvalid\\n' in conv1
    assert "conv1 (Conv2d) expects in_channels=3, got 1" in conv1
    assert '"conv1" -> "relu";' in dot and '"fc3" -> "output";' in dot


def test_parameter_reads_and_shape_arithmetic_are_folded_into_their_users() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x.view(x.size(0), -1), self.weight)

    r = paramcount(Functional(), (2, 2))
    P = picture_graph(r.graph)
    assert [(P.nodes[n]["name"], P.nodes[n]["params"]) for n in P] == [
        ("x", 0),
        ("view", 0),
        ("linear", 12),
        ("output", 0),
    ]
    assert list(P.edges) == [("x", "view"), ("view", "linear"), ("linear", "output")]


def test_graphml_round_trip() -> None:
    r = paramcount(TiedLM(), (7,))
    H = nx.parse_graphml(r.to_graphml())
    assert list(H.nodes) == list(r.graph.nodes) and set(H.edges) == set(r.graph.edges)
    head = H.nodes["head"]
    assert (head["module_type"], head["output_shape"], head["status"], head["params"]) == (
        "Linear",
        "(1, 7, 50)",
        "ok",
        400,
    )
    assert head["param_names"] == "head.weight" and head["fill"] == "#ffffff"
    grey = nx.parse_graphml(to_graphml(paramcount(CifarNet(), (1, 32, 32)).graph))
    assert grey.nodes["conv1"]["status"] == "invalid"
    assert grey.nodes["conv1"]["finding"].startswith("conv1 (Conv2d) expects in_channels=3, got 1")
    assert sum(grey.nodes[n]["params"] for n in grey) == 62_006


def test_render_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match=r"cannot render 'g.jpeg' as 'jpeg' — use one of svg, png, pdf"):
        render("digraph {}", tmp_path / "g.jpeg")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"Graphviz's `dot` is not installed — install it \(apt-get install graphviz"):
        render("digraph {}", tmp_path / "g.svg")


@needs_dot
def test_dot_failures_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dot failed on g.svg \(exit 1\): .*syntax error"):
        render("digraph { a -> }", tmp_path / "g.svg")


def test_graph_command_writes_dot_and_graphml_without_graphviz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dot, graphml = tmp_path / "m.dot", tmp_path / "m.graphml"
    assert main(["graph", "torch.nn:Identity", "--input", "3", "-o", str(dot)]) == 0
    assert main(["graph", "torch.nn:Identity", "--input", "3", "-o", str(graphml)]) == 0
    assert '"_unnamed" [label="Identity\\nIdentity\\n(1, 3)"' in dot.read_text()  # the model as one node
    assert nx.parse_graphml(graphml.read_text()).nodes["_unnamed"]["module_type"] == "Identity"
    assert main(["graph", "torch.nn:Identity", "--input", "3", "-o", str(tmp_path / "m.txt")]) == 2
    assert "write .svg, .png, .pdf (Graphviz), .dot or .graphml" in capsys.readouterr().err


def test_readme_picture_exists() -> None:
    assert DOCS_PNG.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "render it: see docs/opaque-layers.md"


class _CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.mid = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.mid(self.block(self.stem(x))))


def test_a_block_called_twice_is_two_boxes_not_a_cycle() -> None:
    P = picture_graph(paramcount(_CalledTwice(), (4,)).graph, depth=1)
    assert [P.nodes[n]["name"] for n in nx.topological_sort(P)] == [
        "x",
        "stem",
        "block",
        "mid",
        "block (call 2)",
        "output",
    ]
    assert P.nodes["block@1"]["params"] == P.nodes["block"]["params"] == 20


def test_depth_collapses_identical_consecutive_blocks() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64)
    model = transformers.BertModel(config)
    r = paramcount(model, {"input_ids": (8,)})
    P = picture_graph(r.graph, depth=2)  # the table's depth: the ModuleList encoder.layer is no level (a probe)
    layers = [n for n in P if P.nodes[n]["name"].startswith("encoder.layer.")]
    assert [P.nodes[n]["name"] for n in layers] == ["encoder.layer.0 … 5"]
    assert "encoder.layer.0 … 5" in r.table(depth=2)
    box = P.nodes[layers[0]]
    assert box["type"].startswith("×6 BertLayer (") and box["blocks"] == 6
    assert box["params"] == sum(p.numel() for p in model.encoder.layer.parameters())
    assert sum(P.nodes[n]["params"] for n in P) == r.total
    assert nx.is_directed_acyclic_graph(P) and nx.is_weakly_connected(P)
    apart = picture_graph(r.graph, depth=2, collapse=False)
    assert len([n for n in apart if apart.nodes[n]["name"].startswith("encoder.layer.")]) == 6
    assert "encoder.layer.0 … 5\\n×6 BertLayer" in r.to_dot(depth=2)
