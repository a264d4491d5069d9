"""``softmax`` and ``log_softmax`` (functions, methods, layers) of inputs of any layout, against real CPU calls.

ultralytics' YOLO heads (``DFL``: ``x.view(b, 4, c, a).transpose(2, 1).softmax(1)``) take the softmax of a transposed
view, which ran on ``meta``: torch gives a new contiguous tensor whatever the input's layout (checked on 6,000 CPU and
meta calls), and so does the rule.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from test_rules import _answer, _signatures, tensors
from torchsurgeon.rules import FALLBACK, function_rule, method_rule, module_rule


@settings(max_examples=80, deadline=None)
@given(
    st.data(),
    st.sampled_from(["F.softmax", "F.log_softmax", "torch.softmax", "method", "log_method", "layer"]),
    st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_softmax_of_any_layout_is_contiguous_as_torch_gives(data: st.DataObject, form: str, dtype: torch.dtype) -> None:
    x, build = data.draw(tensors(min_rank=1, max_rank=4, dtype=dtype))
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1))
    calls: dict[str, tuple[Any, Any]] = {
        "F.softmax": (function_rule(F.softmax), lambda t: F.softmax(t, dim)),
        "F.log_softmax": (function_rule(F.log_softmax), lambda t: F.log_softmax(t, dim)),
        "torch.softmax": (function_rule(torch.softmax), lambda t: torch.softmax(t, dim)),
        "method": (method_rule("softmax"), lambda t: t.softmax(dim)),
        "log_method": (method_rule("log_softmax"), lambda t: t.log_softmax(dim)),
    }
    if form == "layer":
        layer = nn.Softmax(dim)
        found = module_rule(nn.Softmax)
        assert found is not None
        out, real = _answer(found[0], (x,), {}, layer), layer(build("cpu"))
    else:
        rule, call = calls[form]
        out, real = _answer(rule, (x, dim), {}), call(build("cpu"))
    assert out is not FALLBACK
    assert _signatures(out) == _signatures(real)
