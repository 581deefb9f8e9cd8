"""Benchmark: the zoo's trained digits CNN, top-1 accuracy against the real labels, per backend and precision.

    .venv/bin/python benchmarks/bench_digits.py [--device D ...] [--json out.json]

The model and its 360-image held-out split come with nnport (``zoo.load("digits")``,
``zoo.labelled("digits")``; trained by ``tools/train_digits.py``).  Every CPU
device nnport finds (or each ``--device``) compiles the fp32 model at fp32, fp16
and int8 (the backend's own conversion; int8 calibrated on 128 training
images, never the test split); a refused precision is listed with the
backend's reason.  Two extra rows run the portable int8 file of
``nnport.compress.quantize`` (ONNX Runtime QDQ) with 8-bit and with 7-bit
weights (``reduce_range``, the default on x86 CPUs without VNNI), so that both
CPU paths are measured on one machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

import nnport
from nnport import compress, compress_report, zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", "-d", action="append", help="device (repeat); default every usable CPU device")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    model, data = zoo.load("digits"), zoo.labelled("digits")
    devices = args.device or [d.id for d in nnport.devices() if d.kind == "cpu" and d.available]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = compress_report.label_accuracy(model, data.feeds, data.labels, devices, calibration=data.calibration)
    print(f"digits: top-1 accuracy on {len(data)} held-out images ({data.source}); cpu: {compress._cpu_model()}")
    out = []
    by_device: dict[str, dict[str, str]] = {}
    for r in rows:
        cell = f"{100 * r.accuracy:.2f}% ({r.correct}/{r.total})" if r.status == "ok" else f"{r.status}"
        by_device.setdefault(r.device, {})[r.precision] = cell
        out.append(
            {
                "device": r.device,
                "precision": r.precision,
                "status": r.status,
                "correct": r.correct,
                "total": r.total,
                "reason": r.reason,
            }
        )
    for device, cells in by_device.items():
        print(f"  {device:18} " + "  ".join(f"{p} {cells.get(p, '-'):20}" for p in ("fp32", "fp16", "int8")))
    for r in rows:
        if r.status != "ok":
            print(f"  {r.device} {r.precision}: {r.reason}")
    for reduce_range in (False, True):
        q = compress.quantize(model, "int8", data.calibration, reduce_range=reduce_range)
        for device in ("onnxruntime:cpu", "openvino:CPU"):
            try:
                compiled = nnport.compile(q, device, fallback=False)
            except nnport.NnportError as exc:
                print(f"  qdq file on {device}: {exc}")
                continue
            correct = int(np.sum(compiled.run(data.feeds)["logits"].argmax(axis=1) == data.labels))
            weights = "7-bit" if reduce_range else "8-bit"
            print(
                f"  int8 QDQ file ({weights} weights) on {device}: {100 * correct / len(data):.2f}% "
                f"({correct}/{len(data)})"
            )
            out.append(
                {
                    "device": device,
                    "precision": f"int8 qdq {weights}",
                    "status": "ok",
                    "correct": correct,
                    "total": len(data),
                }
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
