"""Recurrent layers: shapes and MACs of ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``, MACs of their cells.

The shape rule gives ``(output, (h_n, c_n))`` for an LSTM and ``(output,
h_n)`` for a GRU or RNN, batched (``batch_first`` too: the output is then
the transposed view meta execution gives) or unbatched, for a tensor input
that fits, without an initial state; an input of another width than
``input_size`` is a mismatch whose fix rebuilds the layer for that width (its
outputs keep their widths).  A packed sequence, an initial state, or
another input the layer refuses runs on ``meta``, which computes the layer one time
step at a time: seconds for long sequences (timm's Sequencer took 3 s).

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
from ._common import fit_fix, float_tensor, new, numel, view
from .registry import FALLBACK, Call, builtin

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


def _rnn_rule(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call) -> Any:
    """The outputs of nn.LSTM / nn.GRU / nn.RNN on ``x`` without an initial state, as meta execution makes them."""
    assert isinstance(m, nn.RNNBase)
    if len(args) not in (1, 2) or args[1:] not in ((), (None,)) or kwargs not in ({}, {"hx": None}):
        return FALLBACK  # an initial state: meta checks its shape
    x = args[0]
    weight = m.weight_ih_l0
    if not float_tensor(x) or x.dtype != weight.dtype or x.dim() not in (2, 3) or 0 in x.shape:
        return FALLBACK  # meta says how it does not fit
    if x.shape[-1] != m.input_size:  # the outputs as if it took them: the widths after it do not change
        got = int(x.shape[-1])
        call.mismatch("input_size", m.input_size, got, fit_fix(call, m, "input_size", m.input_size, got))
    directions = 2 if m.bidirectional else 1
    hidden_out = (m.proj_size if isinstance(m, nn.LSTM) else 0) or m.hidden_size
    features = directions * hidden_out
    states = directions * m.num_layers
    h: tuple[int, ...]
    c: tuple[int, ...]
    if x.dim() == 2:  # unbatched: (L, H_in)
        output = new((int(x.shape[0]), features), x.dtype)
        h, c = (states, hidden_out), (states, m.hidden_size)
    else:
        n, length = (int(x.shape[0]), int(x.shape[1])) if m.batch_first else (int(x.shape[1]), int(x.shape[0]))
        if m.batch_first:  # computed as (L, N, features), then transposed
            output = view((n, length, features), (features, n * features, 1), x.dtype)
        else:
            output = new((length, n, features), x.dtype)
        h, c = (states, n, hidden_out), (states, n, m.hidden_size)
    if isinstance(m, nn.LSTM):
        return output, (new(h, x.dtype), new(c, x.dtype))
    return output, new(h, x.dtype)


def _cell_macs(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """nn.LSTMCell / nn.GRUCell / nn.RNNCell: one time step of one layer, per batch element."""
    assert isinstance(m, nn.RNNCellBase)
    x = args[0] if args else kwargs["input"]
    gates = 4 if isinstance(m, nn.LSTMCell) else 3 if isinstance(m, nn.GRUCell) else 1
    return _tokens(x) * gates * m.hidden_size * (int(x.shape[-1]) + m.hidden_size)


builtin(nn.LSTM, nn.GRU, nn.RNN, shape=_rnn_rule, macs=_rnn_macs, kind=FlopKind.RECURRENT)
builtin(nn.LSTMCell, nn.GRUCell, nn.RNNCell, macs=_cell_macs, kind=FlopKind.RECURRENT)
