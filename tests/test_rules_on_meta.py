"""ruled_meta: a real forward on meta whose ops are answered by rules gives what plain meta execution gives."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from models import CifarNet, LlamaDecoder
from torchsurgeon.copies import detached_copy, meta_like
from torchsurgeon.rules import FALLBACK, Call, register_rule, unregister_rule
from torchsurgeon.rules.on_meta import answered_by_rules, as_the_cpu_returns, ruled_leaf, ruled_meta


def _signature(value: Any) -> Any:
    """Shapes, dtypes and strides of every tensor in ``value`` (by meta execution, or under the mode)."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.dtype, value.stride(), value.device.type)
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    if isinstance(value, dict):
        return {k: _signature(v) for k, v in value.items()}
    return value


def _both(run: Callable[[], Any]) -> tuple[Any, Any]:
    """``run()`` on meta, plainly and under ruled_meta: outputs or errors."""
    results = []
    for mode in (False, True):
        try:
            with torch.no_grad(), torch.device("meta"), ruled_meta() if mode else torch.device("meta"):
                results.append(_signature(run()))
        except Exception as exc:
            results.append((type(exc), str(exc).splitlines()[0]))
    return results[0], results[1]


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "cifarnet": (CifarNet, (2, 3, 32, 32)),
    "resnet18": (lambda: torchvision.models.resnet18(), (1, 3, 64, 64)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(), (1, 3, 64, 64)),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(), (1, 3, 64, 64)),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(), (1, 3, 64, 64)),  # permutes, layer norm
    "swin_t": (lambda: torchvision.models.swin_t(), (1, 3, 64, 64)),  # channels-last windows, rolls
    "vit_b_16": (lambda: torchvision.models.vit_b_16(image_size=32), (1, 3, 32, 32)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_real_models_give_meta_executions_output(name: str, channels_last: bool) -> None:
    build, shape = MODELS[name]
    with torch.device("meta"):
        model = build().eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.empty(shape, device="meta")
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    plain, ruled = _both(lambda: model(x))
    assert ruled == plain
    assert isinstance(plain[0], tuple)  # an output, not an error


def test_token_model_and_training_mode() -> None:
    with torch.device("meta"):
        model = LlamaDecoder(vocab=50, dim=32, layers=2, heads=4, hidden=64).train()
    ids = torch.zeros(2, 7, dtype=torch.long, device="meta")
    plain, ruled = _both(lambda: model(ids))
    assert ruled == plain and plain[0][0] == 2


def test_errors_are_torchs_own() -> None:
    """A layer that does not fit raises the same error with and without rules (rules decline, torch raises)."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(4), nn.ReLU())
    plain, ruled = _both(lambda: model(torch.empty(1, 3, 8, 8)))
    assert ruled == plain and plain[0] is RuntimeError
    plain, ruled = _both(lambda: F.batch_norm(torch.empty(1, 4), None, None, training=True))
    assert ruled == plain and plain[0] is ValueError


def test_a_check_of_tensor_values_passes_on_meta_and_still_checks_real_tensors() -> None:
    """torch._check_tensor_all reads ``cond._is_all_true().item()``: meta has no data to read, a CPU tensor has."""
    sizes = torch.empty(3, 2, dtype=torch.int64, device="meta")
    with ruled_meta():
        torch._check_tensor_all((sizes[:, 0] * sizes[:, 1]).sum() == 48)  # a detector's feature map sizes
        with pytest.raises(RuntimeError, match="sizes disagree"):
            torch._check_tensor_all(torch.tensor([True, False]), lambda: "sizes disagree")
    with pytest.raises(RuntimeError, match="cannot be called on meta"):  # outside the mode: torch's own error
        torch._check_tensor_all(sizes.sum() == 48)


@settings(max_examples=60, deadline=None)
@given(
    op=st.sampled_from([operator.add, operator.sub, operator.mul, operator.truediv, operator.pow]),
    scalar=st.sampled_from([2, 0.5, True]),
    left=st.booleans(),
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.int64]),
)
def test_operators_and_reflected_operators(
    op: Callable[[Any, Any], Any], scalar: Any, left: bool, shape: list[int], dtype: torch.dtype
) -> None:
    x = torch.empty(shape, dtype=dtype, device="meta")
    plain, ruled = _both(lambda: op(scalar, x) if left else op(x, scalar))
    assert ruled == plain


def test_a_registered_rule_answers_instead_of_the_kernel() -> None:
    """Under the mode a torch call with a rule never reaches torch's kernel; outside it, it does."""
    register_rule(torch.sigmoid, shape=lambda module, x: torch.empty(7, device="meta"))  # deliberately wrong
    try:
        with torch.device("meta"):
            x = torch.empty(2, 3)
            with ruled_meta():
                ruled = torch.sigmoid(x)
            plain = torch.sigmoid(x)
    finally:
        unregister_rule(torch.sigmoid)
    assert ruled.shape == (7,) and plain.shape == (2, 3)


def test_a_rule_registered_later_answers_a_call_that_ran_as_it_was() -> None:
    """A call of one tensor that no rule answers runs as it is (x.shape, x.dim()); a rule registered after it
    answers the next call, and the call runs as it is again once the rule is gone."""
    with torch.device("meta"):
        x = torch.empty(2, 3)
        with ruled_meta():
            before = torch.fliplr(x)
        register_rule(torch.fliplr, shape=lambda module, x: torch.empty(7, device="meta"))  # deliberately wrong
        try:
            with ruled_meta():
                ruled = torch.fliplr(x)
        finally:
            unregister_rule(torch.fliplr)
        with ruled_meta():
            after = torch.fliplr(x)
    assert (before.shape, ruled.shape, after.shape) == ((2, 3), (7,), (2, 3))


def test_other_devices_and_tensor_subclasses_run_as_usual() -> None:
    class Tagged(torch.Tensor):
        pass

    with ruled_meta():
        cpu = torch.ones(2, 2) + 1
        tagged = torch.ones(2, 2).as_subclass(Tagged) * 2
    assert cpu.tolist() == [[2.0, 2.0], [2.0, 2.0]]  # computed, not a rule's empty meta tensor
    assert type(tagged) is Tagged and tagged.device.type == "cpu"


def test_a_rule_that_declines_or_fails_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchsurgeon.rules import on_meta

    class Declining:
        builtin = True

        @staticmethod
        def shape(module: Any, args: Any, kwargs: Any, call: Call) -> Any:
            call.mismatch("x", 1, 2, "none")
            return torch.empty(99, device="meta")

    monkeypatch.setattr(on_meta, "_rule_of", lambda func: (Declining, False))
    with torch.device("meta"), ruled_meta():
        out = torch.relu(torch.empty(3, 4))
    assert out.shape == (3, 4)  # the mismatch made the mode run torch's own op
    monkeypatch.setattr(on_meta, "_rule_of", lambda func: (type("F", (), {"shape": lambda *a: FALLBACK}), False))
    with torch.device("meta"), ruled_meta():
        assert torch.relu(torch.empty(5)).shape == (5,)


def test_resized_answers_a_layer_the_input_does_not_fit_as_if_it_were_resized() -> None:
    stem = nn.Conv2d(3, 8, 3, stride=2, device="meta")
    grey = torch.empty(2, 1, 9, 9, device="meta")
    with torch.no_grad(), pytest.raises(RuntimeError, match="channel"), ruled_meta():
        stem(grey)  # as torch: it does not fit
    with torch.no_grad(), ruled_meta(resized=True):
        out = stem(grey)
    with torch.no_grad():
        resized = nn.Conv2d(1, 8, 3, stride=2, device="meta")(grey)
    assert _signature(out) == _signature(resized)


class _OwnForward(nn.Linear):
    """A subclass with its own forward: its base class's rule does not describe it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., :1]


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["linear", "conv", "layer_norm", "gelu", "dropout", "batch_norm", "multihead"]),
    batch=st.integers(1, 3),
    size=st.integers(4, 9),
    width=st.sampled_from([4, 6]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    training=st.booleans(),
)
def test_ruled_leaf_gives_what_running_the_leaf_on_meta_gives(
    kind: str, batch: int, size: int, width: int, dtype: torch.dtype, training: bool
) -> None:
    """The leaf's module rule answers exactly as a forward of the leaf on meta, and leaves the module alone."""
    layers: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
        "linear": (lambda: nn.Linear(width, 5), (batch, size, width)),
        "conv": (lambda: nn.Conv2d(width, 3, 3, padding=1, stride=2), (batch, width, size, size)),
        "layer_norm": (lambda: nn.LayerNorm(width), (batch, size, width)),
        "gelu": (nn.GELU, (batch, size, width)),
        "dropout": (lambda: nn.Dropout(0.1), (batch, width)),
        "batch_norm": (lambda: nn.BatchNorm1d(width), (batch + 1, width, size)),
        "multihead": (lambda: nn.MultiheadAttention(width, 2, batch_first=True), (batch, size, width)),
    }
    build, shape = layers[kind]
    module = build().to(dtype).train(training)
    seen: list[str] = []
    module.register_forward_hook(lambda *_: seen.append("hook"))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    x = torch.empty(shape, dtype=dtype, device="meta")
    args = (x, x, x) if kind == "multihead" else (x,)
    out = ruled_leaf(module, args, {})
    with torch.device("meta"):
        copy = build().to(dtype).train(training)
    plain = _both(lambda: copy(*args))[0]
    if out is not FALLBACK:
        assert _signature(out) == plain
    else:  # the rule declines: the caller runs the leaf (in training mode too, rules answer as in propagation)
        assert kind == "multihead"
    assert seen == [] and all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def test_ruled_leaf_declines_what_its_rule_does_not_describe() -> None:
    x = torch.empty(2, 4, device="meta")
    assert ruled_leaf(_OwnForward(4, 3).eval(), (x,), {}) is FALLBACK  # its own forward decides
    assert ruled_leaf(nn.Linear(5, 3).eval(), (x,), {}) is FALLBACK  # does not fit: running it raises torch's error
    assert ruled_leaf(nn.Linear(4, 3), (torch.empty(2, 4),), {}) is FALLBACK  # not on meta
    assert ruled_leaf(nn.Linear(4, 3).eval(), (x,), {}).shape == (2, 3)
    one = torch.empty(1, 4, device="meta")  # a forward in training mode raises: one value per channel
    assert ruled_leaf(nn.BatchNorm1d(4), (one,), {}) is FALLBACK
    assert ruled_leaf(nn.BatchNorm1d(4).eval(), (one,), {}).shape == (1, 4)


def test_known_data_is_made_on_the_cpu_and_an_index_past_a_tables_end_raises_as_on_the_cpu() -> None:
    table = torch.zeros(4, 2)
    weights = table.to("meta")  # a model's table, on meta (moved inside, a CPU tensor would stay: known data)
    with torch.device("meta"), ruled_meta():
        positions = torch.arange(3)  # asked for on meta: small data a real forward makes from a size
        large = torch.ones(1 << 17)  # too large to keep: stays on meta
        rows = weights[positions]
        assert positions.device.type == "cpu" and large.is_meta and rows.is_meta and tuple(rows.shape) == (3, 2)
        with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 0 with size 4"):
            weights[torch.arange(6)]
        with pytest.raises(IndexError, match="index out of range in self"):
            nn.Embedding(4, 2, device="meta")(torch.arange(5))
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 0 with size 4"):
        table[torch.arange(6)]  # the CPU's own message


def test_known_data_given_to_a_random_op_is_no_longer_known() -> None:
    with torch.device("meta"), ruled_meta():
        positions = torch.arange(4)
        dropped = torch.nn.functional.dropout(positions.float(), 0.5)  # training: random
    assert positions.device.type == "cpu" and dropped.is_meta


def test_known_data_edited_in_place_by_unknown_values_is_no_longer_known() -> None:
    table = nn.Embedding(10, 2, device="meta")
    x = torch.empty(1, 3, device="meta")  # values not known
    with torch.device("meta"), ruled_meta():
        positions = torch.arange(3) + 20  # known: 20, 21, 22 (past the table)
        later = positions[1:]  # a view of the same memory, known too
        kept = torch.arange(3)  # other known data
        positions.sub_((x.sum() * 0 + 20).long())  # a real forward gives 0, 1, 2 here: unknown on meta
        rows, tail = table(positions), table(later)  # no stale value answers (it would raise IndexError)
        last, flipped = positions.max(), torch.flipud(positions)  # one tensor (flipud: no rule): not stale either
        with pytest.raises(IndexError, match="index out of range in self"):
            table(kept + 10)  # what was not edited is still known
    assert (
        rows.is_meta
        and tuple(rows.shape) == (3, 2)
        and tuple(tail.shape) == (2, 2)
        and last.is_meta
        and flipped.is_meta
    )
    assert positions.tolist() == [20, 21, 22]  # the stale copy, which no longer stands for the values


def test_a_factory_the_cpu_refuses_is_made_on_meta_as_asked() -> None:
    with torch.device("meta"), ruled_meta():
        pinned = torch.zeros(3, pin_memory=True)  # the CPU wants an accelerator for pinned memory; meta does not
    assert pinned.is_meta and tuple(pinned.shape) == (3,)


_A = torch.ops.aten


@pytest.mark.parametrize(
    ("func", "args"),
    [
        (_A.native_layer_norm.default, lambda x, p: (x, [4], p(4), p(4), 1e-5)),
        (_A.native_layer_norm.default, lambda x, p: (x, [4], None, None, 1e-5)),
        (_A.native_group_norm.default, lambda x, p: (x, p(8), None, 2, 8, 16, 2, 1e-5)),
        (_A.native_batch_norm.default, lambda x, p: (x, None, None, p(8), p(8), True, 0.1, 1e-5)),
        (_A.native_batch_norm.default, lambda x, p: (x, None, None, None, None, True, 0.1, 1e-5)),
        (_A._native_batch_norm_legit.default, lambda x, p: (x, p(8), p(8), p(8), p(8), True, 0.1, 1e-5)),
        (_A._batch_norm_with_update.default, lambda x, p: (x, p(8), p(8), p(8), p(8), 0.1, 1e-5)),
    ],
    ids=["layer", "layer-no-affine", "group", "batch-running-stats", "batch-bare", "batch-legit", "batch-update"],
)
@pytest.mark.parametrize(("dtype", "parameters"), [(torch.bfloat16, torch.float32), (torch.float16, torch.float16)])
def test_norm_statistics_in_the_dtypes_the_cpu_gives(
    func: Any, args: Callable[..., tuple[Any, ...]], dtype: torch.dtype, parameters: torch.dtype
) -> None:
    """Found by a probe: with a half-precision input and float32 parameters (CPU autocast) the CPU keeps a norm's mean
    and inverse std in float32, the meta kernels in the input's dtype: plans of Swin V2, ConvNeXt V2, RepViT in bf16
    were up to 0.9 % under their real CPU step."""

    def on(device: str) -> tuple[Any, ...]:
        return args(torch.ones(2, 8, 4, 4, dtype=dtype, device=device), lambda n: torch.ones(n, dtype=parameters))

    real = func(*on("cpu"))
    with FakeTensorMode():  # as memory_plan's step runs it
        fake = on("cpu")
        answered = as_the_cpu_returns(func, fake, func(*fake))
    assert [t.dtype for t in answered[:3]] == [t.dtype for t in real[:3]]
    assert [t.shape for t in answered[:3]] == [t.shape for t in real[:3]]


class _Counted(torch.overrides.TorchFunctionMode):
    """Records the torch calls that reach it (entered inside ruled_meta: every call a module's forward makes)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


class _OwnForward(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


@pytest.mark.parametrize("training", [False, True])
def test_answered_by_rules_gives_a_real_forwards_output_without_running_the_layers(training: bool) -> None:
    """A cross-check's forward answers each layer a module rule covers by that rule: the output is what the real
    model gives on the CPU (shapes, dtypes, strides), the layers' own Python and ops never run, their hooks do,
    and a subclass with a forward of its own runs it."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 16),
        nn.LayerNorm(16),
        nn.GELU(),
        nn.Dropout(0.1),
        _OwnForward(16, 4),
    ).train(training)
    x = torch.randn(2, 3, 14, 14)
    with torch.no_grad():
        real = _signature(copy.deepcopy(model)(x))
    copied = detached_copy(model, meta_like)
    hooked: list[str] = []
    copied[6].register_forward_hook(lambda *_: hooked.append("layer norm"))
    counted = _Counted()
    with torch.no_grad(), torch.device("meta"), ruled_meta(), counted:
        out = answered_by_rules(copied)(torch.empty(2, 3, 14, 14, device="meta"))
    assert _signature(out)[:3] == real[:3] and out.device.type == "meta"
    assert hooked == ["layer norm"]
    assert not {"conv2d", "batch_norm", "layer_norm", "gelu", "dropout"} & set(counted.calls)
    assert "linear" in counted.calls  # _OwnForward's own forward: its rule only checks it
    assert all("forward" not in m.__dict__ for m in model.modules())  # the user's model is left alone


def test_answered_by_rules_raises_where_the_real_forward_raises() -> None:
    """A layer the rule finds does not fit (a float32 layer fed float64) runs its forward, which raises as a
    real forward does; inside torch.autocast each layer runs and gives autocast's dtype."""
    layer = answered_by_rules(detached_copy(nn.Linear(3, 2), meta_like))
    with pytest.raises(RuntimeError) as real:
        nn.Linear(3, 2)(torch.zeros(4, 3, dtype=torch.float64))
    with torch.no_grad(), ruled_meta(), pytest.raises(RuntimeError, match="dtype") as meta:
        layer(torch.empty(4, 3, dtype=torch.float64, device="meta"))
    assert type(meta.value) is type(real.value)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = nn.Linear(3, 2)(torch.zeros(4, 3)).dtype
        with ruled_meta():
            got = layer(torch.empty(4, 3, device="meta")).dtype
    assert got == expected == torch.bfloat16
