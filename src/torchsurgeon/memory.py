"""``memory_plan``: the memory one fine-tuning step will need, knowing what is frozen, before anything is allocated.

One training step is simulated on *fake* tensors
(:class:`torch._subclasses.fake_tensor.FakeTensorMode`): a copy of the model
whose parameters are fake CPU tensors runs one training-mode forward (under
``torch.autocast("cpu", amp)`` when asked) and one backward, exactly as
PyTorch runs them, but no tensor owns memory.  Along the way:

* :func:`torch.autograd.graph.saved_tensors_hooks` sees every tensor autograd
  keeps for backward; their storages still held when the forward returns
  (a branch the forward drops frees what it saved), each counted once,
  parameters and buffers excluded, are the **activations**.  Layers that run on an input
  needing no gradient before the first trainable parameter save nothing,
  in-place ops share storage, dropout masks, norm statistics, attention
  intermediates and amp's casted weight copies count, because that is what
  autograd does;
* a dispatch mode records when each storage is allocated and freed, op by
  op, forward and backward: the **transient** is the most memory in use at
  any moment beyond the saved activations and the gradients;
* the gradients are the ``.grad`` the fake backward leaves on the copy's
  parameters (trainable parameters only).

The optimizer state is known from the optimizer's algorithm (the tensors
``torch.optim`` creates at its first step).  The user's model is never run nor changed:
no hooks on it, same ``training`` flags, ``requires_grad`` and weights.
Models on ``meta`` work.  What is counted, the formula and the limits:
docs/memory.md.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .ambient import in_plain_torch
from .analysis import refusal
from .arguments import input_paths, tensor_inputs
from .autocast import HALF, step_precision
from .errors import InputError, MemoryPlanError, no_such_name
from .fakestep import SimulatedStep, simulate_step, step_inputs
from .ignoredinputs import check_inputs_read
from .lazy import lazy_layers, materialized
from .optimizerstate import optimizer_bytes
from .records import LayerMemory, OptimizerKind
from .report import format_bytes, format_count, format_names, format_shape, memory_table
from .shapespec import InputSpec
from .wrappers import distributed_wrapper, unwrap_model

__all__ = ("MemoryPlan", "memory_plan", "parse_bytes")

_AMP = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_MAX_PLANS = 24  # simulated steps max_batch may run
CUBLAS_WORKSPACE = (
    32 * 2**20
)  # per thread running matrix products on a Hopper GPU (torch's default; 33,554,432 B on an H200)


def parse_bytes(value: int | str) -> int:
    """A memory size in bytes from an int or a text such as ``"24GiB"``, ``"80 GB"``, ``"512MiB"``.

    Binary units (KiB, MiB, GiB, TiB, and K, M, G, T) are powers of 1024;
    decimal units (kB, MB, GB, TB) powers of 1000.

    Raises
    ------
    InputError
        For a negative size, a text that is not a number and a unit, or a
        number under 1 MiB given as text without a unit (``"24"``: GiB meant).

    Examples
    --------
    >>> parse_bytes("24GiB"), parse_bytes("1.5 MB"), parse_bytes(4096)
    (25769803776, 1500000, 4096)
    >>> parse_bytes("24 parsecs")
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: budget '24 parsecs' is not a size — write a number and a unit, e.g. 24GiB or 80GB
    >>> parse_bytes("24")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: budget '24' has no unit, and 24 bytes fit no training step — write 24GiB (or ...
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InputError(f"budget {value} is negative — give a size in bytes, e.g. 24 * 2**30")
        return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise InputError(f"budget {value!r} is not a size — write a number and a unit, e.g. 24GiB or 80GB")
    if not unit and float(match.group(1)) < 2**20:  # `--budget 24`: meant in GiB, read as bytes it fits nothing
        number = match.group(1)
        raise InputError(
            f"budget {value!r} has no unit, and {number} bytes fit no training step — write {number}GiB "
            f"(or {number}B if you mean bytes)"
        )
    return int(float(match.group(1)) * _UNITS[unit])


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`memory_plan` found, in bytes.  ``print(plan)`` shows the table.

    Attributes
    ----------
    model_name : str
        Class name of the model.
    input_shapes : Mapping[str, tuple[int, ...]]
        Input shape per ``forward`` argument, batch included.
    batch : int
        The batch size planned.
    optimizer : str
        The optimizer whose state is counted.
    amp : str or None
        The autocast dtype (``"bfloat16"``, ``"float16"``) the step's products ran in, or None: ``amp``'s, or
        that of a ``torch.autocast`` in or around the model's forward (accelerate's ``prepare``), which
        ``amp_note`` then explains.
    device : str
        Whose kernels the step was planned for: ``"cuda"`` or ``"cpu"``.
    weights : int
        Parameter bytes (in ``dtype`` when given).
    buffers : int
        Buffer bytes (BatchNorm statistics, rotary tables).
    gradients : int
        One ``.grad`` per trainable parameter the backward reaches.
    optimizer_state : int
        The optimizer's state tensors after its first step.
    activations : int
        Bytes autograd keeps for backward in one training-mode forward, still
        held when it returns: each storage once, parameters and buffers excluded.
    transient : int
        The most memory in use at one moment of the forward and backward
        beyond the saved activations and the gradients (op outputs not
        saved, gradients of activations, amp's casts, the batch itself when
        nothing saves it).
    step_transient : int
        Temporaries of the optimizer step, when activations are already freed,
        in the implementation torch picks on ``device`` unless the optimizer
        says (``foreach``): ``foreach`` on a GPU, one parameter at a time on a CPU.
    workspace : int
        cuBLAS workspaces a GPU step holds (``device="cuda"``): torch gives
        each thread that runs a matrix product a 32 MiB workspace on Hopper
        GPUs (8 MiB before), from the same allocator: the forward's and
        autograd's, 64 MiB in all (measured on an H200).  0 for ``"cpu"``.
    ddp_buckets : int
        The gradient buckets ``DistributedDataParallel`` all-reduces (a model
        given wrapped in DDP): with ``gradient_as_bucket_view=False``, its
        default, one more copy of the trainable parameters' gradients (made
        when DDP wraps the model); with ``True`` the ``.grad`` are views of
        them and only the buckets of parameters that get no gradient count.
    peak : int
        ``weights + buffers + gradients + ddp_buckets + optimizer_state + workspace
        + max(activations + transient, step_transient)``.
    inference_peak : int or None
        ``weights + buffers`` + the most memory in use at one moment of a
        ``no_grad`` forward in eval mode (same ``amp``) + one thread's
        cuBLAS workspace (``device="cuda"``); None when that forward cannot
        run on fake tensors (``inference_unknown`` says why), while the
        training step can.
    inference_unknown : str
        Why ``inference_peak`` is None; empty otherwise.
    peak_at : str
        Where the largest transient happens: the module in forward, the op in backward.
    layers : tuple[LayerMemory, ...]
        Per module that ran operations itself, in forward order.
    trainable, frozen : int
        Parameters with and without ``requires_grad``.
    uncounted : tuple[str, ...]
        Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) saving for backward in the step, in ``train()`` or
        ``eval()``, whose kernels also save a workspace
        (oneDNN's on a CPU, cuDNN's reserve space on a GPU) that a simulated step cannot see: when not empty,
        ``activations`` and ``peak`` are lower bounds (the notes say so).
    amp_note : str
        When the products did not all run in ``amp``'s autocast: in which dtypes they ran, and why.
    sparse : tuple[str, ...]
        Trainable ``nn.Embedding`` / ``nn.EmbeddingBag`` layers with ``sparse=True``: their gradients are planned
        sparse, as torch makes them (a row and an index per lookup), and so is SGD's momentum after the first step
        (it grows by about a gradient each step); Adam and AdamW, which refuse sparse gradients, are planned with
        ``torch.optim.SparseAdam``'s dense state for them (the notes say so).
    """

    model_name: str
    input_shapes: Mapping[str, tuple[int, ...]]
    batch: int
    optimizer: str
    amp: str | None
    device: str
    weights: int
    buffers: int
    gradients: int
    optimizer_state: int
    activations: int
    transient: int
    step_transient: int
    inference_peak: int | None
    peak_at: str
    layers: tuple[LayerMemory, ...]
    trainable: int
    frozen: int
    dtype: str | None = None
    workspace: int = 0
    uncounted: tuple[str, ...] = ()
    inference_unknown: str = ""
    ddp_buckets: int = 0
    sparse: tuple[str, ...] = ()
    amp_note: str = ""
    _replan: Callable[[int], int] | None = field(default=None, repr=False, compare=False)
    _sparse_state: str = field(default="", repr=False, compare=False)  # the optimizer's state from sparse gradients

    @property
    def peak(self) -> int:
        """``weights + buffers + gradients + ddp_buckets + optimizer_state + workspace``
        + ``max(activations + transient, step_transient)``."""
        return (
            self.weights
            + self.buffers
            + self.gradients
            + self.ddp_buckets
            + self.optimizer_state
            + self.workspace
            + max(self.activations + self.transient, self.step_transient)
        )

    def layer(self, name: str) -> LayerMemory:
        """The row of the module called ``name``.

        Raises
        ------
        KeyError
            With the closest names when no module of that name saved or ran anything.
        """
        for row in self.layers:
            if row.name == name:
                return row
        said = no_such_name(name, [row.name for row in self.layers])
        raise KeyError(f"no layer {name!r} in the memory plan of {self.model_name} — {said}")

    @in_plain_torch
    def max_batch(self, budget: int | str) -> int:
        """The largest batch whose :attr:`peak` fits in ``budget`` (0 when not even batch 1 fits; a model that
        cannot train at batch 1, a BatchNorm over one value per channel, is searched from batch 2).

        Activations grow about linearly with the batch: two simulated steps
        give the line, then the answer ``b`` is checked with simulated steps
        at ``b`` (fits) and ``b + 1`` (does not).  Weights, buffers,
        gradients, the optimizer state and its step do not depend on the batch.

        Parameters
        ----------
        budget : int or str
            Bytes, or a size such as ``"24GiB"`` (:func:`parse_bytes`).

        Raises
        ------
        InputError
            For a budget that is not a size.
        MemoryPlanError
            When the plan cannot be recomputed (built by hand) or the batch
            exceeds 2**31 (the peak does not grow with the batch).

        Examples
        --------
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))
        >>> plan = memory_plan(net, (100,), batch=8, optimizer="sgd")
        >>> plan.weights + plan.gradients, (plan.activations + plan.transient) // 8
        (177680, 2880)
        >>> plan.max_batch("65MiB")  # (1 MiB - 177,680) // 2,880 samples beside 64 MiB of cuBLAS workspaces
        302
        """
        limit = parse_bytes(budget)
        replan = self._replan
        if replan is None:
            raise MemoryPlanError(f"this plan of {self.model_name} was not made by memory_plan — it cannot replan")
        room = limit - (self.peak - max(self.activations + self.transient, self.step_transient))
        if room < self.step_transient:
            return 0
        acts: dict[int, int] = {self.batch: self.activations + self.transient}  # batch -> activations + transient
        refused: set[int] = set()  # batches a real step cannot take (BatchNorm over one value per channel at 1)

        def fits(b: int) -> bool:
            if b in refused:
                return False
            if b not in acts:
                if len(acts) >= _MAX_PLANS:
                    raise MemoryPlanError(f"max_batch({budget!r}) did not converge in {_MAX_PLANS} simulated steps")
                try:
                    acts[b] = replan(b)
                except MemoryPlanError:
                    if b >= self.batch:  # the plan's own batch runs: a larger one failing is news
                        raise
                    refused.add(b)
                    return False
            return acts[b] <= room

        first = 1
        if not fits(1):
            if 1 not in refused or not fits(2):  # a model that trains from batch 2: the search starts there
                return 0
            first = 2
        fits(first + 1)
        for rounds in itertools.count():
            lo = max(b for b, a in acts.items() if a <= room)
            hi = min((b for b, a in acts.items() if a > room and b > lo), default=None)
            if hi is not None and hi - lo == 1:
                return lo
            if hi is None:  # extrapolate the line through the first batch and the largest that fits (> first)
                slope = (acts[lo] - acts[first]) / (lo - first)
                if slope <= 0:
                    raise MemoryPlanError(
                        f"the activations of {self.model_name} do not grow with the batch — "
                        f"max_batch({budget!r}) has no answer"
                    )
                guess = max(lo, lo + int((room - acts[lo]) // slope))
                if guess > 2**31:
                    raise MemoryPlanError(
                        f"max_batch({budget!r}): more than 2**31 samples of {self.model_name} fit in the budget"
                    )
            elif rounds < 6:  # interpolate between the batch that fits and the one that does not
                guess = lo + int((room - acts[lo]) * (hi - lo) // max(acts[hi] - acts[lo], 1))
                guess = min(max(guess, lo), hi - 1)
            else:
                guess = (lo + hi) // 2
            for b in (guess, guess + 1):  # the answer and the next batch
                if b > lo and (hi is None or b < hi) and not fits(b):
                    break
        raise AssertionError("unreachable")  # pragma: no cover

    def totals(self) -> list[tuple[str, str]]:
        """The totals printed under the table, as (label, value) pairs."""
        inputs = ", ".join(f"{k} {format_shape(v)}" for k, v in self.input_shapes.items())
        what_if = f", weights in {self.dtype}" if self.dtype else ""
        rows = [
            ("Input", inputs),
            ("Step", f"{self.optimizer}, amp {self.amp or 'off'}{what_if}, {self.device.upper()} kernels"),
            ("Trainable params", f"{format_count(self.trainable)} (frozen {format_count(self.frozen)})"),
            ("Weights", format_bytes(self.weights)),
            ("Buffers", format_bytes(self.buffers)),
            ("Gradients", format_bytes(self.gradients)),
            *([("DDP gradient buckets", format_bytes(self.ddp_buckets))] if self.ddp_buckets else []),
            ("Optimizer state", format_bytes(self.optimizer_state)),
            ("Activations (saved)", format_bytes(self.activations)),
            ("Largest transient", f"{format_bytes(self.transient)} ({self.peak_at})"),
            ("Optimizer step temporaries", format_bytes(self.step_transient)),
            *([("cuBLAS workspaces", format_bytes(self.workspace))] if self.workspace else []),
            ("Peak (training step)", format_bytes(self.peak)),
            (
                "Peak (inference)",
                format_bytes(self.inference_peak) if self.inference_peak is not None else "not known (see the notes)",
            ),
        ]
        return rows

    def notes(self) -> list[str]:
        """The formula and what the numbers assume."""
        rnn: list[str] = [f"Peak (inference) not known: {self.inference_unknown}"] if self.inference_unknown else []
        rnn += [self.amp_note] if self.amp_note else []
        if self.uncounted:
            kernel = "oneDNN's workspace" if self.device == "cpu" else "cuDNN's reserve space"
            shown = format_names(self.uncounted)
            rnn += [f"Not counted: {kernel} of the recurrent layers ({shown}): activations and peak are lower bounds"]
        if self.sparse:
            state = f"; {self._sparse_state}" if self._sparse_state else ""
            rnn += [
                f"Sparse gradients of {format_names(self.sparse)} (sparse=True): one row and index per lookup, "
                f"uncoalesced, as torch makes them{state}"
            ]
        ddp = " + DDP gradient buckets" if self.ddp_buckets else ""
        if self.ddp_buckets:
            rnn += [
                "DistributedDataParallel keeps gradient buckets for its all-reduce beside the .grad "
                "(gradient_as_bucket_view=True makes the .grad views of them)"
            ]
        if self.device == "cpu":
            return [
                f"Peak = weights + buffers + gradients{ddp} + optimizer state"
                " + max(activations + transient, step temporaries)",
                "Simulated on fake CPU tensors: what CPU kernels and CPU autocast save",
                *rnn,
            ]
        return [
            f"Peak = weights + buffers + gradients{ddp} + optimizer state + cuBLAS workspaces"
            " + max(activations + transient, step temporaries)",
            "Simulated on fake CPU tensors with CUDA's dropout, attention and autocast (docs/memory.md)",
            "Not counted: the CUDA context (0.3-0.5 GiB, outside torch.cuda.max_memory_allocated), allocator rounding",
            *rnn,
        ]

    def __str__(self) -> str:
        return memory_table(f"{self.model_name} memory plan", self.layers, self.totals(), self.notes())

    def _repr_html_(self) -> str:  # a notebook shows the plan as a table
        return memory_table(f"{self.model_name} memory plan", self.layers, self.totals(), self.notes(), "html")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: every total in bytes, and the layers."""
        return {
            "model": self.model_name,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "batch": self.batch,
            "optimizer": self.optimizer,
            "amp": self.amp,
            "device": self.device,
            "dtype": self.dtype,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "weights": self.weights,
            "buffers": self.buffers,
            "gradients": self.gradients,
            "ddp_buckets": self.ddp_buckets,
            "optimizer_state": self.optimizer_state,
            "activations": self.activations,
            "transient": self.transient,
            "step_transient": self.step_transient,
            "workspace": self.workspace,
            "peak": self.peak,
            "inference_peak": self.inference_peak,
            "peak_at": self.peak_at,
            "uncounted": list(self.uncounted),
            "sparse": list(self.sparse),
            "layers": [row.to_dict() for row in self.layers],
        }


# --------------------------------------------------------------------------- the public entry


def _nbytes(t: torch.Tensor, dtype: torch.dtype | None) -> int:
    """Bytes of ``t``, floating tensors counted in ``dtype`` when given."""
    return t.numel() * (dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size())


def _rows(model: nn.Module, step: SimulatedStep) -> tuple[LayerMemory, ...]:
    """A row per module that saved something, had a transient or is a leaf, in forward order."""
    rows, so_far = [], 0
    modules = dict(model.named_modules())
    for name, saved in step.saved.items():
        module = modules.get(name)
        leaf = module is not None and next(module.children(), None) is None
        if not (saved or step.transients.get(name) or leaf):
            continue  # a container that only called its children
        so_far += saved
        kind = type(module).__name__ if module is not None else "?"
        rows.append(LayerMemory(name or "(model)", kind, saved, so_far, step.transients.get(name, 0)))
    return tuple(rows)


def _bucketed(ddp: nn.parallel.DistributedDataParallel | None) -> list[nn.Parameter]:
    """The parameters DDP's reducer keeps gradient buckets for: those needing a gradient, each once, but the
    ones it was told to ignore (``_set_params_and_buffers_to_ignore_for_model``)."""
    if ddp is None:
        return []
    ignored = set(getattr(ddp, "parameters_to_ignore", ()))
    params: dict[int, nn.Parameter] = {}
    for prefix, module in ddp.module.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and not {f"{prefix}.{name}", f"{prefix}.{name}".lstrip(".")} & ignored:
                params.setdefault(id(p), p)
    return list(params.values())


def _amp_dtype(amp: torch.dtype | str | None) -> torch.dtype | None:
    if amp is None:
        return None
    dt = amp if isinstance(amp, torch.dtype) else _AMP.get(str(amp).lower())
    if dt not in HALF:
        raise InputError(f"amp={amp!r} — use torch.bfloat16 or torch.float16 (or 'bf16', 'fp16'), or None for fp32")
    return dt


@in_plain_torch
def memory_plan(
    model: nn.Module,
    input: InputSpec,
    *,
    batch: int = 1,
    optimizer: OptimizerKind | str | torch.optim.Optimizer = OptimizerKind.ADAMW,
    amp: torch.dtype | str | None = None,
    dtype: torch.dtype | None = None,
    device: str = "cuda",
) -> MemoryPlan:
    """The memory one training step of ``model`` will need, knowing what is frozen, without allocating it.

    A copy of the model on fake tensors runs one training-mode forward and
    one backward (module docstring); nothing is allocated and ``model`` is
    neither run nor changed.  In bytes::

        peak = weights + buffers + gradients + ddp_buckets + optimizer_state + workspace
               + max(activations + transient, step_transient)

    ``activations`` are the storages autograd saves for backward, each once,
    parameters and buffers excluded; ``transient`` the most memory in use at
    one moment of the forward and backward beyond them and the gradients;
    ``step_transient`` the optimizer step's temporaries; ``ddp_buckets`` the
    gradient buckets of a model given in ``DistributedDataParallel``; ``workspace`` the
    cuBLAS workspaces of a GPU step (64 MiB).  The formula is an upper
    bound: in a real backward, activations are freed while gradients are
    allocated.  ``inference_peak = weights + buffers`` + the most memory in
    use during a ``no_grad`` forward in eval mode (+ 32 MiB of workspace).

    Parameters
    ----------
    model : nn.Module
        Any model whose forward runs on fake tensors (Python that reads
        tensor values cannot).  Models on ``meta`` work.
    input : shape, tensor, tuple of shapes, or mapping
        Per-sample shape(s), batch excluded, as in
        :func:`torchsurgeon.paramcount`: ``(3, 224, 224)``,
        ``{"input_ids": (4096,)}`` (token ids where paramcount reads them so).  A
        tensor gives its dtype and its shape but for the first dimension.
    batch : int
        The batch size.
    optimizer : str or torch.optim.Optimizer
        ``"sgd"``, ``"sgd-momentum"`` (0.9), ``"adam"``, ``"adamw"``
        (:class:`~torchsurgeon.records.OptimizerKind`), or an SGD, Adam or
        AdamW instance (its options; parameters it does not hold get no state).
    amp : torch.dtype or str, optional
        ``torch.bfloat16`` / ``torch.float16`` (``"bf16"``, ``"fp16"``): the
        forward runs under ``torch.autocast("cpu", amp)``, each op in the
        dtype autocast gives it, the casted weight copies included.
    dtype : torch.dtype, optional
        What if the floating weights (and so gradients and optimizer state)
        were stored in this dtype.
    device : {"cuda", "cpu"}
        Where the step will run, whose kernels decide what is saved.
        ``"cuda"``: dropout keeps a 1-byte mask and
        ``scaled_dot_product_attention`` runs a fused kernel (output and a
        log-sum-exp saved, no attention matrix), as on a GPU; ``"cpu"``: the
        CPU's kernels (a float dropout mask; attention with dropout takes
        the math path).  The rest is the same on both.

    Returns
    -------
    MemoryPlan
        ``weights``, ``gradients``, ``optimizer_state``, ``activations``,
        ``peak``, ``inference_peak``, ``layers``, ``max_batch(budget)``;
        ``print()`` it for a table.

    Raises
    ------
    InputError
        For a malformed input, batch, optimizer, amp, dtype or device.
    MemoryPlanError
        When the forward or backward cannot run on fake tensors (the
        message names the module).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))
    >>> plan = memory_plan(net, (100,), batch=8, optimizer="adam")
    >>> plan.weights, plan.gradients, plan.optimizer_state  # 22,210 fp32 parameters; Adam: 2 x 4 bytes + 4 steps
    (88840, 88840, 177696)
    >>> plan.activations  # the input and the ReLU's output (the second Linear's input)
    9600
    >>> _ = net[0].requires_grad_(False)  # frozen first layer: its input is not saved, nor its gradients kept
    >>> plan = memory_plan(net, (100,), batch=8, optimizer="adam")
    >>> plan.gradients, plan.activations
    (8040, 6400)
    """
    ddp = distributed_wrapper(model)
    model = unwrap_model(model)
    if lazy_layers(model):  # their parameters are made by the first forward: on a copy, at this input
        model = materialized(model, input, batch)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype={dtype!r} — give a floating dtype such as torch.bfloat16, or None")
    if device not in ("cuda", "cpu"):
        raise InputError(f"device={device!r} — plan for 'cuda' (a GPU's kernels) or 'cpu'")
    amp_dtype = _amp_dtype(amp)
    inputs = step_inputs(model, input, batch)
    paths = input_paths(model, tensor_inputs(input))  # a dict's tensors, *args' entries: regrouped for the forward
    unique = list(model.parameters())
    weights = sum(_nbytes(p, dtype) for p in unique)
    buffers = sum(_nbytes(b, dtype) for b in model.buffers())
    try:
        train = simulate_step(model, inputs, train=True, amp=amp_dtype, dtype=dtype, device=device, paths=paths)
    except MemoryPlanError as exc:  # an input paramcount refuses (its rank): paramcount's ShapeError, the same answer
        raise refusal(model, input, batch) or exc from exc.__cause__
    check_inputs_read(model, input, train.unread)  # a name forward's **kwargs took and never read: refused
    try:
        infer: SimulatedStep | None = simulate_step(
            model, inputs, train=False, amp=amp_dtype, dtype=dtype, device=device, paths=paths
        )
        why_not = ""
    except MemoryPlanError as exc:  # an eval-mode path that reads values (YOLO's Detect makes its anchors there)
        infer, why_not = None, str(exc).replace("the forward of a fake-tensor copy", "its eval-mode forward", 1)
    with_grad = [(p, _nbytes(p, dtype)) for p, got in zip(unique, train.got_grad) if got]
    sparse = {
        id(m.weight): name
        for name, m in model.named_modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse and m.weight.requires_grad
    }
    sparse_grads = {id(unique[i]): (sparse.get(id(unique[i]), "?"), b) for i, b in train.sparse_gradients.items()}
    name, state, step_transient, sparse_state = optimizer_bytes(optimizer, with_grad, device, sparse_grads)

    def replan(b: int) -> int:
        again = {k: ((b, *shape[1:]), dt) for k, (shape, dt) in inputs.items()}
        step = simulate_step(model, again, train=True, amp=amp_dtype, dtype=dtype, device=device, paths=paths)
        return step.activations + step.transient

    trainable = sum(p.numel() for p in unique if p.requires_grad)
    got = {id(p) for p, _ in with_grad}
    ddp_buckets = sum(
        _nbytes(p, dtype)
        for p in _bucketed(ddp)
        if not (ddp is not None and getattr(ddp, "gradient_as_bucket_view", False) and id(p) in got)
    )
    workspace = 2 * CUBLAS_WORKSPACE if device == "cuda" else 0  # the forward's thread and autograd's
    amp_label, amp_note = step_precision(amp_dtype, train.products)  # amp's autocast, or the model's own
    return MemoryPlan(
        model_name=type(model).__name__,
        input_shapes={k: s for k, (s, _) in inputs.items()},
        batch=batch,
        optimizer=name,
        amp=amp_label,
        amp_note=amp_note,
        device=device,
        dtype=str(dtype).removeprefix("torch.") if dtype is not None else None,
        weights=weights,
        buffers=buffers,
        gradients=train.gradients,
        optimizer_state=state,
        activations=train.activations,
        transient=train.transient,
        step_transient=step_transient,
        inference_peak=weights + buffers + infer.in_use_peak + workspace // 2 if infer is not None else None,
        inference_unknown=why_not,
        workspace=workspace,
        peak_at=train.peak_at,
        layers=_rows(model, train),
        trainable=trainable,
        frozen=sum(p.numel() for p in unique) - trainable,
        uncounted=tuple(n for n, m in model.named_modules() if isinstance(m, nn.RNNBase) and train.saved.get(n)),
        ddp_buckets=ddp_buckets,
        sparse=tuple(sparse.values()),
        _sparse_state=sparse_state,
        _replan=replan,
    )
