"""Shapes as users write them: typed shapes (``"16:long"``), repeated ``--input`` options, contracts."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import nn

from models import ByteView, TwoInputs, assert_same_state, model_state
from torchsurgeon import (
    InputError,
    ShapeContract,
    TraceError,
    TypedShape,
    check_contract,
    memory_plan,
    paramcount,
    paramcount_sweep,
)
from torchsurgeon.report import format_value, jsonable
from torchsurgeon.shapespec import check_shape, input_spec, normalize_input, parse_input, parse_inputs, with_batch


def test_typed_shapes_round_trip_through_text() -> None:
    for text, dims, dtype in (
        ("16:long", (16,), torch.int64),
        ("3,224,224:bf16", (3, 224, 224), torch.bfloat16),
        ("2x3:bool", (2, 3), torch.bool),
        ("8:float64", (8,), torch.float64),
    ):
        typed = parse_input(text)
        assert typed == TypedShape(dims, dtype)
        assert parse_input(str(typed)) == typed and input_spec(jsonable(typed)) == typed
    assert str(TypedShape((8,), torch.float64)) == "8:double"  # the short name
    assert format_value({"input_ids": TypedShape((16,), "long")}) == "{input_ids: 16:long}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("16:lng", r"'16:lng': unknown dtype 'lng' — write one of long, int64"),
        ("0:long", r"--input '0': dimension 0 is 0 — every dimension must be positive"),
        ("a:long", r"--input 'a': 'a' is not an integer"),
    ],
)
def test_parse_input_errors(value: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_input(value)


def test_typed_shape_checks_its_fields() -> None:
    with pytest.raises(InputError, match=r"dimension 0 is -1"):
        TypedShape((-1,), "long")
    with pytest.raises(InputError, match=r"dtype=3 is not a dtype"):
        TypedShape((1,), 3)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"is not one shape"):
        TypedShape(((1,), (2,)), "long")  # type: ignore[arg-type]


def test_parse_inputs_builds_what_paramcount_takes() -> None:
    assert parse_inputs(["3,8,8"]) == (3, 8, 8)
    assert parse_inputs(["3,8,8", "1,8,8"]) == ((3, 8, 8), (1, 8, 8))
    assert parse_inputs(["ids=16:long", "mask=16"]) == {"ids": TypedShape((16,), torch.long), "mask": (16,)}
    with pytest.raises(InputError, match="no --input given"):
        parse_inputs([])
    with pytest.raises(InputError, match=r"'2x' is not an argument name"):
        parse_inputs(["2x=3"])


@pytest.mark.parametrize(
    ("spec", "output"),
    [
        # ByteView's output has the input's bytes: 4 elements × 2 (bf16), × 4 (float32), × 8 (long)
        (TypedShape((4,), "bf16"), (2, 8)),
        ({"x": TypedShape((4,), "long")}, (2, 32)),
        ([TypedShape((4,), "half")], (2, 8)),
        ((4,), (2, 16)),  # a plain shape: the model's floating dtype
    ],
)
def test_paramcount_takes_typed_shapes(spec: Any, output: tuple[int, ...]) -> None:
    r = paramcount(ByteView(), spec, batch=2)
    assert r.output_shape == output and r.input_shapes == {"x": (2, 4)}


def test_typed_positional_inputs_and_sweeps() -> None:
    r = paramcount(TwoInputs(), (TypedShape((3, 8, 8), "float"), (1, 8, 8)))
    assert r.input_shapes == {"image": (1, 3, 8, 8), "mask": (1, 1, 8, 8)} and r.output_shape == (1, 4, 8, 8)
    reports = paramcount_sweep(ByteView(), [TypedShape((4,), "bf16"), TypedShape((4,), "long")])
    assert [rep.output_shape for rep in reports] == [(1, 8), (1, 32)]


def test_contracts_take_typed_inputs() -> None:
    c = ShapeContract(input={"x": "4:bf16"}, output=[8], batch=3)
    assert c.input == {"x": TypedShape((4,), torch.bfloat16)} and with_batch(c.input, 3) == {
        "x": TypedShape((3, 4), torch.bfloat16)
    }
    assert check_contract(ByteView(), c).ok
    assert ShapeContract(input=[[4], "4:long"]).input == ((4,), TypedShape((4,), torch.long))
    with pytest.raises(InputError, match=r"input='4' is not a shape"):
        ShapeContract(input="4")  # a plain shape is written as a list; text is for a dtype


class _ListIn(nn.Module):
    """A forward taking a list of tensors (pytorchvideo's SlowFast takes its two clips so)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.proj(x) for x in xs], 1)


@pytest.mark.parametrize("given", [[torch.randn(2, 4), torch.randn(2, 4)], [(4,), (4,)]])
def test_a_forward_taking_a_list_of_tensors_is_given_it_by_name(given: list[Any]) -> None:
    """Found by a probe: a bare RuntimeError (``if v[0] == 1`` on a tensor) came out of the error message's hint;
    then a list of tensors was refused (pytorchvideo's SlowFast could not be analysed).  Given by name, each
    tensor is an input of its own, the list rebuilt for forward."""
    report = paramcount(_ListIn(), {"xs": given}, batch=2)
    with torch.no_grad():
        real = _ListIn()([torch.zeros(2, 4), torch.zeros(2, 4)])
    assert report.output_shape == tuple(real.shape) == (2, 2, 3) and report.total == 15
    assert report.input_shapes == {"xs_0": (2, 4), "xs_1": (2, 4)}


def test_a_list_given_positionally_is_told_to_be_given_by_name() -> None:
    """The two clips of a one-argument forward given as two inputs: the error names the call that runs."""
    with pytest.raises(InputError, match=re.escape("give it by name: paramcount(model, {'xs': [(4,), (4,)]})")):
        paramcount(_ListIn(), [(4,), (4,)])
    assert paramcount(_ListIn(), {"xs": [(4,), (4,)]}).output_shape == (1, 2, 3)  # that call, as written


def test_a_dict_where_one_shape_is_expected_is_refused_with_its_shapes_only() -> None:
    """Found by a probe: ``forward(self, batch)`` given a dict of tensors printed their values."""
    with pytest.raises(InputError, match=r"input 'batch' is a mapping \{'image': \(1, 3, 4, 4\)\}: one tensor or"):
        check_shape({"image": torch.randn(1, 3, 4, 4)}, "input 'batch'")


def test_a_dict_for_one_forward_argument_is_one_input_per_key() -> None:
    """Found by a probe: SDXL's ``added_cond_kwargs={"text_embeds": ..., "time_ids": ...}`` was refused."""
    embeds = torch.zeros(1, 16)
    spec = {"sample": (4, 8, 8), "added_cond_kwargs": {"text_embeds": embeds, "time_ids": [6]}}
    names = ["sample", "added_cond_kwargs_text_embeds", "added_cond_kwargs_time_ids"]
    flat = normalize_input(spec, names)
    assert flat == {"sample": (4, 8, 8), "added_cond_kwargs_text_embeds": embeds, "added_cond_kwargs_time_ids": (6,)}
    with pytest.raises(InputError, match=r"input 'added_cond_kwargs' is not an argument of forward"):
        normalize_input(spec, ["sample"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cond": {}}, r"input 'cond' is an empty dict — give the shape of each tensor in it"),
        ({"cond": {"a": {"b": (2,)}}}, r"input 'cond'\['a'\] is a dict inside a dict"),
        ({"cond": {"a-b": (2,)}}, r"input 'cond': key 'a-b' is not a Python name"),
        ({"cond_a": (2,), "cond": {"a": (2,)}}, r"input 'cond_a' is given twice \(by name and inside a dict\)"),
        (((2,), {"a": (2,)}), r"holds a dict — give the inputs by name when one of them is a dict of tensors"),
    ],
)
def test_a_dict_that_cannot_be_one_input_per_key_says_why(spec: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        normalize_input(spec, ["x", "cond", "cond_a"])


class _Features(nn.Module):
    """sentence-transformers' modules: ``forward(features)`` reads the tensors of a dict and a ``'modality'`` string
    that ``preprocess`` puts beside them, defaulting to ``"text"``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        scale = 1.0 if features.get("modality", "text") == "text" else 2.0
        return {"sentence_embedding": self.emb(features["input_ids"]).mean(1) * scale}


def test_a_string_in_a_dict_of_tensors_is_named_with_a_call_that_runs() -> None:
    """Found by a probe: ``paramcount(st_model, {"input": st_model.tokenize(texts)})`` (input_ids, attention_mask
    and ``'modality': 'text'``) said ``input 'input_modality': expected a shape such as (3, 224, 224), got 'text' —
    give the per-sample shape as a tuple of positive ints``: a name the user never wrote and a fix that cannot apply.
    It names the key and value, and the call without it, which runs as written."""
    model = _Features()
    features = {"input_ids": torch.randint(0, 50, (2, 7)), "modality": "text"}
    with pytest.raises(InputError, match=r"input 'features'\['modality'\] is 'text', not a tensor or a shape") as err:
        paramcount(model, {"features": features})
    call = str(err.value).rpartition("has one: ")[2]
    report = eval(call, {"paramcount": paramcount, "model": model})
    assert report.output_shape == {"sentence_embedding": tuple(model(features)["sentence_embedding"].shape)}


class _Decoder(nn.Module):
    """Two masks or one, as a flag says (segment-anything's MaskDecoder: ``multimask_output: bool``)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor, multimask_output: bool) -> torch.Tensor:
        masks = self.head(tokens)
        return masks if multimask_output else masks[:, :, :1]


@pytest.mark.parametrize("flag", [False, True])
def test_a_python_flag_given_by_name_is_a_constant_of_the_trace(flag: bool) -> None:
    """Found with segment-anything's mask decoder: ``{"multimask_output": False}`` beside the shapes was left out of
    the trace, which failed on ``if multimask_output:`` with a fix giving the flag the shape (3, 224, 224).  Now
    paramcount and paramcount_sweep trace it as a constant (``concrete_args``), giving a real call's output."""
    model = _Decoder()
    before = model_state(model)
    report = paramcount(model, {"tokens": (5, 8), "multimask_output": flag})
    assert_same_state(before, model_state(model))
    assert report.output_shape == tuple(model(torch.zeros(1, 5, 8), flag).shape) == (1, 5, 3 if flag else 1)
    (swept,) = paramcount_sweep(model, [{"tokens": (5, 8), "multimask_output": flag}])
    assert swept.output_shape == report.output_shape
    with pytest.raises(InputError, match="different Python values"):
        paramcount_sweep(model, [{"tokens": (5, 8), "multimask_output": flag}, {"tokens": (5, 8)}])


def test_a_python_flag_not_given_is_named_with_a_fix_that_runs() -> None:
    model = _Decoder()
    with pytest.raises(TraceError, match=r"a Python bool \(its annotation\), which was not given") as caught:
        paramcount(model, {"tokens": (5, 8)})
    fix = str(caught.value).split("traced as a constant: ")[1].splitlines()[0]
    assert eval(fix, {"paramcount": paramcount, "model": model}).output_shape == (1, 5, 1)  # as written


def test_a_python_flag_where_only_tensors_are_taken_names_paramcount() -> None:
    with pytest.raises(InputError, match=r"^input 'multimask_output' is the Python value True, not a tensor") as caught:
        memory_plan(_Decoder(), {"tokens": (5, 8), "multimask_output": True})
    fix = str(caught.value).split("trace it as a constant: ")[1]
    assert eval(fix, {"paramcount": paramcount, "model": _Decoder()}).output_shape == (1, 5, 3)
