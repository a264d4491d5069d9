"""Models shared by several tests."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


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


class HandWrittenConv(nn.Module):
    """A convolution written by hand: ``F.conv2d(x, self.weight * self.g)``, no conv module."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))
        self.g = nn.Parameter(torch.ones(8, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.g)


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


class TextTimeConditioned(nn.Module):
    """diffusers' SDXL UNet2DConditionModel (``addition_embed_type="text_time"``) in small: ``forward`` takes
    ``added_cond_kwargs={"text_embeds": ..., "time_ids": ...}``, a dict for one argument, checks its keys, reads
    it with ``.get`` and loops over the sample's size, as the real one does."""

    def __init__(self, text: int = 16, times: int = 6, context: int = 32, width: int = 16) -> None:
        super().__init__()
        self.times = times
        self.conv_in = nn.Conv2d(4, width, 3, padding=1)
        self.time_embedding = nn.Linear(8, width)
        self.add_embedding = nn.Linear(text + times * 8, width)
        self.context = nn.Linear(context, width)
        self.conv_out = nn.Conv2d(width, 4, 3, padding=1)

    @staticmethod
    def _sinusoids(t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10000.0) * torch.arange(4, device=t.device) / 4)
        angles = t[:, None].float() * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], -1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        odd_size = False
        for dim in sample.shape[-2:]:
            if dim % 4 != 0:
                odd_size = True
        if added_cond_kwargs is None or "text_embeds" not in added_cond_kwargs:
            raise ValueError("addition_embed_type 'text_time' requires text_embeds in added_cond_kwargs")
        text_embeds = added_cond_kwargs.get("text_embeds")
        time_ids = added_cond_kwargs["time_ids"]
        time_embeds = self._sinusoids(time_ids.flatten()).reshape(text_embeds.shape[0], -1)
        emb = self.time_embedding(self._sinusoids(timestep)) + self.add_embedding(
            torch.cat([text_embeds, time_embeds], -1)
        )
        h = self.conv_in(sample) + emb[:, :, None, None]
        h = h + self.context(encoder_hidden_states).mean(1)[:, :, None, None]
        out = self.conv_out(F.silu(h))
        return F.interpolate(out, size=sample.shape[-2:]) if odd_size else out


class TiledResidualStem(nn.Module):
    """MONAI VNet's InputTransition: the input, tiled to the stem's width (a count read from ``in_channels``), is
    added to the stem's output, which the next layers read."""

    def __init__(self, in_channels: int = 2) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv, self.bn, self.down = (
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 4, 2, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.conv(x)) + x.repeat(1, 8 // self.in_channels, 1, 1))
        return self.down(out)


class TwoInputs(nn.Module):
    """Image and mask inputs, fused by concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Conv2d(3, 8, 3, padding=1)
        self.mask = nn.Conv2d(1, 8, 3, padding=1)
        self.fuse = nn.Conv2d(16, 4, 1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.image(image), self.mask(mask)], dim=1))


class StopGradientTarget(nn.Module):
    """A trainable branch used only as a detached target (BYOL-style): what it saves is freed in the forward."""

    def __init__(self, dim: int = 256, hidden: int = 1024) -> None:
        super().__init__()
        self.online = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.target = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.online(x) - self.target(x).detach()


@contextlib.contextmanager
def parameters_on_meta(buffers: bool = True) -> Iterator[None]:
    """Create every parameter (and buffer, unless ``buffers=False``) on ``meta`` while the block runs.

    Unlike ``with torch.device("meta")`` it leaves ordinary tensor maths on the
    CPU, so builders that compute layer widths with tensors (regnet) work.  ``torch.nn.init``'s functions leave
    a ``meta`` tensor as it is: meta's ``normal_`` and ``uniform_`` are Python decompositions, 2 ms each, a tenth
    of the time of the zoo's fold tests (there are no values to initialise).
    """
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer
    inits = {k: f for k, f in vars(nn.init).items() if k.endswith("_") and not k.startswith("_") and callable(f)}

    def _param(self: nn.Module, name: str, param: Any) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def _buffer(self: nn.Module, name: str, tensor: Any, persistent: bool = True) -> None:
        if tensor is not None and buffers:
            tensor = tensor.to("meta")
        register_buffer(self, name, tensor, persistent)

    def _skipped(init: Callable[..., Any]) -> Callable[..., Any]:
        return lambda tensor, *a, **k: tensor if tensor.is_meta else init(tensor, *a, **k)

    nn.Module.register_parameter = _param  # type: ignore[method-assign]
    nn.Module.register_buffer = _buffer  # type: ignore[method-assign]
    for name, init in inits.items():
        setattr(nn.init, name, _skipped(init))
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]
        for name, init in inits.items():
            setattr(nn.init, name, init)


LARGEST_TORCHVISION = (
    "convnext_large", "efficientnet_v2_l", "regnet_x_32gf", "regnet_y_128gf", "regnet_y_32gf", "vgg11", "vgg11_bn",
    "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_h_14", "vit_l_16", "vit_l_32",
    "wide_resnet101_2",
)  # fmt: skip
"""torchvision's classification models over 100 M parameters: materialised in float32 (tests/test_surgery_zoo.py) they
take 0.5-1.2 GiB each (the two largest, lean, less); tests/conftest.py runs them in one pytest-xdist worker, one after
another."""


def on_meta(builder: Callable[..., nn.Module], *, buffers: bool = True, **kwargs: Any) -> nn.Module:
    """Build a model with its weights (and buffers, unless ``buffers=False``) on ``meta``: no memory, no init cost."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with parameters_on_meta(buffers):
            return builder(**kwargs)


def natural_size(name: str) -> int:
    """The input resolution a torchvision classification model is built for."""
    return {"inception_v3": 299}.get(name, 224)


def materialize(
    model: nn.Module, dtype: torch.dtype = torch.float32, seed: int = 0, *, lean_above: int | None = None
) -> nn.Module:
    """Give a model built with ``on_meta(..., buffers=False)`` real random weights, fast.

    No scipy inits; scaled to keep activations O(1).

    Weights ~ N(0, 1/fan_in); 1-D parameters ~ 1 + 0.1·N(0, 1) for norms' weights, 0.1·N(0, 1) for biases;
    BatchNorm running statistics mean ~ 0.1·N(0, 1), var ~ U(0.5, 1.5).  Returns the model in eval mode.

    The weights' normals are windows, each at a random start, of one pool of ``_POOL`` normals drawn per call
    (cycled through by a weight larger than it), made in ``dtype`` where they stay: drawing each of a zoo's
    5.6 billion weights took 9 ns in float32 and 35 ns in float64, plus a copy, most of
    tests/test_surgery_zoo.py's time on its largest models (8 s of regnet_y_128gf's 17 s); a window costs a
    multiplication.  Each weight's values are still distinct normals (the pool is larger than any stem's).

    ``lean_above``: a weight of more elements is a view of its own ``rows + row length - 1`` normals, row ``o`` of
    it the normals from the ``o``-th on (a Hankel layout: ``w[o].flatten()[j] = normals[o + j]``; stride 1 along
    the first axis), so that a model of 600 M parameters takes megabytes instead of 2.4 GiB.  Its rows are still
    distinct (generically independent); layers compute on it as on any weight (a convolution copies it while it
    runs).  The smaller weights, the input layer's among them, are laid out as usual.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for key, p in module._parameters.items():
            if p is not None and p.device.type == "meta":
                kind = dtype if p.is_floating_point() else p.dtype  # made in dtype: no float32 copy to convert
                if lean_above is not None and p.dim() >= 2 and p.numel() > lean_above:
                    row = torch.empty(p.shape[1:], device="meta").stride()
                    made = torch.empty(p.shape[0] + p[0].numel() - 1, dtype=kind).as_strided(p.shape, (1, *row))
                else:
                    made = torch.empty(p.shape, dtype=kind)
                module._parameters[key] = nn.Parameter(made, p.requires_grad)
        for key, b in module._buffers.items():
            if b is not None and b.device.type == "meta":
                module._buffers[key] = torch.zeros(b.shape, dtype=b.dtype)
    model = model.to(dtype)
    pool = torch.randn(_POOL, generator=gen).to(dtype)  # float32 normals: 4x cheaper to draw than float64's
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                _window_of(pool, p, 1 / max(1, p[0].numel()) ** 0.5, gen)
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


_POOL = 1 << 22  # normals materialize draws per call (16 MiB in float32)


def _window_of(pool: torch.Tensor, weight: torch.Tensor, scale: float, gen: torch.Generator) -> None:
    """Fill ``weight`` (contiguous) with ``scale`` times the pool's values from a random start on, cycling."""
    if weight.is_contiguous():
        flat = weight.view(-1)
    else:  # a lean weight (materialize's lean_above): its own normals
        flat = weight.as_strided((weight.shape[0] + weight[0].numel() - 1,), (1,))
    start, done = int(torch.randint(len(pool), (1,), generator=gen)), 0
    while done < len(flat):
        n = min(len(flat) - done, len(pool) - start)
        torch.mul(pool[start : start + n], scale, out=flat[done : done + n])
        start, done = 0, done + n


class LlamaAttention(nn.Module):
    """Causal self-attention with rotary position embeddings (LLaMA), no biases."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    @staticmethod
    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape[0], x.shape[1], x.shape[2]  # indexing, not unpacking: torch.fx can trace it
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        q = q * cos + self.rotate_half(q) * sin
        k = k * cos + self.rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).contiguous().view(b, s, d))


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(dim, eps=1e-6)
        self.self_attn = LlamaAttention(dim, heads)
        self.post_attention_layernorm = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = LlamaMLP(dim, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaDecoder(nn.Module):
    """A LLaMA-style decoder-only language model; input: token ids (batch, seq), torch.long.

    The defaults are LLaMA-7B: 32 layers, hidden 4096, 32 heads, SwiGLU 11008,
    vocabulary 32000, untied head: 6,738,415,616 parameters.  Build it under
    ``with torch.device("meta"):`` to analyse it without allocating weights.
    """

    def __init__(
        self,
        vocab: int = 32000,
        dim: int = 4096,
        layers: int = 32,
        heads: int = 32,
        hidden: int = 11008,
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(LlamaBlock(dim, heads, hidden) for _ in range(layers))
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        head_dim = dim // heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        positions = torch.arange(ids.shape[1], device=ids.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()  # rotary embeddings, computed once for every layer
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def llama_7b_on_meta(**kwargs: Any) -> LlamaDecoder:
    """The 7B LLaMA-style decoder with every weight on ``meta`` (nothing allocated)."""
    with torch.device("meta"):
        return LlamaDecoder(**kwargs)


def cifarnet_seeded() -> nn.Module:
    """The tutorial net with seed-0 weights: the 'pretrained' model of CLI tests."""
    torch.manual_seed(0)
    return CifarNet()


def cifarnet_grey_by_hand() -> nn.Module:
    """``cifarnet_seeded`` with conv1 rebuilt by hand for 1 channel and a 2-class layer appended."""
    model = cifarnet_seeded()
    model.conv1 = nn.Conv2d(1, 6, 5)
    model.fc3 = nn.Sequential(model.fc3, nn.Linear(10, 2))
    return model


def grey_classifier(classes: int) -> nn.Sequential:
    """Conv on 1 channel, global pooling, flatten, Linear: output ``(1, classes)`` for any ``(1, H, W)`` input."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


def tensor_shapes(value: Any) -> Any:
    """The shapes of the tensors in a model output, nested as the output is (dicts, tuples, lists)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, dict):
        return {k: tensor_shapes(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(tensor_shapes(v) for v in value)
    return None


class ByteView(nn.Module):
    """Its input's bytes: the output's last dimension is the input's times its dtype's size (shows the dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(torch.uint8)


def downloads_weights() -> nn.Module:
    """A builder that fetches its weights from the network, as ``pretrained=True`` builders do."""
    import urllib.request

    urllib.request.urlopen("https://download.example.com/weights.pth", timeout=30)
    return nn.Linear(2, 2)


def resnet18_10_classes() -> nn.Module:
    """torchvision's resnet18 built after ``torch.manual_seed(0)`` (as ``torchvision:resnet18`` is), 10 classes."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    model.fc = nn.Linear(512, 10)
    return model


# --------------------------------------------------------------------------- memory plans (tests/test_memory.py, bench)


def resnet18_frozen_stem() -> nn.Module:
    """torchvision's resnet18 with its stem, layer1 and layer2 frozen (``requires_grad=False``)."""
    model = torchvision_models().resnet18()
    for name, p in model.named_parameters():
        if name.startswith(("conv1.", "bn1.", "layer1.", "layer2.")):
            p.requires_grad_(False)
    return model


def torchvision_models() -> Any:
    """``torchvision.models``, imported when a test needs it."""
    import torchvision

    return torchvision.models


def _vit_tiny() -> nn.Module:
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)


MEMORY_SIZE = (3, 64, 64)
MEMORY_BATCH = 2
# name -> (builder, autocast dtype): a frozen stem, a ViT, in-place activations, bf16 CPU autocast, train-mode dropout
MEMORY_MODELS: dict[str, tuple[Callable[[], nn.Module], torch.dtype | None]] = {
    "resnet18": (lambda: torchvision_models().resnet18(), None),
    "resnet18 stem+layer1-2 frozen": (resnet18_frozen_stem, None),
    "mobilenet_v3_small (in-place, dropout)": (lambda: torchvision_models().mobilenet_v3_small(), None),
    "vit_tiny (timm)": (_vit_tiny, None),
    "resnet18 bf16 autocast": (lambda: torchvision_models().resnet18(), torch.bfloat16),
    "squeezenet1_0 (dropout, in-place)": (lambda: torchvision_models().squeezenet1_0(), None),
    "efficientnet_b0 (dropout, stochastic depth)": (lambda: torchvision_models().efficientnet_b0(), None),
    "vit_tiny bf16 autocast": (_vit_tiny, torch.bfloat16),
}


@dataclasses.dataclass(frozen=True)
class MeasuredStep:
    """What one real CPU training step kept: bytes saved for backward, gradient bytes."""

    saved: int
    gradients: int


def measure_training_step(
    model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...] | dict[str, Any], amp: torch.dtype | None = None
) -> MeasuredStep:
    """One real forward and backward on the CPU in training mode, measured without torchsurgeon (``x``: the
    input, the inputs in order, or the inputs by argument name).

    Saved bytes: the tensors autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``) that are
    still alive when the forward returns, each storage once, parameters and buffers excluded: a tensor saved by a
    branch whose result the forward drops (used only ``.detach()``-ed) is freed with that branch, before backward.
    Gradients: the bytes of the storages the ``.grad`` hold after backward, each once (then cleared): a ``.grad``
    that autograd made as a slice of a larger gradient (EVA's q and v biases, cut from the qkv bias's) holds all of it.
    """
    model.train()
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    packed: list[weakref.ref[torch.Tensor]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            t = t.detach()  # what autograd keeps: the same storage, no reference back to the output's grad_fn
            packed.append(weakref.ref(t))
        return t

    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", amp or torch.bfloat16, enabled=amp is not None):
            out = model(**x) if isinstance(x, dict) else model(*x) if isinstance(x, tuple) else model(x)
    alive = [t for t in (ref() for ref in packed) if t is not None]
    saved = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in alive}
    del alive
    outs = [t for t in _output_tensors(out) if t.requires_grad]
    torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])
    grads = {
        p.grad.untyped_storage().data_ptr() if not p.grad.is_sparse else id(p): _held_bytes(p.grad)
        for p in model.parameters()
        if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    return MeasuredStep(sum(saved.values()), sum(grads.values()))


@dataclasses.dataclass(frozen=True)
class AllocatedStep:
    """What torch's CPU allocator had given out during one real training step, beyond what existed before it."""

    at_forward_end: int
    """Bytes still allocated when the forward returned: what it keeps for backward, the outputs, the batch."""
    peak: int
    """The most bytes allocated at once, forward and backward."""
    peak_in: str
    """``"forward"`` or ``"backward"``: where that was."""


_FORWARD_END = 7_777_777  # an allocation of this many bytes marks the end of the forward in the allocator's events


def measure_allocated(model: nn.Module, x: torch.Tensor) -> AllocatedStep:
    """One real forward and backward on the CPU in training mode (gradients of ones from the outputs), measured by
    torch's own CPU allocator (the profiler's allocation events, ``profile_memory=True``), not by what autograd
    says it saves: what a checkpoint keeps (its inputs, its random-number state) and what it computes again in
    the backward are allocations like any other."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    model.train()
    torch.manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        batch = x.clone()
        outs = [t for t in _output_tensors(model(batch)) if t.requires_grad]
        del batch
        torch.empty(_FORWARD_END, dtype=torch.uint8)
        torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])
        del outs
    model.zero_grad(set_to_none=True)

    def events(nodes: Any) -> Iterator[Any]:
        for node in nodes:
            yield node
            yield from events(node.children)

    allocations = [
        n for n in events(prof.profiler.kineto_results.experimental_event_tree()) if n.tag == _EventType.Allocation
    ]
    now, mine, curve = 0, set(), []  # the bytes allocated in the step and not yet freed, after each event
    for node in sorted(allocations, key=lambda n: n.start_time_ns):
        size, ptr = node.extra_fields.alloc_size, node.extra_fields.ptr
        if size < 0 and ptr not in mine:
            continue  # allocated before the step (the counter's own total runs across profiles)
        (mine.add if size > 0 else mine.discard)(ptr)
        now += size
        curve.append((size, now))
    end = next(i for i, (size, _) in enumerate(curve) if size == _FORWARD_END)
    forward = max(now for _, now in curve[:end])
    backward = max(now for _, now in curve[end + 2 :])
    return AllocatedStep(curve[end - 1][1], max(forward, backward), "backward" if backward > forward else "forward")


def _held_bytes(t: torch.Tensor) -> int:
    """The bytes ``t`` keeps alive: its whole storage (a view's too); a sparse tensor's indices and values."""
    if t.is_sparse:
        return t._indices().nbytes + t._values().nbytes
    return t.untyped_storage().nbytes()


class _NewStorages(TorchDispatchMode):  # type: ignore[misc]
    """The most bytes of storages made by ops, alive at once, storages in ``old`` left out."""

    def __init__(self, old: set[int]) -> None:
        super().__init__()
        self.old, self.live, self.now, self.peak = old, dict[int, int](), 0, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (list, tuple)) else [out]:
            if isinstance(t, torch.Tensor):
                key, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
                if nbytes and key not in self.old and key not in self.live:
                    self.live[key] = nbytes
                    self.now += nbytes
                    weakref.finalize(t, self._free, key)
        self.peak = max(self.peak, self.now)
        return out

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


def measure_optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> int:
    """The temporaries of a real optimizer step (its second, the state made by the first), measured without
    torchsurgeon: the most bytes of new storages alive at once, parameters, gradients and state left out."""
    model(x).sum().backward()
    optimizer.step()
    old = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None)]
    old += [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    mode = _NewStorages({t.untyped_storage().data_ptr() for t in old})
    with mode:
        optimizer.step()
    return mode.peak


def _output_tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _output_tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _output_tensors(v)


def _transformers() -> Any:
    import transformers

    return transformers


TINY_TEXT = {"vocab_size": 1000, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}
# name -> (builder, batch, per-sample input): small models whose real training step benchmarks/gpu_memory.py measured
# on a GPU (benchmarks/gpu_memory_h200.json); test_memory.py plans them with device="cuda" against those numbers
GPU_MEMORY_MODELS: dict[str, tuple[Callable[[], nn.Module], int, Any]] = {
    "tiny BERT (dropout 0.1, SDPA)": (
        lambda: _transformers().BertForSequenceClassification(_transformers().BertConfig(hidden_size=128, **TINY_TEXT)),
        8,
        {"input_ids": (128,)},
    ),
    "tiny GPT-2 (causal, dropout 0.1)": (
        lambda: _transformers().GPT2LMHeadModel(
            _transformers().GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
        ),
        8,
        {"input_ids": (128,)},
    ),
    "tiny LLaMA (grouped-query attention)": (
        lambda: _transformers().LlamaForCausalLM(
            _transformers().LlamaConfig(hidden_size=128, num_key_value_heads=2, **TINY_TEXT)
        ),
        8,
        {"input_ids": (128,)},
    ),
    "tiny torchvision ViT (dropout 0.1)": (
        lambda: torchvision_models().VisionTransformer(
            image_size=64,
            patch_size=16,
            num_layers=2,
            num_heads=4,
            hidden_dim=128,
            mlp_dim=256,
            dropout=0.1,
            attention_dropout=0.1,
        ),
        8,
        (3, 64, 64),
    ),
}


class AssertsOnItsLengths(nn.Module):
    """XLM's check of the lengths it counts from its tokens, in its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        lengths = (input_ids != 0).sum(dim=1).long()
        assert lengths.max().item() <= input_ids.shape[1]
        return self.embed(input_ids)


class BranchesOnItsLengths(AssertsOnItsLengths):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if (input_ids != 0).sum() > 2:  # control flow on data: not an assert
            return self.embed(input_ids)
        return self.embed(input_ids) * 2


@contextlib.contextmanager
def cuda_autocast(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """CUDA autocast's kernels, on fake CUDA tensors: its casts without a GPU (no backward)."""
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", False)


def bert_of_64_positions() -> nn.Module:
    """A tiny transformers BERT built for 64 positions (inputs past them fail at an ``expand``), in eval mode."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    return transformers.BertModel(config).eval()


class SizeChecked(nn.Module):
    """A forward that checks the input's size in Python, as segmentation_models_pytorch's models do."""

    def __init__(self, divisor: int = 32) -> None:
        super().__init__()
        self.divisor = divisor
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise RuntimeError(f"input size must be divisible by {self.divisor}")
        return self.head(torch.relu(self.stem(x)))


class KeywordMask(nn.Module):
    """A forward taking ``**kwargs`` (as Hugging Face models do) that reads ``mask`` from them: ``how`` is
    ``"get"`` (``kwargs.get("mask")``), ``"index"`` (``kwargs["mask"]``), ``"pop"`` (``kwargs.pop("mask", None)``) or
    ``"training"`` (``kwargs.get("mask")`` in training mode only)."""

    def __init__(self, how: str = "get") -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 5)
        self.how = how

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.how == "index":
            mask: torch.Tensor | None = kwargs["mask"]
        elif self.how == "pop":
            mask = kwargs.pop("mask", None)
        else:
            mask = kwargs.get("mask") if self.how == "get" or self.training else None
        return self.fc((y if mask is None else y * mask).mean((2, 3)))


class DictBatch(nn.Module):
    """``forward(batch)`` reading ``batch["image"]`` only (a data loader's dict of tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(self.conv(batch["image"]).mean((2, 3)))


def model_state(model: nn.Module) -> dict[str, object]:
    """What an analysis must leave as it found: weights and buffers, requires_grad, training, hooks, modules."""
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {
            k: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for k, m in model.named_modules()
        },
        "modules": [type(m) for m in model.modules()],
        "ids": [id(p) for p in model.parameters()],
    }


def assert_same_state(before: dict[str, object], after: dict[str, object]) -> None:
    tb, ta = before["tensors"], after["tensors"]
    assert isinstance(tb, dict) and isinstance(ta, dict)
    assert tb.keys() == ta.keys()
    for k in tb:
        assert torch.equal(tb[k], ta[k]), k
    for key in ("requires_grad", "training", "hooks", "modules", "ids"):
        assert before[key] == after[key], key


def prepared_like_accelerate(model: nn.Module, autocast: torch.autocast) -> nn.Module:
    """``model`` with its forward wrapped as accelerate's ``Accelerator(mixed_precision=...).prepare`` wraps it: the
    bound forward's function decorated with ``autocast``, then its outputs converted to float32."""
    import types

    model._original_forward = model.forward
    model.forward = types.MethodType(autocast(model.forward.__func__), model)
    in_autocast = model.forward.__func__

    def forward(*args: Any, **kwargs: Any) -> Any:
        out = in_autocast(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    model.forward = types.MethodType(forward, model)
    return model


class HeadInAutocast(nn.Module):
    """A convolution, then a head the model's own forward runs in a ``torch.autocast(device, dtype)`` block."""

    def __init__(self, device: str = "cpu", dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.device_type, self.dtype = device, dtype
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.head(x)


class _SentenceTransformerPart(nn.Module):
    """A sentence-transformers module: reads and writes the dict of features its model hands on."""

    def get_embedding_dimension(self) -> int | None:
        return None


class SentenceEncoder(_SentenceTransformerPart):
    """sentence-transformers' ``Transformer`` module, small: token embeddings and a layer over them, written into
    the features (its keys read in a loop, as the real one's are: fx cannot trace it, the part is opaque)."""

    def __init__(self, vocab: int = 50, width: int = 8) -> None:
        super().__init__()
        self.embeddings, self.layer = nn.Embedding(vocab, width), nn.Linear(width, width)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = next(features[key] for key in features if key == "attention_mask")
        features["token_embeddings"] = torch.tanh(self.layer(self.embeddings(features["input_ids"])))
        features["attention_mask"] = mask
        return features


class SentencePooling(_SentenceTransformerPart):
    """sentence-transformers' ``Pooling``: the mean of the token embeddings under the attention mask."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.width = width

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = features["attention_mask"].unsqueeze(-1).float()
        features["sentence_embedding"] = (features["token_embeddings"] * mask).sum(1) / mask.sum(1).clamp(min=1)
        return features

    def get_embedding_dimension(self) -> int:
        return self.width


class SentenceDense(_SentenceTransformerPart):
    """sentence-transformers' ``Dense``: a Linear and an activation on the sentence embedding; its ``out_features``
    is saved with it and rebuilds the Linear when the model is loaded."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear, self.activation_function = nn.Linear(in_features, out_features), nn.Tanh()

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features["sentence_embedding"] = self.activation_function(self.linear(features["sentence_embedding"]))
        return features

    def get_embedding_dimension(self) -> int:
        return self.out_features


class SentenceTransformer(nn.Sequential):
    """sentence-transformers' ``SentenceTransformer`` (its class and module names, which torchsurgeon recognises):
    its modules called in turn on the dict of features, which it returns."""

    __module__ = "sentence_transformers.sentence_transformer.model"

    def forward(self, input: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for module in self:
            input = module(input)
        return input

    def get_embedding_dimension(self) -> int | None:
        for module in reversed(list(self)):
            width = module.get_embedding_dimension()
            if width is not None:
                return int(width)
        return None


def sentence_transformer(dense: int | None = 6) -> SentenceTransformer:
    """A small ``SentenceTransformer``: encoder, mean pooling, and a ``Dense`` to ``dense`` (none when None)."""
    parts: list[nn.Module] = [SentenceEncoder(), SentencePooling()]
    return SentenceTransformer(*parts, *([SentenceDense(8, dense)] if dense else []))
