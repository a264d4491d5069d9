"""The fold a report names when other layers read the input only rearranged (torchsurgeon.foldalone)."""

from __future__ import annotations

import pytest
import torch

from models import TiledResidualStem
from torchsurgeon import SurgeryError, adapt_input_channels, paramcount


@pytest.mark.parametrize(("channels", "call"), [(1, "adapt_input_channels(model, 1, layer=['conv'])"), (4, None)])
def test_the_report_names_the_fold_of_the_stem_alone_and_it_runs_as_written(channels: int, call: str | None) -> None:
    """Found by a probe (MONAI VNet): the report named adapt_input_channels(model, 1), which refuses to fold the
    layers that read the input only tiled into the stem's residual; it names the fold of the stem alone, which runs
    as written, keeps the outputs on a grey image and gives the count the report promised."""
    torch.manual_seed(0)
    model = TiledResidualStem().double().eval()
    report = paramcount(model, (channels, 16, 16), batch=2)
    fix = next(f.fix for f in report.findings if f.layer == "conv")
    call = call or f"adapt_input_channels(model, {channels}, mode='spread', layer=['conv'])"
    assert fix == f"fold it with {call}"
    with pytest.raises(SurgeryError, match="read the input only after"):  # the plain fold, as before
        adapt_input_channels(model, channels, mode="spread")
    edited = eval(call, {"adapt_input_channels": adapt_input_channels, "model": model}).model  # as written
    assert paramcount(edited, (channels, 16, 16), batch=2).findings == ()
    assert sum(p.numel() for p in edited.parameters()) == report.total_for_input
    grey = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(edited(grey.expand(2, channels, 16, 16)), model(grey.expand(2, 2, 16, 16)))


def test_where_the_stem_alone_does_not_run_the_report_says_no_fold_runs() -> None:
    """8 channels tile from 1, 2, 4 or 8, not from 3: no fold runs, and the report names none."""
    model = TiledResidualStem()
    fix = next(f.fix for f in paramcount(model, (3, 16, 16), batch=2).findings if f.layer == "conv")
    assert fix.startswith("no fold runs: down read the input only after .repeat(), and with conv alone folded to 3")
    for layer in (None, ["conv"]):  # the truth: surgery refuses both
        with pytest.raises(SurgeryError):
            adapt_input_channels(model, 3, mode="spread", layer=layer)
