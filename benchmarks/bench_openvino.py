"""OpenVINO plugin benchmark: run overhead and cold vs warm compile, side by side.

Run: ``/tmp/venv/bin/python benchmarks/bench_openvino.py [--rounds N] [--skip-cache]``

1. ``run`` overhead.  On the zoo ``mlp`` and ``cnn``, in interleaved rounds on
   the same inputs and the same ``openvino.CompiledModel``:

   * ``nnport``: ``CompiledModel.run(feeds)`` (feed validation + the plugin's run);
   * ``ov_call``: ``compiled_model(feeds)``, the direct call OpenVINO documents;
   * ``ov_request``: ``infer_request.infer(feeds)`` on a request made once;
   * ``ov_minimal``: hand-written lean work: zero-copy input tensors made per
     call, ``infer(share_outputs=True)``, copies of the outputs;
   * ``ov_floor``: the least a caller can do: input tensors set once, the
     binding's ``infer`` without a result dict, copies of the outputs;
   * ``nnport_new_arrays`` alternates two feed dicts (equal values, different
     arrays), so that every call rewraps its inputs, like ``ov_minimal``, which
     alternates the same way.  ``nnport`` passes the same arrays every call, so
     its input tensors stay bound (the plugin rewraps only arrays that changed).

   Each round times a block of calls per variant; the figure is the median over
   rounds of the per-call mean, and the ratio is nnport's over each direct call.

2. Compile cache on ``light_resnet50``.  Every measurement is a fresh Python
   process (fresh ``openvino.Core``, nothing in memory), so warm means "from
   ``cache_dir`` only".  Each round runs: a cold compile into an empty
   ``cache_dir``, then a warm compile from that directory, then (for reference)
   a compile without a cache.  The time is ``compiled.compile_time_s``: the
   ``nnport_compile`` call (OpenVINO read + compile or cache import), after
   model loading and device listing (which loads OpenVINO's CPU plugin).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys
import nnport, nnport.zoo
model = nnport.zoo.load_any(sys.argv[1])
nnport.devices("openvino")
cache = sys.argv[2] or None
compiled = nnport.compile(model, "openvino:CPU", cache_dir=cache)
print(json.dumps({"compile_s": compiled.compile_time_s, "cache_hit": compiled.cache_hit}))
"""


def bench_run(names: list[str], rounds: int, block: int) -> list[dict]:
    import openvino as ov
    from openvino._pyopenvino import InferRequest as RawRequest

    import nnport
    import nnport.zoo
    from nnport.data import random_feeds

    results = []
    for name in names:
        model = nnport.zoo.load(name)
        compiled = nnport.compile(model, "openvino:CPU")
        cm = compiled.native.compiled_model
        feeds = random_feeds(compiled.inputs, seed=0)
        other = {k: v.copy() for k, v in feeds.items()}  # same values, different arrays
        pair = (feeds, other)
        request = cm.create_infer_request()
        minimal = cm.create_infer_request()
        floor = cm.create_infer_request()
        in_idx = [(i, p.get_any_name()) for i, p in enumerate(cm.inputs)]
        out_idx = [(i, next(iter(p.get_names()))) for i, p in enumerate(cm.outputs)]
        for i, n in in_idx:
            floor.set_input_tensor(i, ov.Tensor(feeds[n], shared_memory=True))
        raw_infer = RawRequest.infer
        tick = [0]

        def alternate() -> dict:
            tick[0] ^= 1
            return pair[tick[0]]

        def ov_minimal() -> dict:
            f = alternate()
            for i, n in in_idx:
                minimal.set_input_tensor(i, ov.Tensor(f[n], shared_memory=True))
            minimal.infer(share_outputs=True)
            return {n: minimal.get_output_tensor(i).data.copy() for i, n in out_idx}

        def ov_floor() -> dict:
            raw_infer(floor, {}, True, True)
            return {n: floor.get_output_tensor(i).data.copy() for i, n in out_idx}

        variants = {
            "nnport": lambda: compiled.run(feeds),
            "nnport_new_arrays": lambda: compiled.run(alternate()),
            "ov_call": lambda: cm(feeds),
            "ov_request": lambda: request.infer(feeds),
            "ov_minimal": ov_minimal,
            "ov_floor": ov_floor,
        }
        reference = variants["ov_call"]()
        for key, fn in variants.items():  # same answers, and warm-up
            out = fn()
            got = out[0] if key in ("ov_call", "ov_request") else next(iter(out.values()))
            assert np.array_equal(got, reference[0]), key
            for _ in range(20):
                fn()
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for key in order:
                fn = variants[key]
                start = time.perf_counter()
                for _ in range(block):
                    fn()
                samples[key].append((time.perf_counter() - start) / block * 1e6)
        med = {k: statistics.median(v) for k, v in samples.items()}
        row = {"model": name, "median_us": {k: round(v, 2) for k, v in med.items()}}
        row["ratios"] = {
            "nnport/ov_call": round(med["nnport"] / med["ov_call"], 3),
            "nnport/ov_request": round(med["nnport"] / med["ov_request"], 3),
            "nnport/ov_floor": round(med["nnport"] / med["ov_floor"], 3),
            "nnport_new_arrays/ov_minimal": round(med["nnport_new_arrays"] / med["ov_minimal"], 3),
        }
        results.append(row)
        print(
            f"{name:10s} " + "  ".join(f"{k} {v:.2f} us" for k, v in med.items())
            + "\n           ratios: " + "  ".join(f"{k} {v:.3f}x" for k, v in row["ratios"].items()),
            flush=True,
        )
    return results


def compile_child(model: str, cache_dir: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, model, cache_dir], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_cache(model: str, rounds: int) -> dict:
    cold, warm, none = [], [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="nnport-ov-cache-") as tmp:
            c = compile_child(model, tmp)
            w = compile_child(model, tmp)
            n = compile_child(model, "")
        if c["cache_hit"] or not w["cache_hit"]:
            raise SystemExit(f"unexpected cache state: cold hit={c['cache_hit']}, warm hit={w['cache_hit']}")
        cold.append(c["compile_s"])
        warm.append(w["compile_s"])
        none.append(n["compile_s"])
        print(f"round {r}: cold {c['compile_s']:.3f} s  warm {w['compile_s']:.3f} s  no cache {n['compile_s']:.3f} s  warm/cold {w['compile_s'] / c['compile_s']:.3f}", flush=True)
    result = {
        "model": model,
        "cold_s": round(statistics.median(cold), 3),
        "warm_s": round(statistics.median(warm), 3),
        "no_cache_s": round(statistics.median(none), 3),
    }
    result["warm_over_cold"] = round(result["warm_s"] / result["cold_s"], 3)
    result["per_round_warm_over_cold"] = [round(w / c, 3) for w, c in zip(warm, cold)]
    print(
        f"{model}: median cold {result['cold_s']:.3f} s, warm {result['warm_s']:.3f} s, no cache {result['no_cache_s']:.3f} s; "
        f"warm/cold {result['warm_over_cold']:.3f} (target <= 0.10)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds for run overhead")
    parser.add_argument("--block", type=int, default=300, help="calls per variant per round")
    parser.add_argument("--cache-rounds", type=int, default=3, help="fresh-process cold/warm rounds")
    parser.add_argument("--cache-model", default="light_resnet50")
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    import openvino as ov

    print(f"openvino {ov.get_version()}, python {sys.version.split()[0]}", flush=True)
    report = {"run_overhead": bench_run(["mlp", "cnn"], args.rounds, args.block)}
    if not args.skip_cache:
        report["cache"] = bench_cache(args.cache_model, args.cache_rounds)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
