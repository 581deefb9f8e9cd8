"""nnport's ``CompiledModel.run`` vs a direct ``InferenceSession.run``, side by side.

Both call the same ONNX Runtime session on the same feeds; the difference is
nnport's wrapper: feed validation, the hook fast-path check and building the
output dict.  Calls are interleaved in alternating blocks so that machine noise
hits both sides alike; the medians of all per-call samples are compared.

    python benchmarks/bench_run_overhead.py [--model mlp] [--rounds 200] [--block 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import onnxruntime as ort

import nnport
from nnport import zoo
from nnport.data import random_feeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--block", type=int, default=50)
    args = ap.parse_args()

    model = zoo.load_any(args.model)
    compiled = nnport.compile(model, "onnxruntime:cpu")
    feeds = random_feeds(compiled.inputs, seed=0)
    # an independent session built the way an ORT user would build it
    direct_session = ort.InferenceSession(model.serialized(), providers=["CPUExecutionProvider"])
    names = [o.name for o in direct_session.get_outputs()]

    def nnport_call() -> None:
        compiled.run(feeds)

    def direct_call() -> None:
        direct_session.run(names, feeds)

    def same_session_call() -> None:
        compiled.native.session.run(names, feeds)

    samples: dict[str, list[float]] = {"nnport run": [], "direct InferenceSession.run": [], "same session, direct": []}
    calls = [
        ("nnport run", nnport_call),
        ("direct InferenceSession.run", direct_call),
        ("same session, direct", same_session_call),
    ]
    for fn in (f for _, f in calls):
        for _ in range(200):
            fn()
    clock = time.perf_counter_ns
    for r in range(args.rounds):
        order = calls if r % 2 == 0 else calls[::-1]
        for label, fn in order:
            bucket = samples[label]
            for _ in range(args.block):
                t0 = clock()
                fn()
                bucket.append(clock() - t0)
    med = {k: statistics.median(v) / 1000 for k, v in samples.items()}
    print(
        f"model: {args.model} ({model.inputs[0]}), onnxruntime {ort.__version__}, "
        f"{args.rounds * args.block} calls each, interleaved"
    )
    for label, value in med.items():
        print(f"  {label:<30} median {value:8.2f} us")
    print(
        "ratio nnport / direct session      : "
        f"{med['nnport run'] / med['direct InferenceSession.run']:.3f}x (target <= 1.05x)"
    )
    print(f"ratio nnport / same session direct : {med['nnport run'] / med['same session, direct']:.3f}x")
    print(f"absolute wrapper overhead          : {med['nnport run'] - med['same session, direct']:.2f} us per call")


if __name__ == "__main__":
    main()
