"""Benchmark: int8 on a real YOLOv8n detector, boxes and scores judged apart, with and without the mixed-range fix.

    .venv/bin/python benchmarks/bench_detector_int8.py [--calibration 32] [--eval 16] [--duration 5] [--json out.json]

The model is ``320n.onnx`` from the nudenet 3.4.2 wheel (YOLOv8n, 18 classes,
input ``images[batch,3,height,width]``, output ``output0[batch,22,anchors]`` =
Concat(4 box coordinates in pixels, 18 class scores in 0..1)), fetched with
``pip download --no-deps`` through ``nnport.conformance.corpus`` into
``nnport.paths.cache_root()/corpus``.  Inputs are 320x320 variants of
matplotlib's sample photo (crops, flips, brightness and contrast, padded to a
square as NudeNet does): calibration and held-out sets use different seeds.

For each path the int8 model is judged against the fp32 model on ONNX Runtime,
per part of ``output0`` (boxes ``[:,0:4]``, scores ``[:,4:22]``):

* ``ort qdq``     ``nnport.compress.quantize`` (ONNX Runtime QDQ) run on onnxruntime:cpu;
* ``ov qdq``      the same QDQ file run on openvino:CPU;
* ``ov nncf``     OpenVINO's own int8 (``compile(precision="int8")``, NNCF).

"before" quantizes the mixed-range Concat (``keep_mixed_ranges_float=False``,
what nnport did before), "after" is the default.  A "random" calibration row
repeats the issue's report (int8 calibrated on synthetic inputs).  Speed-up is
fp32 p50 / int8 p50 with the two compiled models timed alternately in one run
(``nnport.compress_report.interleaved_latency``) on the same backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import nnport
from nnport import compress, compress_report
from nnport.data import random_feeds

MODEL_ID = "real/nudenet/320n"


def detector_path() -> Path:
    """The cached YOLOv8n file (downloaded once with pip through the corpus fetch)."""
    from nnport.conformance import corpus

    entry = next(e for e in corpus.CORPUS if e.id == MODEL_ID)
    return corpus.fetch(entry)


def photos(count: int, seed: int, size: int = 320) -> list[dict[str, np.ndarray]]:
    """Crops, flips and brightness/contrast changes of matplotlib's sample photo, padded square, RGB/255."""
    import matplotlib
    from PIL import Image, ImageEnhance, ImageOps

    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        s = rng.uniform(0.5, 1.0)
        w, h = int(photo.width * s), int(photo.height * s)
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        img = photo.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        img = ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(rng.uniform(0.6, 1.4))).enhance(
            rng.uniform(0.7, 1.3)
        )
        square = Image.new("RGB", (max(img.size),) * 2)
        square.paste(img, (0, 0))
        arr = np.asarray(square.resize((size, size), Image.BILINEAR), np.float32).transpose(2, 0, 1)[None] / 255.0
        feeds.append({"images": np.ascontiguousarray(arr)})
    return feeds


def cosine(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    x = np.concatenate([v.ravel() for v in a]).astype(np.float64)
    y = np.concatenate([v.ravel() for v in b]).astype(np.float64)
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / denom) if denom else 0.0


def judge(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    return {
        "boxes": cosine([r[:, :4] for r in ref], [g[:, :4] for g in got]),
        "scores": cosine([r[:, 4:] for r in ref], [g[:, 4:] for g in got]),
        "whole": cosine(ref, got),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration", type=int, default=32, help="calibration photos (seed 1)")
    parser.add_argument("--eval", type=int, default=16, help="held-out photos (seed 2)")
    parser.add_argument("--duration", type=float, default=5.0, help="minimum seconds of interleaved timing per backend")
    parser.add_argument("--no-random", action="store_true", help="skip the random-calibration rows")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    model = nnport.load(detector_path())
    cal = photos(args.calibration, seed=1)
    held_out = photos(args.eval, seed=2)
    synthetic = [
        random_feeds(model.inputs, seed=1_000_000 + i, shapes={"images": (1, 3, 320, 320)})
        for i in range(args.calibration)
    ]
    ref_model = nnport.compile(model, "onnxruntime:cpu", fallback=False)
    ref = [ref_model.run(f)["output0"] for f in held_out]
    results: dict[str, Any] = {
        "model": MODEL_ID,
        "calibration": args.calibration,
        "eval": args.eval,
        "cpu": compress._cpu_model(),
        "rows": [],
        "speedup": {},
    }
    int8_models: dict[str, Any] = {}

    def row(calibration: str, path: str, when: str, compiled: Any, info: Any = None) -> None:
        scores = judge(ref, [compiled.run(f)["output0"] for f in held_out])
        results["rows"].append({"calibration": calibration, "path": path, "when": when, **scores, "kept_float": info})
        print(
            f"{calibration:7} {path:8} {when:6} boxes {scores['boxes']:.4f}  scores {scores['scores']:.4f} "
            f" whole {scores['whole']:.4f}",
            flush=True,
        )

    print(f"{model.name}: int8 cosine against fp32 (onnxruntime:cpu) on {len(held_out)} held-out photos")
    for name, data in (("photos", cal), ("random", synthetic))[: 1 if args.no_random else 2]:
        for when, keep in (("before", False), ("after", True)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = compress.quantize(model, "int8", data, keep_mixed_ranges_float=keep)
                kept = list(q.metadata["compression"]["kept_float"])
                row(name, "ort qdq", when, nnport.compile(q, "onnxruntime:cpu", fallback=False), kept)
                row(name, "ov qdq", when, nnport.compile(q, "openvino:CPU", fallback=False), kept)
                native = nnport.compile(
                    model,
                    "openvino:CPU",
                    precision="int8",
                    calibration=data,
                    fallback=False,
                    extra={"keep_mixed_ranges_float": keep},
                )
                row(name, "ov nncf", when, native, list(native.info["int8"].get("kept_float", {})))
            if name == "photos" and keep:
                int8_models = {
                    "onnxruntime:cpu (qdq)": ("onnxruntime:cpu", q),
                    "openvino:CPU (qdq)": ("openvino:CPU", q),
                    "openvino:CPU (nncf)": ("openvino:CPU", native),
                }

    print(f"\nspeed-up: fp32 p50 / int8 p50, interleaved, >= {args.duration:.0f} s each")
    fp32 = {d: nnport.compile(model, d, fallback=False) for d in ("onnxruntime:cpu", "openvino:CPU")}
    for label, (device, target) in int8_models.items():
        small = target if not isinstance(target, nnport.Model) else nnport.compile(target, device, fallback=False)
        t32, t8 = compress_report.interleaved_latency(fp32[device], small, held_out[0], min_duration_s=args.duration)
        p32, p8 = float(np.median(t32)), float(np.median(t8))
        results["speedup"][label] = {"fp32_ms": p32, "int8_ms": p8, "speedup": p32 / p8, "rounds": len(t32)}
        print(f"  {label:22} fp32 {p32:7.2f} ms  int8 {p8:7.2f} ms  {p32 / p8:.2f}x  ({len(t32)} rounds)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
