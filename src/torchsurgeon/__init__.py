"""torchsurgeon: parameters, shapes and surgery checks for transfer learning.

>>> from torch import nn
>>> from torchsurgeon import paramcount
>>> paramcount(nn.Linear(4, 2), (4,)).total
10
"""

from __future__ import annotations

from .analysis import ModelReport, analyse_graph, paramcount, paramcount_sweep
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
from .flops import FlopSummary, count_flops
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
    "ConfigError",
    "ContractError",
    "ContractResult",
    "Finding",
    "FlopSummary",
    "FoldMode",
    "InputError",
    "LayerDiff",
    "LayerReport",
    "ModelReport",
    "OutputShape",
    "ParamReport",
    "ShapeContract",
    "ShapeError",
    "Status",
    "SurgeryError",
    "SurgeryReport",
    "SurgeryResult",
    "TensorMeta",
    "TorchSurgeonError",
    "TraceError",
    "__version__",
    "adapt_input_channels",
    "analyse_graph",
    "append_head",
    "assert_contract",
    "assert_matches_lock",
    "build_graph",
    "check_contract",
    "check_surgery",
    "count_flops",
    "count_params",
    "default_init",
    "diff_lock",
    "explain_output_shape",
    "fold_input_normalization",
    "paramcount",
    "paramcount_sweep",
    "propagate_shapes",
    "read_lock",
    "replace_head",
    "trace",
    "write_lock",
)
