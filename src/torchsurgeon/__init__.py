"""torchsurgeon: parameters, shapes and surgery checks for transfer learning.

>>> from torch import nn
>>> from torchsurgeon import paramcount
>>> paramcount(nn.Linear(4, 2), (4,)).total
10
"""

from __future__ import annotations

from .analysis import ModelReport, analyse_graph, paramcount
from .contracts import (
    UPDATE_ENV,
    ContractResult,
    LayerDiff,
    ShapeContract,
    assert_contract,
    assert_matches_lock,
    check_contract,
    diff_lock,
    explain_output_shape,
    read_lock,
    write_lock,
)
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
from .records import Finding, FoldMode, LayerReport, OutputShape, Status, TensorMeta
from .shapes import propagate_shapes
from .surgery import (
    ParamReport,
    SurgeryReport,
    SurgeryResult,
    adapt_input_channels,
    append_head,
    check_surgery,
    default_init,
    fold_input_normalization,
    replace_head,
)
from .trace import trace

__version__ = "0.1.0"

__all__ = (
    "UPDATE_ENV",
    "explain_output_shape",
    "ContractResult",
    "LayerDiff",
    "OutputShape",
    "ShapeContract",
    "assert_contract",
    "assert_matches_lock",
    "check_contract",
    "diff_lock",
    "read_lock",
    "write_lock",
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
    "ParamReport",
    "SurgeryReport",
    "SurgeryResult",
    "__version__",
    "adapt_input_channels",
    "append_head",
    "check_surgery",
    "default_init",
    "fold_input_normalization",
    "replace_head",
    "analyse_graph",
    "build_graph",
    "count_params",
    "paramcount",
    "propagate_shapes",
    "trace",
)
