"""Per-channel means and stds inside a model, widened with its input."""

from __future__ import annotations

import torch
from torch import nn

from torchsurgeon import ParamChange, adapt_input_channels
from torchsurgeon.channelconstants import widen_channel_constants


class _PixelNormalised(nn.Module):
    """Segment Anything's layout: ``pixel_mean`` / ``pixel_std`` buffers of shape (3, 1, 1) before the stem."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor([123.7, 116.3, 103.5]).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor([58.4, 57.1, 57.4]).view(-1, 1, 1), False)
        self.stem = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem((x - self.pixel_mean) / self.pixel_std)


def test_buffers_are_tiled_and_the_zero_extra_fold_is_exact() -> None:
    model = _PixelNormalised().double()
    result = adapt_input_channels(model, 5, "zero_extra")
    assert [(r.name, r.status) for r in result.changes[1:]] == [
        ("pixel_mean", ParamChange.SETTING),
        ("pixel_std", ParamChange.SETTING),
    ]
    assert result.model.pixel_std.shape == (5, 1, 1) and "pixel_std" not in result.model.state_dict()  # not persistent
    x = torch.rand(2, 5, 8, 8, dtype=torch.float64) * 255
    torch.testing.assert_close(result.model(x), model(x[:, :3]), rtol=1e-12, atol=1e-12)


def test_a_narrower_input_and_a_norm_layers_state_are_left_alone() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3))
    assert widen_channel_constants(model, 3, 4) == []
    assert widen_channel_constants(_PixelNormalised(), 3, 1) == []  # a grey image broadcasts to the three means
