"""The real-model corpus on MNN: nnport's ``mnn:cpu`` beside raw MNN, both against ONNX Runtime.

``python -m nnport.conformance.raw_mnn [-k PATTERN] [--json FILE] [--threads N]``

Raw MNN is what a careful user does with the MNN wheel alone: convert the
model as shipped with MNN's converter at its default flags (through the C entry
point ``_tools.mnnconvert`` in a worker: never ``MNN.tools``, whose scripts
upload machine ids), load it with ``MNN.nn.load_module_from_file`` naming the
ONNX inputs and outputs, feed each input with ``MNN.expr.const`` (int64 and
bool as int32, since MNN computes them as int32 and an int64 buffer would be
read as int32 pairs), convert an NC4HW4 output to NCHW, copy it out.

Each (model, target) runs in a fresh child process, so a crash or a hang is a
result.  Targets: ``raw:mnn:cpu``, ``nnport:mnn:cpu:shapes`` (``shapes=`` the
feed shapes), ``nnport:mnn:cpu:lazy`` (no shapes: MNN runs the open dims).
Needs ``nnport.conformance.corpus`` (the corpus, its feeds and its judge).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnport.data import save_arrays

TARGETS = ("raw:mnn:cpu", "nnport:mnn:cpu:shapes", "nnport:mnn:cpu:lazy")


def run_raw_mnn(
    entry: Any, threads: int | None = None, timeout_s: float = 600.0
) -> tuple[Any, dict[str, np.ndarray] | None]:
    """Raw MNN on a corpus entry: (Outcome, outputs or None), as ``corpus.run_raw_ncnn``."""
    from nnport.conformance.corpus import Outcome, _onnx_inputs, _onnx_outputs, _short
    from nnport.plugins._mnn_convert import _reason, captured, import_mnn, run_converter

    target = "raw:mnn:cpu"
    feeds = entry.feeds()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nnport-raw-mnn-") as work:
        argv = [
            "mnnconvert",
            "-f",
            "ONNX",
            "--modelFile",
            str(entry.path()),
            "--MNNModel",
            "model.mnn",
            "--bizCode",
            "raw",
        ]
        rc, log, status = run_converter(argv, cwd=__import__("pathlib").Path(work), timeout_s=timeout_s)
        path = os.path.join(work, "model.mnn")
        if rc is None:
            return Outcome(
                entry.id,
                target,
                "timeout",
                f"the converter did not finish within {timeout_s:.0f} s",
                compile_s=time.perf_counter() - t,
            ), None
        if rc != 0 or not os.path.isfile(path) or os.path.getsize(path) == 0:
            how = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
            return Outcome(
                entry.id,
                target,
                "refused",
                f"MNN's converter ({how}): {_reason(log)}",
                compile_s=time.perf_counter() - t,
            ), None
        mnn = import_mnn()
        F = mnn.expr
        in_names = [i.name for i in _onnx_inputs(entry)]
        out_names = [o.name for o in _onnx_outputs(entry)]
        try:
            with captured(1) as said:
                module = mnn.nn.load_module_from_file(path, in_names, out_names, thread_num=threads or 1)
            if module is None:
                raise RuntimeError(" ".join(said.text().split())[:300] or "load_module_from_file returned None")
        except Exception as exc:
            return Outcome(
                entry.id,
                target,
                "refused",
                "MNN cannot load the model: " + _short(exc),
                compile_s=time.perf_counter() - t,
            ), None
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        try:
            args = []
            for name in in_names:
                a = np.ascontiguousarray(feeds[name])
                if a.dtype in (np.int64, np.bool_):
                    a = a.astype(np.int32)
                dtype = {np.dtype(np.float32): F.float, np.dtype(np.int32): F.int, np.dtype(np.uint8): F.uint8}.get(
                    a.dtype
                )
                if dtype is None:
                    a, dtype = a.astype(np.float32), F.float
                args.append(F.const(a, list(a.shape), F.NCHW, dtype))
            outputs = {}
            for name, var in zip(out_names, module.forward(args)):
                if var.data_format == F.NC4HW4:
                    var = F.convert(var, F.NCHW)
                outputs[name] = np.array(var.read())
        except BaseException as exc:  # MNN raises bare SystemError
            return Outcome(
                entry.id, target, "error", _short(exc), compile_s=compile_s, run_s=time.perf_counter() - t
            ), None
    return Outcome(entry.id, target, "pass", compile_s=compile_s, run_s=time.perf_counter() - t), outputs


def evaluate(
    model_id: str, target: str, threads: int | None, reference_npz: str, names: Sequence[str]
) -> dict[str, Any]:
    from nnport.conformance.corpus import _fit_shapes, compare, get, run_nnport

    entry = get(model_id)
    with np.load(reference_npz, allow_pickle=False) as data:
        reference = {name: data[f"o{i}"] for i, name in enumerate(names)}
    if target == "raw:mnn:cpu":
        out, outputs = run_raw_mnn(entry, threads)
        if outputs is not None:
            outputs = {
                k: v.astype(reference[k].dtype) if k in reference else v
                for k, v in _fit_shapes(outputs, reference).items()
            }
    else:
        out, outputs = run_nnport(entry, "mnn:cpu", shapes=target.endswith(":shapes"), threads=threads)
        out.details.pop("outputs_raw", None)
    if outputs is None:
        return out.to_dict()
    judged = compare(entry, target, outputs, reference)
    judged.compile_s, judged.run_s = out.compile_s, out.run_s
    judged.details = {**out.details, **judged.details}
    return judged.to_dict()


def run_all(
    patterns: Sequence[str] | None, threads: int | None, timeout_s: float, slow: bool = True
) -> list[dict[str, Any]]:
    from nnport.conformance.corpus import reference_outputs, select

    results = []
    for entry in select(patterns, slow=slow):
        reference = reference_outputs(entry)
        with tempfile.TemporaryDirectory(prefix="nnport-raw-mnn-ref-") as tmp:
            ref = os.path.join(tmp, "reference.npz")
            save_arrays(ref, {f"o{i}": v for i, v in enumerate(reference.values())})
            for target in TARGETS:
                task = json.dumps(
                    {
                        "model": entry.id,
                        "target": target,
                        "threads": threads,
                        "reference": ref,
                        "names": list(reference),
                    }
                )
                try:
                    proc = subprocess.run(
                        [sys.executable, "-m", "nnport.conformance.raw_mnn", "--child", task],
                        capture_output=True,
                        text=True,
                        timeout=timeout_s,
                    )
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                    if proc.returncode == 0 and lines:
                        result = json.loads(lines[-1])
                    else:
                        result = {
                            "model": entry.id,
                            "target": target,
                            "status": "crash",
                            "reason": f"exit status {proc.returncode}: {proc.stderr[-300:]}",
                        }
                except subprocess.TimeoutExpired:
                    result = {
                        "model": entry.id,
                        "target": target,
                        "status": "timeout",
                        "reason": f"no answer within {timeout_s:.0f} s",
                    }
                results.append(result)
                err = result.get("max_abs_error")
                print(
                    f"{entry.id:55s} {target:24s} {result['status']:9s} "
                    f"{'' if err is None else f'max abs err {err:.3g}'} "
                    f"{str(result.get('reason', ''))[:160]}",
                    flush=True,
                )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", "-k", action="append", help="model id glob or substring (repeat)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", help="write every outcome as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        task = json.loads(args.child)
        proto = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # converters and runtimes print: keep the answer line clean
        sys.stdout = sys.stderr
        result = evaluate(task["model"], task["target"], task["threads"], task["reference"], task["names"])
        proto.write(json.dumps(result, default=lambda v: v.item() if hasattr(v, "item") else repr(v)) + "\n")
        return 0
    results = run_all(args.models, args.threads, args.timeout)
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        counts.setdefault(r["target"], {}).setdefault(r["status"], 0)
        counts[r["target"]][r["status"]] += 1
    for target, by in counts.items():
        print(f"{target:24s} " + ", ".join(f"{n} {s}" for s, n in sorted(by.items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "counts": counts}, f, indent=1, default=repr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
