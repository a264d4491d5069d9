"""Naming a weight's initialiser: PyTorch's default only where the values fit it (a probe found every new weight
named as its layer type's default, whatever the user or the library had drawn)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchsurgeon.initialisers import default_init, named_init


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_a_default_draw_is_named_as_the_default() -> None:
    layer = nn.Conv2d(16, 32, 3)
    assert named_init(layer, "weight", layer.weight).startswith("kaiming_uniform_(a=√5): U(-0.0833, 0.0833); ")
    assert named_init(layer, "bias", layer.bias).startswith("uniform: U(-0.0833, 0.0833) (±1/√fan_in); ")


@pytest.mark.parametrize(
    ("init", "named"),
    [
        (lambda w: nn.init.xavier_uniform_(w), "like xavier_uniform_ U(-0.1179, 0.1179)"),
        (
            lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
            "like kaiming_normal_(mode='fan_out'",
        ),
        (lambda w: nn.init.trunc_normal_(w, std=0.02), "like normal_/trunc_normal_(std=0.02)"),
        (lambda w: nn.init.normal_(w, std=0.01), "like normal_(std=0.01)"),
        (lambda w: nn.init.constant_(w, 0.5), "(constant_(0.5))"),
        (lambda w: nn.init.zeros_(w), "observed: all zeros (zeros_)"),
    ],
)
def test_a_users_initialiser_is_never_named_as_the_default(init: object, named: str) -> None:
    layer = nn.Conv2d(16, 32, 3)
    with torch.no_grad():
        init(layer.weight)  # type: ignore[operator]
    text = named_init(layer, "weight", layer.weight)
    assert text.startswith("not PyTorch's default (kaiming_uniform_(a=√5): U(-0.0833, 0.0833)): observed: ")
    assert named in text


def test_torch_layers_with_defaults_of_their_own() -> None:
    lstm, bilinear = nn.LSTM(8, 8), nn.Bilinear(16, 16, 4)
    assert named_init(lstm, "weight_ih_l0", lstm.weight_ih_l0).startswith("uniform: U(-0.3536, 0.3536) (±1/√hidden")
    assert named_init(bilinear, "weight", bilinear.weight).startswith("uniform: U(-0.2500, 0.2500) (±1/√in1")
    attention = nn.MultiheadAttention(16, 2, add_bias_kv=True)
    assert default_init(attention, "bias_k") == f"xavier_normal_: N(0, {1 / math.sqrt(16):.4f})"
    transformer = nn.Transformer(16, 2, 1, 1, 32)  # draws every matrix with xavier_uniform_, not their default
    linear1 = transformer.encoder.layers[0].linear1
    assert "— like xavier_uniform_ U(-0.3536, 0.3536)" in named_init(linear1, "weight", linear1.weight)


def test_default_init_refuses_a_class_and_a_name_the_layer_does_not_have() -> None:
    """default_init(nn.Linear, 'weight') answered 'set by type.__init__' and default_init(nn.Linear(2, 2), 'weigth')
    'set by Linear.__init__': both were confident answers about nothing."""
    from torchsurgeon import InputError

    with pytest.raises(
        InputError, match=r"got the class nn.Linear — give a built one: default_init\(nn.Linear\(2, 2\)"
    ):
        default_init(nn.Linear, "weight")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"Linear has no parameter 'weigth' — did you mean 'weight'\?"):
        default_init(nn.Linear(2, 2), "weigth")
    with pytest.raises(InputError, match=r"ReLU has no parameter 'weight' — it has none"):
        default_init(nn.ReLU(), "weight")
    bound = 1 / math.sqrt(2)
    assert default_init(nn.Linear(2, 2), "weight") == f"kaiming_uniform_(a=√5): U(-{bound:.4f}, {bound:.4f})"
