"""Copies of modules: detached copies and the zero run for leaves that cannot run on meta."""

from __future__ import annotations

import collections
import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models import Gate
from torchsurgeon.copies import detached_copy, meta_like, run_on_zeros
from torchsurgeon.rules.on_meta import ruled_meta


def test_detached_copy_and_run_on_zeros_leave_the_module_alone() -> None:
    model = Gate(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = detached_copy(model, lambda t: torch.zeros_like(t))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(not p.detach().any() for p in clone.parameters())
    x = torch.empty(2, 3, device="meta")
    out = run_on_zeros(model, (x,), {}, NotImplementedError("meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (2, 3)
    with pytest.raises(ValueError, match="a real shape error"):
        run_on_zeros(model, (x,), {}, ValueError("a real shape error"))


def test_run_on_zeros_refuses_huge_leaves() -> None:
    x = torch.empty(1, 2**26, device="meta")
    with pytest.raises(NotImplementedError, match=r"too large to run on zeros on the CPU \(67,108,\d+ elements"):
        run_on_zeros(Gate(1), (x,), {}, NotImplementedError("meta"))


class _Holder:
    """Not a module: deepcopy copies it through ``__reduce_ex__``, with whatever it holds."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


class _Custom(nn.Module):
    """Copies itself its own way: detached_copy must leave it to copy.deepcopy."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.copied = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> _Custom:
        clone = _Custom.__new__(_Custom)
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        clone.copied += 1
        return clone


class _Odd(nn.Module):
    """Plain containers, shared objects and modules reached other ways than ``_modules``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight  # a shared parameter
        self.rnn = nn.LSTM(3, 4, num_layers=2)  # its __setstate__ rebuilds _flat_weights
        self.custom = _Custom()
        self.plain = [self.a, {"b": self.b, "sizes": [1, 2]}]  # not registered: copied as deepcopy would
        self.pair = (self.plain, self.plain)  # one list, twice
        self.holder = _Holder(nn.ReLU())
        self.config = collections.namedtuple("Config", "width depth")(3, 2)
        self.register_buffer("scale", torch.ones(3), persistent=False)


def test_detached_copy_is_a_deep_copy_without_hooks() -> None:
    model = _Odd()
    seen: list[str] = []
    for m in (model, model.a, model.rnn, model.custom.lin):
        m.register_forward_hook(lambda *_: seen.append("hook"))
        m.register_forward_pre_hook(lambda *_: seen.append("pre-hook"))
    clone = detached_copy(model, lambda t: torch.empty_like(t, device="meta"))
    reference = copy.deepcopy(model)
    assert [(n, type(m)) for n, m in clone.named_modules()] == [(n, type(m)) for n, m in reference.named_modules()]
    assert [(n, p.shape, p.device.type) for n, p in clone.named_parameters()] == [
        (n, p.shape, "meta") for n, p in reference.named_parameters()
    ]
    assert all(clone.get_submodule(n).__dict__.keys() == m.__dict__.keys() for n, m in reference.named_modules())
    assert clone.b.weight is clone.a.weight and clone.plain[0] is clone.a and clone.plain[1]["b"] is clone.b
    assert clone.pair[0] is clone.pair[1] is clone.plain and clone.plain is not model.plain
    assert clone.scale.device.type == "meta" and "scale" in clone._non_persistent_buffers_set
    assert clone._non_persistent_buffers_set is not model._non_persistent_buffers_set
    assert clone.config == model.config and clone.custom.copied == 1
    assert all(w.device.type == "meta" for w in clone.rnn._flat_weights)
    assert clone.holder is not model.holder and clone.holder.module is not model.holder.module
    clone.plain[1]["sizes"].append(3)
    assert model.plain[1]["sizes"] == [1, 2]
    hooks = ("_forward_hooks", "_forward_pre_hooks")  # registered submodules (not the one _Holder hides)
    assert all(not getattr(m, attr) for m in clone.modules() for attr in hooks)
    with torch.device("meta"):
        clone.a(torch.empty(1, 3)), clone.rnn(torch.empty(5, 1, 3)), clone.custom.lin(torch.empty(1, 2))
    assert seen == []
    assert len(model.a._forward_hooks) == 1 and model.a.weight.device.type == "cpu"


def _library_hook(module: nn.Module, args: Any, output: Any) -> None:
    """A forward hook "from the model's library": its __module__ is set to torch's below."""


_library_hook.__module__ = "torch.nn.modules.hooks_of_the_library"


def test_detached_copy_keeps_the_forward_hooks_the_models_library_installed_and_no_other() -> None:
    """transformers collects hidden states with forward hooks on its own modules; a copy without them
    computes something else (UperNet's head read None)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    mine = model[0].register_forward_hook(lambda *a: None)
    theirs = model[0].register_forward_hook(_library_hook, always_call=True)
    copied = detached_copy(model, lambda t: torch.empty_like(t, device="meta"))
    assert list(copied[0]._forward_hooks.values()) == [_library_hook]
    assert list(copied[0]._forward_hooks_always_called) == [theirs.id] and mine.id in model[0]._forward_hooks
    assert len(model[0]._forward_hooks) == 2  # the model keeps both


def _torchvision_hook(module: nn.Module, args: Any, output: Any) -> None:
    """A forward hook "from torchvision": its __module__ is set below."""


_torchvision_hook.__module__ = "torchvision.hooks_of_the_library"


def test_detached_copy_keeps_the_hooks_of_the_library_of_a_wrapped_model() -> None:
    """A peft model around a transformers model: transformers' hooks are the model's own, though the root's class
    is peft's (found by a probe: ``enable_input_require_grads`` was dropped from the memory plan's copy)."""
    import torchvision

    block = torchvision.ops.misc.MLP(4, [4])
    wrapper = nn.Sequential(block)  # torch's class around torchvision's
    block.register_forward_hook(_torchvision_hook)
    copied = detached_copy(wrapper, lambda t: torch.empty_like(t, device="meta"))
    assert list(copied[0]._forward_hooks.values()) == [_torchvision_hook]


def test_detached_copy_keeps_the_users_hooks_that_return_a_value() -> None:
    """A hook that replaces a module's output changes what the model computes: the copy keeps it."""
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU())
    seen: list[Any] = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output))
    model[0].register_forward_hook(lambda module, inputs, output: output[:, :3])
    copied = detached_copy(model, lambda t: torch.empty_like(t, device="meta"))
    assert len(copied[0]._forward_hooks) == 1
    assert copied(torch.empty(1, 2, device="meta")).shape == (1, 3) and seen == []


def test_a_kept_hook_bound_to_its_module_is_bound_to_the_copy_and_removes_itself_there() -> None:
    """A lazy layer's own pre-hook makes its parameters, then removes itself through a handle: in the copy it
    ran the model's method and stayed, and the copy's second forward failed (no initialize_parameters)."""
    model = nn.Sequential(nn.LazyLinear(3))
    copied = detached_copy(model, lambda t: torch.empty_like(t, device="meta"))
    (hook,) = copied[0]._forward_pre_hooks.values()
    assert hook.__self__ is copied[0]
    with torch.no_grad():
        copied(torch.empty(1, 5, device="meta"))
        assert copied(torch.empty(1, 5, device="meta")).shape == (1, 3)  # it runs again, as a real model does
    assert not copied[0]._forward_pre_hooks and type(copied[0]) is nn.Linear
    assert len(model[0]._forward_pre_hooks) == 1 and isinstance(model[0].weight, nn.UninitializedParameter)


def test_meta_like_gives_the_same_under_ruled_meta() -> None:
    """A model's tensors get the same stand-ins whether a trace's ``ruled_meta`` is on or not."""

    def signature(t: torch.Tensor) -> Any:
        value = t.item() if t.device.type == "cpu" else None
        return tuple(t.shape), t.dtype, t.stride(), t.device.type, t.requires_grad, type(t), value

    tensors = [
        nn.Parameter(torch.ones(2, 3)),
        torch.ones(2, 3),  # a buffer: known data
        torch.ones(3, 2).t(),  # not contiguous
        torch.ones(1, 2, 1, 1).to(memory_format=torch.channels_last),
        torch.ones(2, 3, 4, 5).to(memory_format=torch.channels_last),
        torch.tensor(4),  # a scalar setting keeps its value
        torch.tensor(1.5),
        torch.empty(2, 3, device="meta"),
    ]
    for t in tensors:
        plain = meta_like(t)
        with ruled_meta():
            ruled = meta_like(t)
        assert signature(ruled) == signature(plain), t


class _NoisyGate(nn.Module):
    """Reads values (not on meta: run on zeros) and draws random numbers from torch's global generator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + torch.rand(x.shape)
        return x if x.sum() > 0 else x[:, :2]


def test_run_on_zeros_leaves_the_users_random_stream_as_found() -> None:
    """Found by a probe: a leaf run on zeros drew from the CPU generator, so ``paramcount`` mid-script shifted
    every random number the user's script drew after it (seeded runs no longer reproduced)."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    out = run_on_zeros(_NoisyGate(), (torch.empty(1, 5, device="meta"),), {}, NotImplementedError("meta"))
    assert out.shape == (1, 5) and torch.equal(torch.rand(3), expected)


def test_meta_copies_share_only_what_cannot_change() -> None:
    """The copy is rebuilt fast (new empty hook dicts, parameters made directly on meta, numpy scalars kept as
    the immutable atoms they are), yet every module has hook dicts of its own, also where deepcopy copies part
    of the model (an object that is no module), and each parameter is a new leaf with its shape, strides and
    requires_grad."""
    model = _Odd()
    model.patches = np.int64(16)  # MONAI's ViT keeps n_patches so
    model.frozen = nn.Parameter(torch.randn(4, 3).t(), requires_grad=False)  # strides (1, 3)
    model.a.register_forward_hook(lambda *_: None).remove()  # an empty hook dict a handle refers to
    clone = detached_copy(model, meta_like)
    assert clone.patches is model.patches and clone.patches == 16  # deepcopy made another np.int64
    for name, p in clone.named_parameters():
        original = model.get_parameter(name)
        assert type(p) is nn.Parameter and p.is_leaf and p.device.type == "meta" and p is not original
        assert (p.shape, p.stride(), p.dtype, p.requires_grad) == (
            original.shape,
            original.stride(),
            original.dtype,
            original.requires_grad,
        )
    for copied, original in zip(clone.modules(), model.modules()):
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks"):
            assert getattr(copied, attr) is not getattr(original, attr)
        copied.register_forward_hook(lambda *_: None)
        copied.register_forward_pre_hook(lambda *_: None)
    assert clone.holder.module is not model.holder.module  # copied by deepcopy, after the hook dicts were mapped
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_a_numpy_scalar_is_copied_as_an_atom(monkeypatch: pytest.MonkeyPatch) -> None:
    """A numpy scalar (immutable, and deepcopy gives the same object) does not send the copy through
    copy.deepcopy, which first maps the hook dicts of every module of the model."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    model[0].scale, model[1].ratio = np.float32(0.5), np.int64(2)
    calls: list[object] = []
    deepcopy = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda value, memo=None: calls.append(value) or deepcopy(value, memo))
    clone = detached_copy(model, meta_like)
    assert calls == [] and clone[0].scale is model[0].scale and clone[1].ratio == 2


def test_a_plain_tensor_attribute_is_deep_copied_with_its_data_and_its_attributes() -> None:
    """A tensor a module keeps as a plain attribute (MONAI's SABlock: ``att_mat = torch.Tensor()``) is copied as
    ``copy.deepcopy`` copies it, data and Python attributes included; two attributes of one storage stay views
    of one storage, and the module's hooks still stay behind."""
    model = nn.Sequential(nn.Linear(2, 2))
    model.table = torch.arange(6.0)
    model.view_of_table = model.table[2:]
    model.tagged = torch.ones(2)
    model.tagged.note = "kept"  # type: ignore[attr-defined]
    model[0].register_forward_hook(lambda *_: None)
    clone = detached_copy(model, meta_like)
    assert clone.table is not model.table and torch.equal(clone.table, model.table)
    assert clone.view_of_table.untyped_storage().data_ptr() == clone.table.untyped_storage().data_ptr()
    assert clone.view_of_table.storage_offset() == 2 and torch.equal(clone.view_of_table, model.view_of_table)
    assert clone.tagged.note == "kept" and clone.tagged is not model.tagged
    assert not clone[0]._forward_hooks and len(model[0]._forward_hooks) == 1
