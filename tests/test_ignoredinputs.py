"""Inputs forward takes through **kwargs or in a dict: those it reads are analysed, the others refused, alike."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from models import DictBatch, KeywordMask
from torchsurgeon import (
    InputError,
    MemoryPlanError,
    TraceError,
    adapt_input_channels,
    check_surgery,
    memory_plan,
    paramcount,
    replace_head,
)
from torchsurgeon.cli import main
from torchsurgeon.ignoredinputs import check_input_traced
from torchsurgeon.trace import trace

_MASKED = {"x": (3, 8, 8), "mask": (1, 8, 8)}


def _entry_points(new: Callable[[], nn.Module], spec: Any) -> dict[str, Callable[[], object]]:
    """Every public function taking ``spec`` for a fresh model from ``new``, memory_plan's training step apart."""
    return {
        "paramcount": lambda: paramcount(new(), spec),
        "check_input_traced": lambda: check_input_traced(new(), spec),
        "replace_head": lambda: replace_head(new(), 7, input=spec),
        "adapt_input_channels": lambda: adapt_input_channels(new(), 1, input=spec),
        "check_surgery": lambda: check_surgery(new(), new(), spec),
    }


@pytest.mark.parametrize("how", ["get", "index", "pop"])
def test_an_input_forward_reads_through_kwargs_is_traced_and_taken_everywhere(
    how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a colleague: forward(x, **kwargs) reading kwargs.get("mask") (or kwargs["mask"], kwargs.pop) was
    traced with **kwargs empty: paramcount and every surgery refused mask as never read (kwargs["mask"]: a
    TraceError) while memory_plan planned it. The trace now gives **kwargs the inputs it takes."""
    model = KeywordMask(how)
    x, mask = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    expected = model(x, mask=mask)
    assert not torch.allclose(expected, model(x, mask=torch.zeros_like(mask)))  # the real forward reads the mask
    torch.testing.assert_close(trace(model, inputs=("x", "mask")).graph_module(x=x, mask=mask), expected)
    assert paramcount(model, _MASKED).total == sum(p.numel() for p in model.parameters())
    for name, call in _entry_points(lambda: KeywordMask(how), _MASKED).items():
        assert call() is not None, name
    assert memory_plan(model, _MASKED, batch=2, device="cpu").input_shapes == {"x": (2, 3, 8, 8), "mask": (2, 1, 8, 8)}
    argv = ["summary", "models:KeywordMask", "--kwargs", f"how='{how}'", "--input", "x=3,8,8", "--input", "mask=1,8,8"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shapes"] == {"x": [1, 3, 8, 8], "mask": [1, 1, 8, 8]}


def test_a_mask_read_in_training_mode_only_is_refused_in_eval_mode_with_the_mode_named() -> None:
    """forward reads mask only when self.training: in eval mode a real forward ignores it, and every trace-based
    entry point says so (naming the mode); memory_plan plans a training step, which reads it."""
    model = KeywordMask("training").eval()
    x, mask = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(x, mask=mask), model(x, mask=torch.zeros_like(mask)))  # ignored in eval mode
    messages = set()
    for call in _entry_points(lambda: KeywordMask("training").eval(), _MASKED).values():
        with pytest.raises(InputError, match=r"input 'mask' is never read: .* no op reads it in eval mode") as got:
            call()
        messages.add(str(got.value))
    assert len(messages) == 1, messages  # one answer, word for word
    assert memory_plan(model, _MASKED, batch=2, device="cpu").input_shapes["mask"] == (2, 1, 8, 8)
    for name, call in _entry_points(lambda: KeywordMask("training"), _MASKED).items():
        assert call() is not None, name  # in training mode every entry point takes it


class _MaskIfAny(nn.Module):
    """Reads ``mask`` from ``**kwargs`` only when one of its values is non-zero."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        mask, y = kwargs.get("mask"), self.conv(x)
        return self.fc((y * mask if mask is not None and bool(mask.any()) else y).mean((2, 3)))


def test_a_mask_read_under_a_condition_on_its_values_is_never_called_unread() -> None:
    """Its values decide whether forward reads it: given by shape, paramcount asks for the values (it said 'not an
    argument of forward') and memory_plan says it cannot read values; given as data, paramcount analyses it."""
    with pytest.raises(TraceError, match=r"the values of 'mask' decide what the forward does here"):
        paramcount(_MaskIfAny(), _MASKED)
    with pytest.raises(MemoryPlanError, match=r"Python that reads values"):
        memory_plan(_MaskIfAny(), _MASKED, device="cpu")
    given = {"x": torch.randn(1, 3, 8, 8), "mask": torch.rand(1, 1, 8, 8)}
    assert paramcount(_MaskIfAny(), given).output_shape == (1, 5)


class _KeywordDict(nn.Module):
    """``forward(x, **kwargs)`` reading ``kwargs["cond"]["a"]`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, **kwargs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)) + kwargs["cond"]["a"])


class _Tokens(nn.Module):
    """A text model as transformers writes one without token types (DistilBERT): ``forward(input_ids,
    attention_mask=None, **kwargs)``, so ``model(**batch)`` puts a tokenizer's ``token_type_ids`` in ``**kwargs``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.fc = nn.Embedding(100, 8), nn.Linear(8, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> torch.Tensor:
        h = self.embed(input_ids)
        h = h if attention_mask is None else h * attention_mask.unsqueeze(-1)
        return self.fc(h.mean(1))


def _every_answer(new: Callable[[], nn.Module], spec: Any, match: str) -> str:
    """The one InputError every entry point, memory_plan included, gives for ``spec``."""
    calls = {**_entry_points(new, spec), "memory_plan": lambda: memory_plan(new(), spec, batch=2, device="cpu")}
    if isinstance(next(iter(spec.values())), torch.Tensor):  # a text model: no channels to adapt, no head to find
        calls = {k: v for k, v in calls.items() if k in ("paramcount", "check_input_traced", "memory_plan")}
    messages = set()
    for call in calls.values():
        with pytest.raises(InputError, match=match) as got:
            call()
        messages.add(str(got.value))
    assert len(messages) == 1, messages  # one answer, word for word
    return messages.pop()


@pytest.mark.parametrize(
    ("new", "spec", "ignored"),
    [
        (DictBatch, {"batch": {"image": (3, 8, 8), "extra": (7,)}}, "'batch'['extra']"),
        (_KeywordDict, {"x": (3, 8, 8), "cond": {"a": (4,), "b": (2,)}}, "'cond'['b']"),
    ],
)
def test_a_dict_entry_forward_never_reads_is_refused_everywhere_with_the_input_without_it(
    new: Callable[[], nn.Module], spec: dict[str, Any], ignored: str
) -> None:
    """Found by a colleague: a dict given to an argument with an entry forward never reads was taken by paramcount
    and every surgery and memory_plan without a word (through **kwargs: paramcount's trace failed, memory_plan
    planned it, refusing a dict only when no entry was read). Every entry point now names the entry, and the input
    without it runs."""
    message = _every_answer(new, spec, rf"input {re.escape(ignored)} is never read: .* would be silently ignored")
    fix = eval(re.search(r"input=(\{.*?\})(?: \(CLI|$)", message).group(1))  # type: ignore[union-attr]
    assert paramcount(new(), fix).output_shape == (1, 5)
    assert memory_plan(new(), fix, batch=2, device="cpu").activations > 0


def test_a_tokenizers_token_type_ids_a_model_never_reads_is_refused_with_the_batch_without_them() -> None:
    """model(**batch) with a BatchEncoding (input_ids, attention_mask, token_type_ids) and a forward without token
    types: transformers ignores token_type_ids in **kwargs. paramcount said 'not an argument of forward' (it is
    taken) and offered no input that runs; every entry point now names it and the batch without it."""
    ids = torch.randint(0, 100, (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    model = _Tokens()
    torch.testing.assert_close(model(**batch), model(input_ids=ids, attention_mask=batch["attention_mask"]))
    message = _every_answer(_Tokens, batch, r"input 'token_type_ids' is never read: _Tokens.forward takes it through")
    fix = eval(re.search(r"input=(\{.*\})$", message).group(1), {"input": batch})  # type: ignore[union-attr]
    assert set(fix) == {"input_ids", "attention_mask"}
    assert paramcount(model, fix).output_shape == (2, 2)


@pytest.mark.slow  # over 0.6 s in make check (make test runs it)
def test_distilbert_given_a_bert_tokenizers_batch_is_refused_alike_everywhere() -> None:
    """The real case: DistilBERT (transformers 5) takes token_type_ids through **kwargs and never reads them."""
    transformers = pytest.importorskip("transformers")
    config = transformers.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=32, num_labels=3
    )

    def new() -> nn.Module:
        return transformers.DistilBertForSequenceClassification(config).train()

    spec = {"input_ids": (16,), "attention_mask": (16,), "token_type_ids": (16,)}
    message = _every_answer(new, spec, r"input 'token_type_ids' is never read: DistilBertForSequenceClassification")
    fix = eval(re.search(r"input=(\{.*?\}) \(CLI", message).group(1))  # type: ignore[union-attr]
    assert fix == {"input_ids": (16,), "attention_mask": (16,)}
    assert replace_head(new(), 5, input=fix).model.classifier.out_features == 5
