"""MNN plugin benchmark: run overhead against a direct MNN call; conversion cold vs cached.

Run: ``.venv/bin/python benchmarks/bench_mnn.py [--rounds N] [--models mlp cnn attention] [--skip-run] [--skip-cache]``

1. ``run`` overhead, on the same MNN module (``compiled.native.module``) and the
   same feeds, in interleaved rounds (order alternating each round):

   * ``nnport``: ``CompiledModel.run(feeds)``: feed validation, then the plugin's
     guarded call (contiguity test, ``MNN.expr.const``, ``forward``, NC4HW4
     test, output copy);
   * ``direct``: what MNN's own examples do, by hand:
     ``np.array(module.forward([F.const(x, x.shape, F.NCHW, F.float)])[0].read())``
     (the copy is needed: ``read()`` views memory the next call overwrites).

   * ``plugin``: the plugin's own path (``compiled.native.run_checked``), i.e.
     ``run`` without the core's feed validation, to tell the two costs apart.

   Each round times a block of calls per variant (about 3 ms of work), back to
   back in alternating order, so that load from other processes hits them
   alike.  The headline is the median over rounds of nnport's per-call time
   over direct's in the same round (target <= 1.05), with its quartiles.

2. Conversion on ``cnn`` and ``light_resnet50``: cold (empty ``cache_dir``: the
   converter worker, the one-time check against ONNX Runtime, MNN load) vs
   cached (same ``cache_dir``: MNN load only), each compile in a fresh Python
   process; the figure is ``compiled.compile_time_s`` measured inside it.  A
   third compile per round, into another empty directory with
   ``extra={"mnn_verify": False}``, shows what the check costs.
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
from nnport import zoo
from nnport.data import random_feeds


def say(text: str = "") -> None:
    print(text, flush=True)


def block_time(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def overhead(name: str, rounds: int, cache_dir: str) -> dict[str, Any]:
    model = zoo.load_any(name)
    compiled = nnport.compile(model, "mnn:cpu", cache_dir=cache_dir, fallback=False, threads=1)
    feeds = random_feeds(model.inputs, seed=0)
    program = compiled.native
    from nnport.plugins._mnn_convert import import_mnn

    F = import_mnn().expr
    module, const, NCHW, dtype = program.module, F.const, F.NCHW, F.float
    (iname,) = [s.name for s in model.inputs]
    x = feeds[iname]
    shape = x.shape

    def direct() -> Any:
        return np.array(module.forward([const(x, shape, NCHW, dtype)])[0].read())

    def ours() -> Any:
        return compiled.run(feeds)

    plugin_call = program.run_checked

    def plugin() -> Any:  # the plugin's own path, without the core's feed validation
        return plugin_call(feeds)

    for _ in range(50):  # warm every path (MNN allocates on the first calls; the plugin reads the layout)
        direct()
        ours()
    plugin_call = program.run_checked
    np.testing.assert_array_equal(direct(), next(iter(ours().values())))
    per_call = min(block_time(direct, 20) for _ in range(5))
    calls = max(3, min(1000, int(0.003 / max(per_call, 1e-7))))  # ~3 ms blocks: short, so load hits both alike
    t: dict[Any, list[float]] = {ours: [], direct: [], plugin: []}
    ratios, plugin_ratios = [], []
    for r in range(rounds):
        order = (ours, plugin, direct) if r % 2 == 0 else (direct, plugin, ours)
        times = {fn: block_time(fn, calls) for fn in order}
        for fn in t:
            t[fn].append(times[fn])
        ratios.append(times[ours] / times[direct])
        plugin_ratios.append(times[plugin] / times[direct])
    q = statistics.quantiles(ratios, n=4)
    result = {
        "model": name,
        "calls_per_block": calls,
        "rounds": rounds,
        "direct_us": statistics.median(t[direct]) * 1e6,
        "nnport_us": statistics.median(t[ours]) * 1e6,
        "ratio_median": statistics.median(ratios),
        "ratio_q1": q[0],
        "ratio_q3": q[2],
        "plugin_only_ratio_median": statistics.median(plugin_ratios),
        "ratio_of_best": min(t[ours]) / min(t[direct]),
        "path": getattr(program.run_checked, "__name__", "?"),
    }
    say(
        f"{name:18s} direct {result['direct_us']:9.1f} us  nnport {result['nnport_us']:9.1f} us  "
        f"run/direct median {result['ratio_median']:.3f} (q1 {q[0]:.3f}, q3 {q[2]:.3f}; best/best "
        f"{result['ratio_of_best']:.3f})  "
        f"plugin path alone {result['plugin_only_ratio_median']:.3f}  [{calls} calls x {rounds} rounds, "
        f"path {result['path']}]"
    )
    return result


COMPILE_ONE = """
import json, sys, time, nnport, nnport.zoo
model = nnport.zoo.load_any(sys.argv[1])
extra = json.loads(sys.argv[3])
start = time.perf_counter()
compiled = nnport.compile(model, "mnn:cpu", cache_dir=sys.argv[2], fallback=False, extra=extra)
wall = time.perf_counter() - start
print(json.dumps({"compile_s": compiled.compile_time_s or wall, "wall_s": wall, "cache_hit": compiled.cache_hit,
                  "converter_s": compiled.info.get("converter_seconds"), "verified": compiled.info.get("verified")}))
"""


def compile_in_fresh_process(name: str, cache_dir: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", COMPILE_ONE, name, cache_dir, json.dumps(extra or {})],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def conversion(name: str, rounds: int) -> dict[str, Any]:
    cold, warm, unverified, converter = [], [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            first = compile_in_fresh_process(name, a)
            assert first["cache_hit"] is False
            second = compile_in_fresh_process(name, a)
            assert second["cache_hit"] is True
            raw = compile_in_fresh_process(name, b, {"mnn_verify": False})
            cold.append(first["compile_s"])
            converter.append(first["converter_s"])
            warm.append(second["compile_s"])
            unverified.append(raw["compile_s"])
    result = {
        "model": name,
        "cold_s": statistics.median(cold),
        "converter_worker_s": statistics.median(converter),
        "cached_s": statistics.median(warm),
        "cold_without_check_s": statistics.median(unverified),
    }
    say(
        f"{name:18s} cold {result['cold_s']:.3f} s (converter worker {result['converter_worker_s']:.3f} s)  "
        f"cached {result['cached_s']:.3f} s  cold without the ONNX Runtime check "
        f"{result['cold_without_check_s']:.3f} s  [median of {rounds}]"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=201)
    parser.add_argument("--models", nargs="*", default=["mlp", "cnn", "attention", "light_squeezenet"])
    parser.add_argument("--compile-models", nargs="*", default=["cnn", "light_resnet50"])
    parser.add_argument("--compile-rounds", type=int, default=3)
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    from nnport.plugins._mnn_convert import mnn_version

    results["mnn"] = mnn_version()
    say(f"MNN {results['mnn']}, nnport {getattr(nnport, '__version__', '?')}")
    if not args.skip_run:
        say("\nrun overhead (1 MNN thread; nnport / direct per round)")
        with tempfile.TemporaryDirectory() as cache:
            results["overhead"] = [overhead(name, args.rounds, cache) for name in args.models]
    if not args.skip_cache:
        say("\nconversion: cold vs cached (fresh process per compile)")
        results["conversion"] = [conversion(name, args.compile_rounds) for name in args.compile_models]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
