"""The classifier of a model, found from its traced graph: :func:`replace_head` and :func:`append_head`.

A model's heads are the Linear or convolution layers whose outputs make its
logits (its first output, ``logits`` of a Hugging Face classifier) through
no other layer with weights, all as wide as the closest one: one for most
models, two for a distilled one (DeiT's ``head`` and ``head_dist``, LeViT,
CrossViT average theirs).  A layer that gives another output as it is
(through dropout, flatten or views), as wide, is a head too: GoogLeNet's and
Inception-v3's auxiliary classifiers, which only a model in training mode
calls (a model in ``eval()`` is also traced in training mode to find them).
Hidden states and attentions a model also returns are not classifiers, nor is a
layer making an embedding (a two-tower model's, CLIP's: :func:`_compared`).

Nothing here changes the model it is given unless ``inplace=True``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import networkx as nx
import torch
from torch import nn

from .analysis import paramcount
from .arguments import ExampleInputs, layer_names, tensor_inputs
from .errors import InputError, SurgeryError, TorchSurgeonError, TraceError, as_written
from .graph import NodeRecord, build_graph, fx_node, graph_module_of, index_of, node_record, node_records
from .graphreaders import weights_owner
from .initialisers import default_init, named_init
from .readers import default_input, guessed_input, refused_guess_hint
from .records import ParamChange, ParamReport
from .resize import guard_holders, hands_on_features
from .shapes import meta_copy
from .shapespec import InputSpec
from .surgery import SurgeryResult, _copy, _count, _set_submodule, _with_guards, no_such_layer
from .trace import check_input_traced, trace
from .wrappers import from_peft, unwrap_model

__all__ = ("append_head", "head_layer", "head_layers", "replace_head")

_CLASS_GUARDS = ("num_labels", "num_classes", "n_classes", "classes")
"""Attributes of a module holding the head, or of its config, that keep the class count."""


def head_layer(model: nn.Module, input: InputSpec | None = None) -> str:
    """Qualified name of the classifier: the last layer with weights before the (first) output.

    ``""`` when the output comes from the model's own parameters (open_clip's
    ``x @ self.proj``); :func:`replace_head` then says what to do.  Of a model
    with several heads, the closest to the output (see :func:`head_layers`).

    Examples
    --------
    >>> from torch import nn
    >>> head_layer(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2), nn.Flatten()))
    '3'
    """
    return _heads(model, input)[0][0]


def head_layers(model: nn.Module, input: InputSpec | None = None) -> list[str]:
    """Qualified names of every classifier of ``model`` (module docstring): what :func:`replace_head` replaces.

    ``input`` (as in :func:`~torchsurgeon.paramcount`) for a model that cannot
    be traced without one.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Distilled(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body, self.head, self.head_dist = nn.Linear(8, 8), nn.Linear(8, 5), nn.Linear(8, 5)
    ...     def forward(self, x):
    ...         x = self.body(x)
    ...         return (self.head(x) + self.head_dist(x)) / 2
    >>> head_layers(Distilled())
    ['head', 'head_dist']
    """
    return [name for name, _ in _heads(model, input)]


def _graph(model: nn.Module, input: InputSpec | None) -> nx.DiGraph:
    """The traced graph of ``model``, with ``input`` (or a vision model's own, from its config) when given."""
    _ = None if input is None else check_input_traced(model, input)  # refused as paramcount refuses it, not ignored
    input = input if input is not None else default_input(model)
    if input is None:
        try:
            return build_graph(trace(model))
        except TraceError as exc:
            guess = guessed_input(model)  # Python on the input's shape in forward (smp's size check): an image
            tried = ""
            if guess is not None:
                try:
                    example = ExampleInputs(model, guess, 1)
                    return build_graph(trace(model, inputs=tensor_inputs(guess), example_inputs=example))
                except TorchSurgeonError as refused:  # the model refuses the guess too: ask for the input it accepts
                    why = (str(refused).strip().splitlines() or [""])[0][:200]
                    tried = f"; nor for {guess}, an image of its first convolution's channels ({why})"
            raise SurgeryError(
                f"{type(model).__name__} cannot be traced without an input ({str(exc).splitlines()[0][:300]}){tried} "
                f"— pass one it accepts, {refused_guess_hint(guess)}"
            ) from exc
    return build_graph(trace(model, inputs=tensor_inputs(input), example_inputs=ExampleInputs(model, input, 1)))


def _output_nodes(G: nx.DiGraph) -> list[str]:
    """The nodes the model's output is made of, in order (a dict's values, a tuple's items, a named tuple's
    fields), each once."""
    output = next(n for n in graph_module_of(G).graph.nodes if n.op == "output")
    found: list[torch.fx.Node] = []

    def add(node: torch.fx.Node) -> None:
        if node.op == "call_function" and isinstance(node.target, type):  # GoogLeNetOutputs(x, aux2, aux1)
            torch.fx.node.map_arg((node.args, node.kwargs), add)
        elif node.op != "placeholder":
            found.append(node)

    torch.fx.node.map_arg(output.args, add)
    return list(dict.fromkeys(n.name for n in found))


def _passes_on(G: nx.DiGraph, node: torch.fx.Node) -> bool:
    """Whether a node gives its input on as it is, or flattened (dropout, identity, a conversion, a view)."""
    module = index_of(G).modules.get(str(node.target)) if node.op == "call_module" else None
    return hands_on_features(node.op, node.target, module)


def _owners(G: nx.DiGraph, start: str, *, through_any: bool) -> list[tuple[str, NodeRecord]]:
    """The modules whose weights make ``start``'s value through no other weights, closest first; only through
    nodes that pass their input on unless ``through_any``."""
    frontier, seen, found = [start], {start}, []
    while frontier:
        node = frontier.pop(0)
        rec = node_record(G, node)
        owner = weights_owner(G, rec)
        if owner is not None:
            weights = tuple(p for src in G.predecessors(node) for p in node_record(G, src).param_names)
            found.append((owner, rec if rec.param_names else dataclasses.replace(rec, param_names=weights)))
            continue
        if not through_any and not _passes_on(G, fx_node(G, node)):
            continue
        for pred in G.predecessors(node):
            if pred not in seen and node_record(G, pred).op != "placeholder":
                seen.add(pred)
                frontier.append(pred)
    unique: dict[str, NodeRecord] = {}
    for name, rec in found:  # each once, where it is first met (closest first)
        unique.setdefault(name, rec)
    return list(unique.items())


def _width(module: nn.Module) -> int | None:
    """Outputs of a Linear or Conv layer (the last one inside a container), else None."""
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.Linear):
            return m.out_features
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.out_channels
    return None


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd)
    )


def _heads(model: nn.Module, input: InputSpec | None) -> list[tuple[str, NodeRecord]]:
    """Each head's module name and the graph node that uses its weights (module docstring)."""
    return _heads_and_others(model, input)[0]


def _heads_and_others(
    model: nn.Module, input: InputSpec | None, num_classes: int | None = None
) -> tuple[list[tuple[str, NodeRecord]], dict[str, int | None]]:
    """:func:`_heads`, and the layers of another width that give the model's other outputs as they are (a
    multi-task model's other heads), with their widths; a two-tower model's embedding is refused
    (:func:`_no_embedding`)."""
    model = unwrap_model(model)
    G = _graph(model, input)
    outputs = _output_nodes(G)
    owners = _owners(G, outputs[0], through_any=True) if outputs else []
    if not owners:
        raise SurgeryError(
            f"{type(model).__name__}: no layer with weights produces the output — "
            "there is no classifier to replace; use append_head(model, ...) to add one"
        )
    layers = [(name, rec) for name, rec in owners if name and _is_layer(model.get_submodule(name))]
    if not layers:
        _no_embedding(model, G, owners[:1], outputs, num_classes)
        return owners[:1], {}  # not a Linear or Conv layer: replace_head says what to do
    width = _width(model.get_submodule(layers[0][0]))
    heads = dict((name, rec) for name, rec in layers if _width(model.get_submodule(name)) == width)
    _no_embedding(model, G, list(heads.items()), outputs, num_classes)
    others: dict[str, int | None] = {}
    for i, (graph, node) in enumerate([(G, n) for n in outputs[1:]] + _outputs_in_training(model, input)):
        for name, rec in _owners(graph, node, through_any=False):  # an output a layer gives as it is
            layer = model.get_submodule(name) if name else model
            if name not in heads and _is_layer(layer) and _width(layer) == width:
                heads[name] = rec
            elif name not in heads and _is_layer(layer) and i < len(outputs) - 1:  # in eval too: another task
                others[name] = _width(layer)
    output = next((rec.name for rec in node_records(G) if rec.op == "output"), None)
    reaching = nx.ancestors(G, output) if output is not None else set()
    used = {p for rec in node_records(G) if rec.name in reaching for p in rec.param_names}
    for name, module in model.named_modules():  # as wide, reaching no output: an auxiliary head only a loss reads
        if name not in heads and _is_layer(module) and _width(module) == width:
            if not any(f"{name}.{p}" in used for p, _ in module.named_parameters()):
                heads[name] = _module_record(name, module)
    return list(heads.items()), others


_PRODUCTS = frozenset({"matmul", "mm", "bmm", "einsum", "tensordot", "inner", "dot", "cosine_similarity"})
"""Ops that multiply two tensors along their features: two embeddings compared, their width contracted."""


def _output_width(model: nn.Module, name: str, rec: NodeRecord) -> int | None:
    """The width of what a weights owner gives: a layer's outputs, a bare ``x @ proj``'s last dimension, a
    norm's features; None when unknown."""
    module = model.get_submodule(name) if name else model
    if _is_layer(module):
        return _width(module)
    bare = _bare_parameter(name, rec)
    if bare is not None:
        weight = model.get_parameter(bare)
        return int(weight.shape[-1]) if weight.dim() >= 2 else None
    shape = getattr(module, "normalized_shape", None)
    return int(shape[-1]) if isinstance(shape, tuple) and shape else _width(module)


def _bare_parameter(name: str, rec: NodeRecord) -> str | None:
    """The parameter held by ``name`` itself that a function node reads (``x @ self.proj``), else None."""
    if rec.op == "call_module":
        return None
    return next((p for p in rec.param_names if p.rpartition(".")[0] == name), None)


def _reads(G: nx.DiGraph, node: str) -> set[str]:
    """The model inputs a node's value is computed from."""
    return {n for n in nx.ancestors(G, node) if node_record(G, n).op == "placeholder"}


def _no_embedding(
    model: nn.Module, G: nx.DiGraph, heads: list[tuple[str, NodeRecord]], outputs: list[str], num_classes: int | None
) -> None:
    """Refuse heads that make an embedding, not class scores (:func:`_compared` says why); a new width there
    breaks the comparison the embeddings are made for."""
    for name, rec in heads:
        width = _output_width(model, name, rec)
        reason = _compared(model, G, (name, rec), width, [n for n, _ in heads], outputs) if width else ""
        if reason:
            raise SurgeryError(_embedding_message(model, name, rec, width or 0, reason, num_classes))


def _compared(
    model: nn.Module, G: nx.DiGraph, head: tuple[str, NodeRecord], width: int, heads: list[str], outputs: list[str]
) -> str:
    """Why ``head`` (``width`` wide) makes an embedding: its output is multiplied (a matmul, a similarity) with
    another branch's of its width before the first output; or another output is an embedding of its width made
    from a model input the head does not read (a two-tower model: CLIP's image and text features); else ``""``."""
    after = nx.descendants(G, head[1].name) | {head[1].name}
    for node in sorted(after & (nx.ancestors(G, outputs[0]) | {outputs[0]})):
        product = node_record(G, node)
        if product.op not in ("call_function", "call_method") or str(product.target) not in _PRODUCTS:
            continue
        operands: list[torch.fx.Node] = []
        torch.fx.node.map_arg((fx_node(G, node).args, fx_node(G, node).kwargs), operands.append)
        for operand in (o.name for o in operands if o.name not in after):
            for other in _owners(G, operand, through_any=True):
                if _output_width(model, *other) == width:
                    return f"its output is multiplied by {product.target}() with the output of {_shown(model, *other)}"
    reads = _reads(G, head[1].name)
    for i, output in enumerate(outputs[1:], start=1):
        if output in after:
            continue
        for name, rec in _owners(G, output, through_any=True):
            new = sorted(_reads(G, rec.name) - reads)
            if name not in heads and new and _output_width(model, name, rec) == width:
                return (
                    f"output {i} of the model is the embedding made by {_shown(model, name, rec)} from the input "
                    f"{', '.join(new)}, which the head does not read"
                )
    return ""


def _shown(model: nn.Module, name: str, rec: NodeRecord) -> str:
    """A weights owner as the user knows it: the layer, or the bare parameter it reads."""
    module = model.get_submodule(name) if name else model
    bare = _bare_parameter(name, rec)
    if bare is not None and not _is_layer(module):
        return f"{bare} (a bare parameter)"
    return f"{name or 'the model itself'} ({type(module).__name__})"


def _embedding_message(
    model: nn.Module, name: str, rec: NodeRecord, width: int, reason: str, num_classes: int | None
) -> str:
    """The refusal of :func:`_no_embedding`, with the edits that do make a classifier: one tower's own head
    (the model's child holding the head), or the layer named with ``layer=``."""
    layer = _is_layer(model.get_submodule(name) if name else model)
    classes = num_classes if num_classes is not None else "num_classes"
    tower = name.split(".")[0] if ("." in name if layer else bool(name)) else ""
    if tower:
        own = (
            f"replace_head(model.{tower}, {classes})"
            if layer
            else f"nn.Sequential(model.{tower}, nn.Linear({width}, {classes}))"
        )
        fix = f"To classify with one tower, edit that tower alone: {own}"
    else:
        fix = "To classify with one tower, edit that tower by hand"
    if layer:
        fix += f"; to replace the layer anyway, name it: replace_head(model, {classes}, layer={name!r})"
    return (
        f"{type(model).__name__}: {_shown(model, name, rec)} makes a {width}-wide embedding, not class scores — "
        f"{reason}, also {width} wide; a new width breaks the comparison of the two embeddings. {fix}"
    )


def _module_record(name: str, module: nn.Module) -> NodeRecord:
    """A record standing for a head the graph has no node for (named with ``layer=``, or read only by a loss)."""
    return NodeRecord(name, "call_module", name, name, type(module).__name__)


def _outputs_in_training(model: nn.Module, input: InputSpec | None) -> list[tuple[nx.DiGraph, str]]:
    """The outputs of a model in ``eval()`` traced in training mode (GoogLeNet's auxiliary logits), but its first;
    on a weightless copy (the model's own modes stay as they are)."""
    if all(m.training for m in model.modules()):
        return []
    try:
        G = _graph(meta_copy(model).train(), input)
    except Exception:  # a model whose training forward cannot be traced: its eval outputs are what there is
        return []
    return [(G, name) for name in _output_nodes(G)[1:]]


def _not_a_layer(
    model: nn.Module, name: str, rec: NodeRecord, num_classes: int | None, output: Any = None
) -> SurgeryError:
    """The error for a head that is not a Linear/Conv module: which weights, and what to do instead (``output``:
    the model's output shape, when known, for a layer after the whole model)."""
    holder = model.get_submodule(name) if name else model
    where = f"{name} ({type(holder).__name__})" if name else f"the model itself ({type(holder).__name__})"
    bare = _bare_parameter(name, rec)
    classes = num_classes if num_classes is not None else "num_classes"
    if bare is not None:
        weight = model.get_parameter(bare)
        features = weight.shape[-1] if weight.dim() else "features"
        return SurgeryError(
            f"the output of {type(model).__name__} is computed by {rec.module_type} from the bare parameter "
            f"{bare} {tuple(weight.shape)} of {where}, not by a Linear or Conv layer — there is no layer to "
            f"swap; add a classifier after it instead: nn.Sequential(model, nn.Linear({features}, {classes}))"
            + (f" or append_head(model, nn.Linear({features}, {classes}))" if name else "")
        )
    width = _width(holder)
    if isinstance(holder, nn.modules.conv._ConvTransposeNd) and width is not None:
        return SurgeryError(
            f"{where} makes the output: a transposed convolution, which replace_head does not swap (Linear and "
            f"convolution layers only) — replace it by hand"
            + _after_the_model(output, width, num_classes if num_classes is not None else width)
        )
    return SurgeryError(f"{where} is the head but not a Linear or Conv layer — replace it by hand")


def _fresh(old: nn.Module, num_classes: int) -> nn.Module:
    """A new layer like ``old`` (a Linear or a convolution) with ``num_classes`` outputs, on its device and dtype,
    in its mode (a head put in a model in ``eval()`` is in ``eval()`` too)."""
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        assert isinstance(old, nn.modules.conv._ConvNd)
        conv = copy.deepcopy(old)
        conv.out_channels = num_classes
        conv.weight = nn.Parameter(torch.empty((num_classes, *old.weight.shape[1:])))
        if old.bias is not None:
            conv.bias = nn.Parameter(torch.empty(num_classes))
        conv.reset_parameters()
        new = conv
    return new.to(device=old.weight.device, dtype=old.weight.dtype).train(old.training)


def replace_head(
    model: nn.Module,
    num_classes: int,
    *,
    keep: Mapping[int, int] | None = None,
    inplace: bool = False,
    input: InputSpec | None = None,
    layer: str | None = None,
) -> SurgeryResult:
    """Replace the classifier with a fresh one for ``num_classes`` classes.

    The classifier is the last layer with weights before the output (found
    from the traced graph); its ``in_features`` are kept.  A model with
    several heads (a distilled DeiT's ``head`` and ``head_dist``,
    GoogLeNet's auxiliary classifiers: :func:`head_layers`) has each
    replaced.  ``keep`` carries the pretrained rows of classes the new task
    shares with the old one.

    Parameters
    ----------
    model : nn.Module
        The pretrained model; copied unless ``inplace``.
    num_classes : int
        Outputs of the new classifier.
    keep : mapping of int to int, optional
        ``{new_class: old_class}``: rows copied from the old classifier
        (weight and bias) into the new one, and the class's name in a
        Hugging Face config's ``id2label``.
    input : shape, tuple of shapes, or mapping, optional
        For a model that cannot be traced without an input (as in
        :func:`~torchsurgeon.paramcount`).
    layer : str, optional
        The Linear or convolution layer to replace, by qualified name.  A
        multi-task model whose outputs come from heads of other widths (an
        ``age`` regressor beside a ``gender`` classifier) must name one.

    Returns
    -------
    SurgeryResult
        The edited model; the changes name the initialiser of each new head,
        then (``setting``) each class count updated on a module holding the
        head or its config (``config.num_labels``, ``num_classes``), so a
        Hugging Face classifier's loss reshapes its logits to the new width;
        its ``id2label`` and a ``problem_type`` the new count contradicts too;
        then a shape a weight-free module after the head makes of the logits
        (MONAI's ``Reshape(classes)``: ``reshape.shape``).

    Raises
    ------
    SurgeryError
        When the edited model no longer runs on the input given (or a vision
        model's own), which the original ran on: something after the head
        still holds the old class count; the error names where.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 5))
    >>> r = replace_head(net, 3, keep={0: 4})
    >>> r.model[0]
    Linear(in_features=8, out_features=3, bias=True)
    >>> torch.equal(r.model[0].weight[0], net[0].weight[4])
    True
    """
    num_classes = _count(num_classes, "num_classes", "the new class count")
    _check_keep(keep)
    edited = _copy(model, inplace, input)
    if layer is not None:
        heads = _chosen_head(edited, layer_names(layer, several=False)[0], num_classes, keep)
    else:
        heads = _one_task(edited, input, num_classes)
    for name, rec in heads:
        module = edited.get_submodule(name) if name else edited
        around = [(name, module, False), *(guard_holders(edited, name) if name else ())]  # a LoRA layer on the head
        for holder, wrapper, is_config in around:
            if not is_config and from_peft(wrapper):
                kind = f"{type(wrapper).__module__}.{type(wrapper).__name__}"
                raise SurgeryError(
                    f"{holder} ({kind}) is wrapped by peft: its adapter is built for the head as it is — replace the "
                    "head before get_peft_model(...), listing it in modules_to_save"
                )
        if not _is_layer(module):
            raise _not_a_layer(edited, name, rec, num_classes, _running_input(edited, input)[1])
    checked_on = _running_input(edited, input)  # before the edit: an input it runs on now, to check it after
    first = edited.get_submodule(heads[0][0])
    width = _width(first)
    assert width is not None
    extra = _no_object_rows(edited, heads[0][0], width)  # DETR's head: its classes and one "no object" row
    old_classes = width - extra
    keep = dict(keep or {})
    for new_i, old_i in keep.items():
        if not (0 <= new_i < num_classes) or not (0 <= old_i < old_classes):
            raise InputError(
                f"keep={{{new_i}: {old_i}}} is out of range — new classes are 0..{num_classes - 1}, "
                f"old classes of {heads[0][0]} are 0..{old_classes - 1}"
            )
    rows = f"; rows {sorted(keep)} carried over from classes {[keep[k] for k in sorted(keep)]}" if keep else ""
    if extra:
        rows += f"; its last row (no object, as num_labels + 1 = {width} rows say) carried over"
    names = _label_names(edited, heads[0][0], keep)
    carried = {**keep, **{num_classes + i: old_classes + i for i in range(extra)}}
    changes: list[ParamReport] = []
    for name, _ in heads:
        old = edited.get_submodule(name)
        new = _fresh(old, num_classes + extra)
        with torch.no_grad():
            for new_i, old_i in carried.items():
                new.get_parameter("weight")[new_i] = old.get_parameter("weight")[old_i]
                if getattr(new, "bias", None) is not None:
                    new.get_parameter("bias")[new_i] = old.get_parameter("bias")[old_i]
        _set_submodule(edited, name, new)
        also = f" (one of {len(heads)} heads: {', '.join(n for n, _ in heads)})" if len(heads) > 1 else ""
        changes += [
            ParamReport(
                f"{name}.{pname}",
                ParamChange.RESIZED if carried else ParamChange.REINITIALISED,  # some pretrained rows kept
                tuple(getattr(old, pname).shape),
                tuple(p.shape),
                default_init(new, pname),
                f"new head: {old_classes} → {num_classes} classes{rows}{also}",
            )
            for pname, p in new.named_parameters()
        ]
    guarded = _with_guards(edited, changes, [(name, _CLASS_GUARDS, old_classes, num_classes) for name, _ in heads])
    shapes = _shape_guards(edited, [n for n, _ in heads], input, old_classes + extra, num_classes + extra)
    result = SurgeryResult(edited, (*guarded, *shapes, *_labels_after(edited, heads[0][0], names, num_classes)))
    _check_it_runs(edited, heads[0][0], checked_on, (old_classes + extra, num_classes + extra), "replaced")
    return result


def _running_input(model: nn.Module, input: InputSpec | None) -> tuple[InputSpec | None, Any]:
    """The input given, a vision model's own (from its config), or an image of its first convolution's channels
    (:func:`~torchsurgeon.readers.guessed_input`), the first the model runs on now, with the output shape it gives
    there; ``(None, None)`` when it runs on none."""
    for candidate in (input, default_input(model), guessed_input(model)):
        if candidate is None:
            continue
        try:
            report = paramcount(model, candidate, crosscheck="never")
        except TorchSurgeonError:
            continue
        if not report.invalid:
            return candidate, report.output_shape
    return None, None


_JOINS = frozenset({"add", "sub", "mul", "div", "cat", "concat", "stack", "where"})
"""Ops that join the logits with another branch element by element (a residual around the head)."""


def _after_the_model(output: Any, before: int, after: int | None, given: str | None = None) -> str:
    """A layer after the whole model that maps its ``before`` outputs to ``after`` (or the layers ``given``), as a
    call that runs: ``nn.Sequential(model, nn.Conv2d(3, 7, kernel_size=1))``; empty when the output is no tensor
    with those classes in dim 1."""
    shape = output if isinstance(output, tuple) and all(isinstance(d, int) for d in output) else None
    if shape is None or len(shape) < 2 or shape[1] != before or len(shape) > 5:
        return ""
    layers = given
    if layers is None:
        layers = (
            f"nn.Linear({before}, {after})"
            if len(shape) == 2
            else f"nn.Conv{len(shape) - 2}d({before}, {after}, kernel_size=1)"
        )
    what = "a new layer" if given is None else "the layers"
    return f"; or add {what} after the whole model instead, which runs as written: nn.Sequential(model, {layers})"


def _check_it_runs(
    model: nn.Module, head: str, checked: tuple[InputSpec | None, Any], classes: tuple[int, int | None], did: str
) -> None:
    """Raise when the edited model does not run on the input ``checked`` names, which it ran on before (giving
    the output shape ``checked`` names too): something after the head still holds the old class count (a reshape
    to it, a residual around the head).  ``classes``: the head's width before and after; ``did``: what was done to
    the head ("replaced")."""
    input, output = checked
    if input is None:
        return
    invalid = paramcount(model, input, crosscheck="never").invalid
    if not invalid:
        return
    bad = invalid[0]
    if bad.type.strip("_()").rstrip("_") in _JOINS:
        fix = (
            f"{bad.name} joins the head's output with another branch still {classes[0]} wide (a residual around the "
            f"head), which a new head does not change — rebuild the model for the new class count"
        )
    else:
        fix = (
            f"set what {bad.name} makes of the new logits to the new class count (a shape holding the old one), "
            f"then check with paramcount(model, {input!r})"
        )
    layers = None if did == "replaced" else "<the modules you appended>"
    raise SurgeryError(
        f"{type(model).__name__}: with {head} {did}, the model no longer runs on input {input}: {bad.message} — "
        f"{fix}{_after_the_model(output, classes[0], classes[1], layers)}"
    )


_SHAPE_GUARDS = ("shape", "unflattened_size", "output_shape", "out_shape", "target_shape")
"""Attributes of a weight-free module after the head holding the shape it makes of the logits (MONAI's
``Reshape(classes)``, ``nn.Unflatten(1, (classes, 1, 1))``)."""


def _shape_guards(
    model: nn.Module, heads: list[str], input: InputSpec | None, before: int, after: int
) -> list[ParamReport]:
    """Set the class count in a shape a weight-free module after ``heads`` makes of their output (an int equal to
    ``before``, or the one item of a tuple that is): a reshape to the old count would fail on the new logits."""
    try:
        G = _graph(model, input)
    except SurgeryError:  # not traceable without an input: the run check (when an input is known) says more
        return []
    starts = [rec.name for rec in node_records(G) if any(p.rpartition(".")[0] in heads for p in rec.param_names)]
    later: set[str] = set().union(*(nx.descendants(G, s) for s in starts)) if starts else set()
    changes: list[ParamReport] = []
    seen: set[str] = set()
    for rec in node_records(G):
        # the module called, or the one whose forward made the op (MONAI's Reshape: x.reshape(self.shape) traced)
        target = str(fx_node(G, rec.name).target) if rec.op == "call_module" else rec.scope
        if rec.name not in later or not target or target in seen or target in heads:
            continue
        seen.add(target)
        module = model.get_submodule(target)
        if any(True for _ in module.parameters()):
            continue
        for attr in _SHAPE_GUARDS:
            value = vars(module).get(attr)
            if type(value) is int and value == before:
                new: Any = after
            elif (
                isinstance(value, (tuple, list))
                and all(type(v) is int for v in value)
                and list(value).count(before) == 1
            ):
                new = type(value)(after if v == before else v for v in value)
            else:
                continue
            setattr(module, attr, new)
            changes.append(ParamReport(f"{target}.{attr}", ParamChange.SETTING, None, None, "", f"{value} → {new}"))
    return changes


def _no_object_rows(model: nn.Module, layer: str, width: int) -> int:
    """1 when a config holding the head says ``num_labels`` is one less than its width (DETR's and YOLOS's heads
    score a "no object" class after the labels), else 0."""
    labels = {getattr(config, "num_labels", None) for _, config in _configs(model, layer)}
    return 1 if width - 1 in labels and width not in labels else 0


def _one_task(model: nn.Module, input: InputSpec | None, num_classes: int) -> list[tuple[str, NodeRecord]]:
    """The heads of the model's first output; a multi-task model's, whose other outputs come from heads of other
    widths, is refused: which task gets new classes is the user's to say."""
    heads, others = _heads_and_others(model, input, num_classes)
    if others:
        first = heads[0][0]
        widths = ", ".join(f"{n} ({w})" for n, w in [(first, _width(model.get_submodule(first))), *others.items()])
        raise SurgeryError(
            f"{type(model).__name__} gives its outputs from heads of different widths: {widths} — say which one "
            f"to replace, e.g. replace_head(model, {num_classes}, layer={first!r})"
        )
    return heads


def _chosen_head(
    model: nn.Module, layer: str, num_classes: int, keep: Mapping[int, int] | None
) -> list[tuple[str, NodeRecord]]:
    """The head named with ``layer=``: a Linear or convolution layer of the model."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        kept = f", keep={dict(keep)!r}" if isinstance(keep, Mapping) and keep else ""
        raise no_such_layer(
            model, layer, lambda name: f"replace_head(model, {num_classes}{kept}, layer={name!r})", last=True
        ) from None
    if not _is_layer(module):
        raise SurgeryError(f"layer={layer!r} is a {type(module).__name__}, not a Linear or convolution layer")
    return [(layer, _module_record(layer, module))]


def _configs(model: nn.Module, layer: str) -> list[tuple[str, Any]]:
    """The configs (``config`` attributes) of the modules holding ``layer``, with their names."""
    found: list[tuple[str, Any]] = []
    for where, config, is_config in guard_holders(model, layer):
        if is_config and all(config is not c for _, c in found):
            found.append((where, config))
    return found


def _label_names(
    model: nn.Module, layer: str, keep: Mapping[int, int]
) -> dict[str, tuple[dict[Any, Any], dict[int, str]]]:
    """Per config holding ``layer``: its ``id2label`` and the names it gives the kept classes (before the edit)."""
    names = {}
    for where, config in _configs(model, layer):
        id2label = getattr(config, "id2label", None)
        if isinstance(id2label, Mapping):  # a default name (LABEL_1) says nothing: the new index's default
            kept = {new_i: str(id2label.get(old_i, f"LABEL_{new_i}")) for new_i, old_i in keep.items()}
            kept = {i: f"LABEL_{i}" if n == f"LABEL_{keep[i]}" else n for i, n in kept.items()}
            names[where] = (dict(id2label), kept)
    return names


def _labels_after(
    model: nn.Module, layer: str, before: Mapping[str, tuple[dict[Any, Any], dict[int, str]]], num_classes: int
) -> list[ParamReport]:
    """A Hugging Face config's labels for the new classes: kept classes keep their names, the others are
    ``LABEL_i`` (as transformers' ``num_labels`` setter names them all); a ``problem_type`` the new count
    contradicts (``regression`` with several outputs) is cleared, for transformers to infer it."""
    changes = []
    for where, config in _configs(model, layer):
        if where in before and getattr(config, "id2label", None) is not None:
            old, kept = before[where]
            id2label = {i: kept.get(i, f"LABEL_{i}") for i in range(num_classes)}
            if old != id2label:
                config.id2label = id2label
                config.label2id = {name: i for i, name in id2label.items()}
                shown = ", ".join(f"{i}: {n!r}" for i, n in list(id2label.items())[:4])
                more = ", ..." if num_classes > 4 else ""
                changes.append(
                    ParamReport(
                        f"{where}.id2label",
                        ParamChange.SETTING,
                        None,
                        None,
                        "",
                        f"{{{shown}{more}}}: name the new classes with model.config.id2label = {{0: 'cat', ...}}",
                    )
                )
        problem = getattr(config, "problem_type", None)
        if (problem == "regression" and num_classes > 1) or (
            problem in ("single_label_classification", "multi_label_classification") and num_classes == 1
        ):
            config.problem_type = None
            changes.append(
                ParamReport(
                    f"{where}.problem_type",
                    ParamChange.SETTING,
                    None,
                    None,
                    "",
                    f"{problem!r} → None: transformers infers it from num_labels and the labels' dtype",
                )
            )
    return changes


def _check_keep(keep: Any) -> None:
    """Refuse a ``keep`` that is not ``{new class: old class}`` ints, with one built from the old classes given."""
    if keep is None or (isinstance(keep, Mapping) and all(type(i) is int for i in (*keep, *keep.values()))):
        return
    olds = (
        [o for o in (keep.values() if isinstance(keep, Mapping) else keep) if type(o) is int]
        if isinstance(keep, (list, tuple, Mapping))
        else []
    )
    raise InputError(
        f"keep={keep!r} — keep maps each new class to the old class whose row it carries, {{new: old}} in ints: "
        f"e.g. keep={dict(enumerate(olds)) or {0: 0}}"
    )


def append_head(
    model: nn.Module, *modules: nn.Module, inplace: bool = False, input: InputSpec | None = None
) -> SurgeryResult:
    """Add layers after the classifier: ``fc`` becomes ``Sequential(fc, *modules)``.

    The old classifier's weights are kept (their names move: ``fc.weight`` →
    ``fc.0.weight``); the new layers are reported with their initialiser.
    They are put in the classifier's mode: appended to a model in ``eval()``,
    a ``Dropout`` or ``BatchNorm1d`` among them is in ``eval()`` too.
    When the appended layers change the output's width, the class counts
    kept on the modules holding the head and their configs follow it
    (``config.num_labels``, ``num_classes``: ``setting`` changes), as in
    :func:`replace_head`.  A model with several heads (:func:`head_layers`)
    is refused: which of them to extend is the user's to say.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 5))
    >>> r = append_head(net, nn.ReLU(), nn.Linear(5, 2))
    >>> [c.name for c in r.changes]
    ['0.0.weight', '0.0.bias', '0.2.weight', '0.2.bias']
    """
    if not modules:
        raise InputError(
            "append_head needs at least one module to append, e.g. append_head(model, nn.Linear(1000, 10))"
        )
    for m in modules:
        if isinstance(m, type) and issubclass(m, nn.Module):  # nn.ReLU for nn.ReLU()
            args = (
                "()"
                if not any(p.default is p.empty for p in list(inspect.signature(m).parameters.values()))
                else "(...)"
            )
            raise InputError(
                f"append_head: {as_written(m)} is a class — pass a layer: append_head(model, {as_written(m)}{args})"
            )
        if not isinstance(m, nn.Module):
            raise InputError(f"append_head: {m!r} is not an nn.Module")
    edited = _copy(model, inplace, input)
    heads = _heads(edited, input)
    name, rec = heads[0]
    if not name:  # the model's own parameters make the output: nothing to wrap inside it
        raise _not_a_layer(edited, name, rec, None)
    if len(heads) > 1:
        listed = ", ".join(n for n, _ in heads)
        raise SurgeryError(
            f"{type(edited).__name__} has {len(heads)} heads ({listed}): appending after one changes the width of "
            f"one of the outputs they make together — wrap each by hand, e.g. model.{heads[0][0]} = "
            f"nn.Sequential(model.{heads[0][0]}, ...), or replace them all with replace_head(model, num_classes)"
        )
    checked_on = _running_input(edited, input)  # before the edit: an input it runs on now, to check it after
    old = edited.get_submodule(name)
    # in the mode of the layer they extend: a Dropout appended to a model in eval() must not drop in its evaluation
    _set_submodule(edited, name, nn.Sequential(old, *modules).train(old.training))
    changes: list[ParamReport] = [
        ParamReport(f"{name}.0.{p}", ParamChange.KEPT, tuple(t.shape), tuple(t.shape), "", "", f"{name}.{p}")
        for p, t in old.named_parameters()
    ]
    for i, m in enumerate(modules, start=1):
        for p, t in m.named_parameters():
            owner = m.get_submodule(p.rpartition(".")[0]) if "." in p else m
            init = named_init(owner, p.rpartition(".")[2], t)  # the values the user's layer holds
            changes.append(ParamReport(f"{name}.{i}.{p}", ParamChange.NEW, None, tuple(t.shape), init))
    before, after = _width(old), next((w for w in map(_width, reversed(modules)) if w is not None), None)
    guards = [(name, _CLASS_GUARDS, before, after)] if before is not None and after is not None else []
    rows = list(_with_guards(edited, changes, guards))
    for i, row in enumerate(rows):  # transformers rebuilds the classifier from the config: a plain layer
        if row.status is ParamChange.SETTING and row.name.endswith("config.num_labels"):
            rows[i] = dataclasses.replace(
                row,
                message=f"{row.message} (from_pretrained builds a plain classifier for it: the appended layers are "
                "not restored from save_pretrained — save the model with torch.save, or load its state_dict into "
                "this model)",
            )
    if before is not None:
        _check_it_runs(edited, name, checked_on, (before, after), "extended")
    return SurgeryResult(edited, tuple(rows))
