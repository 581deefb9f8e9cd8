"""``nnport bench`` (compile and measure one model on several devices, side by side) and ``nnport meters``.

For each ``--device``: a cold compile (timed, with the resident memory it
adds), a warm compile from a fresh compile cache (``cache_dir``: one compile
fills it, the next one is timed), then ``nnport.measure`` with the chosen
scenario.  The table puts devices in columns; ``--json`` writes every figure
(units in the keys) with the context needed to compare runs, and
``--compare a.json b.json`` prints the ratios of two such files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ExecutionError, InputError, MeasurementError, NnportError
from .measuring import SCENARIOS, MeasureSettings, host_context

BENCH_FORMAT = 1

ROWS: list[tuple[str, str, str]] = [
    # (JSON key, label, format)
    ("iterations", "timed iterations", "d"),
    ("duration_s", "timed window (s)", ".3f"),
    ("latency_min_ms", "latency min (ms)", ".4g"),
    ("latency_mean_ms", "latency mean (ms)", ".4g"),
    ("latency_stdev_ms", "latency stdev (ms)", ".4g"),
    ("latency_p50_ms", "latency p50 (ms)", ".4g"),
    ("latency_p90_ms", "latency p90 (ms)", ".4g"),
    ("latency_p95_ms", "latency p95 (ms)", ".4g"),
    ("latency_p99_ms", "latency p99 (ms)", ".4g"),
    ("latency_max_ms", "latency max (ms)", ".4g"),
    ("latency_cv_percent", "latency CV (%)", ".1f"),
    ("throughput_ips", "throughput (inferences/s)", ".4g"),
    ("compile_cold_s", "compile cold (s)", ".4g"),
    ("compile_warm_s", "compile warm, cached (s)", ".4g"),
    ("compile_rss_added_mib", "compile RSS added (MiB)", ".1f"),
    ("inference_rss_added_mib", "inference RSS added (MiB)", ".1f"),
    ("peak_rss_mib", "peak RSS (MiB)", ".1f"),
    ("energy_per_inference_mj", "energy / inference (mJ)", ".4g"),
    ("avg_power_w", "average power (W)", ".3g"),
]


def register(sub: Any) -> None:
    from .cli import add_json_argument, add_shapes_argument

    p = sub.add_parser(
        "bench",
        help="compile and measure a model on several devices; one side-by-side table",
        description="Measure latency, throughput, compile time, memory and energy (specs/measurement.md).",
    )
    p.add_argument("model", nargs="?", help="an ONNX file, or zoo:NAME for a built-in model")
    p.add_argument(
        "--device",
        "-d",
        action="append",
        help="device id, backend or kind (repeat for more columns; default: every usable device)",
    )
    add_json_argument(p, "every figure, the samples and the context")
    p.add_argument("--plot", metavar="OUT.png", help="latency CDF per device as a PNG (needs matplotlib: nnport[plot])")
    p.add_argument(
        "--compare", nargs=2, metavar=("A.json", "B.json"), help="print the ratios B/A of two --json results and exit"
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per stream (default 10)")
    p.add_argument("--iterations", type=int, default=50, help="minimum timed iterations (default 50)")
    p.add_argument("--min-duration", type=float, default=2.0, metavar="S", help="minimum timed seconds (default 2)")
    p.add_argument(
        "--max-duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after this many seconds even below --iterations",
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="single-stream")
    p.add_argument(
        "--streams",
        type=int,
        default=None,
        help="threads for multi-stream/offline (default: 1; multi-stream: usable cores)",
    )
    p.add_argument("--batch", type=int, default=1, help="samples per call (needs a dynamic batch dimension when > 1)")
    p.add_argument(
        "--threads", type=int, default=None, help="runtime threads per compiled model (default: the runtime's)"
    )
    p.add_argument("--precision", "-p", default="fp32", choices=("fp32", "fp16", "int8"))
    p.add_argument(
        "--calibration",
        "-c",
        metavar="DIR|FILE|random",
        help="int8 calibration data (a directory of .npy/.npz samples, one file, or 'random')",
    )
    p.add_argument(
        "--hint",
        default=None,
        choices=("latency", "throughput"),
        help="compile hint (default: throughput for multi-stream/offline, else latency)",
    )
    p.add_argument("--input", "-i", action="append", metavar="NAME=FILE.npy", help="input array (default: seeded data)")
    add_shapes_argument(p)
    p.add_argument("--no-energy", action="store_true", help="do not read energy meters")
    p.add_argument("--no-warm-compile", action="store_true", help="skip the cached (warm) compile")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("meters", help="list energy meters: usable, or why not")
    add_json_argument(p, "the meters")
    p.set_defaults(func=cmd_meters)


# -- nnport meters ------------------------------------------------------------------------------


def cmd_meters(args: argparse.Namespace) -> int:
    from .cli import table, write_json
    from .energy import meter_status

    rows = meter_status()
    write_json(args, rows)
    print(
        table(
            [
                [r["meter"], ",".join(r["kinds"]), "yes" if r["usable"] else "no", r["reads"] or r["reason"] or ""]
                for r in rows
            ],
            ["meter", "covers", "usable", "reads / reason"],
        )
    )
    return 0


# -- nnport bench --------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> MeasureSettings:
    streams = args.streams
    if streams is None:
        streams = _usable_cores() if args.scenario == "multi-stream" else 1
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    return MeasureSettings(
        warmup=args.warmup,
        min_iterations=args.iterations,
        min_duration_s=args.min_duration,
        max_duration_s=args.max_duration,
        scenario=args.scenario,
        streams=streams,
        batch=args.batch,
        energy=not args.no_energy,
        progress=_Progress() if progress else None,
    )


def _usable_cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Progress:
    """A one-line progress indicator on stderr, rewritten in place."""

    label = ""

    def __call__(self, done: int, elapsed_s: float, target_s: float) -> None:
        frac = min(1.0, elapsed_s / target_s) if target_s > 0 else 1.0
        bar = "#" * int(frac * 20)
        print(
            f"\r  {self.label} [{bar:<20}] {elapsed_s:5.1f}/{target_s:.1f} s  {done} inferences",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def note(self, text: str) -> None:
        print(f"\r{text:<78}", file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    from .api import bench
    from .cli import exit_code, parse_inputs, require_matplotlib, resolve_model, shapes_from, write_json

    if args.compare:
        return compare_files(args.compare[0], args.compare[1], plot=args.plot)
    if not args.model:
        raise MeasurementError("nnport bench needs a MODEL (an ONNX file or zoo:NAME), or --compare A.json B.json")
    if args.plot:
        require_matplotlib("--plot")
    settings = settings_from(args)  # invalid counts/durations fail here, before any compile
    from .types import CompileOptions

    try:
        hint = args.hint or ("latency" if settings.scenario == "single-stream" else "throughput")
        options = CompileOptions(
            threads=args.threads,
            precision=args.precision,
            hint=hint,
            shapes=shapes_from(args),
            calibration=args.calibration,
        )
    except ValueError as exc:
        raise MeasurementError(str(exc)) from exc
    model = resolve_model(args.model)
    inputs = parse_inputs(args.input) or None
    device_specs = args.device or _usable_devices()

    results: list[dict[str, Any]] = []
    bad_input: list[bool] = []  # per failed device: was it the user's input (an unknown device, a bad feed)?
    for spec in device_specs:
        progress = settings.progress if isinstance(settings.progress, _Progress) else None
        if progress is not None:
            progress.label = spec
            progress.note(f"nnport bench: {model.name} on {spec}: compiling")
        try:
            m = bench(model, spec, options, settings, inputs, warm=not args.no_warm_compile)
            note = {k: m.extra[k] for k in ("compile_memory_note",) if k in m.extra}
            results.append({**m.to_dict(), **note})
        except NnportError as exc:
            results.append({"device": spec, "error": f"{type(exc).__name__}: {exc}"})
            bad_input.append(exit_code(exc) == 2)
        if progress is not None:
            progress.note(f"nnport bench: {model.name} on {spec}: done")

    report = {
        "nnport_bench": BENCH_FORMAT,
        "model": {"name": model.name, "hash": model.hash, "path": str(model.path) if model.path else None},
        "settings": settings.to_dict(),
        "compile_options": {
            "threads": options.threads,
            "precision": options.precision,
            "hint": options.hint,
            "shapes": {k: list(v) for k, v in options.shapes.items()},
        },
        "context": host_context(),
        "results": results,
    }
    print(render_table(report))
    write_json(args, report)
    if args.plot:
        plot_cdf(
            [(r["device"], r.get("samples_ms") or []) for r in results if "error" not in r],
            args.plot,
            title=f"{model.name}: latency CDF",
        )
        print(f"latency CDF written to {args.plot}")
    failed = [r for r in results if "error" in r]
    if failed and len(failed) == len(results):
        why = "no device could be measured: " + "; ".join(f"{r['device']}: {r['error']}" for r in failed)
        raise InputError(why) if all(bad_input) else ExecutionError(why)
    return 1 if failed else 0


def _usable_devices() -> list[str]:
    from . import devices

    found = [d.id for d in devices()]
    if not found:
        raise MeasurementError("no usable device: see `nnport backends` for why each backend is unavailable")
    return found


# -- rendering ---------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def render_table(report: dict[str, Any]) -> str:
    from .cli import table

    results = report["results"]
    header = ["", *[r["device"] for r in results]]
    rows = []
    ok = [r for r in results if "error" not in r]
    if ok:
        rows.append(
            [
                "scenario",
                *[f"{r['scenario']} x{r['streams']} b{r['batch']}" if "error" not in r else "error" for r in results],
            ]
        )
        for key, label, spec in ROWS:
            rows.append([label, *[_fmt(r.get(key), spec) if "error" not in r else "" for r in results]])
        rows.append(
            [
                "energy",
                *[
                    ("measured: " + str(r.get("energy_meter")))
                    if r.get("energy") == "measured"
                    else "unavailable"
                    if "error" not in r
                    else ""
                    for r in results
                ],
            ]
        )
        rows.append(
            [
                "runtime",
                *[
                    ", ".join(f"{k} {v}" for k, v in r.get("context", {}).get("runtime_versions", {}).items())
                    if "error" not in r
                    else ""
                    for r in results
                ],
            ]
        )
    opts = report["compile_options"]
    lines = [
        f"nnport bench: {report['model']['name']} ({report['settings']['scenario']}, threads "
        f"{opts['threads'] or 'runtime default'}, "
        f"{opts['precision']}, hint {opts.get('hint', 'latency')}) on {report['context']['cpu_model']}, "
        f"{report['context']['cpu_cores_usable']} usable cores",
        "",
    ]
    lines.append(table(rows, header))
    notes = []
    energy: dict[str, list[str]] = {}  # reasons -> devices, so that shared reasons print once
    for r in results:
        if "error" in r:
            notes.append(f"{r['device']}: error: {r['error']}")
            continue
        for w in r.get("warnings", []):
            notes.append(f"{r['device']}: warning: {w}")
        if r.get("energy") != "measured":
            reasons = "; ".join(f"{k}: {v}" for k, v in r.get("energy_unavailable_reasons", {}).items())
            energy.setdefault(reasons, []).append(r["device"])
        if r.get("memory_note"):
            notes.append(f"{r['device']}: memory: {r['memory_note']}")
    for reasons, devs in energy.items():
        notes.append(f"{', '.join(devs)}: energy: unavailable ({reasons})")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def plot_cdf(series: Sequence[tuple[str, Sequence[float]]], path: str, title: str = "latency CDF") -> None:
    """One empirical CDF line per (label, samples in ms)."""
    import numpy as np

    from .cli import require_matplotlib

    plt = require_matplotlib("--plot")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, samples in series:
        if not len(samples):
            continue
        s = np.sort(np.asarray(samples, dtype=float))
        ax.step(
            s, np.arange(1, s.size + 1) / s.size, where="post", label=f"{label} (p50 {np.percentile(s, 50):.3g} ms)"
        )
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of inferences")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- --compare -----------------------------------------------------------------------------------------


def load_results(path: str) -> dict[str, Any]:
    """A ``nnport bench --json`` file, or a single ``Measurement.to_dict()`` JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MeasurementError(f"--compare: file not found: {path!r}") from None
    except (OSError, ValueError) as exc:
        raise MeasurementError(f"--compare: {path!r} is not a JSON file: {exc}") from exc
    if isinstance(data, dict) and "results" in data:
        return data
    if isinstance(data, dict) and "latency_p50_ms" in data:
        return {"model": {"name": data.get("model")}, "context": data.get("context", {}), "results": [data]}
    raise MeasurementError(f"--compare: {path!r} is neither a `nnport bench --json` file nor a measurement")


CONTEXT_KEYS = ("cpu_model", "cpu_cores_usable", "nnport_version", "platform", "python")


def compare_files(a_path: str, b_path: str, plot: str | None = None) -> int:
    from .cli import table

    a, b = load_results(a_path), load_results(b_path)
    a_ok = [r for r in a["results"] if "error" not in r]
    b_ok = [r for r in b["results"] if "error" not in r]
    by_device = {r["device"]: r for r in b_ok}
    pairs = [(r, by_device[r["device"]]) for r in a_ok if r["device"] in by_device]
    if not pairs and len(a_ok) == 1 and len(b_ok) == 1:
        pairs = [(a_ok[0], b_ok[0])]  # one result each: compare them whatever their devices
    if not pairs:
        raise MeasurementError(
            f"--compare: no device measured in both files ({[r['device'] for r in a_ok]} vs "
            f"{[r['device'] for r in b_ok]})"
        )
    print(
        f"A = {a_path} ({a.get('model', {}).get('name')}), B = {b_path} "
        f"({b.get('model', {}).get('name')}); ratio = B / A"
    )
    for ra, rb in pairs:
        rows = []
        for key, label, spec in ROWS:
            va, vb = ra.get(key), rb.get(key)
            if va is None and vb is None:
                continue
            ratio = f"{vb / va:.3f}" if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va else "-"
            rows.append([label, _fmt(va, spec), _fmt(vb, spec), ratio])
        print()
        print(table(rows, [f"{ra['device']} vs {rb['device']}", "A", "B", "B/A"]))
        diffs = _context_diffs(ra.get("context", {}), rb.get("context", {}))
        if diffs:
            print("context differs (ratios may reflect these, not only the change under test):")
            for d in diffs:
                print(f"  {d}")
    if plot:
        plot_cdf(
            [(f"A {ra['device']}", ra.get("samples_ms") or []) for ra, _ in pairs]
            + [(f"B {rb['device']}", rb.get("samples_ms") or []) for _, rb in pairs],
            plot,
            title="latency CDF: A vs B",
        )
        print(f"latency CDF written to {plot}")
    return 0


def _context_diffs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    diffs = []
    for key in (*CONTEXT_KEYS, "runtime_versions", "threads", "precision", "model_hash"):
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    sa, sb = a.get("settings", {}), b.get("settings", {})
    for key in ("scenario", "streams", "batch"):
        if sa.get(key) != sb.get(key):
            diffs.append(f"settings.{key}: {sa.get(key)!r} -> {sb.get(key)!r}")
    return diffs
