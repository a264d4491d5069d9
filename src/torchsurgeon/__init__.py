"""torchsurgeon: parameters, shapes and surgery checks for transfer learning.

>>> from torch import nn
>>> from torchsurgeon import paramcount
>>> paramcount(nn.Linear(4, 2), (4,)).total
10
"""

from __future__ import annotations

from .analysis import ModelReport, analyse_graph, paramcount
from .errors import (
    ConfigError,
    ContractError,
    InputError,
    ShapeError,
    SurgeryError,
    TorchSurgeonError,
    TraceError,
)
from .graph import build_graph
from .params import count_params
from .records import Finding, FoldMode, LayerReport, Status, TensorMeta
from .shapes import propagate_shapes
from .trace import trace

__version__ = "0.1.0"

__all__ = (
    "ConfigError",
    "ContractError",
    "Finding",
    "FoldMode",
    "InputError",
    "LayerReport",
    "ModelReport",
    "ShapeError",
    "Status",
    "SurgeryError",
    "TensorMeta",
    "TorchSurgeonError",
    "TraceError",
    "__version__",
    "analyse_graph",
    "build_graph",
    "count_params",
    "paramcount",
    "propagate_shapes",
    "trace",
)
