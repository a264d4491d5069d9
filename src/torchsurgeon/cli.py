"""Command line: ``torchsurgeon summary MODULE:CALLABLE --input 1,224,224``, ``torchsurgeon memory ...``.

Models are named as :mod:`torchsurgeon.hub` reads them (``timm:resnet18``,
``hf:bert``, ``MODULE:CALLABLE``), with ``--kwargs`` for their arguments;
``--input`` is read by :func:`torchsurgeon.shapespec.parse_inputs`.

``main(argv) -> int`` is the console script and the pre-commit hook; exit 0
when all is well, 1 when a check fails, 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .analysis import paramcount
from .config import find_pyproject, read_contracts
from .contracts import check_contract
from .dot import RENDER_FORMATS, render
from .errors import ConfigError, InputError, TorchSurgeonError
from .hub import load_model, parse_kwargs
from .lockfile import write_lock
from .memory import memory_plan, parse_bytes
from .report import format_path, table_columns
from .shapespec import parse_inputs, parse_shape
from .surgery_check import check_surgery

__all__ = ("load_model", "main", "parse_shape")


def _lock(args: argparse.Namespace) -> int:
    data = write_lock(_model(args), args.output, parse_inputs(args.input), batch=args.batch)
    print(f"wrote {args.output}: {len(data['layers'])} layers, {data['total']:,} params, output {data['output_shape']}")
    return 0


def _check(args: argparse.Namespace) -> int:
    status = 0
    for entry in read_contracts(Path(args.config) if args.config else find_pyproject()):
        sys.path[:0] = [str(d) for d in entry.pythonpath if str(d) not in sys.path]
        start = time.perf_counter()
        lock = entry.contract.lock
        try:
            if lock is not None and not Path(lock).is_file():  # the fix names this contract's own command
                raise ConfigError(
                    f"lockfile {format_path(lock)} does not exist — create it with `{entry.lock_command}`"
                )
            model = load_model(entry.model, entry.kwargs)
            result = check_contract(model, entry.contract, name=entry.model, update_lock=False)
            result = dataclasses.replace(result, lock_command=entry.lock_command)
        except TorchSurgeonError as exc:  # name the key at fault: the lockfile, the input, else the model
            key = "lock" if "lockfile" in str(exc) else "input" if isinstance(exc, InputError) else "model"
            print(f"torchsurgeon: error: {entry.where}, key {key!r}: {exc}", file=sys.stderr, flush=True)
            status = 2
            continue
        print(f"{result}  [{time.perf_counter() - start:.2f}s]" if result.ok else f"{result}\n", flush=True)
        status = max(status, 0 if result.ok else 1)
    return status


def _summary(args: argparse.Namespace) -> int:
    if args.json and args.format not in ("text", "json"):
        raise InputError(f"--json and --format {args.format} ask for two outputs — give one of them")
    fmt = "json" if args.json else args.format
    columns = table_columns(args.columns) if args.columns else None  # a wrong column fails before the model is built
    report = paramcount(_model(args), parse_inputs(args.input), batch=args.batch)
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table(args.depth, columns, fmt), end="" if fmt == "csv" else "\n")
    return 0


def _graph(args: argparse.Namespace) -> int:
    out = Path(args.output)
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in ("dot", "gv", "graphml", *RENDER_FORMATS):
        raise InputError(f"-o {args.output}: write .svg, .png, .pdf (Graphviz), .dot or .graphml")
    report = paramcount(_model(args), parse_inputs(args.input), batch=args.batch)
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
    original = load_model(args.original, parse_kwargs(args.kwargs))
    try:
        edited = load_model(args.edited, parse_kwargs(args.edited_kwargs))
    except ConfigError as exc:  # its fixes name the edited model's flag
        raise ConfigError(f"edited {str(exc).replace('--kwargs', '--edited-kwargs')}") from exc
    report = check_surgery(original, edited, parse_inputs(args.input), batch=args.batch)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


def _model(args: argparse.Namespace) -> Any:
    """The model of a one-model subcommand, built with its --kwargs."""
    return load_model(args.model, parse_kwargs(args.kwargs))


_MODEL_HELP = (
    "torchvision:NAME, timm:NAME, smp:NAME, hf:MODEL_TYPE (e.g. hf:bert), hf:CLASS, hf:DIR, monai:NAME, "
    "open_clip:NAME, or MODULE:CALLABLE; "
    "built without weights (weights=None, pretrained=False or None, encoder_weights=None) and never downloaded: "
    "--kwargs pretrained=True loads weights only if they are already in the local cache"
)


def _memory(args: argparse.Namespace) -> int:
    budget = parse_bytes(args.budget) if args.budget is not None else None  # a bad budget fails before planning
    plan = memory_plan(
        _model(args),
        parse_inputs(args.input),
        batch=args.batch,
        optimizer=args.optimizer,
        amp=args.amp,
        device=args.device,
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
    """A subcommand taking model(s), --kwargs, --input and --batch (and --json or -o)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help)
    for model in models or ("model",):
        what = "the model" if model == "model" else f"the {model} model"
        p.add_argument(model, help=f"{what}: {_MODEL_HELP}")
    p.add_argument(
        "--kwargs",
        default="",
        help="constructor arguments (configuration fields for hf:), Python literals: encoder_weights=None,classes=2"
        + ("; for the original model" if models else ""),
    )
    if models:
        p.add_argument("--edited-kwargs", default="", help="constructor arguments of the edited model")
    p.add_argument(
        "--input",
        required=True,
        action="append",
        help="per-sample input shape, e.g. 1,224,224; repeat it for several inputs, by name and with a dtype: "
        "--input input_ids=128:long --input pixel_values=3,224,224",
    )
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    if output:
        p.add_argument("-o", "--output", required=True, help=output)
    return p


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchsurgeon", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"torchsurgeon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = _model_command(sub, "summary", "per-layer parameters, shapes and invalid layers for an input shape")
    p.add_argument(
        "--depth", type=int, default=None, help="levels of blocks shown (default 2; -1 every layer, as csv does)"
    )
    p.add_argument(
        "--columns",
        default=None,
        help="comma-separated, after Layer and Type: input,output,params,trainable,macs,kernel,percent,status "
        "(default output,params,macs,status)",
    )
    p.add_argument(
        "--format",
        choices=("text", "markdown", "csv", "json", "html"),
        default="text",
        help="text (default), markdown, csv (one row per layer), json (as --json), html",
    )
    p.set_defaults(run=_summary)
    p = _model_command(
        sub,
        "graph",
        "draw the traced graph: .svg/.png/.pdf (Graphviz), .dot or .graphml",
        json_flag=False,
        output="file to write: model.svg, .png, .pdf, .dot, .graphml",
    )
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        help="fold modules deeper than N into one box (e.g. 1); identical consecutive blocks become one box",
    )
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
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="whose kernels decide what is saved (default cuda: 1-byte dropout masks, fused attention)",
    )
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
    except BrokenPipeError:  # `torchsurgeon summary ... --json | head`: the reader stopped, as with other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
