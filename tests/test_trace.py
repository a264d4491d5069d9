"""Tracing: leaves, automatic opaque leaves, specialised arguments, registries, errors."""

from __future__ import annotations

import ast
import dataclasses
import functools
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from models import DataDependent, Gate, TextTimeConditioned, TwoInputs, WithGate
from torchsurgeon import InputError, LayerStatus, TraceError, adapt_input_channels, paramcount
from torchsurgeon.arguments import tensor_inputs
from torchsurgeon.trace import registered_leaves, trace


def _call_targets(model: nn.Module, **kwargs: Any) -> list[str]:
    return [str(n.target) for n in trace(model, **kwargs).graph_module.graph.nodes if n.op == "call_module"]


def _placeholders(model: nn.Module, **kwargs: Any) -> list[str]:
    return [str(n.target) for n in trace(model, **kwargs).graph_module.graph.nodes if n.op == "placeholder"]


# --------------------------------------------------------------------------- opaque leaves


def test_failing_submodule_becomes_opaque_and_shapes_still_flow() -> None:
    model = WithGate()
    r = paramcount(model, (6,), batch=3)
    assert r.opaque.keys() == {"gate"}
    assert "control flow" in r.opaque["gate"]
    assert r.layer("gate").status == LayerStatus.OPAQUE
    assert r.layer("out").status == LayerStatus.OK
    with torch.no_grad():
        real = model(torch.randn(3, 6))
    assert r.output_shape == tuple(real.shape) == (3, 2)
    assert r.total == sum(p.numel() for p in model.parameters()) == 146
    assert any("gate was not traced inside" in line for line in r.notes())


def test_opaque_leaf_that_branches_on_values_runs_on_zeros_not_meta() -> None:
    # Gate.forward does `if x.mean() > 0`, which meta tensors cannot answer
    r = paramcount(WithGate(), (6,))
    assert r.layer("gate").output_shape == (1, 8)
    assert r.layer("gate").message.startswith("TraceError")


def test_every_instance_of_a_failing_class_becomes_opaque_in_one_retry() -> None:
    model = nn.Sequential(nn.Linear(4, 4), Gate(4), Gate(4), nn.Sequential(Gate(4)))
    t = trace(model)
    assert sorted(t.opaque) == ["1", "2", "3.0"]
    assert "same class Gate" in t.opaque["2"] and "same class" not in t.opaque["1"]
    assert _call_targets(model) == ["0", "1", "2", "3.0"]


def test_failure_inside_a_leaf_call_blames_the_parent() -> None:
    class Opaque:  # fx cannot record an arbitrary object as an argument
        pass

    class Takes(nn.Module):
        def forward(self, x: torch.Tensor, obj: object) -> torch.Tensor:
            return x

    class Mid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.leaf = Takes()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.leaf(x, Opaque()) + 1

    model = nn.Sequential(nn.Linear(3, 3), Mid())
    t = trace(model, leaf_modules=["1.leaf"])
    assert list(t.opaque) == ["1"]
    assert "argument of type" in t.opaque["1"]
    with pytest.raises(
        TraceError, match=r"cannot trace 1: NotImplementedError: argument of type(?s:.*)fix: pass leaf_"
    ):
        trace(model, leaf_modules=["1.leaf"], auto_leaf=False)
    with pytest.raises(
        TraceError,
        match=r"cannot trace leaf \(already a leaf\)(?s:.*)fix: the model's own forward calls the leaf 'leaf'",
    ) as info:
        trace(Mid(), leaf_modules=["leaf"])
    assert info.value.whole_model


def test_swallowed_submodule_error_is_not_blamed_for_a_later_top_level_failure() -> None:
    class Careful(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = Gate(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                x = self.gate(x)
            except Exception:
                pass
            if x.sum() > 0:  # fails at the top level
                return x
            return -x

    with pytest.raises(TraceError, match=r"Careful\.forward \(the top-level model\)") as info:
        trace(Careful())
    assert "already opaque" not in str(info.value)


def test_retries_are_bounded() -> None:
    classes = [type(f"Gate{i}", (Gate,), {}) for i in range(40)]
    model = nn.Sequential(*[cls(2) for cls in classes])
    with pytest.raises(TraceError, match=r"(?s)cannot trace 32: .*already opaque: 0, 1, 2, .*, 31\n"):
        trace(model)


def test_trace_error_names_module_source_line_and_fix() -> None:
    with pytest.raises(TraceError) as info:
        paramcount(DataDependent(), (4,))
    text = str(info.value)
    assert "DataDependent.forward (the top-level model)" in text
    assert "Python if/while/assert on a tensor value" in text
    assert "models.py:" in text and "if x.sum() > 0:" in text
    assert (
        "the values of 'x' decide what the forward does here" in text
        and "paramcount(model, {'x': x}) with x your (1, 4) float32 tensor" in text
    )
    with pytest.raises(TraceError) as info:  # too large to be read as data: the general fix
        paramcount(DataDependent(), (70_000, 4))
    assert "concrete_args" in str(info.value) and "leaf_modules" in str(info.value)


def test_auto_leaf_off_names_the_submodule_and_the_leaf_fix() -> None:
    with pytest.raises(TraceError, match=r"cannot trace gate: .*\n  at .*models\.py:\d+: if x\.mean\(\) > 0:"):
        trace(WithGate(), auto_leaf=False)
    with pytest.raises(TraceError, match=r"fix: pass leaf_modules=\['gate'\]"):
        trace(WithGate(), auto_leaf=False)


def test_named_and_typed_leaves() -> None:
    model = WithGate()
    assert trace(model, leaf_modules=["gate"]).opaque == {}
    assert trace(model, leaf_modules=[Gate]).leaf_modules == ("gate",)
    with pytest.raises(InputError, match=r"leaf_modules names 'gat', which is not a submodule of WithGate"):
        trace(model, leaf_modules=["gat"])
    with pytest.raises(InputError, match=r"leaf_modules entries must be names or nn.Module classes, got 3"):
        trace(model, leaf_modules=[3])  # type: ignore[list-item]


def test_hooks_inside_a_leaf_never_see_meta_tensors() -> None:
    calls: list[str] = []
    model = WithGate()
    model.gate.proj.register_forward_hook(lambda m, i, o: calls.append(o.device.type))
    model.gate.register_forward_pre_hook(lambda m, i: calls.append("pre"))
    paramcount(model, (6,))
    assert calls == []
    with torch.no_grad():
        model(torch.randn(1, 6))
    assert calls == ["pre", "cpu"]


# --------------------------------------------------------------------------- arguments and outputs


def test_multiple_inputs_by_name_and_by_position() -> None:
    model = TwoInputs()
    by_name = paramcount(model, {"image": (3, 16, 16), "mask": (1, 16, 16)})
    by_pos = paramcount(model, ((3, 16, 16), (1, 16, 16)))
    with torch.no_grad():
        real = model(torch.randn(1, 3, 16, 16), torch.randn(1, 1, 16, 16))
    assert by_name.output_shape == by_pos.output_shape == tuple(real.shape)
    assert by_name.input_shapes == {"image": (1, 3, 16, 16), "mask": (1, 1, 16, 16)}
    swapped = paramcount(model, {"image": (1, 16, 16), "mask": (3, 16, 16)})
    assert sorted(layer.name for layer in swapped.invalid) == ["image", "mask"]
    with pytest.raises(InputError, match=r"forward needs input 'mask' but no shape was given"):
        paramcount(model, (3, 16, 16))


class _Pair(nn.Module):
    """Two images of one size, as torchvision's RAFT takes them (``if (h, w) != image2.shape[-2:]: raise``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        if image1.shape[-2:] != image2.shape[-2:]:
            raise ValueError("the images differ in size")
        return self.conv(image1) - self.conv(image2)


def test_an_input_given_no_shape_that_python_asks_about_is_named() -> None:
    """Found by a probe: RAFT given one shape failed with torch.fx's control-flow error and "pass concrete_args={...}
    for arguments that steer Python control flow", when its second image had no shape; the error names that input
    and a mapping of shapes, with the other input's shape for it, which runs as written."""
    with pytest.raises(TraceError, match=r"forward needs input 'image2' but no shape was given") as info:
        paramcount(_Pair(), (3, 16, 16))
    fix = re.search(r"a mapping such as (\{.*?\}) or", str(info.value))
    assert fix is not None and fix.group(1) == "{'image1': (3, 16, 16), 'image2': (3, 16, 16)}"
    assert paramcount(_Pair(), ast.literal_eval(fix.group(1))).output_shape == (1, 4, 14, 14)


class _Optional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, scale: float = 2.0, features: bool = False
    ) -> Any:
        y = self.a(x)
        if mask is not None:
            y = y * mask
        out = self.b(y) * scale
        if features:
            return out, y
        return out


def test_arguments_without_a_tensor_are_traced_with_their_default() -> None:
    t = trace(_Optional())
    assert _placeholders(_Optional()) == ["x"]
    assert t.specialised == {"mask": None, "scale": 2.0, "features": False}
    nodes = [n.op for n in t.graph_module.graph.nodes]
    assert nodes.count("call_function") == 1  # the * scale, no fx assertion nodes
    assert paramcount(_Optional(), (4,)).output_shape == (1, 3)


def test_optional_tensor_argument_given_by_name_is_used() -> None:
    r = paramcount(_Optional(), {"x": (4,), "mask": (4,)})
    assert [layer.name for layer in r.layers] == ["a", "mul", "b", "mul_1"]
    assert r.input_shapes == {"x": (1, 4), "mask": (1, 4)}


def test_concrete_args_choose_a_branch_without_assertion_nodes() -> None:
    r = paramcount(_Optional(), (4,), concrete_args={"features": True})
    assert r.output_shape == ((1, 3), (1, 4))
    assert [layer.name for layer in r.layers] == ["a", "b", "mul"]
    with pytest.raises(InputError, match=r"concrete_args names \['feature'\], which are not arguments of _Optional"):
        paramcount(_Optional(), (4,), concrete_args={"feature": True})


def test_varargs_become_one_input_per_index() -> None:
    class VarArgs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(5, 3)

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.a(inputs[0]) + self.b(inputs[1])

    assert _placeholders(VarArgs(), inputs=2) == ["inputs_0", "inputs_1"]
    r = paramcount(VarArgs(), ((4,), (5,)))
    assert r.output_shape == (1, 3) and r.input_shapes == {"inputs_0": (1, 4), "inputs_1": (1, 5)}


class _Summed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, *xs: torch.Tensor) -> Any:
        return sum(self.conv(x) for x in xs)


class _FirstAndRest(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.side = nn.Conv2d(3, 8, 3), nn.Conv2d(1, 8, 3)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        for r in rest:
            y = y + self.side(r)
        return y


@pytest.mark.parametrize(
    ("model", "spec"),
    [
        (_Summed(), ((3, 8, 8), (3, 8, 8))),
        (_Summed(), (3, 8, 8)),
        (_FirstAndRest(), ((3, 8, 8), (1, 8, 8), (1, 8, 8))),
        (_FirstAndRest(), (3, 8, 8)),
    ],
)
def test_varargs_that_forward_loops_over_are_one_input_each(model: nn.Module, spec: Any) -> None:
    """Found by a probe: ``forward(self, *xs)`` looping over ``xs`` raised a TraceError (a proxy cannot be iterated)."""
    shapes = spec if isinstance(spec[0], tuple) else (spec,)
    r = paramcount(model, spec, crosscheck="always")
    with torch.no_grad():
        real = model(*(torch.randn(1, *s) for s in shapes))
    assert r.total == sum(p.numel() for p in model.parameters())
    assert r.output_shape == tuple(real.shape) and not r.invalid and str(r.crosscheck.trust) == "verified"
    assert len(r.input_shapes) == len(shapes)


def test_varargs_given_a_shape_that_does_not_fit_name_the_layer() -> None:
    with torch.no_grad(), pytest.raises(RuntimeError, match="expected input"):
        _FirstAndRest()(torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8))
    r = paramcount(_FirstAndRest(), ((3, 8, 8), (3, 8, 8)))
    assert [layer.name for layer in r.invalid] == ["side"]
    assert r.input_shapes == {"x": (1, 3, 8, 8), "rest_0": (1, 3, 8, 8)}


_TEXT_TIME = {
    "sample": (4, 16, 16),
    "timestep": (),
    "encoder_hidden_states": (7, 32),
    "added_cond_kwargs": {"text_embeds": (16,), "time_ids": (6,)},
}


def _text_time_inputs(batch: int, size: int = 16) -> dict[str, Any]:
    return {
        "sample": torch.randn(batch, 4, size, size),
        "timestep": torch.full((batch,), 500.0),
        "encoder_hidden_states": torch.randn(batch, 7, 32),
        "added_cond_kwargs": {"text_embeds": torch.randn(batch, 16), "time_ids": torch.randn(batch, 6)},
    }


@pytest.mark.parametrize("size", [16, 18])  # 18: the forward's loop over the sample's size takes its other branch
def test_a_dict_for_one_forward_argument_is_one_input_per_tensor(size: int) -> None:
    """Found by a probe: SDXL's UNet takes ``added_cond_kwargs={"text_embeds", "time_ids"}``; given so, it raised a
    TraceError at its loop over the sample's size."""
    model = TextTimeConditioned()
    r = paramcount(model, {**_TEXT_TIME, "sample": (4, size, size)}, batch=2, crosscheck="always")
    with torch.no_grad():
        real = model(**_text_time_inputs(2, size))
    assert r.total == sum(p.numel() for p in model.parameters())
    assert r.output_shape == tuple(real.shape) and not r.invalid and str(r.crosscheck.trust) == "verified"
    assert r.input_shapes["added_cond_kwargs_text_embeds"] == (2, 16)  # one input per tensor of the dict


def test_a_dict_of_tensors_for_one_forward_argument_is_used_as_given() -> None:
    model = TextTimeConditioned()
    given = _text_time_inputs(1)
    r = paramcount(model, {**_TEXT_TIME, "added_cond_kwargs": given["added_cond_kwargs"]})
    with torch.no_grad():
        assert r.output_shape == tuple(model(**given).shape) and not r.invalid
    wrong = paramcount(model, {**_TEXT_TIME, "added_cond_kwargs": {"text_embeds": (15,), "time_ids": (6,)}})
    with torch.no_grad(), pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(**{**given, "added_cond_kwargs": {"text_embeds": torch.randn(1, 15), "time_ids": torch.randn(1, 6)}})
    assert [layer.name for layer in wrong.invalid] == ["add_embedding"]


def test_unused_args_and_kwargs_are_dropped_and_kwargs_lookups_see_an_empty_dict() -> None:
    class KwArgs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            y = self.a(x)
            if kwargs.get("double"):
                y = y * 2
            return y

    assert _placeholders(KwArgs()) == ["x"]
    r = paramcount(KwArgs(), (4,))
    assert r.output_shape == (1, 3) and [layer.name for layer in r.layers] == ["a"]


@dataclasses.dataclass
class _Output:
    logits: torch.Tensor
    features: torch.Tensor


def test_dict_tuple_and_dataclass_outputs() -> None:
    class Outputs(nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> Any:
            y = self.fc(x)
            if self.kind == "dict":
                return {"logits": y, "pair": (y, F.relu(x))}
            if self.kind == "tuple":
                return (y, (x, y))
            return _Output(y, x)

    assert paramcount(Outputs("dict"), (4,)).output_shape == {"logits": (1, 3), "pair": ((1, 3), (1, 4))}
    assert paramcount(Outputs("tuple"), (4,)).output_shape == ((1, 3), ((1, 4), (1, 3)))
    assert paramcount(Outputs("dataclass"), (4,)).output_shape == {"logits": (1, 3), "features": (1, 4)}


def test_a_torch_nn_layer_as_the_model_is_one_node() -> None:
    lstm = nn.LSTM(4, 8, batch_first=True)
    r = paramcount(lstm, (5, 4))
    with torch.no_grad():
        out, (h, c) = lstm(torch.randn(1, 5, 4))
    assert r.output_shape == (tuple(out.shape), (tuple(h.shape), tuple(c.shape)))
    assert [(layer.name, layer.type) for layer in r.layers] == [("LSTM", "LSTM")]
    assert r.total == sum(p.numel() for p in lstm.parameters())
    lin = paramcount(nn.Linear(4, 2), (3,))
    assert [f.message.split(" — ")[0] for f in lin.findings] == ["Linear (Linear) expects in_features=4, got 3"]
    assert lin.total_for_input == nn.Linear(3, 2).weight.numel() + 2
    mha = paramcount(nn.MultiheadAttention(16, 2, batch_first=True), ((5, 16), (5, 16), (5, 16)))
    assert mha.output_shape == ((1, 5, 16), (1, 5, 5))


def test_tensor_inputs() -> None:
    assert tensor_inputs(torch.Size([3, 8])) == 1
    assert tensor_inputs([torch.empty(1, 2), (3,)]) == 2
    assert tensor_inputs({"a": (1,), "b": (2,)}) == ("a", "b")
    with pytest.raises(InputError, match=r"inputs=-1 — give the number of tensor inputs or their names"):
        trace(nn.Linear(2, 2), inputs=-1)
    with pytest.raises(InputError, match=r"concrete_args must be a mapping"):
        trace(nn.Linear(2, 2), concrete_args=[1])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- timm and torchvision registries


@pytest.mark.slow
def test_registries_are_read_only_from_libraries_already_imported() -> None:
    code = textwrap.dedent(
        """
        import sys
        from torch import nn
        import torchsurgeon
        from torchsurgeon.trace import registered_leaves, trace
        trace(nn.Sequential(nn.Linear(2, 2)))
        assert registered_leaves() == ((), (), ()), registered_leaves()
        assert "timm" not in sys.modules and "torchvision" not in sys.modules, "imported a model library"
        import timm
        types, functions, modules = registered_leaves()
        assert "BatchNormAct2d" in {t.__name__ for t in types}
        assert "torchvision.ops" in {m.__name__ for m in modules}
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


class _Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


def branchy(x: torch.Tensor) -> torch.Tensor:  # a public global: fx only wraps those
    return x * 2 if x.sum() > 0 else x


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.b = _Branchy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return branchy(self.b(self.fc(x)))


def test_timm_registered_leaf_and_function_are_honoured() -> None:
    timm_fx = pytest.importorskip("timm.layers._fx")
    Branchy, Net = _Branchy, _Net

    with pytest.raises(TraceError, match=r"_Net\.forward \(the top-level model\)"):
        trace(Net(), leaf_modules=["b"])
    timm_fx.register_notrace_module(Branchy)
    timm_fx.register_notrace_function(branchy)
    try:
        t = trace(Net())
        assert t.opaque == {} and t.leaf_modules == ("b",)
        assert [n.target for n in t.graph_module.graph.nodes if n.op == "call_function"] == [branchy]
        assert paramcount(Net(), (4,)).output_shape == (1, 4)
    finally:
        timm_fx._leaf_modules.discard(Branchy)
        timm_fx._autowrap_functions.discard(branchy)
    assert Branchy not in registered_leaves()[0]


def test_torchvision_ops_functions_are_single_calls() -> None:
    ops = pytest.importorskip("torchvision.ops")

    class Dropper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + ops.stochastic_depth(self.conv(x), 0.2, "row", self.training)

    fns = [n.target for n in trace(Dropper()).graph_module.graph.nodes if n.op == "call_function"]
    assert ops.stochastic_depth in fns
    assert paramcount(Dropper(), (3, 8, 8)).output_shape == (1, 3, 8, 8)


def test_torchvision_ops_classes_stay_classes_for_other_threads_during_a_trace() -> None:
    """Found by a probe: fx wrapped every public callable of torchvision.ops, its layer classes too, in their
    modules' globals: while a trace ran, ``isinstance(m, Conv2dNormActivation)`` raised TypeError in every thread
    and ``torch.save`` of another torchvision model failed ("not the same object as ...Conv2dNormActivation")."""
    misc = pytest.importorskip("torchvision.ops.misc")
    inside, release = threading.Event(), threading.Event()

    class Held(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = misc.Conv2dNormActivation(3, 4)
            self.excite = misc.SqueezeExcitation(4, 2)  # its forward's globals hold Conv2dNormActivation

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.excite(self.block(x))
            if isinstance(y, torch.fx.Proxy):  # hold the trace here while the other thread works
                inside.set()
                release.wait(30)
            return ops.stochastic_depth(y, 0.2, "row", self.training)

    ops = pytest.importorskip("torchvision.ops")
    other = misc.Conv2dNormActivation(3, 4)
    traced: list[Any] = []
    tracing = threading.Thread(target=lambda: traced.append(trace(Held())))
    tracing.start()
    try:
        assert inside.wait(30)
        is_block = isinstance(other, (misc.Conv2dNormActivation, ops.Conv2dNormActivation))
        saved = pickle.loads(pickle.dumps(other))
    finally:
        release.set()
        tracing.join()
    assert is_block and type(saved) is misc.Conv2dNormActivation
    fns = [n.target for n in traced[0].graph_module.graph.nodes if n.op == "call_function"]
    assert ops.stochastic_depth in fns  # torchvision.ops' functions are still single calls


class _Functional(nn.Module):
    """Torch functions of proxies in every argument form: flat, in a list, nested, by keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.bias = nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, stride=(1, 1), padding=1)
        y = torch.cat([y, torch.sigmoid(y)], dim=1)
        z = torch.stack([torch.add(y, 1, alpha=2), torch.where(y > 0, y, 0.0)])
        w = torch.tensordot(z[0].flatten(1), z[1].flatten(1), dims=([1], [1]))  # nested: torch.fx's own walk
        return torch.flatten(z, start_dim=1).sum(1) + torch.mean(w, dim=0)


@pytest.mark.parametrize("build", [lambda: _Functional(), lambda: __import__("models").LlamaDecoder(50, 32, 2, 4, 64)])
def test_nodes_are_recorded_as_torch_fx_records_them(build: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracer's create_node (arguments given after the node is made), scope and module stack (copied
    cheaply) and torch functions of proxies (recorded without pytree walks) build torch.fx's own graph."""
    import collections

    from torchsurgeon import trace as trace_module
    from torchsurgeon.frontend import ShapeProxy
    from torchsurgeon.trace import _SurgeonTracer

    model = build()
    llama = hasattr(model, "embed_tokens")
    example = {"ids": torch.zeros(2, 7, dtype=torch.long)} if llama else {"x": torch.zeros(2, 3, 8, 8)}

    def nodes() -> list[tuple[Any, ...]]:
        graph = trace(model, example_inputs=example).graph_module.graph
        name = lambda n: n.name  # noqa: E731
        return [
            (n.name, n.op, n.target, *torch.fx.node.map_arg((n.args, n.kwargs), name), [u.name for u in n.users], stack)
            for n in graph.nodes
            for stack in [n.meta.get("nn_module_stack")]
        ]

    ours = nodes()
    monkeypatch.setattr(_SurgeonTracer, "create_node", torch.fx.Tracer.create_node)
    monkeypatch.setattr(trace_module, "FastScope", torch.fx.proxy.Scope)
    monkeypatch.setattr(trace_module, "ModuleStack", collections.OrderedDict)
    monkeypatch.delattr(ShapeProxy, "__torch_function__")
    assert ours == nodes()
    assert any(kwargs for *_, kwargs, _, _ in ours) and all(users for _, op, *_, users, _ in ours if op != "output")
    assert any(op == "call_function" for _, op, *_ in ours)
    stacks = {id(n.meta["nn_module_stack"]) for n in trace(model).graph_module.graph.nodes if n.meta}
    assert len(stacks) > 5 if llama else len(stacks) <= 1  # one snapshot per state of the stack


class PadMaskAtTheTop(nn.Module):
    """FSMT's way: the model's own forward drops its padding mask when the tokens hold no padding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)

    def forward(self, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        mask: torch.Tensor | None = input_ids.eq(0)
        if not mask.any():  # a branch on the data of input_ids, in no submodule
            mask = None
        x = self.embed(input_ids) + self.proj(features)
        return x if mask is None else x.masked_fill(mask.unsqueeze(-1), 0.0)


def test_a_top_level_branch_on_input_data_names_the_input_and_a_fix_that_runs() -> None:
    model = PadMaskAtTheTop()
    with pytest.raises(TraceError, match=r"the values of 'input_ids' decide what the forward does here") as caught:
        paramcount(model, {"input_ids": (6,), "features": (6, 4)})
    assert "paramcount(model, {'input_ids': input_ids, 'features': features}) with input_ids your (1, 6) int64 " in str(
        caught.value
    ) and "features your (1, 6, 4) float32 tensor" in str(caught.value)
    input_ids, features = torch.tensor([[1, 2, 0, 3, 4, 5]]), torch.randn(1, 6, 4)  # as the fix says
    r = paramcount(model, {"input_ids": input_ids, "features": features})
    assert r.output_shape == (1, 6, 4) and r.total == sum(p.numel() for p in model.parameters())


class KeepsConfidentScores(nn.Module):
    """A detector's postprocessing in its own forward: the scores its conv computes, kept above a threshold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.conv(x).flatten(1).sigmoid()
        kept = scores[0, scores[0] > 0.05]  # a boolean mask of the conv's values: nonzero, which meta cannot run
        return kept.topk(min(10, kept.size(0)))[0]


def test_an_op_on_what_the_layers_compute_is_not_blamed_on_the_input_values() -> None:
    """ssdlite320 in eval: the fix said 'paramcount(model, {'images': images}) with images your tensor', which failed
    as written with the same error: no input's values make the scores of its layers known on meta."""
    model = KeepsConfidentScores().eval()
    assert model(torch.randn(1, 3, 8, 8)).shape == (10,)
    texts = []
    for given in ((3, 8, 8), {"x": torch.randn(1, 3, 8, 8)}):  # as shapes, and with the values the fix asked for
        with pytest.raises(TraceError) as caught:
            paramcount(model, given)
        texts.append(str(caught.value))
        assert "the values of 'x' decide" not in texts[-1] and "paramcount(model, {'x': x})" not in texts[-1]
        assert "values that its layers compute" in texts[-1] and "analyse its parts" in texts[-1]
    assert "paramcount(model.conv, (3, 8, 8))" in texts[0]  # the part it names is analysed as written
    assert paramcount(model.conv, (3, 8, 8)).total == sum(p.numel() for p in model.conv.parameters())


class ScriptedBody(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        body = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.BatchNorm2d(16), nn.AdaptiveAvgPool2d(1))
        self.body = torch.jit.script(nn.Sequential(*body, nn.Flatten(), nn.Linear(16, 5)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("leaves", [(), ("body",)])
def test_a_scripted_submodule_is_an_opaque_leaf_run_as_compiled(leaves: tuple[str, ...]) -> None:
    """It raised "'OrderedModuleDict' object has no attribute 'get'" (a ScriptModule's _modules), with leaf_modules
    too; once past that, fx traced its C++ forward as a method of a constant, its weights unused by forward."""
    model = ScriptedBody()
    real = model(torch.zeros(2, 3, 32, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = paramcount(model, (3, 32, 32), batch=2, leaf_modules=leaves, crosscheck="always")
    assert r.total == sum(p.numel() for p in model.parameters()) and not r.unused
    assert r.output_shape == tuple(real.shape) and r.trusted and not r.invalid
    assert "torch.jit" in r.opaque["body"] and r.layer("body").params == sum(p.numel() for p in model.body.parameters())
    assert all(torch.equal(before[k], v) and v.device.type == "cpu" for k, v in model.state_dict().items())
    assert model.training and model.body.training  # left as found


class SlicedFeatures(nn.Module):
    """smp's dpn encoder: stages run as slices of one nn.Sequential, new containers made in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features[2:](self.features[:2](x)))


def test_a_slice_of_the_models_sequential_is_traced_through_to_its_layers() -> None:
    """smp's Unet/dpn68: its encoder was opaque, 'NameError: module is not installed as a submodule', so the grey
    report's fix adapt_input_channels(model, 1) could not look into it."""
    model = SlicedFeatures().eval()
    r = paramcount(model, (3, 16, 16), batch=2)
    assert not r.opaque and r.total == sum(p.numel() for p in model.parameters()) and not r.unused
    assert r.output_shape == tuple(model(torch.zeros(2, 3, 16, 16)).shape)
    assert [layer.name for layer in r.layers if layer.params] == ["features.0", "features.2", "features.3", "head"]
    assert [layer.name for layer in paramcount(model, (1, 16, 16)).invalid] == ["features.0"]


class CutToLength(nn.Module):
    """torchaudio's Conformer way: a length read with .item() in the model's own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n = int(torch.max(lengths).item())
        return self.proj(x)[:, :n]


@pytest.mark.filterwarnings("ignore:Was not able to add assertion")  # torch.fx's, for a tensor it fixes
def test_a_tensor_given_as_concrete_args_is_fixed_without_an_input_of_fxs_own() -> None:
    r = paramcount(CutToLength(), {"x": (5, 4)}, concrete_args={"lengths": torch.tensor([3])})
    assert r.output_shape == (1, 3, 4) and list(r.input_shapes) == ["x"]  # before: it asked for 'lengths_1'
    given = paramcount(CutToLength(), {"x": (5, 4), "lengths": torch.tensor([3])})  # or as known data
    assert given.output_shape == (1, 3, 4)


@pytest.mark.slow  # torch.compile: `make test` runs it, `make check` skips it
def test_a_compiled_submodule_is_traced_as_the_module_it_compiles() -> None:
    """Found by a probe: ``model.layer4 = torch.compile(model.layer4)`` made layer4 opaque (fx refuses dynamo's
    functions) and the output unknown."""
    model = torchvision.models.resnet18().eval()
    plain = paramcount(model, (3, 64, 64))
    model.layer4 = torch.compile(model.layer4)  # type: ignore[assignment]
    report = paramcount(model, (3, 64, 64))
    assert report.opaque == {} and report.output_shape == plain.output_shape == (1, 1000)
    assert report.total == plain.total == sum(p.numel() for p in model.parameters())
    names = {layer.name for layer in report.layers}
    assert "layer4._orig_mod.0.conv1" in names and "layer4._orig_mod.0.conv1" in dict(model.named_modules())


class _TopThreeValues(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.topk(x, 3).values


def test_an_attribute_of_a_result_belongs_to_the_module_that_read_it() -> None:
    """Found by a probe: fx makes ``.values``'s node when the next module uses it, so the table showed a phantom
    block named after that module, and the first module's output as topk's pair."""
    model = nn.Sequential(_TopThreeValues(), nn.Linear(3, 2))
    report = paramcount(model, (10,))
    assert [(layer.name, layer.path) for layer in report.layers if layer.name.startswith("getattr")] == [
        ("getattr_1", ("0",))
    ]
    rows = [(row.name, row.output_shape) for row in report.rows(depth=1)]
    assert rows == [("0", (1, 3)), ("1", (1, 2))]


class _Options(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        y = self.proj(x)
        return (y, torch.cat([x, y], -1)) if kwargs.get("with_input") else y


@pytest.mark.parametrize(
    "options", [{"with_input": True}, {"kwargs": {"with_input": True}}, {"**kwargs": {"with_input": True}}]
)
def test_concrete_args_reach_a_forward_through_its_var_keyword(options: dict[str, Any]) -> None:
    """Found by a probe: transformers 5 takes output_hidden_states through **kwargs, and no spelling reached it
    (an InputError, a TraceError, fx's KeyError)."""
    report = paramcount(_Options(), (4,), concrete_args=options)
    assert report.output_shape == ((1, 4), (1, 8))
    assert paramcount(_Options(), (4,)).output_shape == (1, 4)


def test_a_module_kept_in_a_plain_dict_is_named_with_the_fix() -> None:
    """Found by a probe: the error suggested concrete_args / leaf_modules, which cannot help."""

    class PlainDict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3)
            self.heads = {"age": nn.Linear(8, 1), "gender": nn.Linear(8, 2)}  # not registered

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            features = self.stem(x).mean((2, 3))
            return {name: head(features) for name, head in self.heads.items()}

    with pytest.raises(TraceError, match=r"it calls heads\['age'\] \(Linear\), a module with weights that is not a s"):
        paramcount(PlainDict(), (3, 16, 16))


class _PrefixTuned(nn.Module):
    """peft's prefix tuning without peft: learned keys and values for every layer, given to a LLaMA as a
    ``DynamicCache`` it did not build (so it returns it even with ``use_cache=False``)."""

    def __init__(self) -> None:
        super().__init__()
        transformers = pytest.importorskip("transformers")
        config = transformers.LlamaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99
        )
        self.llama = transformers.LlamaForCausalLM(config)
        self.prefix = nn.Embedding(4, 2 * 2 * 32)  # 4 virtual tokens, keys and values of 2 layers
        self.register_buffer("tokens", torch.arange(4), persistent=False)

    def forward(self, input_ids: torch.Tensor, use_cache: bool = True) -> Any:
        from transformers import DynamicCache

        batch = input_ids.shape[0]
        kv = self.prefix(self.tokens).view(4, 2 * 2, 2, 16).permute(1, 2, 0, 3)  # (layers × 2, heads, tokens, dim)
        kv = kv.unsqueeze(1).expand(-1, batch, -1, -1, -1).split(2)
        return self.llama(input_ids, past_key_values=DynamicCache(kv), use_cache=use_cache)


def test_a_model_given_a_cache_it_returns_is_analysed_with_its_prefix() -> None:
    """Found by a probe: peft's PrefixTuning hands its prefix to the model as a DynamicCache, which the model returns;
    torch.fx cannot record that object, and the whole model was untraceable."""
    from zoo_checks import counted_macs

    torch.manual_seed(0)
    model = _PrefixTuned().eval()
    report = paramcount(model, (8,))
    ids = torch.randint(1, 99, (1, 8))
    with torch.no_grad():
        real = model(ids)
    assert report.total == sum(p.numel() for p in model.parameters())
    assert report.output_shape == {"logits": tuple(real.logits.shape)} and report.trusted
    # attention reads the 4 prefix tokens: the MACs of a real forward with them
    assert report.macs == counted_macs(model, lambda m: m(ids.to("meta")))


class _MovesItsGrid(nn.Module):
    """Keeps a plain tensor attribute (not a buffer) and sets it to a traced value in ``forward``, as MONAI's
    GlobalNet head does with ``self.grid = self.grid.to(device=f.device)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.grid = torch.arange(8.0).reshape(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grid = self.grid.to(device=x.device)
        return self.fc(x) - self.grid


def test_a_plain_tensor_attribute_the_forward_replaces_is_read_as_the_model_held_it() -> None:
    """Found by a probe: the graph read GlobalNet's grid as None (the proxy the trace had stored in the model),
    so a false invalid layer ``to`` was reported and the output was unknown."""
    model = _MovesItsGrid()
    grid = model.grid
    report = paramcount(model, (2, 4))
    assert report.invalid == [] and report.trusted
    assert report.output_shape == tuple(model(torch.randn(1, 2, 4)).shape)
    assert model.grid is grid


def test_trace_leaves_the_users_random_stream_as_found() -> None:
    """Found by a probe: a random factory of constant sizes runs for real in a trace (fx records its result as a
    constant), so ``paramcount`` drew from the CPU generator and shifted the user's seeded stream."""

    class Jitter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + torch.rand(1)

    model = Jitter()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    report = paramcount(model, (4,))
    assert report.output_shape == (1, 4) and torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("entry", [1, "flatten"])
def test_autowrap_functions_takes_functions(entry: Any) -> None:
    """autowrap_functions=[1] was accepted and did nothing; an entry that is no function is refused."""
    with pytest.raises(InputError, match=rf"autowrap_functions entries must be functions forward calls, got {entry!r}"):
        trace(nn.Sequential(nn.Flatten()), autowrap_functions=[entry])
    with pytest.raises(InputError, match=r"e.g. autowrap_functions=\[torch.flatten\]"):
        paramcount(nn.Sequential(nn.Flatten()), (3, 4), autowrap_functions=[entry])
    assert trace(nn.Sequential(nn.Flatten()), autowrap_functions=[torch.flatten]).opaque == {}


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu()


class _TwoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.c = _Block(3), _Block(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.c(self.conv(x)), 1)


def test_leaf_modules_and_autowrap_functions_take_one_entry_alone() -> None:
    """leaf_modules='conv' was read letter by letter (refused as "names 'o'"), leaf_modules=_Block and
    autowrap_functions=torch.flatten raised a raw TypeError: one entry alone is that entry."""
    model = _TwoBlocks()
    assert trace(model, leaf_modules="conv").leaf_modules == ("conv",)
    assert sorted(trace(model, leaf_modules=_Block).leaf_modules) == ["c", "conv"]
    assert trace(model, autowrap_functions=torch.flatten).opaque == {}
    assert paramcount(model, (3, 8, 8), leaf_modules="conv").total == sum(p.numel() for p in model.parameters())
    with pytest.raises(InputError, match=r"leaf_modules names 'cnv', which is not a submodule of _TwoBlocks"):
        trace(model, leaf_modules="cnv")


class WavelengthEmbedding(nn.Module):
    """torchgeo's DOFA way: the bands' wavelengths, a list of floats, make the patch embedding's weights."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Linear(1, 8 * 9)

    def forward(self, x: torch.Tensor, wavelengths: list[float]) -> torch.Tensor:
        w = self.weights(torch.tensor(wavelengths, device=x.device).float()[:, None])
        return nn.functional.conv2d(x, w.view(len(wavelengths), 8, 3, 3).transpose(0, 1))


def test_a_list_of_floats_given_as_concrete_args_is_fixed_without_inputs_of_fxs_own() -> None:
    model = WavelengthEmbedding()
    bands = [0.665, 0.56, 0.49, 0.842]
    real = model(torch.randn(1, 4, 6, 6), bands)
    r = paramcount(model, {"x": (4, 6, 6)}, concrete_args={"wavelengths": bands})
    # before: "forward needs input 'wavelengths_1' but no shape was given for it", one per float
    assert r.output_shape == tuple(real.shape) and list(r.input_shapes) == ["x"] and not r.invalid
    grey = paramcount(model, {"x": (1, 6, 6)}, concrete_args={"wavelengths": (0.49,)})  # a tuple too
    assert grey.output_shape == (1, 8, 4, 4) and grey.macs == 1 * 72 + 8 * 16 * 9  # the Linear, then the conv


class _EmbeddedThenAsked(nn.Module):
    """A user's model reading token ids named otherwise than ``*_ids``, with Python on the embedded values' shape
    (the trace computes the embedding on ``meta``)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        if x.shape[-1] != 8:
            raise ValueError("width")
        return self.head(x)


class _Wrapping(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _EmbeddedThenAsked()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.body(inputs)


@pytest.mark.parametrize("make", [_EmbeddedThenAsked, _Wrapping], ids=["model", "part"])
def test_token_ids_named_otherwise_are_found_by_the_embedding_reading_them(make: Callable[[], nn.Module]) -> None:
    """Found by a probe: transformers' Perceiver (its token ids are ``inputs``) was one opaque, invalid node, and a
    model reading ``tokens`` was refused ("does not take this input": the embedding got floats)."""
    model = make().eval()
    report = paramcount(model, (16,), batch=2)
    assert report.opaque == {} and report.invalid == []
    assert report.output_shape == tuple(model(torch.zeros(2, 16, dtype=torch.long)).shape) == (2, 16, 3)
    assert report.total_for_input == sum(p.numel() for p in model.parameters())


class _IdentityNeckOnATuple(nn.Module):
    """transformers' BEiT backbone without an FPN: ``self.fpn = nn.Identity()`` given its tuple of feature maps,
    then a neck that asks ``isinstance(features, (tuple, list))`` (ZoeDepth's) before taking them one by one."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fpn = nn.Identity()
        self.heads = nn.ModuleList([nn.Conv2d(4, 2, 1), nn.Conv2d(6, 2, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = (self.stem(x),)
        features += (self.down(features[0]),)
        features = self.fpn(features)
        if not isinstance(features, (tuple, list)):
            raise TypeError("features should be a tuple or list of tensors")
        a, b = (head(f) for head, f in zip(self.heads, features))
        return a + F.interpolate(b, size=a.shape[-2:])


def test_an_identity_given_a_tuple_returns_the_tuple_as_a_real_forward() -> None:
    """Found by a probe: ZoeDepth's neck (behind a BEiT backbone whose fpn is an ``nn.Identity``) was opaque
    ("TypeError: hidden_states should be a tuple or list of tensors"): the Identity, a leaf, returned one proxy."""
    model = _IdentityNeckOnATuple().eval()
    report = paramcount(model, (3, 8, 8), batch=2, crosscheck="always")
    assert report.opaque == {} and report.invalid == [] and report.trusted
    assert report.output_shape == tuple(model(torch.zeros(2, 3, 8, 8)).shape) == (2, 2, 8, 8)
    assert report.macs == 2 * (64 * 4 * 27 + 16 * 6 * 36 + 64 * 2 * 4 + 16 * 2 * 6)


class _PatchNormedTokens(nn.Module):
    """vit-pytorch's patch embedding (patches flattened with their channels, a LayerNorm, a Linear), then a question
    Python asks about the tokens' shape (its ``pack`` of register tokens; here ``x.shape[-1]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(3 * 16)
        self.embed = nn.Linear(3 * 16, 8)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        b, c, h, w = img.shape
        patches = img.reshape(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, 16 * c)
        x = self.norm(patches)
        if x.shape[-1] % 2:  # asked on meta while tracing: the norm's output is computed there
            x = F.pad(x, (0, 1))
        return self.embed(x[..., : 16 * c])


def test_a_layer_that_does_not_fit_before_a_shape_question_is_reported_with_its_fix() -> None:
    """A grey image for a patch embedding normalised over RGB patches: the trace's answer to the question after the
    norm goes on with the norm resized to fit (as propagation does), so the report names both layers and their
    fix, where the trace failed before ('does not take this input', the real forward's LayerNorm error alone);
    the fixes, run as written, make the model run at that input with the output shape reported."""
    model = _PatchNormedTokens().eval()
    report = paramcount(model, (1, 16, 16))
    invalid = {layer.name: layer.message for layer in report.invalid}
    assert set(invalid) == {"norm", "embed"}
    assert "norm (LayerNorm) expects normalized_shape=(48,), got (16,)" in invalid["norm"]
    for message in invalid.values():
        fix = message.split("replace the layer (new weights): ")[1]
        exec(fix, {"model": model, "nn": nn})
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, 1, 16, 16)).shape) == report.output_shape == (1, 16, 8)


# --------------------------------------------------------------------------- a forward set on the model


def test_a_forward_set_on_the_model_is_what_is_traced() -> None:
    """timm users get features with ``model.forward = model.forward_features``: fx traced the class's forward, and
    the report gave the classifier's output, (1, 10), without any error, where ``model(x)`` gives the features."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    model.forward = model.forward_features
    with torch.no_grad():
        real = tuple(model(torch.zeros(1, 3, 64, 64)).shape)
    report = paramcount(model, (3, 64, 64))
    assert report.output_shape == real == (1, 512, 2, 2)
    assert report.unused == ("fc.weight", "fc.bias") and "forward" in vars(model)


def _as_pretrainedmodels_does(model: torchvision.models.ResNet) -> torchvision.models.ResNet:
    """Cadene's ``pretrainedmodels`` (``modify_resnets``) on a torchvision ResNet, as every one of its torchvision
    models is built: the head renamed ``last_linear``, ``fc`` set to None, and ``features``, ``logits`` and
    ``forward`` set on the model."""
    model.last_linear, model.fc = model.fc, None

    def features(self: Any, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def logits(self: Any, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(self.avgpool(x).view(x.size(0), -1))

    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x))

    model.features = types.MethodType(features, model)  # type: ignore[assignment]
    model.logits = types.MethodType(logits, model)  # type: ignore[assignment]
    model.forward = types.MethodType(forward, model)  # type: ignore[method-assign]
    return model


def test_models_of_pretrainedmodels_are_analysed_and_folded() -> None:
    """Found by probing Cadene's pretrainedmodels: its 20 torchvision models (resnet*, densenet*, vgg*, squeezenet*,
    alexnet) failed ('NoneType' object is not callable at ``x = self.fc(x)``): fx traced the class's forward.  Now
    the model's own: the total, the output, and the fold the report names, exact in float64."""
    torch.manual_seed(0)
    model = _as_pretrainedmodels_does(torchvision.models.resnet18()).double().eval()
    report = paramcount(model, (1, 64, 64))
    assert report.total == sum(p.numel() for p in model.parameters()) and report.output_shape == (1, 1000)
    assert [f.fix for f in report.findings] == ["fold it with adapt_input_channels(model, 1)"]
    result = adapt_input_channels(model, 1)
    assert sum(p.numel() for p in result.model.parameters()) == report.total_for_input
    grey = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(grey), model(grey.expand(2, 3, 64, 64)), rtol=1e-12, atol=1e-12)
    assert model.conv1.in_channels == 3 and result.model.forward.__self__ is result.model


def test_a_wrapper_around_the_model_forward_is_traced_as_called() -> None:
    """accelerate's hooks set ``forward`` to ``functools.partial(new_forward, module)`` wrapping the method: what the
    wrapper does to its output is part of ``model(x)``."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    old = model.forward

    def new_forward(module: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        return old(*args, **kwargs).flatten(1)

    model.forward = functools.update_wrapper(functools.partial(new_forward, model), old)  # type: ignore[method-assign]
    assert paramcount(model, (3, 8, 8)).output_shape == (1, 144)


def test_a_forward_set_to_a_plain_function_is_refused_with_its_fix() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    model.forward = lambda x: x  # type: ignore[method-assign]
    with pytest.raises(TraceError, match=r"Sequential.forward is set on the model to .*not a method of it.*MethodType"):
        paramcount(model, (4,))


def test_a_layer_whose_forward_is_set_on_it_is_traced_as_it_runs() -> None:
    """``model.fc.forward = lambda x: x`` (a head switched off in place): the report said (1, 1000), trusted, where
    ``model(x)`` gives the (1, 512) features: a torch layer is a leaf, answered by its class's rule.  A forward set on
    a layer is traced now; a wrapper calling its class's (accelerate's hooks) keeps it one row."""
    model = torchvision.models.resnet18().eval()
    model.fc.forward = lambda x: x  # type: ignore[method-assign]
    report = paramcount(model, (3, 64, 64))
    assert report.output_shape == (1, 512) and report.unused == ("fc.weight", "fc.bias")

    def half(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:  # the head on half the features
        return F.linear(x[:, :256], self.weight[:, :256], self.bias)

    model.fc.forward = types.MethodType(half, model.fc)  # type: ignore[method-assign]
    full = paramcount(torchvision.models.resnet18().eval(), (3, 64, 64))
    assert paramcount(model, (3, 64, 64)).macs == full.macs - 256 * 1000
    old = types.MethodType(nn.Linear.forward, model.fc)  # the class's, as accelerate finds it

    def new_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return old(*args, **kwargs)

    model.fc.forward = functools.update_wrapper(functools.partial(new_forward, model.fc), old)  # type: ignore[method-assign]
    report = paramcount(model, (3, 64, 64))
    assert report.macs == full.macs and report.layers[-1].name == "fc" and report.layers[-1].type == "Linear"
