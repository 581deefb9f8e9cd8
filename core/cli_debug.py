"""``nnport debug`` and ``nnport reduce``: where a backend goes wrong, and the smallest model that shows it.

    nnport debug MODEL -d DEVICE [--input NAME=FILE.npy] [--input-shapes ...] [--atol/--rtol/--scale-tol [NAME:]V]
                 [--json [FILE]] [--html FILE] [--no-fast] [--in-process] [--option KEY=VALUE]
    nnport reduce MODEL -d DEVICE --mode mismatch|compile|crash --out DIR [--strategy bisect|linear] [--match REGEX]

The logic is ``nnport.conformance.debug.first_divergence`` and
``nnport.conformance.reduce.reduce`` (specs/conformance.md, "Debug and
reduce"); this module parses, calls them and prints.  Exit status: 0 when the
device agrees (debug) or a reduced model was written (reduce), 1 when a
divergence is found (debug) or the failure does not reproduce on the whole
model (reduce), 2 on a usage or model error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    from .cli import add_json_argument

    p = sub.add_parser("debug", help="find the first node where a device's result diverges from the reference")
    _common(p)
    add_json_argument(p, "the report")
    p.add_argument("--html", metavar="FILE", help="write an HTML page with the error along the graph")
    p.add_argument("--no-fast", action="store_true", help="do not use the backend's intermediates (cut path only)")
    p.set_defaults(func=cmd_debug)

    p = sub.add_parser("reduce", help="shrink a model to a minimal sub-model that still fails on a device")
    _common(p)
    p.add_argument(
        "--mode",
        choices=["mismatch", "compile", "crash"],
        default="mismatch",
        help="the failure to keep: outputs beyond tolerance, a compile refusal/error, or a crashing runtime "
        "(default mismatch)",
    )
    p.add_argument(
        "--strategy",
        choices=["bisect", "linear"],
        default="bisect",
        help="bisect (then linear on a small result), or linear: one node at a time (default bisect)",
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR",
        help="where to write reduced.onnx, inputs.npz, reference_outputs.npz, repro.py, report.json",
    )
    p.add_argument("--match", metavar="REGEX", help="the failure's message must also match this regular expression")
    p.add_argument(
        "--any-failure",
        action="store_true",
        help="compile/crash: accept any failure of that kind, not only one with the whole model's signature "
        "(error class, message)",
    )
    p.add_argument(
        "--linear-limit",
        type=int,
        default=32,
        metavar="N",
        help="after bisecting, run the linear passes on at most N nodes (default 32)",
    )
    add_json_argument(p, "the result")
    p.set_defaults(func=cmd_reduce)


def _common(p: argparse.ArgumentParser) -> None:
    from .cli import add_shapes_argument

    p.add_argument("model", help="an ONNX file, or zoo:NAME for a built-in model")
    p.add_argument("--device", "-d", required=True, help="the device to examine (one device id, no fallback)")
    p.add_argument(
        "--input", "-i", action="append", metavar="NAME=FILE.npy", help="input array (default: seeded random)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument(
        "--atol",
        action="append",
        default=[],
        metavar="[NAME:]VALUE",
        help="absolute tolerance, for every tensor or one (repeat)",
    )
    p.add_argument(
        "--rtol",
        action="append",
        default=[],
        metavar="[NAME:]VALUE",
        help="relative tolerance, for every tensor or one (repeat)",
    )
    p.add_argument(
        "--scale-tol",
        action="append",
        default=[],
        metavar="[NAME:]VALUE",
        help="absolute tolerance as a fraction of the reference's max |value|",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "fp16", "int8"],
        help="precision to compile the device at (tolerance defaults follow it)",
    )
    p.add_argument("--threads", type=int, help="threads for the device")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="backend-specific compile option (CompileOptions.extra; VALUE read as JSON when it parses), e.g. "
        "ncnn_verify=false",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds one trial may take before it counts as a hang (default 600)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="compile in this process instead of an isolated worker (faster; a crash ends the run)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    add_shapes_argument(p)


def _extra(items: Sequence[str]) -> dict[str, Any]:
    from .errors import InputError

    found: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            found[key] = json.loads(value)
        except ValueError:
            found[key] = value
    return found


def _kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from nnport.conformance.cli import parse_tolerances

    from .cli import parse_inputs, resolve_model, shapes_from

    return {
        "model": resolve_model(args.model),
        "device": args.device,
        "feeds": parse_inputs(args.input) or None,
        "seed": args.seed,
        "shapes": shapes_from(args),
        "atol": parse_tolerances(args.atol, "--atol"),
        "rtol": parse_tolerances(args.rtol, "--rtol"),
        "scale_tol": parse_tolerances(args.scale_tol, "--scale-tol"),
        "precision": args.precision,
        "threads": args.threads,
        "extra": _extra(args.option),
        "timeout_s": args.timeout,
        "isolate": not args.in_process,
        "progress": None if args.quiet else (lambda text: print(f"  {text}", file=sys.stderr, flush=True)),
    }


def cmd_debug(args: argparse.Namespace) -> int:
    from nnport.conformance import debug

    from .cli import write_json

    report = debug.first_divergence(fast=not args.no_fast, **_kwargs(args))
    write_json(args, report.to_dict())
    print(debug.to_text(report))
    if args.html:
        Path(args.html).write_text(debug.to_html(report))
        print(f"wrote {args.html}")
    return report.exit_code


def cmd_reduce(args: argparse.Namespace) -> int:
    from nnport.conformance import reduce

    from .cli import write_json

    result = reduce.reduce(
        mode=args.mode,
        strategy=args.strategy,
        out_dir=args.out,
        match=args.match,
        same_failure=not args.any_failure,
        linear_limit=args.linear_limit,
        **_kwargs(args),
    )
    write_json(args, result.to_dict())
    print(reduce.to_text(result))
    return result.exit_code
