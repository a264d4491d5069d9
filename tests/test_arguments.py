"""The dtype an input given by shape gets: what ``forward`` does with it, else its name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import TextTimeConditioned
from torchsurgeon import paramcount
from torchsurgeon.arguments import ExampleInputs
from torchsurgeon.graph import node_records
from torchsurgeon.inputdtypes import input_dtype_for

_SDXL = {
    "sample": (4, 16, 16),
    "timestep": (),
    "encoder_hidden_states": (7, 32),
    "added_cond_kwargs": {"text_embeds": (16,), "time_ids": (6,)},
}


def test_sdxl_time_ids_are_floats_as_diffusers_passes_them() -> None:
    """Found by a probe: SDXL's ``time_ids`` (image sizes and crop corner) were analysed as token ids (long); the
    diffusers pipeline passes them in the model's dtype (``torch.tensor([add_time_ids], dtype=dtype)``)."""
    model, dtype = TextTimeConditioned(), torch.float32
    report = paramcount(model, _SDXL, batch=2)
    inputs = {rec.name: rec.dtype for rec in node_records(report.graph) if rec.op == "placeholder"}
    assert inputs["added_cond_kwargs_time_ids"] == str(dtype).removeprefix("torch.")
    assert ExampleInputs(model, _SDXL, 2)["added_cond_kwargs_time_ids"].dtype == dtype  # what the trace runs on
    real = model(
        torch.randn(2, 4, 16, 16, dtype=dtype),
        torch.full((2,), 500.0, dtype=dtype),
        torch.randn(2, 7, 32, dtype=dtype),
        {"text_embeds": torch.randn(2, 16, dtype=dtype), "time_ids": torch.rand(2, 6, dtype=dtype) * 1024},
    )
    assert report.output_shape == tuple(real.shape) and report.invalid == []


@pytest.mark.parametrize("name", ["input_ids", "token_type_ids", "position_ids", "decoder_input_ids", "labels"])
def test_token_ids_stay_integers(name: str) -> None:
    assert input_dtype_for(name, nn.Linear(2, 2)) == torch.long


class _IdsAndTokens(nn.Module):
    """``cond_ids`` are float values a Linear multiplies; ``tokens`` (no ``_ids`` name) are looked up after a view."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.embed = nn.Linear(6, 4), nn.Embedding(10, 4)

    def forward(self, cond_ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(cond_ids)[:, None] + self.embed(tokens.flatten(1))


def test_what_forward_does_with_an_input_decides_its_dtype_before_its_name() -> None:
    """A Linear needs floats whatever the name; an embedding needs integers, also after a view."""
    model = _IdsAndTokens()
    report = paramcount(model, {"cond_ids": (6,), "tokens": (3, 1)}, batch=2)
    real = model(torch.randn(2, 6), torch.randint(0, 10, (2, 3, 1)))  # a long cond_ids fails: Linear is float
    assert report.invalid == [] and report.output_shape == tuple(real.shape)
    inputs = {rec.name: rec.dtype for rec in node_records(report.graph) if rec.op == "placeholder"}
    assert inputs == {"cond_ids": "float32", "tokens": "int64"}


def test_the_analyzers_over_the_graph_say_what_they_take() -> None:
    """count_params(model), count_flops(model), propagate_shapes(model, ...) and build_graph(model) raised raw
    AttributeErrors ('Sequential' object has no attribute 'graph'); each names what it takes and the call making it."""
    from torchsurgeon import InputError, build_graph, count_flops, count_params, propagate_shapes
    from torchsurgeon.trace import trace

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    given = r"the graph of a traced model, got the model Sequential — "
    with pytest.raises(InputError, match=rf"count_params takes {given}count_params\(build_graph\(trace\(model\)\)\)"):
        count_params(model)
    with pytest.raises(InputError, match=rf"count_flops takes {given}G = build_graph\(trace\(model\)\); "):
        count_flops(model)
    with pytest.raises(InputError, match=rf"propagate_shapes takes {given}propagate_shapes\(build_graph\("):
        propagate_shapes(model, (3, 8, 8))
    with pytest.raises(InputError, match=r"build_graph takes the trace of a model, got the model Sequential — "):
        build_graph(model)
    with pytest.raises(InputError, match=r"count_params takes the graph of a traced model, got a trace, not its graph"):
        count_params(trace(model))
    assert count_params(build_graph(trace(model))).total == sum(p.numel() for p in model.parameters())


class _Cached(nn.Module):
    """A decoder taking ``use_cache`` (a transformers layer stack)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, use_cache: bool | None = None, **kwargs: object) -> torch.Tensor:
        return self.proj(x)


class _PassesUseCache(nn.Module):
    """Mimi's encoder: a config with ``use_cache``, a forward taking ``**kwargs`` and passing ``use_cache=`` itself."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"use_cache": True})()
        self.stack = _Cached()

    def forward(self, x: torch.Tensor, streaming: bool = False, **kwargs: object) -> torch.Tensor:
        return self.stack(x, use_cache=streaming, **kwargs)


def test_a_forward_passing_use_cache_itself_beside_its_kwargs_is_traced() -> None:
    """Found by a probe (transformers' MimiEncoderModel, PocketTTS's audio tokenizer encoder): the trace put
    ``use_cache=False`` into ``**kwargs``, and the whole model failed to trace with "got multiple values for keyword
    argument 'use_cache'", which ``model(x)`` never raises."""
    model = _PassesUseCache()
    report = paramcount(model, (4, 8))
    assert report.output_shape == tuple(model(torch.randn(1, 4, 8)).shape) == (1, 4, 8)
    assert report.total == sum(p.numel() for p in model.parameters()) and report.trusted
