"""Command line: ``torchsurgeon summary MODULE:CALLABLE --input 1,224,224``, ``torchsurgeon memory ...``.

``main(argv) -> int`` is the console script and the pre-commit hook; exit 0
when all is well, 1 when a check fails, 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .analysis import paramcount
from .config import find_pyproject, read_contracts
from .contracts import check_contract
from .dot import RENDER_FORMATS, render
from .errors import ConfigError, InputError, TorchSurgeonError
from .lockfile import write_lock
from .memory import memory_plan, parse_bytes
from .surgery_check import check_surgery

__all__ = ("load_model", "main", "parse_shape")


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1,224,224"`` (or ``"1x224x224"``) into a shape tuple.

    Raises
    ------
    InputError
        When a dimension is not a positive integer.

    Examples
    --------
    >>> parse_shape("1,224,224"), parse_shape("3x32x32")
    ((1, 224, 224), (3, 32, 32))
    """
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    dims = []
    for p in parts:
        try:
            d = int(p)
        except ValueError:
            raise InputError(
                f"--input {text!r}: {p!r} is not an integer — write the shape as C,H,W, e.g. 1,224,224"
            ) from None
        if d <= 0:
            raise InputError(f"--input {text!r}: dimension {d} must be positive — e.g. 1,224,224")
        dims.append(d)
    if not dims:
        raise InputError(f"--input {text!r} is empty — write the shape as C,H,W, e.g. 1,224,224")
    return tuple(dims)


def load_model(spec: str) -> nn.Module:
    """Import ``package.module:callable`` and call it to get a model.

    ``spec`` may also name a model object directly (``mypkg.models:MODEL``).

    Raises
    ------
    ConfigError
        If the module or attribute does not exist, the callable raises, or
        the result is not an ``nn.Module``.

    Examples
    --------
    >>> load_model("torch.nn:Identity")
    Identity()
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"model {spec!r}: expected MODULE:CALLABLE, e.g. torchvision.models:resnet50")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model {spec!r}: cannot import {module_name!r} ({exc}) — check the module path and that it is installed"
        ) from exc
    obj: Any = module
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"model {spec!r}: {module_name} has no attribute {attr!r}") from None
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise ConfigError(f"model {spec!r}: {attr} is neither a callable nor an nn.Module")
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError(f"model {spec!r}: calling {attr}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, nn.Module):
        raise ConfigError(f"model {spec!r}: {attr}() returned {type(obj).__name__}, not an nn.Module")
    return obj


def _lock(args: argparse.Namespace) -> int:
    data = write_lock(load_model(args.model), args.output, parse_shape(args.input), batch=args.batch)
    print(f"wrote {args.output}: {len(data['layers'])} layers, {data['total']:,} params, output {data['output_shape']}")
    return 0


def _check(args: argparse.Namespace) -> int:
    status = 0
    for entry in read_contracts(Path(args.config) if args.config else find_pyproject()):
        sys.path[:0] = [str(d) for d in entry.pythonpath if str(d) not in sys.path]
        start = time.perf_counter()
        try:
            model = load_model(entry.model)
            result = check_contract(model, entry.contract, name=entry.model, update_lock=False)
        except TorchSurgeonError as exc:  # name the key at fault: the lockfile, the input, else the model
            key = "lock" if "lockfile" in str(exc) else "input" if isinstance(exc, InputError) else "model"
            print(f"torchsurgeon: error: {entry.where}, key {key!r}: {exc}", file=sys.stderr, flush=True)
            status = 2
            continue
        print(f"{result}  [{time.perf_counter() - start:.2f}s]" if result.ok else f"{result}\n", flush=True)
        status = max(status, 0 if result.ok else 1)
    return status


def _summary(args: argparse.Namespace) -> int:
    report = paramcount(load_model(args.model), parse_shape(args.input), batch=args.batch)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


def _graph(args: argparse.Namespace) -> int:
    out = Path(args.output)
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in ("dot", "gv", "graphml", *RENDER_FORMATS):
        raise InputError(f"-o {args.output}: write .svg, .png, .pdf (Graphviz), .dot or .graphml")
    report = paramcount(load_model(args.model), parse_shape(args.input), batch=args.batch)
    if suffix == "graphml":
        out.write_text(report.to_graphml(), encoding="utf-8")
    elif suffix in ("dot", "gv"):
        out.write_text(report.to_dot(depth=args.depth), encoding="utf-8")
    else:
        render(report.to_dot(depth=args.depth), out)
    invalid = ", ".join(layer.name for layer in report.invalid)
    print(f"wrote {out} ({report.model_name}, {len(report.invalid)} invalid{': ' + invalid if invalid else ''})")
    return 0


def _check_surgery(args: argparse.Namespace) -> int:
    original, edited = load_model(args.original), load_model(args.edited)
    report = check_surgery(original, edited, parse_shape(args.input), batch=args.batch)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


def _memory(args: argparse.Namespace) -> int:
    budget = parse_bytes(args.budget) if args.budget is not None else None  # a bad budget fails before planning
    plan = memory_plan(
        load_model(args.model), parse_shape(args.input), batch=args.batch, optimizer=args.optimizer, amp=args.amp
    )
    best = plan.max_batch(budget) if budget is not None else None
    if args.json:
        print(json.dumps({**plan.to_dict(), "budget": budget, "max_batch": best}, indent=2))
        return 0
    print(plan)
    if budget is not None:
        print(f"\nLargest batch whose peak fits in {args.budget}: {best}")
    return 0


def _model_command(
    sub: Any, name: str, help: str, *models: str, json_flag: bool = True, output: str = ""
) -> argparse.ArgumentParser:
    """A subcommand taking MODULE:CALLABLE model(s), --input and --batch (and --json or -o)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help)
    for model in models or ("model",):
        what = "the model" if model == "model" else f"the {model} model"
        p.add_argument(model, help=f"MODULE:CALLABLE returning {what}, e.g. torchvision.models:resnet50")
    p.add_argument("--input", required=True, help="per-sample input shape, e.g. 1,224,224")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    if output:
        p.add_argument("-o", "--output", required=True, help=output)
    return p


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchsurgeon", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = _model_command(sub, "summary", "per-layer parameters, shapes and invalid layers for an input shape")
    p.set_defaults(run=_summary)
    p = _model_command(
        sub,
        "graph",
        "draw the traced graph: .svg/.png/.pdf (Graphviz), .dot or .graphml",
        json_flag=False,
        output="file to write: model.svg, .png, .pdf, .dot, .graphml",
    )
    p.add_argument("--depth", type=int, default=None, help="fold modules deeper than N into one box (e.g. 1)")
    p.set_defaults(run=_graph)
    p = _model_command(
        sub, "check-surgery", "compare an edited model with its original, parameter by parameter", "original", "edited"
    )
    p.set_defaults(run=_check_surgery)
    p = _model_command(
        sub,
        "lock",
        "write the architecture lockfile of a model (layers, shapes, params)",
        json_flag=False,
        output="lockfile to write, e.g. tests/arch/model.lock.json",
    )
    p.set_defaults(run=_lock)
    p = _model_command(sub, "memory", "memory of one training step: weights, gradients, optimizer, activations")
    p.add_argument("--optimizer", default="adamw", help="sgd, sgd-momentum, adam or adamw (default adamw)")
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast dtype (default: off, fp32)")
    p.add_argument("--budget", default=None, help="memory budget, e.g. 24GiB: print the largest batch that fits")
    p.set_defaults(run=_memory)
    p = sub.add_parser("check", help="check the [[tool.torchsurgeon.contracts]] of the nearest pyproject.toml")
    p.add_argument("--config", help="pyproject.toml to read (default: the nearest one from the working directory)")
    p.set_defaults(run=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Examples
    --------
    >>> main(["summary", "torch.nn:Identity", "--input", "3"])  # doctest: +ELLIPSIS
    Identity
    ...
    0
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if str(Path.cwd()) not in sys.path:  # MODULE:CALLABLE imports from the project root, as `python -m` would
        sys.path.insert(0, str(Path.cwd()))
    try:
        return int(args.run(args))
    except (InputError, ConfigError) as exc:
        print(f"torchsurgeon: error: {exc}", file=sys.stderr)
        return 2
    except TorchSurgeonError as exc:
        print(f"torchsurgeon: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
