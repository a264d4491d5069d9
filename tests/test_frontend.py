"""The tracing front-end for library models, with hand-written models (no transformers needed).

Each test mirrors one thing transformers models do and plain torch.fx cannot
trace: a decorated ``forward``, hooks the model installs on itself, Python on
shapes, token ids given as a shape.  The zoo in tests/test_zoo_transformers.py
checks the same on the real models.
"""

from __future__ import annotations

import copy
import functools
import operator
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import AssertsOnItsLengths, BranchesOnItsLengths, tensor_shapes
from torchsurgeon import (
    LayerStatus,
    ShapeError,
    TraceError,
    TypedShape,
    adapt_input_channels,
    paramcount,
    paramcount_sweep,
)
from torchsurgeon.trace import trace

# --------------------------------------------------------------------------- decorated forwards


def _with_defaults(forward: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator as transformers 5 writes them: ``(*args, **kwargs)`` around the real forward."""

    @functools.wraps(forward)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("scale", 2.0)  # the decorator itself does something the trace must keep
        return forward(self, *args, **kwargs)

    return wrapper


class Decorated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)
        self.mix = nn.Linear(3, 4)

    @_with_defaults
    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None, scale: float = 1.0, **kwargs: Any) -> Any:
        out = self.proj(x) * scale
        if extra is not None:
            out = out + self.mix(extra)
        return out


def test_decorated_forward_binds_inputs_by_name_and_runs_the_decorator() -> None:
    model = Decorated()
    r = paramcount(model, {"x": (6,), "extra": (3,)}, batch=2)
    assert r.invalid == []
    assert r.total == sum(p.numel() for p in model.parameters())
    assert r.layer("mix").status == LayerStatus.OK  # extra reached self.mix, not the slot of x
    graph = trace(model, inputs=["x", "extra"]).graph_module.graph
    assert [str(n.target) for n in graph.nodes if n.op == "placeholder"] == ["x", "extra"]
    assert any(n.target is operator.mul and 2.0 in n.args for n in graph.nodes)  # the decorator's scale=2.0 ran
    one = paramcount(model, (6,), batch=2)  # extra keeps its default None: mix is never called
    assert one.output_shape == (2, 4) and [layer.name for layer in one.layers if layer.name == "mix"] == []


# --------------------------------------------------------------------------- hooks the model installs on itself


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x)


class CollectsOutputs(nn.Module):
    """Installs hooks on its blocks on the first forward and returns what they collect (as transformers does)."""

    def __init__(self, block: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(block() for _ in range(3))
        self.head = nn.Linear(12, 2)

    def _collect(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._collected.append(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self, "_hooks_installed", False):
            for block in self.blocks:
                block.register_forward_hook(self._collect)
            self._hooks_installed = True
        self._collected: list[torch.Tensor] = []
        for block in self.blocks:
            x = block(x)
        return self.head(torch.cat(self._collected, dim=-1))


def _state(model: nn.Module) -> dict[str, Any]:
    """Every module's forward hooks and attribute names: what a trace must leave as it found."""
    return {
        name: (
            dict(m._forward_hooks),
            dict(m._forward_pre_hooks),
            dict(m._forward_hooks_with_kwargs),
            list(vars(m)),
        )
        for name, m in model.named_modules()
    }


@pytest.mark.parametrize("block", [Residual, lambda: nn.Linear(4, 4)], ids=["traced-through", "leaf"])
def test_hooks_the_model_installs_run_and_the_model_is_left_as_found(block: Callable[[], nn.Module]) -> None:
    model = CollectsOutputs(block)
    seen: list[str] = []
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.device.type))  # the user's hook
    before = _state(model)
    r = paramcount(model, (4,), batch=3)
    assert seen == []  # the user's hook never sees the trace
    assert r.invalid == [] and r.opaque == {}
    assert r.output_shape == (3, 2)
    assert r.total == sum(p.numel() for p in model.parameters())
    assert _state(model) == before  # no hook, no attribute (_hooks_installed, _collected) left behind
    with torch.no_grad():
        out = model(torch.randn(3, 4))  # a real forward still installs and runs its hooks
    assert out.shape == (3, 2) and seen == ["cpu"]
    assert all(len(block._forward_hooks) == (2 if i == 0 else 1) for i, block in enumerate(model.blocks))


class CachesBiases(nn.Module):
    """Fills caches in place in eval mode, keyed by the input's device (transformers' LeViT attention biases)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.bias_cache: dict[str, torch.Tensor] = {}
        self.seen: list[Any] = []
        self.kinds: set[Any] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = str(x.device)
        if key not in self.bias_cache:
            self.bias_cache[key] = self.proj.bias * 2
        self.seen.append(x)
        self.kinds.add(key)
        return self.proj(x) + self.bias_cache[key]


def test_caches_the_forward_fills_in_place_are_emptied_after_the_trace() -> None:
    model = CachesBiases().eval()
    with torch.no_grad():
        model(torch.randn(1, 4))  # a real forward's entries stay
    entries = dict(model.bias_cache)
    reports = [paramcount(model, (4,)) for _ in range(2)]  # the second trace met the first one's proxy
    assert [r.output_shape for r in reports] == [(1, 4), (1, 4)]
    assert model.bias_cache == entries and len(model.seen) == 1 and model.kinds == {"cpu"}


# --------------------------------------------------------------------------- Python on shapes


class PadsToFour(nn.Module):
    """``if x.shape[-1] % 4 != 0``: pad the last dimension to a multiple of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 != 0:
            x = F.pad(x, (0, 4 - x.shape[-1] % 4))
        return self.head(x)


class PoolsThreeDims(nn.Module):
    """``len(x.shape)``: sequences are averaged, vectors pass."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x.shape) == 3:
            x = x.mean(dim=1)
        return self.head(x)


class FlattensByShape(nn.Module):
    """Iteration over ``x.shape``: the product of the trailing sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, *rest = x.shape
        features = 1
        for size in rest:
            features = features * size
        return self.head(x.reshape(batch, features))


@pytest.mark.parametrize(
    ("model", "inputs", "question"),
    [
        (PadsToFour(), [(3, 6), (3, 8)], "bool"),
        (PoolsThreeDims(), [(3, 8), (8,)], "len"),
        (FlattensByShape(), [(2, 4), (8,)], "iter"),
    ],
    ids=["modulo", "len", "iter"],
)
def test_python_on_shapes_is_answered_for_the_input_given(
    model: nn.Module, inputs: list[tuple[int, ...]], question: str
) -> None:
    for shape in inputs:
        r = paramcount(model, shape, batch=2)
        assert r.invalid == [] and r.opaque == {}
        with torch.no_grad():
            assert r.output_shape == tensor_shapes(model(torch.zeros(2, *shape)))
    t = trace(model, example_inputs={"x": torch.empty(2, *inputs[0], device="meta")})
    assert t.shape_specific and all(q.startswith(f"{question}(") for q in t.shape_specific)
    # a sweep over inputs that answer differently traces each input: every report is right
    reports = paramcount_sweep(model, inputs, batch=2)
    with torch.no_grad():
        assert [r.output_shape for r in reports] == [tensor_shapes(model(torch.zeros(2, *s))) for s in inputs]


class UnpacksItsInput(nn.Module):
    """``batch, length = ids.shape`` (BERT's embeddings): a real forward raises on any other rank."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        return self.embed(ids).reshape(batch, length * 4)


def test_unpacking_an_input_shape_of_another_rank_fails_as_the_real_forward_does() -> None:
    """torch.fx unpacks a proxy into as many items as the code asks for, whatever its rank: token ids given
    with their batch ((1, 8) per sample, so (1, 1, 8)) traced as rank 2 and were reported as analysed."""
    model = UnpacksItsInput()
    with pytest.raises(ValueError, match=re.escape("too many values to unpack (expected 2)")):
        model(torch.zeros(1, 1, 8, dtype=torch.long))
    with pytest.raises(ShapeError, match=re.escape("give ids=(8,)")) as caught:  # the top-level forward unpacks
        paramcount(model, {"ids": (1, 8)})
    assert "UnpacksItsInput does not take this input {'ids': (1, 1, 8)}: a real forward raises ValueError: " in str(
        caught.value
    )
    assert "too many values to unpack (expected 2)" in str(caught.value) and "concrete_args" not in str(caught.value)
    wrapped = nn.Sequential(model)  # inside a part: that part is opaque and reported invalid, with the same fix
    r = paramcount(wrapped, (1, 8))
    assert [f.layer for f in r.findings] == ["0"] and r.output_shape is None
    assert r.findings[0].fix == (
        "too many values to unpack (expected 2); input shapes are per sample (batch=1 is added): "
        "input=(1, 8) — give input=(8,)"
    )
    right = paramcount(model, {"ids": (8,)})
    assert right.findings == () and right.output_shape == (1, 32)


def test_a_sweep_traces_again_an_input_of_another_rank_than_the_unpacked_one() -> None:
    """The graph traced for ids (8,) holds for rank 2 only: reusing it for (1, 8) gave a reshape error deep inside."""
    model = UnpacksItsInput()
    t = trace(model, example_inputs={"ids": torch.empty(1, 8, dtype=torch.long, device="meta")})
    assert t.input_ranks == {"ids": 2} and t.shape_specific == ()
    first, second = paramcount_sweep(model, [{"ids": (8,)}, {"ids": (16,)}])  # one trace for both
    assert (first.output_shape, second.output_shape) == ((1, 32), (1, 64))
    with pytest.raises(
        ShapeError, match="(?s)" + re.escape("too many values to unpack (expected 2)") + ".*give ids=\\(8,\\)"
    ):
        paramcount_sweep(model, [{"ids": (8,)}, {"ids": (1, 8)}])


class PadsAfterItsStem(nn.Module):
    """A shape question after the stem: a grey input does not fit the stem, the question still has an answer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        if y.shape[-1] % 2:
            y = F.pad(y, (0, 1))
        return self.head(y)


def test_python_on_shapes_after_a_layer_the_input_does_not_fit_is_answered_as_if_it_fitted() -> None:
    """The transfer-learning question (an RGB model, a grey input) on a model asking about shapes after its stem.

    Answering needs the stem's output, which torch refuses on one channel; the answer is that of the stem
    resized to fit, as propagation continues past it, so the trace holds and the stem is reported with its fix.
    """
    model = PadsAfterItsStem()
    r = paramcount(model, (1, 9, 9), batch=2)
    assert r.opaque == {} and [f.layer for f in r.findings] == ["stem"]
    assert r.findings[0].fix == "fold it with adapt_input_channels(model, 1)"
    grey = adapt_input_channels(model, 1).model  # the fix, run as written
    with torch.no_grad():
        assert r.output_shape == tensor_shapes(grey(torch.zeros(2, 1, 9, 9))) == (2, 2, 9, 10)
    assert r.total_for_input == sum(p.numel() for p in grey.parameters())


def test_without_example_inputs_python_on_shapes_fails_as_in_torch_fx() -> None:
    with pytest.raises(TraceError, match="control flow"):
        trace(PadsToFour())
    with pytest.raises(TraceError, match="Proxy object cannot be iterated"):
        trace(FlattensByShape())


# --------------------------------------------------------------------------- data-dependent control flow


class SkipsWhenNegative(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # a question about values: not answerable on meta
            return self.proj(x)
        return x


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(8, 8)
        self.gate = SkipsWhenNegative()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 == 0:  # a question about shapes: answered
            x = self.pre(x)
        return self.gate(x)


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def test_data_dependent_control_flow_makes_only_the_smallest_module_opaque() -> None:
    r = paramcount(Stack(), (8,), batch=2)
    assert r.invalid == []
    assert r.opaque.keys() == {"block.gate"}
    assert "control flow" in r.opaque["block.gate"] and "a tensor value" in r.opaque["block.gate"]
    assert r.layer("block.pre").status == LayerStatus.OK  # its parent was traced through
    assert r.layer("block.gate").status == LayerStatus.OPAQUE
    assert r.output_shape == (2, 3)


# --------------------------------------------------------------------------- token ids


class EmbedsWhenPositive(nn.Module):
    """The embedding sits inside a module that becomes opaque: no graph node tells that its input is integer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.max() >= 0:  # data-dependent: this module is opaque
            return self.embed(input_ids)
        return self.embed(input_ids.clamp(min=0))


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = EmbedsWhenPositive()
        self.head = nn.Linear(16, 50)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embeddings(input_ids))


def test_input_ids_given_as_a_shape_are_integers() -> None:
    model = TinyLM()
    for spec in ((8,), {"input_ids": (8,)}, {"input_ids": torch.Size([8])}):
        r = paramcount(model, spec, batch=1)
        assert r.invalid == [], [layer.message for layer in r.invalid]
        assert r.opaque.keys() == {"embeddings"}
        assert r.output_shape == (1, 8, 50)
    # a tensor keeps its own dtype: float ids are the user's choice, and the embedding says so (its data is
    # given: the forward's question on it is answered, and the embedding is not inside an opaque part)
    floats = paramcount(model, {"input_ids": torch.zeros(1, 8)})
    assert [layer.name for layer in floats.invalid] == ["embeddings.embed"]


class PadsToItsLengths(nn.Module):
    """torchaudio's Conformer: the padding mask's length is the largest of the lengths given, read with item()."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 8)

    def forward(self, input: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        max_length = int(torch.max(lengths).item())
        mask = torch.arange(max_length, device=lengths.device)[None] >= lengths[:, None]
        return self.proj(input).masked_fill(mask[..., None], 0.0)


def test_a_small_tensor_given_with_its_data_answers_questions_on_it() -> None:
    """It raised TraceError: Tensor.item() cannot be called on meta tensors, although the lengths were given."""
    model = PadsToItsLengths()
    with torch.no_grad():
        assert model(torch.zeros(1, 50, 16), torch.tensor([50])).shape == (1, 50, 8)
    r = paramcount(model, {"input": (50, 16), "lengths": torch.tensor([50])})
    assert r.output_shape == (1, 50, 8) and r.invalid == [] and r.opaque == {}
    with pytest.raises(TraceError, match="item"):  # given as a shape, the lengths are not known
        paramcount(model, {"input": (50, 16), "lengths": "1:long"})


def test_finfo_of_a_traced_dtype_is_answered_for_the_input() -> None:
    """Bloom and T5 build attention masks from torch.finfo(scores.dtype).min: a C class that rejects proxies."""

    class Masked(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scores = x @ x.transpose(-1, -2)
            floor = torch.finfo(scores.dtype).min
            return scores.masked_fill(scores > 1, floor) + torch.iinfo(torch.int8).max

    report = paramcount(Masked(), (4, 8))
    assert report.output_shape == (1, 4, 4) and report.opaque == {}
    assert torch.finfo is not None and isinstance(torch.finfo(torch.float16), torch.finfo)  # the real class is back


def test_finfo_stays_a_class_for_other_threads_during_a_trace() -> None:
    """Found by a probe: during a trace, ``isinstance(x, torch.finfo)`` in any thread raised ``TypeError:
    isinstance() arg 2 must be a type`` (torch.finfo was a function); it answers as torch's class does."""
    inside, release = threading.Event(), threading.Event()

    class Waits(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if isinstance(x, torch.fx.Proxy):  # hold the trace here while the other thread asks
                inside.set()
                release.wait(30)
            return x * torch.finfo(x.dtype).eps

    tracing = threading.Thread(target=paramcount, args=(Waits(), (4,)))
    tracing.start()
    try:
        assert inside.wait(30)
        asked = (
            isinstance(torch.finfo(torch.float32), torch.finfo),
            isinstance(torch.iinfo(torch.int8), torch.iinfo),
            issubclass(torch.finfo, torch.finfo),
            isinstance(3, torch.finfo),
            torch.finfo(torch.float16).max,
        )
    finally:
        release.set()
        tracing.join()
    real = torch.finfo(torch.float16).max
    assert asked == (True, True, True, False, real)


# --------------------------------------------------------------------------- library calls on proxies

_ORIGINALS = (torch.ones, torch.zeros, torch.tensor, torch.finfo, torch.jit.isinstance)
_ORIGINALS_VMAP = torch.vmap
_GLOBAL_ACTIVATION = nn.SiLU()  # transformers' ACT2FN[...]: a module instance that is not the model's


class LibraryCalls(nn.Module):
    """What MONAI, OPT/BART, DeBERTa, SwinUNETR and Mamba do in ``forward`` with traced values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.skip = nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        if torch.jit.isinstance(x, torch.Tensor):  # MONAI's UpCat: False for a proxy, the concatenation vanished
            y = torch.cat([x, y], dim=1)
        y = torch.as_tensor(self.skip(y))  # MONAI's HighResNet: torch rejects a proxy as data
        b, c, h, w = y.shape
        mask = torch.ones(b, h * w)  # OPT's and BART's masks: torch rejects a proxy inside a size
        scale = torch.sqrt(torch.tensor(c, dtype=torch.float))  # DeBERTa's attention scale
        padded = int(np.ceil(h / 3)) * 3  # SwinUNETR's window padding: numpy on a traced size
        y = F.pad(y, (0, padded - w, 0, padded - h))
        return _GLOBAL_ACTIVATION(y) * scale, mask  # Mamba: a weightless module from a global table


def test_library_calls_on_traced_values_are_answered_and_restored() -> None:
    model = LibraryCalls().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = paramcount(model, (2, 8, 8), batch=2, crosscheck="always")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training
    assert all(p.requires_grad for p in model.parameters()) and not _GLOBAL_ACTIVATION._forward_hooks
    assert report.opaque == {} and report.invalid == [] and report.trusted
    assert report.total_for_input == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert report.output_shape == tensor_shapes(model(torch.zeros(2, 2, 8, 8)))  # ((2, 4, 9, 9), (2, 64))
    assert (torch.ones, torch.zeros, torch.tensor, torch.finfo, torch.jit.isinstance) == _ORIGINALS
    traced = trace(model, example_inputs={"x": torch.empty(2, 2, 8, 8, device="meta")})
    assert not any(q.startswith("bool(") for q in traced.shape_specific)  # recording a call asks no truth value
    assert torch.jit.isinstance(torch.zeros(1), torch.Tensor) and torch.ones(2).tolist() == [1.0, 1.0]


class PerceiverLike(nn.Module):
    """transformers' Perceiver: ``np.prod(x.shape[1:-1])`` (numpy asks the shape for a ``prod`` method, which a
    ``torch.Size`` lacks, and multiplies its values), and a cross-attention block used as self-attention, whose
    ``nn.Identity`` is given ``inputs=None`` and whose ``inputs is not None`` decides the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.Identity()
        self.key = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x).permute(0, 2, 3, 1)
        y = torch.reshape(y, [y.shape[0], np.prod(y.shape[1:-1]), y.shape[-1]])
        inputs = self.norm(inputs)
        return self.key(inputs if inputs is not None else y)


def test_numpy_on_a_shape_and_an_identity_given_none_take_the_real_forwards_path() -> None:
    """Found by a probe: transformers' Perceiver image models were one opaque node ("'torch.Size' object has no
    attribute 'prod'"), its text models three ("linear(): argument 'input' must be Tensor, not NoneType")."""
    model = PerceiverLike().eval()
    report = paramcount(model, (3, 5, 6), batch=2, crosscheck="always")
    assert report.opaque == {} and report.invalid == [] and report.trusted
    assert report.output_shape == tuple(model(torch.zeros(2, 3, 5, 6)).shape) == (2, 30, 8)
    assert report.macs == 2 * 8 * 5 * 6 * 27 + 2 * 30 * 8 * 8  # the conv: 27 per output; the key: 8 per output


class ChunkOffsets(nn.Module):
    """transformers' chunked attention mask (Llama 4): ``torch.zeros(batch_size, device=device, dtype=int)``, a
    Python type as the dtype of a factory given a traced size."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        left_padding = torch.zeros(ids.shape[0], device=ids.device, dtype=int)
        return self.embed(ids + left_padding[:, None])


def test_a_factory_given_a_python_type_as_dtype_is_recorded() -> None:
    """Found by a probe: Llama4TextModel failed to trace as a whole ("argument of type: <class 'type'>"): fx cannot
    record the Python type ``int`` as an argument; torch reads it as ``torch.int64``."""
    model = ChunkOffsets()
    report = paramcount(model, {"ids": (5,)}, batch=3)
    assert report.output_shape == tuple(model(torch.randint(0, 16, (3, 5))).shape) == (3, 5, 4)
    assert report.invalid == [] and report.opaque == {} and report.trusted


def _chunked(chunk: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A mask function of positions (transformers' ``chunked_limited_mask_function``): ints in its closure."""

    def inner(q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return torch.div(q_idx, chunk, rounding_mode="trunc") >= torch.div(kv_idx, chunk, rounding_mode="trunc")

    return inner


class VmappedMask(nn.Module):
    """transformers' ``sdpa_mask`` with a custom mask function (Nemotron ASR, T5Gemma 2): the mask function vmapped
    over the positions, ``torch.arange`` of traced lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        mask_function = torch.vmap(torch.vmap(_chunked(2), in_dims=(None, 0)), in_dims=(0, None))
        mask = mask_function(torch.arange(n, device=x.device), torch.arange(n, device=x.device))
        scores = self.proj(x) @ x.transpose(1, 2)
        return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ x


def test_a_vmapped_mask_of_traced_lengths_is_one_call() -> None:
    """Found by a probe: NemotronAsrStreamingEncoder failed to trace as a whole and T5Gemma 2's attention layers were
    opaque ("vmap(...): Got in_dim=0 for an input but the input is of type ShapeProxy"): vmap cannot take a proxy."""
    model = VmappedMask()
    report = paramcount(model, (6, 4))
    assert report.output_shape == tuple(model(torch.randn(1, 6, 4)).shape) == (1, 6, 4)
    assert report.opaque == {} and report.invalid == [] and report.trusted
    assert torch.vmap is _ORIGINALS_VMAP  # put back after the trace


class VmappedBeforeAName(nn.Module):
    """A function vmapped in forward that reads a name assigned after the call (its closure cell still empty)."""

    def __init__(self, scaled: bool = False) -> None:
        super().__init__()
        self.scaled, self.proj = scaled, nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def row(v: torch.Tensor) -> torch.Tensor:
            return v * scale if self.scaled else v + 1

        out = torch.vmap(row)(self.proj(x))
        scale = 2.0
        return out * scale


def test_a_vmapped_function_with_an_empty_closure_cell_is_traced() -> None:
    """Checking what a function vmapped holds (a proxy in its closure) read every cell of its closure, and an empty
    one (a name assigned after the call) raised ValueError('Cell is empty') out of the trace."""
    model = VmappedBeforeAName()
    report = paramcount(model, (6, 4))
    assert report.output_shape == tuple(model(torch.randn(1, 6, 4)).shape) == (1, 6, 4)
    assert report.invalid == [] and report.total == sum(p.numel() for p in model.parameters())


class PlainTensorSizes(nn.Module):
    """Sizes from the input given to methods of tensors that are no parameter or buffer (peft's prompt tuning keeps
    its prompt tokens in a dict: ``self.prompt_tokens[adapter].unsqueeze(0).expand(batch_size, -1)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = {"default": torch.arange(4.0)}  # a plain tensor in a dict: fx gives no proxy for it
        self.scale = torch.linspace(1.0, 2.0, 4)  # a plain tensor attribute
        self.proj = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        prompt = self.tokens["default"].unsqueeze(0).expand(b, -1)  # (B, 4)
        scale = self.scale.repeat(b, 1).view(b, 2, 2).reshape(b, -1).flip(0)  # (B, 4)
        ones = torch.ones(4).tile(b, 1) + x.new_zeros(b, 4)  # a tensor made in forward
        return self.proj(x + prompt * scale + ones).permute(1, 0)


def test_sizes_from_the_input_reach_methods_of_plain_tensors() -> None:
    model = PlainTensorSizes().eval()
    report = paramcount(model, (4,), batch=3, crosscheck="always")
    with torch.no_grad():
        real = model(torch.zeros(3, 4))
    assert report.output_shape == tuple(real.shape) == (6, 3)
    assert report.total == sum(p.numel() for p in model.parameters()) and report.trusted and not report.invalid
    assert not {"expand", "view", "reshape", "repeat", "permute", "tile", "flip", "new_zeros"} & set(vars(torch.Tensor))
    assert torch.arange(3.0).unsqueeze(0).expand(2, -1).shape == (2, 3)  # the real methods are back


def test_a_global_module_with_weights_is_still_an_error() -> None:
    shared = nn.Linear(4, 4)

    class UsesGlobal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(shared(x))  # weights outside the model: not traced through

    with pytest.raises(TraceError, match="not installed as a submodule"):
        trace(UsesGlobal(), auto_leaf=False)


class StridedPad(nn.Module):
    """Paddings computed from scalar integer buffers, compared in Python (transformers' Encodec does this)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 4, stride=2)
        self.register_buffer("stride", torch.tensor(2), persistent=False)
        self.register_buffer("kernel", torch.tensor(4), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = torch.ceil((x.shape[-1] - self.kernel) / self.stride + 1).to(torch.int64) - 1
        right = frames * self.stride + self.kernel - x.shape[-1]
        left = self.kernel - self.stride
        if max(left, right) > 0:  # a value of the model's settings and of the input's size
            x = F.pad(x, (left, right), mode="reflect")
        return self.conv(x)


@pytest.mark.parametrize("length", [9, 10])
def test_python_on_scalar_buffers_is_answered_from_their_values(length: int) -> None:
    model = StridedPad()
    r = paramcount(model, (2, length))
    with torch.no_grad():
        want = tuple(model(torch.randn(1, 2, length)).shape)
    assert r.opaque == {} and r.output_shape == want and r.trusted
    assert r.shape_fallbacks == []  # the scalar arithmetic is computed, the reflect pad has its rule
    assert model.stride.item() == 2 and model.stride.device.type == "cpu"  # the model's buffers are left alone


class CoinFlip(nn.Module):
    """Python on a random scalar: a value that differs between forwards is never answered."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(x.shape[:1]).sum() < 0.5:  # recorded (its size is traced); its value is not the same twice
            x = x.flip(-1)
        return self.conv(x)


def test_python_on_a_random_scalar_stays_opaque() -> None:
    r = paramcount(nn.Sequential(CoinFlip()), (3, 8, 8))
    assert list(r.opaque) == ["0"] and "control flow" in r.opaque["0"]


def test_transformers_is_tracing_is_put_back_after_a_trace() -> None:
    masks = pytest.importorskip("transformers.masking_utils")
    real = masks.is_tracing
    paramcount(nn.Sequential(nn.Linear(3, 2)), (3,))
    assert masks.is_tracing is real
    with pytest.raises(TraceError):
        paramcount(CoinFlip(), (3, 8, 8))  # the model's own forward decides on a random value: no trace
    assert masks.is_tracing is real


class Checked(nn.Module):
    """``torch._check`` of a traced size, and transformers' ``torch_compilable_check`` way of calling it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._check(x.shape[1] == 8)
        cond = x.shape[2] == 4
        if callable(cond):  # a proxy records calls, so it is callable
            cond = cond()
        torch._check_with(ValueError, cond, lambda: "four features")
        return self.lin(x)


def test_torch_check_of_a_traced_size_is_checked_on_its_value() -> None:
    r = paramcount(Checked(), (8, 4))
    assert r.opaque == {} and r.output_shape == (1, 8, 4) and r.trusted
    with pytest.raises(ShapeError, match="a real forward raises RuntimeError: Expected cond to be True"):  # its own
        paramcount(Checked(), (7, 4))


class AskAfterNorm(nn.Module):
    """Python asks about the output of a group norm that averages one value per group at batch 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.GroupNorm(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        if y.shape[-1] == 1:
            y = y.flatten(1)
        return self.head(y)


def test_a_trace_goes_on_past_a_norm_that_raises_at_batch_one() -> None:
    r = paramcount(AskAfterNorm(), (3, 2, 2))
    assert r.opaque == {} and r.output_shape == (1, 2) and r.invalid == []
    assert "group norm averages each group over 1 value" in str(r)  # the report's note on the batch
    assert paramcount(AskAfterNorm(), (3, 2, 2), batch=2).output_shape == (2, 2)


class ReassignsItsBuffer(nn.Module):
    """Stores a traced value in its own buffer (transformers' CTRL moves its positions so) and has a part that is
    traced opaque on a second attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pos", torch.randn(16, 4))
        self.gate, self.lin = Gate(), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.pos = self.pos.to(dtype=x.dtype)
        return self.lin(self.gate(x + self.pos[: x.shape[1]]))


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() >= 0 else -x


def test_a_second_trace_attempt_starts_from_the_model_as_found() -> None:
    model = ReassignsItsBuffer()
    pos = model.pos
    r = paramcount(model, (8, 4))
    assert list(r.opaque) == ["gate"] and r.output_shape == (1, 8, 4) and r.trusted
    assert model.pos is pos


class InPlaceThenAsk(nn.Module):
    """Python asks about a tensor after an in-place shape edit whose node nobody uses (BigBird's unsqueeze_)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lin(x) * 2
        b = a.unsqueeze_(1)  # (B, 1, L, 4); b is a
        return a.new_zeros(len(a.size()), len(b.size()))


class PadLast(nn.Module):
    """Pads from a list edited in place, as transformers' LongT5 ``_pad_to_multiple`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lin(x.transpose(1, 2)).transpose(1, 2)
        pad = [(0, 0)] * x.ndim
        pad[2] = (0, 1)
        if len(pad[::-1][0]) == 2:  # a question about the edited list
            x = F.pad(x, sum(pad[::-1], ()))
        return x


@pytest.mark.parametrize("model", [InPlaceThenAsk(), PadLast()], ids=lambda m: type(m).__name__)
def test_in_place_edits_are_seen_by_the_trace_and_by_shape_propagation(model: nn.Module) -> None:
    with torch.no_grad():
        want = tuple(model(torch.randn(1, 4, 8) if isinstance(model, PadLast) else torch.randn(1, 8, 4)).shape)
    r = paramcount(model, (4, 8) if isinstance(model, PadLast) else (8, 4))
    assert r.output_shape == want and want in ((4, 4), (1, 4, 9)) and r.opaque == {}


class EditsItsLengths(nn.Module):
    """Known data edited in place before Python reads it: the read sees the edit, as in a real forward."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.proj, self.how = nn.Linear(16, 8), how

    def forward(self, input: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.how == "add_":
            lengths.add_(1)
        elif self.how == "setitem":
            lengths[0] = 5
        elif self.how == "by data":
            lengths.add_(input.sum().long())  # the input's data: not known
        return self.proj(input)[:, : int(lengths.max().item())]


@pytest.mark.parametrize(("how", "kept"), [("add_", 4), ("setitem", 5), ("by data", None)])
def test_known_data_edited_in_place_is_read_as_edited(how: str, kept: int | None) -> None:
    """The edit was not applied to the given lengths (the trace read 3 where a real forward reads 4), and the
    given tensor itself must stay as the user made it."""
    model, lengths = EditsItsLengths(how), torch.tensor([3])
    if kept is None:
        with pytest.raises(TraceError, match="item"):
            paramcount(model, {"input": (8, 16), "lengths": lengths})
    else:
        with torch.no_grad():
            assert model(torch.zeros(1, 8, 16), lengths.clone()).shape == (1, kept, 8)
        assert paramcount(model, {"input": (8, 16), "lengths": lengths}).output_shape == (1, kept, 8)
    assert lengths.tolist() == [3]


def test_an_assert_on_data_is_passed_and_control_flow_on_data_is_not() -> None:
    """XLM raised TraceError at its assert on data, though it decides no shape (found by a fifth probe).  The
    models live in models.py: pytest rewrites the asserts of test modules into other bytecode."""
    r = paramcount(AssertsOnItsLengths(), (8,))
    assert r.output_shape == (1, 8, 4) and r.invalid == [] and r.opaque == {}
    with pytest.raises(TraceError, match="control flow"):
        paramcount(BranchesOnItsLengths(), (8,))


def test_timms_hook_feature_net_is_left_as_found() -> None:
    """Found by a probe: timm's FeatureHooks keeps what its hooks collect in a defaultdict of its own, keyed by
    the input's device; the trace left a proxy key there (the model could no longer be deep-copied), and the
    output was None, trusted."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, features_only=True, feature_cls="hook").eval()
    before = dict(model.hooks._feature_outputs)
    report = paramcount(model, (3, 64, 64), crosscheck="always")
    assert dict(model.hooks._feature_outputs) == before
    copy.deepcopy(model)
    real = tuple(tuple(t.shape) for t in model(torch.randn(1, 3, 64, 64)))
    assert [shape[1] for shape in real] == [64, 64, 128, 256, 512]
    # its hooks (partials of a helper object's method) are timm's: they run, keyed by x.device, in the trace and
    # in the cross-check's copy (bound to its own FeatureHooks); the output was None, trusted
    assert report.output_shape == real and report.crosscheck.trust == "verified"


def test_a_tensors_device_is_one_dict_key_in_a_trace() -> None:
    class ByDevice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            stored = {x.device: self.conv(x)}
            y = x * 2
            return stored[y.device] + 1  # another tensor's device: the same key, as in a real forward

    assert paramcount(ByDevice(), (3, 8, 8)).output_shape == (1, 4, 8, 8)


@pytest.mark.slow
def test_torchs_caches_keep_torchs_own_functions_after_an_analysis() -> None:
    """Found by a test run's memory: ``torch.overrides`` lists torch's functions once per process, the first time
    one is asked for; asked for during a trace (the first analysis of a process), its caches kept the trace's
    stand-ins for ``torch.finfo``, ``torch.zeros``, ``Tensor.new_zeros`` in place of torch's own, and through them
    the trace that made them. In a fresh process, so that the caches are empty before the analysis."""
    code = (
        "import torch, torch.overrides as o\n"
        "from torch import nn\n"
        "from torchsurgeon import adapt_input_channels\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "    def forward(self, x):\n"
        "        return torch.flatten(self.conv(x), 1)\n"  # a torch function on a proxy asks torch.overrides
        "adapt_input_channels(Net(), 1)\n"
        "ignored = o.get_ignored_functions()\n"
        "print(torch.finfo in ignored, torch.zeros in ignored, torch.Tensor.new_zeros in ignored)\n"
        "print(sorted({getattr(f, '__module__', '') for f in ignored if 'torchsurgeon' in repr(f)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines() == ["True True True", "[]"], done.stderr


class _XTransformersLike(nn.Module):
    """What x-transformers does: a mutable default handed on as ``**token_emb_kwargs``, autocast disabled on the
    input's device (``with autocast(t.device.type, enabled=False)`` around its rotary embedding), and a position
    table sliced to the tokens' count (``self.pos_embedding[:, :n]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(32, 8)
        self.norm = nn.LayerNorm(8, elementwise_affine=False)
        self.gamma = nn.Parameter(torch.ones(8))
        self.pos = nn.Parameter(torch.zeros(1, 16, 8))

    def forward(self, x: torch.Tensor, emb_kwargs: dict[str, Any] = dict(), scale: float = 1.0) -> torch.Tensor:  # noqa: B006
        t = self.emb(x, **emb_kwargs)
        with torch.autocast(t.device.type, enabled=False):
            t = t.float() * scale
        t = self.norm(t) * self.gamma
        return t + self.pos[:, : t.shape[1]]


def test_a_dict_default_and_autocast_on_the_input_device_are_traced_as_called() -> None:
    """Found by probing x-transformers: its ``TransformerWrapper`` failed ('forward needs input 'token_emb_kwargs'
    but no shape was given for it': a dict default was made an input, which fx cannot unpack); with rotary
    embeddings its attention became opaque (autocast refuses fx's proxy of a device type), then 'failed' on
    ``meta`` in the cross-check (autocast refuses "meta"), which was blamed on the real model and reported an
    invalid layer at an input it takes."""
    model = _XTransformersLike().eval()
    report = paramcount(model, {"x": TypedShape((12,), "long")}, crosscheck="always")
    with torch.no_grad():
        assert report.output_shape == tuple(model(torch.zeros(1, 12, dtype=torch.long)).shape) == (1, 12, 8)
    assert report.opaque == {} and report.invalid == [] and report.trusted
    assert report.total == sum(p.numel() for p in model.parameters())
    with pytest.raises(RuntimeError, match="unsupported scalarType"):  # torch's own again
        torch.autocast("meta", enabled=False)


def test_what_follows_an_unknown_value_is_unknown_not_invalid() -> None:
    """x-transformers' ViT at 1 channel: after a layer that does not fit, ``self.pos_embedding[:, :n]`` with ``n``
    read from the unknown value was reported invalid ('slice indices must be integers or None')."""
    model = _XTransformersLike().eval()
    model.emb = nn.Embedding(32, 6)  # the norm takes 8: invalid (resized to fit), then gamma's product (8) fails
    report = paramcount(model, {"x": TypedShape((12,), "long")})
    assert [layer.name for layer in report.invalid] == ["norm", "mul_1"]
    sliced = [row for row in report.layers if row.type == "getitem()"]
    assert sliced and all(row.status is LayerStatus.UNKNOWN for row in sliced)
