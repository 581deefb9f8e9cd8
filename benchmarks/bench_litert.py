"""LiteRT plugin benchmark: ``run`` overhead against a direct ``Interpreter`` call; onnx2tf cold vs cached.

Run: ``.venv/bin/python benchmarks/bench_litert.py [--rounds N] [--models NAME ...] [--threads T] [--skip-convert]``

1. ``run`` overhead on real ``.tflite`` models (the mediapipe 0.10.14 wheel's,
   fetched into nnport's cache) and on a one-ADD model (where the overhead is
   all there is), interleaved rounds, order alternating each round:

   * ``nnport``: ``CompiledModel.run(feeds)``: feed validation, this thread's
     interpreter, ``set_tensor`` per input, ``invoke``, ``get_tensor`` per output;
   * ``direct``: the same calls by hand on a second ``Interpreter`` built with
     the same options (XNNPACK, the same ``num_threads``):
     ``it.set_tensor(i, x); it.invoke(); [it.get_tensor(o) for o in outs]``.

   Each round times a block of calls per variant (about 20 ms of work), back
   to back, so load from other processes hits both alike.  The headline is
   the median over rounds of nnport's per-call time over direct's in the same
   round (target <= 1.05), with its quartiles.

2. onnx2tf conversion of the ``cnn`` zoo model (only where the onnx2tf
   environment exists): cold (empty ``cache_dir``: onnx2tf, the one-time check
   against ONNX Runtime, load) vs cached (same ``cache_dir``), each compile in
   a fresh process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import nnport
from nnport.conformance import tflite_models as tm
from nnport.plugins import _litert_convert as lc

DEFAULT_MODELS = ["tiny_add", "hand_recrop", "face_detection_short_range", "iris_landmark"]


def say(text: str = "") -> None:
    print(text, flush=True)


def direct_call(
    path: str, feeds: dict[str, np.ndarray], threads: int, names_in: list[str], names_out: list[str]
) -> Callable[[], Any]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    ins = {d["name"]: d["index"] for d in it.get_input_details()}
    outs = {d["name"]: d["index"] for d in it.get_output_details()}
    pairs = [(ins[n], feeds[n]) for n in names_in]
    out_idx = [outs[n] for n in names_out]
    set_tensor, invoke, get_tensor = it.set_tensor, it.invoke, it.get_tensor

    def call() -> list[np.ndarray]:
        for index, value in pairs:
            set_tensor(index, value)
        invoke()
        return [get_tensor(o) for o in out_idx]

    return call


def time_block(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def model_path(name: str, tmp: str) -> str:
    if name == "tiny_add":
        path = f"{tmp}/tiny_add.tflite"
        with open(path, "wb") as fh:
            fh.write(lc.tiny_model())
        return path
    return str(tm.path(name))


def bench_run(models: list[str], rounds: int, threads: int, block_s: float = 0.02) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            path = model_path(name, tmp)
            model = nnport.load(path)
            feeds = tm.image_feeds(model) if name != "tiny_add" else {"x": np.arange(8, dtype=np.float32).reshape(1, 8)}
            compiled = nnport.compile(model, "litert:cpu", fallback=False, threads=threads)
            nn = lambda: compiled.run(feeds)  # noqa: E731
            direct = direct_call(path, feeds, threads, model.input_names, model.output_names)
            for a, b in zip(nn().values(), direct()):
                np.testing.assert_array_equal(a, b)
            for _ in range(20):
                nn(), direct()
            once = min(time_block(direct, 5) for _ in range(3))
            calls = max(1, min(20000, int(block_s / max(once, 1e-7))))
            ratios, t_nn, t_direct = [], [], []
            for r in range(rounds):
                order = [("nnport", nn), ("direct", direct)] if r % 2 == 0 else [("direct", direct), ("nnport", nn)]
                got = {label: time_block(fn, calls) for label, fn in order}
                t_nn.append(got["nnport"])
                t_direct.append(got["direct"])
                ratios.append(got["nnport"] / got["direct"])
            q = statistics.quantiles(ratios, n=4)
            row = {
                "model": name,
                "threads": threads,
                "calls_per_block": calls,
                "direct_us": round(statistics.median(t_direct) * 1e6, 2),
                "nnport_us": round(statistics.median(t_nn) * 1e6, 2),
                "overhead_us": round((statistics.median(t_nn) - statistics.median(t_direct)) * 1e6, 2),
                "ratio_median": round(statistics.median(ratios), 4),
                "ratio_q1": round(q[0], 4),
                "ratio_q3": round(q[2], 4),
            }
            rows.append(row)
            say(
                f"{name:28s} direct {row['direct_us']:10.1f} us  nnport {row['nnport_us']:10.1f} us  "
                f"(+{row['overhead_us']:.2f} us)  ratio {row['ratio_median']:.4f} [{row['ratio_q1']:.4f}, "
                f"{row['ratio_q3']:.4f}]"
            )
    return rows


COMPILE_ONE = r"""
import json, sys, time
import nnport
from nnport import zoo
t = time.perf_counter()
c = nnport.compile(zoo.build(sys.argv[1]), "litert:cpu", fallback=False, cache_dir=sys.argv[2])
info = {"compile_s": time.perf_counter() - t, "cache_hit": c.cache_hit}
print(json.dumps({**info, "onnx2tf_s": c.info.get("onnx2tf_seconds"), "verified": c.info.get("verified")}))
"""


def bench_convert(name: str = "cnn") -> dict[str, Any] | None:
    if lc.onnx2tf_executable() is None:
        say(f"conversion: skipped ({lc.missing_reason()})")
        return None
    with tempfile.TemporaryDirectory() as cache:
        runs = []
        for label in ("cold", "cached"):
            proc = subprocess.run(
                [sys.executable, "-c", COMPILE_ONE, name, cache], capture_output=True, text=True, timeout=900
            )
            data = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.append((label, data))
            say(
                f"conversion {name} {label:6s}: compile {data['compile_s']:.2f} s "
                f"(cache_hit={data['cache_hit']}, onnx2tf {data['onnx2tf_s']} s) {data['verified']}"
            )
    return dict(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-convert", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    import importlib.metadata

    say(f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}, threads={args.threads}, rounds={args.rounds}")
    results: dict[str, Any] = {"run": bench_run(args.models, args.rounds, args.threads)}
    if not args.skip_convert:
        results["convert"] = bench_convert()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    worst = max(r["ratio_median"] for r in results["run"])
    say(f"worst median ratio nnport/direct: {worst:.4f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
