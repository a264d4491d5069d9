"""The heads of a model, found in its traced graph, and what messages about them say.

:func:`heads_of` finds the Linear or convolution layers whose outputs make a
model's logits (see :mod:`torchsurgeon.heads` for what counts as a head);
:func:`heads_and_others` also returns the outputs that are no classifier (an
embedding a two-tower model compares, hidden states).  :func:`not_a_layer` and
:func:`after_the_model` write the refusals and the calls that run instead, for
:func:`~torchsurgeon.heads.replace_head` and
:func:`~torchsurgeon.heads.append_head`, which use this module.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

import networkx as nx
import torch
from torch import nn

from .analysis import paramcount
from .arguments import ExampleInputs, forward_parameters, tensor_inputs
from .configinput import configured_input, default_input
from .errors import SurgeryError, TorchSurgeonError, TraceError
from .graph import NodeRecord, build_graph, fx_node, graph_module_of, index_of, node_record, node_records
from .graphreaders import weights_owner
from .headless import features_only
from .ignoredinputs import check_input_traced
from .modelreport import ModelReport
from .readers import guessed_input, refused_guess_hint
from .resize import hands_on_features
from .shapes import meta_copy
from .shapespec import EXAMPLE_TOKENS, InputSpec
from .trace import trace
from .wrappers import unwrap_model

__all__ = (
    "BOX_COORDINATES",
    "after_the_model",
    "box_pair",
    "head_graph",
    "heads_and_others",
    "heads_of",
    "is_layer",
    "module_record",
    "not_a_layer",
    "running_input",
    "running_report",
    "width_of",
)


def head_graph(model: nn.Module, input: InputSpec | None, call: str = "head_layers(model, {input})") -> nx.DiGraph:
    """The traced graph of ``model``, with ``input`` (or a vision model's own, from its config) when given;
    ``call``: the user's call, for the input an error asks of it (:func:`~torchsurgeon.readers.refused_guess_hint`).

    Examples
    --------
    >>> from torch import nn
    >>> G = head_graph(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2))
    >>> G.number_of_nodes()
    4
    """
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
            named = _last_layer(model) if tried and "layer=" not in call and call.startswith("replace_head(") else None
            or_named = f"; or name the head, {call.format(input=f'layer={named!r}')}" if named else ""
            raise SurgeryError(
                f"{type(model).__name__} cannot be traced without an input ({str(exc).splitlines()[0][:300]}){tried} "
                f"— pass one it accepts, {refused_guess_hint(guess, call=call)}{or_named}"
            ) from exc
    return build_graph(trace(model, inputs=tensor_inputs(input), example_inputs=ExampleInputs(model, input, 1)))


def _last_layer(model: nn.Module) -> str | None:
    """The last Linear or convolution of ``model`` in the order of its modules, the head of most models that are
    not traced; of a class score and its box regressor (:func:`box_pair`), the class score."""
    name = next(
        (n for n, m in reversed(list(model.named_modules())) if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))),
        None,
    )
    pair = box_pair(model, name) if name is not None else None
    return pair[0] if pair is not None else name


BOX_COORDINATES = 4


def box_pair(model: nn.Module, layer: str) -> tuple[str, str] | None:
    """``(class score, box regressor)`` when the Linear ``layer`` is one of them: siblings reading the same
    features, the regressor giving :data:`BOX_COORDINATES` per class (torchvision's ``FastRCNNPredictor``:
    ``cls_score`` 91, ``bbox_pred`` 364); None otherwise.  A layer with a twin of its shape beside it is no
    such pair but an attention's projections (CLIP's ``AttentionPool2d``: ``q``, ``k`` and ``v``, 4 x as wide
    as ``proj``).

    Examples
    --------
    >>> head = nn.Sequential(nn.Linear(8, 3), nn.Linear(8, 12))
    >>> box_pair(head, "1"), box_pair(head, "0"), box_pair(nn.Sequential(nn.Linear(8, 3)), "0")
    (('0', '1'), ('0', '1'), None)
    """
    parent, _, own = layer.rpartition(".")
    head = model.get_submodule(layer)
    if not isinstance(head, nn.Linear):
        return None
    siblings = [(n, m) for n, m in model.get_submodule(parent).named_children() if n != own]
    shapes = [(m.in_features, m.out_features) for _, m in siblings if isinstance(m, nn.Linear)]
    if (head.in_features, head.out_features) in shapes:
        return None
    for name, sibling in siblings:
        if isinstance(sibling, nn.Linear) and sibling.in_features == head.in_features:
            other = f"{parent}.{name}" if parent else name
            if shapes.count((sibling.in_features, sibling.out_features)) != 1:
                continue
            if sibling.out_features == BOX_COORDINATES * head.out_features:
                return layer, other
            if head.out_features == BOX_COORDINATES * sibling.out_features:
                return other, layer
    return None


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


def width_of(module: nn.Module) -> int | None:
    """Outputs of a Linear or Conv layer (the last one inside a container), else None.

    Examples
    --------
    >>> from torch import nn
    >>> width_of(nn.Linear(8, 5)), width_of(nn.Conv2d(8, 3, 1)), width_of(nn.ReLU())
    (5, 3, None)
    """
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.Linear):
            return m.out_features
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.out_channels
    return None


def is_layer(module: nn.Module) -> bool:
    """Whether ``module`` can be a head: a Linear or a convolution that is not transposed.

    Examples
    --------
    >>> from torch import nn
    >>> is_layer(nn.Linear(8, 5)), is_layer(nn.ReLU())
    (True, False)
    """
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd)
    )


def heads_of(
    model: nn.Module, input: InputSpec | None, call: str = "head_layers(model, {input})"
) -> list[tuple[str, NodeRecord]]:
    """Each head's module name and the graph node that uses its weights (module docstring); ``call`` as in
    :func:`head_graph`.

    Examples
    --------
    >>> from torch import nn
    >>> [name for name, _ in heads_of(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2))]
    ['1']
    """
    return heads_and_others(model, input, call=call)[0]


def heads_and_others(
    model: nn.Module,
    input: InputSpec | None,
    num_classes: int | None = None,
    call: str = "head_layers(model, {input})",
) -> tuple[list[tuple[str, NodeRecord]], dict[str, int | None]]:
    """:func:`heads_of`, and the layers of another width that give the model's other outputs as they are (a
    multi-task model's other heads), with their widths; a two-tower model's embedding is refused
    (:func:`_no_embedding`); ``call`` as in :func:`head_graph`.

    Examples
    --------
    >>> from torch import nn
    >>> heads, others = heads_and_others(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2))
    >>> [name for name, _ in heads], others
    (['1'], {})
    """
    model = unwrap_model(model)
    _sentence_embeddings(model, num_classes)
    G = head_graph(model, input, call)
    outputs = _output_nodes(G)
    removed = _removed_classifier(model, G, outputs[0]) if outputs else None
    if removed is not None:  # timm's num_classes=0, model.fc = nn.Identity(): the new head goes there
        return [removed], {}
    owners = _owners(G, outputs[0], through_any=True) if outputs else []
    if not owners:
        raise SurgeryError(
            f"{type(model).__name__}: no layer with weights produces the output — "
            "there is no classifier to replace; use append_head(model, ...) to add one"
        )
    layers = [(name, rec) for name, rec in owners if name and is_layer(model.get_submodule(name))]
    if not layers:
        _no_embedding(model, G, owners[:1], outputs, num_classes)
        return owners[:1], {}  # not a Linear or Conv layer: replace_head says what to do
    width = width_of(model.get_submodule(layers[0][0]))
    heads = dict((name, rec) for name, rec in layers if width_of(model.get_submodule(name)) == width)
    _no_embedding(model, G, list(heads.items()), outputs, num_classes)
    others: dict[str, int | None] = {}
    for i, (graph, node) in enumerate([(G, n) for n in outputs[1:]] + _outputs_in_training(model, input)):
        for name, rec in _owners(graph, node, through_any=False):  # an output a layer gives as it is
            if _feeds(graph, rec.name, heads):  # a hidden state (output_hidden_states=True): the heads read it
                continue
            layer = model.get_submodule(name) if name else model
            if name not in heads and is_layer(layer) and width_of(layer) == width:
                heads[name] = rec
            elif name not in heads and is_layer(layer) and i < len(outputs) - 1:  # in eval too: another task
                others[name] = width_of(layer)
    output = next((rec.name for rec in node_records(G) if rec.op == "output"), None)
    reaching = nx.ancestors(G, output) if output is not None else set()
    used = {p for rec in node_records(G) if rec.name in reaching for p in rec.param_names}
    for name, module in model.named_modules():  # as wide, reaching no output: an auxiliary head only a loss reads
        if name not in heads and is_layer(module) and width_of(module) == width:
            if not any(f"{name}.{p}" in used for p, _ in module.named_parameters()):
                heads[name] = module_record(name, module)
    return list(heads.items()), others


_SENTENCE_MODULES = ("sentence_transformers.sentence_transformer.modules", "sentence_transformers.models")
"""Where sentence-transformers keeps its ``Dense`` module: since 6.0, then before (a deprecated alias in 6)."""


def _sentence_embeddings(model: nn.Module, num_classes: int | None) -> None:
    """Refuse a sentence-transformers ``SentenceTransformer``: its output (a dict of the features its modules
    hand on) holds the sentence embedding, which its ``encode`` returns and similarities are computed on, not class
    scores; with the edits that do make a classifier (a ``Dense`` appended, its last ``Dense`` named)."""
    kinds = [k for k in type(model).__mro__ if k.__module__.startswith("sentence_transformers.")]
    if not any(k.__name__ == "SentenceTransformer" for k in kinds):
        return
    width: Any = None
    for method in ("get_embedding_dimension", "get_sentence_embedding_dimension"):  # sentence-transformers 6, 5
        if callable(getattr(model, method, None)):
            width = getattr(model, method)()
            break
    shown = width if type(width) is int else "model.get_sentence_embedding_dimension()"
    classes = num_classes if num_classes is not None else "num_classes"
    home = next((m for m in _SENTENCE_MODULES if m in sys.modules), _SENTENCE_MODULES[-1])
    last, module = ([("", model), *model.named_children()])[-1]
    layers = [n for n, m in module.named_modules() if is_layer(m) and width_of(m) == width] if last else []
    fix = (
        f"; or, if {last} ({type(module).__name__}) is your classifier, replace its layer: "
        f"replace_head(model, {classes}, layer='{last}.{layers[-1]}')"
        if layers
        else ""
    )
    raise SurgeryError(
        f"{type(model).__name__} (sentence-transformers) makes sentence embeddings, not class scores: its output's "
        f"'sentence_embedding' ({shown} wide) is what encode() returns and similarities are computed on — there is "
        f"no classifier to replace. To classify with it, add a layer making the class scores after its last module "
        f"(it saves and loads with the model): model.append({home}.Dense({shown}, {classes}, "
        f"activation_function=None)), whose scores are then its output's 'sentence_embedding'{fix}"
    )


def _removed_classifier(model: nn.Module, G: nx.DiGraph, output: str) -> tuple[str, NodeRecord] | None:
    """The ``nn.Identity`` standing where a classifier was removed (timm's ``num_classes=0``, torchvision's
    ``model.fc = nn.Identity()``), with its node: the one closest to the output ``output`` among the nodes it is
    handed on through (dropout, flatten, views); None when a Linear or convolution layer gives that output through
    such nodes (the head is that layer), or no ``nn.Identity`` is met before other ops.

    The layer with weights before it makes features (through an activation and a pooling), not class scores: a
    new head replacing it would throw its pretrained weights away; the new head goes in the empty place instead.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Identity())
    >>> G = head_graph(model, (3, 8, 8))
    >>> _removed_classifier(model, G, _output_nodes(G)[0])[0]
    '4'
    """
    if any(name and is_layer(model.get_submodule(name)) for name, _ in _owners(G, output, through_any=False)):
        return None
    node = fx_node(G, output)
    while True:
        if node.op == "call_module" and isinstance(index_of(G).modules.get(str(node.target)), nn.Identity):
            return str(node.target), node_record(G, node.name)
        inputs = node.all_input_nodes
        if not _passes_on(G, node) or len(inputs) != 1 or inputs[0].op == "placeholder":
            return None
        node = inputs[0]


_PRODUCTS = frozenset({"matmul", "mm", "bmm", "einsum", "tensordot", "inner", "dot", "cosine_similarity"})
"""Ops that multiply two tensors along their features: two embeddings compared, their width contracted."""


def _output_width(model: nn.Module, name: str, rec: NodeRecord) -> int | None:
    """The width of what a weights owner gives: a layer's outputs, a bare ``x @ proj``'s last dimension, a
    norm's features; None when unknown."""
    module = model.get_submodule(name) if name else model
    if is_layer(module):
        return width_of(module)
    bare = _bare_parameter(name, rec)
    if bare is not None:
        weight = model.get_parameter(bare)
        return int(weight.shape[-1]) if weight.dim() >= 2 else None
    shape = getattr(module, "normalized_shape", None)
    return int(shape[-1]) if isinstance(shape, tuple) and shape else width_of(module)


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
    from a model input the head does not read (a two-tower model: CLIP's image and text features); else ``""``.
    The head's own product (a bare ``x @ self.proj``, square when the tower is as wide as its embedding) is no
    comparison: its other operand is the head's input."""
    after = nx.descendants(G, head[1].name) | {head[1].name}
    for node in sorted(after & (nx.ancestors(G, outputs[0]) | {outputs[0]}) - {head[1].name}):
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
    if bare is not None and not is_layer(module):
        return f"{bare} (a bare parameter)"
    return f"{name or 'the model itself'} ({type(module).__name__})"


def _embedding_message(
    model: nn.Module, name: str, rec: NodeRecord, width: int, reason: str, num_classes: int | None
) -> str:
    """The refusal of :func:`_no_embedding`, with the edits that do make a classifier: one tower's own head
    (the model's child holding the head), or the layer named with ``layer=``."""
    layer = is_layer(model.get_submodule(name) if name else model)
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


def module_record(name: str, module: nn.Module) -> NodeRecord:
    """A record standing for a head the graph has no node for (named with ``layer=``, or read only by a loss).

    Examples
    --------
    >>> from torch import nn
    >>> module_record("fc", nn.Linear(8, 5)).module_type
    'Linear'
    """
    return NodeRecord(name, "call_module", name, name, type(module).__name__)


def _feeds(G: nx.DiGraph, node: str, heads: Mapping[str, NodeRecord]) -> bool:
    """Whether the value of ``node`` reaches one of ``heads`` (by their parameters): a layer before the classifier,
    whose output the model also returns (a hidden state), is no head of another task."""
    params = {f"{name}.{p}" for name in heads for p, _ in index_of(G).modules[name].named_parameters()}
    return any(params.intersection(node_record(G, n).param_names) for n in nx.descendants(G, node))


def _outputs_in_training(model: nn.Module, input: InputSpec | None) -> list[tuple[nx.DiGraph, str]]:
    """The outputs of a model in ``eval()`` traced in training mode (GoogLeNet's auxiliary logits), but its first;
    on a weightless copy (the model's own modes stay as they are)."""
    if all(m.training for m in model.modules()):
        return []
    try:
        G = head_graph(meta_copy(model).train(), input)
    except Exception:  # a model whose training forward cannot be traced: its eval outputs are what there is
        return []
    return [(G, name) for name in _output_nodes(G)[1:]]


def not_a_layer(
    model: nn.Module,
    name: str,
    rec: NodeRecord,
    num_classes: int | None,
    output: Any = None,
    did: str = "replace",
    *,
    ran_on: Any = None,
) -> SurgeryError:
    """The error for a head that is not a Linear/Conv module: which weights, and what to do instead (``output``:
    the model's output shape, when known, on the input ``ran_on``, for a layer after the whole model; ``did``: what
    was asked, ``"replace"`` or ``"append to"``); a normalisation making a backbone's features says the model has
    no classifier (:func:`~torchsurgeon.headless.features_only`)."""
    holder = model.get_submodule(name) if name else model
    where = f"{name} ({type(holder).__name__})" if name else f"the model itself ({type(holder).__name__})"
    bare = _bare_parameter(name, rec)
    classes = num_classes if num_classes is not None else "num_classes"
    if bare is not None:
        weight = model.get_parameter(bare)
        features = weight.shape[-1] if weight.dim() else "features"
        start = (
            f"the output of {type(model).__name__} is computed by {rec.module_type} from the bare parameter "
            f"{bare} {tuple(weight.shape)} of {where}, not by a Linear or Conv layer — there is no layer to swap"
        )
        if isinstance(output, (tuple, dict)) and not all(isinstance(d, int) for d in output):
            return SurgeryError(f"{start}; {_several_outputs(output, features, classes)}")
        return SurgeryError(
            f"{start}; add a classifier after it instead: nn.Sequential(model, nn.Linear({features}, {classes}))"
            + (f" or append_head(model, nn.Linear({features}, {classes}))" if name else "")
        )
    no_classifier = features_only(model, name, output, num_classes, did, ran_on)
    if no_classifier is not None:
        return no_classifier
    width = width_of(holder)
    if isinstance(holder, nn.modules.conv._ConvTransposeNd) and width is not None:
        return SurgeryError(
            f"{where} makes the output: a transposed convolution, which replace_head does not swap (Linear and "
            f"convolution layers only) — replace it by hand"
            + after_the_model(output, width, num_classes if num_classes is not None else width)
        )
    wide = output[1] if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], int) else None
    instead = after_the_model(output, wide, num_classes if num_classes is not None else wide) if wide else ""
    return SurgeryError(f"{where} is the head but not a Linear or Conv layer — replace it by hand{instead}")


def _several_outputs(output: tuple[Any, ...] | dict[Any, Any], features: Any, classes: Any) -> str:
    """What to do instead of a classifier after a model whose output is several tensors (open_clip's CoCa image
    tower: pooled features and tokens), which ``nn.Sequential(model, nn.Linear(...))`` cannot take.

    Examples
    --------
    >>> _several_outputs(((1, 512), (1, 255, 512)), 512, 5)
    'the model returns ((1, 512), (1, 255, 512)), several tensors, which nn.Sequential(model, nn.Linear(512, 5)) \
cannot take: apply nn.Linear(512, 5) to output [0] in a forward of your own'
    """
    items = output.items() if isinstance(output, dict) else enumerate(output)
    pooled = [key for key, shape in items if isinstance(shape, tuple) and len(shape) == 2 and shape[-1] == features]
    which = f"output [{pooled[0]!r}]" if len(pooled) == 1 else f"the {features}-wide output"
    return (
        f"the model returns {output}, several tensors, which nn.Sequential(model, nn.Linear({features}, {classes})) "
        f"cannot take: apply nn.Linear({features}, {classes}) to {which} in a forward of your own"
    )


def running_input(model: nn.Module, input: InputSpec | None) -> tuple[InputSpec | None, Any]:
    """The input given, a vision model's own (from its config), an image of its first convolution's channels
    (:func:`~torchsurgeon.readers.guessed_input`), a timm model's (its ``pretrained_cfg``), or 16 token ids for a
    forward taking ``input_ids`` (a text classifier), the first the model runs on now, with the output shape it
    gives there; ``(None, None)`` when it runs on none.

    Examples
    --------
    >>> from torch import nn
    >>> running_input(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2))
    ((3, 2, 2), (1, 5))
    """
    candidate, report = running_report(model, input)
    return candidate, None if report is None else report.output_shape


def running_report(model: nn.Module, input: InputSpec | None) -> tuple[InputSpec | None, ModelReport | None]:
    """:func:`running_input`'s input, with the whole report of the model on it (its layers' shapes).  After the
    guessed image, the one a timm model's ``pretrained_cfg`` describes (:func:`~torchsurgeon.readers.configured_input`:
    DINOv2 takes 518 × 518 alone).

    Examples
    --------
    >>> from torch import nn
    >>> running_report(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2))[1].layer("1").input_shape
    (1, 12)
    """
    ids = {"input_ids": EXAMPLE_TOKENS} if any(p.name == "input_ids" for p in forward_parameters(model)) else None
    guess = guessed_input(model)
    configured = configured_input(model)
    for candidate in (input, default_input(model), guess, configured if configured != guess else None, ids):
        if candidate is None:
            continue
        try:
            report = paramcount(model, candidate, crosscheck="never")
        except TorchSurgeonError:
            continue
        if not report.invalid:
            return candidate, report
    return None, None


def after_the_model(output: Any, before: int, after: int | None, given: str | None = None) -> str:
    """A layer after the whole model that maps its ``before`` outputs to ``after`` (or the layers ``given``), as a
    call that runs: ``nn.Sequential(model, nn.Conv2d(3, 7, kernel_size=1))``; empty when the output is no tensor
    with those classes in dim 1.

    Examples
    --------
    >>> after_the_model((1, 1000), 1000, 10).split(": ")[-1]
    'nn.Sequential(model, nn.Linear(1000, 10))'
    """
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
