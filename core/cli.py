"""The ``nnport`` command line (also ``python -m nnport``).

Each sub-command lives in a module listed in ``COMMAND_MODULES`` that exposes
``register(subparsers)``; the parser it adds sets ``func(args) -> int``.  A
command parses, calls the API and prints; its logic is an API function.

One convention for every command:

- ``--json [FILE]``: the result as JSON to FILE; with no FILE (or ``-``) the JSON
  goes to stdout, alone, and the human text goes to stderr;
- exit status 0 ok, 1 a failed check or a runtime failure (``CompileError``,
  ``ExecutionError``, a comparison that fails), 2 usage or bad input
  (``InputError``, ``ModelLoadError``, ``DeviceNotFound``, a bad setting, a
  missing extra); an ``NnportError`` is printed on one line (``nnport: error:
  ...``) without a traceback (``NNPORT_TRACEBACK=1`` shows it);
- ``-d/--device`` wherever a command takes devices; ``-v/--verbose`` shows
  nnport's log (fallback attempts, cache recoveries) on stderr; long steps
  (converters, quantisers, engine builds) report progress on a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .data import save_arrays
from .errors import InputError, NnportError, UnsupportedModel

COMMAND_MODULES = [
    "nnport.cli",
    "nnport.cli_bench",
    "nnport.cli_compress",
    "nnport.conformance.cli",
    "nnport.cli_debug",
    "nnport.cli_farm",
    "nnport.cli_port",
]
"""Modules contributing sub-commands; each has ``register(subparsers)``."""


def exit_code(exc: NnportError) -> int:
    """2 for usage or bad input (the ``ValueError``/``LookupError`` kinds: ``InputError``, ``ModelLoadError``,
    ``DeviceNotFound``, a bad setting), 1 for a runtime failure (``CompileError``, ``ExecutionError``, ...)."""
    return 2 if isinstance(exc, (ValueError, LookupError)) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _log_to_stderr(getattr(args, "verbose", 0))
    try:
        with _json_on_stdout(args):
            return int(args.func(args) or 0)
    except NnportError as exc:
        if os.environ.get("NNPORT_TRACEBACK"):
            raise
        print(f"nnport: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("nnport: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="nnport", description="One contract over neural-network inference runtimes.")
    parser.add_argument("--version", action="version", version=f"nnport {__version__}")
    _add_verbose(parser)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    for command in _subcommands(parser):
        _add_verbose(command)
    return parser


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="show nnport's log on stderr (fallback attempts, cache recoveries); -vv: debug",
    )


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):
                yield command
                yield from _subcommands(command)


def _log_to_stderr(verbose: int) -> None:
    """``-v``: nnport's log on stderr.  Without it, a terminal still gets the progress of long steps
    (converters, quantisers, engine builds: ``nnport.progress``)."""
    if verbose:
        _stderr_handler(logging.getLogger("nnport"), "nnport: %(levelname)s: %(message)s")
        logging.getLogger("nnport").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    elif sys.stderr.isatty():
        progress = logging.getLogger("nnport.progress")
        _stderr_handler(progress, "nnport: %(message)s")
        progress.setLevel(logging.INFO)


def _stderr_handler(log: logging.Logger, fmt: str) -> None:
    if not any(getattr(h, "_nnport_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt))
        handler._nnport_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)


# -- helpers shared by commands ---------------------------------------------------------

_json_stdout: TextIO | None = None
"""The real stdout while ``--json`` (no FILE) sends the human text to stderr."""


def add_json_argument(p: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json [FILE]``, the same on every command."""
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help=f"write {what} as JSON to FILE; without FILE (or '-') the JSON alone goes to stdout, the text to stderr",
    )


def json_to_stdout(args: argparse.Namespace) -> bool:
    return getattr(args, "json", None) == "-"


@contextlib.contextmanager
def _json_on_stdout(args: argparse.Namespace) -> Iterator[None]:
    """While a command runs with ``--json`` and no FILE, everything it prints goes to stderr (JSON excepted).

    Python's ``print`` and, where stdout is file descriptor 1, what runtimes print at C level
    too: descriptor 1 points at stderr meanwhile, and the JSON goes to a copy of the real one.
    """
    global _json_stdout
    if not json_to_stdout(args):
        yield
        return
    real = sys.stdout
    try:
        fd_backed = real.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a captured or replaced stdout (pytest's capsys)
        fd_backed = False
    saved = None
    if fd_backed:
        real.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        _json_stdout = open(saved, "w", closefd=False)  # the descriptor is closed below
    else:
        _json_stdout = real
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            _json_stdout.close()
            sys.stderr.flush()
            os.dup2(saved, 1)
            os.close(saved)
        _json_stdout = None


def write_json(args: argparse.Namespace, data: Any) -> None:
    """The command's JSON, where ``--json`` said: a file, or stdout (alone); nothing without ``--json``."""
    emit_json(getattr(args, "json", None), data)


def emit_json(target: str | None, data: Any) -> None:
    """``data`` as JSON to the file ``target``, or to stdout for ``-``; nothing for None."""
    if not target:
        return
    text = json.dumps(data, indent=2, default=str)
    if target == "-":
        out = _json_stdout or sys.stdout
        out.write(text + "\n")
        out.flush()
    else:
        Path(target).write_text(text + "\n")
        print(f"JSON written to {target}")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def require_matplotlib(flag: str) -> Any:
    """``matplotlib.pyplot`` (Agg backend), or ``InputError`` naming the extra (exit 2, one line)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError(
            f"{flag} needs matplotlib, which is not installed ({exc}): pip install 'nnport[plot]'"
        ) from exc
    return plt


def require_extra(module: str, extra: str, command: str) -> None:
    """Refuse (``InputError``: exit 2, one line) when ``command`` needs the ``nnport[extra]`` dependencies."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"nnport {command} needs {module}: pip install 'nnport[{extra}]'")


def parse_inputs(items: Sequence[str] | None) -> dict[str, np.ndarray]:
    """``name=file.npy`` pairs into feeds; a ``.npz`` file without a name gives all its arrays."""
    feeds: dict[str, np.ndarray] = {}
    for item in items or ():
        name, sep, path = item.partition("=")
        if not sep:
            if item.endswith(".npz") and Path(item).exists():
                with np.load(item) as data:
                    feeds.update({k: data[k] for k in data.files})
                continue
            raise InputError(f"--input expects NAME=FILE.npy (or FILE.npz), got {item!r}")
        if not Path(path).exists():
            raise InputError(f"input file for {name!r} not found: {path!r}")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"cannot read {path!r} as a .npy array for input {name!r}: {exc}") from exc
    return feeds


def add_shapes_argument(p: argparse.ArgumentParser) -> None:
    """``--input-shapes``: the same flag, spelled the same, on every command that compiles."""
    p.add_argument(
        "--input-shapes",
        action="append",
        metavar="NAME:DxDx..[,NAME:...]",
        help="fix symbolic input dims before compiling, e.g. images:1x3x640x640 (repeat or comma-separate)",
    )


def shapes_from(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    from .shapes import parse_input_shapes

    return parse_input_shapes(getattr(args, "input_shapes", None))


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


# -- the foundation's commands ------------------------------------------------------------


def register(sub: Any) -> None:
    p = sub.add_parser("backends", help="list backends: available (with runtime versions), unavailable (why), broken")
    add_json_argument(p, "the backends")
    p.add_argument(
        "--probe-only",
        action="store_true",
        help="do not list devices nor read versions (imports no SDK; device-id conflicts go unchecked)",
    )
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("devices", help="list devices of every usable backend")
    add_json_argument(p, "the devices")
    p.add_argument("--all", action="store_true", help="include devices that are listed but unusable")
    p.add_argument("--backend", "-b", help="only this backend's devices")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("run", help="run a model once on a device and print or save its outputs")
    p.add_argument("model", help="an ONNX file, or zoo:NAME for a built-in model")
    p.add_argument(
        "--device", "-d", action="append", help="device id, backend, kind or auto (repeat for a priority list)"
    )
    p.add_argument(
        "--input", "-i", action="append", metavar="NAME=FILE.npy", help="input array (default: seeded random)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--output", "-o", help="save outputs to this .npz file")
    p.add_argument("--no-fallback", action="store_true", help="fail instead of trying the next device")
    add_json_argument(p, "a summary")
    add_shapes_argument(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="compile and run zoo models on every available backend, against the reference")
    p.add_argument("--models", nargs="*", default=None, help="zoo models (default: all)")
    p.add_argument("--no-port", action="store_true", help="skip the last part: nnport port on the digits classifier")
    add_json_argument(p, "the zoo results")
    p.set_defaults(func=cmd_demo)


def cmd_backends(args: argparse.Namespace) -> int:
    from . import backends

    rows = backends(check_devices=not args.probe_only)
    write_json(args, [r.to_dict() for r in rows])
    print(
        table(
            [[r.name, r.vendor, r.status, _versions_text(r.versions), r.reason or ""] for r in rows],
            ["backend", "vendor", "status", "versions", "reason"],
        )
    )
    return 0


def _versions_text(versions: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def cmd_devices(args: argparse.Namespace) -> int:
    from . import devices

    found = devices(args.backend, include_unavailable=args.all)
    write_json(args, [d.to_dict() for d in found])
    print(
        table(
            [[d.id, d.kind, d.name, "yes" if d.available else f"no: {d.reason}"] for d in found],
            ["device", "kind", "name", "usable"],
        )
    )
    return 0


def resolve_model(text: str) -> Any:
    """``zoo:NAME`` or a file path."""
    from . import zoo
    from .model import load

    if text.startswith("zoo:"):
        return zoo.load_any(text[4:])
    return load(text)


def cmd_run(args: argparse.Namespace) -> int:
    from . import compile as nn_compile
    from .data import random_feeds

    model = resolve_model(args.model)
    device = args.device if args.device and len(args.device) > 1 else (args.device[0] if args.device else "auto")
    compiled = nn_compile(model, device, fallback=not args.no_fallback, shapes=shapes_from(args))
    feeds = parse_inputs(args.input) or random_feeds(compiled.inputs, seed=args.seed)
    outputs = compiled.run(feeds)
    if args.output:
        save_arrays(args.output, outputs)
    summary = {
        "model": model.name,
        "device": compiled.device.id,
        "attempts": [{"device": d, "error": str(e)} for d, e in compiled.attempts],
        "outputs": {
            k: {
                "shape": list(v.shape),
                "dtype": str(v.dtype),
                "min": float(v.min()) if v.size else None,
                "max": float(v.max()) if v.size else None,
            }
            for k, v in outputs.items()
        },
    }
    write_json(args, summary)
    for dev, err in compiled.attempts:
        print(f"skipped {dev}: {err}")
    print(f"ran {model.name} on {compiled.device.id}")
    for name, info in summary["outputs"].items():
        print(f"  {name}: {info['dtype']}{info['shape']} min={info['min']:.6g} max={info['max']:.6g}")
    if args.output:
        print(f"outputs saved to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: every zoo model on every usable backend, against the reference."""
    from . import backends, devices, zoo
    from . import compile as nn_compile
    from .data import random_feeds

    print("nnport backends:")
    statuses = backends(check_devices=True)
    print(
        table(
            [[r.name, r.vendor, r.status, _versions_text(r.versions), r.reason or ""] for r in statuses],
            ["backend", "vendor", "status", "versions", "reason"],
        )
    )
    found = devices()
    print("\nnnport devices:")
    print(table([[d.id, d.kind, d.name] for d in found], ["device", "kind", "name"]))
    rows = []
    worst = 0.0
    failures = refused = 0
    accuracy: dict[str, list[str]] = {}  # labelled zoo models: top-1 against the true labels, per device
    for name in args.models or zoo.names():
        model = zoo.load(name)
        reference = nn_compile(model, "onnxruntime:cpu", fallback=False)
        feeds = random_feeds(reference.inputs, seed=0)
        expected = reference.run(feeds)
        for dev in found:
            try:
                compiled = nn_compile(model, dev.id, fallback=False)
                got = compiled.run(feeds)
                diff = max(float(np.max(np.abs(got[k].astype(np.float64) - expected[k]))) for k in expected)
                scale = max(float(np.max(np.abs(expected[k]))) for k in expected) or 1.0
                worst = max(worst, diff / scale)
                rows.append([name, compiled.device.id, f"{diff:.3g}", f"{diff / scale:.3g}", "ok"])
                if name in zoo.labelled_names():
                    data = zoo.labelled(name)
                    predicted = compiled.run(data.feeds)[compiled.outputs[0].name].argmax(axis=1)
                    correct = int(np.sum(predicted == data.labels))
                    accuracy.setdefault(name, []).append(
                        f"{compiled.device.id} {100 * correct / len(data):.1f}% ({correct}/{len(data)})"
                    )
            except UnsupportedModel as exc:  # a backend that cannot take the model says so: not a failure
                refused += 1
                rows.append([name, dev.id, "-", "-", f"refused: {str(exc)[:80]}"])
            except NnportError as exc:
                failures += 1
                rows.append([name, dev.id, "-", "-", f"error: {str(exc)[:80]}"])
    print("\nzoo models against the reference (onnxruntime:cpu):")
    print(table(rows, ["model", "ran on", "max |diff|", "relative to output range", "status"]))
    for name, results in accuracy.items():
        print(f"\n{name}: top-1 accuracy against the held-out labels (fp32): " + ", ".join(results))
    print(f"\nworst relative difference: {worst:.3g}; {failures} device/model pair(s) failed, {refused} refused")
    header = ["model", "device", "max_abs_diff", "relative_diff", "status"]
    write_json(
        args,
        {
            "backends": [r.to_dict() for r in statuses],
            "devices": [d.to_dict() for d in found],
            "zoo": [dict(zip(header, row)) for row in rows],
            "accuracy": accuracy,
            "worst_relative_difference": worst,
            "failures": failures,
        },
    )
    port_status = 0
    if "digits" in (args.models or zoo.names()) and not args.no_port:
        from .cli_port import demo as port_demo

        port_status = port_demo()
    return 1 if failures or port_status else 0
