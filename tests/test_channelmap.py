"""Channel maps: where each input channel of a layer comes from, when only a rearrangement of the input precedes it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import assert_same_state, model_state
from torchsurgeon import ParamChange, adapt_input_channels
from torchsurgeon.channelmap import channel_map


class _PixelPatches(nn.Module):
    """timm's TNT ``PixelEmbed`` in small: the image cut into 4 × 4 patches by ``nn.Unfold``, the patches put in the
    batch (``(B * 16, C, 4, 4)``, each channel still one colour), then a conv over each patch."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.unfold = nn.Unfold(kernel_size=4, stride=4)
        self.proj = nn.Conv2d(channels, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        patches = self.unfold(x).transpose(1, 2).reshape(-1, c, 4, 4)
        return self.head(self.proj(patches).reshape(b, -1, 8, 16).mean((1, 3)))


def test_channels_read_from_patches_held_in_the_batch_are_mapped_to_the_input_colours() -> None:
    """The batch of one image holds its 16 patches when the conv reads them: the map looked at batch item 0 only
    (and refused any other batch), so the conv's channels were no rearrangement of the input's."""
    found = channel_map(_PixelPatches(), "proj", (3, 16, 16), 1)
    assert found is not None and (found.before, found.after) == (((0, 1, 2),), ((0,),))


@pytest.mark.parametrize(("channels", "mode"), [(1, "sum"), (2, "spread"), (5, "zero_extra")])
def test_a_conv_over_patches_put_in_the_batch_is_folded_and_the_fold_is_exact(channels: int, mode: str) -> None:
    """Found by probing timm's tnt_s_patch16_224 against timm's in_chans: adapt_input_channels refused it ('reads the
    input only after unfold (Unfold)'), though its patches keep one colour per channel and timm builds it for any
    in_chans.  Folded now: the edit loads into the model built for the new channels, and gives the original's output
    on the input the mode relates, in float64; the original is left as found."""
    torch.manual_seed(0)
    model = _PixelPatches().double().eval()
    before = model_state(model)
    result = adapt_input_channels(model, channels, mode)
    assert_same_state(before, model_state(model))
    (change,) = [c for c in result.changes if c.status is ParamChange.FOLDED]
    assert change.name == "proj.weight" and change.shape_after == (8, channels, 3, 3)
    _PixelPatches(channels).double().load_state_dict(result.model.state_dict())  # strict: the same keys and shapes
    x = torch.randn(2, channels, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        if mode == "zero_extra":  # RGB + anything gives the RGB output
            got, want = result.model(x), model(x[:, :3])
        else:  # sum: grey as RGB; spread: grey replicated to C channels, as RGB
            grey = x[:, :1]
            got, want = result.model(grey.expand(2, channels, 16, 16)), model(grey.expand(2, 3, 16, 16))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
