"""Per-sample shapes as users write them in contracts, lockfiles and on the command line.

A shape spec is a tuple of ints (``(3, 224, 224)``), nested tuples for several
inputs or outputs, or a mapping of names to shapes; lists are accepted too
(TOML and JSON have no tuples).  An input may also carry its dtype: a
:class:`TypedShape`, written ``"128:long"`` in text (TOML, JSON, ``--input``).
:mod:`torchsurgeon.contracts`, :mod:`torchsurgeon.lockfile`,
:mod:`torchsurgeon.config` and the command line all read them through this
module; :func:`torchsurgeon.paramcount` takes the result as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

from .errors import InputError, did_you_mean

__all__ = (
    "DTYPES",
    "EXAMPLE_TOKENS",
    "PYTHON_VALUES",
    "InputSpec",
    "Shape",
    "TypedShape",
    "check_shape",
    "input_args",
    "input_name",
    "input_spec",
    "is_tensor_list",
    "missing_input",
    "nested_inputs",
    "normalize_input",
    "not_an_input",
    "parse_input",
    "parse_inputs",
    "parse_shape",
    "per_sample_hint",
    "plain",
    "python_values",
    "shape_spec",
    "shown_input",
    "with_batch",
    "without_leading_ones",
    "written_input",
    "written_inputs",
)

EXAMPLE_TOKENS = (16,)
"""The per-sample shape of the token ids an example input gets where none is given (a default, or a fix to run)."""

DTYPES: Mapping[str, torch.dtype] = {
    "long": torch.int64,
    "int64": torch.int64,
    "int": torch.int32,
    "int32": torch.int32,
    "short": torch.int16,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "float": torch.float32,
    "float32": torch.float32,
    "half": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "double": torch.float64,
    "float64": torch.float64,
}
"""The dtype names an input may carry (``"128:long"``), short names first."""

_NAMES = {dtype: name for name, dtype in reversed(list(DTYPES.items()))}  # the first (short) name of each


@dataclass(frozen=True)
class TypedShape:
    """A per-sample input shape with the dtype of its tensor; ``str()`` writes it as ``"128:long"``.

    Inputs given by a plain shape get the model's floating dtype, or ``long``
    for token ids (:func:`torchsurgeon.inputdtypes.input_dtype_for`); a typed
    shape says which.

    Parameters
    ----------
    shape : tuple of int
        Per-sample shape, batch excluded; positive dimensions.
    dtype : torch.dtype or str
        A ``torch.dtype`` or a name of :data:`DTYPES` (``"long"``, ``"bf16"``).

    Raises
    ------
    InputError
        For a dimension that is not a positive int or an unknown dtype name.

    Examples
    --------
    >>> TypedShape((128,), "long")
    TypedShape(shape=(128,), dtype=torch.int64)
    >>> str(TypedShape((3, 8, 8), torch.bfloat16))
    '3,8,8:bf16'
    """

    shape: tuple[int, ...]
    dtype: torch.dtype

    def __post_init__(self) -> None:
        dims = shape_spec(self.shape, "shape", 1)
        if not isinstance(dims, tuple) or not all(isinstance(d, int) for d in dims):
            raise InputError(f"shape={self.shape!r} is not one shape — give a tuple of ints, e.g. (128,)")
        object.__setattr__(self, "shape", dims)
        if isinstance(self.dtype, str):
            object.__setattr__(self, "dtype", _dtype(self.dtype, str(self)))
        if not isinstance(self.dtype, torch.dtype):
            raise InputError(f"dtype={self.dtype!r} is not a dtype — give a torch.dtype or one of {', '.join(DTYPES)}")

    def __str__(self) -> str:
        dtype = _NAMES.get(self.dtype, str(self.dtype)) if isinstance(self.dtype, torch.dtype) else self.dtype
        return f"{','.join(str(d) for d in self.shape)}:{dtype}"

    def meta(self, batch: int) -> torch.Tensor:
        """An empty ``meta`` tensor of this shape, with ``batch`` prepended, and this dtype."""
        return torch.empty((batch, *self.shape), dtype=self.dtype, device="meta")


def _dtype(name: str, text: str) -> torch.dtype:
    try:
        return DTYPES[name.strip().lower()]
    except KeyError:
        raise InputError(
            f"{text!r}: unknown dtype {name.strip()!r} — write one of {', '.join(DTYPES)}, e.g. 128:long"
        ) from None


def parse_shape(text: str, key: str = "--input") -> tuple[int, ...]:
    """Parse ``"1,224,224"`` (or ``"1x224x224"``) into a shape tuple.

    Raises
    ------
    InputError
        When a dimension is not a positive integer; the message names ``key``.

    Examples
    --------
    >>> parse_shape("1,224,224"), parse_shape("3x32x32")
    ((1, 224, 224), (3, 32, 32))
    """
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if parts and any(not p for p in parts) and any(parts):
        raise InputError(f"{key} {text!r} has an empty dimension — write the shape as C,H,W, e.g. 1,224,224")
    parts = [p for p in parts if p]
    dims = []
    for i, p in enumerate(parts):
        try:
            d = int(p)
        except ValueError:
            raise InputError(
                f"{key} {text!r}: {p!r} is not an integer — write the shape as C,H,W, e.g. 1,224,224"
            ) from None
        if d <= 0:
            raise InputError(f"{key} {text!r}: dimension {i} is {d} — every dimension must be positive, e.g. 1,224,224")
        dims.append(d)
    if not dims:
        raise InputError(f"{key} {text!r} is empty — write the shape as C,H,W, e.g. 1,224,224")
    return tuple(dims)


def parse_input(text: str, key: str = "--input") -> tuple[int, ...] | TypedShape:
    """Parse one input written as text: ``"3,224,224"`` (a shape) or ``"128:long"`` (a shape and its dtype).

    Raises
    ------
    InputError
        For a dimension that is not a positive integer or an unknown dtype.

    Examples
    --------
    >>> parse_input("3,224,224"), parse_input("128:long")
    ((3, 224, 224), TypedShape(shape=(128,), dtype=torch.int64))
    """
    dims, sep, dtype = text.partition(":")
    shape = parse_shape(dims, key)
    return TypedShape(shape, _dtype(dtype, text)) if sep else shape


def parse_inputs(texts: Sequence[str]) -> Any:
    """The input spec of repeated ``--input`` options, for :func:`torchsurgeon.paramcount`.

    One unnamed input is a shape (or :class:`TypedShape`); several unnamed
    ones are positional inputs, in order; ``NAME=SHAPE[:DTYPE]`` options give a
    mapping of ``forward`` argument names.

    Raises
    ------
    InputError
        When named and unnamed inputs are mixed, a name repeats, or a shape is malformed.

    Examples
    --------
    >>> parse_inputs(["3,224,224"])
    (3, 224, 224)
    >>> parse_inputs(["input_ids=16:long", "pixel_values=3,8,8"])
    {'input_ids': TypedShape(shape=(16,), dtype=torch.int64), 'pixel_values': (3, 8, 8)}
    """
    if not texts:
        raise InputError("no --input given — e.g. --input 3,224,224, or --input input_ids=128:long for a named input")
    named = ["=" in t for t in texts]
    if any(named) and not all(named):
        raise InputError(
            f"--input {' --input '.join(texts)}: name every input or none — "
            "e.g. --input input_ids=128:long --input attention_mask=128:long"
        )
    if not all(named):
        specs = tuple(parse_input(t) for t in texts)
        return specs[0] if len(specs) == 1 else specs
    out: dict[str, Any] = {}
    for text in texts:
        name, _, value = (part.strip() for part in text.partition("="))
        if not name.isidentifier():
            raise InputError(f"--input {text!r}: {name!r} is not an argument name — e.g. input_ids=128:long")
        if name in out:
            raise InputError(f"--input {name}= is given twice — give each input once")
        out[name] = parse_input(value, f"--input {name}=")
    return out


def missing_input(name: str, given: Mapping[str, Any], example: tuple[int, ...] | None = None) -> str:
    """The message for a ``forward`` input no shape was given for, with the inputs ``given`` (by name, as
    :func:`normalize_input` names them) written beside it: on the command line every input is named or none, so
    the fix names them all.  The missing input's shape in it is ``example`` (by default an RGB image).

    Examples
    --------
    >>> print(missing_input("mask", {"image": (3, 32, 32)}))  # doctest: +NORMALIZE_WHITESPACE
    forward needs input 'mask' but no shape was given for it — pass a mapping such as {'image': (3, 32, 32),
    'mask': (3, 224, 224)} or a tuple of shapes (CLI: --input image=3,32,32 --input mask=3,224,224;
    pyproject.toml: input = {image = [3, 32, 32], mask = [3, 224, 224]})
    """
    example = example or (3, 224, 224)
    shapes = {k: v for k, v in given.items() if isinstance(v, tuple) and all(type(d) is int for d in v)}
    if len(shapes) != len(given):  # a tensor or a typed shape given: the example names the missing input alone
        shapes = {}
    shapes[name] = example
    cli = " ".join(f"--input {text}" for text in input_args(shapes) or (f"{name}={','.join(map(str, example))}",))
    toml = ", ".join(f"{k} = {list(v)}" for k, v in shapes.items())
    return (
        f"forward needs input {name!r} but no shape was given for it — pass a mapping such as {shapes} or a tuple "
        f"of shapes (CLI: {cli}; pyproject.toml: input = {{{toml}}})"
    )


def input_args(spec: Any) -> tuple[str, ...] | None:
    """The ``--input`` texts that :func:`parse_inputs` reads back as ``spec``; ``None`` when the command
    line cannot write it (a dict of shapes for one argument, a tensor).

    Examples
    --------
    >>> input_args((3, 224, 224)), input_args(((3, 8, 8), (1, 8, 8)))
    (('3,224,224',), ('3,8,8', '1,8,8'))
    >>> input_args({"input_ids": TypedShape((16,), "long"), "pixel_values": (3, 8, 8)})
    ('input_ids=16:long', 'pixel_values=3,8,8')
    """

    def one(shape: Any) -> str | None:
        if isinstance(shape, TypedShape):
            return str(shape)
        if isinstance(shape, tuple) and shape and all(type(d) is int for d in shape):
            return ",".join(str(d) for d in shape)
        return None

    if isinstance(spec, Mapping):
        texts = [one(v) for v in spec.values()]
        named = [f"{k}={t}" for k, t in zip(spec, texts) if isinstance(k, str) and t is not None]
        return tuple(named) if len(named) == len(spec) else None
    single = one(spec)
    if single is not None:
        return (single,)
    if isinstance(spec, tuple) and spec:
        several = [one(v) for v in spec]
        return tuple(t for t in several if t is not None) if None not in several else None
    return None


def input_spec(value: Any, key: str = "input") -> Any:
    """Normalise an input spec as users write it: :func:`shape_spec`, with typed shapes (``"128:long"``) allowed.

    Examples
    --------
    >>> input_spec({"input_ids": "16:long", "pixel_values": [3, 8, 8]})
    {'input_ids': TypedShape(shape=(16,), dtype=torch.int64), 'pixel_values': (3, 8, 8)}
    """
    return shape_spec(value, key, 1, typed=True)


def shape_spec(value: Any, key: str, minimum: int, *, typed: bool = False) -> Any:
    """Normalise a shape, nested shapes or a mapping of shapes to tuples and dicts.

    Parameters
    ----------
    value : shape, nested shapes, or mapping
        What the user wrote, batch excluded.
    key : str
        The field it was given as (``input``, ``output``), named in messages.
    minimum : int
        Smallest dimension allowed: 1 for inputs, 0 for outputs.
    typed : bool
        Accept typed shapes (:class:`TypedShape`, or text with a dtype such
        as ``"128:long"``), as inputs may be.

    Raises
    ------
    InputError
        For an empty or non-shape value, or a dimension that is not a whole
        number of at least ``minimum``; the message names ``key`` and the dimension.

    Examples
    --------
    >>> shape_spec([1, 224, 224], "input", 1), shape_spec({"image": [3, 8, 8]}, "input", 1)
    ((1, 224, 224), {'image': (3, 8, 8)})
    >>> shape_spec((3, 0), "input", 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: input=(3, 0): dimension 1 is 0 — every dimension must be positive, ...
    """
    example = "e.g. (1, 224, 224)" if key.split("[")[0] == "input" else "e.g. (10,)"
    if typed and isinstance(value, TypedShape):
        return value
    if typed and isinstance(value, str) and ":" in value:  # "16:long"; a plain shape is written as a list
        return parse_input(value, key)
    if isinstance(value, Mapping):
        if not value:
            raise InputError(f"{key}={value!r} is empty — give at least one shape, {example}")
        return {str(k): shape_spec(v, f"{key}[{k!r}]", minimum, typed=typed) for k, v in value.items()}
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InputError(f"{key}={value!r} is not a shape — give a tuple of ints, {example} (batch excluded)")
    items = list(value)
    if not items:
        raise InputError(f"{key}={value!r} is empty — give the per-sample shape, {example}")
    nested: tuple[type, ...] = (str, TypedShape) if typed else ()
    if all(isinstance(d, nested) or (isinstance(d, Sequence) and not isinstance(d, (str, bytes))) for d in items):
        return tuple(shape_spec(d, f"{key}[{i}]", minimum, typed=typed) for i, d in enumerate(items))
    for i, d in enumerate(items):
        if isinstance(d, bool) or not isinstance(d, int):
            raise InputError(f"{key}={value!r}: dimension {i} is {d!r} — dimensions are whole numbers, {example}")
        if d < minimum:
            bound = "positive" if minimum > 0 else "non-negative"
            raise InputError(f"{key}={value!r}: dimension {i} is {d} — every dimension must be {bound}, {example}")
    return tuple(items)


def plain(value: Any) -> Any:
    """Shapes as plain tuples (lists too), mappings as dicts: comparable whatever they were read from.

    Examples
    --------
    >>> plain([1, 10]) == plain((1, 10)), plain({"logits": [1, 10]})
    (True, {'logits': (1, 10)})
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(plain(v) for v in value)
    return value


def with_batch(shape: Any, batch: int) -> Any:
    """A normalised per-sample shape spec (:func:`shape_spec`) with ``batch`` prepended to every shape.

    Examples
    --------
    >>> with_batch((3, 8, 8), 4), with_batch(((10,), (5,)), 1), with_batch({"logits": (2,)}, 1)
    ((4, 3, 8, 8), ((1, 10), (1, 5)), {'logits': (1, 2)})
    >>> str(with_batch(TypedShape((16,), "long"), 2))
    '2,16:long'
    """
    if isinstance(shape, TypedShape):
        return TypedShape((batch, *shape.shape), shape.dtype)
    if isinstance(shape, Mapping):
        return {k: with_batch(v, batch) for k, v in shape.items()}
    if shape and all(isinstance(d, int) for d in shape):
        return (batch, *shape)
    return tuple(with_batch(s, batch) for s in shape)


def per_sample_hint(shapes: Mapping[str, Any], batch: int) -> str:
    """``"; input shapes are per sample …"`` naming the inputs given with a leading 1, else ``""``.

    For a forward that unpacks an input's shape into fewer values than it has
    dimensions: the usual cause is a shape given with its batch.

    Examples
    --------
    >>> per_sample_hint({"input_ids": (1, 8)}, 1)
    '; input shapes are per sample (batch=1 is added): input_ids=(1, 8) — give input_ids=(8,)'
    >>> per_sample_hint({"": (1, 8)}, 2)  # one input given as a shape, without a name
    '; input shapes are per sample (batch=2 is added): (1, 8) — give (8,)'
    >>> per_sample_hint({"x": (3, 32, 32)}, 1)
    ''
    """
    given = {k: tuple(v) for k, v in shapes.items() if _leading_one(v)}
    if not given:
        return ""
    named = ", ".join(f"{k}={v}" if k else str(v) for k, v in given.items())  # "": the one input, unnamed
    fix = ", ".join(f"{k}={v[1:]}" if k else str(v[1:]) for k, v in given.items())
    return f"; input shapes are per sample (batch={batch} is added): {named} — give {fix}"


def _leading_one(shape: Any) -> bool:
    return isinstance(shape, (tuple, list)) and len(shape) > 1 and all(type(d) is int for d in shape) and shape[0] == 1


def without_leading_ones(input: Any) -> Any:
    """``input`` as :func:`per_sample_hint` tells the user to give it: each shape with a leading 1 without it.

    Examples
    --------
    >>> without_leading_ones((1, 40, 50)), without_leading_ones({"ids": (1, 8), "x": (3, 4)})
    ((40, 50), {'ids': (8,), 'x': (3, 4)})
    """
    if isinstance(input, Mapping):
        return {k: without_leading_ones(v) for k, v in input.items()}
    return tuple(input[1:]) if _leading_one(input) else input


InputSpec = Union[Sequence[int], torch.Size, torch.Tensor, TypedShape, Sequence[Any], Mapping[str, Any]]
"""What :func:`torchsurgeon.paramcount` takes as ``input``: see :func:`normalize_input`."""
Shape = tuple[int, ...]
"""A per-sample or batched shape."""


def check_shape(shape: Any, where: str, *, scalar: bool = False) -> Shape:
    """``shape`` as a tuple of positive ints; ``()`` (one number per sample: a diffusion model's timestep)
    only for a named input (``scalar``); else InputError, naming ``where``.

    Examples
    --------
    >>> check_shape([3, 32, 32], "input 'x'")
    (3, 32, 32)
    >>> check_shape((3, 0), "input 'x'")
    Traceback (most recent call last):
    ...
    torchsurgeon.errors.InputError: input 'x': dimension 1 is 0 in shape (3, 0) — every dimension must be a positive int
    """
    if isinstance(shape, Mapping):  # one shape was expected: a dict is given by name, {"batch": {"image": ...}}
        brief = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else v for k, v in shape.items()}
        raise InputError(
            f"{where} is a mapping {brief}: one tensor or shape is expected here — a forward argument that takes a "
            "dict of tensors is given by name, its dict inside: paramcount(model, {'batch': {'image': (3, 224, 224)}})"
        )
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise InputError(
            f"{where}: expected a shape such as (3, 224, 224), got {shape!r} — "
            "give the per-sample shape as a tuple of positive ints; the batch is added (batch=1)"
        )
    dims = tuple(shape)
    if any(isinstance(d, torch.Tensor) for d in dims):
        raise InputError(
            f"{where} is a list of {len(dims)} tensors — each input is one tensor or shape: a forward that takes a "
            "list of tensors is not traced (analyse a module whose forward takes them as separate arguments)"
        )
    if any(isinstance(d, Mapping) for d in dims):  # ((3, 8, 8), {"meta": (4,)}): a dict among positional inputs
        raise InputError(
            f"{where}: {shape!r} holds a dict — give the inputs by name when one of them is a dict of tensors, "
            "e.g. paramcount(model, {'x': (3, 224, 224), 'batch': {'image': (3, 224, 224)}})"
        )
    if not dims and not scalar:
        raise InputError(f"{where}: the shape is empty — give the per-sample shape, e.g. (3, 224, 224)")
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int):
            if isinstance(d, float) and d.is_integer():
                hint = f"use {int(d)}"
            else:
                hint = "dimensions are whole numbers"
            raise InputError(f"{where}: dimension {i} is {d!r} ({type(d).__name__}) in shape {dims!r} — {hint}")
        if d <= 0:
            raise InputError(
                f"{where}: dimension {i} is {d} in shape {dims!r} — every dimension must be a positive int"
            )
    return dims


def input_name(argument: str, key: str | int) -> str:
    """The input name of one tensor of a ``forward`` argument: a key of the dict it takes, or an index of the list
    it takes (or of ``*args``).

    The traced graph has one input of this name for each such tensor; reports name it so.

    Examples
    --------
    >>> input_name("added_cond_kwargs", "text_embeds"), input_name("xs", 1)
    ('added_cond_kwargs_text_embeds', 'xs_1')
    """
    return f"{argument}_{key}"


def is_tensor_list(value: Any) -> bool:
    """Whether an input spec's ``value`` for one ``forward`` argument is a list of tensors (or of shapes), as
    pytorchvideo's SlowFast takes its two pathways, and not one shape.

    Examples
    --------
    >>> is_tensor_list([(3, 4, 32, 32), (3, 16, 32, 32)]), is_tensor_list((3, 32, 32)), is_tensor_list([])
    (True, False, False)
    """
    return (
        type(value) in (list, tuple)
        and bool(value)
        and all(isinstance(v, (torch.Tensor, TypedShape, torch.Size)) or type(v) in (list, tuple) for v in value)
    )


def nested_inputs(argument: str, value: Mapping[Any, Any] | Sequence[Any]) -> dict[str, Any]:
    """The tensors (or shapes) of a ``forward`` argument given as a dict, or as a list (:func:`is_tensor_list`), by
    :func:`input_name`.

    Raises
    ------
    InputError
        For an empty dict, a key that is not a Python name, or a dict inside it.

    Examples
    --------
    >>> nested_inputs("added_cond_kwargs", {"text_embeds": (16,), "time_ids": (6,)})
    {'added_cond_kwargs_text_embeds': (16,), 'added_cond_kwargs_time_ids': (6,)}
    >>> nested_inputs("x", [(3, 4, 32, 32), (3, 16, 32, 32)])
    {'x_0': (3, 4, 32, 32), 'x_1': (3, 16, 32, 32)}
    """
    if not isinstance(value, Mapping):
        return {input_name(argument, i): item for i, item in enumerate(value)}
    where = f"input {argument!r}"
    if not value:
        raise InputError(f"{where} is an empty dict — give the shape of each tensor in it, e.g. {{'image': (3, 8, 8)}}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not (isinstance(key, str) and key.isidentifier()):
            raise InputError(
                f"{where}: key {key!r} is not a Python name — analyse a module whose forward takes that tensor as "
                f"an argument and calls the model with {{{key!r}: tensor}}"
            )
        if isinstance(item, Mapping):
            raise InputError(
                f"{where}[{key!r}] is a dict inside a dict — analyse a module whose forward takes its tensors as "
                "separate arguments and calls the model with the nested dicts"
            )
        if item is None or isinstance(item, (str, bytes, bool)):
            raise _not_a_tensor(argument, key, value)
        out[input_name(argument, key)] = item
    return out


def _not_a_tensor(argument: str, key: str, value: Mapping[Any, Any]) -> InputError:
    """The error for ``value[key]``, a string, flag or None in a dict argument (the ``'modality': 'text'`` that
    sentence-transformers' ``preprocess`` adds to the tensors), with the dict without it as per-sample shapes."""
    rest = {k: v for k, v in value.items() if k != key}
    batches = {v.shape[0] for v in rest.values() if isinstance(v, torch.Tensor) and v.dim()}
    fix = ""
    if rest and all(isinstance(v, torch.Tensor) and v.dim() for v in rest.values()) and len(batches) == 1:
        shapes = ", ".join(f"{k!r}: {tuple(v.shape[1:])}" for k, v in rest.items())
        fix = f": paramcount(model, {{{argument!r}: {{{shapes}}}}}, batch={batches.pop()})"
    elif rest and all(isinstance(v, (tuple, list)) for v in rest.values()):
        fix = f": paramcount(model, {{{argument!r}: {rest!r}}})"
    return InputError(
        f"input {argument!r}[{key!r}] is {value[key]!r}, not a tensor or a shape — the values of a dict argument are "
        f"traced as tensors; leave {key!r} out, and forward reads its default if it has one{fix}"
    )


def shown_input(value: Any, path: str) -> str:
    """An input's value as Python writes it in a fix: a shape as a tuple, a number or typed shape as written,
    anything else (a tensor) by its ``path`` in the ``input`` the user gave.

    Examples
    --------
    >>> shown_input([3, 8, 8], "input['x']"), shown_input(torch.zeros(2), "input['x']")
    ('(3, 8, 8)', "input['x']")
    """
    if isinstance(value, (list, tuple, torch.Size)):
        return repr(tuple(value))
    return repr(value) if isinstance(value, (int, TypedShape)) else path


def written_input(value: Any) -> str:
    """One input as a user writes it in a call that runs: a shape as a tuple, a typed shape as its constructor, a
    tensor as zeros of its shape and dtype (an analysis reads only those).

    Examples
    --------
    >>> written_input((3, 8, 8)), written_input(TypedShape((16,), "long"))
    ('(3, 8, 8)', "TypedShape((16,), 'long')")
    >>> written_input(torch.tensor([10]))
    'torch.zeros((1,), dtype=torch.int64)'
    """
    if isinstance(value, TypedShape):
        return f"TypedShape({value.shape}, {str(value).rsplit(':', 1)[1]!r})"
    if isinstance(value, torch.Tensor):
        dtype = "" if value.dtype == torch.float32 else f", dtype={value.dtype}"
        return f"torch.zeros({tuple(value.shape)}{dtype})"
    return repr(value)


def written_inputs(inputs: Mapping[str, Any]) -> str:
    """Several inputs as a user writes them, a mapping by name (:func:`written_input` each).

    Examples
    --------
    >>> written_inputs({"sample": (4, 16, 16), "timestep": torch.tensor([10]), "return_dict": False})
    "{'sample': (4, 16, 16), 'timestep': torch.zeros((1,), dtype=torch.int64), 'return_dict': False}"
    """
    return "{" + ", ".join(f"{k!r}: {written_input(v)}" for k, v in inputs.items()) + "}"


def not_an_input(name: str, value: Any, names: Sequence[str]) -> InputError:
    """The error for an input named ``name`` (given ``value``) that is none of ``names``, the inputs of
    ``forward``: it names them and, when one is close (a typo), the spec with that name.

    Examples
    --------
    >>> print(not_an_input("pixel_value", (3, 32, 32), ["pixel_values", "labels"]))
    input 'pixel_value' is not an argument of forward — did you mean 'pixel_values'? \
give {'pixel_values': (3, 32, 32)}; the inputs are ['pixel_values', 'labels']
    """
    shown = shown_input(value, f"input[{name!r}]")
    meant = did_you_mean(name, names, lambda close: f"give {{{close!r}: {shown}}};")
    return InputError(
        f"input {name!r} is not an argument of forward — {meant + ' ' if meant else ''}the inputs are {list(names)}"
    )


PYTHON_VALUES = (bool, int, float, str, type(None))
"""The types of a ``forward`` argument given by name as a Python value (a flag: SAM's mask decoder's
``multimask_output=False``), not a tensor or its shape: :func:`python_values`."""


def python_values(spec: Any) -> tuple[Any, dict[str, Any]]:
    """An input spec without the Python values it gives by name, and those values: ``forward``'s arguments a real call
    passes as they are, which :func:`~torchsurgeon.paramcount` traces as constants (fx's ``concrete_args``).

    Examples
    --------
    >>> python_values({"image_embeddings": (32, 16, 16), "multimask_output": False})
    ({'image_embeddings': (32, 16, 16)}, {'multimask_output': False})
    >>> python_values((3, 8, 8))
    ((3, 8, 8), {})
    """
    if not isinstance(spec, Mapping):
        return spec, {}
    values = {k: v for k, v in spec.items() if type(v) in PYTHON_VALUES}
    return ({k: v for k, v in spec.items() if k not in values}, values) if values else (spec, {})


def normalize_input(spec: InputSpec, placeholders: Sequence[str]) -> dict[str, Shape | TypedShape | torch.Tensor]:
    """Map an input spec to ``{placeholder name: per-sample shape or tensor}``.

    Parameters
    ----------
    spec : shape, tensor, tuple of shapes, or mapping
        ``(3, 224, 224)`` for one input; ``((3, 224, 224), (1, 224, 224))``
        for several positional inputs; ``{"image": (3, 224, 224)}`` by name;
        a tensor (real or ``meta``) is used as it is, batch included; a
        :class:`~torchsurgeon.shapespec.TypedShape` is a shape with its dtype.
        A ``forward`` argument that takes a dict of tensors is given as a
        mapping by name, ``{"added_cond_kwargs": {"text_embeds": (16,)}}``: its
        tensors are inputs of their own, named by :func:`input_name`.
    placeholders : sequence of str
        The names of ``forward``'s inputs, in order.

    Returns
    -------
    dict
        Per-sample shapes (batch not yet added), typed shapes or tensors, by input name.

    Raises
    ------
    InputError
        For malformed shapes (zero, negative, non-integer dims) or names
        that are not inputs of the model.

    Examples
    --------
    >>> normalize_input((3, 32, 32), ["x"])
    {'x': (3, 32, 32)}
    >>> normalize_input({"mask": [1, 8, 8]}, ["image", "mask"])
    {'mask': (1, 8, 8)}
    >>> normalize_input({"sample": (4, 16, 16), "timestep": ()}, ["sample", "timestep"])  # a number per sample
    {'sample': (4, 16, 16), 'timestep': ()}
    >>> normalize_input({"cond": {"time_ids": (6,)}}, ["cond_time_ids"])  # forward(self, cond) reading cond["time_ids"]
    {'cond_time_ids': (6,)}
    """
    if not placeholders:
        raise InputError("the model's forward takes no inputs — nothing to propagate")
    if isinstance(spec, (torch.Tensor, TypedShape)):
        return {placeholders[0]: spec}
    if isinstance(spec, Mapping):
        out: dict[str, Shape | TypedShape | torch.Tensor] = {}
        for name, value in spec.items():
            nested = isinstance(value, Mapping) or is_tensor_list(value)
            given = nested_inputs(name, value) if nested else {name: value}
            for flat, item in given.items():
                if flat not in placeholders:
                    raise not_an_input(name, value, placeholders)
                if flat in out:
                    raise InputError(f"input {flat!r} is given twice (by name and inside a dict) — give it once")
                if type(item) in PYTHON_VALUES:  # paramcount takes it as a constant (python_values); this does not
                    raise InputError(
                        f"input {flat!r} is the Python value {item!r}, not a tensor: only paramcount and "
                        f"paramcount_sweep trace it as a constant: paramcount(model, {written_inputs(spec)})"
                    )
                out[flat] = (
                    item
                    if isinstance(item, (torch.Tensor, TypedShape))
                    else check_shape(item, f"input {flat!r}", scalar=True)
                )
        return out
    if (
        isinstance(spec, (list, tuple))
        and spec
        and all(isinstance(s, (list, tuple, torch.Size, torch.Tensor, TypedShape)) for s in spec)
    ):
        if len(spec) > len(placeholders):
            listed = ""  # a forward taking one list of tensors (pytorchvideo's SlowFast, its two pathways)
            if len(placeholders) == 1 and not any(isinstance(s, torch.Tensor) for s in spec):
                one = placeholders[0]
                listed = f"; if {one} takes a list of tensors, give it by name: paramcount(model, {{{one!r}: "
                listed += f"{list(spec)}}})"
            raise InputError(
                f"{len(spec)} input shapes given, but forward takes {len(placeholders)} "
                f"inputs ({list(placeholders)}) — give one shape per input{listed}"
            )
        return {
            name: s if isinstance(s, (torch.Tensor, TypedShape)) else check_shape(s, f"input {name!r}")
            for name, s in zip(placeholders, spec)
        }
    return {placeholders[0]: check_shape(spec, "input shape")}
