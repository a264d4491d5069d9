"""What guards an input channel count besides the weights: the fix named for a layer replaced by hand, and the
settings surgery updates (diffusers' frozen configs: tests/test_zoo_diffusers.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchsurgeon.guards import guard_holders, stale_guards_fix


@pytest.mark.slow  # importing diffusers takes about 3 s: `make test` runs it, `make check` skips it
def test_a_diffusers_config_left_stale_is_set_with_register_to_config() -> None:
    """A diffusers VAE whose encoder stem was replaced by a 1-channel conv by hand: the config (a frozen dict behind a
    property) is found, and the fix sets it with ``register_to_config``, which changes what ``save_pretrained``
    writes (setting the frozen dict's attribute would leave its items at 3)."""
    diffusers = pytest.importorskip("diffusers")
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=4,
        latent_channels=2,
    )
    vae.encoder.conv_in = nn.Conv2d(1, 8, 3, padding=1)
    assert [(where, is_config) for where, _, is_config in guard_holders(vae, "encoder.conv_in")] == [
        ("", False),
        ("config", True),
        ("encoder", False),
    ]
    fix = stale_guards_fix(vae, "encoder", [(1, 1, 16, 16)])
    said = " — encoder.conv_in takes 1 channel but config.in_channels still says 3: "
    assert fix == said + "model.register_to_config(in_channels=1)"
    exec(fix.rpartition(": ")[2], {"model": vae})
    assert vae.config["in_channels"] == vae.config.in_channels == 1
    assert vae(torch.zeros(1, 1, 16, 16)).sample.shape == (1, 3, 16, 16)
