"""torchsurgeon: parameters, shapes and surgery checks for transfer learning.

>>> from torch import nn
>>> from torchsurgeon import paramcount
>>> paramcount(nn.Linear(4, 2), (4,)).total
10

The names below are imported on first use (PEP 562), so ``import torchsurgeon`` and the pytest
plugin, which pytest loads in every run, do not import torch until something is analysed.
The tracer is :func:`torchsurgeon.trace.trace`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .analysis import ModelReport, analyse_graph, paramcount, paramcount_sweep
    from .contracts import (
        ContractResult,
        ShapeContract,
        assert_contract,
        check_contract,
        explain_output_shape,
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
    from .lockfile import UPDATE_ENV, assert_matches_lock, diff_lock, read_lock, write_lock
    from .params import count_params
    from .records import Finding, FoldMode, LayerDiff, LayerReport, OutputShape, Status, TensorMeta
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

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    "ConfigError": "errors",
    "ContractError": "errors",
    "ContractResult": "contracts",
    "Finding": "records",
    "FlopSummary": "flops",
    "FoldMode": "records",
    "InputError": "errors",
    "LayerDiff": "records",
    "LayerReport": "records",
    "ModelReport": "analysis",
    "OutputShape": "records",
    "ParamReport": "surgery",
    "ShapeContract": "contracts",
    "ShapeError": "errors",
    "Status": "records",
    "SurgeryError": "errors",
    "SurgeryReport": "surgery",
    "SurgeryResult": "surgery",
    "TensorMeta": "records",
    "TorchSurgeonError": "errors",
    "TraceError": "errors",
    "UPDATE_ENV": "lockfile",
    "adapt_input_channels": "surgery",
    "analyse_graph": "analysis",
    "append_head": "surgery",
    "assert_contract": "contracts",
    "assert_matches_lock": "lockfile",
    "build_graph": "graph",
    "check_contract": "contracts",
    "check_surgery": "surgery",
    "count_flops": "flops",
    "count_params": "params",
    "default_init": "surgery",
    "diff_lock": "lockfile",
    "explain_output_shape": "contracts",
    "fold_input_normalization": "surgery",
    "paramcount": "analysis",
    "paramcount_sweep": "analysis",
    "propagate_shapes": "shapes",
    "read_lock": "lockfile",
    "replace_head": "surgery",
    "write_lock": "lockfile",
}

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
    "write_lock",
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
