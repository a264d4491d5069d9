"""Models shared by several tests."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class CifarNet(nn.Module):
    """The CNN of the PyTorch CIFAR-10 tutorial (conv 3→6→16, fc 400→120→84→10)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class TiedLM(nn.Module):
    """A tiny language model whose output layer shares the embedding weight."""

    def __init__(self, vocab: int = 50, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)))


class DataDependent(nn.Module):
    """Python control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return x


class Gate(nn.Module):
    """A submodule with data-dependent control flow."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return self.proj(x)
        return -self.proj(x)


class WithGate(nn.Module):
    """Traceable except for one submodule (``gate``)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.gate = Gate(8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.gate(self.inp(x)))


class TwoInputs(nn.Module):
    """Image and mask inputs, fused by concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Conv2d(3, 8, 3, padding=1)
        self.mask = nn.Conv2d(1, 8, 3, padding=1)
        self.fuse = nn.Conv2d(16, 4, 1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.image(image), self.mask(mask)], dim=1))


@contextlib.contextmanager
def parameters_on_meta(buffers: bool = True) -> Iterator[None]:
    """Create every parameter (and buffer, unless ``buffers=False``) on ``meta`` while the block runs.

    Unlike ``with torch.device("meta")`` it leaves ordinary tensor maths on the
    CPU, so builders that compute layer widths with tensors (regnet) work.
    """
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def _param(self: nn.Module, name: str, param: Any) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def _buffer(self: nn.Module, name: str, tensor: Any, persistent: bool = True) -> None:
        if tensor is not None and buffers:
            tensor = tensor.to("meta")
        register_buffer(self, name, tensor, persistent)

    nn.Module.register_parameter = _param  # type: ignore[method-assign]
    nn.Module.register_buffer = _buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def on_meta(builder: Callable[..., nn.Module], *, buffers: bool = True, **kwargs: Any) -> nn.Module:
    """Build a model with its weights (and buffers, unless ``buffers=False``) on ``meta``: no memory, no init cost."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with parameters_on_meta(buffers):
            return builder(**kwargs)


def natural_size(name: str) -> int:
    """The input resolution a torchvision classification model is built for."""
    return {"inception_v3": 299}.get(name, 224)


def materialize(model: nn.Module, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """Give a model built with ``on_meta(..., buffers=False)`` real random weights, fast.

    No scipy inits; scaled to keep activations O(1).

    Weights ~ N(0, 1/fan_in); 1-D parameters ~ 1 + 0.1·N(0, 1) for norms' weights, 0.1·N(0, 1) for biases;
    BatchNorm running statistics mean ~ 0.1·N(0, 1), var ~ U(0.5, 1.5).  Returns the model in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for key, p in module._parameters.items():
            if p is not None and p.device.type == "meta":
                module._parameters[key] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
        for key, b in module._buffers.items():
            if b is not None and b.device.type == "meta":
                module._buffers[key] = torch.zeros(b.shape, dtype=b.dtype)
    model = model.to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) / fan_in**0.5)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=dtype))
            else:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=dtype))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen, dtype=b.dtype))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen, dtype=b.dtype))
            elif name.endswith("num_batches_tracked"):
                b.zero_()
    return model.eval()
