"""Parameters a model's settings switch off: unused by the trace, and by any real forward too.

A parameter no traced node uses makes the traced graph doubtful (a branch the
trace may have lost, :func:`torchsurgeon.crosscheck.doubts`), and the graph is
then checked against a forward of the real model on ``meta`` (a copy of the
model and a forward: MONAI's UNETR 2D paid about 20–30 of its 80 ms for it).  Many
are unused by design: MONAI's ``TransformerBlock`` builds ``norm_cross_attn``
and calls it only ``if self.with_cross_attention:``, a setting of the block
that is False in UNETR.  Such a branch is decided by the module's own settings,
never by a traced value, so the trace takes it as a real forward does.

:func:`switched_off` finds them by reading the source of the parent's class
(and the classes it derives from): a submodule is switched off when the
methods ``forward`` runs (itself and those it reaches through
``self.<name>``) use it (``self.<name>``) only in branches of an ``if`` (or of
``x if test else y``) whose test reads only plain settings of the module
(instance attributes that are bools, numbers, strings or None:
``self.training`` too), constants, ``not``, ``and``/``or`` and comparisons,
and that test sends the forward the other way (torchvision's GoogLeNet runs
``aux1`` only ``if self.training``), or not at all (MONAI's
``EfficientNetEncoder`` overrides the ``forward`` of its base class and
returns its features before the head that class builds).  ``self.<name> is not
None`` reads it without running it.  No file of the model's classes may name
the attribute (``x.<name>``), nor a method of the parent's that uses it.  Anything
else (a test that reads a tensor or calls a function, ``self`` given to a
function or iterated, ``getattr(self, ...)``, ``self.children()``,
``super()``, hooks on the module, a ``forward`` set on the instance, source
that cannot be read) leaves the parameter doubtful, as before.  A function in
another file that reaches the submodule of a module it is given is not seen.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import linecache
import operator
import re
from collections.abc import Iterable
from typing import Any

from torch import nn

__all__ = ("switched_off",)

_PLAIN = (bool, int, float, str, type(None))
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_WALKS = frozenset({"children", "named_children", "modules", "named_modules", "_modules", "__getattr__"})
_UNKNOWN = object()


def switched_off(model: nn.Module, unused: Iterable[str]) -> tuple[str, ...]:
    """The parameters of ``unused`` (qualified names) whose module, or a module holding it, its parent's ``forward``
    skips by the parent's own settings.

    Examples
    --------
    >>> from monai.networks.blocks.transformerblock import TransformerBlock
    >>> block = TransformerBlock(hidden_size=8, mlp_dim=16, num_heads=2)  # its forward: if self.with_cross_attention:
    >>> switched_off(block, ["norm_cross_attn.weight", "norm_cross_attn.bias"])
    ('norm_cross_attn.weight', 'norm_cross_attn.bias')
    >>> block.with_cross_attention = True  # the branch runs: its parameters are unused only if the trace lost it
    >>> switched_off(block, ["norm_cross_attn.weight", "norm_cross_attn.bias"])
    ()
    """
    modules: dict[str, nn.Module] | None = None
    others: frozenset[type] = frozenset()
    found = []
    for name in unused:
        path = name.rpartition(".")[0]
        while path:
            if modules is None:
                modules = dict(model.named_modules(remove_duplicate=False))
                others = frozenset(type(m) for m in modules.values() if not type(m).__module__.startswith("torch."))
            parent_path, _, attribute = path.rpartition(".")
            parent = modules.get(parent_path)
            if parent is not None and _skips(parent, attribute, others):
                found.append(name)
                break
            path = parent_path
    return tuple(found)


def _skips(parent: nn.Module, attribute: str, others: frozenset[type]) -> bool:
    """Whether a forward never reaches ``parent.<attribute>`` with ``parent``'s settings as they are: what its
    ``forward`` runs uses it only in branches its settings skip (or not at all), and no file of the model's classes
    (``others``) reads the attribute or a method of ``parent`` that uses it."""
    kind: type = type(parent)
    if parent._forward_hooks or parent._forward_pre_hooks or "forward" in vars(parent):
        return False
    if kind.__module__.startswith("torch."):  # containers: nn.Sequential runs its modules by iterating itself
        return False
    found = _guards(kind, attribute)  # the parent's class first: the files of the others may be long
    if found is None or not all(any(_value(test, parent) is skip for test, skip in guards) for guards in found[0]):
        return False
    return not any(_names(other, name) for name in (attribute, *found[1]) for other in others)


def _classes(cls: type) -> tuple[tuple[type, ast.ClassDef], ...] | None:
    """The parsed definition of each class of ``cls``'s MRO below ``nn.Module``; None when one cannot be read."""
    parsed = []
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            break
        tree = _class_tree(klass)
        if tree is None:
            return None
        parsed.append((klass, tree))
    return tuple(parsed)


@functools.lru_cache(maxsize=1024)
def _class_source(klass: type) -> str | None:
    """The source of a class defined at the top level of its file, found by its ``class`` line (``inspect.getsource``
    parses the whole file each time: a tenth of a second for one of transformers' or smp's larger files)."""
    name, file = klass.__qualname__, _source_file(klass)
    if file is None or "." in name:
        return None
    lines = linecache.getlines(file)
    starts = [i for i, line in enumerate(lines) if line.startswith("class ") and re.match(rf"class {name}\b", line)]
    if len(starts) != 1:  # not found, or defined twice (one per branch of an if): not guessed
        return None
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i][:1] not in ("", " ", "\t", "\n", "#")), None)
    return "".join(lines[starts[0] : end])


@functools.lru_cache(maxsize=1024)
def _class_tree(klass: type) -> ast.ClassDef | None:
    source = _class_source(klass)
    try:
        tree = ast.parse(source) if source is not None else None
    except SyntaxError:  # a string at the margin inside the class cut it short
        return None
    return tree.body[0] if tree is not None and tree.body and isinstance(tree.body[0], ast.ClassDef) else None


@functools.lru_cache(maxsize=4096)
def _names(cls: type, attribute: str) -> bool:
    """Whether the file of ``cls`` (or of a class it derives from) may reach a submodule called ``attribute`` of
    another module: reads ``x.<attribute>`` (``self.<attribute>`` is the class's own) or holds the name as a string,
    anywhere in the file (its functions too: transformers' attention functions take their module); or a file that
    cannot be read.  A text search first: the file is parsed only where it finds the name."""
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            break
        file = _source_file(klass)
        if file is None or _named_in_file(file, attribute):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _source_file(klass: type) -> str | None:
    try:
        return inspect.getsourcefile(klass)
    except (OSError, TypeError):
        return None


@functools.lru_cache(maxsize=64)
def _text(file: str) -> str:
    return "".join(linecache.getlines(file))


@functools.lru_cache(maxsize=4096)
def _named_in_file(file: str, attribute: str) -> bool:
    text = _text(file)
    if not text:
        return True
    if not _named_in(text, attribute):  # most files: no parse
        return False
    names = _names_read(file)
    return names is None or attribute in names


@functools.lru_cache(maxsize=256)
def _names_read(file: str) -> frozenset[str] | None:
    """The attributes a file's code reads of anything but ``self`` (``model.aux1 = None`` writes), and its strings;
    None when it cannot be parsed."""
    try:
        tree = ast.parse(_text(file))
    except (SyntaxError, ValueError):
        return None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store) and not _on_self(node):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return frozenset(names)


def _named_in(text: str, attribute: str) -> bool:
    if attribute not in text:  # most files: a substring search, far cheaper than the expression below
        return False
    word = re.escape(attribute)
    return re.search(rf"(?<!\bself)\.\s*{word}\b|[\"']{word}[\"']", text) is not None


@functools.lru_cache(maxsize=1024)
def _guards(cls: type, attribute: str) -> tuple[tuple[tuple[tuple[ast.expr, bool], ...], ...], tuple[str, ...]] | None:
    """For each use of ``self.<attribute>`` in the methods ``cls.forward`` runs (itself and those it reaches through
    ``self.<name>``), the plain tests around it, each with the value that skips the use; and the other methods that
    use it (an overridden ``forward``, a ``forward_head``: not run by ``forward``, but another module could call
    them).  None when a method ``forward`` runs reaches submodules another way or calls ``super()``, or the source
    cannot be read."""
    classes = _classes(cls)
    if classes is None:
        return None
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for _, tree in classes:  # as Python finds them: the first class of the MRO that defines the name
        for m in tree.body:
            if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name not in methods:
                methods[m.name] = m
    forward = methods.get("forward")
    if forward is None:
        return None
    reached, todo = {"forward"}, [forward]
    while todo:
        for node in ast.walk(todo.pop()):
            if isinstance(node, ast.Name) and node.id == "super":
                return None
            if isinstance(node, ast.Attribute) and _on_self(node) and node.attr in methods and node.attr not in reached:
                reached.add(node.attr)
                todo.append(methods[node.attr])
    found: list[tuple[tuple[ast.expr, bool], ...]] = []
    for name in reached:
        uses = _uses(methods[name], attribute)
        if uses is None:
            return None
        found.extend(_plain_guards(path) for path in uses)
    others = tuple(n for n, m in methods.items() if n not in reached and n != "__init__" and _uses(m, attribute) != [])
    return tuple(found), others


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id == "self"


def _uses(method: ast.AST, attribute: str) -> list[list[ast.AST]] | None:
    """The paths from ``method`` down to each ``self.<attribute>`` in it; None when the method reaches submodules
    another way (``self`` itself iterated, indexed or given to a function, ``getattr(self, ...)``,
    ``self.children()``, the attribute's name as a string)."""
    uses: list[list[ast.AST]] = []

    def visit(node: ast.AST, path: list[ast.AST]) -> bool:
        if isinstance(node, ast.Attribute) and _on_self(node):
            if node.attr in _WALKS:
                return False
            if node.attr == attribute:
                uses.append([*path, node])
            return True
        if isinstance(node, ast.Name) and node.id == "self":  # ``for m in self``, ``helper(self, x)``: any submodule
            return False
        if _none_test(node):  # ``if self.aux is not None:`` reads the attribute, runs nothing
            return True
        if isinstance(node, ast.Constant) and node.value == attribute:
            return False
        return all(visit(child, [*path, node]) for child in ast.iter_child_nodes(node))

    return uses if visit(method, []) else None


def _none_test(node: ast.AST) -> bool:
    """``self.<name> is None`` / ``is not None``: a comparison of attributes of ``self`` with None only."""
    return (
        isinstance(node, ast.Compare)
        and all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops)
        and all(
            (isinstance(v, ast.Attribute) and _on_self(v)) or (isinstance(v, ast.Constant) and v.value is None)
            for v in (node.left, *node.comparators)
        )
    )


def _plain_guards(path: list[ast.AST]) -> tuple[tuple[ast.expr, bool], ...]:
    """The ``if`` statements and ``x if test else y`` expressions on ``path`` whose test is plain and holds the use
    in a branch (not in the test): each test, with the value that skips the use."""
    guards = []
    for outer, inner in itertools.pairwise(path):
        if isinstance(outer, (ast.If, ast.IfExp)) and inner is not outer.test and _plain_test(outer.test):
            in_body = any(inner is b for b in outer.body) if isinstance(outer, ast.If) else inner is outer.body
            guards.append((outer.test, not in_body))
    return tuple(guards)


def _plain_test(test: ast.expr) -> bool:
    """Whether ``test`` reads only ``self.<name>``, constants, ``not``, ``and``/``or`` and comparisons."""
    if isinstance(test, ast.Attribute):
        return _on_self(test)
    if isinstance(test, ast.Constant):
        return True
    if isinstance(test, ast.UnaryOp):
        return isinstance(test.op, ast.Not) and _plain_test(test.operand)
    if isinstance(test, ast.BoolOp):
        return all(_plain_test(v) for v in test.values)
    if isinstance(test, ast.Compare):
        return all(type(op) in _COMPARE for op in test.ops) and all(
            _plain_test(v) for v in (test.left, *test.comparators)
        )
    return False


def _value(test: ast.expr, module: nn.Module) -> Any:
    """The truth of a plain test for ``module``, reading only its instance attributes of plain types;
    ``_UNKNOWN`` otherwise (a property, a submodule, a tensor)."""
    value = _evaluate(test, module)
    return _UNKNOWN if value is _UNKNOWN else bool(value)


def _evaluate(test: ast.expr, module: nn.Module) -> Any:
    if isinstance(test, ast.Attribute):
        if hasattr(type(module), test.attr):  # a property or a class attribute: not the instance's own setting
            return _UNKNOWN
        value = vars(module).get(test.attr, _UNKNOWN)
        return value if type(value) in _PLAIN else _UNKNOWN
    if isinstance(test, ast.Constant):
        return test.value
    if isinstance(test, ast.UnaryOp):
        operand = _evaluate(test.operand, module)
        return _UNKNOWN if operand is _UNKNOWN else not operand
    if isinstance(test, ast.BoolOp):
        values = [_evaluate(v, module) for v in test.values]
        if any(v is _UNKNOWN for v in values):
            return _UNKNOWN
        return all(values) if isinstance(test.op, ast.And) else any(values)
    assert isinstance(test, ast.Compare)
    left = _evaluate(test.left, module)
    for op, right_node in zip(test.ops, test.comparators):
        right = _evaluate(right_node, module)
        if left is _UNKNOWN or right is _UNKNOWN:
            return _UNKNOWN
        try:
            if not _COMPARE[type(op)](left, right):
                return False
        except TypeError:
            return _UNKNOWN
        left = right
    return True
