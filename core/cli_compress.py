"""``nnport compress``: write a portable fp16 / int8 ONNX model, and optionally report its cost.

    nnport compress MODEL --precision int8 --calibration DIR|random --out OUT.onnx
                    [--method static|dynamic] [--report] [--device D ...] [--native] [--json F]
                    [--eval-data DIR] [--fail-under [COSINE]] [--quantize-mixed-ranges]

The written file is plain ONNX (QDQ for int8 static), so every backend can
compile it.  A Concat/Split whose parts span ranges far apart (a detector's
pixel boxes joined with its 0-1 scores) stays float by default, with the nodes
after it; ``--quantize-mixed-ranges`` quantizes it anyway.  ``--report``
compares the result with the fp32 model on each ``--device`` (default: the
reference, onnxruntime:cpu): size, accuracy delta on held-out inputs per output
and per part of a joined output, and the fp32/compressed latency ratio measured
interleaved.  A part below the precision's threshold is marked LOW; with
``--fail-under`` the command then exits 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any


def register(sub: Any) -> None:
    from .cli import add_json_argument, add_shapes_argument

    p = sub.add_parser(
        "compress", help="write an fp16 or int8 (QDQ) ONNX model; --report gives accuracy delta and speedup"
    )
    p.add_argument("model", help="an ONNX file, or zoo:NAME for a built-in model")
    p.add_argument("--precision", "-p", choices=["int8", "fp16"], required=True, help="target precision")
    p.add_argument(
        "--calibration",
        "-c",
        metavar="DIR|FILE|random",
        help="int8 static: a directory of .npy/.npz samples, one file, or 'random'",
    )
    p.add_argument(
        "--method",
        choices=["static", "dynamic"],
        default="static",
        help="int8: static (QDQ, calibrated) or dynamic (MatMul models)",
    )
    p.add_argument(
        "--activations",
        choices=["int8", "uint8"],
        default=None,
        help="int8 static: asymmetric uint8 activations (fastest on CPU runtimes) or symmetric int8 (the only "
        "form TensorRT "
        "accepts); default uint8, or int8 when a --device is a TensorRT device",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="use at most this many calibration samples ('random': how many to make, default 16)",
    )
    p.add_argument("--out", "-o", required=True, help="where to write the compressed ONNX model")
    p.add_argument(
        "--report", action="store_true", help="compare with the fp32 model on each --device and print the report"
    )
    p.add_argument("--device", "-d", action="append", help="device for the report (repeat; default onnxruntime:cpu)")
    p.add_argument(
        "--native",
        action="store_true",
        help="report also each device's own conversion (compile the fp32 model with --precision)",
    )
    p.add_argument("--eval-samples", type=int, default=16, help="held-out inputs for the accuracy delta (seeds 0..N-1)")
    p.add_argument(
        "--eval-data",
        metavar="DIR|FILE",
        help="held-out inputs for the accuracy delta (same forms as --calibration; never the calibration data)",
    )
    p.add_argument(
        "--fail-under",
        nargs="?",
        type=float,
        const=-1.0,
        default=None,
        metavar="COSINE",
        help="implies --report: exit 1 when an output or output part is below the precision's threshold "
        "(int8: cosine 0.98, fp16: 0.999; top-1 agreement for classifiers), or below COSINE when given",
    )
    p.add_argument(
        "--quantize-mixed-ranges",
        action="store_true",
        help="int8 static: quantize Concat/Split nodes whose parts span ranges far apart (kept float by default)",
    )
    p.add_argument("--duration", type=float, default=2.0, help="minimum seconds of interleaved timing per device")
    add_json_argument(p, "the report (or a summary)")
    add_shapes_argument(p)
    p.set_defaults(func=cmd_compress)


def cmd_compress(args: argparse.Namespace) -> int:
    from . import compress, compress_report
    from .calibration import RandomCalibrationWarning
    from .cli import require_extra, resolve_model, shapes_from, write_json
    from .shapes import fix_shapes

    require_extra("onnxruntime", "compress", "compress")  # the quantiser is onnxruntime.quantization

    model = fix_shapes(resolve_model(args.model), shapes_from(args))  # the compressed model keeps these static shapes
    activations = args.activations or ("int8" if any("tensorrt" in d.lower() for d in args.device or ()) else "uint8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomCalibrationWarning)
        compressed = compress.quantize(
            model,
            args.precision,
            args.calibration,
            args.method,
            samples=args.samples,
            activations=activations,
            keep_mixed_ranges_float=not args.quantize_mixed_ranges,
        )
    for w in caught:
        if issubclass(w.category, RandomCalibrationWarning):
            print(f"nnport: warning: {w.message}", file=sys.stderr)
    path = compress.save(compressed, args.out)
    before, after = len(model.serialized()), len(compressed.serialized())
    info = compressed.metadata.get("compression", {})
    print(
        f"wrote {path} ({args.precision}{' ' + info['method'] if 'method' in info else ''}): {before:,} -> "
        f"{after:,} bytes"
    )
    for name, why in (info.get("kept_float") or {}).items():
        print(f"  kept float: {name}: {why}")
    summary: dict[str, Any] = {
        "model": model.name,
        "out": str(path),
        "precision": args.precision,
        "size_before": before,
        "size_after": after,
        "compression": info,
    }
    status = 0
    if args.report or args.fail_under is not None:
        threshold = None
        if args.fail_under is not None and args.fail_under >= 0:
            default = compress_report.THRESHOLDS.get(args.precision)
            threshold = compress_report.Threshold(
                min_cosine=args.fail_under, min_top1=default.min_top1 if default else None
            )
        eval_feeds = None
        if args.eval_data:
            from .calibration import calibration_feeds

            eval_feeds = calibration_feeds(args.eval_data, model.inputs, samples=args.eval_samples)
        result = compress_report.report(
            model,
            compressed,
            args.device or ["onnxruntime:cpu"],
            precision=args.precision,
            calibration=args.calibration,
            method=args.method,
            native=args.native,
            samples=args.eval_samples,
            eval_feeds=eval_feeds,
            min_duration_s=args.duration,
            threshold=threshold,
        )
        print(result.format())
        summary = {**summary, "report": result.to_dict()}
        failures = result.below_threshold()
        if failures and args.fail_under is not None:
            print(f"nnport: {len(failures)} result(s) below the threshold (--fail-under):")
            for line in failures:
                print(f"  {line}")
            status = 1
        errors = [d for d in result.devices if d.status == "error"]
        if errors:  # a device that could not be compared is a failed report, not a pass
            print(f"nnport: {len(errors)} device(s) could not be compared:", file=sys.stderr)
            for d in errors:
                print(f"  {d.device}: {d.error}", file=sys.stderr)
            status = 1
    write_json(args, summary)
    return status
