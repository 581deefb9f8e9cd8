"""``nnport conformance`` and ``nnport compare``: the release engineer's commands.

``nnport conformance`` runs the suite (``nnport.conformance``) on backends in
isolated worker processes and prints the cases x devices matrix; it exits 0
only when nothing failed, crashed or timed out (with ``--baseline``: when
nothing *newly* did) and something ran; 1 when every case was skipped; 2 when
a requested backend or device does not exist or is unusable (unless
``--allow-unavailable``).

``nnport compare MODEL --device D ...`` runs a user's own model on each device
with the same inputs and prints per-output error statistics against the
reference, as Polygraphy's ``run --onnxrt --trt`` does; it exits 0 only when
every device agrees within tolerance, 1 when one does not (or cannot run the
model), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnport.data import save_arrays
from nnport.errors import InputError, NnportError


def register(sub: Any) -> None:
    from nnport.cli import add_json_argument, add_shapes_argument

    p = sub.add_parser(
        "conformance", help="run the conformance suite: every case on every backend against the reference"
    )
    p.add_argument(
        "--device",
        "-d",
        "--backend",
        "-b",
        dest="backend",
        action="append",
        metavar="D",
        help="device id or backend name (repeat; -b/--backend: the same); default: every available backend",
    )
    p.add_argument(
        "--cases",
        "-k",
        action="append",
        metavar="PATTERN",
        help="case id glob or substring (repeat); 'node/*' adds the ONNX node tests",
    )
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPU count)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "fp16", "int8"],
        help="precision to compile at; tolerances follow it",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per case (default: each case's own)")
    p.add_argument(
        "--xfail", action="append", default=[], metavar="FILE.toml", help="extra expected-failures file (repeat)"
    )
    p.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE", help="load this plugin module (also in workers)"
    )
    add_json_argument(p, "the report")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML")
    p.add_argument("--html", metavar="FILE", help="write the HTML matrix")
    p.add_argument(
        "--baseline", metavar="OLD.json", help="exit non-zero only on cases failing now that did not fail in OLD.json"
    )
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("--problems-only", action="store_true", help="print only matrix rows that are not all pass")
    p.add_argument(
        "--retry-elsewhere",
        action="store_true",
        help="rerun a case lost with its farm node on another node's device of the same backend and kind",
    )
    add_shapes_argument(p)
    _add_gate_and_tolerance_flags(p)
    p.set_defaults(func=cmd_conformance)

    p = sub.add_parser(
        "compare", help="run a model on several devices with the same inputs and compare each with the reference"
    )
    p.add_argument("model", help="an ONNX file, or zoo:NAME")
    p.add_argument("--device", "-d", action="append", required=True, help="device id or backend to check (repeat)")
    p.add_argument(
        "--reference",
        default="onnxruntime:cpu",
        help="reference device, or 'onnx.reference' for onnx's ReferenceEvaluator (default: onnxruntime:cpu)",
    )
    p.add_argument(
        "--atol",
        action="append",
        default=[],
        metavar="[NAME:]VALUE",
        help="absolute tolerance, for all outputs or one (repeat)",
    )
    p.add_argument(
        "--rtol",
        action="append",
        default=[],
        metavar="[NAME:]VALUE",
        help="relative tolerance, for all outputs or one (repeat)",
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
        help="precision to compile the devices at (defaults follow it)",
    )
    p.add_argument(
        "--input", "-i", action="append", metavar="NAME=FILE.npy", help="input array (default: seeded random)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--save-inputs", metavar="FILE.npz", help="save the inputs used")
    p.add_argument("--load-inputs", metavar="FILE.npz", help="load inputs saved by --save-inputs")
    p.add_argument("--save-outputs", metavar="FILE.npz", help="save every device's outputs (keys DEVICE/OUTPUT)")
    p.add_argument(
        "--calibration",
        "-c",
        metavar="DIR|FILE|random",
        help="int8 calibration data for the devices' compiles (a directory of .npy/.npz samples, one file, 'random')",
    )
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help="a histogram of |device - reference| per output, one series per device (needs matplotlib: nnport[plot])",
    )
    add_shapes_argument(p)
    add_json_argument(p, "the comparison")
    p.set_defaults(func=cmd_compare)


# -- conformance: the gate (requested backends must exist) and run-wide tolerances -------------
# (issue 13, items 3 and 5; kept apart from the other flags on purpose)


def _add_gate_and_tolerance_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-unavailable",
        action="store_true",
        help="report a requested backend or device that is missing or unusable as a column of skips instead of "
        "exiting 2",
    )
    p.add_argument(
        "--atol",
        metavar="VALUE",
        help="absolute tolerance for every output of every case (overrides the case's and the precision's)",
    )
    p.add_argument("--rtol", metavar="VALUE", help="relative tolerance for every output of every case")
    p.add_argument(
        "--scale-tol", metavar="VALUE", help="absolute tolerance floor, as a fraction of the reference's max |value|"
    )


def run_tolerances(args: argparse.Namespace) -> dict[str, float]:
    """``--atol/--rtol/--scale-tol`` as ``runner.run(tolerances=...)``: plain numbers only (cases differ in outputs)."""
    found: dict[str, float] = {}
    for key, flag in (("atol", "--atol"), ("rtol", "--rtol"), ("scale_tol", "--scale-tol")):
        text = getattr(args, key, None)
        if text is None:
            continue
        value = parse_tolerances([text], flag)
        if not isinstance(value, float):
            raise InputError(f"{flag} takes one number for every case (cases have different outputs), got {text!r}")
        found[key] = value
    return found


def check_targets(targets: Sequence[Any], requested: Sequence[str] | None, allow_unavailable: bool) -> None:
    """Raise (exit 2) when a requested backend or device cannot be tested, unless allowed.

    A release gate must not turn a misspelt backend name or a broken install
    into a column of skips and a green run.  Backends chosen by default (no
    ``--backend``) are only reported.
    """
    if not requested or allow_unavailable:
        return
    missing = [t for t in targets if t.unavailable]
    if missing:
        detail = "; ".join(f"{t.device}: {t.unavailable}" for t in missing)
        raise InputError(
            f"cannot test the requested {'device' if len(missing) == 1 else 'devices'}: {detail} (see "
            "`nnport backends`; --allow-unavailable reports them as skips)"
        )


# -- conformance ----------------------------------------------------------------------------


def _load_plugins(modules: Sequence[str]) -> None:
    if not modules:
        return
    from nnport.manager import set_plugin_manager

    current = [m for m in os.environ.get("NNPORT_PLUGINS", "").split(",") if m]
    os.environ["NNPORT_PLUGINS"] = ",".join(dict.fromkeys(current + list(modules)))
    set_plugin_manager(None)


def cmd_conformance(args: argparse.Namespace) -> int:
    from nnport.cli import require_extra, shapes_from, write_json
    from nnport.conformance import cases as case_mod
    from nnport.conformance import reports, runner

    _load_plugins(args.plugin)
    selected = case_mod.select(args.cases)
    if args.list:
        for case in selected:
            print(f"{case.id}  {case.description}")
        return 0
    require_extra("onnxruntime", "conformance", "conformance")  # the reference
    if not selected:
        raise InputError(f"no conformance case matches {args.cases}; try --list")
    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    baseline = reports.load_json(args.baseline) if args.baseline else None
    targets = runner.resolve_targets(args.backend)
    if not targets:
        raise NnportError("no backend to test: none is available; see `nnport backends`")
    check_targets(targets, args.backend, args.allow_unavailable)
    tolerances = run_tolerances(args)
    print(
        f"nnport conformance: {len(selected)} case(s) x {len(targets)} device(s) "
        f"{[t.device for t in targets]}, {args.jobs} job(s)",
        file=sys.stderr,
    )
    report = runner.run(
        selected,
        targets,
        jobs=args.jobs,
        precision=args.precision,
        expectations=args.xfail,
        timeout_s=args.timeout,
        plugins=args.plugin,
        pythonpath=[os.getcwd()] if args.plugin else (),
        progress=reports.Progress(),
        shapes=shapes_from(args),
        tolerances=tolerances,
        retry_elsewhere=args.retry_elsewhere,
    )
    print(reports.matrix_text(report, color=sys.stdout.isatty(), only_problems=args.problems_only))
    write_json(args, reports.to_json(report))
    if args.junit:
        reports.write_junit(report, args.junit)
    if args.html:
        reports.write_html(report, args.html, baseline)
    if report.nothing_ran:
        print("\nnothing ran: every case was skipped, so this run cannot pass", file=sys.stderr)
        return 1
    if baseline is not None:
        new = reports.new_failures(report, baseline)
        if new:
            print(f"\n{len(new)} new failure(s) against the baseline {args.baseline}:")
            for r in new:
                print(f"  {r.status} {r.case} @ {r.device}: {r.reason[:300]}")
            return 1
        print(f"\nno new failures against the baseline {args.baseline}")
        return 0
    return 0 if report.ok else 1


# -- compare ----------------------------------------------------------------------------------


def parse_tolerances(items: Sequence[str], flag: str) -> float | dict[str, float] | None:
    """``["1e-4", "logits:1e-2"]`` -> ``{"": 1e-4, "logits": 1e-2}``; a lone default stays a float."""
    if not items:
        return None
    found: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition(":")
        if not sep:
            name, value = "", item
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"{flag} expects VALUE or NAME:VALUE with a number, got {item!r}") from None
        if number < 0:
            raise InputError(f"{flag} must not be negative, got {item!r}")
        found[name] = number
    if list(found) == [""]:
        return found[""]
    return found


def cmd_compare(args: argparse.Namespace) -> int:
    from nnport.cli import require_extra, require_matplotlib, table, write_json

    if args.reference.startswith("onnxruntime"):
        require_extra("onnxruntime", "onnxruntime", "compare")  # the reference
    if args.plot:
        require_matplotlib("--plot")
    found, reference, feeds, model = _compare_devices(args)  # with --json alone, cli.main sends all else to stderr
    rows, passed = [row.to_dict() for row in found], all(row.passed for row in found)
    write_json(
        args,
        {
            "model": model.name,
            "reference": args.reference,
            "precision": args.precision,
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
            "devices": rows,
            "passed": passed,
        },
    )
    print(f"{model.name}: {len(rows)} device(s) against {args.reference} ({args.precision})")
    lines = []
    for r in rows:
        if r["error"]:
            lines.append([r["device"], "-", "ERROR", "-", "-", "-", "-", "-", "-", r["error"][:100]])
            continue
        for o in r["outputs"]:
            lines.append(
                [
                    r["device"],
                    o["name"],
                    "ok" if o["passed"] else "FAIL",
                    _fmt(o["max_abs_error"]),
                    _fmt(o["max_rel_error"]),
                    _fmt(o["mse"]),
                    f"{o['cosine']:.6f}" if isinstance(o["cosine"], float) else str(o["cosine"]),
                    "" if o["top1_agreement"] is None else f"{o['top1_agreement']:.3g}/{o['topk_overlap']:.3g}",
                    o["tolerance"],
                    f"atol>={_fmt(o['min_atol'])} or rtol>={_fmt(o['min_rtol'])}",
                ]
            )
    print(
        table(
            lines,
            [
                "device",
                "output",
                "status",
                "max abs",
                "max rel",
                "mse",
                "cosine",
                "top1/top5",
                "tolerance (effective)",
                "needs",
            ],
        )
    )
    for r in rows:
        for reason in r.get("reasons", []):
            print(f"  {r['device']}: {reason}")
    print("all devices agree" if passed else "devices disagree with the reference")
    if args.plot:
        plot_error_histograms(reference, found, args.plot, title=f"{model.name} against {args.reference}")
        print(f"error histograms written to {args.plot}")
    return 0 if passed else 1


def plot_error_histograms(
    reference: Mapping[str, np.ndarray], found: Sequence[Any], path: str, title: str = "error against the reference"
) -> None:
    """One panel per output: the histogram of |device - reference| over its elements (log scale), per device.

    Exact elements are counted in the legend (a log axis has no zero); a device whose
    output is missing, mis-shaped or which did not run is left out of that panel.
    """
    from nnport.cli import require_matplotlib

    plt = require_matplotlib("--plot")
    names = list(reference)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.8 * max(1, len(names))), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        ref = np.asarray(reference[name], dtype=np.float64)
        errors = {}
        for row in found:
            got = row.outputs.get(name)
            if got is not None and np.shape(got) == ref.shape:
                err = np.abs(np.asarray(got, dtype=np.float64) - ref).ravel()
                errors[row.device] = err[np.isfinite(err)]
        nonzero = [e[e > 0] for e in errors.values() if np.any(e > 0)]
        bins = None
        if nonzero:  # one set of bins for every device: the panels compare like with like
            lo, hi = min(float(e.min()) for e in nonzero), max(float(e.max()) for e in nonzero)
            bins = np.logspace(np.log10(lo), np.log10(hi if hi > lo else lo * 10), 50)
        for device, err in errors.items():
            exact = int(np.sum(err == 0))
            label = f"{device}: max {float(err.max()) if err.size else 0.0:.3g}, {exact} of {err.size} exact"
            if bins is not None and np.any(err > 0):
                ax.hist(err[err > 0], bins=bins, histtype="step", linewidth=1.5, label=label)
            else:
                ax.plot([], [], label=label)
        drawn = len(errors)
        ax.set_xscale("log")
        ax.set_xlabel(f"|device - reference| on {name}")
        ax.set_ylabel("elements")
        if drawn:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _compare_devices(args: argparse.Namespace) -> tuple[list[Any], dict[str, np.ndarray], dict[str, np.ndarray], Any]:
    """Parse, call ``nnport.conformance.compare.compare_devices``, save; returns (rows, reference, feeds, model)."""
    from nnport.cli import parse_inputs, resolve_model, shapes_from
    from nnport.conformance.compare import Comparator, compare_devices
    from nnport.data import random_feeds
    from nnport.shapes import fix_shapes

    model = fix_shapes(resolve_model(args.model), shapes_from(args))  # reference and devices see one static model
    comparator = Comparator(
        parse_tolerances(args.atol, "--atol"),
        parse_tolerances(args.rtol, "--rtol"),
        precision=args.precision,
        scale_tol=parse_tolerances(args.scale_tol, "--scale-tol"),
    )
    comparator.check_names(model.output_names)
    feeds: dict[str, np.ndarray] = {}
    if args.load_inputs:
        if not Path(args.load_inputs).exists():
            raise InputError(f"--load-inputs file not found: {args.load_inputs!r}")
        with np.load(args.load_inputs, allow_pickle=False) as data:
            feeds.update({k: data[k] for k in data.files})
    feeds.update(parse_inputs(args.input))
    missing = [s for s in model.inputs if s.name not in feeds]
    if missing:
        feeds.update(random_feeds(missing, seed=args.seed))
    if args.save_inputs:
        save_arrays(args.save_inputs, feeds)
    reference, found = compare_devices(
        model,
        args.device,
        feeds,
        reference=args.reference,
        comparator=comparator,
        precision=args.precision,
        calibration=args.calibration,
    )
    if args.save_outputs:
        saved = {f"reference/{k}": v for k, v in reference.items()}
        for row in found:
            saved.update({f"{row.device}/{k}": v for k, v in row.outputs.items()})
        save_arrays(args.save_outputs, saved)
    return found, reference, feeds, model


def _fmt(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.3g}"
    return str(value)
