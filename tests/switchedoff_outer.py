"""Modules that reach a submodule of an inner module themselves, on a path a trace loses (tests/test_switchedoff.py).

In a file of their own: switched_off searches the files of a model's classes for ``x.<name>``, and the inner
modules of test_switchedoff.py must not be named in theirs.
"""

from __future__ import annotations

import torch
from torch import nn


class ReachedFromOutside(nn.Module):
    """Its block's settings skip ``cross_norm``, but this forward calls it itself (``type(y) is torch.Tensor`` is
    False for a proxy: the trace loses it)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.head = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        if type(x) is torch.Tensor:
            x = self.block.cross_norm(x)
        return self.head(x)


class CallsTheHead(nn.Module):
    """Calls ``forward_head`` of its inner model, whose ``forward`` does not run the head, on a path the trace loses."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if type(y) is torch.Tensor:
            y = self.net.forward_head(y)
        return y
