# The public API of torchsurgeon, each name written once.
#
# Type checkers read this stub; torchsurgeon/__init__.py reads the same lines at import and
# exports each name lazily from its module (torchsurgeon/_lazy.py).  To add a public name,
# add a line `from .module import name as name` (the `as name` makes it a re-export).

from .analysis import analyse_graph as analyse_graph
from .analysis import paramcount as paramcount
from .analysis import paramcount_sweep as paramcount_sweep
from .contracts import ContractResult as ContractResult
from .contracts import ShapeContract as ShapeContract
from .contracts import assert_contract as assert_contract
from .contracts import check_contract as check_contract
from .contracts import explain_output_shape as explain_output_shape
from .errors import ConfigError as ConfigError
from .errors import ContractError as ContractError
from .errors import InputError as InputError
from .errors import MemoryPlanError as MemoryPlanError
from .errors import ShapeError as ShapeError
from .errors import SurgeryError as SurgeryError
from .errors import TorchSurgeonError as TorchSurgeonError
from .errors import TraceError as TraceError
from .flops import FlopSummary as FlopSummary
from .flops import count_flops as count_flops
from .graph import build_graph as build_graph
from .heads import append_head as append_head
from .heads import head_layers as head_layers
from .heads import replace_head as replace_head
from .initialisers import default_init as default_init
from .lockfile import UPDATE_ENV as UPDATE_ENV
from .lockfile import assert_matches_lock as assert_matches_lock
from .lockfile import diff_lock as diff_lock
from .lockfile import read_lock as read_lock
from .lockfile import write_lock as write_lock
from .memory import MemoryPlan as MemoryPlan
from .memory import memory_plan as memory_plan
from .modelreport import ModelReport as ModelReport
from .params import count_params as count_params
from .records import CrossCheck as CrossCheck
from .records import CrossCheckMode as CrossCheckMode
from .records import Finding as Finding
from .records import FlopKind as FlopKind
from .records import FoldMode as FoldMode
from .records import LayerDiff as LayerDiff
from .records import LayerMemory as LayerMemory
from .records import LayerReport as LayerReport
from .records import LayerStatus as LayerStatus
from .records import OptimizerKind as OptimizerKind
from .records import OutputShape as OutputShape
from .records import ParamChange as ParamChange
from .records import ParamReport as ParamReport
from .records import ShapeSource as ShapeSource
from .records import TableColumn as TableColumn
from .records import TableFormat as TableFormat
from .records import Trust as Trust
from .rules import disabled_rules as disabled_rules
from .rules import register_rule as register_rule
from .rules import unregister_rule as unregister_rule
from .shapes import propagate_shapes as propagate_shapes
from .shapespec import TypedShape as TypedShape
from .surgery import SurgeryResult as SurgeryResult
from .surgery import adapt_input_channels as adapt_input_channels
from .surgery import fold_input_normalization as fold_input_normalization
from .surgery_check import SurgeryReport as SurgeryReport
from .surgery_check import check_surgery as check_surgery

__version__: str
