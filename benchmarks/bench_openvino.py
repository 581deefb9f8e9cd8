"""OpenVINO plugin benchmark: run overhead and cold vs warm compile, side by side.

Run: ``/tmp/venv/bin/python benchmarks/bench_openvino.py [--rounds N] [--skip-cache] [--skip-run] [--json FILE]``

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

2. Compile cache on two resnet50-sized models.  ``light_resnet50`` (the onnx
   wheel's) generates its 100 MB of weights inside the graph (ConstantOfShape),
   so OpenVINO folds them at every compile; ``resnet50_init`` is the same
   network with seeded weights stored as initializers, like a real exported
   ResNet-50 (built with the conformance suite's ``materialize_light`` and saved
   to a temporary .onnx).  Every measurement is a fresh Python process (fresh
   ``openvino.Core``, nothing in memory), so warm means "from ``cache_dir``
   only".  Each round, interleaved, per model:

   * ``cold``: compile from the file into an empty ``cache_dir``;
   * ``warm``: the same again (the plugin hands OpenVINO the file, so a hit
     never reads the weights);
   * ``warm_no_mmap``: warm with OpenVINO's ``ENABLE_MMAP`` off (the blob is
     read instead of mapped);
   * ``cold_bytes`` / ``warm_bytes``: the model loaded from bytes (no file), so
     the plugin reads it into memory and OpenVINO hashes the whole model: what
     every warm compile cost before the by-path change;
   * ``no_cache``: a compile without ``cache_dir``.

   The time is ``compiled.compile_time_s`` (the ``nnport.compile`` call), after
   model loading and device listing (which loads OpenVINO's CPU plugin).  The
   child also says whether the blob is mapped (``/proc/self/maps``) and how much
   its resident memory grew over the compile call.
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
import json, os, sys
import nnport


def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1 << 20)


path, cache, mode = sys.argv[1], sys.argv[2] or None, sys.argv[3]
source = open(path, "rb").read() if mode.endswith("bytes") else path
model = nnport.load(source)
nnport.devices("openvino")
if mode == "warm_no_mmap":
    nnport.manager.get_plugin_manager().backend("openvino").core().set_property({"ENABLE_MMAP": False})
before = rss_mb()
compiled = nnport.compile(model, "openvino:CPU", cache_dir=cache, fallback=False)
maps = open("/proc/self/maps").read()
print(json.dumps({
    "compile_s": compiled.compile_time_s, "cache_hit": compiled.cache_hit, "read_by": compiled.info.get("read_by"),
    "blob_mapped": bool(cache) and any(cache in line and line.rstrip().endswith(".blob") for line in maps.splitlines()),
    "rss_growth_mb": rss_mb() - before,
}))
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
            f"{name:10s} "
            + "  ".join(f"{k} {v:.2f} us" for k, v in med.items())
            + "\n           ratios: "
            + "  ".join(f"{k} {v:.3f}x" for k, v in row["ratios"].items()),
            flush=True,
        )
    return results


def compile_child(path: str, cache_dir: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, path, cache_dir, mode], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child {mode} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cache_models(tmp: Path) -> dict[str, str]:
    """The two resnet50-sized models as .onnx files: weights generated in the graph, and stored."""
    import onnx

    import nnport.zoo

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the conformance package lives in the repo
    from conformance.cases import materialize_light

    stored = tmp / "resnet50_init.onnx"
    onnx.save(materialize_light(onnx.load(str(nnport.zoo.light_path("light_resnet50")))), str(stored))
    return {"light_resnet50": str(nnport.zoo.light_path("light_resnet50")), "resnet50_init": str(stored)}


MODES = ("cold", "warm", "warm_no_mmap", "cold_bytes", "warm_bytes", "no_cache")


def bench_cache(rounds: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="nnport-ov-models-") as tmp:
        models = cache_models(Path(tmp))
        sizes = {name: round(Path(p).stat().st_size / 1e6, 1) for name, p in models.items()}
        samples: dict[str, dict[str, list[dict]]] = {name: {m: [] for m in MODES} for name in models}
        for r in range(rounds):
            for name, path in models.items():
                with (
                    tempfile.TemporaryDirectory(prefix="nnport-ov-cache-") as file_cache,
                    tempfile.TemporaryDirectory(prefix="nnport-ov-cache-") as bytes_cache,
                ):
                    got = {
                        "cold": compile_child(path, file_cache, "cold"),
                        "warm": compile_child(path, file_cache, "warm"),
                        "warm_no_mmap": compile_child(path, file_cache, "warm_no_mmap"),
                        "cold_bytes": compile_child(path, bytes_cache, "cold_bytes"),
                        "warm_bytes": compile_child(path, bytes_cache, "warm_bytes"),
                        "no_cache": compile_child(path, "", "no_cache"),
                    }
                    blob_mb = round(sum(f.stat().st_size for f in Path(file_cache).rglob("*.blob")) / 1e6, 1)
                expected_hits = {
                    "cold": False,
                    "warm": True,
                    "warm_no_mmap": True,
                    "cold_bytes": False,
                    "warm_bytes": True,
                    "no_cache": None,
                }
                for mode, hit in expected_hits.items():
                    if got[mode]["cache_hit"] is not hit:
                        raise SystemExit(f"{name} {mode}: cache_hit {got[mode]['cache_hit']}, expected {hit}")
                    samples[name][mode].append(got[mode])
                print(
                    f"round {r} {name:15s} "
                    + "  ".join(f"{m} {got[m]['compile_s']:.3f}s" for m in MODES)
                    + f"  warm/cold {got['warm']['compile_s'] / got['cold']['compile_s']:.3f}  blob {blob_mb} MB",
                    flush=True,
                )
    results = []
    for name, by_mode in samples.items():
        med = {m: statistics.median(s["compile_s"] for s in v) for m, v in by_mode.items()}
        row = {
            "model": name,
            "onnx_mb": sizes[name],
            "median_s": {m: round(v, 3) for m, v in med.items()},
            "warm_over_cold": round(med["warm"] / med["cold"], 3),
            "warm_no_mmap_over_cold": round(med["warm_no_mmap"] / med["cold"], 3),
            "warm_bytes_over_cold_bytes": round(med["warm_bytes"] / med["cold_bytes"], 3),
            "per_round_warm_over_cold": [
                round(w["compile_s"] / c["compile_s"], 3) for w, c in zip(by_mode["warm"], by_mode["cold"])
            ],
            "read_by": {m: by_mode[m][0]["read_by"] for m in ("warm", "warm_bytes")},
            "blob_mapped_on_warm": {m: all(s["blob_mapped"] for s in by_mode[m]) for m in ("warm", "warm_no_mmap")},
            "rss_growth_mb": {m: statistics.median(s["rss_growth_mb"] for s in v) for m, v in by_mode.items()},
        }
        results.append(row)
        print(
            f"{name} ({row['onnx_mb']} MB onnx): median "
            + ", ".join(f"{m} {v:.3f} s" for m, v in med.items())
            + f"\n    warm/cold {row['warm_over_cold']:.3f} (target <= 0.10), no mmap "
            f"{row['warm_no_mmap_over_cold']:.3f}, "
            f"from bytes {row['warm_bytes_over_cold_bytes']:.3f}; blob mapped on warm: {row['blob_mapped_on_warm']}; "
            f"RSS growth over the compile, MB: {row['rss_growth_mb']}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds for run overhead")
    parser.add_argument("--block", type=int, default=300, help="calls per variant per round")
    parser.add_argument("--cache-rounds", type=int, default=3, help="fresh-process cold/warm rounds")
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--skip-run", action="store_true", help="only the compile-cache part")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    import openvino as ov

    print(f"openvino {ov.get_version()}, python {sys.version.split()[0]}", flush=True)
    report = {} if args.skip_run else {"run_overhead": bench_run(["mlp", "cnn"], args.rounds, args.block)}
    if not args.skip_cache:
        report["cache"] = bench_cache(args.cache_rounds)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
