"""Recurrent layers: MACs of ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their cells.

The output shapes come from running the layer on ``meta`` (no shape rule
here): ``(output, (h_n, c_n))`` for an LSTM, ``(output, h_n)`` for a GRU or
RNN, for ``batch_first``, unbatched and packed inputs alike.

MACs count the gate matrix products, once per token (time step × batch
element), per layer and per direction::

    gates × hidden_size × (layer_input + hidden_out)     (+ hidden_size × proj_size for an LSTM with projections)

with 4 gates for an LSTM, 3 for a GRU and 1 for an RNN; ``layer_input`` is
``input_size`` for the first layer and ``hidden_out × directions`` after
it; ``hidden_out`` is ``proj_size`` when the LSTM has projections, else
``hidden_size``.  The number of tokens is the product of the input's
dimensions but the last, so ``batch_first`` does not change it; a
``PackedSequence`` is counted by the tokens it holds (its ``data`` rows),
padding excluded.  FLOPs are ``2 × MACs``: bias additions and the
element-wise gate arithmetic (sigmoid, tanh, the products with the cell
state) are not counted, as for every other layer and as
``torch.utils.flop_counter.FlopCounterMode`` does.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from torchsurgeon import paramcount
>>> paramcount(nn.GRU(10, 20), torch.zeros(5, 3, 10)).macs  # 15 tokens × 3 gates × 20 × (10 + 20)
27000
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..records import FlopKind
from ._common import numel
from .registry import builtin

__all__: tuple[str, ...] = ()

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _tokens(x: Any) -> int:
    """Time steps × batch elements of a recurrent input: all dims but the features (packed: its rows)."""
    if isinstance(x, PackedSequence):
        x = x.data
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"not a tensor: {type(x).__name__}")  # the formula does not apply: FLOPs unknown
    return numel(x.shape[:-1])


def _rnn_macs(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """nn.LSTM / nn.GRU / nn.RNN: per token, per layer and direction, the gates' two matrix products."""
    assert isinstance(m, nn.RNNBase)
    x = args[0] if args else kwargs["input"]
    gates = _GATES[m.mode]
    hidden = m.hidden_size
    proj = m.proj_size if isinstance(m, nn.LSTM) else 0
    hidden_out = proj or hidden
    directions = 2 if m.bidirectional else 1
    features = x.data.shape[-1] if isinstance(x, PackedSequence) else x.shape[-1]
    per_token = 0
    for layer in range(m.num_layers):
        layer_input = int(features) if layer == 0 else hidden_out * directions
        per_token += directions * (gates * hidden * (layer_input + hidden_out) + hidden * proj)
    return _tokens(x) * per_token


def _cell_macs(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """nn.LSTMCell / nn.GRUCell / nn.RNNCell: one time step of one layer, per batch element."""
    assert isinstance(m, nn.RNNCellBase)
    x = args[0] if args else kwargs["input"]
    gates = 4 if isinstance(m, nn.LSTMCell) else 3 if isinstance(m, nn.GRUCell) else 1
    return _tokens(x) * gates * m.hidden_size * (int(x.shape[-1]) + m.hidden_size)


builtin(nn.LSTM, nn.GRU, nn.RNN, macs=_rnn_macs, kind=FlopKind.RECURRENT)
builtin(nn.LSTMCell, nn.GRUCell, nn.RNNCell, macs=_cell_macs, kind=FlopKind.RECURRENT)
