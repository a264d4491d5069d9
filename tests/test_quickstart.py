"""docs/quickstart.ipynb runs in a Jupyter kernel and shows the seed scenario's tables in colour.

The notebook is committed with its outputs (readers see the tables on GitHub); this test executes
a copy and checks the committed outputs are the ones it gives now.  After a deliberate change:
``pytest tests/test_quickstart.py --overwrite-expected -m zoo`` rewrites the notebook.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

import pytest

import torchsurgeon

pytestmark = pytest.mark.zoo  # a kernel, torch and resnet50 twice: about 15 s

NOTEBOOK = Path(__file__).parents[1] / "docs" / "quickstart.ipynb"
RED, ORANGE, GREEN = "#f4cccc", "#fce5cd", "#d9ead3"


def _row_colour(html: str, name: str) -> str:
    """Background colour of the table row whose first cell is ``name``."""
    match = re.search(rf'<tr style="background-color: (#\w+);[^>]*><td[^>]*>{re.escape(name)}</td>', html)
    assert match, f"no row {name!r}"
    return match.group(1)


def _outputs(nb: Any) -> list[list[tuple[str, Any]]]:
    """What each code cell shows (text, HTML, errors), without execution counts and metadata."""
    return [
        [(out["output_type"], out.get("text") or dict(out.get("data", {})) or out.get("ename")) for out in cell.outputs]
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


def test_quickstart_runs_and_shows_the_seed_scenario_in_colour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat nbclient ipykernel (the dev extra)")
    nbclient = pytest.importorskip("nbclient", reason="pip install nbclient ipykernel (the dev extra)")
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    try:
        kernelspec.KernelSpecManager().get_kernel_spec("python3")
    except kernelspec.NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel installed: pip install ipykernel")
    src = str(Path(torchsurgeon.__file__).parents[1])  # the kernel imports this checkout's torchsurgeon
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    shown = [
        out["data"]["text/html"]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "text/html" in out.get("data", {})
    ]
    assert len(shown) == 2, "the report and the surgery check show themselves as HTML"
    report, surgery = shown
    assert _row_colour(report, "conv1") == RED and _row_colour(report, "layer1") == "#ffffff"
    assert "layer3.1 … 5" in report and "×5 Bottleneck" in report
    assert "25,557,032" in report  # resnet50's parameters
    assert _row_colour(surgery, "conv1.weight") == ORANGE and _row_colour(surgery, "fc.1.weight") == GREEN
    assert _row_colour(surgery, "conv1") == ORANGE and _row_colour(surgery, "fc") == GREEN
    verdict = next(c for c in nb.cells if "".join(c.source) == "surgery.verdict").outputs[0]["data"]["text/plain"]
    assert verdict == "'1 folded (conv1), 1 new (fc.1), 1 removed (fc), 0 invalid'"
    fits = nb.cells[-1].outputs[0]["data"]["text/plain"]  # will it fit: (max batch in 24 GiB, peak at batch 64)
    best, peak = ast.literal_eval(fits)
    assert best > 64 and 2**30 < peak < 24 * 2**30  # a batch of 64 fits in 24 GiB with room to spare

    if request.config.getoption("--overwrite-expected"):
        nbformat.write(nb, NOTEBOOK)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert _outputs(committed) == _outputs(nb), (
        "docs/quickstart.ipynb's outputs are stale: rerun with --overwrite-expected"
    )
