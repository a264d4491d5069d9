"""An input longer than its model: the op that fails names the model tensor sliced past its end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import bert_of_64_positions
from torchsurgeon import paramcount


class _LearnedPositions(nn.Module):
    """A sequence model with a table of positions, as users write one: ``self.pos[:, :length]``."""

    def __init__(self, positions: int = 16, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.pos = nn.Parameter(torch.zeros(1, positions, width))
        self.register_buffer("offsets", torch.arange(positions)[None])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        return self.embed(ids) + self.pos[:, :length] + self.offsets[:, 2 : length + 2, None]


def test_a_slice_past_the_end_of_a_buffer_is_named_with_its_size() -> None:
    model = _LearnedPositions()
    model(torch.randint(0, 50, (1, 14)))  # 14 + 2 offsets fit in 16
    with pytest.raises(RuntimeError, match="must match the size"):
        model(torch.randint(0, 50, (1, 15)))
    assert paramcount(model, (14,)).invalid == []
    (bad,) = paramcount(model, (15,)).invalid
    assert "it reads offsets[:, 2:17], which holds only 16 along dim 1" in bad.message
    assert "give at most 16 there" in bad.message


def test_a_parameter_sliced_past_its_end_is_named_too() -> None:
    model = _LearnedPositions()
    (bad,) = paramcount(model, (20,)).invalid
    assert "it reads pos[:, :20], which holds only 16 along dim 1" in bad.message


def test_a_failure_with_no_slice_behind_it_gets_no_such_hint() -> None:
    class Mismatch(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x + y

    (bad,) = paramcount(Mismatch(), {"x": (4,), "y": (5,)}).invalid
    assert "clamps" not in bad.message


@pytest.mark.zoo
def test_bert_given_more_tokens_than_its_positions_is_told_so() -> None:
    """Found by a probe: BERT past max_position_embeddings failed at an ``expand`` with torch's text only."""
    pytest.importorskip("transformers")
    model = bert_of_64_positions()
    with pytest.raises(RuntimeError):
        model(torch.randint(0, 100, (1, 72)))
    (bad,) = paramcount(model, (72,)).invalid
    assert "embeddings.position_ids[:, :72], which holds only 64" in bad.message
    assert paramcount(model, (64,)).invalid == []
