"""One training step (or one inference forward) of a model on fake tensors: what it saves, what it holds.

A copy of the model whose parameters are fake CPU tensors
(:class:`torch._subclasses.fake_tensor.FakeTensorMode`: shapes, dtypes and
storages, no memory) runs one forward, and for training one backward, with
PyTorch's real dispatch: autograd, autocast, decompositions, in-place ops.
:func:`torch.autograd.graph.saved_tensors_hooks` sees what autograd saves;
a dispatch mode follows every storage from the op that makes it to the
moment its last tensor dies.  :mod:`torchsurgeon.memory` turns the record
into a plan.  The user's model is copied (:func:`torchsurgeon.copies.detached_copy`),
never run or hooked.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import warnings
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
    unset_fake_temporarily,
)
from torch.utils._python_dispatch import TorchDispatchMode

from .arguments import ExampleInputs, InputPaths, check_input, placeholders, tensor_inputs
from .autocast import ProductPrecision
from .copies import detached_copy
from .cudakernels import CudaKernels
from .errors import InputError, MemoryPlanError, failure_reason
from .fakecaches import forget_cached
from .fakevalues import NO_VALUE, AssumedValues, KnownIndices, masked_upper_bound
from .frontend import bind_inputs
from .inputdtypes import input_dtype_for, placeholder_dtype
from .rules import FALLBACK
from .rules.on_meta import as_the_cpu_returns, by_cpu_rule, check_as_the_cpu
from .shapespec import InputSpec, TypedShape
from .trace import trace

__all__ = ("SimulatedStep", "simulate_step", "step_inputs")


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return int(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError, TypeError):  # sparse and other storage-less tensors
        return None


_SPARSE_LOOKUPS = {torch.ops.aten.embedding.default: 4, torch.ops.aten._embedding_bag.default: 5}
"""Embedding ops (weight, indices, ...) and the position of their ``sparse`` flag."""


def _sparse_gradient_bytes(weight: torch.Tensor, lookups: int) -> int:
    """The bytes of the sparse gradient of an embedding ``weight`` looked up ``lookups`` times: torch makes it
    uncoalesced, one row per lookup (``int64`` indices, rows of values in the weight's dtype)."""
    return lookups * (
        torch.tensor([], dtype=torch.int64).element_size() + math.prod(weight.shape[1:]) * weight.element_size()
    )


_VIEWS = frozenset({torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default})


def _on_plain_meta(value: Any) -> Any:
    return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")


def _strided_as_the_cpu(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> Any:
    """``out`` with the strides the CPU gives it where fake tensors give others: those of its size-1 dims.

    A CPU kernel (and meta's C++ kernel, both through ``TensorIterator`` or
    ``view``'s stride arithmetic) and fake tensors' own implementations of
    views and element-wise ops disagree on the strides of size-1 dims of a
    non-contiguous result: ``(1, 256, 64)`` transposed and viewed as
    ``(1, 64, 16, 16)`` (diffusers' spatial attention) has strides
    ``(64, 1, 1024, 64)`` on the CPU, ``(16384, 1, 1024, 64)`` on fake
    tensors.  Later ops choose their output's memory format from them
    (``suggest_memory_format`` reads a size-1 batch's stride): a nearest
    upsampling then gave a channels-last output where the CPU gives a
    contiguous one, the next ``.contiguous()`` copied it, and a plan of
    diffusers' VAE at batch 1 counted 256 KiB of activations (3.6 %) the
    real step never saved.

    Only a non-contiguous single 4-D or 5-D tensor (the ranks memory formats
    are for) with a size-1 dim is asked again, of the op on plain ``meta``
    tensors, whose C++ kernels compute strides as the CPU's do; a view keeps
    aliasing its base (``as_strided``), a new tensor is made with those
    strides; an in-place result, or an op meta cannot run, is left as it is.
    The ops meta runs through a Python decomposition (a division by a number)
    still give fake tensors' strides: diffusers' DDPM UNet at batch 1 is
    planned 1.6 % over its real step.

    Examples
    --------
    >>> from torch._subclasses.fake_tensor import FakeTensorMode
    >>> view = torch.ops.aten.view.default
    >>> with FakeTensorMode():
    ...     x = torch.empty(1, 256, 64).transpose(-1, -2)
    ...     fake = view(x, [1, 64, 16, 16])
    ...     y = _strided_as_the_cpu(view, (x, [1, 64, 16, 16]), {}, fake)
    >>> fake.stride(), y.stride(), torch.empty(1, 256, 64).transpose(-1, -2).view(1, 64, 16, 16).stride()
    ((16384, 1, 1024, 64), (64, 1, 1024, 64), (64, 1, 1024, 64))
    """
    if not isinstance(out, FakeTensor) or out.dim() not in (4, 5) or 1 not in out.shape or out.is_contiguous():
        return out  # memory formats are of 4-D and 5-D tensors: no later op reads other strides
    tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    if not all(isinstance(t, FakeTensor) for t in tensors):
        return out
    aliased = [t for t in tensors if _storage_key(t) == _storage_key(out)]
    if aliased and (func not in _VIEWS or out.storage_offset() != args[0].storage_offset()):
        return out  # an in-place edit, or a view that is not the first argument's
    try:
        with unset_fake_temporarily():
            on_meta = pytree.tree_map(lambda v: _on_plain_meta(v) if isinstance(v, torch.Tensor) else v, (args, kwargs))
            cpu = func(*on_meta[0], **on_meta[1])
    except Exception:  # an op meta cannot run: fake tensors' strides stand
        return out
    if not isinstance(cpu, torch.Tensor) or cpu.shape != out.shape or cpu.stride() == out.stride():
        return out
    if aliased:
        return torch.ops.aten.as_strided.default(args[0], out.shape, cpu.stride(), out.storage_offset())
    return torch.empty_strided(out.shape, cpu.stride(), dtype=out.dtype, device=out.device)


class _Storages(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Every storage a fake step allocates, op by op: its bytes, the op that made it, the op before which it died.

    Storages are followed through the Python objects of the fake tensors
    that share them (views, ``detach``); a storage dies with the last one
    (fake tensors are tensor subclasses: their Python object lives as long
    as any C++ reference).  Parameters and buffers are not followed.
    """

    def __init__(self, excluded: set[int | None]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.excluded = excluded
        self.stack: list[str] = []  # modules running, innermost last
        self.backward = False
        self.ops: list[tuple[str, str]] = []  # per op: (module or "backward", op name)
        self.forward_ops = 0
        self.lives: list[list[int]] = []  # per storage: [bytes, first op, op before which it died or -1]
        self._live: dict[int, list[int]] = {}  # storage key -> [storage index, tensors alive]
        self._tensors: set[int] = set()
        self._fake: set[int] = set()  # the keys of the fake storages followed (a real tensor can be saved too)
        self.values = AssumedValues()
        self.lookups: dict[int | None, int] = {}  # weight storage -> rows looked up by sparse embeddings
        self.known = KnownIndices()
        self.unread: dict[int | None, str] = {}  # storage key -> input name, until an op reads it

    def module(self) -> str:
        """The innermost module running (forward), else ``backward``."""
        return "backward" if self.backward else self.stack[-1] if self.stack else ""

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if self.unread:  # inputs no op has read yet (one given to **kwargs that forward never looks at)
            for t in pytree.tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor):
                    self.unread.pop(_storage_key(t), None)
        read = self.values.read(func, args)  # a random draw or a finiteness check read by Python: its assumed value
        if read is not NO_VALUE:
            return read
        check_as_the_cpu(func, args)  # an op the CPU refuses where fake tensors' meta kernel runs it
        self.known.check(func, args, kwargs)  # positions past a table's end (GPT-2 given more tokens than it has)
        out = by_cpu_rule(func, args, kwargs)  # an op fake tensors' meta kernel refuses where the CPU runs it
        if out is FALLBACK:
            try:
                out = func(*args, **kwargs)
            except DynamicOutputShapeException:  # sized by a mask's values: as if all True, the most memory
                out = masked_upper_bound(func, args, kwargs)
                if out is NO_VALUE:
                    raise
        out = as_the_cpu_returns(func, args, out)  # norm statistics the CPU keeps in float32, meta in half
        out = _strided_as_the_cpu(func, args, kwargs, out)  # of size-1 dims, which later ops' layouts follow
        self.values.record(func, args, kwargs, out)
        sparse = _SPARSE_LOOKUPS.get(func)
        if sparse is not None and len(args) > sparse and args[sparse]:  # a sparse=True lookup: one gradient row each
            key = _storage_key(args[0])
            self.lookups[key] = self.lookups.get(key, 0) + args[1].numel()
        self.known.record(func, args, kwargs, out)
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        self.ops.append((self.module(), str(getattr(func, "__name__", func))))
        return out

    def track(self, t: torch.Tensor) -> int | None:
        """The index of ``t``'s storage, following it from now on; None for parameters and buffers."""
        key = _storage_key(t)
        if key in self.excluded or key is None:
            return None
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [len(self.lives), 0]
            self.lives.append([t.untyped_storage().nbytes(), len(self.ops), -1])
            (self._fake.add if isinstance(t, FakeTensor) else self._fake.discard)(key)  # keys are addresses: reused
        if id(t) not in self._tensors:
            self._tensors.add(id(t))
            entry[1] += 1
            weakref.finalize(t, self._release, key, id(t))
        return entry[0]

    def _release(self, key: int, tensor: int) -> None:
        self._tensors.discard(tensor)
        entry = self._live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._live[key]
                self.lives[entry[0]][2] = len(self.ops)

    def alive(self) -> set[int]:
        """The fake storages of the step still alive (after it: held outside the step, by a cache); a real tensor
        the step used (a constant a real forward cached) is not the step's."""
        return {key for key in self._live if key in self._fake}

    def in_use(self, skip: set[int]) -> list[int]:
        """Bytes in use after each op, storages in ``skip`` left out."""
        delta = [0] * (len(self.ops) + 1)
        for index, (nbytes, first, died) in enumerate(self.lives):
            if index not in skip:
                delta[min(first, len(self.ops))] += nbytes
                delta[died if died >= 0 else len(self.ops)] -= nbytes
        return list(itertools.accumulate(delta))[: len(self.ops)] or [0]


@dataclass
class SimulatedStep:
    """What one simulated forward (and backward) saw, in bytes.

    Attributes
    ----------
    activations : int
        Storages autograd saved for backward and still held when the forward returns (a branch the forward
        drops frees what it saved), each once, parameters and buffers excluded.
    gradients : int
        The ``.grad`` the backward left on the parameters.
    transient : int
        The most memory in use after one op beyond the saved activations and the gradients.
    peak_at : str
        Where that happened: ``"forward, <module> (<op>)"`` or ``"backward, <op>"``.
    in_use_peak : int
        The most memory in use after one op, everything but parameters and buffers counted.
    saved : dict[str, int]
        Per module (qualified name, ``""`` for the model's own ``forward``), in
        forward order: the bytes first saved while it was the innermost module running.
    transients : dict[str, int]
        Per module: the most memory beyond activations and gradients while it ran (forward).
    got_grad : list[bool]
        Per parameter of the model (``model.parameters()`` order): did it get a ``.grad``.
    sparse_gradients : dict[int, int]
        Per parameter (its position in ``got_grad``) whose ``.grad`` is sparse (``nn.Embedding(sparse=True)``):
        the bytes torch gives it, one row per lookup (fake tensors make it empty); counted in ``gradients``.
    unread : tuple[str, ...]
        The inputs no op of the forward read (a name ``forward(**kwargs)`` took and never looked at).
    products : dict[torch.dtype or None, int]
        The forward's products (convolutions, ``linear``, ``matmul``...) by the autocast dtype they ran in, None
        outside autocast (:class:`~torchsurgeon.autocast.ProductPrecision`): ``amp``'s, or the model's own.
    """

    activations: int = 0
    gradients: int = 0
    transient: int = 0
    peak_at: str = ""
    in_use_peak: int = 0
    saved: dict[str, int] = field(default_factory=dict)  # module -> bytes it saved first, modules in forward order
    transients: dict[str, int] = field(default_factory=dict)  # module -> most in use beyond activations, forward
    got_grad: list[bool] = field(default_factory=list)  # per parameter of the model, in order
    sparse_gradients: dict[int, int] = field(default_factory=dict)  # parameter position -> sparse .grad bytes
    unread: tuple[str, ...] = ()  # inputs no op of the forward read
    products: dict[torch.dtype | None, int] = field(default_factory=dict)  # autocast dtype -> products run in it


def _fake_like(mode: FakeTensorMode, t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A fake tensor with ``t``'s shape and strides (a channels-last weight makes channels-last outputs, which a
    later ``flatten`` copies), in ``dtype`` if ``t`` is floating point."""
    with mode:
        return torch.empty_strided(
            t.shape, t.stride(), dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype
        )


def _tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """The tensors of a model output: tensors, tuples, lists, dicts (Hugging Face outputs are dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors_in(v)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors_in(v)


class _OverwrittenForBackward(RuntimeError):
    """A tensor saved for backward changed in place before the backward read it (autograd's own check)."""

    def __init__(self, module: str, message: str) -> None:
        super().__init__(message)
        self.module = module


def _held_for_backward(
    packed: list[tuple[int, str, weakref.ref[torch.Tensor]]], storages: _Storages, step: SimulatedStep
) -> dict[int, int]:
    """The storages saved for backward still held when the forward returns, with their bytes; ``step.saved``
    gets each under the module that first saved it among those saves still held.

    A branch whose result the forward drops (used only ``.detach()``-ed: DoRA's weight norm, a stop-gradient
    target) frees its graph, and with it what it saved, before backward: those storages were transient.
    """
    saved: dict[int, int] = {}
    for index, module, kept in packed:
        if index not in saved and kept() is not None:
            saved[index] = storages.lives[index][0]
            step.saved[module] = step.saved.get(module, 0) + saved[index]
    return saved


def _backward(outs: list[torch.Tensor], device: str) -> None:
    """``torch.autograd.backward`` from ``outs`` with gradients of ones, under :class:`CudaKernels` for ``"cuda"``:
    a checkpointed block (``torch.utils.checkpoint``, Hugging Face's ``gradient_checkpointing_enable``, timm's
    ``set_grad_checkpointing``) runs its forward again in the backward, with the kernels of the forward.

    The engine is called as ``torch.autograd.backward`` calls it: from torch 2.14 that function hands itself to the
    torch function modes, which run it with themselves set aside, so the recompute would run the CPU's kernels."""
    grads = tuple(torch.ones_like(t) for t in outs)
    with CudaKernels() if device == "cuda" else contextlib.nullcontext():
        torch.autograd.Variable._execution_engine.run_backward(
            tuple(outs), grads, False, False, (), allow_unreachable=True, accumulate_grad=True
        )


def _call(module: nn.Module, inputs: Mapping[str, torch.Tensor], paths: InputPaths | None) -> Any:
    """``module(...)`` with the inputs by name (positional as far as ``forward`` allows; see ``bind_inputs``)."""
    args, kwargs = bind_inputs(module, inputs, paths)
    return module(*args, **kwargs)


def step_inputs(
    model: nn.Module, input: InputSpec, batch: int
) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
    """Shape (batch included) and dtype per ``forward`` argument, for :func:`simulate_step`: a tensor's and a
    :class:`~torchsurgeon.shapespec.TypedShape`'s own; for a shape, ``torch.long`` where
    :func:`torchsurgeon.paramcount` gives token ids (what ``forward`` does with the input in a trace,
    :func:`~torchsurgeon.inputdtypes.placeholder_dtype`; by its name when the model cannot be traced), else None
    (the model's floating dtype).

    Examples
    --------
    >>> from torch import nn
    >>> step_inputs(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)), (3,), 2)
    {'input': ((2, 3), torch.int64)}
    >>> step_inputs(nn.Linear(6, 2), {"input": (6,)}, 2)
    {'input': ((2, 6), None)}
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch={batch!r} — the batch size is a positive int, e.g. batch=32")
    out: dict[str, tuple[tuple[int, ...], torch.dtype | None]] = {}
    for name, spec in check_input(model, input).items():
        if isinstance(spec, torch.Tensor):  # batch included: its first dimension becomes the batch planned
            out[name] = ((batch, *spec.shape[1:]) if spec.dim() else tuple(spec.shape), spec.dtype)
        elif isinstance(spec, TypedShape):
            out[name] = ((batch, *spec.shape), spec.dtype)
        else:
            out[name] = ((batch, *spec), None)
    if any(dt is None for _, dt in out.values()):
        try:  # paramcount's trace: milliseconds, against the steps' seconds
            traced = trace(model, inputs=tensor_inputs(input), example_inputs=ExampleInputs(model, input, batch))
            found = placeholders(traced.graph_module)
            integers = {k: placeholder_dtype(n, traced.graph_module) == torch.long for k, n in found.items()}
        except Exception:  # not traceable: the name decides, as paramcount's trace error or the step will say
            integers = {}
        for name, (shape, dt) in out.items():
            if dt is None and integers.get(name, input_dtype_for(name, model) == torch.long):
                out[name] = (shape, torch.long)
    return out


def simulate_step(
    model: nn.Module,
    inputs: Mapping[str, tuple[tuple[int, ...], torch.dtype | None]],
    *,
    train: bool,
    amp: torch.dtype | None,
    dtype: torch.dtype | None,
    device: str = "cpu",
    paths: InputPaths | None = None,
) -> SimulatedStep:
    """One forward (``train``: in training mode, and a backward) of a fake-tensor copy of ``model``.

    Parameters
    ----------
    model : nn.Module
        Copied with fake CPU parameters and buffers; never run, hooked or changed.
    inputs : mapping
        ``{forward argument: (shape with batch, dtype or None)}`` (:func:`step_inputs`); None means the
        copy's floating dtype (``dtype``, else the model's).
    train : bool
        True: ``copy.train()``, a forward with grad enabled under
        ``saved_tensors_hooks``, then a backward from every output that needs
        a gradient (gradients of ones).  False: ``copy.eval()`` and ``no_grad``.
    amp : torch.dtype or None
        Run the forward under ``torch.autocast("cpu", amp)``.
    dtype : torch.dtype or None
        Floating parameters and buffers of the copy in this dtype.
    device : {"cpu", "cuda"}
        Whose kernels decide what is saved: ``"cuda"`` makes dropout and
        attention save what CUDA's kernels save, and autocast cast as CUDA's does
        (:class:`torchsurgeon.cudakernels.CudaKernels`).
    paths : mapping, optional
        The inputs that are part of one ``forward`` argument (a dict's
        tensors, ``*args``' entries; :func:`torchsurgeon.arguments.input_paths`).

    Returns
    -------
    SimulatedStep

    Raises
    ------
    MemoryPlanError
        When the forward or backward fails on fake tensors (Python reading
        tensor values); the message names the module.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    >>> step = simulate_step(net, {"input": ((3, 4), None)}, train=True, amp=None, dtype=None)
    >>> step.activations  # the input (3 x 4 floats) and the ReLU's output, in place over Linear 0's (3 x 8)
    144
    >>> step.saved, step.gradients  # '': the model's own ops (here: making the input); 58 fp32 parameters
    ({'': 0, '0': 48, '1': 96, '2': 0}, 232)
    """
    # the plan is of the step its arguments describe, not of the caller's inference_mode or autocast (entered only
    # when on: an autocast region around the step's own would keep its cast cache alive through the backward)
    inference = torch.inference_mode(False) if torch.is_inference_mode_enabled() else contextlib.nullcontext()
    ambient = contextlib.ExitStack()
    for kind in ("cpu", "cuda"):  # CUDA's too: a step for a GPU casts as its autocast does (CudaKernels)
        if torch.is_autocast_enabled(kind):
            ambient.enter_context(torch.autocast(kind, enabled=False))
    made: list[_Storages] = []
    try:
        with inference, ambient:
            step = _simulate(model, inputs, train, amp, dtype, device, paths, made)
    finally:  # the step's tensors a cache of the model's code still holds: a real forward would get them back
        for storages in made:
            forget_cached(model, storages.alive(), _storage_key)
    if made and made[0].alive():
        gc.collect()  # reference cycles the step made hold their tensors until collected
        if made[0].alive():
            warnings.warn(
                f"{type(model).__name__}: its forward on fake tensors left {len(made[0].alive())} of them in state "
                "outside the model (a cache of its code that is not a functools.lru_cache): a real forward may get "
                "them back and compute without values — run memory_plan in a separate process",
                RuntimeWarning,
                stacklevel=4,  # simulate_step, memory_plan, in_plain_torch (torchsurgeon.ambient): the caller
            )
    return step


def _simulate(
    model: nn.Module,
    inputs: Mapping[str, tuple[tuple[int, ...], torch.dtype | None]],
    train: bool,
    amp: torch.dtype | None,
    dtype: torch.dtype | None,
    device: str,
    paths: InputPaths | None,
    made: list[_Storages],
) -> SimulatedStep:
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    copy = detached_copy(model, lambda t: _fake_like(fake, t, dtype))
    if not (train and model.training):  # a model in train() keeps the layers its user put in eval() (a frozen BN)
        copy.train(train)
    params = list(copy.parameters())
    # held to the end: a forward that replaces a buffer (timm's ConViT, a size-keyed cache) would free it, and its
    # storage's address, the key excluded, would be reused by activations and gradients, which were then skipped
    held = [*params, *copy.buffers()]
    storages = _Storages({_storage_key(t) for t in held})
    made.append(storages)
    handles = []
    for name, module in copy.named_modules():

        def enter(_m: nn.Module, _args: Any, name: str = name) -> None:
            storages.stack.append(name)

        def leave(_m: nn.Module, _args: Any, _out: Any) -> None:
            storages.stack.pop()

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))  # not on failure: the stack names the module
    step = SimulatedStep()
    packed: list[tuple[int, str, weakref.ref[torch.Tensor]]] = []  # (storage index, module, what autograd keeps)

    def pack(t: torch.Tensor) -> tuple[torch.Tensor, int, str]:
        index = storages.track(t)
        kept = t.detach()  # the same storage, without the output's grad_fn (no reference cycle)
        if index is not None:
            packed.append((index, storages.module(), weakref.ref(kept)))
        return kept, kept._version, storages.module()

    def unpack(saved: tuple[torch.Tensor, int, str]) -> torch.Tensor:
        kept, version, module = saved  # autograd checks versions only without hooks: the check it would make
        if kept._version != version:
            raise _OverwrittenForBackward(
                module,
                f"one of the variables needed for gradient computation has been modified by an inplace operation: "
                f"a {tuple(kept.shape)} tensor saved in {module or '(model)'} is at version {kept._version}; expected "
                f"version {version} instead",
            )
        return kept

    try:
        with fake, storages:
            values = {}
            for name, (shape, dt) in inputs.items():
                values[name] = torch.empty(shape, dtype=dt or input_dtype_for(name, copy, integers=False))
                storages.unread[_storage_key(values[name])] = name
            hooks = torch.autograd.graph.saved_tensors_hooks(pack, unpack) if train else contextlib.nullcontext()
            autocast = torch.autocast("cpu", amp) if amp is not None else contextlib.nullcontext()
            kernels = CudaKernels() if device == "cuda" else contextlib.nullcontext()
            precision = ProductPrecision()  # under CudaKernels: what it casts
            with torch.set_grad_enabled(train), hooks, autocast, precision, kernels:
                out = _call(copy, values, paths)
            step.products = precision.counts
            storages.forward_ops = len(storages.ops)
            for t in _tensors_in(out):  # an input returned as it is: used, as the trace's output node uses it
                storages.unread.pop(_storage_key(t), None)
            step.unread = tuple(storages.unread.values())
            storages.unread.clear()
            saved = _held_for_backward(packed, storages, step)
            outs = [t for t in _tensors_in(out) if t.requires_grad] if train else []
            storages.backward = True
            if outs:
                _backward(outs, device)
    except Exception as exc:
        where = storages.module() or "(model)"
        failed = f"{type(model).__name__}: the {'backward' if storages.backward else 'forward'} of a fake-tensor copy "
        failed += f"failed in {where} ({failure_reason(exc)})"
        reads_values = isinstance(exc, (DataDependentOutputException, DynamicOutputShapeException)) or any(
            k in str(exc) for k in (".numpy()", "data pointer", "tensor subclass", "data-dependent")
        )
        if reads_values:
            raise MemoryPlanError(
                f"{failed} — memory_plan runs the model on tensors without values: Python that reads values "
                "(if x.sum() > 0, .item()) cannot run, except random draws, finiteness checks and masks "
                "(torchsurgeon.fakevalues); plan the parts around it"
            ) from exc
        if isinstance(exc, _OverwrittenForBackward):
            raise MemoryPlanError(
                f"{failed} — a real training step raises it too: an in-place op after {exc.module or '(model)'} "
                "(nn.ReLU(inplace=True), x += y, x.mul_(...)) overwrote what it saved for backward; make that op out "
                "of place"
            ) from exc
        batch = " (batch=2 or more)" if "more than 1 value per channel" in str(exc) else ""
        raise MemoryPlanError(
            f"{failed} — a real training step at this input raises it too (fake tensors run PyTorch's own checks): "
            f"give an input the model accepts{batch}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    grads: dict[int, int] = {}
    for position, p in enumerate(params):
        step.got_grad.append(p.grad is not None)
        if p.grad is not None and p.grad.is_sparse:
            step.sparse_gradients[position] = _sparse_gradient_bytes(p, storages.lookups.get(_storage_key(p), 0))
        elif p.grad is not None:
            index = storages.track(p.grad)
            if index is not None:
                grads[index] = storages.lives[index][0]
    step.activations = sum(saved.values())
    step.gradients = sum(grads.values()) + sum(step.sparse_gradients.values())
    beyond = storages.in_use(set(saved) | set(grads))
    at = max(range(len(beyond)), key=beyond.__getitem__)
    step.transient = beyond[at]
    step.in_use_peak = max(storages.in_use(set()))
    if storages.ops:
        module, op = storages.ops[at]
        step.peak_at = f"backward, {op}" if module == "backward" else f"forward, {module or '(model)'} ({op})"
    order = dict.fromkeys(module for module, _ in storages.ops[: storages.forward_ops])
    step.saved = {module: step.saved.get(module, 0) for module in [*order, *step.saved]}
    for (module, _), value in zip(storages.ops[: storages.forward_ops], beyond):
        step.transients[module] = max(step.transients.get(module, 0), value)
    del out, outs, values
    return step
