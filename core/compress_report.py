"""What compression cost and bought: the compressed model against the fp32 one, per device.

``report`` compiles the fp32 and the compressed model side by side on each
requested device and gives size before/after, the accuracy delta against the
fp32 reference on held-out inputs (never the calibration inputs), and the
latency ratio fp32/compressed measured interleaved in one run, so that a busy
machine slows both alike.  ``label_accuracy`` scores top-1 against true labels.
The transform itself (``quantize``, ``save``) is ``nnport.compress``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import RANDOM_SEED_BASE, calibration_feeds
from .compress import compressed_precision, cpu_int8_features, quantize
from .errors import InputError, NnportError
from .model import Model, load

# -- accuracy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyDelta:
    """How far one output (or one part of it) of the compressed model is from the fp32 reference, over all samples.

    ``part`` is None for a whole output, else the slice of the output that one
    input of its final Concat fills (``[:,0:4]``, the boxes of a YOLOv8 head),
    with ``source`` naming that input: a whole-output cosine is dominated by the
    part with the largest values and can hide a destroyed narrow part.
    ``top1``/``top5`` are agreement rates (fraction of samples whose reference
    top-1 class is the compressed model's top-1 / in its top-5); None when the
    output is not a classifier's ``[N, classes]``.  ``reference_classes`` counts
    distinct reference top-1 classes: agreement on inputs that all map to one
    class says little.
    """

    output: str
    samples: int
    max_abs_error: float
    mse: float
    cosine: float
    top1: float | None = None
    top5: float | None = None
    reference_classes: int | None = None
    part: str | None = None
    source: str | None = None
    mean_abs_error: float | None = None

    @property
    def label(self) -> str:
        """``output0`` or ``output0[:,0:4]``."""
        return self.output + (self.part or "")

    def below(self, threshold: Threshold) -> list[str]:
        """Why this result is below ``threshold`` ([] when it is not)."""
        why = []
        if threshold.min_cosine is not None and not self.cosine >= threshold.min_cosine:
            why.append(f"cosine {self.cosine:.4f} < {threshold.min_cosine}")
        if threshold.min_top1 is not None and self.top1 is not None and not self.top1 >= threshold.min_top1:
            why.append(f"top-1 agreement {100 * self.top1:.1f}% < {100 * threshold.min_top1:.0f}%")
        return why


@dataclass(frozen=True)
class Threshold:
    """What a compressed model must keep against fp32, per output and per part."""

    min_cosine: float | None
    min_top1: float | None


THRESHOLDS = {
    "fp16": Threshold(min_cosine=0.999, min_top1=0.99),
    "int8": Threshold(min_cosine=0.98, min_top1=0.9),
}
"""Per precision: the cosine floors of ``specs/conformance.md`` (fp16 0.999, int8 0.98), and top-1
agreement floors for classifier outputs over many held-out samples (a sample whose two best classes
are nearly tied may flip under int8 rounding, so agreement is not required on every one)."""


def accuracy_delta(
    reference: Sequence[Mapping[str, np.ndarray]],
    got: Sequence[Mapping[str, np.ndarray]],
    segments: Mapping[str, Sequence[Any]] | None = None,
) -> list[AccuracyDelta]:
    """Per-output error metrics of ``got`` against ``reference`` (lists of output dicts, one per sample).

    ``segments`` (``nnport.ranges.output_segments``) adds one result per part of
    each output so split, right after that output's whole-output result.
    """
    if len(reference) != len(got) or not reference:
        raise ValueError(
            f"need the same non-zero number of reference and compressed results, got {len(reference)} and {len(got)}"
        )
    segments = segments or {}
    results = []
    for name in reference[0]:
        ref = [np.asarray(r[name], dtype=np.float64) for r in reference]
        out = [np.asarray(g[name], dtype=np.float64) for g in got]
        results.append(_delta(name, ref, out))
        for seg in segments.get(name, ()):
            if all(seg.axis < r.ndim and r.shape[seg.axis] >= seg.stop for r in ref + out):
                results.append(
                    _delta(
                        name, [seg.take(r) for r in ref], [seg.take(o) for o in out], part=seg.label, source=seg.source
                    )
                )
    return results


def _delta(
    name: str, ref: list[np.ndarray], out: list[np.ndarray], part: str | None = None, source: str | None = None
) -> AccuracyDelta:
    flat_r = np.concatenate([r.ravel() for r in ref])
    flat_o = np.concatenate([o.ravel() for o in out])
    diff = flat_o - flat_r
    denom = float(np.linalg.norm(flat_r) * np.linalg.norm(flat_o))
    cosine = float(flat_r @ flat_o / denom) if denom > 0 else (1.0 if not np.any(diff) else 0.0)
    top1 = top5 = None
    classes = None
    rows_r = [rows for rows in map(_class_rows, ref) if rows is not None]
    rows_o = [rows for rows in map(_class_rows, out) if rows is not None]
    if len(rows_r) == len(ref) and len(rows_o) == len(out):
        rr = np.concatenate(rows_r)
        oo = np.concatenate(rows_o)
        ref_top = rr.argmax(axis=1)
        top1 = float(np.mean(oo.argmax(axis=1) == ref_top))
        if rr.shape[1] > 5:
            top5_sets = np.argsort(-oo, axis=1)[:, :5]
            top5 = float(np.mean([t in s for t, s in zip(ref_top, top5_sets)]))
        classes = int(len(set(ref_top.tolist())))
    return AccuracyDelta(
        output=name,
        samples=len(ref),
        max_abs_error=float(np.max(np.abs(diff))) if diff.size else 0.0,
        mse=float(np.mean(diff**2)) if diff.size else 0.0,
        cosine=cosine,
        top1=top1,
        top5=top5,
        reference_classes=classes,
        part=part,
        source=source,
        mean_abs_error=float(np.mean(np.abs(diff))) if diff.size else 0.0,
    )


def _class_rows(array: np.ndarray) -> np.ndarray | None:
    """``[N, C]`` scores when ``array`` looks like a classifier output (trailing 1-dims dropped), else None."""
    shape = list(array.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) != 2 or shape[1] < 2:
        return None
    return array.reshape(shape)


# -- latency -----------------------------------------------------------------------------


def interleaved_latency(
    first: Any,
    second: Any,
    feeds: Mapping[str, np.ndarray],
    *,
    warmup: int = 3,
    min_rounds: int = 20,
    min_duration_s: float = 2.0,
    max_duration_s: float = 60.0,
) -> tuple[list[float], list[float]]:
    """Per-run latencies (ms) of two compiled models timed alternately on the same feeds.

    Each round runs both, swapping which goes first, so load from other
    processes and thermal drift hit both alike; a ratio of medians from such
    runs is far steadier than two separate measurements on a shared machine.
    """
    for _ in range(warmup):
        first.run(feeds)
        second.run(feeds)
    times_a: list[float] = []
    times_b: list[float] = []
    start = time.perf_counter()
    rounds = 0
    while True:
        order = ((first, times_a), (second, times_b)) if rounds % 2 == 0 else ((second, times_b), (first, times_a))
        for compiled, sink in order:
            t0 = time.perf_counter_ns()
            compiled.run(feeds)
            sink.append((time.perf_counter_ns() - t0) / 1e6)
        rounds += 1
        elapsed = time.perf_counter() - start
        if (rounds >= min_rounds and elapsed >= min_duration_s) or elapsed >= max_duration_s:
            return times_a, times_b


# -- report ------------------------------------------------------------------------------


@dataclass
class DeviceResult:
    """One device's verdict: accuracy delta and fp32/compressed latency, or why it could not be measured.

    ``path`` is ``"onnx"`` when the device compiled the portable compressed ONNX
    file, ``"native"`` when it compiled the fp32 model with ``precision=...``
    (the backend's own conversion: NNCF on OpenVINO, ncnn fp16 options...).
    """

    device: str
    path: str = "onnx"
    status: str = "ok"
    error: str | None = None
    accuracy: list[AccuracyDelta] = field(default_factory=list)
    fp32_ms: float | None = None
    compressed_ms: float | None = None
    speedup: float | None = None
    rounds: int = 0
    kept_float: dict[str, str] = field(default_factory=dict)
    """Native path: what the backend's own quantizer left float, and why (``compiled.info["int8"]``)."""


@dataclass
class CompressionReport:
    """What compression cost (accuracy) and bought (size, speed), per device."""

    model: str
    precision: str
    method: str | None
    size_before: int
    size_after: int
    eval_samples: int
    eval_seeds: str
    reference_device: str
    devices: list[DeviceResult] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)
    mixed_ranges: list[dict[str, Any]] = field(default_factory=list)
    threshold: Threshold | None = None

    @property
    def size_ratio(self) -> float:
        return self.size_before / self.size_after if self.size_after else float("nan")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size_ratio"] = self.size_ratio
        data["below_threshold"] = self.below_threshold()
        return data

    def below_threshold(self, threshold: Threshold | None = None) -> list[str]:
        """One line per output or part below ``threshold`` (default: the precision's), per device.

        A device that failed with an error (not a refused precision) counts too,
        as does a report in which no device gave a result: a gate fails closed.
        """
        threshold = threshold or self.threshold or THRESHOLDS.get(self.precision)
        found = []
        checked = 0
        for d in self.devices:
            if d.status == "error":
                found.append(f"{d.device} ({d.path}): error: {d.error}")
            for acc in d.accuracy:
                checked += 1
                why = acc.below(threshold) if threshold else []
                if why:
                    found.append(f"{d.device} ({d.path}) {acc.label}: " + "; ".join(why))
        if not checked:
            found.append("no device gave a result to check")
        return found

    def format(self) -> str:
        """The printed report: sizes, then one row per device and output."""
        lines = [
            f"compression report: {self.model} -> {self.precision}" + (f" ({self.method})" if self.method else ""),
            f"  size: {_mb(self.size_before)} -> {_mb(self.size_after)} ({self.size_ratio:.2f}x smaller)",
            f"  accuracy: against fp32 on {self.reference_device}, {self.eval_samples} held-out inputs "
            f"({self.eval_seeds}), "
            "none used for calibration",
            f"  latency: fp32 and {self.precision} runs interleaved in one run; ratio = fp32 p50 / "
            f"{self.precision} p50",
        ]
        cpu = ", ".join(k for k, v in self.cpu.items() if v and k != "model") or "none of the int8 extensions"
        lines.append(f"  cpu: {self.cpu.get('model', '?')}; int8/bf16 features: {cpu}")
        threshold = self.threshold or THRESHOLDS.get(self.precision)
        if threshold is not None:
            floors = [f"cosine >= {threshold.min_cosine}"] if threshold.min_cosine is not None else []
            floors += (
                [f"top-1 agreement >= {100 * threshold.min_top1:.0f}% (classifier outputs)"]
                if threshold.min_top1 is not None
                else []
            )
            lines.append(
                f"  threshold ({self.precision}): {', '.join(floors)} on every output and every part of a "
                "joined output; LOW marks a miss"
            )
        header = [
            "device",
            "path",
            "output",
            "max|err|",
            "mse",
            "cosine",
            "top1",
            "top5",
            "",
            "fp32 ms",
            f"{self.precision} ms",
            "speedup",
        ]
        rows = []
        for d in self.devices:
            if d.status != "ok":
                rows.append(
                    [
                        d.device,
                        d.path,
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "",
                        "-",
                        "-",
                        f"{d.status}: {(d.error or '')[:90]}",
                    ]
                )
                continue
            for i, acc in enumerate(d.accuracy):
                timing = (
                    [_num(d.fp32_ms, ".3g"), _num(d.compressed_ms, ".3g"), _num(d.speedup, ".2f") + "x"]
                    if i == 0
                    else ["", "", ""]
                )
                top1 = _pct(acc.top1) + (f" ({acc.reference_classes} cls)" if acc.reference_classes is not None else "")
                flag = "LOW" if threshold is not None and acc.below(threshold) else ""
                label = acc.output if acc.part is None else f"  {acc.label} {_short_name(acc.source)}"
                rows.append(
                    [
                        d.device,
                        d.path,
                        label,
                        f"{acc.max_abs_error:.3g}",
                        f"{acc.mse:.3g}",
                        f"{acc.cosine:.5f}",
                        top1,
                        _pct(acc.top5),
                        flag,
                        *timing,
                    ]
                )
        from .cli import table

        lines.append("")
        lines.append(table(rows, header))
        for name, why in self.kept_float.items():
            lines.append(f"  kept float: {name}: {why}")
        for d in self.devices:
            for name, why in d.kept_float.items():
                lines.append(f"  kept float on {d.device} ({d.path}): {name}: {why}")
        for join in self.mixed_ranges:
            if not join.get("kept_float"):
                lines.append(f"  mixed ranges, quantized anyway: {join['node']}: {join['reason']}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _short_name(tensor: str | None) -> str:
    """``/model.22/Sigmoid_output_0`` -> ``(Sigmoid)``: the op that made a part, for the report's part rows."""
    if not tensor:
        return ""
    name = tensor.rsplit("/", 1)[-1]
    return f"({name[: -len('_output_0')] if name.endswith('_output_0') else name})"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def report(
    original: Any,
    compressed: Any = None,
    devices: Sequence[str] = ("onnxruntime:cpu",),
    *,
    precision: str | None = None,
    calibration: Any = None,
    method: str = "static",
    native: bool = False,
    eval_feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
    samples: int = 16,
    seed: int = 0,
    reference_device: str = "onnxruntime:cpu",
    min_duration_s: float = 2.0,
    min_rounds: int = 20,
    threads: int | None = None,
    threshold: Threshold | None = None,
) -> CompressionReport:
    """Compare ``compressed`` with ``original`` on each of ``devices``; returns a ``CompressionReport``.

    ``compressed`` defaults to ``quantize(original, precision, calibration, method)``.
    Held-out inputs are ``eval_feeds`` or ``samples`` seeded inputs (seeds
    ``seed``...), never the random calibration seeds (from 1,000,000).  With
    ``native=True`` each device also compiles the fp32 model with
    ``precision=...`` (its own conversion) and gets a second row.  A device that
    fails gets a row with the error instead of stopping the report.

    Each output that a Concat makes is also judged part by part (``nnport.ranges.output_segments``):
    a detector's boxes and scores get rows of their own.  ``threshold`` (default
    ``THRESHOLDS[precision]``) is what ``CompressionReport.below_threshold`` checks.
    Random held-out inputs of a model with symbolic dims take their shapes from the
    first calibration sample where there is one.
    """
    from . import compile as nn_compile

    source = load(original)
    if compressed is None:
        if precision is None:
            raise InputError("report needs a compressed model or precision='int8'/'fp16'")
        compressed = quantize(source, precision, calibration, method)
    packed = load(compressed)
    info = packed.metadata.get("compression") or {}
    precision = precision or compressed_precision(packed) or "fp32"
    if eval_feeds is None:
        if seed + samples > RANDOM_SEED_BASE:
            raise InputError(
                f"evaluation seeds {seed}..{seed + samples - 1} would overlap the random calibration seeds "
                f"(from {RANDOM_SEED_BASE})"
            )
        from .data import random_feeds

        shapes = _calibration_shapes(source, calibration)
        eval_feeds = [random_feeds(source.inputs, seed=seed + i, shapes=shapes) for i in range(samples)]
        seeds = f"seeds {seed}..{seed + samples - 1}"
    else:
        eval_feeds = list(eval_feeds)
        seeds = "given by the caller"
    reference = nn_compile(source, reference_device, fallback=False, threads=threads)
    expected = [reference.run(f) for f in eval_feeds]
    result = CompressionReport(
        model=source.name,
        precision=precision,
        method=info.get("method") if precision == "int8" else None,
        size_before=len(source.serialized()),
        size_after=len(packed.serialized()),
        eval_samples=len(eval_feeds),
        eval_seeds=seeds,
        reference_device=reference.device.id,
        cpu={"model": _cpu_model(), **cpu_int8_features()},
        kept_float=dict(info.get("kept_float") or {}),
        mixed_ranges=list(info.get("mixed_ranges") or []),
        threshold=threshold,
    )
    segments: dict[str, Any] = {}
    try:
        from .ranges import output_segments

        segments = output_segments(source.proto, eval_feeds[0])
    except Exception as exc:  # parts unknown: whole outputs are still reported
        result.notes.append(
            f"per-part accuracy unavailable: could not trace the outputs' Concat parts ({type(exc).__name__}: {exc})"
        )
    for device in devices:
        paths = [("onnx", packed, "fp32")] + ([("native", source, precision)] if native else [])
        for path, target, compile_precision in paths:
            result.devices.append(
                _device_result(
                    device,
                    path,
                    source,
                    target,
                    compile_precision,
                    calibration,
                    eval_feeds,
                    expected,
                    threads,
                    min_duration_s,
                    min_rounds,
                    method,
                    segments,
                )
            )
    return result


def _calibration_shapes(source: Model, calibration: Any) -> dict[str, tuple[int, ...]] | None:
    """Input shapes of the first calibration sample, for a model with symbolic input dims (else None)."""
    if calibration is None or all(all(isinstance(d, int) for d in s.shape) for s in source.inputs):
        return None
    if isinstance(calibration, str) and calibration.strip().lower() == "random":
        return None
    if not isinstance(calibration, (str, os.PathLike, list, tuple, Mapping)):
        return None  # an iterator: reading its first sample here would take it from the quantizer
    try:
        first = calibration_feeds(calibration, source.inputs, samples=1)[0]
    except (InputError, TypeError):
        return None
    return {name: tuple(array.shape) for name, array in first.items()}


def _device_result(
    device: str,
    path: Any,
    source: Model,
    target: Model,
    compile_precision: str,
    calibration: Any,
    eval_feeds: Sequence[Mapping[str, np.ndarray]],
    expected: Sequence[Mapping[str, np.ndarray]],
    threads: int | None,
    min_duration_s: float,
    min_rounds: int,
    method: str,
    segments: Any = None,
) -> DeviceResult:
    from . import compile as nn_compile

    row = DeviceResult(device=device, path=path)
    try:
        fp32 = nn_compile(source, device, fallback=False, threads=threads)
        row.device = fp32.device.id
        extra = {"int8_method": method} if compile_precision == "int8" else {}
        small = nn_compile(
            target,
            fp32.device.id,
            fallback=False,
            threads=threads,
            precision=compile_precision,
            calibration=calibration,
            extra=extra,
        )
        got = [small.run(f) for f in eval_feeds]
        row.accuracy = accuracy_delta(expected, got, segments)
        if path == "native":
            int8 = small.info.get("int8") or {}
            row.kept_float = {str(k): str(v) for k, v in (int8.get("kept_float") or {}).items()}
        t32, tsmall = interleaved_latency(
            fp32, small, eval_feeds[0], min_rounds=min_rounds, min_duration_s=min_duration_s
        )
        row.fp32_ms = float(np.median(t32))
        row.compressed_ms = float(np.median(tsmall))
        row.speedup = row.fp32_ms / row.compressed_ms if row.compressed_ms else None
        row.rounds = len(t32)
    except NnportError as exc:
        row.status = "unsupported" if "precision" in type(exc).__name__.lower() else "error"
        row.error = str(exc)
    return row


# -- accuracy against labels ------------------------------------------------------------------


@dataclass(frozen=True)
class LabelAccuracy:
    """Top-1 accuracy of one device at one precision against the true labels (or why it was not measured).

    ``status`` is ``"ok"``, ``"unsupported"`` (the backend refused the precision:
    ``reason`` is its message) or ``"error"``.  ``info`` carries what the backend
    reported about a compressed compile (``compiled.info["int8"]``, the precision hint).
    """

    device: str
    precision: str
    status: str
    total: int
    correct: int | None = None
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None or not self.total else self.correct / self.total


def label_accuracy(
    model: Any,
    feeds: Mapping[str, np.ndarray],
    labels: np.ndarray,
    devices: Sequence[str] = ("onnxruntime:cpu",),
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    *,
    calibration: Any = None,
    output: str | None = None,
    batch: int | None = None,
    threads: int | None = None,
) -> list[LabelAccuracy]:
    """Top-1 accuracy of ``model`` against ``labels`` on every device at every precision.

    ``feeds`` holds every sample along axis 0 of each input (run ``batch`` at a
    time, default all at once); the predicted class is the argmax over axis 1 of
    ``output`` (default the first output).  Each (device, precision) compiles the
    fp32 model with ``precision=...`` (the backend's own conversion; int8 is
    calibrated on ``calibration``, which must not hold test samples).  A refused
    precision gives an ``unsupported`` row with the backend's reason, never a
    missing row.
    """
    from . import compile as nn_compile

    source = load(model)
    labels = np.asarray(labels)
    total = len(labels)
    sizes = {name: len(array) for name, array in feeds.items()}
    if any(n != total for n in sizes.values()):
        raise InputError(f"every input must hold one sample per label ({total}); got {sizes}")
    step = batch or total
    chunks = [{k: np.ascontiguousarray(v[i : i + step]) for k, v in feeds.items()} for i in range(0, total, step)]
    rows = []
    for device in devices:
        for precision in precisions:
            try:
                compiled = nn_compile(
                    source,
                    device,
                    fallback=False,
                    precision=precision,
                    calibration=calibration if precision == "int8" else None,
                    threads=threads,
                )
                name = output or compiled.outputs[0].name
                scores = np.concatenate([compiled.run(chunk)[name] for chunk in chunks])
                predicted = scores.reshape(total, -1).argmax(axis=1)
                keys = ("int8", "inference_precision", "precision")
                info: dict[str, Any] = {k: compiled.info[k] for k in keys if k in compiled.info}
                rows.append(
                    LabelAccuracy(
                        compiled.device.id, precision, "ok", total, int(np.sum(predicted == labels)), info=info
                    )
                )
            except NnportError as exc:
                status = "unsupported" if "precision" in type(exc).__name__.lower() else "error"
                rows.append(LabelAccuracy(device, precision, status, total, reason=str(exc)))
    return rows


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
