"""Measurement fidelity and multi-stream scaling of ``nnport.measure``, side by side.

Run: ``/tmp/venv/bin/python benchmarks/bench_measure.py [--rounds N] [--seconds S] [--threads T] [--only
fidelity,bare,scaling]``

Every comparison is interleaved: round after round, the two things compared
run one after the other (order alternating), each for ``--seconds``; the
figure is the median over rounds; the per-round ratios (each pair ran back
to back) and their median are printed too: a burst of load from other
processes then hits both sides of a ratio alike.

1. ``fidelity``: nnport's p50 on ``openvino:CPU`` vs the ``benchmark_app``
   shipped in the openvino wheel (``-hint none -nstreams 1 -api sync -ip f32
   -infer_precision f32 -nthreads T``: one stream, as nnport's ``hint="latency"``
   gives; benchmark_app refuses ``-nthreads`` with a hint), same model file,
   whose ``Median`` is parsed from its output.  benchmark_app times ``request.infer()`` in
   C++ (``request.latency``); nnport times ``backend.execute`` from Python
   (input binding check + infer + output collection).  Goal: within ±5%.
2. ``bare``: nnport's p50 vs a bare ``perf_counter_ns`` loop around each
   runtime's own Python call on the *same* native object: ONNX Runtime's
   ``InferenceSession.run(names, feeds)``, OpenVINO's ``InferRequest.infer()``
   with its input tensors set once.  Goal: within ±5%.
3. ``scaling``: aggregate throughput of ``multi-stream`` with 1 and 2 streams
   (one runtime thread per stream) on this 2-core machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the scaling control's matmul: one thread per caller

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import nnport
from nnport import MeasureSettings, zoo
from nnport.data import random_feeds


def say(text: str = "") -> None:
    print(text, flush=True)


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def nnport_p50(compiled: Any, seconds: float, warmup: int = 10) -> tuple[float, int]:
    m = nnport.measure(
        compiled, settings=MeasureSettings(warmup=warmup, min_iterations=10, min_duration_s=seconds, energy=False)
    )
    return m.latency_p50_ms, m.iterations


def bare_p50(call: Callable[[], Any], seconds: float, warmup: int = 10) -> tuple[float, int]:
    """The same loop shape as nnport's, written by hand around the runtime's call."""
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = []
    end = clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        call()
        t1 = clock()
        samples.append(t1 - t0)
        if t1 >= end and len(samples) >= 10:
            break
    return float(np.percentile(samples, 50)) / 1e6, len(samples)


def interleave(rounds: int, *fns: Callable[[], tuple[float, int]]) -> list[tuple[list[float], list[int]]]:
    """Run each function once per round, rotating the order; (values, counts) per function."""
    out: list[tuple[list[float], list[int]]] = [([], []) for _ in fns]
    for r in range(rounds):
        k = r % len(fns)
        for i in list(range(k, len(fns))) + list(range(k)):
            value, n = fns[i]()
            out[i][0].append(value)
            out[i][1].append(n)
    return out


def row(label: str, nn: list[float], other: list[float], nn_n: list[int], other_n: list[int]) -> list[str]:
    ratios = [x / y for x, y in zip(nn, other)]
    med_nn, med_other = statistics.median(nn), statistics.median(other)
    return [
        label,
        f"{med_other:.4g}",
        f"{med_nn:.4g}",
        f"{med_nn / med_other:.3f}",
        f"{statistics.median(ratios):.3f}",
        " ".join(f"{r:.3f}" for r in ratios),
        f"{statistics.median(other_n):.0f}/{statistics.median(nn_n):.0f}",
    ]


def table(rows: list[list[str]], header: list[str]) -> str:
    from nnport.cli import table as t

    return t(rows, header)


# -- 1. fidelity against benchmark_app --------------------------------------------------------------


def benchmark_app_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("benchmark_app")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("benchmark_app")
    if found:
        return [found]
    return [sys.executable, "-m", "openvino.tools.benchmark.main"]


MEDIAN = re.compile(r"Median:\s+([\d.]+)\s+(ms|us)")
COUNT = re.compile(r"Count:\s+(\d+)")


def benchmark_app_p50(model_path: str, threads: int, seconds: float) -> tuple[float, int]:
    cmd = benchmark_app_cmd() + [
        "-m",
        model_path,
        "-d",
        "CPU",
        "-hint",
        "none",
        "-nstreams",
        "1",
        "-api",
        "sync",
        "-ip",
        "f32",
        "-infer_precision",
        "f32",
        "-nthreads",
        str(threads),
        "-t",
        str(max(1, round(seconds))),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    m = MEDIAN.search(text)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"benchmark_app failed ({proc.returncode}): {text[-2000:]}")
    value = float(m.group(1)) / (1000 if m.group(2) == "us" else 1)
    count = COUNT.search(text)
    return value, int(count.group(1)) if count else -1


def fidelity(args: argparse.Namespace, tmp: Path) -> None:
    say(
        f"\n## 1. fidelity: nnport p50 vs benchmark_app median on openvino:CPU (threads {args.threads}, "
        f"{args.rounds} rounds x {args.seconds:g} s, load {load()})"
    )
    say(
        f"benchmark_app: {' '.join(benchmark_app_cmd())}  (-hint none -nstreams 1 -api sync -ip f32 "
        f"-infer_precision f32 -nthreads {args.threads}; nnport: hint latency, threads {args.threads})"
    )
    rows = []
    for name in args.fidelity_models:
        model = zoo.load_any(name)
        if model.path is not None and str(model.path).endswith(".onnx"):
            path = str(model.path)
        else:
            path = str(tmp / f"{name}.onnx")
            Path(path).write_bytes(model.serialized())
        compiled = nnport.compile(model, "openvino:CPU", fallback=False, threads=args.threads, hint="latency")
        (nn, nn_n), (app, app_n) = interleave(
            args.rounds,
            lambda: nnport_p50(compiled, args.seconds),
            lambda: benchmark_app_p50(path, args.threads, args.seconds),
        )
        rows.append(row(name, nn, app, nn_n, app_n))
        say(f"  {name}: benchmark_app {app} ms, nnport {nn} ms")
    say(
        table(
            rows,
            [
                "model",
                "benchmark_app p50 (ms)",
                "nnport p50 (ms)",
                "nnport/app",
                "median round ratio",
                "per-round ratios",
                "iterations app/nnport",
            ],
        )
    )
    say(f"(load after: {load()})")


# -- 2. nnport vs a bare loop -----------------------------------------------------------------------------


def bare_call(compiled: Any) -> Callable[[], Any]:
    """The runtime's own call on the object nnport compiled, inputs prepared once."""
    feeds = random_feeds(compiled.inputs, seed=0)
    if compiled.backend.name == "onnxruntime":
        session = compiled.native
        names = [o.name for o in session.get_outputs()]
        return lambda: session.run(names, feeds)
    if compiled.backend.name == "openvino":
        import openvino as ov

        request = compiled.native.compiled_model.create_infer_request()
        for port in compiled.native.compiled_model.inputs:
            request.set_tensor(port, ov.Tensor(feeds[port.any_name]))
        return request.infer
    raise ValueError(compiled.backend.name)


def bare(args: argparse.Namespace) -> None:
    say(
        f"\n## 2. nnport p50 vs a bare loop around the runtime's own call (threads {args.threads}, "
        f"{args.rounds} rounds x {args.seconds:g} s, load {load()})"
    )
    say(
        "   'loop/execute' times the plugin's execute in a hand-written loop: it isolates the loop from "
        "the plugin's own work"
    )
    rows = []
    for device in args.devices:
        for name in args.bare_models:
            compiled = nnport.compile(zoo.load_any(name), device, fallback=False, threads=args.threads)
            call = bare_call(compiled)
            backend = compiled.backend
            binding = backend.allocate(compiled)
            (nn, nn_n), (raw, raw_n), (ex, ex_n) = interleave(
                args.rounds,
                lambda: nnport_p50(compiled, args.seconds),
                lambda: bare_p50(call, args.seconds),
                lambda: bare_p50(lambda: backend.execute(compiled, binding), args.seconds),
            )
            r = row(f"{device} {name}", nn, raw, nn_n, raw_n)
            r.insert(5, f"{statistics.median(nn) / statistics.median(ex):.3f}")
            rows.append(r)
            say(f"  {device} {name}: bare {raw} ms, nnport {nn} ms, hand loop around execute {ex} ms")
    say(
        table(
            rows,
            [
                "device model",
                "bare p50 (ms)",
                "nnport p50 (ms)",
                "nnport/bare",
                "median round ratio",
                "nnport/loop-execute",
                "per-round nnport/bare",
                "iterations bare/nnport",
            ],
        )
    )
    say(f"(load after: {load()})")


# -- 3. multi-stream scaling ------------------------------------------------------------------------------


def scaling(args: argparse.Namespace) -> None:
    say(
        f"\n## 3. multi-stream throughput, 1 vs 2 streams, 1 runtime thread per stream ({os.cpu_count()} "
        f"cores, {args.rounds} rounds x {args.seconds:g} s, load {load()})"
    )
    rows = []
    configs = [(d, "latency") for d in args.devices] + [
        (d, "throughput") for d in args.devices if d.startswith("openvino")
    ]
    for device, hint in configs:
        for name in args.scaling_models:
            threads = 1 if hint == "latency" else None
            compiled = nnport.compile(zoo.load_any(name), device, fallback=False, threads=threads, hint=hint)

            def tput(streams: int) -> tuple[float, int]:
                s = MeasureSettings(
                    warmup=5,
                    min_iterations=10,
                    min_duration_s=args.seconds,
                    scenario="multi-stream",
                    streams=streams,
                    energy=False,
                )
                m = nnport.measure(compiled, settings=s)
                return m.throughput_ips, m.iterations

            (two, two_n), (one, one_n) = interleave(args.rounds, lambda: tput(2), lambda: tput(1))
            label = f"{device} {name} (hint {hint}, threads {threads or 'runtime default'})"
            r = row(label, two, one, two_n, one_n)
            rows.append(r)
            say(f"  {label}: 1 stream {one} /s, 2 streams {two} /s")
    rows.append(
        row(
            "control: numpy matmul, no nnport",
            *control(args),
        )
    )
    say(
        table(
            rows,
            [
                "device model",
                "1 stream (inf/s)",
                "2 streams (inf/s)",
                "2/1",
                "median round ratio",
                "per-round ratios",
                "iterations 1/2",
            ],
        )
    )
    say(
        "(the control shows how much parallelism the machine gave two threads at the time: a 2/1 near 1 "
        "means the other load left ~1 core)"
    )
    say(f"(load after: {load()})")


def control(args: argparse.Namespace) -> tuple[list[float], list[float], list[int], list[int]]:
    """What two threads of pure GIL-free work get from the machine right now (a 300x300 matmul loop)."""
    a = np.random.default_rng(0).random((300, 300))

    def tput(threads: int) -> tuple[float, int]:
        counts = [0] * threads
        end = time.perf_counter() + args.seconds

        def work(k: int) -> None:
            while time.perf_counter() < end:
                a @ a
                counts[k] += 1

        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        start = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / (time.perf_counter() - start), sum(counts)

    (two, two_n), (one, one_n) = interleave(args.rounds, lambda: tput(2), lambda: tput(1))
    return two, one, two_n, one_n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default="fidelity,bare,scaling")
    p.add_argument("--fidelity-models", nargs="*", default=["light_resnet50", "light_squeezenet", "cnn"])
    p.add_argument("--bare-models", nargs="*", default=["mlp", "cnn", "light_squeezenet"])
    p.add_argument("--scaling-models", nargs="*", default=["light_squeezenet", "cnn"])
    p.add_argument("--devices", nargs="*", default=["onnxruntime:cpu", "openvino:CPU"])
    args = p.parse_args()
    available = {d.id for d in nnport.devices()}
    args.devices = [d for d in args.devices if d in available]
    only = set(args.only.split(","))
    say(f"nnport {nnport.__version__}; {os.cpu_count()} cores; devices {args.devices}; load {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        if "fidelity" in only:
            if "openvino:CPU" in available:
                fidelity(args, Path(tmp))
            else:
                say("\n## 1. fidelity: skipped (openvino:CPU unavailable)")
        if "bare" in only:
            bare(args)
        if "scaling" in only:
            scaling(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
