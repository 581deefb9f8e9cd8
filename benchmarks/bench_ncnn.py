"""ncnn plugin benchmark: run overhead against a direct extractor call; conversion cold vs cached.

Run: ``/tmp/venv/bin/python benchmarks/bench_ncnn.py [--rounds N] [--calls K] [--models mlp cnn attention] [--skip-run]
[--skip-cache]``

1. ``run`` overhead, on the same ``ncnn.Net`` (``compiled.native.net``) and the
   same feeds, in interleaved rounds (order alternating each round):

   * ``nnport``: ``CompiledModel.run(feeds)``: feed validation, then the plugin's
     extractor, guarded input (contiguous, batch dropped, ``clone()``), output
     copy and batch restore;
   * ``direct``: what pnnx's own generated script does, by hand:
     ``ex = net.create_extractor(); ex.input("in0", ncnn.Mat(x[0]).clone());
     _, out = ex.extract("out0"); np.array(out)`` (the copy keeps the result
     valid after the extractor is gone, as nnport's is);
   * ``unsafe``: the same without ``clone()`` (the numpy buffer wrapped as is),
     only for models whose first layer does not work in place (there it would
     crash): what a caller saves by skipping the guard the pnnx way;
   * ``staged``: the same guard the plugin now uses, by hand: the input
     assigned into a preallocated ncnn-owned Mat (``np.asarray(mat)[...] = x``),
     no per-call ``ncnn.Mat(x)``; nnport/staged is the plugin's own overhead
     (feed validation, plan loop, thread-local lookup, output reshape).

   Each round times a block of calls per variant (about 2 ms of work, at most
   ``--calls``), the variants back to back in alternating order, so that load
   from other processes hits them alike.  The headline is the median over
   rounds of nnport's per-call time over ``direct``'s in the same round (target
   <= 1.05), with its quartiles; the ratio of the median times and of the best
   rounds are printed too.

2. Conversion on ``cnn`` and ``light_resnet50``: cold (empty ``cache_dir``: pnnx,
   the one-time check against ONNX Runtime, ncnn load) vs cached (same
   ``cache_dir``: ncnn load only).  Every compile runs in a fresh Python
   process, so nothing but the cache directory is reused; the figure is
   ``compiled.compile_time_s`` measured inside that process.  A third compile
   per round, into another empty directory with ``extra={"ncnn_verify": False}``,
   shows what the one-time check against ONNX Runtime costs.
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
from collections.abc import Callable
from typing import Any

import numpy as np

import nnport
from nnport import zoo
from nnport.data import random_feeds

IN_PLACE_FIRST = {"attention"}  # LayerNormalization first: ncnn runs it in place on the input blob


def say(text: str = "") -> None:
    print(text, flush=True)


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def direct_call(compiled: Any, feeds: dict[str, np.ndarray], clone: bool | str) -> Callable[[], Any]:
    """A hand-written ncnn extractor call on the plugin's own net (pnnx's script, minus torch)."""
    import ncnn

    net = compiled.native.net
    plans = compiled.native.in_plans
    outs = [p.blob for p in compiled.native.out_plans]
    # the batch axis is dropped per call, as a caller with new arrays each call must do
    arrays = [(p.blob, feeds[p.name], p.batch_index == 0) for p in plans]
    Mat = ncnn.Mat

    if clone == "staged":
        staged = []
        for blob, a, drop in arrays:
            mat = Mat(np.zeros(a.shape[1:] if drop else a.shape, np.float32)).clone()
            view = np.asarray(mat)
            staged.append((blob, a, mat, view[None] if drop else view))

        def call() -> list[np.ndarray]:
            ex = net.create_extractor()
            for blob, a, mat, view in staged:
                view[...] = a
                ex.input(blob, mat)
            result = [np.array(ex.extract(b)[1]) for b in outs]
            ex.clear()
            return result

    elif clone:

        def call() -> list[np.ndarray]:
            ex = net.create_extractor()
            for blob, a, drop in arrays:
                ex.input(blob, Mat(a[0] if drop else a).clone())
            result = [np.array(ex.extract(b)[1]) for b in outs]
            ex.clear()
            return result

    else:

        def call() -> list[np.ndarray]:
            ex = net.create_extractor()
            for blob, a, drop in arrays:
                ex.input(blob, Mat(a[0] if drop else a))
            result = [np.array(ex.extract(b)[1]) for b in outs]
            ex.clear()
            return result

    return call


def time_block(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls / 1e3  # us per call


def bench_run(
    models: list[str], rounds: int, calls: int, cache_dir: str, threads: int, block_us: float = 2000.0
) -> None:
    say(
        f"== run overhead: nnport run vs direct ncnn extractor call (ncnn:cpu, threads={threads}, {rounds} "
        f"rounds of ~{block_us / 1e3:.0f} ms blocks (<= {calls} calls), load {load()})"
    )
    for name in models:
        model = zoo.load_any(name)
        compiled = nnport.compile(model, "ncnn:cpu", cache_dir=cache_dir, threads=threads, fallback=False)
        feeds = random_feeds(model.inputs, seed=0)
        variants: dict[str, Callable[[], Any]] = {
            "nnport": lambda c=compiled, f=feeds: c.run(f),
            "direct": direct_call(compiled, feeds, clone=True),
        }
        if name not in IN_PLACE_FIRST:
            variants["unsafe"] = direct_call(compiled, feeds, clone=False)
        variants["staged"] = direct_call(compiled, feeds, clone="staged")
        want = compiled.run(feeds)
        for label, fn in variants.items():  # same answer from every variant, and warm-up
            got = fn()
            got = list(got.values()) if isinstance(got, dict) else got
            for g, w in zip(got, want.values()):
                assert np.array_equal(g.reshape(w.shape), w), f"{label} disagrees with nnport on {name}"
            time_block(fn, max(3, calls // 10))
        estimate = min(
            time_block(variants["direct"], 5) for _ in range(5)
        )  # min: a load spike must not shrink the blocks to 1 call
        block = max(1, min(calls, int(block_us / max(estimate, 1e-3))))  # ~block_us of work per block
        samples: dict[str, list[float]] = {k: [] for k in variants}
        order = list(variants)
        for r in range(rounds):
            for label in order if r % 2 == 0 else order[::-1]:
                samples[label].append(time_block(variants[label], block))
        med = {k: statistics.median(v) for k, v in samples.items()}
        ratios = [a / b for a, b in zip(samples["nnport"], samples["direct"])]
        line = "  ".join(f"{k} {v:8.1f} us" for k, v in med.items())
        best = {k: min(v) for k, v in samples.items()}
        say(
            f"{name:>12}: {line}  | nnport/direct: per-round ratio median {statistics.median(ratios):.3f}"
            f" (quartiles {np.percentile(ratios, 25):.3f}..{np.percentile(ratios, 75):.3f}); ratio of "
            f"medians {med['nnport'] / med['direct']:.3f},"
            f" of best rounds {best['nnport'] / best['direct']:.3f}  [{block} calls/block]"
        )
        staged = [a / b for a, b in zip(samples["nnport"], samples["staged"])]
        extra = f"; direct/unsafe {med['direct'] / med['unsafe']:.3f} (the cost of clone())" if "unsafe" in med else ""
        say(
            f"{'':>12}  nnport/staged (plugin overhead over the same guard by hand): per-round ratio "
            f"median {statistics.median(staged):.3f}"
            f" (quartiles {np.percentile(staged, 25):.3f}..{np.percentile(staged, 75):.3f}){extra}"
        )


COMPILE_SNIPPET = """
import json, sys, nnport, nnport.zoo
extra = {"ncnn_verify": sys.argv[3] == "1"}
c = nnport.compile(nnport.zoo.load_any(sys.argv[1]), "ncnn:cpu", cache_dir=sys.argv[2], fallback=False, extra=extra)
print(json.dumps({"compile_s": c.compile_time_s, "cache_hit": c.cache_hit, "pnnx_s": c.info.get("pnnx_seconds")}))
"""


def compile_once(name: str, cache_dir: str, verify: bool = True) -> dict[str, Any]:
    args = [sys.executable, "-c", COMPILE_SNIPPET, name, cache_dir, "1" if verify else "0"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_cache(models: list[str], rounds: int) -> None:
    say(
        f"== conversion: cold (pnnx + check + load) vs cached (load only), fresh process each, {rounds} "
        f"rounds, load {load()}"
    )
    for name in models:
        cold, warm, pnnx, unchecked = [], [], [], []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as cache:
                first = compile_once(name, cache)
                second = compile_once(name, cache)
            with tempfile.TemporaryDirectory() as cache:
                unchecked.append(compile_once(name, cache, verify=False)["compile_s"])
            assert first["cache_hit"] is False and second["cache_hit"] is True, (first, second)
            cold.append(first["compile_s"])
            warm.append(second["compile_s"])
            pnnx.append(first["pnnx_s"])
        c, w, u = statistics.median(cold), statistics.median(warm), statistics.median(unchecked)
        say(
            f"{name:>16}: cold {c * 1e3:9.1f} ms (pnnx {statistics.median(pnnx) * 1e3:.1f} ms; cold "
            f"without the ORT check {u * 1e3:.1f} ms)"
            f"  cached {w * 1e3:8.1f} ms  | cold/cached {c / w:.1f}x"
            f"  (cold {['%.0f' % (x * 1e3) for x in cold]}, cached {['%.0f' % (x * 1e3) for x in warm]} ms)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="ncnn threads (1: least noise on a shared machine)")
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn", "attention", "light_squeezenet"])
    parser.add_argument("--cache-models", nargs="+", default=["cnn", "light_resnet50"])
    parser.add_argument("--cache-rounds", type=int, default=3)
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--skip-cache", action="store_true")
    args = parser.parse_args(argv)
    versions = nnport.manager.get_plugin_manager().backend("ncnn").versions()
    say(f"ncnn {versions['ncnn']}, pnnx {versions['pnnx']}, {os.cpu_count()} CPUs")
    if not args.skip_run:
        with tempfile.TemporaryDirectory() as cache:
            bench_run(args.models, args.rounds, args.calls, cache, args.threads)
    if not args.skip_cache:
        bench_cache(args.cache_models, args.cache_rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
