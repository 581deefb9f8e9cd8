"""``nnport port``: every device x precision for a model, side by side, and a recommendation.

The command parses, calls ``nnport.port`` (``nnport.port`` module) and prints
its report; a progress line runs on stderr meanwhile.  Ctrl-C stops the run
and still prints (and writes) the partial report, exit status 130.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

from .porting import OBJECTIVES, PRECISIONS, PREPROCESS, PortProgress, PortReport, parse_drop


def register(sub: Any) -> None:
    from .cli import add_json_argument, add_shapes_argument

    p = sub.add_parser(
        "port",
        help="choose a device and precision: accuracy, latency, memory, energy and size per device x "
        "precision, and a recommendation",
        description=(
            "Compile MODEL on every device x precision; measure accuracy against the fp32 reference (and "
            "against --labels), "
            "latency p50/p99, throughput, peak memory, energy per inference and size on disk; recommend "
            "the best row for "
            "--objective within --max-accuracy-drop."
        ),
    )
    p.add_argument("model", help="an ONNX file, or zoo:NAME for a built-in model")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="samples (one .npz per sample keyed by input name, sorted by name) or images (with --preprocess); "
        "default: random data (accuracy then means agreement)",
    )
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="true classes, one per sample in file-name order: .npy, or text with one integer per line",
    )
    p.add_argument(
        "--label-output",
        metavar="NAME",
        help="the output whose argmax is the class (needed when the model has several)",
    )
    p.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        help="how images become the input: imagenet (crop, mean/std), yolo (letterbox, /255) or none",
    )
    p.add_argument(
        "--device",
        "-d",
        action="append",
        metavar="DEVICE",
        help="device id, backend or kind (repeat; default: every usable device)",
    )
    p.add_argument(
        "--precision",
        "-p",
        action="append",
        type=_precisions,
        metavar="P[,P...]",
        help=f"precisions to try, comma-separated from {','.join(PRECISIONS)} (default: all)",
    )
    p.add_argument(
        "--calibration",
        metavar="DIR",
        help="int8 calibration samples (.npz per sample); default: the last fifth of --data, held out",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=_drop,
        default=0.01,
        metavar="PCT",
        help="accuracy budget below the fp32 reference, e.g. 1%% or 0.5%% (default 1%%)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="latency",
        help="what the recommendation minimises (throughput: maximises; default latency)",
    )
    p.add_argument(
        "--html", metavar="REPORT.html", help="write the report as HTML, with a Pareto plot of latency against accuracy"
    )
    add_json_argument(p, "every figure")
    add_shapes_argument(p)
    p.set_defaults(func=cmd_port)


def _precisions(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in PRECISIONS]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown precision {', '.join(unknown) or repr(text)} (choose from {', '.join(PRECISIONS)}, "
            "comma-separated)"
        )
    return items


def _drop(text: str) -> float:
    from .errors import InputError

    try:
        return parse_drop(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_port(args: argparse.Namespace) -> int:
    from .cli import require_extra, resolve_model, shapes_from

    require_extra("onnxruntime", "onnxruntime", "port")  # the fp32 reference is onnxruntime:cpu
    precisions = [p for group in args.precision for p in group] if args.precision else list(PRECISIONS)
    return run_and_print(
        resolve_model(args.model),
        data=args.data,
        labels=args.labels,
        label_output=args.label_output,
        preprocess=args.preprocess,
        devices=args.device,
        precisions=precisions,
        calibration=args.calibration,
        max_accuracy_drop=args.max_accuracy_drop,
        objective=args.objective,
        shapes=shapes_from(args),
        html=args.html,
        json_path=args.json,
    )


def run_and_print(
    model: Any, *, html: str | None = None, json_path: str | None = None, out: TextIO | None = None, **kwargs: Any
) -> int:
    """Run ``nnport.port`` with a progress line on stderr, print the report, write HTML/JSON.

    Returns the exit status: 0 with a recommendation and no failed row, 1
    otherwise, 130 when interrupted (the partial report is still printed and written).
    """
    from .porting import port

    out = out or sys.stdout
    progress = ProgressLine(sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning
        report = port(model, progress=progress, **kwargs)
    progress.clear()
    print(report.format(), file=out)
    if html:
        report.write_html(html)
        print(f"HTML report written to {html}", file=out)
    if json_path == "-":
        from .cli import emit_json

        emit_json("-", report.to_dict())
    elif json_path:
        report.write_json(json_path)
        print(f"JSON report written to {json_path}", file=out)
    return exit_status(report)


def exit_status(report: PortReport) -> int:
    if report.interrupted:
        return 130
    if report.recommendation is None or any(c.status == "error" for c in report.cells):
        return 1
    return 0


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"nnport: warning: {message}", file=sys.stderr)


class ProgressLine:
    """``[3/9] openvino:CPU int8: measuring [#####     ] 0.6/1.0 s`` on a terminal; one line per finished row
    elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self.width = 0

    def __call__(self, event: PortProgress) -> None:
        prefix = f"[{event.index}/{event.total}] {event.device} {event.precision}"
        if event.stage == "reference":
            self._line(f"reference: compiling fp32 on {event.device} and running the data", final=not self.tty)
        elif event.stage == "done" and event.cell is not None:
            self._line(f"{prefix}: {_done(event.cell)}", final=True)
        elif self.tty:
            if event.stage == "measure" and event.target_s:
                frac = min(1.0, (event.elapsed_s or 0.0) / event.target_s)
                text = (
                    f"{prefix}: measuring [{'#' * int(20 * frac):<20}] "
                    f"{event.elapsed_s or 0:.1f}/{event.target_s:.1f} s, {event.inferences or 0} inferences"
                )
            else:
                text = f"{prefix}: {STAGE_TEXT.get(event.stage, event.stage)}"
            self._line(text, final=False)

    def _line(self, text: str, final: bool) -> None:
        elapsed = f"{time.perf_counter() - self.started:6.1f} s  "
        if self.tty:
            pad = max(0, self.width - len(elapsed + text))
            print("\r" + elapsed + text + " " * pad, end="\n" if final else "", file=self.stream, flush=True)
            self.width = 0 if final else len(elapsed + text)
        elif final:
            print(elapsed + text, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.tty and self.width:
            print("\r" + " " * self.width + "\r", end="", file=self.stream, flush=True)
            self.width = 0


STAGE_TEXT = {
    "compile": "compiling (cold)",
    "warm compile": "compiling again from the cache (warm)",
    "accuracy": "running the data",
}


def _done(cell: Any) -> str:
    if cell.status == "ok":
        score = "" if cell.score is None else f", score {cell.score:.4f}"
        return f"ok: p50 {cell.latency_p50_ms:.3g} ms{score} ({cell.seconds:.1f} s)"
    reason = (cell.reason or "").split("; supported")[0]
    if len(reason) > 110:
        reason = reason[:107] + "..."
    return f"{cell.status}: {reason}"


DEMO_DEVICES = ("onnxruntime:cpu", "openvino:CPU", "ncnn:cpu")
DEMO_MIN_DURATION_S = 0.5


def demo(directory: str | Path | None = None) -> int:
    """``nnport demo``'s last part: ``nnport port`` on the trained digits classifier with its real labels.

    Writes the digits test split, labels and calibration set under
    ``directory`` (default ``$TMPDIR/nnport-demo``), prints the equivalent
    command, runs it (0.5 s of timing per row instead of 1 s) and leaves the
    HTML and JSON reports there.
    """
    from . import devices as usable_devices
    from . import zoo

    root = Path(directory) if directory is not None else Path(tempfile.gettempdir()) / "nnport-demo"
    exported = zoo.export_labelled("digits", root / "digits")
    have = {d.id for d in usable_devices()}
    chosen = [d for d in DEMO_DEVICES if d in have] or sorted(have)[:1]
    html, json_path = root / "port-digits.html", root / "port-digits.json"
    command = ["nnport", "port", "zoo:digits", *exported.port_args()]
    for device in chosen:
        command += ["-d", device]
    command += ["--html", str(html), "--json", str(json_path)]
    print(
        "\n== nnport port: which device and precision for the trained digits classifier? (accuracy "
        "against its 360 held-out labels)"
    )
    print("$ " + shlex.join(command))
    print(f"(the demo times each row for {DEMO_MIN_DURATION_S} s; the command above, for 1 s)\n", flush=True)
    return run_and_print(
        zoo.load("digits"),
        data=exported.data,
        labels=exported.labels,
        calibration=exported.calibration,
        devices=chosen,
        html=str(html),
        json_path=str(json_path),
        min_duration_s=DEMO_MIN_DURATION_S,
    )
