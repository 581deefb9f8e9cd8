"""The worker process: runs one case on one device at a time, isolated from the runner.

Started by ``nnport.conformance.runner`` as ``python -m nnport.conformance.worker``.
It reads one JSON task per line on stdin and answers one JSON result per line
on the *original* stdout, which it keeps for itself: fd 1 is pointed at stderr
first, so that whatever a runtime or converter prints (pnnx is talkative)
cannot corrupt the protocol.  A segfault, ``abort()`` or hang here costs only
the case in flight: the runner sees the process die or time out, records
``crash``/``timeout`` and starts a fresh worker.

A task: ``{"case": id, "device": device id, "precision": "fp32",
"threads": n, "ref_cache": dir or null, "tolerances": {...}}``.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnport.data import save_arrays

REFERENCE_DEVICE = "onnxruntime:cpu"
ORACLE = "onnx.reference"


# -- reference by model format (LiteRT): a .tflite model is judged by TFLite's own reference kernels --
TFLITE_REFERENCE = "litert:ref"
"""TFLite's reference kernels (BUILTIN_REF): ``litert:cpu`` with ``extra={"litert_op_resolver": "builtin_ref"}``."""


def reference_for(device_id: str, model_format: str = "onnx") -> str:
    """Which reference judges ``device_id`` on a model of ``model_format``.

    ONNX: ONNX Runtime CPU, or the ONNX oracle for ORT CPU itself.  ``tflite``:
    TFLite's reference kernels (no other runtime reads .tflite).
    """
    if model_format == "tflite":
        return TFLITE_REFERENCE
    return ORACLE if device_id.lower() == REFERENCE_DEVICE else REFERENCE_DEVICE


# -- end: reference by model format --


def _reference_outputs(
    case: Any, model: Any, feeds: dict[str, np.ndarray], which: str, threads: int | None, cache: str | None
) -> dict[str, np.ndarray]:
    if case.expected is not None:
        return case.expected()
    path = None
    if cache:
        safe = case.id.replace("/", "__")
        path = Path(cache) / f"{safe}-{which.replace(':', '_')}-{model.hash[:16]}-{case.seed}.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {name: data[name] for name in model.output_names}
            except Exception:
                pass  # a torn or foreign file: recompute
    if which == TFLITE_REFERENCE:  # reference by model format (LiteRT)
        import nnport

        compiled = nnport.compile(
            model, "litert:cpu", fallback=False, threads=threads, extra={"litert_op_resolver": "builtin_ref"}
        )
        outputs = compiled.run(feeds)
        del compiled
    elif which == ORACLE:
        from .oracle import evaluate

        outputs = evaluate(model, feeds, list(model.output_names))
    else:
        import nnport

        compiled = nnport.compile(model, which, fallback=False, threads=threads)
        outputs = compiled.run(feeds)
        del compiled
    if path is not None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        save_arrays(tmp, outputs)
        os.replace(tmp, path)
    return outputs


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one case on one device and judge it; never raises."""
    from nnport.errors import (
        BackendUnavailable,
        DeviceLost,
        DeviceNotFound,
        NnportError,
        UnsupportedModel,
        UnsupportedPrecision,
        WorkerCrashed,
    )

    from . import cases
    from .compare import Comparator

    timings: dict[str, float] = {}
    device = task["device"]
    which = reference_for(device)
    result: dict[str, Any] = {"reference": which, "timings": timings, "outputs": []}
    try:
        case = cases.get(task["case"])
        t = time.perf_counter()
        model = case.model()
        shapes = {k: v for k, v in {**case.shapes, **(task.get("shapes") or {})}.items() if k in model.input_names}
        if shapes:
            from nnport.shapes import fix_shapes

            model = fix_shapes(model, shapes)
        feeds = case.inputs(model)
        timings["build_s"] = time.perf_counter() - t
        if model.format != "onnx":  # reference by model format (LiteRT): .tflite -> TFLite's reference kernels
            which = result["reference"] = reference_for(device, model.format)
    except Exception as exc:
        from nnport.errors import ModelLoadError

        # A node test nnport cannot represent (sequence/optional types) is unsupported, not wrong;
        # a default-suite case that does not build is a bug in the suite.
        # A real-corpus model that cannot be fetched (no registry) is a skip with pip's reason.
        from .corpus import CorpusUnavailable

        status = (
            "skip"
            if isinstance(exc, ModelLoadError)
            and task["case"].startswith("node/")
            or isinstance(exc, CorpusUnavailable)
            else "fail"
        )
        return {**result, "status": status, "reason": f"case could not be built: {type(exc).__name__}: {_short(exc)}"}
    if case.expected is not None:
        result["reference"] = "stored outputs"
    threads = task.get("threads")
    try:
        t = time.perf_counter()
        reference = _reference_outputs(case, model, feeds, which, threads, task.get("ref_cache"))
        timings["reference_s"] = time.perf_counter() - t
    except Exception as exc:
        if which != ORACLE:
            return {
                **result,
                "status": "skip",
                "reason": f"the reference ({which}) could not run this case: {type(exc).__name__}: {_short(exc)}",
            }
        # The oracle lacks an operator: the independent runtimes judge the reference backend (below).
        reference, oracle_error = None, f"{type(exc).__name__}: {_short(exc, 200)}"
        timings["reference_s"] = time.perf_counter() - t

    import nnport

    precision = task.get("precision", "fp32")
    extra: dict[str, Any] = {"calibration": _calibration(case, model, feeds)} if precision == "int8" else {}
    try:
        t = time.perf_counter()
        compiled = nnport.compile(model, device, fallback=False, precision=precision, threads=threads, **extra)
        timings["compile_s"] = time.perf_counter() - t
    except (WorkerCrashed, DeviceLost, DeviceNotFound) as exc:  # a farm device: its worker or its node died
        remote = _remote_status(exc, device)
        if remote is not None:
            return {**result, "status": remote, "reason": f"compile: {_short(exc)}"}
        return {**result, "status": "fail", "reason": f"compile failed: {type(exc).__name__}: {_short(exc)}"}
    except (UnsupportedModel, UnsupportedPrecision, BackendUnavailable) as exc:
        return {**result, "status": "skip", "reason": f"unsupported: {_short(exc)}"}
    except NnportError as exc:
        return {**result, "status": "fail", "reason": f"compile failed: {type(exc).__name__}: {_short(exc)}"}
    except Exception as exc:
        return {
            **result,
            "status": "fail",
            "reason": f"compile raised a non-nnport error {type(exc).__name__}: {_short(exc)}",
        }
    if compiled.info.get("farm"):
        result["remote"] = compiled.info["farm"]  # the node, its device, nnport and runtime versions
    try:
        t = time.perf_counter()
        outputs = compiled.run(feeds)
        timings["run_s"] = time.perf_counter() - t
    except (WorkerCrashed, DeviceLost) as exc:
        return {**result, "status": _remote_status(exc, device), "reason": f"run: {_short(exc)}"}
    except (UnsupportedModel, UnsupportedPrecision) as exc:
        # A backend that converts lazily (ncnn specialises per feed shape at the first run) refuses there, not at
        # compile.
        return {**result, "status": "skip", "reason": f"unsupported (at the first run): {_short(exc)}"}
    except NnportError as exc:
        return {**result, "status": "fail", "reason": f"run failed: {type(exc).__name__}: {_short(exc)}"}
    except Exception as exc:
        return {
            **result,
            "status": "fail",
            "reason": f"run raised a non-nnport error {type(exc).__name__}: {_short(exc)}",
        }
    finally:
        del compiled
    tolerances = {**case.tolerances, **(task.get("tolerances") or {})}
    if reference is None:  # judged by the independent runtimes' agreement (the oracle could not run the model)
        t = time.perf_counter()
        verdict = judge_by_agreement(model, feeds, outputs, tolerances, threads, oracle_error)
        timings["agreement_s"] = time.perf_counter() - t
        result["reference"] = verdict.label
        if verdict.note:
            result["note"] = verdict.note
        if verdict.reference is None:
            return {**result, "status": "skip", "reason": verdict.note}
        reference = verdict.reference
    try:
        comparison = Comparator(precision=task.get("precision", "fp32"), **tolerances)(outputs, reference)
    except NnportError as exc:
        return {**result, "status": "fail", "reason": f"comparison: {exc}"}
    result["outputs"] = [o.to_dict() for o in comparison.outputs]
    if comparison:
        return {**result, "status": "pass", "reason": ""}
    return {**result, "status": "fail", "reason": "; ".join(comparison.reasons())[:2000]}


# -- when the oracle cannot run a model: the independent runtimes judge the reference backend --------

INDEPENDENT = ("openvino:CPU", "ncnn:cpu")
"""Runtimes that share no kernels with ONNX Runtime (nor with each other): the fallback oracle of
``onnxruntime:cpu``."""


@dataclass(frozen=True)
class Agreement:
    """What judges the reference backend when the oracle cannot: the outputs to compare with, and who said so.

    ``reference`` is None when no verdict is possible (no two runtimes agree, or no
    independent runtime ran); ``label`` goes into ``Result.reference``, ``note`` into
    ``Result.note`` (and is the skip reason when there is no verdict).
    """

    reference: dict[str, np.ndarray] | None
    label: str
    note: str = ""


def _independent_outputs(
    model: Any, feeds: dict[str, np.ndarray], threads: int | None, devices: Sequence[str]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Each independent runtime's fp32 outputs, and why the others gave none."""
    import nnport

    ran: dict[str, dict[str, np.ndarray]] = {}
    missing: dict[str, str] = {}
    for device in devices:
        try:
            compiled = nnport.compile(model, device, fallback=False, threads=threads)
            ran[device] = compiled.run(feeds)
            del compiled
        except Exception as exc:  # unavailable here, refused, or failed: no vote
            missing[device] = f"{type(exc).__name__}: {_short(exc, 160)}"
    return ran, missing


def judge_by_agreement(
    model: Any,
    feeds: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    tolerances: Mapping[str, Any],
    threads: int | None,
    oracle_error: str,
    devices: Sequence[str] = INDEPENDENT,
    *,
    independent: Mapping[str, dict[str, np.ndarray]] | None = None,
    device: str = REFERENCE_DEVICE,
) -> Agreement:
    """Judge ``device``'s ``outputs`` by a majority of it and the independent runtimes (specs/conformance.md section 1).

    * The independent runtimes agree with each other: their outputs are the reference
      (``device`` passes or fails against them, and is the one named if it differs).
    * They disagree: ``device`` passes when it agrees with one of them; the other is named
      as the one that disagrees.  It agrees with neither: no majority, no verdict.
    * Only one ran: ``device`` passes when it agrees with it; otherwise no verdict.
    ``independent`` gives the runtimes' outputs directly (tests); otherwise they are computed.
    """
    from .compare import Comparator

    if independent is None:
        ran, missing = _independent_outputs(model, feeds, threads, devices)
    else:
        ran, missing = dict(independent), {d: "not given" for d in devices if d not in independent}
    why = f"{ORACLE} could not run it ({oracle_error})"
    absent = "; ".join(f"{d}: {r}" for d, r in missing.items())
    compare = Comparator(precision="fp32", **tolerances)
    names = list(ran)
    if not names:
        return Agreement(None, f"no oracle: {why}", f"no verdict: {why}, and no independent runtime ran it ({absent})")

    def agree(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[bool, str]:
        c = compare(a, b)
        return bool(c), "; ".join(c.reasons())[:400]

    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    agreeing = [(a, b) for a, b in pairs if agree(ran[b], ran[a])[0]]
    if agreeing:
        a, b = agreeing[0]
        return Agreement(ran[a], f"agreement of {a} and {b}", f"{why}; {a} and {b} agree, and judged {device}")
    votes = {d: agree(outputs, ran[d]) for d in names}
    on_side = [d for d in names if votes[d][0]]
    if len(names) == 1:
        d = names[0]
        if on_side:
            return Agreement(
                ran[d],
                f"agreement with {d} alone",
                f"{why}; {d} agrees with {device}" + (f" (no vote: {absent})" if absent else ""),
            )
        return Agreement(
            None,
            f"no majority: {device} vs {d}",
            f"no verdict: {why}; {device} and {d}, the only independent runtime that ran it, disagree ({votes[d][1]})"
            + (f"; no vote: {absent}" if absent else ""),
        )
    if on_side:
        side = on_side[0]
        dissent = [d for d in names if d not in on_side]
        detail = "; ".join(f"{d} disagrees with {device} and {side}: {votes[d][1]}" for d in dissent)
        return Agreement(
            ran[side], f"majority of {device} and {side}; {', '.join(dissent)} disagrees", f"{why}; {detail}"
        )
    detail = "; ".join(f"{d}: {votes[d][1]}" for d in names)
    return Agreement(
        None,
        f"no majority: {device}, {', '.join(names)} all disagree",
        f"no verdict: {why}; {device} and the independent runtimes {', '.join(names)} all disagree with "
        f"each other ({detail})",
    )


def _remote_status(exc: BaseException, device: str) -> str | None:
    """``crash`` for a remote worker that died, ``lost`` for a farm device whose node died or left; else None."""
    from nnport.errors import DeviceLost, DeviceNotFound, WorkerCrashed
    from nnport.farm import split_device_id

    if isinstance(exc, WorkerCrashed):
        return "crash"
    if isinstance(exc, DeviceLost) or isinstance(exc, DeviceNotFound) and split_device_id(device) is not None:
        return "lost"  # resolved before the run started, so it was there: its node has gone since
    return None


CALIBRATION_SAMPLES = 8


def _calibration(case: Any, model: Any, feeds: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """int8 calibration data: the case's input distribution under other seeds (never the judged input itself)."""
    if case.feeds is not None:
        return [feeds]
    from nnport.data import random_feeds

    return [
        random_feeds(model.inputs, seed=case.seed + 1000 + i, value_ranges=dict(case.value_ranges))
        for i in range(CALIBRATION_SAMPLES)
    ]


def _short(exc: BaseException, limit: int = 600) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        task = json.loads(line)
        print(f"[worker {os.getpid()}] {task['case']} on {task['device']}", file=sys.stderr, flush=True)
        try:
            result = run_task(task)
        except BaseException as exc:  # the protocol must answer even for a bug here
            result = {
                "status": "fail",
                "reason": f"worker error {type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        proto.write(json.dumps(result, default=str) + "\n")
        proto.flush()
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
